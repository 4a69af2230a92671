"""``diaggmm fit --labels`` (a ``DiagGMMClassifier``), ``fit --bayesian`` (``BayesianDiagGMM``).

``--labels LABELS`` fits a classifier: LABELS is a Zarr array (path or URL) with one integer
label per row of DATA (-1 for an unlabelled row), a Zarr group (or NetCDF) with DATA's
sample dimensions when DATA is gridded, or the name of a column when DATA is a Parquet table
(never a feature then). Its number of components is the number of classes times
``--components-per-class``, so ``--k`` is refused with it. ``--bayesian`` fits variational
Bayes with ``--k`` as the most components. Options of the other estimators are refused, not
ignored: a user who gives ``--init`` to a classifier learns it has none.
"""

from __future__ import annotations

import argparse
import math
import os
import time

#: ``BayesianDiagGMM``'s ``weight_concentration_prior_type`` choices (no import for --help).
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")

#: The options of one estimator only: (flag, dest), per estimator kind that does not take them.
_NOT_FOR = {
    "classifier": [
        ("--init", "init", "a classifier starts from its labelled rows' class statistics"),
        ("--n-init", "n_init", "a classifier starts from its labelled rows"),
        ("--seed", "seed", "a classifier's fit involves no random choice"),
        ("--reg-covar", "reg_covar", "a classifier's variances take --var-smoothing"),
        ("--checkpoint", "checkpoint", "a classifier's fit is not checkpointed"),
        ("--criterion", "criterion", "it chooses among several --k"),
        ("--heldout-fraction", "heldout_fraction", "it chooses among several --k"),
    ],
    "bayesian": [
        ("--checkpoint", "checkpoint", "a Bayesian fit is not checkpointed"),
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


def build_estimator(args: argparse.Namespace, kind: str):
    """The unfitted estimator of ``kind`` with the command's settings, checked.

    Returns
    -------
    BayesianDiagGMM or DiagGMMClassifier

    Raises
    ------
    ValueError
        A setting the estimator refuses.
    """
    common = dict(
        tol=args.tol,
        max_iter=args.max_iter,
        dtype=args.dtype,
        chunk_size=args.chunk_size,
        missing=args.missing,
    )
    if kind == "classifier":
        from ..classifier import DiagGMMClassifier
        from ..classifier_fit import check_classifier_settings

        settings = {"n_components_per_class": args.components_per_class or 1}
        if args.var_smoothing is not None:
            settings["var_smoothing"] = args.var_smoothing
        est = DiagGMMClassifier(**settings, **common)
        check_classifier_settings(est)
        return est
    from ..bayesian import BayesianDiagGMM
    from ..bayesian_settings import check_vb_settings

    given = {
        name: getattr(args, name)
        for name in (
            "weight_concentration_prior_type",
            "weight_concentration_prior",
            "weight_threshold",
        )
        if getattr(args, name) is not None
    }
    est = BayesianDiagGMM(
        n_components=args.k[0],
        reg_covar=args.reg_covar,
        n_init=args.n_init,
        init_params=args.init,
        random_state=args.seed,
        **given,
        **common,
    )
    check_vb_settings(est)
    return est


def parquet_feature_columns(url, label, storage_options=None) -> list[str]:
    """Every column of the Parquet data at ``url`` but ``label``, by the library's rule.

    As the library chooses a table's features without ``columns`` (all float or all
    integer, no other kind), over the columns other than the label column.

    Raises
    ------
    ValueError
        ``label`` is no column of the table.
    TypeError
        The other columns are not all float or all integer (name them with --columns).
    """
    import pandas as pd
    import pyarrow.dataset as pads

    from ..inputs.tables import _all_columns, _arrow_is_numeric
    from ..locations import location

    where = location(url, storage_options)
    if where.is_local:
        schema = pads.dataset(str(where.local_path), format="parquet").schema
    else:
        fs, path = where.filesystem()
        schema = pads.dataset(path, format="parquet", filesystem=fs).schema
    names = [field.name for field in schema]
    if label not in names:
        raise ValueError(
            f"--labels {label!r} names no column of the Parquet data {os.fspath(url)!r} (its "
            f"columns: {names}): give the label column's name."
        )
    dtypes = pd.Series(
        {
            field.name: field.type.to_pandas_dtype() if _arrow_is_numeric(field.type) else object
            for field in schema
            if field.name != label
        },
        dtype=object,
    )
    try:
        return _all_columns(dtypes)
    except TypeError as err:
        raise TypeError(str(err).replace("columns=[...]", "--columns COL,COL")) from None


def open_labels(url, samples, layout, storage_options=None):
    """``--labels`` that is a store: the labels, lazily, checked against the data's samples.

    With ``feature_dim`` or ``features`` (gridded data) a store with one data variable opened
    with xarray, whose dims must be the data's sample dims; otherwise a 1-D Zarr array with
    one label per row. Their values (integers, -1 unlabelled) are checked by the fit, in one
    read of the labels before any pass over the data.

    Raises
    ------
    ValueError
        Not one label per row (or sample), or not readable as the data's layout says.
    """
    import dask.array as da

    from ..inputs import open_gridded, open_zarr_array, sample_values
    from .console import one_line

    text = os.fspath(url)
    if layout.get("feature_dim") is not None or layout.get("features") is not None:
        try:
            labels = open_gridded(text, storage_options)
        except (KeyError, ValueError) as err:
            raise ValueError(
                f"--labels {text!r} cannot be read with xarray (the data's layout): {one_line(err)}"
            ) from None
        if hasattr(labels, "data_vars"):
            raise ValueError(
                f"--labels {text!r} must hold one data variable (the labels), it has "
                f"{len(labels.data_vars)}: {list(labels.data_vars)}."
            )
    else:
        array = open_zarr_array(text, storage_options)
        if array.ndim != 1:
            raise ValueError(
                f"--labels {text!r} must be a 1-D Zarr array with one label per row, it has "
                f"shape {array.shape}."
            )
        labels = da.from_array(array, chunks=array.chunks)
    sample_values(labels, samples, f"--labels {text!r}")  # the shape, before any work
    return labels


def fit_estimator(args, console, kind, client_context, where) -> int:
    """``diaggmm fit --labels`` or ``fit --bayesian``: fit, save, one summary line.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``fit``.
    console : Console
        Where the summary goes.
    kind : {"classifier", "bayesian"}
        As :func:`chosen_estimator` gives it.
    client_context : callable
        ``client_context(args)``: the command's dask client (or threads).
    where : callable
        ``where(client)``: where the work runs, for the first line.

    Returns
    -------
    int
        0; failures are raised (``main`` maps them to exit codes).
    """
    from ..inputs.tables import looks_like_parquet
    from .checks import (
        check_apart,
        check_output,
        check_writable,
        layout_of,
        open_samples,
        open_weights,
    )
    from .console import library_output
    from .options import command_security, command_storage_options

    args.security = command_security(args)  # before any work: files, tls:// address
    options = command_storage_options(args)
    column = kind == "classifier" and looks_like_parquet(os.fspath(args.data))
    inputs = [("data", args.data), ("--sample-weight", args.sample_weight)]
    if kind == "classifier" and not column:
        inputs.append(("--labels", args.labels))
    check_apart([("--out", args.out)], [(n, u) for n, u in inputs if u is not None], options)
    check_writable(args.out, "model", storage_options=options)
    est = build_estimator(args, kind)
    layout = layout_of(args)
    if column:
        if layout["columns"] is None:
            layout["columns"] = parquet_feature_columns(args.data, args.labels, options)
        elif args.labels in layout["columns"]:
            raise ValueError(
                f"The label column {args.labels!r} is also in --columns: drop it there."
            )
    samples = open_samples(args.data, args.chunk_size, layout, options)
    data = samples.array
    n_rows, n_features = math.prod(data.shape[:-1]), data.shape[-1]
    weights = None
    if args.sample_weight is not None:
        weights = open_weights(args.sample_weight, samples, layout, options)
    labels = None
    if kind == "classifier":
        labels = args.labels if column else open_labels(args.labels, samples, layout, options)
    elif args.k[0] > n_rows:
        raise ValueError(
            f"--k {args.k[0]} is larger than the number of rows of {args.data!r} ({n_rows}): "
            f"use at most {n_rows} components."
        )
    check_output(args.out, args.overwrite, "model", options)
    start = time.monotonic()
    fit_options = dict(sample_weight=weights, storage_options=options, **layout)
    with library_output(console, args.quiet) as printer, client_context(args) as client:
        printer.addFilter(_Timed())
        if not args.quiet:
            what = "a classifier" if kind == "classifier" else f"Bayesian, K<={args.k[0]}"
            console.print(
                f"fit: {n_rows:,} rows x {n_features} features from {args.data}, {what}, "
                f"{data.npartitions} chunks, {where(client)}"
            )
        if kind == "classifier":
            est.fit(args.data, labels, **fit_options)
        else:
            est.fit(args.data, **fit_options)
    est.save(args.out, overwrite=args.overwrite, storage_options=options)
    seconds = time.monotonic() - start
    console.print(
        f"done: {fit_summary(est, kind, n_rows)}, {seconds:.1f} s; model saved to {args.out}"
    )
    return 0


class _Timed:
    """A log filter: gives an iteration record without ``seconds`` the time since the last one.

    The classifier's EM logs its iterations without their duration, which the lines show.
    """

    def __init__(self):
        self.last = time.monotonic()

    def filter(self, record) -> bool:
        now = time.monotonic()
        if getattr(record, "iteration", None) is not None and not hasattr(record, "seconds"):
            record.seconds = now - self.last
        self.last = now
        return True


def fit_summary(est, kind: str, n_rows: int) -> str:
    """The summary line's account of a fitted classifier or Bayesian mixture of ``n_rows``."""
    converged = "yes" if est.converged_ else "no"
    if kind == "classifier":
        n_labelled = n_rows - int(est.n_unlabelled_)
        shown = ", ".join(str(c) for c in est.classes_[:16]) + (
            ", ..." if len(est.classes_) > 16 else ""
        )
        return (
            f"{len(est.classes_)} classes [{shown}], {n_labelled:,} labelled and "
            f"{int(est.n_unlabelled_):,} unlabelled rows, {est.n_components_per_class} "
            f"component(s) per class, {est.n_iter_} iterations, converged={converged}"
        )
    return (
        f"K={est.n_components}, {est.effective_n_components_} effective components "
        f"(weight > {est.weight_threshold:g}), {est.n_iter_} iterations, "
        f"converged={converged}, lower bound {est.lower_bound_:.8f}"
    )
