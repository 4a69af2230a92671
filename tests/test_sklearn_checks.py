"""scikit-learn compatibility, verified by scikit-learn: its estimator checks, and what they stand
for.

``parametrize_with_checks`` runs every check the installed scikit-learn has for this estimator
(48 in 1.9), none marked as an expected failure, on five instances: the default
initialization, the three others whose weighted fit equals the fit of the repeated rows
(see :mod:`diaggmm_dist.initialization`; ``init_params="random"`` draws per row index, so a
weighted row and its repeated copies get different random responsibilities: equal in
expectation only, and it is not among them), and missing="marginalize", whose tags allow
NaN. The tests after it pin what the checks only
sample: the error wording for every form of input, sparse input, weights in the
initialization, ``covariance_type``, and ``reg_covar=0`` on collapsed components.
"""

import os
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.sparse
from sklearn.mixture import GaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

from diaggmm_dist import DiagGMM, initialization, seeding
from diaggmm_dist.data_pass import DataPass
from diaggmm_dist.mstep import ILL_DEFINED_COVARIANCE

REPO = Path(__file__).resolve().parents[1]
CHECKED = [
    DiagGMM(n_components=2),
    DiagGMM(n_components=2, init_params="k-means++", n_init=2),
    DiagGMM(n_components=2, init_params="random_from_data"),
    DiagGMM(n_components=2, init_params="split"),
    DiagGMM(n_components=2, missing="marginalize"),  # NaN allowed (its tags say so), infinity not
]


@parametrize_with_checks(CHECKED)
def test_scikit_learn_estimator_check(estimator, check):
    check(estimator)


def test_the_tags_allow_nan_exactly_when_nan_is_a_missing_value():
    X = np.random.default_rng(0).standard_normal((40, 2))
    X[3, 1] = np.nan
    for missing in ("error", "drop", "marginalize"):
        allowed = DiagGMM(2).set_params(missing=missing).__sklearn_tags__().input_tags.allow_nan
        assert allowed == (missing != "error")
        if allowed:
            DiagGMM(2, missing=missing, random_state=0).fit(X)
        else:
            with pytest.raises(ValueError, match="Input X contains NaN"):
                DiagGMM(2, missing=missing).fit(X)


