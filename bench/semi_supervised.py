"""Issue 24 §2: do the unlabelled rows help? Semi-supervised EM against GaussianNB on digits.

scikit-learn's digits (1,797 rows of 64 integer pixels, 10 classes, shipped with the package)
are split into 70% training and 30% held-out rows, stratified, for seeds 0..4. Of the
training rows 1%, 10% or 100% keep their label (stratified, at least one per class; the
others get -1). For each split:

* ``GaussianNB(var_smoothing=v)`` is fitted on the labelled rows alone;
* ``DiagGMMClassifier(m, var_smoothing=v)`` on all training rows, the unlabelled ones
  included (semi-supervised EM; with every row labelled and m = 1 it is GaussianNB itself);

for every ``v`` in 1e-9 (GaussianNB's default), 1e-2 and 1e-1 and ``m`` (components per
class) in 1, 2 and 4. The table gives the held-out accuracy, mean and spread (min-max)
over the seeds, and the EM iterations. Every setting is reported: none is picked on the
held-out rows.

    python bench/semi_supervised.py            # ~3 min on the 2-core VM
    python bench/semi_supervised.py --seeds 1  # one split

Writes the table to ``bench/results/semi_supervised.md`` and the numbers to
``bench/results/semi_supervised.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, machine_line, write_json  # noqa: E402

from diaggmm_dist import DiagGMMClassifier  # noqa: E402

FRACTIONS = (0.01, 0.1, 1.0)
SMOOTHINGS = (1e-9, 1e-2, 1e-1)
PER_CLASS = (1, 2, 4)


def split(fraction, seed):
    """Training rows with the labels of ``fraction`` of them (-1 elsewhere), held-out rows."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    n = max(10, round(fraction * len(y_train)))
    if n < len(y_train):
        labelled, _ = train_test_split(
            np.arange(len(y_train)), train_size=n, stratify=y_train, random_state=seed
        )
    else:
        labelled = np.arange(len(y_train))
    partial = np.full_like(y_train, -1)
    partial[labelled] = y_train[labelled]
    return X_train, partial, labelled, X_test, y_test


def run(seeds):
    rows = []
    for fraction in FRACTIONS:
        for smoothing in SMOOTHINGS:
            cells = {"fraction": fraction, "var_smoothing": smoothing, "gnb": [], "semi": {}}
            for seed in range(seeds):
                X_train, partial, labelled, X_test, y_test = split(fraction, seed)
                cells["labelled"] = len(labelled)
                gnb = GaussianNB(var_smoothing=smoothing).fit(X_train[labelled], partial[labelled])
                cells["gnb"].append(gnb.score(X_test, y_test))
                for m in PER_CLASS:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # re-seeded components are counted
                        clf = DiagGMMClassifier(m, var_smoothing=smoothing).fit(X_train, partial)
                    semi = cells["semi"].setdefault(m, {"accuracy": [], "iterations": []})
                    semi["accuracy"].append(clf.score(X_test, y_test))
                    semi["iterations"].append(clf.n_iter_)
            rows.append(cells)
            print(table_row(cells), flush=True)
    return rows


def summary(values):
    mean = statistics.mean(values)
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else f"{mean:.3f}"


def table_row(cells):
    semi = [
        f"{summary(cells['semi'][m]['accuracy'])}, "
        f"{statistics.mean(cells['semi'][m]['iterations']):.0f} it."
        for m in PER_CLASS
    ]
    return (
        f"| {cells['fraction']:.0%} ({cells['labelled']}) | {cells['var_smoothing']:g} | "
        f"{summary(cells['gnb'])} | " + " | ".join(semi) + " |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    info = machine_info()
    start = time.perf_counter()
    header = (
        "| labelled (rows) | var_smoothing | GaussianNB, labelled rows only | "
        + " | ".join(f"DiagGMMClassifier({m}), all rows" for m in PER_CLASS)
        + " |\n|---|---|---|"
        + "---|" * len(PER_CLASS)
    )
    print(header)
    rows = run(args.seeds)
    seconds = time.perf_counter() - start
    table = "\n".join([header] + [table_row(cells) for cells in rows])
    text = (
        f"Held-out accuracy on digits, mean (min-max) over {args.seeds} split(s); "
        f"{machine_line(info)}; {seconds:.0f} s.\n\n{table}\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "semi_supervised.md").write_text(text)
    write_json("semi_supervised.json", {"machine": info, "seconds": seconds, "rows": rows})
    print(f"\n{seconds:.0f} s; table in {RESULTS / 'semi_supervised.md'}")


if __name__ == "__main__":
    main()
