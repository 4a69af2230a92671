"""Issue 5, target 4 (first half): per-iteration time spent outside chunk compute, with 1,000
chunks.

One EM iteration is: one pass of per-chunk tasks (read a chunk, its statistics), the tree sum
of the statistics, the M-step, the checkpoint write, and, around them, graph work and
scheduling. This script fits ``--chunks`` chunks of ``--chunk-rows`` rows (default: the
library's own default chunk size for 32 float32 features) on dask's threads with a checkpoint
on disk, and splits each iteration's wall time into

* chunk compute: the summed time of the per-chunk statistics calls, divided by the number
  of threads that ran them (timed inside the task, around ``kernels.chunk_statistics``);
* everything else: wall time minus that (graph building, scheduling, the reduction, the
  M-step, the checkpoint write, and any thread left idle at the end of a pass).

The data is 32 random (chunk-rows x 32) float32 blocks, cycled through ``--chunks`` chunks
without copying, so that 1,000 default-sized chunks (16 GiB of float32) fit a small machine;
every chunk still goes through the full kernel and is read from memory, not from cache.

    python bench/overheads.py                      # 1,000 chunks of the default size
    python bench/overheads.py --chunk-rows 8192    # 1,000 small chunks
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dask.array as da  # noqa: E402
from _common import D, K, machine_info, machine_line, start_values, verdict, write_json  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from diaggmm_dist import DiagGMM, inputs, kernels  # noqa: E402

TARGET = 0.05
#: Distinct random chunks the 1,000 chunks cycle through.
POOL = 32


class KernelClock:
    """Summed seconds spent in ``kernels.chunk_statistics`` (patched for the run), thread-safe."""

    def __init__(self):
        self.seconds, self.calls, self._lock = 0.0, 0, threading.Lock()
        self._real = kernels.chunk_statistics

    def _timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._real(*args, **kwargs)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - start
                self.calls += 1

    def __enter__(self):
        kernels.chunk_statistics = self._timed
        return self

    def __exit__(self, *exc):
        kernels.chunk_statistics = self._real

    def take(self):
        with self._lock:
            taken = self.seconds, self.calls
            self.seconds, self.calls = 0.0, 0
        return taken


def repeated_chunks(n_chunks, chunk_rows, seed=0, distinct=POOL):
    """A (n_chunks * chunk_rows, D) float32 dask array whose chunks cycle through ``distinct``
    random blocks.

    The blocks (``distinct`` x chunk_rows x 32 float32: 512 MiB at the default size) are far
    larger than the CPU caches, so every chunk is read from memory as a real in-memory fit
    reads it, and the chunks are the graph's data, as for numpy input
    (:func:`diaggmm_dist.inputs.in_memory_array`).
    """
    from diaggmm_dist.datasets.synthetic import mixture_parameters

    rng = np.random.default_rng(seed)
    weights, means, covariances = mixture_parameters(K, D, seed=0)
    blocks = []
    for _ in range(min(distinct, n_chunks)):
        labels = rng.choice(K, size=chunk_rows, p=weights)
        blocks.append(
            (
                means[labels] + rng.standard_normal((chunk_rows, D)) * np.sqrt(covariances[labels])
            ).astype(np.float32)
        )
    name = f"repeated-chunks-{n_chunks}-{chunk_rows}-{seed}"
    graph = {(name, i, 0): blocks[i % len(blocks)] for i in range(n_chunks)}
    return da.Array(graph, name, ((chunk_rows,) * n_chunks, (D,)), meta=blocks[0][:0])


def measure(n_chunks, chunk_rows, iters):
    X = repeated_chunks(n_chunks, chunk_rows)
    assert X.numblocks[0] == n_chunks, X.chunks
    threads = os.cpu_count()
    w0, m0, p0 = start_values()
    rows = []
    with KernelClock() as clock, tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm = DiagGMM(
            K,
            weights_init=w0,
            means_init=m0,
            precisions_init=p0,
            tol=0,
            max_iter=iters,
            dtype="float32",
        )

        def on_iteration(summary):
            kernel_seconds, calls = clock.take()
            rows.append(
                {
                    "iteration": summary["iteration"],
                    "wall_seconds": summary["seconds"],
                    "chunk_calls": calls,
                    "kernel_seconds": kernel_seconds,
                    "chunk_compute_seconds": kernel_seconds / threads,
                }
            )

        start = time.perf_counter()
        gmm.fit(X, checkpoint=Path(tmp) / "checkpoint.zarr", on_iteration=on_iteration)
        fit_seconds = time.perf_counter() - start
    for row in rows:
        row["outside_seconds"] = row["wall_seconds"] - row["chunk_compute_seconds"]
        row["outside_fraction"] = row["outside_seconds"] / row["wall_seconds"]
    steady = rows[1:] or rows
    return {
        "chunks": n_chunks,
        "chunk_rows": chunk_rows,
        "rows": n_chunks * chunk_rows,
        "threads": threads,
        "iterations": rows,
        "fit_seconds": fit_seconds,
        # the first iteration also builds the pass's graph (once per fit): reported, and
        # amortized over the fit in "fit_outside_fraction"
        "outside_fraction": statistics.median(r["outside_fraction"] for r in steady),
        "fit_outside_fraction": 1 - sum(r["chunk_compute_seconds"] for r in rows) / fit_seconds,
        "seconds_per_iteration": statistics.median(r["wall_seconds"] for r in steady),
    }


def render(result):
    lines = [
        f"Machine: {machine_line(result['machine'])}",
        "",
        "| chunks | rows per chunk | s / iteration | chunk compute s / it | outside s / it | "
        "outside | outside (whole fit, incl. graph build) | target | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        steady = run["iterations"][1:] or run["iterations"]
        inside = statistics.median(r["chunk_compute_seconds"] for r in steady)
        outside = statistics.median(r["outside_seconds"] for r in steady)
        result_text = (
            verdict(run["outside_fraction"] < TARGET) if run["default_size"] else "informational"
        )
        lines.append(
            f"| {run['chunks']:,} | {run['chunk_rows']:,} | {run['seconds_per_iteration']:.3f} | "
            f"{inside:.3f} | {outside:.3f} | {run['outside_fraction']:.1%} | "
            f"{run['fit_outside_fraction']:.1%} | < {TARGET:.0%} | {result_text} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument(
        "--chunk-rows",
        type=int,
        nargs="+",
        default=None,
        help="rows per chunk (default: the library's default for 32 float32 features)",
    )
    parser.add_argument("--iters", type=int, default=4)
    args = parser.parse_args(argv)
    default_rows = inputs.default_chunk_rows(D, 4)
    result = {
        "machine": machine_info(),
        "target": f"outside chunk compute < {TARGET:.0%} per iteration",
        "runs": [],
    }
    for chunk_rows in args.chunk_rows or [default_rows]:
        run = measure(args.chunks, chunk_rows, args.iters)
        run["default_size"] = chunk_rows == default_rows
        result["runs"].append(run)
    result["markdown"] = render(result)
    path = write_json("overheads.json", result)
    print(result["markdown"])
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
