"""The settings of an EM run and the identity a checkpoint must share with it.

:class:`EMSettings` holds the settings of EM itself (those :class:`~diaggmm_dist.fitting.EMRun`
reads); :func:`checkpoint_identity` is the one definition of which settings a checkpoint must
share with a run to be resumed; :func:`store_location` is where a checkpoint (or a model)
lives.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .locations import Location, StorageOptions, location
from .parameters import MixtureParameters


@dataclass(frozen=True)
class EMSettings:
    """The settings of EM itself (a :class:`~diaggmm_dist.mixture.DiagGMM`'s of that name).

    Parameters
    ----------
    tol : float
        A model has converged when its lower bound changes by less than this.
    reg_covar : float
        Added to every variance.
    max_iter : int
        EM iterations of each model, at most; a state is ``finished`` when it gets there.
    verbose, verbose_interval : int
        Progress printed (see ``DiagGMM``); 0 prints nothing.

    Examples
    --------
    >>> from diaggmm_dist import DiagGMM
    >>> EMSettings.of(DiagGMM(3, tol=1e-4, max_iter=50))
    EMSettings(tol=0.0001, reg_covar=1e-06, max_iter=50, verbose=0, verbose_interval=10)
    """

    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    verbose: int = 0
    verbose_interval: int = 10

    @classmethod
    def of(cls, estimator: Any) -> EMSettings:
        """The EM settings of an estimator with ``get_params`` (a ``DiagGMM``).

        Parameters
        ----------
        estimator : DiagGMM
            Any object whose ``get_params()`` holds the fields.

        Returns
        -------
        EMSettings
        """
        params = estimator.get_params()
        return cls(**{name: params[name] for name in cls.__dataclass_fields__})


def _digest(array):
    if array is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def weights_fingerprint(weights: Any) -> dict | None:
    """A cheap identity of a run's sample weights, as of its data (None without weights).

    The weights (a dask array chunked like the data's sample axes) are fingerprinted as data
    of one feature (:func:`diaggmm_dist.engine.fingerprint`): a few of their chunks are read.
    A checkpoint made with other weights (or with none) is then refused, not resumed.
    """
    if weights is None:
        return None
    from . import engine

    return engine.fingerprint(weights[..., None])


def checkpoint_identity(
    params: Mapping[str, Any],
    fingerprint: Any,
    *,
    inits: Sequence[Any] = (None, None, None),
    warm_start_from: MixtureParameters | None = None,
    **extra: Any,
) -> dict:
    """What a checkpoint must share with a run to be resumed by it (JSON-able).

    ``max_iter`` is not part of it: a run continues a checkpoint that stopped at a smaller
    ``max_iter`` (or at :meth:`EMRun.run`'s ``until``) up to its own.

    Parameters
    ----------
    params : mapping
        The estimator's parameters (``DiagGMM.get_params()``): ``n_components``, ``tol``,
        ``reg_covar``, ``n_init``, ``init_params``, ``dtype``, ``missing`` and
        ``random_state`` are used.
    fingerprint : JSON-able
        The data's fingerprint (:func:`diaggmm_dist.engine.fingerprint`).
    inits : sequence of ndarray or None
        The validated ``weights_init``, ``means_init`` and ``precisions_init``.
    warm_start_from : MixtureParameters, optional
        The parameters a warm start begins from.
    **extra
        More settings of the run (``select_n_components``: ``candidates`` and
        ``heldout_fraction``).

    Returns
    -------
    dict
        ``{"config": {...}, "fingerprint": fingerprint}``.

    Examples
    --------
    >>> from diaggmm_dist import DiagGMM
    >>> identity = checkpoint_identity(DiagGMM(2, random_state=0).get_params(), {"rows": 100})
    >>> identity["config"]["n_components"], "max_iter" in identity["config"]
    (2, False)
    """
    seed = params["random_state"]
    config = {
        "n_components": int(params["n_components"]),
        "tol": float(params["tol"]),
        "reg_covar": float(params["reg_covar"]),
        "n_init": int(params["n_init"]),
        "init_params": params["init_params"],
        "dtype": str(np.dtype(params["dtype"])),
        "missing": params["missing"],
        "random_state": int(seed)
        if isinstance(seed, (int, np.integer))
        else (None if seed is None else "instance"),
        "inits": [_digest(a) for a in inits],
        "warm_start_from": None
        if warm_start_from is None
        else _digest(
            np.concatenate([warm_start_from.means.ravel(), warm_start_from.covariances.ravel()])
        ),
        **extra,
    }
    return {"config": config, "fingerprint": fingerprint}


def store_location(
    where: str | os.PathLike | Location | Any | None,
    storage_options: StorageOptions | None = None,
) -> Location | None:
    """The :class:`~diaggmm_dist.locations.Location` of a checkpoint or a model (None stays None).

    Parameters
    ----------
    where : str, os.PathLike, Location, zarr store or None
        A checkpoint's or a model's place.
    storage_options : dict, optional
        fsspec options for a path or URL (refused with a store object or a Location).

    Returns
    -------
    Location or None
        What the stores open.

    Raises
    ------
    TypeError, ValueError
        As :func:`~diaggmm_dist.locations.location`.
    """
    return None if where is None else location(where, storage_options)
