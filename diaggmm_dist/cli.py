"""``diaggmm``: fit, score and inspect diagonal Gaussian mixtures from the command line.

    diaggmm fit DATA --k K --out MODEL [--checkpoint URL] [--overwrite] [--scheduler ADDRESS] ...
    diaggmm predict MODEL DATA --out SCORES [--scheduler ADDRESS] [--overwrite]
    diaggmm info MODEL [--json]

DATA is a Zarr array (local path or fsspec URL). Work runs on the dask scheduler at
``--scheduler``, else at ``$DASK_SCHEDULER_ADDRESS``, else on a LocalCluster started for the
command. The CLI owns argument parsing, progress display and exit codes only; the maths, the
stores and the checkpoints are the library's.

Exit codes: 0 success; 1 runtime failure (unreachable scheduler, I/O, numerical failure); 2 bad
usage or bad input (missing data, a corrupt chunk (``CorruptChunkError``), not a model, an output that exists, cannot be written or is
an input, mismatching checkpoint, out-of-range settings); 130 interrupted (Ctrl-C); 143
terminated (SIGTERM). Errors are one line, ``diaggmm: error: <message>``, on stderr, also those
raised on a dask worker; ``--debug`` adds the traceback (and the worker's own report).

The outputs (``fit --out``, ``--checkpoint``, ``predict --out``) are checked before any work:
that they can be written, and that none is, holds or lies inside an input or another output.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

PROG = "diaggmm"
INIT_CHOICES = ("kmeans", "k-means++", "random", "random_from_data", "split")

#: Exit codes.
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


# --------------------------------------------------------------------------- arguments
def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _component_counts(text):
    """``--k``: one number of components, or a comma-separated list of candidates (``2,4,8``)."""
    values = []
    for part in text.split(","):
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer or a list like 2,4,8, got {text!r}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"numbers of components must be >= 1, got {value}")
        values.append(value)
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"repeated numbers of components in {text!r}")
    return values


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _common_options(defaults):
    """Options accepted both before and after the sub-command (``diaggmm --debug fit ...``)."""
    parent = argparse.ArgumentParser(add_help=False)
    default = {} if defaults else {"default": argparse.SUPPRESS}
    parent.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of errors",
        **({"default": False} if defaults else default),
    )
    parent.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no per-iteration lines and no progress bar (the summary and errors still print)",
        **({"default": False} if defaults else default),
    )
    return parent


def build_parser():
    """The ``diaggmm`` argument parser (sub-commands ``fit``, ``predict``, ``info``)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[_common_options(True)],
        description="Distributed, out-of-core EM for Gaussian mixtures with diagonal covariances "
        "(Dask + Zarr).",
        epilog="Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input, 130 interrupted, 143 terminated.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options(False)
    scheduler_help = (
        "dask scheduler address, e.g. tcp://host:8786 (default: $DASK_SCHEDULER_ADDRESS, "
        "else a LocalCluster started for this command)"
    )

    fit = commands.add_parser(
        "fit",
        parents=[common],
        help="fit a mixture to a Zarr array and save the model",
        description="Fit a diagonal Gaussian mixture with EM to the Zarr array DATA and save it to MODEL. "
        "With --checkpoint, the training state is written after every iteration and a rerun "
        "of the same command resumes it, ending with exactly the uninterrupted model.",
    )
    fit.add_argument(
        "data", metavar="DATA", help="Zarr array (path or fsspec URL), rows x features"
    )
    fit.add_argument(
        "--k",
        "--n-components",
        dest="k",
        type=_component_counts,
        required=True,
        help="number of mixture components, or candidates to choose from in the same data "
        "passes, e.g. 2,4,8,16,32 (see --criterion)",
    )
    fit.add_argument(
        "--criterion",
        choices=("bic", "aic", "heldout"),
        default="bic",
        help="with several --k: how the model saved is chosen (default: bic)",
    )
    fit.add_argument(
        "--heldout-fraction",
        type=_non_negative_float,
        default=0.1,
        help="with several --k: share of the rows held out and scored (default: 0.1)",
    )
    fit.add_argument(
        "--out", required=True, metavar="MODEL", help="where to save the model (a Zarr group)"
    )
    fit.add_argument(
        "--checkpoint",
        metavar="URL",
        help="Zarr group for training checkpoints; resumed when it holds this run",
    )
    fit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing MODEL, and start afresh if the checkpoint holds another run",
    )
    fit.add_argument("--scheduler", metavar="ADDRESS", help=scheduler_help)
    fit.add_argument(
        "--init",
        choices=INIT_CHOICES,
        default="kmeans",
        help="initialisation (default: kmeans); split grows the mixture from one component by "
        "splitting the heaviest, with up to 5 EM passes after each split: robust for large K, "
        "more passes",
    )
    fit.add_argument(
        "--tol",
        type=_non_negative_float,
        default=1e-3,
        help="stop when the lower bound changes by less than this (default: 1e-3)",
    )
    fit.add_argument(
        "--max-iter",
        type=_int_at_least(0),
        default=100,
        help="EM iterations at most, per initialisation (default: 100)",
    )
    fit.add_argument(
        "--reg-covar",
        type=_non_negative_float,
        default=1e-6,
        help="added to every variance (default: 1e-6)",
    )
    fit.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="compute precision of the per-chunk products (default: float64)",
    )
    fit.add_argument(
        "--seed", type=int, default=0, help="random seed of the initialisation (default: 0)"
    )
    fit.add_argument(
        "--chunk-size",
        type=_int_at_least(1),
        metavar="ROWS",
        help="rows per dask chunk (whole Zarr chunks are grouped; default: about 16 MiB)",
    )
    fit.add_argument(
        "--n-init",
        type=_int_at_least(1),
        default=1,
        help="initialisations; the best is kept (default: 1)",
    )

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="write per-row labels and scores of a model to Zarr",
        description="Score every row of DATA with the model at MODEL and write the Zarr group SCORES with "
        "arrays labels (int16, -1 for rows with NaN/inf), max_resp (float32) and "
        "log_likelihood (float64), chunked like DATA.",
    )
    predict.add_argument("model", metavar="MODEL", help="model written by `diaggmm fit`")
    predict.add_argument(
        "data", metavar="DATA", help="Zarr array (path or fsspec URL) with the model's features"
    )
    predict.add_argument("--out", required=True, metavar="SCORES", help="Zarr group to write")
    predict.add_argument(
        "--overwrite", action="store_true", help="replace an existing SCORES group"
    )
    predict.add_argument("--scheduler", metavar="ADDRESS", help=scheduler_help)
    predict.add_argument(
        "--chunk-size",
        type=_int_at_least(1),
        metavar="ROWS",
        help="rows per dask chunk (default: the model's, else about 16 MiB)",
    )

    info = commands.add_parser(
        "info",
        parents=[common],
        help="describe a saved model",
        description="Print the attributes of the model at MODEL.",
    )
    info.add_argument("model", metavar="MODEL", help="model written by `diaggmm fit`")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


