"""A real S3-compatible server for the object-storage tests: moto's, behind the project's proxy.

``s3_service`` (session) starts moto's server in a subprocess on a free 127.0.0.1 port, waits
for it to answer, puts an :class:`s3_proxy.S3Proxy` (request log, latency, bandwidth cap) in front
and stops both at the end. ``s3`` (per test) gives an :class:`S3Bucket`: a fresh bucket, the
proxy's endpoint, the s3fs ``storage_options`` and the proxy, reset; the endpoint is never put
in ``os.environ``. Import the fixtures (``from s3_harness import s3, s3_service``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prefect_harness import free_port, stop_process_group
from s3_proxy import S3Proxy

#: What the moto server accepts (it checks no signature); real S3 would refuse them.
KEY, SECRET, REGION = "testing", "testing", "us-east-1"
#: Variables that would point a client at an endpoint without options: kept out of the tests.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
_bucket_numbers = itertools.count()
#: ``python -m moto.server`` that also ends when the test process dies unannounced (SIGKILL,
#: ``os._exit`` from a timeout): it then has a new parent, and no finally block ran.
SERVER_MAIN = """
import os, sys, threading, time
from moto.server import main
parent = os.getppid()
def orphaned():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
main(sys.argv[1:])
"""


def storage_options_for(endpoint_url: str) -> dict:
    """s3fs options for a server at ``endpoint_url``: credentials and region given, so that
    botocore looks up neither (no instance-metadata or region requests to AWS).
    """
    return {
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": endpoint_url, "region_name": REGION},
    }


@dataclass
class S3Service:
    """The moto server process and the proxy in front of it."""

    #: the proxy's URL: what tests talk to
    endpoint_url: str
    #: moto's own URL, for the harness's housekeeping (not logged, never slowed)
    server_url: str
    process: subprocess.Popen
    proxy: S3Proxy
    log: Path


@dataclass
class S3Bucket:
    """One test's bucket on the service, reached through the proxy."""

    name: str
    endpoint_url: str
    proxy: S3Proxy
    storage_options: dict = field(default_factory=dict)

    def url(self, key: str = "") -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{self.name}/{key}".rstrip("/")

    def log_path(self, key: str) -> str:
        """The path of ``key`` as the proxy logs it: ``/<bucket>/<key>``."""
        return f"/{self.name}/{key}"

    def filesystem(self):
        """A new s3fs file system with the options (none of fsspec's cached instances)."""
        import fsspec

        return fsspec.filesystem("s3", skip_instance_cache=True, **self.storage_options)

    def zarr_store(self, key: str, read_only: bool = False):
        """zarr's ``FsspecStore`` at ``key``, opened with the options."""
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(
            self.url(key), storage_options=self.storage_options, read_only=read_only
        )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_s3_service(folder: Path, timeout: float = 60.0) -> Iterator[S3Service]:
    """Start moto's server and the proxy for the block; both are stopped after, whatever happens."""
    port = free_port()
    log = folder / "moto.log"
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARIABLES}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER_MAIN, "-H", "127.0.0.1", "-p", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server_url = f"http://127.0.0.1:{port}"
    proxy = None
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto server exited with {process.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(server_url + "/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto server did not answer on {server_url}:\n{_tail(log)}")
            time.sleep(0.2)
        proxy = S3Proxy(server_url).start()
        yield S3Service(proxy.url, server_url, process, proxy, log)
    finally:
        if proxy is not None:
            proxy.stop()
        stop_process_group(process, grace=10)


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory) -> Iterator[S3Service]:
    """moto's S3 server (a subprocess) and the proxy before it, for the whole session."""
    with running_s3_service(tmp_path_factory.mktemp("s3")) as service:
        yield service


def _housekeeping(service: S3Service):
    """An s3fs file system straight to moto (bypassing the proxy) to create and empty buckets."""
    import s3fs

    return s3fs.S3FileSystem(
        skip_instance_cache=True,
        use_listings_cache=False,
        **storage_options_for(service.server_url),
    )


def _bucket_name(test_name: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    return f"t{next(_bucket_numbers):04d}-{words}"[:63].rstrip("-")


@pytest.fixture
def s3(s3_service, request, monkeypatch) -> Iterator[S3Bucket]:
    """A fresh bucket through the proxy (no latency, no cap, empty log); deleted after the test."""
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    admin = _housekeeping(s3_service)
    name = _bucket_name(request.node.name)
    admin.call_s3("create_bucket", Bucket=name)  # in us-east-1: no location constraint
    s3_service.proxy.reset()
    try:
        yield S3Bucket(
            name,
            s3_service.endpoint_url,
            s3_service.proxy,
            storage_options_for(s3_service.endpoint_url),
        )
    finally:
        s3_service.proxy.reset()
        with contextlib.suppress(FileNotFoundError):
            admin.rm(name, recursive=True)
