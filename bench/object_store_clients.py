"""Issue 21, item 5: which client reads Zarr from object storage, by measurement.

The same Zarr v3 array (``rows`` x 32 float32, the project's chunks of 65,536 rows = 8 MiB and
its Blosc LZ4 codec, written by the project's writer and copied to the server) is read whole
from the tests' S3-compatible server (moto behind the project's proxy, both in a child process:
``bench/_s3.py``) by:

* ``zarr FsspecStore (s3fs)``: ``zarr.storage.FsspecStore`` on s3fs, what the library uses;
* ``zarr FsspecStore (s3fs, max_concurrency=1)``: the same with s3fs's option that drops the
  HEAD it sends before each whole-object GET;
* ``zarr ObjectStore (obstore)``: ``zarr.storage.ObjectStore`` on obstore's ``S3Store`` (Rust);
* ``zarr FsspecStore (obstore.fsspec)``: zarr's fsspec store over obstore's fsspec file system;
* ``dask threads, zarr FsspecStore (s3fs)``: the library's own read pattern, ``as_row_chunked``
  on the array (dask chunks of two Zarr chunks) computed on 2 threads;
* ``raw bytes, s3fs cat`` and ``raw bytes, obstore get``: every chunk object fetched, nothing
  decoded (the client alone).

Each at zarr's default concurrency (``async.concurrency``, 10) with no injected latency and with
50 ms per request, after one untimed warm-up read per client; per read: wall time, the reading
process's CPU (``time.process_time``: this process holds no server), the moto server's and the
proxy's CPU (psutil), and the requests per chunk and others from the proxy's log. Medians over
``--repeats`` reads. Writes ``bench/results/object_store_clients.json``.

    python bench/object_store_clients.py               # 2M rows (244 MiB), ~2 min
    python bench/object_store_clients.py --quick       # 500,000 rows
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import machine_info, machine_line, mixture_store, write_json  # noqa: E402
from _s3 import S3Server, most_in_flight  # noqa: E402

BUCKET, KEY = "clients", "data.zarr"
GiB = 2**30
LATENCIES = (0.0, 0.05)


def s3fs_array(server, **options):
    import zarr
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(
        f"s3://{BUCKET}/{KEY}/X",
        storage_options={**server.storage_options, **options},
        read_only=True,
    )
    return zarr.open_array(store, mode="r")


def s3fs_one_request_array(server):
    # s3fs (2024.12+) asks an object's size (a HEAD) before a GET of a whole object, to split
    # large ones into concurrent ranged GETs; max_concurrency=1 turns that off
    return s3fs_array(server, max_concurrency=1)


def obstore_s3(server):
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        prefix=f"{KEY}/X",
        endpoint=server.endpoint_url,
        access_key_id=server.key,
        secret_access_key=server.secret,
        region=server.region,
        client_options={"allow_http": True},
    )


def obstore_array(server):
    import zarr
    from zarr.storage import ObjectStore

    return zarr.open_array(ObjectStore(obstore_s3(server), read_only=True), mode="r")


def obstore_fsspec_array(server):
    import zarr
    from obstore.fsspec import FsspecStore as ObstoreFileSystem
    from zarr.storage import FsspecStore

    fs = ObstoreFileSystem(
        "s3",
        asynchronous=True,
        config={
            "endpoint": server.endpoint_url,
            "access_key_id": server.key,
            "secret_access_key": server.secret,
            "region": server.region,
        },
        client_options={"allow_http": True},
    )
    return zarr.open_array(FsspecStore(fs, path=f"{BUCKET}/{KEY}/X", read_only=True), mode="r")


def chunk_keys(n_chunks):
    return [f"c/{i}/0" for i in range(n_chunks)]


def read_zarr(open_array):
    def read(server, n_chunks):
        array = open_array(server)
        return lambda: array[:]

    return read


def read_dask_threads(server, n_chunks):
    from diaggmm_dist.inputs.arrays import as_row_chunked

    X = as_row_chunked(s3fs_array(server))
    # one small result per chunk: the chunks are read and dropped, not gathered
    touched = X.map_blocks(lambda b: b[:1], chunks=(1, X.shape[1]))
    return lambda: touched.compute(scheduler="threads", num_workers=2)


def read_s3fs_cat(server, n_chunks):
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, **server.storage_options)
    paths = [f"{BUCKET}/{KEY}/X/{k}" for k in chunk_keys(n_chunks)]
    return lambda: fs.cat(paths, batch_size=10)


def read_obstore_get(server, n_chunks):
    import obstore
    from zarr.core.sync import sync

    store, keys = obstore_s3(server), chunk_keys(n_chunks)

    async def fetch_all():
        limit = asyncio.Semaphore(10)  # zarr's default concurrency

        async def one(key):
            async with limit:
                return await (await obstore.get_async(store, key)).bytes_async()

        return await asyncio.gather(*(one(k) for k in keys))

    # on zarr's own event loop: a fresh loop per read (asyncio.run) costs obstore ~0.25 s of CPU
    return lambda: sync(fetch_all())


CLIENTS = {
    "zarr FsspecStore (s3fs)": read_zarr(s3fs_array),
    "zarr FsspecStore (s3fs, max_concurrency=1)": read_zarr(s3fs_one_request_array),
    "zarr ObjectStore (obstore)": read_zarr(obstore_array),
    "zarr FsspecStore (obstore.fsspec)": read_zarr(obstore_fsspec_array),
    "dask threads, zarr FsspecStore (s3fs)": read_dask_threads,
    "raw bytes, s3fs cat": read_s3fs_cat,
    "raw bytes, obstore get": read_obstore_get,
}


def measure(server, make_reader, n_chunks, repeats):
    """Requests to open, then per read: wall, CPU of this process, server and proxy CPU, log."""
    chunk_prefix = f"/{BUCKET}/{KEY}/X/c/"
    server.clear()
    read = make_reader(server, n_chunks)
    opened = server.log()
    read()  # warm-up: connections, caches
    runs = []
    for _ in range(repeats):
        server.clear()
        before, cpu0, t0 = server.cpu_seconds(), time.process_time(), time.perf_counter()
        read()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after, log = server.cpu_seconds(), server.log()
        chunk_gets = [r for r in log if r["method"] == "GET" and r["path"].startswith(chunk_prefix)]
        runs.append(
            {
                "wall": wall,
                "client_cpu": cpu,
                "server_cpu": after["server"] - before["server"],
                "proxy_cpu": after["proxy"] - before["proxy"],
                "bytes": sum(r["bytes"] for r in log),
                "chunk_gets": len(chunk_gets),
                "chunk_heads": sum(
                    r["method"] == "HEAD" and r["path"].startswith(chunk_prefix) for r in log
                ),
                "other_requests": len(log) - sum(r["path"].startswith(chunk_prefix) for r in log),
                "most_in_flight": most_in_flight(log),
            }
        )
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    gib = median["bytes"] / GiB
    return {
        "runs": runs,
        "median": median,
        "open_requests": len(opened),
        "gib_per_s": gib / median["wall"],
        "client_cpu_per_gib": median["client_cpu"] / gib,
        "server_cpu_per_gib": median["server_cpu"] / gib,
        "requests_per_chunk": (median["chunk_gets"] + median["chunk_heads"]) / n_chunks,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500,000 rows, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 500_000, 2
    import zarr

    local = mixture_store(args.rows)
    local_array = zarr.open_array(str(local), mode="r")
    n_chunks = local_array.nchunks
    raw_bytes = local_array.nbytes
    result = {
        "machine": machine_info(),
        "rows": args.rows,
        "chunks": n_chunks,
        "chunk_rows": local_array.chunks[0],
        "concurrency": zarr.config.get("async.concurrency"),
        "repeats": args.repeats,
        "clients": {},
    }
    with S3Server() as server:
        server.create_bucket(BUCKET)
        server.upload(local.parent, BUCKET, KEY)
        expected = np.asarray(local_array[:1000])
        for name in ("s3fs", "obstore"):  # the data read back is the data written
            array = s3fs_array(server) if name == "s3fs" else obstore_array(server)
            assert np.array_equal(array[:1000], expected), name
        for latency in LATENCIES:
            server.set_latency(latency)
            for name, make_reader in CLIENTS.items():
                print(f"{name}, {latency * 1000:.0f} ms ...", flush=True)
                result["clients"].setdefault(name, {})[f"{latency * 1000:.0f} ms"] = measure(
                    server, make_reader, n_chunks, args.repeats
                )
    stored = next(iter(result["clients"].values()))["0 ms"]["median"]["bytes"]
    result.update(stored_bytes=stored, raw_bytes=raw_bytes)
    result["markdown"] = render(result)
    out = write_json("object_store_clients.json", result)
    print(result["markdown"])
    print(f"\nwrote {out}")
    return result


def render(result):
    lines = [
        f"Machine: {machine_line(result['machine'])}",
        "",
        f"{result['rows']:,} x 32 float32, {result['chunks']} chunks of {result['chunk_rows']:,} "
        f"rows (Blosc LZ4), {result['stored_bytes'] / 2**20:.0f} MiB stored / "
        f"{result['raw_bytes'] / 2**20:.0f} MiB raw; zarr concurrency "
        f"{result['concurrency']}; medians of {result['repeats']} reads. CPU per GiB stored "
        "(on the wire); the reader's CPU is this process's alone.",
        "",
        "| client | latency | GiB/s | reader CPU s/GiB | moto CPU s/GiB | proxy CPU s | "
        "requests per chunk (GET+HEAD) | other requests | requests to open | most in flight |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_latency in result["clients"].items():
        for latency, m in by_latency.items():
            lines.append(
                f"| {name} | {latency} | {m['gib_per_s']:.2f} | {m['client_cpu_per_gib']:.2f} | "
                f"{m['server_cpu_per_gib']:.2f} | {m['median']['proxy_cpu']:.2f} | "
                f"{m['requests_per_chunk']:.2f} ({m['median']['chunk_gets']:.0f}+"
                f"{m['median']['chunk_heads']:.0f}) | {m['median']['other_requests']:.0f} | "
                f"{m['open_requests']} | {m['median']['most_in_flight']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
