"""The engine only executes: one pass over an array per call, on local threads or a cluster.

Every function here takes a dask array with samples along every axis but the last and the
features along the last, in one chunk (made by :mod:`diaggmm_dist.inputs`), and either
reduces it to a tiny numpy block (:func:`pass_statistics`), maps it to a lazy per-row result
chunked like the input (:func:`map_rows`), or reads a few rows of it. The only thing that
ever crosses the network per chunk is a (K + 1, 3D + 1) float64 block.

- :mod:`.graphs` builds the graphs (nothing runs there);
- :mod:`.local` runs a pass on plain threads, with single-threaded BLAS;
- :mod:`.cluster` runs it on the active ``distributed.Client``, the sum a tree of tasks.

Computation runs on the active client when there is one, and on local threads otherwise.
Locally, BLAS is held to one thread per thread for what this package computes; a lazy
result of :func:`map_rows` that the caller computes runs with the caller's BLAS settings.
The private dask APIs the engine needs are in :mod:`diaggmm_dist.dask_compat`.
"""

from __future__ import annotations

import hashlib

import dask
import dask.array as da
import numpy as np

from .. import kernels
from . import cluster, local
from .cluster import held_on_cluster
from .graphs import SPLIT_EVERY, PassParameters, map_rows, n_rows, row_indices, statistics_graph
from .progress import announce_rows, reporting_now
from .sums import summed_chunk_vectors

__all__ = [
    "SPLIT_EVERY",
    "compute",
    "count_nonfinite",
    "fingerprint",
    "held_on_cluster",
    "map_rows",
    "n_rows",
    "pass_statistics",
    "row_indices",
    "summed_chunk_vectors",
    "take_rows",
]


def compute(*collections) -> tuple:
    """``dask.compute`` on the active client, or on threads with single-threaded BLAS.

    Parameters
    ----------
    *collections : dask collections

    Returns
    -------
    tuple
        Their values.
    """
    if reporting_now():  # a progress hook is set: the result's tasks report as they finish
        client = cluster.active_client()
        if client is not None:
            return cluster.reported_compute(client, collections)
        return local.reported_compute(collections)
    if cluster.active_client() is not None:
        return dask.compute(*collections, optimize_graph=False)
    with local.single_threaded_blas():
        return dask.compute(*collections, optimize_graph=False)


def pass_statistics(
    X: da.Array,
    pass_spec: tuple,
    missing: str = "error",
    weights: da.Array | None = None,
    count_nonfinite: bool = False,
    graphs: dict | None = None,
    labels: da.Array | None = None,
) -> np.ndarray:
    """One pass over ``X``: per-chunk statistics, added up.

    Parameters
    ----------
    X : dask.array.Array
        Samples along every axis but the last, features along the last (one chunk).
    pass_spec : tuple
        What the pass computes: ``("gaussian", coefficients)``, ``("nearest", coefficients)``
        or ``("random", shift, sizes, seeds, dtype)``; see
        :func:`diaggmm_dist.kernels.chunk_statistics`.
    missing : {"error", "drop", "marginalize"}
    weights : dask.array.Array, optional
        Sample weights chunked like X's sample axes (see
        :func:`diaggmm_dist.inputs.aligned_samples`).
    count_nonfinite : bool
        Also count NaN and infinite values (and bad weights).
    graphs : dict, optional
        A cache owned by the caller (one per fit, for one ``X``, ``missing`` and ``weights``):
        the pass's task graph is built on the first call and reused by the next ones, which
        only fill in the new parameters (on a cluster, under keys of their own).
    labels : dask.array.Array, optional
        One class index per sample (-1: unlabelled), integers chunked like X's sample axes,
        for the labelled passes (``("labels", ...)`` and ``("gaussian", coefficients,
        component_classes)``, see :func:`~diaggmm_dist.kernels.chunk_statistics`).

    Returns
    -------
    ndarray of shape (K + 1, n_stat_columns(D)), float64
        The summed statistics (layout in :func:`~diaggmm_dist.kernels.chunk_statistics`; one
        block per model for stacked coefficients).

    Notes
    -----
    Each chunk is one task that reads it and computes its statistics (see
    :func:`.graphs.statistics_graph`). On a distributed cluster these run in groups of up to
    :data:`SPLIT_EVERY` per task (:func:`.cluster.cluster_graph`) and a tree of tasks adds
    them up. Locally, threads run the chunk tasks themselves
    (:func:`.local.local_statistics`): dask's threaded scheduler's coordination per task is
    a noticeable share of an iteration (see bench/FINDINGS.md). Graphs whose chunks share
    intermediate tasks (e.g. a rechunk that merges chunks) go through dask's schedulers.
    """
    random, sizes = kernels.pass_models(pass_spec)
    parameters = PassParameters(pass_spec, count_nonfinite)
    graphs = {} if graphs is None else graphs
    shape = (random, sizes) if labels is None else (random, sizes, "labels")
    if shape not in graphs:
        graphs[shape] = statistics_graph(X, missing, weights, random, sizes, labels)
    built = graphs[shape]
    announce_rows(X)  # the rows of each chunk, for a progress hook (nothing without one)
    client = cluster.active_client()
    if client is not None:
        return cluster.run_pass(
            client, built, parameters, X, missing, weights, random, sizes, labels=labels
        )
    return local.run_pass(built, parameters)


