"""partial_fit: stepwise (online) EM on running sufficient statistics, and its persistence."""

import copy
import os

import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import mixture_data, start_values

from diaggmm_dist import DiagGMM, online
from diaggmm_dist.mstep import m_step
from diaggmm_dist.stores.model_store import ModelStoreError

K, D, BATCH = 3, 4, 1000


def stream(X, tmp_path, batch=BATCH):
    """Batches of ``X``: numpy, dask and Zarr (a path on disk) arrays in turn."""
    for number, start in enumerate(range(0, X.shape[0], batch)):
        rows = X[start : start + batch]
        if number % 3 == 0:
            yield rows
        elif number % 3 == 1:
            yield da.from_array(rows, chunks=(300, rows.shape[1]))
        else:
            path = str(tmp_path / f"part-{number}.zarr")
            zarr.create_array(path, shape=rows.shape, chunks=(250, rows.shape[1]), dtype="f8")[
                ...
            ] = rows
            yield path


def same_model(a, b, rtol=1e-12):
    for name in ("weights_", "means_", "covariances_", "running_statistics_", "running_shift_"):
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=rtol, atol=0, err_msg=name
        )
    assert (a.n_batches_seen_, a.n_samples_seen_, a.n_iter_) == (
        b.n_batches_seen_,
        b.n_samples_seen_,
        b.n_iter_,
    )


#: Held-out mean log-likelihood of the streamed model: within this fraction of the batch fit's.
#: Measured on seeds 0, 2, 3: gaps of -4.0e-5, +3.2e-5 and -4.2e-5 (negative: the stream
#: scores better). An update that forgets its history (step size 1 at every batch: the model
#: of the last batch alone) gives 1.6e-3, 1.8e-3 and 1.2e-3, and passed the former 1% bound.
#: (On seed 1 the batch fit and the stream converge to different local optima, means 7.4
#: apart, with a gap of 5.8e-4: a fact about EM's optima, not about the update.)
HELDOUT_GAP = 3e-4
SEEDS = [0, 2, 3]


def _heldout_gap(seed, tmp_path):
    """Relative held-out gap (batch − streamed) / |batch| after streaming 20 batches of 1,000
    rows.
    """
    X, _ = mixture_data(24_000, D, K, seed=seed)
    train, holdout = X[:20_000], X[20_000:]
    batch = DiagGMM(K, random_state=0).fit(train)
    streamed = DiagGMM(K, random_state=0)
    for part in stream(train, tmp_path):
        streamed.partial_fit(part)
    assert streamed.n_batches_seen_ == 20 and streamed.n_samples_seen_ == 20_000
    assert len(streamed.lower_bounds_) == 20 and streamed.n_iter_ == 20
    batch_score = batch.score(holdout)
    return (batch_score - streamed.score(holdout)) / abs(batch_score)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_stream_of_batches_scores_as_well_as_the_batch_fit_on_held_out_rows(seed, tmp_path):
    gap = _heldout_gap(seed, tmp_path)
    assert abs(gap) <= HELDOUT_GAP, gap


def test_an_update_that_forgets_its_history_fails_the_held_out_bound(tmp_path, monkeypatch):
    # the control: the bound above tells stepwise EM from a model of the last batch alone
    monkeypatch.setattr(online, "step_size", lambda t, learning_decay, learning_offset: 1.0)
    gaps = [_heldout_gap(seed, tmp_path / str(seed)) for seed in SEEDS]
    assert min(gaps) > HELDOUT_GAP, gaps


def test_the_first_batch_is_one_em_iteration_from_the_initialization():
    X, _ = mixture_data(2000, D, K, seed=4)
    first = DiagGMM(K, random_state=3).partial_fit(X)
    fitted = DiagGMM(K, random_state=3, max_iter=1).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(first, name), getattr(fitted, name), rtol=1e-12)
    assert first.lower_bound_ == pytest.approx(fitted.lower_bound_, rel=1e-14)
    assert first.n_batches_seen_ == 1 and first.n_features_in_ == D


def _statistics_per_row(model, X):
    """Numpy oracle: N, Σ r x, Σ r x² per row of ``X`` under ``model`` (scikit-learn's
    responsibilities).
    """
    resp = model.to_sklearn().predict_proba(X)
    return resp.mean(axis=0), resp.T @ X / X.shape[0], resp.T @ (X * X) / X.shape[0]


