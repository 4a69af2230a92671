"""Real clusters: a LocalCluster with worker processes, and dask scheduler/worker from the CLI."""

import dask
import dask.array as da
import numpy as np
import zarr
from conftest import mixture_data
from distributed import Client, SchedulerPlugin, get_task_stream

from diaggmm_dist import DiagGMM


def _assert_same_fit(a, b, rtol=1e-10):
    for name in ("weights_", "means_", "covariances_"):
        expected = getattr(b, name)
        np.testing.assert_allclose(
            getattr(a, name), expected, rtol=rtol, atol=rtol * np.abs(expected).max()
        )
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=rtol)
    assert a.n_iter_ == b.n_iter_


def _write_zarr(path, X, chunk_rows):
    store = zarr.create_array(
        str(path), shape=X.shape, chunks=(chunk_rows, X.shape[1]), dtype=X.dtype
    )
    store[:] = X
    return store


def test_local_cluster_with_two_worker_processes_matches_threads(local_cluster):
    X, _ = mixture_data(20000, 6, 4, seed=11)
    threaded = DiagGMM(4, random_state=0, max_iter=30, tol=1e-6, chunk_size=2500).fit(X)
    with Client(local_cluster) as client:
        data = da.from_array(X, chunks=(1500, 6)).persist()
        with get_task_stream(client) as tasks:
            distributed = DiagGMM(4, random_state=0, max_iter=30, tol=1e-6).fit(data)
        # the work really ran on both worker processes
        assert len({task["worker"] for task in tasks.data}) == 2
        labels = distributed.predict(data)
        assert isinstance(labels, da.Array)
        np.testing.assert_array_equal(labels.compute(), threaded.predict(X))
    # other chunks (1,500 rows against 2,500) and another order of additions: measured 2e-14
    # relative (variances), 3e-16 (lower bounds)
    _assert_same_fit(distributed, threaded, rtol=1e-12)


