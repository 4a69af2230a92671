"""Tasks shared by the flows: EM in blocks of iterations, one task per block, resumable.

Every task takes paths and small settings only and returns a small dict; no data array ever
crosses a task boundary. The training state lives in the library's checkpoint
(:class:`diaggmm_dist.stores.checkpoint.Checkpoints`), which is the source of truth for where a
run is. A task therefore needs no result from the previous one beyond an iteration number:

* ``initialize`` runs ``DiagGMM(max_iter=0).fit(data, checkpoint=...)``: the initialization,
  checkpointed (or, when the checkpoint already holds this run, nothing: it reports where the
  run is, so a re-run flow continues instead of starting again);
* ``em-iterations-{first}-{last}`` runs ``DiagGMM(max_iter=last).fit(data, checkpoint=...)``:
  it resumes from the checkpoint (``max_iter`` is not part of a checkpoint's identity) and runs
  the iterations still missing up to ``last`` (fewer if EM converges) in one fit; the library
  checkpoints every one of them and reports each through ``fit(on_iteration=...)``, which the
  task logs and returns as one row per iteration. A retry after a failure resumes the same way,
  so it repeats at most the interrupted pass, and the result is bit for bit the one of an
  uninterrupted fit. The block that ends the fit (convergence or the flow's ``max_iter``) also
  saves the model;
* ``save-model`` runs the fit once more with the flow's ``max_iter`` (the checkpoint is
  finished, so no data pass happens) and saves the model: only when no block ended the fit
  (a re-run of a finished fit, or ``max_iter=0``).

Why blocks: the cost of a task beyond its EM passes (Prefect's task run, and the fit's set-up:
opening the data, its fingerprint, which reads a few chunks, reading the checkpoint) is a few
hundred milliseconds, a large share of an iteration of about a second.
:func:`fit_in_blocks` sizes the blocks so that a task lasts about ``seconds_per_task`` (from
the iterations timed so far; the first block is one iteration, to time it), which amortises
that cost while a retry still repeats at most one iteration.

Every task takes a :class:`~flows.specs.FitSpec` (paths, settings, the scheduler's address)
and returns a small dict. Retries and the dask scheduler: :mod:`flows.runtime`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from .runtime import RETRIES, TASK_OPTIONS, is_transient, on_scheduler
from .specs import FitSpec
from .timings import AttemptRows

#: Default target duration of one ``em-iterations`` task, in seconds.
SECONDS_PER_TASK = 60.0


class CheckpointDidNotAdvance(RuntimeError):
    """The library did not continue the checkpoint to the block's last iteration.

    A library defect: not retried.
    """


def default_checkpoint_url(model_url: str) -> str:
    """The checkpoint next to a model: ``<model_url>.checkpoint``.

    Parameters
    ----------
    model_url : str
        Where the model is saved.

    Returns
    -------
    str
        ``<model_url>.checkpoint``.
    """
    return f"{str(model_url).rstrip('/')}.checkpoint"


def _estimator(settings, max_iter, warm_start_from):
    from diaggmm_dist import DiagGMM

    if warm_start_from is None:
        return DiagGMM(**settings, max_iter=max_iter)
    # The loaded model's parameters are the starting point (scikit-learn's warm_start).
    return DiagGMM.load(warm_start_from).set_params(**settings, max_iter=max_iter, warm_start=True)


def fitted(spec: FitSpec, max_iter: int, *, on_iteration=None, overwrite_checkpoint=False):
    """The spec's fit run up to ``max_iter`` through its checkpoint: the one place a task fits.

    It resumes the checkpoint when it holds this run (``max_iter`` is not part of a
    checkpoint's identity) and runs the iterations still missing, checkpointing every one.

    Parameters
    ----------
    spec : FitSpec
        The data, checkpoint, settings and warm start.
    max_iter : int
        Iterations at most (0: the initialization only).
    on_iteration : callable, optional
        Called with each iteration's summary (``DiagGMM.fit``'s ``on_iteration``).
    overwrite_checkpoint : bool, default=False
        Start afresh when the checkpoint holds another run.

    Returns
    -------
    DiagGMM
        The fitted estimator.
    """
    gmm = _estimator(spec.settings, max_iter, spec.warm_start_from)
    return gmm.fit(
        spec.data_url,
        **spec.fit_options,
        overwrite_checkpoint=overwrite_checkpoint,
        on_iteration=on_iteration,
    )


@contextlib.contextmanager
def quiet_convergence():
    """Silence the library's ConvergenceWarning: a fit stopped at max_iter=i is not done yet.

    Yields
    ------
    None
    """
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def finite_or_none(value) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _position(gmm, seconds):
    """Where the fit is: a small JSON-able dict."""
    bounds = list(gmm.lower_bounds_)
    return {
        "iteration": int(gmm.n_iter_),
        "lower_bound": finite_or_none(bounds[-1]) if bounds else None,
        "change": finite_or_none(bounds[-1] - bounds[-2]) if len(bounds) > 1 else None,
        "converged": bool(gmm.converged_),
        "seconds": round(seconds, 4),
    }


@task(name="initialize", **TASK_OPTIONS)
def initialize(spec: FitSpec, overwrite_checkpoint: bool = False) -> dict:
    """Initialize the mixture (no EM iteration) into the checkpoint; report where the run is.

    Parameters
    ----------
    spec : FitSpec
        The fit.
    overwrite_checkpoint : bool, default=False
        Start afresh when the checkpoint holds another run.

    Returns
    -------
    dict
        Where the fit is (``iteration``, ``lower_bound``, ``change``, ``converged``,
        ``seconds``): iteration 0, or further when the checkpoint already holds this run.
    """
    logger = get_run_logger()
    tick = time.perf_counter()
    with on_scheduler(spec.scheduler_address), quiet_convergence():
        gmm = fitted(spec, 0, overwrite_checkpoint=overwrite_checkpoint)
    position = _position(gmm, time.perf_counter() - tick)
    if position["iteration"]:
        logger.info(
            "Checkpoint %s already holds %d iteration(s) of this run: continuing from there.",
            spec.checkpoint_url,
            position["iteration"],
        )
    else:
        start = (
            f"warm start from {spec.warm_start_from}"
            if spec.warm_start_from
            else f"{gmm.init_params!r} initialization"
        )
        logger.info(
            "%s of %d components done in %.2f s", start, gmm.n_components, position["seconds"]
        )
    return position


def _iteration_row(summary):
    return {
        "iteration": int(summary["iteration"]),
        "lower_bound": finite_or_none(summary["lower_bound"]),
        "change": finite_or_none(summary["change"]),
        "seconds": round(float(summary["seconds"]), 4),
    }


@task(name="em-iterations", task_run_name="em-iterations-{first}-{last}", **TASK_OPTIONS)
def em_iterations(spec: FitSpec, first: int, last: int) -> dict:
    """EM iterations ``first`` to ``last`` in one fit: resume the checkpoint, run what is missing.

    Stops early if EM converges. When the fit ends here (converged, or reached
    ``spec.max_iter``), the model is saved at ``spec.model_url``.

    Parameters
    ----------
    spec : FitSpec
        The fit.
    first, last : int
        The block's first and last iteration.

    Returns
    -------
    dict
        Where the fit is (:func:`_position`), plus ``iterations``: one row (``iteration``,
        ``lower_bound``, ``change``, ``seconds``) per iteration of ``first``..``last`` that an
        attempt of this task run did, in order (a retry resumes after the iterations a failed
        attempt checkpointed, whose rows are kept: :class:`~flows.timings.AttemptRows`); and
        ``model``: :func:`save_fit`'s summary when the fit ended here, else None.

    Raises
    ------
    CheckpointDidNotAdvance
        The checkpoint stayed below ``last`` without converging (a library defect).
    """
    from prefect.context import TaskRunContext

    logger = get_run_logger()
    context = TaskRunContext.get()
    rows = AttemptRows(str(context.task_run.id) if context is not None else None)

    def report(summary):
        row = _iteration_row(summary)
        rows.add(row)
        change = "" if row["change"] is None else f" (change {row['change']:+.3e})"
        logger.info(
            "iteration %d: lower bound %.8f%s in %.3f s%s",
            row["iteration"],
            summary["lower_bound"],
            change,
            row["seconds"],
            ", converged" if summary["converged"] else "",
        )

    tick = time.perf_counter()
    try:
        with on_scheduler(spec.scheduler_address), quiet_convergence():
            gmm = fitted(spec, last, on_iteration=report)
        position = _position(gmm, time.perf_counter() - tick)
        if position["iteration"] < last and not position["converged"]:
            raise CheckpointDidNotAdvance(
                f"The checkpoint at {spec.checkpoint_url!r} stayed at iteration "
                f"{position['iteration']} although iterations up to {last} were asked for: this "
                "diaggmm_dist does not continue a checkpoint that an earlier call finished at a "
                "smaller max_iter (DiagGMM.fit must resume when the checkpoint has not converged "
                "and its iteration is below max_iter)."
            )
        finished = position["converged"] or position["iteration"] >= spec.max_iter
        position["model"] = (
            save_fit(gmm, spec.model_url, spec.max_iter, logger) if finished else None
        )
    except BaseException as error:
        if context is None or not is_transient(error) or context.task_run.run_count > RETRIES:
            rows.forget()  # no attempt follows
        raise
    rows.forget()
    position["iterations"] = rows.between(first, last)
    return position


@task(name="save-model", **TASK_OPTIONS)
def save_model(spec: FitSpec) -> dict:
    """Read the finished fit from the checkpoint (no data pass) and save it at ``spec.model_url``.

    Parameters
    ----------
    spec : FitSpec
        The fit, finished in its checkpoint.

    Returns
    -------
    dict
        The saved model's summary (:func:`save_fit`).
    """
    logger = get_run_logger()
    with on_scheduler(spec.scheduler_address), quiet_convergence():
        gmm = fitted(spec, spec.max_iter)
    return save_fit(gmm, spec.model_url, spec.max_iter, logger)


def save_fit(gmm, model_url: str, max_iter: int, logger) -> dict:
    """Save the finished fit ``gmm`` at ``model_url``; its summary.

    A re-run writes the same model, so an existing one is replaced.
    """
    if not gmm.converged_ and max_iter:
        logger.warning("EM did not converge in %d iterations (tol=%g).", gmm.n_iter_, gmm.tol)
    # The stored model has the flow's max_iter and starts afresh when fitted again.
    gmm.set_params(max_iter=max_iter, warm_start=False)
    gmm.save(model_url, overwrite=True)
    logger.info(
        "model saved to %s (%d iterations, lower bound %.8f)",
        model_url,
        gmm.n_iter_,
        gmm.lower_bound_,
    )
    return {
        "model_url": str(model_url),
        "n_iter": int(gmm.n_iter_),
        "converged": bool(gmm.converged_),
        "lower_bound": finite_or_none(gmm.lower_bound_),
        "lower_bounds": [float(v) for v in gmm.lower_bounds_],
    }


def convergence_table(lower_bounds, seconds):
    """Rows of the convergence artifact: every iteration of the fit, with this run's timings."""
    rows, previous = [], None
    for number, bound in enumerate(lower_bounds, start=1):
        rows.append(
            {
                "iteration": number,
                "lower_bound": bound,
                "change": None if previous is None else bound - previous,
                "seconds": seconds.get(number),
            }
        )
        previous = bound
    return rows


