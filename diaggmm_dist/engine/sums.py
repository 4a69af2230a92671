"""Sums over chunks of a fixed-size vector per chunk (and per part), as a tree of additions."""

from __future__ import annotations

import dask.array as da
import numpy as np

from .graphs import SPLIT_EVERY, one_block, row_indices, sample_index


def _block_vector(x, rows, parts, chunk_function, n_values, args):
    x = one_block(x)
    (part,) = parts
    out = chunk_function(x.reshape(-1, x.shape[-1]), rows.reshape(-1), int(part), *args)
    return out.reshape((1,) * (x.ndim - 1) + (1, n_values))


def summed_chunk_vectors(X: da.Array, func, *args, n_values: int, n_parts: int = 1) -> da.Array:
    """Lazily, ``func(rows, row_indices, part, *args)`` of every chunk, added up over the chunks.

    Each chunk is read once: its ``n_parts`` tasks (one per part) share the task that reads
    it. Parts let a large per-chunk result be computed in pieces that each fit in a task.

    Parameters
    ----------
    X : dask.array.Array
        Samples along every axis but the last, features along the last (one chunk).
    func : callable
        Returns a float64 vector of ``n_values`` for a chunk's rows (flattened to (n, D)),
        their global row indices and a part number.
    *args
        Passed on to ``func``.
    n_values : int
    n_parts : int

    Returns
    -------
    dask.array.Array of shape (n_parts, n_values), float64
    """
    samples, full = sample_index(X)
    parts = da.arange(n_parts, chunks=1)
    blocks = da.blockwise(
        _block_vector,
        samples + "PV",
        X,
        full,
        row_indices(X),
        samples,
        parts,
        "P",
        new_axes={"V": n_values},
        adjust_chunks={axis: 1 for axis in samples},
        dtype=np.float64,
        meta=np.empty((0,) * (len(samples) + 2), dtype=np.float64),
        chunk_function=func,
        n_values=n_values,
        args=args,
        concatenate=False,
    )
    return blocks.sum(axis=tuple(range(len(samples))), split_every=SPLIT_EVERY)
