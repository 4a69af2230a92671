"""init_params="split": growing the mixture from one component by splitting the heaviest."""

import time

import numpy as np
import pytest
from conftest import mixture_data

from diaggmm_dist import DiagGMM, engine, splitting
from diaggmm_dist.io.synthetic import mixture_parameters
from diaggmm_dist.mstep import SPLIT_OFFSET, add_components_by_splitting


def clusters(seed, n=20_000, k=64, d=8):
    """Rows of a well-separated mixture of ``k`` clusters whose weights vary about 3x."""
    weights, means, covariances = mixture_parameters(k, d, seed=seed, spread=8.0)
    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n, p=weights)
    return means[labels] + rng.standard_normal((n, d)) * np.sqrt(covariances[labels])


def test_split_reaches_a_lower_bound_at_least_as_good_as_kmeans_on_64_clusters():
    start = time.perf_counter()
    bounds = {"kmeans": [], "split": []}
    for seed in range(3):
        X = clusters(seed)
        for init in bounds:
            bounds[init].append(
                DiagGMM(64, init_params=init, random_state=seed).fit(X).lower_bound_
            )
    assert np.mean(bounds["split"]) >= np.mean(bounds["kmeans"]), bounds
    assert time.perf_counter() - start < 60


def test_a_split_halves_the_weight_keeps_the_variances_and_moves_the_means_on_the_widest_feature():
    weights, means, covariances = (
        np.array([1.0]),
        np.array([[1.0, 2.0, 3.0]]),
        np.array([[1.0, 4.0, 2.0]]),
    )
    weights, means, covariances = add_components_by_splitting(weights, means, covariances)
    np.testing.assert_array_equal(weights, [0.5, 0.5])
    np.testing.assert_array_equal(covariances, [[1.0, 4.0, 2.0]] * 2)
    step = SPLIT_OFFSET * 2.0  # σ of feature 1, the widest
    np.testing.assert_allclose(means, [[1.0, 2.0 - step, 3.0], [1.0, 2.0 + step, 3.0]])
    # Next, the component with the most weight x σ along its widest feature is split: here the
    # lighter but much wider one.
    weights, means, covariances = (
        np.array([0.6, 0.4]),
        np.zeros((2, 2)),
        np.array([[1.0, 1.0], [9.0, 1.0]]),
    )
    weights, _, covariances = add_components_by_splitting(weights, means, covariances)
    np.testing.assert_allclose(weights, [0.6, 0.2, 0.2])
    np.testing.assert_array_equal(covariances[2], [9.0, 1.0])


def test_one_component_is_the_data_mean_and_variance():
    X, _ = mixture_data(3000, 3, 2, seed=1, offset=1e4)  # far from the origin: no cancellation
    gmm = DiagGMM(1, init_params="split", max_iter=0).fit(X)
    np.testing.assert_allclose(gmm.means_[0], X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(gmm.covariances_[0], X.var(axis=0) + 1e-6, rtol=1e-9)


def test_split_grows_one_component_at_a_time_with_few_em_iterations(monkeypatch):
    X, _ = mixture_data(4000, 3, 5, seed=2)
    sizes = []
    run_pass = engine.pass_statistics

    def spy(data, responsibilities, *args, **kwargs):
        kind = responsibilities[0]
        sizes.append(
            sum(responsibilities[2]) if kind == "random" else responsibilities[1].n_components
        )
        return run_pass(data, responsibilities, *args, **kwargs)

    monkeypatch.setattr(engine, "pass_statistics", spy)
    gmm = DiagGMM(5, init_params="split", max_iter=0).fit(X)
    assert gmm.means_.shape == (5, 3) and gmm.weights_.sum() == pytest.approx(1.0)
    assert sizes[:2] == [1, 1]  # the one-component fit
    counts = [sizes.count(k) for k in range(2, 6)]
    assert sizes[2:] == sorted(sizes[2:]) and all(
        1 <= c <= splitting.SPLIT_EM_ITERATIONS for c in counts
    ), sizes


def test_split_is_deterministic_and_chunking_independent():
    X, _ = mixture_data(4000, 3, 4, seed=3)
    first = DiagGMM(4, init_params="split", max_iter=3, tol=0, random_state=0).fit(X)
    again = DiagGMM(4, init_params="split", max_iter=3, tol=0, random_state=1, chunk_size=123).fit(
        X
    )
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(first, name), getattr(again, name), rtol=1e-10)
