"""Where data, models and outputs live: a local path, an fsspec URL with storage options, or a
Zarr store object.

Every URL the library takes goes through :func:`location`, which checks the storage options
once and gives the one :class:`Location` the readers and stores use: its fsspec file system
(:meth:`Location.filesystem`) and its Zarr store (:meth:`Location.zarr_store`). The options
are plain data (JSON-like), so they travel in task graphs to workers that have no
credentials or endpoint of their own; :func:`redacted` is how messages and reprs show them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: fsspec storage options: keyword arguments of the URL's file system (s3fs, gcsfs, adlfs).
StorageOptions = Mapping[str, Any]

#: Option names whose values are secrets: shown as ``***`` in messages and reprs.
SECRET_WORDS = ("key", "secret", "token", "password", "credential", "session", "sas")

#: Errors (by class name, the clients being optional) that mean "no credentials, or no way to
#: the endpoint": botocore's, aiohttp's, google-auth's and azure-core's.
ACCESS_ERRORS = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ClientConnectorError",
        "DefaultCredentialsError",
        "ClientAuthenticationError",
    }
)


class StorageAccessError(PermissionError):
    """Object storage refused or could not be reached: the message says how options travel."""


def _process_text() -> str:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return "This process"
    return f"Dask worker {worker.address}"


def storage_access_error(err: BaseException, doing: str) -> StorageAccessError | None:
    """A :class:`StorageAccessError` explaining ``err`` if it is a credentials or endpoint error.

    Parameters
    ----------
    err : BaseException
        What the storage client raised.
    doing : str
        What failed, e.g. ``"read chunk c/0/0 of s3://bucket/X"``.

    Returns
    -------
    StorageAccessError or None
        None for any other error (it is raised as it came).
    """
    names = {cls.__name__ for cls in type(err).__mro__}
    if not (names & ACCESS_ERRORS or isinstance(err, PermissionError)):
        return None
    if isinstance(err, StorageAccessError):
        return err
    return StorageAccessError(
        f"Could not {doing}: {type(err).__name__}: {err}. {_process_text()} opens object storage "
        "with the storage options given to the library, which travel with the tasks, and with "
        "its own environment (credentials, endpoint variables, instance role). Pass the "
        "endpoint and credentials as storage_options (--storage-option on the command line), "
        "or give every worker credentials of its own (docs/object-storage.md)."
    )


def is_local_url(url: str | os.PathLike) -> bool:
    """True for a local path (plain or ``file://``), False for other fsspec URLs."""
    text = os.fspath(url)
    return "://" not in text or text.startswith("file://")


def checked_storage_options(storage_options: StorageOptions | None, where: str) -> dict:
    """A copy of ``storage_options`` as a plain dict, refused if it is not one with str keys.

    Parameters
    ----------
    storage_options : mapping or None
        fsspec options for the URL's file system.
    where : str
        What the options are for, as messages name it.

    Returns
    -------
    dict
        Empty for None.

    Raises
    ------
    TypeError
        Not a mapping, or a key that is not a string.
    ValueError
        A value that is not JSON-like data (options travel to workers as data).
    """
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping):
        raise TypeError(
            f"storage_options for {where} must be a dict of fsspec options (e.g. "
            "{'client_kwargs': {'endpoint_url': ...}}), got "
            f"{type(storage_options).__name__}."
        )
    bad = [key for key in storage_options if not isinstance(key, str)]
    if bad:
        raise TypeError(f"storage_options for {where} has keys that are not strings: {bad!r}.")
    try:
        json.dumps(dict(storage_options))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"storage_options for {where} must be plain data (str, numbers, bools, lists, "
            f"dicts), as they travel to the workers with the tasks: {err}."
        ) from None
    return json.loads(json.dumps(dict(storage_options)))


def redacted(storage_options: StorageOptions) -> dict:
    """``storage_options`` with the values of secret-looking keys replaced by ``"***"``.

    Parameters
    ----------
    storage_options : mapping

    Returns
    -------
    dict
        Nested mappings are redacted too.

    Examples
    --------
    >>> redacted({"key": "AKIA...", "client_kwargs": {"endpoint_url": "http://s3:9000"}})
    {'key': '***', 'client_kwargs': {'endpoint_url': 'http://s3:9000'}}
    """
    shown = {}
    for name, value in storage_options.items():
        if any(word in name.lower() for word in SECRET_WORDS):
            shown[name] = "***"
        elif isinstance(value, Mapping):
            shown[name] = redacted(value)
        else:
            shown[name] = value
    return shown


