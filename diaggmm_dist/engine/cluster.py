"""The cluster runner: a pass on the active ``distributed.Client``, its sum a tree of tasks."""

from __future__ import annotations

import uuid
from typing import NamedTuple

import dask
import numpy as np

from .. import dask_compat, read_ahead
from ..dask_compat import DataNode, Task, TaskRef
from . import progress
from .graphs import SPLIT_EVERY, StatisticsGraph, add_tree_sum, statistics_graph, summed_blocks


def active_client():
    """The active ``distributed.Client``, or None (also when distributed is not installed)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def held_on_cluster(array):
    """``array`` persisted on the active client's cluster when its chunks are numpy data.

    An in-memory array (:func:`diaggmm_dist.inputs.in_memory_array`) has its chunks in its
    graph, so every pass's graph would carry them to the scheduler and workers again. Persisted
    once, the passes name them by key instead (:func:`cluster_graph` keeps those keys); they
    are released when the returned array is dropped. Anything else, or no client: ``array``.

    Parameters
    ----------
    array : dask.array.Array or None

    Returns
    -------
    dask.array.Array or None
    """
    if array is None:
        return None
    client = active_client()
    if client is None:
        return array
    nodes = dict(array.__dask_graph__()).values()
    in_memory = all(
        isinstance(node.value if dask_compat.is_data(node) else node, np.ndarray) for node in nodes
    )
    return client.persist(array) if nodes and in_memory else array


def group_sizes(n_chunks: int, n_threads: int) -> list[int]:
    """Chunks per cluster task, in row order: :data:`SPLIT_EVERY`, halving toward 1 at the end.

    Every task costs the client, the scheduler and the worker CPU time, on the cores the
    chunks need (see bench/FINDINGS.md, "engine.cluster.group_sizes"), so tasks take
    :data:`SPLIT_EVERY` chunks. But a worker that has finished waits for the others' last
    tasks at the end of every pass, so once fewer than ``size`` chunks per thread are left
    the size halves: the pass ends on single chunks.

    Sizes are powers of two that divide :data:`SPLIT_EVERY` and never grow, so no group
    straddles a multiple of :data:`SPLIT_EVERY` chunks: groups line up with the tree's first
    level (:func:`first_level_windows`), and the sum is the same to the bit whatever the
    number of workers (one that dies mid-fit changes nothing).

    Parameters
    ----------
    n_chunks : int
    n_threads : int
        Threads of the cluster's workers, in all.

    Returns
    -------
    list of int
    """
    sizes, size, left, threads = [], SPLIT_EVERY, n_chunks, max(1, n_threads)
    while left:
        while size > 1 and left < size * threads:
            size //= 2
        sizes.append(size)
        left -= size
    return sizes


def first_level_windows(sizes: list[int]) -> list[list[int]]:
    """Indices of the groups of :func:`group_sizes` in each addition of the tree's first level.

    An addition covers :data:`SPLIT_EVERY` consecutive chunks (fewer at the end). A group
    alone in its window adds its chunks up itself; the others hand their blocks over stacked.
    """
    windows, start = {}, 0
    for index, size in enumerate(sizes):
        windows.setdefault(start // SPLIT_EVERY, []).append(index)
        start += size
    return list(windows.values())


def group_statistics(tasks: list, keys: list, add_up: bool, span: tuple, *values) -> np.ndarray:
    """The statistics of a group of chunk tasks, given the values of ``keys`` (their inputs).

    Added up when ``add_up`` (a group alone in its window of the tree's first level, see
    :func:`first_level_windows`); otherwise stacked, in order, for the first level to add up
    with the other groups' blocks, as it would add single chunks'.

    Arrays on object storage have the group's next chunks read while one is computed on
    (:mod:`diaggmm_dist.read_ahead`); while its last ones are, the first chunks of the next
    group task of the same pass waiting in this worker's ready queue (:func:`read_next_group`).
    ``span`` is ``(pass token, first chunk, chunks)``.
    """
    known = dict(zip(keys, values))
    wrappers = [value for value in values if isinstance(value, read_ahead.ReadAhead)]
    blocks = []
    with read_ahead.window(len(tasks)):
        for position, task in enumerate(tasks):
            if wrappers:
                read_next_group(wrappers, span, position)
            blocks.append(task({dep: known[dep] for dep in task.dependencies}))
    return (
        summed_blocks(*blocks)
        if add_up
        else np.stack([block.reshape(block.shape[-2:]) for block in blocks])
    )


def read_next_group(wrappers: list, span: tuple, position: int) -> None:
    """Hand over reads of the next ready group task's first chunks, near this group's end.

    Only a task already in this worker's ready queue, of the same pass, is read for (a task
    the scheduler later moves elsewhere wastes at most ``depth`` reads, dropped at the next
    hand-over); the group's own chunks from ``position`` on are left to its window, and the
    next task gets only the part of the depth that they do not need.

    Parameters
    ----------
    wrappers : list of ReadAhead
        The group's arrays on object storage.
    span : tuple
        ``(pass token, first chunk, chunks)`` of the running group.
    position : int
        The chunk of the group about to be computed on.
    """
    token, first, n_chunks = span
    depth = max(wrapper.depth for wrapper in wrappers)
    near_end = position >= n_chunks - depth
    if position and not near_end:
        return  # the group's own reads ahead use the whole depth until its last chunks
    indices = []
    for spec in dask_compat.ready_tasks(2):
        args = getattr(spec, "args", ())
        if getattr(spec, "func", None) is group_statistics and len(args) > 3:
            next_token, next_first, next_n = getattr(args[3], "value", (None, 0, 0))
            if next_token == token:
                indices += range(next_first, next_first + min(depth, next_n))
    own = range(first + position, first + n_chunks)
    if not near_end:  # at the start of a long group: only drop what no task here will read
        own, indices = [*own, *indices], []
    # the group's own next chunks come first: the next task gets only the depth they leave
    room = depth - min(depth, n_chunks - position - 1)
    read_ahead.hand_over(wrappers, indices[:room], frozenset(own))


class ClusterPass(NamedTuple):
    graph: dict
    result_key: object
    #: Scheduler priority of every key (higher runs first), see :func:`row_order_priorities`.
    priority: dict
    #: The group tasks, in row order, and their chunks (:func:`group_sizes`).
    group_keys: tuple = ()
    group_sizes: tuple = ()


def cluster_graph(built: StatisticsGraph, parameters, n_threads: int) -> ClusterPass:
    """This pass's graph for a distributed scheduler, from the fit's cached one.

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
        if dask_compat.is_data(node) and key != built.parameter_key
    ]
    renamed = {key: f"diaggmm-pass-data-{token}-{i}" for i, key in enumerate(stored)}
    graph = {renamed[key]: DataNode(renamed[key], built.graph[key].value) for key in stored}
    renamed[built.parameter_key] = f"diaggmm-pass-parameters-{token}"
    graph[renamed[built.parameter_key]] = DataNode(renamed[built.parameter_key], parameters)
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
        graph[key] = Task(
            key,
            group_statistics,
            DataNode(None, tasks),
            DataNode(None, inputs),
            index in alone,
            DataNode(None, (token, start, size)),
            *(TaskRef(renamed.get(dep, dep)) for dep in inputs),
        )
        keys.append(key)
        start += size
    additions = [
        keys[window[0]] if len(window) == 1 else [keys[i] for i in window] for window in windows
    ]
    result_key = add_tree_sum(graph, additions, f"diaggmm-pass-sum-{token}")
    return ClusterPass(
        graph, result_key, row_order_priorities(graph, keys), tuple(keys), tuple(sizes)
    )


