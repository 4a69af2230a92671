"""Crash-safe training checkpoints in a Zarr group: the source of truth for where a run is.

Layout::

    checkpoint.zarr/
        zarr.json          attributes: format, format_version, identity (configuration and
                           data fingerprint), latest (the pointer)
        step-00000007/     one complete training state: a group with one array per restart
            restart-0      (restarts run side by side), float64 of shape (3, K, D): means,
            restart-1      covariances and precisions; its attributes hold the rest: weights,
            ...            restart, iteration, lower_bounds, finished, converged, n_reseeded,
                           rng (the random generator's state after the initialisation)

One array per restart, its attributes written with its metadata, is a few small writes: the
checkpoint of every iteration costs milliseconds, not tens of them. A checkpoint is written
as a new ``step-*`` group; only then is the root's ``latest`` pointer rewritten (one small write, atomic on local disks where Zarr writes files by
rename, and a single PUT on object stores). A crash at any instant therefore leaves the
previous pointer and its step intact. Steps newer than the pointer are debris of a crash and
are removed (as is a step whose data chunk never arrived: it reads as NaN and fails
validation); the ``KEEP`` newest complete steps are kept. On resume a step that cannot be
read or fails validation is skipped with a warning, falling back to the one before it.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import numpy as np
import zarr

from ..state import TrainingState
from .model_store import ModelStoreError, check_mixture, read_array
from .zarr_groups import NotAGroupError, open_group_or_none, remove_group

FORMAT = "diaggmm-dist-checkpoint"
FORMAT_VERSION = 3
#: Complete checkpoints kept (the newest ones).
KEEP = 3
_STEP = re.compile(r"^step-(\d{8})$")
_RESTART = re.compile(r"^restart-(\d+)$")


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to a run with other settings or other data."""


class CorruptCheckpointWarning(UserWarning):
    """The newest checkpoint could not be used; an older one was."""


def _normalised(value):
    return json.loads(json.dumps(value))


def _differences(stored, wanted, prefix=""):
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint has {a!r}, this run has {b!r}")
    return out


