"""The steps of a :class:`~diaggmm_dist.BayesianDiagGMM` training checkpoint: the
:class:`~.checkpoint_root.StepFormat` :data:`BAYESIAN_STEPS`.

The checkpoint is DiagGMM's (:mod:`.checkpoint`: its root, lease, pointer, atomic step writes,
fallback to an older step), its root's attribute ``estimator`` is ``"BayesianDiagGMM"``, and
a step holds every restart's variational posterior and the priors as resolved::

    step-00000007/
        zarr.json   attributes: prior_type, priors (the scalar priors as used:
                    weight_concentration, mean_precision, degrees_of_freedom) and, the step's
                    completion mark, restarts: one object per restart (restart, shape [K, D],
                    iteration, lower_bounds, converged)
        planes/     float64, flat: the mean and covariance priors (D values each), then every
                    restart's posterior in turn: its weight concentration (K values; the
                    Dirichlet process: a_k, then b_k), mean precision (K), means (K x D),
                    degrees of freedom (K) and covariances (K x D)

A step is valid with the completion mark, a restart for each of the run's ``n_init`` (one for a
warm start) with K and D the run's (checked before ``planes`` is read, which bounds the read),
finite values, concentrations, mean precisions, variances and scalar priors > 0, degrees of
freedom > D − 1, and for every restart an iteration and a ``converged`` flag that match its
lower-bound history; anything else is a :class:`~.model_checks.ModelStoreError`, and
:mod:`.checkpoint` falls back to the step before.
"""

from __future__ import annotations

import math
import reprlib

import numpy as np

from ..bayesian_mstep import Posterior, Priors, VBState
from .bayesian_store import check_posterior_arrays, checked_scalar_priors, posterior_arrays
from .checkpoint_root import StepFormat, is_int, is_number, normalized
from .checkpoint_steps import PLANE_CHUNK, read_planes
from .model_checks import ModelStoreError, check_values
from .zarr_groups import rendered

__all__ = ["BAYESIAN_STEPS", "ESTIMATOR", "read_vb_step", "vb_step_files"]

#: The root's ``estimator`` attribute of a BayesianDiagGMM checkpoint.
ESTIMATOR = "BayesianDiagGMM"
_SCALARS = ("weight_concentration", "mean_precision", "degrees_of_freedom")


def _shapes(prior_type: str, k: int, d: int) -> dict[str, tuple]:
    """The posterior's arrays in the order of ``planes``, with their shapes."""
    dirichlet_process = prior_type == "dirichlet_process"
    names = ("weight_concentration_a", "weight_concentration_b") if dirichlet_process else ()
    return {
        **{name: (k,) for name in names or ("weight_concentration",)},
        "mean_precision": (k,),
        "means": (k, d),
        "degrees_of_freedom": (k,),
        "covariances": (k, d),
    }


def vb_step_files(name: str, saved: tuple[list[VBState], Priors]) -> dict[str, bytes]:
    """The files of step ``name`` holding ``saved``: every restart's state and the priors.

    Parameters
    ----------
    name : str
        The step (``step-NNNNNNNN``).
    saved : tuple
        ``(states, priors)``: one :class:`~diaggmm_dist.bayesian_mstep.VBState` per restart,
        in order, and the :class:`~diaggmm_dist.bayesian_mstep.Priors` they share.

    Returns
    -------
    dict
        Keys under the checkpoint's root and their bytes; the step's ``zarr.json`` (which
        holds the completion mark ``restarts``) must be written last.
    """
    states, priors = saved
    arrays, restarts = [priors.mean, priors.covariance], []
    for index, state in enumerate(states):
        arrays += posterior_arrays(state.posterior).values()
        restarts.append(
            {
                "restart": index,
                "shape": list(np.shape(state.posterior.means)),
                "iteration": int(state.iteration),
                "lower_bounds": [float(v) for v in state.lower_bounds],
                "converged": bool(state.converged),
            }
        )
    planes = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])

    def write(group):
        # NaN fill: a chunk never written fails validation, not reads as 0
        group.create_array(
            "planes", data=planes, chunks=(min(planes.size, PLANE_CHUNK),), fill_value=np.nan
        )

    attributes = {
        "prior_type": priors.prior_type,
        "priors": {scalar: float(getattr(priors, scalar)) for scalar in _SCALARS},
        "restarts": restarts,
    }
    files = rendered(write, normalized(attributes))
    return {f"{name}/{key}": data for key, data in files.items()}


