"""Dask layer: one pass over row-chunked data per call, per-chunk kernels, their sum.

Every function here takes a 2-D dask array chunked along rows only (see
:func:`as_row_chunked`) and either reduces it to a tiny numpy block (:func:`pass_statistics`)
or maps it to a lazy per-row result chunked like the input (:func:`map_rows`). The only
thing that ever crosses the network per chunk is a (K + 1, 3D + 1) float64 block.

Computation runs on the active ``distributed.Client`` when there is one (the sum is a tree
of tasks), and on local threads otherwise: a statistics pass runs its chunk tasks on plain
threads (:func:`_local_statistics`), everything else on dask's threaded scheduler. Locally,
BLAS is held to one thread per thread so that the two kinds of threads do not fight over
the cores (distributed workers already start with ``OPENBLAS_NUM_THREADS=1``). That holds
for what this module computes; a lazy result of :func:`map_rows` that the caller computes
runs with the caller's BLAS settings.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import threading
import uuid
from typing import NamedTuple

import dask
import dask.array as da
import dask.core
import numpy as np
from dask.array.core import normalize_chunks
from threadpoolctl import ThreadpoolController

from . import checked_zarr, kernels, zarr_chunks

try:  # dask's task objects (dask >= 2024.12); without them dask's threaded scheduler runs every pass
    from dask._task_spec import (
        DataNode as _DataNode,
    )
    from dask._task_spec import (
        GraphNode as _GraphNode,
    )
    from dask._task_spec import (
        Task as _Task,
    )
    from dask._task_spec import (
        TaskRef as _TaskRef,
    )
    from dask._task_spec import convert_legacy_graph as _convert_legacy_graph
except ImportError:  # pragma: no cover - older dask
    _DataNode = _GraphNode = _Task = _TaskRef = _convert_legacy_graph = None
try:  # the graph expression distributed's Client.get wraps a plain dict graph in (dask >= 2025.4)
    from dask._expr import LLGExpr as _LLGExpr
except ImportError:  # pragma: no cover - older dask
    _LLGExpr = None

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
        raise FileNotFoundError(
            f"No Zarr array found at {where!r}: check the path or URL."
        ) from err
    if not isinstance(node, zarr.Array):
        names = sorted(getattr(node, "array_keys", lambda: [])())
        hint = (
            f" It holds the arrays {names}; pass e.g. {where.rstrip('/') + '/' + names[0]!r}."
            if names
            else ""
        )
        raise ValueError(f"{where!r} is a Zarr group, not an array.{hint}")
    return node


def _zarr_group_error(group):
    names = sorted(group.array_keys())
    hint = (
        f" It holds the arrays {names}; pass e.g. group[{names[0]!r}]."
        if names
        else " It holds no arrays."
    )
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
        check_shape_and_dtype(X.shape, X.dtype)
        X = checked_zarr.checked_array(
            X
        )  # what zarr reads is checked chunk by chunk, its errors name the chunk
        zarr_rows = X.chunks[0]
        target = chunk_size or default_chunk_rows(X.shape[1], X.dtype.itemsize)
        rows = max(1, target // zarr_rows) * zarr_rows  # whole Zarr chunks: each is read once
        direct = zarr_chunks.direct_rows(X)
        if direct is None:
            array = da.from_zarr(X, chunks=(rows, X.shape[1]))
        else:  # the same chunks, read without zarr's extra copy (see diaggmm_dist.zarr_chunks)
            array = da.from_array(
                direct,
                chunks=(rows, X.shape[1]),
                asarray=False,
                fancy=False,
                meta=np.empty((0, 0), dtype=direct.dtype),
                name=f"from-zarr-{dask.base.tokenize(direct)}",
            )
    elif isinstance(X, da.Array):
        check_shape_and_dtype(X.shape, X.dtype)
        array = X
    else:
        if not hasattr(X, "dtype") or not hasattr(X, "shape"):
            X = np.asarray(X)
        elif not isinstance(X, np.ndarray):
            X = np.asarray(X)
        check_shape_and_dtype(X.shape, X.dtype)
        if chunk_size is None:
            chunk_size = default_chunk_rows(X.shape[1], X.dtype.itemsize)
        array = in_memory_array(X, (chunk_size, X.shape[1]))
    if any(math.isnan(c) for c in array.chunks[0]):
        raise ValueError(
            "The dask array has unknown chunk sizes along the rows; call "
            "`X.compute_chunk_sizes()` (or build it with known sizes) before fitting."
        )
    if array.numblocks[1] != 1:
        array = array.rechunk({1: -1})
    return array


def in_memory_array(values, chunks):
    """A dask array whose chunks are views of the numpy array ``values``.

    ``da.from_array`` first copies its input, which for data that only just fits in memory
    means twice the memory and a full copy per fit. Here the only copy is of input that is
    not C-contiguous (the kernels read rows). The keys are random: no hashing of the data.
    """
    values = np.ascontiguousarray(values)
    chunks = normalize_chunks(chunks, values.shape, dtype=values.dtype)
    name = f"in-memory-{uuid.uuid4().hex}"
    bounds = [np.cumsum((0,) + axis) for axis in chunks]
    graph = {
        (name,) + index: values[tuple(slice(b[i], b[i + 1]) for b, i in zip(bounds, index))]
        for index in itertools.product(*(range(len(axis)) for axis in chunks))
    }
    return da.Array(graph, name, chunks, meta=values[(slice(0, 0),) * values.ndim])


def is_in_memory(X):
    """True for in-memory input (numpy arrays, lists): results come back as numpy."""
    import zarr

    return not isinstance(X, (da.Array, zarr.Array, str)) and not hasattr(X, "__fspath__")


def check_shape_and_dtype(shape, dtype):
    """Refuse data that is not a 2-D array of real numbers with rows and features.

    The messages start with scikit-learn's own wording (its ``check_array``), which
    scikit-learn's estimator checks look for, and end with what to do here.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported (dtype {dtype}): pass the real part, or real and imaginary parts as separate features."
        )
    if dtype.kind not in "iuf":
        raise TypeError(
            f"Expected numeric (integer or float) data, got dtype {dtype}: convert the features to numbers first."
        )
    if len(shape) != 2:
        hint = (
            " Reshape your data either using X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) "
            "if it is a single sample."
            if len(shape) == 1
            else " Flatten the sample dimensions to rows first."
        )
        raise ValueError(
            f"Expected 2D array, got {len(shape)}D array instead (shape {tuple(shape)}).{hint}"
        )
    if shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(shape)}) while a minimum of 1 is required: "
            "X has no rows."
        )
    if shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is required: "
            "X has no features."
        )


