"""A chunk of a scores or label-map store that was never written is found, never read as a label.

Each test writes a real store, deletes one chunk file (as a killed writer on object storage or
a lost object leaves it), and reads it back: with xarray the labels read -2 (no component, not
"unlabelled"), and the project's readers (``open_output``, ``diaggmm predict``'s summary) say
which chunk is missing.
"""

import json
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr
from conftest import mixture_data
from s3_harness import s3, s3_service  # noqa: F401

from diaggmm_dist import DiagGMM
from diaggmm_dist.outputs.label_maps import write_label_map
from diaggmm_dist.outputs.scores import write_scores
from diaggmm_dist.outputs.written import (
    NOT_WRITTEN,
    UnwrittenChunksError,
    check_written,
    open_output,
    unwritten_chunks,
)

K = 3


@pytest.fixture(scope="module")
def fitted():
    X, _ = mixture_data(1000, 3, K, seed=11)
    gmm = DiagGMM(K, random_state=0, missing="marginalize").fit(X)
    cube = xr.DataArray(
        X[:320].reshape(2, 16, 10, 3),
        dims=("time", "y", "x", "band"),
        coords={"time": [0, 1], "y": np.arange(16), "x": np.arange(10), "band": ["r", "g", "b"]},
    ).chunk({"time": 1, "y": 8})
    gridded = DiagGMM(K, random_state=0).fit(cube, feature_dim="band")
    return X, gmm, cube, gridded


