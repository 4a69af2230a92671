"""The cost of TLS on the library's LocalCluster (issue 22, item 1): per EM iteration and to start.

The same fit (K=16, D=32 float32, the fixed start, ``tol=0``, ``--iters`` timed iterations
after one untimed) on the same cached store (``--rows``, default 1M, from
``bench/results/data/``), on the library's LocalCluster of 2 single-threaded worker
processes (:func:`diaggmm_dist.cluster.local_cluster`) with TLS (its default,
``Security.temporary()``) and without (``security=False``), alternated ``--repeats`` times in
the same run, a fresh cluster each time. Reported: the median seconds per iteration of each
fit; the median over the repeats of the ratio of each TLS fit to the plain fit run beside it
(this VM's speed drifts within minutes), and best against best; the CPU seconds per iteration
of this process (client and scheduler) and the workers together, which what else runs on a
shared VM sways less than wall time; the wall and CPU seconds per task of a pass over 3,000
trivial chunks (the per-message cost, undiluted by compute); and the seconds to start each
cluster (TLS makes a 2048-bit RSA key and a certificate first). Every fit's final lower bound
must be the same to the bit, with and without TLS.

    python bench/tls_cost.py             # ~3 min on the 2-core VM
    python bench/tls_cost.py --quick     # seconds: checks the machinery only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    cpu_seconds_by_process,
    machine_info,
    machine_line,
    mixture_store,
    timed_fit,
    write_json,
)


def tiny_tasks(client, chunks=3000, repeats=3):
    """Wall and CPU seconds per task of a pass over ``chunks`` trivial chunks (best of
    ``repeats``): no real work, only the scheduler's, the workers' and the messages' handling,
    where TLS's cost per message shows undiluted."""
    import dask.array as da

    total = da.ones((chunks,), chunks=1).sum(split_every=8)
    n_tasks = len(dict(total.__dask_graph__()))
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        cpu, start = sum(cpu_seconds_by_process().values()), time.perf_counter()
        client.compute(total, optimize_graph=False).result()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, sum(cpu_seconds_by_process().values()) - cpu)
    return {
        "tasks": n_tasks,
        "seconds_per_task": best / n_tasks,
        "cpu_per_task": best_cpu / n_tasks,
    }


def one_fit(path, iters, tls):
    """A fit on a fresh library LocalCluster with or without TLS, and its start time."""
    from distributed import Client

    from diaggmm_dist.cluster import local_cluster

    start = time.perf_counter()
    with local_cluster(2, threads_per_worker=1, security=tls) as cluster, Client(cluster) as c:
        started = time.perf_counter() - start
        scheme = c.scheduler.address.split("://")[0]
        timed_fit(str(path), 0)  # warm-up: the workers compile and import before the timing
        before = sum(cpu_seconds_by_process().values())
        run = timed_fit(str(path), iters)
        cpu = sum(cpu_seconds_by_process().values()) - before
        run["tiny_tasks"] = tiny_tasks(c)
    # CPU seconds of this process (client, scheduler) and the workers: less swayed than wall
    # time by what else the shared VM runs
    run.update(start_seconds=started, scheme=scheme, cpu_seconds_per_iteration=cpu / (iters + 1))
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 iterations, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.iters, args.repeats = 100_000, 3, 1
    info = machine_info()
    print(machine_line(info), flush=True)
    path = mixture_store(args.rows)
    runs = {"tls": [], "plain": []}
    for repeat in range(args.repeats):
        for name in ("tls", "plain") if repeat % 2 == 0 else ("plain", "tls"):
            run = one_fit(path, args.iters, name == "tls")
            assert run["scheme"] == ("tls" if name == "tls" else "tcp"), run["scheme"]
            runs[name].append(run)
            print(
                f"  {name:5s}: {run['seconds_per_iteration']:.3f} s/iter, started in "
                f"{run['start_seconds']:.2f} s, {run['cpu_seconds_per_iteration']:.3f} CPU s/iter, "
                f"{run['tiny_tasks']['seconds_per_task'] * 1e3:.2f} ms and "
                f"{run['tiny_tasks']['cpu_per_task'] * 1e3:.2f} CPU ms per tiny task "
                f"({', '.join(f'{s:.2f}' for s in run['iteration_seconds'])})",
                flush=True,
            )
    bounds = {run["lower_bound"] for name in runs for run in runs[name]}
    per_iteration = {n: [r["seconds_per_iteration"] for r in rs] for n, rs in runs.items()}
    paired = [t / p for t, p in zip(per_iteration["tls"], per_iteration["plain"], strict=True)]
    cpu = {n: [r["cpu_seconds_per_iteration"] for r in rs] for n, rs in runs.items()}
    tiny = {
        n: {
            key: statistics.median(r["tiny_tasks"][key] for r in rs)
            for key in ("seconds_per_task", "cpu_per_task")
        }
        for n, rs in runs.items()
    }
    result = {
        "machine": info,
        "rows": args.rows,
        "iters": args.iters,
        "repeats": args.repeats,
        "runs": runs,
        "median_seconds_per_iteration": {n: statistics.median(v) for n, v in per_iteration.items()},
        "best_seconds_per_iteration": {n: min(v) for n, v in per_iteration.items()},
        "tls_over_plain_paired_median": statistics.median(paired),
        "tls_over_plain_per_repeat": paired,
        "tls_over_plain_best": min(per_iteration["tls"]) / min(per_iteration["plain"]),
        "median_cpu_seconds_per_iteration": {n: statistics.median(v) for n, v in cpu.items()},
        "tiny_tasks_median": tiny,
        "median_start_seconds": {
            n: statistics.median(r["start_seconds"] for r in rs) for n, rs in runs.items()
        },
        "same_lower_bound": len(bounds) == 1,
    }
    write_json("tls_cost.json", result)
    median = result["median_seconds_per_iteration"]
    start = result["median_start_seconds"]
    print(
        f"TLS {median['tls']:.3f} s/iter vs plain {median['plain']:.3f} s/iter (medians); "
        f"TLS/plain {result['tls_over_plain_paired_median']:.3f} (median of paired ratios "
        f"{', '.join(f'{r:.3f}' for r in paired)}), {result['tls_over_plain_best']:.3f} best "
        f"vs best; CPU {result['median_cpu_seconds_per_iteration']['tls']:.3f} vs "
        f"{result['median_cpu_seconds_per_iteration']['plain']:.3f} s/iter; "
        f"tiny tasks {tiny['tls']['seconds_per_task'] * 1e3:.2f} vs "
        f"{tiny['plain']['seconds_per_task'] * 1e3:.2f} ms, "
        f"{tiny['tls']['cpu_per_task'] * 1e3:.2f} vs {tiny['plain']['cpu_per_task'] * 1e3:.2f} "
        f"CPU ms per task; start {start['tls']:.2f} s vs {start['plain']:.2f} s; same lower bound: "
        f"{result['same_lower_bound']}"
    )
    if not result["same_lower_bound"]:
        raise SystemExit("the fits with and without TLS differ")
    return result


if __name__ == "__main__":
    main()
