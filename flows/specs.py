"""Typed inputs of the flows' tasks: what one fit, or one choice of K, reads and writes.

A task takes one spec instead of eight or ten loose arguments; the spec is the same for every
task of a run, and every field is a path, a number or a small dict of settings, so no data
array ever crosses a task boundary. The specs are frozen dataclasses: Prefect passes them to
the task as they are (it rebuilds a dataclass field by field when it resolves a task's
inputs), and the tasks never cache (``NO_CACHE``), so they need not be hashable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FitSpec:
    """One fit through a Zarr checkpoint: its data, its stores, its settings and its scheduler.

    Parameters
    ----------
    data_url : str
        The data (a Zarr array, a Parquet table, a gridded Zarr group or NetCDF file).
    checkpoint_url : str
        The fit's checkpoint: the source of truth for where the run is.
    model_url : str
        Where the finished model is saved.
    settings : dict
        ``DiagGMM`` settings besides ``max_iter`` (and ``n_components`` for a choice of K).
    max_iter : int
        The run's ``max_iter``: the fit ends when it converges or reaches it.
    layout : dict, optional
        Keyword arguments of ``DiagGMM.fit`` naming the features of gridded data
        (``feature_dim``, ``features``).
    warm_start_from : str, optional
        A saved model whose parameters start the fit (scikit-learn's ``warm_start``).
    scheduler_address : str, optional
        The dask scheduler the tasks run on (the flow's client's); None: dask's local threads.
    storage_options : dict, optional
        fsspec options for every URL of the fit (data, checkpoint, model, warm start). They
        travel with the tasks and, in the library's task graphs, to the dask workers.
    """

    data_url: str
    checkpoint_url: str
    model_url: str
    settings: dict
    max_iter: int
    layout: dict | None = None
    warm_start_from: str | None = None
    scheduler_address: str | None = None
    storage_options: dict | None = None

    def __repr__(self) -> str:
        # the options may hold credentials: a repr (a log line, an error) shows only their count
        options = (
            ""
            if self.storage_options is None
            else f", storage_options=<{len(self.storage_options)} keys>"
        )
        return (
            f"FitSpec(data_url={self.data_url!r}, checkpoint_url={self.checkpoint_url!r}, "
            f"model_url={self.model_url!r}, max_iter={self.max_iter!r}{options})"
        )

    @property
    def fit_options(self) -> dict:
        """Keyword arguments of ``DiagGMM.fit`` for this spec's data layout and checkpoint (and
        its storage options, when it has any)."""
        options = {**(self.layout or {}), "checkpoint": self.checkpoint_url}
        if self.storage_options is not None:
            options["storage_options"] = self.storage_options
        return options


@dataclass(frozen=True)
class ChoiceOfK:
    """How the ``select-n-components`` task chooses among candidate numbers of components.

    Parameters
    ----------
    candidates : list of int
        The numbers of components, checked (:func:`diaggmm_dist.validation.check_selection`).
    criterion : str
        ``"bic"``, ``"aic"`` or ``"heldout"``.
    heldout_fraction : float
        Share of the rows held out of the fit and scored.
    """

    candidates: list[int]
    criterion: str
    heldout_fraction: float
