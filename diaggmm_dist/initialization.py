"""Scalable initialization: starting parameters without ever materializing the data.

Every strategy but ``"split"`` ends the same way: full-data passes of hard (or random)
responsibilities through the engine, and the M-step of :mod:`diaggmm_dist.mstep` on the
statistics of the last one, which gives weights, means and variances consistent with the
data (scikit-learn does the same from its initial responsibilities). What differs is where
the centers come from:

``"kmeans"``
    k-means (scikit-learn's ``KMeans``, k-means++ seeding) on a uniform random sample of at
    most ``SAMPLE_ROWS`` rows, then up to ``LLOYD_PASSES`` full-data Lloyd passes. When the
    data has more rows than the sample, ``KMEANS_CANDIDATES`` k-means runs are made on the
    sample and the one from which EM on the sample climbs highest is kept (in memory, no
    data pass); when the sample is all the data, one run: scikit-learn's own
    initialization, draw for draw. The sample, the k-means runs and the Lloyd passes, and
    these constants, are in :mod:`diaggmm_dist.seeding`.
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
:func:`~diaggmm_dist.selection.select_n_components`) are initialized together by
:func:`initial_parameters_of_models`, because reading the data is the cost and a few more
models in a pass are nearly free. For ``"kmeans"``, ``"k-means++"`` and
``"random_from_data"`` one sample serves every model (each model then draws its own random
numbers on it, in order), and every Lloyd pass serves all the models whose centers still
move (their coefficients stacked as EM stacks them,
:func:`~diaggmm_dist.kernels.stack_coefficients`): R restarts cost one sample read and at
most ``LLOYD_PASSES`` passes, not R times that. Given ``means_init``, one pass serves all.
``"random"`` draws every model's random responsibilities in the same pass. ``"split"``
takes its own passes per model.
:func:`initial_parameters` is the one-model case.

Reading the sample touches only the chunks that hold sampled rows (for a large sample that
is nearly every chunk: about one more pass). With ``random_state`` fixed every strategy is
reproducible and does not depend on how the data is chunked.

Sample weights: the sample carries each row's weight, and the k-means, k-means++ and
``random_from_data`` draws are weighted. Rows of weight 0 take no part. A sample with
identical rows or weights other than 1 has its identical rows merged (weights summed) into
distinct rows in sorted order (:func:`~diaggmm_dist.seeding.distinct_weighted_rows`), so
that it is a function of the weighted rows, not of their order or of how a weight is spelt:
when the data has at
most ``SAMPLE_ROWS`` rows (the sample is all of it), integer weights give the same starting
parameters as the rows repeated, shuffled or not. Larger data is sampled
uniformly by row and then weighted, which matches the repeated rows' sample in
distribution only. ``"random"`` draws each row's responsibilities from its row index, so
a row of weight w has one draw scaled by w where w repeated rows have w draws: equal in
expectation, not draw for draw. ``"split"`` reads only weighted passes and is exact.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .em import first_rows_center
from .mstep import m_step
from .parameters import MixtureParameters
from .seeding import lloyd_statistics, starting_centers
from .splitting import split_initial_parameters


def initial_parameters_of_models(
    X,
    sizes,
    init_params,
    random_state,
    reg_covar,
    data_pass,
    weights_init=None,
    means_init=None,
    precisions_init=None,
    tol=1e-3,
):
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
        ``data_pass(pass_spec)`` runs one pass and returns the summed
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
        center = first_rows_center(X)
        models = [
            split_initial_parameters(data_pass, k, X.shape[-1], reg_covar, tol, center)
            for k in sizes
        ]
    else:
        models = _parameters_from_shared_passes(
            X, sizes, init_params, random_state, reg_covar, data_pass, means_init
        )
    return [
        (
            weights if weights_init is None else weights_init,
            means if means_init is None else means_init,
            precisions if precisions_init is None else precisions_init,
        )
        for weights, means, precisions in models
    ]


def initial_parameters(
    X,
    n_components,
    init_params,
    random_state,
    reg_covar,
    data_pass,
    weights_init=None,
    means_init=None,
    precisions_init=None,
    tol=1e-3,
):
    """Starting weights, means and precisions of one model (:func:`initial_parameters_of_models`).

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
    """
    (model,) = initial_parameters_of_models(
        X,
        [n_components],
        init_params,
        random_state,
        reg_covar,
        data_pass,
        weights_init,
        means_init,
        precisions_init,
        tol,
    )
    return model


def _parameters_from_shared_passes(
    X, sizes, init_params, random_state, reg_covar, data_pass, means_init
):
    """Every model's weights, means and precisions: the M-step of hard or random assignments."""
    if means_init is None and init_params == "random":
        blocks, shift = _random_statistics(data_pass, sizes, random_state, first_rows_center(X))
    else:
        centers, shift, passes, tol = starting_centers(
            X,
            sizes,
            init_params,
            random_state,
            data_pass.missing,
            means_init,
            reg_covar,
            getattr(data_pass, "weights", None),
        )
        blocks = lloyd_statistics(data_pass, centers, shift, passes, tol)
    models = []
    for stats in blocks:
        weights, means, covariances, _ = m_step(stats, reg_covar, shift, data_pass.resolution)
        models.append((weights, means, MixtureParameters(weights, means, covariances).precisions))
    return models


def _random_statistics(data_pass, sizes, random_state, shift):
    """Statistics of every model's random responsibilities, all from one pass, and the shift.

    Each model draws its seed from ``random_state`` in order, so a model's responsibilities
    are the same whether it is initialized alone or with others. ``shift``: a point near the
    data (:func:`~diaggmm_dist.em.first_rows_center`).
    """
    seeds = tuple(int(random_state.randint(np.iinfo(np.int32).max)) for _ in sizes)
    stats = data_pass(("random", shift, tuple(sizes), seeds, data_pass.dtype))
    return kernels.model_statistics(stats, sizes), shift
