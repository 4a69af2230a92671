"""Per-chunk numpy kernels: one block of rows in, a tiny block of statistics out.

This module knows numpy only (no dask, no I/O, no logging), so every function here can be
tested on its own and runs unchanged on a thread, a worker process or a remote machine.

The E-step of a block is two matrix products. With P = 1/σ², x_c = x − shift and
z = [x_c², x_c] (n × 2D),

    log w_k + log N(x | μ_k, σ_k) = z @ A + c,    A = [−½ Pᵀ ; (μ_c P)ᵀ]   (2D × K),
    c_k = log w_k − ½ (D log 2π + Σ_j μ_c,kj² P_kj − Σ_j log P_kj),

and the sufficient statistics are rᵀ z (the S2 and S1 blocks) and Σ_i r_ik. The shift is a
fixed per-feature offset near the data mean: it changes nothing mathematically but keeps
x² and S2/N − μ² free of cancellation when the data sit far from the origin, which matters
in float32.

Blocks are processed in cache-sized sub-blocks of ``SUB_ROWS`` rows; each sub-block's
partial sums are added into float64 accumulators, so accumulation is float64 even when
the compute dtype is float32.
"""

from __future__ import annotations

import numpy as np

#: Rows per sub-block: z (SUB_ROWS × 2D) and the (SUB_ROWS × K) responsibilities stay in cache.
SUB_ROWS = 4096

LOG_2PI = float(np.log(2.0 * np.pi))


def n_stat_columns(n_features: int) -> int:
    """Number of columns of a statistics block: [N_k, S1 (D), S2 (D)]."""
    return 2 * n_features + 1


def log_prob_coefficients(weights, means, precisions, shift, dtype):
    """Return the E-step matrix and offsets ``(A, c)`` for centred data.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
        Inverse variances.
    shift : ndarray of shape (D,)
        The offset subtracted from every row before the products.
    dtype : numpy dtype
        Compute dtype of the returned arrays.

    Returns
    -------
    A : ndarray of shape (2D, K)
    c : ndarray of shape (K,)
        ``[x_c², x_c] @ A + c`` is ``log w_k + log N(x | μ_k, σ_k)`` for every component.
    """
    weights = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    precisions = np.asarray(precisions, dtype=np.float64)
    centred = means - shift
    a = np.concatenate([-0.5 * precisions, centred * precisions], axis=1).T
    with np.errstate(divide="ignore"):  # a zero weight is a component that is never chosen
        log_w = np.log(weights)
    c = log_w - 0.5 * (
        means.shape[1] * LOG_2PI + np.sum(centred * centred * precisions, axis=1) - np.sum(np.log(precisions), axis=1)
    )
    return np.ascontiguousarray(a, dtype=dtype), c.astype(dtype)


def distance_coefficients(centers, shift, dtype):
    """Return ``(A, c)`` so that ``[x_c², x_c] @ A + c`` is the squared distance to each center."""
    centers = np.asarray(centers, dtype=np.float64)
    centred = centers - shift
    n_components, n_features = centers.shape
    a = np.concatenate([np.ones((n_features, n_components)), -2.0 * centred.T], axis=0)
    c = np.sum(centred * centred, axis=1)
    return np.ascontiguousarray(a, dtype=dtype), c.astype(dtype)


def _fill_squares_and_values(x, shift, out):
    """Write ``[(x − shift)², x − shift]`` into ``out`` (n × 2D) in out's dtype."""
    d = x.shape[1]
    centred = out[:, d:]
    np.subtract(x, shift, out=centred, casting="unsafe")
    np.multiply(centred, centred, out=out[:, :d])
    return out


def gaussian_responsibilities(z, a, c):
    """Responsibilities and per-row log-likelihood of one sub-block (log-sum-exp).

    Returns
    -------
    resp : ndarray of shape (n, K)
    log_norm : ndarray of shape (n,)
        ``log p(x_i)`` for each row.
    """
    resp = z @ a
    resp += c
    top = resp.max(axis=1, keepdims=True)
    resp -= top
    np.exp(resp, out=resp)
    total = resp.sum(axis=1, keepdims=True)
    resp /= total
    return resp, top[:, 0] + np.log(total[:, 0])


def nearest_center_responsibilities(z, a, c):
    """One-hot responsibilities of the nearest center and each row's squared distance to it."""
    dist = z @ a
    dist += c
    nearest = dist.argmin(axis=1)
    rows = np.arange(dist.shape[0])
    resp = np.zeros_like(dist)
    resp[rows, nearest] = 1.0
    return resp, dist[rows, nearest]


