"""Bad input: every case fails with a clear ``TypeError``/``ValueError`` before any work starts.

Most tests run under the ``no_data_pass`` fixture, which replaces the engine's data-reading
functions (``pass_statistics``, ``take_rows``, ``count_nonfinite`` and ``compute``) with
functions that fail the test if called: the error must come from the checks, not from a
chunk kernel halfway through a fit. The only exceptions are the cases that can only be
found by reading the data (NaN in lazy input, a feature that turns out to be constant).
"""

import copy
import re

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.exceptions import NotFittedError

from diaggmm_dist import DiagGMM, engine

N_ROWS, N_FEATURES, K = 40, 3, 2


def make_data(n=N_ROWS, d=N_FEATURES, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.fixture(scope="module")
def fitted():
    """A model fitted on clean (N_ROWS, N_FEATURES) data, before any spy is installed."""
    return DiagGMM(K, random_state=0, max_iter=5).fit(make_data())


@pytest.fixture
def no_data_pass(monkeypatch):
    """Make every engine function that reads data fail the test; yields the names called."""
    called = []

    def refuse(name):
        def fail(*args, **kwargs):
            called.append(name)
            raise AssertionError(
                f"engine.{name} was called: work started before the input was checked"
            )

        return fail

    for name in ("pass_statistics", "take_rows", "count_nonfinite", "compute"):
        monkeypatch.setattr(engine, name, refuse(name))
    yield called
    assert called == [], f"data was read before the error: {called}"


def nonfinite_message(count):
    # scikit-learn's wording first ("Input X contains NaN"), then the count and what to do
    return (
        rf"Input X contains NaN or infinity: {count} value\(s\) are not finite\. DiagGMM needs "
        r"finite data"
    )


# ---------------------------------------------------------------- the spy itself
def test_the_spy_catches_a_data_pass(no_data_pass):
    # Guards the other tests: a valid fit does read the data (first the rows of its
    # fingerprint), so the spy would notice if one of the bad inputs below started work.
    with pytest.raises(AssertionError, match="engine.take_rows was called"):
        DiagGMM(K, init_params="random", random_state=0).fit(make_data())
    assert no_data_pass == ["take_rows"]
    no_data_pass.clear()


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_bad_means_init_shape_raises_before_any_data_pass(no_data_pass, as_dask):
    X = make_data()
    if as_dask:
        X = da.from_array(X, chunks=(10, N_FEATURES))
    with pytest.raises(
        ValueError,
        match=r"means_init must have shape \(2, 3\) \(n_components, n_features\).*got \(3, 3\)",
    ):
        DiagGMM(K, means_init=np.zeros((3, N_FEATURES))).fit(X)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_bad_n_components_raises_before_any_data_pass(no_data_pass, as_dask):
    X = make_data()
    if as_dask:
        X = da.from_array(X, chunks=(10, N_FEATURES))
    with pytest.raises(ValueError, match="n_components must be an integer >= 1, got 0"):
        DiagGMM(0).fit(X)
    with pytest.raises(
        ValueError, match=r"n_components=41 is larger than the number of samples \(40\)"
    ):
        DiagGMM(N_ROWS + 1).fit(X)


# ------------------------------------------------------------ NaN and infinity
def test_nan_in_numpy_input_is_counted(no_data_pass):
    X = make_data()
    X[1, 1] = X[5, 2] = np.nan
    with pytest.raises(ValueError, match=nonfinite_message(2) + ".*drop or impute"):
        DiagGMM(K).fit(X)


def test_inf_in_numpy_input_is_counted(no_data_pass):
    X = make_data().astype(np.float32)
    X[3, 0] = X[7, 1] = np.inf
    X[4, 0] = -np.inf
    with pytest.raises(ValueError, match=nonfinite_message(3)):
        DiagGMM(K).fit(X)


# The first pass multiplies the NaN through the E-step before it reports the count.
@pytest.mark.parametrize(
    "settings",
    [
        dict(init_params="kmeans"),
        dict(init_params="k-means++"),
        dict(init_params="random"),
        dict(init_params="random_from_data"),
        dict(means_init=make_data()[:K]),
        dict(
            means_init=make_data()[:K],
            weights_init=[0.5, 0.5],
            precisions_init=np.ones((K, N_FEATURES)),
        ),
    ],
    ids=["kmeans", "k-means++", "random", "random_from_data", "means_init", "all_inits"],
)
def test_nan_in_one_dask_chunk_is_counted_exactly_by_the_first_pass(monkeypatch, settings):
    X = make_data()
    X[25, 0] = X[27, 2] = np.nan
    X[29, 1] = -np.inf  # all three in the third of four chunks
    passes = []
    real_pass = engine.pass_statistics

    def spy(*args, **kwargs):
        passes.append(kwargs.get("count_nonfinite", False))
        return real_pass(*args, **kwargs)

    monkeypatch.setattr(engine, "pass_statistics", spy)
    with pytest.raises(ValueError, match=nonfinite_message(3)):
        DiagGMM(K, random_state=0, **settings).fit(da.from_array(X, chunks=(10, N_FEATURES)))
    # Found at the latest by the first full pass, which counts; no EM iteration ran.
    assert passes in ([], [True])


def test_nan_in_zarr_array_on_disk_is_counted(tmp_path):
    X = make_data()
    X[0, 0] = X[13, 1] = X[39, 2] = X[39, 0] = np.nan
    path = tmp_path / "nan.zarr"
    zarr.create_array(str(path), shape=X.shape, chunks=(10, N_FEATURES), dtype="f8")[:] = X
    with pytest.raises(ValueError, match=nonfinite_message(4)):
        DiagGMM(K, random_state=0).fit(str(path))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_predict_on_numpy_with_nan_is_refused(fitted, no_data_pass, method):
    X = make_data()
    X[2, 0] = X[6, 1] = np.nan
    with pytest.raises(ValueError, match=nonfinite_message(2)):
        getattr(fitted, method)(X)


# ------------------------------------------------------------------ data shape
def test_1d_input_is_refused_with_reshape_hint(fitted, no_data_pass):
    with pytest.raises(
        ValueError,
        match=r"Expected 2D array, got 1D array instead \(shape \(40,\)\)\. Reshape your data "
        r".*reshape\(-1, 1\)",
    ):
        DiagGMM(K).fit(make_data()[:, 0])
    with pytest.raises(ValueError, match="Expected 2D array.*Reshape your data"):
        fitted.predict(make_data()[0])


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_3d_input_is_refused(no_data_pass, as_dask):
    X = make_data().reshape(10, 4, N_FEATURES)
    if as_dask:
        X = da.from_array(X, chunks=(5, 4, N_FEATURES))
    with pytest.raises(
        ValueError,
        match=r"Expected 2D array, got 3D array instead \(shape \(10, 4, 3\)\)\. Flatten the "
        r"sample dimensions",
    ):
        DiagGMM(K).fit(X)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_zero_rows_is_refused(no_data_pass, as_dask):
    X = np.empty((0, N_FEATURES))
    if as_dask:
        X = da.from_array(X)
    with pytest.raises(
        ValueError,
        match=r"Found array with 0 sample\(s\) \(shape=\(0, 3\)\) while a minimum of 1 is "
        r"required: X has no rows",
    ):
        DiagGMM(1).fit(X)


def test_zero_features_is_refused(no_data_pass):
    with pytest.raises(
        ValueError,
        match=r"Found array with 0 feature\(s\) \(shape=\(5, 0\)\) while a minimum of 1 is "
        r"required: X has no features",
    ):
        DiagGMM(1).fit(np.empty((5, 0)))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_predict_with_other_number_of_features(fitted, no_data_pass, method, as_dask):
    X = make_data(d=2)
    if as_dask:
        X = da.from_array(X, chunks=(10, 2))
    with pytest.raises(
        ValueError, match="X has 2 features, but DiagGMM is expecting 3 features as input"
    ):
        getattr(fitted, method)(X)


def test_warm_start_with_other_number_of_features():
    model = DiagGMM(K, warm_start=True, random_state=0, max_iter=2).fit(make_data())
    with pytest.raises(
        ValueError, match="X has 4 features, but DiagGMM is expecting 3 features as input"
    ):
        model.fit(make_data(d=4))


@pytest.fixture(scope="module")
def streamed():
    """A model made by partial_fit on two batches, before any spy is installed."""
    return DiagGMM(K, random_state=0).partial_fit(make_data()).partial_fit(make_data(seed=1))


@pytest.mark.parametrize("which", ["fitted", "streamed"])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_partial_fit_batch_with_other_number_of_features(
    fitted, streamed, no_data_pass, which, as_dask
):
    model = copy.deepcopy({"fitted": fitted, "streamed": streamed}[which])
    X = make_data(d=5)
    if as_dask:
        X = da.from_array(X, chunks=(10, 5))
    with pytest.raises(
        ValueError, match="X has 5 features, but DiagGMM is expecting 3 features as input"
    ):
        model.partial_fit(X)
    assert getattr(model, "n_batches_seen_", 0) == (2 if which == "streamed" else 0)  # unchanged


def test_partial_fit_first_batch_needs_n_components_rows(no_data_pass):
    with pytest.raises(
        ValueError, match=r"n_components=2 is larger than the number of samples \(1\)"
    ):
        DiagGMM(K).partial_fit(make_data(n=1))


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(learning_decay=0.3), r"learning_decay must be a number in \(0.5, 1\] .* got 0.3"),
        (dict(learning_decay=2), r"learning_decay must be a number in \(0.5, 1\] .* got 2"),
        (dict(learning_offset=-0.5), "learning_offset must be a finite number >= 0, got -0.5"),
    ],
)
@pytest.mark.parametrize("which", ["unfitted", "streamed"])
def test_partial_fit_refuses_bad_step_sizes(streamed, no_data_pass, params, message, which):
    model = DiagGMM(K) if which == "unfitted" else copy.deepcopy(streamed)
    with pytest.raises(ValueError, match="DiagGMM: " + message):
        model.set_params(**params).partial_fit(make_data())


