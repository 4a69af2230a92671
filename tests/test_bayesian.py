"""BayesianDiagGMM: scikit-learn's BayesianGaussianMixture(covariance_type="diag"), out of core."""

import dask.array as da
import numpy as np
import pytest
from conftest import mixture_data
from sklearn.mixture import BayesianGaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

from diaggmm_dist import BayesianDiagGMM

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
POSTERIOR = ("mean_precision_", "means_", "degrees_of_freedom_", "covariances_", "weights_")


@pytest.fixture(scope="module")
def data():
    X, _ = mixture_data(3000, 5, 4, seed=3)
    return X


def _assert_same_posterior(ours, ref, rtol=1e-8):
    for name in POSTERIOR + ("precisions_cholesky_", "mean_prior_", "covariance_prior_"):
        ours_value, ref_value = getattr(ours, name), getattr(ref, name)
        scale = np.max(np.abs(ref_value))
        np.testing.assert_allclose(
            ours_value, ref_value, rtol=rtol, atol=rtol * 1e-4 * scale, err_msg=name
        )
    np.testing.assert_allclose(
        np.ravel(ours.weight_concentration_), np.ravel(ref.weight_concentration_), rtol=rtol
    )
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=rtol)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_warm_started_iterates_match_sklearn(data, prior_type):
    # measured: every attribute within 1e-13 relative, the lower bound within 7e-15
    settings = dict(weight_concentration_prior_type=prior_type, max_iter=1, tol=0, warm_start=True)
    ref = BayesianGaussianMixture(
        n_components=6, covariance_type="diag", random_state=0, **settings
    ).fit(data)
    ours = BayesianDiagGMM.from_sklearn(ref, chunk_size=701)
    assert ours.get_params()["chunk_size"] == 701 and ours.warm_start
    for _ in range(6):
        ref.fit(data)
        ours.fit(data)
        _assert_same_posterior(ours, ref)
        assert ours.n_iter_ == ref.n_iter_ == 1
    for fitted in (ref, ours):  # no iteration: the same posterior, and scikit-learn's -inf
        fitted.set_params(max_iter=0).fit(data)
        fitted.set_params(max_iter=1)
    _assert_same_posterior(ours, ref)
    back = ours.to_sklearn()
    assert type(back) is BayesianGaussianMixture and back.covariance_type == "diag"
    np.testing.assert_array_equal(back.predict(data), ours.predict(data))
    np.testing.assert_allclose(back.score_samples(data), ours.score_samples(data), rtol=1e-12)
    np.testing.assert_allclose(
        back.predict_proba(data), ours.predict_proba(data), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(ours.score(data), ref.score(data), rtol=1e-12)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_a_fit_from_the_same_initial_responsibilities_matches_sklearn(data, prior_type):
    # data that fits in the sample: "kmeans" gives scikit-learn's k-means labels, so the
    # initialization (sklearn's _initialize from them) and every iteration after match
    settings = dict(
        n_components=6, weight_concentration_prior_type=prior_type, random_state=0, tol=0
    )
    for max_iter in (1, 12):
        ref = BayesianGaussianMixture(covariance_type="diag", max_iter=max_iter, **settings)
        ours = BayesianDiagGMM(max_iter=max_iter, chunk_size=997, **settings)
        ref.fit(data)
        ours.fit(data)
        _assert_same_posterior(ours, ref)
        np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-8)


def test_priors_given_and_convergence_match_sklearn(data):
    settings = dict(
        n_components=4,
        weight_concentration_prior=0.3,
        mean_precision_prior=0.5,
        mean_prior=np.arange(5.0),
        degrees_of_freedom_prior=7.0,
        covariance_prior=np.linspace(0.5, 2.0, 5),
        random_state=1,
        tol=1e-6,
        max_iter=500,
    )
    ref = BayesianGaussianMixture(covariance_type="diag", **settings).fit(data)
    ours = BayesianDiagGMM(**settings).fit(data)
    assert ref.converged_ and ours.converged_ and ours.n_iter_ == ref.n_iter_
    _assert_same_posterior(ours, ref)
    np.testing.assert_array_equal(ours.covariance_prior_, settings["covariance_prior"])


def test_effective_components_and_predict_leaves_the_others_out():
    X, _ = mixture_data(4000, 3, 2, seed=5)
    bgm = BayesianDiagGMM(n_components=8, random_state=0, max_iter=500).fit(X)
    assert bgm.effective_n_components_ == 2
    effective = np.flatnonzero(bgm.effective_components_)
    np.testing.assert_array_equal(effective, np.flatnonzero(bgm.weights_ > 1e-3))
    assert set(np.unique(bgm.predict(X))) == set(effective)
    # a threshold that rules out a used component: predict never returns it, scikit-learn does
    heavy = np.argsort(bgm.weights_)[-2:]
    bgm.set_params(weight_threshold=float(bgm.weights_[heavy[0]]))
    bgm = BayesianDiagGMM.from_sklearn(bgm.to_sklearn(), weight_threshold=bgm.weight_threshold)
    assert bgm.effective_n_components_ == 1
    labels, theirs = bgm.predict(X), bgm.to_sklearn().predict(X)
    assert set(np.unique(labels)) == {heavy[1]} and heavy[0] in theirs
    kept = theirs == heavy[1]
    np.testing.assert_array_equal(labels[kept], theirs[kept])


def _warm_model(X, **params):
    ref = BayesianGaussianMixture(
        n_components=3, covariance_type="diag", random_state=0, max_iter=2, tol=0, warm_start=True
    ).fit(X)
    return BayesianDiagGMM.from_sklearn(ref, max_iter=5, **params)


