"""``diaggmm predict`` reads DATA as ``fit`` does: the model's layout, or --feature-dim/--features/
--columns; gridded data gives a label map. Runs in-process with ``--threads`` on real stores, and
compares with the library's own result.
"""

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import mixture_data

from diaggmm_dist import DiagGMM
from diaggmm_dist.cli import main
from diaggmm_dist.outputs.written import open_output

K = 2
PREDICT = ["--threads", "--quiet"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A (time, y, x, band) store written by xarray, and a model fitted on it with feature_dim."""
    folder = tmp_path_factory.mktemp("predict")
    X, _ = mixture_data(2 * 12 * 10, 3, K, seed=4)
    cube = xr.DataArray(
        X.reshape(2, 12, 10, 3),
        dims=("time", "y", "x", "band"),
        coords={"y": np.arange(12.0), "x": np.arange(10.0), "band": ["B02", "B03", "B04"]},
    )
    cube.chunk({"time": 1, "y": 6}).to_dataset(name="reflectance").to_zarr(folder / "cube.zarr")
    renamed = cube.rename(band="channel").chunk({"time": 1})
    renamed.to_dataset(name="reflectance").to_zarr(folder / "renamed.zarr")
    gmm = DiagGMM(K, random_state=0).fit(cube, feature_dim="band")
    gmm.save(folder / "model.zarr")
    return folder, cube, gmm


def test_a_cube_is_predicted_with_the_fitted_layout_as_a_label_map(stores, tmp_path, capsys):
    folder, cube, gmm = stores
    out = tmp_path / "map.zarr"
    code, stdout, err = run(
        ["predict", folder / "model.zarr", folder / "cube.zarr", "--out", out] + PREDICT, capsys
    )
    assert code == 0, err
    ds = open_output(out)
    assert ds.labels.dims == ("time", "y", "x") and ds.labels.dtype == np.int16
    xr.testing.assert_equal(ds.y, cube.y)
    expected = gmm.predict(cube)
    np.testing.assert_array_equal(ds.labels.values, expected.values)
    _, max_resp, log_likelihood = gmm.score_rows(cube)
    np.testing.assert_array_equal(ds.max_resp.values, max_resp.values)
    np.testing.assert_allclose(ds.log_likelihood.values, log_likelihood.values, rtol=1e-13)
    counts = np.bincount(expected.values.ravel(), minlength=K)
    assert f"rows per component [{', '.join(str(c) for c in counts)}]" in stdout
    assert "240 rows scored" in stdout and "(a label map)" in stdout


def test_feature_dim_given_reads_another_layout(stores, tmp_path, capsys):
    folder, cube, gmm = stores
    model, data = folder / "model.zarr", folder / "renamed.zarr"
    code, _, err = run(["predict", model, data, "--out", tmp_path / "a.zarr"] + PREDICT, capsys)
    assert code == 2 and "'band' is not a dimension" in err  # the fitted layout: refused
    code, _, err = run(
        ["predict", model, data, "--feature-dim", "channel", "--out", tmp_path / "b.zarr"]
        + PREDICT,
        capsys,
    )
    assert code == 0, err
    np.testing.assert_array_equal(open_output(tmp_path / "b.zarr").labels, gmm.predict(cube))
    code, _, err = run(
        ["predict", model, data, "--feature-dim", "x", "--out", tmp_path / "c.zarr"] + PREDICT,
        capsys,
    )
    assert code == 2 and "X has 10 features, but DiagGMM is expecting 3" in err
    assert "\n" not in err.strip()
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "c.zarr").exists()


def test_a_table_is_predicted_with_the_fitted_columns(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    X, _ = mixture_data(500, 2, K, seed=8)
    table = pd.DataFrame({"a": X[:, 0], "id": np.arange(500), "c": X[:, 1]})
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    gmm = DiagGMM(K, random_state=0).fit(table, columns=["a", "c"])
    gmm.save(tmp_path / "m.zarr")
    out = tmp_path / "s.zarr"
    code, _, err = run(["predict", tmp_path / "m.zarr", path, "--out", out] + PREDICT, capsys)
    assert code == 0, err
    ds = open_output(out)
    assert ds.labels.dims == ("row",)
    np.testing.assert_array_equal(ds.labels.values, gmm.predict(X))
    code, _, err = run(
        ["predict", tmp_path / "m.zarr", path, "--columns", "a,id", "--out", tmp_path / "x.zarr"]
        + PREDICT,
        capsys,
    )
    assert code == 2 and "features differ from those seen in fit" in err


def test_a_chunk_the_writer_lost_fails_the_command(tmp_path, capsys, monkeypatch):
    """A store whose PUT of one chunk was lost: predict says which, and exits 1."""
    from zarr.storage import LocalStore

    rows = tmp_path / "rows.zarr"
    X, _ = mixture_data(400, 3, K, seed=9)
    zarr.create_array(rows, shape=X.shape, chunks=(100, 3), dtype="f8")[...] = X
    DiagGMM(K, random_state=0).fit(X).save(tmp_path / "model.zarr")
    original = LocalStore.set

    async def lossy(self, key, value):
        if key == "labels/c/2":
            return None  # lost on the way
        return await original(self, key, value)

    monkeypatch.setattr(LocalStore, "set", lossy)
    code, _, err = run(
        ["predict", tmp_path / "model.zarr", rows, "--out", tmp_path / "s.zarr"]
        + ["--chunk-size", "100"]
        + PREDICT,
        capsys,
    )
    assert code == 1, err
    assert "labels: 1 chunk(s) ([row 200:300])" in err and "never written" in err


def test_a_model_fitted_on_rows_predicts_a_cube_given_feature_dim(stores, tmp_path, capsys):
    folder, cube, _ = stores
    rows = DiagGMM(K, random_state=0).fit(cube.values.reshape(-1, 3))
    rows.save(tmp_path / "rows-model.zarr")
    argv = ["predict", tmp_path / "rows-model.zarr", folder / "cube.zarr"] + PREDICT
    code, _, err = run(argv + ["--out", tmp_path / "a.zarr"], capsys)
    assert code == 2 and "--feature-dim DIM" in err  # the hint for a store written by xarray
    code, _, err = run(argv + ["--feature-dim", "band", "--out", tmp_path / "b.zarr"], capsys)
    assert code == 0, err
    expected = rows.predict(cube, feature_dim="band")
    np.testing.assert_array_equal(open_output(tmp_path / "b.zarr").labels.values, expected.values)
