"""Inputs that are valid but unusual (issue 19, section 2).

Big-endian data (numpy ``>f8``/``>f4``, dask arrays of them, Zarr v2 stores of dtype ``>f8``,
Zarr v3 stores with the ``bytes`` codec's ``endian="big"``, NetCDF-classic files, xarray
objects) fits, predicts and scores exactly as the same values in this machine's byte order:
the kernels convert each sub-block (or each block of rows to score) to native order and then
run the same code, so the results are equal to the bit, in float64 and in float32.

Data far from the origin in float32: the kernels subtract the float64 shift from the rows
before rounding them to float32 (and the first pass of ``init_params="random"`` and
``"split"`` shifts by the first rows' mean), so a float32 fit of float64 data offset by up to
1e8 standard deviations agrees with the float64 fit to 1e-5 of each feature's spread.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import BytesCodec

from diaggmm_dist import compiled, inputs, kernels
from diaggmm_dist.mixture import DiagGMM

N_ROWS, CHUNK = 1_500, 250
FEATURES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def clusters():
    """Three clusters in three features, float64."""
    rng = np.random.default_rng(19)
    centers = np.array([[0.0, 0.0, 0.0], [4.0, -3.0, 1.0], [-2.0, 5.0, 6.0]])
    return rng.normal(size=(N_ROWS, 3)) * [1.0, 0.5, 2.0] + centers[rng.integers(3, size=N_ROWS)]


def _numpy(value):
    value = value.compute() if hasattr(value, "compute") else value
    return np.asarray(value)


def _everything(model, X):
    """Every fitted parameter and every per-row result of ``model`` on ``X``, as numpy."""
    labels, max_resp, log_likelihood = model.score_rows(X)
    return {
        "weights": model.weights_,
        "means": model.means_,
        "covariances": model.covariances_,
        "lower_bounds": np.array(model.lower_bounds_),
        "n_iter": np.array(model.n_iter_),
        "predict": _numpy(model.predict(X)),
        "predict_proba": _numpy(model.predict_proba(X)),
        "score_samples": _numpy(model.score_samples(X)),
        "score": np.array(model.score(X)),
        "score_rows.labels": _numpy(labels),
        "score_rows.max_resp": _numpy(max_resp),
        "score_rows.log_likelihood": _numpy(log_likelihood),
    }


def _fit_everything(X, dtype, **fit_args):
    model = DiagGMM(3, random_state=0, dtype=dtype, chunk_size=CHUNK, max_iter=30, tol=1e-8)
    return _everything(model.fit(X, **fit_args), X)


def _assert_bit_identical(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


# ------------------------------------------------------------------ big-endian: the sources
def _numpy_pair(X, tmp_path, itemsize):
    return X.astype(f"<f{itemsize}"), X.astype(f">f{itemsize}"), {}


def _dask_pair(X, tmp_path, itemsize):
    native, big, _ = _numpy_pair(X, tmp_path, itemsize)
    return da.from_array(native, chunks=(CHUNK, 3)), da.from_array(big, chunks=(CHUNK, 3)), {}


def _zarr_v2_pair(X, tmp_path, itemsize):
    paths = []
    for order in "<>":
        path = str(tmp_path / f"v2{order == '>' and '-big' or ''}.zarr")
        array = zarr.create_array(
            path, shape=X.shape, chunks=(CHUNK, 3), dtype=f"{order}f{itemsize}", zarr_format=2
        )
        array[:] = X
        paths.append(path)
    assert zarr.open_array(paths[1], mode="r").dtype == np.dtype(
        f">f{itemsize}"
    )  # really stored big-endian
    return paths[0], paths[1], {}


def _zarr_v3_pair(X, tmp_path, itemsize):
    paths = []
    for endian in ("little", "big"):
        path = tmp_path / f"v3-{endian}.zarr"
        array = zarr.create_array(
            str(path),
            shape=X.shape,
            chunks=(CHUNK, 3),
            dtype=f"f{itemsize}",
            serializer=BytesCodec(endian=endian),
            compressors=None,
        )
        array[:] = X
        paths.append(str(path))
    # really stored big-endian: the first chunk's file is the big-endian bytes of its values
    first_chunk = (tmp_path / "v3-big.zarr" / "c" / "0" / "0").read_bytes()
    assert first_chunk == X[:CHUNK].astype(f">f{itemsize}").tobytes()
    return paths[0], paths[1], {}


def _dataset(X, dtype):
    return xr.Dataset(
        {name: (("row",), X[:, j].astype(dtype)) for j, name in enumerate(FEATURES)},
        coords={"row": np.arange(len(X))},
    )


def _netcdf_pair(X, tmp_path, itemsize):
    path = tmp_path / "classic.nc"
    _dataset(X, f"f{itemsize}").to_netcdf(path, format="NETCDF3_CLASSIC", engine="scipy")
    raw = path.read_bytes()
    assert (
        raw[:4] == b"CDF\x01" and X[:, 0].astype(f">f{itemsize}").tobytes() in raw
    )  # big-endian on disk
    # the file is read in one chunk (open_gridded: chunks={}); the native twin is chunked alike
    native = _dataset(X, f"<f{itemsize}").chunk({"row": -1})
    return native, str(path), {"features": FEATURES}


def _dataset_pair(X, tmp_path, itemsize):
    return _dataset(X, f"<f{itemsize}"), _dataset(X, f">f{itemsize}"), {"features": FEATURES}


def _dataarray_pair(X, tmp_path, itemsize):
    native, big = (
        xr.DataArray(
            X.astype(f"{order}f{itemsize}"), dims=("row", "feature"), coords={"feature": FEATURES}
        )
        for order in "<>"
    )
    return native, big, {}


SOURCES = {
    "numpy": _numpy_pair,
    "dask": _dask_pair,
    "zarr_v2": _zarr_v2_pair,
    "zarr_v3": _zarr_v3_pair,
    "netcdf_classic": _netcdf_pair,
    "xarray_dataset": _dataset_pair,
    "xarray_dataarray": _dataarray_pair,
}
#: Sources whose big-endian values reach the kernels as they are; zarr's bytes codec (v3),
#: xarray's NetCDF reader and a Dataset's stacking of its variables give native order already.
REACH_THE_KERNELS_BIG_ENDIAN = {"numpy", "dask", "zarr_v2", "xarray_dataarray"}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("itemsize", [8, 4], ids=["f8", "f4"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_big_endian_data_gives_the_results_of_the_same_values_in_native_order(
    clusters, tmp_path, source, itemsize, dtype
):
    # Equal to the bit: each sub-block is converted to native order, then the same kernels
    # run on the same values in the same chunks (float64 and float32 compute alike).
    native, big, fit_args = SOURCES[source](clusters, tmp_path, itemsize)
    stored = inputs.as_samples(big, **fit_args).array.dtype
    assert stored.isnative == (source not in REACH_THE_KERNELS_BIG_ENDIAN), stored
    want = _fit_everything(native, dtype, **fit_args)
    got = _fit_everything(big, dtype, **fit_args)
    _assert_bit_identical(got, want)
    # and the fit is a real one: the three clusters are found
    assert np.sort(np.round(got["means"][:, 0])).tolist() == [-2.0, 0.0, 4.0]


def test_big_endian_with_missing_values_and_weights(clusters):
    X = clusters.copy()
    X[:300:7, 1] = np.nan  # in the first two chunks only: the others take the compiled path
    weights = np.random.default_rng(3).uniform(0.5, 2.0, len(X))
    for missing in ("marginalize", "drop"):
        native = DiagGMM(
            3, random_state=0, dtype="float32", chunk_size=CHUNK, missing=missing, max_iter=30
        )
        big = DiagGMM(
            3, random_state=0, dtype="float32", chunk_size=CHUNK, missing=missing, max_iter=30
        )
        want = _everything(native.fit(X, sample_weight=weights), X)
        got = _everything(
            big.fit(X.astype(">f8"), sample_weight=weights.astype(">f8")), X.astype(">f8")
        )
        _assert_bit_identical(got, want)


def test_lazy_big_endian_data_is_not_converted_up_front(clusters):
    # The engine reads the chunks as stored; the kernels convert one sub-block at a time.
    big = da.from_array(clusters.astype(">f8"), chunks=(CHUNK, 3))
    samples = inputs.as_samples(big)
    assert samples.array is big and samples.array.dtype == np.dtype(">f8")


def test_kernels_convert_big_endian_sub_blocks_and_leave_native_ones_alone(clusters):
    native = np.ascontiguousarray(clusters)
    assert kernels.native_order(native) is native
    big = native.astype(">f8")
    converted = kernels.native_order(big)
    assert converted.dtype.isnative and np.array_equal(converted, native)
    coef = kernels.log_prob_coefficients(
        np.full(3, 1 / 3), native[:3], np.ones((3, 3)), native.mean(axis=0), np.float32
    )
    for responsibilities in (("gaussian", coef), ("random", coef.shift, (3,), (5,), np.float32)):
        rows = np.arange(len(big))
        assert np.array_equal(
            kernels.chunk_statistics(big, responsibilities, rows=rows),
            kernels.chunk_statistics(native, responsibilities, rows=rows),
        )
    assert np.array_equal(kernels.row_summary(big, coef), kernels.row_summary(native, coef))
    # numba's loops take native arrays only, and say so
    with pytest.raises(TypeError, match="native byte order"):
        compiled.stacked_rows(big, coef.shift, np.empty((len(big), 6)))


# ------------------------------------------------------------------ float32 far from the origin
OFFSETS = [0.0, 1e3, 1e5, 1e7, 1e8]  # in standard deviations of each feature
#: The issue's bound: means and variances to 1e-5 of each feature's spread, lower bound 1e-5
#: relative.
TOLERANCE = 1e-5
SCALES = np.array([1.0, 3.0, 0.5, 2.0])


@pytest.fixture(scope="module")
def overlapping():
    """Three overlapping clusters (EM needs many iterations), features of different scales; and
    their centers.
    """
    rng = np.random.default_rng(7)
    centers = rng.normal(scale=1.5, size=(3, 4))
    X = (rng.normal(size=(20_000, 4)) + centers[rng.integers(3, size=20_000)]) * SCALES
    return X, centers * SCALES


def _relative_differences(fits, spread):
    """(means, variances, lower bound) differences between two fits, relative to the spread (or the
    bound).
    """
    single, double = fits
    return (
        np.max(np.abs(single.means_ - double.means_) / spread),
        np.max(np.abs(single.covariances_ - double.covariances_) / spread**2),
        abs(single.lower_bound_ - double.lower_bound_) / abs(double.lower_bound_),
    )


@pytest.mark.parametrize("offset", OFFSETS)
def test_float32_compute_far_from_the_origin_agrees_with_float64(overlapping, offset):
    X0, centers = overlapping
    spread = X0.std(axis=0)
    X = X0 + offset * spread
    # the same start and exactly ten iterations (tol=0) for both: only the compute dtype differs
    start = dict(
        weights_init=np.full(3, 1 / 3),
        means_init=centers + offset * spread,
        precisions_init=np.ones((3, 4)) / SCALES**2,
        tol=0.0,
        max_iter=10,
    )
    fits = [DiagGMM(3, dtype=dtype, **start).fit(X) for dtype in ("float32", "float64")]
    means, variances, bound = _relative_differences(fits, spread)
    # measured 2e-7 to 7e-7 for all offsets (before the float64 shift: 0.55 of a standard
    # deviation in the means at 1e7, and no fit at all at 1e8)
    assert means <= TOLERANCE and variances <= TOLERANCE and bound <= TOLERANCE, (
        means,
        variances,
        bound,
    )


@pytest.mark.parametrize(
    "init_params", ["kmeans", "k-means++", "random", "random_from_data", "split"]
)
def test_every_initialization_survives_an_offset_of_1e8_in_float32(overlapping, init_params):
    # The initialization's first pass has no model to take a shift from: k-means takes its
    # sample's mean, "random" and "split" the first rows' mean (both float64).
    X0, _ = overlapping
    spread = X0.std(axis=0)
    X = X0 + 1e8 * spread
    settings = dict(init_params=init_params, random_state=0, tol=0.0, max_iter=10)
    fits = [DiagGMM(3, dtype=dtype, **settings).fit(X) for dtype in ("float32", "float64")]
    means, variances, bound = _relative_differences(fits, spread)
    assert means <= TOLERANCE and variances <= TOLERANCE and bound <= TOLERANCE, (
        means,
        variances,
        bound,
    )


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e5, 1e6])
def test_float32_input_loses_only_its_own_rounding(overlapping, offset):
    # float32 data holds each value x to within half a unit in the last place, at most
    # |x| * 2**-24: at an offset of c standard deviations, c * 6e-8 of the spread. The fit on
    # it moves the means by at most that (measured 1% to 3% of it up to c = 1e5: the roundings
    # average out). Computing on it in float32 adds nothing beyond: it agrees with float64 compute
    # on the same values.
    X0, centers = overlapping
    spread = X0.std(axis=0)
    exact = X0 + offset * spread
    rounded = exact.astype(np.float32)
    start = dict(
        weights_init=np.full(3, 1 / 3),
        means_init=centers + offset * spread,
        precisions_init=np.ones((3, 4)) / SCALES**2,
        tol=0.0,
        max_iter=10,
    )
    on_rounded = [
        DiagGMM(3, dtype="float32", **start).fit(rounded),
        DiagGMM(3, dtype="float64", **start).fit(rounded.astype(np.float64)),
    ]
    means, variances, bound = _relative_differences(on_rounded, spread)
    assert means <= TOLERANCE and variances <= TOLERANCE and bound <= TOLERANCE, (
        means,
        variances,
        bound,
    )
    on_exact = DiagGMM(3, dtype="float64", **start).fit(exact)
    rounding = (
        np.abs(exact).max(axis=0) * 2.0**-24
    )  # per value, at most: half a unit in the last place
    assert np.all(np.abs(on_rounded[1].means_ - on_exact.means_) <= rounding)


@pytest.mark.parametrize("offset", OFFSETS)
def test_float32_scoring_far_from_the_origin_agrees_with_float64(overlapping, offset):
    # One model, scored in both precisions (before the float64 shift, a model of this data was
    # 0.96 nats per row off at 1e7 and 50 at 1e8, with 7,433 of 20,000 labels changed).
    X0, centers = overlapping
    spread = X0.std(axis=0)
    X = X0 + offset * spread
    start = dict(
        weights_init=np.full(3, 1 / 3),
        means_init=centers + offset * spread,
        precisions_init=np.ones((3, 4)) / SCALES**2,
        tol=0.0,
        max_iter=2,
    )
    double = DiagGMM(3, dtype="float64", **start).fit(X)
    single = DiagGMM.from_sklearn(double.to_sklearn(), dtype="float32")
    log_likelihood = double.score_samples(X)
    # measured at most 2.5e-6 nats per row, 6e-7 in the probabilities, for every offset
    assert np.max(np.abs(single.score_samples(X) - log_likelihood)) <= TOLERANCE * np.max(
        np.abs(log_likelihood)
    )
    proba = double.predict_proba(X)
    assert np.max(np.abs(single.predict_proba(X) - proba)) <= TOLERANCE
    top_two = np.sort(proba, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > TOLERANCE  # rows not at a tie between two components
    assert np.array_equal(single.predict(X)[clear], double.predict(X)[clear])
