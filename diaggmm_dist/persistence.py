"""Saving and loading models: every estimator's store, and :func:`load_any` for any of them.

``DiagGMM.save``/``load`` convert with :mod:`diaggmm_dist.persistence_gmm` (whose names this
module also gives), ``BayesianDiagGMM`` and ``DiagGMMClassifier`` with
:mod:`diaggmm_dist.persistence_models`; :func:`load_any` reads a store's ``format`` attribute
and loads it with the class it names (:data:`~diaggmm_dist.stores.estimator_store.FORMAT_OWNERS`).
"""

from __future__ import annotations

from typing import Any

from .bayesian import BayesianDiagGMM
from .classifier import DiagGMMClassifier
from .em_settings import store_location
from .locations import StorageOptions, checked_storage_options
from .mixture import DiagGMM
from .persistence_gmm import load_model, model_from_record, record_of, save_model
from .stores.estimator_store import FORMAT_OWNERS, store_format

__all__ = ["load_any", "load_model", "model_from_record", "record_of", "save_model"]

#: The estimators by class name, as :data:`FORMAT_OWNERS` names them.
ESTIMATORS = {cls.__name__: cls for cls in (DiagGMM, BayesianDiagGMM, DiagGMMClassifier)}


def load_any(url: Any, storage_options: StorageOptions | None = None) -> Any:
    """The fitted model stored at ``url``, of the class its ``format`` attribute names.

    Parameters
    ----------
    url : str, os.PathLike, Location or zarr store
        Local path or fsspec URL of a model store, or a Zarr store object.
    storage_options : dict, optional
        fsspec options (endpoint, credentials, ...) for ``url`` (a path or URL).

    Returns
    -------
    DiagGMM, BayesianDiagGMM or DiagGMMClassifier
        Loaded by that class's ``load``, every field validated.

    Raises
    ------
    FileNotFoundError
        Nothing is stored at ``url``.
    ModelStoreError
        Not a model store of this library (a checkpoint, another group), or not a valid one.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from diaggmm_dist import BayesianDiagGMM
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> url = tempfile.mkdtemp() + "/model.zarr"
    >>> BayesianDiagGMM(n_components=2, random_state=0).fit(X).save(url)
    >>> type(load_any(url)).__name__
    'BayesianDiagGMM'
    """
    if storage_options is not None:
        storage_options = checked_storage_options(storage_options, "load_any")
    location = store_location(url, storage_options)
    owner = FORMAT_OWNERS[store_format(location)]
    return ESTIMATORS[owner].load(location)
