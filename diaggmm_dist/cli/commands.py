"""The ``diaggmm`` sub-commands: ``fit`` (one K or a choice among several), ``predict``, ``info``.

Each takes the parsed arguments and the console and returns an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import time

from ..validation import check_heldout_fraction
from .checks import (
    check_apart,
    check_output,
    check_writable,
    layout_of,
    load_model,
    open_samples,
    open_weights,
)
from .console import Console, library_output, model_labels
from .exits import EXIT_OK
from .info import info
from .options import command_security, command_storage_options


class _LocalThreads:
    """``--threads`` (or a small input): this process's threads; no cluster, no client."""

    cluster = None

    def __init__(self, why):
        from ..engine.local import local_threads

        self.where = f"on {local_threads()} local threads ({why})"
        self.scheduler = argparse.Namespace(address=f"threads of this process ({why})")


def _small_input(args, nbytes: int, n_chunks: int | None = None) -> bool:
    """Whether a command runs on its threads though no ``--threads`` was given: it would start
    a LocalCluster (no ``--scheduler``, ``$DASK_SCHEDULER_ADDRESS`` or ``--cluster``), and
    the input is small (:data:`~diaggmm_dist.cli.parser.SMALL_INPUT_BYTES`), for ``fit`` in
    at most :data:`~diaggmm_dist.engine.SPLIT_EVERY` chunks (``n_chunks``), so that the
    statistics are added up in the same order as on a cluster: the same model to the bit.
    Per-row results (``predict``) are the same in any order.
    """
    import os

    from ..engine import SPLIT_EVERY
    from .parser import SMALL_INPUT_BYTES

    if args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or args.cluster:
        return False
    return nbytes <= SMALL_INPUT_BYTES and (n_chunks is None or n_chunks <= SPLIT_EVERY)


@contextlib.contextmanager
def _dask_client(args):
    """The command's dask client (:func:`~diaggmm_dist.cluster.dask_client`), with its TLS
    credentials (``args.security``); quiet about the failures it reports itself.

    ``distributed``'s own log lines in this terminal are shown from ``--log-level`` up
    (default ERROR): the warnings of closing a LocalCluster ("Worker process still alive ...,
    killing") are not. A failure ends the command with one line, so what distributed logs
    about it is left out unless ``--debug``: a worker's "Compute Failed" screenful (the
    workers of a LocalCluster started for the command write here). With ``--threads`` no
    cluster is started: the work runs on this process's threads.
    """
    if getattr(args, "threads", False):
        import dask

        with dask.config.set(scheduler="threads"):
            yield _LocalThreads(getattr(args, "threads_reason", "--threads"))
        return
    import distributed  # noqa: F401 - first: importing it sets its logger's level

    from ..cluster import dask_client

    logger = logging.getLogger("distributed")
    level = logger.level
    chosen = args.log_level or ("WARNING" if args.debug else "ERROR")
    logger.setLevel(chosen)
    try:
        with dask_client(args.scheduler, security=args.security) as client:
            if client.cluster is not None:  # its handlers show WARNING up while it runs
                for handler in logger.handlers:
                    handler.setLevel(min(handler.level, logging.getLevelName(chosen)))
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


def _where(client) -> str:
    """Where the work runs, for the first line: the scheduler, and the dashboard of a cluster
    started for the command (distributed draws it with bokeh, else serves a page asking for it).
    """
    if getattr(client, "where", None):
        return client.where
    text = f"scheduler {client.scheduler.address}"
    if client.cluster is not None:
        import importlib.util

        link = getattr(client, "dashboard_link", None)
        if link:
            text += f", dashboard {link}"
            if importlib.util.find_spec("bokeh") is None:
                text += " (pip install bokeh to see it)"
    return text