def row_order_priorities(graph: dict, group_keys: list) -> dict:
    """Priorities that run the groups of chunks in row order, each sum once its inputs are done.

    Left to ``dask.order``, a pass ended on a group of 4 chunks, where :func:`group_sizes`
    means it to end on single chunks (bench/FINDINGS.md, "engine.cluster.row_order_priorities").
    """
    last = {key: index for index, key in enumerate(group_keys)}  # the last group a task waits for
    tasks = [key for key, node in graph.items() if not dask_compat.is_data(node)]
    for key in tasks:  # the groups, then the tree level by level: inputs come first
        if key not in last:
            last[key] = max(last[dep] for dep in graph[key].dependencies)
    ranked = sorted(tasks, key=last.__getitem__)  # stable: a sum right after the group it waits for
    return {
        **dict.fromkeys(graph, 0),
        **{key: len(ranked) - rank for rank, key in enumerate(ranked)},
    }


def _submitted(graph):
    # a random name: hashing the graph on every pass costs the client CPU (bench/FINDINGS.md)
    return dask_compat.named_graph(graph, uuid.uuid4().hex)


def run_pass(
    client, built: StatisticsGraph, parameters, X, missing, weights, random, sizes, labels=None
) -> np.ndarray:
    """A statistics pass on ``client``'s cluster.

    Fused chunk tasks run in groups (:func:`cluster_graph`) under the library's priorities;
    a graph whose chunks share tasks runs dask's own structure, rebuilt with keys of its
    own (a new parameter key) for this pass. With a progress hook (:mod:`.progress`) the
    groups are watched as they finish (:func:`_reported_get`).

    Returns
    -------
    ndarray
        The summed statistics.
    """
    if built.chunk_keys:
        cluster_pass = cluster_graph(built, parameters, sum(client.nthreads().values()))
        # a callable annotation is called with each key (on the scheduler)
        tracker = progress.pass_started(built.chunk_keys)
        with dask.annotate(priority=cluster_pass.priority.get):
            if tracker is not None:
                return _reported_get(client, cluster_pass, tracker)
            return client.get(_submitted(cluster_pass.graph), cluster_pass.result_key)
    tracker = progress.pass_started()
    fresh = statistics_graph(X, missing, weights, random, sizes, labels)
    total = client.get(
        _submitted({**fresh.graph, fresh.parameter_key: parameters}), fresh.result_key
    )
    if tracker is not None:
        tracker.finished()
    return total


