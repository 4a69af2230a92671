"""Tasks shared by the flows: EM in blocks of iterations, one task per block, resumable from a Zarr checkpoint.

Every task takes paths and small settings only and returns a small dict; no data array ever
crosses a task boundary. The training state lives in the library's checkpoint
(:class:`diaggmm_dist.stores.checkpoint.Checkpoints`), which is the source of truth for where a
run is. A task therefore needs no result from the previous one beyond an iteration number:

* ``initialise`` runs ``DiagGMM(max_iter=0).fit(data, checkpoint=...)``: the initialisation,
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


#: Default target duration of one ``em-iterations`` task, in seconds.
SECONDS_PER_TASK = 60.0


class CheckpointDidNotAdvance(RuntimeError):
    """The library did not continue the checkpoint to the block's last iteration (a library defect: not retried)."""


#: OSErrors that a retry cannot cure: a path that is missing, taken, of the wrong kind or
#: forbidden stays so for the seconds between two attempts.
PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def is_transient(error) -> bool:
    """Whether a retry may cure ``error``: I/O and network failures, and dask workers that died.

    Transient: ``OSError`` (a connection reset or refused, a timeout, an object store's
    failure, a lost scheduler: distributed's ``CommClosedError`` and the library's
    ``SchedulerUnreachableError`` are OSErrors) except :data:`PERMANENT_OS_ERRORS`, and
    distributed's ``KilledWorker``. Everything else fails the same way again and is not retried:
    wrong input or settings (``ValueError``, ``TypeError``: a corrupt chunk, a checkpoint of
    another run, out-of-range settings; raised on a dask worker, they arrive as they were
    raised), numerical failures, library defects (:class:`CheckpointDidNotAdvance`).
    """
    from distributed import KilledWorker

    if isinstance(error, PERMANENT_OS_ERRORS):
        return False
    return isinstance(error, (OSError, KilledWorker))


