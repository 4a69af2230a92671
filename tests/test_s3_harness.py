"""The S3 test harness (tests/s3_harness.py) and what already works on s3:// through options.

Every request goes through the project's proxy to moto's server; the options reach zarr and
fsspec explicitly, never through the environment. Timings are lower bounds only.
"""

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import mixture_data
from s3_harness import ENDPOINT_VARIABLES, running_s3_service, s3, s3_service  # noqa: F401

from diaggmm_dist import DiagGMM

MiB = 1024 * 1024


def s3_array(s3, key, data=None, mode="w", **kwargs):
    """A Zarr v3 array at ``s3://<bucket>/<key>`` opened through fsspec with the options."""
    store = s3.zarr_store(key, read_only=mode == "r")
    if mode == "r":
        return zarr.open_array(store, mode="r")
    array = zarr.open_array(store, mode=mode, shape=data.shape, dtype=data.dtype, **kwargs)
    array[:] = data
    return array


def chunk_paths(s3, key, n_chunks):
    return {s3.log_path(f"{key}/c/{i}/0") for i in range(n_chunks)}


def test_the_endpoint_travels_in_the_options_not_the_environment(s3):
    assert not any(name in os.environ for name in ENDPOINT_VARIABLES)
    assert s3.storage_options["client_kwargs"]["endpoint_url"] == s3.endpoint_url
    assert s3.endpoint_url.startswith("http://127.0.0.1:")


def test_a_zarr_array_round_trips_through_the_proxy(s3):
    X = np.random.default_rng(0).normal(size=(1000, 4))
    s3_array(s3, "x.zarr", X, chunks=(250, 4))
    writes = {r.path for r in s3.proxy.requests("PUT") if r.status == 200}
    assert writes == {s3.log_path("x.zarr/zarr.json")} | chunk_paths(s3, "x.zarr", 4)
    s3.proxy.clear()

    array = s3_array(s3, "x.zarr", mode="r")
    assert array.metadata.zarr_format == 3
    np.testing.assert_array_equal(array[:], X)
    reads = {r.path for r in s3.proxy.requests("GET") if r.status == 200}
    assert {s3.log_path("x.zarr/zarr.json")} | chunk_paths(s3, "x.zarr", 4) <= reads
    # the log's bytes are the bodies: the chunks sent up came back down
    chunks = chunk_paths(s3, "x.zarr", 4)
    down = sum(r.bytes for r in s3.proxy.requests("GET") if r.path in chunks)
    assert down == s3.filesystem().du(s3.url("x.zarr/c"))


def test_a_ranged_get_keeps_its_range_header_and_gets_206(s3):
    fs = s3.filesystem()
    blob = bytes(range(256)) * 64
    fs.pipe_file(s3.url("blob"), blob)
    s3.proxy.clear()
    assert fs.cat_file(s3.url("blob"), start=100, end=1100) == blob[100:1100]
    (ranged,) = [r for r in s3.proxy.requests("GET") if r.path == s3.log_path("blob")]
    assert ranged.range == "bytes=100-1099"
    assert ranged.status == 206 and ranged.bytes == 1000


def _raw_get(url, path, headers):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_headers_pass_through_both_ways_unchanged(s3, s3_service):
    fs = s3.filesystem()
    fs.pipe_file(s3.url("blob"), bytes(range(256)) * 16)
    # a presigned URL: the signature travels in the query, which must pass through too
    signed = urllib.parse.urlsplit(fs.url(s3.url("blob")))
    target = f"{signed.path}?{signed.query}"
    asked = {"Range": "bytes=5-14", "If-Match": fs.info(s3.url("blob"))["ETag"]}
    direct = _raw_get(s3_service.server_url, target, asked)
    s3.proxy.clear()
    proxied = _raw_get(s3.endpoint_url, target, asked)
    assert proxied[0] == direct[0] == 206 and proxied[2] == direct[2] == bytes(range(5, 15))
    # every response header comes back as the server sent it, but those that differ by request
    # (its date and id) or belong to the connection
    varying = {"date", "x-amzn-requestid", "connection"}
    assert {k: v for k, v in proxied[1].items() if k.lower() not in varying} == {
        k: v for k, v in direct[1].items() if k.lower() not in varying
    }
    assert proxied[1]["content-range"] == "bytes 5-14/4096"
    (logged,) = s3.proxy.requests("GET", "blob")
    assert (logged.range, logged.status, logged.bytes) == ("bytes=5-14", 206, 10)
    assert logged.query == signed.query
    # a request header reaches the server: a precondition that fails there fails here
    assert _raw_get(s3.endpoint_url, target, {"If-Match": '"other"'})[0] == 412


def _timed_reads(fs, path, n):
    start = time.perf_counter()
    for _ in range(n):
        fs.cat_file(path)
    return time.perf_counter() - start


