"""Synthetic data with a known answer: rows of a diagonal Gaussian mixture written to Zarr.

Generation is chunk by chunk (each chunk from its own seed), so data sets far larger than
memory are written without ever being held whole, and the same seed gives the same bytes
whatever the machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from ..stores.zarr_groups import DATA_COMPRESSORS, data_chunk_rows

#: Codec of the written data: the project's codec for large arrays (why: see
#: :data:`~diaggmm_dist.stores.zarr_groups.DATA_COMPRESSORS`).
DEFAULT_COMPRESSORS = DATA_COMPRESSORS


def mixture_parameters(n_components, n_features, seed=0, spread=8.0):
    """Random, well-separated mixture parameters ``(weights, means, covariances)``."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.5, 1.5, size=n_components)
    means = rng.uniform(-spread, spread, size=(n_components, n_features))
    covariances = rng.uniform(0.25, 2.0, size=(n_components, n_features))
    return weights / weights.sum(), means, covariances


def _chunk(block_id, rows, weights, means, covariances, seed, dtype):
    rng = np.random.default_rng([seed, block_id])
    labels = rng.choice(weights.size, size=rows, p=weights)
    values = means[labels] + rng.standard_normal((rows, means.shape[1])) * np.sqrt(
        covariances[labels]
    )
    return np.column_stack([values, labels]).astype(dtype)


def write_mixture_zarr(
    path,
    n_samples,
    weights,
    means,
    covariances,
    chunk_rows=None,
    seed=0,
    dtype="float32",
    compressors="default",
):
    """Write ``n_samples`` rows of the mixture to a Zarr group at ``path``.

    ``chunk_rows`` (default: about 8 MiB of ``X`` per chunk, 65,536 rows for 32 float32
    features, see :func:`~diaggmm_dist.stores.zarr_groups.data_chunk_rows`) and ``compressors``
    (default :data:`DEFAULT_COMPRESSORS`, Blosc LZ4 with byte shuffle; ``None`` for no
    compression, or a list of zarr v3 codecs) set how ``X`` and ``labels`` are stored.

    The group holds ``X`` (n_samples, n_features) in ``dtype``, ``labels`` (n_samples,) int16
    (the true component of each row) and the true parameters as attributes. The group is
    written under a temporary name and renamed into place, so a killed run never leaves a
    half-written store at ``path``.

    Returns
    -------
    str
        The path of the group.
    """
    path = Path(path)
    weights, means, covariances = (
        np.asarray(v, dtype=np.float64) for v in (weights, means, covariances)
    )
    n_features = means.shape[1]
    if chunk_rows is None:
        chunk_rows = data_chunk_rows(n_features, np.dtype(dtype).itemsize)
    if isinstance(compressors, str) and compressors == "default":
        compressors = DEFAULT_COMPRESSORS
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    group = zarr.open_group(str(partial), mode="w")
    group.attrs.update(
        {
            "weights": weights.tolist(),
            "means": means.tolist(),
            "covariances": covariances.tolist(),
            "seed": int(seed),
        }
    )
    x_store = group.create_array(
        "X",
        shape=(n_samples, n_features),
        chunks=(chunk_rows, n_features),
        dtype=dtype,
        compressors=compressors,
    )
    label_store = group.create_array(
        "labels", shape=(n_samples,), chunks=(chunk_rows,), dtype="int16", compressors=compressors
    )
    sizes = [min(chunk_rows, n_samples - start) for start in range(0, n_samples, chunk_rows)]
    blocks = [
        da.from_delayed(
            _delayed_chunk(i, rows, weights, means, covariances, seed, np.dtype(dtype)),
            shape=(rows, n_features + 1),
            dtype=dtype,
        )
        for i, rows in enumerate(sizes)
    ]
    table = da.concatenate(blocks)
    da.store(
        [table[:, :n_features], table[:, n_features].astype("int16")],
        [x_store, label_store],
        lock=False,
    )
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)
    return str(path)


def _delayed_chunk(*args):
    import dask

    return dask.delayed(_chunk, pure=True)(*args)
