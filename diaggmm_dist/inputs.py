"""From what users hold to what the engine reads: a dask array with features on the last axis.

Arrays (numpy, dask, Zarr arrays and paths) go through :func:`engine.as_row_chunked`;
xarray objects keep all their sample dimensions (nothing is stacked or rechunked: each
block is flattened to rows inside the kernel), with the features moved to the last axis;
tables (pandas or dask DataFrames, Parquet) become row-chunked arrays of their numeric
columns. :class:`Samples` also remembers how to give results back in the input's form
(coordinates, attributes, feature names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from . import engine
from .validation import dense_numeric


@dataclass
class Samples:
    """Data ready for the engine, and what is needed to shape results like the input."""

    array: da.Array  # samples along all axes but the last; features along the last, one chunk
    in_memory: bool  # results come back as numpy
    values: np.ndarray | None = None  # the in-memory rows, for checks before any work
    feature_names: list | None = None
    template: object = None  # the xarray object whose sample coordinates results carry
    sample_dims: tuple = field(default=())

    def wrap(self, result, kind, n_components=None):
        """Give a per-row ``result`` back as numpy, dask or xarray, like the input."""
        if self.in_memory:
            (result,) = engine.compute(result)
            return result
        if self.template is None:
            return result
        import xarray as xr

        coords = {
            name: coord
            for name, coord in self.template.coords.items()
            if set(coord.dims) <= set(self.sample_dims)
        }
        dims = self.sample_dims + (("component",) if kind == "proba" else ())
        if kind == "proba":
            coords["component"] = np.arange(n_components)
        names = {
            "labels": "labels",
            "proba": "responsibility",
            "log_norm": "log_likelihood",
            "max_resp": "max_resp",
        }
        if kind == "labels":
            result = result.astype(np.int16)
        out = xr.DataArray(result, dims=dims, coords=coords, name=names[kind])
        out.attrs.update(getattr(self.template, "attrs", {}))
        return out


def _is_xarray(X):
    return type(X).__module__.startswith("xarray.")


def _is_dataframe(X):
    return hasattr(X, "columns") and hasattr(X, "dtypes") and not _is_xarray(X)


def as_samples(X, chunk_size=None, *, feature_dim=None, features=None, columns=None):
    """Turn user data into :class:`Samples` without loading it.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str, xarray.DataArray or Dataset, DataFrame
        A string ending in ``.parquet`` (or naming a directory of Parquet files) is read as a
        table; with ``feature_dim`` or ``features`` a string is a gridded store opened with
        xarray (:func:`open_gridded`: Zarr group or NetCDF); any other string is a Zarr
        array path or URL.
    chunk_size : int, optional
        Rows per chunk for in-memory input (see :func:`engine.as_row_chunked`).
    feature_dim : str, optional
        For a DataArray: the dimension holding the features (every other dimension is a
        sample dimension). Optional for 2-D arrays (the last dimension).
    features : list of str, optional
        For a Dataset: the variables to use as features (default: all data variables).
    columns : list of str, optional
        For tables: the columns to use (default: every numeric column).

    Raises
    ------
    TypeError
        Sparse input, or an object array that does not hold numbers
        (:func:`~diaggmm_dist.validation.dense_numeric`).
    """
    X = dense_numeric(X)
    if isinstance(X, (str, os.PathLike)) and (feature_dim is not None or features is not None):
        X = open_gridded(X)
    if _is_xarray(X):
        return _from_xarray(X, chunk_size, feature_dim, features)
    if _is_dataframe(X) or (isinstance(X, (str, os.PathLike)) and _looks_like_parquet(X)):
        return _from_table(X, chunk_size, columns)
    array = engine.as_row_chunked(X, chunk_size)
    in_memory = engine.is_in_memory(X)
    return Samples(array, in_memory=in_memory, values=np.asarray(X) if in_memory else None)


# ------------------------------------------------------------------ xarray
def _from_xarray(X, chunk_size, feature_dim, features):
    import xarray as xr

    if isinstance(X, xr.Dataset):
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
                    f"Dataset variable {name!r} has dtype {X[name].dtype}: features must be numeric; "
                    "pass features=[...] naming the numeric ones."
                )
        dims = X[names[0]].dims
        for name in names[1:]:
            if set(X[name].dims) != set(dims):
                raise ValueError(
                    f"Variables {names[0]!r} {dims} and {name!r} {X[name].dims} do not share dimensions."
                )
        X = X[names].to_dataarray(dim="feature")
        feature_dim = "feature"
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
    if not isinstance(data, da.Array):
        data = engine.in_memory_array(
            data, _default_chunks(ordered.shape, ordered.dtype, chunk_size)
        )
    engine.check_shape_and_dtype((int(np.prod(data.shape[:-1])), data.shape[-1]), data.dtype)
    if data.numblocks[-1] != 1:
        data = data.rechunk({data.ndim - 1: -1})
    names = None
    if feature_dim in X.coords:
        names = [str(v) for v in X[feature_dim].values]
    return Samples(
        data,
        in_memory=False,
        feature_names=names,
        template=ordered.isel({feature_dim: 0}, drop=True),
        sample_dims=sample_dims,
    )


def open_gridded(url):
    """A Zarr group or NetCDF file opened lazily as an ``xarray.Dataset``.

    A Dataset with one data variable becomes that DataArray (so ``feature_dim`` can name
    one of its dims). Times are left undecoded: they are never features, and climatologies
    often use calendars that need extra packages.
    """
    import xarray as xr

    text = os.fspath(url)
    if text.rstrip("/").endswith((".nc", ".nc4", ".cdf", ".netcdf")):
        data = xr.open_dataset(text, chunks={}, decode_times=False)
    else:
        data = xr.open_zarr(text, consolidated=False, decode_times=False)
    if len(data.data_vars) == 1:
        return data[next(iter(data.data_vars))]
    return data


def _default_chunks(shape, dtype, chunk_size):
    rows = chunk_size or engine.default_chunk_rows(shape[-1], np.dtype(dtype).itemsize)
    return (max(1, rows // max(1, int(np.prod(shape[1:-1])))),) + tuple(shape[1:])


def sample_values(values, samples, name):
    """Per-sample values (weights) aligned with ``samples``: DataArray, dask or numpy."""
    if _is_xarray(values):
        if samples.sample_dims:
            missing = [d for d in samples.sample_dims if d not in values.dims]
            if missing or values.ndim != len(samples.sample_dims):
                raise ValueError(
                    f"{name} has dims {values.dims}; it must have exactly the sample dims {samples.sample_dims}."
                )
            values = values.transpose(*samples.sample_dims)
        values = values.data
    return engine.aligned_samples(values, samples.array, name)


# ------------------------------------------------------------------ tables
def _looks_like_parquet(path):
    text = os.fspath(path).rstrip("/")
    if text.endswith((".parquet", ".pq")):
        return True
    if "://" not in text and os.path.isdir(text):
        return any(name.endswith((".parquet", ".pq")) for name in os.listdir(text))
    return False


def _is_numeric(dtype):
    try:
        return np.dtype(dtype).kind in "iuf"
    except TypeError:  # pandas extension dtypes (strings, categories)
        return False


def _numeric_columns(dtypes, columns):
    if columns is None:
        return [name for name, dtype in dtypes.items() if _is_numeric(dtype)]
    missing = [c for c in columns if c not in dtypes.index]
    if missing:
        raise ValueError(f"columns {missing} are not in the table; it has {list(dtypes.index)}.")
    bad = [c for c in columns if not _is_numeric(dtypes[c])]
    if bad:
        raise TypeError(
            f"columns {bad} are not numeric ({[str(dtypes[c]) for c in bad]}): choose numeric columns."
        )
    return list(columns)


def _from_table(X, chunk_size, columns):
    if isinstance(X, (str, os.PathLike)):
        return _from_parquet(os.fspath(X), columns)
    names = _numeric_columns(X.dtypes, columns)
    if not names:
        raise TypeError("The table has no numeric columns: pass columns=[...] naming numeric ones.")
    if hasattr(X, "to_dask_array"):  # a dask DataFrame: lengths need one cheap pass of row counts
        lengths = tuple(int(n) for n in engine.compute(X.map_partitions(len))[0])
        array = X[names].to_dask_array(lengths=lengths)
        return Samples(
            engine.as_row_chunked(array), in_memory=False, feature_names=[str(n) for n in names]
        )
    values = X[names].to_numpy()
    array = engine.as_row_chunked(values, chunk_size)
    return Samples(array, in_memory=True, values=values, feature_names=[str(n) for n in names])


def _from_parquet(url, columns):
    """A Parquet file or directory as a row-chunked dask array, one chunk per row group.

    Row counts come from the Parquet footers, so no data is read to size the chunks.
    """
    import dask
    import pandas as pd
    import pyarrow.dataset as pads

    dataset = pads.dataset(url, format="parquet")
    dtypes = pd.Series(
        {
            field.name: (
                np.dtype(field.type.to_pandas_dtype())
                if _arrow_is_numeric(field.type)
                else np.dtype(object)
            )
            for field in dataset.schema
        }
    )
    names = _numeric_columns(dtypes, columns)
    if not names:
        raise TypeError(f"The Parquet data at {url!r} has no numeric columns: pass columns=[...].")
    dtype = np.result_type(*[dtypes[n] for n in names])
    blocks = []
    for fragment in dataset.get_fragments():
        for group in fragment.split_by_row_group():
            rows = sum(info.num_rows for info in group.row_groups)  # from the footer: no data read
            if rows:
                blocks.append(
                    da.from_delayed(
                        dask.delayed(_read_row_group)(group, names, dtype),
                        shape=(rows, len(names)),
                        dtype=dtype,
                    )
                )
    if not blocks:
        raise ValueError(f"The Parquet data at {url!r} has no rows.")
    return Samples(da.concatenate(blocks), in_memory=False, feature_names=names)


def _arrow_is_numeric(arrow_type):
    import pyarrow.types as pat

    return pat.is_integer(arrow_type) or pat.is_floating(arrow_type)


def _read_row_group(fragment, names, dtype):
    table = fragment.to_table(columns=names)
    return np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False).astype(dtype) for n in names]
    )