def test_the_array_api_check_runs_where_it_can():
    # check_array_api_input skips itself (above) unless SCIPY_ARRAY_API=1 was set before
    # scipy was imported: run it for every instance in a fresh interpreter that sets it, so
    # that no check is left unrun.
    code = (
        "import sys\n"
        "from sklearn.utils.estimator_checks import estimator_checks_generator\n"
        "from diaggmm_dist import DiagGMM\n"
        "ran = 0\n"
        "for text in sys.argv[1:]:\n"
        "    for estimator, check in estimator_checks_generator(eval(text), mark='skip'):\n"
        "        if getattr(check, 'func', check).__name__ == 'check_array_api_input':\n"
        "            check(estimator)\n"
        "            ran += 1\n"
        "print(ran)\n"
    )
    env = {
        **os.environ,
        "SCIPY_ARRAY_API": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, *map(repr, CHECKED)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == str(len(CHECKED))


# ------------------------------------------------------------------ sparse input
SPARSE = [
    scipy.sparse.csr_matrix,
    scipy.sparse.csr_array,
    scipy.sparse.coo_array,
    scipy.sparse.csc_matrix,
]


@pytest.mark.parametrize("container", SPARSE, ids=lambda c: c.__name__)
def test_sparse_input_is_refused_as_sparse(container):
    X = np.random.default_rng(0).uniform(size=(40, 3))
    X[X < 0.6] = 0
    sparse = container(X)
    message = (
        rf"Sparse data \({container.__name__}\) is not supported: DiagGMM reads dense rows\. "
        r".*toarray\(\)"
    )
    with pytest.raises(TypeError, match=message):
        DiagGMM(2).fit(sparse)
    with pytest.raises(TypeError, match=message):
        DiagGMM(2).partial_fit(sparse)
    fitted = DiagGMM(2, random_state=0).fit(X)
    for method in ("predict", "predict_proba", "score_samples", "score", "score_rows", "bic"):
        with pytest.raises(TypeError, match=message):
            getattr(fitted, method)(sparse)


# ---------------------------------------------------------------- other inputs
def test_select_n_components_refuses_sparse_input_too():
    from diaggmm_dist.selection import select_n_components

    with pytest.raises(TypeError, match=r"Sparse data \(csr_array\) is not supported"):
        select_n_components(scipy.sparse.csr_array(np.eye(20)), [1, 2])


def test_object_array_of_numbers_fits_as_float():
    X = np.random.default_rng(1).standard_normal((60, 3))
    as_float = DiagGMM(2, random_state=0).fit(X)
    as_object = DiagGMM(2, random_state=0).fit(X.astype(object))
    np.testing.assert_array_equal(as_object.means_, as_float.means_)
    np.testing.assert_array_equal(as_object.predict(X.astype(object)), as_float.predict(X))


def test_object_array_holding_a_non_number_says_which_value():
    X = np.random.default_rng(1).standard_normal((60, 3)).astype(object)
    X[0, 0] = {"foo": "bar"}
    # scikit-learn's check looks for numpy's message ("argument must be a string or ... number")
    with pytest.raises(
        TypeError,
        match=r"Expected numeric .* got dtype object holding a value that is not a "
        r"number \(float\(\) argument must be a string or a (real )?number, not 'dict'\)",
    ):
        DiagGMM(2).fit(X)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_shape_errors_use_scikit_learn_wording_for_every_input(as_dask):
    def form(X):
        return da.from_array(X, chunks=(max(1, X.shape[0]),) + X.shape[1:]) if as_dask else X

    with pytest.raises(
        ValueError,
        match=r"Found array with 0 feature\(s\) \(shape=\(12, 0\)\) while a minimum of 1 is "
        r"required",
    ):
        DiagGMM(1).fit(form(np.empty((12, 0))))
    with pytest.raises(
        ValueError,
        match=r"Found array with 0 sample\(s\) \(shape=\(0, 3\)\) while a minimum of 1 is required",
    ):
        DiagGMM(1).fit(form(np.empty((0, 3))))
    with pytest.raises(ValueError, match="Complex data not supported"):
        DiagGMM(1).fit(form(np.ones((10, 2)) + 1j))
    fitted = DiagGMM(1, random_state=0).fit(np.random.default_rng(0).uniform(size=(20, 3)))
    with pytest.raises(
        ValueError, match="Expected 2D array, got 1D array instead.*Reshape your data"
    ):
        fitted.predict(form(np.ones(3)))
    with pytest.raises(
        ValueError,
        match=r"X has 1 features, but DiagGMM is expecting 3 features as input: give the 3",
    ):
        fitted.score(form(np.ones((5, 1))))


@pytest.mark.parametrize("missing", ["error", "drop"])
def test_all_zero_weights_say_weight_and_zero(missing):
    X = np.random.default_rng(0).standard_normal((30, 2))
    with pytest.raises(
        ValueError,
        match=r"No row can be used: every (sample weight is zero|row has a sample weight of zero)",
    ):
        DiagGMM(2, missing=missing).fit(X, sample_weight=np.zeros(30))


# ------------------------------------------------------- weights in the initialization
def clusters(n_per=100, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(center, 1.0, (n_per, 3)) for center in (0.0, 4.0, 8.0)])


def assert_same_model(a, b, rtol=1e-9):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-12, err_msg=name
        )
    assert a.n_iter_ == b.n_iter_ and a.best_init_ == b.best_init_
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data", "split"])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_integer_weights_equal_repeated_rows_including_the_initialization(init_params, as_dask):
    # as scikit-learn's check_sample_weight_equivalence: the weighted rows shuffled, the
    # repeated ones not; several restarts and chunkings that differ, so that every draw of
    # the initialization must be a function of the weighted rows alone
    X = clusters()
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, X.shape[0])
    order = rng.permutation(X.shape[0])
    Xw, ww = X[order], w[order].astype(float)
    Xr = np.repeat(X, w, axis=0)
    if as_dask:
        Xw, ww, Xr = (
            da.from_array(Xw, chunks=(70, 3)),
            da.from_array(ww, chunks=70),
            da.from_array(Xr, chunks=(90, 3)),
        )
    settings = dict(
        init_params=init_params, n_init=3, random_state=0, tol=1e-8, max_iter=60, chunk_size=50
    )
    weighted = DiagGMM(4, **settings).fit(Xw, sample_weight=ww)
    repeated = DiagGMM(4, **settings).fit(Xr)
    assert_same_model(weighted, repeated)
    np.testing.assert_allclose(
        weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-7, atol=1e-12
    )


