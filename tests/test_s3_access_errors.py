"""A worker that cannot reach object storage says why, and how the options travel."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import s3fs
import zarr
from s3_harness import s3, s3_service  # noqa: F401

from diaggmm_dist import DiagGMM
from diaggmm_dist.inputs import as_row_chunked
from diaggmm_dist.locations import StorageAccessError, storage_access_error

#: No credentials anywhere but where a test puts them: no files, no instance metadata.
NO_CREDENTIALS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
}


@pytest.fixture
def no_credentials(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield monkeypatch
    s3fs.S3FileSystem.clear_instance_cache()


def _written(s3, rows=2000):
    X = np.random.default_rng(0).normal(size=(rows, 4)).astype("float32")
    group = zarr.open_group(s3.url("d.zarr"), mode="w", storage_options=s3.storage_options)
    group.create_array("X", shape=X.shape, chunks=(500, 4), dtype="float32")[:] = X
    return X, s3.url("d.zarr/X")


def _endpoint_only(s3):
    return {"client_kwargs": s3.storage_options["client_kwargs"]}


def test_opening_without_credentials_says_how_to_pass_them(s3, no_credentials):
    _, url = _written(s3)
    with pytest.raises(StorageAccessError, match="open the Zarr array at s3://") as caught:
        as_row_chunked(url, storage_options=_endpoint_only(s3))
    message = str(caught.value)
    assert "NoCredentialsError" in message and "storage_options" in message
    assert "This process" in message


def test_a_chunk_read_without_credentials_names_the_chunk(s3, no_credentials):
    _, url = _written(s3)
    no_credentials.setenv("AWS_ACCESS_KEY_ID", "testing")  # the client's own environment
    no_credentials.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    shipped = pickle.dumps(as_row_chunked(url, storage_options=_endpoint_only(s3)))
    no_credentials.delenv("AWS_ACCESS_KEY_ID")  # as on a worker without them
    no_credentials.delenv("AWS_SECRET_ACCESS_KEY")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(StorageAccessError, match=r"read chunk c/\d/0 of s3://.*d\.zarr/X"):
        pickle.loads(shipped).compute(scheduler="sync")


def test_workers_without_credentials_fail_with_the_hint_and_options_cure_it(s3, no_credentials):
    from distributed import Client, LocalCluster

    X, url = _written(s3)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as cluster:
        # the workers started without credentials; the client has them from its environment
        no_credentials.setenv("AWS_ACCESS_KEY_ID", "testing")
        no_credentials.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        with Client(cluster):
            gmm = DiagGMM(2, max_iter=2, random_state=0)
            with pytest.raises(StorageAccessError, match="Dask worker tcp://127.0.0.1"):
                gmm.fit(url, storage_options=_endpoint_only(s3))
            # given as options, the credentials travel with the tasks
            fitted = DiagGMM(2, max_iter=2, random_state=0).fit(
                url, storage_options=s3.storage_options
            )
    expected = DiagGMM(2, max_iter=2, random_state=0).fit(X)
    np.testing.assert_array_equal(fitted.means_, expected.means_)


def test_other_errors_are_left_as_they_are():
    assert storage_access_error(FileNotFoundError("gone"), "read x") is None
    assert isinstance(storage_access_error(PermissionError("403"), "read x"), StorageAccessError)
