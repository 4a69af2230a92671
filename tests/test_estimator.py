"""The estimator's API and behavior: inputs, outputs, initialization, safety rails."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import mixture_data, start_values
from sklearn.base import clone
from sklearn.mixture import GaussianMixture

from diaggmm_dist import DiagGMM, ReseededComponentWarning, engine, seeding


@pytest.fixture(scope="module")
def blobs():
    return mixture_data(4000, 3, 3, seed=5)


def _same_fit(a, b, rtol=1e-10):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol)


def test_every_input_kind_gives_the_same_model(blobs, tmp_path):
    X, _ = blobs
    store = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(500, 3), dtype="f8")
    store[:] = X
    reference = DiagGMM(3, random_state=0, tol=0, max_iter=10).fit(X)
    for data in (
        X.tolist(),
        da.from_array(X, chunks=(900, 3)),
        store,
        str(tmp_path / "x.zarr"),
        da.from_zarr(str(tmp_path / "x.zarr")),
    ):
        _same_fit(DiagGMM(3, random_state=0, tol=0, max_iter=10).fit(data), reference)


def test_integer_and_float32_input_are_accepted(blobs):
    X, _ = blobs
    integers = np.round(X * 10).astype(np.int32)
    from_int = DiagGMM(3, random_state=0, tol=0, max_iter=5).fit(integers)
    from_float = DiagGMM(3, random_state=0, tol=0, max_iter=5).fit(integers.astype(np.float64))
    _same_fit(from_int, from_float)
    fast = DiagGMM(3, random_state=0, dtype="float32").fit(X.astype(np.float32))
    assert fast.means_.dtype == np.float64  # parameters are float64 whatever the compute dtype


def test_predictions_are_numpy_for_numpy_and_lazy_for_dask(blobs):
    X, _ = blobs
    gmm = DiagGMM(3, random_state=0).fit(X)
    lazy = da.from_array(X, chunks=(700, 3))
    for method in ("predict", "predict_proba", "score_samples"):
        eager = getattr(gmm, method)(X)
        result = getattr(gmm, method)(lazy)
        assert isinstance(eager, np.ndarray)
        assert isinstance(result, da.Array)
        assert result.chunks[0] == lazy.chunks[0]
        np.testing.assert_allclose(result.compute(), eager, rtol=1e-12)
    np.testing.assert_allclose(gmm.predict_proba(X).sum(axis=1), 1.0, rtol=1e-12)
    assert gmm.score(lazy) == pytest.approx(gmm.score_samples(X).mean(), rel=1e-12)
    np.testing.assert_array_equal(gmm.fit_predict(X), gmm.predict(X))


def test_lazy_rows_with_nan_are_labelled_minus_one(blobs):
    X, _ = blobs
    gmm = DiagGMM(3, random_state=0).fit(X)
    holes = X.copy()
    holes[[3, 10]] = np.nan
    labels = gmm.predict(da.from_array(holes, chunks=(1000, 3))).compute()
    assert labels[3] == labels[10] == -1
    np.testing.assert_array_equal(np.delete(labels, [3, 10]), np.delete(gmm.predict(X), [3, 10]))


def test_sklearn_parameter_api(blobs):
    X, _ = blobs
    gmm = DiagGMM(4, tol=1e-4, random_state=3, dtype="float32")
    params = gmm.get_params()
    assert params["n_components"] == 4 and params["dtype"] == "float32" and params["tol"] == 1e-4
    copy = clone(gmm).set_params(n_components=2)
    assert copy.n_components == 2 and gmm.n_components == 4
    copy.fit(X)
    assert copy.means_.shape == (2, 3) and copy.n_features_in_ == 3
    assert copy.precisions_cholesky_.shape == (2, 3)
    np.testing.assert_allclose(copy.precisions_, 1 / copy.covariances_)
    assert len(copy.lower_bounds_) == copy.n_iter_


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_is_reproducible_and_chunking_independent(blobs, init_params):
    X, _ = blobs
    first = DiagGMM(3, init_params=init_params, random_state=42, max_iter=3, tol=0).fit(X)
    again = DiagGMM(
        3, init_params=init_params, random_state=42, max_iter=3, tol=0, chunk_size=123
    ).fit(X)
    _same_fit(first, again)
    other_seed = DiagGMM(3, init_params=init_params, random_state=43, max_iter=3, tol=0).fit(X)
    assert not np.allclose(other_seed.means_, first.means_)


def test_kmeans_init_reaches_the_same_optimum_as_sklearn(blobs):
    from sklearn.mixture import GaussianMixture

    X, truth = blobs
    ours = DiagGMM(3, random_state=0, tol=1e-6).fit(X)
    ref = GaussianMixture(3, covariance_type="diag", random_state=0, tol=1e-6).fit(X)
    assert ours.converged_
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-6)
    order = np.argsort(ours.means_[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(ours.means_[order[0]], ref.means_[order[1]], rtol=1e-4)


def test_kmeans_init_reads_a_bounded_sample_and_few_passes(blobs, monkeypatch):
    X, _ = blobs
    taken, passes = [], []
    take, run_pass = engine.take_rows, engine.pass_statistics
    monkeypatch.setattr(seeding, "SAMPLE_ROWS", 500)
    monkeypatch.setattr(
        engine, "take_rows", lambda data, rows: taken.append(len(rows)) or take(data, rows)
    )
    monkeypatch.setattr(
        engine, "pass_statistics", lambda *a, **k: passes.append(a[1][0]) or run_pass(*a, **k)
    )
    DiagGMM(3, random_state=0, max_iter=4, tol=0).fit(X)
    assert (
        sorted(taken)[-1] == 500 and sum(taken) <= 500 + 16
    )  # the sample, and the fingerprint's rows
    assert 1 <= passes.count("nearest") <= seeding.LLOYD_PASSES
    assert passes.count("gaussian") == 4


def test_one_read_of_each_chunk_per_iteration(blobs):
    X, _ = blobs
    reads = np.zeros(8, dtype=int)
    lock = threading.Lock()

    def load(block_id):
        with lock:
            reads[block_id] += 1
        return X[block_id * 500 : (block_id + 1) * 500]

    data = da.concatenate(
        [da.from_delayed(dask.delayed(load)(i), shape=(500, 3), dtype=X.dtype) for i in range(8)]
    )
    w0, m0, p0 = start_values(X, 3)
    gmm = DiagGMM(3, weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=6).fit(
        data
    )
    assert gmm.n_iter_ == 6
    # six passes, plus at most four chunks read once for the data fingerprint
    assert set(reads - 6) <= {0, 1} and np.sum(reads - 6) <= 4


def test_warm_start_continues_where_it_stopped(blobs):
    X, _ = blobs
    w0, m0, p0 = start_values(X, 3, seed=1)
    settings = dict(weights_init=w0, means_init=m0, precisions_init=p0, tol=0)
    straight = DiagGMM(3, max_iter=10, **settings).fit(X)
    stepped = DiagGMM(3, max_iter=5, warm_start=True, **settings).fit(X).fit(X)
    _same_fit(stepped, straight, rtol=1e-12)


def test_more_restarts_never_do_worse(blobs):
    X, _ = blobs
    one = DiagGMM(5, random_state=0, init_params="random_from_data").fit(X)
    many = DiagGMM(5, random_state=0, init_params="random_from_data", n_init=4).fit(X)
    # restart 0 is the single fit, up to the rounding of the (larger) stacked products: here
    # it ends 1 ulp below it, so a plain ``>=`` held only because restart 3 won
    np.testing.assert_allclose(many.lower_bounds_per_init_[0], one.lower_bounds_, rtol=1e-12)
    finals = [bounds[-1] for bounds in many.lower_bounds_per_init_]
    assert (
        many.best_init_ == int(np.argmax(finals)) and many.lower_bound_ == finals[many.best_init_]
    )
    assert many.lower_bound_ >= one.lower_bound_ - 1e-12 * abs(one.lower_bound_)


def test_max_iter_zero_returns_the_initial_parameters(blobs):
    X, _ = blobs
    w0, m0, p0 = start_values(X, 3)
    gmm = DiagGMM(3, weights_init=w0, means_init=m0, precisions_init=p0, max_iter=0).fit(X)
    assert gmm.n_iter_ == 0
    np.testing.assert_array_equal(gmm.means_, m0)
    np.testing.assert_allclose(gmm.precisions_, p0)


def test_a_component_that_loses_all_its_mass_is_reseeded_by_splitting(blobs):
    X, _ = blobs
    w0, m0, p0 = start_values(X, 4)
    m0[3] = 1e4  # nowhere near the data: no responsibility at all in the first E-step
    with pytest.warns(ReseededComponentWarning, match="split"):
        gmm = DiagGMM(
            4, weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=30
        ).fit(X)
    assert gmm.n_reseeded_ >= 1
    assert np.all(np.isfinite(gmm.means_)) and np.all(gmm.covariances_ > 0)
    assert np.all(np.abs(gmm.means_) < 100)
    assert gmm.weights_.min() * X.shape[0] > 10  # the re-seeded component holds real mass again


def test_variances_never_reach_zero_on_duplicated_points():
    rng = np.random.default_rng(0)
    X = np.vstack([np.tile([[5.0, -3.0]], (200, 1)), rng.standard_normal((800, 2))])
    # reg_covar=0: a component on the 200 identical rows has no variance; scikit-learn
    # raises, and so does DiagGMM (it once returned the floored model, "converged")
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(2, covariance_type="diag", reg_covar=0.0, random_state=0).fit(X)
    with pytest.raises(
        ValueError, match=r"ill-defined empirical covariance.*component\(s\) \[\d\] collapsed"
    ):
        DiagGMM(2, reg_covar=0.0, random_state=0, max_iter=50).fit(X)
    # any reg_covar > 0, however small: the floor at 1e-9 of each feature's variance holds
    gmm = DiagGMM(2, reg_covar=1e-15, random_state=0, max_iter=50).fit(X)
    np.testing.assert_allclose(
        gmm.covariances_.min(axis=0), 1e-9 * X.var(axis=0), rtol=1e-6
    )  # at the floor
    assert np.all(np.isfinite(gmm.score_samples(X)))


def test_sample_draws_from_the_mixture(blobs):
    X, _ = blobs
    gmm = DiagGMM(3, random_state=0).fit(X)
    rows, labels = gmm.sample(30000)
    assert rows.shape == (30000, 3) and labels.shape == (30000,)
    np.testing.assert_allclose(np.bincount(labels) / 30000, gmm.weights_, atol=0.02)
    for k in range(3):
        np.testing.assert_allclose(rows[labels == k].mean(axis=0), gmm.means_[k], atol=0.1)
    again, _ = gmm.sample(30000)
    np.testing.assert_array_equal(again, rows)


def test_verbose_prints_progress(blobs, capsys):
    X, _ = blobs
    DiagGMM(3, random_state=0, verbose=2, verbose_interval=1, max_iter=3, tol=0).fit(X)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 3" in out and "ll change" in out


def test_restarts_with_max_iter_zero_keep_the_first_initialization(blobs):
    X, _ = blobs
    first = DiagGMM(3, random_state=0, max_iter=0).fit(X)
    several = DiagGMM(3, random_state=0, max_iter=0, n_init=3).fit(X)
    assert several.n_iter_ == 0 and several.lower_bounds_ == []
    # To the last bit or so: the restarts' products are one matrix product for all of them,
    # and BLAS may round a row differently when the matrix around it has more rows.
    np.testing.assert_allclose(several.means_, first.means_, rtol=1e-13, atol=0)
