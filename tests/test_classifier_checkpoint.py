"""DiagGMMClassifier checkpoints: DiagGMM's checkpoint (lease, atomic steps, fallback) with the
classifier's EM state in its steps.

Semi-supervised EM SIGKILLed in a child process and resumed on its checkpoint ends with the
uninterrupted fit's model, bit for bit (float64), running only the passes not committed; a
finished checkpoint (naive Bayes' one step too) gives the model without a pass; a checkpoint of
other data, labels, weights or settings, or a DiagGMM's or a BayesianDiagGMM's, is refused
before any pass (and a classifier's by theirs); a step that fails validation is skipped for
the one before it.
"""

import json
import warnings

import numpy as np
import pytest
import zarr
from children import PARKING_CHILD, kill_parked_child
from conftest import mixture_data
from sklearn.exceptions import ConvergenceWarning

from diaggmm_dist import BayesianDiagGMM, DiagGMM, DiagGMMClassifier, engine
from diaggmm_dist.stores.checkpoint import (
    CheckpointInUseError,
    CheckpointMismatchError,
    Checkpoints,
    CorruptCheckpointWarning,
)
from diaggmm_dist.stores.classifier_steps import CLASSIFIER_STEPS

#: tol=0: EM runs its 8 iterations (one pass each, after the labelled pass).
SETTINGS = dict(tol=0.0, max_iter=8, chunk_size=500)
FITTED = ("weights_", "means_", "covariances_", "class_count_", "class_prior_", "classes_")

