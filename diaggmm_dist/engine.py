"""Dask layer: one pass over row-chunked data per call, per-chunk kernels, tree reduction.

Every function here takes a 2-D dask array chunked along rows only (see
:func:`as_row_chunked`) and either reduces it to a tiny numpy block (:func:`pass_statistics`)
or maps it to a lazy per-row result chunked like the input (:func:`map_rows`). The only
thing that ever crosses the network per chunk is a (K + 1, 2D + 1) float64 block.

Computation runs on the active ``distributed.Client`` when there is one, and on dask's
threaded scheduler otherwise; in the latter case BLAS is held to one thread per dask thread
so that the two kinds of threads do not fight over the cores (distributed workers already
start with ``OPENBLAS_NUM_THREADS=1``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os

import dask
import dask.array as da
import numpy as np
from threadpoolctl import ThreadpoolController

from . import kernels

#: Target bytes per chunk when the input is not already chunked (numpy input).
DEFAULT_CHUNK_BYTES = 16 * 2**20
#: Fan-in of the tree reduction that adds up per-chunk statistics.
SPLIT_EVERY = 8


def _active_client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


@functools.cache
def _blas_controller():
    # Built once: inspecting the loaded BLAS libraries costs milliseconds per call.
    return ThreadpoolController()


def compute(*collections):
    """``dask.compute`` on the active client, or on threads with single-threaded BLAS."""
    if _active_client() is not None:
        return dask.compute(*collections, optimize_graph=False)
    with _blas_controller().limit(limits=1, user_api="blas"):
        return dask.compute(*collections, optimize_graph=False)


def default_chunk_rows(n_features, itemsize):
    """Rows per chunk that make a chunk about ``DEFAULT_CHUNK_BYTES``, a multiple of the sub-block."""
    rows = DEFAULT_CHUNK_BYTES // max(1, n_features * itemsize)
    return max(kernels.SUB_ROWS, rows // kernels.SUB_ROWS * kernels.SUB_ROWS)


def _open_zarr_array(X):
    import zarr

    where = X if isinstance(X, str) else os.fspath(X)
    try:
        node = zarr.open(where, mode="r")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"No Zarr array found at {where!r}: check the path or URL.") from err
    if not isinstance(node, zarr.Array):
        names = sorted(getattr(node, "array_keys", lambda: [])())
        hint = f" It holds the arrays {names}; pass e.g. {where.rstrip('/') + '/' + names[0]!r}." if names else ""
        raise ValueError(f"{where!r} is a Zarr group, not an array.{hint}")
    return node


def _zarr_group_error(group):
    names = sorted(group.array_keys())
    hint = f" It holds the arrays {names}; pass e.g. group[{names[0]!r}]." if names else " It holds no arrays."
    return ValueError(f"Got a Zarr group ({group.store_path}), not an array.{hint}")


def as_row_chunked(X, chunk_size=None):
    """Return ``X`` as a 2-D dask array chunked along rows only, without loading it.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str or os.PathLike
        A string or path is opened as a Zarr array (local path or fsspec URL), lazily.
    chunk_size : int, optional
        Rows per chunk for numpy input (default: about ``DEFAULT_CHUNK_BYTES`` per chunk).
        A Zarr array's chunks are grouped whole into dask chunks of about this many rows
        (at least one Zarr chunk). Dask input keeps its own row chunks.

    Returns
    -------
    dask.array.Array
        Shape (n_samples, n_features), one chunk across the features.

    Raises
    ------
    TypeError
        Non-numeric, boolean or complex data.
    ValueError
        Not 2-D, no rows or no features; a Zarr group instead of an array; a dask array
        with unknown chunk sizes.
    FileNotFoundError
        No Zarr array at the given path.
    """
    import zarr

    if isinstance(X, (str, os.PathLike)):
        X = _open_zarr_array(X)
    if isinstance(X, zarr.Group):
        raise _zarr_group_error(X)
    if isinstance(X, zarr.Array):
        _check_shape_and_dtype(X.shape, X.dtype)
        zarr_rows = X.chunks[0]
        target = chunk_size or default_chunk_rows(X.shape[1], X.dtype.itemsize)
        rows = max(1, target // zarr_rows) * zarr_rows  # whole Zarr chunks: each is read once
        array = da.from_zarr(X, chunks=(rows, X.shape[1]))
    elif isinstance(X, da.Array):
        _check_shape_and_dtype(X.shape, X.dtype)
        array = X
    else:
        if not hasattr(X, "dtype") or not hasattr(X, "shape"):
            X = np.asarray(X)
        elif not isinstance(X, np.ndarray):
            X = np.asarray(X)
        _check_shape_and_dtype(X.shape, X.dtype)
        if chunk_size is None:
            chunk_size = default_chunk_rows(X.shape[1], X.dtype.itemsize)
        # name=False: no hashing of the whole array just to name the graph's keys
        array = da.from_array(X, chunks=(chunk_size, X.shape[1]), name=False)
    if any(math.isnan(c) for c in array.chunks[0]):
        raise ValueError(
            "The dask array has unknown chunk sizes along the rows; call "
            "`X.compute_chunk_sizes()` (or build it with known sizes) before fitting."
        )
    if array.numblocks[1] != 1:
        array = array.rechunk({1: -1})
    return array


def _check_shape_and_dtype(shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise TypeError(f"Complex data (dtype {dtype}) is not supported: pass the real part, or real and imaginary parts as separate features.")
    if dtype.kind not in "iuf":
        raise TypeError(f"Expected numeric (integer or float) data, got dtype {dtype}: convert the features to numbers first.")
    if len(shape) != 2:
        hint = " Reshape a single feature with X.reshape(-1, 1)." if len(shape) == 1 else " Flatten the sample dimensions to rows first."
        raise ValueError(f"Expected a 2-D array (n_samples, n_features), got {len(shape)}-D with shape {tuple(shape)}.{hint}")
    if shape[0] == 0:
        raise ValueError(f"X has 0 rows (shape {tuple(shape)}): at least one sample is needed.")
    if shape[1] == 0:
        raise ValueError(f"X has 0 features (shape {tuple(shape)}): at least one feature is needed.")


def _block_statistics(x, responsibilities, count_nonfinite, block_info=None):
    first_row = block_info[0]["array-location"][0][0] if block_info else 0
    return kernels.chunk_statistics(x, responsibilities, count_nonfinite, first_row)[None]


def pass_statistics(X, responsibilities, count_nonfinite=False):
    """One pass over ``X``: per-chunk statistics added up by a tree reduction.

    Parameters
    ----------
    X : dask.array.Array
        Row-chunked data from :func:`as_row_chunked`.
    responsibilities : tuple
        See :func:`diaggmm_dist.kernels.chunk_statistics`.
    count_nonfinite : bool
        Also count NaN and infinite values.

    Returns
    -------
    ndarray of shape (K + 1, 2D + 1), float64
        The summed statistics (layout in :func:`~diaggmm_dist.kernels.chunk_statistics`).
    """
    if responsibilities[0] == "random":
        n_components = responsibilities[2]
    else:
        n_components = responsibilities[1].n_components
    columns = kernels.n_stat_columns(X.shape[1])
    blocks = X.map_blocks(
        _block_statistics,
        responsibilities,
        count_nonfinite,
        chunks=((1,) * X.numblocks[0], (n_components + 1,), (columns,)),
        new_axis=2,
        dtype=np.float64,
        meta=np.empty((0, 0, 0), dtype=np.float64),
    )
    (total,) = compute(blocks.sum(axis=0, split_every=SPLIT_EVERY))
    return total


def take_rows(X, rows):
    """The rows ``rows`` (sorted global indices) of ``X`` as a numpy array; reads only their chunks."""
    (out,) = compute(X[np.asarray(rows)])
    return out


def fingerprint(X, n_rows=16, n_chunks=4):
    """A cheap identity of the data: shape, dtype, chunking and a checksum of sampled rows.

    The rows are spread over at most ``n_chunks`` chunks (first, last and evenly between),
    so computing it reads a handful of chunks, not the data.
    """
    starts = np.cumsum((0,) + X.chunks[0])
    picked = np.unique(np.linspace(0, X.numblocks[0] - 1, min(n_chunks, X.numblocks[0])).astype(int))
    rows = np.unique(np.concatenate([
        np.linspace(starts[b], starts[b + 1] - 1, max(1, n_rows // picked.size)).astype(np.int64) for b in picked
    ]))
    sample = np.ascontiguousarray(take_rows(X, rows))
    chunks = [int(c) for c in X.chunks[0]]
    return {
        "shape": [int(v) for v in X.shape],
        "dtype": str(X.dtype),
        "row_chunks": f"{len(chunks)} chunks of {chunks[0]} rows" + (f", last {chunks[-1]}" if chunks[-1] != chunks[0] else ""),
        "chunks_sha256": hashlib.sha256(np.asarray(chunks, dtype=np.int64).tobytes()).hexdigest(),
        "sample_sha256": hashlib.sha256(rows.tobytes() + sample.tobytes()).hexdigest(),
    }


def count_nonfinite(X):
    """Number of NaN and infinite values in ``X`` (one pass)."""
    if np.dtype(X.dtype).kind != "f":
        return 0
    (count,) = compute(da.count_nonzero(~da.isfinite(X)))
    return int(count)


def map_rows(X, func, *args, n_columns=None, dtype):
    """Lazily apply ``func(block, *args)`` to every row chunk.

    ``func`` returns one value per row (``n_columns=None``) or ``n_columns`` values per row;
    the result is chunked along rows exactly like ``X``.
    """
    if n_columns is None:
        return X.map_blocks(func, *args, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype=dtype))
    return X.map_blocks(func, *args, chunks=(X.chunks[0], (n_columns,)), dtype=dtype, meta=np.empty((0, 0), dtype=dtype))
