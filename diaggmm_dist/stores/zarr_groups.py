"""Small helpers shared by the Zarr-backed stores (model files, checkpoints, registry), and the
codec and chunk size of the large arrays the project writes (feature data, per-row scores)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping

import zarr
from zarr.codecs import BloscCodec
from zarr.errors import ContainsArrayError, GroupNotFoundError

from ..locations import Location, location, storage_access_error

#: Codec of the large arrays the project writes (synthetic feature data, per-row scores):
#: Blosc LZ4, clevel 5, byte shuffle (zarr v2's old default). An out-of-core EM iteration
#: decodes every chunk once, on the cores that also run the E-step, so decode speed is what
#: counts: LZ4 decodes several times faster than zarr 3's default zstd for about the same
#: ratio (see bench/FINDINGS.md, "zarr_groups.DATA_COMPRESSORS").
DATA_COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)

#: Target bytes of one chunk of those arrays: 8 MiB chunks read fastest; much larger ones
#: allocate beyond glibc's mmap threshold at every decode (see bench/FINDINGS.md,
#: "zarr_groups.DATA_CHUNK_BYTES").
DATA_CHUNK_BYTES = 8 * 2**20


def data_chunk_rows(n_features, itemsize):
    """Rows per chunk of a written (n, n_features) array: ~``DATA_CHUNK_BYTES``, a multiple of 4096.

    (For 32 float32 features: 65,536 rows; the engine reads two of them per dask chunk.)
    """
    rows = DATA_CHUNK_BYTES // max(1, int(n_features) * int(itemsize))
    return max(4096, rows // 4096 * 4096)


class NotAGroupError(ValueError):
    """Something other than a Zarr group is at the URL: ``kind`` is "array" or "files"."""

    def __init__(self, url, kind, advice=""):
        self.url, self.kind = os.fspath(url), kind
        what = "is a Zarr array" if kind == "array" else "exists and is not a Zarr store"
        super().__init__(f"{self.url!r} {what}{advice}")

    def describe(self, expected):
        """'<url> is a Zarr array, not a <expected>' (or '... exists and is not a <expected>')."""
        if self.kind == "array":
            return f"{self.url!r} is a Zarr array, not a {expected}"
        return f"{self.url!r} exists and is not a {expected}"


def _get(store, key: str) -> bytes | None:
    """The bytes of ``key`` in the Zarr ``store`` (None when absent): one GET on object stores."""
    from zarr.abc.store import OffsetByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    prototype = default_buffer_prototype()
    try:  # a range from 0: s3fs sends no HEAD first, as it does for a whole-file read
        found = sync(store.get(key, prototype, OffsetByteRequest(0)))
    except OSError:  # an empty object has no byte 0 (HTTP 416)
        found = sync(store.get(key, prototype))
    return None if found is None else found.to_bytes()


def cat_whole(fs, path: str) -> bytes:
    """The bytes of the file ``path`` on ``fs``: one GET on object stores.

    Read as a range from byte 0: for a whole-file read s3fs sends a HEAD first (for its size).

    Raises
    ------
    FileNotFoundError
        No such file.
    """
    try:
        try:
            return fs.cat_file(path, start=0)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            raise
        except OSError:  # an empty object has no byte 0 (HTTP 416)
            return fs.cat_file(path)
    except Exception as err:
        hint = storage_access_error(err, f"read {fs.unstrip_protocol(path)}")
        if hint is not None:
            raise hint from err
        raise


def put_keys(store, blobs: Mapping[str, bytes]) -> None:
    """Write ``blobs`` (key -> bytes) to the Zarr ``store`` concurrently: one PUT each.

    Locally each file is written aside and moved into place (zarr's ``LocalStore``), so a
    reader never sees half of one.
    """
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buffer = default_buffer_prototype().buffer

    async def put_all():
        await asyncio.gather(*(store.set(k, buffer.from_bytes(v)) for k, v in blobs.items()))

    if blobs:
        sync(put_all())


def consolidate_metadata(store) -> None:
    """Write the consolidated metadata of the Zarr v3 group in ``store`` into its root zarr.json.

    ``xr.open_zarr`` then reads one file for the whole group, and does not warn about
    unconsolidated metadata. Call it when the group is complete: it rewrites the root zarr.json.
    """
    import warnings

    with warnings.catch_warnings():
        # zarr warns that v3 consolidated metadata is not in the spec yet; xarray reads it
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part")
        zarr.consolidate_metadata(store, zarr_format=3)


def rendered(
    write: Callable[[zarr.Group], None],
    attributes: Mapping | None = None,
    consolidated: bool = False,
) -> dict:
    """The keys and bytes of the Zarr v3 group ``write(group)`` fills, rendered in memory.

    ``attributes`` are set when the group is created (its zarr.json is then written once);
    with ``consolidated`` the root zarr.json also holds every array's metadata
    (:func:`consolidate_metadata`).
    """
    from zarr.storage import MemoryStore

    blobs = {}
    memory = MemoryStore(blobs)
    write(zarr.open_group(memory, mode="w", zarr_format=3, attributes=dict(attributes or {})))
    if consolidated:
        consolidate_metadata(memory)
    return {key: value.to_bytes() for key, value in blobs.items()}


def node_kind(where: str | os.PathLike | Location) -> str | None:
    """What the Zarr store at ``where`` holds at its root: "group", "array" or None (nothing).

    On object stores this costs one GET (the root's zarr.json), and one listing when it is
    absent (a Zarr v2 node, or other files, may be there).

    Raises
    ------
    NotAGroupError
        Files that are not a Zarr store are at ``where`` (kind "files").
    ValueError, TypeError
        The root's zarr.json is not a JSON object.
    """
    return root_node(where)[0]


def root_node(where: str | os.PathLike | Location) -> tuple[str | None, dict | None]:
    """``(kind, metadata)``: :func:`node_kind`, and the root's zarr.json (None for Zarr v2).

    Raises
    ------
    NotAGroupError, ValueError, TypeError
        As :func:`node_kind`.
    """
    where = location(where)
    if where.is_local and not where.local_path.is_dir():
        if where.local_path.exists():
            raise NotAGroupError(where.url, "files")
        return None, None
    store = where.zarr_store(read_only=True)
    raw = _get(store, "zarr.json")
    if raw is not None:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise TypeError(f"zarr.json holds a {type(meta).__name__}, not a JSON object")
        return ("array" if meta.get("node_type") == "array" else "group"), meta
    entries = _top_names(where, store)
    if not entries:
        return None, None
    if ".zarray" in entries:
        return "array", None
    if ".zgroup" in entries:
        return "group", None
    raise NotAGroupError(where.url, "files")


def _top_names(where: Location, store) -> set:
    """Names at the top of the store: one directory listing (s3fs adds one when it is empty)."""
    try:
        fs, path = where.filesystem()
    except TypeError:  # a store object without a file system: zarr's listing
        from zarr.core.sync import sync

        async def names():
            return {name async for name in store.list_dir("")}

        return sync(names())
    try:
        found = fs.ls(path, detail=False, refresh=True)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {entry.rstrip("/").rsplit("/", 1)[-1] for entry in found}


def open_group_or_none(where: str | os.PathLike | Location, mode: str = "r") -> zarr.Group | None:
    """The Zarr group at ``where`` (path, URL, Location or store), or None when nothing is there.

    Raises
    ------
    NotAGroupError
        A Zarr array, or files that are not a Zarr store, are at ``where``.
    """
    where = location(where)
    try:
        kind, meta = root_node(where)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if kind is None:
        return None
    if kind == "array":
        raise NotAGroupError(where.url, "array")
    store = where.zarr_store(read_only=mode == "r")
    try:  # the format known: no probes for the other one's files
        return zarr.open_group(store, mode=mode, zarr_format=2 if meta is None else 3)
    except ContainsArrayError:
        raise NotAGroupError(where.url, "array") from None
    except GroupNotFoundError:
        return None


#: Files that make a directory a Zarr node (v3, then v2).
ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray")


def _is_zarr_tree(fs, path):
    """True when the directory ``path`` is a Zarr node, or holds nothing but Zarr nodes (a store
    whose root metadata is lost); a file or a directory of other files is not."""
    if not fs.isdir(path):
        return False
    entries = fs.ls(path, detail=False)
    names = {entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries}
    if names & set(ZARR_METADATA):
        return True
    return bool(entries) and all(_is_zarr_tree(fs, entry) for entry in entries)


def check_replaceable(where: str | os.PathLike | Location) -> None:
    """Refuse to replace what is at ``where`` unless it is a Zarr store (or nothing).

    ``overwrite`` replaces models, checkpoints and scores, never a user's other files: a
    directory that is not a Zarr store (or a file) at the location is refused even then.

    Parameters
    ----------
    where : str, os.PathLike or Location
        A location with a file system (a path, an fsspec URL, a local or fsspec store).

    Raises
    ------
    NotAGroupError
        Something other than a Zarr store is at ``where``.
    """
    where = location(where)
    fs, path = where.filesystem()
    if fs.exists(path) and not _is_zarr_tree(fs, path):
        raise NotAGroupError(
            where.url,
            "files",
            ": refusing to replace it, even with overwrite (only Zarr stores are "
            "replaced); move it away or choose another path.",
        )


def remove_group(where: str | os.PathLike | Location) -> None:
    """Delete the Zarr store at ``where`` (local directory or fsspec prefix) if it exists.

    Raises
    ------
    NotAGroupError
        What is there is not a Zarr store (:func:`check_replaceable`): nothing is deleted.
    """
    where = location(where)
    if where.store is not None and not where.is_local and not hasattr(where.store, "fs"):
        from zarr.core.sync import sync

        sync(where.store.delete_dir(""))  # a store object without a file system (in memory)
        return
    check_replaceable(where)
    if where.is_local:
        shutil.rmtree(where.local_path, ignore_errors=True)
        return
    fs, path = where.filesystem()
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _exists_for_writing(where: Location, overwrite: bool) -> bool:
    """Whether a store is at ``where`` (refused without ``overwrite``; never other files)."""
    try:
        exists = node_kind(where) is not None
    except NotAGroupError:
        if not overwrite:
            raise
        check_replaceable(where)
        exists = True
    if exists and not overwrite:
        raise FileExistsError(f"{where.url!r} already exists: pass overwrite=True to replace it.")
    return exists


def write_atomically(
    where: str | os.PathLike | Location, write_to: Callable, overwrite: bool
) -> None:
    """Call ``write_to(store)`` to create a Zarr store, and put it at ``where`` in one step.

    On a local file system the store is written under a temporary sibling name and renamed
    into place, so a crash leaves either the old store or the new one, never half of one.
    Elsewhere there is no rename: the store is written in place, and ``write_to`` is
    expected to write what marks it complete (its attributes) last.

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
        Where the store goes.
    write_to : callable
        Called with the Zarr store (``zarr.abc.store.Store``) to write.
    overwrite : bool
        Replace a Zarr store that is there (never other files).

    Raises
    ------
    FileExistsError
        A store is there and ``overwrite`` is False.
    NotAGroupError
        Something other than a Zarr store is there.
    """
    where = location(where)
    exists = _exists_for_writing(where, overwrite)
    if not where.is_local:
        if exists:
            remove_group(where)
        write_to(where.zarr_store())
        return
    target = where.local_path
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        write_to(location(partial).zarr_store())
        if exists:
            retired = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
            os.replace(target, retired)
            os.replace(partial, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def write_group_atomically(
    where: str | os.PathLike | Location, write: Callable, overwrite: bool
) -> None:
    """:func:`write_atomically` for a writer that fills a new Zarr v3 group: ``write(group)``.

    Its metadata is then consolidated (:func:`consolidate_metadata`): after the attributes
    that mark the group complete, so a consolidated group is a complete one.
    """

    def write_to(store):
        write(zarr.open_group(store, mode="w", zarr_format=3))
        consolidate_metadata(store)

    write_atomically(where, write_to, overwrite)


def write_keys_atomically(
    where: str | os.PathLike | Location, blobs: Mapping[str, bytes], overwrite: bool
) -> None:
    """Write a small store given as its keys and bytes (:func:`rendered`), atomically.

    On object stores: one PUT per key, the root's ``zarr.json`` last (it marks the store
    complete), after one existence check (:func:`node_kind`).
    """
    blobs = dict(blobs)
    root = blobs.pop("zarr.json")

    def write_to(store):
        put_keys(store, blobs)
        put_keys(store, {"zarr.json": root})

    write_atomically(where, write_to, overwrite)
