"""Checkpoints under tampering and contention: a corrupt step or pointer falls back with a warning,
corrupt root metadata is a clear error that deletes nothing, ``overwrite_checkpoint=True``
always recovers, and one fit at a time holds a checkpoint (its lease)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from conftest import mixture_data

import diaggmm_dist
from diaggmm_dist import DiagGMM, engine
from diaggmm_dist.stores import checkpoint_steps, lease
from diaggmm_dist.stores.checkpoint import (
    KEEP,
    CheckpointError,
    CheckpointInUseError,
    CheckpointMismatchError,
    Checkpoints,
    CorruptCheckpointWarning,
    check_checkpoint,
)

SETTINGS = dict(
    n_components=3, random_state=4, tol=0.0, max_iter=10, n_init=2, init_params="random"
)
#: stopped after 6 iterations: steps 4, 5 and 6 (iterations 4 to 6) are kept
PARTIAL = dict(SETTINGS, max_iter=6)
NEWEST, OLDER, OLDEST = "step-00000006", "step-00000005", "step-00000004"
#: data passes of a resume from step 6, 5, 4, and of a fresh fit (initialization + 10 iterations)
FROM = {NEWEST: 4, OLDER: 5, OLDEST: 6, None: 11}


@pytest.fixture(scope="module")
def X():
    return mixture_data(3000, 4, 3, seed=21)[0]


@pytest.fixture(scope="module")
def straight(X):
    return DiagGMM(**SETTINGS).fit(X)


@pytest.fixture
def stopped(X, tmp_path):
    """A checkpoint of the run stopped after iteration 6 (a local path)."""
    url = tmp_path / "ckpt.zarr"
    DiagGMM(**PARTIAL).fit(X, checkpoint=str(url))
    assert sorted(p.name for p in url.iterdir() if p.is_dir()) == [OLDEST, OLDER, NEWEST]
    return url


def resume(X, url, monkeypatch, **kwargs):
    """The fit on ``url``, its number of data passes, and the CorruptCheckpointWarnings it gave."""
    calls, real = [], engine.pass_statistics
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CorruptCheckpointWarning)
            model = DiagGMM(**SETTINGS).fit(X, checkpoint=str(url), **kwargs)
    finally:
        monkeypatch.setattr(engine, "pass_statistics", real)
    return (
        model,
        len(calls),
        [str(w.message) for w in caught if issubclass(w.category, CorruptCheckpointWarning)],
    )


def assert_identical(got, expected):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.lower_bounds_per_init_ == expected.lower_bounds_per_init_
    assert (got.n_iter_, got.converged_, got.best_init_) == (
        expected.n_iter_,
        expected.converged_,
        expected.best_init_,
    )


def snapshot(folder):
    """Every file under ``folder`` and its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in Path(folder).rglob("*")
        if p.is_file()
    }


def edit_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def edit_restart(step, key, value, restart=0):
    """Set (or with ``value`` None, delete) attribute ``key`` of one restart in ``step`` (its
    entry in the step's mark ``restarts``)."""

    def change(meta):
        if value is None:
            del meta["attributes"]["restarts"][restart][key]
        else:
            meta["attributes"]["restarts"][restart][key] = value

    return lambda url: edit_json(url / step / "zarr.json", change)


def set_pointer(value):
    def change(meta):
        if value is DELETE:
            del meta["attributes"]["latest"]
        else:
            meta["attributes"]["latest"] = value

    return lambda url: edit_json(url / "zarr.json", change)


def chunk_of(url, step):
    """The one chunk of the step's array ``planes`` (every restart's means, covariances and
    precisions)."""
    (chunk,) = (
        p for p in (url / step / "planes").rglob("*") if p.is_file() and p.name != "zarr.json"
    )
    return chunk


def fill_planes(step, restart, value, plane=0):
    """Set one value of ``restart``'s means (``plane`` 0) or covariances (1) in ``step`` to
    ``value`` (rewriting the chunk)."""

    def tamper(url):
        planes = zarr.open_array(str(url / step / "planes"), mode="r+")
        # K=3, D=4: each restart's 3 x 12 values, in order
        planes[36 * restart + 12 * plane + 5] = value

    return tamper


DELETE = object()

