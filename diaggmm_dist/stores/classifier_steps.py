"""The steps of a :class:`~diaggmm_dist.DiagGMMClassifier` training checkpoint: the
:class:`~.checkpoint_root.StepFormat` :data:`CLASSIFIER_STEPS`.

The checkpoint is DiagGMM's (:mod:`.checkpoint`: its root, lease, pointer, atomic step writes,
fallback to an older step), its root's attribute ``estimator`` is ``"DiagGMMClassifier"``, and
a step holds the fit's one state (a classifier has no restarts)::

    step-00000007/
        zarr.json   attributes: state, the step's completion mark: shape [K, D], n_classes,
                    epsilon (var_smoothing's, added to every variance), iteration,
                    lower_bounds, converged and n_reseeded
        planes/     float64, flat: the labelled weight of every class (n_classes values), the
                    weights (K), means (K x D) and covariances (K x D)

Semi-supervised EM writes a step after its labelled pass (iteration 0, the start) and after
every iteration. Gaussian naive Bayes (every row labelled, one component per class) writes
one step, its finished model (iteration 1, no lower bound, converged).

A step is valid with the completion mark, the run's K, D and number of classes (checked before
``planes`` is read, which bounds the read), finite values, weights and labelled weights >= 0,
``epsilon`` >= 0, variances > 0 in EM (>= 0 in naive Bayes, as ``GaussianNB`` allows), and an
iteration and a ``converged`` flag that match the lower-bound history (EM stops when a change
is below ``tol``); anything else is a :class:`~.model_checks.ModelStoreError`, and
:mod:`.checkpoint` falls back to the step before.
"""

from __future__ import annotations

import math
import reprlib
from typing import NamedTuple

import numpy as np

from .checkpoint_root import StepFormat, is_int, is_number, normalized
from .checkpoint_steps import PLANE_CHUNK, read_planes
from .model_checks import ModelStoreError, check_values
from .zarr_groups import rendered

__all__ = ["CLASSIFIER_STEPS", "ClassifierState", "ESTIMATOR", "classifier_step_files"]

#: The root's ``estimator`` attribute of a DiagGMMClassifier checkpoint.
ESTIMATOR = "DiagGMMClassifier"


class ClassifierState(NamedTuple):
    """A classifier fit's state: what a step holds."""

    class_count: np.ndarray  # (C,): labelled weight of every class
    epsilon: float  # added to every variance
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    covariances: np.ndarray  # (K, D)
    lower_bounds: list  # one per EM iteration (none in naive Bayes)
    converged: bool
    n_reseeded: int


def classifier_step_files(name: str, state: ClassifierState) -> dict[str, bytes]:
    """The files of step ``name`` holding ``state``.

    Parameters
    ----------
    name : str
        The step (``step-NNNNNNNN``).
    state : ClassifierState

    Returns
    -------
    dict
        Keys under the checkpoint's root and their bytes; the step's ``zarr.json`` (which
        holds the completion mark ``state``) must be written last.
    """
    arrays = (state.class_count, state.weights, state.means, state.covariances)
    planes = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])

    def write(group):
        # NaN fill: a chunk never written fails validation, not reads as 0
        group.create_array(
            "planes", data=planes, chunks=(min(planes.size, PLANE_CHUNK),), fill_value=np.nan
        )

    mark = {
        "shape": list(np.shape(state.means)),
        "n_classes": len(state.class_count),
        "epsilon": float(state.epsilon),
        "iteration": len(state.lower_bounds),
        "lower_bounds": [float(v) for v in state.lower_bounds],
        "converged": bool(state.converged),
        "n_reseeded": int(state.n_reseeded),
    }
    files = rendered(write, normalized({"state": mark}))
    return {f"{name}/{key}": data for key, data in files.items()}


def _check_state(mark, k, d, n_classes, em, tol, where):
    """Raise ModelStoreError unless the mark is of the run's shape and types, and its iteration
    and ``converged`` flag match its lower-bound history."""
    if not isinstance(mark, dict):
        raise ModelStoreError(
            f"{where} is incomplete: its mark 'state' is {reprlib.repr(mark)}, not an object"
        )
    for name, valid in (
        ("shape", lambda v: v == [k, d]),
        ("n_classes", lambda v: v == n_classes and is_int(v)),
        ("epsilon", lambda v: is_number(v) and v >= 0),
        ("iteration", is_int),
        ("converged", lambda v: isinstance(v, bool)),
        ("n_reseeded", is_int),
        ("lower_bounds", lambda v: isinstance(v, list) and all(is_number(b) for b in v)),
    ):
        if not valid(mark.get(name)):
            raise ModelStoreError(
                f"{where}: attribute {name!r} is {reprlib.repr(mark.get(name))}"
                + (f" (this run's is [{k}, {d}])" if name == "shape" else "")
            )
    bounds = mark["lower_bounds"]
    if len(bounds) != mark["iteration"]:
        raise ModelStoreError(
            f"{where}: iteration {mark['iteration']} disagrees with its {len(bounds)} lower "
            "bound(s)"
        )
    if not em:  # naive Bayes: one pass, no lower bound, finished
        if bounds or not mark["converged"]:
            raise ModelStoreError(f"{where}: a naive Bayes step holds EM's history")
        return
    # converged exactly when EM's own test says so (a flipped flag ends or extends the fit)
    change = abs(bounds[-1] - bounds[-2]) if len(bounds) >= 2 else math.inf
    if mark["converged"] != bool(change < tol):
        raise ModelStoreError(
            f"{where}: attribute 'converged' is {mark['converged']}, but its last lower-bound "
            f"change is {change:.3e} (tol {tol})"
        )


def read_classifier_step(root, name: str, identity: dict) -> ClassifierState:
    """The state in step ``name`` of the checkpoint group ``root``, checked.

    Parameters
    ----------
    root : zarr.Group
        The checkpoint's root group.
    name : str
        The step.
    identity : dict
        The run's identity: its ``config`` gives ``classes``, ``n_components_per_class``,
        ``em`` and ``tol``, its ``fingerprint`` the data's shape (the last axis: D).

    Returns
    -------
    ClassifierState

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
    mark = dict(group.attrs).get("state")
    n_classes = len(config["classes"])
    k, d = n_classes * config["n_components_per_class"], fingerprint["shape"][-1]
    _check_state(mark, k, d, n_classes, config["em"], config["tol"], where)
    planes = read_planes(group, n_classes + k + 2 * k * d, where)
    check_values(planes, "planes", planes.shape, where)
    class_count = planes[:n_classes].copy()
    weights = planes[n_classes : n_classes + k].copy()
    means = planes[n_classes + k : n_classes + k + k * d].reshape(k, d).copy()
    covariances = planes[n_classes + k + k * d :].reshape(k, d).copy()
    for array, values, low in (
        ("class counts", class_count, 0.0),
        ("weights", weights, 0.0),
        ("covariances", covariances, 0.0),
    ):
        bad = values <= low if (array == "covariances" and config["em"]) else values < low
        if bad.any():
            relation = "<= 0" if array == "covariances" and config["em"] else "< 0"
            raise ModelStoreError(f"{where}: {int(bad.sum())} of its {array} are {relation}")
    return ClassifierState(
        class_count,
        float(mark["epsilon"]),
        weights,
        means,
        covariances,
        [float(v) for v in mark["lower_bounds"]],
        mark["converged"],
        mark["n_reseeded"],
    )


#: DiagGMMClassifier's steps, for :class:`~.checkpoint.Checkpoints`.
CLASSIFIER_STEPS = StepFormat(ESTIMATOR, classifier_step_files, read_classifier_step)
