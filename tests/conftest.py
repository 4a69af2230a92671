"""Shared fixtures: data with known structure, real dask clusters, scikit-learn as the oracle."""

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from prefect_harness import stop_process_group
from sklearn.exceptions import ConvergenceWarning


@pytest.fixture(autouse=True)
def _quiet_convergence():
    # tol=0 runs never "converge"; that warning is expected in most tests.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def mixture_data(n, d, k, seed=0, sizes=None, offset=0.0):
    """Rows drawn from a random diagonal mixture; ``sizes`` fixes the rows per component."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, size=(k, d)) + offset
    scales = rng.uniform(0.5, 2.0, size=(k, d))
    if sizes is None:
        sizes = rng.multinomial(n, np.full(k, 1 / k))
    labels = np.repeat(np.arange(k), sizes)
    rng.shuffle(labels)
    X = means[labels] + rng.standard_normal((labels.size, d)) * scales[labels]
    return X, labels


class Crash(BaseException):
    """Stands in for the process dying: nothing in the library catches it."""


def crash_after(monkeypatch, passes):
    """Make every data pass after the first ``passes`` raise :class:`Crash`; returns the pass
    counter.
    """
    from diaggmm_dist import engine

    real, count = engine.pass_statistics, [0]

    def dying(*args, **kwargs):
        count[0] += 1
        if count[0] > passes:
            raise Crash()
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "pass_statistics", dying)
    return count


def start_values(X, k, seed=0):
    """Initial parameters shared by DiagGMM and scikit-learn in the exactness tests."""
    rng = np.random.default_rng(seed)
    means = X[rng.choice(X.shape[0], size=k, replace=False)]
    precisions = np.tile(1.0 / X.var(axis=0), (k, 1)) * rng.uniform(0.5, 2.0, size=(k, X.shape[1]))
    weights = rng.uniform(0.5, 1.5, size=k)
    return weights / weights.sum(), means, precisions


@pytest.fixture(scope="session")
def local_cluster():
    """A real distributed LocalCluster with two single-threaded worker processes."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cli_cluster(tmp_path_factory):
    """``dask scheduler`` and ``dask worker`` started from their command lines on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("dask-cli")
    scheduler_file = folder / "scheduler.json"
    dask_cli = str(Path(sys.executable).parent / "dask")
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    common = dict(
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    scheduler = subprocess.Popen(
        [
            dask_cli,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        **common,
    )
    workers = subprocess.Popen(
        [
            dask_cli,
            "worker",
            "--scheduler-file",
            str(scheduler_file),
            "--nworkers",
            "2",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--local-directory",
            str(folder),
        ],
        **common,
    )
    try:
        from distributed import Client

        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            if time.monotonic() > deadline or scheduler.poll() is not None:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.2)
        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield str(scheduler_file)
    finally:
        stop_process_group(workers, scheduler, grace=30)
