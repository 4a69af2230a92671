"""The registry's retention policy: the newest versions and the current one kept, the rest
deleted safely, on a local disk and on the S3 test server; the retrain flow's finished-run
scratch pruned, an unfinished (SIGKILLed) run's checkpoint kept for the re-run to resume.

A prune is interrupted two ways: a failure raised from each of its deletions in turn (every
instant between two deletions), and a real SIGKILL of a child process in the middle of one.
After either the registry loads, its pointer is unchanged, and the next prune finishes the job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from children import sigkill_when
from prefect_harness import (
    REPO,
    artifacts,
    prefect_api,  # noqa: F401
    prefect_server,  # noqa: F401
    stop_process_group,
    wait_for,
)
from s3_harness import s3, s3_service  # noqa: F401

import diaggmm_dist
from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr
from diaggmm_dist.stores.lease import CheckpointInUseError, Lease
from diaggmm_dist.stores.registry import ModelRegistry, RegistryError, UnknownVersionError
from diaggmm_dist.stores.retention import Retention
from diaggmm_dist.stores.zarr_groups import NotAGroupError

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def models():
    """Two tiny fitted models (versions alternate between them, so a mix-up shows)."""
    X = np.random.default_rng(0).normal(size=(400, 3))
    return [DiagGMM(2, max_iter=50, tol=1e-2, random_state=seed).fit(X) for seed in (0, 1)]


def assert_same(a, b):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def filled(registry, models, n):
    """``n`` promotions: version i holds models[i % 2]."""
    for number in range(1, n + 1):
        assert registry.promote(models[number % 2]) == f"v{number:04d}"
    return registry


def assert_loadable(registry, models, current):
    """The pointer names ``current`` and every listed version loads (the model it was given)."""
    assert registry.current_version() == current
    for version in registry.versions():
        assert_same(registry.load(version, DiagGMM.load), models[int(version[1:]) % 2])
    assert registry.current(DiagGMM.load)[0] == current


# ------------------------------------------------------------------------------------- policy
def test_after_many_promotions_only_the_newest_and_the_current_remain(tmp_path, models):
    registry = ModelRegistry(tmp_path / "registry")
    for number in range(1, 13):  # as the retrain flow does: promote, then prune
        registry.promote(models[number % 2])
        pruned = registry.prune(keep=3, grace_seconds=0)
        assert pruned.kept == registry.versions()
        assert registry.versions() == [f"v{n:04d}" for n in range(max(1, number - 2), number + 1)]
    assert pruned.removed == ["v0009"] and pruned.debris == []
    assert_loadable(registry, models, "v0012")
    assert sorted(os.listdir(tmp_path / "registry")) == ["current.json", "v0010", "v0011", "v0012"]
    with pytest.raises(UnknownVersionError, match="No version 'v0009'"):
        registry.load("v0009", DiagGMM.load)
    # numbers are never reused
    assert registry.promote(models[1]) == "v0013"
    assert registry.prune(keep=3, grace_seconds=0).removed == ["v0010"]


def test_the_current_version_is_kept_even_if_older_than_the_newest(tmp_path, models):
    registry = filled(ModelRegistry(tmp_path / "registry"), models, 6)
    registry.set_current("v0002")  # a rollback
    pruned = registry.prune(keep=2, grace_seconds=0)
    assert pruned.removed == ["v0001", "v0003", "v0004"]
    assert registry.versions() == pruned.kept == ["v0002", "v0005", "v0006"]
    assert_loadable(registry, models, "v0002")
    assert registry.prune(keep=1, grace_seconds=0).removed == ["v0005"]
    assert registry.versions() == ["v0002", "v0006"]


def test_versions_replaced_within_the_grace_period_are_kept_for_readers(tmp_path, models):
    registry = filled(ModelRegistry(tmp_path / "registry"), models, 5)
    # each promotion replaced the one before: a reader may still be loading any of them
    assert registry.recently_replaced(60) == ["v0004", "v0003", "v0002", "v0001"]
    assert registry.prune(keep=1, grace_seconds=60).removed == []
    time.sleep(0.05)
    assert registry.recently_replaced(0.01) == []
    assert registry.prune(keep=1).removed == []  # the default grace: a minute
    assert registry.prune(keep=1, grace_seconds=0.01).removed == [
        "v0001",
        "v0002",
        "v0003",
        "v0004",
    ]
    assert_loadable(registry, models, "v0005")


def test_bad_retention_settings_are_refused_before_anything_is_deleted(tmp_path, models):
    registry = filled(ModelRegistry(tmp_path / "registry"), models, 3)
    for keep in (0, -1, 1.5, True, None, "2"):
        with pytest.raises(ValueError, match=r"keep must be an integer >= 1"):
            registry.prune(keep, grace_seconds=0)
    for grace in (-1, float("nan"), float("inf"), "60"):
        with pytest.raises(ValueError, match="grace_seconds must be a finite number >= 0"):
            registry.prune(1, grace_seconds=grace)
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    # a pointer whose history is not what the registry writes: refused, nothing deleted
    pointer = tmp_path / "registry" / "current.json"
    document = json.loads(pointer.read_text())
    for replaced in ("v0001", [{"version": "v0001", "until": "yesterday"}], [["v0001"]]):
        pointer.write_text(json.dumps(dict(document, replaced=replaced)))
        with pytest.raises(RegistryError, match="current.json: .*'replaced'"):
            registry.prune(1, grace_seconds=0)
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    registry.set_current("v0003")  # moving the pointer drops the records it cannot read
    assert registry.prune(1, grace_seconds=0).removed == ["v0001", "v0002"]
    # an empty registry: nothing to do
    assert ModelRegistry(tmp_path / "empty").prune(1).removed == []

    from flows.retention import check_retention

    check_retention(None, False)
    check_retention(1, True)
    with pytest.raises(ValueError, match="keep_versions must be None .* or an integer >= 1, got 0"):
        check_retention(0, True)
    with pytest.raises(TypeError, match="prune_work must be True or False"):
        check_retention(3, "yes")


def test_debris_of_interrupted_writes_is_removed_but_never_a_promotion_in_progress(
    tmp_path, models
):
    root = tmp_path / "registry"
    registry = filled(ModelRegistry(root), models, 4)
    (root / "v0002" / "registry.json").unlink()  # a prune killed after uncommitting v0002
    (root / "v0005").mkdir()  # a promotion writing v0005 now: above the newest committed
    (root / "v0005" / "zarr.json").write_text("{}")
    old = root / f".v0006.{'a' * 32}.partial"  # a local write killed before its rename
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    young = root / f".current.json.{'b' * 32}.partial"  # a pointer being written now
    young.write_text("{}")
    pruned = registry.prune(keep=3, grace_seconds=60)
    assert pruned.removed == [] and sorted(pruned.debris) == sorted(["v0002", old.name])
    assert sorted(os.listdir(root)) == sorted(
        [young.name, "current.json", "v0001", "v0003", "v0004", "v0005"]
    )
    assert_loadable(registry, models, "v0004")


# ---------------------------------------------------------------------------- interrupted prune
def test_a_prune_failing_between_any_two_deletions_leaves_a_loadable_registry(
    tmp_path, models, monkeypatch
):
    template = filled(ModelRegistry(tmp_path / "template"), models, 6)
    template.set_current("v0003")
    deletions = 6  # v0001, v0002, v0004: each its registry.json, then its folder
    real_file, real_tree = Retention._remove_file, Retention._remove_tree
    for fail_at in range(1, deletions + 1):
        root = tmp_path / f"registry-{fail_at}"
        shutil.copytree(tmp_path / "template", root)
        calls = []

        def counted(real, *args):
            calls.append(args[1:])
            if len(calls) == fail_at:
                raise OSError(f"injected failure at deletion {fail_at}")
            return real(*args)

        monkeypatch.setattr(Retention, "_remove_file", lambda *a: counted(real_file, *a))
        monkeypatch.setattr(Retention, "_remove_tree", lambda *a: counted(real_tree, *a))
        registry = ModelRegistry(root)
        with pytest.raises(OSError, match=f"injected failure at deletion {fail_at}"):
            registry.prune(keep=2, grace_seconds=0)
        monkeypatch.undo()
        assert_loadable(registry, models, "v0003")
        assert {"v0003", "v0005", "v0006"} <= set(registry.versions())
        pruned = registry.prune(keep=2, grace_seconds=0)  # the next prune finishes the job
        assert registry.versions() == ["v0003", "v0005", "v0006"]
        assert sorted(os.listdir(root)) == ["current.json", "v0003", "v0005", "v0006"]
        assert_loadable(registry, models, "v0003")
        assert len(pruned.removed) + len(pruned.debris) >= 1
    assert calls == [("v0001", "registry.json"), ("v0001",), ("v0002", "registry.json")] + [
        ("v0002",),
        ("v0004", "registry.json"),
        ("v0004",),
    ]


#: A child that prunes and parks (marker file, sleep) in the middle of deleting ``v0002``'s
#: model, half its files gone, until the parent SIGKILLs it.
PRUNE_CHILD = r"""
import os, shutil, sys, time
from diaggmm_dist.stores.registry import ModelRegistry
from diaggmm_dist.stores.retention import Retention

