"""The fits of :class:`~diaggmm_dist.classifier.DiagGMMClassifier` from summed statistics.

- :func:`class_moments`: one labelled pass (``("labels", ...)``, see
  :func:`diaggmm_dist.kernels.chunk_statistics`) gives every class's count, mean and
  variance, and the data's own variance (for ``var_smoothing``): Gaussian naive Bayes;
- :func:`merged_moments`: scikit-learn's ``GaussianNB._update_mean_variance`` (Chan, Golub
  and LeVeque's update), for ``partial_fit``;
- :func:`within_class_components`: a class's components started by splitting its one;
- :func:`semi_supervised_em`: EM where labelled rows keep their class (Nigam et al. 2000);
- the checks of the settings and priors, before any work.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any, NamedTuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .em import e_step
from .kernels import model_statistics, split_statistics
from .mstep import add_components_by_splitting, m_step, warn_reseeded
from .stores.classifier_steps import ClassifierState
from .validation import DTYPES, MISSING, is_int

logger = logging.getLogger("diaggmm_dist")


def check_classifier_settings(est: Any) -> None:
    """Refuse an out-of-range setting of a ``DiagGMMClassifier`` before any work.

    Raises
    ------
    ValueError
        The message names the setting and what it must be.
    """

    def real(value):
        return isinstance(value, numbers.Real) and bool(np.isfinite(value)) and value >= 0

    checks = [
        ("n_components_per_class", is_int(est.n_components_per_class)
         and est.n_components_per_class >= 1, "an integer >= 1"),
        ("var_smoothing", real(est.var_smoothing), "a finite number >= 0"),
        ("tol", real(est.tol), "a finite number >= 0"),
        ("max_iter", is_int(est.max_iter) and est.max_iter >= 0, "an integer >= 0"),
        ("chunk_size", est.chunk_size is None
         or (is_int(est.chunk_size) and est.chunk_size >= 1), "None or an integer >= 1"),
        ("dtype", isinstance(est.dtype, str) and est.dtype in DTYPES, f"one of {DTYPES}"),
        ("missing", est.missing in MISSING, f"one of {MISSING}"),
    ]  # fmt: skip
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(
                f"DiagGMMClassifier: {name} must be {expected}, got {getattr(est, name)!r}."
            )


def checked_priors(priors: Any, n_classes: int) -> np.ndarray | None:
    """``priors`` as float64, checked as ``GaussianNB`` checks them (None stays None).

    Raises
    ------
    ValueError
        Not one per class, not adding up to 1, or negative.
    """
    if priors is None:
        return None
    priors = np.asarray(priors, dtype=np.float64)
    if priors.shape != (n_classes,):
        raise ValueError(
            f"Number of priors must match number of classes: got {priors.size} priors "
            f"for {n_classes} classes."
        )
    if not np.isclose(priors.sum(), 1.0):
        raise ValueError(f"The sum of the priors should be 1, got {priors.sum()}.")
    if np.any(priors < 0):
        raise ValueError("Priors must be non-negative.")
    return priors


def check_em_start(moments: ClassMoments, variances: np.ndarray, classes: np.ndarray) -> None:
    """Refuse to start EM without a labelled row of weight > 0 in every class, or at zero variance.

    Raises
    ------
    ValueError
        A class without labelled weight (EM could not start its components), or a variance of
        0 (``var_smoothing`` is 0, or the rows are all one point: 1 sample, say).
    """
    empty = moments.counts <= 0
    if empty.any():
        raise ValueError(
            f"The class(es) {classes[empty].tolist()} have no labelled row with a weight > 0: "
            "EM starts every class from its labelled rows, so each class needs one."
        )
    if not np.all(variances > 0):
        raise ValueError(
            "EM (unlabelled rows, or several components per class) needs variances above 0, "
            "but var_smoothing times the largest variance of a feature is 0 (var_smoothing=0, "
            "or every row is the same point, e.g. 1 sample): set var_smoothing > 0 and give "
            "rows that differ."
        )


def partial_fit_start(model: Any, classes: Any) -> bool:
    """Whether this ``partial_fit`` call is the first; refuse one that cannot continue.

    Raises
    ------
    ValueError
        No ``classes`` on the first call, other ``classes`` than the first call's, or a
        model fitted by EM (naive Bayes statistics cannot continue it).
    """
    first = not hasattr(model, "theta_")
    if not first and model.lower_bounds_:
        raise ValueError(
            "partial_fit continues Gaussian naive Bayes, but this model was fitted by EM "
            "(it had unlabelled rows): fit a new DiagGMMClassifier with partial_fit."
        )
    if first and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if not first and classes is not None:
        if not np.array_equal(np.sort(np.asarray(classes)), model.classes_):
            raise ValueError(
                f"classes={np.asarray(classes).tolist()} is not the same as on the first call "
                f"to partial_fit, was: {model.classes_.tolist()}."
            )
    return first


def short_shift(center: np.ndarray) -> np.ndarray:
    """``center`` rounded to 8 significant bits, the shift of a labelled pass.

    Rows of few significant bits (integers, pixel values) minus it stay exact, so that a
    feature constant within a class gets a variance of exactly 0, as ``GaussianNB``'s.
    """
    mantissa, exponent = np.frexp(np.asarray(center, dtype=np.float64))
    return np.ldexp(np.round(np.ldexp(mantissa, 8)), exponent - 8)


class ClassMoments(NamedTuple):
    """Per-class (weighted) counts, means and variances, and the data's per-feature variance."""

    counts: np.ndarray  # (C,)
    means: np.ndarray  # (C, D)
    variances: np.ndarray  # (C, D), without any smoothing
    data_variance: np.ndarray  # (D,): of every usable row, unweighted