def random_responsibilities(n_rows, n_components, seed, first_row, dtype):
    """Uniform random responsibilities (rows normalised), reproducible per global row.

    Row ``i`` of the data always gets the same numbers for the same ``seed``, whatever
    block it falls in: the counter-based Philox generator is advanced to the row's offset.
    """
    first = first_row * n_components
    bitgen = np.random.Philox(key=seed)
    bitgen.advance(first // 4)  # Philox yields four 64-bit words per counter step
    skip = first % 4
    draws = np.random.Generator(bitgen).random(skip + n_rows * n_components)[skip:]
    resp = draws.reshape(n_rows, n_components).astype(dtype)
    resp /= resp.sum(axis=1, keepdims=True)
    return resp


def chunk_statistics(x, shift, dtype, responsibilities, count_nonfinite=False, first_row=0):
    """Sufficient statistics of one block of rows.

    Parameters
    ----------
    x : ndarray of shape (n, D)
        Any real dtype; converted to ``dtype`` one sub-block at a time.
    shift : ndarray of shape (D,)
    dtype : numpy dtype
        Compute dtype (float32 or float64).
    responsibilities : tuple
        ``("gaussian", A, c)``, ``("nearest", A, c)`` or ``("random", n_components, seed)``.
    count_nonfinite : bool
        Count NaN and infinite values of ``x`` (used on the first pass of a fit).
    first_row : int
        Global index of the block's first row (only the random responsibilities use it).

    Returns
    -------
    stats : ndarray of shape (K + 1, 2D + 1), float64
        Row k is ``[N_k, S1_k (D), S2_k (D)]``; the last row is
        ``[objective, n_rows, n_nonfinite, 0, ...]`` where the objective is Σ log p(x_i) for
        the Gaussian responsibilities and the sum of squared distances for the nearest ones.
    """
    kind = responsibilities[0]
    n, d = x.shape
    k = responsibilities[1] if kind == "random" else responsibilities[2].shape[0]
    shift = shift.astype(dtype)
    stats = np.zeros((k + 1, n_stat_columns(d)), dtype=np.float64)
    mass = stats[:k, 0]
    moments = np.zeros((k, 2 * d), dtype=np.float64)  # [S2 | S1], the order of z's columns
    objective = 0.0
    nonfinite = 0
    z_buffer = np.empty((min(n, SUB_ROWS), 2 * d), dtype=dtype)
    # NaN or inf in the data make the statistics non-finite; callers report that clearly.
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, n, SUB_ROWS):
            xb = x[start : start + SUB_ROWS]
            if count_nonfinite and xb.dtype.kind == "f":
                nonfinite += int(xb.size - np.count_nonzero(np.isfinite(xb)))
            z = _fill_squares_and_values(xb, shift, z_buffer[: xb.shape[0]])
            if kind == "gaussian":
                resp, row_objective = gaussian_responsibilities(z, responsibilities[1], responsibilities[2])
            elif kind == "nearest":
                resp, row_objective = nearest_center_responsibilities(z, responsibilities[1], responsibilities[2])
            else:
                resp = random_responsibilities(xb.shape[0], k, responsibilities[2], first_row + start, dtype)
                row_objective = np.zeros(0)
            mass += resp.sum(axis=0, dtype=np.float64)
            moments += resp.T @ z
            objective += float(row_objective.sum(dtype=np.float64))
    stats[:k, 1 : d + 1] = moments[:, d:]
    stats[:k, d + 1 :] = moments[:, :d]
    stats[k, 0] = objective
    stats[k, 1] = n
    stats[k, 2] = nonfinite
    return stats


def weighted_log_prob(x, shift, a, c):
    """``log w_k + log N(x_i | μ_k, σ_k)`` for every row and component, shape (n, K)."""
    z = np.empty((x.shape[0], 2 * x.shape[1]), dtype=a.dtype)
    out = _fill_squares_and_values(x, shift.astype(a.dtype), z) @ a
    out += c
    return out


def row_labels(x, shift, a, c):
    """Most probable component of every row (int64); -1 where the row is not finite."""
    wlp = weighted_log_prob(x, shift, a, c)
    labels = wlp.argmax(axis=1)
    labels[~np.isfinite(wlp.max(axis=1))] = -1
    return labels


def row_responsibilities(x, shift, a, c):
    """Posterior probabilities of the components for every row, shape (n, K)."""
    resp, _ = gaussian_responsibilities(_fill_squares_and_values(x, shift.astype(a.dtype), np.empty((x.shape[0], 2 * x.shape[1]), dtype=a.dtype)), a, c)
    return resp


def row_log_likelihood(x, shift, a, c):
    """``log p(x_i)`` of every row (log-sum-exp over components), float64."""
    wlp = weighted_log_prob(x, shift, a, c)
    top = wlp.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return (top[:, 0] + np.log(np.exp(wlp - top).sum(axis=1))).astype(np.float64)
