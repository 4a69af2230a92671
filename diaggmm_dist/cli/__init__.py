"""``diaggmm``: fit, score and inspect diagonal Gaussian mixtures from the command line.

    diaggmm fit DATA --k K --out MODEL [--checkpoint URL] [--overwrite] [--scheduler ADDRESS] ...
    diaggmm fit s3://bucket/X --k K --out s3://bucket/model --storage-option anon=false ...
    diaggmm fit DATA --k K --out MODEL --scheduler tls://HOST:8786 --tls-dir DIR ...
    diaggmm predict MODEL DATA --out SCORES [--scheduler ADDRESS] [--overwrite]
    diaggmm info MODEL [--json]
    diaggmm fit DATA --labels LABELS --out MODEL [--components-per-class N]   # a classifier
    diaggmm fit DATA --bayesian --k K --out MODEL    # variational Bayes, at most K components

    diaggmm fit cube.zarr --feature-dim band --missing marginalize --k K --out MODEL --threads
    python -m diaggmm_dist ...       # the same command

DATA is a Zarr array (local path or fsspec URL); with ``--feature-dim`` or ``--features`` a
Zarr group (or NetCDF file) read with xarray, and a ``.parquet`` path a table (``--columns``).
``--missing``, ``--sample-weight``, ``--init`` and ``--n-init`` are the library's settings of
the same names. ``--storage-option KEY=VALUE`` (repeatable)
and ``--storage-options FILE.json`` give the fsspec options of every URL of the command. Work
runs on the dask scheduler at ``--scheduler``, else at ``$DASK_SCHEDULER_ADDRESS``, else on a
LocalCluster started for the command (with TLS; its dashboard link is printed), or, with
``--threads``, on this process's threads without a cluster. ``fit`` of a small input (at most
:data:`~.parser.SMALL_INPUT_BYTES` in at most 8 chunks) runs on threads unless ``--cluster``
asks for the LocalCluster: the same model to the bit, without the cluster's start. On a
terminal a progress bar (tqdm) on stderr advances as each pass's chunks finish (chunks, rows
per second, the pass's ETA, the last lower bound); not with ``--quiet``. distributed's log
lines show from ``--log-level`` up (default ERROR). A ``tls://`` scheduler is joined with
``--tls-ca``/``--tls-cert``/``--tls-key`` or ``--tls-dir``, else dask's config
(:mod:`diaggmm_dist.tls`). The CLI owns argument parsing (:mod:`.parser`), console
output (:mod:`.console`), the checks of inputs and outputs (:mod:`.checks`), storage options
(:mod:`.options`), the commands (:mod:`.commands`) and exit codes (:mod:`.exits`) only; the
maths, the stores and the checkpoints are the library's.

Exit codes: 0 success; 1 runtime failure (unreachable scheduler, I/O, numerical failure); 2 bad
usage or bad input (missing data, a corrupt chunk (``CorruptChunkError``), not a model, an
output that exists, cannot be written or is an input, mismatching checkpoint, out-of-range
settings); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Errors are one line,
``diaggmm: error: <message>``, on stderr, also those raised on a dask worker; ``--debug``
adds the traceback (and the worker's own report).

The outputs (``fit --out``, ``--checkpoint``, ``predict --out``) are checked before any work:
that they can be written, and that none is, holds or lies inside an input or another output.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

from .console import PROG, Console, command_bar
from .exits import (
    EXIT_INTERRUPTED,
    EXIT_RUNTIME,
    EXIT_TERMINATED,
    EXIT_USAGE,
    error_exit_code,
    error_text,
    known_error,
)
from .parser import build_parser

__all__ = ["build_parser", "main"]


class _Terminated(BaseException):
    """SIGTERM arrived (a batch scheduler cancelling the job, ``kill``): unwind so clusters close.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it.
    """


def _raise_terminated(signum, frame):
    raise _Terminated()


def _say_stopped(args, console, how):
    """One line on stderr: the command was ``how`` (terminated, interrupted), and how to resume."""
    resumable = getattr(args, "checkpoint", None)
    hint = " (rerun the same command to resume from the checkpoint)" if resumable else ""
    console.print(f"{PROG}: {how}{hint}", stream=console.err)


def _as_flags(message):
    """The library's advice in the command's terms: ``missing='marginalize'`` is a flag here."""
    for policy in ("drop", "marginalize"):
        message = message.replace(f"missing='{policy}'", f"--missing {policy}")
    return message


def main(argv: list[str] | None = None) -> int:
    """Run the ``diaggmm`` command (the console script's entry point).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; by default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code (:mod:`diaggmm_dist.cli.exits`): 0 success, 1 runtime failure, 2 bad
        usage or input, 130 interrupted, 143 terminated. Errors are printed, not raised.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help, --version, usage errors (code 2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    from .commands import COMMANDS  # here: --help and usage errors need no dask (startup.py)

    console = Console(quiet=args.quiet)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with command_bar(args, console):  # on a terminal: advances as the passes' chunks finish
            return COMMANDS[args.command](args, console)
    except _Terminated:
        _say_stopped(args, console, "terminated")
        return EXIT_TERMINATED
    # e.g. `diaggmm info MODEL | head -1`: the reader left; nothing to report
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at interpreter exit
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        _say_stopped(args, console, "interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:  # every failure becomes one line; --debug shows where it came from
        if args.debug:
            traceback.print_exc()
        name, message = error_text(err)
        message = _as_flags(message)
        if not known_error(err):
            message = f"{name}: {message} (rerun with --debug for the traceback)"
        console.print(f"{PROG}: error: {message}", stream=console.err)
        return error_exit_code(err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
