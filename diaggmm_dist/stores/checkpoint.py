"""Crash-safe training checkpoints in a Zarr group: the source of truth for where a run is.

Layout (a DiagGMM's steps; a BayesianDiagGMM's are in :mod:`.bayesian_steps`, a
DiagGMMClassifier's in :mod:`.classifier_steps`)::

    checkpoint.zarr/
        zarr.json          attributes: format, format_version, identity (configuration,
                           data fingerprint and, for a weighted fit, the sample weights'
                           fingerprint), latest (the pointer: the newest committed step),
                           estimator (absent for DiagGMM; :mod:`.checkpoint_root`)
        step-00000007/     one complete training state of every restart (run side by side):
            zarr.json      its attribute ``restarts``, written last, says the step is complete
                           and holds each restart's weights, shape [K, D], restart, iteration,
                           lower_bounds, finished, converged, n_reseeded and rng (the random
                           generator's state after the initialization)
            planes/        float64, flat: each restart's means, covariances and precisions
                           (3 x K x D values), restart after restart
    checkpoint.zarr.lease  while a fit runs: who holds the checkpoint (:mod:`.lease`)

A checkpoint is written as a new ``step-*`` group, rendered in memory and written one file
each (its array's files side by side, then its zarr.json, which marks it complete); only then
is the root's ``latest`` pointer rewritten (one small write, atomic on local disks where Zarr writes
files by rename, and a single PUT on object stores). A crash at any instant therefore leaves
the previous pointer and its step intact. A step newer than the pointer is debris of such a
crash: it is removed (with a logged warning) before the next step is written. The ``KEEP``
newest usable steps are kept; no other step is ever deleted except by ``overwrite``.

The file system and store are opened once per run, and the root's attributes are read once
and then kept as written: on an object store a step costs one GET (the lease's check) and
four PUTs, whatever the number of restarts (one PUT more per 64 MiB of planes), plus one bulk
delete when an old step is retired (and one listing first if an earlier run wrote it).
Nothing just written is read back.

On resume every step is validated (by its :class:`~.checkpoint_root.StepFormat`'s ``read``); one
that fails is skipped with a :class:`CorruptCheckpointWarning`, falling back to the one before
it. A pointer that is missing or not a step name is warned about the same way, and the newest
usable step is taken. A null pointer (a crash during the first write) takes the newest complete
step, if any, quietly. When steps were committed but none is usable, or the root's metadata
cannot be read, :class:`CheckpointError` names the checkpoint and how to start afresh
(``overwrite_checkpoint=True``, which always does).

One fit at a time writes a checkpoint: the constructor takes its lease
(:class:`~.lease.Lease`), which :meth:`Checkpoints.close` releases; a second fit gets
:class:`CheckpointInUseError` at once.
"""

from __future__ import annotations

import logging
import os
import warnings
import weakref

import zarr
from zarr.errors import BaseZarrError

from ..locations import Location, location
from .checkpoint_root import (
    DEFAULT_ESTIMATOR,
    FORMAT,
    FORMAT_VERSION,
    REPLACE,
    STEP_NAME,
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointWarning,
    StepFormat,
    check_checkpoint,
    delete_steps,
    list_steps,
    normalized,
    root_problem,
    step_number,
)
from .checkpoint_steps import DIAGGMM_STEPS
from .lease import CheckpointInUseError, Lease
from .model_checks import ModelStoreError
from .zarr_groups import check_replaceable, put_keys, remove_group, rendered

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
    "StepFormat",
]

logger = logging.getLogger(__name__)

#: Complete checkpoints kept (the newest ones).
KEEP = 3
#: Errors that make one step unusable (not OSError: an I/O failure is not a corrupt step, and
#: propagates so that the fit can be retried).
_UNUSABLE = (ModelStoreError, BaseZarrError, KeyError, ValueError, TypeError)


