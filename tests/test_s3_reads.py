"""Reading data from object storage: storage options reach every reader, requests are few.

Against the harness's S3 server (tests/s3_harness.py): the endpoint is only in the options,
so a reader that dropped them would fail. Request counts come from the proxy's log.
"""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from conftest import mixture_data
from s3_harness import s3, s3_service  # noqa: F401

from diaggmm_dist import DiagGMM, engine
from diaggmm_dist.inputs import as_row_chunked, as_samples, open_zarr_array
from diaggmm_dist.locations import location


def write_array(s3, key, data, **kwargs):
    """``data`` as a Zarr array at ``s3://<bucket>/<key>`` (v3 unless ``zarr_format=2``)."""
    store = location(s3.url(key), s3.storage_options).zarr_store()
    array = zarr.create_array(store, shape=data.shape, dtype=data.dtype, **kwargs)
    array[:] = data
    return array


def test_opening_an_array_costs_one_request_and_three_for_zarr_v2(s3):
    X = np.random.default_rng(0).normal(size=(400, 3))
    write_array(s3, "v3.zarr", X, chunks=(100, 3))
    write_array(s3, "v2.zarr", X, chunks=(100, 3), zarr_format=2)
    for key, most in (("v3.zarr", 1), ("v2.zarr", 3)):
        s3.proxy.clear()
        array = open_zarr_array(s3.url(key), storage_options=s3.storage_options)
        assert array.shape == X.shape
        log = s3.proxy.log
        assert len(log) <= most, [(r.method, r.path) for r in log]
        assert all(r.method == "GET" for r in log)
    # the array opened is the data: read through the checked pipeline
    np.testing.assert_array_equal(array[:], X)


def test_every_way_of_naming_the_array_reads_it(s3):
    X = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    write_array(s3, "x.zarr", X, chunks=(100, 2))
    url, options = s3.url("x.zarr"), s3.storage_options
    for where, kwargs in (
        (url, {"storage_options": options}),
        (location(url, options), {}),
        (s3.zarr_store("x.zarr", read_only=True), {}),
    ):
        array = as_row_chunked(where, chunk_size=100, **kwargs)
        assert array.chunks == ((100, 100, 100), (2,))
        (values,) = engine.compute(array)
        np.testing.assert_array_equal(values, X)


def test_a_group_or_nothing_at_the_url_is_refused_by_name(s3):
    store = location(s3.url("g.zarr"), s3.storage_options).zarr_store()
    group = zarr.open_group(store, mode="w")
    group.create_array("train", shape=(10, 2), dtype="f8")
    with pytest.raises(ValueError, match=r"is a Zarr group, not an array.*\['train'\]"):
        open_zarr_array(s3.url("g.zarr"), s3.storage_options)
    with pytest.raises(FileNotFoundError, match="No Zarr array found at 's3://"):
        open_zarr_array(s3.url("missing.zarr"), s3.storage_options)


def test_a_chunk_costs_one_get_and_no_head(s3):
    X, _ = mixture_data(2000, 3, 3, seed=2)
    write_array(s3, "rows.zarr", X, chunks=(250, 3))
    array = as_row_chunked(s3.url("rows.zarr"), 250, s3.storage_options)
    s3.proxy.clear()
    engine.count_nonfinite(array)
    log = s3.proxy.log
    assert not [r for r in log if r.method == "HEAD"]
    chunks = sorted(r.path for r in log)
    assert chunks == sorted(s3.log_path(f"rows.zarr/c/{i}/0") for i in range(8))
    # one ranged GET per chunk, bounded: no HEAD for the size first
    assert all(r.range and r.range.startswith("bytes=0-") for r in log)
    # a few rows read only their chunks (reads ahead are for the engine's passes only)
    s3.proxy.clear()
    np.testing.assert_array_equal(engine.take_rows(array, [0, 1999]), X[[0, 1999]])
    assert sorted(r.path for r in s3.proxy.log) == [
        s3.log_path("rows.zarr/c/0/0"),
        s3.log_path("rows.zarr/c/7/0"),
    ]


def test_a_fit_from_the_url_is_the_fit_of_the_same_rows_in_memory(s3):
    X, _ = mixture_data(3000, 4, 3, seed=3)
    write_array(s3, "fit.zarr", X, chunks=(500, 4))
    settings = {"n_components": 3, "random_state": 0, "tol": 0, "max_iter": 4, "chunk_size": 500}
    s3.proxy.clear()
    remote = DiagGMM(**settings).fit(location(s3.url("fit.zarr"), s3.storage_options))
    assert not s3.proxy.requests("HEAD")
    reference = DiagGMM(**settings).fit(X)
    for name in ("weights_", "means_", "covariances_", "lower_bound_"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(reference, name))