# (what, tampering, the step the resume starts from, the warning's words)
FALLBACKS = [
    (
        "garbage zarr.json of the newest step",
        lambda u: (u / NEWEST / "zarr.json").write_text("{not json"),
        OLDER,
        "step-00000006 is unusable.*falling back to step-00000005",
    ),
    (
        "binary zarr.json of the newest step",
        lambda u: (u / NEWEST / "zarr.json").write_bytes(os.urandom(300)),
        OLDER,
        "step-00000006 is unusable",
    ),
    (
        "empty zarr.json of the newest step",
        lambda u: (u / NEWEST / "zarr.json").write_bytes(b""),
        OLDER,
        "step-00000006 is unusable",
    ),
    (
        "zarr.json of the newest step deleted",
        lambda u: (u / NEWEST / "zarr.json").unlink(),
        OLDER,
        "step-00000006 is unusable",
    ),
    (
        "a JSON list as the newest step's zarr.json",
        lambda u: (u / NEWEST / "zarr.json").write_text("[1, 2]"),
        OLDER,
        "step-00000006 is unusable",
    ),
    (
        "garbage zarr.json of the array",
        lambda u: (u / NEWEST / "planes" / "zarr.json").write_text("}"),
        OLDER,
        "step-00000006 is unusable",
    ),
    (
        "the array deleted",
        lambda u: shutil.rmtree(u / NEWEST / "planes"),
        OLDER,
        "step-00000006: array 'planes' is missing",
    ),
    (
        "an array's chunk truncated",
        lambda u: chunk_of(u, NEWEST).write_bytes(chunk_of(u, NEWEST).read_bytes()[:9]),
        OLDER,
        "could not be read",
    ),
    (
        "the array's chunk deleted",
        lambda u: chunk_of(u, NEWEST).unlink(),
        OLDER,
        "step-00000006/restart-0: array 'planes' holds NaN",
    ),
    (
        "a NaN in the second restart's planes",
        fill_planes(NEWEST, 1, np.nan),
        OLDER,
        r"step-00000006/restart-1: array 'planes' holds NaN or infinite values \(1 of 36",
    ),
    (
        "a negative variance in the second restart's planes",
        fill_planes(NEWEST, 1, -1.0, plane=1),
        OLDER,
        "step-00000006/restart-1: array 'covariances' has 1 value",
    ),
    (
        "an array's chunk of zeros",
        lambda u: chunk_of(u, NEWEST).write_bytes(bytes(chunk_of(u, NEWEST).stat().st_size)),
        OLDER,
        "step-00000006 is unusable",
    ),
    (
        "the completion mark missing (a crash before it)",
        lambda u: edit_json(u / NEWEST / "zarr.json", lambda m: m["attributes"].pop("restarts")),
        OLDER,
        "incomplete: its mark 'restarts' is None, not a list of restarts",
    ),
    (
        "the completion mark wrong",
        lambda u: edit_json(u / NEWEST / "zarr.json", lambda m: m["attributes"].update(restarts=3)),
        OLDER,
        "incomplete: its mark 'restarts' is 3, not a list",
    ),
    (
        "the completion mark an empty list",
        lambda u: edit_json(
            u / NEWEST / "zarr.json", lambda m: m["attributes"].update(restarts=[])
        ),
        OLDER,
        "incomplete",
    ),
    (
        "a restart dropped from the mark",
        lambda u: edit_json(u / NEWEST / "zarr.json", lambda m: m["attributes"]["restarts"].pop()),
        OLDER,
        r"step-00000006: array 'planes' has shape \(72,\), expected \(36,\)",
    ),
    (
        "the restarts swapped in the mark",
        lambda u: edit_json(
            u / NEWEST / "zarr.json", lambda m: m["attributes"]["restarts"].reverse()
        ),
        OLDER,
        "step-00000006/restart-0: attribute 'restart' is 1",
    ),
    (
        "a restart's state not an object",
        lambda u: edit_json(
            u / NEWEST / "zarr.json", lambda m: m["attributes"]["restarts"].__setitem__(1, [1])
        ),
        OLDER,
        "step-00000006/restart-1: its attributes are",
    ),
    (
        "an iteration that disagrees with its lower bounds",
        edit_restart(NEWEST, "iteration", 5),
        OLDER,
        r"iteration 5 disagrees with its 6 lower bound\(s\)",
    ),
    (
        "a lower bound too many",
        edit_restart(NEWEST, "lower_bounds", [-5.0] * 7, 1),
        OLDER,
        "disagrees",
    ),
    (
        "iteration as a string",
        edit_restart(NEWEST, "iteration", "6"),
        OLDER,
        "attribute 'iteration' is '6'",
    ),
    (
        "iteration as a float",
        edit_restart(NEWEST, "iteration", 6.5),
        OLDER,
        "attribute 'iteration' is 6.5",
    ),
    (
        "iteration negative",
        edit_restart(NEWEST, "iteration", -1),
        OLDER,
        "attribute 'iteration' is -1",
    ),
    (
        "iteration missing",
        edit_restart(NEWEST, "iteration", None),
        OLDER,
        "attribute 'iteration' is None",
    ),
    (
        "finished as a string",
        edit_restart(NEWEST, "finished", "yes"),
        OLDER,
        "attribute 'finished'",
    ),
    (
        "converged with a lower-bound change above tol",
        edit_restart(NEWEST, "converged", True),
        OLDER,
        r"attribute 'converged' is True, but its last lower-bound change is [0-9.e+-]+ \(tol 0.0\)",
    ),
    (
        "converged but not finished",
        lambda u: (
            edit_restart(NEWEST, "converged", True)(u),
            edit_restart(NEWEST, "finished", False)(u),
        ),
        OLDER,
        "converged but not finished",
    ),
    (
        "restart index not its array's",
        edit_restart(NEWEST, "restart", 1),
        OLDER,
        "attribute 'restart' is 1",
    ),
    (
        "n_reseeded negative",
        edit_restart(NEWEST, "n_reseeded", -2),
        OLDER,
        "attribute 'n_reseeded'",
    ),
    (
        "a lower bound as a string",
        edit_restart(NEWEST, "lower_bounds", ["x"] * 6),
        OLDER,
        "lower_bounds",
    ),
    (
        "a weight too many",
        edit_restart(NEWEST, "weights", [0.25] * 4),
        OLDER,
        "'weights' is not 3 finite numbers",
    ),
    (
        "weights not summing to 1",
        edit_restart(NEWEST, "weights", [0.5, 0.5, 0.5]),
        OLDER,
        "sums to",
    ),
    ("shape of another K", edit_restart(NEWEST, "shape", [2, 4]), OLDER, "has shape"),
    ("shape as a string", edit_restart(NEWEST, "shape", "3x4"), OLDER, "attribute 'shape'"),
    (
        "a random state of 10 keys",
        edit_restart(
            NEWEST, "rng", {"keys": [1] * 10, "pos": 1, "has_gauss": 0, "cached_gaussian": 0.0}
        ),
        OLDER,
        "MT19937",
    ),
    ("a random state missing", edit_restart(NEWEST, "rng", None), OLDER, "MT19937"),
    (
        "two newest steps corrupt",
        lambda u: [chunk_of(u, s).unlink() for s in (NEWEST, OLDER)],
        OLDEST,
        "step-00000005 is unusable.*falling back to step-00000004",
    ),
    (
        "the pointer deleted",
        set_pointer(DELETE),
        NEWEST,
        "no 'latest' pointer; taking the newest usable step",
    ),
    ("the pointer an integer", set_pointer(6), NEWEST, "'latest' pointer is 6, not a step name"),
    ("the pointer a list", set_pointer([NEWEST]), NEWEST, "not a step name"),
    ("the pointer an object", set_pointer({"step": 6}), NEWEST, "not a step name"),
    ("the pointer a short name", set_pointer("step-6"), NEWEST, "'step-6', not a step name"),
    ("the pointer a path", set_pointer("../../elsewhere"), NEWEST, "not a step name"),
    (
        "the pointer deleted and the newest step corrupt",
        lambda u: (set_pointer(DELETE)(u), chunk_of(u, NEWEST).unlink()),
        OLDER,
        "step-00000006 is unusable",
    ),
    (
        "the step the pointer names deleted",
        lambda u: shutil.rmtree(u / NEWEST),
        OLDER,
        "step-00000006, the step its pointer names, is missing",
    ),
    ("the pointer naming an older step", set_pointer(OLDER), OLDER, None),
]