root, marker = sys.argv[1], sys.argv[2]
real_tree = Retention._remove_tree
def remove_tree(self, *parts):
    if parts == ("v0002",):
        folder = os.path.join(root, "v0002")
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs)
        for path in files[: len(files) // 2]:
            os.remove(path)
        open(marker, "w").close()
        while True:
            time.sleep(3600)  # until the SIGKILL
    return real_tree(self, *parts)
Retention._remove_tree = remove_tree
ModelRegistry(root).prune(keep=2, grace_seconds=0)
sys.exit(3)  # never parked
"""


def test_a_prune_sigkilled_mid_deletion_leaves_a_loadable_registry(tmp_path, models):
    root = tmp_path / "registry"
    registry = filled(ModelRegistry(root), models, 5)
    marker = tmp_path / "parked"
    package_root = str(Path(diaggmm_dist.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.getenv("PYTHONPATH", "")]))
    child = subprocess.Popen(
        [sys.executable, "-c", PRUNE_CHILD, str(root), str(marker)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    sigkill_when(child, marker.exists, "parking mid-prune")
    # killed with v0001 gone and v0002 half deleted (uncommitted first: not listed)
    assert registry.versions() == ["v0003", "v0004", "v0005"]
    assert (root / "v0002").is_dir()
    assert_loadable(registry, models, "v0005")
    assert registry.prune(keep=2, grace_seconds=0).debris == ["v0002"]
    assert sorted(os.listdir(root)) == ["current.json", "v0004", "v0005"]
    assert_loadable(registry, models, "v0005")


# ------------------------------------------------------------------------------------ scratch
def test_remove_scratch_spares_a_store_a_live_fit_holds_and_other_files(tmp_path, models):
    registry = ModelRegistry(tmp_path / "registry")
    models[0].save(registry.scratch_url("candidate"))
    where = registry.scratch_location("checkpoint")
    models[0].save(where)
    lease = Lease.acquire(where)
    try:
        with pytest.raises(CheckpointInUseError):
            registry.remove_scratch("checkpoint")
    finally:
        lease.release()
    assert registry.remove_scratch("checkpoint") and registry.remove_scratch("candidate")
    assert registry.scratch_names() == [] and not registry.remove_scratch("candidate")
    (tmp_path / "registry" / "work" / "notes").mkdir()
    (tmp_path / "registry" / "work" / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(NotAGroupError):
        registry.remove_scratch("notes")
    assert registry.scratch_names() == ["notes"]


# ----------------------------------------------------------------------------------------- S3
def test_retention_on_s3(s3, models, monkeypatch):
    registry = ModelRegistry(s3.url("registry"), storage_options=s3.storage_options)
    filled(registry, models, 5)
    registry.set_current("v0002")
    fs = s3.filesystem()

    def keys(version):
        fs.invalidate_cache()
        return fs.find(f"{s3.name}/registry/{version}")

    # killed after uncommitting v0001: it is no longer listed; the registry loads
    real_tree = Retention._remove_tree

    def failing(self, *parts):
        raise OSError("injected failure")

    monkeypatch.setattr(Retention, "_remove_tree", failing)
    with pytest.raises(OSError, match="injected failure"):
        registry.prune(keep=2, grace_seconds=0)
    monkeypatch.setattr(Retention, "_remove_tree", real_tree)
    assert keys("v0001") and registry.versions() == ["v0002", "v0003", "v0004", "v0005"]
    assert_loadable(registry, models, "v0002")

    pruned = registry.prune(keep=2, grace_seconds=0)
    assert pruned.removed == ["v0003"] and pruned.debris == ["v0001"]
    assert registry.versions() == ["v0002", "v0004", "v0005"]
    assert keys("v0001") == [] and keys("v0003") == []
    assert_loadable(ModelRegistry(s3.url("registry"), s3.storage_options), models, "v0002")

    # the scratch: a finished run's store goes, one a live fit holds stays
    where = registry.scratch_location("retrain-checkpoint")
    models[0].save(where)
    lease = Lease.acquire(where)
    try:
        with pytest.raises(CheckpointInUseError):
            registry.remove_scratch("retrain-checkpoint")
        assert keys("work/retrain-checkpoint")
    finally:
        lease.release()
    assert registry.remove_scratch("retrain-checkpoint")
    assert keys("work") == [] and registry.scratch_names() == []


# -------------------------------------------------------------------------------- retrain flow
def retrain_child_script(params, marker):
    """Run retrain; park (and wait for SIGKILL) once the EM checkpoint holds two steps."""
    return textwrap.dedent(f"""
        import os, time
        from diaggmm_dist.stores import checkpoint
        saves, real_save = [0], checkpoint.Checkpoints.save
        def save(self, states):
            real_save(self, states)
            saves[0] += 1
            if saves[0] == 2:  # the initialization and one iteration are committed
                open({str(marker)!r}, "w").close()
                while True:
                    time.sleep(3600)
        checkpoint.Checkpoints.save = save
        from flows.retrain import retrain
        retrain(**{params!r})
        raise SystemExit(3)  # never parked
    """)


def test_retrain_prunes_a_finished_run_and_keeps_a_killed_one_for_resume(
    prefect_api, local_cluster, tmp_path
):
    from flows.retrain import retrain

    weights, means, covariances = mixture_parameters(3, 4, seed=0, spread=1.5)

    def data(name, seed):
        path = write_mixture_zarr(
            tmp_path / name, 5000, weights, means, covariances, chunk_rows=2500, seed=seed
        )
        return f"{path}/X"

    train, holdout, new = data("train.zarr", 1), data("holdout.zarr", 2), data("new.zarr", 3)
    root = str(tmp_path / "registry")
    registry = ModelRegistry(root)
    common = dict(
        n_components=3,
        max_iter=30,
        scheduler_address=local_cluster.scheduler_address,
        seconds_per_task=0,
        keep_versions=1,
    )
    with pytest.raises(ValueError, match="keep_versions must be None .* got 0"):
        retrain(root, train, holdout, **{**common, "keep_versions": 0})
    assert registry.versions() == [] and registry.scratch_names() == []

    # 1. a run that finishes: its checkpoint and candidate are deleted
    first = retrain(root, train, holdout, **common)
    assert first["promoted"] == "v0001"
    assert first["pruned"] == {
        "versions": [],
        "debris": [],
        "work": ["retrain-candidate", "retrain-checkpoint"],
    }
    assert registry.scratch_names() == []

    # 2. a run SIGKILLed mid-fit (initialization and iteration 1 checkpointed) keeps its checkpoint
    marker = tmp_path / "parked"
    params = dict(registry_url=root, data_url=new, holdout_url=holdout, **common)
    log = tmp_path / "child.log"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", retrain_child_script(params, marker)],
            cwd=REPO,
            env=prefect_api.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: marker.exists() or child.poll() is not None,
            bool,
            timeout=180,
            what="the retrain child to park",
        )
        assert marker.exists(), log.read_text()[-3000:]
        os.killpg(child.pid, signal.SIGKILL)  # no SIGTERM first: a handler would free the lease
    finally:
        stop_process_group(child, grace=0)
    assert child.returncode == -signal.SIGKILL
    assert {"retrain-checkpoint", "retrain-checkpoint.lease"} <= set(registry.scratch_names())
    assert registry.versions() == ["v0001"]

    # 3. the re-run resumes from it (iteration 1 was done by the killed run), then prunes
    state = retrain(root, new, holdout, return_state=True, **common)
    second = state.result()
    assert second["pruned"]["work"] == ["retrain-candidate", "retrain-checkpoint"]
    assert registry.scratch_names() == []
    table = next(
        a
        for a in wait_for(
            lambda: artifacts(state.state_details.flow_run_id),
            lambda a: any(x.key == "retrain-convergence" for x in a),
            what="the convergence artifact",
        )
        if a.key == "retrain-convergence"
    ).data
    rows = json.loads(table) if isinstance(table, str) else table
    assert rows[0]["iteration"] == 1 and rows[0]["seconds"] is None  # resumed, not redone
    assert all(row["seconds"] is not None for row in rows[1:])
    # retention: the current, and v0001 (replaced less than a minute ago: readers may load it)
    assert registry.current_version() == second["current"]
    assert set(registry.versions()) == {"v0001", second["current"]}
    for version in registry.versions():
        assert registry.load(version, DiagGMM.load).n_components == 3
