"""Model files and checkpoints: data-only Zarr stores, validation, crash-safe resume."""

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import Crash, crash_after, mixture_data
from sklearn.mixture import GaussianMixture

from diaggmm_dist import DiagGMM, engine
from diaggmm_dist.stores.checkpoint import KEEP, CheckpointMismatchError, CorruptCheckpointWarning
from diaggmm_dist.stores.model_store import ModelStoreError


@pytest.fixture(scope="module")
def data():
    X, _ = mixture_data(3000, 4, 3, seed=21)
    return X


@pytest.fixture(scope="module")
def fitted(data):
    return DiagGMM(3, random_state=0, tol=1e-6).fit(data)


def _identical(a, b):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (
        a.lower_bounds_ == b.lower_bounds_
        and a.n_iter_ == b.n_iter_
        and a.converged_ == b.converged_
    )


# ------------------------------------------------------------------ model store
@pytest.mark.parametrize("where", ["local", "memory"])
def test_save_and_load_round_trip(fitted, data, tmp_path, where):
    url = str(tmp_path / "model.zarr") if where == "local" else f"memory://model-{os.getpid()}"
    fitted.save(url)
    loaded = DiagGMM.load(url)
    _identical(loaded, fitted)
    np.testing.assert_array_equal(loaded.predict(data), fitted.predict(data))
    assert loaded.get_params() == fitted.get_params()
    assert loaded.data_fingerprint_ == fitted.data_fingerprint_
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(url)
    fitted.save(url, overwrite=True)


def test_model_store_is_plain_data(fitted, tmp_path):
    path = tmp_path / "model.zarr"
    fitted.save(path)
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert all(
        f.endswith("zarr.json") or "/c/" in f for f in files
    )  # metadata JSON and raw chunks only
    meta = json.loads((path / "zarr.json").read_text())
    attrs = meta["attributes"]
    assert (
        attrs["format"] == "diaggmm-dist-model"
        and attrs["n_components"] == 3
        and attrs["n_features"] == 4
    )
    assert attrs["data_fingerprint"]["shape"] == [3000, 4]
    assert len(attrs["lower_bounds"]) == fitted.n_iter_
    assert not list(tmp_path.glob(".*partial"))  # nothing half-written left behind


def _tamper(path, change):
    meta_file = Path(path) / "zarr.json"
    meta = json.loads(meta_file.read_text())
    change(meta["attributes"])
    meta_file.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(format="something-else"), "not a diaggmm-dist model"),
        (lambda a: a.update(format_version=99), "zarr.json: attribute 'format_version' is 99"),
        (lambda a: a.pop("n_iter"), "attribute 'n_iter' is missing"),
        (
            lambda a: a.update(n_components=4),
            r"weights/zarr.json \(array 'weights'\): 'shape' must be \[4\]",
        ),
        (lambda a: a.update(reg_covar="big"), "zarr.json: attribute 'reg_covar' must be a number"),
        (lambda a: a.update(params={"evil": "__import__('os')"}), "unknown keys"),
    ],
)
def test_tampered_attributes_are_named(fitted, tmp_path, change, message):
    path = tmp_path / "model.zarr"
    fitted.save(path)
    _tamper(path, change)
    with pytest.raises(ModelStoreError, match=message):
        DiagGMM.load(path)


def test_tampered_or_truncated_arrays_are_named(fitted, tmp_path):
    path = tmp_path / "model.zarr"
    fitted.save(path)
    group = zarr.open_group(str(path), mode="r+")
    group["covariances"][0, 0] = -1.0
    with pytest.raises(ModelStoreError, match="'covariances' has 1 value"):
        DiagGMM.load(path)
    group["covariances"][0, 0] = 1.0
    group["weights"][0] = 0.9
    with pytest.raises(ModelStoreError, match="'weights' sums to"):
        DiagGMM.load(path)
    fitted.save(path, overwrite=True)
    chunk = next(p for p in (path / "means").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:5])
    with pytest.raises(ModelStoreError, match="array 'means'"):
        DiagGMM.load(path)
    fitted.save(path, overwrite=True)
    import shutil

    shutil.rmtree(path / "weights")
    with pytest.raises(ModelStoreError, match="array 'weights' is missing"):
        DiagGMM.load(path)
    with pytest.raises(FileNotFoundError, match="No model found"):
        DiagGMM.load(tmp_path / "nothing.zarr")


def test_sklearn_round_trip(fitted, data):
    gm = fitted.to_sklearn()
    assert isinstance(gm, GaussianMixture)
    np.testing.assert_array_equal(gm.predict(data), fitted.predict(data))
    np.testing.assert_allclose(gm.score_samples(data), fitted.score_samples(data), rtol=1e-10)
    back = DiagGMM.from_sklearn(gm)
    _identical(back, fitted)
    full = GaussianMixture(2, covariance_type="full").fit(data)
    with pytest.raises(ValueError, match="Only covariance_type='diag'"):
        DiagGMM.from_sklearn(full)


