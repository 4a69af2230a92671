"""``diaggmm info``: a saved model's attributes, as text or JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os

from .checks import layout_of, load_model
from .console import Console, library_output
from .exits import EXIT_OK
from .options import command_security, command_storage_options


def model_summary(url, model, storage_options=None) -> dict:
    """What ``info`` shows of the model ``model`` saved at ``url``, as JSON-able values.

    ``storage_options``: the command's, to read the store's attributes.

    Returns
    -------
    dict
        The store's format and library versions, the model's sizes, settings, fit results,
        data fingerprint and weights.
    """
    import numpy as np
    import zarr

    from ..locations import location

    group = zarr.open_group(location(url, storage_options).zarr_store(read_only=True), mode="r")
    attrs = dict(group.attrs)
    weights = np.asarray(model.weights_)
    return {
        "model": os.fspath(url),
        "estimator": "DiagGMM",
        "format_version": attrs.get("format_version"),
        "library_version": attrs.get("library_version"),
        "n_components": int(model.n_components),
        "n_features": int(model.n_features_in_),
        "dtype": str(np.dtype(model.dtype)),
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
        "lower_bound": float(model.lower_bound_),
        "lower_bounds": [float(v) for v in model.lower_bounds_],
        "reg_covar": float(model.reg_covar),
        "tol": float(model.tol),
        "max_iter": int(model.max_iter),
        "n_init": int(model.n_init),
        "init_params": model.init_params,
        "random_state": model.random_state if isinstance(model.random_state, int) else None,
        "n_reseeded": int(getattr(model, "n_reseeded_", 0)),
        "feature_names": [str(n) for n in model.feature_names_in_]
        if hasattr(model, "feature_names_in_")
        else None,
        "data_fingerprint": getattr(model, "data_fingerprint_", None),
        "weights": [float(w) for w in weights],
        "weights_summary": {
            "min": float(weights.min()),
            "median": float(np.median(weights)),
            "max": float(weights.max()),
        },
    }


def info(args: argparse.Namespace, console: Console, client_context=None) -> int:
    """``diaggmm info``: print a saved model's attributes, as text or JSON.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``info``.
    console : Console
        Where the description goes.
    client_context : callable, optional
        ``client_context(args)``: the context in which ``--against`` runs its pass (the
        command's dask client).

    Returns
    -------
    int
        :data:`~diaggmm_dist.cli.exits.EXIT_OK`; failures are raised.

    Raises
    ------
    ModelStoreError, FileNotFoundError
        Nothing, or not a model, at ``args.model``.
    """
    options = command_storage_options(args)
    args.security = command_security(args)  # before any work: files, tls:// address
    model = load_model(args.model, options)
    from ..mixture import DiagGMM

    if not isinstance(model, DiagGMM):  # BayesianDiagGMM, DiagGMMClassifier: cli/kinds.py
        from .kinds import describe_other

        return describe_other(args, console, model, options)
    info = model_summary(args.model, model, options)
    report = None
    if args.against is not None:
        report = diagonal_check(args, model, options, console, client_context)
        info["diagonal_check"] = report_summary(report)
    if args.json:
        console.print(json.dumps(info, indent=2))
        return EXIT_OK
    fingerprint = info["data_fingerprint"]
    if isinstance(fingerprint, dict):
        shape = "x".join(str(v) for v in fingerprint.get("shape", []))
        fingerprint = (
            f"{shape} {fingerprint.get('dtype', '?')}, {fingerprint.get('row_chunks', '?')}, "
            f"sample sha256 {str(fingerprint.get('sample_sha256', '?'))[:16]}"
        )
    weights = info["weights"]
    summary = info["weights_summary"]
    rows = [
        ("model", info["model"]),
        ("estimator", "DiagGMM"),
        ("components (K)", info["n_components"]),
        ("features (D)", info["n_features"]),
        ("dtype", info["dtype"]),
        ("iterations", info["n_iter"]),
        ("converged", "yes" if info["converged"] else "no"),
        ("lower bound", f"{info['lower_bound']:.8f}"),
        (
            "settings",
            f"init={info['init_params']} tol={info['tol']:g} max_iter={info['max_iter']} "
            f"n_init={info['n_init']} reg_covar={info['reg_covar']:g} seed={info['random_state']}",
        ),
        ("re-seeded", info["n_reseeded"]),
        ("data fingerprint", fingerprint if fingerprint is not None else "none"),
        (
            "weights",
            f"min {summary['min']:.4f}  median {summary['median']:.4f}  max {summary['max']:.4f}",
        ),
    ]
    if len(weights) <= 16:
        rows.append(("", "[" + ", ".join(f"{w:.4f}" for w in weights) + "]"))
    if info["feature_names"]:
        rows.append(("features", ", ".join(info["feature_names"])))
    rows.append(
        (
            "format",
            f"version {info['format_version']}, written by diaggmm-dist {info['library_version']}",
        )
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        console.print(f"{name:<{width}}  {value}")
    if report is not None:
        console.print(f"\ndiagonal check against {args.against}:\n")
        console.print(report.to_markdown())
    return EXIT_OK


def diagonal_check(args, model, options, console, client_context=None):
    """``info --against DATA``: the model's :meth:`~DiagGMM.diagonal_fit_report` on DATA."""
    with library_output(console, args.quiet), (client_context or contextlib.nullcontext)(args):
        return model.diagonal_fit_report(args.against, storage_options=options, **layout_of(args))


def report_summary(report) -> dict:
    """A :class:`~diaggmm_dist.diagonal_check.DiagonalFitReport` as JSON-able values."""
    import dataclasses

    summary = dataclasses.asdict(report)
    summary["diagonal_is_adequate"] = report.is_diagonal_adequate()
    return summary