def test_each_step_is_the_stepwise_em_update():
    # Far from the origin, so the statistics' shifts matter; from a model fitted by fit (no
    # running statistics yet: they start as those its parameters imply).
    X, _ = mixture_data(3000, D, K, seed=6, offset=500.0)
    w0, m0, p0 = start_values(X, K, seed=2)
    model = DiagGMM(
        K,
        weights_init=w0,
        means_init=m0,
        precisions_init=p0,
        max_iter=0,
        learning_decay=0.8,
        learning_offset=2.0,
    ).fit(X)
    reg = model.reg_covar
    n = model.weights_.copy()
    s1 = n[:, None] * model.means_
    s2 = n[:, None] * (model.covariances_ - reg + model.means_**2)
    for t, rows in enumerate((slice(0, 1000), slice(1000, 2500), slice(2500, 3000))):
        eta = (t + 2.0) ** -0.8
        batch_n, batch_s1, batch_s2 = _statistics_per_row(model, X[rows])
        n, s1, s2 = (
            (1 - eta) * a + eta * b for a, b in ((n, batch_n), (s1, batch_s1), (s2, batch_s2))
        )
        model.partial_fit(X[rows])
        means = s1 / n[:, None]
        np.testing.assert_allclose(model.weights_, n / n.sum(), rtol=1e-9)
        np.testing.assert_allclose(model.means_, means, rtol=1e-9)
        np.testing.assert_allclose(model.covariances_, s2 / n[:, None] - means**2 + reg, rtol=1e-6)
        assert model.n_batches_seen_ == t + 1


def test_step_sizes():
    assert online.step_size(0, 0.7, 10.0) == pytest.approx(10.0**-0.7)
    assert online.step_size(5, 1.0, 1.0) == pytest.approx(1 / 6)
    assert online.step_size(0, 0.7, 0.0) == 1.0  # never more than 1


def test_implied_statistics_give_back_the_parameters():
    X, _ = mixture_data(2000, D, K, seed=8, offset=100.0)
    model = DiagGMM(K, random_state=0).fit(X)
    shift = X.mean(axis=0)
    stats = online.implied_statistics(
        model.weights_, model.means_, model.covariances_, model.reg_covar, shift
    )
    weights, means, covariances, _ = m_step(stats * 2000, model.reg_covar, shift)
    np.testing.assert_allclose(weights, model.weights_, rtol=1e-12)
    np.testing.assert_allclose(means, model.means_, rtol=1e-12)
    np.testing.assert_allclose(covariances, model.covariances_, rtol=1e-9)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_saved_model_continues_exactly_where_it_stopped(where, tmp_path):
    X, _ = mixture_data(6000, D, K, seed=9)
    batches = np.array_split(X, 6)
    straight = DiagGMM(
        K, random_state=0, learning_decay=0.9, learning_offset=3.0, missing="marginalize"
    )
    for part in batches:
        straight.partial_fit(part)
    first = DiagGMM(
        K, random_state=0, learning_decay=0.9, learning_offset=3.0, missing="marginalize"
    )
    for part in batches[:3]:
        first.partial_fit(part)
    url = str(tmp_path / "model.zarr") if where == "local" else f"memory://online-{os.getpid()}"
    first.save(url)
    loaded = DiagGMM.load(url)
    same_model(loaded, first, rtol=0)
    assert (loaded.learning_decay, loaded.learning_offset, loaded.missing) == (
        0.9,
        3.0,
        "marginalize",
    )
    for part in batches[3:]:
        loaded.partial_fit(part)
    same_model(loaded, straight, rtol=0)
    assert loaded.lower_bounds_ == straight.lower_bounds_


def test_fit_then_partial_fit_then_fit(tmp_path):
    X, _ = mixture_data(4000, D, K, seed=10)
    model = DiagGMM(K, random_state=0).fit(X[:3000])
    fitted_means = model.means_.copy()
    model.save(tmp_path / "fitted.zarr")
    assert DiagGMM.load(tmp_path / "fitted.zarr").__dict__.get("running_statistics_") is None
    model.partial_fit(X[3000:])
    assert model.n_batches_seen_ == 1 and model.data_fingerprint_ is None
    # the first step from a fitted model moves it by learning_offset ** -learning_decay of the way
    assert 0 < np.abs(model.means_ - fitted_means).max() < 0.5
    continued = DiagGMM.load(tmp_path / "fitted.zarr").partial_fit(
        X[3000:]
    )  # a store without running statistics
    same_model(continued, model)
    model.fit(X)
    assert not hasattr(model, "running_statistics_") and not hasattr(model, "n_batches_seen_")


def test_integer_weights_count_as_repeated_rows():
    X, _ = mixture_data(3000, D, K, seed=11)
    base = DiagGMM(K, random_state=0).fit(X[:2000])
    weights = np.random.default_rng(0).integers(0, 4, size=1000)
    weighted = copy.deepcopy(base).partial_fit(X[2000:], sample_weight=weights)
    repeated = copy.deepcopy(base).partial_fit(np.repeat(X[2000:], weights, axis=0))
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-10)