def test_the_initialization_of_weighted_rows_equals_that_of_repeated_rows():
    # the starting parameters themselves, not only the fit they lead to
    X = clusters(40)
    w = np.random.default_rng(2).integers(0, 4, X.shape[0])
    for init_params in ("kmeans", "k-means++", "random_from_data"):
        starts = []
        for data, weights in ((X, w.astype(float)), (np.repeat(X, w, axis=0), None)):
            array = da.from_array(data, chunks=(25, 3))
            weights = None if weights is None else da.from_array(weights, chunks=25)
            starts.append(
                initialization.initial_parameters(
                    array,
                    5,
                    init_params,
                    np.random.RandomState(0),
                    1e-6,
                    DataPass(array, "float64", weights=weights),
                )
            )
        for got, want in zip(*starts):
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=init_params)


@pytest.mark.parametrize(
    "init_params", ["kmeans", "k-means++", "random_from_data", "random", "split"]
)
def test_weights_of_one_change_nothing(init_params):
    X = clusters()
    plain = DiagGMM(3, init_params=init_params, random_state=0, max_iter=10).fit(X)
    ones = DiagGMM(3, init_params=init_params, random_state=0, max_iter=10).fit(
        X, sample_weight=np.ones(len(X))
    )
    assert_same_model(plain, ones, rtol=1e-12)


def test_zero_weight_rows_take_no_part_in_a_sampled_initialization(monkeypatch):
    # more rows than the sample: the sample is drawn by row, then weighted. Rows of weight 0
    # (here a far-away cluster) must not become starting centers.
    monkeypatch.setattr(seeding, "SAMPLE_ROWS", 120)
    rng = np.random.default_rng(3)
    X = np.vstack([clusters(200), rng.normal(50.0, 1.0, (300, 3))])
    w = np.r_[np.ones(600), np.zeros(300)]
    array = da.from_array(X, chunks=(100, 3))
    for init_params in ("kmeans", "k-means++", "random_from_data"):
        centers, shift, _, _ = seeding.starting_centers(
            array,
            [3, 3],
            init_params,
            np.random.RandomState(0),
            "error",
            None,
            1e-6,
            da.from_array(w, chunks=100),
        )
        for means in centers:
            assert np.all(means < 20), (init_params, means)  # none on the zero-weight cluster
        assert np.all(shift < 20)


def test_a_bad_lazy_weight_is_refused_before_the_initialization_uses_it():
    X = clusters()
    w = np.ones(len(X))
    w[[5, 250]] = [-1.0, np.nan]
    with pytest.raises(
        ValueError, match=r"sample_weight holds 2 negative, NaN or infinite value\(s\)"
    ):
        DiagGMM(3, random_state=0).fit(
            da.from_array(X, chunks=(50, 3)), sample_weight=da.from_array(w, chunks=50)
        )


# -------------------------------------------------------------- covariance_type
def test_covariance_type_is_a_parameter_and_an_attribute():
    model = DiagGMM(2)
    assert model.covariance_type == "diag" and model.get_params()["covariance_type"] == "diag"
    X = clusters(30)
    fitted = DiagGMM(2, covariance_type="diag", random_state=0).fit(X)
    assert fitted.covariance_type == "diag" and fitted.covariances_.shape == (2, 3)
    # code written for GaussianMixture reads it and branches on it
    assert (
        fitted.to_sklearn().covariance_type
        == DiagGMM.from_sklearn(fitted.to_sklearn()).covariance_type
        == "diag"
    )


@pytest.mark.parametrize(
    "value, error",
    [
        ("full", ValueError),
        ("spherical", ValueError),
        ("tied", ValueError),
        ("Diag", ValueError),
        (None, TypeError),
        (2, TypeError),
    ],
)
def test_other_covariance_types_are_refused_at_fit(value, error):
    model = DiagGMM(2, covariance_type=value)  # scikit-learn validates parameters at fit, not here
    with pytest.raises(
        error,
        match=r"DiagGMM: covariance_type must be 'diag': DiagGMM fits diagonal covariances "
        r"only \(use sklearn.mixture.GaussianMixture",
    ):
        model.fit(clusters(30))
    with pytest.raises(error, match="covariance_type must be 'diag'"):
        DiagGMM(2).set_params(covariance_type=value).partial_fit(clusters(30))


def test_covariance_type_survives_the_model_store(tmp_path):
    fitted = DiagGMM(2, random_state=0).fit(clusters(30))
    fitted.save(str(tmp_path / "model.zarr"))
    loaded = DiagGMM.load(str(tmp_path / "model.zarr"))
    assert loaded.covariance_type == "diag"
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.predict(clusters(30)), fitted.predict(clusters(30)))


# --------------------------------------------------------------- reg_covar = 0
def saturated():
    """A blob of 300 rows and one point repeated 100 times (a saturated sensor, say)."""
    return np.vstack([np.random.default_rng(0).standard_normal((300, 5)), np.full((100, 5), 10.0)])


