"""Flow ``retrain``: update the model with the newest data, promote it only if it is not worse.

Meant to run on a schedule (deploy/prefect.yaml: Mondays 03:00), or served directly::

    from flows.retrain import retrain
    retrain.serve(name="weekly", cron="0 3 * * 1", parameters={...})

A run

1. reads the registry's current model (:class:`diaggmm_dist.stores.registry.ModelRegistry`);
2. ``mode="refit"``: fits a new model on ``data_url``: warm-started from the current model (same
   number of components), or from scratch when there is none (or ``n_components`` changed), in
   blocks of EM iterations (one task per block of about ``seconds_per_task``) with a checkpoint
   under the registry's ``work/`` folder;
   ``mode="online"``: folds each new data partition (``data_url``: one URL or a list) into the
   current model with one step of stepwise EM (``DiagGMM.partial_fit``), one task per
   partition; the data the current model was trained on is never read again (the model
   carries its running statistics; a model made by a refit starts from the statistics its
   parameters imply);
3. scores the held-out data with the current and the new model (mean log-likelihood per row);
4. promotes the new model only if ``new >= current - margin``;
5. logs a drift WARNING, and emits the Prefect event ``diaggmm.model.drift`` (for automations),
   when the current model's held-out score fell by more than ``drift_threshold`` since its
   promotion (the score at promotion is registry metadata).
"""

# Annotations are evaluated (no `from __future__ import annotations`): pydantic validates the
# parameters of a flow loaded by file path, whose module it cannot look up for string names.
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from pydantic import Field

from . import parameters as P
from .blocks import SECONDS_PER_TASK, fit_in_blocks
from .folding import fold_partitions
from .parameters import DEFAULT_DTYPE, Mode, parameter_help
from .retention import check_retention, prune_registry
from .runtime import (
    TASK_OPTIONS,
    flow_storage_options,
    load_model,
    on_scheduler,
    open_registry,
    url_of,
)
from .specs import FitSpec

__all__ = ["retrain"]

#: Settings of a model trained from scratch by retrain (a warm start keeps the current model's).
FROM_SCRATCH = {"tol": 1e-3, "init_params": "kmeans", "dtype": DEFAULT_DTYPE, "random_state": 0}
CHECKPOINT = "retrain-checkpoint"
CANDIDATE = "retrain-candidate"
MODES = ("refit", "online")


@task(name="read-current", **TASK_OPTIONS)
def read_current(registry_url: str, storage_options: dict | None = None) -> dict | None:
    """The registry's current version: name, URL, components, held-out score at promotion."""
    registry = open_registry(registry_url, storage_options)
    current = registry.current(lambda where: load_model(where, storage_options))
    if current is None:
        return None
    version, model = current
    metadata = registry.metadata(version)
    return {
        "version": version,
        "url": url_of(registry.url(version)),
        "n_components": int(model.n_components),
        "promoted_score": metadata.get("holdout_mean_log_likelihood"),
    }


@task(name="holdout-score", task_run_name="holdout-score-{which}", **TASK_OPTIONS)
def holdout_score(
    model_url: str,
    holdout_url: str,
    which: str,
    scheduler_address: str | None = None,
    storage_options: dict | None = None,
) -> float:
    """Mean log-likelihood per held-out row under the model at ``model_url`` (one data pass)."""
    model = load_model(model_url, storage_options)
    with on_scheduler(scheduler_address):
        return float(model.score(holdout_url, storage_options=storage_options))


@task(name="promote", **TASK_OPTIONS)
def promote(
    registry_url: str, model_url: str, metadata: dict, storage_options: dict | None = None
) -> str:
    """Store the model at ``model_url`` as the registry's new current version; return its name."""
    registry = open_registry(registry_url, storage_options)
    return registry.promote(load_model(model_url, storage_options), metadata)