def _sample_index(X):
    """Blockwise index letters: one per sample axis, then the feature axis."""
    letters = "abcdefghijklmnopqrstuvw"[: X.ndim - 1]
    return letters, letters + "z"


def n_rows(X):
    """Number of samples (rows): all axes but the last, the features."""
    return int(np.prod(X.shape[:-1]))


def aligned_samples(values, X, name):
    """``values`` (one per sample of ``X``) as a dask array chunked like X's sample axes."""
    shape, chunks = X.shape[:-1], X.chunks[:-1]
    if not isinstance(values, da.Array):
        values = np.asarray(values)
    if values.shape != shape:
        raise ValueError(
            f"{name} has shape {values.shape}, but X has {shape} samples: give one value per sample."
        )
    if np.dtype(values.dtype).kind not in "iuf":
        raise TypeError(f"{name} must be numeric, got dtype {values.dtype}.")
    if isinstance(values, da.Array):
        return values.rechunk(chunks)
    return in_memory_array(values, chunks)


def row_indices(X):
    """Global (flattened) row index of every sample, lazily, chunked like X's sample axes."""
    return (
        da.arange(n_rows(X), chunks=max(X.chunks[0]) if X.ndim == 2 else "auto")
        .reshape(X.shape[:-1])
        .rechunk(X.chunks[:-1])
    )


