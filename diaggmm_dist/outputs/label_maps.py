"""Label maps: a model's per-pixel results written next to gridded input, with coordinates."""

from __future__ import annotations

import os

import numpy as np

from ..inputs import InputLayout
from ..stores.zarr_groups import write_atomically


def label_map(model, data, *, probabilities=False):
    """An ``xarray.Dataset`` of labels, maximum responsibility and log-likelihood (lazy).

    ``data`` is what the model was fitted on (a DataArray with the same feature dim, or a
    Dataset with the same variables), read once with the model's fitted input layout; the
    result has its sample dimensions, coordinates and chunks. ``labels`` is int16 with -1
    where no label could be given; CF attributes (``flag_values``, ``flag_meanings``,
    ``valid_min``/``valid_max``) describe it, and no ``_FillValue`` is set so that reading it
    back keeps the integers.
    """
    import xarray as xr

    samples = InputLayout.of(model).samples(data, model.chunk_size)  # read once for both
    labels, max_resp, log_likelihood = model.score_rows(samples)
    if not isinstance(labels, xr.DataArray):
        raise TypeError(
            "label_map needs xarray input (a DataArray or Dataset) to give the map its coordinates."
        )
    k = model.n_components
    labels.attrs = {
        "long_name": "mixture component",
        "valid_min": 0,
        "valid_max": k - 1,
        "flag_values": list(range(-1, k)),
        "flag_meanings": " ".join(["unlabelled"] + [f"component_{i}" for i in range(k)]),
    }
    max_resp.attrs = {"long_name": "responsibility of the chosen component", "units": "1"}
    log_likelihood.attrs = {"long_name": "log-likelihood of the pixel under the mixture"}
    variables = {"labels": labels, "max_resp": max_resp, "log_likelihood": log_likelihood}
    if probabilities:
        variables["responsibility"] = model.predict_proba(samples).astype(np.float32)
    result = xr.Dataset(variables)
    result.attrs = {
        "title": "diaggmm-dist label map",
        "n_components": k,
        "model_lower_bound": float(model.lower_bound_),
        "Conventions": "CF-1.8",
    }
    return result


def write_label_map(model, data, url, *, probabilities=False, overwrite=False):
    """Write :func:`label_map` to a Zarr store at ``url`` (atomically on local disks).

    ``xr.open_zarr(url)`` gives it back with the input's coordinates. The chunks are the
    input's, so the write needs no rechunking and reads each input chunk once.
    """
    result = label_map(model, data, probabilities=probabilities)
    write_atomically(
        url, lambda target: result.to_zarr(target, mode="w", consolidated=False), overwrite
    )
    return os.fspath(url)