# ----------------------------------------------------------------------------- display
class _Console:
    """stdout for results and iteration lines, stderr for the bar, warnings and errors.

    The progress bar lives on one stderr line that is erased before anything else is
    printed and redrawn after, so the two never interleave on a terminal.
    """

    def __init__(self, out=None, err=None, quiet=False):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self.lock = threading.RLock()
        self.bar = None

    def print(self, text="", *, stream=None):
        stream = stream or self.out
        with self.lock:
            if self.bar is not None:
                self.bar.erase()
            print(text, file=stream, flush=True)
            if self.bar is not None:
                self.bar.draw()

    def warn(self, text):
        self.print(f"{PROG}: warning: {_one_line(text)}", stream=self.err)


class _PassBar:
    """A text bar on stderr, one step per EM pass, redrawn twice a second (only on a terminal)."""

    WIDTH = 24

    def __init__(self, console, total, label="EM"):
        self.console, self.total, self.label = console, max(int(total), 1), label
        self.done = 0
        self.lower_bound = self.change = self.model = None
        self.pass_start = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="diaggmm-progress", daemon=True)

    def __enter__(self):
        with self.console.lock:
            self.console.bar = self
            self.draw()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)
        with self.console.lock:
            self.erase()
            self.console.bar = None

    def _run(self):
        while not self.stop.wait(0.5):
            with self.console.lock:
                self.draw()

    def update(self, iteration, lower_bound, change, model=None):
        """Show ``iteration`` done; ``model`` names whose lower bound it is when models run side by side."""
        with self.console.lock:
            self.done = min(iteration, self.total)
            self.lower_bound, self.change, self.model = lower_bound, change, model
            self.pass_start = time.monotonic()
            self.draw()

    def render(self):
        filled = int(self.WIDTH * self.done / self.total)
        text = (
            f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}"
        )
        if self.lower_bound is None:
            text += "  initialising"
        else:
            named = "" if self.model is None else f"  {self.model}"
            text += f"{named}  lower bound {self.lower_bound:.6f}  delta {_signed(self.change)}"
        return text + f"  (pass {time.monotonic() - self.pass_start:.1f} s)"

    def draw(self):
        self.console.err.write("\r" + self.render() + "\033[K")
        self.console.err.flush()

    def erase(self):
        self.console.err.write("\r\033[K")
        self.console.err.flush()


