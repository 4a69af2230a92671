"""Missing values (exact marginal likelihood, or dropping rows) and sample weights."""

import dask.array as da
import numpy as np
import pytest
from conftest import mixture_data, start_values
from sklearn.mixture import GaussianMixture

from diaggmm_dist import DiagGMM

EPS = np.finfo(np.float64).eps


def _with_gaps(X, fraction, seed, empty_rows=()):
    rng = np.random.default_rng(seed)
    holes = X.copy()
    holes[rng.random(X.shape) < fraction] = np.nan
    holes[list(empty_rows)] = np.nan
    return holes


def marginal_e_step(X, weights, means, variances):
    """Brute-force E-step where each row's likelihood is over its observed features.

    Returns the rows that have any observed value (``used``), their responsibilities (n_used,
    K), their observed mask and values (NaN as 0) and their log-likelihoods.
    """
    observed = ~np.isnan(X)
    values = np.where(observed, X, 0.0)
    used = observed.any(axis=1)
    log_dens = np.stack(
        [
            np.log(weights[k])
            + np.sum(
                observed
                * (
                    -0.5 * np.log(2 * np.pi * variances[k])
                    - 0.5 * (values - means[k]) ** 2 / variances[k]
                ),
                axis=1,
            )
            for k in range(weights.size)
        ],
        axis=1,
    )[used]
    top = log_dens.max(axis=1, keepdims=True)
    log_likelihood = top[:, 0] + np.log(np.exp(log_dens - top).sum(axis=1))
    resp = np.exp(log_dens - log_likelihood[:, None])
    return used, resp, observed[used].astype(float), values[used], log_likelihood


def brute_force_marginal_em(X, weights, means, variances, reg_covar, n_iter):
    """Exact EM for a diagonal mixture where each row's likelihood is over its observed features."""
    history = []
    for _ in range(n_iter):
        _, resp, m, x, log_likelihood = marginal_e_step(X, weights, means, variances)
        per_feature = resp.T @ m + 10 * EPS
        new_means = resp.T @ x / per_feature
        new_vars = (
            np.stack(
                [
                    (resp[:, k] @ (m * (x - new_means[k]) ** 2)) / per_feature[k]
                    for k in range(weights.size)
                ]
            )
            + reg_covar
        )
        mass = resp.sum(axis=0) + 10 * EPS
        weights, means, variances = mass / mass.sum(), new_means, new_vars
        history.append((weights, means, variances, log_likelihood.mean()))
    return history


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_marginalize_equals_brute_force_exact_em(seed):
    X, _ = mixture_data(600, 4, 3, seed=seed)
    holes = _with_gaps(X, 0.25, seed, empty_rows=[5, 17])
    w0, m0, p0 = start_values(X, 3, seed=seed)
    expected = brute_force_marginal_em(holes, w0, m0, 1 / p0, 1e-6, 8)
    gmm = DiagGMM(
        3,
        weights_init=w0,
        means_init=m0,
        precisions_init=p0,
        tol=0,
        max_iter=1,
        warm_start=True,
        missing="marginalize",
        chunk_size=97,
    )
    for weights, means, variances, lower_bound in expected:
        gmm.fit(holes)
        np.testing.assert_allclose(gmm.weights_, weights, rtol=1e-8)
        np.testing.assert_allclose(gmm.means_, means, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(gmm.covariances_, variances, rtol=1e-8)
        np.testing.assert_allclose(gmm.lower_bound_, lower_bound, rtol=1e-8)


def test_drop_equals_sklearn_on_the_complete_rows():
    X, _ = mixture_data(800, 3, 3, seed=4)
    holes = _with_gaps(X, 0.05, 4)
    complete = holes[~np.isnan(holes).any(axis=1)]
    w0, m0, p0 = start_values(complete, 3)
    settings = dict(weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=10)
    ref = GaussianMixture(3, covariance_type="diag", **settings).fit(complete)
    ours = DiagGMM(3, missing="drop", **settings).fit(da.from_array(holes, chunks=(150, 3)))
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-8)
    labels = ours.predict(holes)
    gaps = np.isnan(holes).any(axis=1)
    assert np.all(labels[gaps] == -1)
    np.testing.assert_array_equal(labels[~gaps], ref.predict(complete))