def fit(args: argparse.Namespace, console: Console) -> int:
    """``diaggmm fit``: fit one K (or choose among several, :func:`select`) and save the model.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``fit`` (:func:`~diaggmm_dist.cli.parser.build_parser`).
    console : Console
        Where results and iteration lines go (the progress bar, when shown, is
        :func:`~diaggmm_dist.cli.console.command_bar`'s).

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
    from .estimator_options import chosen_estimator
    from .estimators import fit_estimator

    kind = chosen_estimator(args)
    if kind != "gmm":  # --labels, --bayesian: cli/estimators.py
        return fit_estimator(args, console, kind, _dask_client, _where, _small_input)
    args.security = command_security(args)  # before any work: files, tls:// address
    options = command_storage_options(args)
    # Outputs are checked before anything is read or started; apart first: the write test needs no
    # file created inside an input.
    inputs = [("data", args.data), ("--sample-weight", args.sample_weight)]
    check_apart(
        [("--out", args.out), ("--checkpoint", args.checkpoint)],
        [(name, url) for name, url in inputs if url is not None],
        options,
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
        missing=args.missing,
        random_state=args.seed,
        dtype=args.dtype,
        chunk_size=args.chunk_size,
    )
    check_settings(gmm)
    # Everything that can be refused is refused before a cluster starts or a pass runs.
    layout = layout_of(args)
    samples = open_samples(args.data, args.chunk_size, layout, options)
    data = samples.array
    n_rows, n_features, n_chunks = math.prod(data.shape[:-1]), data.shape[-1], data.npartitions
    weights = None
    if args.sample_weight is not None:
        weights = open_weights(args.sample_weight, samples, layout, options)
    if args.k > n_rows:
        raise ValueError(
            f"--k {args.k} is larger than the number of rows of {args.data!r} ({n_rows}): "
            f"use at most {n_rows} components."
        )
    check_output(args.out, args.overwrite, "model", options)
    if not args.threads and _small_input(args, data.nbytes, n_chunks):
        args.threads, args.threads_reason = True, "small input: no cluster"
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
                    f"{n_chunks} chunks, {_where(client)}"
                )
            if len(candidates) > 1:
                return select(args, candidates, gmm, console, start, options, weights)
            fit_options = dict(
                sample_weight=weights,
                checkpoint=args.checkpoint,
                overwrite_checkpoint=args.overwrite,
                storage_options=options,
                **layout,
            )
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


def select(args, candidates, template, console, start, options=None, weights=None):
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
        sample_weight=weights,
        **layout_of(args),
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

    DATA is read with the model's fitted layout, or ``--feature-dim``/``--features``/
    ``--columns`` when given (as the library's ``predict``). Rows (a 2-D Zarr array, a table)
    give per-row scores (``write_scores``); gridded data (read with xarray) gives a label map
    with its sample dimensions and coordinates (``write_label_map``). The store written is
    checked for chunks that were never written before the summary.

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
    RuntimeError
        The store written lacks chunks (its writer lost them).
    """
    import dask.array as da
    import numpy as np
    import zarr

    from ..engine import compute
    from ..inputs import InputLayout
    from ..locations import location
    from ..outputs.label_maps import write_label_map
    from ..outputs.scores import write_scores
    from ..outputs.written import NOT_WRITTEN, UnwrittenChunksError, check_written

    args.security = command_security(args)  # before any work: files, tls:// address
    options = command_storage_options(args)
    check_apart([("--out", args.out)], [("model", args.model), ("data", args.data)], options)
    check_writable(args.out, "scores", storage_options=options)
    from .scores import is_classifier, predict_classes, scored_model

    model = scored_model(load_model(args.model, options))  # any estimator: cli/scores.py
    if args.missing is not None:  # e.g. score rows with NaN under a model fitted without any
        model.set_params(missing=args.missing)
    # the model's fitted layout, with what the flags give instead (as the library's predict)
    fitted = InputLayout.of(model)
    given = {key: value for key, value in layout_of(args).items() if value is not None}
    layout = dataclasses.replace(fitted, **given)
    samples = open_samples(
        args.data, args.chunk_size or model.chunk_size, layout.to_dict(), options
    )
    try:
        layout.check(samples, type(model).__name__)
    except ValueError as err:
        raise ValueError(f"{args.data!r} does not fit the model at {args.model!r}: {err}") from None
    gridded = samples.template is not None  # read with xarray: a map keeps its coordinates
    what = "label map" if gridded else "scores group"
    check_output(args.out, args.overwrite, what, options)
    if not args.threads and _small_input(args, samples.array.nbytes):
        args.threads, args.threads_reason = True, "small input: no cluster"
    if is_classifier(model):
        return predict_classes(args, console, model, samples, options, _dask_client, _where)
    start = time.monotonic()
    with library_output(console, args.quiet), _dask_client(args) as client:
        if not args.quiet:
            console.print(
                f"predict: {samples.n_rows:,} rows from {args.data} with the "
                f"K={model.n_components} model {args.model}, {_where(client)}"
            )
        # the data as read above (its layout chosen, its features checked)
        write = write_label_map if gridded else write_scores
        write(model, samples, args.out, overwrite=args.overwrite, storage_options=options)
        try:
            check_written(args.out, options)
        except UnwrittenChunksError as err:  # a runtime failure of the writer, not bad input
            raise RuntimeError(str(err)) from None
        written = location(args.out, options).zarr_store(read_only=True)
        labels = da.from_zarr(zarr.open_array(written, path="labels", mode="r")).ravel()
        # -2 (never written) first, then -1 (unscored), then the components
        (counts,) = compute(
            da.bincount(labels.astype(np.int64) - NOT_WRITTEN, minlength=model.n_components + 2)
        )
    seconds = time.monotonic() - start
    if counts[0]:  # after check_written only a concurrent deletion could do it
        raise RuntimeError(f"{args.out!r}: {int(counts[0])} rows were never written.")
    per_component = counts[2:]
    shown = ", ".join(str(int(c)) for c in per_component[:16]) + (
        ", ..." if per_component.size > 16 else ""
    )
    console.print(
        f"done: {samples.n_rows:,} rows scored in {seconds:.1f} s, "
        f"{int(counts[1])} unscored (NaN/inf); "
        f"rows per component [{shown}]; labels, max_resp, log_likelihood written to {args.out}"
        + (" (a label map)" if gridded else "")
    )
    return EXIT_OK


COMMANDS = {
    "fit": fit,
    "predict": predict,
    "info": functools.partial(info, client_context=_dask_client),
}