def strict_open(url, **kwargs):
    """xr.open_zarr, any warning an error (no 'unconsolidated metadata' RuntimeWarning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_zarr(url, **kwargs)


def test_a_lost_scores_chunk_reads_as_not_written_and_is_reported(fitted, tmp_path):
    X, gmm, _, _ = fitted
    X = X.copy()
    X[:200] = np.nan  # a whole chunk of unscored rows: -1, and still written
    url = write_scores(gmm, X, tmp_path / "scores.zarr", chunk_size=200)
    meta = json.loads((tmp_path / "scores.zarr" / "labels" / "zarr.json").read_text())
    assert meta["fill_value"] == NOT_WRITTEN
    assert sorted(p.name for p in (tmp_path / "scores.zarr" / "labels" / "c").iterdir()) == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]
    assert unwritten_chunks(url) == {}
    intact = open_output(url)
    assert intact.labels.dtype == np.int16 and (intact.labels.values[:200] == -1).all()
    assert "never written" in intact.labels.attrs["comment"]
    assert NOT_WRITTEN not in intact.labels.attrs["flag_values"]

    (tmp_path / "scores.zarr" / "labels" / "c" / "2").unlink()
    (tmp_path / "scores.zarr" / "max_resp" / "c" / "0").unlink()
    labels = strict_open(url).labels
    assert labels.dtype == np.int16  # still integers: the fill value is no _FillValue
    assert (labels.values[400:600] == NOT_WRITTEN).all()  # not component 0, not "unscored"
    np.testing.assert_array_equal(labels.values[600:], gmm.score_rows(X)[0][600:])
    assert unwritten_chunks(url) == {"labels": [(2,)], "max_resp": [(0,)]}
    with pytest.raises(UnwrittenChunksError, match=r"labels: 1 chunk\(s\) \(\[row 400:600\]\)"):
        open_output(url)
    with pytest.raises(UnwrittenChunksError, match=r"max_resp: 1 chunk\(s\) \(\[row 0:200\]\)"):
        check_written(url)
    shutil.rmtree(tmp_path / "scores.zarr" / "log_likelihood")
    root = json.loads((tmp_path / "scores.zarr" / "zarr.json").read_text())
    del root["consolidated_metadata"]  # not even listed there: a writer killed before it
    (tmp_path / "scores.zarr" / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(ValueError, match=r"lacks the arrays \['log_likelihood'\]"):
        open_output(url)


def test_a_lost_label_map_chunk_reads_as_not_written_and_is_reported(fitted, tmp_path):
    _, _, cube, gridded = fitted
    url = write_label_map(gridded, cube, tmp_path / "labels.zarr", probabilities=True)
    assert unwritten_chunks(url) == {}  # coordinates and responsibilities included
    expected = gridded.predict(cube).values
    np.testing.assert_array_equal(open_output(url).labels.values, expected)
    shutil.rmtree(tmp_path / "labels.zarr" / "labels" / "c" / "1" / "1")  # time 1, y 8:16
    labels = strict_open(url).labels
    assert labels.dtype == np.int16
    assert (labels.values[1, 8:] == NOT_WRITTEN).all()  # was component 0 before the fix
    np.testing.assert_array_equal(labels.values[0], expected[0])
    assert unwritten_chunks(url) == {"labels": [(1, 1, 0)]}
    with pytest.raises(
        UnwrittenChunksError, match=r"labels: 1 chunk\(s\) \(\[time 1:2, y 8:16, x 0:10\]\)"
    ):
        open_output(url)


def test_a_label_map_with_a_chunk_of_one_component_stores_it(tmp_path):
    """Before, a chunk all of component 0 equalled the fill value 0 and was skipped."""
    X, _ = mixture_data(400, 2, 2, seed=3)
    cube = xr.DataArray(X.reshape(1, 20, 20, 2), dims=("t", "y", "x", "band"))
    gmm = DiagGMM(2, random_state=0).fit(cube, feature_dim="band")
    one = np.repeat(gmm.means_[:1], 400, axis=0).reshape(1, 20, 20, 2)
    url = write_label_map(gmm, cube.copy(data=one).chunk({"y": 10}), tmp_path / "one.zarr")
    assert (open_output(url).labels.values == 0).all()
    assert len(list((tmp_path / "one.zarr" / "labels" / "c" / "0").iterdir())) == 2


def test_an_older_store_cannot_be_checked_and_says_so(fitted, tmp_path):
    X, gmm, _, _ = fitted
    url = write_scores(gmm, X, tmp_path / "scores.zarr")
    for path, edit in (  # as written before NOT_WRITTEN: fill value -1, no consolidated metadata
        ("labels/zarr.json", lambda meta: meta.update(fill_value=-1)),
        ("zarr.json", lambda meta: meta.pop("consolidated_metadata")),
    ):
        meta = json.loads((tmp_path / "scores.zarr" / path).read_text())
        edit(meta)
        (tmp_path / "scores.zarr" / path).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"older diaggmm-dist \(labels fill value -1, not -2\)"):
        unwritten_chunks(url)
    with pytest.raises(FileNotFoundError, match="No scores or label-map store at"):
        unwritten_chunks(tmp_path / "nothing-here.zarr")
    gmm.save(tmp_path / "model.zarr")
    with pytest.raises(ValueError, match="is not a scores or label-map store"):
        unwritten_chunks(tmp_path / "model.zarr")


def test_every_store_opens_with_xarray_without_a_warning(fitted, tmp_path):
    X, gmm, cube, gridded = fitted
    gmm.save(tmp_path / "model.zarr")
    write_scores(gmm, X, tmp_path / "scores.zarr")
    write_label_map(gridded, cube, tmp_path / "labels.zarr")
    for name in ("model.zarr", "scores.zarr", "labels.zarr"):
        ds = strict_open(tmp_path / name)  # consolidated: no RuntimeWarning
        assert ds.data_vars
        root = json.loads((tmp_path / name / "zarr.json").read_text())
        assert set(root["consolidated_metadata"]["metadata"]) >= set(ds.data_vars)


def test_consolidated_metadata_is_rewritten_on_overwrite(fitted, tmp_path):
    X, gmm, _, _ = fitted
    url = write_scores(gmm, X, tmp_path / "scores.zarr", chunk_size=500)
    url = write_scores(gmm, X[:300], tmp_path / "scores.zarr", chunk_size=100, overwrite=True)
    ds = strict_open(url)
    assert ds.labels.shape == (300,) and ds.labels.encoding["chunks"] == (100,)
    root = json.loads((tmp_path / "scores.zarr" / "zarr.json").read_text())
    assert root["consolidated_metadata"]["metadata"]["labels"]["shape"] == [300]
    assert root["attributes"]["n_rows"] == 300


def test_a_failed_write_leaves_the_old_store_whole_on_a_local_disk(fitted, tmp_path, monkeypatch):
    """write_atomically: the new store is written aside and renamed; a failure leaves the old."""
    X, gmm, _, _ = fitted
    url = write_scores(gmm, X, tmp_path / "scores.zarr", chunk_size=200)
    before = open_output(url).labels.values
    from diaggmm_dist.outputs import scores

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(scores.engine, "compute", broken)
    with pytest.raises(OSError, match="disk full"):
        write_scores(gmm, X[:300], url, chunk_size=100, overwrite=True)
    np.testing.assert_array_equal(open_output(url).labels.values, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.zarr"]  # nothing left aside


def test_a_lost_chunk_on_object_storage_is_reported(fitted, s3):  # noqa: F811
    X, gmm, _, _ = fitted
    url = write_scores(
        gmm, X, s3.url("scores.zarr"), chunk_size=250, storage_options=s3.storage_options
    )
    assert unwritten_chunks(url, s3.storage_options) == {}
    s3.filesystem().rm(f"{s3.name}/scores.zarr/log_likelihood/c/3")
    with pytest.raises(UnwrittenChunksError, match=r"log_likelihood: 1 chunk\(s\) \(\[row 750"):
        open_output(url, s3.storage_options)
