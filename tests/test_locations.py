"""Locations: a path, an fsspec URL with storage options, or a Zarr store object."""

from __future__ import annotations

import pickle

import pytest
import zarr
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from diaggmm_dist.locations import Location, location, redacted


def test_a_local_path_opens_a_local_store(tmp_path):
    where = location(tmp_path / "m.zarr")
    assert where.is_local and where.local_path == tmp_path / "m.zarr"
    assert isinstance(where.zarr_store(), LocalStore)
    fs, path = where.filesystem()
    assert "file" in fs.protocol and path == str(tmp_path / "m.zarr")
    assert location(f"file://{tmp_path}/m.zarr").local_path == tmp_path / "m.zarr"


def test_a_url_keeps_its_options_and_they_open_its_store():
    where = location("memory://bucket/m.zarr", {"skip_instance_cache": True})
    assert not where.is_local
    store = where.zarr_store(read_only=True)
    assert isinstance(store, FsspecStore) and store.read_only
    assert where.joined(".lease") == Location("memory://bucket/m.zarr.lease", where.storage_options)


def test_options_are_copied_as_plain_data_and_travel_by_pickle():
    options = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "key": "k"}
    where = location("s3://b/x", options)
    options["client_kwargs"]["endpoint_url"] = "changed"
    assert where.storage_options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    assert pickle.loads(pickle.dumps(where)) == where


@pytest.mark.parametrize(
    "options, error, words",
    [
        ("key=value", TypeError, "must be a dict"),
        ({1: "x"}, TypeError, "not strings"),
        ({"client": object()}, ValueError, "plain data"),
    ],
)
def test_bad_options_are_refused_with_what_to_do(options, error, words):
    with pytest.raises(error, match=words):
        location("s3://b/x", options)


def test_secrets_never_show_in_the_repr():
    where = location("s3://b/x", {"secret": "s3cr3t", "client_kwargs": {"aws_session_token": "t"}})
    assert "s3cr3t" not in repr(where) and "'t'" not in repr(where)
    assert redacted({"token": "a", "anon": False}) == {"token": "***", "anon": False}


def test_a_store_object_is_its_own_location(tmp_path):
    local = LocalStore(tmp_path)
    where = location(local)
    assert where.store is local and where.is_local and where.zarr_store() is local
    assert where.zarr_store(read_only=True).read_only
    memory = location(MemoryStore())
    assert memory.zarr_store() is memory.store
    with pytest.raises(TypeError, match="no fsspec file system"):
        memory.filesystem()
    with pytest.raises(TypeError, match="carries its\\s+own options"):
        location(local, {"anon": True})
    zarr.open_group(location(tmp_path / "g.zarr").zarr_store(), mode="w")
    assert (tmp_path / "g.zarr" / "zarr.json").exists()


def test_anything_else_is_refused():
    with pytest.raises(TypeError, match="path, an fsspec URL or a Zarr store"):
        location(42)
