"""Per-chunk numpy kernels: one block of rows in, a tiny block of statistics out.

This module knows numpy only (no dask, no I/O, no logging), so every function here can be
tested on its own and runs unchanged on a thread, a worker process or a remote machine.

The E-step of a block is matrix products. With P = 1/σ² and x_c = x − shift,

    log w_k + log N(x | μ_k, σ_k) = (−½ P) x_c² + (μ_c P) x_c + c_k,
    c_k = log w_k − ½ (D log 2π + Σ_j μ_c,kj² P_kj − Σ_j log P_kj),

so a (K × D) "square" and "linear" matrix times x_c²ᵀ and x_cᵀ give every component's
log-density at once, and the sufficient statistics are r x_c², r x_c and Σ_i r_ik. Results
are laid out components × rows (K × n): the log-sum-exp reductions over components then
run across long contiguous rows instead of along rows of length K. The shift is a
fixed per-feature offset near the data mean: it changes nothing mathematically but keeps
x² and S2/N − μ² free of cancellation when the data sit far from the origin, which matters
in float32.

Blocks are processed in cache-sized sub-blocks of ``SUB_ROWS`` rows; each sub-block's
partial sums are added into float64 accumulators, so accumulation is float64 even when
the compute dtype is float32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Rows per sub-block: x_c, x_c² (SUB_ROWS × D) and responsibilities (K × SUB_ROWS) stay in cache.
SUB_ROWS = 4096

LOG_2PI = float(np.log(2.0 * np.pi))


class Coefficients(NamedTuple):
    """``square @ x_c²ᵀ + linear @ x_cᵀ + offset`` (K × n), with ``x_c = x − shift``."""

    shift: np.ndarray  # (D,)
    square: np.ndarray  # (K, D)
    linear: np.ndarray  # (K, D)
    offset: np.ndarray  # (K, 1)

    @property
    def n_components(self):
        return self.offset.shape[0]


def n_stat_columns(n_features: int) -> int:
    """Number of columns of a statistics block: [N_k, S1 (D), S2 (D)]."""
    return 2 * n_features + 1


def _coefficients(shift, square, linear, offset, dtype):
    return Coefficients(*(np.ascontiguousarray(v, dtype=dtype) for v in (shift, square, linear, offset[:, None])))


def log_prob_coefficients(weights, means, precisions, shift, dtype):
    """Coefficients whose products give ``log w_k + log N(x | μ_k, σ_k)`` for every component.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
        Inverse variances.
    shift : ndarray of shape (D,)
        The offset subtracted from every row before the products.
    dtype : numpy dtype
        Compute dtype.

    Returns
    -------
    Coefficients
    """
    weights, means, precisions, shift = (np.asarray(v, dtype=np.float64) for v in (weights, means, precisions, shift))
    centred = means - shift
    with np.errstate(divide="ignore"):  # a zero weight is a component that is never chosen
        log_w = np.log(weights)
    offset = log_w - 0.5 * (
        means.shape[1] * LOG_2PI + np.sum(centred * centred * precisions, axis=1) - np.sum(np.log(precisions), axis=1)
    )
    return _coefficients(shift, -0.5 * precisions, centred * precisions, offset, dtype)


def distance_coefficients(centers, shift, dtype):
    """Coefficients whose products give the squared distance of each row to each centre."""
    centers, shift = np.asarray(centers, dtype=np.float64), np.asarray(shift, dtype=np.float64)
    centred = centers - shift
    return _coefficients(shift, np.ones_like(centred), -2.0 * centred, np.sum(centred * centred, axis=1), dtype)


def centred_rows(x, shift, centred, squares):
    """Fill ``centred`` with ``x − shift`` and ``squares`` with its square (their dtype)."""
    np.subtract(x, shift, out=centred, casting="unsafe")
    np.multiply(centred, centred, out=squares)
    return centred, squares


def component_scores(centred, squares, coef):
    """``square @ squaresᵀ + linear @ centredᵀ + offset``, shape (K, n)."""
    scores = coef.square @ squares.T
    scores += coef.linear @ centred.T
    scores += coef.offset
    return scores


def normalise_log_scores(scores):
    """Turn log scores (K, n) into responsibilities in place (log-sum-exp); return ``log p(x_i)``."""
    top = scores.max(axis=0)
    scores -= top
    np.exp(scores, out=scores)
    total = scores.sum(axis=0)
    scores /= total
    return top + np.log(total)


def nearest_one_hot(distances):
    """One-hot responsibilities (K, n) of the nearest centre, in place; return the distances to it."""
    nearest = distances.argmin(axis=0)
    columns = np.arange(distances.shape[1])
    best = distances[nearest, columns]
    distances[:] = 0
    distances[nearest, columns] = 1
    return best


def random_responsibilities(n_rows, n_components, seed, first_row, dtype):
    """Uniform random responsibilities, shape (K, n), columns normalised, reproducible per row.

    Row ``i`` of the data always gets the same numbers for the same ``seed``, whatever
    block it falls in: the counter-based Philox generator is advanced to the row's offset.
    """
    first = first_row * n_components
    bitgen = np.random.Philox(key=seed)
    bitgen.advance(first // 4)  # Philox yields four 64-bit words per counter step
    skip = first % 4
    draws = np.random.Generator(bitgen).random(skip + n_rows * n_components)[skip:]
    resp = np.ascontiguousarray(draws.reshape(n_rows, n_components).T, dtype=dtype)
    resp /= resp.sum(axis=0)
    return resp


def chunk_statistics(x, responsibilities, count_nonfinite=False, first_row=0):
    """Sufficient statistics of one block of rows.

    Parameters
    ----------
    x : ndarray of shape (n, D)
        Any real dtype; converted to the compute dtype one sub-block at a time.
    responsibilities : tuple
        ``("gaussian", coef)`` (the E-step), ``("nearest", coef)`` (hard assignment to the
        nearest centre; ``coef`` from :func:`distance_coefficients`) or
        ``("random", shift, n_components, seed)``. The compute dtype is the shift's.
    count_nonfinite : bool
        Count NaN and infinite values of ``x`` (used on the first pass of a fit).
    first_row : int
        Global index of the block's first row (only the random responsibilities use it).

    Returns
    -------
    stats : ndarray of shape (K + 1, 2D + 1), float64
        Row k is ``[N_k, S1_k (D), S2_k (D)]`` of the shifted data; the last row is
        ``[objective, n_rows, n_nonfinite, 0, ...]`` where the objective is Σ log p(x_i) for
        the Gaussian responsibilities and the sum of squared distances for the nearest ones.
    """
    kind = responsibilities[0]
    if kind == "random":
        shift, k, seed = responsibilities[1:]
    else:
        coef = responsibilities[1]
        shift, k = coef.shift, coef.n_components
    n, d = x.shape
    dtype = shift.dtype
    rows = min(n, SUB_ROWS)
    centred_buffer, squares_buffer = np.empty((rows, d), dtype), np.empty((rows, d), dtype)
    mass = np.zeros(k)
    s1, s2 = np.zeros((k, d)), np.zeros((k, d))
    objective, nonfinite = 0.0, 0
    # NaN or inf in the data make the statistics non-finite; callers report that clearly.
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, n, SUB_ROWS):
            xb = x[start : start + SUB_ROWS]
            if count_nonfinite and xb.dtype.kind == "f":
                nonfinite += int(xb.size - np.count_nonzero(np.isfinite(xb)))
            m = xb.shape[0]
            centred, squares = centred_rows(xb, shift, centred_buffer[:m], squares_buffer[:m])
            if kind == "random":
                resp = random_responsibilities(m, k, seed, first_row + start, dtype)
            else:
                resp = component_scores(centred, squares, coef)
                if kind == "gaussian":
                    objective += float(normalise_log_scores(resp).sum(dtype=np.float64))
                else:
                    objective += float(nearest_one_hot(resp).sum(dtype=np.float64))
            mass += resp.sum(axis=1)
            s1 += resp @ centred
            s2 += resp @ squares
    stats = np.zeros((k + 1, n_stat_columns(d)))
    stats[:k, 0], stats[:k, 1 : d + 1], stats[:k, d + 1 :] = mass, s1, s2
    stats[k, :3] = objective, n, nonfinite
    return stats


def _log_scores(x, coef):
    rows, d = x.shape
    centred, squares = centred_rows(x, coef.shift, np.empty((rows, d), coef.shift.dtype), np.empty((rows, d), coef.shift.dtype))
    return component_scores(centred, squares, coef)


def row_labels(x, coef):
    """Most probable component of every row (int64); -1 where the row is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        scores = _log_scores(x, coef)
        labels = scores.argmax(axis=0)
        labels[~np.isfinite(scores.max(axis=0))] = -1
    return labels


def row_responsibilities(x, coef):
    """Posterior probabilities of the components for every row, shape (n, K)."""
    with np.errstate(invalid="ignore", over="ignore"):
        scores = _log_scores(x, coef)
        normalise_log_scores(scores)
    return np.ascontiguousarray(scores.T)


def row_log_likelihood(x, coef):
    """``log p(x_i)`` of every row (log-sum-exp over components), float64."""
    with np.errstate(invalid="ignore", over="ignore"):
        return normalise_log_scores(_log_scores(x, coef)).astype(np.float64)


def row_summary(x, coef):
    """Per row: ``[label, max responsibility, log p(x_i)]`` as float64 (n, 3); label -1 if not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        scores = _log_scores(x, coef)
        log_norm = normalise_log_scores(scores)
        finite = np.isfinite(log_norm)
        out = np.empty((x.shape[0], 3))
        out[:, 0] = np.where(finite, scores.argmax(axis=0), -1)
        out[:, 1] = np.where(finite, scores.max(axis=0), np.nan)
        out[:, 2] = log_norm
    return out