class Checkpoints:
    """The checkpoints of one training run at ``url``.

    Taking the checkpoint's lease first (unless ``lease=False``): call :meth:`close` when the
    fit ends, or use the object as a context manager. (An object dropped without either
    releases the lease when it is garbage-collected.)

    Parameters
    ----------
    where : str, os.PathLike or Location
        Local path or fsspec URL of the checkpoint group, or its Location (with storage
        options, or a local or fsspec Zarr store object: the checkpoint needs a file system).
    identity : dict
        JSON-able configuration and data fingerprint of the run; a store holding another
        identity is refused unless ``overwrite``.
    overwrite : bool
        Start afresh instead of refusing a store that belongs to another run, cannot be
        read, or has no usable step (everything at ``url`` is deleted then).
    lease : bool, default=True
        Take the lease (a writer). ``False`` reads without it, for inspecting a checkpoint
        another fit may be writing; :meth:`save` is then refused.
    steps : StepFormat, default=DIAGGMM_STEPS
        The estimator whose training state the steps hold (:mod:`.checkpoint_root`); a
        checkpoint of another estimator is refused (``CheckpointMismatchError``).

    Raises
    ------
    CheckpointInUseError
        Another live fit holds the lease.
    CheckpointMismatchError
        ``url`` holds another run, another format, or something that is not a checkpoint.
    CheckpointError
        The root's metadata cannot be read.
    """

    def __init__(
        self,
        where: str | os.PathLike | Location,
        identity: dict,
        overwrite: bool = False,
        lease: bool = True,
        steps: StepFormat = DIAGGMM_STEPS,
    ):
        self.location = location(where)
        self.url = self.location.url
        # opened once for the whole run: every step is written through them
        self._fs, self._path = self.location.filesystem()
        self._store = self.location.zarr_store()
        self._attrs = None  # the root's attributes, as read or last written
        self._written = {}  # step name -> its files, for the steps this object wrote
        self._root = None
        self.identity = normalized(identity)
        self.steps = steps
        self._overwrite = overwrite
        self._names = None  # the step names, newest first, once listed
        self._unusable = set()  # steps found unusable by latest(): not counted as kept
        self._lease = Lease.acquire(self.location) if lease else None
        self._release = weakref.finalize(self, self._lease.release) if lease else None
        try:
            self._open_root(overwrite)
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

    @property
    def root(self):
        """The checkpoint's root group (read only), for reading steps."""
        if self._root is None:
            self._root = zarr.open_group(
                self.location.zarr_store(read_only=True), mode="r", zarr_format=3
            )
        return self._root

    def _open_root(self, overwrite):
        """Read the root's attributes, or create the root (replace it, with ``overwrite``)
        unless it is this run's."""
        attrs, problem, error = root_problem(self.location, self.identity, self.steps.estimator)
        if problem is None:
            if attrs is None:
                self._fresh_root()
            else:
                self._attrs = attrs
            return
        if not overwrite:
            raise error(f"{problem}: {REPLACE}.")
        check_replaceable(self.location)
        logger.warning(
            "Replacing the checkpoint at %s (overwrite_checkpoint=True): %s.", self.url, problem
        )
        self._fresh_root()

    def _fresh_root(self):
        """Remove whatever is at the location and create an empty checkpoint of this run."""
        remove_group(self.location)
        self._root = None
        attrs = {"format": FORMAT, "format_version": FORMAT_VERSION}
        if self.steps.estimator != DEFAULT_ESTIMATOR:  # DiagGMM's root is as it always was
            attrs["estimator"] = self.steps.estimator
        self._write_root({**attrs, "identity": self.identity, "latest": None})
        self._names, self._unusable, self._written = [], set(), {}

    def _write_root(self, attrs):
        """Write the root's zarr.json with ``attrs`` (one PUT), and keep them."""
        put_keys(self._store, rendered(lambda group: None, attrs))
        self._attrs = dict(attrs)

    # ----------------------------------------------------------------- reading
    def _steps(self):
        """Names of the steps in the store, newest first (listed once, then kept up to date)."""
        if self._names is None:
            self._names = list_steps(self._fs, self._path)
        return list(self._names)

    def _pointer(self):
        """``(name, problem)``: the step the root's pointer names (None before the first commit),
        and why the pointer is unusable (None when it is fine)."""
        attrs = self._attrs  # read once, then as this object wrote it
        if "latest" not in attrs:
            return None, "the root has no 'latest' pointer"
        pointer = attrs["latest"]
        if pointer is None or (isinstance(pointer, str) and STEP_NAME.match(pointer)):
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
                f"{pointer}, the step its pointer names, is missing; taking the newest usable step "
                "before it."
            )
        return [name for name in steps if name <= pointer], True

    def _warn(self, message):
        warnings.warn(f"Checkpoint {self.url!r}: {message}", CorruptCheckpointWarning, stacklevel=3)

    def _log(self, message):
        logger.warning("Checkpoint %s: %s", self.url, message)

    def latest(self):
        """The newest usable list of :class:`TrainingState` (one per restart); None: a fresh run.

        Raises
        ------
        CheckpointError
            Steps were committed but none can be used.
        """
        candidates, committed = self._candidates()
        # before the first commit, an unusable step is debris of a crash in the first write: logged
        report = self._warn if committed else self._log
        reasons = []
        for position, name in enumerate(candidates):
            try:
                return self.steps.read(self.root, name, self.identity)
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
                    "Replacing the checkpoint at %s (overwrite_checkpoint=True): none of its steps "
                    "can be used.",
                    self.url,
                )
                self._fresh_root()
                return None
            raise CheckpointError(
                f"No step of the checkpoint at {self.url!r} can be used ({'; '.join(reasons)}): "
                f"{REPLACE}."
            )
        return None

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
        self._lease.verify()  # one GET
        steps = self._remove_debris(self._steps())
        name = f"step-{step_number(steps[0]) + 1 if steps else 0:08d}"
        files = self.steps.files(name, states)
        mark = f"{name}/zarr.json"
        complete = {mark: files.pop(mark)}
        put_keys(self._store, files)  # the array's metadata and chunks, side by side
        put_keys(self._store, complete)  # then the step's mark
        self._written[name] = [*files, mark]
        self._write_root(dict(self._attrs, latest=name))  # the commit point
        self._names = [name] + self._prune(steps)

    def _remove_debris(self, steps):
        """Remove the steps newer than a valid pointer (never committed); return the others."""
        pointer, problem = self._pointer()
        if pointer is None or problem is not None:
            return steps  # nothing was committed, or the pointer is unreadable: every step is kept
        debris = [name for name in steps if name > pointer]
        for name in debris:
            logger.warning(
                "Checkpoint %s: removing %s, written after the committed step %s and never "
                "committed (a crash between the two writes).",
                self.url,
                name,
                pointer,
            )
        self._delete_steps(debris)
        return [name for name in steps if name <= pointer]

    def _prune(self, steps):
        """Delete the steps older than the ``KEEP`` newest usable ones (the step just written
        included), and return those left, newest first."""
        usable = [name for name in steps if name not in self._unusable]
        if len(usable) < KEEP:
            return steps
        oldest_kept = usable[KEEP - 2]
        self._delete_steps([name for name in steps if name < oldest_kept])
        return [name for name in steps if name >= oldest_kept]

    def _delete_steps(self, names):
        self._root = None  # zarr's view of the root may hold them
        delete_steps(self.location, self._fs, self._path, names, self._written)
        for name in names:
            self._written.pop(name, None)
