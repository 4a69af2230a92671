"""Killed at any instant: a fit in a child process is SIGKILLed, and the resumed fit is the
uninterrupted one.

The child (:data:`CHILD`) runs ``DiagGMM.fit`` on a checkpoint and parks itself at one chosen
point: at the start of data pass ``n`` (every pass of the fit: the initialization's and the 12
iterations'), inside a checkpoint write (after its array's metadata, before its chunk; before
the step's completion mark; before the pointer), or after the last iteration. There it writes
a marker file and sleeps; the parent kills it with a real SIGKILL (no ``finally``, no
``atexit``, the lease's heartbeat thread dies mid-beat) and resumes the fit in this process on
the same checkpoint:
it must take over the dead holder's lease without help, run only the passes not committed,
and end with exactly (bit for bit, float64) the model of an uninterrupted fit.
"""

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from children import sigkill_when
from conftest import mixture_data

import diaggmm_dist
from diaggmm_dist import DiagGMM, engine
from diaggmm_dist.stores import lease
from diaggmm_dist.stores.checkpoint import CheckpointInUseError, CorruptCheckpointWarning

#: 2 restarts, 12 iterations each: 13 data passes (one initialization pass serves both
#: restarts, then one pass per iteration), 13 checkpoint writes (one after each pass).
SETTINGS = dict(
    n_components=3, random_state=4, tol=0.0, max_iter=12, n_init=2, init_params="random"
)
PASSES = 13