def test_marginalized_batches_are_the_brute_force_stepwise_em_update():
    # The oracle: each batch's responsibilities by brute force over each row's observed
    # features (test_missing_and_weights), its per-feature masked statistics per unit weight,
    # folded into the running ones with the step size, and the M-step on those. Far from the
    # origin (the statistics' shifts move between batches) and with empty rows.
    from test_missing_and_weights import _with_gaps, marginal_e_step

    X, _ = mixture_data(3000, D, K, seed=12, offset=100.0)
    holes = _with_gaps(X, 0.2, 12, empty_rows=[7, 1500, 2999])
    w0, m0, p0 = start_values(X, K, seed=3)
    model = DiagGMM(
        K,
        weights_init=w0,
        means_init=m0,
        precisions_init=p0,
        max_iter=0,
        missing="marginalize",
        learning_decay=0.8,
        learning_offset=2.0,
    ).fit(holes)
    reg = model.reg_covar
    # running statistics implied by the fitted parameters: N_k = S0_kj = w_k, uncentered S1, S2
    n, s0 = model.weights_.copy(), np.repeat(model.weights_[:, None], D, axis=1)
    s1 = n[:, None] * model.means_
    s2 = n[:, None] * (model.covariances_ - reg + model.means_**2)
    seen = 0
    for t, rows in enumerate((slice(0, 1000), slice(1000, 2200), slice(2200, 3000))):
        eta = (t + 2.0) ** -0.8
        used, resp, observed, values, log_likelihood = marginal_e_step(
            holes[rows], model.weights_, model.means_, model.covariances_
        )
        batch = (resp.sum(axis=0), resp.T @ observed, resp.T @ values, resp.T @ (values * values))
        n, s0, s1, s2 = (
            (1 - eta) * old + eta * new / used.sum() for old, new in zip((n, s0, s1, s2), batch)
        )
        model.partial_fit(holes[rows])
        seen += int(used.sum())
        means = s1 / s0
        # ~100x the errors measured: 8e-16, 3e-16, 1.5e-12 (the oracle's S2/S0 - mean² at an
        # offset of 100) and 2e-16
        np.testing.assert_allclose(model.weights_, n / n.sum(), rtol=1e-13)
        np.testing.assert_allclose(model.means_, means, rtol=1e-13)
        np.testing.assert_allclose(model.covariances_, s2 / s0 - means**2 + reg, rtol=1e-10)
        np.testing.assert_allclose(model.lower_bound_, log_likelihood.mean(), rtol=1e-13)
        assert model.n_batches_seen_ == t + 1 and model.n_samples_seen_ == seen


def test_a_tampered_running_state_is_named(tmp_path):
    X, _ = mixture_data(2000, D, K, seed=13)
    path = str(tmp_path / "model.zarr")
    DiagGMM(K, random_state=0).partial_fit(X).save(path)
    group = zarr.open_group(path, mode="r+")
    group.attrs["online"] = {"n_batches_seen": 0, "n_samples_seen": 5}
    with pytest.raises(ModelStoreError, match="attribute 'online' must hold n_batches_seen >= 1"):
        DiagGMM.load(path)
    group.attrs["online"] = {"n_batches_seen": 1, "n_samples_seen": 2000}
    statistics = group["running_statistics"][...]
    statistics[0, 0] = -1.0
    group["running_statistics"][...] = statistics
    with pytest.raises(ModelStoreError, match="'running_statistics' has negative masses"):
        DiagGMM.load(path)
    statistics[0, 0] = 0.5
    group["running_statistics"][...] = statistics
    del group["running_shift"]
    with pytest.raises(ModelStoreError, match="array 'running_shift' is missing"):
        DiagGMM.load(path)


def test_a_version_1_store_loads_without_running_statistics(tmp_path):
    X, _ = mixture_data(2000, D, K, seed=14)
    path = str(tmp_path / "model.zarr")
    DiagGMM(K, random_state=0).fit(X).save(path)
    group = zarr.open_group(path, mode="r+")
    attrs = dict(group.attrs)
    for name in ("missing", "learning_decay", "learning_offset"):
        del attrs["params"][name]
    del attrs["online"]
    group.attrs.put({**attrs, "format_version": 1})
    loaded = DiagGMM.load(path)
    assert loaded.learning_decay == 0.7 and not hasattr(loaded, "running_statistics_")
    loaded.partial_fit(X[:500])
    assert loaded.n_batches_seen_ == 1
