"""The cost of TLS on the library's LocalCluster (issue 22, item 1): per EM iteration and to start.

The same fit (K=16, D=32 float32, the fixed start, ``tol=0``, ``--iters`` timed iterations
after one untimed) on the same cached store (``--rows``, default 1M, from
``bench/results/data/``), on the library's LocalCluster of 2 single-threaded worker
processes (:func:`diaggmm_dist.cluster.local_cluster`) with TLS (its default,
``Security.temporary()``) and without (``security=False``), alternated ``--repeats`` times in
the same run, a fresh cluster each time. Reported: the median seconds per iteration of each
fit, the median over the repeats of the ratio of each TLS fit to the plain fit run beside it
(this VM's speed drifts within minutes), best against best, and the seconds to start each
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
    RESULTS,
    machine_info,
    machine_line,
    mixture_store,
    timed_fit,
    write_json,
)


def one_fit(path, iters, tls):
    """A fit on a fresh library LocalCluster with or without TLS, and its start time."""
    from distributed import Client

    from diaggmm_dist.cluster import local_cluster

    start = time.perf_counter()
    with local_cluster(2, threads_per_worker=1, security=tls) as cluster, Client(cluster) as c:
        started = time.perf_counter() - start
        scheme = c.scheduler.address.split("://")[0]
        run = timed_fit(str(path), iters)
    run.update(start_seconds=started, scheme=scheme)
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
                f"{run['start_seconds']:.2f} s "
                f"({', '.join(f'{s:.2f}' for s in run['iteration_seconds'])})",
                flush=True,
            )
    bounds = {run["lower_bound"] for name in runs for run in runs[name]}
    per_iteration = {n: [r["seconds_per_iteration"] for r in rs] for n, rs in runs.items()}
    paired = [t / p for t, p in zip(per_iteration["tls"], per_iteration["plain"], strict=True)]
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
        "median_start_seconds": {
            n: statistics.median(r["start_seconds"] for r in rs) for n, rs in runs.items()
        },
        "same_lower_bound": len(bounds) == 1,
    }
    (RESULTS / "quick").mkdir(parents=True, exist_ok=True)
    write_json("quick/tls_cost.json" if args.quick else "tls_cost.json", result)
    median = result["median_seconds_per_iteration"]
    start = result["median_start_seconds"]
    print(
        f"TLS {median['tls']:.3f} s/iter vs plain {median['plain']:.3f} s/iter (medians); "
        f"TLS/plain {result['tls_over_plain_paired_median']:.3f} (median of paired ratios "
        f"{', '.join(f'{r:.3f}' for r in paired)}), {result['tls_over_plain_best']:.3f} best "
        f"vs best; start {start['tls']:.2f} s vs {start['plain']:.2f} s; same lower bound: "
        f"{result['same_lower_bound']}"
    )
    if not result["same_lower_bound"]:
        raise SystemExit("the fits with and without TLS differ")
    return result


if __name__ == "__main__":
    main()
