"""What the README and the docstrings claim, each checked where it happens.

* BLAS runs on one thread inside every chunk task of a local pass ("BLAS held to one thread
  per dask thread"), and distributed's workers start with one BLAS thread.
* Variances never go below ``mstep.VARIANCE_FLOOR`` times the feature's overall variance: a
  collapsed component's variance is that floor.
* A fit does not depend on which thread ran what: other thread counts, other cluster sizes,
  the same bits.
* The direct Zarr reader reads every chunk file of a thread into one reused buffer.
* ``open_gridded`` reads NetCDF files as it reads Zarr groups, and the main job
  (``python -m flows.demo --data my.zarr --feature-dim band``, what ``make run ARGS=...``
  runs) fits a user's own gridded Zarr store or NetCDF file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import mixture_data
from prefect_harness import QUIET, REPO
from threadpoolctl import threadpool_info, threadpool_limits

from diaggmm_dist import DiagGMM, kernels, mstep, zarr_chunks
from diaggmm_dist.inputs import open_gridded


def _blas_threads():
    """The thread count of every BLAS library loaded in this process (threadpoolctl's own view)."""
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


# ----------------------------------------------------------------------- BLAS threads
def test_blas_runs_on_one_thread_inside_every_local_chunk_task(tmp_path, monkeypatch):
    X, _ = mixture_data(40_000, 4, 3, seed=1)
    store = zarr.create_array(
        str(tmp_path / "x.zarr"), shape=X.shape, chunks=(5_000, 4), dtype="f8"
    )
    store[:] = X
    seen = []

    def spying(name):
        real = getattr(kernels, name)

        def spy(*args, **kwargs):
            seen.append((name, threading.current_thread().name, _blas_threads()))
            return real(*args, **kwargs)

        monkeypatch.setattr(kernels, name, spy)

    for name in ("chunk_statistics", "row_labels", "row_log_likelihood"):
        spying(name)
    # more BLAS threads than the engine's limit outside, whatever this machine's default
    with threadpool_limits(limits=4, user_api="blas"):
        assert _blas_threads() == {4}
        gmm = DiagGMM(3, random_state=0, max_iter=3, tol=0, chunk_size=4_000).fit(
            X
        )  # the engine's own threads
        # chunks that share a read: the pass goes through dask's threaded scheduler
        DiagGMM(3, random_state=0, max_iter=2, tol=0).fit(
            da.from_zarr(str(tmp_path / "x.zarr")).rechunk((7_000, 4))
        )
        gmm.predict(X)  # per-row results of in-memory input, computed by the engine
        gmm.score(da.from_array(X, chunks=(6_000, 4)))
        assert _blas_threads() == {4}  # given back afterwards
    kinds = {name for name, _, _ in seen}
    assert kinds == {"chunk_statistics", "row_labels", "row_log_likelihood"}
    assert len({thread for _, thread, _ in seen}) > 1  # tasks ran on several threads
    assert all(threads == {1} for _, _, threads in seen), seen


def test_distributed_workers_start_with_one_blas_thread(local_cluster):
    from distributed import Client

    with Client(local_cluster) as client:
        per_worker = client.run(_blas_threads)
    assert len(per_worker) == 2 and all(threads == {1} for threads in per_worker.values()), (
        per_worker
    )


# ----------------------------------------------------------------------- variance floor
@pytest.mark.parametrize("reg_covar", [1e-6, 0.5])
def test_a_collapsed_component_has_the_variance_floor(reg_covar):
    # Features spread over ~1e6 (variances ~1e12, so the floor is ~1e3, far above reg_covar):
    # 300 rows at exactly one point, and one broad component elsewhere.
    rng = np.random.default_rng(0)
    spread = np.array([1e6, 3e5])
    X = np.vstack([np.tile([4e6, -1e6], (300, 1)), rng.standard_normal((1_700, 2)) * spread])
    gmm = DiagGMM(
        2,
        weights_init=[0.15, 0.85],
        means_init=[[4e6, -1e6], [0, 0]],
        precisions_init=1 / np.array([[1e6, 1e6], spread**2]),
        reg_covar=reg_covar,
        max_iter=20,
        tol=0,
    ).fit(X)
    floor = mstep.VARIANCE_FLOOR * X.var(axis=0)
    assert floor.min() > 100 * reg_covar
    np.testing.assert_allclose(gmm.means_[0], [4e6, -1e6], rtol=1e-14)  # collapsed onto the point
    assert gmm.weights_[0] == pytest.approx(0.15, rel=1e-12)
    # The floor itself: reg_covar added to a zero spread would be 1e-6 or 0.5. (The floor is
    # taken from the statistics, X.var from the rows: measured equal to 4e-15.)
    np.testing.assert_allclose(gmm.covariances_[0], floor, rtol=1e-12)
    assert np.all(gmm.covariances_[1] > 1e10)
    assert np.all(np.isfinite(gmm.score_samples(X)))


# ----------------------------------------------------------------------- threads and workers
def _fit(data):
    return DiagGMM(4, random_state=0, max_iter=10, tol=0).fit(data)


def _assert_identical(a, b):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.lower_bounds_ == b.lower_bounds_


def test_a_fit_is_the_same_to_the_bit_whatever_thread_or_worker_ran_what(local_cluster):
    from distributed import Client, LocalCluster

    X, _ = mixture_data(60_000, 6, 4, seed=11)
    data = da.from_array(X, chunks=(1_000, 6))  # 60 chunks: the order of additions matters
    with dask.config.set(num_workers=1):
        one = _fit(data)
    for n_threads in (2, 3, 7):
        with dask.config.set(num_workers=n_threads):
            _assert_identical(_fit(data), one)
    # On a cluster the chunks run in groups sized for the number of threads, added up by one
    # tree whatever the groups: 2 worker processes and 3 worker threads give the same bits.
    with Client(local_cluster):
        two_workers = _fit(data)
    with (
        LocalCluster(
            n_workers=3, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        _assert_identical(_fit(data), two_workers)
    # (the cluster's tree of 8-way sums and the local threads' one sum in chunk order differ
    # in their last bits: measured 3e-14 relative, within the README's 1e-10)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(two_workers, name), getattr(one, name), rtol=1e-12)


# ----------------------------------------------------------------------- the direct reader's buffer
def test_a_thread_reads_every_chunk_file_into_one_reused_buffer(tmp_path, monkeypatch):
    # Blosc chunks that compress to very different sizes (ones, then noise; not zeros: a chunk
    # of the fill value is never written), read small, large, small, large, small
    from diaggmm_dist.stores.zarr_groups import DATA_COMPRESSORS

    values = np.ones((3_000, 8), dtype=np.float32)
    values[1_000:2_000] = np.random.default_rng(1).standard_normal((1_000, 8))
    array = zarr.create_array(
        str(tmp_path / "x.zarr"),
        shape=values.shape,
        chunks=(1_000, 8),
        dtype="f4",
        compressors=DATA_COMPRESSORS,
    )
    array[:] = values
    direct = zarr_chunks.direct_rows(array)
    sizes = {
        start: (tmp_path / "x.zarr" / "c" / str(start // 1_000) / "0").stat().st_size
        for start in (0, 1_000)
    }
    assert sizes[1_000] > 4 * sizes[0]
    targets = []
    read_exactly = zarr_chunks.DirectRows._read_exactly

    def recorded(
        self, file, view, key
    ):  # keeps the memory each file is read into (alive: no address reuse)
        targets.append((threading.current_thread().name, np.frombuffer(view, dtype=np.uint8)))
        return read_exactly(self, file, view, key)

    monkeypatch.setattr(zarr_chunks.DirectRows, "_read_exactly", recorded)
    monkeypatch.setattr(
        zarr_chunks._thread_buffers, "read", None, raising=False
    )  # this thread starts afresh
    for start in (0, 1_000, 2_000, 1_000, 0):
        assert np.array_equal(direct[start : start + 1_000, :], values[start : start + 1_000])
    # one read per file (local files are read whole), each from the start of the buffer
    reads = [target for _, target in targets]
    assert [target.size for target in reads] == [
        sizes[0],
        sizes[1_000],
        sizes[0],
        sizes[1_000],
        sizes[0],
    ]
    grown = reads[1]  # the first (small) read allocates, the large one grows the buffer ...
    assert grown.ctypes.data % zarr_chunks._READ_ALIGNMENT == 0
    # ... and every later read, small or large, goes into that same memory
    assert all(target.ctypes.data == grown.ctypes.data for target in reads[2:])
    # another thread has a buffer of its own
    thread = threading.Thread(target=lambda: direct[1_000:2_000, :], name="other-reader")
    thread.start()
    thread.join()
    other = [target for name, target in targets if name == "other-reader"]
    assert other and not any(np.shares_memory(target, grown) for target in other)


# ----------------------------------------------------------------------- gridded Zarr and NetCDF
@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """A (time, y, x, band) cube of three regimes, written as a Zarr store and as a NetCDF file."""
    root = tmp_path_factory.mktemp("gridded")
    rng = np.random.default_rng(4)
    regime = rng.integers(0, 3, (4, 30, 40))
    centers = np.array([[0.1, 0.3, 0.5], [0.4, 0.2, 0.1], [0.2, 0.6, 0.3]])
    values = (centers[regime] + 0.03 * rng.standard_normal((4, 30, 40, 3))).astype(np.float32)
    data = xr.DataArray(
        values,
        dims=("time", "y", "x", "band"),
        name="reflectance",
        coords={
            "time": np.arange(4),
            "y": np.linspace(50, 49, 30),
            "x": np.linspace(4, 6, 40),
            "band": ["b1", "b2", "b3"],
        },
    )
    data.to_dataset().to_zarr(root / "cube.zarr", mode="w", consolidated=False)
    data.to_dataset().to_netcdf(
        root / "cube.nc"
    )  # NetCDF classic here (scipy), NetCDF4 with netCDF4
    return data, root


def test_open_gridded_reads_netcdf_as_it_reads_zarr(cube):
    data, root = cube
    for path in (root / "cube.nc", root / "cube.zarr"):
        opened = open_gridded(str(path))
        assert isinstance(opened.data, da.Array)  # lazily
        xr.testing.assert_identical(opened.load(), data)
        fitted = DiagGMM(3, random_state=0, max_iter=10, tol=0).fit(str(path), feature_dim="band")
        in_memory = DiagGMM(3, random_state=0, max_iter=10, tol=0).fit(data, feature_dim="band")
        _assert_identical(fitted, in_memory)
        labels = fitted.predict(str(path))
        assert labels.dims == ("time", "y", "x")
        np.testing.assert_array_equal(labels.values, in_memory.predict(data).values)


@pytest.mark.parametrize("name", ["cube.zarr", "cube.nc"])
def test_the_main_job_fits_your_own_gridded_store(cube, name, tmp_path):
    data, root = cube
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "flows.demo",
        "--data",
        str(root / name),
        "--feature-dim",
        "band",
        "--k",
        "3",
        "--max-iter",
        "6",
        "--tol",
        "0",
        "--out",
        str(out),
    ]
    # as `make run` runs it: Prefect's temporary server, under a PREFECT_HOME of its own
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    env.update(
        QUIET,
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, start_new_session=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert (
        "4,800 samples x 3 features" in done.stdout
    )  # the summary: every pixel of every time step
    model = DiagGMM.load(str(out / "model.zarr"))
    assert model.n_iter_ == 6 and list(model.feature_names_in_) == ["b1", "b2", "b3"]
    # the flow's fit (float32, on its own LocalCluster) is the library's: measured equal (one
    # chunk, the same float32 products)
    expected = DiagGMM(3, random_state=0, max_iter=6, tol=0, dtype="float32").fit(
        data, feature_dim="band"
    )
    for attribute in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(model, attribute), getattr(expected, attribute), rtol=1e-12
        )
    labels = xr.open_zarr(out / "labels.zarr", consolidated=False).labels
    assert labels.dims == ("time", "y", "x")
    np.testing.assert_array_equal(labels.values, expected.predict(data).values)
    for png in ("regimes.png", "convergence.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
