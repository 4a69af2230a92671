"""The ``diaggmm`` argument parser: sub-commands, options and their types."""

from __future__ import annotations

import argparse
import math

from ..validation import CRITERIA, DTYPES, INIT_PARAMS, MISSING, check_candidates
from .console import PROG
from .estimator_options import add_estimator_options
from .options import add_storage_options, add_tls_options

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

#: ``fit`` without ``--scheduler``, ``--threads`` or ``--cluster``: an input of at most this
#: many bytes, in at most 8 chunks (the tree sum's fan-in, where threads and a cluster add
#: the chunks' statistics alike), runs on the command's threads instead of a LocalCluster;
#: see bench/FINDINGS.md ("Threads or a LocalCluster").
SMALL_INPUT_BYTES = 128 * 2**20


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
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer or a list like 2,4,8, got {text!r}"
        ) from None
    try:
        return check_candidates(values, name="--k")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _names(text):
    """``--features``/``--columns``: a comma-separated list of names (``B02,B03,B04``)."""
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a name is given twice in {text!r}")
    return names


def _missing_option(parser, default, default_text):
    parser.add_argument(
        "--missing",
        choices=MISSING,
        default=default,
        help="NaN values: error refuses them, drop skips rows with any NaN, marginalize uses "
        f"each row's observed features (default: {default_text})",
    )


def _layout_options(parser):
    """``--feature-dim``, ``--features``, ``--columns``: how DATA is read (as the library's)."""
    group = parser.add_argument_group(
        "data layout",
        "DATA is a 2-D Zarr array (rows x features) unless one of these is given: with "
        "--feature-dim or --features it is a Zarr group (or NetCDF file) opened with xarray, "
        "e.g. one written by xarray with dims (time, y, x, band); a path ending in .parquet "
        "is a table",
    )
    group.add_argument(
        "--feature-dim",
        metavar="DIM",
        help="the dimension holding the features (every other dimension is a sample "
        "dimension), e.g. band",
    )
    group.add_argument(
        "--features",
        type=_names,
        metavar="VAR,VAR",
        help="the data variables of a Zarr group to use as features (default: all of them)",
    )
    group.add_argument(
        "--columns",
        type=_names,
        metavar="COL,COL",
        help="the columns of a Parquet table to use as features (default: every numeric one)",
    )
    return group


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
    parent.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        help="show distributed's log lines from this level up (default: ERROR; WARNING with "
        "--debug)",
        **({"default": None} if defaults else default),
    )
    return parent


