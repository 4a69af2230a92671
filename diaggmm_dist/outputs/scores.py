"""Per-row scores of a model written to Zarr, lazily and chunk-aligned with the input."""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import numpy as np

from .. import engine, inputs
from ..inputs.samples import result_attributes
from ..locations import Location, StorageOptions, location
from ..stores.zarr_groups import DATA_COMPRESSORS, write_group_atomically
from .written import NOT_WRITTEN, NOT_WRITTEN_COMMENT

SCORE_ARRAYS = ("labels", "max_resp", "log_likelihood")
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


def write_scores(
    model: Any,
    data: Any,
    url: str | os.PathLike | Location | Any,
    *,
    overwrite: bool = False,
    chunk_size: int | None = None,
    storage_options: StorageOptions | None = None,
) -> str:
    """Write ``labels`` (int16, -1 where unscored), ``max_resp`` and ``log_likelihood`` to ``url``.

    Every chunk is written, and a chunk never written reads as labels -2
    (:data:`~.written.NOT_WRITTEN`): :func:`~.written.open_output` refuses such a store.

    One read of the data: the three arrays come from one per-chunk kernel and are stored in
    one ``dask.array.store``. Output chunks follow the input's row chunks, so no rechunking
    happens; for Zarr input they are whole multiples of its chunks.

    Parameters
    ----------
    model : DiagGMM
        A fitted model.
    data : array-like, dask array, zarr.Array, str or Location
        The rows to score (a string is a Zarr array path or URL).
    url : str, os.PathLike, Location or zarr store
        Zarr group to create: a local path, an fsspec URL, or a store object.
    overwrite : bool
        Replace an existing group.
    chunk_size : int, optional
        Rows per dask chunk of in-memory or Zarr input (default: the model's).
    storage_options : dict, optional
        fsspec options for every URL of the call: ``data`` (when it is a path or URL) and
        ``url``. Store objects and Locations carry their own.

    Returns
    -------
    str
        The output's URL (its path, or the store's URL).
    """
    where = location(url, storage_options)
    rows = inputs.as_row_chunked(data, chunk_size or model.chunk_size, storage_options)
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
