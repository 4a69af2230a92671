"""Variational Bayes for diagonal mixtures on summed statistics: scikit-learn's formulas.

The variational posterior of ``sklearn.mixture.BayesianGaussianMixture(covariance_type="diag")``
depends on the data only through the statistics of a pass (:mod:`diaggmm_dist.kernels`):
N_k = Σ r, S1 = Σ r·x_c, S2 = Σ r·x_c² of rows shifted by ``shift``. :func:`vb_m_step` is
its M-step (``_estimate_weights``, ``_estimate_means``, ``_estimate_wishart_diag``) on them:

    n_k = N_k + 10 ε,  x̄_k = S1/n_k + shift,  s_k = S2/n_k − (S1/n_k)² + reg_covar
    β_k = β₀ + n_k,  m_k = (β₀ m₀ + n_k x̄_k) / β_k,  ν_k = ν₀ + n_k
    σ²_k = (ψ₀ + n_k (s_k + β₀/β_k (x̄_k − m₀)²)) / ν_k

and the weights' Dirichlet (or stick-breaking Beta) parameters from n_k. The E-step is the
Gaussian one with precisions 1/σ²_k and, in place of log w_k, the per-component constant of
:func:`e_step_log_weights` (``_estimate_log_weights`` + the constant of ``_estimate_log_prob``).

:func:`lower_bound` is ``_compute_lower_bound``: its only data term, Σ_i Σ_k r_ik log r_ik,
comes from the same statistics, since log r_ik = score_ik − log p(x_i) and score_ik is
``offset_k + linear_k·x_c + square_k·x_c²`` (:class:`~diaggmm_dist.kernels.Coefficients`):
Σ r·log r = Σ_k (offset_k N_k + linear_k·S1_k + square_k·S2_k) − Σ_i log p(x_i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import betaln, digamma, gammaln

from .kernels import split_statistics

EPS = float(np.finfo(np.float64).eps)
#: The choices of ``weight_concentration_prior_type``, as scikit-learn's.
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True)
class Priors:
    """The priors of a variational fit (scikit-learn's ``*_prior_`` attributes, float64).

    Parameters
    ----------
    prior_type : {"dirichlet_process", "dirichlet_distribution"}
        The weights' prior.
    weight_concentration : float
        γ₀ (``weight_concentration_prior_``).
    mean_precision : float
        β₀.
    mean : ndarray of shape (D,)
        m₀.
    degrees_of_freedom : float
        ν₀.
    covariance : ndarray of shape (D,)
        ψ₀.
    """

    prior_type: str
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: np.ndarray


@dataclass(frozen=True)
class Posterior:
    """The variational posterior of a diagonal mixture (scikit-learn's fitted attributes).

    Parameters
    ----------
    prior_type : {"dirichlet_process", "dirichlet_distribution"}
        How ``weight_concentration`` reads.
    weight_concentration : ndarray of shape (K,) or tuple of two
        The Dirichlet's parameters, or the stick-breaking Betas' (a_k, b_k).
    mean_precision : ndarray of shape (K,)
        β_k.
    means : ndarray of shape (K, D)
        m_k.
    degrees_of_freedom : ndarray of shape (K,)
        ν_k.
    covariances : ndarray of shape (K, D)
        σ²_k, the Wishart scale divided by ν_k (scikit-learn's ``covariances_``).
    """

    prior_type: str
    weight_concentration: object
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: np.ndarray
    covariances: np.ndarray

    @property
    def precisions_cholesky(self) -> np.ndarray:
        """``1 / sqrt(covariances)``, as scikit-learn's ``_compute_precision_cholesky``."""
        return 1.0 / np.sqrt(self.covariances)

    @property
    def weights(self) -> np.ndarray:
        """The expected weights (scikit-learn's ``weights_``)."""
        if self.prior_type == "dirichlet_process":
            a, b = self.weight_concentration
            total = a + b
            weights = a / total * np.hstack((1, np.cumprod((b / total)[:-1])))
            return weights / np.sum(weights)
        return self.weight_concentration / np.sum(self.weight_concentration)


@dataclass
class VBState:
    """One restart's variational fit between two iterations (what a checkpoint holds of it)."""

    posterior: Posterior
    lower_bound: float  # of the last iteration (-inf before the first)
    lower_bounds: list = field(default_factory=list)  # this fit's iterations
    iteration: int = 0
    converged: bool = False


def priors_from_totals(
    stats: np.ndarray,
    shift: np.ndarray,
    prior_type: str,
    n_components: int,
    weight_concentration: float | None,
    mean_precision: float | None,
    mean: np.ndarray | None,
    degrees_of_freedom: float | None,
    covariance: np.ndarray | float | None,
) -> Priors:
    """The priors, with scikit-learn's defaults taken from a pass's totals over the components.

    Every row's responsibilities sum to one, so the statistics summed over the components are
    the data's own: Σw, Σw·x_c, Σw·x_c². The defaults are the data mean (``mean``) and
    variance with ddof=1 (``covariance``; Σw − 1 in the denominator with sample weights, as
    for rows repeated), γ₀ = 1/K, β₀ = 1 and ν₀ = D.

    Parameters
    ----------
    stats : ndarray of shape (K + 1, n_stat_columns(D))
        One model's statistics of a pass.
    shift : ndarray of shape (D,)
        The shift of its rows.
    prior_type : {"dirichlet_process", "dirichlet_distribution"}
        The weights' prior.
    n_components : int
        K.
    weight_concentration, mean_precision, mean, degrees_of_freedom, covariance : optional
        Given values (checked already); None takes the default. ``covariance`` may be a
        number, for every feature.

    Returns
    -------
    Priors

    Raises
    ------
    ValueError
        ``covariance`` is None and the total weight is at most 1.
    """
    mass, _, s1, s2, _ = split_statistics(stats)
    d = s1.shape[1]
    total = float(mass.sum())
    centered = s1.sum(axis=0) / total
    if covariance is None:
        if not total > 1.0:
            raise ValueError(
                f"The default covariance_prior (the data variance, ddof=1) needs a total sample "
                f"weight > 1, got {total:g}: give covariance_prior, or larger weights."
            )
        variance = np.maximum(s2.sum(axis=0) / total - centered**2, 0.0)
        covariance = variance * total / (total - 1.0)
    return Priors(
        prior_type,
        1.0 / n_components if weight_concentration is None else float(weight_concentration),
        1.0 if mean_precision is None else float(mean_precision),
        centered + shift if mean is None else np.asarray(mean, dtype=np.float64),
        float(d) if degrees_of_freedom is None else float(degrees_of_freedom),
        np.broadcast_to(np.asarray(covariance, dtype=np.float64), (d,)).copy(),
    )


def vb_m_step(stats: np.ndarray, shift: np.ndarray, priors: Priors, reg_covar: float) -> Posterior:
    """The variational posterior from summed statistics (scikit-learn's ``_m_step``, diag).

    Parameters
    ----------
    stats : ndarray of shape (K + 1, n_stat_columns(D))
        One model's statistics, of rows shifted by ``shift``.
    shift : ndarray of shape (D,)
    priors : Priors
    reg_covar : float
        Added to the responsibility-weighted variances s_k.

    Returns
    -------
    Posterior

    Raises
    ------
    FloatingPointError
        The statistics are not finite (values too large for the compute dtype).
    """
    mass, _, s1, s2, _ = split_statistics(stats)
    if not (np.all(np.isfinite(mass)) and np.all(np.isfinite(s1)) and np.all(np.isfinite(s2))):
        raise FloatingPointError(
            "The sufficient statistics are not finite: the data hold values too large for the "
            "compute dtype (try dtype='float64', or rescale the features)."
        )
    nk = mass + 10 * EPS
    centered = s1 / nk[:, None]
    # shift-free: S2/n − (S1/n)² is the variance about x̄_k, clipped at 0 against rounding
    sk = np.maximum(s2 / nk[:, None] - centered**2, 0.0) + reg_covar
    xk = centered + shift
    if priors.prior_type == "dirichlet_process":
        concentration = (
            1.0 + nk,
            priors.weight_concentration + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0)),
        )
    else:
        concentration = priors.weight_concentration + nk
    beta0 = priors.mean_precision
    mean_precision = beta0 + nk
    means = (beta0 * priors.mean + nk[:, None] * xk) / mean_precision[:, None]
    dof = priors.degrees_of_freedom + nk
    diff = xk - priors.mean
    covariances = priors.covariance + nk[:, None] * (
        sk + (beta0 / mean_precision)[:, None] * np.square(diff)
    )
    covariances /= dof[:, None]
    return Posterior(priors.prior_type, concentration, mean_precision, means, dof, covariances)


def expected_log_weights(posterior: Posterior) -> np.ndarray:
    """E[log π_k] under the posterior (scikit-learn's ``_estimate_log_weights``)."""
    if posterior.prior_type == "dirichlet_process":
        a, b = posterior.weight_concentration
        digamma_sum = digamma(a + b)
        return digamma(a) - digamma_sum + np.hstack((0, np.cumsum(digamma(b) - digamma_sum)[:-1]))
    concentration = posterior.weight_concentration
    return digamma(concentration) - digamma(np.sum(concentration))


def e_step_log_weights(posterior: Posterior) -> np.ndarray:
    """The per-component term that stands for log w_k in the Gaussian E-step.

    ``_estimate_log_weights`` plus the constant of ``_estimate_log_prob``:
    −D/2 log ν_k + (D log 2 + Σ_j ψ((ν_k − j)/2) − D/β_k) / 2, with the Gaussian log-density
    of precisions ``1 / covariances`` (scikit-learn's normalized ones).

    Parameters
    ----------
    posterior : Posterior

    Returns
    -------
    ndarray of shape (K,)
    """
    d = posterior.means.shape[1]
    dof = posterior.degrees_of_freedom
    log_lambda = d * np.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(0, d)[:, None])), 0)
    constant = -0.5 * d * np.log(dof) + 0.5 * (log_lambda - d / posterior.mean_precision)
    return expected_log_weights(posterior) + constant