@pytest.mark.parametrize(
    "what, tamper, start, message", FALLBACKS, ids=[case[0] for case in FALLBACKS]
)
def test_a_corrupt_step_or_pointer_falls_back_with_a_warning(
    X, straight, stopped, monkeypatch, what, tamper, start, message
):
    tamper(stopped)
    model, passes, warned = resume(X, stopped, monkeypatch)
    assert_identical(model, straight)
    assert passes == FROM[start], f"resumed from the wrong step: {passes} passes"
    if message is None:
        assert warned == []
    else:
        assert warned and re.search(message, " | ".join(warned)), warned
        assert str(stopped) in warned[0]


def test_a_null_pointer_resumes_from_the_newest_complete_step_and_deletes_nothing(
    X, straight, stopped, monkeypatch, caplog
):
    # null is also the pointer before the first commit: a crash in the first write leaves it
    set_pointer(None)(stopped)
    chunk_of(stopped, NEWEST).unlink()
    identity = zarr.open_group(str(stopped), mode="r").attrs["identity"]
    with Checkpoints(stopped, identity) as store:
        states = store.latest()
        assert [s.iteration for s in states] == [5, 5]
        store.save(states)
    # nothing deleted, the unusable step 6 included: the new step is numbered after it, and it ages
    # out
    assert sorted(p.name for p in stopped.iterdir() if p.is_dir()) == [
        OLDEST,
        OLDER,
        NEWEST,
        "step-00000007",
    ]
    set_pointer(None)(stopped)
    model, passes, warned = resume(X, stopped, monkeypatch)
    assert_identical(model, straight)
    assert passes == FROM[OLDER] and warned == []  # not a corruption of anything committed: logged
    assert "step-00000006 is unusable" in caplog.text


