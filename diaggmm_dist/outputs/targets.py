"""Where a model's results are written: a local path, an fsspec URL with its storage options,
or a Zarr store object (:func:`~diaggmm_dist.locations.location`).

:func:`write_output` puts a new Zarr group there (atomically on local disks, in place on
object stores, whose writers mark the group complete last); :func:`group_exists` is the check
of an output before any work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..locations import Location, location
from ..stores.zarr_groups import (
    ZARR_METADATA,
    NotAGroupError,
    check_replaceable,
    open_group_or_none,
    write_atomically,
)


def _holds_only_zarr(fs, path) -> bool:
    """Whether the directory ``path`` is a Zarr node, or holds nothing but Zarr nodes."""
    if not fs.isdir(path):
        return False
    entries = fs.ls(path, detail=False)
    names = {entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries}
    if names & set(ZARR_METADATA):
        return True
    return bool(entries) and all(_holds_only_zarr(fs, entry) for entry in entries)


def group_exists(where: Location, overwrite: bool = False) -> bool:
    """Whether a Zarr group (or anything) is at ``where``; an array, or other files, refused.

    Parameters
    ----------
    where : Location
        An output's place.
    overwrite : bool, default=False
        The output is to replace what is there: files that are not a Zarr store are refused
        (only Zarr stores are ever replaced).

    Returns
    -------
    bool
        True when something is there.

    Raises
    ------
    NotAGroupError
        A Zarr array is at ``where``; or, with ``overwrite``, files that are not a Zarr store.
    """
    if where.is_local and where.store is None:
        try:
            exists = open_group_or_none(os.fspath(where.local_path)) is not None
        except NotAGroupError:
            if not overwrite:
                raise
            check_replaceable(os.fspath(where.local_path))
            exists = True
        return exists
    import zarr
    from zarr.errors import ContainsArrayError, GroupNotFoundError

    try:
        zarr.open_group(where.zarr_store(read_only=True), mode="r")
        exists = True
    except ContainsArrayError:
        raise NotAGroupError(where.url, "array") from None
    except (GroupNotFoundError, FileNotFoundError):
        exists = False
    try:
        fs, path = where.filesystem()
    except TypeError:  # a store object without a file system: zarr's own view is all there is
        return exists
    if overwrite and fs.exists(path) and not _holds_only_zarr(fs, path):
        raise NotAGroupError(
            where.url,
            "files",
            ": refusing to replace it, even with overwrite (only Zarr stores are replaced); "
            "move it away or choose another path.",
        )
    return exists or fs.exists(path)


def write_output(where: Location, write_to: Callable[[Any], None], overwrite: bool) -> None:
    """Create a Zarr group at ``where`` with ``write_to(store)``; atomically on local disks.

    Parameters
    ----------
    where : Location
        The output's place: a local path (written under a temporary sibling and renamed into
        place), an fsspec URL with its options, or a store object (both written in place,
        ``write_to`` writing what marks the group complete last).
    write_to : callable
        Called with the Zarr store to fill (created with ``mode="w"``).
    overwrite : bool
        Replace an existing group; without it an existing one is refused.

    Raises
    ------
    FileExistsError
        A group exists at ``where`` and ``overwrite`` is False.
    NotAGroupError
        A Zarr array, or files that are not a Zarr store, are at ``where``.
    """
    if where.is_local:
        # the writer gets the temporary sibling (as a path, or as stores hand it over)
        write_atomically(
            os.fspath(where.local_path),
            lambda target: write_to(location(target).zarr_store()),
            overwrite,
        )
        return
    if group_exists(where, overwrite) and not overwrite:
        raise FileExistsError(f"{where.url!r} already exists: pass overwrite=True to replace it.")
    write_to(where.zarr_store())