# ------------------------------------------------------------------ checkpoints
SETTINGS = dict(
    n_components=3, random_state=4, tol=1e-8, max_iter=12, n_init=2, init_params="random"
)


@pytest.mark.parametrize("passes", [0, 1, 2, 5, 12, 13, 100])
def test_resume_after_a_crash_gives_the_uninterrupted_model(data, tmp_path, monkeypatch, passes):
    straight = DiagGMM(**SETTINGS).fit(data)
    url = str(tmp_path / "ckpt.zarr")
    crash_after(monkeypatch, passes)
    try:
        DiagGMM(**SETTINGS).fit(data, checkpoint=url)
        finished = True
    except Crash:
        finished = False
    monkeypatch.undo()
    # two restarts: 1 init pass for both, then 12 iterations whose passes serve both
    assert finished == (passes >= 13)
    resumed = DiagGMM(**SETTINGS).fit(data, checkpoint=url)
    _identical(resumed, straight)


def test_resume_skips_the_work_already_done(data, tmp_path, monkeypatch):
    url = str(tmp_path / "ckpt.zarr")
    settings = dict(SETTINGS, n_init=1, tol=0)
    crash_after(monkeypatch, 8)
    with pytest.raises(Crash):
        DiagGMM(**settings).fit(data, checkpoint=url)
    monkeypatch.undo()
    calls = []
    real = engine.pass_statistics
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    DiagGMM(**settings).fit(data, checkpoint=url)
    assert len(calls) == 12 - 7  # init and 7 iterations were checkpointed; 5 remain
    steps = [k for k in zarr.open_group(url, mode="r").group_keys()]
    assert len(steps) == KEEP


def test_an_older_checkpoint_with_fewer_restarts_initialized_is_completed(
    data, tmp_path, monkeypatch
):
    from diaggmm_dist.stores.checkpoint import Checkpoints

    # Older versions checkpointed after each restart's initialization: stopped between two,
    # a run left fewer restarts than n_init, and the random state after the last one. Here
    # restart 0 alone, as the n_init=1 run leaves it.
    straight = DiagGMM(**SETTINGS).fit(data)
    single, url = str(tmp_path / "single.zarr"), str(tmp_path / "ckpt.zarr")
    DiagGMM(**dict(SETTINGS, n_init=1, max_iter=0)).fit(data, checkpoint=single)
    DiagGMM(**dict(SETTINGS, max_iter=0)).fit(data, checkpoint=url)
    first = Checkpoints(single, zarr.open_group(single, mode="r").attrs["identity"]).latest()
    Checkpoints(url, zarr.open_group(url, mode="r").attrs["identity"]).save(first)
    # the missing restart is initialized from that random state (one pass, restart 0 is kept),
    # with the random responsibilities of the uninterrupted run (no sample shared between
    # restarts). The uninterrupted run drew both restarts' in one stacked pass, whose larger
    # matrix product may add in another order: the same numbers up to rounding.
    kinds, real = [], engine.pass_statistics
    monkeypatch.setattr(
        engine, "pass_statistics", lambda *a, **k: kinds.append(a[1][0]) or real(*a, **k)
    )
    resumed = DiagGMM(**SETTINGS).fit(data, checkpoint=url)
    assert kinds == ["random"] + ["gaussian"] * SETTINGS["max_iter"]
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(resumed, name), getattr(straight, name), rtol=1e-10)
    assert resumed.n_iter_ == straight.n_iter_ and resumed.best_init_ == straight.best_init_
    for got, want in zip(
        resumed.lower_bounds_per_init_, straight.lower_bounds_per_init_, strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_checkpoint_of_another_run_is_refused(data, tmp_path):
    url = str(tmp_path / "ckpt.zarr")
    DiagGMM(3, random_state=0, max_iter=3).fit(data, checkpoint=url)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"n_components: checkpoint has 3, this run has 4.*overwrite_checkpoint=True",
    ):
        DiagGMM(4, random_state=0, max_iter=3).fit(data, checkpoint=url)
    with pytest.raises(CheckpointMismatchError, match=r"fingerprint\.shape"):
        DiagGMM(3, random_state=0, max_iter=3).fit(data[:2000], checkpoint=url)
    fresh = DiagGMM(4, random_state=0, max_iter=3).fit(
        data, checkpoint=url, overwrite_checkpoint=True
    )
    _identical(fresh, DiagGMM(4, random_state=0, max_iter=3).fit(data))


def test_corrupt_latest_checkpoint_falls_back_to_the_one_before(data, tmp_path):
    url = tmp_path / "ckpt.zarr"
    settings = dict(SETTINGS, n_init=1)
    straight = DiagGMM(**settings).fit(data)
    partial = dict(settings, max_iter=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DiagGMM(**partial).fit(data, checkpoint=str(url))
    latest = zarr.open_group(str(url), mode="r").attrs["latest"]
    chunk = next(p for p in (url / latest).rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:7])  # truncated
    with pytest.warns(
        CorruptCheckpointWarning, match=f"{latest} .*unusable.*could not be read.*falling back"
    ):
        resumed = DiagGMM(**settings).fit(data, checkpoint=str(url))
    _identical(resumed, straight)
    # a step whose data never reached the disk is caught the same way
    latest = zarr.open_group(str(url), mode="r").attrs["latest"]
    next(p for p in (url / latest).rglob("*") if p.is_file() and p.name != "zarr.json").unlink()
    with pytest.warns(CorruptCheckpointWarning, match="holds NaN"):
        again = DiagGMM(**settings).fit(data, checkpoint=str(url))
    _identical(again, straight)


