"""The registry's retention policy: keep the newest versions and the current one, delete the rest.

:meth:`Retention.prune` keeps

* the ``keep`` newest committed versions;
* the current version, however old (after a rollback with ``set_current``);
* every version that stopped being current less than ``grace_seconds`` ago: a reader that read
  the pointer just before a promotion may still be loading it (the pointer records the versions
  it replaced and when, see :meth:`~.registry_files.RegistryFiles._point_at`);
* any version folder above the newest committed one (a promotion may be writing it).

It deletes every other version in two steps: first its ``registry.json``, which uncommits it at
once (it is no longer listed, and loading it by name is refused with
:class:`~.registry_files.UnknownVersionError` rather than a half-read model), then its model's
files. The pointer is never written. A prune killed at any instant therefore leaves every
version either committed and whole or uncommitted debris, and the pointer as it was: the
registry loads, and the next prune removes the debris (uncommitted folders below the newest
committed version: no promotion writes there, so none is in progress), along with local
temporary files older than the grace period that a killed writer left. Version numbers are
never reused: the newest committed version is always kept, and promotions number after it.

Like promotions, pruning assumes one writer at a time (the retrain deployment runs with a
concurrency limit of 1); readers can run at any time. The pointer is read again before each
deletion, so a rollback to a version about to be deleted saves it.

:meth:`Retention.remove_scratch` deletes a flow's scratch store under ``work/`` (a finished
run's checkpoint, a candidate model), never one whose checkpoint lease a live fit holds.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

from .lease import raise_if_in_use
from .registry_files import (
    METADATA,
    POINTER,
    SCRATCH,
    VERSION,
    RegistryError,
    RegistryFiles,
    version_name,
)
from .zarr_groups import remove_group

#: Seconds a replaced current version is kept: a reader that read the pointer before the
#: promotion has this long to load it (models are small: a load takes well under a second).
GRACE_SECONDS = 60.0
#: Local temporary files and folders of an interrupted write (``os.replace`` targets).
_TEMPORARY = re.compile(r"^\.(v\d{4,}|current\.json)\.[0-9a-f]{32}\.(partial|old)$")


@dataclass(frozen=True)
class Pruned:
    """What :meth:`Retention.prune` did.

    Attributes
    ----------
    removed : list of str
        Committed versions deleted, oldest first.
    debris : list of str
        Left-overs of interrupted promotions or prunes deleted (uncommitted version folders,
        local temporary files).
    kept : list of str
        Committed versions kept, oldest first.
    """

    removed: list = field(default_factory=list)
    debris: list = field(default_factory=list)
    kept: list = field(default_factory=list)


def check_keep(keep) -> int:
    """``keep`` checked: the number of newest versions to keep, an int >= 1.

    Raises
    ------
    ValueError
        ``keep`` is not an integer of at least 1 (deleting every version is never asked for).
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(
            f"keep must be an integer >= 1 (the newest versions kept besides the current one), "
            f"got {keep!r}."
        )
    return keep


def check_grace(grace_seconds) -> float:
    """``grace_seconds`` checked: a finite number >= 0."""
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, (int, float))
        or not math.isfinite(grace_seconds)
        or grace_seconds < 0
    ):
        raise ValueError(f"grace_seconds must be a finite number >= 0, got {grace_seconds!r}.")
    return float(grace_seconds)


