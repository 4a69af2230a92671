"""A fitted :class:`~diaggmm_dist.classifier.DiagGMMClassifier`'s per-row class scores.

:func:`class_log_joint` reads the input with the fitted layout and maps every chunk to
``log p(x, class)`` (:func:`diaggmm_dist.kernels.classes.row_class_log_joint`), lazily;
:func:`wrap_classes` gives a per-row result back as numpy, dask or xarray, like the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.utils.validation import check_is_fitted

from . import engine, inputs
from .data_pass import check_in_memory
from .kernels.classes import row_class_log_joint
from .locations import checked_storage_options


def class_log_joint(model: Any, X: Any, storage_options: dict | None, layout: dict) -> tuple:
    """Lazy ``log p(x, class)`` per row and class of a fitted classifier, and the samples.

    Parameters
    ----------
    model : DiagGMMClassifier
        Fitted.
    X : any input of :func:`~diaggmm_dist.inputs.as_samples`
    storage_options : dict, optional
        fsspec options for a URL ``X``.
    layout : dict
        ``feature_dim``, ``features``, ``columns``: given ones replace the fitted ones.

    Returns
    -------
    joint : dask.array.Array of shape (..., n_classes)
        X's sample axes, chunked like X.
    samples : Samples

    Raises
    ------
    NotFittedError
        ``model`` is not fitted.
    ValueError
        Other features than the fitted ones, or values the missing-value policy refuses.
    """
    check_is_fitted(model, "means_")
    if storage_options is not None:
        storage_options = checked_storage_options(storage_options, "DiagGMMClassifier")
    fitted = inputs.InputLayout.from_dict(
        model.input_layout_,
        n_features=model.n_features_in_,
        feature_names=tuple(getattr(model, "feature_names_in_", ())) or None,
    )
    given = {key: value for key, value in layout.items() if value is not None}
    if given:  # read as the caller says; still checked against the fitted features
        fitted = inputs.InputLayout(**{**fitted.__dict__, **given})
    samples = fitted.samples(X, model.chunk_size, storage_options)
    fitted.check(samples, "DiagGMMClassifier")
    if samples.values is not None:
        check_in_memory(samples.values, model.missing)
    with np.errstate(divide="ignore"):  # a zero prior: a class that is never predicted
        log_weights = np.log(model.weights_)
    joint = engine.map_rows(
        samples.array,
        row_class_log_joint,
        log_weights,
        model.means_,
        model.covariances_,
        model.component_classes_,
        len(model.classes_),
        model.missing,
        n_columns=len(model.classes_),
        dtype=np.float64,
    )
    return joint, samples


def class_log_proba(joint: np.ndarray) -> np.ndarray:
    """Log class probabilities from ``log p(x, class)`` (..., n_classes), as ``GaussianNB``'s."""
    return joint - logsumexp(joint, axis=-1)[..., None]


def best_class(joint: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The class of the largest ``log p(x, class)`` of every row; -1 where none is finite."""
    scored = np.isfinite(joint).any(axis=-1)
    best = classes[np.argmax(np.where(np.isnan(joint), -np.inf, joint), axis=-1)]
    if not scored.all():
        best = best if best.dtype.kind in "iuf" else best.astype(object)
        best[~scored] = -1
    return best


def wrap_classes(classes: np.ndarray, samples: Any, result: Any, kind: str) -> Any:
    """A per-row ``result`` like the input: numpy, dask, or a DataArray with its coordinates.

    Parameters
    ----------
    classes : ndarray
        The classifier's ``classes_`` (the ``class`` coordinate of probabilities).
    samples : Samples
        The input the result is of.
    result : dask.array.Array
        Per row (``kind="labels"``) or per row and class (``"proba"``, ``"log_proba"``).
    kind : {"labels", "proba", "log_proba"}

    Returns
    -------
    ndarray, dask array or DataArray
    """
    if samples.in_memory:
        (result,) = engine.compute(result)
    if samples.template is None:
        return result
    import xarray as xr

    coords = {
        name: coord
        for name, coord in samples.template.coords.items()
        if set(coord.dims) <= set(samples.sample_dims)
    }
    dims = samples.sample_dims
    if kind != "labels":
        dims, coords["class"] = dims + ("class",), classes
    names = {"labels": "class", "proba": "class_probability", "log_proba": "class_log_probability"}
    return xr.DataArray(result, dims=dims, coords=coords, name=names[kind])
