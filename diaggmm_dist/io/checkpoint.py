"""Crash-safe training checkpoints in a Zarr group: the source of truth for where a run is.

Layout::

    checkpoint.zarr/
        zarr.json          attributes: format, format_version, identity (configuration and
                           data fingerprint), latest (the pointer: the newest committed step)
        step-00000007/     one complete training state: a group with one array per restart
            zarr.json      (restarts run side by side); its attribute ``restarts``, written
            restart-0      last, says the step is complete. Each array is float64 of shape
            restart-1      (3, K, D): means, covariances and precisions; its attributes hold
            ...            the rest: weights, restart, iteration, lower_bounds, finished,
                           converged, n_reseeded, rng (the random generator's state after the
                           initialisation)
    checkpoint.zarr.lease  while a fit runs: who holds the checkpoint (:mod:`.lease`)

One array per restart, its attributes written with its metadata, is a few small writes: the
checkpoint of every iteration costs milliseconds, not tens of them. A checkpoint is written
as a new ``step-*`` group; only then is the root's ``latest`` pointer rewritten (one small
write, atomic on local disks where Zarr writes files by rename, and a single PUT on object
stores). A crash at any instant therefore leaves the previous pointer and its step intact. A
step newer than the pointer is debris of such a crash: it is removed (with a logged warning)
before the next step is written. The ``KEEP`` newest usable steps are kept; no other step is
ever deleted except by ``overwrite``.

On resume every step is validated (readable metadata, the completion mark, finite arrays of
the right shapes, attributes of the right types, an iteration and a ``converged`` flag that
match its lower-bound history); one that fails is skipped with a
:class:`CorruptCheckpointWarning`, falling back to the one before it. A pointer that is missing
or not a step name is warned about the same way, and the newest usable step is taken. A null
pointer (a crash during the first write) takes the newest complete step, if any, quietly. When
steps were committed but none is usable, or the root's metadata cannot be read,
:class:`CheckpointError` names the checkpoint and how to start afresh
(``overwrite_checkpoint=True``, which always does).

One fit at a time writes a checkpoint: the constructor takes its lease
(:class:`~.lease.Lease`), which :meth:`Checkpoints.close` releases; a second fit gets
:class:`CheckpointInUseError` at once.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import re
import warnings
import weakref

import fsspec
import numpy as np
import zarr
from zarr.errors import BaseZarrError

from ..state import TrainingState
from .lease import CheckpointInUseError, Lease, raise_if_in_use
from .model_store import ModelStoreError, check_mixture, read_array
from .zarr_groups import (
    NotAGroupError,
    check_replaceable,
    is_local,
    local_path,
    open_group_or_none,
    remove_group,
)

__all__ = [
    "Checkpoints",
    "check_checkpoint",
    "CheckpointError",
    "CheckpointInUseError",
    "CheckpointMismatchError",
    "CorruptCheckpointWarning",
    "FORMAT",
    "FORMAT_VERSION",
    "KEEP",
]

logger = logging.getLogger(__name__)

FORMAT = "diaggmm-dist-checkpoint"
#: 4: steps carry the completion mark ``restarts``.
FORMAT_VERSION = 4
#: Complete checkpoints kept (the newest ones).
KEEP = 3
_STEP = re.compile(r"^step-(\d{8})$")
_RESTART = re.compile(r"^restart-(\d+)$")
#: What to do about a checkpoint that cannot be used.
_REPLACE = (
    "pass overwrite_checkpoint=True (CLI: --overwrite) to start afresh, replacing it, or use another "
    "checkpoint URL"
)
#: Errors that make one step unusable (not OSError: an I/O failure is not a corrupt step, and
#: propagates so that the fit can be retried).
_UNUSABLE = (ModelStoreError, BaseZarrError, KeyError, ValueError, TypeError)


class CheckpointError(ValueError):
    """The checkpoint cannot be used as it stands; the message names it and what to do."""


class CheckpointMismatchError(CheckpointError):
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


def _is_int(value, low=0, high=None):
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _step_number(name):
    return int(_STEP.match(name).group(1))


def _check_history(attrs, restart, offset, tol, where):
    """Raise ModelStoreError unless the counters of a restart's attributes are of the right types,
    and its iteration and convergence match its lower-bound history (``offset`` bounds before the
    first iteration; converged when the last change is below ``tol``)."""
    for name, valid in (
        ("restart", lambda v: v == restart and _is_int(v)),
        ("iteration", _is_int),
        ("n_reseeded", _is_int),
        ("finished", lambda v: isinstance(v, bool)),
        ("converged", lambda v: isinstance(v, bool)),
    ):
        if not valid(attrs.get(name)):
            raise ModelStoreError(f"{where}: attribute {name!r} is {attrs.get(name)!r}")
    bounds = attrs.get("lower_bounds")
    if not (isinstance(bounds, list) and all(_is_number(v) for v in bounds)):
        raise ModelStoreError(f"{where}: attribute 'lower_bounds' is not a list of finite numbers")
    if len(bounds) != attrs["iteration"] + offset:
        raise ModelStoreError(
            f"{where}: iteration {attrs['iteration']} disagrees with its {len(bounds)} lower "
            f"bound(s) (expected {attrs['iteration'] + offset})"
        )
    if attrs["converged"] and not attrs["finished"]:
        raise ModelStoreError(f"{where}: converged but not finished")
    if _is_number(
        tol
    ):  # converged exactly when the fit's own test says so (a flipped flag ends or extends the fit)
        change = abs(bounds[-1] - bounds[-2]) if len(bounds) >= 2 else np.inf
        if attrs["converged"] != bool(change < tol):
            raise ModelStoreError(
                f"{where}: attribute 'converged' is {attrs['converged']}, but its last lower-bound "
                f"change is {change:.3e} (tol {tol})"
            )


def _store_of(url):
    """What Zarr opens for ``url``: a path for local URLs (zarr writes a file:// URL through
    fsspec without creating its folders), the URL itself otherwise."""
    return os.fspath(local_path(url)) if is_local(url) else os.fspath(url)


def _list_steps(store):
    """Names of the steps in ``store``, newest first, from a listing (not Zarr's: one step with
    unreadable metadata must not hide the others)."""
    fs, path = fsspec.core.url_to_fs(store)
    try:
        names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    return sorted((name for name in names if _STEP.match(name)), reverse=True)


def _identity_problem(url, attrs, identity):
    """Why the root attributes ``attrs`` are not the checkpoint of the run ``identity`` (None:
    of any run of this format), or None."""
    if attrs.get("format") != FORMAT:
        return f"{url!r} exists and is not a diaggmm-dist checkpoint"
    if attrs.get("format_version") != FORMAT_VERSION:
        return (
            f"The checkpoint at {url!r} has format version {attrs.get('format_version')!r}; this "
            f"version of diaggmm-dist reads version {FORMAT_VERSION} only"
        )
    if identity is not None and attrs.get("identity") != identity:
        stored = attrs.get("identity") if isinstance(attrs.get("identity"), dict) else {}
        return f"The checkpoint at {url!r} belongs to a different run ({'; '.join(_differences(stored, identity))})"
    return None


def _root_problem(url, identity=None, mode="r"):
    """``(root, problem, error)``: the root group at ``url`` (None when nothing is there), why it
    cannot be the checkpoint of the run ``identity`` (None when it can), and the error class to
    raise for that problem."""
    try:
        root = open_group_or_none(_store_of(url), mode=mode)
    except NotAGroupError as err:
        if err.kind == "files" and _list_steps(_store_of(url)):
            return (
                None,
                (
                    f"The checkpoint at {url!r} has lost its root metadata (zarr.json), which says whose "
                    "run its steps are"
                ),
                CheckpointError,
            )
        return (
            None,
            err.describe("checkpoint") + ": refusing to replace it",
            CheckpointMismatchError,
        )
    except (
        ValueError,
        TypeError,
    ) as err:  # JSONDecodeError is a ValueError; a non-object is a TypeError
        return (
            None,
            (
                f"The checkpoint at {url!r} has unreadable root metadata (zarr.json: {type(err).__name__}: "
                f"{err})"
            ),
            CheckpointError,
        )
    problem = None if root is None else _identity_problem(url, dict(root.attrs), identity)
    return root, problem, CheckpointMismatchError


def check_checkpoint(url, overwrite=False):
    """Refuse now what a fit on the checkpoint at ``url`` would refuse before its first pass (reads only).

    For a command line to call before it starts a cluster: a live fit holding the checkpoint,
    and, without ``overwrite``, something at ``url`` that is not a readable checkpoint of this
    format (with it, something that is not a Zarr store, which is never replaced). (Whether it holds this run is checked by the fit: that needs the data's fingerprint.)

    Raises
    ------
    CheckpointInUseError, CheckpointMismatchError, CheckpointError
        As :class:`Checkpoints` would.
    """
    raise_if_in_use(url)
    if overwrite:
        check_replaceable(url)
        return
    _, problem, error = _root_problem(os.fspath(url))
    if problem is not None:
        raise error(f"{problem}: {_REPLACE}.")


class Checkpoints:
    """The checkpoints of one training run at ``url``.

    Taking the checkpoint's lease first (unless ``lease=False``): call :meth:`close` when the
    fit ends, or use the object as a context manager. (An object dropped without either
    releases the lease when it is garbage-collected.)

    Parameters
    ----------
    url : str or os.PathLike
        Local path or fsspec URL of the checkpoint group.
    identity : dict
        JSON-able configuration and data fingerprint of the run; a store holding another
        identity is refused unless ``overwrite``.
    overwrite : bool
        Start afresh instead of refusing a store that belongs to another run, cannot be
        read, or has no usable step (everything at ``url`` is deleted then).
    lease : bool, default=True
        Take the lease (a writer). ``False`` reads without it, for inspecting a checkpoint
        another fit may be writing; :meth:`save` is then refused.

    Raises
    ------
    CheckpointInUseError
        Another live fit holds the lease.
    CheckpointMismatchError
        ``url`` holds another run, another format, or something that is not a checkpoint.
    CheckpointError
        The root's metadata cannot be read.
    """

    def __init__(self, url, identity, overwrite=False, lease=True):
        self.url = os.fspath(url)
        self._store = _store_of(self.url)
        self.identity = _normalised(identity)
        self._overwrite = overwrite
        self._names = None  # the step names, newest first, once listed
        self._unusable = set()  # steps found unusable by latest(): not counted as kept
        self._lease = Lease.acquire(self.url) if lease else None
        self._release = weakref.finalize(self, self._lease.release) if lease else None
        try:
            self.root = self._open_root(overwrite)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Release the lease (idempotent)."""
        if self._release is not None:
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open_root(self, overwrite):
        """The checkpoint's root group, created (or replaced, with ``overwrite``) when it is not this run's."""
        root, problem, error = _root_problem(self.url, self.identity, mode="r+")
        if problem is None:
            return root if root is not None else self._fresh_root()
        if not overwrite:
            raise error(f"{problem}: {_REPLACE}.")
        check_replaceable(self.url)
        logger.warning(
            "Replacing the checkpoint at %s (overwrite_checkpoint=True): %s.", self.url, problem
        )
        return self._fresh_root()

    def _fresh_root(self):
        """Remove whatever is at the URL and create an empty checkpoint of this run."""
        remove_group(self._store)
        root = zarr.open_group(self._store, mode="w")
        root.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "identity": self.identity,
                "latest": None,
            }
        )
        self._names, self._unusable = [], set()
        return root

    # ----------------------------------------------------------------- reading
    def _steps(self):
        """Names of the steps in the store, newest first (listed once, then kept up to date)."""
        if self._names is None:
            self._names = _list_steps(self._store)
        return list(self._names)

    def _pointer(self):
        """``(name, problem)``: the step the root's pointer names (None before the first commit),
        and why the pointer is unusable (None when it is fine)."""
        attrs = zarr.open_group(self._store, mode="r").attrs
        if "latest" not in attrs:
            return None, "the root has no 'latest' pointer"
        pointer = attrs["latest"]
        if pointer is None or (isinstance(pointer, str) and _STEP.match(pointer)):
            return pointer, None
        return None, f"the root's 'latest' pointer is {pointer!r}, not a step name"

    def _candidates(self):
        """The steps to try, newest first, and whether one of them was committed (pointed at)."""
        pointer, problem = self._pointer()
        steps = self._steps()
        if problem is not None:
            if steps:
                self._warn(f"{problem}; taking the newest usable step.")
            return steps, bool(steps)
        if (
            pointer is None
        ):  # a crash in the first write (or a pointer set to null): a complete step is this run's
            return steps, False
        if pointer not in steps:
            self._warn(
                f"{pointer}, the step its pointer names, is missing; taking the newest usable step before it."
            )
        return [name for name in steps if name <= pointer], True

    def _warn(self, message):
        warnings.warn(f"Checkpoint {self.url!r}: {message}", CorruptCheckpointWarning, stacklevel=3)

    def _log(self, message):
        logger.warning("Checkpoint %s: %s", self.url, message)

    def latest(self):
        """The newest usable list of :class:`TrainingState` (one per restart), or None for a fresh run.

        Raises
        ------
        CheckpointError
            Steps were committed but none can be used.
        """
        candidates, committed = self._candidates()
        # before the first commit, an unusable step is debris of a crash in the first write: logged only
        report = self._warn if committed else self._log
        reasons = []
        for position, name in enumerate(candidates):
            try:
                return self._read(name)
            except _UNUSABLE as err:
                self._unusable.add(name)
                reasons.append(f"{name}: {err}")
                following = candidates[position + 1] if position + 1 < len(candidates) else None
                report(
                    f"step {name} is unusable ({err}); "
                    + (f"falling back to {following}." if following else "no older step.")
                )
        if committed and reasons:
            if self._overwrite:
                logger.warning(
                    "Replacing the checkpoint at %s (overwrite_checkpoint=True): none of its steps can be "
                    "used.",
                    self.url,
                )
                self.root = self._fresh_root()
                return None
            raise CheckpointError(
                f"No step of the checkpoint at {self.url!r} can be used ({'; '.join(reasons)}): "
                f"{_REPLACE}."
            )
        return None

    def _read(self, name):
        try:
            group = self.root[name]
        except KeyError:
            raise ModelStoreError(f"checkpoint {name} is missing") from None
        restarts = sorted(
            (key for key in group.array_keys() if _RESTART.match(key)), key=lambda key: int(key[8:])
        )
        if [int(key[8:]) for key in restarts] != list(range(len(restarts))) or not restarts:
            raise ModelStoreError(f"checkpoint {name} holds the restarts {restarts}, not 0, 1, ...")
        marked = group.attrs.get("restarts")
        if not _is_int(marked, 1) or marked != len(restarts):
            raise ModelStoreError(
                f"checkpoint {name} is incomplete: its mark 'restarts' is {marked!r}, and it holds "
                f"{len(restarts)} restart(s)"
            )
        config = self.identity.get("config") or {}
        # a warm start's history begins with the lower bound of the model it started from
        offset = 1 if config.get("warm_start_from") is not None else 0
        return [
            self._read_restart(group, f"{name}/{key}", key, offset, config.get("tol"))
            for key in restarts
        ]

    @staticmethod
    def _read_restart(group, where, key, offset, tol):
        where = f"checkpoint {where}"
        attrs = dict(group[key].attrs)
        shape = attrs.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v, 1) for v in shape)):
            raise ModelStoreError(f"{where}: attribute 'shape' is {shape!r}, not [K, D]")
        k, d = shape
        planes = read_array(group, key, (3, k, d), where)
        weights = attrs.get("weights")
        if not (
            isinstance(weights, list) and len(weights) == k and all(_is_number(v) for v in weights)
        ):
            raise ModelStoreError(f"{where}: attribute 'weights' is not {k} finite numbers")
        weights = np.asarray(weights, dtype=np.float64)
        means, covariances, precisions = planes[0], planes[1], planes[2]
        check_mixture(weights, means, covariances, where)
        _check_history(attrs, int(key[8:]), offset, tol, where)
        rng = attrs.get("rng")
        if not (
            isinstance(rng, dict)
            and isinstance(rng.get("keys"), list)
            and len(rng["keys"]) == 624
            and all(_is_int(v, 0, 2**32 - 1) for v in rng["keys"])
            and _is_int(rng.get("pos"), 0, 624)
            and rng.get("has_gauss") in (0, 1)
            and _is_number(rng.get("cached_gaussian"))
        ):
            raise ModelStoreError(
                f"{where}: attribute 'rng' is not a MT19937 random generator state "
                "(624 keys, pos, has_gauss, cached_gaussian)"
            )
        return TrainingState(
            index=attrs["restart"],
            iteration=attrs["iteration"],
            weights=weights,
            means=means,
            covariances=covariances,
            precisions=precisions,
            lower_bounds=[float(v) for v in attrs["lower_bounds"]],
            finished=attrs["finished"],
            converged=attrs["converged"],
            random_state=(
                "MT19937",
                np.asarray(rng["keys"], dtype=np.uint32),
                int(rng["pos"]),
                int(rng["has_gauss"]),
                float(rng["cached_gaussian"]),
            ),
            n_reseeded=attrs["n_reseeded"],
        )

    # ----------------------------------------------------------------- writing
    def save(self, states):
        """Write ``states`` (one :class:`TrainingState` per restart) as a new checkpoint, then
        move the pointer to it, then prune.

        Raises
        ------
        CheckpointInUseError
            This object holds no lease, or another fit took it over.
        """
        if self._lease is None:
            raise CheckpointInUseError(
                f"The checkpoint at {self.url!r} was opened without its lease (lease=False): "
                "it cannot be written."
            )
        self._lease.verify()
        steps = self._remove_debris(self._steps())
        name = f"step-{_step_number(steps[0]) + 1 if steps else 0:08d}"
        group = self.root.create_group(name)
        for state in states:
            planes = np.asarray(
                [state.means, state.covariances, state.precisions], dtype=np.float64
            )
            # NaN fill: an array whose chunk never got written fails validation instead of reading zeros
            group.create_array(
                f"restart-{state.index}",
                data=planes,
                chunks=planes.shape,
                fill_value=np.nan,
                attributes=_attributes(state),
            )
        group.attrs["restarts"] = len(states)  # the step is complete
        self.root.attrs["latest"] = name  # the commit point
        self._names = [name] + self._prune(steps)

    def _remove_debris(self, steps):
        """Remove the steps newer than a valid pointer (written, never committed); the remaining steps."""
        pointer, problem = self._pointer()
        if pointer is None or problem is not None:
            return steps  # nothing was committed, or the pointer is unreadable: every step is kept
        for debris in (name for name in steps if name > pointer):
            logger.warning(
                "Checkpoint %s: removing %s, written after the committed step %s and never committed "
                "(a crash between the two writes).",
                self.url,
                debris,
                pointer,
            )
            del self.root[debris]
        return [name for name in steps if name <= pointer]

    def _prune(self, steps):
        """Delete the steps older than the ``KEEP`` newest usable ones (the step just written
        included), and return those left, newest first."""
        usable = [name for name in steps if name not in self._unusable]
        if len(usable) < KEEP:
            return steps
        oldest_kept = usable[KEEP - 2]
        for old in (name for name in steps if name < oldest_kept):
            del self.root[old]
        return [name for name in steps if name >= oldest_kept]


def _attributes(state):
    """The JSON attributes of one restart's array: everything of ``state`` but the three planes."""
    _, keys, pos, has_gauss, cached = state.random_state
    return _normalised(
        {
            "shape": list(np.shape(state.means)),
            "weights": [float(v) for v in state.weights],
            "restart": state.index,
            "iteration": state.iteration,
            "lower_bounds": [float(v) for v in state.lower_bounds],
            "finished": bool(state.finished),
            "converged": bool(state.converged),
            "n_reseeded": int(state.n_reseeded),
            "rng": {
                "keys": np.asarray(keys, dtype=np.uint32).tolist(),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
        }
    )
