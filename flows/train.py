"""Flow ``train``: fit a diagonal GMM to a Zarr array on a Dask cluster and save the model.

EM runs in blocks of iterations, one task per block (``em-iterations-1-1``, ``em-iterations-2-31``,
...), sized so that a task lasts about ``seconds_per_task``; every iteration is checkpointed to
Zarr, so a block retried after a transient failure resumes after the last iteration done. The
convergence table artifact has one row per iteration. See flows/tasks.py.

    from flows.train import train
    train("features.zarr/X", 16, "models/features-k16", scheduler_address="tcp://scheduler:8786")
"""

from __future__ import annotations

from prefect import flow, get_run_logger

try:
    from flows.tasks import SECONDS_PER_TASK, default_checkpoint_url, fit_in_blocks
except ModuleNotFoundError:  # loaded by file path (a Prefect entrypoint) with the repository root not on sys.path
    from tasks import SECONDS_PER_TASK, default_checkpoint_url, fit_in_blocks


@flow(name="train")
def train(data_url: str, n_components: int, model_url: str, checkpoint_url: str | None = None,
          init_params: str = "kmeans", tol: float = 1e-3, max_iter: int = 100, dtype: str = "float32",
          random_state: int | None = 0, scheduler_address: str | None = None,
          feature_dim: str | None = None, features: list[str] | None = None,
          seconds_per_task: float = SECONDS_PER_TASK) -> dict:
    """Fit ``DiagGMM`` to the data at ``data_url`` and save it at ``model_url``.

    Parameters
    ----------
    data_url : str
        Zarr array (local path or fsspec URL), e.g. ``/data/features.zarr/X``; a Parquet table;
        or, with ``feature_dim``/``features``, a gridded Zarr group or NetCDF file.
    n_components : int
    model_url : str
        Where the model is written (``DiagGMM.save``; replaced if it exists).
    checkpoint_url : str, optional
        The training checkpoint; by default ``<model_url>.checkpoint``. A run that finds its own
        checkpoint there continues from it; a checkpoint of another run (other settings or
        data) is refused.
    init_params, tol, max_iter, dtype, random_state
        As ``DiagGMM``'s.
    scheduler_address : str, optional
        Dask scheduler; by default ``$DASK_SCHEDULER_ADDRESS``, else a LocalCluster for this run.
    feature_dim, features : optional
        Gridded data: the dimension holding the features (a store with one variable), or the
        variables that are the features.
    seconds_per_task : float
        About how long one ``em-iterations`` task should run: its number of iterations is
        this over the mean iteration time so far (the first task runs one iteration, to time
        it). Longer tasks amortise Prefect's cost per task; a failure still repeats at most
        one iteration. 0: one task per iteration.

    Returns
    -------
    dict
        ``model_url``, ``checkpoint_url``, ``n_iter``, ``converged``, ``lower_bound`` and
        ``seconds_per_iteration`` (mean over the iterations this run did).
    """
    from diaggmm_dist.cluster import dask_client

    logger = get_run_logger()
    checkpoint_url = checkpoint_url or default_checkpoint_url(model_url)
    settings = {"n_components": n_components, "tol": tol, "init_params": init_params, "dtype": dtype,
                "random_state": random_state}
    with dask_client(scheduler_address) as client:
        address = client.scheduler.address
        logger.info("fitting %d components to %s on the dask scheduler %s", n_components, data_url, address)
        layout = {key: value for key, value in (("feature_dim", feature_dim), ("features", features)) if value}
        summary, table = fit_in_blocks(data_url, checkpoint_url, model_url, settings, max_iter, address,
                                       seconds_per_task=seconds_per_task, artifact_key="train-convergence",
                                       layout=layout or None)
    timed = [row["seconds"] for row in table if row["seconds"] is not None]
    return {"model_url": summary["model_url"], "checkpoint_url": checkpoint_url, "n_iter": summary["n_iter"],
            "converged": summary["converged"], "lower_bound": summary["lower_bound"],
            "seconds_per_iteration": sum(timed) / len(timed) if timed else None}