def class_moments(stats: np.ndarray, n_classes: int, shift: np.ndarray) -> ClassMoments:
    """The moments of a ``("labels", shift, n_classes, dtype)`` pass's summed statistics.

    A class without a labelled row has count 0 and mean and variance 0 (as ``GaussianNB``
    starts them). With missing values marginalized, each feature's own count is used.

    Parameters
    ----------
    stats : ndarray of shape (n_classes + 3, n_stat_columns(D))
    n_classes : int
    shift : ndarray of shape (D,)
        The pass's shift.

    Returns
    -------
    ClassMoments

    Raises
    ------
    FloatingPointError
        The statistics are not finite (values too large for the compute dtype).
    """
    classes, totals = model_statistics(stats, (n_classes, 1))
    counts, observed, s1, s2, _ = split_statistics(classes)
    if not (np.all(np.isfinite(s1)) and np.all(np.isfinite(s2))):
        raise FloatingPointError(
            "The class statistics are not finite: the data hold values too large for the "
            "compute dtype (try dtype='float64', or rescale the features)."
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        centered = np.where(observed > 0, s1 / observed, 0.0)
        variances = np.where(observed > 0, np.maximum(s2 / observed - centered**2, 0.0), 0.0)
        means = np.where(observed > 0, centered + shift, 0.0)
        _, all_observed, t1, t2, _ = split_statistics(totals)
        center = t1[0] / all_observed[0]
        data_variance = np.maximum(t2[0] / all_observed[0] - center**2, 0.0)
    return ClassMoments(counts.copy(), means, variances, np.nan_to_num(data_variance))


def merged_moments(n_past, mu, var, n_new, new_mu, new_var):
    """Moments of old and new rows together, as ``GaussianNB._update_mean_variance`` merges them.

    Parameters
    ----------
    n_past : float
        Weight of the rows behind ``mu`` and ``var``.
    mu, var : ndarray of shape (D,)
    n_new : float
        Weight of the new rows (0: nothing changes).
    new_mu, new_var : ndarray of shape (D,)
        Their mean and variance.

    Returns
    -------
    total_mu, total_var : ndarray of shape (D,)
    """
    if np.isclose(n_new, 0.0):
        return mu, var
    if n_past == 0:
        return new_mu, new_var
    n_total = float(n_past + n_new)
    total_mu = (n_new * new_mu + n_past * mu) / n_total
    total_ssd = n_past * var + n_new * new_var + (n_new * n_past / n_total) * (mu - new_mu) ** 2
    return total_mu, total_ssd / n_total


def within_class_components(weights, means, variances, n_per_class: int):
    """Each class's one component split into ``n_per_class`` (by ``add_components_by_splitting``).

    Returns
    -------
    weights : ndarray of shape (C * n_per_class,)
    means, variances : ndarray of shape (C * n_per_class, D)
    component_classes : ndarray of shape (C * n_per_class,)
    """
    parts = []
    for weight, mean, variance in zip(weights, means, variances):
        w, m, v = add_components_by_splitting([1.0], mean[None], variance[None], n_per_class - 1)
        parts.append((w * weight, m, v))
    return (
        np.concatenate([p[0] for p in parts]),
        np.vstack([p[1] for p in parts]),
        np.vstack([p[2] for p in parts]),
        np.repeat(np.arange(len(parts)), n_per_class),
    )


def with_class_priors(weights, component_classes, priors):
    """Weights rescaled so that each class's components add up to its prior (None: as they are)."""
    if priors is None:
        return weights
    totals = np.bincount(component_classes, weights, minlength=len(priors))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals[component_classes] > 0, weights / totals[component_classes], 0.0)
    return share * np.asarray(priors, dtype=np.float64)[component_classes]


