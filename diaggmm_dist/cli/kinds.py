"""``diaggmm info`` of a ``BayesianDiagGMM`` or a ``DiagGMMClassifier``: its own attributes.

A Bayesian mixture shows its effective components (those ``predict`` may return) beside
its upper bound K and its weights' prior; a classifier its classes, the labelled rows of
each and its class priors. ``--against`` (the diagonal check) is a ``DiagGMM``'s and is
refused for them before any work.
"""

from __future__ import annotations

import json
import os


def _plain(value):
    """A numpy scalar as the JSON value it holds (a class label: an integer or a string)."""
    return value.item() if hasattr(value, "item") else value


def _common(url, model, storage_options) -> dict:
    """What every estimator's description has: the store's versions, sizes, fit results."""
    import numpy as np
    import zarr

    from ..locations import location

    group = zarr.open_group(location(url, storage_options).zarr_store(read_only=True), mode="r")
    attrs = dict(group.attrs)
    names = getattr(model, "feature_names_in_", None)
    return {
        "model": os.fspath(url),
        "estimator": type(model).__name__,
        "format_version": attrs.get("format_version"),
        "library_version": attrs.get("library_version"),
        "n_features": int(model.n_features_in_),
        "dtype": str(np.dtype(model.dtype)),
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
        "lower_bounds": [float(v) for v in model.lower_bounds_],
        "tol": float(model.tol),
        "max_iter": int(model.max_iter),
        "missing": model.missing,
        "feature_names": None if names is None else [str(n) for n in names],
        "data_fingerprint": getattr(model, "data_fingerprint_", None),
        "weights": [float(w) for w in model.weights_],
    }


def bayesian_summary(url, model, storage_options=None) -> dict:
    """``info``'s description of a ``BayesianDiagGMM`` as JSON-able values.

    Returns
    -------
    dict
        :func:`_common`'s, with ``n_components`` (the upper bound),
        ``effective_n_components``, ``effective_components`` (their indices),
        ``weight_threshold``, the weights' prior and the fit's settings.
    """
    import numpy as np

    seed = model.random_state
    return {
        **_common(url, model, storage_options),
        "n_components": int(model.n_components),
        "effective_n_components": int(model.effective_n_components_),
        "effective_components": [int(i) for i in np.flatnonzero(model.effective_components_)],
        "weight_threshold": float(model.weight_threshold),
        "lower_bound": float(model.lower_bound_),
        "weight_concentration_prior_type": model.weight_concentration_prior_type,
        "weight_concentration_prior": float(model.weight_concentration_prior_),
        "reg_covar": float(model.reg_covar),
        "init_params": model.init_params,
        "n_init": int(model.n_init),
        "random_state": seed if isinstance(seed, int) else None,
    }


def classifier_summary(url, model, storage_options=None) -> dict:
    """``info``'s description of a ``DiagGMMClassifier`` as JSON-able values.

    Returns
    -------
    dict
        :func:`_common`'s, with ``classes`` (integers or strings), ``class_count`` (the
        labelled rows, or their weight, of each), ``class_prior``, ``n_components_per_class``,
        ``n_components``, ``n_unlabelled`` (None when the store does not say),
        ``var_smoothing`` and ``epsilon``.
    """
    unlabelled = getattr(model, "n_unlabelled_", None)
    return {
        **_common(url, model, storage_options),
        "classes": [_plain(c) for c in model.classes_],
        "class_count": [float(c) for c in model.class_count_],
        "class_prior": [float(p) for p in model.class_prior_],
        "n_components_per_class": int(model.n_components_per_class),
        "n_components": len(model.weights_),
        "n_unlabelled": None if unlabelled is None else int(unlabelled),
        "var_smoothing": float(model.var_smoothing),
        "epsilon": float(model.epsilon_),
    }


def _rows(info) -> list[tuple[str, object]]:
    """The text lines of a description, by estimator."""
    converged = "yes" if info["converged"] else "no"
    rows = [("model", info["model"]), ("estimator", info["estimator"])]
    if info["estimator"] == "BayesianDiagGMM":
        effective = info["effective_components"]
        shown = ", ".join(map(str, effective[:16])) + (", ..." if len(effective) > 16 else "")
        rows += [
            ("components (K)", f"{info['n_components']} at most"),
            (
                "effective",
                f"{info['effective_n_components']} (weight > {info['weight_threshold']:g}): "
                f"[{shown}]",
            ),
            ("features (D)", info["n_features"]),
            ("dtype", info["dtype"]),
            ("iterations", info["n_iter"]),
            ("converged", converged),
            ("lower bound", f"{info['lower_bound']:.8f}"),
            (
                "weights' prior",
                f"{info['weight_concentration_prior_type']}, concentration "
                f"{info['weight_concentration_prior']:g}",
            ),
            (
                "settings",
                f"init={info['init_params']} tol={info['tol']:g} max_iter={info['max_iter']} "
                f"n_init={info['n_init']} reg_covar={info['reg_covar']:g} "
                f"seed={info['random_state']}",
            ),
        ]
        if len(info["weights"]) <= 16:
            rows.append(("weights", "[" + ", ".join(f"{w:.4f}" for w in info["weights"]) + "]"))
    else:
        classes = info["classes"][:16]
        counts = ", ".join(
            f"{label}: {count:g} ({prior:.4f})"
            for label, count, prior in zip(classes, info["class_count"], info["class_prior"])
        ) + (", ..." if len(info["classes"]) > 16 else "")
        unlabelled = info["n_unlabelled"]
        rows += [
            ("classes", len(info["classes"])),
            ("labelled (prior)", counts),
            ("unlabelled rows", "not stored" if unlabelled is None else f"{unlabelled:,}"),
            (
                "components",
                f"{info['n_components']} ({info['n_components_per_class']} per class)",
            ),
            ("features (D)", info["n_features"]),
            ("dtype", info["dtype"]),
            ("iterations", info["n_iter"]),
            ("converged", converged),
            (
                "settings",
                f"var_smoothing={info['var_smoothing']:g} (epsilon {info['epsilon']:.3g}) "
                f"tol={info['tol']:g} max_iter={info['max_iter']} missing={info['missing']}",
            ),
        ]
    if info["feature_names"]:
        rows.append(("features", ", ".join(info["feature_names"])))
    rows.append(
        (
            "format",
            f"version {info['format_version']}, written by diaggmm-dist {info['library_version']}",
        )
    )
    return rows


def describe_other(args, console, model, options) -> int:
    """``diaggmm info`` of a Bayesian mixture or a classifier, as text or JSON.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``info``.
    console : Console
    model : BayesianDiagGMM or DiagGMMClassifier
    options : dict or None
        The command's storage options.

    Returns
    -------
    int
        0; failures are raised.

    Raises
    ------
    ValueError
        ``--against`` given: the diagonal check is a ``DiagGMM``'s.
    """
    kind = type(model).__name__
    if args.against is not None:
        raise ValueError(
            f"--against checks a DiagGMM's diagonal assumption; the model at "
            f"{os.fspath(args.model)!r} is a {kind}: drop --against (or check a DiagGMM "
            "fitted to the same data)."
        )
    summary = bayesian_summary if kind == "BayesianDiagGMM" else classifier_summary
    info = summary(args.model, model, options)
    if args.json:
        console.print(json.dumps(info, indent=2))
        return 0
    rows = _rows(info)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        console.print(f"{name:<{width}}  {value}")
    return 0
