"""``save`` and ``load`` of ``BayesianDiagGMM`` and ``DiagGMMClassifier``: estimator <-> record.

The stores (:mod:`diaggmm_dist.stores.bayesian_store`,
:mod:`diaggmm_dist.stores.classifier_store`) know records only; this module, in the model
layer, is where an estimator's attributes meet the record's fields, and where a stored
setting is checked by the estimator's own rules. The estimators take :func:`save_estimator`
as their ``save`` and :func:`load_estimator` as their ``load`` classmethod.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .bayesian_fit import posterior_of, set_posterior, set_priors, vb_coefficients
from .bayesian_mstep import Priors
from .classifier_fit import check_classifier_settings, checked_priors
from .em_settings import store_location
from .kernels import data_center
from .locations import StorageOptions, checked_storage_options
from .stores.bayesian_store import BayesianRecord, read_bayesian, write_bayesian
from .stores.classifier_store import ClassifierRecord, read_classifier, write_classifier
from .stores.model_checks import ModelStoreError

__all__ = ["load_estimator", "save_estimator"]

#: Parameters a store keeps apart from ``params`` (read from the fitted state).
_APART = {
    "BayesianDiagGMM": ("n_components", "weight_concentration_prior_type"),
    "DiagGMMClassifier": (),
}


def _json(value):
    """A constructor parameter as a JSON value (arrays: lists; a RandomState: null)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.random.RandomState):
        return None  # a RandomState instance is not data
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    return np.asarray(value, dtype=np.float64).tolist()  # priors given as arrays


def _settings(est) -> dict:
    apart = _APART[_kind(type(est))]
    return {k: _json(v) for k, v in est.get_params(deep=False).items() if k not in apart}


def _kind(cls) -> str:
    names = [c.__name__ for c in cls.__mro__]
    for kind in _APART:
        if kind in names:
            return kind
    raise TypeError(f"{cls.__name__} has no model store (BayesianDiagGMM, DiagGMMClassifier).")


def _layout(est) -> tuple:
    names = getattr(est, "feature_names_in_", None)
    return (None if names is None else [str(n) for n in names]), getattr(est, "input_layout_", None)


def _set_layout(est, feature_names, input_layout, n_features):
    est.n_features_in_ = n_features
    if input_layout is not None:
        est.input_layout_ = input_layout
    if feature_names is not None:
        est.feature_names_in_ = np.asarray(feature_names, dtype=object)


# --------------------------------------------------------------------- BayesianDiagGMM
def _bayesian_record(est) -> BayesianRecord:
    check_is_fitted(est, "means_")
    names, layout = _layout(est)
    priors = Priors(
        est.weight_concentration_prior_type,
        float(est.weight_concentration_prior_),
        float(est.mean_precision_prior_),
        np.asarray(est.mean_prior_, dtype=np.float64),
        float(est.degrees_of_freedom_prior_),
        np.asarray(est.covariance_prior_, dtype=np.float64),
    )
    return BayesianRecord(
        settings=_settings(est),
        posterior=posterior_of(est),
        priors=priors,
        n_iter=int(est.n_iter_),
        converged=bool(est.converged_),
        lower_bound=float(est.lower_bound_),
        lower_bounds=[float(v) for v in est.lower_bounds_],
        feature_names=names,
        input_layout=layout,
    )


def _bayesian_from(cls, record: BayesianRecord, where: str):
    p = record.posterior
    est = cls(
        n_components=p.means.shape[0],
        weight_concentration_prior_type=p.prior_type,
        **record.settings,
    )
    set_posterior(est, p)
    set_priors(est, record.priors)
    shift = data_center(est.weights_, p.means, est.precisions_)
    with np.errstate(all="ignore"):
        coef = vb_coefficients(p, shift, np.dtype(est.dtype))
    if not all(np.all(np.isfinite(c)) for c in (coef.shift, coef.products, coef.offset)):
        raise ModelStoreError(
            f"{where}: the posterior's arrays give non-finite log-density coefficients in "
            f"{np.dtype(est.dtype).name}: its scores would be NaN or infinite."
        )
    est.n_iter_, est.converged_ = record.n_iter, record.converged
    est.lower_bound_, est.lower_bounds_ = record.lower_bound, list(record.lower_bounds)
    _set_layout(est, record.feature_names, record.input_layout, p.means.shape[1])
    return est


