"""Crash-safe training checkpoints in a Zarr group: the source of truth for where a run is.

Layout::

    checkpoint.zarr/
        zarr.json          attributes: format, format_version, identity (configuration and
                           data fingerprint), latest (the pointer)
        step-00000007/     one complete training state: arrays weights, means, covariances,
                           precisions, rng_keys (+ best_* of finished restarts); attributes
                           restart, iteration, lower_bounds, finished, converged, rng, best

A checkpoint is written as a new ``step-*`` group; only then is the root's ``latest``
pointer rewritten (one small write, atomic on local disks where Zarr writes files by
rename, and a single PUT on object stores). A crash at any instant therefore leaves the
previous pointer and its step intact. Steps newer than the pointer are debris of a crash and
are removed; the ``KEEP`` newest complete steps are kept. On resume a step that cannot be
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
FORMAT_VERSION = 1
#: Complete checkpoints kept (the newest ones).
KEEP = 3
_STEP = re.compile(r"^step-(\d{8})$")


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

    # ----------------------------------------------------------------- reading
    def _steps(self):
        return sorted((name for name in self.root.group_keys() if _STEP.match(name)), reverse=True)

    def _pointer(self):
        return zarr.open_group(self.url, mode="r").attrs.get("latest")

    def latest(self):
        """The newest usable :class:`TrainingState`, or None for a fresh run."""
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
        where = f"checkpoint {name}"
        try:
            group = self.root[name]
        except KeyError:
            raise ModelStoreError(f"{where} is missing") from None
        attrs = dict(group.attrs)
        if not attrs.get("complete"):
            raise ModelStoreError(f"{where} was never completed")
        k, d = attrs["shape"]
        weights = read_array(group, "weights", (k,), where)
        means = read_array(group, "means", (k, d), where)
        covariances = read_array(group, "covariances", (k, d), where)
        precisions = read_array(group, "precisions", (k, d), where)
        check_mixture(weights, means, covariances, where)
        try:
            keys = np.asarray(group["rng_keys"][...], dtype=np.uint32)
        except Exception as err:
            raise ModelStoreError(f"{where}: array 'rng_keys' could not be read ({err})") from err
        if keys.shape != (624,):
            raise ModelStoreError(f"{where}: array 'rng_keys' has shape {keys.shape}, expected (624,)")
        rng = attrs["rng"]
        best = attrs.get("best")
        if best is not None:
            best = dict(best)
            for array in ("weights", "means", "covariances"):
                shape = (k,) if array == "weights" else (k, d)
                best[array] = read_array(group, "best_" + array, shape, where)
        return TrainingState(
            restart=int(attrs["restart"]), iteration=int(attrs["iteration"]), weights=weights, means=means,
            covariances=covariances, precisions=precisions, lower_bounds=[float(v) for v in attrs["lower_bounds"]],
            finished=bool(attrs["finished"]), converged=bool(attrs["converged"]),
            random_state=("MT19937", keys, int(rng["pos"]), int(rng["has_gauss"]), float(rng["cached_gaussian"])),
            n_reseeded=int(attrs.get("n_reseeded", 0)), best=best,
        )

    # ----------------------------------------------------------------- writing
    def save(self, state):
        """Write ``state`` as a new checkpoint, then move the pointer to it, then prune."""
        pointer = self._pointer()
        steps = self._steps()
        for debris in (name for name in steps if pointer is None or name > pointer):
            del self.root[debris]
        kept = [name for name in steps if pointer is not None and name <= pointer]
        number = int(_STEP.match(kept[0]).group(1)) + 1 if kept else 0
        name = f"step-{number:08d}"
        group = self.root.create_group(name)
        arrays = {"weights": state.weights, "means": state.means, "covariances": state.covariances,
                  "precisions": state.precisions}
        best = None
        if state.best is not None:
            best = {key: value for key, value in state.best.items() if key not in ("weights", "means", "covariances")}
            arrays.update({"best_" + key: state.best[key] for key in ("weights", "means", "covariances")})
        for array_name, value in arrays.items():
            value = np.asarray(value, dtype=np.float64)
            group.create_array(array_name, shape=value.shape, dtype="float64", chunks=value.shape)[...] = value
        _, keys, pos, has_gauss, cached = state.random_state
        group.create_array("rng_keys", shape=(624,), dtype="uint32", chunks=(624,))[...] = np.asarray(keys, dtype=np.uint32)
        group.attrs.update(_normalised({
            "shape": list(np.shape(state.means)), "restart": state.restart, "iteration": state.iteration,
            "lower_bounds": [float(v) for v in state.lower_bounds], "finished": bool(state.finished),
            "converged": bool(state.converged), "n_reseeded": int(state.n_reseeded), "best": best,
            "rng": {"pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "complete": True,
        }))
        self.root.attrs["latest"] = name  # the commit point
        for old in kept[KEEP - 1:]:
            del self.root[old]
