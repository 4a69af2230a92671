"""The files of a training checkpoint: its root's identity, and its steps, written, validated
and retired.

A step ``step-NNNNNNNN`` holds one flat float64 array ``planes``: every restart's means,
covariances and precisions (3 x K x D values each, K and D its own), restart after restart.
Its zarr.json's attribute ``restarts`` (written last, the step's completion mark) lists the
rest of each restart's :class:`~diaggmm_dist.state.TrainingState` in order, its ``shape``
[K, D] placing its planes. A step is rendered in memory (:func:`step_files`) and written one
PUT per file on object stores: as many files however many restarts. :mod:`.checkpoint` decides
which step to read or write.

A step is valid with readable metadata, the completion mark, finite planes of the right sizes,
attributes of the right types, and for every restart an iteration and a ``converged`` flag that
match its lower-bound history.
"""

from __future__ import annotations

import json
import numbers
import re
import reprlib
import shutil

import numpy as np

from ..state import TrainingState
from .model_checks import ModelStoreError, check_mixture, check_values
from .zarr_groups import NotAGroupError, rendered, root_node

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STEP_NAME",
    "delete_steps",
    "identity_problem",
    "list_steps",
    "normalized",
    "read_root",
    "read_step",
    "step_files",
    "step_number",
]

FORMAT = "diaggmm-dist-checkpoint"
#: 4: steps carry the completion mark ``restarts``. 5: one array ``planes`` per step (not
#: per restart), the restarts' state in the step's attributes.
FORMAT_VERSION = 5
#: Names of steps; their number orders them.
STEP_NAME = re.compile(r"^step-(\d{8})$")
#: Values per chunk of ``planes`` (64 MiB): each chunk is one PUT below s3fs's multipart size.
PLANE_CHUNK = 2**23


def normalized(value):
    """``value`` as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(value))


def _is_int(value, low=0, high=None):
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def _is_number(value):
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


def identity_problem(url: str, attrs: dict, identity: dict | None) -> str | None:
    """Why the root attributes ``attrs`` are not the checkpoint of the run ``identity`` (None:
    of any run of this format), or None."""
    if attrs.get("format") != FORMAT:
        return f"{url!r} exists and is not a diaggmm-dist checkpoint"
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        older = _is_int(version) and version < FORMAT_VERSION
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


def read_root(where, identity: dict | None = None) -> tuple[dict | None, str | None, bool]:
    """``(attrs, problem, unreadable)``: the root attributes of the checkpoint at ``where`` (a
    Location; None when nothing is there), why it cannot be the checkpoint of the run
    ``identity`` (None when it can), and whether that is because the checkpoint cannot be read
    (else it is another run's, or not a checkpoint). One GET of the root's zarr.json on object
    stores (and one listing when it is absent)."""
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
    return attrs, identity_problem(url, attrs, identity), False


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
    # converged exactly when the fit's own test says so (a flipped flag ends or extends the fit)
    if _is_number(tol):
        change = abs(bounds[-1] - bounds[-2]) if len(bounds) >= 2 else np.inf
        if attrs["converged"] != bool(change < tol):
            raise ModelStoreError(
                f"{where}: attribute 'converged' is {attrs['converged']}, but its last lower-bound "
                f"change is {change:.3e} (tol {tol})"
            )


def read_step(root, name: str, identity: dict) -> list[TrainingState]:
    """The training states of step ``name`` of the checkpoint group ``root`` (one per restart).

    Parameters
    ----------
    root : zarr.Group
        The checkpoint's root group.
    name : str
        The step.
    identity : dict
        The run's identity: its ``config`` says the tolerance and whether it warm-started.

    Returns
    -------
    list of TrainingState

    Raises
    ------
    ModelStoreError
        The step is missing, incomplete, or a restart in it is not valid.
    """
    try:
        group = root[name]
    except KeyError:
        raise ModelStoreError(f"checkpoint {name} is missing") from None
    restarts = group.attrs.get("restarts")
    if not (isinstance(restarts, list) and restarts):
        raise ModelStoreError(
            f"checkpoint {name} is incomplete: its mark 'restarts' is "
            f"{reprlib.repr(restarts)}, not a list of restarts"
        )
    shapes = [_shape(attrs, f"checkpoint {name}/restart-{i}") for i, attrs in enumerate(restarts)]
    ends = np.cumsum([3 * k * d for k, d in shapes]).tolist()
    planes = _read_planes(group, ends[-1], f"checkpoint {name}")
    config = identity.get("config") or {}
    # a warm start's history begins with the lower bound of the model it started from
    offset = 1 if config.get("warm_start_from") is not None else 0
    states = []
    for i, ((k, d), end) in enumerate(zip(shapes, ends)):
        own = planes[end - 3 * k * d : end].reshape(3, k, d)
        where = f"checkpoint {name}/restart-{i}"
        states.append(_read_restart(restarts[i], own, i, where, offset, config.get("tol")))
    return states


def _shape(attrs, where):
    """``(K, D)`` of one restart's attributes ``attrs`` (checked)."""
    if not isinstance(attrs, dict):
        raise ModelStoreError(f"{where}: its attributes are {reprlib.repr(attrs)}, not an object")
    shape = attrs.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v, 1) for v in shape)):
        raise ModelStoreError(f"{where}: attribute 'shape' is {shape!r}, not [K, D]")
    return shape[0], shape[1]


