"""The labels of a classifier's rows: from every input kind, checked before any work.

``y`` holds one integer class label per row, -1 for an unlabelled row (as in
:mod:`sklearn.semi_supervised`). It can be numpy (or a list, a pandas Series), a dask array
or Series, a Zarr array (or the path or URL of one), an xarray DataArray with the data's
sample dims, or the name of a column of the table ``X``. :func:`row_labels` turns it into
class indices (0 .. n_classes - 1, -1 unlabelled) chunked like the data's sample axes, the
engine's ``labels`` input (see :func:`diaggmm_dist.engine.pass_statistics`), after reading
the labels once (one integer per row, not the data) to check them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from . import engine, inputs
from .data_pass import DataPass, raise_for_bad_values
from .inputs.samples import is_xarray
from .inputs.tables import is_dataframe
from .kernels import split_statistics
from .locations import Location

#: The label of an unlabelled row.
UNLABELLED = -1


def label_column(X: Any, y: Any, columns: list | None) -> tuple[list | None, bool]:
    """With a table ``X`` and a column name ``y``: the feature columns, and True.

    The label column is never a feature: without ``columns``, the features are every other
    column. Anything else: ``(columns, False)``.

    Raises
    ------
    ValueError
        ``y`` names no column of ``X``, or one of ``columns``.
    """
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


def _label_array(y, X, samples, storage_options):
    """``y`` as numpy or dask, aligned with ``samples`` (before any check of its values)."""
    if isinstance(y, str) and is_dataframe(X):
        y = X[y]
    if (is_dataframe(y) and getattr(y, "ndim", 2) != 1) or (
        is_xarray(y) and type(y).__name__ != "DataArray"
    ):
        raise TypeError(f"y must be one column of labels, got a {type(y).__name__}.")
    if hasattr(y, "to_dask_array"):  # a dask Series: lengths need one cheap pass of row counts
        lengths = tuple(int(n) for n in engine.compute(y.map_partitions(len))[0])
        y = y.to_dask_array(lengths=lengths)
    elif hasattr(y, "to_numpy") and not is_xarray(y):  # a pandas Series
        y = y.to_numpy()
    elif isinstance(y, (str, os.PathLike, Location)) or type(y).__module__.startswith("zarr"):
        array = y if hasattr(y, "shape") else inputs.open_zarr_array(y, storage_options)
        y = da.from_array(array, chunks=array.chunks)
    elif not (is_xarray(y) or isinstance(y, da.Array)):
        y = np.asarray(y)
    if np.dtype(y.dtype).kind not in "iu":
        raise TypeError(
            f"y must hold integer class labels (-1 for an unlabelled row), got dtype {y.dtype}: "
            "encode the classes as integers (e.g. sklearn.preprocessing.LabelEncoder)."
        )
    return inputs.sample_values(y, samples, "y")


@dataclass
class RowLabels:
    """The checked labels of a fit's rows."""

    indices: da.Array  # class index per row (-1: unlabelled), int64, chunked like the samples
    classes: np.ndarray  # the class labels, sorted
    present: np.ndarray  # which classes have a labelled row
    n_unlabelled: int


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
        One integer label per row, -1 for an unlabelled row; a string is a column of the
        table ``X`` when ``X`` is one, else the path or URL of a Zarr array.
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
        Not one label per row, a label not in ``classes``, ``classes`` holding -1 or
        repeated values, or no labelled row.
    TypeError
        Labels that are not integers.
    """
    values = _label_array(y, X, samples, storage_options)
    (seen,) = engine.compute(da.unique(values)) if isinstance(values, da.Array) else (None,)
    seen = np.unique(np.asarray(values if seen is None else seen))
    labelled = seen[seen != UNLABELLED]
    if classes is None:
        classes = labelled
    else:
        classes = np.asarray(classes)
        if classes.ndim != 1 or np.dtype(classes.dtype).kind not in "iu":
            raise TypeError(f"classes must be a list of integer labels, got {classes!r}.")
        if UNLABELLED in classes or len(np.unique(classes)) != len(classes):
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
    if not labelled.size and classes.size == 0:
        raise ValueError("y has no labelled row (every label is -1): label some rows.")

    def to_index(block):
        index = np.searchsorted(classes, block).astype(np.int64)
        return np.where(block == UNLABELLED, UNLABELLED, index)

    indices = values.map_blocks(to_index, dtype=np.int64)
    n_unlabelled = 0
    if UNLABELLED in seen:
        (n_unlabelled,) = engine.compute((values == UNLABELLED).sum())
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
        stats = engine.pass_statistics(
            self.X,
            pass_spec,
            self.missing,
            self.weights,
            count_nonfinite=not self.checked,
            graphs=self.graphs,
            labels=self.labels,
        )
        if not self.checked:
            scalars = split_statistics(stats)[-1]
            raise_for_bad_values(
                int(scalars["nan"]),
                int(scalars["inf"]),
                int(scalars["bad_weights"]),
                int(scalars["rows"]),
                self.missing,
                self.weights is not None,
            )
            self.checked = True
        return stats
