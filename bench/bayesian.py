"""Benchmark: BayesianDiagGMM against BayesianGaussianMixture(covariance_type="diag").

On the issue-5 data (``bench/run.py``'s ``make_data``: 1,000,000 x 32, a mixture of 16
diagonal Gaussians) and from the same state, per-iteration time and the final lower bound of

* ``sklearn.mixture.BayesianGaussianMixture(covariance_type="diag")`` (float64),
* ``BayesianDiagGMM(dtype="float64")`` on the same float64 rows,
* ``BayesianDiagGMM(dtype="float32")`` on a float32 copy.

    python bench/bayesian.py              # 1,000,000 x 32, 16 components, 10 iterations
    python bench/bayesian.py --quick      # 100,000 rows
    python bench/bayesian.py --cold       # also: each library's own fit from random_state=0

How an iteration is timed (``bench/run.py``'s warm-start protocol)
    scikit-learn fits ``max_iter=1, warm_start=True`` once (untimed: its k-means
    initialization on all the rows and one iteration). Then, for each repeat, each estimator
    starts from a copy of that state (ours through ``from_sklearn``) and runs a timed warm
    ``fit`` with ``max_iter=1`` (``t_1``) and one with ``max_iter=--iters`` (``t_iters``), taking
    turns within a repeat; the best over the repeats is kept. "s / iteration" is
    ``t_iters / iters`` (the whole fit: scikit-learn's also computes the full covariance of the
    data twice per fit for its default priors, and runs one more E-step after the loop);
    "marginal s / iteration" is ``(t_iters - t_1) / (iters - 1)``, one more iteration. All
    follow the same trajectory, so the final lower bounds compare
    (float64 should agree with scikit-learn to ~1e-8 relative, float32 to ~1e-4).

Cold fits (``--cold``)
    Each library's own fit with the default settings (``tol=1e-3``, ``max_iter=100``) from
    ``random_state=0``: scikit-learn's k-means runs on all the rows, ours on a bounded sample
    and full-data Lloyd passes (:mod:`diaggmm_dist.initialization`), so the starts differ and
    the final lower bounds, iterations and effective components are compared, not equal.

Output
    A Markdown table on stdout and ``bench/results/bayesian.json``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a clone without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, machine_line  # noqa: E402

from diaggmm_dist import BayesianDiagGMM  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUICK_N = 100_000


def _make_data(n, d, k, seed):
    """The issue-5 data of ``bench/run.py``."""
    spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).with_name("run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_data(n, d, k, seed)


def _timed_fit(estimator, X):
    gc.collect()
    start = time.perf_counter()
    estimator.fit(X)
    return time.perf_counter() - start


def warm_timings(X, X32, start, iters, repeats):
    """Per-iteration times and final lower bounds of the three estimators from ``start``."""
    cases = [
        ("scikit-learn float64", lambda: copy.deepcopy(start), X),
        ("BayesianDiagGMM float64", lambda: BayesianDiagGMM.from_sklearn(start), X),
        (
            "BayesianDiagGMM float32",
            lambda: BayesianDiagGMM.from_sklearn(start, dtype="float32"),
            X32,
        ),
    ]
    runs = [{"name": name, "t_1_s": [], "t_iters_s": []} for name, _, _ in cases]
    for repeat in range(repeats):
        for offset in range(len(cases)):
            i = (repeat + offset) % len(cases)
            (name, factory, data), run = cases[i], runs[i]
            print(f"bench: {name} (repeat {repeat + 1}/{repeats})", file=sys.stderr, flush=True)
            estimator = factory()
            estimator.set_params(max_iter=1, warm_start=True, tol=0)
            run["t_1_s"].append(_timed_fit(estimator, data))
            estimator.set_params(max_iter=iters)
            run["t_iters_s"].append(_timed_fit(estimator, data))
            run["lower_bound"] = float(estimator.lower_bound_)
            run["effective_n_components"] = int(np.sum(estimator.weights_ > 1e-3))
    for run in runs:
        run["s_per_iteration"] = min(run["t_iters_s"]) / iters
        run["marginal_s_per_iteration"] = (min(run["t_iters_s"]) - min(run["t_1_s"])) / (iters - 1)
    return runs


def cold_fits(X, k):
    """Each library's own default fit from random_state=0: seconds, iterations, lower bound."""
    results = []
    for name, estimator in (
        (
            "scikit-learn float64",
            BayesianGaussianMixture(n_components=k, covariance_type="diag", random_state=0),
        ),
        ("BayesianDiagGMM float64", BayesianDiagGMM(n_components=k, random_state=0)),
    ):
        print(f"bench: cold fit, {name}", file=sys.stderr, flush=True)
        seconds = _timed_fit(estimator, X)
        results.append(
            {
                "name": name,
                "seconds": seconds,
                "n_iter": int(estimator.n_iter_),
                "converged": bool(estimator.converged_),
                "lower_bound": float(estimator.lower_bound_),
                "effective_n_components": int(np.sum(estimator.weights_ > 1e-3)),
            }
        )
    return results


def report(args, runs, cold):
    reference = runs[0]
    lines = [
        f"BayesianDiagGMM vs BayesianGaussianMixture(covariance_type='diag'): N={args.n:,} "
        f"D={args.d} components={args.k}, {args.iters} warm iterations, best of "
        f"{args.repeats}",
        "",
        "| estimator | s / iteration | speed-up | marginal s / iteration | speed-up | "
        "final lower bound | rel. diff. to sklearn |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        speedup = reference["s_per_iteration"] / run["s_per_iteration"]
        marginal = run["marginal_s_per_iteration"]
        marginal_speedup = reference["marginal_s_per_iteration"] / marginal
        diff = abs(run["lower_bound"] - reference["lower_bound"]) / abs(reference["lower_bound"])
        lines.append(
            f"| {run['name']} | {run['s_per_iteration']:.3f} | {speedup:.1f}x | {marginal:.3f} | "
            f"{marginal_speedup:.1f}x | {run['lower_bound']:.6f} | {diff:.1e} |"
        )
    if cold:
        lines += [
            "",
            "| cold fit (defaults, random_state=0) | seconds | iterations | converged | "
            "lower bound | components > 1e-3 |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['name']} | {r['seconds']:.1f} | {r['n_iter']} | {r['converged']} | "
            f"{r['lower_bound']:.6f} | {r['effective_n_components']} |"
            for r in cold
        ]
    lines += ["", machine_line(machine_info())]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="rows (default 1,000,000)")
    parser.add_argument("--d", type=int, default=32, help="features (default 32)")
    parser.add_argument("--k", type=int, default=16, help="components (default 16)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data (default 0)")
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK_N:,}")
    parser.add_argument("--cold", action="store_true", help="also each library's own fit")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = QUICK_N if args.quick else 1_000_000
    if args.iters < 2:
        parser.error("--iters must be >= 2")
    warnings.simplefilter("ignore", ConvergenceWarning)
    X = _make_data(args.n, args.d, args.k, args.seed)
    X32 = X.astype(np.float32)
    print("bench: scikit-learn's initialization and first iteration", file=sys.stderr)
    start = BayesianGaussianMixture(
        n_components=args.k,
        covariance_type="diag",
        random_state=0,
        max_iter=1,
        tol=0,
        warm_start=True,
    ).fit(X)
    runs = warm_timings(X, X32, start, args.iters, args.repeats)
    cold = cold_fits(X, args.k) if args.cold else []
    text = report(args, runs, cold)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bayesian.json").write_text(
        json.dumps({"args": {**vars(args), "out": str(args.out)}, "warm": runs, "cold": cold})
    )


if __name__ == "__main__":
    main()
