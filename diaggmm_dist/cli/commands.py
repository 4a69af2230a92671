"""The ``diaggmm`` sub-commands: ``fit`` (one K or a choice among several), ``predict``, ``info``.

Each takes the parsed arguments and the console and returns an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import time

from ..validation import check_heldout_fraction
from .checks import (
    check_apart,
    check_output,
    check_writable,
    load_model,
    open_data,
)
from .console import Console, PassBar, library_output, model_labels
from .exits import EXIT_OK
from .options import command_security, command_storage_options


@contextlib.contextmanager
def _dask_client(args):
    """The command's dask client (:func:`~diaggmm_dist.cluster.dask_client`), with its TLS
    credentials (``args.security``); quiet about the failures it reports itself.

    A failure ends the command with one line, so what distributed logs about it in this
    terminal is left out unless ``--debug``: a worker's "Compute Failed" screenful (the workers
    of a LocalCluster started for the command write here) and the warnings of closing the
    cluster while other tasks still run ("Worker process still alive ..., killing").
    """
    from ..cluster import dask_client

    logger = logging.getLogger("distributed")
    level = logger.level
    try:
        with dask_client(args.scheduler, security=args.security) as client:
            if client.cluster is not None and not args.debug:
                from ..worker_logging import QuietWorkerLogs

                client.register_plugin(QuietWorkerLogs())
            try:
                yield client
            except BaseException:
                if not args.debug:
                    logger.setLevel(logging.CRITICAL)
                raise
    finally:
        logger.setLevel(level)


def fit(args: argparse.Namespace, console: Console) -> int:
    """``diaggmm fit``: fit one K (or choose among several, :func:`select`) and save the model.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``fit`` (:func:`~diaggmm_dist.cli.parser.build_parser`).
    console : Console
        Where results, iteration lines and the progress bar go.

    Returns
    -------
    int
        :data:`~diaggmm_dist.cli.exits.EXIT_OK`; failures are raised (``main`` maps them to
        exit codes).

    Raises
    ------
    ValueError, FileExistsError, UnusableOutputError
        Bad settings or outputs, refused before any work; anything the fit raises.
    """
    from ..mixture import DiagGMM
    from ..validation import check_settings

    args.security = command_security(args)  # before any work: files, tls:// address
    options = command_storage_options(args)
    # Outputs are checked before anything is read or started; apart first: the write test needs no
    # file created inside an input.
    check_apart(
        [("--out", args.out), ("--checkpoint", args.checkpoint)], [("data", args.data)], options
    )
    check_writable(args.out, "model", storage_options=options)
    if args.checkpoint is not None:
        check_writable(args.checkpoint, "checkpoint", in_place=True, storage_options=options)
    candidates, args.k = args.k, max(args.k)
    if len(candidates) > 1:
        if args.n_init != 1:
            raise ValueError(
                "--n-init must be 1 with several --k (one initialization per candidate)."
            )
        check_heldout_fraction(args.heldout_fraction, name="--heldout-fraction")
    gmm = DiagGMM(
        args.k,
        tol=args.tol,
        reg_covar=args.reg_covar,
        max_iter=args.max_iter,
        n_init=args.n_init,
        init_params=args.init,
        random_state=args.seed,
        dtype=args.dtype,
        chunk_size=args.chunk_size,
    )
    check_settings(gmm)
    # Everything that can be refused is refused before a cluster starts or a pass runs.
    data = open_data(args.data, args.chunk_size, options)
    n_rows, n_features = data.shape
    if args.k > n_rows:
        raise ValueError(
            f"--k {args.k} is larger than the number of rows of {args.data!r} ({n_rows}): "
            f"use at most {n_rows} components."
        )
    check_output(args.out, args.overwrite, "model", options)
    if args.checkpoint is not None:
        # Refused by the library too (a live fit holding it; without --overwrite, something that is
        # not a checkpoint of this format), but here before a cluster starts.
        from ..em_settings import store_location
        from ..stores.checkpoint import check_checkpoint

        check_checkpoint(store_location(args.checkpoint, options), overwrite=args.overwrite)

    start = time.monotonic()
    labels = model_labels(candidates, args.n_init)
    with library_output(console, args.quiet, labels) as printer:
        with _dask_client(args) as client:
            if not args.quiet:
                console.print(
                    f"fit: {n_rows:,} rows x {n_features} features from {args.data}, "
                    f"K={','.join(map(str, candidates))}, "
                    f"{data.numblocks[0]} chunks, scheduler {client.scheduler.address}"
                )
            show_bar = not args.quiet and console.err.isatty()
            bar = PassBar(console, args.max_iter) if show_bar else None
            if len(candidates) > 1:
                return select(args, candidates, gmm, console, start, options)
            fit_options = dict(
                checkpoint=args.checkpoint,
                overwrite_checkpoint=args.overwrite,
                storage_options=options,
            )
            if bar is not None:
                with bar:
                    gmm.fit(args.data, **fit_options)
            else:
                gmm.fit(args.data, **fit_options)
        gmm.save(args.out, overwrite=args.overwrite, storage_options=options)
    seconds = time.monotonic() - start
    note = ""
    if args.checkpoint is not None and printer.first_iteration not in (None, 1):
        note = f", resumed after iteration {printer.first_iteration - 1}"
    elif args.checkpoint is not None and printer.first_iteration is None and args.max_iter > 0:
        note = ", taken from the finished run in the checkpoint"
    # The counts are the kept initialization's, like n_iter_ (the others shared its passes).
    kept = f", kept {labels[gmm.best_init_]}" if labels else ""
    console.print(
        f"done: K={args.k}, {gmm.n_iter_} iterations "
        f"({printer.iterations_run[gmm.best_init_]} in this run{note}), "
        f"converged={'yes' if gmm.converged_ else 'no'}, "
        f"lower bound {gmm.lower_bound_:.8f}{kept}, "
        f"{seconds:.1f} s; model saved to {args.out}"
    )
    return EXIT_OK


def select(args, candidates, template, console, start, options=None):
    """``fit --k 2,4,8``: every candidate through the same passes; the chosen one is saved.

    Returns
    -------
    int
        :data:`~diaggmm_dist.cli.exits.EXIT_OK`.
    """
    from ..selection import select_n_components

    settings = {
        key: value
        for key, value in template.get_params().items()
        if key
        not in ("n_components", "weights_init", "means_init", "precisions_init", "warm_start")
    }
    result = select_n_components(
        args.data,
        candidates,
        args.criterion,
        heldout_fraction=args.heldout_fraction,
        checkpoint=args.checkpoint,
        overwrite_checkpoint=args.overwrite,
        storage_options=options,
        **settings,
    )
    result.best.save(args.out, overwrite=args.overwrite, storage_options=options)
    console.print(result.to_markdown())
    console.print(
        f"done: chose K={result.best.n_components} of {', '.join(map(str, candidates))} by "
        f"{args.criterion}, {time.monotonic() - start:.1f} s; model saved to {args.out}"
    )
    return EXIT_OK


def predict(args: argparse.Namespace, console: Console) -> int:
    """``diaggmm predict``: write every row's label, top responsibility and log-likelihood.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``predict``.
    console : Console
        Where the summary goes.

    Returns
    -------
    int
        :data:`~diaggmm_dist.cli.exits.EXIT_OK`; failures are raised.

    Raises
    ------
    ValueError, FileExistsError, UnusableOutputError
        Data that does not match the model, or an unusable output, before any work.
    """
    import dask.array as da
    import numpy as np
    import zarr

    from ..engine import compute
    from ..locations import location
    from ..outputs.scores import write_scores

    args.security = command_security(args)  # before any work: files, tls:// address
    options = command_storage_options(args)
    check_apart([("--out", args.out)], [("model", args.model), ("data", args.data)], options)
    check_writable(args.out, "scores", storage_options=options)
    model = load_model(args.model, options)
    data = open_data(args.data, args.chunk_size or model.chunk_size, options)
    if data.shape[1] != model.n_features_in_:
        raise ValueError(
            f"{args.data!r} has {data.shape[1]} features, but the model at {args.model!r} was "
            f"fitted with {model.n_features_in_}."
        )
    check_output(args.out, args.overwrite, "scores group", options)
    start = time.monotonic()
    with library_output(console, args.quiet), _dask_client(args) as client:
        if not args.quiet:
            console.print(
                f"predict: {data.shape[0]:,} rows from {args.data} with the K={model.n_components} "
                f"model {args.model}, scheduler {client.scheduler.address}"
            )
        write_scores(
            model,
            args.data,
            args.out,
            overwrite=args.overwrite,
            chunk_size=args.chunk_size,
            storage_options=options,
        )
        written = location(args.out, options).zarr_store(read_only=True)
        labels = da.from_zarr(zarr.open_array(written, path="labels", mode="r"))
        (counts,) = compute(
            da.bincount(labels.astype(np.int64) + 1, minlength=model.n_components + 1)
        )
    seconds = time.monotonic() - start
    per_component = counts[1:]
    shown = ", ".join(str(int(c)) for c in per_component[:16]) + (
        ", ..." if per_component.size > 16 else ""
    )
    console.print(
        f"done: {data.shape[0]:,} rows scored in {seconds:.1f} s, "
        f"{int(counts[0])} unscored (NaN/inf); "
        f"rows per component [{shown}]; labels, max_resp, log_likelihood written to {args.out}"
    )
    return EXIT_OK


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


def info(args: argparse.Namespace, console: Console) -> int:
    """``diaggmm info``: print a saved model's attributes, as text or JSON.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``info``.
    console : Console
        Where the description goes.

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
    model = load_model(args.model, options)
    info = model_summary(args.model, model, options)
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
    return EXIT_OK


COMMANDS = {"fit": fit, "predict": predict, "info": info}