def test_planes_of_several_chunks_resume_bit_for_bit_and_a_lost_one_names_its_restart(
    X, straight, tmp_path, monkeypatch
):
    # large models: the planes of a step span chunks of PLANE_CHUNK values (here 10 of 72)
    monkeypatch.setattr(checkpoint_steps, "PLANE_CHUNK", 10)
    url = tmp_path / "chunked.zarr"
    DiagGMM(**PARTIAL).fit(X, checkpoint=str(url))
    chunks = sorted(int(p.name) for p in (url / NEWEST / "planes" / "c").iterdir())
    assert chunks == list(range(8))
    model, passes, warned = resume(X, url, monkeypatch)
    assert_identical(model, straight)
    assert passes == FROM[NEWEST] and warned == []
    # values 40-49 are restart 1's (restart 0 holds 0-35): a lost chunk is a NaN there
    (url / "step-00000010" / "planes" / "c" / "4").unlink()
    identity = zarr.open_group(str(url), mode="r").attrs["identity"]
    with Checkpoints(url, identity, lease=False) as store:
        with pytest.warns(CorruptCheckpointWarning, match="step-00000010/restart-1: .*holds NaN"):
            states = store.latest()
    assert [s.iteration for s in states] == [9, 9]


def test_a_broken_pointer_never_deletes_the_steps(X, stopped, monkeypatch):
    # the fit before this change read a deleted pointer as "nothing committed" and wiped every step
    set_pointer(DELETE)(stopped)
    files = snapshot(stopped)
    store = Checkpoints(stopped, zarr.open_group(str(stopped), mode="r").attrs["identity"])
    with pytest.warns(CorruptCheckpointWarning, match="no 'latest' pointer"):
        states = store.latest()
    assert [s.iteration for s in states] == [6, 6]
    store.save(states)  # the next step: 7, after every existing one
    store.close()
    kept = {p.name for p in stopped.iterdir() if p.is_dir()}
    assert kept == {OLDER, NEWEST, "step-00000007"}  # pruned to KEEP, from the oldest
    assert len(kept) == KEEP
    assert all(
        snapshot(stopped)[name] == files[name] for name in files if name.startswith((OLDER, NEWEST))
    )


