"""Flow ``retrain``: refit on the newest data, promote the new model only if it is not worse.

Meant to run on a schedule (deploy/prefect.yaml: Mondays 03:00), or served directly::

    from flows.retrain import retrain
    retrain.serve(name="weekly", cron="0 3 * * 1", parameters={...})

A run

1. reads the registry's current model (:class:`diaggmm_dist.io.registry.ModelRegistry`);
2. fits a new model on ``data_url``: warm-started from the current model (same number of
   components), or from scratch when there is none (or ``n_components`` changed), in blocks of
   EM iterations (one task per block of about ``seconds_per_task``) with a checkpoint under the
   registry's ``work/`` folder;
3. scores the held-out data with the current and the new model (mean log-likelihood per row);
4. promotes the new model only if ``new >= current - margin``;
5. logs a drift WARNING when the current model's held-out score fell by more than
   ``drift_threshold`` since its promotion (the score at promotion is registry metadata).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

try:
    from flows.tasks import SECONDS_PER_TASK, TASK_OPTIONS, fit_in_blocks, on_scheduler
except ModuleNotFoundError:  # loaded by file path (a Prefect entrypoint) with the repository root not on sys.path
    from tasks import SECONDS_PER_TASK, TASK_OPTIONS, fit_in_blocks, on_scheduler

#: Settings of a model trained from scratch by retrain (a warm start keeps the current model's).
FROM_SCRATCH = {"tol": 1e-3, "init_params": "kmeans", "dtype": "float32", "random_state": 0}
CHECKPOINT = "retrain-checkpoint"
CANDIDATE = "retrain-candidate"


@task(name="read-current", **TASK_OPTIONS)
def read_current(registry_url: str) -> dict | None:
    """The registry's current version: name, URL, number of components, held-out score at promotion."""
    from diaggmm_dist.io.registry import ModelRegistry

    registry = ModelRegistry(registry_url)
    current = registry.current()
    if current is None:
        return None
    version, model = current
    metadata = registry.metadata(version)
    return {"version": version, "url": registry.url(version), "n_components": int(model.n_components),
            "promoted_score": metadata.get("holdout_mean_log_likelihood")}


@task(name="holdout-score", task_run_name="holdout-score-{which}", **TASK_OPTIONS)
def holdout_score(model_url: str, holdout_url: str, which: str, scheduler_address: str | None = None) -> float:
    """Mean log-likelihood per held-out row under the model at ``model_url`` (one data pass)."""
    from diaggmm_dist import DiagGMM

    model = DiagGMM.load(model_url)
    with on_scheduler(scheduler_address):
        return float(model.score(holdout_url))


@task(name="promote", **TASK_OPTIONS)
def promote(registry_url: str, model_url: str, metadata: dict) -> str:
    """Store the model at ``model_url`` as the registry's new current version; return its name."""
    from diaggmm_dist import DiagGMM
    from diaggmm_dist.io.registry import ModelRegistry

    return ModelRegistry(registry_url).promote(DiagGMM.load(model_url), metadata)


@flow(name="retrain")
def retrain(registry_url: str, data_url: str, holdout_url: str, n_components: int = 8, margin: float = 0.0,
            drift_threshold: float = 0.5, max_iter: int = 100, scheduler_address: str | None = None,
            seconds_per_task: float = SECONDS_PER_TASK) -> dict:
    """Warm-start a new model on ``data_url``; promote it if it scores on ``holdout_url`` no worse
    than the current one (less ``margin``); warn on drift.

    Parameters
    ----------
    registry_url : str
        Root of the model registry (local path or fsspec URL).
    data_url, holdout_url : str
        Zarr arrays: the newest training data and the held-out data to compare models on.
    n_components : int
        Components of a model trained from scratch (when the registry is empty, or holds a
        model with another number of components).
    margin : float
        The new model is promoted if ``new >= current - margin`` (mean log-likelihood per row).
    drift_threshold : float
        Log a drift warning when the current model's held-out score is more than this below
        its score at promotion.
    max_iter : int
        EM iterations at most.
    scheduler_address : str, optional
        Dask scheduler; by default ``$DASK_SCHEDULER_ADDRESS``, else a LocalCluster for this run.
    seconds_per_task : float
        About how long one ``em-iterations`` task should run (as in ``train``; 0: one task per
        iteration).

    Returns
    -------
    dict
        ``promoted`` (new version or None), ``current`` (the current version after the run),
        ``parent``, ``old_score``, ``new_score``, ``drift``, ``n_iter``, ``converged``.
    """
    from diaggmm_dist.cluster import dask_client
    from diaggmm_dist.io.registry import ModelRegistry

    logger = get_run_logger()
    registry = ModelRegistry(registry_url)
    checkpoint_url, candidate_url = registry.scratch_url(CHECKPOINT), registry.scratch_url(CANDIDATE)
    current = read_current(registry_url)
    warm_from = None
    if current is None:
        logger.info("the registry at %s is empty: training %d components from scratch", registry_url, n_components)
    elif current["n_components"] != n_components:
        logger.info("the current model %s has %d components, %d are asked for: training from scratch",
                    current["version"], current["n_components"], n_components)
    else:
        warm_from = current["url"]
        logger.info("warm-starting from the current model %s", current["version"])
    settings = {} if warm_from else {"n_components": n_components, **FROM_SCRATCH}

    with dask_client(scheduler_address) as client:
        address = client.scheduler.address
        fit, _ = fit_in_blocks(data_url, checkpoint_url, candidate_url, settings, max_iter, address,
                               seconds_per_task=seconds_per_task, warm_start_from=warm_from,
                               overwrite_checkpoint=True, artifact_key="retrain-convergence")
        new_score = holdout_score(candidate_url, holdout_url, "candidate", address)
        old_score = holdout_score(current["url"], holdout_url, "current", address) if current else None

    drift = False
    if current is not None and current["promoted_score"] is not None:
        drop = current["promoted_score"] - old_score
        drift = drop > drift_threshold
        if drift:
            logger.warning(
                "DRIFT: the current model %s scores %.4f per row on the held-out data %s, %.4f below its %.4f at "
                "promotion (drift_threshold %.4f): the data may have changed.",
                current["version"], old_score, holdout_url, drop, current["promoted_score"], drift_threshold)

    promoted = None
    if current is None or new_score >= old_score - margin:
        promoted = promote(registry_url, candidate_url, {
            "data_url": data_url, "holdout_url": holdout_url, "holdout_mean_log_likelihood": new_score,
            "parent": current["version"] if current else None,
            "n_iter": fit["n_iter"], "converged": fit["converged"],
        })
        logger.info("promoted %s: held-out score %.4f%s", promoted, new_score,
                    f" (current {current['version']}: {old_score:.4f})" if current else "")
    else:
        logger.info("kept %s: the new model scores %.4f on the held-out data, below the current %.4f by more "
                    "than margin %.4f", current["version"], new_score, old_score, margin)

    result = {"promoted": promoted, "current": promoted or current["version"],
              "parent": current["version"] if current else None, "old_score": old_score, "new_score": new_score,
              "drift": drift, "n_iter": fit["n_iter"], "converged": fit["converged"]}
    create_table_artifact(table=[result], key="retrain-decision",
                          description=f"Retrain of `{registry_url}` on `{data_url}`, judged on `{holdout_url}`.")
    return result
