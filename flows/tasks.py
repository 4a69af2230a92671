"""Tasks shared by the flows: EM run one iteration per task, resumable from a Zarr checkpoint.

Every task takes paths and small settings only and returns a small dict; no data array ever
crosses a task boundary. The training state lives in the library's checkpoint
(:class:`diaggmm_dist.io.checkpoint.Checkpoints`), which is the source of truth for where a
run is. A task therefore needs no result from the previous one beyond an iteration number:

* ``initialise`` runs ``DiagGMM(max_iter=0).fit(data, checkpoint=...)``: the initialisation,
  checkpointed (or, when the checkpoint already holds this run, nothing: it reports where the
  run is, so a re-run flow continues instead of starting again);
* ``em-iteration-{i}`` runs ``DiagGMM(max_iter=i).fit(data, checkpoint=...)``: it resumes from
  the checkpoint (``max_iter`` is not part of a checkpoint's identity) and does the one
  iteration still missing. A retry after a failure resumes the same way, so it repeats at most
  the interrupted pass, and the result is bit for bit the one of an uninterrupted fit;
* ``save-model`` runs the fit once more with the flow's ``max_iter`` (the checkpoint is
  finished, so no data pass happens) and saves the model.

Dask: the flow opens one client (:func:`diaggmm_dist.cluster.dask_client`) for its whole run
and hands the tasks its scheduler's address, a string. A task reuses the flow's client when it
can see it (tasks called from the flow run in the flow's thread and process) and pins it as
the current client for the block; if it cannot (another thread with another current client,
another process), it connects to the address itself. See :func:`on_scheduler`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

#: Retries of every task that touches data; the second and third attempts wait 2 s and 10 s.
RETRIES = 2
RETRY_DELAYS = [2, 10]


class CheckpointDidNotAdvance(RuntimeError):
    """The library did not continue the checkpoint by one iteration (a library defect: not retried)."""


def _retryable(task_, task_run, state) -> bool:
    """Retry transient failures (I/O, network, lost workers), not wrong input or settings."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            error = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - cannot tell: retry
            return True
    permanent = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotImplementedError,
                 CheckpointDidNotAdvance)
    return not isinstance(error, permanent)


#: Options of every task: retried, never cached (they have side effects on stores), results
#: not persisted (they are small dicts returned to the flow).
TASK_OPTIONS = dict(retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=_retryable,
                    cache_policy=NO_CACHE, persist_result=False)


@contextlib.contextmanager
def on_scheduler(address):
    """Run the block's dask work on the scheduler at ``address`` (None: dask's local threads).

    The flow's own client is reused when this thread sees it as the current (or default)
    client; otherwise a new connection is opened for the block and closed after it.
    """
    if address is None:
        yield None
        return
    from distributed import Client

    from diaggmm_dist.cluster import dask_client

    try:
        client = Client.current()
    except ValueError:
        client = None
    if client is not None and client.status == "running" and client.scheduler.address == address:
        with client.as_current():
            yield client
        return
    with dask_client(address) as client:  # `with` makes it the current client of this context
        yield client


def default_checkpoint_url(model_url: str) -> str:
    """The checkpoint next to a model: ``<model_url>.checkpoint``."""
    return f"{str(model_url).rstrip('/')}.checkpoint"


def _estimator(settings, max_iter, warm_start_from):
    from diaggmm_dist import DiagGMM

    if warm_start_from is None:
        return DiagGMM(**settings, max_iter=max_iter)
    # The loaded model's parameters are the starting point (scikit-learn's warm_start).
    return DiagGMM.load(warm_start_from).set_params(**settings, max_iter=max_iter, warm_start=True)