# (what, tampering, the error's words)
ERRORS = [
    (
        "garbage root zarr.json",
        lambda u: (u / "zarr.json").write_text("garbage{"),
        "unreadable root metadata",
    ),
    (
        "empty root zarr.json",
        lambda u: (u / "zarr.json").write_bytes(b""),
        "unreadable root metadata",
    ),
    (
        "binary root zarr.json",
        lambda u: (u / "zarr.json").write_bytes(os.urandom(200)),
        "unreadable root metadata",
    ),
    (
        "a JSON list as root zarr.json",
        lambda u: (u / "zarr.json").write_text("[1]"),
        "unreadable root metadata",
    ),
    (
        "root attributes not an object",
        lambda u: edit_json(u / "zarr.json", lambda m: m.update(attributes=5)),
        "unreadable root metadata",
    ),
    ("root zarr.json deleted", lambda u: (u / "zarr.json").unlink(), "lost its root metadata"),
    (
        "every step unusable",
        lambda u: [chunk_of(u, s).unlink() for s in (NEWEST, OLDER, OLDEST)],
        "No step of the checkpoint .* can be used .*step-00000004: .*holds NaN",
    ),
    (
        "every step unusable, the pointer deleted",
        lambda u: (
            set_pointer(DELETE)(u),
            [(u / s / "zarr.json").write_text("x") for s in (NEWEST, OLDER, OLDEST)],
        ),
        "No step of the checkpoint .* can be used",
    ),
]


@pytest.mark.parametrize("what, tamper, message", ERRORS, ids=[case[0] for case in ERRORS])
def test_unusable_metadata_is_a_clear_error_that_deletes_nothing_and_overwrite_recovers(
    X, straight, stopped, what, tamper, message, monkeypatch
):
    tamper(stopped)
    files = snapshot(stopped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptCheckpointWarning)
        with pytest.raises(CheckpointError, match=message) as error:
            DiagGMM(**SETTINGS).fit(X, checkpoint=str(stopped))
    text = str(error.value)
    assert repr(str(stopped)) in text and "overwrite_checkpoint=True" in text
    assert isinstance(
        error.value, ValueError
    )  # permanent: the CLI's exit 2, not retried by the flows
    assert snapshot(stopped) == files  # nothing deleted or changed
    assert not Path(lease.lease_url(str(stopped))).exists()  # the lease is released after the error
    model, passes, _ = resume(X, stopped, monkeypatch, overwrite_checkpoint=True)
    assert_identical(model, straight)
    assert passes == FROM[None]
    assert sorted(p.name for p in stopped.iterdir() if p.is_dir()) == [
        f"step-{n:08d}" for n in (8, 9, 10)
    ]


def test_check_checkpoint_refuses_before_any_work_and_writes_nothing(stopped, tmp_path):
    check_checkpoint(
        stopped
    )  # a checkpoint of this format: which run it holds is the fit's to check
    check_checkpoint(tmp_path / "nothing-yet.zarr")
    (stopped / "zarr.json").write_text("garbage{")
    files = snapshot(tmp_path)
    with pytest.raises(
        CheckpointError, match="unreadable root metadata.*overwrite_checkpoint=True"
    ):
        check_checkpoint(stopped)
    check_checkpoint(stopped, overwrite=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(
        CheckpointMismatchError, match="exists and is not a checkpoint: refusing to replace it"
    ):
        check_checkpoint(tmp_path / "notes")
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("notes")} == files


def test_root_identity_of_the_wrong_type_is_a_mismatch(X, straight, stopped, monkeypatch):
    edit_json(stopped / "zarr.json", lambda m: m["attributes"].update(identity="garbage"))
    with pytest.raises(
        CheckpointMismatchError, match="belongs to a different run.*overwrite_checkpoint=True"
    ):
        DiagGMM(**SETTINGS).fit(X, checkpoint=str(stopped))
    model, passes, _ = resume(X, stopped, monkeypatch, overwrite_checkpoint=True)
    assert_identical(model, straight)
    assert passes == FROM[None]


def test_overwrite_recovers_from_a_garbage_root_on_fsspec(X, straight):
    url = f"memory://garbage-root-{os.getpid()}"
    DiagGMM(**PARTIAL).fit(X, checkpoint=url)
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{path}/zarr.json", b"\x00garbage")
    with pytest.raises(
        CheckpointError, match="unreadable root metadata.*overwrite_checkpoint=True"
    ):
        DiagGMM(**SETTINGS).fit(X, checkpoint=url)
    assert_identical(
        DiagGMM(**SETTINGS).fit(X, checkpoint=url, overwrite_checkpoint=True), straight
    )
    assert not fs.exists(lease.lease_url(path))
    fs.rm(path, recursive=True)


