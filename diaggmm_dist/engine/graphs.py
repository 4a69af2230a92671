"""Graph building: the lazy per-chunk work of a pass, with a hole for its parameters.

Every function here takes a dask array with samples along every axis but the last and the
features along the last, in one chunk (see :func:`diaggmm_dist.inputs.as_row_chunked`).
Nothing here runs: :mod:`.local` and :mod:`.cluster` do.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np

from .. import dask_compat, kernels
from ..dask_compat import Task, TaskRef

#: Fan-in of the tree reduction that adds up per-chunk statistics.
SPLIT_EVERY = 8


def sample_index(X: da.Array) -> tuple[str, str]:
    """Blockwise index letters: one per sample axis, then the feature axis."""
    letters = "abcdefghijklmnopqrstuvw"[: X.ndim - 1]
    return letters, letters + "z"


def n_rows(X: da.Array) -> int:
    """Number of samples (rows): all axes but the last, the features."""
    return int(np.prod(X.shape[:-1]))


def row_indices(X: da.Array) -> da.Array:
    """Global (flattened) row index of every sample, lazily, chunked like X's sample axes."""
    return (
        da.arange(n_rows(X), chunks=max(X.chunks[0]) if X.ndim == 2 else "auto")
        .reshape(X.shape[:-1])
        .rechunk(X.chunks[:-1])
    )


def one_block(x: list) -> np.ndarray:
    """The feature axis is one chunk: blockwise hands its blocks over as a one-element list.

    (Taking that element, rather than letting blockwise concatenate the list, saves a copy
    of every chunk on every pass.)
    """
    return x[0] if len(x) == 1 else np.concatenate(x, axis=-1)


class PassParameters:
    """What changes from one pass to the next: the graph reads it from its parameter key.

    (A plain object, not a tuple, so that dask takes it as data and never as a task.)
    """

    __slots__ = ("pass_spec", "count_nonfinite")

    def __init__(self, pass_spec, count_nonfinite):
        self.pass_spec, self.count_nonfinite = pass_spec, count_nonfinite


def _block_statistics(x, *extra, missing, has_weights, random, has_labels=False):
    x = one_block(x)
    parameters = extra[-1]
    weights = extra[0].reshape(-1) if has_weights else None
    rows = extra[-2].reshape(-1) if random else None
    labels = extra[int(has_weights)].reshape(-1) if has_labels else None
    stats = kernels.chunk_statistics(
        x.reshape(-1, x.shape[-1]),
        parameters.pass_spec,
        missing,
        weights,
        parameters.count_nonfinite,
        rows,
        **({} if labels is None else {"labels": labels}),
    )
    return stats.reshape((1,) * (x.ndim - 1) + stats.shape)


class StatisticsGraph(NamedTuple):
    """The task graph of a statistics pass with a hole for its parameters.

    ``result_key`` names the sum of every chunk's statistics. ``chunk_keys``, when not empty,
    are the per-chunk statistics tasks in row order, each of which reads its own chunk:
    local passes run those themselves (:func:`.local.local_statistics`) and add them up.
    """

    graph: dict
    parameter_key: str
    result_key: tuple
    chunk_keys: tuple = ()


def _statistics_blocks(X, missing, weights, random, model_sizes, parameter_key, labels=None):
    """The lazy per-chunk statistics (one (K + 1, C) block per chunk), reading ``parameter_key``."""
    samples, full = sample_index(X)
    inputs = [X, full]
    if weights is not None:
        inputs += [weights, samples]
    if labels is not None:
        inputs += [labels, samples]
    if random:
        inputs += [row_indices(X), samples]
    inputs += [dask_compat.placeholder(parameter_key), None]
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
        # (without labels the graph is exactly the one of every unlabelled pass)
        **({} if labels is None else {"has_labels": True}),
    )