def _signed(value):
    return f"{value:+.3e}" if value is not None and math.isfinite(value) else "n/a"


class _IterationPrinter(logging.Handler):
    """Turns the library's per-iteration log records into lines (and bar steps).

    The library logs one record per model per EM iteration, with the model's ``restart``
    index. Models fitted side by side (the restarts of ``--n-init``, the candidates of
    ``--k 2,4,8``) share every data pass, so a pass logs one record per model still running,
    in restart order, all with the same iteration number. Given ``labels`` (restart index ->
    name, see :func:`_model_labels`), every line names its model; without, the records are
    one model's and the lines name none.
    """

    def __init__(self, console, quiet, labels=None):
        super().__init__(logging.INFO)
        self.console, self.quiet, self.labels = console, quiet, labels
        self.width = max(map(len, labels.values())) if labels else 0  # the columns line up
        self.iterations_run = collections.Counter()  # restart index -> iterations in this run
        self.first_iteration = (
            None  # of the first record: the one after the checkpoint's, if resumed
        )

    def emit(self, record):
        try:
            if getattr(record, "iteration", None) is None:
                self._message(record)
            else:
                self._iteration(record)
        except Exception:  # a display problem must never stop a fit
            self.handleError(record)

    def _message(self, record):
        if record.levelno >= logging.WARNING:
            self.console.warn(record.getMessage())
        elif not self.quiet:
            self.console.print(record.getMessage())

    def _iteration(self, record):
        restart = getattr(record, "restart", 0)
        if self.first_iteration is None:
            self.first_iteration = record.iteration
            if record.iteration > 1 and not self.quiet:
                self.console.print(
                    f"resumed from the checkpoint after iteration {record.iteration - 1}"
                )
        self.iterations_run[restart] += 1
        bar = self.console.bar
        if bar is not None:
            bar.update(record.iteration, record.lower_bound, record.change, self._label(restart))
        if not self.quiet:
            self.console.print(self._line(record, restart))

    def _label(self, restart):
        return None if not self.labels else self.labels.get(restart, f"model {restart}")

    def _line(self, record, restart):
        label = self._label(restart)
        named = "" if label is None else f"{label:<{self.width}}  "
        line = (
            f"iteration {record.iteration:4d}  {named}lower bound {record.lower_bound:.8f}  "
            f"delta {_signed(record.change):>10}  {record.seconds:.2f} s"
        )
        # Side by side, a converged model drops out of the next passes: say why.
        if label is not None and getattr(record, "converged", False):
            line += "  converged"
        return line


def _model_labels(candidates, n_init):
    """Names of the models one fit runs side by side, by restart index; None for a single model.

    :func:`~diaggmm_dist.selection.select_n_components` gives the candidate at position ``i``
    the restart index ``i``; :meth:`DiagGMM.fit` numbers its restarts from 0 (shown from 1).
    """
    if len(candidates) > 1:
        return {index: f"K={k}" for index, k in enumerate(candidates)}
    if n_init > 1:
        return {restart: f"init {restart + 1}/{n_init}" for restart in range(n_init)}
    return None


