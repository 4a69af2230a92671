"""Each private dask API in ``diaggmm_dist.dask_compat``, exercised: a dask upgrade that breaks
one fails here, naming it, rather than deep inside a fit (or silently, on a slower path)."""

import contextlib
import operator

import dask
import dask.array as da
import numpy as np
import pytest

from diaggmm_dist import dask_compat


@contextlib.contextmanager
def private_api(name):
    """Turn any failure inside into one that names the private dask API."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - any break is reported the same way
        pytest.fail(
            f"dask {dask.__version__}: the private API {name} is gone or changed ({err!r}); "
            "update diaggmm_dist/dask_compat.py"
        )


def test_the_task_objects_are_there():
    with private_api("dask._task_spec (DataNode, GraphNode, Task, TaskRef, convert_legacy_graph)"):
        assert dask_compat.HAS_TASK_SPEC, "dask._task_spec could not be imported"
    with private_api("dask._expr.LLGExpr"):
        assert dask_compat.LLGExpr is not None, "dask._expr.LLGExpr could not be imported"


def test_tasks_refs_and_data_nodes_run_on_their_dependencies_values():
    with private_api("dask._task_spec.Task/TaskRef/DataNode (key, dependencies, value, call)"):
        data = dask_compat.DataNode("x", 3)
        assert data.key == "x" and data.value == 3 and data() == 3
        assert dask_compat.is_data(data)
        task = dask_compat.Task("y", operator.add, dask_compat.TaskRef("x"), 4)
        assert task.key == "y" and set(task.dependencies) == {"x"}
        assert not dask_compat.is_data(task)
        assert task({"x": 3}) == 7
        # data handed to a task as a literal argument, as the cluster runner hands over tasks
        literal = dask_compat.Task("z", len, dask_compat.DataNode(None, [task, task]))
        assert not literal.dependencies and literal({}) == 2


def test_fused_tasks_run_as_one_on_outside_dependencies():
    with private_api("dask._task_spec.Task.fuse"):
        first = dask_compat.Task("a", operator.mul, dask_compat.TaskRef("x"), 2)
        second = dask_compat.Task("b", operator.add, dask_compat.TaskRef("a"), 1)
        fused = dask_compat.fused_task([second, first], "b")
        assert fused.key == "b" and set(fused.dependencies) == {"x"}
        assert fused({"x": 5}) == 11


def test_a_collection_becomes_task_objects_and_its_keys():
    array = da.arange(12, chunks=4) * 2
    with private_api("dask.core.flatten"):
        keys = dask_compat.flat_keys(array)
        assert len(keys) == 3 and all(isinstance(key, tuple) for key in keys)
    with private_api("dask._task_spec.convert_legacy_graph"):
        graph, keys = dask_compat.task_graph(array)
        assert len(keys) == 3 and set(keys) <= set(graph)
        assert all(hasattr(node, "dependencies") for node in graph.values())
        # every task runs on its dependencies' values, as the local runner runs them
        values = {}

        def value(key):
            if key not in values:
                node = graph[key]
                values[key] = node({dep: value(dep) for dep in node.dependencies})
            return values[key]

        assert np.array_equal(np.concatenate([value(key) for key in keys]), np.arange(12) * 2)


def test_a_placeholder_is_filled_in_when_the_graph_runs():
    with private_api("dask.delayed.Delayed(key, graph)"):
        hole = dask_compat.placeholder("diaggmm-test-hole")
        total = da.blockwise(
            lambda x, p: x + p, "i", da.ones(4, chunks=2), "i", hole, None, dtype=float
        )
        graph = {**dict(total.__dask_graph__()), "diaggmm-test-hole": 10}
        assert np.array_equal(
            np.concatenate(dask.get(graph, dask_compat.flat_keys(total))), np.full(4, 11.0)
        )


def test_a_named_graph_runs_on_a_cluster_under_its_priorities():
    distributed = pytest.importorskip("distributed")
    graph = {
        "diaggmm-test-x": dask_compat.DataNode("diaggmm-test-x", 3),
        "diaggmm-test-y": dask_compat.Task(
            "diaggmm-test-y", operator.add, dask_compat.TaskRef("diaggmm-test-x"), 4
        ),
    }
    with private_api("dask._expr.LLGExpr(graph, _determ_token=...) in Client.get"):
        named = dask_compat.named_graph(graph, "diaggmm-test-name")
        assert named is not graph
        with distributed.Client(
            processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
        ) as client:
            with dask.annotate(priority={"diaggmm-test-y": 1, "diaggmm-test-x": 0}.get):
                assert client.get(named, "diaggmm-test-y") == 7


def test_a_worker_peeks_its_ready_tasks(local_cluster):
    from distributed import Client

    assert dask_compat.ready_tasks(2) == []  # not on a worker: nothing, no error

    def peek_queued(dask_worker):
        with private_api("distributed Worker.state.ready (HeapSet of TaskState, run_spec)"):
            return list(dask_worker.state.ready.peekn(4))

    with Client(local_cluster) as client:
        assert all(ready == [] for ready in client.run(peek_queued).values())
        # while one task runs on a single-threaded worker, the next waits in its ready queue
        worker = next(iter(client.scheduler_info()["workers"]))
        blocker = client.submit(
            lambda: __import__("time").sleep(1) or dask_compat.ready_tasks(4),
            workers=[worker],
            pure=False,
        )
        waiting = client.submit(operator.add, 1, 2, workers=[worker], pure=False)
        seen = blocker.result()
        assert waiting.result() == 3
    assert [spec.key for spec in seen] == [waiting.key]