def block_size(seconds_per_task, seconds_per_iteration, remaining):
    """Iterations in the next ``em-iterations`` task: enough to last about ``seconds_per_task``.

    One while no iteration has been timed (the first block times one), at least one, at most
    ``remaining``; a tail of at most half a block left after this one is taken into it rather
    than given a short task of its own (a task then lasts up to 1.5 × ``seconds_per_task``).
    """
    if seconds_per_iteration is None or seconds_per_task <= 0:
        return 1
    size = max(1, int(seconds_per_task / max(seconds_per_iteration, 1e-6)))
    return remaining if remaining - size <= size / 2 else size


def fit_in_blocks(
    spec: FitSpec,
    *,
    seconds_per_task: float = SECONDS_PER_TASK,
    overwrite_checkpoint: bool = False,
    artifact_key: str = "train-convergence",
) -> tuple[dict, list[dict]]:
    """The EM loop of a flow: ``initialize``, ``em-iterations-1-1``, ``em-iterations-2-{last}``, ...

    Call it inside a flow, within the flow's ``dask_client``. The first block is one iteration;
    each following block has as many iterations as fit in ``seconds_per_task`` at the mean
    iteration time of the block before (0: one iteration per task; see :func:`block_size`).
    Stops on convergence or at ``spec.max_iter``; the block that ends the fit saves the model
    (``save-model`` does when no block did). Publishes the convergence table (one row per
    iteration) as a Prefect table artifact.

    Parameters
    ----------
    spec : FitSpec
        The fit.
    seconds_per_task : float, default=SECONDS_PER_TASK
        About how long one ``em-iterations`` task should run.
    overwrite_checkpoint : bool, default=False
        Start afresh when the checkpoint holds another run.
    artifact_key : str, default="train-convergence"
        The key of the convergence table artifact.

    Returns
    -------
    tuple of (dict, list of dict)
        The saved model's summary (:func:`save_fit`) and the convergence table.

    Raises
    ------
    ValueError
        ``seconds_per_task`` is not a finite number >= 0 (before any task runs).
    """
    if not (
        isinstance(seconds_per_task, (int, float))
        and math.isfinite(seconds_per_task)
        and seconds_per_task >= 0
    ):
        raise ValueError(
            f"seconds_per_task must be a finite number >= 0, got {seconds_per_task!r}."
        )
    position = initialize(spec, overwrite_checkpoint=overwrite_checkpoint)
    seconds, per_iteration, summary = {}, None, None
    while not position["converged"] and position["iteration"] < spec.max_iter:
        first = position["iteration"] + 1
        last = first - 1 + block_size(seconds_per_task, per_iteration, spec.max_iter - first + 1)
        position = em_iterations(spec, first, last)
        timed = [row["seconds"] for row in position["iterations"]]
        seconds.update((row["iteration"], row["seconds"]) for row in position["iterations"])
        if timed:
            per_iteration = sum(timed) / len(timed)
        summary = position["model"]
    if summary is None:
        summary = save_model(spec)
    table = convergence_table(summary["lower_bounds"], seconds)
    verdict = "converged" if summary["converged"] else "did not converge"
    create_table_artifact(
        table=table or [{"iteration": 0, "lower_bound": None, "change": None, "seconds": None}],
        key=artifact_key,
        description=(
            f"EM on `{spec.data_url}` → `{spec.model_url}`: {summary['n_iter']} iterations, "
            f"{verdict}. Seconds are empty for iterations done by an earlier run (resumed from "
            "the checkpoint)."
        ),
    )
    return summary, table