def _read_planes(group, size, where):
    """The step's array ``planes`` as float64, checked to hold ``size`` values (their
    finiteness is checked restart by restart)."""
    try:
        value = np.asarray(group["planes"][...], dtype=np.float64)
    except KeyError:
        raise ModelStoreError(f"{where}: array 'planes' is missing.") from None
    except Exception as err:  # a truncated or corrupt chunk fails in the codec
        raise ModelStoreError(
            f"{where}: array 'planes' could not be read ({type(err).__name__}: {err})."
        ) from err
    if value.shape != (size,):
        raise ModelStoreError(
            f"{where}: array 'planes' has shape {value.shape}, expected ({size},)."
        )
    return value


def _read_restart(attrs, planes, restart, where, offset, tol):
    k, d = planes.shape[1:]
    check_values(planes, "planes", (3, k, d), where)
    weights = attrs.get("weights")
    if not (
        isinstance(weights, list) and len(weights) == k and all(_is_number(v) for v in weights)
    ):
        raise ModelStoreError(f"{where}: attribute 'weights' is not {k} finite numbers")
    weights = np.asarray(weights, dtype=np.float64)
    means, covariances, precisions = planes[0].copy(), planes[1].copy(), planes[2].copy()
    check_mixture(weights, means, covariances, where)
    _check_history(attrs, restart, offset, tol, where)
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


def step_files(name: str, states) -> dict[str, bytes]:
    """The files of the step ``name`` holding ``states`` (one :class:`TrainingState` per
    restart): keys under the checkpoint's root and their bytes, rendered in memory.

    The same few files for any number of restarts: the array ``planes`` (its zarr.json and its
    chunks, one for up to ``PLANE_CHUNK`` values) and the step's zarr.json. Written in place in
    any order but the step's ``zarr.json`` last: it holds the mark ``restarts``, and a step
    without it is incomplete.
    """
    states = sorted(states, key=lambda state: state.index)  # restart i is the i-th
    planes = np.concatenate(
        [
            np.asarray([s.means, s.covariances, s.precisions], dtype=np.float64).ravel()
            for s in states
        ]
    )

    def write(group):
        # NaN fill: a chunk never written fails validation, not reads as 0
        group.create_array(
            "planes",
            data=planes,
            chunks=(min(planes.size, PLANE_CHUNK),),
            fill_value=np.nan,
        )

    # the restarts' state: the step's completion mark
    files = rendered(write, {"restarts": [_attributes(state) for state in states]})
    return {f"{name}/{key}": data for key, data in files.items()}


def _attributes(state):
    """The JSON attributes of one restart: everything of ``state`` but the three planes."""
    _, keys, pos, has_gauss, cached = state.random_state
    return normalized(
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