def _one_block(x):
    """The feature axis is one chunk: blockwise hands its blocks over as a one-element list.

    (Taking that element, rather than letting blockwise concatenate the list, saves a copy
    of every chunk on every pass.)
    """
    return x[0] if len(x) == 1 else np.concatenate(x, axis=-1)


class _PassParameters:
    """What changes from one pass to the next: the graph reads it from its parameter key.

    (A plain object, not a tuple, so that dask takes it as data and never as a task.)
    """

    __slots__ = ("responsibilities", "count_nonfinite")

    def __init__(self, responsibilities, count_nonfinite):
        self.responsibilities, self.count_nonfinite = responsibilities, count_nonfinite


def _block_statistics(x, *extra, missing, has_weights, random):
    x = _one_block(x)
    parameters = extra[-1]
    weights = extra[0].reshape(-1) if has_weights else None
    rows = extra[-2].reshape(-1) if random else None
    stats = kernels.chunk_statistics(
        x.reshape(-1, x.shape[-1]),
        parameters.responsibilities,
        missing,
        weights,
        parameters.count_nonfinite,
        rows,
    )
    return stats.reshape((1,) * (x.ndim - 1) + stats.shape)


class _StatisticsGraph(NamedTuple):
    """The task graph of a statistics pass with a hole for its parameters (see :func:`pass_statistics`).

    ``result_key`` names the sum of every chunk's statistics. ``chunk_keys``, when not empty,
    are the per-chunk statistics tasks in row order, each of which reads its own chunk:
    local passes run those themselves (:func:`_local_statistics`) and add them up.
    """

    graph: dict
    parameter_key: str
    result_key: tuple
    chunk_keys: tuple = ()


def _statistics_blocks(X, missing, weights, random, model_sizes, parameter_key):
    """The lazy per-chunk statistics (one (K + 1, C) block per chunk), reading ``parameter_key``."""
    from dask.delayed import Delayed

    samples, full = _sample_index(X)
    inputs = [X, full]
    if weights is not None:
        inputs += [weights, samples]
    if random:
        inputs += [row_indices(X), samples]
    inputs += [Delayed(parameter_key, {parameter_key: None}), None]
    return da.blockwise(
        _block_statistics,
        samples + "KC",
        *inputs,
        new_axes={"K": kernels.n_stat_rows(model_sizes), "C": kernels.n_stat_columns(X.shape[-1])},
        adjust_chunks={letter: 1 for letter in samples},
        dtype=np.float64,
        meta=np.empty((0,) * (X.ndim + 1), dtype=np.float64),
        missing=missing,
        has_weights=weights is not None,
        random=random,
    )


def _statistics_graph(X, missing, weights, random, model_sizes):
    """Build the graph of a pass: read each chunk, its statistics, their sum.

    The per-pass parameters are the value of one key, filled in at every run. Each chunk's
    own tasks (its read, any per-chunk preparation, its statistics) become one task, so that
    a chunk's data exists only inside the task that uses it, on whichever worker runs it;
    the sum is a tree of :data:`SPLIT_EVERY`-way additions. A graph whose chunks share tasks
    (e.g. a rechunk that merges chunks) keeps dask's own structure and sum.
    """
    parameter_key = f"diaggmm-pass-parameters-{uuid.uuid4().hex}"
    blocks = _statistics_blocks(X, missing, weights, random, model_sizes, parameter_key)
    if _GraphNode is not None:
        (optimised,) = dask.optimize(blocks)
        graph = _convert_legacy_graph(dict(optimised.__dask_graph__()))
        chunk_keys = tuple(dask.core.flatten(optimised.__dask_keys__()))
        fused = _fused_chunks(graph, chunk_keys, parameter_key)
        if fused is not None:
            graph = {key: node for key, node in graph.items() if isinstance(node, _DataNode)}
            graph.update(fused)
            additions = [
                list(chunk_keys[i : i + SPLIT_EVERY])
                for i in range(0, len(chunk_keys), SPLIT_EVERY)
            ]
            result_key = _add_tree_sum(graph, additions, f"diaggmm-pass-sum-{uuid.uuid4().hex}")
            return _StatisticsGraph(graph, parameter_key, result_key, chunk_keys)
    total = blocks.sum(axis=tuple(range(X.ndim - 1)), split_every=SPLIT_EVERY)
    (total,) = dask.optimize(total)
    (result_key,) = dask.core.flatten(total.__dask_keys__())
    return _StatisticsGraph(dict(total.__dask_graph__()), parameter_key, result_key)


