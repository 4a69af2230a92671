"""Tasks shared by the flows: EM in blocks of iterations, one task per block, resumable.

Every task takes paths and small settings only and returns a small dict; no data array ever
crosses a task boundary. The training state lives in the library's checkpoint
(:class:`diaggmm_dist.stores.checkpoint.Checkpoints`), which is the source of truth for where a
run is. A task therefore needs no result from the previous one beyond an iteration number:

* ``initialize`` runs ``DiagGMM(max_iter=max_iter).fit(data, checkpoint=..., until=0)``: the
  initialization, checkpointed (or, when the checkpoint already holds this run, nothing: it
  reports where the run is, so a re-run flow continues instead of starting again);
* ``em-iterations-{first}-{last}`` runs the same fit with ``until=last``: it resumes from the
  checkpoint and runs the iterations still missing up to ``last`` (fewer if EM converges) in
  one fit, then pauses (:class:`diaggmm_dist.fitting.EMRun`); the library checkpoints every one
  of them and reports each through ``fit(on_iteration=...)``, which the task logs and returns
  as one row per iteration. A retry after a failure resumes the same way,
  so it repeats at most the interrupted pass, and the result is bit for bit the one of an
  uninterrupted fit. The block that ends the fit (convergence or the flow's ``max_iter``) also
  saves the model;
* ``save-model`` runs the fit once more with the flow's ``max_iter`` (the checkpoint is
  finished, so no data pass happens) and saves the model: only when no block ended the fit
  (a re-run of a finished fit, or ``max_iter=0``).

Every task takes a :class:`~flows.specs.FitSpec` (paths, settings, the scheduler's address)
and returns a small dict. Retries and the dask scheduler: :mod:`flows.runtime`; the loop over
the blocks: :func:`flows.blocks.fit_in_blocks`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

from prefect import get_run_logger, task

from .runtime import RETRIES, TASK_OPTIONS, is_transient, load_model, on_scheduler
from .specs import FitSpec
from .timings import AttemptRows


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


def _estimator(settings, max_iter, warm_start_from, storage_options=None):
    from diaggmm_dist import DiagGMM

    if warm_start_from is None:
        return DiagGMM(**settings, max_iter=max_iter)
    # The loaded model's parameters are the starting point (scikit-learn's warm_start).
    return load_model(warm_start_from, storage_options).set_params(
        **settings, max_iter=max_iter, warm_start=True
    )


def fitted(
    spec: FitSpec, until: int | None = None, *, on_iteration=None, overwrite_checkpoint=False
):
    """The spec's fit run up to iteration ``until`` through its checkpoint: where a task fits.

    The fit has the spec's ``max_iter``; it resumes the checkpoint when it holds this run, runs
    the iterations still missing up to ``until`` (checkpointing every one) and pauses there
    (``DiagGMM.fit``'s ``until``): a later call continues it bit for bit.

    Parameters
    ----------
    spec : FitSpec
        The data, checkpoint, settings, ``max_iter`` and warm start.
    until : int, optional
        The iteration to pause after (0: the initialization only); None: run to the end
        (convergence or ``spec.max_iter``).
    on_iteration : callable, optional
        Called with each iteration's summary (``DiagGMM.fit``'s ``on_iteration``).
    overwrite_checkpoint : bool, default=False
        Start afresh when the checkpoint holds another run.

    Returns
    -------
    DiagGMM
        The fitted estimator.
    """
    gmm = _estimator(spec.settings, spec.max_iter, spec.warm_start_from, spec.storage_options)
    return gmm.fit(
        spec.data_url,
        **spec.fit_options,
        overwrite_checkpoint=overwrite_checkpoint,
        on_iteration=on_iteration,
        until=until,
    )


@contextlib.contextmanager
def quiet_convergence():
    """Silence the library's ConvergenceWarning: :func:`save_fit` logs it instead.

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
        finished = position["converged"] or position["iteration"] >= spec.max_iter
        position["model"] = (
            save_fit(gmm, spec.model_url, spec.max_iter, logger, spec.storage_options)
            if finished
            else None
        )
    except BaseException as error:
        if context is None or not is_transient(error) or context.task_run.run_count > RETRIES:
            rows.forget()  # no attempt follows
        else:
            rows.keep()
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
        gmm = fitted(spec)
    return save_fit(gmm, spec.model_url, spec.max_iter, logger, spec.storage_options)


def save_fit(gmm, model_url: str, max_iter: int, logger, storage_options=None) -> dict:
    """Save the finished fit ``gmm`` at ``model_url`` (with ``storage_options``); its summary.

    A re-run writes the same model, so an existing one is replaced.
    """
    if not gmm.converged_ and max_iter:
        logger.warning("EM did not converge in %d iterations (tol=%g).", gmm.n_iter_, gmm.tol)
    # The stored model has the flow's max_iter and starts afresh when fitted again.
    gmm.set_params(max_iter=max_iter, warm_start=False)
    gmm.save(model_url, overwrite=True, storage_options=storage_options)
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
