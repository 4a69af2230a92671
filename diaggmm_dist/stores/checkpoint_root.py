"""The root of a training checkpoint: its format, whose run it holds, its steps' names, and
the pluggable format of its steps.

The root's ``zarr.json`` holds ``format``, ``format_version``, ``identity`` (the run's
configuration and data fingerprint), ``latest`` (the newest committed step) and, for an
estimator other than :class:`~diaggmm_dist.DiagGMM`, ``estimator`` (its name: the kind of
training state its steps hold, by a :class:`StepFormat`). :mod:`.checkpoint` reads and
writes it; :mod:`.checkpoint_steps` holds DiagGMM's steps, :mod:`.bayesian_steps`
BayesianDiagGMM's, :mod:`.classifier_steps` DiagGMMClassifier's.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..locations import Location, location
from .lease import raise_if_in_use
from .zarr_groups import NotAGroupError, check_replaceable, root_node

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CorruptCheckpointWarning",
    "DEFAULT_ESTIMATOR",
    "FORMAT",
    "FORMAT_VERSION",
    "STEP_NAME",
    "StepFormat",
    "check_checkpoint",
    "delete_steps",
    "identity_problem",
    "is_int",
    "is_number",
    "list_steps",
    "normalized",
    "read_root",
    "root_problem",
    "REPLACE",
    "step_number",
]

#: The root's ``format`` attribute.
FORMAT = "diaggmm-dist-checkpoint"
#: 4: steps carry the completion mark ``restarts``. 5: one array ``planes`` per step (not
#: per restart), the restarts' state in the step's attributes.
FORMAT_VERSION = 5
#: Names of steps; their number orders them.
STEP_NAME = re.compile(r"^step-(\d{8})$")
#: The estimator of a checkpoint whose root names none (DiagGMM's, as before there were others).
DEFAULT_ESTIMATOR = "DiagGMM"


@dataclass(frozen=True)
class StepFormat:
    """What the steps of an estimator's checkpoints hold, and how they are written and read.

    Parameters
    ----------
    estimator : str
        The estimator's name, in the root's ``estimator`` attribute (not written for
        :data:`DEFAULT_ESTIMATOR`); a checkpoint of another estimator is refused.
    files : callable
        ``files(name, states)``: the step ``name``'s keys (under the root) and their bytes,
        rendered in memory, the step's own ``zarr.json`` (its completion mark) among them.
    read : callable
        ``read(root, name, identity)``: the states of step ``name`` of the root group, checked;
        raises ModelStoreError (or a Zarr, key, value or type error) for an unusable step.
    """

    estimator: str
    files: Callable[[str, Any], dict[str, bytes]]
    read: Callable[[Any, str, dict], Any]


def normalized(value):
    """``value`` as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(value))


