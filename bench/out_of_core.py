"""Out of core: DiagGMM reading a compressed Zarr store from disk, against the in-memory fit.

The first measurement toward issue 5's target 3. It writes a float32 mixture data set of
``--rows`` rows × 32 features to Zarr (zarr's default codec, zstd level 0, in chunks of
131,072 rows; kept and reused under ``--store``), and times ``--iters`` EM iterations (K=16,
the same initial parameters, ``tol=0``) two ways in one run:

* in memory: 1,000,000 rows of the same data as a numpy array, on dask's threads;
* from disk: the whole store, on a LocalCluster of 2 single-threaded worker processes.

It reports seconds per iteration, seconds per million rows per iteration, and the ratio of the
two, and the peak resident memory of the whole process tree (this process and the workers,
sampled every 0.2 s).

    python bench/out_of_core.py --rows 10000000 --iters 5
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import zarr
from sklearn.exceptions import ConvergenceWarning

from diaggmm_dist import DiagGMM
from diaggmm_dist.io.synthetic import mixture_parameters, write_mixture_zarr

D, K, CHUNK_ROWS = 32, 16, 131_072


class PeakMemory:
    """Peak RSS of this process and all its children, sampled in a thread."""

    def __init__(self, interval=0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me] + me.children(recursive=True):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def start_values(seed=1):
    rng = np.random.default_rng(seed)
    weights, means, covariances = mixture_parameters(K, D, seed=0)
    return np.full(K, 1 / K), means + rng.normal(0, 1, means.shape), np.ones((K, D)) / covariances.mean()


def timed_fit(data, iters, **settings):
    w0, m0, p0 = start_values()
    gmm = DiagGMM(K, weights_init=w0, means_init=m0, precisions_init=p0, tol=0, max_iter=iters, dtype="float32",
                  **settings)
    start = time.perf_counter()
    gmm.fit(data)
    return (time.perf_counter() - start) / iters, gmm


def main(argv=None):
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--store", default="bench/results/data")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)

    path = Path(args.store) / f"mixture-{args.rows}.zarr"
    if not path.exists():
        start = time.perf_counter()
        write_mixture_zarr(path, args.rows, *mixture_parameters(K, D, seed=0), chunk_rows=CHUNK_ROWS, seed=0)
        print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    store = zarr.open_array(str(path / "X"), mode="r")
    on_disk = sum(f.stat().st_size for f in (path / "X").rglob("*") if f.is_file())
    in_memory = store[:1_000_000]

    with PeakMemory() as memory_threads:
        memory_seconds, _ = timed_fit(in_memory, args.iters, chunk_size=CHUNK_ROWS)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
        timed_fit(str(path / "X"), 1)  # warm the workers (imports), not timed
        with PeakMemory() as memory_disk:
            disk_seconds, _ = timed_fit(str(path / "X"), args.iters)

    per_million = {"memory": memory_seconds / in_memory.shape[0] * 1e6, "disk": disk_seconds / args.rows * 1e6}
    result = {
        "rows": args.rows, "features": D, "components": K, "iterations": args.iters,
        "codec": str(store.compressors), "bytes_on_disk": on_disk, "bytes_raw": args.rows * D * 4,
        "seconds_per_iteration": {"memory_1M_threads": memory_seconds, "zarr_disk_2_workers": disk_seconds},
        "seconds_per_million_rows_per_iteration": per_million,
        "disk_over_memory": per_million["disk"] / per_million["memory"],
        "peak_rss_bytes": {"memory_1M_threads": memory_threads.peak, "zarr_disk_2_workers": memory_disk.peak},
    }
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"out_of_core-{args.rows}.json").write_text(json.dumps(result, indent=2))
    print(f"| run | s / iteration | s per 1M rows per iteration | peak RSS (process tree) |")
    print(f"|---|---:|---:|---:|")
    print(f"| in memory, 1M rows, threads | {memory_seconds:.3f} | {per_million['memory']:.3f} | "
          f"{memory_threads.peak / 2**30:.2f} GiB |")
    print(f"| Zarr on disk, {args.rows:,} rows, 2 workers | {disk_seconds:.3f} | {per_million['disk']:.3f} | "
          f"{memory_disk.peak / 2**30:.2f} GiB |")
    print(f"\ndisk / memory per row: {result['disk_over_memory']:.2f}x (target 1.3x); codec {result['codec']}, "
          f"{on_disk / 2**30:.2f} GiB on disk for {args.rows * D * 4 / 2**30:.2f} GiB raw")


if __name__ == "__main__":
    main()
