"""The tests' S3-compatible server (moto behind the project's proxy) for the benchmarks.

:class:`S3Server` runs ``tests/s3_harness.running_s3_service`` in a child process of its own,
so that the proxy's CPU (a Python thread per connection, every byte forwarded) is counted
neither in the reading process's CPU nor against its GIL, and the moto server's and the
proxy's CPU can each be reported beside the reader's. The proxy is driven over a pipe: latency,
aggregate bandwidth cap, its request log.

The server and the proxy stand for a remote store and the network to it, whose speed does not
depend on the reader's CPU. On a machine whose few cores they share with the fit, they run at
a higher priority than the reader (:data:`SERVER_NICENESS`, where the user may raise
priorities) so that the
fit's arithmetic does not slow the "network" below its cap; their CPU is still reported.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"

#: The fields of a logged request, as :meth:`S3Server.log` gives them (tests/s3_proxy.py).
FIELDS = ("method", "path", "query", "range", "status", "bytes", "bytes_in", "started", "finished")

#: Niceness added to the server's processes over the reader's (its threads and moto inherit it);
#: see bench/FINDINGS.md.
SERVER_NICENESS = -10


def _serve(conn, folder, niceness):
    sys.path.insert(0, str(TESTS))
    from s3_harness import running_s3_service

    try:
        os.nice(niceness)
    except PermissionError:
        pass  # reported: the parent reads the niceness the server runs at
    with running_s3_service(Path(folder)) as service:
        proxy = service.proxy
        conn.send(
            {
                "endpoint_url": service.endpoint_url,
                "server_url": service.server_url,
                "moto_pid": service.process.pid,
                "niceness": os.getpriority(os.PRIO_PROCESS, 0),
            }
        )
        while True:
            command, value = conn.recv()
            if command == "stop":
                conn.send(None)
                return
            if command == "latency":
                proxy.latency = value
            elif command == "bandwidth":
                proxy.bandwidth = value
            elif command == "clear":
                proxy.clear()
            if command == "log":
                conn.send([tuple(getattr(r, f) for f in FIELDS) for r in proxy.log])
            else:
                conn.send(None)


class S3Server:
    """moto's S3 server and the tests' proxy, in a child process, for a ``with`` block.

    Attributes (inside the block): ``endpoint_url`` (the proxy: what clients use),
    ``server_url`` (moto itself, for housekeeping), ``storage_options`` (s3fs options for the
    proxy), ``moto_pid``, ``proxy_pid`` and ``niceness`` (the server's, as it runs).

    Parameters
    ----------
    niceness : int, default=SERVER_NICENESS
        Added to the server's processes' niceness; 0 runs them at the reader's priority.
    """

    def __init__(self, niceness: int = SERVER_NICENESS) -> None:
        self._niceness = niceness

    def __enter__(self) -> S3Server:
        sys.path.insert(0, str(TESTS))
        from s3_harness import KEY, REGION, SECRET, storage_options_for

        self.key, self.secret, self.region = KEY, SECRET, REGION
        self._folder = tempfile.TemporaryDirectory(prefix="bench-s3-")
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, self._folder.name, self._niceness), daemon=True
        )
        self._process.start()
        if not self._conn.poll(120):
            self._process.kill()
            raise RuntimeError("the S3 server did not start within 120 s")
        info = self._conn.recv()
        self.endpoint_url, self.server_url = info["endpoint_url"], info["server_url"]
        self.moto_pid, self.proxy_pid = info["moto_pid"], self._process.pid
        self.niceness = info["niceness"]
        self.storage_options = storage_options_for(self.endpoint_url)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._call("stop")
        finally:
            self._process.join(30)
            if self._process.is_alive():
                self._process.kill()
            self._folder.cleanup()

    def _call(self, command, value=None):
        self._conn.send((command, value))
        return self._conn.recv()

    def set_latency(self, seconds: float) -> None:
        self._call("latency", float(seconds))

    def set_bandwidth(self, bytes_per_second: float | None) -> None:
        self._call("bandwidth", bytes_per_second)

    def clear(self) -> None:
        self._call("clear")

    def log(self) -> list[dict]:
        """The requests answered since the last :meth:`clear`, as dicts of :data:`FIELDS`."""
        return [dict(zip(FIELDS, row)) for row in self._call("log")]

    def cpu_seconds(self) -> dict:
        """User + system CPU seconds so far of the moto server and of the proxy's process."""
        import psutil

        out = {}
        for name, pid in (("server", self.moto_pid), ("proxy", self.proxy_pid)):
            times = psutil.Process(pid).cpu_times()
            out[name] = times.user + times.system
        return out

    def admin_filesystem(self):
        """An s3fs file system straight to moto (not logged, never slowed)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.key,
            secret=self.secret,
            skip_instance_cache=True,
            use_listings_cache=False,
            client_kwargs={"endpoint_url": self.server_url, "region_name": self.region},
        )

    def create_bucket(self, name: str) -> None:
        self.admin_filesystem().call_s3("create_bucket", Bucket=name)

    def upload(self, local: Path, bucket: str, key: str) -> None:
        """Copy the local directory ``local`` to ``s3://bucket/key`` straight to moto."""
        fs = self.admin_filesystem()
        files = sorted(p for p in Path(local).rglob("*") if p.is_file())
        fs.put(
            [str(p) for p in files],
            [f"{bucket}/{key}/{p.relative_to(local).as_posix()}" for p in files],
        )


def requests_by_kind(log: list[dict], chunk_prefix: str) -> dict:
    """Counts of a log's requests: GETs and HEADs of chunk keys under ``chunk_prefix`` (e.g.
    ``/bucket/x.zarr/c/``), and every other request by method.
    """
    counts: dict[str, int] = {}
    for r in log:
        kind = (
            f"{r['method']} chunk" if r["path"].startswith(chunk_prefix) else f"{r['method']} other"
        )
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def most_in_flight(log: list[dict]) -> int:
    """The most requests the proxy held at once (from their start and end times)."""
    events = sorted([(r["started"], 1) for r in log] + [(r["finished"], -1) for r in log])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def request_counts(logs, data_prefix, other_prefix=None):
    """Per iteration: GETs of chunks under ``data_prefix``, HEADs there, and the requests under
    ``other_prefix`` (a checkpoint's), medians over the iterations after the first.
    """
    rows = []
    for log in logs:
        rows.append(
            {
                "chunk_gets": sum(
                    r["method"] == "GET" and r["path"].startswith(data_prefix + "/c/") for r in log
                ),
                "data_other": sum(
                    r["path"].startswith(data_prefix)
                    and not (r["method"] == "GET" and r["path"].startswith(data_prefix + "/c/"))
                    for r in log
                ),
                "checkpoint": sum(r["path"].startswith(other_prefix) for r in log)
                if other_prefix
                else 0,
                "checkpoint_methods": sorted(
                    f"{r['method']} {r['path'][len(other_prefix) :]}"
                    for r in log
                    if r["path"].startswith(other_prefix)
                )
                if other_prefix
                else [],
                "all": len(log),
                "most_in_flight": most_in_flight(log),
                "get_seconds": [
                    r["finished"] - r["started"]
                    for r in log
                    if r["method"] == "GET" and r["path"].startswith(data_prefix + "/c/")
                ],
                "get_bytes": sum(
                    r["bytes"]
                    for r in log
                    if r["method"] == "GET" and r["path"].startswith(data_prefix + "/c/")
                ),
            }
        )
    later = rows[1:] or rows
    return {
        "per_iteration": rows,
        "median": {
            k: statistics.median(row[k] for row in later)
            for k in (
                "chunk_gets",
                "data_other",
                "checkpoint",
                "all",
                "most_in_flight",
                "get_bytes",
            )
        },
        # a chunk GET's time at the proxy, from its arrival to its last byte (latency included)
        "get_seconds_median": statistics.median(t for row in later for t in row["get_seconds"]),
    }
