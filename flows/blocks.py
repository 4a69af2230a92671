"""The EM loop of a flow: ``initialize``, then one ``em-iterations`` task per block, resumable.

Why blocks: the cost of a task beyond its EM passes (Prefect's task run, and the fit's set-up:
opening the data, its fingerprint, which reads a few chunks, reading the checkpoint) is a few
hundred milliseconds, a large share of an iteration of about a second.
:func:`fit_in_blocks` sizes the blocks so that a task lasts about ``seconds_per_task`` (from
the iterations timed so far; the first block is one iteration, to time it), which amortizes
that cost while a retry still repeats at most one iteration.

The tasks: :mod:`flows.tasks`.
"""

from __future__ import annotations

import math

from prefect.artifacts import create_table_artifact

from .specs import FitSpec
from .tasks import em_iterations, initialize, save_model

#: Default target duration of one ``em-iterations`` task, in seconds.
SECONDS_PER_TASK = 60.0


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
        The saved model's summary (:func:`~flows.tasks.save_fit`) and the convergence table.

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