def _retryable(task_, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry the attempt that failed only when :func:`is_transient`."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            error = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - cannot tell: retry
            return True
    return is_transient(error)


#: Options of every task: retried, never cached (they have side effects on stores), results
#: not persisted (they are small dicts returned to the flow).
TASK_OPTIONS = dict(
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=_retryable,
    cache_policy=NO_CACHE,
    persist_result=False,
)


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
def initialise(
    data_url: str,
    checkpoint_url: str,
    settings: dict,
    warm_start_from: str | None = None,
    overwrite_checkpoint: bool = False,
    scheduler_address: str | None = None,
    layout: dict | None = None,
) -> dict:
    """Initialise the mixture (no EM iteration) into the checkpoint; report where the run is."""
    logger = get_run_logger()
    tick = time.perf_counter()
    with on_scheduler(scheduler_address), _quiet():
        gmm = _estimator(settings, 0, warm_start_from).fit(
            data_url,
            **(layout or {}),
            checkpoint=checkpoint_url,
            overwrite_checkpoint=overwrite_checkpoint,
        )
    position = _position(gmm, time.perf_counter() - tick)
    if position["iteration"]:
        logger.info(
            "Checkpoint %s already holds %d iteration(s) of this run: continuing from there.",
            checkpoint_url,
            position["iteration"],
        )
    else:
        start = (
            f"warm start from {warm_start_from}"
            if warm_start_from
            else f"{gmm.init_params!r} initialisation"
        )
        logger.info(
            "%s of %d components done in %.2f s", start, gmm.n_components, position["seconds"]
        )
    return position


#: Per-iteration rows of ``em-iterations`` task runs, by task-run id, kept across the attempts of
#: one task run: a retry resumes after the iterations a failed attempt checkpointed, and their
#: rows (timings) are still reported. Removed when the task run ends.
_ROWS = {}


def _iteration_row(summary):
    return {
        "iteration": int(summary["iteration"]),
        "lower_bound": _finite_or_none(summary["lower_bound"]),
        "change": _finite_or_none(summary["change"]),
        "seconds": round(float(summary["seconds"]), 4),
    }


@task(name="em-iterations", task_run_name="em-iterations-{first}-{last}", **TASK_OPTIONS)
def em_iterations(
    data_url: str,
    checkpoint_url: str,
    settings: dict,
    first: int,
    last: int,
    warm_start_from: str | None = None,
    scheduler_address: str | None = None,
    layout: dict | None = None,
    model_url: str | None = None,
    max_iter: int | None = None,
) -> dict:
    """EM iterations ``first`` to ``last`` in one fit: resume the checkpoint, run what is missing up to ``last``.

    Stops early if EM converges. Returns where the fit is (:func:`_position`) plus
    ``iterations``: one row (``iteration``, ``lower_bound``, ``change``, ``seconds``) per
    iteration of ``first``..``last`` this task run did, in order; and ``model``: when the fit
    ended here (converged, or reached ``max_iter``) and ``model_url`` and ``max_iter`` are
    given, the model is saved there and this is :func:`_save`'s summary, else None.
    """
    from prefect.context import TaskRunContext

    logger = get_run_logger()
    context = TaskRunContext.get()
    key = context.task_run.id if context is not None else None
    rows = _ROWS.setdefault(key, {}) if key is not None else {}

    def report(summary):
        row = rows[summary["iteration"]] = _iteration_row(summary)
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
        with on_scheduler(scheduler_address), _quiet():
            gmm = _estimator(settings, last, warm_start_from).fit(
                data_url, **(layout or {}), checkpoint=checkpoint_url, on_iteration=report
            )
        position = _position(gmm, time.perf_counter() - tick)
        if position["iteration"] < last and not position["converged"]:
            raise CheckpointDidNotAdvance(
                f"The checkpoint at {checkpoint_url!r} stayed at iteration {position['iteration']} although "
                f"iterations up to {last} were asked for: this diaggmm_dist does not continue a checkpoint that an "
                "earlier call finished at a smaller max_iter (DiagGMM.fit must resume when the checkpoint has "
                "not converged and its iteration is below max_iter)."
            )
        finished = position["converged"] or (
            max_iter is not None and position["iteration"] >= max_iter
        )
        save = finished and model_url is not None and max_iter is not None
        position["model"] = _save(gmm, model_url, max_iter, logger) if save else None
    except BaseException as error:
        if key is not None and (not is_transient(error) or context.task_run.run_count > RETRIES):
            _ROWS.pop(key, None)  # no attempt follows
        raise
    if key is not None:
        _ROWS.pop(key, None)
    position["iterations"] = [rows[number] for number in sorted(rows) if first <= number <= last]
    return position


@task(name="save-model", **TASK_OPTIONS)
def save_model(
    data_url: str,
    checkpoint_url: str,
    settings: dict,
    max_iter: int,
    model_url: str,
    warm_start_from: str | None = None,
    scheduler_address: str | None = None,
    layout: dict | None = None,
) -> dict:
    """Read the finished fit from the checkpoint (no data pass) and save it at ``model_url``."""
    logger = get_run_logger()
    with on_scheduler(scheduler_address), _quiet():
        gmm = _estimator(settings, max_iter, warm_start_from).fit(
            data_url, **(layout or {}), checkpoint=checkpoint_url
        )
    return _save(gmm, model_url, max_iter, logger)


def _save(gmm, model_url, max_iter, logger):
    """Save the finished fit ``gmm`` at ``model_url`` (replacing it: a re-run writes the same model); its summary."""
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
        "lower_bound": _finite_or_none(gmm.lower_bound_),
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
    data_url,
    checkpoint_url,
    model_url,
    settings,
    max_iter,
    scheduler_address,
    *,
    seconds_per_task=SECONDS_PER_TASK,
    warm_start_from=None,
    overwrite_checkpoint=False,
    artifact_key="train-convergence",
    layout=None,
):
    """The EM loop of a flow: ``initialise``, ``em-iterations-1-1``, ``em-iterations-2-{last}``, ...

    Call it inside a flow, within the flow's ``dask_client``. The first block is one iteration;
    each following block has as many iterations as fit in ``seconds_per_task`` at the mean
    iteration time of the block before (0: one iteration per task; see :func:`block_size`).
    Stops on convergence or at ``max_iter``; the block that ends the fit saves the model
    (``save-model`` does when no block did). Publishes the convergence table (one row per
    iteration) as a Prefect table artifact. Returns the saved model's summary plus the table.
    """
    if not (
        isinstance(seconds_per_task, (int, float))
        and math.isfinite(seconds_per_task)
        and seconds_per_task >= 0
    ):
        raise ValueError(
            f"seconds_per_task must be a finite number >= 0, got {seconds_per_task!r}."
        )
    position = initialise(
        data_url,
        checkpoint_url,
        settings,
        warm_start_from=warm_start_from,
        overwrite_checkpoint=overwrite_checkpoint,
        scheduler_address=scheduler_address,
        layout=layout,
    )
    seconds, per_iteration, summary = {}, None, None
    while not position["converged"] and position["iteration"] < max_iter:
        first = position["iteration"] + 1
        last = first - 1 + block_size(seconds_per_task, per_iteration, max_iter - first + 1)
        position = em_iterations(
            data_url,
            checkpoint_url,
            settings,
            first,
            last,
            warm_start_from=warm_start_from,
            scheduler_address=scheduler_address,
            layout=layout,
            model_url=model_url,
            max_iter=max_iter,
        )
        timed = [row["seconds"] for row in position["iterations"]]
        seconds.update((row["iteration"], row["seconds"]) for row in position["iterations"])
        if timed:
            per_iteration = sum(timed) / len(timed)
        summary = position["model"]
    if summary is None:
        summary = save_model(
            data_url,
            checkpoint_url,
            settings,
            max_iter,
            model_url,
            warm_start_from=warm_start_from,
            scheduler_address=scheduler_address,
            layout=layout,
        )
    table = convergence_table(summary["lower_bounds"], seconds)
    verdict = "converged" if summary["converged"] else "did not converge"
    create_table_artifact(
        table=table or [{"iteration": 0, "lower_bound": None, "change": None, "seconds": None}],
        key=artifact_key,
        description=(
            f"EM on `{data_url}` → `{model_url}`: {summary['n_iter']} iterations, {verdict}. "
            "Seconds are empty for iterations done by an earlier run (resumed from the checkpoint)."
        ),
    )
    return summary, table


