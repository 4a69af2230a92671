"""Small helpers shared by the Zarr-backed stores (model files, checkpoints, registry), and the
codec and chunk size of the large arrays the project writes (feature data, per-row scores)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import zarr
from zarr.codecs import BloscCodec
from zarr.errors import ContainsArrayError, GroupNotFoundError

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


def is_local(url) -> bool:
    """True for a local path (plain or ``file://``), False for other fsspec URLs."""
    text = os.fspath(url)
    return "://" not in text or text.startswith("file://")


def local_path(url) -> Path:
    text = os.fspath(url)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


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


def open_group_or_none(url, mode="r"):
    """The Zarr group at ``url``, or None when nothing is there.

    Raises
    ------
    NotAGroupError
        A Zarr array, or a directory that is not a Zarr store, is at ``url``.
    """
    try:
        return zarr.open_group(os.fspath(url), mode=mode)
    except ContainsArrayError:
        raise NotAGroupError(url, "array") from None
    except (GroupNotFoundError, FileNotFoundError):
        if is_local(url) and local_path(url).exists() and any(local_path(url).iterdir()):
            raise NotAGroupError(url, "files") from None
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


def check_replaceable(url):
    """Refuse to replace what is at ``url`` unless it is a Zarr store (or nothing).

    ``overwrite`` replaces models, checkpoints and scores, never a user's other files: a
    directory that is not a Zarr store (or a file) at the URL is refused even then.

    Raises
    ------
    NotAGroupError
        Something other than a Zarr store is at ``url``.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(local_path(url)) if is_local(url) else os.fspath(url))
    if fs.exists(path) and not _is_zarr_tree(fs, path):
        raise NotAGroupError(
            url,
            "files",
            ": refusing to replace it, even with overwrite (only Zarr stores are "
            "replaced); move it away or choose another path.",
        )


def remove_group(url):
    """Delete the Zarr store at ``url`` (local directory or fsspec prefix) if it exists.

    Raises
    ------
    NotAGroupError
        What is there is not a Zarr store (:func:`check_replaceable`): nothing is deleted.
    """
    check_replaceable(url)
    if is_local(url):
        shutil.rmtree(local_path(url), ignore_errors=True)
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(os.fspath(url))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_atomically(url, write_to, overwrite):
    """Call ``write_to(target_url)`` to create a store, and put it at ``url`` in one step.

    On a local file system the store is written under a temporary sibling name and renamed
    into place, so a crash leaves either the old store or the new one, never half of one.
    Other fsspec stores have no rename: the store is written in place, and ``write_to`` is
    expected to write what marks it complete (its attributes) last.
    """
    try:
        exists = open_group_or_none(url) is not None
    except NotAGroupError:
        if not overwrite:
            raise
        check_replaceable(url)
        exists = True
    if exists and not overwrite:
        raise FileExistsError(
            f"{os.fspath(url)!r} already exists: pass overwrite=True to replace it."
        )
    if not is_local(url):
        if exists:
            remove_group(url)
        write_to(os.fspath(url))
        return
    target = local_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        write_to(str(partial))
        if exists:
            retired = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
            os.replace(target, retired)
            os.replace(partial, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def write_group_atomically(url, write, overwrite):
    """:func:`write_atomically` for a writer that fills a new Zarr group: ``write(group)``."""
    write_atomically(url, lambda target: write(zarr.open_group(target, mode="w")), overwrite)
