"""Stepwise (online) EM: running sufficient statistics, one batch folded in at a time.

Stepwise EM (Cappé & Moulines 2009, "On-line expectation–maximization algorithm for latent
data models"; Liang & Klein 2009, "Online EM for unsupervised models") keeps ``s``, the
model's sufficient statistics **per unit of sample weight**, in the layout of
:func:`diaggmm_dist.kernels.chunk_statistics` (rows ``[N_k, S0_k, S1_k, S2_k]``; the last
row, the scalars, holds only a weight of 1). A batch ``b`` folds in as

    s ← (1 − η_t) s + η_t ŝ(b),    η_t = min(1, (t + learning_offset) ** (−learning_decay))

where ŝ(b) are the batch's statistics under the current parameters (one E-step pass)
divided by its total weight, and ``t`` is the number of batches folded in before ``b``.
The parameters are then the M-step of ``s`` (:func:`diaggmm_dist.mstep.m_step`). With
``learning_decay`` in (0.5, 1] the steps sum to infinity and their squares do not, the
condition under which stepwise EM converges to a stationary point of the likelihood of the
stream's distribution.

Statistics are of data shifted by a per-feature offset (see
:func:`diaggmm_dist.kernels.data_center`); :func:`shift_statistics` re-expresses ``s`` about the
offset of each new batch, so the offsets may move with the model.
"""

from __future__ import annotations

import numpy as np

from .kernels import SCALARS, n_stat_columns, split_statistics

#: Column of the scalars row that holds the (unit) weight of per-unit-weight statistics.
WEIGHT_COLUMN = SCALARS.index("weight")


def step_size(t, learning_decay, learning_offset):
    """η_t = (t + learning_offset) ** (−learning_decay), the weight of batch number ``t`` (from 0).

    At most 1: with ``t + learning_offset <= 1`` the batch replaces the statistics.
    """
    base = t + learning_offset
    return 1.0 if base <= 1 else float(base ** (-learning_decay))


def _with_unit_weight(stats):
    stats[-1] = 0.0
    stats[-1, WEIGHT_COLUMN] = 1.0
    return stats


def per_unit_weight(stats):
    """A batch's summed statistics divided by its total weight (scalars: a weight of 1)."""
    weight = split_statistics(stats)[-1]["weight"]
    return _with_unit_weight(stats / weight)


def shift_statistics(stats, old_shift, new_shift):
    """The same statistics, of data shifted by ``new_shift`` instead of ``old_shift``.

    With δ = old − new: x − new = (x − old) + δ, so S1 gains δ·S0 and S2 gains
    2δ·S1 + δ²·S0 (per feature, with S0 the per-feature mass).
    """
    delta = np.asarray(old_shift, dtype=np.float64) - np.asarray(new_shift, dtype=np.float64)
    out = stats.copy()
    _, s0, s1, s2, _ = split_statistics(stats)
    d = s0.shape[1]
    out[:-1, d + 1 : 2 * d + 1] = s1 + delta * s0
    out[:-1, 2 * d + 1 : 3 * d + 1] = s2 + (2.0 * delta) * s1 + delta * delta * s0
    return out


def implied_statistics(weights, means, covariances, reg_covar, shift):
    """Statistics per unit weight whose M-step gives back these parameters (its fixed point).

    What a model that has no running statistics (fitted by ``fit``, loaded from a store
    without them, or made by ``from_sklearn``) starts stepwise EM from: N_k = S0_kj = w_k,
    S1 = w_k (μ_k − shift), S2 = w_k (σ²_k − reg_covar + (μ_k − shift)²).
    """
    weights, means, covariances = (
        np.asarray(v, dtype=np.float64) for v in (weights, means, covariances)
    )
    k, d = means.shape
    centered = means - shift
    stats = np.zeros((k + 1, n_stat_columns(d)))
    stats[:k, 0] = weights
    stats[:k, 1 : d + 1] = weights[:, None]
    stats[:k, d + 1 : 2 * d + 1] = weights[:, None] * centered
    stats[:k, 2 * d + 1 : 3 * d + 1] = weights[:, None] * (
        np.maximum(covariances - reg_covar, 0.0) + centered**2
    )
    return _with_unit_weight(stats)


def fold(running, running_shift, batch, batch_shift, eta):
    """``(1 − η) running + η ŝ(batch)``, about the batch's shift.

    Parameters
    ----------
    running : ndarray or None
        Running statistics per unit weight, of data shifted by ``running_shift``; None for
        none yet (the batch's statistics are taken whole, whatever ``eta``).
    running_shift : ndarray of shape (D,) or None
    batch : ndarray
        The batch's summed statistics, of data shifted by ``batch_shift``.
    batch_shift : ndarray of shape (D,)
    eta : float
        The step size.

    Returns
    -------
    ndarray
        The new running statistics per unit weight, of data shifted by ``batch_shift``.
    """
    step = per_unit_weight(batch)
    if running is None:
        return step
    return _with_unit_weight(
        (1.0 - eta) * shift_statistics(running, running_shift, batch_shift) + eta * step
    )