def test_partial_fit_batch_with_zero_weights(streamed, no_data_pass):
    with pytest.raises(ValueError, match="No row can be used: every sample weight is zero"):
        copy.deepcopy(streamed).partial_fit(make_data(), sample_weight=np.zeros(N_ROWS))


def test_dask_array_with_unknown_chunk_sizes(fitted, no_data_pass):
    X = da.from_array(make_data(), chunks=(10, N_FEATURES))
    X = X[X[:, 0] > -100]  # boolean indexing: row counts per chunk are unknown
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes\(\)"):
        DiagGMM(K).fit(X)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        fitted.predict(X)


# -------------------------------------------------------------------- data type
@pytest.mark.parametrize(
    "X",
    [
        np.array([["a", "b"], ["c", "d"]]),
        [["1.0", "2.0"], ["3.0", "4.0"]],
        np.array([[1.0, "b"], [2.0, None]], dtype=object),
        da.from_array(np.array([["a", "b"], ["c", "d"]], dtype=object), chunks=(1, 2)),
    ],
    ids=["str-array", "str-list", "object-array", "object-dask"],
)
def test_non_numeric_data_is_refused(no_data_pass, X):
    with pytest.raises(
        TypeError,
        match=r"Expected numeric \(integer or float\) data, got dtype .*convert the features to "
        r"numbers",
    ):
        DiagGMM(1).fit(X)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_complex_data_is_refused(no_data_pass, as_dask):
    X = make_data() + 1j
    if as_dask:
        X = da.from_array(X, chunks=(10, N_FEATURES))
    with pytest.raises(
        ValueError, match=r"Complex data not supported \(dtype complex128\): pass the real part"
    ):
        DiagGMM(K).fit(X)