def semi_supervised_em(
    data_pass,
    state: ClassifierState,
    component_classes,
    *,
    tol: float,
    max_iter: int,
    priors=None,
    verbose: int = 0,
    save=None,
) -> ClassifierState:
    """EM in which labelled rows keep their class and unlabelled rows get responsibilities.

    Every iteration is one labelled pass of ``data_pass``
    (:class:`~diaggmm_dist.classifier_labels.LabelledDataPass`): a row labelled c shares its
    responsibility among the components of class c only, an unlabelled row among all; then
    the M-step of :func:`diaggmm_dist.mstep.m_step` (``state.epsilon`` added to every
    variance). The lower bound is the mean of log p(x, c) over labelled rows and log p(x) over
    unlabelled ones, under the parameters before the step; EM stops when it changes by less
    than ``tol`` (a ``ConvergenceWarning`` if it never does). With ``priors``, each class's
    components keep weights adding up to its prior (the start's must already).

    Parameters
    ----------
    data_pass : LabelledDataPass
    state : ClassifierState
        Where EM stands: the start (no lower bound yet), or a checkpoint's state, which EM
        continues after its ``len(state.lower_bounds)`` iterations.
    component_classes : ndarray of shape (K,)
    tol, max_iter, priors, verbose
        The classifier's settings (``priors`` checked).
    save : callable, optional
        ``save(state)`` after every iteration (the checkpoint).

    Returns
    -------
    ClassifierState
        The parameters after the last M-step.
    """
    weights, means, variances = state.weights, state.means, state.covariances
    lower_bounds, converged, n_reseeded = (
        list(state.lower_bounds),
        state.converged,
        state.n_reseeded,
    )
    for iteration in range(len(lower_bounds) + 1, max_iter + 1):
        if converged:
            break
        precisions = 1.0 / variances
        stats, shift, lower_bound = e_step(data_pass, weights, means, precisions)
        weights, means, variances, reseeded = m_step(
            stats, state.epsilon, shift, data_pass.resolution
        )
        weights = with_class_priors(weights, component_classes, priors)
        warn_reseeded(reseeded, f"Iteration {iteration}")
        n_reseeded += reseeded
        change = lower_bound - lower_bounds[-1] if lower_bounds else np.inf
        lower_bounds.append(lower_bound)
        logger.info(
            "iteration %d lower bound %.8f change %.3e",
            iteration,
            lower_bound,
            change,
            extra={"iteration": iteration, "lower_bound": lower_bound, "change": change},
        )
        if verbose:
            print(f"  Iteration {iteration}\t lower bound {lower_bound:.5f}")
        converged = bool(abs(change) < tol)
        state = state._replace(
            weights=weights,
            means=means,
            covariances=variances,
            lower_bounds=list(lower_bounds),
            converged=converged,
            n_reseeded=n_reseeded,
        )
        if save is not None:
            save(state)
    if not converged and max_iter > 0:
        warnings.warn(
            f"Semi-supervised EM did not converge in {max_iter} iterations: increase max_iter "
            "or tol.",
            ConvergenceWarning,
        )
    return state