def is_int(value, low=0, high=None) -> bool:
    """An integer (not a bool) in ``[low, high]``."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def is_number(value) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def step_number(name: str) -> int:
    """The number of the step ``name`` (``"step-00000007"`` -> 7)."""
    return int(STEP_NAME.match(name).group(1))


def list_steps(fs, path: str) -> list[str]:
    """Names of the steps under ``path`` on the file system ``fs``, newest first, from one
    listing (not Zarr's: one step with unreadable metadata must not hide the others)."""
    try:
        # refreshed: another process (the fit this one resumes) wrote the steps
        names = [
            entry.rstrip("/").rsplit("/", 1)[-1]
            for entry in fs.ls(path, detail=False, refresh=True)
        ]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted((name for name in names if STEP_NAME.match(name)), reverse=True)


def _differences(stored, wanted, prefix=""):
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint has {a!r}, this run has {b!r}")
    return out


def identity_problem(
    url: str, attrs: dict, identity: dict | None, estimator: str | None = None
) -> str | None:
    """Why the root attributes ``attrs`` are not the checkpoint of the run ``identity`` of the
    estimator ``estimator`` (None: of any run, any estimator, of this format), or None."""
    if attrs.get("format") != FORMAT:
        return f"{url!r} exists and is not a diaggmm-dist checkpoint"
    stored = attrs.get("estimator", DEFAULT_ESTIMATOR)
    if estimator is not None and stored != estimator:
        return (
            f"The checkpoint at {url!r} holds the training state of a {stored} fit, not of a "
            f"{estimator} fit: a {estimator} fit cannot resume it"
        )
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        older = is_int(version) and version < FORMAT_VERSION
        return (
            f"The checkpoint at {url!r} has format version {version!r}"
            + (" (written by an older diaggmm-dist)" if older else "")
            + f"; this version of diaggmm-dist reads version {FORMAT_VERSION} only, and cannot "
            "resume it"
        )
    if identity is not None and attrs.get("identity") != identity:
        stored = attrs.get("identity") if isinstance(attrs.get("identity"), dict) else {}
        differences = "; ".join(_differences(stored, identity))
        return f"The checkpoint at {url!r} belongs to a different run ({differences})"
    return None


def read_root(
    where, identity: dict | None = None, estimator: str | None = None
) -> tuple[dict | None, str | None, bool]:
    """``(attrs, problem, unreadable)``: the root attributes of the checkpoint at ``where`` (a
    Location; None when nothing is there), why it cannot be the checkpoint of the run
    ``identity`` of ``estimator`` (None when it can), and whether that is because the
    checkpoint cannot be read (else it is another run's, or not a checkpoint). One GET of the
    root's zarr.json on object stores (and one listing when it is absent)."""
    url = where.url
    try:
        kind, meta = root_node(where)
    except NotAGroupError as err:
        fs, path = where.filesystem()
        if err.kind == "files" and list_steps(fs, path):
            lost = (
                f"The checkpoint at {url!r} has lost its root metadata (zarr.json), which says "
                "whose run its steps are"
            )
            return None, lost, True
        refused = err.describe("checkpoint") + ": refusing to replace it"
        return None, refused, False
    # JSONDecodeError is a ValueError; a non-object is a TypeError
    except (ValueError, TypeError) as err:
        unreadable = (
            f"The checkpoint at {url!r} has unreadable root metadata (zarr.json: "
            f"{type(err).__name__}: {err})"
        )
        return None, unreadable, True
    if kind is None:
        return None, None, False
    if kind == "array":
        return (
            None,
            NotAGroupError(url, "array").describe("checkpoint") + ": refusing to replace it",
            False,
        )
    attrs = meta.get("attributes", {}) if meta is not None else {}
    if not isinstance(attrs, dict):
        return (
            None,
            f"The checkpoint at {url!r} has unreadable root metadata (zarr.json: its "
            "attributes are not an object)",
            True,
        )
    return attrs, identity_problem(url, attrs, identity, estimator), False


def delete_steps(where, fs, path: str, names, written: dict) -> None:
    """Delete the steps ``names`` of the checkpoint at ``where`` (on ``fs`` at ``path``).

    On object stores one bulk delete: of the files ``written[name]`` lists (the keys of a step
    this run wrote), and of those one listing finds for the other steps.
    """
    if not names:
        return
    if where.is_local:
        for name in names:
            shutil.rmtree(where.local_path / name, ignore_errors=True)
        return
    root = path.rstrip("/")
    doomed = [f"{root}/{key}" for name in names for key in written.get(name, ())]
    unknown = {name for name in names if name not in written}
    if unknown:
        doomed += [
            entry
            for entry in fs.find(root, withdirs=True)
            if entry[len(root) + 1 :].split("/", 1)[0] in unknown
        ]
    if doomed:
        fs.rm(sorted(doomed, reverse=True))


#: What to do about a checkpoint that cannot be used.
#: What to do about a checkpoint that cannot be used.
REPLACE = (
    "pass overwrite_checkpoint=True (CLI: --overwrite) to start afresh, replacing it, or use "
    "another checkpoint URL"
)


class CheckpointError(ValueError):
    """The checkpoint cannot be used as it stands; the message names it and what to do."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint belongs to a run with other settings or other data."""


class CorruptCheckpointWarning(UserWarning):
    """The newest checkpoint could not be used; an older one was."""


def root_problem(where, identity=None, estimator=None):
    """``(attrs, problem, error)``: :func:`read_root`, and the error class to raise for the
    problem."""
    attrs, problem, unreadable = read_root(where, identity, estimator)
    return attrs, problem, CheckpointError if unreadable else CheckpointMismatchError


def check_checkpoint(where: str | os.PathLike | Location, overwrite: bool = False) -> None:
    """Refuse now what a fit on the checkpoint at ``where`` would refuse before its first pass.

    Reads only.

    For a command line to call before it starts a cluster: a live fit holding the checkpoint,
    and, without ``overwrite``, something at ``url`` that is not a readable checkpoint of this
    format (with it, something that is not a Zarr store, which is never replaced). (Whether it
    holds this run is checked by the fit: that needs the data's fingerprint.)

    Raises
    ------
    CheckpointInUseError, CheckpointMismatchError, CheckpointError
        As :class:`Checkpoints` would.
    """
    where = location(where)
    raise_if_in_use(where)
    if overwrite:
        check_replaceable(where)
        return
    _, problem, error = root_problem(where)
    if problem is not None:
        raise error(f"{problem}: {REPLACE}.")
