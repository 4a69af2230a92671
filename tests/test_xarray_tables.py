"""xarray in and out, feature tables (pandas, dask, Parquet)."""

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import mixture_data

from diaggmm_dist import DiagGMM


@pytest.fixture(scope="module")
def cube():
    """A (time, y, x, band) cube of mixture rows, chunked over time, y and x."""
    X, truth = mixture_data(4 * 30 * 40, 3, 3, seed=31)
    values = X.reshape(4, 30, 40, 3)
    data = xr.DataArray(
        da.from_array(values, chunks=(1, 15, 20, 1)),
        dims=("time", "y", "x", "band"),
        coords={
            "time": pd.date_range("2026-01-01", periods=4, freq="MS"),
            "y": np.linspace(50, 20, 30),
            "x": np.linspace(-10, 30, 40),
            "band": ["red", "green", "nir"],
        },
        attrs={"title": "test cube"},
        name="reflectance",
    )
    return data, X, truth.reshape(4, 30, 40)


def test_dataarray_fit_equals_the_flat_fit(cube):
    data, X, _ = cube
    flat = DiagGMM(3, random_state=0, tol=0, max_iter=10).fit(X)
    gridded = DiagGMM(3, random_state=0, tol=0, max_iter=10).fit(data, feature_dim="band")
    np.testing.assert_allclose(gridded.means_, flat.means_, rtol=1e-10)
    np.testing.assert_allclose(gridded.lower_bounds_, flat.lower_bounds_, rtol=1e-10)
    assert list(gridded.feature_names_in_) == ["red", "green", "nir"]


def test_outputs_carry_the_coordinates_and_stay_lazy(cube, tmp_path):
    data, X, _ = cube
    gmm = DiagGMM(3, random_state=0).fit(data, feature_dim="band")
    labels = gmm.predict(data)
    assert isinstance(labels, xr.DataArray) and isinstance(labels.data, da.Array)
    assert labels.dims == ("time", "y", "x") and labels.dtype == np.int64  # as for numpy input
    assert labels.chunks == data.isel(band=0).chunks
    xr.testing.assert_equal(labels.x, data.x)
    assert "title" not in labels.attrs  # its own attributes, not the input's
    assert labels.attrs["flag_values"] == [-1, 0, 1, 2]
    np.testing.assert_array_equal(labels.values.reshape(-1), gmm.predict(X))
    proba = gmm.predict_proba(data)
    assert proba.dims == ("time", "y", "x", "component") and proba.sizes["component"] == 3
    np.testing.assert_allclose(proba.sum("component").values, 1.0)
    log_like = gmm.score_samples(data)
    np.testing.assert_allclose(log_like.values.reshape(-1), gmm.score_samples(X), rtol=1e-12)
    labels.to_dataset().to_zarr(tmp_path / "labels.zarr")  # chunk-aligned: no rechunking needed
    back = xr.open_zarr(tmp_path / "labels.zarr")
    np.testing.assert_array_equal(back.labels.values, labels.values)


def test_dataset_variables_are_the_features(cube):
    data, X, _ = cube
    dataset = data.to_dataset(dim="band")
    dataset["label_text"] = ("time", ["a", "b", "c", "d"])
    gmm = DiagGMM(3, random_state=0, tol=0, max_iter=5).fit(
        dataset, features=["red", "green", "nir"]
    )
    flat = DiagGMM(3, random_state=0, tol=0, max_iter=5).fit(X)
    np.testing.assert_allclose(gmm.means_, flat.means_, rtol=1e-10)
    assert gmm.predict(dataset).dims == ("time", "y", "x")
    with pytest.raises(TypeError, match="'label_text' has dtype"):
        DiagGMM(3).fit(dataset)
    with pytest.raises(ValueError, match=r"features \['blue'\] are not variables"):
        DiagGMM(3).fit(dataset, features=["red", "blue"])


def test_gridded_sample_weights(cube):
    data, X, _ = cube
    area = xr.DataArray(
        np.cos(np.deg2rad(data.y.values))[None, :, None] * np.ones((4, 1, 40)),
        dims=("time", "y", "x"),
    )
    gmm = DiagGMM(3, random_state=0, tol=0, max_iter=5).fit(
        data, feature_dim="band", sample_weight=area
    )
    flat = DiagGMM(3, random_state=0, tol=0, max_iter=5).fit(
        X, sample_weight=area.values.reshape(-1)
    )
    np.testing.assert_allclose(gmm.means_, flat.means_, rtol=1e-10)
    with pytest.raises(ValueError, match="sample dims"):
        DiagGMM(3).fit(data, feature_dim="band", sample_weight=area.isel(time=0))


def test_bad_xarray_input(cube):
    data, _, _ = cube
    with pytest.raises(ValueError, match=r"feature_dim='channel' is not a dimension.*'band'"):
        DiagGMM(3).fit(data, feature_dim="channel")
    with pytest.raises(ValueError, match="Give feature_dim"):
        DiagGMM(3).fit(data)
    gmm = DiagGMM(3, random_state=0).fit(data, feature_dim="band")
    renamed = data.assign_coords(band=["r", "g", "b"])
    with pytest.raises(ValueError, match="features differ from those seen in fit"):
        gmm.predict(renamed)


def test_tables_pandas_dask_and_parquet(tmp_path):
    import dask.dataframe as dd

    X, _ = mixture_data(3000, 3, 3, seed=32)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(name="row", flag=True)
    reference = DiagGMM(3, random_state=0, tol=0, max_iter=8).fit(X)
    from_pandas = DiagGMM(3, random_state=0, tol=0, max_iter=8).fit(frame, columns=["a", "b", "c"])
    np.testing.assert_allclose(from_pandas.means_, reference.means_, rtol=1e-10)
    assert list(from_pandas.feature_names_in_) == ["a", "b", "c"]
    numeric_only = DiagGMM(3, random_state=0, tol=0, max_iter=8).fit(frame[["a", "b", "c"]])
    np.testing.assert_allclose(numeric_only.means_, reference.means_, rtol=1e-10)
    lazy = dd.from_pandas(frame[["a", "b", "c"]], npartitions=4)
    np.testing.assert_allclose(
        DiagGMM(3, random_state=0, tol=0, max_iter=8).fit(lazy).means_, reference.means_, rtol=1e-10
    )
    path = tmp_path / "table.parquet"
    frame[["a", "b", "c"]].to_parquet(path, row_group_size=700)
    from_parquet = DiagGMM(3, random_state=0, tol=0, max_iter=8).fit(str(path))
    np.testing.assert_allclose(from_parquet.means_, reference.means_, rtol=1e-10)
    labels = from_parquet.predict(str(path))
    assert labels.chunks[0] == (700, 700, 700, 700, 200)
    np.testing.assert_array_equal(labels.compute(), reference.predict(X))
    with pytest.raises(
        ValueError, match=r"columns \['a'\] are not in the table; it has \['z', 'b', 'c'\]"
    ):
        from_pandas.predict(frame.rename(columns={"a": "z"})[["z", "b", "c"]])
    with pytest.raises(ValueError, match="features differ from those seen in fit"):
        numeric_only.predict(frame[["b", "a", "c"]])
    with pytest.raises(ValueError, match=r"columns \['d'\] are not in the table"):
        DiagGMM(3).fit(frame, columns=["a", "d"])
    with pytest.raises(TypeError, match=r"columns \['name'\] are not numeric"):
        DiagGMM(3).fit(frame, columns=["a", "name"])