def sum_resp_log_resp(stats: np.ndarray, coefficients) -> float:
    """Σ_i w_i Σ_k r_ik log r_ik of a pass, from its statistics and its coefficients.

    Parameters
    ----------
    stats : ndarray of shape (K + 1, n_stat_columns(D))
        One model's statistics of a Gaussian pass with ``coefficients`` (rows fully observed).
    coefficients : Coefficients
        That model's coefficients alone (float64 for scikit-learn's precision).

    Returns
    -------
    float
    """
    mass, _, s1, s2, scalars = split_statistics(stats)
    d = s1.shape[1]
    products = coefficients.products.astype(np.float64)
    scores = (
        coefficients.offset[:, 0].astype(np.float64) @ mass
        + np.sum(products[:, :d] * s1)
        + np.sum(products[:, d:] * s2)
    )
    return float(scores - scalars["log_likelihood"])


def lower_bound(posterior: Posterior, resp_log_resp: float) -> float:
    """scikit-learn's ``_compute_lower_bound`` (diag) of a posterior and Σ r log r.

    Parameters
    ----------
    posterior : Posterior
        After the M-step.
    resp_log_resp : float
        Σ r log r of the E-step before it (:func:`sum_resp_log_resp`).

    Returns
    -------
    float
        The lower bound, up to scikit-learn's dropped constants (a total, not a mean).
    """
    d = posterior.means.shape[1]
    dof = posterior.degrees_of_freedom
    log_det = np.sum(np.log(posterior.precisions_cholesky), axis=1) - 0.5 * d * np.log(dof)
    log_wishart = -np.sum(
        dof * log_det
        + dof * d * 0.5 * math.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(d)[:, None])), 0)
    )
    if posterior.prior_type == "dirichlet_process":
        log_norm_weight = -np.sum(betaln(*posterior.weight_concentration))
    else:
        concentration = posterior.weight_concentration
        log_norm_weight = gammaln(np.sum(concentration)) - np.sum(gammaln(concentration))
    return float(
        -resp_log_resp
        - log_wishart
        - log_norm_weight
        - 0.5 * d * np.sum(np.log(posterior.mean_precision))
    )
