"""Per-row results of a block of rows under one model: labels, responsibilities, log p(x)."""

from __future__ import annotations

import numpy as np

from .blocks import component_log_scores, native_order, normalize_log_scores, stacked_rows


def _responsibilities(x, coef, missing):
    """Responsibilities (K, n) and ``log p(x_i)`` (n,) of rows under the missing-value policy, and
    which rows can be scored (None: all that are finite)."""
    x = native_order(x)
    n, d = x.shape
    dtype = coef.dtype
    buffer = np.empty((n, 2 * d), dtype)
    observed = ~np.isnan(x) if (missing != "error" and x.dtype.kind == "f") else None
    if observed is None or observed.all():
        observed = usable = mask = None
    elif missing == "drop":
        usable, mask = observed.all(axis=1), None
    else:
        usable, mask = observed.any(axis=1), observed.astype(dtype)
    scores, offset = component_log_scores(stacked_rows(x, coef.shift, buffer, observed), coef, mask)
    return scores, normalize_log_scores(scores, offset).log_likelihood[0], usable


def row_summary(x: np.ndarray, coef, missing: str = "error") -> np.ndarray:
    """Per row: ``[label, max responsibility, log p(x_i)]`` as float64 (n, 3).

    Rows that cannot be scored (non-finite values; with ``"drop"`` any NaN; with
    ``"marginalize"`` no observed feature) get label -1 and NaN.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        scores, log_likelihood, usable = _responsibilities(x, coef, missing)
        finite = (
            np.isfinite(log_likelihood) if usable is None else np.isfinite(log_likelihood) & usable
        )
        out = np.empty((x.shape[0], 3))
        out[:, 0] = np.where(finite, scores.argmax(axis=0), -1)
        out[:, 1] = np.where(finite, scores.max(axis=0), np.nan)
        out[:, 2] = np.where(finite, log_likelihood, np.nan)
    return out


def row_labels(x: np.ndarray, coef, missing: str = "error") -> np.ndarray:
    """Most probable component of every row (int64); -1 where the row cannot be scored."""
    return row_summary(x, coef, missing)[:, 0].astype(np.int64)


def row_responsibilities(x: np.ndarray, coef, missing: str = "error") -> np.ndarray:
    """Posterior probabilities of the components for every row, shape (n, K); NaN where unscored."""
    with np.errstate(invalid="ignore", over="ignore"):
        scores, _, usable = _responsibilities(x, coef, missing)
        if usable is not None:
            scores[:, ~usable] = np.nan
    return np.ascontiguousarray(scores.T)


def row_log_likelihood(x: np.ndarray, coef, missing: str = "error") -> np.ndarray:
    """``log p(x_i)`` of every row (over its observed features), float64; NaN where unscored."""
    return row_summary(x, coef, missing)[:, 2]