def test_boolean_data_is_refused_as_non_numeric(no_data_pass):
    # Decision: bool is not silently cast to 0/1 (a Gaussian mixture of 0/1 features has
    # degenerate variances); the user is told to convert it explicitly.
    with pytest.raises(
        TypeError, match="Expected numeric .* got dtype bool: convert the features to numbers"
    ):
        DiagGMM(K).fit(make_data() > 0)


# ----------------------------------------------------------- estimator settings
@pytest.mark.parametrize(
    "params, error, message",
    [
        (dict(n_components=0), ValueError, "n_components must be an integer >= 1, got 0"),
        (dict(n_components=-1), ValueError, "n_components must be an integer >= 1, got -1"),
        (dict(n_components=2.5), ValueError, "n_components must be an integer >= 1, got 2.5"),
        (
            dict(reg_covar=-1e-6),
            ValueError,
            r"reg_covar must be a finite number >= 0 \(the default is 1e-6\), got -1e-06",
        ),
        (dict(reg_covar=np.nan), ValueError, "reg_covar must be a finite number >= 0"),
        (dict(tol=-1e-3), ValueError, "tol must be a finite number >= 0, got -0.001"),
        (
            dict(tol=10**400),
            ValueError,
            "tol must be a finite number >= 0, got 1000",
        ),  # beyond float64
        (dict(max_iter=-1), ValueError, "max_iter must be an integer >= 0, got -1"),
        (dict(n_init=0), ValueError, "n_init must be an integer >= 1, got 0"),
        (
            dict(init_params="kmeans++"),
            ValueError,
            r"init_params must be one of \('kmeans', 'k-means\+\+', 'random', 'random_from_data', "
            r"'split'\), got 'kmeans\+\+'",
        ),
        (dict(init_params=None), TypeError, "init_params must be one of .* got None"),
        (
            dict(dtype="float16"),
            ValueError,
            r"dtype must be one of \('float32', 'float64'\), got 'float16'",
        ),
        (dict(dtype="int64"), ValueError, "dtype must be one of .* got 'int64'"),
        (dict(dtype="fast"), ValueError, "dtype must be one of .* got 'fast'"),
        (dict(dtype=None), ValueError, "dtype must be one of .* got None"),
        (dict(chunk_size=0), ValueError, "chunk_size must be None or an integer >= 1, got 0"),
        (dict(chunk_size=-5), ValueError, "chunk_size must be None or an integer >= 1, got -5"),
        (
            dict(learning_decay=0.5),
            ValueError,
            r"learning_decay must be a number in \(0.5, 1\] \(so that the step "
            r"sizes of partial_fit sum to infinity and their squares do not\), got 0.5",
        ),
        (
            dict(learning_decay=1.5),
            ValueError,
            r"learning_decay must be a number in \(0.5, 1\] .* got 1.5",
        ),
        (
            dict(learning_decay=np.nan),
            ValueError,
            r"learning_decay must be a number in \(0.5, 1\] .* got nan",
        ),
        (
            dict(learning_decay="0.7"),
            ValueError,
            r"learning_decay must be a number in \(0.5, 1\] .* got '0.7'",
        ),
        (
            dict(learning_offset=-1),
            ValueError,
            "learning_offset must be a finite number >= 0, got -1",
        ),
        (
            dict(learning_offset=np.inf),
            ValueError,
            "learning_offset must be a finite number >= 0, got inf",
        ),
    ],
    ids=lambda v: None if isinstance(v, (dict, type)) else v[:24],
)
def test_bad_setting_is_refused(no_data_pass, params, error, message):
    with pytest.raises(error, match="DiagGMM: " + message):
        DiagGMM(**{"n_components": K, **params}).fit(make_data())


