"""Flow ``score``: label every row of a Zarr array with a saved model, written to Zarr.

    from flows.score import score
    score("models/features-k16", "features.zarr/X", "scores/features.zarr")
    score("s3://bucket/models/k16", "s3://bucket/features.zarr/X", "s3://bucket/scores.zarr",
          storage_options_block="feature-store-credentials")

The output group holds ``labels`` (int16, -1 for rows that cannot be scored: NaN or inf),
``max_resp`` (float32) and ``log_likelihood`` (float64), chunked like the input's dask row
chunks (whole Zarr chunks), from one read of the data
(:func:`diaggmm_dist.outputs.scores.write_scores`).
"""

# Annotations are evaluated (no `from __future__ import annotations`): pydantic validates the
# parameters of a flow loaded by file path, whose module it cannot look up for string names.
from prefect import flow, get_run_logger, task
from pydantic import Field

from . import parameters as P
from .parameters import parameter_help
from .runtime import TASK_OPTIONS, flow_client, flow_storage_options, on_scheduler

__all__ = ["score"]


@task(name="write-scores", **TASK_OPTIONS)
def write_scores(
    model_url: str,
    data_url: str,
    out_url: str,
    scheduler_address: str | None = None,
    storage_options: dict | None = None,
) -> dict:
    """Score ``data_url`` with the model at ``model_url`` into the Zarr group ``out_url``.

    An existing group at ``out_url`` is replaced. ``storage_options``: for every URL.
    """
    import zarr

    from diaggmm_dist.locations import location
    from diaggmm_dist.outputs import scores
    from diaggmm_dist.outputs.estimator_scores import (
        is_classifier,
        scored_model,
        write_class_scores,
    )
    from diaggmm_dist.outputs.written import check_written
    from diaggmm_dist.persistence import load_any

    model = load_any(model_url, storage_options)  # a DiagGMM, Bayesian mixture or classifier
    with on_scheduler(scheduler_address):
        # a retry or re-run rewrites it whole
        if is_classifier(model):  # class codes, with the classes in the group's attributes
            samples = scores.model_samples(model, data_url, None, storage_options)
            write_class_scores(
                model, samples, out_url, overwrite=True, storage_options=storage_options
            )
        else:
            scores.write_scores(
                scored_model(model),
                data_url,
                out_url,
                overwrite=True,
                storage_options=storage_options,
            )
    check_written(out_url, storage_options)  # a lost chunk fails the task (and is retried)
    store = location(out_url, storage_options).zarr_store(read_only=True)
    group = zarr.open_group(store, mode="r")
    summary = {
        "out_url": str(out_url),
        "n_rows": int(group.attrs["n_rows"]),
        "arrays": list(group.attrs["arrays"]),
        "chunk_rows": int(group["labels"].chunks[0]),
    }
    if "classes" in group.attrs:  # a classifier's: labels are codes into these
        summary["classes"] = list(group.attrs["classes"])
    return summary


# the docstring's Parameters section is made of the help texts (flows/parameters.py)
@parameter_help(
    model_url="A model written by ``save`` of ``DiagGMM``, ``BayesianDiagGMM`` or "
    "``DiagGMMClassifier`` (or a registry version, e.g. ``registry/v0003``). A classifier's "
    "``labels`` are class codes: indices into the group's ``classes`` attribute.",
    data_url="Zarr array to score (local path or fsspec URL).",
    out_url="Zarr group to write; replaced if it exists.",
)
@flow(name="diaggmm-score")
def score(
    model_url: str,
    data_url: str,
    out_url: str,
    scheduler_address: str | None = Field(None, description=P.SCHEDULER_ADDRESS),
    storage_options: dict | None = Field(None, description=P.STORAGE_OPTIONS),
    storage_options_block: str | None = Field(None, description=P.STORAGE_OPTIONS_BLOCK),
    tls_directory: str | None = Field(None, description=P.TLS_DIRECTORY),
) -> dict:
    """Write per-row ``labels``, ``max_resp`` and ``log_likelihood`` of ``data_url`` to ``out_url``.

    Returns
    -------
    dict
        ``out_url``, ``n_rows``, ``arrays`` and ``chunk_rows`` of the written group (and
        ``classes`` for a classifier).
    """
    logger = get_run_logger()
    options = flow_storage_options(storage_options, storage_options_block)
    with flow_client(scheduler_address, tls_directory) as client:
        summary = write_scores(model_url, data_url, out_url, client.scheduler.address, options)
    logger.info(
        "scored %d rows of %s with %s into %s (chunks of %d rows)",
        summary["n_rows"],
        data_url,
        model_url,
        out_url,
        summary["chunk_rows"],
    )
    return summary
