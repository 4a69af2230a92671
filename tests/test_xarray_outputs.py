"""Every Zarr store written opens with xr.open_zarr; results carry their own attributes."""

import json
import shutil
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from conftest import mixture_data
from s3_harness import s3, s3_service  # noqa: F401

from diaggmm_dist import DiagGMM
from diaggmm_dist.outputs.label_maps import write_label_map
from diaggmm_dist.outputs.scores import write_scores
from diaggmm_dist.stores.model_checks import ModelStoreError

K = 3


def open_zarr(url, **kwargs):
    """xr.open_zarr, any warning an error: every store's metadata is consolidated."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_zarr(url, **kwargs)


@pytest.fixture(scope="module")
def data():
    X, _ = mixture_data(2 * 10 * 12, 3, K, seed=7)
    cube = xr.DataArray(
        X.reshape(2, 10, 12, 3),
        dims=("time", "y", "x", "band"),
        coords={
            "time": pd.date_range("2026-01-01", periods=2, freq="MS"),
            "y": np.linspace(50, 20, 10),
            "x": np.linspace(-10, 30, 12),
            "band": ["red", "green", "nir"],
        },
        attrs={"long_name": "surface reflectance", "units": "1"},
        name="reflectance",
    )
    gmm = DiagGMM(K, random_state=0).fit(cube, feature_dim="band")
    return X, cube, gmm


def test_scores_open_with_xarray_with_their_own_attributes(data, tmp_path):
    X, _, _ = data
    gmm = DiagGMM(K, random_state=0, missing="marginalize").fit(X)
    X = X.copy()
    X[5] = np.nan  # an unscorable row: -1 must stay an integer when xarray reads it back
    url = write_scores(gmm, X, tmp_path / "scores.zarr", chunk_size=100)
    ds = open_zarr(url)
    assert set(ds.data_vars) == {"labels", "max_resp", "log_likelihood"}
    assert all(ds[name].dims == ("row",) for name in ds.data_vars)
    labels, max_resp, log_likelihood = gmm.score_rows(X)
    assert ds.labels.dtype == np.int16 and ds.labels.values[5] == -1
    np.testing.assert_array_equal(ds.labels.values, labels)
    np.testing.assert_array_equal(ds.max_resp.values, max_resp)
    np.testing.assert_allclose(ds.log_likelihood.values, log_likelihood, rtol=1e-13)  # chunking
    assert ds.labels.attrs["flag_values"] == list(range(-1, K))
    assert ds.labels.attrs["flag_meanings"].split()[0] == "unlabelled"
    assert "_FillValue" not in ds.labels.attrs
    assert ds.max_resp.attrs == {
        "long_name": "responsibility of the chosen component",
        "units": "1",
    }
    assert ds.log_likelihood.attrs["units"] == "1"


def test_a_label_map_opens_with_its_coordinates_and_not_the_inputs_attributes(data, tmp_path):
    _, cube, gmm = data
    url = write_label_map(gmm, cube, tmp_path / "labels.zarr", probabilities=True)
    ds = open_zarr(url)
    assert ds.labels.dims == ("time", "y", "x") and ds.labels.dtype == np.int16
    xr.testing.assert_equal(ds.x, cube.x)
    xr.testing.assert_equal(ds.time, cube.time)
    assert ds.labels.attrs["long_name"] == "mixture component"
    assert ds.labels.attrs["flag_values"] == list(range(-1, K))
    assert ds.responsibility.dims == ("time", "y", "x", "component")
    assert ds.responsibility.attrs["long_name"] == "responsibility of each component"
    for name in ds.data_vars:
        assert ds[name].attrs.get("long_name") != "surface reflectance"
    np.testing.assert_array_equal(ds.labels.values, gmm.predict(cube).values)


def test_a_model_store_opens_with_xarray_and_still_loads(data, tmp_path):
    _, cube, gmm = data
    gmm.save(tmp_path / "model.zarr")
    ds = open_zarr(tmp_path / "model.zarr")
    assert ds.means.dims == ("component", "feature") and ds.weights.dims == ("component",)
    np.testing.assert_array_equal(ds.means.values, gmm.means_)
    np.testing.assert_array_equal(ds.covariances.values, gmm.covariances_)
    np.testing.assert_array_equal(DiagGMM.load(tmp_path / "model.zarr").means_, gmm.means_)


def test_a_model_store_after_partial_fit_opens_with_xarray(data, tmp_path):
    X, _, _ = data
    gmm = DiagGMM(K, random_state=0).partial_fit(X).partial_fit(X)
    gmm.save(tmp_path / "online.zarr")
    ds = open_zarr(tmp_path / "online.zarr")
    assert ds.running_statistics.dims == ("statistics_row", "statistics_column")
    assert ds.running_shift.dims == ("feature",)


def test_model_dimension_names_are_checked_and_may_be_absent(data, tmp_path):
    _, _, gmm = data
    for name, dims, refused in (("old", None, False), ("edited", ["a", "b"], True)):
        path = tmp_path / f"{name}.zarr"
        gmm.save(path)
        meta_path = path / "means" / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta.pop("dimension_names")
        if dims is not None:
            meta["dimension_names"] = dims
        meta_path.write_text(json.dumps(meta))
        if refused:
            with pytest.raises(ModelStoreError, match="'dimension_names' must be"):
                DiagGMM.load(path)
        else:  # as stores written before dimension names were added
            np.testing.assert_array_equal(DiagGMM.load(path).means_, gmm.means_)


def test_predictions_have_their_own_attributes_and_one_label_dtype(data):
    X, cube, gmm = data
    lazy = cube.copy(data=da.from_array(cube.values, chunks=(1, 5, 6, 3)))
    labels = gmm.predict(lazy)
    assert labels.attrs["long_name"] == "mixture component" and "units" not in labels.attrs
    assert labels.attrs["flag_meanings"] == "unlabelled component_0 component_1 component_2"
    proba = gmm.predict_proba(lazy)
    assert proba.attrs == {"long_name": "responsibility of each component", "units": "1"}
    assert gmm.score_samples(lazy).attrs["long_name"] == "log-likelihood under the mixture"
    # predict: int64 for every input kind (scikit-learn's); score_rows: int16 for every kind
    assert labels.dtype == np.int64
    assert gmm.predict(X).dtype == np.int64
    assert gmm.predict(da.from_array(X, chunks=100)).dtype == np.int64
    assert gmm.score_rows(X)[0].dtype == np.int16
    assert gmm.score_rows(lazy)[0].dtype == np.int16


def test_scores_on_object_storage_open_with_xarray(data, s3):  # noqa: F811
    X, _, _ = data
    gmm = DiagGMM(K, random_state=0).fit(X)
    url = write_scores(gmm, X, s3.url("scores.zarr"), storage_options=s3.storage_options)
    ds = open_zarr(url, storage_options=s3.storage_options)
    np.testing.assert_array_equal(ds.labels.values, gmm.predict(X))
    assert ds.labels.attrs["flag_values"] == list(range(-1, K))


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"name": "row"}, r"non-numeric columns \['name'\] \(\['(object|str|string)'\]\)"),
        ({"flag": True}, r"non-numeric columns \['flag'\] \(\['bool'\]\)"),
        ({"site": pd.Categorical(["a"] * 40)}, r"non-numeric columns \['site'\]"),
        ({"id": np.arange(40)}, r"integer columns \['id'\] beside float ones"),
    ],
    ids=["string", "bool", "category", "integer id"],
)
def test_no_column_is_chosen_silently(extra, match, tmp_path):
    import dask.dataframe as dd

    X, _ = mixture_data(40, 2, 2, seed=3)
    frame = pd.DataFrame(X, columns=["a", "b"]).assign(**extra)
    for table in (frame, dd.from_pandas(frame, npartitions=2)):
        with pytest.raises(TypeError, match=match + r".*columns=\[\.\.\.\]"):
            DiagGMM(2).fit(table)
    path = tmp_path / "table.parquet"
    frame.to_parquet(path)
    with pytest.raises(TypeError, match=r"columns=\[\.\.\.\]"):
        DiagGMM(2).fit(str(path))
    named = DiagGMM(2, random_state=0).fit(frame, columns=["a", "b"])
    reference = DiagGMM(2, random_state=0).fit(X)
    np.testing.assert_array_equal(named.means_, reference.means_)
    # predict reuses the fitted columns: the extra column is not read
    np.testing.assert_array_equal(named.predict(frame), reference.predict(X))


def test_a_table_of_one_numeric_kind_needs_no_columns():
    counts = pd.DataFrame({"a": [1, 2, 3, 9, 8, 7], "b": [0, 1, 0, 9, 9, 8]})
    gmm = DiagGMM(2, random_state=0).fit(counts)
    assert list(gmm.feature_names_in_) == ["a", "b"]
    assert gmm.predict(counts).dtype == np.int64


def test_eager_xarray_in_gives_eager_results_out(data):
    X, cube, gmm = data
    assert isinstance(cube.data, np.ndarray)
    labels = gmm.predict(cube)
    assert isinstance(labels, xr.DataArray) and isinstance(labels.data, np.ndarray)
    assert labels.dims == ("time", "y", "x") and labels.dtype == np.int64
    xr.testing.assert_equal(labels.x, cube.x)
    np.testing.assert_array_equal(labels.values.reshape(-1), gmm.predict(X))
    proba = gmm.predict_proba(cube)
    assert isinstance(proba.data, np.ndarray) and proba.dims[-1] == "component"
    scores = gmm.score_rows(cube)
    assert all(isinstance(s, xr.DataArray) and isinstance(s.data, np.ndarray) for s in scores)
    assert scores[0].dtype == np.int16 and scores[0].attrs["flag_values"] == list(range(-1, K))
    lazy = gmm.predict(cube.chunk({"time": 1}))
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, labels.values)


def test_predict_and_score_take_fits_layout_keywords(data):
    X, cube, gmm = data
    renamed = cube.rename(band="channel")  # another layout than the fitted one
    expected = gmm.predict(cube)
    np.testing.assert_array_equal(gmm.predict(renamed, feature_dim="channel"), expected)
    np.testing.assert_array_equal(gmm.predict(cube, feature_dim="band"), expected)
    np.testing.assert_allclose(
        gmm.predict_proba(renamed, feature_dim="channel"), gmm.predict_proba(cube)
    )
    assert gmm.score(renamed, feature_dim="channel") == gmm.score(cube)
    assert gmm.bic(renamed, feature_dim="channel") == gmm.bic(cube)
    assert gmm.aic(renamed, feature_dim="channel") == gmm.aic(cube)
    np.testing.assert_array_equal(
        gmm.score_rows(renamed, feature_dim="channel")[0], gmm.score_rows(cube)[0]
    )
    with pytest.raises(ValueError, match="X has 12 features, but DiagGMM is expecting 3"):
        gmm.predict(cube, feature_dim="x")  # still checked against the fitted features
    dataset = cube.to_dataset(dim="band")
    by_variables = DiagGMM(K, random_state=0).fit(dataset, features=["red", "green", "nir"])
    extra = dataset.assign(other=dataset.red * 0)
    np.testing.assert_array_equal(
        by_variables.score_samples(extra, features=["red", "green", "nir"]),
        by_variables.score_samples(dataset),
    )
    table = pd.DataFrame(X, columns=["a", "b", "c"])
    fitted = DiagGMM(K, random_state=0).fit(table)
    with_id = table.assign(id=np.arange(len(table)))
    np.testing.assert_array_equal(
        fitted.predict(with_id, columns=["a", "b", "c"]), fitted.predict(X)
    )
    with pytest.raises(TypeError, match=r"integer columns \['id'\]"):
        fitted.predict(with_id)  # fitted without columns=: nothing is chosen silently


FIXTURE = Path(__file__).parent / "data" / "model-format-3.zarr"


def test_a_model_with_named_features_has_a_feature_coordinate(data, tmp_path):
    _, cube, gmm = data
    gmm.save(tmp_path / "model.zarr")
    ds = open_zarr(tmp_path / "model.zarr")
    assert ds.attrs["format_version"] == 4
    assert list(ds.feature.values) == ["red", "green", "nir"]
    np.testing.assert_array_equal(ds.means.sel(feature="nir").values, gmm.means_[:, 2])
    assert list(DiagGMM.load(tmp_path / "model.zarr").feature_names_in_) == ["red", "green", "nir"]
    unnamed = DiagGMM(K, random_state=0).fit(cube.values.reshape(-1, 3))
    unnamed.save(tmp_path / "unnamed.zarr")
    assert "feature" not in open_zarr(tmp_path / "unnamed.zarr").coords
    assert not (tmp_path / "unnamed.zarr" / "feature").exists()


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda p: shutil.rmtree(p / "feature"), "coordinate 'feature' is missing"),
        (lambda p: next((p / "feature" / "c").iterdir()).unlink(), "lost its chunk feature/c/0"),
        (
            lambda p: zarr.open_array(p / "feature", mode="r+").__setitem__(0, "blue"),
            r"holds \['blue', 'green', 'nir'\], not the feature_names",
        ),
        (
            lambda p: next((p / "feature" / "c").iterdir()).write_bytes(b"\xff" * 40),
            "coordinate 'feature' could not be read",
        ),
        (
            lambda p: _edit_json(p / "feature" / "zarr.json", data_type="float64"),
            "'data_type' must be 'string'",
        ),
        (
            lambda p: _edit_json(p / "feature" / "zarr.json", dimension_names=["band"]),
            r"'dimension_names' must be \['feature'\]",
        ),
    ],
    ids=["deleted", "chunk lost", "renamed", "junk", "dtype", "dimension"],
)
def test_a_tampered_feature_coordinate_is_refused(data, tmp_path, tamper, match):
    _, _, gmm = data
    path = tmp_path / "model.zarr"
    gmm.save(path)
    tamper(path)
    with pytest.raises(ModelStoreError, match=match):
        DiagGMM.load(path)


def _edit_json(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_a_model_of_format_3_still_loads_and_saves_as_format_4(tmp_path):
    """The fixture was written by the format-3 code (main, before the feature coordinate)."""
    X, _ = mixture_data(600, 3, 2, seed=5)
    table = pd.DataFrame(X, columns=["red", "green", "nir"])
    refit = DiagGMM(2, random_state=0).fit(table)  # fits are bit-identical: the same model
    assert json.loads((FIXTURE / "zarr.json").read_text())["attributes"]["format_version"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # format 3 has checksums: no UnverifiedModelWarning
        old = DiagGMM.load(FIXTURE)
    for name in ("weights_", "means_", "covariances_", "feature_names_in_"):
        np.testing.assert_array_equal(getattr(old, name), getattr(refit, name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # format 3: not consolidated
        assert "feature" not in xr.open_zarr(FIXTURE).coords
    old.save(tmp_path / "again.zarr")
    assert list(open_zarr(tmp_path / "again.zarr").feature.values) == ["red", "green", "nir"]
