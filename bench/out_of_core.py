"""Out of core (issue 5, target 3): EM from a compressed Zarr store on disk vs in memory.

For each ``--rows`` N (default 10M, 40M and 160M rows x 32 float32 features; the largest is
~20 GB raw), a mixture store written by :func:`diaggmm_dist.datasets.synthetic.write_mixture_zarr`
with the project's default codec and chunk rows (written once, chunk by chunk with bounded
memory, and reused from ``--store``) is fitted from disk (K=16, the same initial parameters,
``tol=0``, ``--iters`` timed iterations after one untimed first iteration), and compared with
the in-memory fit of its first 1,000,000 rows (a numpy array, dask's threads), measured before
the store's first disk fit and again after each one. This VM's speed drifts by 15-40% over
minutes, so each disk fit is compared with the mean of the two in-memory fits right before
and right after it (as targets 2 and 5 pair their measurements); the ratio against the
fastest in-memory fit of that N, the most conservative, is reported beside it (until
2026-11-28 it was the verdict). Two ways of running the disk fit are measured:

* ``threads``: dask's threaded scheduler, no client (the library's default);
* ``cluster``: a LocalCluster of 2 single-threaded worker processes (a fresh one per run), as
  the library starts it (:func:`diaggmm_dist.cluster.local_cluster`: glibc malloc settings
  that keep chunk-sized buffers off fresh mmaps).

Each disk fit runs in a fresh process (the client's), so that its peak memory is the fit's
own: in one long-lived process, the memory earlier runs left in its malloc heaps (the
in-memory fits, the fits at smaller N) came on top and grew from one N to the next.

Figures: seconds per iteration (median of the timed iterations, from the library's own
per-iteration log records), seconds per million rows per iteration, the ratio disk / memory
per row (target <= 1.3x at 160M), and the peak resident memory (summed PSS) of the whole process
tree (this process, the nannies and the workers, sampled every 0.1 s; target < 2 GiB and flat in N).
The verdict takes the better of the two schedulers; the JSON keeps both.

What the machine allows. Reading is CPU work on the same two cores as the EM. For each N:

* the kernel alone: the library's per-chunk kernel (``kernels.chunk_statistics``, a thread
  per core, one BLAS thread each; no dask, no estimator, no M-step), once with each chunk of
  the store's first 10,000,000 rows read first (the fit's chunks), once on the reference's
  in-memory rows ten times over (as many rows, so that both passes last about as long),
  alternated: ``--kernel-rounds`` passes from the store, each against the mean of the
  in-memory passes right before and after it, median. That ratio is what reading the store
  adds to the E-step's arithmetic when nothing else runs; the table and the verdict show it
  beside the target. It is no floor for the target's ratio, which compares whole fits: a 1M-row
  fit pays per-iteration work (the M-step, the pass's set-up and tail) that a 160M-row fit
  spreads over 160 times the rows. Once per run, the same is measured on an uncompressed
  store of 2,000,000 rows (written once, cached under ``--store``): the difference is the
  decompression's share;
* reading alone: a pass that only reads and decodes the store (the library's chunks, a
  thread per core, each chunk read and dropped: no EM), best of 2; and the same pass reading
  every chunk through zarr itself (a ``zarr.Array`` selection) instead of the library's
  direct read (:mod:`diaggmm_dist.zarr_chunks`), for comparison.

Page cache. The machine has 24 GB of RAM, so even the 160M store (~17 GB at the default
codec) can be held whole by the kernel's page cache: the "warm" runs then measure decode +
compute, not the disk. Before the disk fits of a store, the other stores under ``--store``
are evicted from the page cache (``POSIX_FADV_DONTNEED``) and the store is read once, file by
file (its seconds are reported: the disk's speed when it was not cached); at the end the
stores are evicted again, leaving the page cache to the scripts that run next. Without that, a
store of ~80% of RAM competes with the ones read before it, and the kernel keeps evicting
the pages the next pass needs first (a 160M fit started with 91% of the store cached ran
at 1.72x where one started with it all cached ran at 1.27-1.37x). The report gives, for every run,
the store's size against RAM and the fraction of its bytes in the page cache as each timed iteration
starts (``fincore``; the table shows the least). With ``--cold`` (root), every iteration is also run
after dropping the page cache (``echo 1 > /proc/sys/vm/drop_caches`` before each pass), so that it
reads the disk.

    python bench/out_of_core.py                              # 10M, 40M, 160M (long: ~1-2 h)
    python bench/out_of_core.py --rows 2000000 --iters 2     # smoke run
    python bench/out_of_core.py --rows 10000000 --cold       # also cold-cache iterations

Writes ``bench/results/out_of_core.json`` (``--out`` to rename) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from _common import D, K, timed_fit  # noqa: E402

MEMORY_ROWS = 1_000_000
KERNEL_ROWS = 10_000_000  # rows of a store the kernel-alone passes read
UNCOMPRESSED_ROWS = 2_000_000  # the uncompressed store of the kernel-alone contrast
RATIO_TARGET = 1.3
RSS_TARGET = 2 * 2**30


def disk_run(path, iters, scheduler, drop_cache=False):
    """One disk fit on ``scheduler`` ("threads" or "cluster"), run in a fresh process
    (:func:`disk_fit`).

    A fresh process, so that its peak memory is the fit's own, not what the runs before it
    (the in-memory fits, the fits at smaller N) left in this process's malloc heaps.
    """
    import json
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--disk-fit",
            json.dumps([str(path), iters, scheduler, drop_cache]),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"the disk fit ({scheduler}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_fit(path, iters, scheduler, drop_cache=False):
    """The disk fit of :func:`disk_run`, in this process, with the page cache state as each timed
    iteration starts.
    """
    probe = functools.partial(_common.cached_fraction, path)
    if scheduler == "cluster":
        from distributed import Client

        from diaggmm_dist.cluster import local_cluster

        with local_cluster(2) as cluster, Client(cluster):
            result = timed_fit(str(path), iters, drop_cache, probe)
    else:
        result = timed_fit(str(path), iters, drop_cache, probe)
    fractions = [f for f in result["cached_at_start"] if f is not None]
    result.update(
        scheduler=scheduler,
        cold=drop_cache,
        cached_fraction_min=min(fractions) if fractions else None,
        page_cache_bytes_after=_common.page_cache_bytes(),
    )
    gc.collect()
    return result


def fit_chunks(path):
    """The store at ``path`` as the fit reads it: the ``zarr.Array``, the library's reader and the
    fit's chunks.

    The chunks are row slices of :func:`diaggmm_dist.inputs.as_row_chunked`'s dask chunks; the
    reader is the direct read of :mod:`diaggmm_dist.zarr_chunks` where the layout allows it,
    else the array.
    """
    import zarr

    from diaggmm_dist import inputs, zarr_chunks

    X = inputs.as_row_chunked(str(path))
    array = zarr.open_array(str(path), mode="r")
    bounds = np.cumsum((0,) + X.chunks[0])
    slices = [np.s_[a:b, :] for a, b in zip(bounds[:-1], bounds[1:])]
    return array, zarr_chunks.direct_rows(array) or array, slices


def read_run(path, repeats=2):
    """Best seconds of a pass that only reads and decodes the store (module docstring), per million
    rows too.

    The fit's chunks (:func:`diaggmm_dist.inputs.as_row_chunked`), each read and dropped, on a
    thread per core taking the next chunk as the fit's local passes do (so no dask
    scheduling: with dask's threaded scheduler, 77 tasks that each return a stand-in
    array cost ~0.16 s of wall time per pass here, which the earlier measure counted as
    reading). Also the same
    chunks read through zarr itself instead of the library's direct read
    (:mod:`diaggmm_dist.zarr_chunks`).
    """
    from dask.system import CPU_COUNT

    array, reader, slices = fit_chunks(path)
    readers = {"library": reader, "zarr": array}
    best = {"library": float("inf"), "zarr": float("inf")}
    for _ in range(repeats):
        for name, reader in readers.items():
            best[name] = min(best[name], _common.read_pass(reader, slices, CPU_COUNT))
    gc.collect()
    return {
        "seconds": best["library"],
        "seconds_per_million_rows": per_million(best["library"], array.shape[0]),
        "through_zarr_seconds_per_million_rows": per_million(best["zarr"], array.shape[0]),
    }


def kernel_alone_run(path, rounds):
    """The kernel alone reading the store at ``path`` vs on rows in memory (module docstring): s per
    1M rows, ratios.
    """
    from dask.system import CPU_COUNT

    array, reader, slices = fit_chunks(path)
    slices = [s for s in slices if s[0].stop <= KERNEL_ROWS] or slices[:1]
    disk_rows = slices[-1][0].stop
    memory = array[:MEMORY_ROWS]
    step = slices[0][0].stop
    repeats = max(1, round(disk_rows / memory.shape[0]))
    chunks = [memory[start : start + step] for start in range(0, memory.shape[0], step)] * repeats
    start_values = _common.start_values()
    memory_rows = repeats * memory.shape[0]

    def memory_pass():
        seconds = _common.kernel_pass_seconds(chunks, *start_values, CPU_COUNT)
        return per_million(seconds, memory_rows)

    def disk_pass(selections=slices):
        seconds = _common.kernel_pass_seconds(
            selections, *start_values, CPU_COUNT, load=reader.__getitem__
        )
        return per_million(seconds, sum(s[0].stop - s[0].start for s in selections))

    # warm-up: numba's compiled loops, and this process's buffers for chunks read (first faults)
    memory_pass(), disk_pass(slices[: 4 * CPU_COUNT])
    memory_seconds, disk_seconds = [memory_pass()], []
    for _ in range(rounds):
        disk_seconds.append(disk_pass())
        memory_seconds.append(memory_pass())
    paired = [d / statistics.mean(memory_seconds[i : i + 2]) for i, d in enumerate(disk_seconds)]
    chunks.clear()  # the closure above keeps the list: empty it so that the rows can go
    del memory
    gc.collect()
    return {
        "disk_rows": disk_rows,
        "memory_rows": int(repeats * MEMORY_ROWS),
        "chunk_rows": int(step),
        "threads": int(CPU_COUNT),
        "memory_seconds_per_million_rows": memory_seconds,
        "disk_seconds_per_million_rows": disk_seconds,
        "disk_over_memory_paired": paired,
        "disk_over_memory": statistics.median(paired),
    }


def memory_run(path, iters):
    import zarr

    data = zarr.open_array(str(path), mode="r")[:MEMORY_ROWS]
    result = timed_fit(data, iters)
    result.update(rows=int(data.shape[0]))
    del data
    gc.collect()
    return result


def evict_other_stores(path, root):
    """Evict every store under ``root`` but the one of array ``path`` from the page cache (module
    docstring).
    """
    for other in Path(root).iterdir():
        if other.is_dir() and other.resolve() != path.parent.resolve():
            _common.evict_from_page_cache(other)


def per_million(seconds, rows):
    return seconds / rows * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[10_000_000, 40_000_000, 160_000_000]
    )
    parser.add_argument(
        "--iters", type=int, default=3, help="timed iterations per fit (one more, untimed, first)"
    )
    parser.add_argument(
        "--schedulers", nargs="+", default=["threads", "cluster"], choices=["threads", "cluster"]
    )
    parser.add_argument(
        "--cold", action="store_true", help="also run every iteration after dropping the page cache"
    )
    parser.add_argument(
        "--store", default=str(_common.DATA), help="where the data stores are cached"
    )
    parser.add_argument(
        "--kernel-rounds",
        type=int,
        default=6,
        help="passes of the kernel alone from each store (each between two in memory)",
    )
    parser.add_argument("--out", default="out_of_core.json")
    parser.add_argument(
        "--disk-fit", help=argparse.SUPPRESS
    )  # [path, iters, scheduler, drop_cache]: one fit, JSON out
    args = parser.parse_args(argv)
    if args.disk_fit:
        import json

        print(json.dumps(disk_fit(*json.loads(args.disk_fit)), default=float))
        return

    import zarr

    info = _common.machine_info()
    result = {
        "machine": info,
        "features": D,
        "components": K,
        "timed_iterations": args.iters,
        "memory_rows": MEMORY_ROWS,
        "targets": {"disk_over_memory_per_row": RATIO_TARGET, "peak_rss_bytes": RSS_TARGET},
        "runs": [],
    }
    for rows in args.rows:
        path = _common.mixture_store(rows, root=args.store)
        store = zarr.open_array(str(path), mode="r")
        entry = {
            "rows": rows,
            "store": str(path),
            "codec": [c.to_dict() for c in store.compressors],
            "zarr_chunk_rows": int(store.chunks[0]),
            "bytes_raw": rows * D * 4,
            "bytes_on_disk": _common.bytes_on_disk(path),
            "ram_bytes": int(info["ram_gib"] * 2**30),
        }
        print(
            f"N={rows:,}: store {entry['bytes_on_disk'] / 2**30:.2f} GiB on disk "
            f"({entry['bytes_raw'] / 2**30:.2f} GiB raw), codec {describe_codec(entry['codec'])}",
            flush=True,
        )
        evict_other_stores(path, args.store)
        entry["cached_before_warming"] = _common.cached_fraction(path)
        entry["warming_read_seconds"] = _common.read_into_page_cache(path)
        entry["cached_after_warming"] = _common.cached_fraction(path)
        print(
            "  other stores evicted from the page cache; this one read once in "
            f"{entry['warming_read_seconds']:.1f} s (cached before "
            f"{fmt_fraction(entry['cached_before_warming'])}, after "
            f"{fmt_fraction(entry['cached_after_warming'])})",
            flush=True,
        )
        # the in-memory reference before the first disk fit and after each one: the VM's speed
        # drifts by 15-40% over minutes, so each disk fit is compared with the references taken
        # right before and right after it (as targets 2 and 5 pair their measurements)
        entry["memory_runs"] = [memory_run(path, args.iters)]
        print(
            f"  in memory 1M: {entry['memory_runs'][-1]['seconds_per_iteration']:.3f} s/iter",
            flush=True,
        )
        entry["disk"] = {}
        for scheduler in args.schedulers:
            modes = [False, True] if args.cold else [False]
            for cold in modes:
                run = disk_run(path, args.iters, scheduler, cold)
                run["seconds_per_million_rows"] = per_million(run["seconds_per_iteration"], rows)
                entry["disk"][scheduler + (" cold" if cold else "")] = run
                entry["memory_runs"].append(memory_run(path, args.iters))
                around = [
                    per_million(m["seconds_per_iteration"], m["rows"])
                    for m in entry["memory_runs"][-2:]
                ]
                run["memory_seconds_per_million_rows"] = statistics.mean(around)
                print(
                    f"  {scheduler}{' cold' if cold else ''}: {run['seconds_per_iteration']:.2f} "
                    f"s/iter, {run['seconds_per_million_rows']:.3f} s per 1M rows, peak resident "
                    f"{run['peak_rss_bytes'] / 2**30:.2f} GiB, in page cache at the timed "
                    f"iterations' start >= {fmt_fraction(run['cached_fraction_min'])}; in memory "
                    f"1M after it: {entry['memory_runs'][-1]['seconds_per_iteration']:.3f} s/iter",
                    flush=True,
                )
        entry["read"] = read_run(path)
        print(
            f"  reading alone: {entry['read']['seconds']:.2f} s per pass "
            f"({entry['read']['seconds_per_million_rows']:.3f} s per 1M rows; through zarr itself "
            f"{entry['read']['through_zarr_seconds_per_million_rows']:.3f})",
            flush=True,
        )
        entry["kernel_alone"] = kernel_alone_run(path, args.kernel_rounds)
        print(f"  the kernel alone: {_kernel_alone_line(entry['kernel_alone'])}", flush=True)
        # the fastest reference too: the most conservative ratio, reported beside the paired one
        entry["memory"] = min(entry["memory_runs"], key=lambda r: r["seconds_per_iteration"])
        fastest = per_million(entry["memory"]["seconds_per_iteration"], entry["memory"]["rows"])
        for run in entry["disk"].values():
            run["disk_over_memory"] = (
                run["seconds_per_million_rows"] / run["memory_seconds_per_million_rows"]
            )
            run["disk_over_fastest_memory"] = run["seconds_per_million_rows"] / fastest
        result["runs"].append(entry)
        _common.write_json(args.out, result)  # partial results survive a long run's interruption

    # the kernel alone from an uncompressed store too: the decompression's share
    raw = _common.mixture_store(UNCOMPRESSED_ROWS, root=args.store, compressors=None)
    evict_other_stores(raw, args.store)
    _common.read_into_page_cache(raw)
    result["uncompressed_kernel_alone"] = kernel_alone_run(raw, args.kernel_rounds)
    print(
        f"uncompressed store, {UNCOMPRESSED_ROWS:,} rows: the kernel alone "
        f"{_kernel_alone_line(result['uncompressed_kernel_alone'])}",
        flush=True,
    )
    _common.write_json(args.out, result)

    # Leave the page cache free for the scripts that run next: a 160M store held whole (17 GiB of
    # 23.5) left a 10M store read after it competing for the rest (scaling.py measured 1.47x
    # right after this script, 1.82x alone on a free page cache).
    for store in [Path(entry["store"]).parent for entry in result["runs"]] + [raw.parent]:
        _common.evict_from_page_cache(store)
    result["verdict"] = verdict(result)
    path = _common.write_json(args.out, result)
    print()
    print(render(result))
    print(f"\n(written to {path})")


def describe_codec(codecs):
    if not codecs:
        return "none"
    parts = []
    for codec in codecs:
        conf = codec.get("configuration", {})
        if codec["name"] == "blosc":
            parts.append(f"blosc {conf['cname']} clevel {conf['clevel']} {conf['shuffle']}")
        else:
            parts.append(codec["name"] + " " + ", ".join(f"{k} {v}" for k, v in conf.items()))
    return " + ".join(parts)


def fmt_fraction(value):
    return "n/a" if value is None else f"{100 * value:.0f}%"


def verdict(result):
    """Target 3 on the largest N (warm runs), using the better scheduler; RSS over all N."""
    largest = max(result["runs"], key=lambda e: e["rows"])
    warm = {name: run for name, run in largest["disk"].items() if not run["cold"]}
    best_name = min(warm, key=lambda name: warm[name]["disk_over_memory"])
    best = warm[best_name]
    peaks = {
        name: [e["disk"][name]["peak_rss_bytes"] for e in result["runs"] if name in e["disk"]]
        for name in warm
    }
    peak_best = max(peaks[best_name])
    spread = max(peaks[best_name]) / max(1, min(peaks[best_name]))
    return {
        "rows": largest["rows"],
        "scheduler": best_name,
        "disk_over_memory": best["disk_over_memory"],
        "disk_over_fastest_memory": best.get("disk_over_fastest_memory"),
        "ratio_pass": best["disk_over_memory"] <= RATIO_TARGET,
        "peak_rss_bytes": peak_best,
        "rss_pass": peak_best < RSS_TARGET,
        "rss_max_over_min_across_n": spread,
        "rss_flat": spread < 1.25,
        "page_cache_held_largest": best["cached_fraction_min"],
        "kernel_alone": largest.get("kernel_alone", {}).get("disk_over_memory"),
        "uncompressed_kernel_alone": result.get("uncompressed_kernel_alone", {}).get(
            "disk_over_memory"
        ),
    }


def _kernel_alone_line(run):
    """The kernel alone in words: seconds per 1M rows reading the store and in memory (medians), and
    the ratio.
    """
    return (
        f"{statistics.median(run['disk_seconds_per_million_rows']):.4f} s per 1M rows reading the "
        f"store, {statistics.median(run['memory_seconds_per_million_rows']):.4f} in memory: "
        f"{run['disk_over_memory']:.2f}x (paired: "
        f"{', '.join(f'{r:.2f}' for r in run['disk_over_memory_paired'])})"
    )


def _disk_line(name, run):
    """The table row of one disk fit."""
    label = {"threads": "disk, threads (no client)", "cluster": "disk, LocalCluster 2x1"}[
        name.split()[0]
    ]
    label += ", page cache dropped every iteration" if run["cold"] else ""
    fastest = (
        f" ({run['disk_over_fastest_memory']:.2f})" if "disk_over_fastest_memory" in run else ""
    )
    return (
        f"| | | {label} | {fmt_fraction(run['cached_fraction_min'])} | "
        f"{run['seconds_per_iteration']:.3f} | {run['seconds_per_million_rows']:.3f} | "
        f"{run['disk_over_memory']:.2f}{fastest} | {run['peak_rss_bytes'] / 2**30:.2f} GiB |"
    )


def render(result):
    lines = [f"Machine: {_common.machine_line(result['machine'])}", ""]
    first = result["runs"][0]
    lines.append(
        f"Data: float32, D={result['features']}, K={result['components']}, codec "
        f"{describe_codec(first['codec'])}, {first['zarr_chunk_rows']:,} rows per Zarr chunk; "
        f"{result['timed_iterations']} timed iterations (median) after one untimed. "
        f"In-memory reference: the first {result['memory_rows']:,} rows as numpy, dask threads, "
        "measured before each N's first disk fit and after each one; each disk fit is compared "
        "with the mean of the two around it (in brackets: against the fastest reference of that N)."
    )
    lines += [
        "",
        "| N | GiB on disk (raw) | run | in page cache | s / iteration | s per 1M rows / iter | "
        "disk / memory per row | peak resident (PSS), process tree |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for e in result["runs"]:
        references = e.get("memory_runs") or [e["memory"]]
        runs = iter(e["disk"].items())
        for index, m in enumerate(references):
            first = (
                f"{e['rows']:,} | {e['bytes_on_disk'] / 2**30:.2f} ({e['bytes_raw'] / 2**30:.2f})"
                if index == 0
                else " | "
            )
            lines.append(
                f"| {first} | in memory, 1M rows, threads | — | {m['seconds_per_iteration']:.3f} | "
                f"{per_million(m['seconds_per_iteration'], m['rows']):.3f} | 1.00 | "
                f"{m['peak_rss_bytes'] / 2**30:.2f} GiB |"
            )
            lines += [_disk_line(name, run) for name, run in itertools.islice(runs, 1)]
        lines += [
            _disk_line(name, run) for name, run in runs
        ]  # results of a run without references after each fit
        if "read" in e:
            r = e["read"]
            lines.append(
                f"| | | reading alone (no EM), threads | | {r['seconds']:.3f} | "
                f"{r['seconds_per_million_rows']:.3f} | | |"
            )
            if "through_zarr_seconds_per_million_rows" in r:
                lines.append(
                    f"| | | reading alone, every chunk through zarr itself | | | "
                    f"{r['through_zarr_seconds_per_million_rows']:.3f} | | |"
                )
        if "kernel_alone" in e:
            f = e["kernel_alone"]
            lines.append(
                f"| | | the kernel alone, each chunk read from the store (in brackets: "
                "on the in-memory rows) | | | "
                f"{statistics.median(f['disk_seconds_per_million_rows']):.3f} "
                f"({statistics.median(f['memory_seconds_per_million_rows']):.3f}) | "
                f"{f['disk_over_memory']:.2f} | |"
            )
    v = result.get("verdict")
    if v:
        lines += [
            "",
            "| target (issue 5, #3) | measured | result |",
            "|---|---:|---|",
            f"| per-row time at {v['rows']:,} rows within {RATIO_TARGET}x of in memory (better "
            f"scheduler: {v['scheduler']}) | {v['disk_over_memory']:.2f}x"
            + (
                f" (against the fastest reference {v['disk_over_fastest_memory']:.2f}x)"
                if v.get("disk_over_fastest_memory")
                else ""
            )
            + (
                f" (the kernel alone, reading the store vs in memory: {v['kernel_alone']:.2f}x; "
                f"from an uncompressed store {v['uncompressed_kernel_alone']:.2f}x)"
                if v.get("kernel_alone") and v.get("uncompressed_kernel_alone")
                else ""
            )
            + f" | {_common.verdict(v['ratio_pass'])} |",
            f"| peak resident memory (PSS) of the process tree < 2 GiB ({v['scheduler']}) | "
            f"{v['peak_rss_bytes'] / 2**30:.2f} GiB | {_common.verdict(v['rss_pass'])} |",
            "| peak resident memory flat in N (max / min over N < 1.25) | "
            f"{v['rss_max_over_min_across_n']:.2f} | {_common.verdict(v['rss_flat'])} |",
        ]
        raw = result.get("uncompressed_kernel_alone")
        if raw:
            lines += [
                "",
                f"The kernel alone, from an uncompressed store ({raw['disk_rows']:,} rows): "
                f"{_kernel_alone_line(raw)}.",
            ]
        largest_runs = max(result["runs"], key=lambda e: e["rows"])["disk"]
        for name, run in largest_runs.items():
            parts = ", ".join(
                f"{n} {b / 2**30:.2f}"
                for n, b in sorted(run["rss_at_peak_by_process"], key=lambda x: -x[1])
            )
            lines.append(f"\nResident memory (PSS) at the peak, {name}, GiB: {parts}.")
        held = v["page_cache_held_largest"]
        largest = max(result["runs"], key=lambda e: e["rows"])
        lines += [
            "",
            f"Page cache: the {largest['rows']:,}-row store is "
            f"{largest['bytes_on_disk'] / 2**30:.1f} GiB on a {result['machine']['ram_gib']} GiB "
            f"machine; {fmt_fraction(held)} of it was in the page cache as the warm timed "
            "iterations started (the least of them), so those iterations read "
            + (
                "mostly from memory, not from the disk."
                if held is not None and held > 0.9
                else "partly or wholly from the disk."
                if held is not None
                else "(unknown)."
            )
            + " Rows marked 'page cache dropped every iteration' read every byte from the disk.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
