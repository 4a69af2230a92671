"""The main job (``make run``): fit a mixture to a generated data set on Zarr and report it.

Writes a mixture with known parameters to ``runs/demo/mixture.zarr`` (once; reused after),
fits ``DiagGMM`` to it on a LocalCluster of worker processes reading the store from disk,
and prints the fit next to the truth.

    python -m diaggmm_dist.demo [--rows 2000000] [--features 16] [--components 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from scipy.optimize import linear_sum_assignment

from . import DiagGMM
from .io.synthetic import mixture_parameters, write_mixture_zarr


def _arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _ensure_data(path, args):
    truth = mixture_parameters(args.components, args.features, seed=args.seed)
    if path.exists():
        attrs = zarr.open_group(str(path), mode="r").attrs
        stored = zarr.open_array(str(path / "X"), mode="r")
        if stored.shape == (args.rows, args.features) and np.allclose(attrs["means"], truth[1]):
            return truth, 0.0
    start = time.perf_counter()
    write_mixture_zarr(path, args.rows, *truth, seed=args.seed)
    return truth, time.perf_counter() - start


def main(argv=None):
    from distributed import Client, LocalCluster

    args = _arguments(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mixture.zarr"
    (weights, means, covariances), seconds = _ensure_data(path, args)
    size = args.rows * args.features * 4
    print(f"data     {path}/X: {args.rows:,} rows x {args.features} features, float32, "
          f"{size / 2**30:.2f} GiB" + (f" (written in {seconds:.1f} s)" if seconds else " (reused)"))
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        print(f"cluster  LocalCluster, {args.workers} worker processes x 1 thread")
        gmm = DiagGMM(args.components, dtype="float32", random_state=args.seed, tol=1e-4, max_iter=200)
        start = time.perf_counter()
        gmm.fit(str(path / "X"))
        fit_seconds = time.perf_counter() - start
        labels = gmm.predict(str(path / "X"))
        truth_labels = da.from_zarr(str(path / "labels")).astype(np.int64)
        confusion = da.bincount(truth_labels * args.components + labels, minlength=args.components**2)
        confusion = confusion.compute().reshape(args.components, args.components)
    rows, cols = linear_sum_assignment(-confusion)
    agreement = confusion[rows, cols].sum() / args.rows
    mean_error = np.abs(gmm.means_[cols] - means[rows]).max()
    var_error = np.max(np.abs(gmm.covariances_[cols] / covariances[rows] - 1))
    weight_error = np.abs(gmm.weights_[cols] - weights[rows]).max()
    print(f"fit      K={args.components}, {gmm.n_iter_} EM iterations, converged={gmm.converged_}, "
          f"{fit_seconds:.1f} s in all (initialisation included)")
    print(f"         mean log-likelihood per row {gmm.lower_bound_:.5f}")
    print(f"truth    labels agree with the true components on {100 * agreement:.3f}% of rows")
    print(f"         largest error: mean {mean_error:.4f}, variance {100 * var_error:.2f}% relative, "
          f"weight {weight_error:.5f}")


if __name__ == "__main__":
    main()
