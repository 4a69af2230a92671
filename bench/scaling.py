"""Scaling (issue 5, target 5): 1 vs 2 workers, and per-chunk figures for planning a cluster.

Part 0, the LocalCluster's worker settings: the best time of a worker reading one 16 MiB
chunk of the store, on a plain LocalCluster (distributed sets ``MALLOC_TRIM_THRESHOLD_=65536``)
and on the library's (:func:`diaggmm_dist.cluster.local_cluster`); every other measurement
uses the library's.

Part 1, speed-up. The same fit (K=16, D=32 float32, the fixed start, ``tol=0``, ``--iters``
timed iterations after one untimed) on the same cached store (``--rows``, default 10M, from
``bench/results/data/``) on a LocalCluster of 1 single-threaded worker process and of 2,
alternated ``--repeats`` times (fresh cluster each time). Target: 2 workers at least 1.8x faster
per iteration, by the median over the repeats of the ratio of each 1-worker fit to the 2-worker
fit run right beside it (this VM's speed drifts 15-30% within minutes, so a ratio of the best
of each can pair a fast spell with a slow one; the best-against-best ratio is reported too).

Part 1b, what the machine allows: the same work without dask, in plain processes. Each
process opens the store, reads its share of ``--ceiling-chunks`` dask-sized chunks (16 MiB,
131,072 rows, read as the fit reads them: :mod:`diaggmm_dist.zarr_chunks`) and computes their
statistics with the library's kernel, one BLAS thread, after a barrier; 1 process reads all of them,
2 processes half each (alternate chunks), started with the library's worker malloc settings. The
speed-up t(1) / max t(2) is this machine's ceiling for target 5 (no scheduler, no client, no task
overhead: only two cores sharing memory bandwidth and caches, and whatever else the host runs),
alternated ``--repeats`` + 1 times, reported like the fits: the median of the paired ratios, and
best against best.

Part 2, per-chunk figures (the inputs of the worked estimate):

* tasks per iteration and what they are, counted on the 2-worker cluster from the scheduler's
  task stream (a 2-iteration fit minus a 1-iteration fit), with the median compute time of a
  chunk's tasks; from it, tasks per chunk;
* the scheduler's cost per task: a pass over many tiny chunks (``da.ones(n, chunks=1).sum``,
  no real work) at two sizes on the 2-worker cluster; the slope is seconds per task;
* kernel seconds per chunk for K=64, D=64, float32 at the library's default chunk rows
  (:func:`diaggmm_dist.inputs.default_chunk_rows`), one thread, one BLAS thread (best of
  ``--kernel-repeats``: a core not shared with others; the median is printed too);
* read+decode seconds of such a chunk (its Zarr chunks, in memory) stored with the project's
  default codec and chunk size, one thread, and the compression ratio
  (through zarr: an object store's chunks do not take the library's direct local read);
* bytes of one statistics block, (K + 1) x ``n_stat_columns(D)`` float64, and for the chunk
  count of 1 TB the tasks of a pass and the blocks they send, by the library's own grouping
  and tree (:func:`pass_shape`).

Part 3, a worked estimate of one iteration of a 1 TB (raw float32), K=64, D=64 fit on 32 and
256 single-threaded workers, each assumed as fast as one core here: compute, scheduler load
(the scheduler is one process: its per-task cost is paid serially), network bytes of the
tree reduction (an upper bound: every block crosses the network once), and storage bytes.

    python bench/scaling.py                      # 10M rows (the store is written once if missing)
    python bench/scaling.py --rows 2000000 --iters 2 --repeats 1    # smoke run

Writes ``bench/results/scaling.json`` and prints Markdown.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from _common import timed_fit  # noqa: E402

SPEEDUP_TARGET = 1.8
PLAN = {"bytes": 10**12, "components": 64, "features": 64, "workers": (32, 256)}
#: The estimate is also given for chunks this many times the default (fewer tasks).
CHUNK_FACTOR = 4


def local_cluster(n_workers):
    """The LocalCluster the library starts (:func:`diaggmm_dist.cluster.local_cluster`)."""
    from diaggmm_dist.cluster import local_cluster as library_cluster

    return library_cluster(n_workers, threads_per_worker=1)


def _worker_read(path, repeats=40):
    """Best seconds to read (and sum) one 16 MiB dask-sized chunk of the store, in a worker."""
    import zarr

    array = zarr.open_array(path, mode="r")
    rows = 131_072
    n = array.shape[0] // rows
    best = math.inf
    for repeat in range(repeats):
        start = time.perf_counter()
        array[(repeat % n) * rows : (repeat % n + 1) * rows].sum(dtype="float64")
        best = min(best, time.perf_counter() - start)
    return best


def malloc_check(path):
    """One chunk read in a worker of a plain LocalCluster (distributed's malloc settings) and of the
    library's.

    distributed's nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` in this process's environment
    too, and existing variables win over the configuration: the variables are cleared between
    the two clusters so that each starts from its own settings.
    """
    import os

    from distributed import Client, LocalCluster

    def clear():
        return {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("MALLOC_")]}

    saved, out = clear(), {}
    try:
        for name, make in (
            (
                "distributed defaults",
                lambda: LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0"),
            ),
            ("library LocalCluster", lambda: local_cluster(1)),
        ):
            with make() as cluster, Client(cluster) as client:
                out[name] = client.submit(_worker_read, str(path), pure=False).result()
            clear()
    finally:
        os.environ.update(saved)
    return out


def speedup(path, iters, repeats):
    from distributed import Client

    runs = {1: [], 2: []}
    for repeat in range(repeats):
        for n_workers in (1, 2) if repeat % 2 == 0 else (2, 1):
            with local_cluster(n_workers) as cluster, Client(cluster):
                run = timed_fit(str(path), iters)
            runs[n_workers].append(run)
            print(
                f"  {n_workers} worker(s): {run['seconds_per_iteration']:.3f} s/iter "
                f"({', '.join(f'{s:.2f}' for s in run['iteration_seconds'])})",
                flush=True,
            )
    best = {n: min(r["seconds_per_iteration"] for r in rs) for n, rs in runs.items()}
    paired = [
        a["seconds_per_iteration"] / b["seconds_per_iteration"] for a, b in zip(runs[1], runs[2])
    ]
    return {
        "runs": {str(n): rs for n, rs in runs.items()},
        "best_seconds_per_iteration": {str(n): b for n, b in best.items()},
        "speedup": statistics.median(paired),
        "speedup_best": best[1] / best[2],
        "speedup_per_repeat": paired,
    }


def _share_of_chunks(path, starts, rows, barrier, seconds):
    """One process of :func:`process_ceiling`: read and compute its chunks after the barrier; report
    the seconds.
    """
    import numpy as np
    import zarr
    from threadpoolctl import threadpool_limits

    from diaggmm_dist import kernels, zarr_chunks
    from diaggmm_dist.kernels import data_center

    weights, means, precisions = _common.start_values()
    array = zarr.open_array(path, mode="r")
    array = zarr_chunks.direct_rows(array) or array  # read as the fit reads it
    coef = kernels.log_prob_coefficients(
        weights, means, precisions, data_center(weights, means, precisions), np.float32
    )
    with threadpool_limits(1):
        kernels.chunk_statistics(
            array[:rows, :], ("gaussian", coef)
        )  # warm-up: imports, allocator, caches
        barrier.wait()
        start = time.perf_counter()
        for row in starts:
            kernels.chunk_statistics(array[row : row + rows, :], ("gaussian", coef))
        seconds.put(time.perf_counter() - start)


def process_ceiling(path, n_chunks, repeats):
    """Speed-up of 2 plain processes over 1 doing the fit's per-chunk work (module docstring, part
    1b).
    """
    import multiprocessing

    from diaggmm_dist.cluster import worker_malloc_environ
    from diaggmm_dist.inputs import default_chunk_rows

    context = multiprocessing.get_context("spawn")
    rows = default_chunk_rows(_common.D, 4)  # the fit's dask chunks of these float32 stores
    starts = [i * rows for i in range(n_chunks)]
    runs = {1: [], 2: []}
    for repeat in range(repeats):
        for n in (1, 2) if repeat % 2 == 0 else (2, 1):
            barrier, seconds = context.Barrier(n), context.Queue()
            with worker_malloc_environ():
                processes = [
                    context.Process(
                        target=_share_of_chunks,
                        args=(str(path), starts[i::n], rows, barrier, seconds),
                    )
                    for i in range(n)
                ]
                for process in processes:
                    process.start()
            times = [seconds.get() for _ in processes]
            for process in processes:
                process.join()
            runs[n].append(max(times))
            print(f"  plain processes, {n}: {max(times):.3f} s for {n_chunks} chunks", flush=True)
    best = {n: min(times) for n, times in runs.items()}
    paired = [a / b for a, b in zip(runs[1], runs[2])]
    return {
        "chunks": n_chunks,
        "chunk_rows": rows,
        "seconds": {str(n): t for n, t in runs.items()},
        "speedup": statistics.median(paired),
        "speedup_best": best[1] / best[2],
        "speedup_per_repeat": paired,
    }


#: Task names of the tree sum: the library's own, and dask's (graphs whose chunks share tasks).
REDUCTION_NAMES = ("diaggmm-pass-sum", "sum")
#: Task names of the library's groups of chunks on a cluster (engine.cluster.cluster_graph).
CHUNK_NAMES = ("diaggmm-pass-chunks",)


def _compute_seconds(task):
    return sum(
        s["stop"] - s["start"] for s in task.get("startstops", ()) if s.get("action") == "compute"
    )


def task_census(path, client, n_chunks):
    """Tasks of one iteration (difference of a 2- and a 1-iteration fit) and their compute times.

    Splits them into the tree reduction (:data:`REDUCTION_NAMES`), per-chunk tasks (names that
    ran a multiple of ``n_chunks`` times) and a constant rest (graph inputs).
    """
    from dask.utils import key_split
    from distributed import get_task_stream

    with get_task_stream(client) as one:
        timed_fit(str(path), 0)
    with get_task_stream(client) as two:
        timed_fit(str(path), 1)
    kinds, counts_one = {}, {}
    for task in two.data:
        kinds.setdefault(key_split(task["key"]), []).append(_compute_seconds(task))
    for task in one.data:
        counts_one[key_split(task["key"])] = counts_one.get(key_split(task["key"]), 0) + 1
    per_iteration = {name: len(times) - counts_one.get(name, 0) for name, times in kinds.items()}
    per_iteration = {k: v for k, v in per_iteration.items() if v}
    reduction = sum(v for k, v in per_iteration.items() if k.startswith(REDUCTION_NAMES))
    chunk_tasks = sum(
        v
        for k, v in per_iteration.items()
        if k.startswith(CHUNK_NAMES) or (not k.startswith(REDUCTION_NAMES) and v % n_chunks == 0)
    )
    total = sum(per_iteration.values())
    return {
        "chunks": n_chunks,
        "tasks_per_iteration": total,
        "tasks_per_iteration_by_name": per_iteration,
        "reduction_tasks_measured": reduction,
        "tasks_per_chunk": chunk_tasks / n_chunks,
        "constant_tasks": total - reduction - chunk_tasks,
        "median_compute_seconds_by_name": {k: statistics.median(v) for k, v in kinds.items()},
    }


def pass_shape(n_chunks, workers):
    """The library's pass over ``n_chunks`` chunks on ``workers`` single-threaded workers.

    Chunks per task (the most common size), chunk tasks, tree-sum tasks and statistics blocks
    sent, from the library's own rules (``engine.cluster.group_sizes``,
    ``engine.cluster.first_level_windows``, ``engine.graphs.add_tree_sum``) on placeholder
    keys. A chunk task sends one block when it adds its chunks up (a group alone in its window
    of the tree's first level), else one per chunk; every task of the tree sends one (the
    root's goes to the client).
    """
    from diaggmm_dist.engine.cluster import first_level_windows, group_sizes
    from diaggmm_dist.engine.graphs import add_tree_sum

    sizes = group_sizes(n_chunks, workers)
    windows, tree = first_level_windows(sizes), {}
    keys = [("chunks", i) for i in range(len(sizes))]
    add_tree_sum(
        tree, [keys[w[0]] if len(w) == 1 else [keys[i] for i in w] for w in windows], "sum"
    )
    sent = sum(1 if len(w) == 1 else sum(sizes[i] for i in w) for w in windows) + len(tree)
    return {
        "chunks_per_task": statistics.mode(sizes),
        "chunk_tasks": len(sizes),
        "reduction_tasks": len(tree),
        "blocks_sent": sent,
    }


def scheduler_overhead(client, sizes=(2000, 8000), repeats=3):
    """The scheduler's cost per task, from passes over many trivial chunks at two graph sizes.

    ``da.ones(n, chunks=1).sum(split_every=SPLIT_EVERY)``: no real work, so the time is the
    scheduler's and the workers' per-task handling. Reported as slopes between the two sizes:
    wall seconds per task, and CPU seconds per task of the thread that runs the scheduler
    (on a LocalCluster, an event-loop thread of this process). The CPU figure is the serial
    cost that bounds a cluster's task rate; the wall figure also holds this machine's
    contention (2 cores shared by the scheduler, the client, 2 workers and other users).
    """
    import threading

    import dask.array as da
    import psutil

    from diaggmm_dist.engine import SPLIT_EVERY

    scheduler_thread = client.run_on_scheduler(threading.get_native_id)

    def scheduler_cpu():
        for thread in psutil.Process().threads():
            if thread.id == scheduler_thread:
                return thread.user_time + thread.system_time
        return float("nan")

    points = []
    for size in sizes:
        total = da.ones((size,), chunks=1).sum(split_every=SPLIT_EVERY)
        n_tasks = len(dict(total.__dask_graph__()))
        best, best_cpu = math.inf, math.inf
        for _ in range(repeats):
            cpu, start = scheduler_cpu(), time.perf_counter()
            client.compute(total, optimize_graph=False).result()
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, scheduler_cpu() - cpu)
        points.append(
            {"chunks": size, "tasks": n_tasks, "seconds": best, "scheduler_cpu_seconds": best_cpu}
        )
    (a, b) = points[0], points[-1]
    return {
        "points": points,
        "seconds_per_task": (b["seconds"] - a["seconds"]) / (b["tasks"] - a["tasks"]),
        "scheduler_cpu_seconds_per_task": (b["scheduler_cpu_seconds"] - a["scheduler_cpu_seconds"])
        / (b["tasks"] - a["tasks"]),
    }


def plan_chunk_figures(repeats):
    """Kernel and read+decode seconds of one default-size chunk at K=64, D=64, float32."""
    import numpy as np
    import zarr
    from threadpoolctl import threadpool_limits

    from diaggmm_dist import inputs, kernels
    from diaggmm_dist.datasets import synthetic
    from diaggmm_dist.stores.zarr_groups import data_chunk_rows

    k, d = PLAN["components"], PLAN["features"]
    rows = inputs.default_chunk_rows(d, 4)
    weights, means, covariances = synthetic.mixture_parameters(k, d, seed=0)
    x = np.ascontiguousarray(
        synthetic._chunk(0, rows, weights, means, covariances, 0, np.dtype("float32"))[:, :d]
    )
    shift = weights @ means
    coefficients = kernels.log_prob_coefficients(weights, means, 1 / covariances, shift, np.float32)
    kernel = []
    with threadpool_limits(1, "blas"):
        for _ in range(repeats):
            start = time.perf_counter()
            stats = kernels.chunk_statistics(x, ("gaussian", coefficients))
            kernel.append(time.perf_counter() - start)
    store = zarr.storage.MemoryStore()
    zarr_rows = data_chunk_rows(d, 4)
    array = zarr.create_array(
        store,
        shape=x.shape,
        chunks=(zarr_rows, d),
        dtype="float32",
        compressors=synthetic.DEFAULT_COMPRESSORS,
    )
    array[...] = x
    stored = sum(len(v) for key, v in store._store_dict.items() if key.startswith("c"))
    read = []
    for _ in range(repeats):
        start = time.perf_counter()
        array[...]
        read.append(time.perf_counter() - start)
    return {
        "components": k,
        "features": d,
        "chunk_rows": rows,
        "zarr_chunk_rows": zarr_rows,
        "chunk_bytes": x.nbytes,
        # best of the repeats: what one core does when it is not shared (the others are in *_all)
        "kernel_seconds": min(kernel),
        "kernel_seconds_all": kernel,
        "read_decode_seconds": min(read),
        "read_decode_seconds_all": read,
        "codec": [c.to_dict() for c in synthetic.DEFAULT_COMPRESSORS or []],
        "compression_ratio": x.nbytes / stored,
        "stat_block_shape": list(stats.shape),
        "stat_block_bytes": int(stats.nbytes),
        "stat_block_bytes_formula": (k + 1) * kernels.n_stat_columns(d) * 8,
    }


def worked_estimate(chunk, census, seconds_per_task):
    rows = PLAN["bytes"] // (PLAN["features"] * 4)
    n_chunks = math.ceil(rows / chunk["chunk_rows"])
    # counted for the plan's largest cluster (fewer workers group at least as much)
    shape = pass_shape(n_chunks, max(PLAN["workers"]))
    tasks = shape["chunk_tasks"] + shape["reduction_tasks"] + census["constant_tasks"]
    per_chunk = chunk["kernel_seconds"] + chunk["read_decode_seconds"]
    network = shape["blocks_sent"] * chunk["stat_block_bytes"]
    out = {
        "rows": rows,
        "chunks": n_chunks,
        **shape,
        "tasks_per_iteration": tasks,
        "scheduler_seconds": tasks * seconds_per_task,
        "core_seconds": n_chunks * per_chunk,
        "network_bytes_upper_bound": network,
        "storage_bytes": PLAN["bytes"] / chunk["compression_ratio"],
        "workers": {},
    }
    for workers in PLAN["workers"]:
        compute = math.ceil(n_chunks / workers) * per_chunk
        out["workers"][str(workers)] = {
            "chunks_per_worker": math.ceil(n_chunks / workers),
            "compute_seconds": compute,
            "scheduler_seconds": out["scheduler_seconds"],
            "estimate_seconds": max(compute, out["scheduler_seconds"]),
            "bound_by": "compute" if compute >= out["scheduler_seconds"] else "scheduler",
            "network_bytes_per_worker": network / workers,
            "storage_bytes_per_worker": out["storage_bytes"] / workers,
        }
    # The scheduler's load falls with the number of chunks: the same data in chunks CHUNK_FACTOR
    # times larger (chunk_size=...; the per-row compute cost assumed unchanged).
    big_chunks = math.ceil(rows / (chunk["chunk_rows"] * CHUNK_FACTOR))
    big = pass_shape(big_chunks, max(PLAN["workers"]))
    big_tasks = big["chunk_tasks"] + big["reduction_tasks"] + census["constant_tasks"]
    out["larger_chunks"] = {
        "chunk_rows": chunk["chunk_rows"] * CHUNK_FACTOR,
        "chunks": big_chunks,
        "tasks_per_iteration": big_tasks,
        "scheduler_seconds": big_tasks * seconds_per_task,
        "network_bytes_upper_bound": big["blocks_sent"] * chunk["stat_block_bytes"],
        "workers": {
            str(w): {"compute_seconds": math.ceil(big_chunks / w) * per_chunk * CHUNK_FACTOR}
            for w in PLAN["workers"]
        },
    }
    for w in out["larger_chunks"]["workers"].values():
        w["estimate_seconds"] = max(w["compute_seconds"], out["larger_chunks"]["scheduler_seconds"])
    return out


def main(argv=None):
    from distributed import Client

    from diaggmm_dist.engine import SPLIT_EVERY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--kernel-repeats", type=int, default=7)
    parser.add_argument(
        "--ceiling-chunks", type=int, default=32, help="chunks read by the plain-process ceiling"
    )
    parser.add_argument("--store", default=str(_common.DATA))
    args = parser.parse_args(argv)

    info = _common.machine_info()
    path = _common.mixture_store(args.rows, root=args.store)
    n_chunks = len(_common_chunks(path))
    print(f"speed-up, {args.rows:,} rows ({n_chunks} dask chunks):", flush=True)
    result = {
        "machine": info,
        "rows": args.rows,
        "timed_iterations": args.iters,
        "repeats": args.repeats,
        "target_speedup": SPEEDUP_TARGET,
        "split_every": SPLIT_EVERY,
    }
    result["worker_chunk_read_seconds"] = malloc_check(path)
    result["speedup"] = speedup(path, args.iters, args.repeats)
    result["ceiling"] = process_ceiling(path, min(args.ceiling_chunks, n_chunks), args.repeats + 1)
    with local_cluster(2) as cluster, Client(cluster) as client:
        census = task_census(path, client, n_chunks)
        census["reduction_tasks"] = pass_shape(n_chunks, 2)["reduction_tasks"]
        result["tasks"] = census
        result["scheduler"] = scheduler_overhead(client)
    result["chunk"] = plan_chunk_figures(args.kernel_repeats)
    result["estimate"] = worked_estimate(
        result["chunk"], census, result["scheduler"]["scheduler_cpu_seconds_per_task"]
    )
    out = _common.write_json("scaling.json", result)
    print()
    print(render(result))
    print(f"\n(written to {out})")


def _common_chunks(path):
    from diaggmm_dist import inputs

    return inputs.as_row_chunked(str(path)).chunks[0]


def _gib(value):
    return f"{value / 2**30:,.2f} GiB"


def render(result):
    s, t, c, e, sch = (
        result["speedup"],
        result["tasks"],
        result["chunk"],
        result["estimate"],
        result["scheduler"],
    )
    best = s["best_seconds_per_iteration"]
    lines = [
        f"Machine: {_common.machine_line(result['machine'])}",
        "",
        f"Fit: {result['rows']:,} x 32 float32 rows from the cached Zarr store, K=16, fixed start, "
        f"tol=0, {result['timed_iterations']} timed iterations (median) after one untimed; "
        f"LocalCluster of single-threaded worker processes, {result['repeats']} alternated "
        "repeats; speed-up: the median of each repeat's 1-worker time over its 2-worker time (s / "
        "iter: the best of each).",
        "",
        "| target (issue 5, #5) | 1 worker s / iter | 2 workers s / iter | speed-up | result |",
        "|---|---:|---:|---:|---|",
        f"| 2 workers >= {SPEEDUP_TARGET}x faster than 1 | {best['1']:.3f} | {best['2']:.3f} | "
        f"{s['speedup']:.2f}x | {_common.verdict(s['speedup'] >= SPEEDUP_TARGET)} |",
        "",
        f"(speed-up per repeat: {', '.join(f'{v:.2f}x' for v in s['speedup_per_repeat'])}; best "
        f"against best {s['speedup_best']:.2f}x; on a 2-core machine the scheduler and client "
        "share the two cores with the two workers.)",
        "",
    ]
    ceiling = result.get("ceiling")
    if ceiling:
        plain = {
            n: ceiling["chunks"] / min(ceiling["seconds"][n]) for n in ("1", "2")
        }  # chunks per second
        fitted = {n: t["chunks"] / best[n] for n in ("1", "2")}
        lines += [
            "What the machine allows: the same per-chunk work (read from the store and the kernel) "
            f"in plain processes, no dask, {ceiling['chunks']} chunks of {ceiling['chunk_rows']:,} "
            f"rows: 2 processes {ceiling['speedup']:.2f}x faster than 1 (median of the repeats; "
            f"per repeat {', '.join(f'{v:.2f}x' for v in ceiling['speedup_per_repeat'])}; best "
            f"{min(ceiling['seconds']['1']):.2f} s vs {min(ceiling['seconds']['2']):.2f} s). In "
            f"chunks per second, the fit on 1 worker ran at {fitted['1'] / plain['1']:.0%} of 1 "
            f"plain process and on 2 workers at {fitted['2'] / plain['2']:.0%} of 2 plain "
            "processes (the fit's iterations also hold the M-step and the scheduling between "
            "passes).",
            "",
        ]
    lines += [
        "Per-chunk figures:",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| tasks per iteration, {t['chunks']} chunks (measured, task stream) | "
        f"{t['tasks_per_iteration']:,} |",
        f"| of which tree reduction: measured / expected for {t['chunks']} blocks, fan-in "
        f"{result['split_every']} | {t['reduction_tasks_measured']:,} / {t['reduction_tasks']:,} |",
        "| chunk tasks per chunk (groups of up to 8 chunks); constant tasks per pass | "
        f"{t['tasks_per_chunk']:.2f}; {t['constant_tasks']} |",
        "| scheduler CPU per task (trivial tasks, LocalCluster of 2; slope over "
        f"{sch['points'][0]['tasks']:,} -> {sch['points'][-1]['tasks']:,} tasks) | "
        f"{sch['scheduler_cpu_seconds_per_task'] * 1e3:.3f} ms |",
        "| wall time per task, same passes (this busy 2-core machine) | "
        f"{sch['seconds_per_task'] * 1e3:.3f} ms |",
        f"| kernel per chunk, K={c['components']}, D={c['features']}, {c['chunk_rows']:,} rows "
        f"float32, 1 thread, best of {len(c['kernel_seconds_all'])} (median "
        f"{statistics.median(c['kernel_seconds_all']):.3f} s) | {c['kernel_seconds']:.3f} s |",
        "| read+decode per chunk (default codec, from memory), best of "
        f"{len(c['read_decode_seconds_all'])} | {c['read_decode_seconds']:.4f} s |",
        f"| compression ratio of that chunk | {c['compression_ratio']:.3f} |",
        f"| statistics block ({c['stat_block_shape'][0]} x {c['stat_block_shape'][1]} float64) | "
        f"{c['stat_block_bytes']:,} bytes |",
    ]
    reads = result["worker_chunk_read_seconds"]
    lines += [
        "| worker reading one 16 MiB chunk, best of 40: distributed's malloc settings / the "
        f"library's LocalCluster | {reads['distributed defaults'] * 1e3:.1f} ms / "
        f"{reads['library LocalCluster'] * 1e3:.1f} ms |"
    ]
    names = ", ".join(f"{k} {v}" for k, v in t["tasks_per_iteration_by_name"].items())
    lines += ["", f"Tasks of one iteration by name: {names}."]
    lines += [
        "",
        f"Worked estimate: one EM iteration of 1 TB (float32, {e['rows']:,} rows x "
        f"{c['features']}), K={c['components']}, {e['chunks']:,} chunks of {c['chunk_rows']:,} "
        "rows:",
        "",
        f"* compute: {e['chunks']:,} chunks x ({c['kernel_seconds']:.3f} s kernel + "
        f"{c['read_decode_seconds']:.4f} s read+decode) = {e['core_seconds']:,.0f} core-seconds "
        "per iteration, spread over the workers;",
        f"* scheduler: {e['chunk_tasks']:,} tasks of {e['chunks_per_task']} chunks (fewer at the "
        f"end of a pass) + {e['reduction_tasks']:,} reduction tasks + {t['constant_tasks']} = "
        f"{e['tasks_per_iteration']:,} tasks; at {sch['scheduler_cpu_seconds_per_task'] * 1e3:.3f} "
        f"ms of scheduler CPU each that is {e['scheduler_seconds']:,.0f} s of scheduler time per "
        "iteration, paid serially in one process (overlapping with the compute);",
        f"* network: {e['blocks_sent']:,} blocks of "
        f"{c['stat_block_bytes']:,} bytes sent up the tree; at most "
        f"{e['network_bytes_upper_bound'] / 1e9:,.1f} GB cross the network per iteration (every "
        "block once; blocks reduced on the worker that made them do not);",
        f"* storage: {e['storage_bytes'] / 1e9:,.0f} GB read per iteration at the default codec's "
        "ratio.",
        "",
        "| workers | chunks / worker | compute s / iter | scheduler s / iter | estimate s / iter | "
        "bound by | network per worker | storage read per worker |",
        "|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for workers, w in e["workers"].items():
        lines.append(
            f"| {workers} | {w['chunks_per_worker']:,} | {w['compute_seconds']:,.1f} | "
            f"{w['scheduler_seconds']:,.1f} | {w['estimate_seconds']:,.1f} | {w['bound_by']} | "
            f"{w['network_bytes_per_worker'] / 1e6:,.0f} MB | "
            f"{w['storage_bytes_per_worker'] / 1e9:,.1f} GB |"
        )
    big = e["larger_chunks"]
    lines += [
        "",
        f"With chunks {CHUNK_FACTOR}x larger (`chunk_size={big['chunk_rows']:,}`, "
        f"{big['chunk_rows'] * c['features'] * 4 / 2**20:.0f} MiB): {big['chunks']:,} chunks, "
        f"{big['tasks_per_iteration']:,} tasks, {big['scheduler_seconds']:,.0f} s of scheduler "
        f"time, at most {big['network_bytes_upper_bound'] / 1e9:,.1f} GB over the network; "
        "estimate "
        + ", ".join(
            f"{w} workers {v['estimate_seconds']:,.1f} s" for w, v in big["workers"].items()
        )
        + " per iteration.",
    ]
    lines += [
        "",
        "Assumptions: each worker is one single-threaded process as fast as one core of this "
        "machine; storage delivers the chunks as fast as they are decoded (else add storage bytes "
        "per worker / its bandwidth); the scheduler's CPU per task as measured here on trivial "
        "tasks (real tasks carry a little more metadata); the tree reduction adds a few round "
        "trips of latency, not counted.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