class _library_output:
    """Route the library logger and Python warnings to the console for the block's duration.

    ``labels``: names of the models fitted side by side, as :func:`_model_labels` gives them.
    """

    def __init__(self, console, quiet, labels=None):
        self.console = console
        self.handler = _IterationPrinter(console, quiet, labels)

    def __enter__(self):
        self.logger = logging.getLogger("diaggmm_dist")
        self.saved = (self.logger.level, self.logger.propagate, warnings.showwarning)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False

        def show(message, category, filename, lineno, file=None, line=None):
            self.console.warn(f"{message} ({category.__name__})")

        warnings.showwarning = show
        return self.handler

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]
        warnings.showwarning = self.saved[2]


def _one_line(text):
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------ checks
class UnusableOutputError(Exception):
    """An output location the command cannot or must not write; refused before any work (exit 2)."""


def _check_writable(url, what, in_place=False):
    """Refuse an output location that cannot be written, before any work: one line naming it.

    Local paths: the store is written under its parent folder (the model as a sibling that is
    renamed into place; missing folders are created, as the library does), so the nearest
    existing ancestor of the parent must be a folder in which a file can be created. That is
    tried for real (a file created and removed): permission bits do not bind root, a read-only
    or special file system (``/proc``, ``/sys``) refuses regardless. ``in_place``: the store,
    when it exists, is written inside (a checkpoint), so a file is tried there too.
    fsspec URLs: only that the protocol is known and its package installed; whether a bucket
    exists and may be written is known to the object store only, at the cost of requests and
    credentials that a check should not spend.
    """
    from .stores.zarr_groups import is_local, local_path

    text = os.fspath(url)
    if not is_local(text):
        import fsspec

        try:
            fsspec.core.url_to_fs(text)
        except (ValueError, ImportError) as err:  # unknown protocol, or its package missing
            raise UnusableOutputError(
                f"cannot write the {what} to {text!r}: {_one_line(err)}"
            ) from None
        return
    target = Path(os.path.realpath(local_path(text)))
    if target.exists() and not target.is_dir():
        raise UnusableOutputError(
            f"cannot write the {what} to {text!r}: it is a file, not a Zarr store; "
            "choose another path."
        )
    folder = target.parent
    while not folder.exists():  # missing folders are created; the one that exists must take them
        folder = folder.parent
    if not folder.is_dir():
        raise UnusableOutputError(
            f"cannot write the {what} to {text!r}: {str(folder)!r} is a file, not a folder."
        )
    _try_creating_a_file(folder, text, what)
    if in_place and target.is_dir():
        _try_creating_a_file(target, text, what)


def _try_creating_a_file(folder, url, what):
    import tempfile

    try:
        handle, name = tempfile.mkstemp(prefix=".diaggmm-write-test-", dir=folder)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UnusableOutputError(
            f"cannot write the {what} to {url!r}: no file can be created in the folder "
            f"{str(folder)!r} ({reason})."
        ) from None
    os.close(handle)
    os.unlink(name)


def _location(url):
    """A comparable form of a store location: the protocol and the parts of its absolute path.

    Local paths are resolved (relative or absolute, symbolic links, ``..``, a trailing
    slash); None when an fsspec URL cannot be parsed (opening it reports that).
    """
    from .stores.zarr_groups import is_local, local_path

    text = os.fspath(url)
    if is_local(text):
        return ("file", Path(os.path.realpath(local_path(text))).parts)
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ValueError, ImportError):
        return None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return (protocol, tuple(part for part in path.split("/") if part))


