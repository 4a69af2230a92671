"""The checkpoint of a :class:`~diaggmm_dist.BayesianDiagGMM` fit: its identity, and opening it.

The checkpoint is :class:`~diaggmm_dist.stores.checkpoint.Checkpoints` (the lease, atomic
steps, fallback, object storage) with BayesianDiagGMM's steps
(:data:`~diaggmm_dist.stores.bayesian_steps.BAYESIAN_STEPS`). Its identity is
:func:`~diaggmm_dist.em_settings.checkpoint_identity`'s (the settings and the data's
fingerprint; ``max_iter`` is not part of it) with the estimator's name, the prior type, the
priors given, the sample weights' fingerprint and, for a warm start, the posterior it starts
from: a DiagGMM checkpoint, or one of other priors, data, weights or settings, is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import numpy as np

from . import engine
from .bayesian_fit import posterior_of
from .em_settings import checkpoint_identity, weights_fingerprint
from .locations import Location
from .stores.bayesian_steps import BAYESIAN_STEPS, ESTIMATOR
from .stores.bayesian_store import posterior_arrays
from .stores.checkpoint import Checkpoints

__all__ = ["Where", "open_vb_checkpoint", "vb_identity"]

#: The places a checkpoint may be given as (as :meth:`~diaggmm_dist.DiagGMM.fit` takes them).
Where = str | os.PathLike | Location | Any


def _digest(array):
    if array is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()


def _number(value):
    return None if value is None else float(value)


def vb_identity(
    est: Any, fingerprint: dict, given: dict, weights: dict | None = None, warm: bool = False
) -> dict:
    """What a checkpoint must share with a fit of the ``BayesianDiagGMM`` ``est`` (JSON-able).

    Parameters
    ----------
    est : BayesianDiagGMM
        The estimator: its settings.
    fingerprint : dict
        The data's fingerprint (:func:`diaggmm_dist.engine.fingerprint`).
    given : dict
        The checked ``mean`` and ``covariance`` priors (None for the defaults).
    weights : dict, optional
        The sample weights' fingerprint (None: no weights).
    warm : bool, default=False
        The fit continues ``est``'s fitted posterior: its digest and its lower bound (the
        first iteration's change is measured from it) are part of the identity.

    Returns
    -------
    dict
        ``{"config": {...}, "fingerprint": fingerprint}``; ``config["estimator"]`` is
        ``"BayesianDiagGMM"``.
    """
    return checkpoint_identity(
        est.get_params(),
        fingerprint,
        estimator=ESTIMATOR,
        weight_concentration_prior_type=est.weight_concentration_prior_type,
        weight_concentration_prior=_number(est.weight_concentration_prior),
        mean_precision_prior=_number(est.mean_precision_prior),
        degrees_of_freedom_prior=_number(est.degrees_of_freedom_prior),
        mean_prior=_digest(given["mean"]),
        covariance_prior=_digest(given["covariance"]),
        sample_weight=weights,
        warm_start_posterior=_digest(_posterior_values(est)) if warm else None,
        warm_start_lower_bound=float(est.lower_bound_) if warm else None,
    )


def _posterior_values(est):
    """Every value of ``est``'s fitted posterior, flat."""
    arrays = posterior_arrays(posterior_of(est)).values()
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def open_vb_checkpoint(
    est: Any,
    where: Location | None,
    data: Any,
    weights: Any,
    given: dict,
    warm: bool,
    overwrite: bool = False,
) -> contextlib.AbstractContextManager[Checkpoints | None]:
    """The checkpoint of a fit of ``est`` on ``data`` at ``where`` (None: none), lease taken.

    Parameters
    ----------
    est : BayesianDiagGMM
    where : Location or None
        The checkpoint (:func:`~diaggmm_dist.em_settings.store_location`).
    data : dask.array.Array
        The fit's rows (their fingerprint reads a few chunks, not the data).
    weights : dask.array.Array or None
        The sample weights (chunked like the sample axes; fingerprinted the same way).
    given : dict
        The checked ``mean`` and ``covariance`` priors.
    warm : bool
        The fit continues ``est``'s fitted posterior (part of the identity).
    overwrite : bool, default=False
        Replace a checkpoint of another run (or estimator) instead of refusing it.

    Returns
    -------
    context manager
        Gives the :class:`~diaggmm_dist.stores.checkpoint.Checkpoints` (None without
        ``where``) and releases its lease on exit.

    Raises
    ------
    CheckpointMismatchError, CheckpointInUseError, CheckpointError
        As :class:`~diaggmm_dist.stores.checkpoint.Checkpoints` raises them.
    """
    if where is None:
        return contextlib.nullcontext()
    identity = vb_identity(est, engine.fingerprint(data), given, weights_fingerprint(weights), warm)
    return Checkpoints(where, identity, overwrite, steps=BAYESIAN_STEPS)
