"""Flow ``score``: label every row of a Zarr array with a saved model, written to Zarr.

    from flows.score import score
    score("models/features-k16", "features.zarr/X", "scores/features.zarr")

The output group holds ``labels`` (int16, -1 for rows that cannot be scored: NaN or inf),
``max_resp`` (float32) and ``log_likelihood`` (float64), chunked like the input's dask row
chunks (whole Zarr chunks), from one read of the data
(:func:`diaggmm_dist.outputs.scores.write_scores`).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from .runtime import TASK_OPTIONS, on_scheduler


@task(name="write-scores", **TASK_OPTIONS)
def write_scores(
    model_url: str, data_url: str, out_url: str, scheduler_address: str | None = None
) -> dict:
    """Score ``data_url`` with the model at ``model_url`` into the Zarr group ``out_url``.

    An existing group at ``out_url`` is replaced.
    """
    import zarr

    from diaggmm_dist import DiagGMM
    from diaggmm_dist.outputs import scores

    model = DiagGMM.load(model_url)
    with on_scheduler(scheduler_address):
        # a retry or re-run rewrites it whole
        scores.write_scores(model, data_url, out_url, overwrite=True)
    group = zarr.open_group(out_url, mode="r")
    return {
        "out_url": str(out_url),
        "n_rows": int(group.attrs["n_rows"]),
        "arrays": list(group.attrs["arrays"]),
        "chunk_rows": int(group["labels"].chunks[0]),
    }


@flow(name="score")
def score(
    model_url: str, data_url: str, out_url: str, scheduler_address: str | None = None
) -> dict:
    """Write per-row ``labels``, ``max_resp`` and ``log_likelihood`` of ``data_url`` to ``out_url``.

    Parameters
    ----------
    model_url : str
        A model written by ``DiagGMM.save`` (or a registry version, e.g. ``registry/v0003``).
    data_url : str
        Zarr array to score (local path or fsspec URL).
    out_url : str
        Zarr group to write; replaced if it exists.
    scheduler_address : str, optional
        Dask scheduler; by default ``$DASK_SCHEDULER_ADDRESS``, else a LocalCluster for this run.
    """
    from diaggmm_dist.cluster import dask_client

    logger = get_run_logger()
    with dask_client(scheduler_address) as client:
        summary = write_scores(model_url, data_url, out_url, client.scheduler.address)
    logger.info(
        "scored %d rows of %s with %s into %s (chunks of %d rows)",
        summary["n_rows"],
        data_url,
        model_url,
        out_url,
        summary["chunk_rows"],
    )
    return summary
