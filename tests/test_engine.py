"""The dask layer's statistics pass: local threads run the chunk tasks themselves, clusters use
dask.
"""

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from diaggmm_dist import engine, inputs, kernels
from diaggmm_dist.dask_compat import DataNode
from diaggmm_dist.engine import cluster
from diaggmm_dist.engine.graphs import SPLIT_EVERY, PassParameters, statistics_graph


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(3).standard_normal((50_000, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def coefficients():
    rng = np.random.default_rng(4)
    return kernels.log_prob_coefficients(
        np.full(3, 1 / 3),
        rng.standard_normal((3, 4)),
        rng.uniform(0.5, 2, (3, 4)),
        np.zeros(4),
        np.float32,
    )


def _store(rows, path, chunk_rows):
    array = zarr.create_array(
        str(path), shape=rows.shape, chunks=(chunk_rows, rows.shape[1]), dtype=rows.dtype
    )
    array[:] = rows
    return str(path)


def _no_dask_scheduler(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(
            "dask's threaded scheduler ran a pass the local executor should have run"
        )

    monkeypatch.setattr(dask.threaded, "get", refuse)


def test_local_passes_run_every_chunk_without_dask_scheduler(
    rows, coefficients, tmp_path, monkeypatch
):
    expected = kernels.chunk_statistics(rows, ("gaussian", coefficients))
    _no_dask_scheduler(monkeypatch)
    for X in (
        inputs.as_row_chunked(rows, chunk_size=4096),
        inputs.as_row_chunked(_store(rows, tmp_path / "x.zarr", 5000), chunk_size=10_000),
    ):
        graphs = {}
        with dask.config.set(num_workers=1):
            first = engine.pass_statistics(X, ("gaussian", coefficients), graphs=graphs)
        (built,) = graphs.values()
        assert len(built.chunk_keys) == X.numblocks[0]
        np.testing.assert_allclose(first, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        # the cached graph is reused, and the sum's order never depends on which thread ran
        # what: other numbers of threads than the first pass's give the same bits
        for n_threads in (2, 3, 7):
            with dask.config.set(num_workers=n_threads):
                assert np.array_equal(
                    engine.pass_statistics(X, ("gaussian", coefficients), graphs=graphs), first
                )
        assert len(graphs) == 1


def test_chunks_that_share_a_read_go_through_dask_scheduler(rows, coefficients, tmp_path):
    # rechunking 5,000-row Zarr chunks into 7,000-row ones: most reads feed two chunks
    X = da.from_zarr(_store(rows, tmp_path / "x.zarr", 5000)).rechunk((7000, 4))
    graphs = {}
    stats = engine.pass_statistics(X, ("gaussian", coefficients), graphs=graphs)
    (built,) = graphs.values()
    assert built.chunk_keys == () and built.result_key is not None
    expected = kernels.chunk_statistics(rows, ("gaussian", coefficients))
    np.testing.assert_allclose(stats, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_an_error_in_a_chunk_reaches_the_caller_and_stops_the_threads(rows, coefficients):
    def load(block_id):
        if block_id == 5:
            raise OSError("chunk 5 is unreadable")
        return rows[block_id * 5000 : (block_id + 1) * 5000]

    X = da.concatenate(
        [
            da.from_delayed(dask.delayed(load)(i), shape=(5000, 4), dtype=rows.dtype)
            for i in range(10)
        ]
    )
    with pytest.raises(OSError, match="chunk 5 is unreadable"):
        engine.pass_statistics(X, ("gaussian", coefficients))
    assert not [
        thread for thread in threading.enumerate() if thread.name.startswith("diaggmm-pass")
    ]


def test_numpy_input_is_chunked_without_a_copy(rows):
    X = inputs.as_row_chunked(rows, chunk_size=4096)
    chunks = [value for value in dict(X.__dask_graph__()).values() if isinstance(value, np.ndarray)]
    assert len(chunks) == X.numblocks[0] and all(np.shares_memory(chunk, rows) for chunk in chunks)
    assert np.array_equal(X.compute(), rows)
    # input that is not C-contiguous is copied once, into rows the kernels can read directly
    fortran = np.asfortranarray(rows)
    assert np.array_equal(inputs.as_row_chunked(fortran, chunk_size=4096).compute(), rows)


def test_each_chunk_is_one_task_that_reads_it(rows, coefficients, tmp_path):
    # what a cluster runs: no read task whose 16 MiB result waits in a worker's memory
    X = inputs.as_row_chunked(_store(rows, tmp_path / "x.zarr", 2000), chunk_size=2000)
    built = statistics_graph(X, "error", None, False, coefficients.model_sizes)
    tasks = [key for key, node in built.graph.items() if not isinstance(node, DataNode)]
    n_chunks = X.numblocks[0]  # 25: a tree of 4 + 1 additions above them
    assert len(built.chunk_keys) == n_chunks and len(tasks) == n_chunks + 4 + 1
    stats = dask.get(
        {
            **built.graph,
            built.parameter_key: PassParameters(("gaussian", coefficients), False),
        },
        built.result_key,
    )
    expected = kernels.chunk_statistics(rows, ("gaussian", coefficients))
    np.testing.assert_allclose(stats, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_a_cluster_pass_runs_groups_of_chunks_under_keys_of_its_own(rows, coefficients, tmp_path):
    X = inputs.as_row_chunked(
        _store(rows, tmp_path / "x.zarr", 246), chunk_size=246
    )  # 204 chunks, the last short
    built = statistics_graph(X, "error", None, False, coefficients.model_sizes)
    parameters = PassParameters(("gaussian", coefficients), False)
    assert SPLIT_EVERY == 8  # the counts below rest on it
    # 1 thread: 25 groups of 8 chunks and one of 4, each adding itself up, then a tree of 4 + 1
    # additions
    assert cluster.group_sizes(204, 1) == [8] * 25 + [4]
    one = cluster.cluster_graph(built, parameters, n_threads=1)
    tasks = [key for key, node in one.graph.items() if not isinstance(node, DataNode)]
    assert len(tasks) == 26 + 4 + 1
    stats = dask.get(one.graph, one.result_key)
    expected = kernels.chunk_statistics(rows, ("gaussian", coefficients))
    np.testing.assert_allclose(stats, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    # more threads: the pass ends on smaller groups, handed to the tree unsummed, down to single
    # chunks; the tree adds up the same blocks in the same order, so the sum is the very same
    # whatever the number of workers (losing one changes nothing)
    for n_threads in (2, 4, 8, 32, 300):
        sizes = cluster.group_sizes(204, n_threads)
        assert (
            sum(sizes) == 204
            and sizes == sorted(sizes, reverse=True)
            and set(sizes) <= {1, 2, 4, 8}
        )
        assert sizes[-1] == 1 and sizes.count(8) == max(0, (204 - 8 * n_threads) // 8 + 1)
        windows = cluster.first_level_windows(sizes)
        assert [sum(sizes[i] for i in window) for window in windows] == [8] * 25 + [4]
        grouped = cluster.cluster_graph(built, parameters, n_threads=n_threads)
        n_tasks = sum(not isinstance(node, DataNode) for node in grouped.graph.values())
        assert n_tasks == len(sizes) + sum(len(window) > 1 for window in windows) + 4 + 1
        assert np.array_equal(dask.get(grouped.graph, grouped.result_key), stats)
        _assert_row_order(grouped)
    # the next pass shares no key with this one (the scheduler keeps results by key)
    again = cluster.cluster_graph(built, parameters, n_threads=1)
    assert not set(again.graph) & set(one.graph)


def _assert_row_order(cluster_pass):
    """The scheduler takes the groups in row order (the smallest last), each sum once its inputs are
    done.
    """
    graph, priority = cluster_pass.graph, cluster_pass.priority
    groups = [key for key in graph if "chunks" in str(key)]
    assert [priority[key] for key in groups] == sorted(
        (priority[key] for key in groups), reverse=True
    )

    def groups_under(key):
        return (
            {key}
            if key in groups
            else set().union(*(groups_under(dep) for dep in graph[key].dependencies))
        )

    for key, node in graph.items():
        if "sum" in str(key):
            assert all(priority[key] < priority[dep] for dep in node.dependencies)
            last = max(groups.index(group) for group in groups_under(key))
            assert all(priority[key] > priority[group] for group in groups[last + 1 :])