def _cluster_options(parser, scheduler_help, auto=False):
    """``--scheduler``, ``--threads`` or ``--cluster``: where the work runs.

    ``auto`` (the command's name): without any of them it chooses threads for a small input.
    """
    where = parser.add_mutually_exclusive_group()
    if auto:  # the LocalCluster is the default for large inputs only
        scheduler_help = scheduler_help[:-1] + "; threads for a small input, see --cluster)"
    where.add_argument("--scheduler", metavar="ADDRESS", help=scheduler_help)
    where.add_argument(
        "--threads",
        action="store_true",
        help="run on this process's threads, without a cluster: quicker for data that one "
        "machine reads in seconds (e.g. under a few million rows)"
        + ("; the default for a small input (see --cluster)" if auto else ""),
    )
    where.add_argument(
        "--cluster",
        action="store_true",
        help="start a LocalCluster of worker processes for the command"
        + (
            " even for a small input (without --scheduler, --threads or --cluster, an input "
            f"of at most {SMALL_INPUT_BYTES // 2**20} MiB"
            + (" in at most 8 chunks" if auto == "fit" else "")
            + " runs on threads: the same result to the bit, without the cluster's start)"
            if auto
            else " (the default without --scheduler)"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``diaggmm`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        With the sub-commands ``fit``, ``predict`` and ``info``; the choices of ``--init``,
        ``--criterion`` and ``--dtype`` are the library's (:mod:`diaggmm_dist.validation`).
    """
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[_common_options(True)],
        description="Distributed, out-of-core EM for Gaussian mixtures with diagonal covariances "
        "(Dask + Zarr).",
        epilog="Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input, 130 interrupted, "
        "143 terminated.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options(False)
    scheduler_help = (
        "dask scheduler address, e.g. tcp://host:8786 or tls://host:8786 (default: "
        "$DASK_SCHEDULER_ADDRESS, else a LocalCluster started for this command, with TLS)"
    )

    fit = commands.add_parser(
        "fit",
        parents=[common],
        help="fit a mixture to a Zarr array and save the model",
        description="Fit a diagonal Gaussian mixture with EM to the Zarr array DATA and save it "
        "to MODEL (with --labels a classifier, with --bayesian a variational Bayesian "
        "mixture: see 'other estimators'). "
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
        help="number of mixture components, or candidates to choose from in the same data "
        "passes, e.g. 2,4,8,16,32 (see --criterion); with --bayesian the most components; "
        "not with --labels (required otherwise)",
    )
    fit.add_argument(
        "--criterion",
        choices=CRITERIA,
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
    _cluster_options(fit, scheduler_help, auto="fit")
    add_tls_options(fit)
    fit.add_argument(
        "--init",
        choices=INIT_PARAMS,
        default="kmeans",
        help="initialization (default: kmeans); split grows the mixture from one component by "
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
        help="EM iterations at most, per initialization (default: 100)",
    )
    fit.add_argument(
        "--reg-covar",
        type=_non_negative_float,
        default=1e-6,
        help="added to every variance (default: 1e-6)",
    )
    fit.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float64",
        help="compute precision of the per-chunk products (default: float64)",
    )
    fit.add_argument(
        "--seed", type=int, default=0, help="random seed of the initialization (default: 0)"
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
        help="initializations; the best is kept (default: 1)",
    )
    _missing_option(fit, "error", "error")
    fit.add_argument(
        "--sample-weight",
        metavar="WEIGHTS",
        help="a Zarr array (path or URL) of one non-negative weight per row of DATA; with "
        "--feature-dim or --features, a Zarr group (or NetCDF) with DATA's sample dimensions",
    )
    _layout_options(fit)
    add_estimator_options(fit)
    add_storage_options(fit)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="write per-row labels and scores of a model to Zarr",
        description="Score every row of DATA with the model at MODEL and write the Zarr group "
        "SCORES with "
        "arrays labels (int16, -1 for rows with NaN/inf), max_resp (float32) and "
        "log_likelihood (float64), chunked like DATA. DATA is read as the model was fitted "
        "(its --feature-dim, --features or --columns) unless they are given. Gridded DATA "
        "(xarray, e.g. dims time, y, x, band) gives a label map: the same arrays with DATA's "
        "sample dimensions and coordinates, not flattened rows. A classifier's labels are "
        "class codes, indices into the store's classes attribute; max_resp is then the "
        "class's probability.",
    )
    predict.add_argument("model", metavar="MODEL", help="model written by `diaggmm fit`")
    predict.add_argument(
        "data",
        metavar="DATA",
        help="Zarr array (path or fsspec URL) with the model's features, a Zarr group (or "
        "NetCDF file) read with xarray, or a Parquet table",
    )
    predict.add_argument(
        "--out", required=True, metavar="SCORES", help="Zarr group to write (scores or label map)"
    )
    predict.add_argument(
        "--overwrite", action="store_true", help="replace an existing SCORES group"
    )
    _cluster_options(predict, scheduler_help, auto="predict")
    add_tls_options(predict)
    predict.add_argument(
        "--chunk-size",
        type=_int_at_least(1),
        metavar="ROWS",
        help="rows per dask chunk (default: the model's, else about 16 MiB)",
    )
    _missing_option(predict, None, "the model's")
    layout = _layout_options(predict)
    layout.description = (
        "how DATA is read, as fit takes them; by default the model's own (from its fit): "
        "give them only to read DATA another way, e.g. a feature dimension of another name"
    )
    add_storage_options(predict)

    info = commands.add_parser(
        "info",
        parents=[common],
        help="describe a saved model",
        description="Print the attributes of the model at MODEL.",
    )
    info.add_argument("model", metavar="MODEL", help="model written by `diaggmm fit`")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument(
        "--against",
        metavar="DATA",
        help="held-out rows to check the diagonal assumption on (one pass): what full "
        "covariances with the model's responsibilities would gain, per component, and the "
        "strongest correlations the model ignores",
    )
    _layout_options(info)
    _cluster_options(info, scheduler_help)
    add_tls_options(info)
    add_storage_options(info)
    return parser
