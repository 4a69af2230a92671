"""The local runner: a pass's chunk tasks on plain threads, with single-threaded BLAS.

BLAS is held to one thread per thread so that the two kinds of threads do not fight over
the cores (distributed workers already start with ``OPENBLAS_NUM_THREADS=1``).
"""

from __future__ import annotations

import functools
import threading

import dask
import numpy as np
from threadpoolctl import ThreadpoolController

from .. import dask_compat, read_ahead
from . import progress
from .graphs import StatisticsGraph, summed_blocks


@functools.cache
def _blas_controller():
    # Built once: inspecting the loaded BLAS libraries costs milliseconds per call.
    return ThreadpoolController()


def single_threaded_blas():
    """A context in which BLAS uses one thread (per calling thread)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def local_threads() -> int:
    """Threads for a local pass: dask's ``num_workers`` setting, else every usable core."""
    from dask.system import CPU_COUNT

    return int(dask.config.get("num_workers", None) or CPU_COUNT)


def _evaluate(graph, key, values):
    """The value of ``key``: its task run on its dependencies (data, parameters: ``values``)."""
    node = graph[key]
    return node(
        {
            dep: values[dep] if dep in values else _evaluate(graph, dep, values)
            for dep in node.dependencies
        }
    )


def local_statistics(built: StatisticsGraph, parameters, n_threads: int) -> np.ndarray:
    """Run a pass's chunk tasks on ``n_threads`` threads and add up their statistics.

    Each thread takes the next chunk in row order until none is left, so the scheduling cost
    per chunk is one locked counter, and the sum runs once, in chunk order, whatever thread
    computed which chunk: results are deterministic. Arrays on object storage have their next
    chunks read meanwhile (:mod:`diaggmm_dist.read_ahead`). A progress hook
    (:mod:`.progress`) hears of each chunk as it finishes.

    Parameters
    ----------
    built : StatisticsGraph
        With ``chunk_keys`` (fused chunk tasks).
    parameters : PassParameters
        The value of ``built.parameter_key``.
    n_threads : int

    Returns
    -------
    ndarray
        The summed statistics.
    """
    values = {key: node() for key, node in built.graph.items() if dask_compat.is_data(node)}
    values[built.parameter_key] = parameters
    keys = built.chunk_keys
    results = [None] * len(keys)
    next_index, lock, failures = iter(range(len(keys))), threading.Lock(), []
    # chunks are taken in row order: the next ones of object storage are read meanwhile
    window = read_ahead.Window()
    tracker = progress.pass_started(keys)  # None without a hook: nothing to tell

    def work():
        with read_ahead.reading_ahead(window):
            while not failures:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                try:
                    results[index] = _evaluate(built.graph, keys[index], values)
                    if tracker is not None:
                        tracker.done(index)
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
        window.close()
    if failures[0] is not None:
        raise failures[0]
    return summed_blocks(*results)


def run_pass(built: StatisticsGraph, parameters) -> np.ndarray:
    """A statistics pass on local threads: the chunk tasks on ours, else dask's scheduler.

    Parameters
    ----------
    built : StatisticsGraph
    parameters : PassParameters

    Returns
    -------
    ndarray
        The summed statistics.
    """
    with single_threaded_blas():
        if built.chunk_keys:
            return local_statistics(built, parameters, local_threads())
        tracker = progress.pass_started()
        total = dask.threaded.get(
            {**built.graph, built.parameter_key: parameters}, built.result_key
        )
        if tracker is not None:
            tracker.finished()
        return total


def reported_compute(collections: tuple) -> tuple:
    """``dask.compute`` on threads (single-threaded BLAS), telling the progress hook as the
    tasks that make up the result finish (:func:`.progress.result_parts`).

    Parameters
    ----------
    collections : tuple of dask collections

    Returns
    -------
    tuple
        Their values, as ``dask.compute`` gives them.
    """
    from dask.callbacks import Callback

    parts = progress.result_parts(collections)
    tracker = progress.pass_started(n_chunks=len(parts), kind="compute")
    if tracker is None:  # the hook went away meanwhile
        with single_threaded_blas():
            return dask.compute(*collections, optimize_graph=False)

    class Finished(Callback):  # dask's local schedulers call it after each task
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in parts:
                tracker.done(parts[key])

    with single_threaded_blas(), Finished():
        values = dask.compute(*collections, optimize_graph=False)
    tracker.finished()
    return values
