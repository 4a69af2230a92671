"""Codec study: size on disk and read+decode throughput of the data the project writes.

The out-of-core EM pass reads every chunk of the store once per iteration; on a machine whose
cores are busy with the E-step, the CPU time spent decompressing is added to every iteration.
This script writes the same float32 mixture data (``--rows`` x 32, by
:func:`diaggmm_dist.datasets.synthetic.write_mixture_zarr`) with each candidate zarr v3 codec and
each chunk length, and measures

* bytes on disk of ``X`` and the ratio raw / stored;
* seconds to write it (generation included, the same for all);
* single-threaded decode speed of one chunk (numcodecs, as zarr calls it; best of 10, in
  this process: the least noisy figure on a busy machine);
* read+decode throughput in rows/s of the whole store into numpy: ``X`` opened the way the
  fit opens it (:func:`diaggmm_dist.inputs.as_row_chunked`, whole Zarr chunks grouped into
  dask chunks of about ``default_chunk_rows`` rows; Blosc and uncompressed stores thus take
  the library's direct read, :mod:`diaggmm_dist.zarr_chunks`, other codecs go through zarr) and
  reduced with a trivial ``sum`` on dask's threaded scheduler with ``--threads`` (2) threads, with
  the store in the page cache ("warm"). All stores are written first; then ``--rounds`` rounds go
  over all of them (order rotated), each store read ``--repeats`` times in a fresh process per
  round, so that the slow spells of a shared machine fall on every codec alike; best and median are
  reported. With ``--cold`` (root only), one more read per store after dropping the page cache;
* for a few codecs (``--config-codecs``), the same read under other zarr settings
  (``threading.max_workers``, ``async.concurrency``, ``codec_pipeline.batch_size``), each in a
  fresh process since zarr creates its thread pool once per process.

A reference row reads the same rows from a numpy array in memory (the floor: the sum alone).

    python bench/codecs.py                       # 4,194,304 rows, all codecs x 3 chunk lengths
    python bench/codecs.py --rows 1048576 --rounds 1 --no-configs   # quick
    python bench/codecs.py --cold                # also a cold read per store (root)

Writes ``bench/results/codecs.json`` and prints Markdown tables. Stores go to
``bench/results/data/codecs/`` and are deleted after measuring (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from _common import D, K  # noqa: E402

CHUNK_ROWS = (65_536, 131_072, 262_144)

CONFIGS = {
    "default": {},
    "threading.max_workers=2": {"threading.max_workers": 2},
    "threading.max_workers=1": {"threading.max_workers": 1},
    "async.concurrency=2": {"async.concurrency": 2},
    "codec_pipeline.batch_size=4": {"codec_pipeline.batch_size": 4},
}

#: The codecs probed under the zarr settings above (the rest only under the defaults).
CONFIG_CODECS = ("none", "zstd level 0 (zarr 3 default)", "blosc lz4 shuffle 5")


def candidate_codecs():
    """Name -> zarr v3 compressors (None: no compression)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    def blosc(cname, shuffle, level):
        return [BloscCodec(cname=cname, shuffle=shuffle, clevel=level)]

    return {
        "none": None,
        "zstd level 0 (zarr 3 default)": [ZstdCodec(level=0)],
        "zstd level 1": [ZstdCodec(level=1)],
        "blosc lz4 shuffle 1": blosc("lz4", "shuffle", 1),
        "blosc lz4 shuffle 5": blosc("lz4", "shuffle", 5),
        "blosc lz4 bitshuffle 1": blosc("lz4", "bitshuffle", 1),
        "blosc lz4hc shuffle 1": blosc("lz4hc", "shuffle", 1),
        "blosc zstd shuffle 1": blosc("zstd", "shuffle", 1),
        "blosc zstd bitshuffle 1": blosc("zstd", "bitshuffle", 1),
    }


# ---------------------------------------------------------------------------------------------
# One read, run in a fresh process: python bench/codecs.py --read PATH --config JSON


def read_once(path, threads, repeats, config, cold=False):
    """Time ``repeats`` warm reads (and first one cold read if ``cold``) of the store at ``path``.

    An untimed read of the first dask chunk comes first, so that zarr's event loop and thread
    pool, dask's thread pool and the first large allocations are not timed.
    """
    import dask
    import zarr

    zarr.config.set(config)
    from diaggmm_dist import inputs

    X = inputs.as_row_chunked(str(path))

    def timed(array):
        start = time.perf_counter()
        dask.compute(array.sum(dtype="float64"), scheduler="threads", num_workers=threads)
        return time.perf_counter() - start

    timed(X[: X.chunks[0][0]])
    out = {"rows": int(X.shape[0]), "dask_chunk_rows": int(X.chunks[0][0])}
    if cold:
        out["cold_seconds"] = timed(X) if _common.drop_page_cache() else None
    out["seconds"] = [timed(X) for _ in range(repeats)]
    return out


