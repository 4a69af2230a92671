"""Given the same start, every EM iterate equals scikit-learn's
GaussianMixture(covariance_type="diag").
"""

import dask.array as da
import numpy as np
import pytest
from conftest import mixture_data, start_values
from sklearn.mixture import GaussianMixture

from diaggmm_dist import DiagGMM

CASES = {
    "general": dict(n=3000, d=5, k=4),
    "one-component": dict(n=1500, d=3, k=1),
    "one-feature": dict(n=2000, d=1, k=3),
    "unequal-sizes": dict(n=None, d=4, k=3, sizes=[6000, 60, 12]),
    "offset-data": dict(n=2000, d=6, k=5, offset=1000.0),
}


def _data(case):
    spec = dict(CASES[case])
    n, d, k = spec.pop("n"), spec.pop("d"), spec.pop("k")
    X, _ = mixture_data(n, d, k, seed=len(case), **spec)
    return X, k


def _assert_same_parameters(ours, ref, rtol=1e-8):
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        ours_value, ref_value = getattr(ours, name), getattr(ref, name)
        scale = np.max(np.abs(ref_value))
        np.testing.assert_allclose(
            ours_value, ref_value, rtol=rtol, atol=rtol * 1e-4 * scale, err_msg=name
        )
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=rtol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_iteration_matches_sklearn(case):
    X, k = _data(case)
    w0, m0, p0 = start_values(X, k)
    settings = dict(
        weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=1, warm_start=True
    )
    ref = GaussianMixture(k, covariance_type="diag", **settings)
    ours = DiagGMM(k, chunk_size=701, **settings)
    for _ in range(8):
        ref.fit(X)
        ours.fit(X)
        _assert_same_parameters(ours, ref)


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_run_matches_sklearn(case):
    X, k = _data(case)
    w0, m0, p0 = start_values(X, k)
    settings = dict(weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=15)
    ref = GaussianMixture(k, covariance_type="diag", **settings).fit(X)
    ours = DiagGMM(k, chunk_size=997, **settings).fit(X)
    _assert_same_parameters(ours, ref)
    assert ours.n_iter_ == ref.n_iter_ == 15
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-8)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-8)
    np.testing.assert_allclose(ours.bic(X), ref.bic(X), rtol=1e-8)
    np.testing.assert_allclose(ours.aic(X), ref.aic(X), rtol=1e-8)


def test_convergence_rule_matches_sklearn():
    X, k = _data("general")
    w0, m0, p0 = start_values(X, k)
    settings = dict(weights_init=w0, means_init=m0, precisions_init=p0, tol=1e-4, max_iter=200)
    ref = GaussianMixture(k, covariance_type="diag", **settings).fit(X)
    ours = DiagGMM(k, **settings).fit(X)
    assert ours.converged_ and ref.converged_
    assert ours.n_iter_ == ref.n_iter_
    _assert_same_parameters(ours, ref)


def test_float32_compute_agrees_with_float64():
    X, k = _data("offset-data")
    w0, m0, p0 = start_values(X, k)
    settings = dict(weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=10)
    exact = DiagGMM(k, **settings).fit(X)
    fast = DiagGMM(k, dtype="float32", **settings).fit(X.astype(np.float32))
    # About 100x the errors measured here (means ~1000, spread ~1): lower bound 9e-8
    # relative, means 3.1e-8 relative (3e-5 absolute, the float32 resolution at 1000),
    # variances 3.8e-5 relative, weights 1.1e-6 absolute. (rtol=1e-4 on the means allowed
    # 0.1 absolute, a tenth of a standard deviation.)
    np.testing.assert_allclose(fast.lower_bound_, exact.lower_bound_, rtol=1e-5)
    np.testing.assert_allclose(fast.means_, exact.means_, rtol=3e-6, atol=0)
    np.testing.assert_allclose(fast.covariances_, exact.covariances_, rtol=3e-3, atol=0)
    np.testing.assert_allclose(fast.weights_, exact.weights_, rtol=0, atol=1e-4)
    assert fast.predict_proba(X[:10].astype(np.float32)).dtype == np.float32


def test_results_do_not_depend_on_chunking():
    X, _ = mixture_data(5000, 4, 3, seed=3)
    fits = []
    for data in (
        X,
        da.from_array(X, chunks=(5000, 4)),
        da.from_array(X, chunks=((100, 1900, 7, 2993), (2, 2))),
    ):
        fits.append(DiagGMM(3, random_state=7, tol=0, max_iter=20).fit(data))
    fits.append(DiagGMM(3, random_state=7, tol=0, max_iter=20, chunk_size=333).fit(X))
    for other in fits[1:]:
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_allclose(getattr(other, name), getattr(fits[0], name), rtol=1e-10)
        np.testing.assert_allclose(other.lower_bounds_, fits[0].lower_bounds_, rtol=1e-10)
