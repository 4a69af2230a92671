"""Retention for the ``retrain`` flow: the registry's old versions, the finished run's scratch.

At the end of a run that finished, the task ``prune-registry`` deletes the run's scratch stores
under the registry's ``work/`` folder (the EM checkpoint, the candidate model, the models of
folded partitions: the promoted model is a copy in its version folder) and every version but
the ``keep_versions`` newest and the current one
(:meth:`~diaggmm_dist.stores.registry.ModelRegistry.prune`). A run that does not finish (killed,
failed) never reaches it, so its checkpoint stays for a re-run to resume.
"""

from __future__ import annotations

import re

from prefect import get_run_logger, task

from .runtime import TASK_OPTIONS, open_registry

#: Scratch stores of a retrain run (flows.retrain's CHECKPOINT, CANDIDATE; flows.folding's FOLDED).
RETRAIN_SCRATCH = re.compile(r"^retrain-(checkpoint|candidate|online-\d+)$")


def check_retention(keep_versions: int | None, prune_work: bool) -> None:
    """Refuse bad retention parameters before a run starts any work.

    Parameters
    ----------
    keep_versions : int or None
        Newest versions kept (>= 1), besides the current one; None: keep every version.
    prune_work : bool
        Whether to delete the finished run's scratch stores.

    Raises
    ------
    ValueError
        ``keep_versions`` is not None or an integer >= 1.
    TypeError
        ``prune_work`` is not a bool.
    """
    from diaggmm_dist.stores.retention import check_keep

    if keep_versions is not None:
        try:
            check_keep(keep_versions)
        except ValueError:
            raise ValueError(
                f"keep_versions must be None (keep every version) or an integer >= 1, got "
                f"{keep_versions!r}."
            ) from None
    if not isinstance(prune_work, bool):
        raise TypeError(f"prune_work must be True or False, got {prune_work!r}.")


@task(name="prune-registry", **TASK_OPTIONS)
def prune_registry(
    registry_url: str,
    keep_versions: int | None,
    prune_work: bool,
    storage_options: dict | None = None,
) -> dict:
    """Delete the finished run's scratch stores and the versions the retention policy drops.

    Parameters
    ----------
    registry_url : str
        Root of the model registry.
    keep_versions : int or None
        Newest versions kept besides the current one; None: no version is deleted.
    prune_work : bool
        Delete the run's scratch stores (a store whose lease a live fit holds is left, with a
        warning).
    storage_options : dict, optional
        The run's fsspec options.

    Returns
    -------
    dict
        ``versions`` (deleted versions), ``debris`` (left-overs of interrupted writes deleted),
        ``work`` (scratch stores deleted). A retry repeats nothing already done.
    """
    from diaggmm_dist.stores.lease import CheckpointInUseError

    logger = get_run_logger()
    registry = open_registry(registry_url, storage_options)
    work = []
    if prune_work:
        names = {name.removesuffix(".lease") for name in registry.scratch_names()}
        for name in sorted(filter(RETRAIN_SCRATCH.match, names)):
            try:
                if registry.remove_scratch(name):
                    work.append(name)
            except CheckpointInUseError as err:  # another run holds it: not ours to delete
                logger.warning("kept the scratch store %s: %s", name, err)
    pruned = registry.prune(keep_versions) if keep_versions is not None else None
    result = {
        "versions": pruned.removed if pruned else [],
        "debris": pruned.debris if pruned else [],
        "work": work,
    }
    logger.info(
        "retention: deleted %d version(s) %s, %d scratch store(s) %s%s; %s kept",
        len(result["versions"]),
        result["versions"],
        len(work),
        work,
        f", debris {result['debris']}" if result["debris"] else "",
        f"{len(pruned.kept)} version(s)" if pruned else "every version",
    )
    return result