def _bayesian_check(cls):
    from .bayesian_settings import check_vb_settings
    from .bayesian_settings import checked_priors as checked_vb_priors

    def check(settings, n_features):
        est = cls(**settings)
        check_vb_settings(est)
        checked_vb_priors(est, n_features)

    return check


# --------------------------------------------------------------------- DiagGMMClassifier
def _classifier_record(est) -> ClassifierRecord:
    check_is_fitted(est, "means_")
    names, layout = _layout(est)
    return ClassifierRecord(
        settings=_settings(est),
        classes=np.asarray(est.classes_),
        class_count=np.asarray(est.class_count_, dtype=np.float64),
        epsilon=float(est.epsilon_),
        weights=est.weights_,
        means=est.means_,
        covariances=est.covariances_,
        n_iter=int(est.n_iter_),
        converged=bool(est.converged_),
        lower_bounds=[float(v) for v in est.lower_bounds_],
        n_unlabelled=None
        if getattr(est, "n_unlabelled_", None) is None
        else int(est.n_unlabelled_),
        feature_names=names,
        input_layout=layout,
    )


def _classifier_from(cls, record: ClassifierRecord, where: str):
    est = cls(**record.settings)
    est.classes_ = record.classes
    est.class_count_ = record.class_count
    est.epsilon_ = record.epsilon
    est._set_mixture(record.weights, record.means, record.covariances)
    est.n_iter_, est.converged_ = record.n_iter, record.converged
    est.lower_bounds_ = list(record.lower_bounds)
    if record.n_unlabelled is not None:
        est.n_unlabelled_ = record.n_unlabelled
    _set_layout(est, record.feature_names, record.input_layout, record.means.shape[1])
    return est


def _classifier_check(cls):
    def check(settings, n_classes):
        est = cls(**settings)
        check_classifier_settings(est)
        checked_priors(est.priors, n_classes)

    return check


# --------------------------------------------------------------------- the methods
def save_estimator(
    self, url: Any, *, overwrite: bool = False, storage_options: StorageOptions | None = None
) -> None:
    """Write the fitted model to a Zarr group (local path or fsspec URL); data only, no pickle.

    See :mod:`diaggmm_dist.stores.bayesian_store` and
    :mod:`diaggmm_dist.stores.classifier_store` for the layouts.

    Parameters
    ----------
    url : str, os.PathLike, Location or zarr store
        Local path or fsspec URL of the group to write, or a Zarr store object.
    overwrite : bool, default=False
        Replace an existing store (atomically on local disks); without it an existing store
        is refused.
    storage_options : dict, optional
        fsspec options (endpoint, credentials, ...) for ``url`` (a path or URL).

    Raises
    ------
    FileExistsError
        A store exists at ``url`` and ``overwrite`` is False.
    sklearn.exceptions.NotFittedError
        The model is not fitted.
    """
    kind = _kind(type(self))
    if storage_options is not None:
        storage_options = checked_storage_options(storage_options, f"{kind}.save")
    where = store_location(url, storage_options)
    if kind == "BayesianDiagGMM":
        write_bayesian(_bayesian_record(self), where, overwrite=overwrite)
    else:
        write_classifier(_classifier_record(self), where, overwrite=overwrite)


def load_estimator(cls, url: Any, storage_options: StorageOptions | None = None) -> Any:
    """Read a model written by ``save``, validating every field (never runs code).

    Parameters
    ----------
    url : str, os.PathLike, Location or zarr store
        Local path or fsspec URL of the model store, or a Zarr store object.
    storage_options : dict, optional
        fsspec options (endpoint, credentials, ...) for ``url`` (a path or URL).

    Returns
    -------
    BayesianDiagGMM or DiagGMMClassifier
        The fitted model, of class ``cls``.

    Raises
    ------
    FileNotFoundError
        Nothing is stored at ``url``.
    ModelStoreError
        The store is not a valid model of this class (another estimator's store is refused
        naming the class that loads it); the message names the file and the field.
    """
    kind = _kind(cls)
    if storage_options is not None:
        storage_options = checked_storage_options(storage_options, f"{kind}.load")
    where = store_location(url, storage_options)
    names = tuple(n for n in cls().get_params(deep=False) if n not in _APART[kind])
    if kind == "BayesianDiagGMM":
        record = read_bayesian(where, names, _bayesian_check(cls))
        return _bayesian_from(cls, record, f"model {where.url!r}")
    record = read_classifier(where, names, _classifier_check(cls))
    return _classifier_from(cls, record, f"model {where.url!r}")