def _partitions(data_url, mode):
    """The list of data URLs of a run, checked against the mode."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    partitions = [data_url] if isinstance(data_url, str) else list(data_url)
    if not partitions:
        raise ValueError("data_url is an empty list: give at least one data partition.")
    if mode == "refit" and len(partitions) > 1:
        raise ValueError(
            f"mode='refit' fits one data set, got {len(partitions)} data URLs: pass one, or use "
            "mode='online' to fold several partitions into the current model."
        )
    return partitions


def _emit_drift(registry_url, holdout_url, current, old_score, drop, threshold):
    """The drift as a Prefect event (``diaggmm.model.drift``) that automations can act on.

    The resource is the registry (``diaggmm.registry.<url>``); inside a flow run Prefect adds
    the run, flow and deployment as related resources. Returns the event (None if the events
    client is off).
    """
    return emit_event(
        event="diaggmm.model.drift",
        resource={
            "prefect.resource.id": f"diaggmm.registry.{registry_url}",
            "prefect.resource.name": str(registry_url),
            "diaggmm.model.version": current["version"],
        },
        payload={
            "version": current["version"],
            "holdout_url": holdout_url,
            "holdout_score": old_score,
            "promoted_score": current["promoted_score"],
            "drop": drop,
            "drift_threshold": threshold,
        },
    )


# the docstring's Parameters section is made of the help texts (flows/parameters.py)
@parameter_help(
    registry_url="Root of the model registry (local path or fsspec URL).",
    data_url='Zarr arrays of the newest training data: one for ``mode="refit"``; one or more '
    'new partitions, folded in in order, for ``mode="online"``.',
    holdout_url="Zarr array of the held-out data to compare models on.",
)
@flow(name="diaggmm-retrain")
def retrain(
    registry_url: str,
    data_url: str | list[str],
    holdout_url: str,
    n_components: int = Field(
        8,
        description="Components of a model trained from scratch (an empty registry, or a "
        "current model with another number).",
    ),
    margin: float = Field(
        0.0,
        description="Promote the new model if new >= current - margin (mean log-likelihood "
        "per held-out row).",
    ),
    drift_threshold: float = Field(
        0.5,
        description="Report drift (a warning and a ``diaggmm.model.drift`` event) when the "
        "current model's held-out score is more than this below its score at promotion.",
    ),
    max_iter: int = Field(100, description=P.MAX_ITER + ' Used by ``mode="refit"``.'),
    scheduler_address: str | None = Field(None, description=P.SCHEDULER_ADDRESS),
    mode: Mode = Field("refit", description=P.MODE),
    learning_decay: float | None = Field(
        None,
        description='``mode="online"``: the step-size decay (see ``DiagGMM``); by default the '
        "current model's (the library's default for a new model).",
    ),
    learning_offset: float | None = Field(
        None,
        description='``mode="online"``: the step-size offset (see ``DiagGMM``); by default the '
        "current model's (the library's default for a new model).",
    ),
    seconds_per_task: float = Field(
        SECONDS_PER_TASK, description=P.SECONDS_PER_TASK + ' Used by ``mode="refit"``.'
    ),
    storage_options: dict | None = Field(None, description=P.STORAGE_OPTIONS),
    storage_options_block: str | None = Field(None, description=P.STORAGE_OPTIONS_BLOCK),
    tls_directory: str | None = Field(None, description=P.TLS_DIRECTORY),
    keep_versions: int | None = Field(
        10,
        description="Retention when the run finishes (``pruned`` in the result, see "
        "flows/retention.py): keep the newest this many versions and the current one (None: "
        "all).",
    ),
    prune_work: bool = Field(
        True, description="Retention: delete the registry's scratch when the run finishes."
    ),
) -> dict:
    """Update the model with ``data_url`` (refit warm-started, or online); promote it if it scores
    on ``holdout_url`` no worse than the current one (less ``margin``); warn on drift.

    Returns
    -------
    dict
        ``promoted`` (new version or None), ``current`` (the current version after the run),
        ``parent``, ``old_score``, ``new_score``, ``drift``, ``n_iter``, ``converged``, ``mode``,
        and ``n_batches_seen`` (the batches the online model has folded in; None for a refit).
    """
    from .runtime import flow_client

    logger = get_run_logger()
    partitions = _partitions(data_url, mode)
    check_retention(keep_versions, prune_work)
    options = flow_storage_options(storage_options, storage_options_block)
    registry = open_registry(registry_url, options)
    checkpoint_url = url_of(registry.scratch_url(CHECKPOINT))
    candidate_url = url_of(registry.scratch_url(CANDIDATE))
    current = read_current(registry_url, options)
    warm_from = None
    if current is None:
        logger.info(
            "the registry at %s is empty: training %d components from scratch",
            registry_url,
            n_components,
        )
    elif current["n_components"] != n_components:
        logger.info(
            "the current model %s has %d components, %d are asked for: training from scratch",
            current["version"],
            current["n_components"],
            n_components,
        )
    else:
        warm_from = current["url"]
        logger.info(
            "%s the current model %s",
            "folding new data into" if mode == "online" else "warm-starting from",
            current["version"],
        )
    settings = {} if warm_from else {"n_components": n_components, **FROM_SCRATCH}
    if mode == "online":
        steps = {"learning_decay": learning_decay, "learning_offset": learning_offset}
        settings.update({name: value for name, value in steps.items() if value is not None})

    with flow_client(scheduler_address, tls_directory) as client:
        address = client.scheduler.address
        if mode == "online":
            candidate_url, steps = fold_partitions(
                registry, partitions, warm_from, settings, address, options
            )
            fit = {
                "n_iter": steps[-1]["n_iter"],
                "converged": False,
                "n_batches_seen": steps[-1]["n_batches_seen"],
            }
        else:
            spec = FitSpec(
                data_url=partitions[0],
                checkpoint_url=checkpoint_url,
                model_url=candidate_url,
                settings=settings,
                max_iter=max_iter,
                warm_start_from=warm_from,
                scheduler_address=address,
                storage_options=options,
            )
            fit, _ = fit_in_blocks(
                spec,
                seconds_per_task=seconds_per_task,
                overwrite_checkpoint=True,
                artifact_key="retrain-convergence",
            )
        new_score = holdout_score(candidate_url, holdout_url, "candidate", address, options)
        old_score = (
            holdout_score(current["url"], holdout_url, "current", address, options)
            if current
            else None
        )

    drift = False
    if current is not None and current["promoted_score"] is not None:
        drop = current["promoted_score"] - old_score
        drift = drop > drift_threshold
        if drift:
            logger.warning(
                "DRIFT: the current model %s scores %.4f per row on the held-out data %s, "
                "%.4f below its %.4f at promotion (drift_threshold %.4f): the data may have "
                "changed.",
                current["version"],
                old_score,
                holdout_url,
                drop,
                current["promoted_score"],
                drift_threshold,
            )
            _emit_drift(registry_url, holdout_url, current, old_score, drop, drift_threshold)

    promoted = None
    if current is None or new_score >= old_score - margin:
        promoted = promote(
            registry_url,
            candidate_url,
            {
                # online: the model summarizes every partition ever folded in; these are this run's
                "data_url": partitions[0] if mode == "refit" else None,
                "data_urls": partitions,
                "mode": mode,
                "holdout_url": holdout_url,
                "holdout_mean_log_likelihood": new_score,
                "parent": current["version"] if current else None,
                "n_iter": fit["n_iter"],
                "converged": fit["converged"],
                "n_batches_seen": fit.get("n_batches_seen"),
            },
            options,
        )
        logger.info(
            "promoted %s: held-out score %.4f%s",
            promoted,
            new_score,
            f" (current {current['version']}: {old_score:.4f})" if current else "",
        )
    else:
        logger.info(
            "kept %s: the new model scores %.4f on the held-out data, below the current %.4f by "
            "more than margin %.4f",
            current["version"],
            new_score,
            old_score,
            margin,
        )

    result = {
        "promoted": promoted,
        "current": promoted or current["version"],
        "parent": current["version"] if current else None,
        "old_score": old_score,
        "new_score": new_score,
        "drift": drift,
        "n_iter": fit["n_iter"],
        "converged": fit["converged"],
        "mode": mode,
        "n_batches_seen": fit.get("n_batches_seen"),
    }
    create_table_artifact(
        table=[result],
        key="retrain-decision",
        description=f"Retrain ({mode}) of `{registry_url}` on `{', '.join(partitions)}`, "
        f"judged on `{holdout_url}`.",
    )
    result["pruned"] = prune_registry(registry_url, keep_versions, prune_work, options)
    return result
