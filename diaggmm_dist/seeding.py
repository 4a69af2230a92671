"""Seeding: the starting centers of hard-assignment initializations, and Lloyd passes after.

One bounded sample of the data (:func:`sample_rows`, identical rows merged by
:func:`distinct_weighted_rows`) serves every model (:func:`starting_centers`): ``"kmeans"``
keeps, of k-means runs on it, the one from which EM on the sample climbs highest
(:func:`_kmeans_centers`); ``"k-means++"`` and ``"random_from_data"`` draw seeds from it.
Full-data Lloyd passes shared by the models follow (:func:`lloyd_statistics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from . import engine, kernels
from .em import e_step_models
from .kernels import split_statistics
from .mstep import m_step
from .parameters import MixtureParameters
from .validation import bad_weights_error, nonfinite_error

#: Rows drawn (uniformly, without replacement) for the k-means seeding.
SAMPLE_ROWS = 100_000
#: Full-data Lloyd passes after k-means on the sample, at most.
LLOYD_PASSES = 3
#: Lloyd stops when the centers move less than this times the mean feature variance.
LLOYD_TOL = 1e-4
#: k-means runs on a sample that is a part of the data, of which the best is kept.
KMEANS_CANDIDATES = 10
#: EM on about this many rows of the sample, by which the k-means candidates are judged:
#: at most ``CANDIDATE_EM_ITERATIONS`` iterations, fewer when the lower bound changes by
#: less than ``CANDIDATE_EM_TOL`` (a default fit's ``max_iter`` and ``tol``).
CANDIDATE_ROWS = 20_000
CANDIDATE_EM_ITERATIONS = 100
CANDIDATE_EM_TOL = 1e-3


def sample_rows(X, n_rows, random_state, missing="error", weights=None):
    """A uniform random sample of at most ``n_rows`` rows of ``X`` and their weights, as numpy.

    With a missing-value policy, rows holding NaN are left out of the sample (or, if fewer
    complete rows than ``n_rows // 10`` remain, their gaps take the sample's column means).

    Returns
    -------
    sample : ndarray of shape (m, D), float64
        The sampled rows, in row order.
    sample_weight : ndarray of shape (m,), float64
        Their weights in ``weights`` (a dask array chunked like X's sample axes), or ones.
    """
    n = engine.n_rows(X)
    if n <= n_rows:
        rows = np.arange(n)
    else:
        rows = np.sort(random_state.choice(n, size=n_rows, replace=False))
    sample = engine.take_rows(X, rows).astype(np.float64, copy=False)
    sample_weight = np.ones(rows.size) if weights is None else _weights_of_rows(weights, rows)
    if np.all(np.isfinite(sample)):
        return sample, sample_weight
    if missing == "error" or np.isinf(sample).any():
        raise nonfinite_error(engine.count_nonfinite(X))
    complete = ~np.isnan(sample).any(axis=1)
    if np.count_nonzero(complete) >= max(1, rows.size // 10):
        return sample[complete], sample_weight[complete]
    column_means = np.nanmean(sample, axis=0)
    if np.isnan(column_means).any():
        raise ValueError(
            "Some features have no observed value in the initialization sample; drop those "
            "features."
        )
    return np.where(np.isnan(sample), column_means, sample), sample_weight


def _weights_of_rows(weights, rows):
    """The sample weights of the rows with flat indices ``rows``, checked (float64 numpy)."""
    # plain indexing of one axis is several times faster than vindex (0.14 s against 0.89 s
    # for 100,000 of 10 million weights)
    picked = (
        weights[rows]
        if weights.ndim == 1
        else weights.vindex[np.unravel_index(rows, weights.shape)]
    )
    (values,) = engine.compute(picked)
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values) & (values >= 0)):
        (count,) = engine.compute(da.count_nonzero(~(da.isfinite(weights) & (weights >= 0))))
        raise bad_weights_error(int(count))
    return values


def distinct_weighted_rows(sample, sample_weight):
    """The sampled rows of positive weight, as draws on them should see them, and their weights.

    Rows of weight 0 are dropped. If what remains has identical rows, or weights other than
    1, the result is canonical: the distinct rows in lexicographic order, each carrying the
    summed weight of its copies. It then depends only on the weighted rows, not on their
    order nor on whether a weight of 3 is one row or three. Otherwise (distinct rows of
    weight 1, as most unweighted data) the rows keep their order: weights of ones give what
    no weights give.
    """
    positive = sample_weight > 0
    sample, sample_weight = sample[positive], sample_weight[positive]
    if np.all(sample_weight == 1) and not _may_have_identical_rows(sample):
        return sample, sample_weight
    order = np.lexsort(sample.T[::-1])  # the first feature is the primary key
    ordered = sample[order]
    first = np.ones(sample.shape[0], dtype=bool)
    first[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    if first.all() and np.all(sample_weight == 1):
        return sample, sample_weight
    starts = np.flatnonzero(first)
    return ordered[starts], np.add.reduceat(sample_weight[order], starts)


def _may_have_identical_rows(sample):
    """False when no two rows share their first value, so none are identical (one column's sort).

    For continuous data this skips the lexsort of every column (6 ms against 0.3 s for
    100,000 rows of 12 features).
    """
    first = np.sort(sample[:, 0])
    return bool(np.any(first[1:] == first[:-1]))


def starting_centers(
    X: da.Array,
    sizes: Sequence[int],
    init_params: str,
    random_state: np.random.RandomState,
    missing: str,
    means_init: np.ndarray | None,
    reg_covar: float,
    weights: da.Array | None = None,
) -> tuple[list[np.ndarray], np.ndarray, int, float]:
    """Every model's starting centers, the shift, and the Lloyd passes and tolerance.

    One sample serves all the models; they draw their random numbers from ``random_state``
    one after the other, in order, after the sample's. The shift (any point near the data
    will do) is the sample's weighted mean: the same whether one model or many are
    initialized, so that a restart gets the same numbers either way. The draws are on the
    sample's distinct rows, weighted (:func:`distinct_weighted_rows`).

    Parameters
    ----------
    X : dask.array.Array
        Row-chunked data.
    sizes : sequence of int
        ``n_components`` of every model.
    init_params : {"kmeans", "k-means++", "random_from_data"}
        How the centers are drawn from the sample.
    random_state : numpy.random.RandomState
        Drawn from for the sample first, then by every model in turn.
    missing : str
        The missing-value policy (see :func:`sample_rows`).
    means_init : ndarray of shape (K, D) or None
        Given centers, for every model: nothing is sampled then.
    reg_covar : float
        Added to the variances of the k-means candidates' mixtures (:func:`_kmeans_centers`).
    weights : dask.array.Array, optional
        Sample weights, chunked like ``X``'s sample axes.

    Returns
    -------
    centers : list of ndarray of shape (k, D)
        One per entry of ``sizes``.
    shift : ndarray of shape (D,)
        A point near the data, for the kernels.
    passes : int
        Full-data Lloyd passes to make, at most (:func:`lloyd_statistics`).
    tol : float
        Lloyd stops for a model whose centers moved by at most this.
    """
    if means_init is not None:
        return [means_init] * len(sizes), means_init.mean(axis=0), 1, 0.0
    rows, row_weights = sample_rows(X, SAMPLE_ROWS, random_state, missing, weights)
    sample, sample_weight = distinct_weighted_rows(rows, row_weights)
    if sample.shape[0] == 0:
        # No sampled row has a positive weight (few weighted rows in much data): seed from the
        # rows unweighted; the full-data passes that follow are weighted.
        sample, sample_weight = distinct_weighted_rows(rows, np.ones(rows.shape[0]))
    if init_params == "random_from_data":
        # uniform draws as numpy makes them without p (other numbers than with a uniform p)
        equal = np.all(sample_weight == sample_weight[0])
        probabilities = None if equal else sample_weight / sample_weight.sum()
        centers = [
            _few_rows_centers(sample, k)
            if sample.shape[0] < k
            else sample[
                np.sort(
                    random_state.choice(sample.shape[0], size=k, replace=False, p=probabilities)
                )
            ]
            for k in sizes
        ]
        passes, tol = 1, 0.0
    elif init_params == "k-means++":
        centers = [
            _few_rows_centers(sample, k)
            if sample.shape[0] < k
            else kmeans_plusplus(sample, k, sample_weight=sample_weight, random_state=random_state)[
                0
            ]
            for k in sizes
        ]
        passes, tol = 1, 0.0
    else:
        # data that fits in the sample gets scikit-learn's initialization, draw for draw
        candidates = KMEANS_CANDIDATES if engine.n_rows(X) > SAMPLE_ROWS else 1
        centers = [
            _few_rows_centers(sample, k)
            if sample.shape[0] < k
            else _kmeans_centers(sample, k, random_state, candidates, reg_covar, sample_weight)
            for k in sizes
        ]
        mean = np.average(sample, axis=0, weights=sample_weight)
        variance = np.average((sample - mean) ** 2, axis=0, weights=sample_weight)
        passes, tol = LLOYD_PASSES, LLOYD_TOL * float(np.mean(variance))
    return centers, np.average(sample, axis=0, weights=sample_weight), passes, tol


def _few_rows_centers(sample, k):
    """``k`` centers from fewer than ``k`` distinct rows: each row, then the rows again.

    The repeated centers get no rows in the first Lloyd pass; the M-step re-seeds those
    empty components by splitting the heaviest (:func:`diaggmm_dist.mstep.split_heaviest`).
    """
    return np.resize(sample, (k, sample.shape[1]))


def _kmeans_centers(
    sample, n_components, random_state, candidates=1, reg_covar=1e-6, sample_weight=None
):
    """k-means centers of ``sample``: of ``candidates`` runs, the one whose mixture fits it best.

    Each run is scikit-learn's ``KMeans(n_init=1)`` (k-means++ seeding, then Lloyd to its
    tolerance), with its own draws from ``random_state``, one run after the other. The run
    kept is not the one of least inertia (KMeans' own ``n_init`` criterion): on the
    turbidity climatology the partitions of least inertia lead EM to worse optima. It is the
    one from which EM on ``CANDIDATE_ROWS`` rows of the sample reaches the highest
    log-likelihood of them (:func:`_sample_em_lower_bounds`): the objective the fit then
    climbs on all rows. Some partitions start lower and end higher, so EM runs to
    convergence, not a few iterations. See ``bench/init_quality.py``.

    Cost: ``candidates`` k-means runs on the sample and EM on ``CANDIDATE_ROWS`` rows for
    the distinct partitions, in memory: no data pass, and independent of the data's size
    (0.8 to 2.3 s per model for K 4 to 16, D=12, on a 2-core VM).

    Parameters
    ----------
    sample : ndarray of shape (n, D)
        Finite float64 rows.
    n_components : int
    random_state : numpy.random.RandomState
    candidates : int
        k-means runs; 1 is scikit-learn's initialization of ``GaussianMixture``, draw for draw.
    reg_covar : float
        Added to the variances of the candidates' mixtures.
    sample_weight : ndarray of shape (n,), optional

    Returns
    -------
    ndarray of shape (n_components, D)
    """
    runs = [
        KMeans(n_clusters=n_components, n_init=1, random_state=random_state)
        .fit(sample, sample_weight=sample_weight)
        .cluster_centers_
        for _ in range(candidates)
    ]
    if len(runs) == 1:
        return runs[0]
    # judged on every step-th row of the sample (in row order): spread over the data as it is
    step = max(1, sample.shape[0] // CANDIDATE_ROWS)
    bounds = _sample_em_lower_bounds(
        sample[::step], runs, reg_covar, None if sample_weight is None else sample_weight[::step]
    )
    return runs[int(np.argmax(bounds))]


def _sample_em_lower_bounds(sample, centers, reg_covar, sample_weight=None):
    """Mean log-likelihood of ``sample`` that EM reaches from each set of ``centers``, in memory.

    Each set starts as the initialization starts on all rows: the M-step of the rows' hard
    assignment to their nearest center. EM then runs on the sample, with the fit's kernels,
    E-step and M-step, until its lower bound changes by less than ``CANDIDATE_EM_TOL``, at
    most ``CANDIDATE_EM_ITERATIONS`` iterations. The sets still running share each pass over
    the sample (their coefficients stacked). A set whose M-step fails gets ``-inf``.
    """

    def sample_pass(pass_spec):
        return kernels.chunk_statistics(sample, pass_spec, weights=sample_weight)

    sample_pass.dtype = np.dtype(np.float64)  # the compute dtype e_step_models reads
    shift = np.average(sample, axis=0, weights=sample_weight)
    nearest = kernels.stack_coefficients(
        [kernels.distance_coefficients(c, shift, np.float64) for c in centers]
    )
    blocks = kernels.model_statistics(sample_pass(("nearest", nearest)), nearest.model_sizes)
    bounds, running = np.full(len(centers), -np.inf), _distinct_partitions(blocks)
    blocks = [blocks[i] for i in running]
    for _ in range(CANDIDATE_EM_ITERATIONS + 1):  # the last E-step scores the last M-step
        models, stepped = [], []
        for i, block in zip(running, blocks):
            try:
                weights, means, covariances, _ = m_step(block, reg_covar, shift)
            except (ValueError, FloatingPointError):
                # e.g. with reg_covar=0 a component collapsed on the few rows judged: not a
                # start to keep (the fit checks the data itself, on all rows)
                bounds[i] = -np.inf
                continue
            models.append(
                (weights, means, MixtureParameters(weights, means, covariances).precisions)
            )
            stepped.append(i)
        running = stepped
        if not running:
            break
        blocks, shift, new_bounds = e_step_models(sample_pass, models)
        moving = [
            abs(bound - bounds[i]) >= CANDIDATE_EM_TOL for i, bound in zip(running, new_bounds)
        ]
        bounds[running] = new_bounds
        running = [i for i, keep in zip(running, moving) if keep]
        blocks = [block for block, keep in zip(blocks, moving) if keep]
        if not running:
            break
    return bounds


def _distinct_partitions(blocks):
    """Indices of the statistics blocks of distinct hard partitions (the first of each).

    k-means runs often end on one partition (in another order of the centers): the same
    rows then add up to the same masses, whatever the order.
    """
    seen, kept = set(), []
    for i, block in enumerate(blocks):
        masses = tuple(np.sort(split_statistics(block)[0]))
        if masses not in seen:
            seen.add(masses)
            kept.append(i)
    return kept


def lloyd_statistics(
    data_pass: Callable,
    centers: Sequence[np.ndarray],
    shift: np.ndarray,
    passes: int,
    tol: float,
) -> list[np.ndarray]:
    """Hard-assignment statistics of every model after up to ``passes`` full-data Lloyd passes.

    The models still moving share each pass: their distance coefficients are stacked, so a
    pass reads the data once for all of them. A model whose centers moved by at most ``tol``
    (squared distance, summed) drops out and keeps the statistics of its last pass.

    Parameters
    ----------
    data_pass : callable
        ``data_pass(pass_spec)`` runs one pass and returns the summed statistics; it has a
        ``dtype`` attribute (the compute dtype).
    centers : sequence of ndarray of shape (k, D)
        Every model's starting centers (:func:`starting_centers`).
    shift : ndarray of shape (D,)
        The kernels' shift.
    passes : int
        Passes at most (at least one is made).
    tol : float
        A model whose centers moved by at most this stops.

    Returns
    -------
    list of ndarray
        Every model's statistics of its last pass, in order.
    """
    centers, blocks = list(centers), [None] * len(centers)
    moving = list(range(len(centers)))
    for _ in range(passes):
        coefficients = kernels.stack_coefficients(
            [kernels.distance_coefficients(centers[i], shift, data_pass.dtype) for i in moving]
        )
        stats = data_pass(("nearest", coefficients))
        still_moving = []
        for i, block in zip(moving, kernels.model_statistics(stats, coefficients.model_sizes)):
            _, observed, s1, _, _ = split_statistics(block)
            updated = np.where(
                observed > 0, s1 / np.where(observed > 0, observed, 1) + shift, centers[i]
            )
            if float(np.sum((updated - centers[i]) ** 2)) > tol:
                still_moving.append(i)
            blocks[i], centers[i] = block, updated
        moving = still_moving
        if not moving:
            break
    return blocks