# ------------------------------------------------------------------------------ choosing K
def selection_plot_url(model_url: str) -> str:
    """The BIC-vs-K figure next to a model: ``<model_url>.bic.png``."""
    return f"{str(model_url).rstrip('/')}.bic.png"


def _selection_row(row, chosen):
    """A row of the library's selection table as JSON-able values, ``chosen`` marked."""
    return {
        "n_components": int(row["n_components"]),
        "chosen": int(row["n_components"]) == chosen,
        **{
            name: None if row[name] is None else _finite_or_none(row[name])
            for name in ("lower_bound", "log_likelihood", "bic", "aic", "heldout_log_likelihood")
        },
        "n_iter": int(row["n_iter"]),
        "converged": bool(row["converged"]),
    }


@task(name="select-n-components", **TASK_OPTIONS)
def select_components(
    data_url: str,
    candidates: list[int],
    model_url: str,
    settings: dict,
    max_iter: int,
    criterion: str,
    heldout_fraction: float,
    scheduler_address: str | None = None,
    layout: dict | None = None,
    checkpoint_url: str | None = None,
) -> dict:
    """Fit every candidate K through the same data passes (``select_n_components``); save the chosen model.

    With ``checkpoint_url`` every iteration is checkpointed and a retry resumes. Returns the saved model's summary
    (:func:`_save`) plus ``n_components`` (the K chosen), ``criterion``, ``table`` (one row per
    candidate, in the order given), ``markdown`` (the library's table, chosen K marked) and
    ``seconds``.
    """
    from diaggmm_dist.selection import select_n_components

    logger = get_run_logger()
    logger.info(
        "fitting K = %s through the same data passes, choosing by %s (%g of the rows held out)",
        ", ".join(map(str, candidates)),
        criterion,
        heldout_fraction,
    )
    tick = time.perf_counter()
    with on_scheduler(scheduler_address), _quiet():
        result = select_n_components(
            data_url,
            candidates,
            criterion,
            heldout_fraction=heldout_fraction,
            max_iter=max_iter,
            checkpoint=checkpoint_url,
            **settings,
            **(layout or {}),
        )
    seconds = time.perf_counter() - tick
    chosen = int(result.best.n_components)
    table = [_selection_row(row, chosen) for row in result.table]
    for row in table:
        held = (
            "—" if row["heldout_log_likelihood"] is None else f"{row['heldout_log_likelihood']:.6g}"
        )
        logger.info(
            "K=%d: BIC %.6g, AIC %.6g, held-out log-likelihood %s, %d iterations%s%s",
            row["n_components"],
            row["bic"],
            row["aic"],
            held,
            row["n_iter"],
            "" if row["converged"] else " (not converged)",
            ", chosen" if row["chosen"] else "",
        )
    logger.info("chose K=%d by %s in %.2f s", chosen, criterion, seconds)
    summary = _save(result.best, model_url, max_iter, logger)
    return dict(
        summary,
        n_components=chosen,
        criterion=criterion,
        table=table,
        markdown=result.to_markdown(),
        seconds=round(seconds, 4),
    )