@dataclass(frozen=True)
class Location:
    """A URL and the storage options that open it, or a Zarr store object given in code.

    Build one with :func:`location`. Its repr hides secret option values.

    Attributes
    ----------
    url : str
        The path or URL as messages name it (for a store object, the store's own URL).
    storage_options : dict
        fsspec options (empty for local paths without options and for store objects).
    store : zarr.abc.store.Store or None
        The Zarr store given in code, if any.
    """

    url: str
    storage_options: dict = field(default_factory=dict)
    store: Any = None

    def __repr__(self) -> str:
        options = f", storage_options={redacted(self.storage_options)!r}" * bool(
            self.storage_options
        )
        return f"Location({self.url!r}{options})"

    def __str__(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        """True for a local directory (a path, a ``file://`` URL or a local store object)."""
        from zarr.storage import LocalStore

        if self.store is not None:
            return isinstance(self.store, LocalStore)
        return is_local_url(self.url)

    @property
    def local_path(self) -> Path:
        """The local directory (for :attr:`is_local` locations)."""
        if self.store is not None:
            return Path(self.store.root)
        text = self.url
        return Path(text[len("file://") :] if text.startswith("file://") else text)

    def joined(self, suffix: str) -> Location:
        """The location of ``url + suffix`` with the same options (e.g. ``"/X"``, ``".lease"``).

        Parameters
        ----------
        suffix : str

        Returns
        -------
        Location

        Raises
        ------
        TypeError
            A store object that is neither local nor fsspec (it has no file system to join on).
        """
        if self.store is None:
            return Location(self.url.rstrip("/") + suffix, self.storage_options)
        return location(self.url.rstrip("/") + suffix, self._store_options())

    def filesystem(self):
        """The fsspec file system (synchronous) and the path on it.

        Returns
        -------
        tuple of (fsspec.AbstractFileSystem, str)

        Raises
        ------
        TypeError
            A store object that is neither local nor fsspec (e.g. an obstore ``ObjectStore``).
        """
        import fsspec

        if self.store is not None:
            if self.is_local:
                return fsspec.filesystem("file"), str(self.local_path)
            return fsspec.core.url_to_fs(self.url, **self._store_options())
        if self.is_local:
            return fsspec.filesystem("file"), str(self.local_path)
        return fsspec.core.url_to_fs(self.url, **self.storage_options)

    def zarr_store(self, read_only: bool = False):
        """The Zarr store at this location (the store object itself, if one was given).

        Parameters
        ----------
        read_only : bool

        Returns
        -------
        zarr.abc.store.Store
        """
        if self.store is not None:
            if read_only and not self.store.read_only:
                return self.store.with_read_only(True)
            return self.store
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            return LocalStore(self.local_path, read_only=read_only)
        return FsspecStore.from_url(
            self.url, storage_options=dict(self.storage_options), read_only=read_only
        )

    def _store_options(self) -> dict:
        from zarr.storage import FsspecStore

        if isinstance(self.store, FsspecStore):
            options = dict(self.store.fs.storage_options)
            options.pop("asynchronous", None)
            return options
        if self.is_local:
            return {}
        raise TypeError(
            f"{type(self.store).__name__} at {self.url!r} has no fsspec file system: pass its "
            "URL and storage_options instead."
        )


def location(
    where: str | os.PathLike | Location | Any, storage_options: StorageOptions | None = None
) -> Location:
    """The :class:`Location` of a path, URL or Zarr store object, with its options checked.

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
        A local path, an fsspec URL (``s3://bucket/data.zarr``), a Location, or a Zarr store
        configured in code (its own options are used; pass no ``storage_options`` with it).
    storage_options : dict, optional
        fsspec options for the URL's file system (endpoint, credentials, ...).

    Returns
    -------
    Location

    Raises
    ------
    TypeError
        ``where`` is none of those; options with a store object or a Location that has its own.
    ValueError
        Options that are not plain data.

    Examples
    --------
    >>> location("s3://bucket/features.zarr", {"anon": True})
    Location('s3://bucket/features.zarr', storage_options={'anon': True})
    """
    if isinstance(where, Location):
        if storage_options:
            raise TypeError(f"{where!r} already has its storage options: pass no others.")
        return where
    if isinstance(where, (str, os.PathLike)):
        url = os.fspath(where)
        return Location(url, checked_storage_options(storage_options, repr(url)))
    from zarr.abc.store import Store

    if isinstance(where, Store):
        if storage_options:
            raise TypeError(
                f"Got a {type(where).__name__} and storage_options: a store object carries its "
                "own options; pass either the store, or its URL with storage_options."
            )
        return Location(_store_url(where), {}, where)
    raise TypeError(f"Expected a path, an fsspec URL or a Zarr store, got {type(where).__name__}.")


def _store_url(store) -> str:
    from zarr.storage import FsspecStore, LocalStore

    if isinstance(store, LocalStore):
        return str(store.root)
    if isinstance(store, FsspecStore):
        return store.fs.unstrip_protocol(store.path)
    return str(store)
