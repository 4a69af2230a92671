"""``diaggmm fit --labels`` (a ``DiagGMMClassifier``), ``fit --bayesian`` (``BayesianDiagGMM``).

``--labels LABELS`` fits a classifier: LABELS is a Zarr array (path or URL) with one integer
label per row of DATA (-1 for an unlabelled row), a Zarr group (or NetCDF) with DATA's
sample dimensions when DATA is gridded, or the name of a column when DATA is a Parquet table
(never a feature then). Its number of components is the number of classes times
``--components-per-class``, so ``--k`` is refused with it. ``--bayesian`` fits variational
Bayes with ``--k`` as the most components. The options and the choice of the estimator:
:mod:`.estimator_options`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any


def build_estimator(args: argparse.Namespace, kind: str) -> Any:
    """The unfitted estimator of ``kind`` with the command's settings, checked.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``fit``.
    kind : {"classifier", "bayesian"}

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


def parquet_feature_columns(
    url: Any, label: str, storage_options: dict | None = None, name: str = "--labels"
) -> list[str]:
    """Every column of the Parquet data at ``url`` but ``label``, by the library's rule.

    As the library chooses a table's features without ``columns`` (all float or all
    integer, no other kind), over the columns other than the label column.

    Parameters
    ----------
    url : str or os.PathLike
        The Parquet data (a file or a folder; local or an fsspec URL).
    label : str
        The label column.
    storage_options : dict, optional
        fsspec options for ``url``.
    name : str, default="--labels"
        What the label column is called in the messages (``labels_url`` in a flow).

    Returns
    -------
    list of str

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
            f"{name} {label!r} names no column of the Parquet data {os.fspath(url)!r} (its "
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
        advice = "--columns COL,COL" if name.startswith("--") else "columns=[...]"
        raise TypeError(str(err).replace("columns=[...]", advice)) from None


def open_labels(
    url: Any,
    samples: Any,
    layout: dict,
    storage_options: dict | None = None,
    name: str = "--labels",
) -> Any:
    """``--labels`` that is a store: the labels, lazily, checked against the data's samples.

    With ``feature_dim`` or ``features`` (gridded data) a store with one data variable opened
    with xarray, whose dims must be the data's sample dims; otherwise a 1-D Zarr array with
    one label per row. Their values (integers, -1 unlabelled) are checked by the fit, in one
    read of the labels before any pass over the data.

    Parameters
    ----------
    url : str or os.PathLike
        The labels' store (local path or fsspec URL).
    samples : Samples
        The data they label.
    layout : dict
        The data's ``feature_dim``, ``features``, ``columns``.
    storage_options : dict, optional
        fsspec options for ``url``.
    name : str, default="--labels"
        What the labels are called in the messages (``labels_url`` in a flow).

    Returns
    -------
    dask.array.Array or xarray.DataArray

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
                f"{name} {text!r} cannot be read with xarray (the data's layout): {one_line(err)}"
            ) from None
        if hasattr(labels, "data_vars"):
            raise ValueError(
                f"{name} {text!r} must hold one data variable (the labels), it has "
                f"{len(labels.data_vars)}: {list(labels.data_vars)}."
            )
    else:
        array = open_zarr_array(text, storage_options)
        if array.ndim != 1:
            raise ValueError(
                f"{name} {text!r} must be a 1-D Zarr array with one label per row, it has "
                f"shape {array.shape}."
            )
        labels = da.from_array(array, chunks=array.chunks)
    sample_values(labels, samples, f"{name} {text!r}")  # the shape, before any work
    return labels


def fit_estimator(args, console, kind, client_context, where, small_input=None) -> int:
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
    small_input : callable, optional
        ``small_input(args, nbytes, n_chunks)``: whether to run on threads without
        ``--threads`` (the rule ``DiagGMM``'s fit follows).

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
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None:  # refused here before a cluster starts, as for a DiagGMM fit
        from ..em_settings import store_location
        from ..stores.checkpoint import check_checkpoint

        check_checkpoint(store_location(checkpoint, options), overwrite=args.overwrite)
    if (
        small_input is not None
        and not args.threads
        and small_input(args, data.nbytes, data.npartitions)
    ):
        args.threads, args.threads_reason = True, "small input: no cluster"
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
        fit_options.update(checkpoint=checkpoint, overwrite_checkpoint=args.overwrite)
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


def fit_summary(est: Any, kind: str, n_rows: int) -> str:
    """The summary line's account of a fitted classifier or Bayesian mixture.

    Parameters
    ----------
    est : DiagGMMClassifier or BayesianDiagGMM
        Fitted.
    kind : {"classifier", "bayesian"}
    n_rows : int
        The rows it was fitted on.

    Returns
    -------
    str
    """
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
