"""The parameters of a diagonal Gaussian mixture, and the criteria computed from them.

:class:`MixtureParameters` is the one record of weights, means and covariances; precisions
and their Cholesky factors (square roots, for diagonal covariances) are derived from it,
always the same way. :func:`n_parameters` and :func:`information_criterion` are the one place
for the information criteria (scikit-learn's ``GaussianMixture.bic``/``aic`` formulas).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class MixtureParameters:
    """Weights, means and diagonal covariances of a mixture (float64 arrays).

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
        Mixing weights, summing to one.
    means : ndarray of shape (n_components, n_features)
        Component means.
    covariances : ndarray of shape (n_components, n_features)
        Diagonal covariances (variances), positive.

    Examples
    --------
    >>> import numpy as np
    >>> p = MixtureParameters(np.array([1.0]), np.zeros((1, 2)), np.full((1, 2), 4.0))
    >>> p.precisions_cholesky
    array([[0.5, 0.5]])
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @classmethod
    def from_precisions(
        cls, weights: np.ndarray, means: np.ndarray, precisions: np.ndarray
    ) -> MixtureParameters:
        """The parameters whose precisions (inverse variances) are ``precisions``.

        Parameters
        ----------
        weights, means : ndarray
            As in the class.
        precisions : ndarray of shape (n_components, n_features)
            Inverse variances.

        Returns
        -------
        MixtureParameters
        """
        return cls(weights, means, 1.0 / precisions)

    @cached_property
    def precisions(self) -> np.ndarray:
        """Inverse variances, ``1 / covariances``."""
        return 1.0 / self.covariances

    @cached_property
    def precisions_cholesky(self) -> np.ndarray:
        """Cholesky factors of the precisions: their square roots (diagonal covariances)."""
        return np.sqrt(self.precisions)

    @property
    def n_components(self) -> int:
        """Number of components."""
        return int(self.means.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.means.shape[1])


def n_parameters(n_components: int, n_features: int) -> int:
    """Number of free parameters of a diagonal mixture.

    Parameters
    ----------
    n_components, n_features : int
        Size of the mixture.

    Returns
    -------
    int
        ``2 * n_components * n_features`` (means and variances) plus ``n_components - 1``
        (weights summing to one).

    Examples
    --------
    >>> n_parameters(2, 3)
    13
    """
    return int(2 * n_components * n_features + n_components - 1)


#: The information criteria, {name: the penalty per free parameter, given n_samples}.
CRITERIA = {"bic": np.log, "aic": lambda n_samples: 2.0}


def information_criterion(
    criterion: str,
    mean_log_likelihood: float,
    n_samples: float,
    n_components: int,
    n_features: int,
) -> float:
    """BIC or AIC of a diagonal mixture (lower is better), as ``GaussianMixture.bic``/``aic``.

    Parameters
    ----------
    criterion : {"bic", "aic"}
        Bayesian (``n_parameters * log(n_samples)`` as penalty) or Akaike
        (``2 * n_parameters``) information criterion.
    mean_log_likelihood : float
        Mean log-likelihood per sample.
    n_samples : float
        Number (or total weight) of samples.
    n_components, n_features : int
        Size of the mixture.

    Returns
    -------
    float
        ``-2 * mean_log_likelihood * n_samples`` plus the criterion's penalty.

    Raises
    ------
    ValueError
        ``criterion`` is neither ``"bic"`` nor ``"aic"``.

    Examples
    --------
    >>> information_criterion("aic", -1.5, 100, 2, 3)
    326.0
    >>> round(information_criterion("bic", -1.5, 100, 2, 3), 3)
    359.867
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}.")
    penalty = CRITERIA[criterion](n_samples)
    return float(
        -2 * mean_log_likelihood * n_samples + n_parameters(n_components, n_features) * penalty
    )
