"""BayesianDiagGMM checkpoints: DiagGMM's checkpoint (lease, atomic steps, fallback, object
storage) with the variational posterior in its steps.

A fit SIGKILLed in a child process and resumed on its checkpoint ends with the uninterrupted
fit's model, bit for bit (float64), running only the passes not committed; a finished
checkpoint gives the model without a pass; a checkpoint of other data, settings or priors, or
a DiagGMM's, is refused before any pass (and a BayesianDiagGMM's by a DiagGMM fit); a step
that fails validation is skipped for the one before it.
"""

import copy
import json
import warnings

import numpy as np
import pytest
import zarr
from children import PARKING_CHILD, kill_parked_child
from conftest import mixture_data
from s3_harness import s3, s3_service  # noqa: F401
from sklearn.exceptions import ConvergenceWarning

from diaggmm_dist import BayesianDiagGMM, DiagGMM, engine
from diaggmm_dist.stores.bayesian_steps import BAYESIAN_STEPS
from diaggmm_dist.stores.checkpoint import (
    CheckpointInUseError,
    CheckpointMismatchError,
    Checkpoints,
    CorruptCheckpointWarning,
)

#: 2 restarts, tol=0: every restart runs its 9 iterations (one pass each, for both).
SETTINGS = dict(n_components=4, n_init=2, tol=0.0, max_iter=9, random_state=3, chunk_size=700)
#: The fitted attributes compared bit for bit.
FITTED = (
    "mean_precision_",
    "means_",
    "degrees_of_freedom_",
    "covariances_",
    "weights_",
    "precisions_",
    "weight_concentration_prior_",
    "mean_precision_prior_",
    "mean_prior_",
    "degrees_of_freedom_prior_",
    "covariance_prior_",
)

CHILD = (
    PARKING_CHILD
    + r"""
from diaggmm_dist import BayesianDiagGMM
X = np.load(cfg["data"])
BayesianDiagGMM(**cfg["settings"]).fit(X, checkpoint=cfg["checkpoint"])
sys.exit(3)  # never parked
"""
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, _ = mixture_data(2800, 3, 3, seed=11)
    path = tmp_path_factory.mktemp("vb-kill") / "X.npy"
    np.save(path, X)
    return X, path


def counted_fit(estimator, X, monkeypatch, **kwargs):
    """``estimator.fit(X, **kwargs)`` and its number of data passes."""
    calls, real = [], engine.pass_statistics
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = estimator.fit(X, **kwargs)
    monkeypatch.setattr(engine, "pass_statistics", real)
    return fitted, len(calls)


def assert_identical(got, want):
    for name in FITTED:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(
        np.asarray(got.weight_concentration_), np.asarray(want.weight_concentration_)
    )
    assert got.lower_bounds_ == want.lower_bounds_
    assert (got.lower_bound_, got.n_iter_, got.converged_) == (
        want.lower_bound_,
        want.n_iter_,
        want.converged_,
    )


@pytest.mark.parametrize(
    "prior_type, init_params, stop",
    [
        # killed at the start of a pass: 1 initialization pass and 4 iterations committed
        ("dirichlet_process", "random", ("pass", 6)),
        # killed before the pointer moves to the 6th step (5 committed: initialization and 4)
        ("dirichlet_distribution", "kmeans", ("pointer", 6)),
    ],
)
def test_a_fit_killed_anywhere_resumes_to_the_uninterrupted_fit(
    data, tmp_path, monkeypatch, prior_type, init_params, stop
):
    X, path = data
    settings = dict(SETTINGS, weight_concentration_prior_type=prior_type, init_params=init_params)
    straight, total = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch)
    url = tmp_path / "vb.zarr"
    kill_parked_child(CHILD, stop, settings, path, url, tmp_path)
    resumed, passes = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch, checkpoint=url)
    assert_identical(resumed, straight)
    assert passes == SETTINGS["max_iter"] - 4  # only the iterations not committed
    assert total > passes + 4  # the initialization was not run again
    assert json.loads((url / "zarr.json").read_text())["attributes"]["estimator"] == (
        "BayesianDiagGMM"
    )