def test_without_gaps_every_policy_gives_the_identical_model():
    X, _ = mixture_data(2000, 4, 3, seed=5)
    fits = [
        DiagGMM(3, random_state=0, missing=policy, tol=0, max_iter=15).fit(X)
        for policy in ("error", "drop", "marginalize")
    ]
    for other in fits[1:]:
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_array_equal(getattr(other, name), getattr(fits[0], name))
        assert other.lower_bounds_ == fits[0].lower_bounds_


def test_marginalize_labels_only_fully_missing_rows_minus_one():
    X, _ = mixture_data(1000, 3, 2, seed=6)
    holes = _with_gaps(X, 0.3, 6, empty_rows=[0, 9])
    gmm = DiagGMM(2, random_state=0, missing="marginalize").fit(
        da.from_array(holes, chunks=(300, 3))
    )
    labels = gmm.predict(holes)
    empty = np.isnan(holes).all(axis=1)
    assert np.all(labels[empty] == -1) and np.all(labels[~empty] >= 0)
    proba = gmm.predict_proba(holes)
    assert np.all(np.isnan(proba[empty]))
    np.testing.assert_allclose(proba[~empty].sum(axis=1), 1.0)
    assert np.isfinite(gmm.score(holes))


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_works_with_gaps(init_params):
    X, _ = mixture_data(1500, 3, 3, seed=7)
    holes = _with_gaps(X, 0.2, 7)
    for policy in ("drop", "marginalize"):
        gmm = DiagGMM(3, random_state=0, init_params=init_params, missing=policy).fit(holes)
        assert np.isfinite(gmm.lower_bound_) and np.all(gmm.covariances_ > 0)


def test_integer_sample_weights_equal_repeated_rows():
    X, _ = mixture_data(700, 3, 3, seed=8)
    counts = np.random.default_rng(8).integers(0, 4, size=X.shape[0])
    w0, m0, p0 = start_values(X, 3)
    settings = dict(weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=10)
    weighted = DiagGMM(3, **settings).fit(X, sample_weight=counts)
    repeated = DiagGMM(3, **settings).fit(np.repeat(X, counts, axis=0))
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-10)
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)
    lazy = DiagGMM(3, **settings).fit(
        da.from_array(X, chunks=(100, 3)),
        sample_weight=da.from_array(counts.astype(float), chunks=70),
    )
    np.testing.assert_allclose(lazy.means_, weighted.means_, rtol=1e-10)


def test_bad_sample_weights_are_refused():
    X, _ = mixture_data(100, 2, 2, seed=9)
    with pytest.raises(ValueError, match=r"sample_weight has shape \(99,\)"):
        DiagGMM(2).fit(X, sample_weight=np.ones(99))
    with pytest.raises(ValueError, match="1 negative, NaN or infinite"):
        DiagGMM(2).fit(X, sample_weight=np.r_[-1.0, np.ones(99)])
    with pytest.raises(ValueError, match="2 negative, NaN or infinite"):
        DiagGMM(2).fit(
            da.from_array(X, chunks=50),
            sample_weight=da.from_array(np.r_[np.nan, -2, np.ones(98)], chunks=50),
        )


def test_all_missing_input_is_refused():
    X = np.full((50, 3), np.nan)
    for policy in ("drop", "marginalize"):
        with pytest.raises(ValueError, match="No row can be used"):
            DiagGMM(2, missing=policy).fit(X)
        with pytest.raises(ValueError, match="No row can be used"):
            DiagGMM(2, missing=policy, init_params="random").fit(da.from_array(X, chunks=10))
    with pytest.raises(ValueError, match="missing='marginalize'"):
        DiagGMM(2).fit(X)
