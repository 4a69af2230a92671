"""Scalable initialisation: starting parameters without ever materialising the data.

Every strategy but ``"split"`` ends the same way: one full-data pass of hard (or random)
responsibilities through the engine, and the M-step of :mod:`diaggmm_dist.mstep` on its
statistics, which gives weights, means and variances consistent with the data (scikit-learn
does the same from its initial responsibilities). What differs is where the centres come
from:

``"kmeans"``
    k-means (scikit-learn's ``KMeans``, k-means++ seeding) on a uniform random sample of at
    most ``SAMPLE_ROWS`` rows, then up to ``LLOYD_PASSES`` full-data Lloyd passes.
``"k-means++"``
    k-means++ seeds drawn from the same bounded sample, then one full-data pass.
``"random_from_data"``
    ``n_components`` distinct rows of the data chosen uniformly, then one full-data pass.
``"random"``
    Uniform random responsibilities for every row (reproducible per row, whatever the
    chunking), as scikit-learn does.
``"split"``
    One component fitted to the data, then repeatedly the heaviest component split in two
    and EM run for a few iterations, until ``n_components`` (:mod:`diaggmm_dist.splitting`;
    no randomness, and many more passes than the others).

Reading the sample touches only the chunks that hold sampled rows. With ``random_state``
fixed every strategy is reproducible and does not depend on how the data is chunked.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from . import engine, kernels
from .em import data_centre  # noqa: F401 - re-exported: it lived here
from .kernels import split_statistics
from .mstep import m_step
from .splitting import split_initial_parameters
from .validation import nonfinite_error

#: Rows drawn (uniformly, without replacement) for the k-means seeding.
SAMPLE_ROWS = 100_000
#: Full-data Lloyd passes after k-means on the sample, at most.
LLOYD_PASSES = 3
#: Lloyd stops when the centres move less than this times the mean feature variance.
LLOYD_TOL = 1e-4


def sample_rows(X, n_rows, random_state, missing="error"):
    """A uniform random sample of at most ``n_rows`` rows of ``X``, in row order, as numpy.

    With a missing-value policy, rows holding NaN are left out of the sample (or, if fewer
    complete rows than ``n_rows // 10`` remain, their gaps take the sample's column means).
    """
    n = engine.n_rows(X)
    if n <= n_rows:
        rows = np.arange(n)
    else:
        rows = np.sort(random_state.choice(n, size=n_rows, replace=False))
    sample = engine.take_rows(X, rows).astype(np.float64, copy=False)
    if np.all(np.isfinite(sample)):
        return sample
    if missing == "error" or np.isinf(sample).any():
        raise nonfinite_error(engine.count_nonfinite(X))
    complete = sample[~np.isnan(sample).any(axis=1)]
    if complete.shape[0] >= max(1, rows.size // 10):
        return complete
    column_means = np.nanmean(sample, axis=0)
    if np.isnan(column_means).any():
        raise ValueError("Some features have no observed value in the initialisation sample; drop those features.")
    return np.where(np.isnan(sample), column_means, sample)


def _nearest_centre_statistics(data_pass, centers, passes, tol):
    """Hard-assignment statistics after up to ``passes`` full-data Lloyd passes, and the shift."""
    shift = centers.mean(axis=0)
    for _ in range(passes):
        stats = data_pass(("nearest", kernels.distance_coefficients(centers, shift, data_pass.dtype)))
        _, observed, s1, _, _ = split_statistics(stats)
        updated = np.where(observed > 0, s1 / np.where(observed > 0, observed, 1) + shift, centers)
        moved = float(np.sum((updated - centers) ** 2))
        centers = updated
        if moved <= tol:
            break
    return stats, shift


def initial_parameters(X, n_components, init_params, random_state, reg_covar, data_pass,
                       weights_init=None, means_init=None, precisions_init=None, tol=1e-3):
    """Starting weights, means and precisions for EM.

    Parameters
    ----------
    X : dask.array.Array
        Row-chunked data.
    n_components : int
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "split"}
        Used only when ``means_init`` is not given.
    random_state : numpy.random.RandomState
    reg_covar : float
    data_pass : callable
        ``data_pass(responsibilities)`` runs one pass and returns the summed
        statistics; it has ``dtype`` (the compute dtype) and ``resolution`` (its epsilon)
        attributes.
    weights_init, means_init, precisions_init : ndarray or None
        Validated user values; each given one replaces the computed one. When all three
        are given the data is not read.
    tol : float
        ``"split"`` only: EM between two splits stops when the lower bound changes by less
        than this (see :mod:`diaggmm_dist.splitting`).

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
    """
    if weights_init is not None and means_init is not None and precisions_init is not None:
        return weights_init, means_init, precisions_init
    if means_init is None and init_params == "split":
        weights, means, precisions = split_initial_parameters(data_pass, n_components, X.shape[-1], reg_covar, tol)
        covariances = 1.0 / precisions
    else:
        weights, means, covariances = _parameters_from_one_pass(X, n_components, init_params, random_state,
                                                                reg_covar, data_pass, means_init)
    weights = weights if weights_init is None else weights_init
    means = means if means_init is None else means_init
    precisions = 1.0 / covariances if precisions_init is None else precisions_init
    return weights, means, precisions


def _parameters_from_one_pass(X, n_components, init_params, random_state, reg_covar, data_pass, means_init):
    """Weights, means and covariances from the M-step of one pass of hard or random responsibilities."""
    if means_init is not None:
        stats, shift = _nearest_centre_statistics(data_pass, means_init, 1, 0.0)
    elif init_params == "random":
        shift = np.zeros(X.shape[-1])
        seed = int(random_state.randint(np.iinfo(np.int32).max))
        stats = data_pass(("random", shift.astype(data_pass.dtype), n_components, seed))
    elif init_params == "random_from_data":
        centers = sample_rows(X, SAMPLE_ROWS, random_state, data_pass.missing)
        if centers.shape[0] < n_components:
            raise ValueError(f"Fewer than n_components={n_components} usable rows to draw initial means from.")
        centers = centers[np.sort(random_state.choice(centers.shape[0], size=n_components, replace=False))]
        stats, shift = _nearest_centre_statistics(data_pass, centers, 1, 0.0)
    else:
        sample = sample_rows(X, SAMPLE_ROWS, random_state, data_pass.missing)
        if init_params == "k-means++":
            centers, _ = kmeans_plusplus(sample, n_components, random_state=random_state)
            passes, tol = 1, 0.0
        else:
            centers = KMeans(n_clusters=n_components, n_init=1, random_state=random_state).fit(sample).cluster_centers_
            passes, tol = LLOYD_PASSES, LLOYD_TOL * float(np.mean(np.var(sample, axis=0)))
        stats, shift = _nearest_centre_statistics(data_pass, centers, passes, tol)
    weights, means, covariances, _ = m_step(stats, reg_covar, shift, data_pass.resolution)
    return weights, means, covariances