def test_cli_scheduler_and_workers_fit_a_zarr_store_on_disk(cli_cluster, tmp_path):
    X, truth = mixture_data(30000, 5, 3, seed=12)
    path = tmp_path / "features.zarr"
    _write_zarr(path, X.astype(np.float32), 4000)
    local = DiagGMM(3, random_state=1, max_iter=25, tol=1e-6, dtype="float32", chunk_size=8000).fit(
        str(path)
    )
    with Client(scheduler_file=cli_cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        with get_task_stream(client) as tasks:
            remote = DiagGMM(
                3, random_state=1, max_iter=25, tol=1e-6, dtype="float32", chunk_size=8000
            ).fit(str(path))
        assert {task["worker"] for task in tasks.data} == set(client.scheduler_info()["workers"])
        log_like = remote.score_samples(str(path))
        assert isinstance(log_like, da.Array)
        # whole Zarr chunks (4000 rows) grouped into dask chunks: writes need no rechunking
        assert log_like.chunks[0] == (8000, 8000, 8000, 6000)
        out = tmp_path / "loglik.zarr"
        log_like.to_zarr(str(out))
    # The same chunks, the same float32 products (single-threaded BLAS on both sides) and at
    # most 8 blocks added in chunk order: measured bit-identical, in float32 as in float64.
    # (The README promises 1e-10; rtol 1e-6 also passed workers that computed in float64.)
    _assert_same_fit(remote, local, rtol=1e-12)
    stored = zarr.open_array(str(out), mode="r")[:]
    # per-row float32 scores: measured equal; one float32 ulp is 6e-8
    np.testing.assert_allclose(stored, local.score_samples(X.astype(np.float32)), rtol=1e-6)
    # three well-separated blobs: the labels recover the truth up to renaming
    labels = local.predict(X.astype(np.float32))
    agreement = max(np.mean(labels == perm[truth]) for perm in _permutations(3))
    assert agreement > 0.99


def _permutations(k):
    from itertools import permutations

    return [np.array(p) for p in permutations(range(k))]


def test_the_library_local_cluster_starts_workers_with_its_malloc_and_periodic_callback_settings(
    monkeypatch,
):
    import os

    from diaggmm_dist.cluster import (
        CLUSTER_CONFIG,
        WORKER_MALLOC_ENVIRON,
        WORKER_PROFILE_INTERVAL,
        local_cluster,
    )

    # What a plain LocalCluster started earlier in this process leaves in its environment
    # (distributed's nannies copy their pre-spawn variables into it).
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with local_cluster(1) as cluster, Client(cluster) as client:
        (environ,) = client.run(
            lambda: {name: os.environ.get(name) for name in WORKER_MALLOC_ENVIRON}
        ).values()
        (interval,) = client.run(
            lambda dask_worker: dask_worker.periodic_callbacks["profile"].callback_time
        ).values()
        (monitor,) = client.run(
            lambda dask_worker: dask_worker.periodic_callbacks["memory_monitor"].callback_time
        ).values()
        ticks = [
            cluster.scheduler._tick_interval,
            *client.run(lambda dask_worker: dask_worker._tick_interval).values(),
        ]
    assert environ == {name: str(value) for name, value in WORKER_MALLOC_ENVIRON.items()}
    assert (
        interval == 1000 * dask.utils.parse_timedelta(WORKER_PROFILE_INTERVAL) != 10
    )  # distributed's default: 10 ms
    assert monitor == 1000 * dask.utils.parse_timedelta(
        CLUSTER_CONFIG["distributed.worker.memory.monitor-interval"]
    )
    assert (
        ticks
        == [dask.utils.parse_timedelta(CLUSTER_CONFIG["distributed.admin.tick.interval"])] * 2
        != [0.02] * 2
    )
    # and this process's environment is left as it was
    assert (
        os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"
        and "MALLOC_MMAP_THRESHOLD_" not in os.environ
    )


class _RecordPriorities(SchedulerPlugin):
    """Keeps the priority the scheduler gave each task of every graph (it runs in this process)."""

    name = "diaggmm-test-priorities"

    def __init__(self):
        self.graphs = []

    def update_graph(self, scheduler, *, priority, **kwargs):
        self.graphs.append(dict(priority))


def test_a_cluster_pass_takes_its_groups_of_chunks_in_row_order(local_cluster, tmp_path):
    # the scheduler follows the library's priorities (engine._row_order_priorities; where the
    # sums come is tested in test_engine), not dask.order's: the groups in row order, so the
    # groups of 8 chunks first and the pass's smaller groups last
    X, _ = mixture_data(24000, 4, 3, seed=13)
    path = tmp_path / "rows.zarr"
    _write_zarr(path, X, 500)  # 48 chunks: groups of 8, then 4, 2 and 1 at the end of each pass
    with Client(local_cluster) as client:
        client.register_plugin(_RecordPriorities())
        try:
            DiagGMM(3, random_state=0, max_iter=3, tol=0, chunk_size=500).fit(str(path))
            graphs = client.run_on_scheduler(
                lambda dask_scheduler: dask_scheduler.plugins[_RecordPriorities.name].graphs
            )
        finally:
            client.unregister_scheduler_plugin(_RecordPriorities.name)
    passes = [graph for graph in graphs if any("diaggmm-pass-chunks-" in str(key) for key in graph)]
    assert len(passes) >= 4  # k-means' passes, the first E-step, three iterations
    for priority in passes:
        groups = sorted(
            (key for key in priority if "diaggmm-pass-chunks-" in str(key)), key=lambda key: key[1]
        )
        assert [key[1] for key in groups] == list(range(9))
        run_order = sorted(priority, key=priority.get)  # the scheduler runs the lowest first
        assert [key for key in run_order if key in groups] == groups


def test_chunks_that_share_a_read_fit_on_a_cluster_through_dask_own_graph(local_cluster, tmp_path):
    # rechunking 2,000-row Zarr chunks into 3,000-row ones: most reads feed two chunks, so a
    # pass keeps dask's graph (fresh keys every pass) instead of the library's groups
    X, _ = mixture_data(12000, 4, 3, seed=14)
    path = tmp_path / "rows.zarr"
    _write_zarr(path, X, 2000)
    data = da.from_zarr(str(path)).rechunk((3000, 4))
    threaded = DiagGMM(3, random_state=0, max_iter=5, tol=0).fit(data)
    with Client(local_cluster):
        distributed = DiagGMM(3, random_state=0, max_iter=5, tol=0).fit(data)
    _assert_same_fit(distributed, threaded)