def take_rows(X: da.Array, rows) -> np.ndarray:
    """The samples with flat indices ``rows`` (sorted) as numpy; reads only their chunks.

    Parameters
    ----------
    X : dask.array.Array
    rows : array-like of int
        Sorted flat sample indices.

    Returns
    -------
    ndarray of shape (len(rows), n_features)
    """
    rows = np.asarray(rows)
    if X.ndim == 2:
        (out,) = compute(X[rows])
    else:
        (out,) = compute(X.vindex[np.unravel_index(rows, X.shape[:-1])])
    return out


def fingerprint(X: da.Array, n_samples: int = 16, n_chunks: int = 4) -> dict:
    """A cheap identity of the data: shape, dtype, chunking and a checksum of sampled rows.

    The rows are spread over at most ``n_chunks`` blocks along the first axis (first, last
    and evenly between), so computing it reads a handful of chunks, not the data.

    Parameters
    ----------
    X : dask.array.Array
    n_samples : int
        Rows to read, in all.
    n_chunks : int
        Blocks to read them from, at most.

    Returns
    -------
    dict
        ``shape``, ``dtype``, ``row_chunks``, ``chunks_sha256`` and ``sample_sha256``.
    """
    per_first = n_rows(X) // X.shape[0]  # samples per index of the first axis
    starts = np.cumsum((0,) + X.chunks[0])
    picked = np.unique(
        np.linspace(0, X.numblocks[0] - 1, min(n_chunks, X.numblocks[0])).astype(int)
    )
    rows = np.unique(
        np.concatenate(
            [
                np.linspace(
                    starts[b] * per_first,
                    starts[b + 1] * per_first - 1,
                    max(1, n_samples // picked.size),
                ).astype(np.int64)
                for b in picked
            ]
        )
    )
    sample = np.ascontiguousarray(take_rows(X, rows))
    chunks = [[int(c) for c in axis] for axis in X.chunks]
    first = chunks[0]
    return {
        "shape": [int(v) for v in X.shape],
        "dtype": str(X.dtype),
        "row_chunks": f"{len(first)} chunks of {first[0]} rows"
        + (f", last {first[-1]}" if first[-1] != first[0] else ""),
        "chunks_sha256": hashlib.sha256(repr(chunks).encode()).hexdigest(),
        "sample_sha256": hashlib.sha256(rows.tobytes() + sample.tobytes()).hexdigest(),
    }


def count_nonfinite(X: da.Array) -> int:
    """Number of NaN and infinite values in ``X`` (one pass)."""
    if np.dtype(X.dtype).kind != "f":
        return 0
    (count,) = compute(da.count_nonzero(~da.isfinite(X)))
    return int(count)