def test_a_paused_fit_continues_and_a_finished_one_gives_its_model_without_a_pass(
    data, tmp_path, monkeypatch
):
    X = data[0]
    settings = dict(
        SETTINGS, max_iter=200, tol=1e-2, weight_concentration_prior_type="dirichlet_process"
    )
    straight, total = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch)
    assert straight.converged_ and straight.n_iter_ > 3
    url = tmp_path / "vb.zarr"
    paused, before = counted_fit(
        BayesianDiagGMM(**dict(settings, max_iter=2)), X, monkeypatch, checkpoint=url
    )
    assert paused.n_iter_ == 2 and not paused.converged_
    resumed, passes = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch, checkpoint=url)
    assert_identical(resumed, straight)
    assert passes == total - before  # the initialization and 2 iterations are not run again
    again, passes = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch, checkpoint=url)
    assert passes == 0
    assert_identical(again, straight)
    np.testing.assert_array_equal(again.predict(X), straight.predict(X))


def test_other_data_settings_priors_or_estimators_are_refused_before_a_pass(
    data, tmp_path, monkeypatch
):
    X = data[0]
    url = tmp_path / "vb.zarr"
    fitted, _ = counted_fit(BayesianDiagGMM(**SETTINGS), X, monkeypatch, checkpoint=url)
    other = X.copy()
    other[0, 1] += 1.0  # a row the fingerprint samples (the first)
    refusals = [
        (BayesianDiagGMM(**SETTINGS), other, "fingerprint"),
        (BayesianDiagGMM(**dict(SETTINGS, mean_precision_prior=2.0)), X, "mean_precision_prior"),
        (BayesianDiagGMM(**dict(SETTINGS, covariance_prior=0.5)), X, "covariance_prior"),
        (BayesianDiagGMM(**dict(SETTINGS, n_init=1)), X, "n_init"),
        (
            BayesianDiagGMM(
                **dict(SETTINGS, weight_concentration_prior_type="dirichlet_distribution")
            ),
            X,
            "weight_concentration_prior_type",
        ),
        (DiagGMM(4, random_state=3), X, "of a BayesianDiagGMM fit, not of a DiagGMM fit"),
    ]
    for estimator, rows, message in refusals:
        with pytest.raises(CheckpointMismatchError, match=message):
            counted_fit(estimator, rows, monkeypatch, checkpoint=url)
    # before any pass: the refusals counted none
    calls, real = [], engine.pass_statistics
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(CheckpointMismatchError):
        BayesianDiagGMM(**SETTINGS).fit(other, checkpoint=url)
    assert calls == []
    monkeypatch.setattr(engine, "pass_statistics", real)
    # sample weights are part of the run: given, or other ones, they are refused
    weights = np.ones(len(X))
    weighted_url = tmp_path / "weighted.zarr"
    counted_fit(
        BayesianDiagGMM(**SETTINGS), X, monkeypatch, checkpoint=weighted_url, sample_weight=weights
    )
    weights[0] = 2.0  # a row the fingerprint samples
    for url_, sample_weight in ((url, weights), (weighted_url, weights), (weighted_url, None)):
        with pytest.raises(CheckpointMismatchError, match="sample_weight"):
            BayesianDiagGMM(**SETTINGS).fit(X, checkpoint=url_, sample_weight=sample_weight)
    # a DiagGMM's checkpoint is refused by a BayesianDiagGMM fit, and replaced on request
    gmm_url = tmp_path / "gmm.zarr"
    DiagGMM(4, random_state=3, max_iter=3).fit(X, checkpoint=gmm_url)
    with pytest.raises(CheckpointMismatchError, match="of a DiagGMM fit, not of a BayesianDiagGMM"):
        BayesianDiagGMM(**SETTINGS).fit(X, checkpoint=gmm_url)
    replaced, _ = counted_fit(
        BayesianDiagGMM(**SETTINGS), X, monkeypatch, checkpoint=gmm_url, overwrite_checkpoint=True
    )
    assert_identical(replaced, fitted)
    # a live fit's lease refuses a second fit
    identity = json.loads((url / "zarr.json").read_text())["attributes"]["identity"]
    with Checkpoints(url, identity, steps=BAYESIAN_STEPS):
        with pytest.raises(CheckpointInUseError):
            BayesianDiagGMM(**SETTINGS).fit(X, checkpoint=url)