def _check_restart(attrs, index, k, d, tol, start, where):
    """Raise ModelStoreError unless one restart's attributes are of the run's shape and types,
    and its iteration and ``converged`` flag match its lower-bound history."""
    if not isinstance(attrs, dict):
        raise ModelStoreError(f"{where}: its attributes are {reprlib.repr(attrs)}, not an object")
    for name, valid in (
        ("restart", lambda v: v == index and is_int(v)),
        ("shape", lambda v: v == [k, d]),
        ("iteration", is_int),
        ("converged", lambda v: isinstance(v, bool)),
        ("lower_bounds", lambda v: isinstance(v, list) and all(is_number(b) for b in v)),
    ):
        if not valid(attrs.get(name)):
            raise ModelStoreError(
                f"{where}: attribute {name!r} is {reprlib.repr(attrs.get(name))}"
                + (f" (this run's is [{k}, {d}])" if name == "shape" else "")
            )
    bounds = attrs["lower_bounds"]
    if len(bounds) != attrs["iteration"]:
        raise ModelStoreError(
            f"{where}: iteration {attrs['iteration']} disagrees with its {len(bounds)} lower "
            "bound(s)"
        )
    # converged exactly when the fit's own test says so (a flipped flag ends or extends the fit)
    bounds = ([] if start is None else [start]) + bounds  # a warm start's bound comes first
    change = abs(bounds[-1] - bounds[-2]) if len(bounds) >= 2 else math.inf
    if attrs["converged"] != bool(change < tol):
        raise ModelStoreError(
            f"{where}: attribute 'converged' is {attrs['converged']}, but its last lower-bound "
            f"change is {change:.3e} (tol {tol})"
        )


def read_vb_step(root, name: str, identity: dict) -> tuple[list[VBState], Priors]:
    """The restarts' states and the priors of step ``name`` of the checkpoint group ``root``.

    Parameters
    ----------
    root : zarr.Group
        The checkpoint's root group.
    name : str
        The step.
    identity : dict
        The run's identity: its ``config`` gives K, ``n_init``, the prior type, ``tol`` and a
        warm start's lower bound, its ``fingerprint`` the data's shape (the last axis: D).

    Returns
    -------
    states : list of VBState
    priors : Priors

    Raises
    ------
    ModelStoreError
        The step is missing, incomplete, of another shape than the run, or not valid.
    """
    config, fingerprint = identity["config"], identity["fingerprint"]
    where = f"checkpoint {name}"
    try:
        group = root[name]
    except KeyError:
        raise ModelStoreError(f"{where} is missing") from None
    attrs = dict(group.attrs)
    restarts = attrs.get("restarts")
    if not (isinstance(restarts, list) and restarts):
        raise ModelStoreError(
            f"{where} is incomplete: its mark 'restarts' is {reprlib.repr(restarts)}, not a "
            "list of restarts"
        )
    # a warm start continues one posterior, whatever n_init
    expected = 1 if config.get("warm_start_posterior") is not None else config["n_init"]
    if len(restarts) != expected:
        raise ModelStoreError(f"{where}: {len(restarts)} restart(s), not the run's {expected}")
    prior_type = config["weight_concentration_prior_type"]
    if attrs.get("prior_type") != prior_type:
        raise ModelStoreError(f"{where}: attribute 'prior_type' is not {prior_type!r}")
    k = config["n_components"]
    d = fingerprint["shape"][-1]
    for index, restart in enumerate(restarts):
        start = config.get("warm_start_lower_bound")
        _check_restart(restart, index, k, d, config["tol"], start, f"{where}/restart-{index}")
    scalars = checked_scalar_priors(attrs, d, where)
    shapes = _shapes(prior_type, k, d)
    per_restart = sum(math.prod(shape) for shape in shapes.values())
    planes = read_planes(group, 2 * d + len(restarts) * per_restart, where)
    check_values(planes, "planes", planes.shape, where)
    mean, covariance = planes[:d].copy(), planes[d : 2 * d].copy()
    priors = Priors(
        prior_type,
        float(scalars["weight_concentration"]),
        float(scalars["mean_precision"]),
        mean,
        float(scalars["degrees_of_freedom"]),
        covariance,
    )
    states, start = [], 2 * d
    for index, restart in enumerate(restarts):
        arrays = {}
        for array, shape in shapes.items():
            size = math.prod(shape)
            arrays[array] = planes[start : start + size].reshape(shape).copy()
            start += size
        check_posterior_arrays(
            {**arrays, "covariance_prior": covariance}, prior_type, d, f"{where}/restart-{index}"
        )
        if prior_type == "dirichlet_process":
            concentration = (arrays["weight_concentration_a"], arrays["weight_concentration_b"])
        else:
            concentration = arrays["weight_concentration"]
        posterior = Posterior(
            prior_type,
            concentration,
            *(arrays[a] for a in ("mean_precision", "means", "degrees_of_freedom", "covariances")),
        )
        bounds = [float(v) for v in restart["lower_bounds"]]
        lower_bound = bounds[-1] if bounds else -math.inf
        states.append(
            VBState(posterior, lower_bound, bounds, restart["iteration"], restart["converged"])
        )
    return states, priors


#: BayesianDiagGMM's steps, for :class:`~.checkpoint.Checkpoints`.
BAYESIAN_STEPS = StepFormat(ESTIMATOR, vb_step_files, read_vb_step)
