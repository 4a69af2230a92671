"""Per-component coefficients: one matrix product of them with the stacked rows scores them all."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..parameters import MixtureParameters

LOG_2PI = float(np.log(2.0 * np.pi))


class Coefficients(NamedTuple):
    """Per-component log-score coefficients for rows centered by ``shift``.

    ``shift`` is float64 whatever the compute dtype (the dtype of the other fields, :attr:`dtype`).

    For a fully observed row, ``products @ [x_c | x_c²] + offset``; for a partially observed
    one (mask m), ``products @ [m x_c | m x_c²] + feature @ m + log_weight`` (``offset`` is
    ``feature.sum(1) + log_weight``). ``products`` is the "linear" matrix beside the "square" one.
    """

    shift: np.ndarray  # (D,), float64
    products: np.ndarray  # (K, 2D): [linear | square], to multiply the stacked rows [x_c | x_c²]
    offset: np.ndarray  # (K, 1)
    feature: np.ndarray  # (K, D)
    log_weight: np.ndarray  # (K, 1)
    groups: tuple = ()  # components of each stacked model (see stack_coefficients); () is one model

    @property
    def dtype(self) -> np.dtype:
        """The compute dtype."""
        return self.products.dtype

    @property
    def n_components(self) -> int:
        return self.offset.shape[0]

    @property
    def model_sizes(self) -> tuple:
        """Components of each model whose coefficients are stacked here."""
        return self.groups or (self.n_components,)


def stack_coefficients(models: list) -> Coefficients:
    """Coefficients of several models (same shift and compute dtype) stacked along the components.

    One pass then computes every model's statistics: the products are one matrix product
    for all models; only the log-sum-exp runs per model.
    """
    first = models[0]
    if any(not np.array_equal(m.shift, first.shift) or m.dtype != first.dtype for m in models):
        raise ValueError("Stacked models must share the shift and the compute dtype.")
    parts = [
        np.concatenate([getattr(m, name) for m in models])
        for name in ("products", "offset", "feature", "log_weight")
    ]
    return Coefficients(first.shift, *parts, tuple(size for m in models for size in m.model_sizes))


def _coefficients(shift, square, linear, feature, log_weight, dtype):
    offset = feature.sum(axis=1) + log_weight
    values = (
        np.concatenate([linear, square], axis=1),
        offset[:, None],
        feature,
        log_weight[:, None],
    )
    # the shift stays float64: rounded to a float32 compute dtype it would not be the one the
    # M-step adds back
    return Coefficients(
        np.ascontiguousarray(shift, dtype=np.float64),
        *(np.ascontiguousarray(v, dtype=dtype) for v in values),
    )


def log_prob_coefficients(weights, means, precisions, shift, dtype) -> Coefficients:
    """Coefficients whose products give ``log w_k + log N(x | μ_k, σ_k)`` for every component.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
        Inverse variances.
    shift : ndarray of shape (D,)
        The offset subtracted from every row before the products (kept in float64).
    dtype : numpy dtype
        Compute dtype.

    Returns
    -------
    Coefficients
    """
    with np.errstate(divide="ignore"):  # a zero weight is a component that is never chosen
        log_w = np.log(np.asarray(weights, dtype=np.float64))
    return log_weight_coefficients(log_w, means, precisions, shift, dtype)


def log_weight_coefficients(log_weights, means, precisions, shift, dtype) -> Coefficients:
    """:func:`log_prob_coefficients` with any per-component term ``a_k`` in place of log w_k.

    Their products give ``a_k + log N(x | μ_k, σ_k)``: the E-step of variational Bayes
    (:mod:`diaggmm_dist.bayesian_mstep`), where ``a_k`` is E[log π_k] plus a constant of the
    component's posterior, and need not be normalized. ``-inf`` leaves a component out.

    Parameters
    ----------
    log_weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
        Inverse variances.
    shift : ndarray of shape (D,)
        The offset subtracted from every row before the products (kept in float64).
    dtype : numpy dtype
        Compute dtype.

    Returns
    -------
    Coefficients
    """
    log_weights, means, precisions, shift = (
        np.asarray(v, dtype=np.float64) for v in (log_weights, means, precisions, shift)
    )
    centered = means - shift
    feature = -0.5 * (LOG_2PI + centered * centered * precisions - np.log(precisions))
    return _coefficients(
        shift, -0.5 * precisions, centered * precisions, feature, log_weights, dtype
    )


def distance_coefficients(centers, shift, dtype) -> Coefficients:
    """Coefficients whose products give the squared distance of each row to each center."""
    centers, shift = np.asarray(centers, dtype=np.float64), np.asarray(shift, dtype=np.float64)
    centered = centers - shift
    return _coefficients(
        shift,
        np.ones_like(centered),
        -2.0 * centered,
        centered * centered,
        np.zeros(centered.shape[0]),
        dtype,
    )


def data_center(weights: np.ndarray, means: np.ndarray, precisions: np.ndarray) -> np.ndarray:
    """The shift used in the kernels: the mixture's overall mean ``Σ_k w_k μ_k`` where it matters.

    The shift keeps x² and S2/N − μ² free of cancellation when the data sit far from the
    origin. For a feature whose mean is within one standard deviation (of the mixture) of
    zero, at most one bit is lost without it, so the shift is 0 there. It is float64 and the
    kernels subtract it before rounding to the compute dtype (see :mod:`diaggmm_dist.kernels`).

    Parameters
    ----------
    weights : ndarray of shape (K,)
        Mixing weights (normalized here).
    means : ndarray of shape (K, D)
        Component means.
    precisions : ndarray of shape (K, D)
        Inverse variances.

    Returns
    -------
    ndarray of shape (D,), float64
        The mixture's mean, 0 for the features where it is within one standard deviation of 0.
    """
    weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    means = np.asarray(means, dtype=np.float64)
    covariances = MixtureParameters.from_precisions(
        weights, means, np.asarray(precisions, dtype=np.float64)
    ).covariances
    center = weights @ means
    spread = weights @ (covariances + means * means) - center * center
    return np.where(center * center <= spread, 0.0, center)