COLLAPSE = [
    dict(),  # k-means puts a center on the repeated point: the initialization collapses
    dict(
        weights_init=[0.75, 0.25],
        means_init=[np.zeros(5), np.full(5, 9.0)],
        precisions_init=np.ones((2, 5)),
    ),
]


@pytest.mark.parametrize("start", COLLAPSE, ids=["kmeans", "collapses-during-em"])
def test_reg_covar_zero_on_a_collapsed_component_raises_as_scikit_learn_does(start):
    X = saturated()
    # the oracle refuses it ...
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(2, covariance_type="diag", reg_covar=0, random_state=0, **start).fit(X)
    # ... and so does DiagGMM (it returned a "converged" model scoring +38 nats per repeated row)
    message = (
        ILL_DEFINED_COVARIANCE.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
        + r" With reg_covar=0, component\(s\) \[1\] collapsed onto too few distinct points: their "
        r"variance "
        r"of feature\(s\) \[0, 1, 2, 3, 4\] is zero .* Set reg_covar > 0"
    )
    with pytest.raises(ValueError, match=message):
        DiagGMM(2, reg_covar=0, random_state=0, **start).fit(X)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        DiagGMM(2, reg_covar=0, random_state=0, **start).partial_fit(X)


def test_reg_covar_zero_on_a_constant_feature_keeps_its_own_guidance():
    X = saturated()
    X[:, 2] = 3.0
    with pytest.raises(
        ValueError, match=r"ill-defined empirical covariance.* Feature\(s\) \[2\] are constant"
    ):
        DiagGMM(2, reg_covar=0, random_state=0).fit(X)


def test_reg_covar_zero_on_well_spread_data_still_matches_scikit_learn():
    # the error is for collapsed components only: spread data fits as scikit-learn fits it
    X = clusters()
    start = dict(
        weights_init=[1 / 3] * 3, means_init=X[[0, 150, 299]], precisions_init=np.ones((3, 3))
    )
    ours = DiagGMM(3, reg_covar=0, tol=1e-6, **start).fit(X)
    ref = GaussianMixture(3, covariance_type="diag", reg_covar=0, tol=1e-6, **start).fit(X)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-10)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-10)


def test_the_default_reg_covar_fits_the_saturated_data():
    gmm = DiagGMM(2, random_state=0).fit(saturated())
    assert np.all(gmm.covariances_ >= 1e-6) and np.isfinite(gmm.score(saturated()))


def test_the_weighted_sample_is_canonical_exactly_when_it_must_be():
    X = np.random.default_rng(4).standard_normal((50, 3))
    ones = np.ones(50)
    # distinct rows of weight 1 keep their order (unweighted data samples as it always did),
    # also when their first values tie
    for data in (X, np.column_stack([np.round(X[:, 0]), X[:, 1:]])):
        rows, weights = seeding.distinct_weighted_rows(data, ones)
        np.testing.assert_array_equal(rows, data)
        np.testing.assert_array_equal(weights, ones)
    # identical rows, or weights other than 1: sorted distinct rows with summed weights,
    # whatever the order and however a weight is spelt; rows of weight 0 are gone
    doubled = np.vstack([X, X[:5]])
    spellings = [
        (doubled, np.ones(55)),
        (doubled[::-1], np.ones(55)),
        (X, np.r_[np.full(5, 2.0), ones[5:]]),
        (np.vstack([X, X[7:9]]), np.r_[np.full(5, 2.0), ones[5:], 0.0, 0.0]),
    ]
    results = [seeding.distinct_weighted_rows(data, w) for data, w in spellings]
    for rows, weights in results:
        np.testing.assert_array_equal(rows, results[0][0])
        np.testing.assert_array_equal(weights, results[0][1])
    assert results[0][0].shape == (50, 3) and results[0][1].sum() == 55
    assert np.all(np.diff(results[0][0][:, 0]) >= 0)  # sorted by the first feature


def test_sample_weights_are_read_by_flat_row_index():
    # the sample's weights are read with the rows' flat indices, for N-D sample axes too
    w = da.from_array(np.arange(24.0).reshape(4, 6), chunks=(2, 3))
    assert seeding._weights_of_rows(w, np.array([0, 7, 23])).tolist() == [0.0, 7.0, 23.0]
    flat = da.from_array(np.arange(24.0), chunks=5)
    assert seeding._weights_of_rows(flat, np.array([0, 7, 23])).tolist() == [0.0, 7.0, 23.0]
