"""The engine's progress hook (:mod:`diaggmm_dist.engine.progress`): passes report their chunks
and rows as they finish, on threads and on a cluster, and a fit is the same to the bit with a
hook or without one."""

import threading
import time

import dask.array as da
import numpy as np
import pytest
import zarr

from diaggmm_dist import DiagGMM
from diaggmm_dist.engine import compute
from diaggmm_dist.engine.progress import PassProgress, pass_started, reporting


def _data(rows=12_000, chunk=1_000, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (rows // 2, d)), rng.normal(3, 1, (rows - rows // 2, d))])
    return X, chunk


def _fit(X, chunk):
    return DiagGMM(2, max_iter=4, tol=0, chunk_size=chunk, random_state=3).fit(X)


def _passes(seen, kind="statistics"):
    """The reports of each pass of ``kind``, split where a pass starts (nothing done)."""
    passes = []
    for report in seen:
        if report.kind != kind:
            continue
        if report.chunks_done == 0:
            passes.append([])
        passes[-1].append(report)
    return passes


def _assert_complete_passes(passes, n_chunks, n_rows):
    assert passes
    for reports in passes:
        assert reports[0] == PassProgress(0, n_chunks, 0, n_rows, "statistics")
        assert reports[-1] == PassProgress(n_chunks, n_chunks, n_rows, n_rows, "statistics")
        done = [r.chunks_done for r in reports]
        assert done == sorted(done) and len(set(done)) == len(done)
        assert all(r.rows_done == r.chunks_done * (n_rows // n_chunks) for r in reports)


def test_local_passes_report_every_chunk_and_the_fit_is_unchanged():
    X, chunk = _data()
    reference = _fit(X, chunk)
    seen, threads = [], set()

    def hook(report):
        seen.append(report)
        threads.add(threading.current_thread().name)

    with reporting(hook):
        fitted = _fit(X, chunk)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(reference, name))
    assert fitted.lower_bounds_ == reference.lower_bounds_
    passes = _passes(seen)
    _assert_complete_passes(passes, 12, 12_000)
    # every chunk is told one by one, from the pass's own threads
    assert any(len(reports) == 13 for reports in passes)
    assert any(name.startswith("diaggmm-pass-") for name in threads)
    # outside the block nothing is told
    seen.clear()
    _fit(X, chunk)
    assert seen == []


def _store_and_count(folder):
    """``engine.compute`` of what ``predict`` computes: a store of two arrays (a tuple of
    collections) and a count beside it; the reports seen."""
    targets = [
        zarr.create_array(folder / f"{name}.zarr", shape=(100,), chunks=(10,), dtype="f8")
        for name in ("a", "b")
    ]
    values = da.arange(100, chunks=10) * 2.0
    stored = da.store([values, values + 1], targets, lock=False, compute=False)
    seen = []
    with reporting(seen.append):
        _, (count,) = compute(stored, [values.sum()])
    assert count == 9900.0
    np.testing.assert_array_equal(targets[1][...], np.arange(100) * 2.0 + 1)
    return seen


def test_a_computation_reports_its_result_tasks(tmp_path):
    """``engine.compute`` (predict's writes) reports the tasks its result is made of."""
    seen = _store_and_count(tmp_path)
    assert [r.chunks_done for r in seen] == list(range(22))  # 2 x 10 chunks stored, 1 sum
    assert {(r.n_chunks, r.rows_done, r.kind) for r in seen} == {(21, None, "compute")}


def test_a_broken_hook_is_turned_off_not_raised(caplog):
    X, chunk = _data(rows=4_000)
    calls = []

    def hook(report):
        calls.append(report)
        raise RuntimeError("display gone")

    with reporting(hook):
        fitted = _fit(X, chunk)
        assert pass_started(n_chunks=3) is None  # off for the rest of the block
    assert len(calls) == 1 and "progress reporting failed" in caplog.text
    np.testing.assert_array_equal(fitted.means_, _fit(X, chunk).means_)


def _released(client, matches) -> bool:
    """No key that ``matches`` is held on the cluster, once the scheduler has heard of the
    releases (they reach it asynchronously); False if some stay for 30 s."""
    deadline = time.monotonic() + 30
    while any(matches(key) for key in client.who_has()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.timeout(300)
def test_cluster_passes_report_their_groups_and_the_fit_is_unchanged(local_cluster, tmp_path):
    from distributed import Client

    X, chunk = _data(rows=40_000, chunk=1_000)
    reference = _fit(X, chunk)
    seen = []
    with Client(local_cluster) as client:
        plain = _fit(X, chunk)
        with reporting(seen.append):
            fitted = _fit(X, chunk)
        # the groups' futures are released with the pass: nothing stays on the cluster
        assert _released(client, lambda key: "diaggmm-pass" in str(key))
        computed = _store_and_count(tmp_path)
        assert computed[0] == PassProgress(0, 21, None, None, "compute")
        assert computed[-1] == PassProgress(21, 21, None, None, "compute")
        assert _released(client, lambda key: True)  # the persisted parts are released too
    # 40 chunks: the cluster's tree adds them in another order than threads (last bits)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(plain, name))
        np.testing.assert_allclose(getattr(fitted, name), getattr(reference, name), rtol=1e-12)
    assert fitted.lower_bounds_ == plain.lower_bounds_
    passes = _passes(seen)
    _assert_complete_passes(passes, 40, 40_000)
    # groups of chunks (8, halving toward 1 at the end) are told as they finish, mid-pass
    assert any(0 < r.chunks_done < 40 for reports in passes for r in reports)


def test_the_module_example_runs():
    import doctest
    import warnings

    from diaggmm_dist.engine import progress

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny example may not converge: not what it shows
        failures, tried = doctest.testmod(progress)
    assert tried and not failures
