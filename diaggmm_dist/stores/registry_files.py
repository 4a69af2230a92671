"""The registry's files: its layout's names, its errors, and its raw reads, writes and deletes.

:class:`RegistryFiles` is the base of :class:`~diaggmm_dist.stores.registry.ModelRegistry`: it
reads and writes the small JSON files (a temporary file moved into place with ``os.replace``
locally, one PUT on an object store), lists the root, and deletes files and folders. The
registry (:mod:`.registry`) and its retention policy (:mod:`.retention`) are built on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import datetime, timezone

from .zarr_groups import cat_whole

FORMAT = "diaggmm-dist-registry"
FORMAT_VERSION = 1
POINTER = "current.json"
METADATA = "registry.json"
SCRATCH = "work"
#: Metadata keys the registry sets itself (callers cannot override them).
RESERVED = ("format", "format_version", "version", "created")
VERSION = re.compile(r"^v(\d{4,})$")
#: Versions the pointer remembers as replaced (``replaced``: what a reader may still load).
HISTORY = 32


class RegistryError(ValueError):
    """The registry (pointer, metadata or layout) is not what this module writes."""


class UnknownVersionError(RegistryError, LookupError):
    """No committed version of that name in the registry."""


def version_name(number: int) -> str:
    """``1`` -> ``"v0001"`` (four digits at least; ``v10000`` follows ``v9999``)."""
    return f"v{int(number):04d}"


def now(timespec: str = "seconds") -> str:
    """The time now, UTC, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def _entry(entry) -> bool:
    """Whether ``entry`` is one of the pointer's ``replaced`` records (kept when it moves on)."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("version"), str)
        and bool(VERSION.match(entry["version"]))
        and isinstance(entry.get("until"), str)
    )


class RegistryFiles:
    """Raw file access under a registry's root (``_base``: a local path, or ``_fs``'s path)."""

    root: str
    _base: str
    _fs: object
    _local: bool

    def _path(self, *parts):
        return os.path.join(self._base, *parts) if self._local else "/".join((self._base, *parts))

    @staticmethod
    def _check_name(version):
        if not isinstance(version, str) or not VERSION.match(version):
            raise UnknownVersionError(
                f"{version!r} is not a version name (versions are named v0001, v0002, ...)."
            )

    def _read_json(self, *parts):
        """The JSON document at ``parts`` under the root, or None when the file does not exist."""
        path = self._path(*parts)
        try:
            if self._local:
                with open(path, "rb") as handle:
                    raw = handle.read()
            else:
                raw = cat_whole(self._fs, path)
        except FileNotFoundError:
            return None
        where = f"{self.root}/{'/'.join(parts)}"
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RegistryError(f"{where} is not valid JSON ({err}).") from err

    def _write_json(self, document, *parts):
        """Write ``document`` at ``parts``: os.replace of a temporary file locally, else one PUT."""
        data = (json.dumps(document, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()
        path = self._path(*parts)
        if not self._local:
            self._fs.pipe_file(path, data)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        partial = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    def _entries(self, *parts):
        """Names directly under the root (or ``parts`` under it); empty when it does not exist."""
        try:
            if self._local:
                return os.listdir(self._path(*parts))
            self._fs.invalidate_cache(self._path(*parts))  # another process may have written
            return [
                p.rstrip("/").rsplit("/", 1)[-1]
                for p in self._fs.ls(self._path(*parts), detail=False)
            ]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _numbers(self):
        """Numbers of every ``vNNNN`` entry, committed or not."""
        return sorted(int(m.group(1)) for m in map(VERSION.match, self._entries()) if m)

    def _committed(self, version):
        path = self._path(version, METADATA)
        return os.path.isfile(path) if self._local else self._fs.isfile(path)

    def _remove_file(self, *parts) -> None:
        """Delete one file (nothing when it is gone already)."""
        path = self._path(*parts)
        try:
            os.remove(path) if self._local else self._fs.rm_file(path)
        except FileNotFoundError:
            pass

    def _remove_tree(self, *parts) -> None:
        """Delete a folder and everything under it (nothing when it is gone already)."""
        path = self._path(*parts)
        if self._local:
            shutil.rmtree(path, ignore_errors=True)
            return
        try:
            self._fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        self._fs.invalidate_cache(path)

    def _point_at(self, version: str) -> None:
        """Write the pointer that makes ``version`` current (the commit point of a promotion).

        It also records, newest first, the versions it replaced and when (``replaced``, at most
        :data:`HISTORY`): a reader that read the pointer just before may still be loading them,
        and the retention policy keeps them for a grace period.
        """
        try:
            old = self._read_json(POINTER)
        except RegistryError:  # a broken pointer is being replaced (a repair): no history
            old = None
        replaced = []
        if isinstance(old, dict) and isinstance(old.get("current"), str):
            earlier = old.get("replaced")
            earlier = [e for e in earlier if _entry(e)] if isinstance(earlier, list) else []
            replaced = [{"version": old["current"], "until": now("milliseconds")}, *earlier]
        pointer = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "current": version,
            "updated": now(),
            "replaced": replaced[:HISTORY],
        }
        self._write_json(pointer, POINTER)