@contextlib.contextmanager
def _quiet():
    """Silence the library's ConvergenceWarning: a fit stopped at max_iter=i has not converged yet."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _position(gmm, seconds):
    """Where the fit is: a small JSON-able dict."""
    bounds = list(gmm.lower_bounds_)
    return {
        "iteration": int(gmm.n_iter_),
        "lower_bound": _finite_or_none(bounds[-1]) if bounds else None,
        "change": _finite_or_none(bounds[-1] - bounds[-2]) if len(bounds) > 1 else None,
        "converged": bool(gmm.converged_),
        "seconds": round(seconds, 4),
    }


@task(name="initialise", **TASK_OPTIONS)
def initialise(data_url: str, checkpoint_url: str, settings: dict, warm_start_from: str | None = None,
               overwrite_checkpoint: bool = False, scheduler_address: str | None = None,
               layout: dict | None = None) -> dict:
    """Initialise the mixture (no EM iteration) into the checkpoint; report where the run is."""
    logger = get_run_logger()
    tick = time.perf_counter()
    with on_scheduler(scheduler_address), _quiet():
        gmm = _estimator(settings, 0, warm_start_from).fit(
            data_url, **(layout or {}), checkpoint=checkpoint_url, overwrite_checkpoint=overwrite_checkpoint)
    position = _position(gmm, time.perf_counter() - tick)
    if position["iteration"]:
        logger.info("Checkpoint %s already holds %d iteration(s) of this run: continuing from there.",
                    checkpoint_url, position["iteration"])
    else:
        start = f"warm start from {warm_start_from}" if warm_start_from else f"{gmm.init_params!r} initialisation"
        logger.info("%s of %d components done in %.2f s", start, gmm.n_components, position["seconds"])
    return position


@task(name="em-iteration", task_run_name="em-iteration-{iteration}", **TASK_OPTIONS)
def em_iteration(data_url: str, checkpoint_url: str, settings: dict, iteration: int,
                 warm_start_from: str | None = None, scheduler_address: str | None = None,
                 layout: dict | None = None) -> dict:
    """EM iteration number ``iteration``: resume the checkpoint, run the one iteration still missing."""
    logger = get_run_logger()
    tick = time.perf_counter()
    with on_scheduler(scheduler_address), _quiet():
        gmm = _estimator(settings, iteration, warm_start_from).fit(data_url, **(layout or {}),
                                                                   checkpoint=checkpoint_url)
    position = _position(gmm, time.perf_counter() - tick)
    if position["iteration"] < iteration and not position["converged"]:
        raise CheckpointDidNotAdvance(
            f"The checkpoint at {checkpoint_url!r} stayed at iteration {position['iteration']} although "
            f"iteration {iteration} was asked for: this diaggmm_dist does not continue a checkpoint that an "
            "earlier call finished at a smaller max_iter (DiagGMM.fit must resume when the checkpoint has "
            "not converged and its iteration is below max_iter)."
        )
    change = "" if position["change"] is None else f" (change {position['change']:+.3e})"
    logger.info("iteration %d: lower bound %.8f%s in %.3f s%s", position["iteration"], position["lower_bound"],
                change, position["seconds"], ", converged" if position["converged"] else "")
    return position


@task(name="save-model", **TASK_OPTIONS)
def save_model(data_url: str, checkpoint_url: str, settings: dict, max_iter: int, model_url: str,
               warm_start_from: str | None = None, scheduler_address: str | None = None,
               layout: dict | None = None) -> dict:
    """Read the finished fit from the checkpoint (no data pass) and save it at ``model_url``."""
    from sklearn.exceptions import ConvergenceWarning

    logger = get_run_logger()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        with on_scheduler(scheduler_address):
            gmm = _estimator(settings, max_iter, warm_start_from).fit(data_url, **(layout or {}),
                                                                      checkpoint=checkpoint_url)
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            logger.warning("EM did not converge in %d iterations (tol=%g).", gmm.n_iter_, gmm.tol)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    gmm.set_params(warm_start=False)  # a stored model starts afresh when fitted again
    gmm.save(model_url, overwrite=True)  # idempotent: a re-run writes the same model
    logger.info("model saved to %s (%d iterations, lower bound %.8f)", model_url, gmm.n_iter_, gmm.lower_bound_)
    return {"model_url": str(model_url), "n_iter": int(gmm.n_iter_), "converged": bool(gmm.converged_),
            "lower_bound": _finite_or_none(gmm.lower_bound_), "lower_bounds": [float(v) for v in gmm.lower_bounds_]}


def convergence_table(lower_bounds, seconds):
    """Rows of the convergence artifact: every iteration of the fit, with this run's timings."""
    rows, previous = [], None
    for number, bound in enumerate(lower_bounds, start=1):
        rows.append({"iteration": number, "lower_bound": bound,
                     "change": None if previous is None else bound - previous,
                     "seconds": seconds.get(number)})
        previous = bound
    return rows


def fit_by_iteration(data_url, checkpoint_url, model_url, settings, max_iter, scheduler_address, *,
                     warm_start_from=None, overwrite_checkpoint=False, artifact_key="train-convergence",
                     layout=None):
    """The EM loop of a flow: ``initialise``, ``em-iteration-1``, ... , ``save-model``.

    Call it inside a flow, within the flow's ``dask_client``. Stops on convergence or at
    ``max_iter``; publishes the convergence table as a Prefect table artifact. Returns the
    ``save-model`` summary plus the table.
    """
    position = initialise(data_url, checkpoint_url, settings, warm_start_from=warm_start_from,
                          overwrite_checkpoint=overwrite_checkpoint, scheduler_address=scheduler_address,
                          layout=layout)
    seconds = {}
    while not position["converged"] and position["iteration"] < max_iter:
        position = em_iteration(data_url, checkpoint_url, settings, position["iteration"] + 1,
                                warm_start_from=warm_start_from, scheduler_address=scheduler_address, layout=layout)
        seconds[position["iteration"]] = position["seconds"]
    summary = save_model(data_url, checkpoint_url, settings, max_iter, model_url,
                         warm_start_from=warm_start_from, scheduler_address=scheduler_address, layout=layout)
    table = convergence_table(summary["lower_bounds"], seconds)
    verdict = "converged" if summary["converged"] else "did not converge"
    create_table_artifact(
        table=table or [{"iteration": 0, "lower_bound": None, "change": None, "seconds": None}],
        key=artifact_key,
        description=(f"EM on `{data_url}` → `{model_url}`: {summary['n_iter']} iterations, {verdict}. "
                     "Seconds are empty for iterations done by an earlier run (resumed from the checkpoint)."),
    )
    return summary, table
