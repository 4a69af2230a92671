"""The ``retrain`` flow's online mode: data partitions folded into a model by stepwise EM.

One task per partition (``fold-partition``), each a ``DiagGMM.partial_fit`` step from the
previous partition's model, saved under the registry's ``work/`` folder; the source of a step
is never modified, so a retried task repeats exactly the same step.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from .runtime import TASK_OPTIONS, load_model, on_scheduler, url_of

#: Scratch name of the model after folding in partition number i (mode="online").
FOLDED = "retrain-online-{number}"


@task(name="fold-partition", task_run_name="fold-partition-{number}", **TASK_OPTIONS)
def fold_partition(
    source_url: str | None,
    data_url: str,
    target_url: str,
    number: int,
    settings: dict,
    scheduler_address: str | None = None,
    storage_options: dict | None = None,
) -> dict:
    """One step of stepwise EM: a model updated with ``data_url`` by ``partial_fit``.

    The model at ``source_url`` (or, when None, a new ``DiagGMM(**settings)`` initialized on
    this partition) is updated and saved at ``target_url``.

    The source is never modified, so a retry repeats exactly the same step.
    """
    from diaggmm_dist import DiagGMM

    logger = get_run_logger()
    model = (
        DiagGMM(**settings)
        if source_url is None
        else load_model(source_url, storage_options).set_params(**settings)
    )
    step = None if source_url is None else online_step_size(model)
    with on_scheduler(scheduler_address):
        model.partial_fit(data_url, storage_options=storage_options)
    model.save(target_url, overwrite=True, storage_options=storage_options)
    logger.info(
        "partition %d (%s) folded in%s: mean log-likelihood %.6f before the step, %d batches seen",
        number,
        data_url,
        "" if step is None else f" with step {step:.4f}",
        model.lower_bound_,
        model.n_batches_seen_,
    )
    return {
        "partition": number,
        "data_url": data_url,
        "step_size": 1.0 if step is None else step,
        "log_likelihood_before": float(model.lower_bound_),
        "n_batches_seen": int(model.n_batches_seen_),
        "n_samples_seen": int(model.n_samples_seen_),
        "n_iter": int(model.n_iter_),
    }


def online_step_size(model) -> float:
    """The step size of the model's next partial_fit (see diaggmm_dist.online.step_size)."""
    from diaggmm_dist.online import step_size

    return step_size(
        getattr(model, "n_batches_seen_", 0), model.learning_decay, model.learning_offset
    )


def fold_partitions(
    registry, partitions, current_url, settings, scheduler_address, storage_options=None
):
    """Fold ``partitions`` one after the other into the model at ``current_url`` (None: new).

    Returns the URL of the last model and the table of steps (also published as an artifact).
    """
    source = current_url
    steps = []
    for number, data_url in enumerate(partitions):
        target = url_of(registry.scratch_url(FOLDED.format(number=number)))
        steps.append(
            fold_partition(
                source, data_url, target, number, settings, scheduler_address, storage_options
            )
        )
        source = target
    create_table_artifact(
        table=steps,
        key="retrain-online",
        description=f"Stepwise EM: {len(partitions)} partition(s) folded into "
        f"`{current_url or 'a new model'}`.",
    )
    return source, steps