class Checkpoints:
    """The checkpoints of one training run at ``url``.

    Parameters
    ----------
    url : str or os.PathLike
        Local path or fsspec URL of the checkpoint group.
    identity : dict
        JSON-able configuration and data fingerprint of the run; a store holding another
        identity is refused unless ``overwrite``.
    overwrite : bool
        Discard a store that belongs to another run instead of refusing it.
    """

    def __init__(self, url, identity, overwrite=False):
        self.url = os.fspath(url)
        self.identity = _normalised(identity)
        try:
            root = open_group_or_none(self.url, mode="r+")
        except NotAGroupError as err:
            if not overwrite:
                raise CheckpointMismatchError(
                    err.describe("checkpoint") + ": refusing to replace it; choose another checkpoint "
                    "URL, or pass overwrite_checkpoint=True to replace it."
                ) from None
            root = None
        if root is not None:
            attrs = dict(root.attrs)
            if attrs.get("format") != FORMAT:
                if not overwrite:
                    raise CheckpointMismatchError(
                        f"{self.url!r} exists and is not a diaggmm-dist checkpoint: choose another "
                        "checkpoint URL, or pass overwrite_checkpoint=True to replace it."
                    )
                root = None
            elif attrs.get("format_version") != FORMAT_VERSION:
                if not overwrite:
                    raise CheckpointMismatchError(
                        f"The checkpoint at {self.url!r} has format version {attrs.get('format_version')!r}; "
                        f"this version of diaggmm-dist reads version {FORMAT_VERSION} only. Pass "
                        "overwrite_checkpoint=True (CLI: --overwrite) to start afresh, or use another URL."
                    )
                root = None
            elif attrs.get("identity") != self.identity:
                if not overwrite:
                    diff = "; ".join(_differences(attrs.get("identity") or {}, self.identity))
                    raise CheckpointMismatchError(
                        f"The checkpoint at {self.url!r} belongs to a different run ({diff}). Pass "
                        "overwrite_checkpoint=True (CLI: --overwrite) to start afresh, or use another URL."
                    )
                root = None
        if root is None:
            remove_group(self.url)
            root = zarr.open_group(self.url, mode="w")
            root.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "identity": self.identity, "latest": None})
        self.root = root
        self._known_steps = None

    # ----------------------------------------------------------------- reading
    def _steps(self):
        """Names of the steps in the store, newest first (read once, then kept up to date)."""
        if self._known_steps is None:
            self._known_steps = sorted((name for name in self.root.group_keys() if _STEP.match(name)), reverse=True)
        return list(self._known_steps)

    def _pointer(self):
        return zarr.open_group(self.url, mode="r").attrs.get("latest")

    def latest(self):
        """The newest usable list of :class:`TrainingState` (one per restart), or None for a fresh run."""
        pointer = self._pointer()
        if pointer is None:
            return None
        candidates = [name for name in self._steps() if name <= pointer]
        for position, name in enumerate(candidates):
            try:
                state = self._read(name)
            except (ModelStoreError, KeyError, ValueError, TypeError) as err:
                following = candidates[position + 1] if position + 1 < len(candidates) else None
                warnings.warn(
                    f"Checkpoint {name} in {self.url!r} is unusable ({err}); "
                    + (f"falling back to {following}." if following else "no older checkpoint: starting afresh."),
                    CorruptCheckpointWarning,
                    stacklevel=2,
                )
                continue
            return state
        return None

    def _read(self, name):
        try:
            group = self.root[name]
        except KeyError:
            raise ModelStoreError(f"checkpoint {name} is missing") from None
        restarts = sorted((key for key in group.array_keys() if _RESTART.match(key)), key=lambda key: int(key[8:]))
        if [int(key[8:]) for key in restarts] != list(range(len(restarts))) or not restarts:
            raise ModelStoreError(f"checkpoint {name} holds the restarts {restarts}, not 0, 1, ...")
        return [self._read_restart(group, f"{name}/{key}", key) for key in restarts]

    @staticmethod
    def _read_restart(group, where, key):
        where = f"checkpoint {where}"
        attrs = dict(group[key].attrs)
        weights = np.asarray(attrs["weights"], dtype=np.float64)
        k, d = attrs["shape"]
        planes = read_array(group, key, (3, k, d), where)
        if weights.shape != (k,) or not np.all(np.isfinite(weights)):
            raise ModelStoreError(f"{where}: attribute 'weights' is not {k} finite numbers")
        means, covariances, precisions = planes[0], planes[1], planes[2]
        check_mixture(weights, means, covariances, where)
        rng = attrs["rng"]
        keys = np.asarray(rng["keys"], dtype=np.uint32)
        if keys.shape != (624,):
            raise ModelStoreError(f"{where}: the random generator state has {keys.size} keys, expected 624")
        return TrainingState(
            restart=int(attrs["restart"]), iteration=int(attrs["iteration"]), weights=weights, means=means,
            covariances=covariances, precisions=precisions, lower_bounds=[float(v) for v in attrs["lower_bounds"]],
            finished=bool(attrs["finished"]), converged=bool(attrs["converged"]),
            random_state=("MT19937", keys, int(rng["pos"]), int(rng["has_gauss"]), float(rng["cached_gaussian"])),
            n_reseeded=int(attrs.get("n_reseeded", 0)),
        )

    # ----------------------------------------------------------------- writing
    def save(self, states):
        """Write ``states`` (one :class:`TrainingState` per restart) as a new checkpoint, then
        move the pointer to it, then prune."""
        pointer = self._pointer()
        steps = self._steps()
        for debris in (name for name in steps if pointer is None or name > pointer):
            del self.root[debris]
        kept = [name for name in steps if pointer is not None and name <= pointer]
        number = int(_STEP.match(kept[0]).group(1)) + 1 if kept else 0
        name = f"step-{number:08d}"
        group = self.root.create_group(name)
        for state in states:
            planes = np.asarray([state.means, state.covariances, state.precisions], dtype=np.float64)
            _, keys, pos, has_gauss, cached = state.random_state
            attributes = _normalised({
                "shape": list(np.shape(state.means)), "weights": [float(v) for v in state.weights],
                "restart": state.restart, "iteration": state.iteration,
                "lower_bounds": [float(v) for v in state.lower_bounds], "finished": bool(state.finished),
                "converged": bool(state.converged), "n_reseeded": int(state.n_reseeded),
                "rng": {"keys": np.asarray(keys, dtype=np.uint32).tolist(), "pos": int(pos),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            })
            # NaN fill: an array whose chunk never got written fails validation instead of reading zeros
            group.create_array(f"restart-{state.restart}", data=planes, chunks=planes.shape, fill_value=np.nan,
                               attributes=attributes)
        self.root.attrs["latest"] = name  # the commit point
        for old in kept[KEEP - 1:]:
            del self.root[old]
        self._known_steps = [name] + kept[: KEEP - 1]
