"""Scalable initialisation: starting parameters without ever materialising the data.

Every strategy but ``"split"`` ends the same way: full-data passes of hard (or random)
responsibilities through the engine, and the M-step of :mod:`diaggmm_dist.mstep` on the
statistics of the last one, which gives weights, means and variances consistent with the
data (scikit-learn does the same from its initial responsibilities). What differs is where
the centres come from:

``"kmeans"``
    k-means (scikit-learn's ``KMeans``, k-means++ seeding) on a uniform random sample of at
    most ``SAMPLE_ROWS`` rows, then up to ``LLOYD_PASSES`` full-data Lloyd passes.
``"k-means++"``
    k-means++ seeds drawn from the same bounded sample, then one full-data pass.
``"random_from_data"``
    ``n_components`` distinct rows of that sample chosen uniformly, then one full-data pass.
``"random"``
    Uniform random responsibilities for every row (reproducible per row, whatever the
    chunking), as scikit-learn does.
``"split"``
    One component fitted to the data, then repeatedly the heaviest component split in two
    and EM run for a few iterations, until ``n_components`` (:mod:`diaggmm_dist.splitting`;
    no randomness, and many more passes than the others).

Several models (the restarts of ``n_init``, the candidates of
:func:`~diaggmm_dist.selection.select_n_components`) are initialised together by
:func:`initial_parameters_of_models`, because reading the data is the cost and a few more
models in a pass are nearly free. For ``"kmeans"``, ``"k-means++"`` and
``"random_from_data"`` one sample serves every model (each model then draws its own random
numbers on it, in order), and every Lloyd pass serves all the models whose centres still
move (their coefficients stacked as EM stacks them,
:func:`~diaggmm_dist.kernels.stack_coefficients`): R restarts cost one sample read and at
most ``LLOYD_PASSES`` passes, not R times that. Given ``means_init``, one pass serves all.
``"random"`` draws every model's random responsibilities in the same pass. ``"split"``
takes its own passes per model.
:func:`initial_parameters` is the one-model case.

Reading the sample touches only the chunks that hold sampled rows (for a large sample that
is nearly every chunk: about one more pass). With ``random_state`` fixed every strategy is
reproducible and does not depend on how the data is chunked.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from . import engine, kernels
from .em import data_centre, first_rows_centre  # noqa: F401 - data_centre re-exported: it lived here
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


def initial_parameters_of_models(X, sizes, init_params, random_state, reg_covar, data_pass,
                                 weights_init=None, means_init=None, precisions_init=None, tol=1e-3):
    """Starting weights, means and precisions of several models, sharing the data passes.

    What is shared depends on ``init_params`` (see the module docstring): for ``"kmeans"``,
    ``"k-means++"`` and ``"random_from_data"`` one sample and every full-data pass.

    Parameters
    ----------
    X : dask.array.Array
        Row-chunked data.
    sizes : sequence of int
        ``n_components`` of every model (equal for restarts, different for the candidates
        of :func:`~diaggmm_dist.selection.select_n_components`).
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "split"}
        Used only when ``means_init`` is not given.
    random_state : numpy.random.RandomState
        Drawn from for the shared sample first, then by every model in turn.
    reg_covar : float
    data_pass : callable
        ``data_pass(responsibilities)`` runs one pass and returns the summed
        statistics; it has ``dtype`` (the compute dtype), ``resolution`` (its epsilon) and
        ``missing`` (the missing-value policy) attributes.
    weights_init, means_init, precisions_init : ndarray or None
        Validated user values, for every model (all of size ``len(means_init)`` then); each
        given one replaces the computed one. When all three are given the data is not read.
    tol : float
        ``"split"`` only: EM between two splits stops when the lower bound changes by less
        than this (see :mod:`diaggmm_dist.splitting`).

    Returns
    -------
    list of (weights, means, precisions)
        One per entry of ``sizes``, in order, of shapes (K,), (K, D) and (K, D).
    """
    if weights_init is not None and means_init is not None and precisions_init is not None:
        return [(weights_init, means_init, precisions_init) for _ in sizes]
    if means_init is None and init_params == "split":
        # its own EM loop per model: nothing to share
        centre = first_rows_centre(X)
        models = [split_initial_parameters(data_pass, k, X.shape[-1], reg_covar, tol, centre) for k in sizes]
    else:
        models = _parameters_from_shared_passes(X, sizes, init_params, random_state, reg_covar, data_pass, means_init)
    return [(weights if weights_init is None else weights_init, means if means_init is None else means_init,
             precisions if precisions_init is None else precisions_init) for weights, means, precisions in models]


def initial_parameters(X, n_components, init_params, random_state, reg_covar, data_pass,
                       weights_init=None, means_init=None, precisions_init=None, tol=1e-3):
    """Starting weights, means and precisions of one model (:func:`initial_parameters_of_models`).

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
    """
    (model,) = initial_parameters_of_models(X, [n_components], init_params, random_state, reg_covar, data_pass,
                                            weights_init, means_init, precisions_init, tol)
    return model


def _parameters_from_shared_passes(X, sizes, init_params, random_state, reg_covar, data_pass, means_init):
    """Weights, means and precisions of every model: the M-step of hard or random responsibilities."""
    if means_init is None and init_params == "random":
        blocks, shift = _random_statistics(data_pass, sizes, random_state, first_rows_centre(X))
    else:
        centres, shift, passes, tol = _starting_centres(X, sizes, init_params, random_state, data_pass.missing,
                                                        means_init)
        blocks = _lloyd_statistics(data_pass, centres, shift, passes, tol)
    models = []
    for stats in blocks:
        weights, means, covariances, _ = m_step(stats, reg_covar, shift, data_pass.resolution)
        models.append((weights, means, 1.0 / covariances))
    return models


def _random_statistics(data_pass, sizes, random_state, shift):
    """Statistics of every model's random responsibilities, all from one pass, and the shift.

    Each model draws its seed from ``random_state`` in order, so a model's responsibilities
    are the same whether it is initialised alone or with others. ``shift``: a point near the
    data (:func:`~diaggmm_dist.em.first_rows_centre`).
    """
    seeds = tuple(int(random_state.randint(np.iinfo(np.int32).max)) for _ in sizes)
    stats = data_pass(("random", shift, tuple(sizes), seeds, data_pass.dtype))
    return kernels.model_statistics(stats, sizes), shift


def _starting_centres(X, sizes, init_params, random_state, missing, means_init):
    """Every model's starting centres, the shift, and the Lloyd passes and tolerance.

    One sample serves all the models; they draw their random numbers from ``random_state``
    one after the other, in order, after the sample's. The shift (any point near the data
    will do) is the sample's mean: the same whether one model or many are initialised, so
    that a restart gets the same numbers either way.
    """
    if means_init is not None:
        return [means_init] * len(sizes), means_init.mean(axis=0), 1, 0.0
    sample = sample_rows(X, SAMPLE_ROWS, random_state, missing)
    if init_params == "random_from_data":
        if sample.shape[0] < max(sizes):
            raise ValueError(f"Fewer than n_components={max(sizes)} usable rows to draw initial means from.")
        centres = [sample[np.sort(random_state.choice(sample.shape[0], size=k, replace=False))] for k in sizes]
        passes, tol = 1, 0.0
    elif init_params == "k-means++":
        centres = [kmeans_plusplus(sample, k, random_state=random_state)[0] for k in sizes]
        passes, tol = 1, 0.0
    else:
        centres = [KMeans(n_clusters=k, n_init=1, random_state=random_state).fit(sample).cluster_centers_
                   for k in sizes]
        passes, tol = LLOYD_PASSES, LLOYD_TOL * float(np.mean(np.var(sample, axis=0)))
    return centres, sample.mean(axis=0), passes, tol


def _lloyd_statistics(data_pass, centres, shift, passes, tol):
    """Hard-assignment statistics of every model after up to ``passes`` full-data Lloyd passes.

    The models still moving share each pass: their distance coefficients are stacked, so a
    pass reads the data once for all of them. A model whose centres moved by at most ``tol``
    (squared distance, summed) drops out and keeps the statistics of its last pass.
    """
    centres, blocks = list(centres), [None] * len(centres)
    moving = list(range(len(centres)))
    for _ in range(passes):
        coefficients = kernels.stack_coefficients([
            kernels.distance_coefficients(centres[i], shift, data_pass.dtype) for i in moving])
        stats = data_pass(("nearest", coefficients))
        still_moving = []
        for i, block in zip(moving, kernels.model_statistics(stats, coefficients.model_sizes)):
            _, observed, s1, _, _ = split_statistics(block)
            updated = np.where(observed > 0, s1 / np.where(observed > 0, observed, 1) + shift, centres[i])
            if float(np.sum((updated - centres[i]) ** 2)) > tol:
                still_moving.append(i)
            blocks[i], centres[i] = block, updated
        moving = still_moving
        if not moving:
            break
    return blocks