#: The child: fits, parks where ``stop`` says (writing ``marker``), waits for its SIGKILL.
CHILD = r"""
import json, os, sys, time
import numpy as np
from diaggmm_dist import DiagGMM, engine
from diaggmm_dist.stores import checkpoint, lease

cfg = json.loads(sys.argv[1])
kind, number, phase = cfg["stop"] + [None] * (3 - len(cfg["stop"]))
lease.HEARTBEAT_SECONDS = cfg.get("heartbeat", lease.HEARTBEAT_SECONDS)
lease.EXPIRY_SECONDS = cfg.get("expires_after", lease.EXPIRY_SECONDS)


def park(where):
    with open(cfg["marker"] + ".partial", "w") as file:
        file.write(where)
    os.replace(cfg["marker"] + ".partial", cfg["marker"])
    while True:
        time.sleep(3600)  # until the SIGKILL


passes, real_pass = [0], engine.pass_statistics
def pass_statistics(*args, **kwargs):
    passes[0] += 1
    if (kind, number) == ("pass", passes[0]):
        park(f"start of pass {passes[0]}")
    return real_pass(*args, **kwargs)
engine.pass_statistics = pass_statistics

saves, real_save = [0], checkpoint.Checkpoints.save
def save(self, states):
    saves[0] += 1
    return real_save(self, states)
checkpoint.Checkpoints.save = save
writing = lambda: kind == "write" and saves[0] == number

real_put_keys = checkpoint.put_keys
def put_keys(store, files):
    # a step is written in three calls: its array's files, its mark (its zarr.json), the pointer
    if writing() and phase == "inside the array" and any("/planes/" in k for k in files):
        real_put_keys(store, {k: v for k, v in files.items() if k.endswith("/planes/zarr.json")})
        park(f"write {number}, before the chunk of 'planes'")
    if writing() and phase == "before the mark" and any(k.count("/") == 1 for k in files):
        park(f"write {number}, before 'restarts'")
    if writing() and phase == "before the pointer" and "zarr.json" in files:
        park(f"write {number}, before 'latest'")
    return real_put_keys(store, files)
checkpoint.put_keys = put_keys


def on_iteration(summary):
    if (kind, number) == ("iteration", summary["iteration"]) and summary["restart"] == 1:
        park(f"after iteration {number}")


X = np.load(cfg["data"])
DiagGMM(**cfg["settings"]).fit(X, checkpoint=cfg["checkpoint"], on_iteration=on_iteration)
sys.exit(3)  # never parked: the parent reports it
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, _ = mixture_data(3000, 4, 3, seed=21)
    path = tmp_path_factory.mktemp("kill-data") / "X.npy"
    np.save(path, X)
    return X, path


@pytest.fixture(scope="module")
def straight(data):
    return DiagGMM(**SETTINGS).fit(data[0])


def killed_child(stop, data_path, checkpoint, folder, **extra):
    """Run the child until it parks at ``stop``, SIGKILL it, reap it; return its pid."""
    marker = folder / "parked"
    cfg = {
        "stop": list(stop),
        "data": str(data_path),
        "checkpoint": str(checkpoint),
        "marker": str(marker),
        "settings": SETTINGS,
        **extra,
    }
    package_root = str(Path(diaggmm_dist.__file__).parents[1])  # this checkout, also in the child
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def parked():
        if not marker.exists():
            return False
        if "heartbeat" in extra:  # the heartbeat runs: the lease's renewal time moves while parked
            first = lease_record(checkpoint)["renewed"]
            while lease_record(checkpoint)["renewed"] == first:
                time.sleep(0.05)
        return True

    sigkill_when(child, parked, f"parking at {stop}")
    assert lease_record(checkpoint)["pid"] == child.pid  # it died holding the lease
    return child.pid


def lease_record(checkpoint):
    return json.loads(Path(lease.lease_url(str(checkpoint))).read_text())


def counted_resume(checkpoint, X, monkeypatch):
    """The resumed fit, and its number of data passes."""
    calls, real = [], engine.pass_statistics
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error", CorruptCheckpointWarning
        )  # a kill never leaves a corrupt committed step
        resumed = DiagGMM(**SETTINGS).fit(X, checkpoint=str(checkpoint))
    monkeypatch.undo()
    return resumed, len(calls)


def assert_identical(got, expected):
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.lower_bounds_per_init_ == expected.lower_bounds_per_init_
    assert (got.n_iter_, got.converged_, got.best_init_) == (
        expected.n_iter_,
        expected.converged_,
        expected.best_init_,
    )


@pytest.mark.parametrize("n", range(1, PASSES + 1))
def test_sigkill_at_the_start_of_every_pass(data, straight, tmp_path, monkeypatch, n):
    X, path = data
    checkpoint = tmp_path / "ckpt.zarr"
    killed_child(("pass", n), path, checkpoint, tmp_path)
    resumed, passes = counted_resume(checkpoint, X, monkeypatch)
    assert passes == PASSES - (n - 1)  # passes 1..n-1 were committed, each by its checkpoint
    assert_identical(resumed, straight)
    assert not Path(lease.lease_url(str(checkpoint))).exists()  # taken over, then released


def test_sigkill_after_the_last_checkpoint(data, straight, tmp_path, monkeypatch):
    X, path = data
    checkpoint = tmp_path / "ckpt.zarr"
    killed_child(("iteration", SETTINGS["max_iter"]), path, checkpoint, tmp_path)
    resumed, passes = counted_resume(checkpoint, X, monkeypatch)
    assert passes == 0
    assert_identical(resumed, straight)


@pytest.mark.parametrize(
    "write", [1, 2, PASSES]
)  # the first write (null pointer), the first after a commit, the last
@pytest.mark.parametrize("phase", ["inside the array", "before the mark", "before the pointer"])
def test_sigkill_inside_a_checkpoint_write(
    data, straight, tmp_path, monkeypatch, caplog, write, phase
):
    X, path = data
    checkpoint = tmp_path / "ckpt.zarr"
    killed_child(("write", write, phase), path, checkpoint, tmp_path)
    with caplog.at_level(logging.WARNING, logger="diaggmm_dist.stores.checkpoint"):
        resumed, passes = counted_resume(checkpoint, X, monkeypatch)
    assert_identical(resumed, straight)
    if write == 1 and phase == "before the pointer":
        # the first step was complete when the pointer was still null: it is the run's
        # initialization, used
        assert passes == PASSES - 1
    else:
        assert passes == PASSES - (
            write - 1
        )  # the step being written was not committed: its pass runs again
    if write > 1:  # a step newer than the pointer is removed, and said so
        assert f"removing step-{write - 1:08d}, written after the committed step" in caplog.text


def test_sigkill_then_the_lease_expires_when_the_pid_cannot_be_checked(
    data, straight, tmp_path, monkeypatch
):
    """As on another host: the dead pid cannot be checked, so the lease holds until its heartbeat
    stops long enough.
    """
    X, path = data
    checkpoint = tmp_path / "ckpt.zarr"
    pid = killed_child(("pass", 6), path, checkpoint, tmp_path, heartbeat=0.2, expires_after=10.0)
    monkeypatch.setattr(lease, "_process_ended", lambda pid: False)
    record = lease_record(checkpoint)
    with pytest.raises(CheckpointInUseError, match=rf"in use by {record['host']}/{pid} since"):
        DiagGMM(**SETTINGS).fit(X, checkpoint=str(checkpoint))
    while time.time() - record["renewed"] <= record["expires_after"]:
        time.sleep(0.1)
    resumed = DiagGMM(**SETTINGS).fit(X, checkpoint=str(checkpoint))
    assert_identical(resumed, straight)
