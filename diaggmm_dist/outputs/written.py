"""Chunks of a scores or label-map store that were never written, found before anyone reads them.

Both stores give ``labels`` the Zarr fill value :data:`NOT_WRITTEN` (-2, outside the CF
``flag_values``) and write every chunk of every array, even one equal to the fill value
(``write_empty_chunks``). So a chunk file that is absent was lost (a killed writer on object
storage, a deleted object), and it reads back as -2, never as component 0 or "unlabelled".
:func:`unwritten_chunks` lists such chunks from one listing per array; :func:`open_output` opens
a store with xarray after checking that none is missing.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import zarr

from ..locations import Location, StorageOptions, location
from ..stores.zarr_groups import open_group_or_none

#: The Zarr fill value of stored ``labels``: what a chunk that was never written reads as.
NOT_WRITTEN = -2
#: The arrays both stores hold (a label map may add ``responsibility`` and coordinates).
RESULT_ARRAYS = ("labels", "max_resp", "log_likelihood")
#: The ``comment`` attribute of stored labels, saying what -2 means (it is no CF flag).
NOT_WRITTEN_COMMENT = (
    f"{NOT_WRITTEN}: this chunk of the store was never written (the Zarr fill value); not a label"
)

__all__ = [
    "NOT_WRITTEN",
    "UnwrittenChunksError",
    "check_written",
    "open_output",
    "unwritten_chunks",
]


class UnwrittenChunksError(ValueError):
    """A scores or label-map store lacks chunks: ``missing`` maps each array to its chunks."""

    def __init__(self, url: str, missing: dict[str, list[tuple[int, ...]]], regions: dict):
        self.url, self.missing = url, missing
        parts = []
        for name, chunks in missing.items():
            shown = ", ".join(regions[name][:4]) + (", ..." if len(chunks) > 4 else "")
            parts.append(f"{name}: {len(chunks)} chunk(s) ({shown})")
        super().__init__(
            f"{url!r} lacks chunks that were never written (or were deleted): "
            + "; ".join(parts)
            + ". Its writer did not finish: write the store again (overwrite=True)."
        )


def _region(array: zarr.Array, index: tuple[int, ...]) -> str:
    """The rows (and other indices) a chunk covers, as ``dim a:b``."""
    dims = array.metadata.dimension_names or tuple(f"axis {i}" for i in range(array.ndim))
    spans = []
    for dim, i, size, length in zip(dims, index, array.chunks, array.shape):
        spans.append(f"{dim} {i * size}:{min((i + 1) * size, length)}")
    return "[" + ", ".join(spans) + "]"


def _stored_keys(store, prefix: str) -> set[str]:
    """Every key under ``prefix`` of the Zarr store: one listing."""
    from zarr.core.sync import sync

    async def keys():
        return {key async for key in store.list_prefix(prefix)}

    return sync(keys())


def _group(where: Location) -> zarr.Group:
    """The store's group, once its labels are known to be written with :data:`NOT_WRITTEN`."""
    group = open_group_or_none(where)
    if group is None:
        raise FileNotFoundError(f"No scores or label-map store at {where.url!r}.")
    arrays = set(group.array_keys())
    if "labels" not in arrays:
        raise ValueError(f"{where.url!r} is not a scores or label-map store: it has no 'labels'.")
    lost = [name for name in RESULT_ARRAYS if name not in arrays]
    if lost:
        raise ValueError(
            f"{where.url!r} lacks the arrays {lost}: its writer did not finish. Write it again "
            "(overwrite=True)."
        )
    fill = group["labels"].metadata.fill_value
    if fill != NOT_WRITTEN:
        raise ValueError(
            f"{where.url!r} was written by an older diaggmm-dist (labels fill value {fill}, "
            f"not {NOT_WRITTEN}): chunks it skipped cannot be told from lost ones. Write it "
            "again to check it."
        )
    return group


def unwritten_chunks(
    url: str | os.PathLike | Location | Any, storage_options: StorageOptions | None = None
) -> dict[str, list[tuple[int, ...]]]:
    """The chunks of each array of a scores or label-map store that are not stored.

    Parameters
    ----------
    url : str, os.PathLike, Location or zarr store
        The store (:func:`~diaggmm_dist.outputs.scores.write_scores`,
        :func:`~diaggmm_dist.outputs.label_maps.write_label_map`).
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    dict
        Array name to the grid indices of its absent chunks; only arrays with absent chunks.

    Raises
    ------
    FileNotFoundError
        Nothing is at ``url``.
    ValueError
        Not such a store, or one written before every chunk was written (labels fill value
        other than :data:`NOT_WRITTEN`).
    """
    where = location(url, storage_options)
    group = _group(where)
    missing = {}
    for name, array in sorted(group.arrays()):
        stored = _stored_keys(where.zarr_store(read_only=True), f"{name}/")
        grid = (range(-(-n // c)) for n, c in zip(array.shape, array.chunks))
        absent = [
            index
            for index in itertools.product(*grid)
            if f"{name}/{array.metadata.encode_chunk_key(index)}" not in stored
        ]
        if absent:
            missing[name] = absent
    return missing


def check_written(
    url: str | os.PathLike | Location | Any, storage_options: StorageOptions | None = None
) -> None:
    """Refuse a scores or label-map store with a chunk that was never written.

    Parameters
    ----------
    url : str, os.PathLike, Location or zarr store
    storage_options : dict, optional

    Raises
    ------
    UnwrittenChunksError
        Chunks are absent; the message names each array and the rows they cover.
    ValueError
        Not such a store, or written by an older version (see :func:`unwritten_chunks`).
    """
    where = location(url, storage_options)
    missing = unwritten_chunks(where)
    if missing:
        group = _group(where)
        regions = {
            name: [_region(group[name], index) for index in chunks]
            for name, chunks in missing.items()
        }
        raise UnwrittenChunksError(where.url, missing, regions)


def open_output(
    url: str | os.PathLike | Location | Any,
    storage_options: StorageOptions | None = None,
    **kwargs,
):
    """A scores or label-map store as an ``xarray.Dataset``, after :func:`check_written`.

    Parameters
    ----------
    url : str, os.PathLike, Location or zarr store
    storage_options : dict, optional
        fsspec options for a URL.
    **kwargs
        Passed to ``xarray.open_zarr`` (e.g. ``decode_times``).

    Returns
    -------
    xarray.Dataset
        Lazy; ``labels`` are int16.

    Raises
    ------
    UnwrittenChunksError
        A chunk of the store was never written.
    """
    import xarray as xr

    where = location(url, storage_options)
    check_written(where)
    return xr.open_zarr(where.zarr_store(read_only=True), **kwargs)