@pytest.mark.parametrize("shift", [-1, 1])
def test_a_checkpoint_of_another_format_version_is_refused(data, tmp_path, shift):
    from diaggmm_dist.stores.checkpoint import FORMAT_VERSION

    url = str(tmp_path / "ckpt.zarr")
    DiagGMM(3, random_state=0, max_iter=2).fit(data, checkpoint=url)
    # e.g. a format 4 checkpoint (one array per restart) met by format 5 (one per step)
    zarr.open_group(url, mode="r+").attrs["format_version"] = FORMAT_VERSION + shift
    files = {p: p.read_bytes() for p in Path(url).rglob("*") if p.is_file()}
    older = " \\(written by an older diaggmm-dist\\)" if shift < 0 else ""
    with pytest.raises(
        CheckpointMismatchError,
        match=f"The checkpoint at '{re.escape(url)}' has format version {FORMAT_VERSION + shift}"
        f"{older}; this version of diaggmm-dist reads version {FORMAT_VERSION} only, and cannot "
        "resume it: pass overwrite_checkpoint=True .* or use another checkpoint URL",
    ):
        DiagGMM(3, random_state=0, max_iter=2).fit(data, checkpoint=url)
    assert {p: p.read_bytes() for p in Path(url).rglob("*") if p.is_file()} == files
    DiagGMM(3, random_state=0, max_iter=2).fit(data, checkpoint=url, overwrite_checkpoint=True)
    assert zarr.open_group(url, mode="r").attrs["format_version"] == FORMAT_VERSION


def test_checkpoints_work_on_fsspec_urls(data):
    url = f"memory://ckpt-{os.getpid()}"
    straight = DiagGMM(3, random_state=1, max_iter=5, tol=0).fit(data)
    _identical(DiagGMM(3, random_state=1, max_iter=5, tol=0).fit(data, checkpoint=url), straight)
    _identical(DiagGMM(3, random_state=1, max_iter=5, tol=0).fit(data, checkpoint=url), straight)


def test_a_directory_that_is_not_a_checkpoint_is_never_deleted(data, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(
        CheckpointMismatchError, match="exists and is not a checkpoint: refusing to replace it"
    ):
        DiagGMM(3, max_iter=2).fit(data, checkpoint=str(precious))
    assert (precious / "notes.txt").read_text() == "keep me"
    array_path = tmp_path / "array.zarr"
    zarr.create_array(str(array_path), shape=(3,), dtype="f8")
    with pytest.raises(ModelStoreError, match="is a Zarr array, not a diaggmm-dist model"):
        DiagGMM.load(array_path)
    with pytest.raises(CheckpointMismatchError, match="is a Zarr array"):
        DiagGMM(3, max_iter=2).fit(data, checkpoint=str(array_path))


def test_a_larger_max_iter_continues_a_finished_checkpoint(data, tmp_path):
    url = str(tmp_path / "ckpt.zarr")
    straight = DiagGMM(3, random_state=2, tol=0, max_iter=9).fit(data)
    for max_iter in (0, 3, 4, 9):
        stepped = DiagGMM(3, random_state=2, tol=0, max_iter=max_iter).fit(data, checkpoint=url)
        assert stepped.n_iter_ == max_iter
    _identical(stepped, straight)


def test_on_iteration_reports_every_iteration_after_its_checkpoint(data, tmp_path):
    from diaggmm_dist.stores.checkpoint import Checkpoints

    url = str(tmp_path / "ckpt.zarr")
    settings = dict(n_components=3, random_state=2, tol=1e-8, max_iter=30)
    straight = DiagGMM(**settings).fit(data)
    reported, checkpointed = [], []

    def on_iteration(summary):
        reported.append(summary)
        root = zarr.open_group(url, mode="r")
        checkpointed.append(
            Checkpoints(url, root.attrs["identity"], lease=False).latest()[0].iteration
        )

    DiagGMM(**dict(settings, max_iter=4)).fit(data, checkpoint=url, on_iteration=on_iteration)
    resumed = DiagGMM(**settings).fit(data, checkpoint=url, on_iteration=on_iteration)
    _identical(resumed, straight)
    n = straight.n_iter_
    assert [row["iteration"] for row in reported] == checkpointed == list(range(1, n + 1))
    assert [row["lower_bound"] for row in reported] == straight.lower_bounds_
    np.testing.assert_array_equal(
        [row["change"] for row in reported[1:]], np.diff(straight.lower_bounds_)
    )
    assert [row["converged"] for row in reported] == [False] * (n - 1) + [straight.converged_]
    assert all(row["seconds"] > 0 and row["restart"] == 0 for row in reported)
