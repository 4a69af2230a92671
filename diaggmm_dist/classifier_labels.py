"""The labels of a classifier's rows: from every input kind, checked before any work.

``y`` holds one class label per row, -1 for an unlabelled row (as in
:mod:`sklearn.semi_supervised`). It can be numpy (or a list, a pandas Series), a dask array
or Series, a Zarr array (or the path or URL of one), an xarray DataArray with the data's
sample dims, or the name of a column of the table ``X``. Labels are integers (or whole
floats); in memory they may also be strings or other sortable objects, as scikit-learn's
classifiers take them. :func:`row_labels` turns it into
class indices (0 .. n_classes - 1, -1 unlabelled) chunked like the data's sample axes, the
engine's ``labels`` input (see :func:`diaggmm_dist.engine.pass_statistics`), after reading
the labels once (one integer per row, not the data) to check them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from sklearn.exceptions import DataConversionWarning

from . import engine, inputs
from .data_pass import DataPass
from .inputs.samples import is_xarray
from .inputs.tables import is_dataframe, looks_like_parquet
from .locations import Location

#: The label of an unlabelled row.
UNLABELLED = -1


def _is_parquet(X) -> bool:
    """A path, URL or Location of Parquet data (a table read from storage)."""
    if isinstance(X, Location):
        return looks_like_parquet(X.url)
    return isinstance(X, (str, os.PathLike)) and looks_like_parquet(X)


def label_column(X: Any, y: Any, columns: list | None) -> tuple[list | None, bool]:
    """With a table ``X`` and a column name ``y``: the feature columns, and True.

    The label column is never a feature: without ``columns``, the features are every other
    column of a DataFrame (Parquet data needs ``columns``). Anything else:
    ``(columns, False)``.

    Raises
    ------
    ValueError
        ``y`` names no column of ``X``, or one of ``columns``; Parquet data without
        ``columns``.
    """
    if isinstance(y, str) and _is_parquet(X):
        if columns is None:
            raise ValueError(
                f"With the label column y={y!r} of Parquet data, give columns=[...] naming the "
                "feature columns."
            )
        if y in columns:
            raise ValueError(f"The label column {y!r} is also in columns={columns}: drop it there.")
        return list(columns), True
    if not (isinstance(y, str) and is_dataframe(X)):
        return columns, False
    if y not in X.columns:
        raise ValueError(
            f"y={y!r} names no column of X (its columns: {[str(c) for c in X.columns]}): "
            "give the label column's name, or the labels themselves."
        )
    if columns is None:
        return [c for c in X.columns if c != y], True
    if y in columns:
        raise ValueError(f"The label column {y!r} is also in columns={columns}: drop it there.")
    return list(columns), True


def _label_values(y, X, storage_options):
    """``y`` as numpy, dask or a DataArray (before any check of its values)."""
    if y is None:
        raise ValueError(
            "DiagGMMClassifier requires y to be passed, but the target y is None: give one "
            "label per row (-1 for an unlabelled row)."
        )
    if isinstance(y, str) and is_dataframe(X):
        y = X[y]
    if isinstance(y, str) and _is_parquet(X):  # the column, chunked by row group as X's
        return inputs.as_samples(X, columns=[y], storage_options=storage_options).array[:, 0]
    if (is_dataframe(y) and getattr(y, "ndim", 2) != 1) or (
        is_xarray(y) and type(y).__name__ != "DataArray"
    ):
        raise TypeError(f"y must be one column of labels, got a {type(y).__name__}.")
    if hasattr(y, "to_dask_array"):  # a dask Series: lengths need one cheap pass of row counts
        lengths = tuple(int(n) for n in engine.compute(y.map_partitions(len))[0])
        return y.to_dask_array(lengths=lengths)
    if hasattr(y, "to_numpy") and not is_xarray(y):  # a pandas Series
        return y.to_numpy()
    if isinstance(y, (str, os.PathLike, Location)) or type(y).__module__.startswith("zarr"):
        array = y if hasattr(y, "shape") else inputs.open_zarr_array(y, storage_options)
        return da.from_array(array, chunks=array.chunks)
    if is_xarray(y) or isinstance(y, da.Array):
        return y
    values = np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the "
            "shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning,
        )
        values = values.ravel()
    return values


def _checked_numbers(seen):
    """Refuse labels that are not whole numbers (NaN, infinite, fractional)."""
    if np.dtype(seen.dtype).kind != "f":
        return
    if np.isnan(seen).any():
        raise ValueError("Input y contains NaN: every row needs a label (-1 for unlabelled).")
    if np.isinf(seen).any():
        raise ValueError(
            "Input y contains infinity or a value too large for dtype('float64'): labels are "
            "classes (-1 for unlabelled)."
        )
    if np.any(seen != np.round(seen)):
        raise ValueError(
            "Unknown label type: continuous values in y. y must hold class labels (integers, "
            "-1 for an unlabelled row); for a continuous target use a regressor."
        )


def _unlabelled(values):
    """Which in-memory labels of any kind (strings, objects) are -1."""
    if values.dtype.kind in "US":
        return np.zeros(values.shape, dtype=bool)
    return np.frompyfunc(lambda v: isinstance(v, (int, np.integer)) and v == UNLABELLED, 1, 1)(
        values
    ).astype(bool)


@dataclass
class RowLabels:
    """The checked labels of a fit's rows."""

    indices: da.Array  # class index per row (-1: unlabelled), int64, chunked like the samples
    classes: np.ndarray  # the class labels, sorted
    present: np.ndarray  # which classes have a labelled row
    n_unlabelled: int


