"""Per-row class scores of a mixture whose components belong to classes (a classifier)."""

from __future__ import annotations

import numpy as np

from .blocks import native_order


def row_class_log_joint(
    x: np.ndarray,
    log_weights: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    component_classes: np.ndarray,
    n_classes: int,
    missing: str = "error",
) -> np.ndarray:
    """``log p(x_i, class c)`` of every row and class, float64 (n, n_classes).

    Each component's term is computed as scikit-learn's ``GaussianNB`` computes its joint
    log-likelihood, ``log w_k − ½ Σ_j log(2π σ²_kj) − ½ Σ_j (x_ij − μ_kj)² / σ²_kj``, directly
    from the differences (not by the E-step's matrix products, whose cancellation would cost
    digits where a variance is tiny); a class of several components takes their log-sum-exp.
    With ``missing="marginalize"`` the sums run over each row's observed features; rows that
    cannot be scored (non-finite values, with ``"drop"`` any NaN, with ``"marginalize"`` no
    observed feature) get NaN.

    Parameters
    ----------
    x : ndarray of shape (n, D)
    log_weights : ndarray of shape (K,)
        Log mixing weights (a class's prior times its component's weight within the class).
    means, variances : ndarray of shape (K, D)
    component_classes : ndarray of shape (K,)
        The class index of every component.
    n_classes : int
    missing : {"error", "drop", "marginalize"}

    Returns
    -------
    ndarray of shape (n, n_classes)
    """
    x = np.asarray(native_order(x), dtype=np.float64)
    observed = ~np.isnan(x) if missing == "marginalize" else None
    if observed is not None and observed.all():
        observed = None
    values = x if observed is None else np.where(observed, x, 0.0)
    scores = np.empty((x.shape[0], len(log_weights)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k, (log_weight, mean, variance) in enumerate(zip(log_weights, means, variances)):
            if observed is None:
                term = -0.5 * np.sum(np.log(2.0 * np.pi * variance))
                term = term - 0.5 * np.sum((values - mean) ** 2 / variance, axis=1)
            else:
                log_norm = np.log(2.0 * np.pi * variance)
                term = -0.5 * (observed @ log_norm)
                term = term - 0.5 * np.sum(observed * (values - mean) ** 2 / variance, axis=1)
            scores[:, k] = log_weight + term
        out = np.empty((x.shape[0], n_classes))
        for c in range(n_classes):
            own = scores[:, component_classes == c]
            if own.shape[1] == 1:
                out[:, c] = own[:, 0]
            else:
                top = own.max(axis=1, keepdims=True)
                top = np.where(np.isfinite(top), top, 0.0)
                out[:, c] = top[:, 0] + np.log(np.exp(own - top).sum(axis=1))
        unscored = ~np.isfinite(x).all(axis=1) if observed is None else ~observed.any(axis=1)
        if missing == "marginalize" and observed is not None:
            unscored |= np.isinf(x).any(axis=1)
        out[unscored] = np.nan
    return out