CHILD = (
    PARKING_CHILD
    + r"""
from diaggmm_dist import DiagGMMClassifier
data = np.load(cfg["data"])
DiagGMMClassifier(**cfg["settings"]).fit(data["X"], data["y"], checkpoint=cfg["checkpoint"])
sys.exit(3)  # never parked
"""
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, y = mixture_data(2400, 3, 3, seed=5)
    y = y.copy()
    y[np.random.default_rng(1).random(len(y)) < 0.8] = -1  # 80% unlabelled
    y[0] = 2  # the first row is one the fingerprints sample
    path = tmp_path_factory.mktemp("clf-kill") / "data.npz"
    np.savez(path, X=X, y=y)
    return X, y, path


def counted_fit(estimator, X, y, monkeypatch, **kwargs):
    """``estimator.fit(X, y, **kwargs)`` and its number of data passes."""
    calls, real = [], engine.pass_statistics
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted = estimator.fit(X, y, **kwargs)
    finally:
        monkeypatch.setattr(engine, "pass_statistics", real)
    return fitted, len(calls)


def assert_identical(got, want):
    for name in FITTED:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.lower_bounds_ == want.lower_bounds_
    assert (got.epsilon_, got.n_iter_, got.converged_, got.n_unlabelled_) == (
        want.epsilon_,
        want.n_iter_,
        want.converged_,
        want.n_unlabelled_,
    )


@pytest.mark.parametrize(
    "per_class, stop, committed",
    [
        # killed at the start of a pass: the labelled pass and 3 iterations committed
        (1, ("pass", 5), 3),
        # killed before the pointer moves to the 4th step (the start and 2 iterations)
        (2, ("pointer", 4), 2),
    ],
)
def test_em_killed_anywhere_resumes_to_the_uninterrupted_fit(
    data, tmp_path, monkeypatch, per_class, stop, committed
):
    X, y, path = data
    settings = dict(SETTINGS, n_components_per_class=per_class)
    straight, total = counted_fit(DiagGMMClassifier(**settings), X, y, monkeypatch)
    assert total == 1 + SETTINGS["max_iter"]
    url = tmp_path / "clf.zarr"
    kill_parked_child(CHILD, stop, settings, path, url, tmp_path)
    resumed, passes = counted_fit(DiagGMMClassifier(**settings), X, y, monkeypatch, checkpoint=url)
    assert_identical(resumed, straight)
    assert passes == SETTINGS["max_iter"] - committed  # no labelled pass, no iteration again
    np.testing.assert_array_equal(resumed.predict_proba(X), straight.predict_proba(X))
    attributes = json.loads((url / "zarr.json").read_text())["attributes"]
    assert attributes["estimator"] == "DiagGMMClassifier"


def test_a_paused_fit_continues_and_a_finished_one_gives_its_model_without_a_pass(
    data, tmp_path, monkeypatch
):
    X, y, _ = data
    settings = dict(SETTINGS, tol=1e-4, max_iter=200, n_components_per_class=2)
    straight, total = counted_fit(DiagGMMClassifier(**settings), X, y, monkeypatch)
    assert straight.converged_ and straight.n_iter_ > 3
    url = tmp_path / "clf.zarr"
    paused, before = counted_fit(
        DiagGMMClassifier(**dict(settings, max_iter=2)), X, y, monkeypatch, checkpoint=url
    )
    assert (paused.n_iter_, paused.converged_, before) == (2, False, 3)
    resumed, passes = counted_fit(DiagGMMClassifier(**settings), X, y, monkeypatch, checkpoint=url)
    assert_identical(resumed, straight)
    assert passes == total - before
    again, passes = counted_fit(DiagGMMClassifier(**settings), X, y, monkeypatch, checkpoint=url)
    assert passes == 0
    assert_identical(again, straight)


def test_naive_bayes_writes_its_model_as_the_one_step(data, tmp_path, monkeypatch):
    X, y, _ = data
    labelled = y >= 0
    X, y = X[labelled], y[labelled]
    straight, total = counted_fit(DiagGMMClassifier(priors=[0.2, 0.3, 0.5]), X, y, monkeypatch)
    url = tmp_path / "nb.zarr"
    first, passes = counted_fit(
        DiagGMMClassifier(priors=[0.2, 0.3, 0.5]), X, y, monkeypatch, checkpoint=url
    )
    assert total == passes == 1
    assert zarr.open_group(str(url), mode="r").attrs["latest"] == "step-00000000"
    again, passes = counted_fit(
        DiagGMMClassifier(priors=[0.2, 0.3, 0.5]), X, y, monkeypatch, checkpoint=url
    )
    assert passes == 0
    for fitted in (first, again):
        assert_identical(fitted, straight)
        np.testing.assert_array_equal(fitted.theta_, straight.theta_)
        np.testing.assert_array_equal(fitted.var_, straight.var_)
    assert (again.n_iter_, again.converged_, again.lower_bounds_) == (1, True, [])
    with pytest.raises(CheckpointMismatchError, match="priors"):
        DiagGMMClassifier().fit(X, y, checkpoint=url)


def test_other_data_labels_weights_settings_or_estimators_are_refused_before_a_pass(
    data, tmp_path, monkeypatch
):
    X, y, _ = data
    settings = dict(SETTINGS, max_iter=3)
    url = tmp_path / "clf.zarr"
    fitted, _ = counted_fit(DiagGMMClassifier(**settings), X, y, monkeypatch, checkpoint=url)
    other = X.copy()
    other[0, 1] += 1.0  # a row the fingerprint samples (the first)
    relabelled = y.copy()
    relabelled[0] = 1  # another class for a row the labels' fingerprint samples
    unlabelled = y.copy()
    unlabelled[np.flatnonzero(y >= 0)[-1]] = -1
    clf = DiagGMMClassifier
    refusals = [
        (clf(**settings), other, y, "fingerprint"),
        (clf(**settings), X, relabelled, "labels"),
        (clf(**settings), X, unlabelled, "n_unlabelled"),
        (clf(**settings), X, np.where(y == 2, 7, y), "classes"),
        (clf(**dict(settings, var_smoothing=1e-6)), X, y, "var_smoothing"),
        (clf(**dict(settings, n_components_per_class=2)), X, y, "n_components_per_class"),
        (clf(**dict(settings, tol=1e-3)), X, y, "tol"),
        (clf(**dict(settings, priors=[0.2, 0.3, 0.5])), X, y, "priors"),
    ]
    calls, real = [], engine.pass_statistics
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    for estimator, rows, labels, message in refusals:
        with pytest.raises(CheckpointMismatchError, match=message):
            estimator.fit(rows, labels, checkpoint=url)
    # sample weights are part of the run: given, or other ones, they are refused
    weights = np.ones(len(X))
    with pytest.raises(CheckpointMismatchError, match="sample_weight"):
        clf(**settings).fit(X, y, weights, checkpoint=url)
    # theirs refuse a classifier's checkpoint, and a classifier refuses theirs
    with pytest.raises(CheckpointMismatchError, match="DiagGMMClassifier fit, not of a DiagGMM"):
        DiagGMM(3, random_state=0).fit(X, checkpoint=url)
    with pytest.raises(CheckpointMismatchError, match="not of a BayesianDiagGMM fit"):
        BayesianDiagGMM(n_components=3).fit(X, checkpoint=url)
    assert calls == []  # every refusal before any pass
    monkeypatch.setattr(engine, "pass_statistics", real)
    gmm_url, vb_url = tmp_path / "gmm.zarr", tmp_path / "vb.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        DiagGMM(3, random_state=0, max_iter=2).fit(X, checkpoint=gmm_url)
        BayesianDiagGMM(n_components=3, max_iter=2).fit(X, checkpoint=vb_url)
    for url_, kind in ((gmm_url, "DiagGMM"), (vb_url, "BayesianDiagGMM")):
        with pytest.raises(CheckpointMismatchError, match=f"of a {kind} fit, not of a DiagGMMC"):
            clf(**settings).fit(X, y, checkpoint=url_)
    replaced, _ = counted_fit(
        clf(**settings), X, y, monkeypatch, checkpoint=gmm_url, overwrite_checkpoint=True
    )
    assert_identical(replaced, fitted)
    # a live fit's lease refuses a second fit
    identity = json.loads((url / "zarr.json").read_text())["attributes"]["identity"]
    with Checkpoints(url, identity, steps=CLASSIFIER_STEPS):
        with pytest.raises(CheckpointInUseError):
            clf(**settings).fit(X, y, checkpoint=url)


def test_an_invalid_step_is_skipped_for_the_one_before(data, tmp_path, monkeypatch):
    X, y, _ = data
    straight, _ = counted_fit(DiagGMMClassifier(**SETTINGS), X, y, monkeypatch)
    url = tmp_path / "clf.zarr"
    counted_fit(DiagGMMClassifier(**dict(SETTINGS, max_iter=5)), X, y, monkeypatch, checkpoint=url)
    root = zarr.open_group(str(url), mode="r+")
    latest = root.attrs["latest"]
    assert latest == "step-00000005"  # the start and 5 iterations
    planes = root[latest]["planes"]
    planes[planes.shape[0] - 1] = -1.0  # the last variance
    with pytest.warns(CorruptCheckpointWarning, match="covariances are <= 0"):
        resumed, passes = counted_fit(
            DiagGMMClassifier(**SETTINGS), X, y, monkeypatch, checkpoint=url
        )
    assert passes == SETTINGS["max_iter"] - 4
    assert_identical(resumed, straight)
