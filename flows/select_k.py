"""Tasks of the ``train`` flow's choice of K: every candidate fitted, the table, the plot.

With several candidate numbers of components, one task (``select-n-components``) fits them
all through the same data passes (:func:`diaggmm_dist.select_n_components`) and saves the one
the criterion picks; ``plot-selection`` draws BIC and AIC against K, and
:func:`publish_selection` publishes the table and a summary as Prefect artifacts.
"""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from .runtime import TASK_OPTIONS, on_scheduler
from .specs import ChoiceOfK, FitSpec
from .tasks import finite_or_none, quiet_convergence, save_fit


def selection_plot_url(model_url: str) -> str:
    """The BIC-vs-K figure next to a model: ``<model_url>.bic.png``."""
    return f"{str(model_url).rstrip('/')}.bic.png"


def _selection_row(row, chosen):
    """A row of the library's selection table as JSON-able values, ``chosen`` marked."""
    return {
        "n_components": int(row["n_components"]),
        "chosen": int(row["n_components"]) == chosen,
        **{
            name: None if row[name] is None else finite_or_none(row[name])
            for name in ("lower_bound", "log_likelihood", "bic", "aic", "heldout_log_likelihood")
        },
        "n_iter": int(row["n_iter"]),
        "converged": bool(row["converged"]),
    }


@task(name="select-n-components", **TASK_OPTIONS)
def select_components(spec: FitSpec, choice: ChoiceOfK) -> dict:
    """Fit every candidate K through the same passes (``select_n_components``); save the best.

    Every iteration is checkpointed at ``spec.checkpoint_url``, and a retry resumes.

    Parameters
    ----------
    spec : FitSpec
        The data, checkpoint, model URL, settings (without ``n_components``) and scheduler.
    choice : ChoiceOfK
        The candidates, the criterion and the held-out share.

    Returns
    -------
    dict
        The saved model's summary (:func:`~flows.tasks.save_fit`) plus ``n_components`` (the K
        chosen), ``criterion``, ``table`` (one row per candidate, in the order given),
        ``markdown`` (the library's table, chosen K marked) and ``seconds``.
    """
    from diaggmm_dist.selection import select_n_components

    logger = get_run_logger()
    logger.info(
        "fitting K = %s through the same data passes, choosing by %s (%g of the rows held out)",
        ", ".join(map(str, choice.candidates)),
        choice.criterion,
        choice.heldout_fraction,
    )
    tick = time.perf_counter()
    with on_scheduler(spec.scheduler_address), quiet_convergence():
        result = select_n_components(
            spec.data_url,
            choice.candidates,
            choice.criterion,
            heldout_fraction=choice.heldout_fraction,
            max_iter=spec.max_iter,
            **spec.fit_options,
            **spec.settings,
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
    logger.info("chose K=%d by %s in %.2f s", chosen, choice.criterion, seconds)
    summary = save_fit(result.best, spec.model_url, spec.max_iter, logger, spec.storage_options)
    return dict(
        summary,
        n_components=chosen,
        criterion=choice.criterion,
        table=table,
        markdown=result.to_markdown(),
        seconds=round(seconds, 4),
    )


def _has_matplotlib():
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


@task(name="plot-selection", **TASK_OPTIONS)
def plot_selection(
    table: list[dict],
    chosen: int,
    criterion: str,
    png_url: str,
    storage_options: dict | None = None,
) -> str | None:
    """Write the BIC-vs-K figure to ``png_url`` (local path or fsspec URL, with its options).

    Returns
    -------
    str or None
        ``png_url``; None without matplotlib (nothing written).
    """
    logger = get_run_logger()
    if not _has_matplotlib():
        logger.info(
            "matplotlib is not installed (it comes with the 'demo' extra): no BIC-vs-K plot "
            "written."
        )
        return None
    from diaggmm_dist.locations import location
    from diaggmm_dist.plots import plot_selection as draw

    fs, path = location(png_url, storage_options).filesystem()
    with fs.open(path, "wb") as out:
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
    """Publish the selection: table artifact ``<key>`` and markdown artifact ``<key>-summary``.

    ``<key>`` is ``artifact_key``.

    Prefect's image artifacts show an image from a publicly reachable URL only; the figure is a
    file next to the model, so the markdown artifact gives its path instead.
    """
    from prefect.artifacts import create_markdown_artifact

    chosen, criterion = selection["n_components"], selection["criterion"]
    by = criterion.upper() if criterion != "heldout" else "held-out log-likelihood"
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
                f"## Chosen: K = {chosen} (by {by})",
                f"Candidates K = {candidates}, fitted to `{data_url}` through the same data "
                "passes. Lower BIC/AIC is better; higher held-out log-likelihood (mean per "
                "held-out row) is better. "
                f"The chosen model is saved at `{model_url}`.",
                selection["markdown"],
                plot,
            ]
        ),
    )