def _reported_get(client, cluster_pass: ClusterPass, tracker) -> np.ndarray:
    """``client.get`` of a pass that also watches its group tasks finish, for the hook.

    The same graph, keys and priorities: only the client holds futures of the groups too, so
    their small blocks ((K + 1) x (3D + 1) float64 each, or a stack of up to
    :data:`SPLIT_EVERY`) stay on the workers until the pass ends, when all are released.
    """
    futures = client.get(
        _submitted(cluster_pass.graph),
        [cluster_pass.result_key, *cluster_pass.group_keys],
        sync=False,
    )
    try:
        starts = np.cumsum((0,) + cluster_pass.group_sizes[:-1]).tolist()
        for future, first, size in zip(futures[1:], starts, cluster_pass.group_sizes):
            # run by distributed once the future is done (in a thread of its own)
            future.add_done_callback(
                lambda done, first=first, size=size: (
                    tracker.done(first, size) if done.status == "finished" else None
                )
            )
        total = futures[0].result()
        tracker.finished()  # the last groups' callbacks may still be on their way
        return total
    finally:
        for future in futures:
            future.release()


def reported_compute(client, collections: tuple) -> tuple:
    """``dask.compute`` on ``client``'s cluster, telling the progress hook as the tasks that
    make up the result finish (:func:`.progress.result_parts`).

    The collections are persisted (their output tasks become futures, watched), then
    gathered as ``dask.compute`` would, and released.

    Parameters
    ----------
    client : distributed.Client
    collections : tuple of dask collections

    Returns
    -------
    tuple
        Their values.
    """
    from distributed import futures_of

    parts = progress.result_parts(collections)
    tracker = progress.pass_started(n_chunks=len(parts), kind="compute")
    found = progress.collections_in(collections)
    persisted = client.persist(found, optimize_graph=False)
    futures = futures_of(persisted)
    collections = progress.replaced(
        collections, {id(old): new for old, new in zip(found, persisted)}
    )
    try:
        if tracker is not None:
            for future in futures:
                if future.key in parts:
                    future.add_done_callback(
                        lambda done, index=parts[future.key]: (
                            tracker.done(index) if done.status == "finished" else None
                        )
                    )
        values = dask.compute(*collections, optimize_graph=False)
        if tracker is not None:
            tracker.finished()
        return values
    finally:
        for future in futures:
            future.release()
