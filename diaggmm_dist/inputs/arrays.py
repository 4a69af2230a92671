"""Arrays (numpy, dask, Zarr arrays and paths) as the engine reads them: row-chunked dask arrays.

The engine's arrays hold samples along every axis but the last and features along the last,
in one chunk. This module makes them from arrays without loading anything, and refuses data
that cannot be one (with scikit-learn's wording first).
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.array.core import normalize_chunks

from .. import checked_zarr, kernels, read_ahead, zarr_chunks
from ..locations import Location, StorageOptions, location

#: Target bytes per chunk when the input is not already chunked (numpy input).
DEFAULT_CHUNK_BYTES = 16 * 2**20


def default_chunk_rows(n_features: int, itemsize: int) -> int:
    """Rows per chunk of about :data:`DEFAULT_CHUNK_BYTES`, a multiple of the kernels' sub-block.

    Parameters
    ----------
    n_features : int
        Features per row.
    itemsize : int
        Bytes per value.

    Returns
    -------
    int
        A multiple of :data:`~diaggmm_dist.kernels.SUB_ROWS`, at least one sub-block.
    """
    rows = DEFAULT_CHUNK_BYTES // max(1, n_features * itemsize)
    return max(kernels.SUB_ROWS, rows // kernels.SUB_ROWS * kernels.SUB_ROWS)


def open_zarr_array(
    where: str | os.PathLike | Location | Any, storage_options: StorageOptions | None = None
):
    """The Zarr array at a local path, fsspec URL, Location or Zarr store, opened read-only, lazily.

    Its chunks are read through :func:`~diaggmm_dist.checked_zarr.checked_array` (each checked
    before it is decoded); its metadata costs one request for Zarr v3, three for v2
    (:func:`~diaggmm_dist.checked_zarr.open_checked_array`).

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
        Where the array is (see :func:`diaggmm_dist.locations.location`).
    storage_options : dict, optional
        fsspec options for a URL (endpoint, credentials, ...); they travel with the tasks.

    Returns
    -------
    zarr.Array

    Raises
    ------
    FileNotFoundError
        Nothing at ``where``.
    ValueError
        ``where`` is a Zarr group (the message names its arrays).
    """
    import zarr

    where = location(where, storage_options)
    store = where.zarr_store(read_only=True)
    try:
        node = checked_zarr.open_checked_array(store)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"No Zarr array found at {where.url!r}: check the path or URL."
        ) from err
    if node is None:
        group = zarr.open_group(store, mode="r")
        names = sorted(group.array_keys())
        hint = (
            f" It holds the arrays {names}; pass e.g. {where.url.rstrip('/') + '/' + names[0]!r}."
            if names
            else ""
        )
        raise ValueError(f"{where.url!r} is a Zarr group, not an array.{hint}")
    return node


def _zarr_group_error(group):
    names = sorted(group.array_keys())
    hint = (
        f" It holds the arrays {names}; pass e.g. group[{names[0]!r}]."
        if names
        else " It holds no arrays."
    )
    return ValueError(f"Got a Zarr group ({group.store_path}), not an array.{hint}")


def as_row_chunked(
    X, chunk_size: int | None = None, storage_options: StorageOptions | None = None
) -> da.Array:
    """Return ``X`` as a 2-D dask array chunked along rows only, without loading it.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str, os.PathLike, Location or zarr.abc.store.Store
        A string, path, Location or store is opened as a Zarr array (local path or fsspec
        URL), lazily (:func:`open_zarr_array`).
    chunk_size : int, optional
        Rows per chunk for numpy input (default: about ``DEFAULT_CHUNK_BYTES`` per chunk).
        A Zarr array's chunks are grouped whole into dask chunks of about this many rows
        (at least one Zarr chunk). Dask input keeps its own row chunks.
    storage_options : dict, optional
        fsspec options for a URL ``X`` (see :func:`open_zarr_array`).

    Returns
    -------
    dask.array.Array
        Shape (n_samples, n_features), one chunk across the features.

    Raises
    ------
    TypeError
        Non-numeric, boolean or complex data.
    ValueError
        Not 2-D, no rows or no features; a Zarr group instead of an array; a dask array
        with unknown chunk sizes.
    FileNotFoundError
        No Zarr array at the given path.
    """
    import zarr

    if is_where(X):
        X = open_zarr_array(X, storage_options)
    if isinstance(X, zarr.Group):
        raise _zarr_group_error(X)
    if isinstance(X, zarr.Array):
        check_shape_and_dtype(X.shape, X.dtype)
        # what zarr reads is checked chunk by chunk, its errors name the chunk
        X = checked_zarr.checked_array(X)
        target = chunk_size or default_chunk_rows(X.shape[1], X.dtype.itemsize)
        zarr_rows = X.chunks[0]  # of a sharded array: its inner chunks, read with ranges
        rows = max(1, target // zarr_rows) * zarr_rows  # whole Zarr chunks: each is read once
        direct = zarr_chunks.direct_rows(X)
        if direct is not None:  # the same chunks, read without zarr's extra copy (zarr_chunks)
            array = _from_reader(direct, rows, dask.base.tokenize(direct))
        elif checked_zarr.is_local(X):
            array = da.from_zarr(X, chunks=(rows, X.shape[1]))
        else:  # object storage: the next chunks read while one is computed on (read_ahead)
            row_chunks = normalize_chunks((rows, X.shape[1]), X.shape)[0]
            token = dask.base.tokenize(checked_zarr.array_url(X), X.metadata.to_dict(), row_chunks)
            array = _from_reader(read_ahead.ReadAhead(X, row_chunks, token), rows, token)
    elif isinstance(X, da.Array):
        check_shape_and_dtype(X.shape, X.dtype)
        array = X
    else:
        if not hasattr(X, "dtype") or not hasattr(X, "shape"):
            X = np.asarray(X)
        elif not isinstance(X, np.ndarray):
            X = np.asarray(X)
        check_shape_and_dtype(X.shape, X.dtype)
        if chunk_size is None:
            chunk_size = default_chunk_rows(X.shape[1], X.dtype.itemsize)
        array = in_memory_array(X, (chunk_size, X.shape[1]))
    if any(math.isnan(c) for c in array.chunks[0]):
        raise ValueError(
            "The dask array has unknown chunk sizes along the rows; call "
            "`X.compute_chunk_sizes()` (or build it with known sizes) before fitting."
        )
    if array.numblocks[1] != 1:
        array = array.rechunk({1: -1})
    return array


def _from_reader(reader, rows, token) -> da.Array:
    """A dask array of ``reader`` (a 2-D reader of whole row chunks) in chunks of ``rows``."""
    return da.from_array(
        reader,
        chunks=(rows, reader.shape[1]),
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0), dtype=reader.dtype),
        name=f"from-zarr-{token}",
    )


def in_memory_array(values: np.ndarray, chunks) -> da.Array:
    """A dask array whose chunks are views of the numpy array ``values``.

    ``da.from_array`` first copies its input, which for data that only just fits in memory
    means twice the memory and a full copy per fit. Here the only copy is of input that is
    not C-contiguous (the kernels read rows). The keys are random: no hashing of the data.

    Parameters
    ----------
    values : ndarray
        The data.
    chunks : tuple
        Dask chunks (anything ``normalize_chunks`` takes).

    Returns
    -------
    dask.array.Array
    """
    values = np.ascontiguousarray(values)
    chunks = normalize_chunks(chunks, values.shape, dtype=values.dtype)
    name = f"in-memory-{uuid.uuid4().hex}"
    bounds = [np.cumsum((0,) + axis) for axis in chunks]
    graph = {
        (name,) + index: values[tuple(slice(b[i], b[i + 1]) for b, i in zip(bounds, index))]
        for index in itertools.product(*(range(len(axis)) for axis in chunks))
    }
    return da.Array(graph, name, chunks, meta=values[(slice(0, 0),) * values.ndim])


def is_where(X) -> bool:
    """True for where data lives (a path, URL, Location or Zarr store), not data itself."""
    from zarr.abc.store import Store

    return isinstance(X, (str, os.PathLike, Location, Store))


def is_in_memory(X) -> bool:
    """True for in-memory input (numpy arrays, lists): results come back as numpy."""
    import zarr

    return not isinstance(X, (da.Array, zarr.Array)) and not is_where(X)


def check_shape_and_dtype(shape: tuple, dtype) -> None:
    """Refuse data that is not a 2-D array of real numbers with rows and features.

    The messages start with scikit-learn's own wording (its ``check_array``), which
    scikit-learn's estimator checks look for, and end with what to do here.

    Raises
    ------
    TypeError
        Non-numeric or boolean data.
    ValueError
        Complex data; not 2-D; no rows or no features.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported (dtype {dtype}): pass the real part, or real and "
            "imaginary parts as separate features."
        )
    if dtype.kind not in "iuf":
        raise TypeError(
            f"Expected numeric (integer or float) data, got dtype {dtype}: convert the "
            "features to numbers first."
        )
    if len(shape) != 2:
        hint = (
            " Reshape your data either using X.reshape(-1, 1) if it has a single feature or "
            "X.reshape(1, -1) if it is a single sample."
            if len(shape) == 1
            else " Flatten the sample dimensions to rows first."
        )
        raise ValueError(
            f"Expected 2D array, got {len(shape)}D array instead (shape {tuple(shape)}).{hint}"
        )
    if shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(shape)}) while a minimum of 1 is "
            "required: X has no rows."
        )
    if shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is "
            "required: X has no features."
        )


def aligned_samples(values, X: da.Array, name: str) -> da.Array:
    """``values`` (one per sample of ``X``) as a dask array chunked like X's sample axes.

    Parameters
    ----------
    values : array-like or dask array
        One number per sample, shaped like X's sample axes.
    X : dask.array.Array
        An engine array (samples on every axis but the last).
    name : str
        What ``values`` are, for the error messages (e.g. ``"sample_weight"``).

    Returns
    -------
    dask.array.Array

    Raises
    ------
    ValueError
        Not one value per sample.
    TypeError
        Not numbers.
    """
    shape, chunks = X.shape[:-1], X.chunks[:-1]
    if not isinstance(values, da.Array):
        values = np.asarray(values)
    if values.shape != shape:
        raise ValueError(
            f"{name} has shape {values.shape}, but X has {shape} samples: give one value per "
            "sample."
        )
    if np.dtype(values.dtype).kind not in "iuf":
        raise TypeError(f"{name} must be numeric, got dtype {values.dtype}.")
    if isinstance(values, da.Array):
        return values.rechunk(chunks)
    return in_memory_array(values, chunks)