def _check_apart(outputs, inputs):
    """Refuse an output that is an input, holds one or lies inside one, whatever ``--overwrite`` says.

    ``outputs``, ``inputs``: ``(name, url)`` pairs, e.g. ``("--out", "scores.zarr")``,
    ``("model", "model.zarr")``. Writing an output replaces what is at its path (with
    ``--overwrite``), so an input at or under it would be deleted, and one around it changed.
    Every output is also checked against the outputs after it.
    """
    outputs = [(name, url) for name, url in outputs if url is not None]
    for position, (name, url) in enumerate(outputs):
        out = _location(url)
        for other, other_url in [*outputs[position + 1 :], *inputs]:
            place = _location(other_url)
            if out is None or place is None or out[0] != place[0]:
                continue
            if out == place:
                problem = f"is the {other} {os.fspath(other_url)!r}: writing there would replace it"
            elif place[1][: len(out[1])] == out[1]:
                problem = (
                    f"holds the {other} {os.fspath(other_url)!r}: writing there would delete it"
                )
            elif out[1][: len(place[1])] == place[1]:
                problem = (
                    f"is inside the {other} {os.fspath(other_url)!r}: writing there would change it"
                )
            else:
                continue
            raise UnusableOutputError(
                f"{name} {os.fspath(url)!r} {problem} (refused even with --overwrite); "
                "choose another path."
            )


def _open_data(url, chunk_size):
    """The data as a lazy row-chunked dask array; reads Zarr metadata only."""
    from .inputs import as_row_chunked

    return as_row_chunked(os.fspath(url), chunk_size)


def _check_output(url, overwrite, what):
    """Refuse an output path that holds something else, or an existing store without --overwrite."""
    from .stores.zarr_groups import NotAGroupError, open_group_or_none

    try:
        exists = open_group_or_none(url) is not None
    except NotAGroupError as err:
        raise FileExistsError(
            err.describe(what) + ": refusing to replace it; choose another output path."
        ) from None
    if exists and not overwrite:
        raise FileExistsError(
            f"{url!r} already exists: pass --overwrite to replace it, or choose another path."
        )


@contextlib.contextmanager
def _dask_client(args):
    """The command's dask client (:func:`~diaggmm_dist.cluster.dask_client`), quiet about failures it reports.

    A failure ends the command with one line, so what distributed logs about it in this
    terminal is left out unless ``--debug``: a worker's "Compute Failed" screenful (the workers
    of a LocalCluster started for the command write here) and the warnings of closing the
    cluster while other tasks still run ("Worker process still alive ..., killing").
    """
    from .cluster import dask_client

    logger = logging.getLogger("distributed")
    level = logger.level
    try:
        with dask_client(args.scheduler) as client:
            if client.cluster is not None and not args.debug:
                from .worker_logging import QuietWorkerLogs

                client.register_plugin(QuietWorkerLogs())
            try:
                yield client
            except BaseException:
                if not args.debug:
                    logger.setLevel(logging.CRITICAL)
                raise
    finally:
        logger.setLevel(level)


def _load_model(url):
    from .mixture import DiagGMM

    return DiagGMM.load(url)


