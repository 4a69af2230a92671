"""One EM step on chunked data: the E-step pass, its mean log-likelihood, the M-step.

Shared by the estimator's EM loop (:meth:`diaggmm_dist.mixture.DiagGMM.fit`), the growth of
the mixture by splitting (:mod:`diaggmm_dist.splitting`) and stepwise EM
(:meth:`~diaggmm_dist.mixture.DiagGMM.partial_fit`), so all three compute the E-step the
same way.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .kernels import split_statistics
from .mstep import m_step


def data_centre(weights, means, precisions):
    """The shift used in the kernels: the mixture's overall mean ``Σ_k w_k μ_k`` where it matters.

    The shift keeps x² and S2/N − μ² free of cancellation when the data sit far from the
    origin. For a feature whose mean is within one standard deviation (of the mixture) of
    zero, at most one bit is lost without it, so the shift is 0 there; when every feature is
    like that (standardised data), the kernels skip the subtraction altogether.
    """
    weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    means = np.asarray(means, dtype=np.float64)
    centre = weights @ means
    spread = weights @ (1.0 / np.asarray(precisions, dtype=np.float64) + means * means) - centre * centre
    return np.where(centre * centre <= spread, 0.0, centre)


def e_step(data_pass, weights, means, precisions):
    """One pass of Gaussian responsibilities under the given parameters.

    Parameters
    ----------
    data_pass : callable
        ``data_pass(responsibilities)`` runs one pass and returns the summed statistics; it
        has a ``dtype`` attribute (the compute dtype).
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)

    Returns
    -------
    stats : ndarray of shape (K + 1, n_stat_columns(D))
        The summed statistics, of data shifted by ``shift``.
    shift : ndarray of shape (D,)
    lower_bound : float
        Mean log-likelihood per unit of weight under the given parameters.

    Raises
    ------
    FloatingPointError
        The log-likelihood is not finite.
    """
    shift = data_centre(weights, means, precisions)
    coefficients = kernels.log_prob_coefficients(weights, means, precisions, shift, data_pass.dtype)
    stats = data_pass(("gaussian", coefficients))
    scalars = split_statistics(stats)[-1]
    lower_bound = scalars["objective"] / scalars["weight"]
    if not np.isfinite(lower_bound):
        raise FloatingPointError(
            "The log-likelihood is not finite: the data hold values too large for the compute "
            "dtype (try dtype='float64', or rescale the features)."
        )
    return stats, shift, lower_bound


def em_step(data_pass, weights, means, precisions, reg_covar):
    """One EM iteration (one data pass) from the given parameters.

    Returns
    -------
    lower_bound : float
        Mean log-likelihood of the parameters given (before the M-step, as scikit-learn).
    weights, means, covariances : ndarray
        The M-step's parameters.
    n_reseeded : int
        Collapsed components re-seeded by the M-step.
    """
    stats, shift, lower_bound = e_step(data_pass, weights, means, precisions)
    weights, means, covariances, reseeded = m_step(stats, reg_covar, shift, data_pass.resolution)
    return lower_bound, weights, means, covariances, reseeded