def test_the_injected_latency_adds_to_every_request(s3):
    fs = s3.filesystem()
    fs.pipe_file(s3.url("small"), b"x" * 100)
    n = 5
    _timed_reads(fs, s3.url("small"), n)  # without latency: connections open, clients warm
    s3.proxy.clear()
    s3.proxy.latency = 0.1
    slow = _timed_reads(fs, s3.url("small"), n)
    requests = s3.proxy.log
    assert len([r for r in requests if r.method == "GET"]) == n
    # sequential requests: each waited its 0.1 s (lower bounds only, the machine may be slow)
    assert slow >= n * 0.1
    assert slow >= len(requests) * 0.1


def test_the_bandwidth_cap_is_shared_by_every_connection(s3):
    fs = s3.filesystem()
    payload = np.random.default_rng(1).bytes(4 * MiB)
    fs.pipe({s3.url("big"): payload, s3.url("half-a"): payload[: 2 * MiB]})
    fs.pipe_file(s3.url("half-b"), payload[2 * MiB :])
    s3.proxy.bandwidth = 8 * MiB

    start = time.perf_counter()
    assert fs.cat_file(s3.url("big")) == payload
    one = time.perf_counter() - start
    # 4 MiB at 8 MiB/s, less the bucket's one-piece burst (256 KiB): ~0.47 s at least
    assert one >= 0.45

    s3.proxy.clear()
    start = time.perf_counter()
    halves = fs.cat([s3.url("half-a"), s3.url("half-b")])  # concurrent GETs
    both = time.perf_counter() - start
    assert b"".join(halves[key] for key in sorted(halves)) == payload
    gets = [r for r in s3.proxy.requests("GET") if r.path.endswith(("/half-a", "/half-b"))]
    assert len(gets) == 2 and sum(r.bytes for r in gets) == 4 * MiB
    assert max(r.started for r in gets) < min(r.finished for r in gets), "not concurrent"
    assert both >= 0.45  # the cap is on the sum of both connections, not on each


def test_reset_restores_no_latency_no_cap_and_an_empty_log(s3):
    s3.filesystem().pipe_file(s3.url("a"), b"a")
    s3.proxy.latency, s3.proxy.bandwidth = 0.5, 1000
    assert s3.proxy.log
    s3.proxy.reset()
    assert (s3.proxy.latency, s3.proxy.bandwidth, s3.proxy.log) == (0.0, None, [])
    with pytest.raises(ValueError, match="bandwidth"):
        s3.proxy.bandwidth = 0


def test_a_fit_from_a_dask_array_on_s3_is_the_numpy_fit_and_reads_every_chunk(s3):
    X, _ = mixture_data(4000, 3, 3, seed=5)
    s3_array(s3, "rows.zarr", X, chunks=(500, 3))
    chunks = chunk_paths(s3, "rows.zarr", 8)
    reads, models = {}, {}
    for max_iter in (2, 5):
        s3.proxy.clear()
        lazy = da.from_zarr(s3_array(s3, "rows.zarr", mode="r"))
        models[max_iter] = DiagGMM(3, random_state=0, tol=0, max_iter=max_iter).fit(lazy)
        reads[max_iter] = Counter(r.path for r in s3.proxy.requests("GET") if r.path in chunks)
    reference = DiagGMM(3, random_state=0, tol=0, max_iter=5).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(models[5], name), getattr(reference, name), rtol=1e-10)
    assert set(reads[5]) == chunks
    # each EM iteration reads every chunk once (the initialization reads some of them more)
    assert {path: reads[5][path] - reads[2][path] for path in chunks} == dict.fromkeys(chunks, 3)


def test_the_server_and_the_proxy_are_gone_after_the_harness(tmp_path):
    for failing in (False, True):
        with pytest.raises(RuntimeError) if failing else contextlib.nullcontext():
            with running_s3_service(tmp_path) as service:
                with urllib.request.urlopen(service.endpoint_url + "/", timeout=10) as response:
                    assert response.status == 200  # ListBuckets, through the proxy
                if failing:
                    raise RuntimeError("a test failed inside")
        assert service.process.poll() is not None
        with pytest.raises(ProcessLookupError):  # nothing left in its process group either
            os.killpg(service.process.pid, 0)
        for url in (service.endpoint_url, service.server_url):
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(url + "/", timeout=5)


#: A test process that starts the harness and dies by SIGKILL: no finally block runs in it.
KILLED_SESSION = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from s3_harness import running_s3_service
with running_s3_service(Path(sys.argv[2])) as service:
    print(service.process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its parent's bookkeeping is left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_server_ends_when_the_test_process_is_killed(tmp_path):
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SESSION, str(Path(__file__).parent), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    pid = int(killed.stdout.split()[0])
    try:
        deadline = time.monotonic() + 60  # a liveness bound, not a timing claim
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid), "moto's server outlived the test process that started it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