def test_a_warm_start_resumes_from_its_checkpoint(data, tmp_path, monkeypatch):
    X = data[0]
    settings = dict(SETTINGS, max_iter=3, warm_start=True)
    start, _ = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch)
    straight, total = counted_fit(copy.deepcopy(start).set_params(max_iter=6), X, monkeypatch)
    url = tmp_path / "warm.zarr"
    paused = copy.deepcopy(start).set_params(max_iter=2)
    counted_fit(paused, X, monkeypatch, checkpoint=url)
    resumed, passes = counted_fit(
        copy.deepcopy(start).set_params(max_iter=6), X, monkeypatch, checkpoint=url
    )
    assert_identical(resumed, straight)
    assert (total, passes) == (6, 4)
    # the checkpoint is of that warm start: a fresh fit, or a warm start from another
    # posterior, is refused
    with pytest.raises(CheckpointMismatchError, match="warm_start_posterior"):
        BayesianDiagGMM(**SETTINGS).fit(X, checkpoint=url)
    with pytest.raises(CheckpointMismatchError, match="warm_start_posterior"):
        paused.fit(X, checkpoint=url)


def test_an_invalid_step_is_skipped_for_the_one_before(data, tmp_path, monkeypatch):
    X = data[0]
    straight, _ = counted_fit(BayesianDiagGMM(**SETTINGS), X, monkeypatch)
    url = tmp_path / "vb.zarr"
    counted_fit(BayesianDiagGMM(**dict(SETTINGS, max_iter=5)), X, monkeypatch, checkpoint=url)
    root = zarr.open_group(str(url), mode="r+")
    latest = root.attrs["latest"]
    assert latest == "step-00000005"
    planes = root[latest]["planes"]
    planes[planes.shape[0] - 1] = -1.0  # the last restart's last variance
    with pytest.warns(CorruptCheckpointWarning, match="'covariances' has 1 value"):
        resumed, passes = counted_fit(BayesianDiagGMM(**SETTINGS), X, monkeypatch, checkpoint=url)
    assert passes == SETTINGS["max_iter"] - 4
    assert_identical(resumed, straight)


def test_a_fit_resumes_from_a_checkpoint_on_object_storage(s3, data, monkeypatch):
    X = data[0]
    straight, total = counted_fit(BayesianDiagGMM(**SETTINGS), X, monkeypatch)
    url, options = s3.url("vb.zarr"), s3.storage_options  # the endpoint only in the options
    _, before = counted_fit(
        BayesianDiagGMM(**dict(SETTINGS, max_iter=3)),
        X,
        monkeypatch,
        checkpoint=url,
        storage_options=options,
    )
    resumed, passes = counted_fit(
        BayesianDiagGMM(**SETTINGS), X, monkeypatch, checkpoint=url, storage_options=options
    )
    assert_identical(resumed, straight)
    assert passes == total - before == SETTINGS["max_iter"] - 3
    with pytest.raises(CheckpointMismatchError, match="not of a DiagGMM fit"):
        DiagGMM(4).fit(X, checkpoint=url, storage_options=options)


def test_a_constant_feature_checkpoint_resumes(data, tmp_path, monkeypatch):
    # the default covariance prior of a constant feature is 0 (scikit-learn's too): a step
    # holding it is valid, not skipped as corrupt
    X = np.column_stack([data[0], np.full(len(data[0]), 3.0)])
    settings = dict(SETTINGS, max_iter=4)
    url = tmp_path / "vb.zarr"
    straight, _ = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch)
    assert straight.covariance_prior_[-1] == 0.0
    counted_fit(BayesianDiagGMM(**dict(settings, max_iter=2)), X, monkeypatch, checkpoint=url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CorruptCheckpointWarning
        resumed, _ = counted_fit(BayesianDiagGMM(**settings), X, monkeypatch, checkpoint=url)
    assert_identical(resumed, straight)