def _fused_chunks(graph, chunk_keys, parameter_key):
    """Every chunk's own tasks fused into one task under its key; None when two chunks share a task."""
    owner, own_tasks = {}, [[] for _ in chunk_keys]
    for index, key in enumerate(chunk_keys):
        stack = [key]
        while stack:
            node = graph.get(stack.pop())
            if node is None or isinstance(node, _DataNode) or owner.get(node.key) == index:
                continue
            if node.key in owner:
                return None
            owner[node.key] = index
            own_tasks[index].append(node)
            stack.extend(dep for dep in node.dependencies if dep != parameter_key)
    return {key: _Task.fuse(*tasks, key=key) for key, tasks in zip(chunk_keys, own_tasks)}


def _summed_blocks(*blocks):
    """The sum of statistics blocks, in order, pairwise along a contiguous axis.

    Each argument is one block (any leading unit axes dropped) or a stack of blocks along a
    leading axis (a group of chunks handed over unsummed, see :func:`_group_statistics`).
    """
    flat = [block for stack in blocks for block in stack.reshape(-1, *stack.shape[-2:])]
    return np.stack(flat, axis=-1).sum(axis=-1)


def _add_tree_sum(graph, additions, name):
    """Add to ``graph`` the tasks of a tree sum; return the key of its root.

    ``additions`` is the tree's first level, in order: each is a list of keys whose blocks
    one task adds up (:data:`SPLIT_EVERY` blocks, fewer at the end), or a single key whose
    value is such a sum already (a group of chunks that added itself up). Every level above
    adds up :data:`SPLIT_EVERY` keys of the one below.
    """
    keys = []
    for index, addition in enumerate(additions):
        if isinstance(addition, list):
            key = (f"{name}-0", index)
            graph[key] = _Task(key, _summed_blocks, *(_TaskRef(k) for k in addition))
            addition = key
        keys.append(addition)
    level = 1
    while len(keys) > 1:
        groups = [keys[i : i + SPLIT_EVERY] for i in range(0, len(keys), SPLIT_EVERY)]
        keys = [(f"{name}-{level}", i) for i in range(len(groups))]
        for key, group in zip(keys, groups):
            graph[key] = _Task(key, _summed_blocks, *(_TaskRef(k) for k in group))
        level += 1
    return keys[0]


def _evaluate(graph, key, values):
    """The value of ``key``: its task run on its dependencies (stored data and parameters in ``values``)."""
    node = graph[key]
    return node(
        {
            dep: values[dep] if dep in values else _evaluate(graph, dep, values)
            for dep in node.dependencies
        }
    )


