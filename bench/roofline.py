"""This machine's bound for one diagonal-GMM EM iteration (the yardstick the performance targets
use).

A copy of the shared yardstick ``/work/shared/bench/roofline.py`` kept in the repository so that a
fresh clone can run ``bench/run.py`` on its own; ``bench/run.py`` prefers the shared file when it
exists and falls back to this one. Keep the two measuring the same thing: the only addition here
is the optional ``threads`` argument (default: every core, as in the shared file), which
``bench/run.py`` uses to probe how many cores the machine really gives a process.

Measures only the unavoidable arithmetic of one iteration, float32, on warm cache-sized chunks with
every core busy and one BLAS thread per worker thread: the E-step product [x², x] @ A (N x 2D by 2D
x K), the N*K exponentials, and the M-step product rᵀ @ [x, x²]. No dask, no I/O, no log-sum-exp
bookkeeping.

    python roofline.py 1000000 32 16      # N D K -> prints seconds per iteration (best of 3)
"""

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits


def bound_seconds(n, d, k, chunk=32768, reps=3, threads=None):
    z = np.random.rand(chunk, 2 * d).astype("f4")
    a = np.random.rand(2 * d, k).astype("f4")

    def one(_):
        logits = z @ a
        np.exp(logits, out=logits)
        return logits.T @ z

    best = np.inf
    with threadpool_limits(1), ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        list(pool.map(one, range(8)))
        for _ in range(reps):
            t = time.perf_counter()
            list(pool.map(one, range(max(1, n // chunk))))
            best = min(best, time.perf_counter() - t)
    return best


if __name__ == "__main__":
    n, d, k = (int(v) for v in (sys.argv[1:4] if len(sys.argv) > 3 else (1_000_000, 32, 16)))
    print(f"{bound_seconds(n, d, k):.4f}")
