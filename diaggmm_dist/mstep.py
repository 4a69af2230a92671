"""The M-step: mixture parameters from summed sufficient statistics, with the safety rails.

Given the (K + 1, 3D + 1) block of :func:`diaggmm_dist.kernels.chunk_statistics` summed over
all chunks, this is scikit-learn's diagonal M-step:

    n_k = N_k + 10 ε,  w_k = n_k / Σ n_k,  μ_k = S1_k / n_k,  σ²_k = S2_k / n_k − μ_k² + reg_covar

where, with missing values marginalized, the per-feature mass S0_kj = Σ r·m takes the place of
n_k in μ and σ² (without missing values every S0_kj is exactly N_k), and with four additions
that never change a well-posed fit:

* the statistics are of shifted data (x − shift), so S2/n − μ² does not cancel when the data
  sit far from the origin, and the difference is clipped at zero before ``reg_covar``;
* variances are floored at ``VARIANCE_FLOOR`` times the feature's overall variance, so a
  component collapsing onto a few identical points cannot reach a zero variance (with
  ``reg_covar=0`` a variance at the floor is an error instead, as scikit-learn's is: the
  floor would otherwise set the model's likelihood, not the data);
* a component whose mass falls below ``MIN_COMPONENT_MASS`` rows is re-seeded by splitting
  the heaviest component in two along its widest feature (means ±0.2σ, weight halved), as
  speech-recognition toolkits do, instead of dividing by nothing;
* a live component that saw no observed value of a feature takes that feature's overall
  mean and variance.
"""

from __future__ import annotations

import warnings

import numpy as np

from .kernels import split_statistics

EPS = float(np.finfo(np.float64).eps)
#: A component holding less than this many rows' worth of responsibility is re-seeded.
MIN_COMPONENT_MASS = 1e-3
#: Variances never go below this fraction of the feature's overall variance.
VARIANCE_FLOOR = 1e-9
#: Split offset, in standard deviations of the split component's widest feature.
SPLIT_OFFSET = 0.2
#: scikit-learn's own message when a fit with reg_covar=0 meets a zero variance.
ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)


class ReseededComponentWarning(UserWarning):
    """A component lost all its mass and was re-seeded by splitting the heaviest one.

    Raised (as a warning) by the M-step of :meth:`DiagGMM.fit`, :meth:`DiagGMM.partial_fit`
    and :func:`~diaggmm_dist.selection.select_n_components`; the fitted model counts the
    components re-seeded in ``n_reseeded_``.

    Examples
    --------
    Turn it into an error, for a fit that must not re-seed (here raised by hand):

    >>> import warnings
    >>> from diaggmm_dist import ReseededComponentWarning
    >>> from diaggmm_dist.mstep import warn_reseeded
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", ReseededComponentWarning)
    ...     warn_reseeded(1, "Iteration 3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    diaggmm_dist.mstep.ReseededComponentWarning: Iteration 3: 1 component(s) lost all ...
    """


def warn_reseeded(reseeded: int, when: str) -> None:
    """Warn about components the M-step re-seeded.

    Parameters
    ----------
    reseeded : int
        How many; nothing is said for 0.
    when : str
        Where in the fit, e.g. ``"Iteration 3"``.
    """
    if reseeded:
        warnings.warn(
            f"{when}: {reseeded} component(s) lost all their mass and were re-seeded "
            "by splitting the heaviest component.",
            ReseededComponentWarning,
        )


def m_step(stats, reg_covar, shift, resolution=EPS):
    """Mixture parameters from summed sufficient statistics.

    Parameters
    ----------
    stats : ndarray of shape (K + 1, n_stat_columns(D))
        Summed statistics of data shifted by ``shift``.
    reg_covar : float
        Added to every variance.
    shift : ndarray of shape (D,)
    resolution : float
        Machine epsilon of the compute dtype: with ``reg_covar=0``, a feature whose overall
        spread is below this resolution of its magnitude counts as constant.

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    covariances : ndarray of shape (K, D)
    n_reseeded : int
        How many collapsed components were re-seeded by splitting.

    Raises
    ------
    FloatingPointError
        The statistics are not finite (the data held values too large for the compute dtype).
    ValueError
        ``reg_covar`` is 0 and a feature is constant over the whole data set, or a live
        component's variance is at most the floor (it collapsed onto too few distinct
        points), with scikit-learn's message.
    """
    mass, observed, s1, s2, _ = split_statistics(stats)
    if not (np.all(np.isfinite(mass)) and np.all(np.isfinite(s1)) and np.all(np.isfinite(s2))):
        raise FloatingPointError(
            "The sufficient statistics are not finite: the data hold values too large for the "
            "compute dtype (try dtype='float64', or rescale the features)."
        )
    nk = mass + 10 * EPS
    # Per-feature masses: Σ r·m. Without missing values every column equals N_k exactly.
    denominators = observed + 10 * EPS
    centered_means = s1 / denominators
    covariances = np.maximum(s2 / denominators - centered_means**2, 0.0) + reg_covar
    n_observed = observed.sum(axis=0)
    overall_mean = s1.sum(axis=0) / n_observed
    overall_variance = np.maximum(s2.sum(axis=0) / n_observed - overall_mean**2, 0.0)
    # A live component that saw no value of a feature takes the feature's overall moments.
    unseen = (observed < MIN_COMPONENT_MASS) & (mass >= MIN_COMPONENT_MASS)[:, None]
    if unseen.any():
        centered_means = np.where(unseen, overall_mean, centered_means)
        covariances = np.where(unseen, overall_variance + reg_covar, covariances)
    floor = VARIANCE_FLOOR * overall_variance
    if reg_covar == 0:
        _raise_for_zero_variances(
            covariances, floor, mass, overall_mean + shift, overall_variance, resolution
        )
    covariances = np.maximum(covariances, floor)
    weights = nk / nk.sum()
    means = centered_means + shift
    # The masses add up to the number of rows (>= K), so at least one component is alive.
    collapsed = mass < MIN_COMPONENT_MASS
    if collapsed.any():
        split_heaviest(weights, means, covariances, collapsed)
    return weights, means, covariances, int(collapsed.sum())


