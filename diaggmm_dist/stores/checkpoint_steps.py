"""The steps of a :class:`~diaggmm_dist.DiagGMM` training checkpoint (its root:
:mod:`.checkpoint_root`), written and validated: the :class:`~.checkpoint_root.StepFormat`
:data:`DIAGGMM_STEPS`.

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

import reprlib

import numpy as np

from ..state import TrainingState
from .checkpoint_root import StepFormat, normalized
from .checkpoint_root import is_int as _is_int
from .checkpoint_root import is_number as _is_number
from .model_checks import ModelStoreError, check_mixture, check_values
from .zarr_groups import rendered

__all__ = [
    "DIAGGMM_STEPS",
    "PLANE_CHUNK",
    "check_history",
    "read_planes",
    "read_step",
    "step_files",
]

#: Values per chunk of ``planes`` (64 MiB): each chunk is one PUT below s3fs's multipart size.
PLANE_CHUNK = 2**23


def check_history(attrs, restart, offset, tol, where):
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
    planes = read_planes(group, ends[-1], f"checkpoint {name}")
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


def read_planes(group, size, where):
    """The step's array ``planes`` as float64, checked to hold ``size`` values (their
    finiteness is checked restart by restart). Its shape is checked before it is read: a
    corrupt step never makes a read larger than the run's own state."""
    try:
        array = group["planes"]
        if array.shape == (size,):
            return np.asarray(array[...], dtype=np.float64)
    except KeyError:
        raise ModelStoreError(f"{where}: array 'planes' is missing.") from None
    except Exception as err:  # a truncated or corrupt chunk fails in the codec
        raise ModelStoreError(
            f"{where}: array 'planes' could not be read ({type(err).__name__}: {err})."
        ) from err
    raise ModelStoreError(f"{where}: array 'planes' has shape {array.shape}, expected ({size},).")


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
    check_history(attrs, restart, offset, tol, where)
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


#: DiagGMM's steps (:class:`~diaggmm_dist.state.TrainingState` per restart).
DIAGGMM_STEPS = StepFormat("DiagGMM", step_files, read_step)