class Retention(RegistryFiles):
    """The retention policy of :class:`~diaggmm_dist.stores.registry.ModelRegistry`."""

    def recently_replaced(self, grace_seconds: float = GRACE_SECONDS) -> list[str]:
        """Versions that stopped being current less than ``grace_seconds`` ago, newest first.

        Parameters
        ----------
        grace_seconds : float
            How far back to look.

        Returns
        -------
        list of str
        """
        grace_seconds = check_grace(grace_seconds)
        document = self._read_json(POINTER)
        if document is None:
            return []
        where = f"{self.root}/{POINTER}"
        history = document.get("replaced", []) if isinstance(document, dict) else None
        if not isinstance(history, list):
            raise RegistryError(f"{where}: field 'replaced' should be a list, found {history!r}.")
        recent = []
        for entry in history:
            try:
                version, until = entry["version"], datetime.fromisoformat(entry["until"])
                if not VERSION.match(version):
                    raise ValueError(version)
            except (TypeError, KeyError, ValueError):
                raise RegistryError(
                    f"{where}: an entry of 'replaced' should be {{'version': 'v0001', 'until': "
                    f"<ISO 8601 time>}}, found {entry!r}."
                ) from None
            if time.time() - until.timestamp() < grace_seconds and version not in recent:
                recent.append(version)
        return recent

    def prune(self, keep: int, grace_seconds: float = GRACE_SECONDS) -> Pruned:
        """Delete every version but the ``keep`` newest, the current one and the recently replaced.

        See the module's documentation for what is kept and why a prune killed at any instant
        leaves a loadable registry. Also removes the debris of interrupted promotions and prunes.

        Parameters
        ----------
        keep : int
            Newest committed versions to keep (>= 1), besides the current one.
        grace_seconds : float, default=GRACE_SECONDS
            Versions that stopped being current less than this long ago are kept too (readers
            may be loading them), and local temporary files younger than this are left alone.

        Returns
        -------
        Pruned
            The versions removed and kept, and the debris removed.

        Raises
        ------
        ValueError
            ``keep`` or ``grace_seconds`` is out of range (nothing is deleted).
        RegistryError
            The pointer cannot be read (nothing is deleted).

        Examples
        --------
        >>> registry.prune(keep=10).removed
        ['v0001', 'v0002']
        """
        keep, grace_seconds = check_keep(keep), check_grace(grace_seconds)
        current = self.current_version()  # validated first: a broken pointer stops everything
        protected = {current, *self.recently_replaced(grace_seconds)}
        committed = self.versions()
        if not committed:
            return Pruned()
        protected.update(committed[-keep:])
        removed = []
        for version in committed:
            # read again: a rollback to this version since the listing saves it
            if version in protected or self.current_version() == version:
                continue
            self._remove_file(version, METADATA)  # uncommitted from here on
            self._remove_tree(version)
            removed.append(version)
        newest = int(VERSION.match(committed[-1]).group(1))
        debris = [
            version_name(n)
            for n in self._numbers()
            if n < newest and version_name(n) not in committed
        ]
        for name in debris:
            self._remove_tree(name)
        debris += self._remove_temporary(grace_seconds)
        kept = [version for version in committed if version not in removed]
        return Pruned(removed=removed, debris=debris, kept=kept)

    def _remove_temporary(self, grace_seconds):
        """Local temporary files of interrupted writes older than ``grace_seconds``, removed."""
        if not self._local:
            return []  # object stores are written in place: nothing goes by a temporary name
        removed = []
        for name in self._entries():
            path = self._path(name)
            try:
                old = time.time() - os.lstat(path).st_mtime > grace_seconds
            except FileNotFoundError:
                continue
            if _TEMPORARY.match(name) and old:
                self._remove_tree(name) if os.path.isdir(path) else self._remove_file(name)
                removed.append(name)
        return removed

    # ---------------------------------------------------------------- scratch
    def scratch_names(self) -> list[str]:
        """Names of the entries under ``root/work/`` (stores and their lease files), sorted."""
        return sorted(self._entries(SCRATCH))

    def remove_scratch(self, name: str) -> bool:
        """Delete the scratch store ``root/work/<name>`` (a Zarr store) and its lease file.

        Parameters
        ----------
        name : str
            A scratch name (:meth:`~diaggmm_dist.stores.registry.ModelRegistry.scratch_url`).

        Returns
        -------
        bool
            Whether there was anything to delete.

        Raises
        ------
        CheckpointInUseError
            A live fit holds the store's checkpoint lease: nothing is deleted.
        NotAGroupError
            What is there is not a Zarr store: nothing is deleted.
        """
        where = self.scratch_location(name)
        raise_if_in_use(where)
        existed = any(entry in (name, f"{name}.lease") for entry in self.scratch_names())
        remove_group(where)
        self._remove_file(SCRATCH, f"{name}.lease")  # an abandoned lease: its holder died
        if not self._local:
            self._fs.invalidate_cache(self._path(SCRATCH))
        return existed