def _raise_for_zero_variances(covariances, floor, mass, overall_mean, overall_variance, resolution):
    """With ``reg_covar=0``: refuse constant features and live components' variances at the floor.

    scikit-learn raises when a variance is <= 0 (its Cholesky fails); here a variance at or
    below the floor counts as zero, since flooring it would make the floor, not the data,
    decide the likelihood (a component on a single point scores tens of nats per row).
    """
    # Rounding can leave a constant feature a spread of a few ulps instead of exactly zero.
    constant = overall_variance <= (16 * resolution * np.abs(overall_mean)) ** 2
    if constant.any() or not np.all(overall_variance > 0):
        features = np.flatnonzero(constant | ~(overall_variance > 0)).tolist()
        raise ValueError(
            f"{ILL_DEFINED_COVARIANCE} Feature(s) {features} are constant over the whole data "
            "set (at the compute dtype's resolution), so with reg_covar=0 their variances are "
            "zero: set reg_covar > 0 (the default is 1e-6), drop those features, or use "
            "dtype='float64'."
        )
    # Components below MIN_COMPONENT_MASS are re-seeded by splitting, whatever their variances.
    zero = (covariances <= floor) & (mass >= MIN_COMPONENT_MASS)[:, None]
    if zero.any():
        components, features = (
            np.flatnonzero(zero.any(axis=1)).tolist(),
            np.flatnonzero(zero.any(axis=0)).tolist(),
        )
        raise ValueError(
            f"{ILL_DEFINED_COVARIANCE} With reg_covar=0, component(s) {components} collapsed "
            f"onto too few distinct points: their variance of feature(s) {features} is zero (at "
            f"most {VARIANCE_FLOOR:g} of the feature's variance). Set reg_covar > 0 (the default "
            "is 1e-6), or use fewer components."
        )


def split_heaviest(weights, means, covariances, collapsed, by_spread=False):
    """Re-seed each collapsed component (in place) by splitting the heaviest live component.

    The heaviest component h keeps half its weight and moves −0.2σ along its widest feature
    j; the collapsed component takes the other half, h's variances, and +0.2σ along j.

    With ``by_spread``, "heaviest" means the largest weight × σ along the widest feature (the
    most mass times the longest split step) rather than the largest weight: a component
    that straddles two clusters is wide, while a heavy component on one cluster is not.
    """
    alive = ~collapsed
    for k in np.flatnonzero(collapsed):
        rank = weights * np.sqrt(covariances.max(axis=1)) if by_spread else weights
        h = int(np.argmax(np.where(alive, rank, -np.inf)))
        j = int(np.argmax(covariances[h]))
        step = SPLIT_OFFSET * np.sqrt(covariances[h, j])
        means[k] = means[h]
        means[k, j] += step
        means[h, j] -= step
        covariances[k] = covariances[h]
        weights[h] = weights[k] = 0.5 * (weights[h] + weights[k])
        alive[k] = True
    weights /= weights.sum()


def add_components_by_splitting(weights, means, covariances, n_new=1):
    """The mixture with ``n_new`` more components, each made by splitting the heaviest one.

    The new components are empty slots that :func:`split_heaviest` fills, one after the
    other: each time the heaviest component by weight × σ along its widest feature (new
    halves included) gives half its weight and its variances to a new one, their means
    ±0.2σ apart along that feature.

    Returns
    -------
    weights : ndarray of shape (K + n_new,)
    means, covariances : ndarray of shape (K + n_new, D)
    """
    k, d = np.shape(means)
    weights = np.concatenate([np.asarray(weights, dtype=np.float64), np.zeros(n_new)])
    means = np.vstack([np.asarray(means, dtype=np.float64), np.zeros((n_new, d))])
    covariances = np.vstack([np.asarray(covariances, dtype=np.float64), np.ones((n_new, d))])
    split_heaviest(weights, means, covariances, np.arange(k + n_new) >= k, by_spread=True)
    return weights, means, covariances