def _local_statistics(built, parameters, n_threads):
    """Run a pass's chunk tasks on ``n_threads`` threads and add up their statistics.

    Each thread takes the next chunk in row order until none is left, so the scheduling cost
    per chunk is one locked counter, and the sum runs once, in chunk order, whatever thread
    computed which chunk: results are deterministic.
    """
    values = {key: node() for key, node in built.graph.items() if isinstance(node, _DataNode)}
    values[built.parameter_key] = parameters
    keys = built.chunk_keys
    results = [None] * len(keys)
    next_index, lock, failures = iter(range(len(keys))), threading.Lock(), []

    def work():
        while not failures:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            try:
                results[index] = _evaluate(built.graph, keys[index], values)
            except BaseException as err:  # re-raised in the calling thread
                failures.append(err)

    threads = [
        threading.Thread(target=work, name=f"diaggmm-pass-{i}", daemon=True)
        for i in range(max(1, min(n_threads, len(keys))))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        failures.append(None)  # an interrupted caller stops the threads after their current chunk
    if failures[0] is not None:
        raise failures[0]
    return _summed_blocks(*results)


def group_sizes(n_chunks, n_threads):
    """Chunks per cluster task, in row order: :data:`SPLIT_EVERY` at first, halving toward 1 at the pass's end.

    Every task costs the client, the scheduler and the worker CPU time of their own, on the
    cores the chunks need: on a 2-worker LocalCluster fitting a 10M-row store, each worker's
    event loop used 53-69 ms of CPU per pass with 33 tasks and 30-36 ms with 13, and the
    event loop the client and the scheduler share 69-81 ms against 43. So tasks take
    :data:`SPLIT_EVERY` chunks.
    But a worker that has finished waits for the others' last tasks at the end of every pass,
    so once fewer than ``size`` chunks per thread are left the size halves: the pass ends on
    single chunks.

    Sizes are powers of two that divide :data:`SPLIT_EVERY` and never grow, so no group
    straddles a multiple of :data:`SPLIT_EVERY` chunks: groups line up with the tree's first
    level (:func:`first_level_windows`), and the sum is the same to the bit whatever the
    number of workers (one that dies mid-fit changes nothing).
    """
    sizes, size, left, threads = [], SPLIT_EVERY, n_chunks, max(1, n_threads)
    while left:
        while size > 1 and left < size * threads:
            size //= 2
        sizes.append(size)
        left -= size
    return sizes


def first_level_windows(sizes):
    """Indices of the groups of :func:`group_sizes` in each addition of the tree's first level.

    An addition covers :data:`SPLIT_EVERY` consecutive chunks (fewer at the end). A group
    alone in its window adds its chunks up itself; the others hand their blocks over stacked.
    """
    windows, start = {}, 0
    for index, size in enumerate(sizes):
        windows.setdefault(start // SPLIT_EVERY, []).append(index)
        start += size
    return list(windows.values())


def _group_statistics(tasks, keys, add_up, *values):
    """The statistics of a group of chunk tasks, given the values of ``keys`` (their inputs).

    Added up when ``add_up`` (a group alone in its window of the tree's first level, see
    :func:`first_level_windows`); otherwise stacked, in order, for the first level to add up
    with the other groups' blocks, as it would add single chunks'.
    """
    known = dict(zip(keys, values))
    blocks = [task({dep: known[dep] for dep in task.dependencies}) for task in tasks]
    return (
        _summed_blocks(*blocks)
        if add_up
        else np.stack([block.reshape(block.shape[-2:]) for block in blocks])
    )


def _cluster_graph(built, parameters, n_threads):
    """This pass's graph for a distributed scheduler, from the fit's cached one (a :class:`_ClusterPass`).

    The scheduler keeps results by key, so every pass needs keys of its own; renaming every
    chunk task would cost the client time per chunk and pass. Instead each task of this
    graph runs a group of the cached chunk tasks, handed over as data, with their inputs
    (the parameters and the stored data) under this pass's keys: the client builds, and the
    scheduler tracks, one task per group (:func:`group_sizes`) plus the tree sum above them.
    No group straddles a multiple of :data:`SPLIT_EVERY` chunks, where the tree's first
    level starts its additions.
    """
    token = uuid.uuid4().hex
    stored = [
        key
        for key, node in built.graph.items()
        if isinstance(node, _DataNode) and key != built.parameter_key
    ]
    renamed = {key: f"diaggmm-pass-data-{token}-{i}" for i, key in enumerate(stored)}
    graph = {renamed[key]: _DataNode(renamed[key], built.graph[key].value) for key in stored}
    renamed[built.parameter_key] = f"diaggmm-pass-parameters-{token}"
    graph[renamed[built.parameter_key]] = _DataNode(renamed[built.parameter_key], parameters)
    sizes = group_sizes(len(built.chunk_keys), n_threads)
    windows = first_level_windows(sizes)
    alone = {window[0] for window in windows if len(window) == 1}
    keys, start = [], 0
    for index, size in enumerate(sizes):
        tasks = [built.graph[key] for key in built.chunk_keys[start : start + size]]
        inputs = sorted({dep for task in tasks for dep in task.dependencies}, key=str)
        key = (f"diaggmm-pass-chunks-{token}", index)
        # inputs that are neither stored data nor the parameters are results already on the
        # cluster (a persisted array): they keep their keys
        graph[key] = _Task(
            key,
            _group_statistics,
            _DataNode(None, tasks),
            _DataNode(None, inputs),
            index in alone,
            *(_TaskRef(renamed.get(dep, dep)) for dep in inputs),
        )
        keys.append(key)
        start += size
    additions = [
        keys[window[0]] if len(window) == 1 else [keys[i] for i in window] for window in windows
    ]
    result_key = _add_tree_sum(graph, additions, f"diaggmm-pass-sum-{token}")
    return _ClusterPass(graph, result_key, _row_order_priorities(graph, keys))


class _ClusterPass(NamedTuple):
    graph: dict
    result_key: object
    #: Scheduler priority of every key (higher runs first), see :func:`_row_order_priorities`.
    priority: dict


def _row_order_priorities(graph, group_keys):
    """Priorities that run the groups of chunks in row order, and each sum once its inputs are done.

    Left to ``dask.order``, the scheduler ran the groups of :data:`SPLIT_EVERY` chunks first
    (in no particular order) and then the smaller ones from the last: a pass then ended on a
    group of 4 chunks, where :func:`group_sizes` means it to end on single chunks.
    """
    last = {
        key: index for index, key in enumerate(group_keys)
    }  # the last group each task waits for
    tasks = [key for key, node in graph.items() if not isinstance(node, _DataNode)]
    for key in tasks:  # the groups, then the tree level by level: inputs come first
        if key not in last:
            last[key] = max(last[dep] for dep in graph[key].dependencies)
    ranked = sorted(tasks, key=last.__getitem__)  # stable: a sum right after the group it waits for
    return {
        **dict.fromkeys(graph, 0),
        **{key: len(ranked) - rank for rank, key in enumerate(ranked)},
    }


def _named_graph(graph):
    """``graph`` as the expression ``Client.get`` submits, named by a random token.

    ``Client.get`` wraps a plain dict graph in an expression named by a deterministic hash of
    every task and every piece of data in it: for a pass graph, the cached chunk tasks and the
    Zarr array objects they read, hashed again on every pass (14-48 ms for a 92-task pass
    graph in isolation; on a 2-worker LocalCluster fitting 10M rows in 33-task passes, the
    client's main thread went from ~21 to ~11 ms of CPU per pass without it, on the cores the
    workers need). The pass's keys are new on every pass anyway (uuid tokens), so a random
    name is as good and costs nothing.
    """
    return graph if _LLGExpr is None else _LLGExpr(graph, _determ_token=uuid.uuid4().hex)


def _local_threads():
    """Threads for a local pass: dask's ``num_workers`` setting, else every usable core."""
    from dask.system import CPU_COUNT

    return int(dask.config.get("num_workers", None) or CPU_COUNT)


def pass_statistics(
    X, responsibilities, missing="error", weights=None, count_nonfinite=False, graphs=None
):
    """One pass over ``X``: per-chunk statistics, added up.

    Parameters
    ----------
    X : dask.array.Array
        Samples along every axis but the last, features along the last (one chunk).
    responsibilities : tuple
        See :func:`diaggmm_dist.kernels.chunk_statistics`.
    missing : {"error", "drop", "marginalize"}
    weights : dask.array.Array, optional
        Sample weights chunked like X's sample axes (see :func:`aligned_samples`).
    count_nonfinite : bool
        Also count NaN and infinite values (and bad weights).
    graphs : dict, optional
        A cache owned by the caller (one per fit, for one ``X``, ``missing`` and ``weights``):
        the pass's task graph is built on the first call and reused by the next ones, which
        only fill in the new parameters (on a cluster, under keys of their own).

    Returns
    -------
    ndarray of shape (K + 1, n_stat_columns(D)), float64
        The summed statistics (layout in :func:`~diaggmm_dist.kernels.chunk_statistics`; one
        block per model for stacked coefficients).

    Notes
    -----
    Each chunk is one task that reads it and computes its statistics (see
    :func:`_statistics_graph`). On a distributed cluster these run in groups of up to
    :data:`SPLIT_EVERY` per task (:func:`_cluster_graph`) and a tree of tasks adds them up.
    Locally, threads run the chunk tasks themselves (see :func:`_local_statistics`): dask's
    threaded scheduler costs about half a millisecond of coordination per task, which with
    a thousand chunks is several percent of an iteration. Graphs whose chunks share
    intermediate tasks (e.g. a rechunk that merges chunks) go through dask's schedulers.
    """
    random = responsibilities[0] == "random"
    sizes = tuple(responsibilities[2]) if random else responsibilities[1].model_sizes
    parameters = _PassParameters(responsibilities, count_nonfinite)
    graphs = {} if graphs is None else graphs
    shape = (random, sizes)
    if shape not in graphs:
        graphs[shape] = _statistics_graph(X, missing, weights, random, sizes)
    built = graphs[shape]
    client = _active_client()
    if client is not None:
        if built.chunk_keys:
            cluster_pass = _cluster_graph(built, parameters, sum(client.nthreads().values()))
            # a callable annotation is called with each key (on the scheduler)
            with dask.annotate(priority=cluster_pass.priority.get):
                return client.get(_named_graph(cluster_pass.graph), cluster_pass.result_key)
        # dask's own structure, with keys of its own (from a new parameter key) for this pass
        fresh = _statistics_graph(X, missing, weights, random, sizes)
        return client.get(
            _named_graph({**fresh.graph, fresh.parameter_key: parameters}), fresh.result_key
        )
    with _blas_controller().limit(limits=1, user_api="blas"):
        if built.chunk_keys:
            return _local_statistics(built, parameters, _local_threads())
        return dask.threaded.get({**built.graph, built.parameter_key: parameters}, built.result_key)


def take_rows(X, rows):
    """The samples with flat indices ``rows`` (sorted) as a numpy (len(rows), D) array; reads only their chunks."""
    rows = np.asarray(rows)
    if X.ndim == 2:
        (out,) = compute(X[rows])
    else:
        (out,) = compute(X.vindex[np.unravel_index(rows, X.shape[:-1])])
    return out


def fingerprint(X, n_samples=16, n_chunks=4):
    """A cheap identity of the data: shape, dtype, chunking and a checksum of sampled rows.

    The rows are spread over at most ``n_chunks`` blocks along the first axis (first, last
    and evenly between), so computing it reads a handful of chunks, not the data.
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


def count_nonfinite(X):
    """Number of NaN and infinite values in ``X`` (one pass)."""
    if np.dtype(X.dtype).kind != "f":
        return 0
    (count,) = compute(da.count_nonzero(~da.isfinite(X)))
    return int(count)


def _block_rows(x, row_function, n_columns, args):
    x = _one_block(x)
    out = row_function(x.reshape(-1, x.shape[-1]), *args)
    return out.reshape(x.shape[:-1] + (() if n_columns is None else (n_columns,)))


def map_rows(X, func, *args, n_columns=None, dtype):
    """Lazily apply ``func(rows, *args)`` to every chunk's rows (flattened to (n, D)).

    ``func`` returns one value per row (``n_columns=None``) or ``n_columns`` values per row;
    the result has X's sample axes, chunked exactly like X (plus a last axis of
    ``n_columns``).
    """
    samples, full = _sample_index(X)
    out = samples if n_columns is None else samples + "K"
    new_axes = {} if n_columns is None else {"K": n_columns}
    return da.blockwise(
        _block_rows,
        out,
        X,
        full,
        new_axes=new_axes,
        dtype=dtype,
        meta=np.empty((0,) * len(out), dtype=dtype),
        row_function=func,
        n_columns=n_columns,
        args=args,
    )
