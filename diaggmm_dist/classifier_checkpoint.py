"""A :class:`~diaggmm_dist.DiagGMMClassifier` fit's checkpoint and the fit that writes it.

The checkpoint is :class:`~diaggmm_dist.stores.checkpoint.Checkpoints` (the lease, atomic
steps, fallback, object storage) with the classifier's steps
(:data:`~diaggmm_dist.stores.classifier_steps.CLASSIFIER_STEPS`). Its identity holds the
settings (not ``max_iter``), the priors, ``classes_``, whether the fit is EM, the data's
fingerprint, the labels' (class indices fingerprinted as the data are, and the number of
unlabelled rows) and the sample weights': a checkpoint of other data, labels, weights or
settings, or of another estimator, is refused before any pass.

:func:`fit_classes` is the fit itself: Gaussian naive Bayes in one labelled pass (written as
the checkpoint's one step, the finished model), or semi-supervised EM from the labelled pass
(a step after it and after every iteration), continued from the checkpoint's latest step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from typing import Any

import numpy as np

from . import engine
from .classifier_fit import (
    check_em_start,
    class_moments,
    semi_supervised_em,
    short_shift,
    with_class_priors,
    within_class_components,
)
from .em import first_rows_center
from .em_settings import weights_fingerprint
from .locations import Location
from .stores.checkpoint import Checkpoints
from .stores.classifier_steps import CLASSIFIER_STEPS, ESTIMATOR, ClassifierState

__all__ = [
    "Where",
    "classifier_identity",
    "fit_classes",
    "labelled_moments",
    "open_classifier_checkpoint",
]

logger = logging.getLogger("diaggmm_dist")

#: The places a checkpoint may be given as (as :meth:`~diaggmm_dist.DiagGMM.fit` takes them).
Where = str | os.PathLike | Location | Any


def _json_label(label):
    """A class label as JSON holds it (numbers and strings as they are, others by repr)."""
    return label if isinstance(label, (int, float, str)) else repr(label)


def classifier_identity(
    est: Any, fingerprint: dict, labels: Any, priors: np.ndarray | None, weights: dict | None
) -> dict:
    """What a checkpoint must share with a fit of the ``DiagGMMClassifier`` ``est`` (JSON-able).

    Parameters
    ----------
    est : DiagGMMClassifier
        The estimator: its settings (``max_iter`` and ``verbose`` are not part of it).
    fingerprint : dict
        The data's fingerprint (:func:`diaggmm_dist.engine.fingerprint`).
    labels : RowLabels
        The checked labels (:func:`~diaggmm_dist.classifier_labels.row_labels`).
    priors : ndarray or None
        The checked priors.
    weights : dict, optional
        The sample weights' fingerprint (None: no weights).

    Returns
    -------
    dict
        ``{"config": {...}, "fingerprint": fingerprint}``; ``config["estimator"]`` is
        ``"DiagGMMClassifier"``.
    """
    em = labels.n_unlabelled > 0 or est.n_components_per_class > 1
    digest = None
    if priors is not None:
        digest = hashlib.sha256(np.ascontiguousarray(priors, dtype=np.float64)).hexdigest()
    config = {
        "estimator": ESTIMATOR,
        "n_components_per_class": int(est.n_components_per_class),
        "var_smoothing": float(est.var_smoothing),
        "tol": float(est.tol),
        "dtype": str(np.dtype(est.dtype)),
        "missing": est.missing,
        "priors": digest,
        "classes": [_json_label(c) for c in labels.classes.tolist()],
        "em": bool(em),
        # the labels are data: sampled as the rows are, and counted where they were checked
        "labels": engine.fingerprint(labels.indices[..., None]),
        "n_unlabelled": int(labels.n_unlabelled),
        "sample_weight": weights,
    }
    return {"config": config, "fingerprint": fingerprint}


def open_classifier_checkpoint(
    est: Any,
    where: Location | None,
    data_pass: Any,
    labels: Any,
    priors: np.ndarray | None,
    overwrite: bool = False,
) -> contextlib.AbstractContextManager[Checkpoints | None]:
    """The checkpoint of a fit of ``est`` at ``where`` (None: none), its lease taken.

    Parameters
    ----------
    est : DiagGMMClassifier
    where : Location or None
        The checkpoint (:func:`~diaggmm_dist.em_settings.store_location`).
    data_pass : LabelledDataPass
        The fit's rows and weights (their fingerprints read a few chunks, not the data).
    labels : RowLabels
        The checked labels.
    priors : ndarray or None
        The checked priors.
    overwrite : bool, default=False
        Replace a checkpoint of another run (or estimator) instead of refusing it.

    Returns
    -------
    context manager
        Gives the :class:`~diaggmm_dist.stores.checkpoint.Checkpoints` (None without
        ``where``) and releases its lease on exit.

    Raises
    ------
    CheckpointMismatchError, CheckpointInUseError, CheckpointError
        As :class:`~diaggmm_dist.stores.checkpoint.Checkpoints` raises them.
    """
    if where is None:
        return contextlib.nullcontext()
    identity = classifier_identity(
        est,
        engine.fingerprint(data_pass.X),
        labels,
        priors,
        weights_fingerprint(data_pass.weights),
    )
    return Checkpoints(where, identity, overwrite, steps=CLASSIFIER_STEPS)


def labelled_moments(data_pass: Any, n_classes: int, var_smoothing: float):
    """One labelled pass: every class's moments, and ``var_smoothing``'s epsilon.

    Returns
    -------
    moments : ClassMoments
    epsilon : float
    """
    shift = short_shift(first_rows_center(data_pass.X))
    stats = data_pass(("labels", shift, n_classes, data_pass.dtype))
    moments = class_moments(stats, n_classes, shift)
    return moments, float(var_smoothing * moments.data_variance.max())


def fit_classes(
    est: Any,
    data_pass: Any,
    labels: Any,
    priors: np.ndarray | None,
    store: Checkpoints | None = None,
) -> ClassifierState:
    """The fitted state of ``est`` on ``data_pass``'s rows, continuing ``store``'s latest step.

    Parameters
    ----------
    est : DiagGMMClassifier
        Its settings.
    data_pass : LabelledDataPass
    labels : RowLabels
    priors : ndarray or None
        The checked priors.
    store : Checkpoints, optional
        A checkpoint of :data:`~diaggmm_dist.stores.classifier_steps.CLASSIFIER_STEPS`.

    Returns
    -------
    ClassifierState
        Naive Bayes: no lower bound, converged. EM: its history.
    """
    m = est.n_components_per_class
    em = labels.n_unlabelled > 0 or m > 1
    state = store.latest() if store is not None else None
    if state is not None:
        logger.info(
            "resuming from checkpoint after iteration %d",
            len(state.lower_bounds),
            extra={"resumed_iteration": len(state.lower_bounds)},
        )
    else:
        moments, epsilon = labelled_moments(data_pass, len(labels.classes), est.var_smoothing)
        weights = moments.counts / moments.counts.sum()
        variances = moments.variances + epsilon
        if not em:
            weights = weights if priors is None else priors
            state = ClassifierState(
                moments.counts, epsilon, weights, moments.means, variances, [], True, 0
            )
            if store is not None:
                store.save(state)  # the finished model, the one step
            return state
        check_em_start(moments, variances, labels.classes)
        weights, means, variances, classes_of = within_class_components(
            weights, moments.means, variances, m
        )
        weights = with_class_priors(weights, classes_of, priors)
        state = ClassifierState(moments.counts, epsilon, weights, means, variances, [], False, 0)
        if store is not None:
            store.save(state)  # the start: a resume skips the labelled pass
    if not em:
        return state
    return semi_supervised_em(
        data_pass,
        state,
        np.repeat(np.arange(len(labels.classes)), m),
        tol=est.tol,
        max_iter=est.max_iter,
        priors=priors,
        verbose=est.verbose,
        save=None if store is None else store.save,
    )
