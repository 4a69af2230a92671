"""When ``diaggmm fit`` should run on its own threads rather than start a LocalCluster.

Issue 23, section 1: small inputs need no process cluster. Measured on this machine:

1. **start**: the wall seconds of ``cluster.dask_client()`` without an address, as the command
   uses it (a LocalCluster of one single-threaded worker process per core, with TLS), from
   the call until the client is ready, and of its close; ``--repeats`` times.
2. **EM per iteration** at several sizes (rows x 8 float64 features in a Zarr store on disk,
   K=4, the default chunking), on this process's threads and on a LocalCluster already
   running (its start excluded): the median of the iterations' own seconds (the library's
   per-iteration log records), iterations 2 to ``--iters``.
3. **whole commands**: ``python -m diaggmm_dist fit`` with ``--threads`` and with
   ``--cluster``, at two sizes, ``--max-iter 20 --tol 0``, alternated.

    python bench/threads_or_cluster.py            # ~5 min on the 2-core VM
    python bench/threads_or_cluster.py --quick    # ~1 min: the machinery only
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_info, machine_line, write_json  # noqa: E402

D, K = 8, 4


def write_store(folder: Path, rows: int) -> str:
    from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr

    path = folder / f"x{rows}.zarr"
    if not path.exists():
        params = mixture_parameters(K, D, seed=3, spread=1.5)
        write_mixture_zarr(path, rows, *params, chunk_rows=65_536, seed=3, dtype="float64")
    return str(path / "X")


class IterationSeconds(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds = []

    def emit(self, record):
        if getattr(record, "iteration", None) is not None:
            self.seconds.append(record.seconds)


def iteration_seconds(data: str, iters: int) -> float:
    """The median seconds of iterations 2..iters of a fit of ``data`` where work runs now."""
    from diaggmm_dist import DiagGMM

    handler = IterationSeconds()
    logger = logging.getLogger("diaggmm_dist")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        DiagGMM(K, max_iter=iters, tol=0, random_state=0).fit(data)
    finally:
        logger.removeHandler(handler)
    return statistics.median(handler.seconds[1:])


def cluster_start_and_close() -> tuple[float, float]:
    from diaggmm_dist.cluster import dask_client

    start = time.perf_counter()
    manager = dask_client()
    manager.__enter__()
    ready = time.perf_counter() - start
    start = time.perf_counter()
    manager.__exit__(None, None, None)
    return ready, time.perf_counter() - start


def command_seconds(data: str, mode: str, out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    command = [sys.executable, "-m", "diaggmm_dist", "fit", data, "--k", str(K), "--quiet"]
    command += ["--max-iter", "20", "--tol", "0", mode, "--out", str(out), "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr[-800:]}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = [50_000, 200_000, 800_000, 3_200_000]
    commands_at = [200_000, 3_200_000]
    if args.quick:
        sizes, commands_at, args.repeats, args.iters = [50_000, 200_000], [50_000], 1, 3
    info = machine_info()
    print(machine_line(info))
    from diaggmm_dist.cluster import dask_client

    with tempfile.TemporaryDirectory(prefix="threads-or-cluster-") as tmp:
        folder = Path(tmp)
        stores = {rows: write_store(folder, rows) for rows in sorted({*sizes, *commands_at})}
        starts = [cluster_start_and_close() for _ in range(args.repeats)]
        print("LocalCluster start / close (s):", [f"{a:.2f} / {b:.2f}" for a, b in starts])
        rows_out = []
        threads = {rows: iteration_seconds(stores[rows], args.iters) for rows in sizes}
        with dask_client():
            cluster = {rows: iteration_seconds(stores[rows], args.iters) for rows in sizes}
        for rows in sizes:
            nbytes = rows * D * 8
            rows_out.append(
                {
                    "rows": rows,
                    "bytes": nbytes,
                    "threads_s_per_iteration": threads[rows],
                    "cluster_s_per_iteration": cluster[rows],
                    "threads_ns_per_byte": threads[rows] / nbytes * 1e9,
                    "cluster_ns_per_byte": cluster[rows] / nbytes * 1e9,
                }
            )
        commands = []
        for rows in commands_at:
            for _ in range(args.repeats if not args.quick else 1):
                for mode in ("--threads", "--cluster"):
                    seconds = command_seconds(stores[rows], mode, folder / "m.zarr")
                    commands.append({"rows": rows, "mode": mode, "seconds": seconds})
    start_median = statistics.median(a for a, _ in starts)
    close_median = statistics.median(b for _, b in starts)
    print(f"\nLocalCluster: start {start_median:.2f} s, close {close_median:.2f} s (medians)")
    print("\n| rows | MB | threads s/iter | cluster s/iter | threads ns/B | cluster ns/B |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows_out:
        print(
            f"| {row['rows']:,} | {row['bytes'] / 1e6:.1f} | {row['threads_s_per_iteration']:.3f}"
            f" | {row['cluster_s_per_iteration']:.3f} | {row['threads_ns_per_byte']:.2f}"
            f" | {row['cluster_ns_per_byte']:.2f} |"
        )
    print("\n| rows | mode | command s (each run) |\n|---:|---|---|")
    for rows in commands_at:
        for mode in ("--threads", "--cluster"):
            runs = [c["seconds"] for c in commands if c["rows"] == rows and c["mode"] == mode]
            print(f"| {rows:,} | {mode} | {', '.join(f'{s:.1f}' for s in runs)} |")
    result = {
        "machine": info,
        "cluster_start_close": starts,
        "iterations": rows_out,
        "commands": commands,
    }
    print(f"\nwrote {write_json('threads_or_cluster.json', result)}")


if __name__ == "__main__":
    main()