def read_in_subprocess(path, threads, repeats, config=None, cold=False):
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--read",
            str(path),
            "--threads",
            str(threads),
            "--repeats",
            str(repeats),
            "--config",
            json.dumps(config or {}),
        ]
        + (["--cold"] if cold else []),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def decode_rate(path, codec_json, repeats=10):
    """Single-threaded decode of the store's first chunk (numcodecs, as zarr calls it): bytes/s of
    output.
    """
    import numcodecs
    import numpy as np

    data = (Path(path) / "c" / "0" / "0").read_bytes()
    if not codec_json:
        decode = lambda b: np.frombuffer(b, dtype=np.uint8).copy()  # noqa: E731  (no codec: one copy)
    elif codec_json[0]["name"] == "blosc":
        decode = numcodecs.Blosc().decode
    else:
        decode = numcodecs.Zstd().decode
    best, size = float("inf"), len(decode(data))
    for _ in range(repeats):
        start = time.perf_counter()
        decode(data)
        best = min(best, time.perf_counter() - start)
    return size / best


def memory_reference(rows, threads, repeats):
    """Throughput of the same reduction over rows held in memory (no decode, no I/O): the floor."""
    import dask
    import dask.array as da
    import numpy as np

    from diaggmm_dist import inputs
    from diaggmm_dist.datasets.synthetic import _chunk, mixture_parameters

    block = _chunk(0, 131_072, *mixture_parameters(K, D, seed=0), 0, np.dtype("float32"))[:, :D]
    data = np.tile(np.ascontiguousarray(block), (max(1, rows // block.shape[0]), 1))
    X = da.from_array(data, chunks=(inputs.default_chunk_rows(D, 4), D), name=False)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        dask.compute(X.sum(dtype="float64"), scheduler="threads", num_workers=threads)
        seconds.append(time.perf_counter() - start)
    return data.shape[0], seconds


def rate(rows, seconds):
    return {
        "best_rows_per_s": rows / min(seconds),
        "median_rows_per_s": rows / statistics.median(seconds),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=4_194_304,
        help="rows of the mixture (a multiple of 262,144 is best)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over all stores (each store read in a fresh process per round)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed reads per process")
    parser.add_argument("--chunk-rows", type=int, nargs="*", default=list(CHUNK_ROWS))
    parser.add_argument(
        "--codecs", nargs="*", help="names of candidate codecs to run (default: all)"
    )
    parser.add_argument("--no-configs", action="store_true", help="skip the zarr-settings probes")
    parser.add_argument(
        "--config-codecs",
        nargs="*",
        default=list(CONFIG_CODECS),
        help="codecs whose stores also get the zarr-settings probes",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time one read after dropping the page cache (root)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the stores under bench/results/data/codecs/"
    )
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.read:  # child process: one measurement, JSON on the last line
        print(
            json.dumps(
                read_once(args.read, args.threads, args.repeats, json.loads(args.config), args.cold)
            )
        )
        return

    import zarr

    from diaggmm_dist.datasets import synthetic

    info = _common.machine_info()
    codecs = candidate_codecs()
    names = args.codecs or list(codecs)
    where = _common.DATA / "codecs"
    where.mkdir(parents=True, exist_ok=True)
    params = synthetic.mixture_parameters(K, D, seed=0)

    # 1. write every store once (kept until the end, so that reads can be interleaved)
    rows_out = []
    for chunk_rows in args.chunk_rows:
        for name in names:
            compressors = codecs[name]
            path = where / f"{_common.codec_tag(compressors, chunk_rows)}.zarr"
            start = time.perf_counter()
            synthetic.write_mixture_zarr(
                path, args.rows, *params, chunk_rows=chunk_rows, seed=0, compressors=compressors
            )
            write_seconds = time.perf_counter() - start
            stored = _common.bytes_on_disk(path / "X")
            rows_out.append(
                {
                    "codec": name,
                    "codec_json": [c.to_dict() for c in compressors or []],
                    "chunk_rows": chunk_rows,
                    "path": str(path / "X"),
                    "bytes_on_disk": stored,
                    "ratio": args.rows * D * 4 / stored,
                    "write_seconds": write_seconds,
                    "warm_seconds": [],
                    "configs": {},
                }
            )
            rows_out[-1]["decode_bytes_per_s_1_thread"] = decode_rate(
                path / "X", rows_out[-1]["codec_json"]
            )
            print(
                f"wrote {name} / {chunk_rows}: ratio {rows_out[-1]['ratio']:.3f}, "
                f"{write_seconds:.1f} s",
                flush=True,
            )

    # 2. warm reads: rounds over all stores, order rotated each round, a fresh process per read
    ref_seconds = []
    for round_ in range(args.rounds):
        shift = round_ * len(rows_out) // max(1, args.rounds)
        for row in rows_out[shift:] + rows_out[:shift]:
            warm = read_in_subprocess(row["path"], args.threads, args.repeats)
            row["dask_chunk_rows"] = warm["dask_chunk_rows"]
            row["warm_seconds"] += warm["seconds"]
        ref_rows, seconds = memory_reference(args.rows, args.threads, args.repeats)
        ref_seconds += seconds
        print(f"round {round_ + 1}/{args.rounds} of warm reads done", flush=True)
    for row in rows_out:
        row["warm"] = rate(args.rows, row["warm_seconds"])

    # 3. zarr settings, interleaved with the default for the same store
    if not args.no_configs:
        for round_ in range(args.rounds):
            for row in (r for r in rows_out if r["codec"] in args.config_codecs):
                for label, config in CONFIGS.items():
                    probe = read_in_subprocess(row["path"], args.threads, args.repeats, config)
                    row["configs"].setdefault(label, {"seconds": []})["seconds"] += probe["seconds"]
            print(f"round {round_ + 1}/{args.rounds} of zarr-settings reads done", flush=True)
        for row in rows_out:
            for entry in row["configs"].values():
                entry.update(rate(args.rows, entry["seconds"]))

    # 4. cold reads: page cache dropped, then one read
    if args.cold:
        for row in rows_out:
            cold = read_in_subprocess(row["path"], args.threads, 1, cold=True)
            row["cold_seconds"] = cold["cold_seconds"]
            row["cold_rows_per_s"] = (
                args.rows / cold["cold_seconds"] if cold["cold_seconds"] else None
            )

    for row in rows_out:
        print(
            f"{row['codec']:32s} {row['chunk_rows']:>7d}  ratio {row['ratio']:.3f}  warm best "
            f"{row['warm']['best_rows_per_s'] / 1e6:6.1f} M rows/s  median "
            f"{row['warm']['median_rows_per_s'] / 1e6:6.1f}"
            + (f"  cold {row['cold_rows_per_s'] / 1e6:6.1f}" if row.get("cold_rows_per_s") else ""),
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(Path(row["path"]).parent, ignore_errors=True)

    result = {
        "machine": info,
        "rows": args.rows,
        "features": D,
        "dtype": "float32",
        "threads": args.threads,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "memory_reference": {
            "rows": ref_rows,
            "seconds": ref_seconds,
            **rate(ref_rows, ref_seconds),
        },
        "zarr_config_defaults": {
            key: zarr.config.get(key)
            for key in ("async.concurrency", "threading.max_workers", "codec_pipeline.batch_size")
        },
        "load_average_at_end": list(os.getloadavg()),
        "results": rows_out,
    }
    out = _common.write_json("codecs.json", result)
    print()
    print(render(result))
    print(f"\n(written to {out})")


def render(result):
    lines = [
        f"Machine: {_common.machine_line(result['machine'])}",
        "",
        f"{result['rows']:,} x {result['features']} float32 rows, read+decode of the whole store "
        f"into numpy with a sum on dask's threaded scheduler, {result['threads']} threads, page "
        f"cache warm; best (median) of {result['rounds']} rounds x {result['repeats']} reads, "
        "rounds interleaved over all stores. In memory (no decode): "
        f"{result['memory_reference']['best_rows_per_s'] / 1e6:.1f} M rows/s.",
        "",
        "| codec | chunk rows | MiB on disk | ratio | write s | decode GB/s, 1 thread | read M "
        "rows/s best (median) |"
        + (" cold M rows/s |" if any("cold_seconds" in r for r in result["results"]) else ""),
        "|---|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if any("cold_seconds" in r for r in result["results"]) else ""),
    ]
    for r in result["results"]:
        line = (
            f"| {r['codec']} | {r['chunk_rows']:,} | {r['bytes_on_disk'] / 2**20:,.0f} | "
            f"{r['ratio']:.3f} | {r['write_seconds']:.1f} | "
            f"{r['decode_bytes_per_s_1_thread'] / 1e9:.2f} | "
            f"{r['warm']['best_rows_per_s'] / 1e6:.1f} "
            f"({r['warm']['median_rows_per_s'] / 1e6:.1f}) |"
        )
        if "cold_seconds" in r:
            line += f" {r['cold_rows_per_s'] / 1e6:.1f} |" if r["cold_seconds"] else " — |"
        lines.append(line)
    with_configs = [r for r in result["results"] if r.get("configs")]
    if with_configs:
        labels = list(with_configs[0]["configs"])
        lines += [
            "",
            "zarr settings (read M rows/s, best of the repeats; each in a fresh process):",
            "",
            "| codec | chunk rows | " + " | ".join(labels) + " |",
            "|---|---:|" + "---:|" * len(labels),
        ]
        for r in with_configs:
            values = [r["configs"][label]["best_rows_per_s"] for label in labels]
            lines.append(
                f"| {r['codec']} | {r['chunk_rows']:,} | "
                + " | ".join(f"{v / 1e6:.1f}" for v in values)
                + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