def test_sharded_arrays_read_inner_chunks_with_ranged_requests(s3):
    X = np.random.default_rng(4).normal(size=(4000, 4))
    # shards of 2000 rows (64 KB) of inner chunks of 250 rows (8 KB)
    write_array(s3, "sharded.zarr", X, chunks=(250, 4), shards=(2000, 4), compressors=None)
    shard_bytes = 2000 * 4 * 8
    array = as_row_chunked(s3.url("sharded.zarr"), 500, s3.storage_options)
    assert array.chunks[0] == (500,) * 8  # whole inner chunks, smaller than a shard
    s3.proxy.clear()
    (values,) = engine.compute(array[:500])
    np.testing.assert_array_equal(values, X[:500])
    gets = s3.proxy.requests("GET")
    assert gets and all(r.range for r in gets) and not s3.proxy.requests("HEAD")
    assert {r.status for r in gets} == {206}
    # the index and two inner chunks of the first shard: about a quarter of it
    assert sum(r.bytes for r in gets) < shard_bytes / 3
    assert sum(r.bytes for r in gets) >= 500 * 4 * 8

    # dask chunks of whole shards (chunk_size a multiple of them) read each in one request
    whole = as_row_chunked(s3.url("sharded.zarr"), 2000, s3.storage_options)
    assert whole.chunks[0] == (2000, 2000)
    s3.proxy.clear()
    (values,) = engine.compute(whole)
    np.testing.assert_array_equal(values, X)
    assert len(s3.proxy.requests("GET")) == 2


def test_gridded_stores_on_s3_open_with_the_options(s3):
    rng = np.random.default_rng(5)
    data = xr.Dataset(
        {
            "a": (("y", "x"), rng.normal(size=(20, 30))),
            "b": (("y", "x"), rng.normal(size=(20, 30))),
        }
    ).chunk({"y": 10})
    store = location(s3.url("grid.zarr"), s3.storage_options).zarr_store()
    data.to_zarr(store, mode="w", consolidated=False)
    samples = as_samples(
        s3.url("grid.zarr"), features=["a", "b"], storage_options=s3.storage_options
    )
    assert samples.sample_dims == ("y", "x")
    s3.proxy.clear()
    (values,) = engine.compute(samples.array)
    # one GET per chunk (2 variables, 2 chunks each), no HEAD
    assert not s3.proxy.requests("HEAD")
    assert len(s3.proxy.requests("GET", "/c/")) == 4
    expected = np.stack([data["a"].values, data["b"].values], axis=-1)
    np.testing.assert_array_equal(values, expected)


def test_parquet_tables_on_s3_read_with_the_options_one_get_per_row_group(s3):
    rng = np.random.default_rng(6)
    table = pd.DataFrame(rng.normal(size=(1000, 3)), columns=["u", "v", "w"])
    table["name"] = "row"
    fs = s3.filesystem()
    for key, part in (
        ("t.parquet", table),
        ("d.parquet/a.parquet", table[:600]),
        ("d.parquet/b.parquet", table[600:]),
        ("spark-table/part-0.parquet", table[:600]),  # a directory named without a suffix
        ("spark-table/part-1.parquet", table[600:]),
    ):
        with fs.open(s3.url(key), "wb") as out:
            part.to_parquet(out, row_group_size=250)
    for key, groups, most in (
        ("t.parquet", (250,) * 4, 2),
        ("d.parquet", (250, 250, 100, 250, 150), 5),
        # the Zarr open (2 GETs) finds nothing, then one listing finds the files
        ("spark-table", (250, 250, 100, 250, 150), 8),
    ):
        s3.proxy.clear()
        samples = as_samples(
            s3.url(key), columns=["u", "v", "w"], storage_options=s3.storage_options
        )  # "name" is not read: a non-numeric column needs columns= (none is dropped silently)
        # the file's details (or a directory's, and its listing), each footer
        assert len(s3.proxy.log) <= most
        assert samples.feature_names == ["u", "v", "w"]
        assert samples.array.chunks[0] == groups
        s3.proxy.clear()
        (values,) = engine.compute(samples.array)
        np.testing.assert_array_equal(values, table[["u", "v", "w"]].to_numpy())
        # each row group one ranged GET of its columns (footers read once, at the open)
        gets = s3.proxy.requests("GET")
        assert len(s3.proxy.log) == len(gets) == len(groups)
        assert all(r.range for r in gets)