def statistics_graph(
    X: da.Array,
    missing: str,
    weights: da.Array | None,
    random: bool,
    model_sizes: tuple,
    labels: da.Array | None = None,
) -> StatisticsGraph:
    """Build the graph of a pass: read each chunk, its statistics, their sum.

    The per-pass parameters are the value of one key, filled in at every run. Each chunk's
    own tasks (its read, any per-chunk preparation, its statistics) become one task, so that
    a chunk's data exists only inside the task that uses it, on whichever worker runs it;
    the sum is a tree of :data:`SPLIT_EVERY`-way additions. A graph whose chunks share tasks
    (e.g. a rechunk that merges chunks) keeps dask's own structure and sum. ``labels`` (one
    class index per sample, -1 unlabelled, chunked like the sample axes) is read with each
    chunk, as the weights are (see :func:`diaggmm_dist.kernels.chunk_statistics`).
    """
    parameter_key = f"diaggmm-pass-parameters-{uuid.uuid4().hex}"
    blocks = _statistics_blocks(X, missing, weights, random, model_sizes, parameter_key, labels)
    if dask_compat.HAS_TASK_SPEC:
        graph, chunk_keys = dask_compat.task_graph(blocks)
        fused = _fused_chunks(graph, chunk_keys, parameter_key)
        if fused is not None:
            graph = {key: node for key, node in graph.items() if dask_compat.is_data(node)}
            graph.update(fused)
            additions = [
                list(chunk_keys[i : i + SPLIT_EVERY])
                for i in range(0, len(chunk_keys), SPLIT_EVERY)
            ]
            result_key = add_tree_sum(graph, additions, f"diaggmm-pass-sum-{uuid.uuid4().hex}")
            return StatisticsGraph(graph, parameter_key, result_key, chunk_keys)
    total = blocks.sum(axis=tuple(range(X.ndim - 1)), split_every=SPLIT_EVERY)
    (total,) = dask.optimize(total)
    (result_key,) = dask_compat.flat_keys(total)
    return StatisticsGraph(dict(total.__dask_graph__()), parameter_key, result_key)


def _fused_chunks(graph, chunk_keys, parameter_key):
    """Every chunk's own tasks fused into one task under its key; None if two chunks share one."""
    owner, own_tasks = {}, [[] for _ in chunk_keys]
    for index, key in enumerate(chunk_keys):
        stack = [key]
        while stack:
            node = graph.get(stack.pop())
            if node is None or dask_compat.is_data(node) or owner.get(node.key) == index:
                continue
            if node.key in owner:
                return None
            owner[node.key] = index
            own_tasks[index].append(node)
            stack.extend(dep for dep in node.dependencies if dep != parameter_key)
    return {key: dask_compat.fused_task(tasks, key) for key, tasks in zip(chunk_keys, own_tasks)}


def summed_blocks(*blocks: np.ndarray) -> np.ndarray:
    """The sum of statistics blocks, in order, pairwise along a contiguous axis.

    Each argument is one block (any leading unit axes dropped) or a stack of blocks along a
    leading axis (a group of chunks handed over unsummed, see
    :func:`.cluster.group_statistics`).
    """
    flat = [block for stack in blocks for block in stack.reshape(-1, *stack.shape[-2:])]
    return np.stack(flat, axis=-1).sum(axis=-1)


def add_tree_sum(graph: dict, additions: list, name: str):
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
            graph[key] = Task(key, summed_blocks, *(TaskRef(k) for k in addition))
            addition = key
        keys.append(addition)
    level = 1
    while len(keys) > 1:
        groups = [keys[i : i + SPLIT_EVERY] for i in range(0, len(keys), SPLIT_EVERY)]
        keys = [(f"{name}-{level}", i) for i in range(len(groups))]
        for key, group in zip(keys, groups):
            graph[key] = Task(key, summed_blocks, *(TaskRef(k) for k in group))
        level += 1
    return keys[0]


def _block_rows(x, row_function, n_columns, args):
    x = one_block(x)
    out = row_function(x.reshape(-1, x.shape[-1]), *args)
    return out.reshape(x.shape[:-1] + (() if n_columns is None else (n_columns,)))


def map_rows(X: da.Array, func, *args, n_columns: int | None = None, dtype) -> da.Array:
    """Lazily apply ``func(rows, *args)`` to every chunk's rows (flattened to (n, D)).

    Parameters
    ----------
    X : dask.array.Array
        Samples along every axis but the last, features along the last (one chunk).
    func : callable
        ``func(rows, *args)`` returns one value per row (``n_columns=None``) or
        ``n_columns`` values per row.
    *args
        Passed on to ``func``.
    n_columns : int, optional
        Values per row.
    dtype : numpy dtype
        Of the result.

    Returns
    -------
    dask.array.Array
        X's sample axes, chunked exactly like X (plus a last axis of ``n_columns``).
    """
    samples, full = sample_index(X)
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
