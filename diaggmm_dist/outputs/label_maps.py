"""Label maps: a model's per-pixel results written next to gridded input, with coordinates."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..inputs.samples import result_attributes
from ..locations import Location, StorageOptions, location
from ..stores.zarr_groups import consolidate_metadata, write_atomically
from .scores import model_samples
from .written import NOT_WRITTEN, NOT_WRITTEN_COMMENT


def label_map(
    model: Any,
    data: Any,
    *,
    probabilities: bool = False,
    feature_dim: str | None = None,
    features: list | None = None,
    storage_options: StorageOptions | None = None,
):
    """An ``xarray.Dataset`` of labels, maximum responsibility and log-likelihood (lazy).

    ``data`` is what the model was fitted on (a DataArray with the same feature dim, or a
    Dataset with the same variables, or the path or URL of a gridded store), read once with
    the model's fitted input layout (or ``feature_dim``/``features`` when given); the result
    has its sample dimensions, coordinates and chunks. ``labels`` is int16 with -1 where no
    label could be given; CF attributes (``flag_values``, ``flag_meanings``,
    ``valid_min``/``valid_max``) describe it, and no ``_FillValue`` is set so that reading it
    back keeps the integers. Its ``comment`` says what -2 means in a written store
    (:data:`~.written.NOT_WRITTEN`: a chunk never written).

    Parameters
    ----------
    model : DiagGMM
        A fitted model.
    data : xarray.DataArray, xarray.Dataset, str or Location
        The gridded data.
    probabilities : bool, default=False
        Add ``responsibility``: every component's (float32).
    feature_dim, features : optional
        How to read ``data``, as ``fit`` takes them; by default the fitted layout's.
    storage_options : dict, optional
        fsspec options for ``data`` when it is a path or URL.

    Returns
    -------
    xarray.Dataset
        Lazy: ``labels``, ``max_resp``, ``log_likelihood`` (and ``responsibility``).
    """
    import xarray as xr

    # read once for both, checked against the fitted features
    layout = {"feature_dim": feature_dim, "features": features}
    samples = model_samples(model, data, None, storage_options, **layout)
    labels, max_resp, log_likelihood = model.score_rows(samples)
    if not isinstance(labels, xr.DataArray):
        raise TypeError(
            "label_map needs xarray input (a DataArray or Dataset) to give the map its coordinates."
        )
    k = model.n_components
    labels.attrs = {**result_attributes("labels", k), "comment": NOT_WRITTEN_COMMENT}
    variables = {"labels": labels, "max_resp": max_resp, "log_likelihood": log_likelihood}
    if probabilities:
        variables["responsibility"] = model.predict_proba(samples).astype(np.float32)
        variables["responsibility"].attrs = result_attributes("proba")
    result = xr.Dataset(variables)
    result.attrs = {
        "title": "diaggmm-dist label map",
        "n_components": k,
        "model_lower_bound": float(model.lower_bound_),
        "Conventions": "CF-1.8",
    }
    return result


def write_label_map(
    model: Any,
    data: Any,
    url: str | os.PathLike | Location | Any,
    *,
    probabilities: bool = False,
    overwrite: bool = False,
    feature_dim: str | None = None,
    features: list | None = None,
    storage_options: StorageOptions | None = None,
) -> str:
    """Write :func:`label_map` to a Zarr store at ``url`` (atomically on local disks).

    ``xr.open_zarr(url)`` gives it back with the input's coordinates (its metadata is
    consolidated). The chunks are the input's, so the write needs no rechunking and reads each
    input chunk once. Every chunk is written, and ``labels`` has the Zarr fill value -2
    (:data:`~.written.NOT_WRITTEN`): a chunk never written reads as -2, never as a component,
    and :func:`~.written.open_output` refuses the store.

    Parameters
    ----------
    model : DiagGMM
        A fitted model.
    data : xarray.DataArray, xarray.Dataset, str or Location
        The gridded data (see :func:`label_map`).
    url : str, os.PathLike, Location or zarr store
        Where to write: a local path, an fsspec URL, or a store object.
    probabilities : bool, default=False
        Add every component's responsibility.
    overwrite : bool, default=False
        Replace an existing store.
    feature_dim, features : optional
        How to read ``data`` (see :func:`label_map`).
    storage_options : dict, optional
        fsspec options for every URL of the call: ``data`` (when it is a path or URL) and
        ``url``. Store objects and Locations carry their own.

    Returns
    -------
    str
        The output's URL (its path, or the store's URL).

    Raises
    ------
    FileExistsError
        A store exists at ``url`` and ``overwrite`` is False.
    """
    where = location(url, storage_options)
    result = label_map(
        model,
        data,
        probabilities=probabilities,
        feature_dim=feature_dim,
        features=features,
        storage_options=storage_options,
    )
    # the Zarr fill value, not _FillValue: xarray would decode the labels to floats with NaN
    result["labels"].encoding["fill_value"] = NOT_WRITTEN

    def write_to(store):
        # every chunk stored, even one equal to a fill value: an absent chunk was lost
        result.to_zarr(store, mode="w", consolidated=False, write_empty_chunks=True)
        consolidate_metadata(store)  # last: after the arrays and attributes

    write_atomically(where, write_to, overwrite)
    return where.url