@pytest.mark.parametrize(
    "dtype", ["float32", np.float32, np.dtype("float32"), "float64", np.float64, float]
)
def test_dtype_spellings_are_accepted(dtype, monkeypatch):
    from diaggmm_dist import kernels

    # the compute dtype of every pass: the coefficients' (a random pass's: its last field)
    used, real = set(), kernels.chunk_statistics
    monkeypatch.setattr(
        kernels,
        "chunk_statistics",
        lambda x, responsibilities, *args, **kwargs: (
            used.add(
                np.dtype(responsibilities[-1])
                if responsibilities[0] == "random"
                else responsibilities[1].dtype
            )
            or real(x, responsibilities, *args, **kwargs)
        ),
    )
    model = DiagGMM(K, dtype=dtype, random_state=0, max_iter=2).fit(make_data())
    assert model.means_.shape == (K, N_FEATURES)
    assert used == {np.dtype(dtype)}  # every pass ran in the dtype asked for
    assert model.predict_proba(make_data()).dtype == np.dtype(dtype)


# ----------------------------------------------------------- initial parameters
@pytest.mark.parametrize(
    "params, error, message",
    [
        (
            dict(means_init=np.zeros((3, 3))),
            ValueError,
            r"means_init must have shape \(2, 3\) \(n_components, n_features\) for this data, got "
            r"\(3, 3\)",
        ),
        (
            dict(means_init=np.zeros((2, 2))),
            ValueError,
            r"means_init must have shape \(2, 3\).*got \(2, 2\)",
        ),
        (
            dict(means_init=[[0, 0, np.nan], [1, 1, 1]]),
            ValueError,
            r"means_init holds 1 NaN or infinite value\(s\)",
        ),
        (
            dict(means_init="centers"),
            TypeError,
            r"means_init must be a numeric array of shape \(2, 3\), got str",
        ),
        (
            dict(weights_init=[1 / 3] * 3),
            ValueError,
            r"weights_init must have shape \(2,\) \(n_components,\) for this data, got \(3,\)",
        ),
        (
            dict(weights_init=[[0.5, 0.5]]),
            ValueError,
            r"weights_init must have shape \(2,\).*got \(1, 2\)",
        ),
        (dict(weights_init=[0.3, 0.3]), ValueError, "weights_init must sum to 1, got 0.6"),
        (
            dict(weights_init=[-0.5, 1.5]),
            ValueError,
            r"weights_init must lie in \[0, 1\], got min -0.5 and max 1.5",
        ),
        (
            dict(precisions_init=[[1, 0, 1], [1, 1, 1]]),
            ValueError,
            r"precisions_init must be positive \(they are inverse variances\); "
            r"1 value\(s\) are <= 0",
        ),
        (
            dict(precisions_init=-np.ones((2, 3))),
            ValueError,
            r"precisions_init must be positive.*6 value\(s\) are <= 0",
        ),
        (
            dict(precisions_init=np.ones(2)),
            ValueError,
            r"precisions_init must have shape \(2, 3\) \(n_components, n_features\).*got \(2,\)",
        ),
        (
            dict(precisions_init=np.ones((2, 3, 3))),
            ValueError,
            r"precisions_init must have shape \(2, 3\).*got \(2, 3, 3\)",
        ),
    ],
    ids=lambda v: None if isinstance(v, (dict, type)) else v[:24],
)
def test_bad_initial_parameters_are_refused(no_data_pass, params, error, message):
    with pytest.raises(error, match=message):
        DiagGMM(K, **params).fit(make_data())