# ---------------------------------------------------------------------------- commands
def _fit(args, console):
    from .mixture import DiagGMM
    from .validation import check_settings

    # Outputs are checked before anything is read or started; apart first: the write test needs no
    # file created inside an input.
    _check_apart([("--out", args.out), ("--checkpoint", args.checkpoint)], [("data", args.data)])
    _check_writable(args.out, "model")
    if args.checkpoint is not None:
        _check_writable(args.checkpoint, "checkpoint", in_place=True)
    candidates, args.k = args.k, max(args.k)
    if len(candidates) > 1:
        if args.n_init != 1:
            raise ValueError(
                "--n-init must be 1 with several --k (one initialisation per candidate)."
            )
        if not args.heldout_fraction < 1:
            raise ValueError(f"--heldout-fraction must be below 1, got {args.heldout_fraction}.")
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
    data = _open_data(args.data, args.chunk_size)
    n_rows, n_features = data.shape
    if args.k > n_rows:
        raise ValueError(
            f"--k {args.k} is larger than the number of rows of {args.data!r} ({n_rows}): "
            f"use at most {n_rows} components."
        )
    _check_output(args.out, args.overwrite, "model")
    if args.checkpoint is not None:
        # Refused by the library too (a live fit holding it; without --overwrite, something that is
        # not a checkpoint of this format), but here before a cluster starts.
        from .stores.checkpoint import check_checkpoint

        check_checkpoint(args.checkpoint, overwrite=args.overwrite)

    start = time.monotonic()
    labels = _model_labels(candidates, args.n_init)
    with _library_output(console, args.quiet, labels) as printer:
        with _dask_client(args) as client:
            if not args.quiet:
                console.print(
                    f"fit: {n_rows:,} rows x {n_features} features from {args.data}, "
                    f"K={','.join(map(str, candidates))}, "
                    f"{data.numblocks[0]} chunks, scheduler {client.scheduler.address}"
                )
            show_bar = not args.quiet and console.err.isatty()
            bar = _PassBar(console, args.max_iter) if show_bar else None
            if len(candidates) > 1:
                return _select(args, candidates, gmm, console, start)
            if bar is not None:
                with bar:
                    gmm.fit(
                        args.data, checkpoint=args.checkpoint, overwrite_checkpoint=args.overwrite
                    )
            else:
                gmm.fit(args.data, checkpoint=args.checkpoint, overwrite_checkpoint=args.overwrite)
        gmm.save(args.out, overwrite=args.overwrite)
    seconds = time.monotonic() - start
    note = ""
    if args.checkpoint is not None and printer.first_iteration not in (None, 1):
        note = f", resumed after iteration {printer.first_iteration - 1}"
    elif args.checkpoint is not None and printer.first_iteration is None and args.max_iter > 0:
        note = ", taken from the finished run in the checkpoint"
    # The counts are the kept initialisation's, like n_iter_ (the others shared its passes).
    kept = f", kept {labels[gmm.best_init_]}" if labels else ""
    console.print(
        f"done: K={args.k}, {gmm.n_iter_} iterations ({printer.iterations_run[gmm.best_init_]} in this run{note}), "
        f"converged={'yes' if gmm.converged_ else 'no'}, lower bound {gmm.lower_bound_:.8f}{kept}, "
        f"{seconds:.1f} s; model saved to {args.out}"
    )
    return EXIT_OK


def _select(args, candidates, template, console, start):
    """``fit --k 2,4,8``: every candidate through the same passes; the chosen one is saved."""
    from .selection import select_n_components

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
        **settings,
    )
    result.best.save(args.out, overwrite=args.overwrite)
    console.print(result.to_markdown())
    console.print(
        f"done: chose K={result.best.n_components} of {', '.join(map(str, candidates))} by "
        f"{args.criterion}, {time.monotonic() - start:.1f} s; model saved to {args.out}"
    )
    return EXIT_OK


def _predict(args, console):
    import dask.array as da
    import numpy as np

    from .engine import compute
    from .outputs.scores import write_scores

    _check_apart([("--out", args.out)], [("model", args.model), ("data", args.data)])
    _check_writable(args.out, "scores")
    model = _load_model(args.model)
    data = _open_data(args.data, args.chunk_size or model.chunk_size)
    if data.shape[1] != model.n_features_in_:
        raise ValueError(
            f"{args.data!r} has {data.shape[1]} features, but the model at {args.model!r} was "
            f"fitted with {model.n_features_in_}."
        )
    _check_output(args.out, args.overwrite, "scores group")
    start = time.monotonic()
    with _library_output(console, args.quiet), _dask_client(args) as client:
        if not args.quiet:
            console.print(
                f"predict: {data.shape[0]:,} rows from {args.data} with the K={model.n_components} "
                f"model {args.model}, scheduler {client.scheduler.address}"
            )
        write_scores(
            model, args.data, args.out, overwrite=args.overwrite, chunk_size=args.chunk_size
        )
        labels = da.from_zarr(os.fspath(args.out), component="labels")
        (counts,) = compute(
            da.bincount(labels.astype(np.int64) + 1, minlength=model.n_components + 1)
        )
    seconds = time.monotonic() - start
    per_component = counts[1:]
    shown = ", ".join(str(int(c)) for c in per_component[:16]) + (
        ", ..." if per_component.size > 16 else ""
    )
    console.print(
        f"done: {data.shape[0]:,} rows scored in {seconds:.1f} s, {int(counts[0])} unscored (NaN/inf); "
        f"rows per component [{shown}]; labels, max_resp, log_likelihood written to {args.out}"
    )
    return EXIT_OK


def _model_summary(url, model):
    import numpy as np

    from .stores.zarr_groups import open_group_or_none

    group = open_group_or_none(url)
    attrs = dict(group.attrs) if group is not None else {}
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


