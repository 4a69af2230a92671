"""Gridded input (xarray DataArrays and Datasets, Zarr groups, NetCDF) as engine arrays.

All sample dimensions are kept (nothing is stacked or rechunked: each block is flattened to
rows inside the kernel), with the features moved to the last axis.
"""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import numpy as np

from .. import checked_zarr
from ..locations import Location, StorageOptions, location
from .arrays import check_shape_and_dtype, default_chunk_rows, in_memory_array
from .samples import Samples


def from_xarray(X, chunk_size=None, feature_dim=None, features=None) -> Samples:
    """An xarray DataArray or Dataset as :class:`Samples` (see :func:`as_samples`).

    Raises
    ------
    ValueError
        Unknown variables or dims, variables that do not share dims, no sample dims.
    TypeError
        A non-numeric variable.
    """
    import xarray as xr

    if isinstance(X, xr.Dataset):
        X, feature_dim = _dataset_features(X, features), "feature"
    elif feature_dim is None:
        if X.ndim != 2:
            raise ValueError(
                f"Give feature_dim=... for a {X.ndim}-D DataArray: one of its dims {X.dims}."
            )
        feature_dim = X.dims[-1]
    if feature_dim not in X.dims:
        raise ValueError(
            f"feature_dim={feature_dim!r} is not a dimension of the data; its dims are {X.dims}."
        )
    sample_dims = tuple(d for d in X.dims if d != feature_dim)
    if not sample_dims:
        raise ValueError(
            f"The data has only the feature dimension {feature_dim!r}: there are no samples."
        )
    ordered = X.transpose(*sample_dims, feature_dim)
    data = ordered.data
    in_memory = not isinstance(data, da.Array)  # eager in, eager out
    if in_memory:
        data = in_memory_array(data, _default_chunks(ordered.shape, ordered.dtype, chunk_size))
    check_shape_and_dtype((int(np.prod(data.shape[:-1])), data.shape[-1]), data.dtype)
    if data.numblocks[-1] != 1:
        data = data.rechunk({data.ndim - 1: -1})
    names = None
    if feature_dim in X.coords:
        names = [str(v) for v in X[feature_dim].values]
    return Samples(
        data,
        in_memory=in_memory,
        feature_names=names,
        template=ordered.isel({feature_dim: 0}, drop=True),
        sample_dims=sample_dims,
    )


def _dataset_features(X, features):
    """The Dataset's feature variables stacked along a new ``feature`` dim (lazily)."""
    names = list(X.data_vars) if features is None else list(features)
    missing = [name for name in names if name not in X.data_vars]
    if missing:
        raise ValueError(
            f"features {missing} are not variables of the Dataset; it has {sorted(X.data_vars)}."
        )
    if not names:
        raise ValueError("The Dataset has no data variables to use as features.")
    for name in names:
        kind = np.dtype(X[name].dtype).kind
        if kind not in "iuf":
            raise TypeError(
                f"Dataset variable {name!r} has dtype {X[name].dtype}: features must be "
                "numeric; pass features=[...] naming the numeric ones."
            )
    dims = X[names[0]].dims
    for name in names[1:]:
        if set(X[name].dims) != set(dims):
            raise ValueError(
                f"Variables {names[0]!r} {dims} and {name!r} {X[name].dims} do not share "
                "dimensions."
            )
    return X[names].to_dataarray(dim="feature")


def open_gridded(
    url: str | os.PathLike | Location | Any, storage_options: StorageOptions | None = None
):
    """A Zarr group or NetCDF file opened lazily as an ``xarray.Dataset``.

    A Dataset with one data variable becomes that DataArray (so ``feature_dim`` can name
    one of its dims). Times are left undecoded: they are never features, and climatologies
    often use calendars that need extra packages.

    Parameters
    ----------
    url : str, os.PathLike, Location or zarr.abc.store.Store
        A local path or fsspec URL (or a Zarr store); names ending in ``.nc``, ``.nc4``,
        ``.cdf`` or ``.netcdf`` are NetCDF, anything else a Zarr group.
    storage_options : dict, optional
        fsspec options for a URL (:func:`diaggmm_dist.locations.location`).

    Returns
    -------
    xarray.Dataset or xarray.DataArray
    """
    import xarray as xr

    where = location(url, storage_options)
    if where.store is None and where.url.rstrip("/").endswith((".nc", ".nc4", ".cdf", ".netcdf")):
        if where.is_local:
            data = xr.open_dataset(where.local_path, chunks={}, decode_times=False)
        else:  # an fsspec file: its file system (and options) travel with the tasks
            fs, path = where.filesystem()
            data = xr.open_dataset(fs.open(path, "rb"), chunks={}, decode_times=False)
    else:
        store = where.zarr_store(read_only=True)
        if not where.is_local:  # one GET per chunk, no HEAD before it
            store = checked_zarr.WholeReadsInOneRequest(store)
        data = xr.open_zarr(store, consolidated=False, decode_times=False)
    if len(data.data_vars) == 1:
        return data[next(iter(data.data_vars))]
    return data


def _default_chunks(shape, dtype, chunk_size):
    rows = chunk_size or default_chunk_rows(shape[-1], np.dtype(dtype).itemsize)
    return (max(1, rows // max(1, int(np.prod(shape[1:-1])))),) + tuple(shape[1:])