# ------------------------------------------------------------- unfitted model
@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "score_samples", "score", "bic", "aic"]
)
def test_unfitted_model_raises_not_fitted(no_data_pass, method):
    with pytest.raises(NotFittedError, match="This DiagGMM instance is not fitted yet"):
        getattr(DiagGMM(K), method)(make_data())


def test_unfitted_sample_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        DiagGMM(K).sample(3)


@pytest.mark.parametrize("n_samples", [0, -1, 2.0])
def test_sample_needs_a_positive_integer(fitted, n_samples):
    with pytest.raises(
        ValueError, match=re.escape(f"n_samples must be an integer >= 1, got {n_samples!r}")
    ):
        fitted.sample(n_samples)


# --------------------------------------------------------------- Zarr on disk
@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_missing_zarr_path_names_the_path(no_data_pass, tmp_path, as_path):
    path = tmp_path / "does-not-exist.zarr"
    with pytest.raises(FileNotFoundError, match=re.escape(f"No Zarr array found at {str(path)!r}")):
        DiagGMM(K).fit(path if as_path else str(path))


def test_zarr_group_path_names_the_arrays_inside(no_data_pass, tmp_path):
    path = tmp_path / "data.zarr"
    group = zarr.open_group(str(path), mode="w")
    for name in ("train", "test"):
        group.create_array(name, shape=(10, N_FEATURES), dtype="f8")
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{str(path)!r} is a Zarr group, not an array. It holds the arrays ['test', 'train']"
        ),
    ):
        DiagGMM(K).fit(str(path))


def test_zarr_group_object_names_the_arrays_inside(no_data_pass, tmp_path):
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    group.create_array("train", shape=(10, N_FEATURES), dtype="f8")
    with pytest.raises(
        ValueError,
        match=r"Got a Zarr group .*, not an array\. It holds the arrays \['train'\]; pass e\.g\. "
        r"group\['train'\]",
    ):
        DiagGMM(K).fit(group)


# ------------------------------------------------- found only by reading the data
@pytest.mark.parametrize(
    "init_params", ["kmeans", "k-means++", "random", "random_from_data", "split"]
)
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_reg_covar_zero_with_constant_feature(init_params, as_dask):
    X = make_data()
    X[:, 1] = 5.0
    if as_dask:
        X = da.from_array(X, chunks=(10, N_FEATURES))
    with pytest.raises(
        ValueError, match=r"Feature\(s\) \[1\] are constant .* reg_covar=0 .*set reg_covar > 0"
    ):
        DiagGMM(K, reg_covar=0, init_params=init_params, random_state=0).fit(X)


@pytest.mark.filterwarnings("ignore::diaggmm_dist.mstep.ReseededComponentWarning")
def test_reg_covar_zero_with_constant_feature_float32():
    X = make_data()
    X[:, 1] = 0.1  # not exact in float32
    with pytest.raises(ValueError, match="reg_covar"):
        DiagGMM(
            K, reg_covar=0, init_params="random", random_state=0, dtype="float32", max_iter=10
        ).fit(X)
