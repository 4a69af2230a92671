"""The store of a ``DiagGMMClassifier`` (``DiagGMMClassifier.save``): classes and their mixtures.

:func:`write_classifier` writes a :class:`ClassifierRecord` and :func:`read_classifier` reads
one back, validated; :mod:`diaggmm_dist.persistence_models` converts the estimator.

Layout (``format`` ``diaggmm-dist-classifier-model``, ``format_version`` 1)::

    model.zarr/
        weights        (K,)          float64   K = n_classes * n_components_per_class,
        means          (K, D)        float64   class by class
        covariances    (K, D)        float64
        class_count    (n_classes,)  float64   labelled rows (their weight) per class
        feature        (D,)          string    only for named features (the coordinate)
        zarr.json      attributes: format, format_version, n_components, n_features,
                       n_classes, classes (the class labels, sorted: booleans, integers,
                       whole numbers or strings), classes_dtype (their numpy dtype, e.g.
                       "<i8", "<U5"), feature_names, params (the constructor parameters),
                       epsilon, n_iter, converged, lower_bounds, n_unlabelled (null after
                       partial_fit alone), input_layout, library_version, checksums;
                       consolidated_metadata

``class_prior_``, ``component_classes_``, ``theta_`` and ``var_`` are derived at load by the
code that derives them after a fit, so they are the same to the bit, and ``partial_fit``
continues a loaded naive-Bayes model as it would the saved one. The arrays are written as
DiagGMM's (:mod:`.model_store`): one raw chunk each, a NaN fill value, dimension names
(``component``, ``feature``, ``class``), checksums of every array and of the attributes.
Loading reads every file with a size bound and checks every field: the format, JSON types,
the settings by the estimator's own checks, the classes against their dtype (distinct,
sorted, never -1), shapes, finiteness, weights on the simplex, variances and counts >= 0, then
the checksums; anything else is a :class:`~.model_checks.ModelStoreError` naming the file and
the field.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..locations import Location, location
from ..validation import is_int
from .estimator_store import (
    ARRAY_VERSION,
    check_param_types,
    checked_value,
    root_attributes,
    verify_checksums,
    write_store,
)
from .model_checks import ModelStoreError, is_number, shorten
from .model_files import StoreFiles, check_feature_coordinate, read_model_array
from .model_record import ATTRIBUTES, is_name_list

__all__ = ["ClassifierRecord", "read_classifier", "write_classifier"]

FORMAT = "diaggmm-dist-classifier-model"
FORMAT_VERSION = 1
#: The attributes the checksum covers.
CLASSIFIER_ATTRIBUTES = (
    "format",
    "format_version",
    "library_version",
    "n_components",
    "n_features",
    "n_classes",
    "classes",
    "classes_dtype",
    "feature_names",
    "params",
    "epsilon",
    "n_iter",
    "converged",
    "lower_bounds",
    "n_unlabelled",
    "input_layout",
)
#: The dtypes of class labels a store keeps: booleans, integers, floats (whole), strings, objects.
CLASSES_DTYPE = re.compile(r"[<>|]?(?:b1|[iu][1248]|f[48]|U\d{1,6}|O)")


@dataclass(frozen=True)
class ClassifierRecord:
    """A fitted ``DiagGMMClassifier`` as its store holds it: arrays and JSON values.

    Parameters
    ----------
    settings : dict
        The constructor parameters, as JSON values.
    classes : ndarray of shape (n_classes,)
    class_count : ndarray of shape (n_classes,)
    epsilon : float
    weights, means, covariances : ndarrays of shape (K,), (K, D), (K, D)
    n_iter : int
    converged : bool
    lower_bounds : list of float
    n_unlabelled : int, optional
    feature_names : list of str, optional
    input_layout : dict, optional
    """

    settings: dict
    classes: np.ndarray
    class_count: np.ndarray
    epsilon: float
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    n_iter: int
    converged: bool
    lower_bounds: list
    n_unlabelled: int | None = None
    feature_names: list | None = None
    input_layout: dict | None = None


def _class_values(classes: np.ndarray) -> list:
    """The class labels as JSON values."""
    if classes.dtype.kind == "b":
        return [bool(c) for c in classes]
    if classes.dtype.kind in "iu":
        return [int(c) for c in classes]
    if classes.dtype.kind == "f":
        return [float(c) for c in classes]
    return [c if isinstance(c, str) else int(c) for c in classes.tolist()]


def write_classifier(
    record: ClassifierRecord, where: str | os.PathLike | Location, overwrite: bool = False
) -> None:
    """Write ``record`` as a Zarr v3 group at ``where`` (root zarr.json last).

    Raises
    ------
    FileExistsError
        A store is at ``where`` and ``overwrite`` is False.
    ValueError
        Class labels of a dtype the store does not keep (see :data:`CLASSES_DTYPE`).
    """
    classes = np.asarray(record.classes)
    if not CLASSES_DTYPE.fullmatch(classes.dtype.str):
        raise ValueError(
            f"Class labels of dtype {classes.dtype} cannot be saved: booleans, integers, whole "
            "numbers or strings can."
        )
    attributes = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_components": int(record.means.shape[0]),
        "n_features": int(record.means.shape[1]),
        "n_classes": len(classes),
        "classes": _class_values(classes),
        "classes_dtype": classes.dtype.str,
        "feature_names": record.feature_names,
        "params": record.settings,
        "epsilon": float(record.epsilon),
        "n_iter": record.n_iter,
        "converged": record.converged,
        "lower_bounds": record.lower_bounds,
        "n_unlabelled": record.n_unlabelled,
        "input_layout": record.input_layout,
    }
    arrays = {
        "weights": record.weights,
        "means": record.means,
        "covariances": record.covariances,
        "class_count": record.class_count,
    }
    write_store(where, attributes, arrays, CLASSIFIER_ATTRIBUTES, overwrite, record.feature_names)


def _label_ok(value, kind: str) -> bool:
    if kind == "b":
        return isinstance(value, bool)
    if kind in "iu":
        return is_int(value) and is_number(value)
    if kind == "f":
        return is_number(value) and math.isfinite(value) and float(value).is_integer()
    if kind == "U":
        return isinstance(value, str)
    return isinstance(value, str) or (is_int(value) and is_number(value))


def _checked_classes(attrs, n_classes, where) -> np.ndarray:
    dtype = checked_value(
        attrs,
        "classes_dtype",
        lambda v: isinstance(v, str) and CLASSES_DTYPE.fullmatch(v) is not None,
        "be the numpy dtype of booleans, integers, floats, strings or objects ('<i8', '<U5')",
        where,
    )
    kind = np.dtype(dtype).kind
    values = checked_value(
        attrs,
        "classes",
        lambda v: (
            isinstance(v, list) and len(v) == n_classes and all(_label_ok(c, kind) for c in v)
        ),
        f"be n_classes ({n_classes}) labels of dtype {dtype}",
        where,
    )
    problem = None
    try:
        classes = np.asarray(values, dtype=dtype)
        if classes.tolist() != values:
            problem = f"do not fit the dtype {dtype}"
        elif any(is_int(c) and c == -1 for c in values) or (kind == "f" and -1.0 in values):
            problem = "include -1, the label of unlabelled rows"
        elif len(set(values)) != len(values) or not np.array_equal(np.sort(classes), classes):
            problem = "must be distinct and sorted"
    except (TypeError, ValueError, OverflowError) as err:
        problem = f"cannot be read as {dtype} ({shorten(err, 80)})"
    if problem:
        raise ModelStoreError(f"{where}, zarr.json: attribute 'classes': the labels {problem}.")
    return classes


def _checked_arrays(arrays, where) -> None:
    for name in ("weights", "covariances", "class_count"):
        if np.any(arrays[name] < 0):
            raise ModelStoreError(f"{where}: array {name!r} has negative values.")
    total = arrays["weights"].sum()
    if not np.isclose(total, 1.0):
        raise ModelStoreError(f"{where}: array 'weights' sums to {total:.8f}, not 1.")


def read_classifier(
    where: str | os.PathLike | Location,
    names: tuple[str, ...],
    check_settings: Callable[[dict, int], None],
) -> ClassifierRecord:
    """Read and validate the ``DiagGMMClassifier`` store at ``where``.

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
    names : tuple of str
        The constructor parameters ``params`` must hold.
    check_settings : callable
        Given the constructor parameters (a dict) and the number of classes, raises
        ``ValueError`` or ``TypeError`` for an invalid one: the estimator's own checks.

    Returns
    -------
    ClassifierRecord

    Raises
    ------
    FileNotFoundError
        Nothing is stored at ``where``.
    ModelStoreError
        Not a valid store of a ``DiagGMMClassifier``; the message names the file and the
        field.
    """
    files = StoreFiles(location(where), f"model {location(where).url!r}")
    where = files.where
    attrs = root_attributes(files, where, FORMAT, (FORMAT_VERSION,))

    def count(name):
        return checked_value(attrs, name, lambda v: is_int(v) and v >= 1, "be >= 1", where)

    k, d, n_classes = count("n_components"), count("n_features"), count("n_classes")
    params = checked_value(
        attrs,
        "params",
        lambda v: isinstance(v, dict) and set(v) == set(names),
        f"map exactly {sorted(names)} to the constructor's values",
        where,
    )
    check_param_types(params, where)
    try:
        check_settings(params, n_classes)
    except (TypeError, ValueError) as err:
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'params': a setting is invalid: {shorten(err, 300)}"
        ) from None
    if k != n_classes * params["n_components_per_class"]:
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'n_components' is {k}, not n_classes ({n_classes}) "
            f"times n_components_per_class ({params['n_components_per_class']})."
        )
    classes = _checked_classes(attrs, n_classes, where)
    feature_names = checked_value(
        attrs,
        "feature_names",
        lambda v: v is None or (is_name_list(v, d) and all(isinstance(n, str) for n in v)),
        f"be null or n_features ({d}) strings",
        where,
    )
    epsilon = checked_value(
        attrs,
        "epsilon",
        lambda v: is_number(v) and math.isfinite(v) and v >= 0,
        "be a finite number >= 0",
        where,
    )
    values = {
        name: checked_value(attrs, name, *ATTRIBUTES[name][:2], where)
        for name in ("n_iter", "converged", "lower_bounds", "input_layout")
    }
    n_unlabelled = checked_value(
        attrs,
        "n_unlabelled",
        lambda v: v is None or (is_int(v) and v >= 0),
        "be null or an integer >= 0",
        where,
    )
    shapes = {"weights": (k,), "means": (k, d), "covariances": (k, d), "class_count": (n_classes,)}
    arrays = {name: read_model_array(files, name, s, ARRAY_VERSION) for name, s in shapes.items()}
    _checked_arrays(arrays, where)
    verify_checksums(attrs, arrays, where, CLASSIFIER_ATTRIBUTES)
    if feature_names is not None:
        check_feature_coordinate(files, feature_names)
    return ClassifierRecord(
        settings=params,
        classes=classes,
        class_count=arrays["class_count"],
        epsilon=float(epsilon),
        weights=arrays["weights"],
        means=arrays["means"],
        covariances=arrays["covariances"],
        n_iter=values["n_iter"],
        converged=values["converged"],
        lower_bounds=[float(v) for v in values["lower_bounds"]],
        n_unlabelled=n_unlabelled,
        feature_names=feature_names,
        input_layout=values["input_layout"],
    )