def _info(args, console):
    model = _load_model(args.model)
    info = _model_summary(args.model, model)
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


COMMANDS = {"fit": _fit, "predict": _predict, "info": _info}


# -------------------------------------------------------------------------------- main
class _Terminated(BaseException):
    """SIGTERM arrived (a batch scheduler cancelling the job, ``kill``): unwind so clusters close.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it.
    """


def _raise_terminated(signum, frame):
    raise _Terminated()


def _error_exit_code(err):
    """2 for bad usage or input, 1 for runtime failures."""
    from .cluster import SchedulerUnreachableError

    if isinstance(err, SchedulerUnreachableError):
        return EXIT_RUNTIME
    if isinstance(
        err,
        (
            ValueError,
            TypeError,
            FileNotFoundError,
            FileExistsError,
            NotADirectoryError,
            IsADirectoryError,
            UnusableOutputError,
        ),
    ):
        return EXIT_USAGE  # includes ModelStoreError and CheckpointMismatchError (ValueErrors)
    return EXIT_RUNTIME


def main(argv=None):
    """Entry point of the ``diaggmm`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help, --version, usage errors (code 2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    console = _Console(quiet=args.quiet)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return COMMANDS[args.command](args, console)
    except _Terminated:
        hint = (
            " (rerun the same command to resume from the checkpoint)"
            if getattr(args, "checkpoint", None)
            else ""
        )
        console.print(f"{PROG}: terminated{hint}", stream=console.err)
        return EXIT_TERMINATED
    except (
        BrokenPipeError
    ):  # e.g. `diaggmm info MODEL | head -1`: the reader left; nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at interpreter exit
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        hint = (
            " (rerun the same command to resume from the checkpoint)"
            if getattr(args, "checkpoint", None)
            else ""
        )
        console.print(f"{PROG}: interrupted{hint}", stream=console.err)
        return EXIT_INTERRUPTED
    except Exception as err:  # every failure becomes one line; --debug shows where it came from
        if args.debug:
            traceback.print_exc()
        name, message = _error_text(err)
        if not _known_error(err):
            message = f"{name}: {message} (rerun with --debug for the traceback)"
        console.print(f"{PROG}: error: {message}", stream=console.err)
        return _error_exit_code(err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: How distributed sends an exception from a worker whose message is longer than its
#: ``distributed.admin.max-error-length``: ``type(e)(LONG_ERROR, message[:length])``.
LONG_ERROR = "Long error message"


def _error_text(err):
    """``(type name, one-line message)`` of an error, as raised where it happened.

    An exception raised on a dask worker reaches the client as it was raised, except in two
    wrappings of distributed's, undone here: a message longer than
    ``distributed.admin.max-error-length`` comes as ``type(e)("Long error message", message)``,
    and an exception that cannot be unpickled as ``Exception(repr(e))``.
    """
    import ast
    import re

    name, args = type(err).__name__, err.args
    if len(args) == 2 and args[0] == LONG_ERROR and isinstance(args[1], str):
        return name, _one_line(args[1])
    if type(err) is Exception and len(args) == 1 and isinstance(args[0], str):
        wrapped = re.fullmatch(
            r"([A-Za-z_][\w.]*(?:Error|Exception))\((.*)\)", args[0].strip(), re.S
        )
        if wrapped:
            try:
                inner = ast.literal_eval(f"({wrapped[2]},)") if wrapped[2] else ()
            except (ValueError, SyntaxError):
                inner = (wrapped[2],)
            return wrapped[1], _one_line(" ".join(map(str, inner))) or wrapped[1]
    return name, _one_line(err) or name


def _known_error(err):
    """Errors whose message is meant for the user as it stands."""
    from .cluster import SchedulerUnreachableError
    from .stores.checkpoint import CheckpointMismatchError
    from .stores.model_store import ModelStoreError

    return isinstance(
        err,
        (
            ValueError,
            TypeError,
            FileNotFoundError,
            FileExistsError,
            ModelStoreError,
            SchedulerUnreachableError,
            CheckpointMismatchError,
            OSError,
            FloatingPointError,
            UnusableOutputError,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
