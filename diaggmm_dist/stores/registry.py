"""A registry of model versions on a local path or fsspec URL, with a ``current`` pointer.

Layout::

    registry/
        current.json           the pointer: {"format", "format_version", "current": "v0002",
                               "updated", "replaced": [{"version": "v0001", "until"}, ...]}
        v0001/                 a model written with DiagGMM.save (a Zarr group) ...
            registry.json      ... and its registry metadata: version, created, data_url,
                               holdout_url, holdout_mean_log_likelihood, parent (+ extra keys)
        v0002/ ...
        work/                  scratch space for the flows that feed the registry (see scratch_url)

A promotion writes the model into a new ``vNNNN`` directory, then its ``registry.json``, and
last rewrites ``current.json``: the pointer is the commit point. Each of these small JSON
writes is atomic: on a local disk the file is written under a temporary name and moved into
place with ``os.replace``; on an object store it is a single PUT. A crash at any instant leaves
the previous ``current`` intact; a version directory without its ``registry.json`` is debris
of such a crash: it is not listed, and its number is never reused.

Retention (:meth:`ModelRegistry.prune`, :mod:`.retention`) deletes all but the newest versions,
the current one and those a reader may still be loading, each safely. The raw reads and
writes: :mod:`.registry_files`.

The registry assumes one writer at a time (the retrain deployment runs with a concurrency
limit of 1); readers can run at any time. Every read is validated: a pointer, a metadata file
or a model that is not what the registry writes is refused with a :class:`RegistryError` (or
:class:`~diaggmm_dist.stores.model_store.ModelStoreError` for the model) saying which file and
which field is at fault. Nothing here reads or writes a pickle.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, Callable

from ..locations import Location, StorageOptions, location
from .registry_files import (
    FORMAT,
    FORMAT_VERSION,
    METADATA,
    POINTER,
    RESERVED,
    SCRATCH,
    RegistryError,
    UnknownVersionError,
    version_name,
)
from .registry_files import VERSION as _VERSION
from .registry_files import now as _now
from .retention import Retention

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA",
    "POINTER",
    "ModelRegistry",
    "RegistryError",
    "UnknownVersionError",
    "version_name",
]


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ModelRegistry(Retention):
    """Versioned models under ``root`` (a local path or an fsspec URL such as ``s3://bucket/models``).

    Parameters
    ----------
    root : str, os.PathLike or Location
        A local path, an fsspec URL, or a Location (or a local or fsspec Zarr store object).
    storage_options : dict, optional
        fsspec options for ``root``; they reach every model the registry saves and loads.

    Examples
    --------
    >>> registry = ModelRegistry("models/registry")
    >>> version = registry.promote(
    ...     gmm, {"data_url": "features.zarr/X", "holdout_mean_log_likelihood": -4.2}
    ... )
    >>> version, model = registry.current(DiagGMM.load)
    >>> registry.metadata(version)["parent"]
    """

    def __init__(self, root, storage_options: StorageOptions | None = None):
        where = location(root, storage_options)
        if not where.url:
            raise ValueError("The registry root must be a non-empty path or URL.")
        self.root = where.url.rstrip("/") or "/"
        self.location = Location(self.root, where.storage_options) if where.store is None else where
        self._local = self.location.is_local
        self._fs, self._base = self.location.filesystem()
        self._base = str(self.location.local_path) if self._local else self._base.rstrip("/")
        self._fs = None if self._local else self._fs

    def __repr__(self):
        return f"ModelRegistry({self.root!r})"

    # ----------------------------------------------------------------- paths
    def url(self, version: str) -> str:
        """Where ``version``'s model lives (a path or URL that ``DiagGMM.load`` opens)."""
        self._check_name(version)
        return f"{self.root}/{version}"

    def model_location(self, version: str) -> Location:
        """Where ``version``'s model lives, with the registry's storage options."""
        self._check_name(version)
        return self.location.joined(f"/{version}")

    def _model_where(self, version):
        """``version``'s URL, or its Location when options (or a store) must travel with it."""
        if self.location.storage_options or self.location.store is not None:
            return self.model_location(version)
        return self.url(version)

    def scratch_location(self, name: str) -> Location:
        """:meth:`scratch_url` with the registry's storage options."""
        return self.location.joined(self.scratch_url(name)[len(self.root) :])

    def scratch_url(self, name: str) -> str:
        """A path or URL under ``root/work/`` for a flow's temporary stores (never a version)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"Scratch names are letters, digits, '.', '_' and '-', got {name!r}.")
        return f"{self.root}/{SCRATCH}/{name}"

    # ---------------------------------------------------------------- reading
    def versions(self) -> list[str]:
        """Committed versions, oldest first (folders of an interrupted promotion are skipped)."""
        names = [version_name(n) for n in self._numbers()]
        return [name for name in names if self._committed(name)]

    def metadata(self, version: str) -> dict:
        """The registry metadata of ``version`` (validated).

        Keys: ``version``, ``created`` (UTC, ISO 8601), ``data_url``, ``holdout_url``,
        ``holdout_mean_log_likelihood`` (float or None), ``parent`` (version or None), and any
        extra keys given at promotion.
        """
        self._check_name(version)
        document = self._read_json(version, METADATA)
        where = f"{self.root}/{version}/{METADATA}"
        if document is None:
            known = self.versions()
            raise UnknownVersionError(
                f"No version {version!r} in the registry at {self.root!r}"
                + (
                    f" (it holds {known[0]} to {known[-1]})."
                    if known
                    else " (it holds no versions yet)."
                )
            )
        if not isinstance(document, dict):
            raise RegistryError(
                f"{where} should hold a JSON object, found {type(document).__name__}."
            )
        if document.get("format") != FORMAT:
            raise RegistryError(
                f"{where} is not diaggmm-dist registry metadata (format is "
                f"{document.get('format')!r})."
            )
        if document.get("format_version") != FORMAT_VERSION:
            raise RegistryError(
                f"{where}: format_version {document.get('format_version')!r} is not supported "
                f"(this library reads {FORMAT_VERSION})."
            )
        if document.get("version") != version:
            raise RegistryError(
                f"{where}: field 'version' is {document.get('version')!r}, expected {version!r}."
            )
        created = document.get("created")
        try:
            datetime.fromisoformat(created)
        except (TypeError, ValueError):
            raise RegistryError(
                f"{where}: field 'created' should be an ISO 8601 time, found {created!r}."
            ) from None
        for key in ("data_url", "holdout_url"):
            if document.get(key) is not None and not isinstance(document[key], str):
                raise RegistryError(
                    f"{where}: field {key!r} should be a string or null, found {document[key]!r}."
                )
        score = document.get("holdout_mean_log_likelihood")
        if score is not None and not _is_finite_number(score):
            raise RegistryError(
                f"{where}: field 'holdout_mean_log_likelihood' should be a finite number or null, "
                f"found {score!r}."
            )
        parent = document.get("parent")
        if parent is not None and not (isinstance(parent, str) and _VERSION.match(parent)):
            raise RegistryError(
                f"{where}: field 'parent' should be a version name or null, found {parent!r}."
            )
        return {
            key: value for key, value in document.items() if key not in ("format", "format_version")
        }

    def current_version(self) -> str | None:
        """The version the ``current`` pointer names, or None for an empty registry (validated)."""
        document = self._read_json(POINTER)
        if document is None:
            return None
        where = f"{self.root}/{POINTER}"
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise RegistryError(f"{where} is not a diaggmm-dist registry pointer.")
        if document.get("format_version") != FORMAT_VERSION:
            raise RegistryError(
                f"{where}: format_version {document.get('format_version')!r} is not supported "
                f"(this library reads {FORMAT_VERSION})."
            )
        version = document.get("current")
        if not (isinstance(version, str) and _VERSION.match(version)):
            raise RegistryError(
                f"{where}: field 'current' should be a version name such as 'v0001', found "
                f"{version!r}."
            )
        if not self._committed(version):
            raise RegistryError(
                f"{where} points at {version!r}, which is not a committed version of this registry."
            )
        return version

    def current(self, loader: Callable[[str], Any]):
        """``(version, model)`` for the current version, or None when nothing was promoted yet.

        Parameters
        ----------
        loader : callable
            Reads a model from its URL (its Location when the registry has storage options),
            e.g. ``DiagGMM.load``, which validates every field: the registry stores models, it
            does not build them.

        Returns
        -------
        tuple of (str, object) or None
        """
        version = self.current_version()
        if version is None:
            return None
        return version, self.load(version, loader)

    def load(self, version: str, loader: Callable[[str], Any]):
        """The model of ``version``, read by ``loader`` (e.g. ``DiagGMM.load``) from its URL.

        Raises
        ------
        UnknownVersionError
            ``version`` is not a committed version.
        """
        self.metadata(version)  # refuses unknown or uncommitted versions with a clear error
        return loader(self._model_where(version))

    # ---------------------------------------------------------------- writing
    def promote(self, model, metadata=None) -> str:
        """Store ``model`` as a new version and make it the current one; return its name.

        Parameters
        ----------
        model : DiagGMM
            A fitted model.
        metadata : dict, optional
            JSON-able facts about the model. Known keys: ``data_url`` (the data it was fitted
            on), ``holdout_url``, ``holdout_mean_log_likelihood`` (its held-out score now) and
            ``parent`` (the version it was warm-started from; by default the current version).
            Other keys are stored as given. ``version`` and ``created`` are set here.
        """
        metadata = dict(metadata or {})
        clash = sorted(set(metadata) & set(RESERVED))
        if clash:
            raise ValueError(f"Metadata keys {clash} are set by the registry; leave them out.")
        score = metadata.get("holdout_mean_log_likelihood")
        if score is not None:
            if not _is_finite_number(score):
                raise ValueError(
                    f"holdout_mean_log_likelihood must be a finite number or None, got {score!r}."
                )
            metadata["holdout_mean_log_likelihood"] = float(score)
        if "parent" not in metadata:
            metadata["parent"] = self.current_version()
        elif metadata["parent"] is not None:
            self.metadata(metadata["parent"])  # must be a committed version
        for key in ("data_url", "holdout_url"):
            if metadata.get(key) is not None:
                metadata[key] = location(metadata[key]).url  # never its options
            metadata.setdefault(key, None)
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Registry metadata must be JSON data ({err}).") from err

        numbers = self._numbers()
        number = (numbers[-1] if numbers else 0) + 1
        for _ in range(5):  # another writer may take a number between the listing and the write
            version = version_name(number)
            try:
                model.save(self._model_where(version))
                break
            except FileExistsError:
                number += 1
        else:
            raise RegistryError(
                f"Could not find a free version number in {self.root!r}: is another process "
                "promoting?"
            )
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": version,
            "created": _now(),
            **metadata,
        }
        self._write_json(document, version, METADATA)
        self._point_at(version)  # the commit point
        return version

    def set_current(self, version: str) -> None:
        """Point ``current`` at an existing version (a rollback)."""
        self.metadata(version)
        self._point_at(version)
