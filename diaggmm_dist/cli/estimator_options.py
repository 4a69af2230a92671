"""The ``fit`` options of the other estimators (``--labels``, ``--bayesian`` and their settings)
and the choice among the estimators, checked before any work.

Options of another estimator are refused, not ignored: a user who gives ``--init`` to a
classifier learns it has none. Importing this module imports neither dask nor scikit-learn
(``--help`` stays quick).
"""

from __future__ import annotations

import argparse
import math

#: ``BayesianDiagGMM``'s ``weight_concentration_prior_type`` choices (no import for --help).
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")

#: The options of one estimator only: (flag, dest), per estimator kind that does not take them.
_NOT_FOR = {
    "classifier": [
        ("--init", "init", "a classifier starts from its labelled rows' class statistics"),
        ("--n-init", "n_init", "a classifier starts from its labelled rows"),
        ("--seed", "seed", "a classifier's fit involves no random choice"),
        ("--reg-covar", "reg_covar", "a classifier's variances take --var-smoothing"),
        ("--criterion", "criterion", "it chooses among several --k"),
        ("--heldout-fraction", "heldout_fraction", "it chooses among several --k"),
    ],
    "bayesian": [
        ("--criterion", "criterion", "a Bayesian fit chooses its components by itself"),
        ("--heldout-fraction", "heldout_fraction", "a Bayesian fit chooses by itself"),
    ],
}
_CLASSIFIER_ONLY = [
    ("--components-per-class", "components_per_class"),
    ("--var-smoothing", "var_smoothing"),
]
_BAYESIAN_ONLY = [
    ("--weight-concentration-prior-type", "weight_concentration_prior_type"),
    ("--weight-concentration-prior", "weight_concentration_prior"),
    ("--weight-threshold", "weight_threshold"),
]


def _number(minimum, *, strict=False, below=None):
    """An argparse type: a finite number >= ``minimum`` (> with ``strict``), < ``below``."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
        if not ok or (below is not None and value >= below):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            upper = "" if below is None else f" and < {below}"
            raise argparse.ArgumentTypeError(
                f"must be a finite number {bound}{upper}, got {text!r}"
            )
        return value

    parse.__name__ = "number"
    return parse


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def add_estimator_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--labels``, ``--bayesian`` and their settings to the ``fit`` parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``fit`` sub-command's parser, with its other options already added (their
        defaults are kept, to tell a given option from its default).
    """
    group = parser.add_argument_group(
        "other estimators",
        "by default fit is maximum-likelihood EM (DiagGMM). --labels fits a classifier "
        "(DiagGMMClassifier: Gaussian naive Bayes when every row is labelled, semi-supervised "
        "EM otherwise); --bayesian fits variational Bayes (BayesianDiagGMM), which leaves the "
        "components the data does not need with a weight near 0",
    )
    which = group.add_mutually_exclusive_group()
    which.add_argument(
        "--labels",
        metavar="LABELS",
        help="fit a classifier: a Zarr array (path or URL) of one integer label per row of "
        "DATA, -1 for an unlabelled row (with --feature-dim/--features, a Zarr group or "
        "NetCDF with DATA's sample dimensions); with a Parquet DATA, the name of its label "
        "column (never a feature; the features are --columns, else every other column)",
    )
    which.add_argument(
        "--bayesian",
        action="store_true",
        help="fit a variational Bayesian mixture with at most --k components",
    )
    group.add_argument(
        "--components-per-class",
        type=_count,
        metavar="N",
        help="with --labels: components of every class (default: 1; more is mixture "
        "discriminant analysis)",
    )
    group.add_argument(
        "--var-smoothing",
        type=_number(0),
        help="with --labels: this times the largest feature variance is added to every "
        "variance, as GaussianNB's var_smoothing (default: 1e-9)",
    )
    group.add_argument(
        "--weight-concentration-prior-type",
        choices=PRIOR_TYPES,
        help="with --bayesian: the weights' prior, stick-breaking or a Dirichlet distribution "
        "(default: dirichlet_process)",
    )
    group.add_argument(
        "--weight-concentration-prior",
        type=_number(0, strict=True),
        metavar="GAMMA",
        help="with --bayesian: the weights' concentration; smaller leaves more components "
        "empty (default: 1/K)",
    )
    group.add_argument(
        "--weight-threshold",
        type=_number(0, below=1),
        metavar="W",
        help="with --bayesian: a component counts as effective (and predict may return it) "
        "when its weight is above W (default: 1e-3)",
    )
    given = [dest for entries in _NOT_FOR.values() for _, dest, _ in entries]
    parser.set_defaults(fit_defaults={dest: parser.get_default(dest) for dest in given})


def chosen_estimator(args: argparse.Namespace) -> str:
    """Which estimator ``fit`` fits, its options checked: ``gmm``, ``bayesian`` or ``classifier``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``fit``.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        ``--k`` missing (DiagGMM, --bayesian) or given with ``--labels``; an option of another
        estimator; several ``--k`` with ``--bayesian``.
    """
    if getattr(args, "labels", None) is not None:
        kind = "classifier"
    else:
        kind = "bayesian" if getattr(args, "bayesian", False) else "gmm"
    if kind == "classifier" and args.k is not None:
        raise ValueError(
            "--k is not used with --labels: a classifier has --components-per-class components "
            "(default 1) per class of LABELS; drop --k."
        )
    if kind != "classifier" and args.k is None:
        with_labels = "" if kind == "bayesian" else " (or --labels LABELS to fit a classifier)"
        raise ValueError(
            f"--k is required: the number of components{with_labels}"
            + (", the most the Bayesian fit may use" if kind == "bayesian" else "")
            + "."
        )
    if kind == "bayesian" and len(args.k) > 1:
        raise ValueError(
            "--bayesian takes one --k, the most components (the fit leaves those the data does "
            "not need empty): give one number."
        )
    defaults = getattr(args, "fit_defaults", {})
    for flag, dest, reason in _NOT_FOR.get(kind, []):
        if dest in defaults and getattr(args, dest) != defaults[dest]:
            what = "--labels" if kind == "classifier" else "--bayesian"
            raise ValueError(f"{flag} is not used with {what} ({reason}): drop it.")
    only = {"classifier": _BAYESIAN_ONLY, "bayesian": _CLASSIFIER_ONLY}.get(
        kind, _CLASSIFIER_ONLY + _BAYESIAN_ONLY
    )
    for flag, dest in only:
        if getattr(args, dest, None) is not None:
            needs = "--labels" if (flag, dest) in _CLASSIFIER_ONLY else "--bayesian"
            raise ValueError(f"{flag} is a setting of {needs}: give {needs}, or drop {flag}.")
    return kind