def _has_matplotlib():
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


@task(name="plot-selection", **TASK_OPTIONS)
def plot_selection(table: list[dict], chosen: int, criterion: str, png_url: str) -> str | None:
    """Write the BIC-vs-K figure to ``png_url`` (local path or fsspec URL); None without matplotlib."""
    logger = get_run_logger()
    if not _has_matplotlib():
        logger.info(
            "matplotlib is not installed (it comes with the 'demo' extra): no BIC-vs-K plot written."
        )
        return None
    import fsspec

    from diaggmm_dist.plots import plot_selection as draw

    with fsspec.open(png_url, "wb") as out:
        draw(
            table,
            out,
            chosen=chosen,
            criterion=criterion,
            title=f"BIC and AIC against K (chosen: K = {chosen})",
        )
    logger.info("BIC-vs-K plot written to %s", png_url)
    return png_url


def publish_selection(selection, data_url, model_url, png_url, artifact_key="train-selection"):
    """The selection's table artifact ``<artifact_key>`` and its markdown artifact ``<artifact_key>-summary``.

    Prefect's image artifacts show an image from a publicly reachable URL only; the figure is a
    file next to the model, so the markdown artifact gives its path instead.
    """
    from prefect.artifacts import create_markdown_artifact

    chosen, criterion = selection["n_components"], selection["criterion"]
    candidates = ", ".join(str(row["n_components"]) for row in selection["table"])
    create_table_artifact(
        table=selection["table"],
        key=artifact_key,
        description=(
            f"Candidates K = {candidates} fitted to `{data_url}` through the same data passes; "
            f"K = {chosen} chosen by {criterion}, saved at `{model_url}`."
        ),
    )
    plot = (
        f"BIC-vs-K plot: `{png_url}`"
        if png_url is not None
        else "BIC-vs-K plot: not written (matplotlib is not installed)."
    )
    create_markdown_artifact(
        key=f"{artifact_key}-summary",
        description=f"Choice of K on `{data_url}`: K = {chosen} by {criterion}",
        markdown="\n\n".join(
            [
                f"## Chosen: K = {chosen} (by {criterion.upper() if criterion != 'heldout' else 'held-out log-likelihood'})",
                f"Candidates K = {candidates}, fitted to `{data_url}` through the same data passes. "
                f"Lower BIC/AIC is better; higher held-out log-likelihood (mean per held-out row) is better. "
                f"The chosen model is saved at `{model_url}`.",
                selection["markdown"],
                plot,
            ]
        ),
    )