# ------------------------------------------------------------------------------ the lease
HOLDER = r"""
import json, os, sys, time
import numpy as np
from diaggmm_dist import DiagGMM

cfg = json.loads(sys.argv[1])
def on_iteration(summary):
    if summary["iteration"] == 2 and summary["restart"] == 1:
        open(cfg["parked"], "w").close()
        while not os.path.exists(cfg["go"]):
            time.sleep(0.02)
DiagGMM(**cfg["settings"]).fit(
    np.load(cfg["data"]), checkpoint=cfg["checkpoint"], on_iteration=on_iteration
)
"""


def _child_env():
    package_root = str(Path(diaggmm_dist.__file__).parents[1])  # this checkout, also in the child
    return dict(
        os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])
    )


@pytest.mark.parametrize("scheme", ["path", "file://"])
def test_a_second_fit_on_a_checkpoint_in_use_fails_at_once(
    X, straight, tmp_path, monkeypatch, scheme
):
    np.save(tmp_path / "X.npy", X)
    url = str(tmp_path / "ckpt.zarr") if scheme == "path" else f"file://{tmp_path / 'ckpt.zarr'}"
    cfg = {
        "settings": SETTINGS,
        "data": str(tmp_path / "X.npy"),
        "checkpoint": url,
        "parked": str(tmp_path / "parked"),
        "go": str(tmp_path / "go"),
    }
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, json.dumps(cfg)],
        env=_child_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (tmp_path / "parked").exists():
            assert holder.poll() is None, holder.stderr.read()
            time.sleep(0.02)
        files = snapshot(tmp_path / "ckpt.zarr")
        pattern = (
            rf"The checkpoint at '{re.escape(url)}' is in use by "
            rf"{re.escape(socket.gethostname())}/{holder.pid} "
            r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC .*"
            r"Wait for that fit to end, or use another checkpoint URL"
        )
        for overwrite in (
            False,
            True,
        ):  # overwrite_checkpoint does not take a live run's checkpoint either
            with pytest.raises(CheckpointInUseError, match=pattern):
                resume(X, url, monkeypatch, overwrite_checkpoint=overwrite)
        with pytest.raises(
            CheckpointInUseError, match=pattern
        ):  # what a command line checks before a cluster
            check_checkpoint(url, overwrite=True)
        calls, real = [], engine.pass_statistics
        monkeypatch.setattr(
            engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k)
        )
        with pytest.raises(CheckpointInUseError):
            DiagGMM(**SETTINGS).fit(X, checkpoint=url)
        monkeypatch.undo()
        assert calls == []  # at once: before any data pass
        assert snapshot(tmp_path / "ckpt.zarr") == files  # and without touching the checkpoint
        assert (
            json.loads(Path(lease.lease_url(str(tmp_path / "ckpt.zarr"))).read_text())["pid"]
            == holder.pid
        )
        (tmp_path / "go").touch()
        assert holder.wait() == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stderr.close()
    assert not Path(
        lease.lease_url(str(tmp_path / "ckpt.zarr"))
    ).exists()  # released at the end of the fit
    model, passes, warned = resume(X, url, monkeypatch)
    assert_identical(model, straight)
    assert passes == 0 and warned == []  # the holder finished the fit


def test_fits_in_two_threads_on_a_memory_url(X, straight):
    url = f"memory://two-threads-{os.getpid()}"
    fs, path = fsspec.core.url_to_fs(url)
    parked, go, errors = threading.Event(), threading.Event(), []

    def on_iteration(summary):
        if summary["iteration"] == 3 and summary["restart"] == 1:
            parked.set()
            go.wait()

    def first():
        try:
            DiagGMM(**SETTINGS).fit(X, checkpoint=url, on_iteration=on_iteration)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            parked.set()

    thread = threading.Thread(target=first)
    thread.start()
    parked.wait()
    try:
        with pytest.raises(
            CheckpointInUseError,
            match=rf"in use by {re.escape(socket.gethostname())}/{os.getpid()} ",
        ):
            DiagGMM(**SETTINGS).fit(X, checkpoint=url)
    finally:
        go.set()
        thread.join()
    assert errors == []
    assert not fs.exists(lease.lease_url(path))
    assert_identical(DiagGMM(**SETTINGS).fit(X, checkpoint=url), straight)
    fs.rm(path, recursive=True)


