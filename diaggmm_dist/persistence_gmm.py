"""A fitted ``DiagGMM`` as a model store's record and back: what ``save`` writes, ``load`` gives.

The model store (:mod:`diaggmm_dist.stores.model_store`) knows records only; this module, in
the model layer, is where an estimator's attributes meet the record's fields. Its names are
also :mod:`diaggmm_dist.persistence`'s.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .parameters import MixtureParameters
from .stores.model_record import OPTIONAL_PARAMS, STORED_PARAMS, ModelRecord, OnlineState
from .stores.model_store import read_record, write_record

__all__ = ["load_model", "model_from_record", "record_of", "save_model"]


def _json_settings(gmm):
    """The stored constructor settings of ``gmm`` as JSON values."""
    params = {name: getattr(gmm, name) for name in STORED_PARAMS}
    params.update(
        {
            name: value
            for name, value in gmm.get_params(deep=False).items()
            if name in OPTIONAL_PARAMS
        }
    )
    if not (params["random_state"] is None or isinstance(params["random_state"], numbers.Integral)):
        params["random_state"] = None  # a RandomState instance is not data
    params = {
        k: (int(v) if isinstance(v, np.integer) else float(v) if isinstance(v, np.floating) else v)
        for k, v in params.items()
    }
    return {"dtype": str(np.dtype(gmm.dtype)), "reg_covar": float(gmm.reg_covar), **params}


def record_of(gmm) -> ModelRecord:
    """The record of the fitted ``gmm`` (its settings, parameters and diagnostics).

    Parameters
    ----------
    gmm : DiagGMM
        A fitted model.

    Returns
    -------
    ModelRecord

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``gmm`` is not fitted.
    """
    check_is_fitted(gmm, "means_")
    online = None
    if getattr(gmm, "running_statistics_", None) is not None:
        online = OnlineState(
            gmm.running_statistics_,
            gmm.running_shift_,
            int(gmm.n_batches_seen_),
            int(gmm.n_samples_seen_),
        )
    names = getattr(gmm, "feature_names_in_", None)
    return ModelRecord(
        settings=_json_settings(gmm),
        parameters=MixtureParameters(gmm.weights_, gmm.means_, gmm.covariances_),
        n_iter=int(gmm.n_iter_),
        converged=bool(gmm.converged_),
        lower_bound=float(gmm.lower_bound_),
        lower_bounds=[float(v) for v in gmm.lower_bounds_],
        n_reseeded=int(getattr(gmm, "n_reseeded_", 0)),
        feature_names=None if names is None else [str(n) for n in names],
        data_fingerprint=getattr(gmm, "data_fingerprint_", None),
        input_layout=getattr(gmm, "input_layout_", None),
        online=online,
    )


def model_from_record(cls, record: ModelRecord):
    """A fitted ``cls`` (``DiagGMM`` or a subclass) with the record's settings and state.

    Parameters
    ----------
    cls : type
        The estimator class.
    record : ModelRecord
        A record, as :func:`~diaggmm_dist.stores.model_store.read_record` gives it.

    Returns
    -------
    DiagGMM
    """
    gmm = cls(n_components=record.parameters.n_components, **record.settings)
    gmm._set_parameters(record.parameters)
    gmm.n_features_in_ = record.parameters.n_features
    gmm.n_iter_ = record.n_iter
    gmm.converged_ = record.converged
    gmm.lower_bound_ = float(record.lower_bound)
    gmm.lower_bounds_ = [float(v) for v in record.lower_bounds]
    gmm.n_reseeded_ = record.n_reseeded
    if record.feature_names is not None:
        gmm.feature_names_in_ = np.asarray(record.feature_names, dtype=object)
    gmm.data_fingerprint_ = record.data_fingerprint
    if record.online is not None:
        gmm.running_statistics_ = record.online.running_statistics
        gmm.running_shift_ = record.online.running_shift
        gmm.n_batches_seen_ = record.online.n_batches_seen
        gmm.n_samples_seen_ = record.online.n_samples_seen
    if record.input_layout is not None:
        gmm.input_layout_ = record.input_layout
    return gmm


def save_model(gmm, where, *, overwrite: bool = False) -> None:
    """Write the fitted ``gmm`` to the model store at ``where`` (see ``DiagGMM.save``).

    Parameters
    ----------
    gmm : DiagGMM
    where : str, os.PathLike, Location or zarr.abc.store.Store
        A local path, an fsspec URL, a :class:`~diaggmm_dist.locations.Location` (a URL with
        its storage options) or a Zarr store object.
    overwrite : bool
    """
    write_record(record_of(gmm), where, overwrite=overwrite)


def load_model(cls, where):
    """The fitted ``cls`` stored at ``where``, every field validated (see ``DiagGMM.load``).

    Parameters
    ----------
    cls : type
        The estimator class: its constructor's defaults complete an older store's settings,
        and its rules check them.
    where : str, os.PathLike, Location or zarr.abc.store.Store
        As :func:`save_model` takes it.

    Returns
    -------
    DiagGMM
    """
    return model_from_record(cls, read_record(where, cls().get_params(), cls.__name__))