def test_integer_sample_weights_equal_repeated_rows():
    X, _ = mixture_data(600, 3, 3, seed=7)
    counts = np.random.default_rng(0).integers(0, 4, size=X.shape[0])
    weighted = _warm_model(X, chunk_size=128).fit(X, sample_weight=counts)
    repeated = _warm_model(X).fit(np.repeat(X, counts, axis=0))
    _assert_same_posterior(weighted, repeated, rtol=1e-10)


def test_missing_drop_skips_rows_and_marginalize_is_refused():
    X, _ = mixture_data(800, 3, 3, seed=8)
    holes = X.copy()
    holes[::7, 1] = np.nan
    complete = X[~np.isnan(holes).any(axis=1)]
    dropped = _warm_model(complete, missing="drop").fit(holes)
    ref = _warm_model(complete).fit(complete)
    _assert_same_posterior(dropped, ref, rtol=1e-10)
    assert dropped.predict(holes)[0] == -1
    with pytest.raises(ValueError, match="needs a total sample weight > 1"):
        BayesianDiagGMM(n_components=2).fit(X, sample_weight=np.full(X.shape[0], 1e-3))
    with pytest.raises(ValueError, match="missing='marginalize' is not available"):
        BayesianDiagGMM(missing="marginalize").fit(holes)
    with pytest.raises(ValueError, match="NaN"):
        BayesianDiagGMM(n_components=2).fit(holes)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(weight_concentration_prior_type="pitman_yor"), "weight_concentration_prior_type"),
        (dict(degrees_of_freedom_prior=1.5), "should be greater than 2"),
        (dict(covariance_prior=np.ones(4)), r"covariance_prior must be .* shape \(3,\)"),
        (dict(covariance_prior=-1.0), "covariance_prior must be > 0"),
        (dict(mean_prior=[0.0, np.inf, 0.0]), "mean_prior must be finite"),
        (dict(mean_precision_prior=0), "mean_precision_prior must be"),
        (dict(weight_threshold=-1), "weight_threshold"),
        (dict(n_components=0), "n_components"),
    ],
)
def test_bad_settings_are_refused_before_any_pass(monkeypatch, params, message):
    from diaggmm_dist import engine

    def no_pass(*args, **kwargs):
        raise AssertionError("a pass ran")

    monkeypatch.setattr(engine, "pass_statistics", no_pass)
    X, _ = mixture_data(100, 3, 2)
    with pytest.raises(ValueError, match=message):
        BayesianDiagGMM(**params).fit(X)


def test_restarts_share_passes_and_keep_the_best(data):
    from diaggmm_dist import engine

    one = BayesianDiagGMM(n_components=5, random_state=2, init_params="random", max_iter=20)
    three = BayesianDiagGMM(n_components=5, random_state=2, init_params="random", max_iter=20)
    one.fit(data)
    passes = []
    real = engine.pass_statistics
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "pass_statistics", lambda *a, **k: passes.append(1) or real(*a, **k))
        three.set_params(n_init=3).fit(data)
    # one initialization pass and at most max_iter iterations, whatever n_init
    assert len(passes) <= 1 + 20
    assert three.lower_bound_ >= one.lower_bound_


def test_float32_and_dask_input_agree_with_float64(data):
    exact = _warm_model(data).fit(data)
    fast = _warm_model(data, dtype="float32").fit(da.from_array(data, chunks=(500, 5)))
    np.testing.assert_allclose(fast.means_, exact.means_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.lower_bound_, exact.lower_bound_, rtol=1e-5)
    labels = fast.predict(da.from_array(data, chunks=(500, 5)))
    assert isinstance(labels, da.Array)
    assert np.mean(labels.compute() == exact.predict(data)) > 0.999


def test_local_cluster_with_worker_processes_matches_threads(data, local_cluster):
    from distributed import Client, get_task_stream

    threaded = BayesianDiagGMM(n_components=5, random_state=0, max_iter=10, tol=0).fit(data)
    with Client(local_cluster) as client:
        chunks = da.from_array(data, chunks=(700, 5)).persist()
        clustered = BayesianDiagGMM(n_components=5, random_state=0, max_iter=10, tol=0)
        with get_task_stream(client) as tasks:
            clustered.fit(chunks)
        # the passes really ran on both worker processes
        assert len({task["worker"] for task in tasks.data}) == 2
        np.testing.assert_array_equal(clustered.predict(chunks).compute(), threaded.predict(data))
    _assert_same_posterior(clustered, threaded, rtol=1e-12)


@parametrize_with_checks([BayesianDiagGMM(n_components=2)])
def test_scikit_learn_estimator_check(estimator, check):
    check(estimator)


def test_a_zarr_store_and_an_xarray_input_fit_as_numpy_does(tmp_path):
    import xarray as xr
    import zarr

    X, _ = mixture_data(1200, 3, 3, seed=9)
    store = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(250, 3), dtype="f8")
    store[:] = X
    in_memory = _warm_model(X).fit(X)
    from_store = _warm_model(X).fit(str(tmp_path / "x.zarr"))
    _assert_same_posterior(from_store, in_memory, rtol=1e-12)
    grid = xr.DataArray(X.reshape(30, 40, 3), dims=("y", "x", "band"))
    gridded = _warm_model(X).fit(grid, feature_dim="band")
    _assert_same_posterior(gridded, in_memory, rtol=1e-12)
    labels = gridded.predict(grid)
    assert labels.dims == ("y", "x")
    np.testing.assert_array_equal(labels.values.ravel(), in_memory.predict(X))
