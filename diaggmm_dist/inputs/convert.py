"""From any input kind to :class:`~diaggmm_dist.inputs.samples.Samples`, without loading it."""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..locations import Location, StorageOptions, location
from ..validation import dense_numeric
from .arrays import aligned_samples, as_row_chunked, is_in_memory, is_where
from .gridded import from_xarray, open_gridded
from .samples import Samples, is_xarray
from .tables import from_table, holds_parquet_files, is_dataframe, looks_like_parquet


def as_samples(
    X,
    chunk_size: int | None = None,
    *,
    feature_dim=None,
    features=None,
    columns=None,
    storage_options: StorageOptions | None = None,
) -> Samples:
    """Turn user data into :class:`Samples` without loading it.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, xarray object, DataFrame, str, Location or Store
        Data, or where it lives (a path, fsspec URL, Location or Zarr store). A string
        ending in ``.parquet`` (or naming a directory of Parquet files) is read as a table;
        with ``feature_dim`` or ``features`` a string is a gridded store opened with xarray
        (:func:`open_gridded`: Zarr group or NetCDF); any other string is a Zarr array path
        or URL.
    chunk_size : int, optional
        Rows per chunk for in-memory input (see :func:`as_row_chunked`).
    feature_dim : str, optional
        For a DataArray: the dimension holding the features (every other dimension is a
        sample dimension). Optional for 2-D arrays (the last dimension).
    features : list of str, optional
        For a Dataset: the variables to use as features (default: all data variables).
    columns : list of str, optional
        For tables: the columns to use (default: every column, when all are float or all
        integer; any other table needs them).
    storage_options : dict, optional
        fsspec options (endpoint, credentials, ...) for a URL ``X``; they travel with the
        tasks to the workers (:func:`diaggmm_dist.locations.location`). Data given in code
        (arrays, tables, xarray objects) is read as it is.

    Returns
    -------
    Samples

    Raises
    ------
    TypeError
        Sparse input, or an object array that does not hold numbers
        (:func:`~diaggmm_dist.validation.dense_numeric`).
    """
    X = dense_numeric(X)
    if is_where(X):
        X = location(X, storage_options)
        if feature_dim is not None or features is not None:
            X = open_gridded(X)
        elif looks_like_parquet(X.url):
            return from_table(X, chunk_size, columns)
    if is_xarray(X):
        return from_xarray(X, chunk_size, feature_dim, features)
    if is_dataframe(X):
        return from_table(X, chunk_size, columns)
    try:
        array = as_row_chunked(X, chunk_size)
    except FileNotFoundError:
        # a directory of Parquet files named without a suffix: one listing, only when no Zarr
        if (
            isinstance(X, Location)
            and X.store is None
            and not X.is_local
            and holds_parquet_files(X)
        ):
            return from_table(X, chunk_size, columns)
        raise
    in_memory = is_in_memory(X)
    return Samples(array, in_memory=in_memory, values=np.asarray(X) if in_memory else None)


def sample_values(values, samples: Samples, name: str) -> da.Array:
    """Per-sample values (weights) aligned with ``samples``: DataArray, dask or numpy.

    Parameters
    ----------
    values : array-like, dask array or xarray.DataArray
        One value per sample; a DataArray must have exactly the sample dims.
    samples : Samples
        The data the values belong to.
    name : str
        What the values are, for the error messages.

    Returns
    -------
    dask.array.Array
        Chunked like the samples (see :func:`aligned_samples`).

    Raises
    ------
    ValueError
        Not one value per sample, or a DataArray with other dims.
    """
    if is_xarray(values):
        if samples.sample_dims:
            missing = [d for d in samples.sample_dims if d not in values.dims]
            if missing or values.ndim != len(samples.sample_dims):
                raise ValueError(
                    f"{name} has dims {values.dims}; it must have exactly the sample dims "
                    f"{samples.sample_dims}."
                )
            values = values.transpose(*samples.sample_dims)
        values = values.data
    return aligned_samples(values, samples.array, name)
