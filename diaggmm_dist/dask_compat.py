"""Every private dask API the library uses, in one place; ``tests/test_dask_compat.py`` runs each.

- ``dask._task_spec`` (dask >= 2024.12): task objects (``Task``, ``TaskRef``, ``DataNode``,
  their ``key``, ``dependencies``, ``value``, calling a task on its dependencies' values,
  ``Task.fuse``) and ``convert_legacy_graph``. The engine fuses each chunk's tasks into one
  and runs them on its own threads; without them it falls back on dask's schedulers
  (:data:`HAS_TASK_SPEC` is False).
- ``dask._expr.LLGExpr`` (dask >= 2025.4): the expression distributed's ``Client.get`` wraps
  a dict graph in; the engine names it itself (:func:`named_graph`).
- ``dask.core.flatten`` and the ``dask.delayed.Delayed`` constructor.
- ``distributed.get_worker().state.ready`` (distributed 2026.8): the worker's queue of tasks
  ready to run, peeked by :func:`ready_tasks` to read the next task's chunks ahead.
"""

from __future__ import annotations

import dask
import dask.core
from dask.delayed import Delayed

try:  # dask's task objects; without them dask's threaded scheduler runs every pass
    from dask._task_spec import DataNode, GraphNode, Task, TaskRef, convert_legacy_graph
except ImportError:  # pragma: no cover - older dask
    DataNode = GraphNode = Task = TaskRef = convert_legacy_graph = None
try:  # the graph expression distributed's Client.get wraps a plain dict graph in
    from dask._expr import LLGExpr
except ImportError:  # pragma: no cover - older dask
    LLGExpr = None

#: True when dask has its task objects (``dask._task_spec``), which fused chunk tasks need.
HAS_TASK_SPEC = GraphNode is not None


def flat_keys(collection) -> list:
    """The output keys of a dask collection, flattened, in order.

    Parameters
    ----------
    collection : dask collection

    Returns
    -------
    list
    """
    return list(dask.core.flatten(collection.__dask_keys__()))


def task_graph(collection) -> tuple[dict, tuple]:
    """A collection's optimized graph as task objects, and its output keys in order.

    Parameters
    ----------
    collection : dask collection

    Returns
    -------
    graph : dict
        Key to ``Task``/``DataNode`` (legacy tuples converted).
    keys : tuple
        The collection's output keys, flattened.
    """
    (optimized,) = dask.optimize(collection)
    graph = convert_legacy_graph(dict(optimized.__dask_graph__()))
    return graph, tuple(flat_keys(optimized))


def is_data(node) -> bool:
    """True for a graph node that holds data (a ``DataNode``), not a task."""
    return isinstance(node, DataNode)


def fused_task(tasks: list, key: object) -> object:
    """One task under ``key`` that runs ``tasks`` (a chunk's own tasks, any order)."""
    return Task.fuse(*tasks, key=key)


def named_graph(graph: dict, name: str) -> object:
    """``graph`` as the expression ``Client.get`` submits, named ``name`` (not hashed).

    ``Client.get`` otherwise names a dict graph by a deterministic hash of every task and
    piece of data in it, on every pass (see bench/FINDINGS.md).
    """
    return graph if LLGExpr is None else LLGExpr(graph, _determ_token=name)


def placeholder(key: str) -> Delayed:
    """A delayed value whose data, under ``key``, is filled in when the graph runs."""
    return Delayed(key, {key: None})


def ready_tasks(n: int) -> list:
    """The run specs (``Task``) of the next ``n`` tasks ready on this worker, else ``[]``.

    Peeks ``distributed.get_worker().state.ready`` (a ``HeapSet`` of ``TaskState``) from the
    task's thread, racing with the worker's event loop: any error (no worker, a changed API,
    the set changing under the peek) gives ``[]``, as a hint must never fail a task.

    Parameters
    ----------
    n : int

    Returns
    -------
    list
    """
    try:
        from distributed import get_worker

        ready = get_worker().state.ready
        return [ts.run_spec for ts in list(ready.peekn(n)) if ts.run_spec is not None]
    except Exception:  # noqa: BLE001 - a hint only: nothing ready rather than a failed task
        return []