def test_the_lease_is_released_when_the_fit_fails(X, straight, tmp_path, monkeypatch):
    url = tmp_path / "ckpt.zarr"

    def fail(summary):
        if summary["iteration"] == 3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        DiagGMM(**SETTINGS).fit(X, checkpoint=str(url), on_iteration=fail)
    assert not Path(lease.lease_url(str(url))).exists()
    model, passes, _ = resume(X, url, monkeypatch)
    assert_identical(model, straight)
    assert passes == 11 - 4


def test_two_holders_in_one_thread_and_a_reader_without_lease(X, stopped):
    identity = zarr.open_group(str(stopped), mode="r").attrs["identity"]
    with Checkpoints(stopped, identity) as holder:
        with pytest.raises(CheckpointInUseError, match=f"/{os.getpid()} since"):
            Checkpoints(stopped, identity)
        reader = Checkpoints(stopped, identity, lease=False)  # reads while a fit holds the lease
        states = reader.latest()
        assert [s.iteration for s in states] == [6, 6]
        with pytest.raises(CheckpointInUseError, match="without its lease"):
            reader.save(states)
        holder.save(states)
    assert not Path(lease.lease_url(str(stopped))).exists()
    with Checkpoints(stopped, identity) as again:  # free again
        assert again.latest()[0].iteration == 6


def write_lease(url, **fields):
    now = time.time()
    record = {
        "format": lease.FORMAT,
        "token": "t" * 32,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_namespace": lease._pid_namespace(),
        "since": now - 50,
        "renewed": now,
        "expires_after": 30.0,
    }
    record.update(fields)
    Path(lease.lease_url(str(url))).write_text(json.dumps(record))
    return record


def test_a_live_lease_of_another_host_is_respected_and_an_expired_one_taken_over(
    X, straight, stopped, monkeypatch, caplog
):
    write_lease(stopped, host="elsewhere", pid=4242)
    busy = r"in use by elsewhere/4242 since .* UTC \(lease .*, renewed 0 s ago\)"
    with pytest.raises(CheckpointInUseError, match=busy):
        DiagGMM(**SETTINGS).fit(X, checkpoint=str(stopped))
    write_lease(stopped, host="elsewhere", pid=4242, renewed=time.time() - 31)
    model, passes, _ = resume(X, stopped, monkeypatch)
    assert_identical(model, straight)
    assert passes == FROM[NEWEST]
    assert "Taking over the lease" in caplog.text and "not renewed for 31 s" in caplog.text
    assert not Path(lease.lease_url(str(stopped))).exists()


def test_the_lease_of_an_ended_process_on_this_host_is_taken_over_at_once(
    X, straight, stopped, monkeypatch, caplog
):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    write_lease(stopped, pid=ended.pid)  # renewed just now: only the pid says it is dead
    model, passes, _ = resume(X, stopped, monkeypatch)
    assert_identical(model, straight)
    assert passes == FROM[NEWEST]
    assert f"its process {ended.pid} has ended" in caplog.text
    # the same lease as seen from another pid namespace (a container): the pid cannot be checked
    # there
    write_lease(stopped, pid=ended.pid, pid_namespace="pid:[1]")
    with pytest.raises(CheckpointInUseError, match=f"/{ended.pid} since"):
        DiagGMM(**SETTINGS).fit(X, checkpoint=str(stopped))


def test_a_lease_left_by_this_process_or_unreadable_is_taken_over(
    X, straight, stopped, monkeypatch, caplog
):
    write_lease(stopped)  # this pid, a token no live fit of this process holds
    assert resume(X, stopped, monkeypatch)[1] == FROM[NEWEST]
    assert "left behind by an earlier fit of this process" in caplog.text
    for garbage in (
        b"\x00\x01garbage",
        b"[]",
        json.dumps(dict(write_lease(stopped), expires_after=float("inf"))),
    ):
        Path(lease.lease_url(str(stopped))).write_bytes(
            garbage if isinstance(garbage, bytes) else garbage.encode()
        )
        caplog.clear()
        model, passes, _ = resume(X, stopped, monkeypatch)
        assert passes == 0 and "not a lease this library wrote" in caplog.text


