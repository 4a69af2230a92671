"""The cost of ``DiagGMM.diagonal_fit_report`` against one scoring pass, on the same data.

    python bench/diagonal_check.py [--rows 1000000] [--features 32] [--k 8] [--rounds 3]

Both read the same in-memory dask array on local threads; the ratio (report / score) is the
figure, taken per round and alternated, so that the machine's load affects both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import dask.array as da
import numpy as np

from diaggmm_dist import DiagGMM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    data = da.from_array(X, chunks=(max(1, args.rows // 16), args.features))
    gmm = DiagGMM(args.k, random_state=0, max_iter=3, tol=0.0, dtype="float32").fit(data)
    gmm.diagonal_fit_report(data)  # the kernels compiled, the threads warm
    ratios = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        gmm.score(data)
        score = time.perf_counter() - start
        start = time.perf_counter()
        gmm.diagonal_fit_report(data)
        report = time.perf_counter() - start
        ratios.append(report / score)
        print(f"score {score:.3f} s, diagonal_fit_report {report:.3f} s: {report / score:.1f}x")
    print(
        f"{args.rows:,} x {args.features}, K={args.k}: report / score pass, median "
        f"{statistics.median(ratios):.1f}x over {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
