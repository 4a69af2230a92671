"""The dask layer's statistics pass: local threads run the chunk tasks themselves, clusters use dask."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from diaggmm_dist import engine, kernels


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(3).standard_normal((50_000, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def coefficients():
    rng = np.random.default_rng(4)
    return kernels.log_prob_coefficients(np.full(3, 1 / 3), rng.standard_normal((3, 4)), rng.uniform(0.5, 2, (3, 4)),
                                         np.zeros(4), np.float32)


def _store(rows, path, chunk_rows):
    array = zarr.create_array(str(path), shape=rows.shape, chunks=(chunk_rows, rows.shape[1]), dtype=rows.dtype)
    array[:] = rows
    return str(path)


def _no_dask_scheduler(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("dask's threaded scheduler ran a pass the local executor should have run")

    monkeypatch.setattr(dask.threaded, "get", refuse)


def test_local_passes_run_every_chunk_without_dask_scheduler(rows, coefficients, tmp_path, monkeypatch):
    expected = kernels.chunk_statistics(rows, ("gaussian", coefficients))
    _no_dask_scheduler(monkeypatch)
    for X in (engine.as_row_chunked(rows, chunk_size=4096),
              engine.as_row_chunked(_store(rows, tmp_path / "x.zarr", 5000), chunk_size=10_000)):
        graphs = {}
        first = engine.pass_statistics(X, ("gaussian", coefficients), graphs=graphs)
        (built,) = graphs.values()
        assert len(built.chunk_keys) == X.numblocks[0]
        np.testing.assert_allclose(first, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        # the cached graph is reused, and the sum's order never depends on which thread ran what
        with dask.config.set(num_workers=2):
            assert np.array_equal(engine.pass_statistics(X, ("gaussian", coefficients), graphs=graphs), first)
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

    X = da.concatenate([da.from_delayed(dask.delayed(load)(i), shape=(5000, 4), dtype=rows.dtype) for i in range(10)])
    with pytest.raises(OSError, match="chunk 5 is unreadable"):
        engine.pass_statistics(X, ("gaussian", coefficients))
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("diaggmm-pass")]


def test_numpy_input_is_chunked_without_a_copy(rows):
    X = engine.as_row_chunked(rows, chunk_size=4096)
    chunks = [value for value in dict(X.__dask_graph__()).values() if isinstance(value, np.ndarray)]
    assert len(chunks) == X.numblocks[0] and all(np.shares_memory(chunk, rows) for chunk in chunks)
    assert np.array_equal(X.compute(), rows)
    # input that is not C-contiguous is copied once, into rows the kernels can read directly
    fortran = np.asfortranarray(rows)
    assert np.array_equal(engine.as_row_chunked(fortran, chunk_size=4096).compute(), rows)


def test_each_chunk_is_one_task_that_reads_it(rows, coefficients, tmp_path):
    # what a cluster runs: no read task whose 16 MiB result waits in a worker's memory
    X = engine.as_row_chunked(_store(rows, tmp_path / "x.zarr", 2000), chunk_size=2000)
    built = engine._statistics_graph(X, "error", None, False, coefficients.model_sizes)
    tasks = [key for key, node in built.graph.items() if not isinstance(node, engine._DataNode)]
    n_chunks = X.numblocks[0]  # 25: a tree of 4 + 1 additions above them
    assert len(built.chunk_keys) == n_chunks and len(tasks) == n_chunks + 4 + 1
    stats = dask.get({**built.graph, built.parameter_key: engine._PassParameters(("gaussian", coefficients), False)},
                     built.result_key)
    expected = kernels.chunk_statistics(rows, ("gaussian", coefficients))
    np.testing.assert_allclose(stats, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_a_cluster_pass_runs_groups_of_chunks_under_keys_of_its_own(rows, coefficients, tmp_path):
    X = engine.as_row_chunked(_store(rows, tmp_path / "x.zarr", 246), chunk_size=246)  # 204 chunks, the last short
    built = engine._statistics_graph(X, "error", None, False, coefficients.model_sizes)
    parameters = engine._PassParameters(("gaussian", coefficients), False)
    assert engine.TASKS_PER_THREAD == 8 and engine.SPLIT_EVERY == 8  # the counts below rest on these
    # 1 thread (204 chunks >= 8 tasks of 8): groups of 8 chunks, 26 tasks, then a tree of 4 + 1 additions
    graph, result_key = engine._cluster_graph(built, parameters, n_threads=1)
    tasks = [key for key, node in graph.items() if not isinstance(node, engine._DataNode)]
    assert len(tasks) == 26 + 4 + 1
    stats = dask.get(graph, result_key)
    expected = kernels.chunk_statistics(rows, ("gaussian", coefficients))
    np.testing.assert_allclose(stats, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    # more threads, smaller groups handed to the tree unsummed, down to one chunk per task: the
    # tree adds up the same blocks in the same order, so the sum is the very same whatever the
    # number of workers (losing one changes nothing)
    for n_threads, size in ((4, 4), (8, 2), (32, 1)):
        grouped, grouped_key = engine._cluster_graph(built, parameters, n_threads=n_threads)
        n_tasks = sum(not isinstance(node, engine._DataNode) for node in grouped.values())
        assert n_tasks == -(-204 // size) + 26 + 4 + 1
        assert np.array_equal(dask.get(grouped, grouped_key), stats)
    # the next pass shares no key with this one (the scheduler keeps results by key)
    again, _ = engine._cluster_graph(built, parameters, n_threads=1)
    assert not set(again) & set(graph)