def test_a_fit_whose_lease_was_taken_over_stops_before_writing(X, tmp_path):
    url = tmp_path / "ckpt.zarr"
    holder = {}

    def taken(summary):
        if summary["iteration"] == 3 and summary["restart"] == 1:
            holder.update(
                write_lease(url, host="elsewhere", pid=4242)
            )  # as if this fit had stalled past expiry

    with pytest.raises(
        CheckpointInUseError, match="in use by elsewhere/4242.*own lease was taken over"
    ):
        DiagGMM(**SETTINGS).fit(X, checkpoint=str(url), on_iteration=taken)
    assert (
        zarr.open_group(str(url), mode="r").attrs["latest"] == "step-00000003"
    )  # iteration 4 not written
    assert (
        json.loads(Path(lease.lease_url(str(url))).read_text()) == holder
    )  # the new holder's lease is kept


def test_the_heartbeat_renews_the_lease(tmp_path):
    url = str(tmp_path / "ckpt.zarr")
    held = lease.Lease.acquire(url, heartbeat=0.05, expires_after=1.0)
    try:
        first = json.loads(Path(lease.lease_url(url)).read_text())
        assert first["expires_after"] == 1.0 and first["pid"] == os.getpid()
        while json.loads(Path(lease.lease_url(url)).read_text())["renewed"] == first["renewed"]:
            time.sleep(0.01)
        held.verify()
    finally:
        held.release()
    assert not Path(lease.lease_url(url)).exists()


def test_the_errors_reach_the_cli_and_the_flows_as_what_they_are():
    from diaggmm_dist.cli import exits

    busy = CheckpointInUseError("The checkpoint at 'x' is in use by h/1 since ...")
    assert str(busy).startswith("The checkpoint at 'x'")
    assert (
        exits.known_error(busy) and exits.error_exit_code(busy) == exits.EXIT_RUNTIME
    )  # not "bad input"
    assert exits.error_exit_code(CheckpointError("x")) == exits.EXIT_USAGE
    flows_runtime = pytest.importorskip("flows.runtime")
    assert flows_runtime.is_transient(busy)  # retried: the holder may end or its lease expire
    assert not flows_runtime.is_transient(CheckpointError("x"))


def test_a_lease_that_cannot_be_written_is_an_error_naming_it(X, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    url = tmp_path / "a-file" / "ckpt.zarr"
    with pytest.raises(
        OSError,
        match=rf"Cannot write the lease '{re.escape(str(url))}.lease' of the checkpoint .*"
        rf"'{re.escape(str(tmp_path / 'a-file'))}'\): the checkpoint's folder must be",
    ):
        DiagGMM(**SETTINGS).fit(X, checkpoint=str(url))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no partial file left behind


def test_a_checkpoint_of_other_sample_weights_is_refused(tmp_path):
    # the weights are part of what a run computes: resuming another weighting's checkpoint
    # would give a model of neither
    X, _ = mixture_data(4000, 3, 2, seed=3)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    url = tmp_path / "run.zarr"
    settings = dict(random_state=0, max_iter=3, tol=0.0)
    DiagGMM(2, **settings).fit(X, sample_weight=weights, checkpoint=url, until=1)
    other = weights.copy()
    other[0] *= 2.0  # a row the fingerprint samples (the first)
    for given in (other, None):
        with pytest.raises(CheckpointMismatchError, match="sample_weight"):
            DiagGMM(2, **settings).fit(X, sample_weight=given, checkpoint=url)
    resumed = DiagGMM(2, **settings).fit(X, sample_weight=weights, checkpoint=url)
    straight = DiagGMM(2, **settings).fit(X, sample_weight=weights)
    np.testing.assert_array_equal(resumed.means_, straight.means_)
    # and a checkpoint of an unweighted fit is not resumed by a weighted one
    plain = tmp_path / "plain.zarr"
    DiagGMM(2, **settings).fit(X, checkpoint=plain, until=1)
    with pytest.raises(CheckpointMismatchError, match="sample_weight"):
        DiagGMM(2, **settings).fit(X, sample_weight=weights, checkpoint=plain)
