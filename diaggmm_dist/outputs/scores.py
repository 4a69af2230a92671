"""Per-row scores of a model written to Zarr, lazily and chunk-aligned with the input."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import dask.array as da
import numpy as np

from .. import engine
from ..inputs import InputLayout, Samples
from ..inputs.samples import result_attributes
from ..locations import Location, StorageOptions, location
from ..stores.zarr_groups import DATA_COMPRESSORS, write_group_atomically
from .written import NOT_WRITTEN, NOT_WRITTEN_COMMENT, RESULT_ARRAYS

SCORE_ARRAYS = RESULT_ARRAYS
#: The one dimension of every score array, named for ``xr.open_zarr`` (Zarr v3 dimension_names).
ROW_DIM = "row"


def score_attributes(n_components: int) -> dict[str, dict]:
    """Each score array's own attributes (CF), never the input's.

    ``labels`` carries CF flag attributes, -1 meaning unlabelled, and a ``comment`` on
    :data:`~.written.NOT_WRITTEN`: it is written with that Zarr fill value (-2, no flag) but no
    ``_FillValue`` attribute, so xarray reads it back as integers.
    """
    attributes = {name: result_attributes(name, n_components) for name in SCORE_ARRAYS}
    attributes["labels"]["comment"] = NOT_WRITTEN_COMMENT
    return attributes


def model_samples(
    model: Any,
    data: Any,
    chunk_size: int | None = None,
    storage_options: StorageOptions | None = None,
    **layout,
) -> Samples:
    """``data`` read with the model's fitted input layout, checked against its features.

    Parameters
    ----------
    model : DiagGMM
        A fitted model (its ``input_layout_``, ``n_features_in_``, ``feature_names_in_``).
    data : any input :func:`~diaggmm_dist.inputs.as_samples` takes
    chunk_size : int, optional
        Rows per chunk of in-memory or Zarr input (default: the model's).
    storage_options : dict, optional
        fsspec options for a URL ``data``.
    **layout
        ``feature_dim``, ``features``, ``columns``: those given (not None) replace the
        fitted ones, as the model's ``predict`` takes them.

    Returns
    -------
    Samples

    Raises
    ------
    ValueError
        Another number of features than the model's, or other feature names.
    """
    fitted = InputLayout.of(model)
    given = {key: value for key, value in layout.items() if value is not None}
    chosen = dataclasses.replace(fitted, **given) if given else fitted
    samples = chosen.samples(data, chunk_size or model.chunk_size, storage_options)
    chosen.check(samples, type(model).__name__)
    return samples


def write_scores(
    model: Any,
    data: Any,
    url: str | os.PathLike | Location | Any,
    *,
    overwrite: bool = False,
    chunk_size: int | None = None,
    feature_dim: str | None = None,
    features: list | None = None,
    columns: list | None = None,
    storage_options: StorageOptions | None = None,
) -> str:
    """Write ``labels`` (int16, -1 where unscored), ``max_resp`` and ``log_likelihood`` to ``url``.

    Every chunk is written, and a chunk never written reads as labels -2
    (:data:`~.written.NOT_WRITTEN`): :func:`~.written.open_output` refuses such a store.

    One read of the data: the three arrays come from one per-chunk kernel and are stored in
    one ``dask.array.store``. Output chunks follow the input's row chunks, so no rechunking
    happens; for Zarr input they are whole multiples of its chunks.

    ``data`` is read as the model's ``predict`` reads it: with the layout it was fitted with
    (``feature_dim``, ``features``, ``columns``), or the one given. Scores are per row: data
    with several sample dimensions (an xarray cube) gives a label map instead
    (:func:`~.label_maps.write_label_map`), which keeps its dimensions and coordinates.

    Parameters
    ----------
    model : DiagGMM
        A fitted model.
    data : array-like, dask array, zarr.Array, DataFrame, xarray object, str or Location
        The rows to score (a string is a Zarr array path or URL, a Parquet table, or with
        ``feature_dim``/``features`` a gridded store).
    url : str, os.PathLike, Location or zarr store
        Zarr group to create: a local path, an fsspec URL, or a store object.
    overwrite : bool
        Replace an existing group.
    chunk_size : int, optional
        Rows per dask chunk of in-memory or Zarr input (default: the model's).
    feature_dim, features, columns : optional
        How to read ``data``, as ``fit`` takes them; by default the fitted layout's.
    storage_options : dict, optional
        fsspec options for every URL of the call: ``data`` (when it is a path or URL) and
        ``url``. Store objects and Locations carry their own.

    Returns
    -------
    str
        The output's URL (its path, or the store's URL).

    Raises
    ------
    ValueError
        Data with other features than the model's, or with several sample dimensions.
    """
    where = location(url, storage_options)
    layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
    samples = model_samples(model, data, chunk_size, storage_options, **layout)
    if samples.array.ndim != 2:
        raise ValueError(
            f"The data has the sample dimensions {tuple(samples.sample_dims)}: scores are per "
            "row. Write a label map (write_label_map), which keeps them and their coordinates."
        )
    rows = samples.array
    if len(set(rows.chunks[0][:-1])) > 1:  # Zarr chunks must be regular
        rows = rows.rechunk({0: max(rows.chunks[0])})
    arrays = [da.asarray(a) for a in model.score_rows(rows)]
    chunk_rows = rows.chunks[0][0]
    attributes = score_attributes(model.n_components)

    def write(group):
        targets = []
        for name, array in zip(SCORE_ARRAYS, arrays):
            # -2, no label: a lost chunk is never read as a component or as "unscored"
            fill = NOT_WRITTEN if name == "labels" else np.nan
            # Blosc LZ4 (DATA_COMPRESSORS): encodes scores much faster than zarr's default zstd,
            # for a few more bytes (see bench/FINDINGS.md, "zarr_groups.DATA_COMPRESSORS")
            targets.append(
                group.create_array(
                    name,
                    shape=array.shape,
                    dtype=array.dtype,
                    chunks=(chunk_rows,),
                    fill_value=fill,
                    compressors=DATA_COMPRESSORS,
                    # every chunk stored, even all-NaN ones: an absent chunk was lost
                    config={"write_empty_chunks": True},
                    dimension_names=(ROW_DIM,),  # what xr.open_zarr needs
                    attributes=attributes[name],
                )
            )
        engine.compute(da.store(arrays, targets, lock=False, compute=False))
        group.attrs.update(  # last: marks the group complete
            {
                "model_fingerprint": getattr(model, "data_fingerprint_", None),
                "n_rows": int(rows.shape[0]),
                "arrays": list(SCORE_ARRAYS),
            }
        )

    write_group_atomically(where, write, overwrite)
    return where.url