def _classes(labelled, classes):
    """The classes: those labelled, or ``classes`` checked against them."""
    if classes is None:
        if not labelled.size:
            raise ValueError("y has no labelled row (every label is -1): label some rows.")
        return labelled
    classes = np.asarray(classes)
    if classes.ndim != 1 or not classes.size:
        raise ValueError(f"classes must be a list of class labels, got {classes!r}.")
    if np.any(_unlabelled(classes.astype(object))) or len(np.unique(classes)) != len(classes):
        raise ValueError(
            f"classes={classes.tolist()} must be distinct labels, without -1 (unlabelled)."
        )
    classes = np.sort(classes)
    unknown = np.setdiff1d(labelled, classes)
    if unknown.size:
        raise ValueError(
            f"y holds the label(s) {unknown.tolist()}, which are not among the classes "
            f"{classes.tolist()}: pass every class in classes= on the first call."
        )
    return classes


def row_labels(
    y: Any,
    X: Any,
    samples: inputs.Samples,
    classes: Any = None,
    storage_options: dict | None = None,
) -> RowLabels:
    """The labels of ``samples`` as class indices, checked (read once) before any work.

    Parameters
    ----------
    y : array-like, dask array or Series, zarr.Array, str, xarray.DataArray, or column name
        One label per row, -1 for an unlabelled row: integers (or whole floats) in any
        form; strings or other objects in memory. A string is a column of the table ``X``
        when ``X`` is one, else the path or URL of a Zarr array.
    X : any input of :func:`~diaggmm_dist.inputs.as_samples`
        The data as the caller gave it (for a label column).
    samples : Samples
        The data, converted.
    classes : array-like, optional
        Every class there can be (as ``partial_fit`` takes them); by default those in ``y``.
    storage_options : dict, optional
        fsspec options for a Zarr URL ``y``.

    Returns
    -------
    RowLabels

    Raises
    ------
    ValueError
        No ``y``, not one label per row, NaN, infinite or fractional labels, a label not in
        ``classes``, ``classes`` holding -1 or repeated values, or no labelled row.
    TypeError
        Labels out of core that are not numbers.
    """
    values = _label_values(y, X, storage_options)
    if np.dtype(values.dtype).kind not in "iuf":
        if not isinstance(values, np.ndarray):
            raise TypeError(
                f"y of dtype {values.dtype} must be in memory (numpy, a list or a Series): "
                "labels out of core must be integers (-1 for unlabelled)."
            )
        if values.shape != samples.array.shape[:-1]:
            inputs.sample_values(values, samples, "y")  # its error names the shapes
        unlabelled = _unlabelled(values)
        try:
            labelled = np.unique(values[~unlabelled])
        except TypeError as err:
            raise TypeError(f"The labels in y cannot be sorted (mixed types?): {err}") from err
        classes = _classes(labelled, classes)
        index = np.full(values.shape, UNLABELLED, dtype=np.int64)
        index[~unlabelled] = np.searchsorted(classes, values[~unlabelled])
        indices = inputs.sample_values(index, samples, "y")
        return RowLabels(
            indices, classes, np.isin(classes, labelled), int(np.count_nonzero(unlabelled))
        )
    values = inputs.sample_values(values, samples, "y")
    # one read of the labels: their distinct values and how many rows are unlabelled
    seen, n_unlabelled = engine.compute(da.unique(values), (values == UNLABELLED).sum())
    _checked_numbers(seen)
    labelled = seen[seen != UNLABELLED]
    classes = _classes(labelled, classes)

    def to_index(block):
        index = np.searchsorted(classes, block).astype(np.int64)
        return np.where(block == UNLABELLED, UNLABELLED, index)

    indices = values.map_blocks(to_index, dtype=np.int64)
    return RowLabels(indices, classes, np.isin(classes, labelled), int(n_unlabelled))


class LabelledDataPass(DataPass):
    """A :class:`~diaggmm_dist.data_pass.DataPass` whose passes also read the rows' labels.

    A ``("gaussian", coefficients)`` pass becomes the labelled E-step
    ``("gaussian", coefficients, component_classes)``; a ``("labels", ...)`` pass is given
    as it is (see :func:`diaggmm_dist.kernels.chunk_statistics`).

    Parameters
    ----------
    data_pass : DataPass
        The fit's data.
    labels : dask.array.Array
        Class indices (-1 unlabelled), chunked like the data's sample axes.
    component_classes : ndarray of shape (K,)
        The class of every component.
    """

    def __init__(self, data_pass: DataPass, labels: da.Array, component_classes: np.ndarray):
        self.__dict__.update(data_pass.__dict__)
        self.labels = engine.held_on_cluster(labels)
        self.component_classes = np.asarray(component_classes, dtype=np.int64)
        self.graphs = {}

    def __call__(self, pass_spec):
        """The statistics of one labelled pass (the first one also checks the values)."""
        if pass_spec[0] == "gaussian" and len(pass_spec) == 2:
            pass_spec = (*pass_spec, self.component_classes)
        return self.statistics(pass_spec, labels=self.labels)
