"""Per-chunk numpy kernels: one block of rows in, a tiny block of statistics out.

This module knows numpy (and, for the elementwise passes of the E-step,
:mod:`~diaggmm_dist.compiled`'s loops) only: no dask, no I/O, no logging, so every function here can be
tested on its own and runs unchanged on a thread, a worker process or a remote machine.

The E-step of a block is matrix products. With P = 1/σ² and x_c = x − shift,

    log w_k + log N(x | μ_k, σ_k) = (−½ P) x_c² + (μ_c P) x_c + c_k,
    c_k = log w_k − ½ (D log 2π + Σ_j μ_c,kj² P_kj − Σ_j log P_kj),

so one (K × 2D) matrix, the "linear" one μ_c P beside the "square" one −½ P, times the
stacked rows [x_c | x_c²] gives every component's log-density at once, and one product of
the responsibilities with the same rows gives the sufficient statistics r x_c and r x_c²
(with Σ_i r_ik from the normalisation). Results
are laid out components × rows (K × n): the log-sum-exp reductions over components then
run across long contiguous rows instead of along rows of length K. The shift is a
fixed per-feature offset near the data mean: it changes nothing mathematically but keeps
x² and S2/N − μ² free of cancellation when the data sit far from the origin, which matters
in float32. It is kept in float64 and subtracted from the rows in float64 (or the input's
wider precision), and only the difference x − shift is rounded to the compute dtype: the
M-step adds the same float64 shift back, so float32 compute loses nothing to the offset of
the data (a shift rounded to float32 is off by up to 2^-24 of itself, which at an offset of
1e7 standard deviations moved every mean by a fraction of a standard deviation per
iteration).

Input in a non-native byte order (big-endian data on a little-endian machine: Zarr v2
``>f8``, NetCDF-classic files) is converted to native order one sub-block at a time, where
the block is read anyway (:func:`native_order`).

Blocks are processed in cache-sized sub-blocks of ``SUB_ROWS`` rows; each sub-block's
partial sums are added into float64 accumulators, so accumulation is float64 even when
the compute dtype is float32.

Missing values (NaN) follow one of three policies. ``"error"``: they are only counted (the
caller refuses the data). ``"drop"``: a row with any NaN takes no part. ``"marginalize"``:
with diagonal covariances a row's likelihood over its observed features is exact, so each
row uses only those: the per-feature constant of the log-density is multiplied by the
observation mask m, and the statistics become per-feature Σ r·m, Σ r·m·x, Σ r·m·x². A
sub-block without NaN always takes the plain path, whose Σ r·m is Σ r itself, so data
without gaps gives bit-identical results under every policy. Rows with no observed feature
(or, with ``"drop"``, any missing one) get zero responsibility and count for nothing.
"""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

import numpy as np

#: Rows per sub-block: x_c, x_c² (SUB_ROWS × D) and responsibilities (K × SUB_ROWS) stay in cache.
SUB_ROWS = 8192

LOG_2PI = float(np.log(2.0 * np.pi))

#: The scalars carried in the last row of a statistics block.
SCALARS = ("objective", "weight", "rows", "nan", "inf", "bad_weights")


class Coefficients(NamedTuple):
    """Per-component log-score coefficients for rows centred by ``shift``.

    ``shift`` is float64 whatever the compute dtype (the dtype of the other fields, :attr:`dtype`).

    For a fully observed row, ``products @ [x_c | x_c²] + offset``; for a partially observed
    one (mask m), ``products @ [m x_c | m x_c²] + feature @ m + log_weight`` (``offset`` is
    ``feature.sum(1) + log_weight``). ``products`` is the "linear" matrix beside the "square" one.
    """

    shift: np.ndarray  # (D,), float64
    products: np.ndarray  # (K, 2D): [linear | square], to multiply the stacked rows [x_c | x_c²]
    offset: np.ndarray  # (K, 1)
    feature: np.ndarray  # (K, D)
    log_weight: np.ndarray  # (K, 1)
    groups: tuple = ()  # components of each stacked model (see stack_coefficients); () is one model

    @property
    def dtype(self):
        """The compute dtype."""
        return self.products.dtype

    @property
    def n_components(self):
        return self.offset.shape[0]

    @property
    def model_sizes(self):
        """Components of each model whose coefficients are stacked here."""
        return self.groups or (self.n_components,)


class Normalised(NamedTuple):
    """What :func:`normalise_log_scores` returns besides the responsibilities (written in place)."""

    log_norm: np.ndarray  # (R, n): log p(x_i) under each model, in the scores' dtype
    mass: np.ndarray  # (K,): Σ_i r_ik of each component, float64
    log_norm_sum: np.ndarray  # (R,): Σ_i log p(x_i) of each model, float64


def stack_coefficients(models):
    """Coefficients of several models (same shift and compute dtype) stacked along the components.

    One pass then computes every model's statistics: the products are one matrix product
    for all models; only the log-sum-exp runs per model.
    """
    first = models[0]
    if any(not np.array_equal(m.shift, first.shift) or m.dtype != first.dtype for m in models):
        raise ValueError("Stacked models must share the shift and the compute dtype.")
    parts = [
        np.concatenate([getattr(m, name) for m in models])
        for name in ("products", "offset", "feature", "log_weight")
    ]
    return Coefficients(first.shift, *parts, tuple(size for m in models for size in m.model_sizes))


def n_stat_columns(n_features: int) -> int:
    """Columns of a statistics block: [N_k, S0 (D), S1 (D), S2 (D)], at least ``len(SCALARS)``."""
    return max(3 * n_features + 1, len(SCALARS))


def n_stat_rows(model_sizes):
    """Rows of the statistics block of stacked models: each model's K rows and its scalars row."""
    return sum(k + 1 for k in model_sizes)


def model_statistics(stats, model_sizes):
    """The statistics block of each stacked model (views), in order."""
    ends = np.cumsum([k + 1 for k in model_sizes])
    return [stats[end - k - 1 : end] for k, end in zip(model_sizes, ends)]


def split_statistics(stats):
    """``(N_k, S0, S1, S2, scalars)`` views of one model's statistics block; ``scalars`` is a dict."""
    k = stats.shape[0] - 1
    d = (stats.shape[1] - 1) // 3
    scalars = dict(zip(SCALARS, stats[k, : len(SCALARS)].tolist()))
    return (
        stats[:k, 0],
        stats[:k, 1 : d + 1],
        stats[:k, d + 1 : 2 * d + 1],
        stats[:k, 2 * d + 1 : 3 * d + 1],
        scalars,
    )


def _coefficients(shift, square, linear, feature, log_weight, dtype):
    offset = feature.sum(axis=1) + log_weight
    values = (
        np.concatenate([linear, square], axis=1),
        offset[:, None],
        feature,
        log_weight[:, None],
    )
    # the shift stays float64: rounded to a float32 compute dtype it would not be the one the M-step adds back
    return Coefficients(
        np.ascontiguousarray(shift, dtype=np.float64),
        *(np.ascontiguousarray(v, dtype=dtype) for v in values),
    )


def log_prob_coefficients(weights, means, precisions, shift, dtype):
    """Coefficients whose products give ``log w_k + log N(x | μ_k, σ_k)`` for every component.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions : ndarray of shape (K, D)
        Inverse variances.
    shift : ndarray of shape (D,)
        The offset subtracted from every row before the products (kept in float64).
    dtype : numpy dtype
        Compute dtype.

    Returns
    -------
    Coefficients
    """
    weights, means, precisions, shift = (
        np.asarray(v, dtype=np.float64) for v in (weights, means, precisions, shift)
    )
    centred = means - shift
    with np.errstate(divide="ignore"):  # a zero weight is a component that is never chosen
        log_w = np.log(weights)
    feature = -0.5 * (LOG_2PI + centred * centred * precisions - np.log(precisions))
    return _coefficients(shift, -0.5 * precisions, centred * precisions, feature, log_w, dtype)


def distance_coefficients(centers, shift, dtype):
    """Coefficients whose products give the squared distance of each row to each centre."""
    centers, shift = np.asarray(centers, dtype=np.float64), np.asarray(shift, dtype=np.float64)
    centred = centers - shift
    return _coefficients(
        shift,
        np.ones_like(centred),
        -2.0 * centred,
        centred * centred,
        np.zeros(centred.shape[0]),
        dtype,
    )


def stacked_rows(x, shift, out, observed=None):
    """The rows ``[x − shift | (x − shift)²]`` (n, 2D), written into ``out`` in its dtype.

    The difference is taken in the wider of x's and the shift's precision (float64 for a
    float64 shift) and then rounded to ``out``'s dtype; the square is of that rounded value.

    One (n, 2D) block rather than two (n, D) ones: each side of the E- and M-step is then one
    matrix product over 2D columns instead of two over D (the E-step's runs faster so: 0.29–0.31
    against 0.35 ms per 8,192-row sub-block, K=16, D=32, float32; the M-step's about the same).
    With an ``observed`` mask, unobserved values become 0 (the shift itself), so that NaN
    never reaches the products.
    """
    if observed is None and (compiled := _compiled_for(x, out)):
        return compiled.stacked_rows(x, shift, out)
    centred = out[:, : x.shape[1]]
    np.subtract(
        x if observed is None else np.where(observed, x, shift),
        shift,
        out=centred,
        casting="unsafe",
    )
    np.multiply(centred, centred, out=out[:, x.shape[1] :])
    return out


def native_order(x):
    """``x`` in this machine's byte order: itself, or a copy when it is stored the other way (big-endian).

    Called on a sub-block (or a block of rows to score), so that the copy is of data that is
    read anyway; numba's compiled loops take native arrays only.
    """
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def _compiled_for(*arrays):
    """:mod:`diaggmm_dist.compiled` when all ``arrays`` are C-contiguous float32 or float64 in native order, else None.

    The compiled loops give the numbers of the numpy code they replace (the normalisation:
    to within its exponential's accuracy); anything else takes the numpy code. numba is
    imported here, on the first pass, not with the package.
    """
    global _compiled
    if all(
        a.dtype.char in "fd" and a.dtype.isnative and a.flags.c_contiguous for a in arrays
    ):  # float32, float64
        if _compiled is None:
            from . import compiled as _compiled
        return _compiled
    return None


_compiled = None  # the compiled module, once imported


def component_log_scores(rows, coef, observed=None, out=None):
    """Log scores (K, n) of stacked rows (:func:`stacked_rows`) but a per-component constant, and that constant.

    Returns ``(scores, offset)``: the log scores are ``scores + offset``. The constant (K, 1)
    is left for :func:`normalise_log_scores` to add on its way, which saves a pass over the
    scores. With an observation mask the constant differs from row to row: it is added here,
    over each row's observed features only, and ``offset`` is None.
    """
    scores = np.matmul(coef.products, rows.T, out=out)
    if observed is None:
        return scores, coef.offset
    scores += coef.feature @ observed.T
    scores += coef.log_weight
    return scores, None


def normalise_log_scores(scores, offset=None, model_sizes=None):
    """Turn log scores (K, n), plus ``offset`` (K, 1), into responsibilities in place (log-sum-exp).

    ``model_sizes``: the components of each stacked model (:func:`stack_coefficients`), each
    normalised on its own; None is one model. Returns a :class:`Normalised`:
    ``log p(x_i)`` under each model (R, n), and in float64 each component's Σ_i r_ik (K,)
    and each model's Σ_i log p(x_i) (R,). C-contiguous float32 and float64 scores go through
    :mod:`diaggmm_dist.compiled` (one compiled call, with a faster exponential); the numpy
    code below is for anything else.
    """
    ends = np.fromiter(accumulate(model_sizes or (scores.shape[0],)), np.int64)
    offset = np.zeros((scores.shape[0], 1), scores.dtype) if offset is None else offset
    if compiled := _compiled_for(scores):
        return Normalised(*compiled.normalise_log_scores(scores, offset, ends))
    scores += offset
    log_norm = np.empty((len(ends), scores.shape[1]), scores.dtype)
    for model, out in zip(np.split(scores, ends[:-1]), log_norm):
        top = model.max(axis=0)
        model -= top
        np.exp(model, out=model)
        total = model.sum(axis=0)
        model *= np.reciprocal(total)  # one division per row, not one per row and component
        np.add(top, np.log(total), out=out)
    return Normalised(
        log_norm, scores.sum(axis=1, dtype=np.float64), log_norm.sum(axis=1, dtype=np.float64)
    )


def nearest_one_hot(distances):
    """One-hot responsibilities (K, n) of the nearest centre, in place; return the distances to it."""
    nearest = distances.argmin(axis=0)
    columns = np.arange(distances.shape[1])
    best = distances[nearest, columns]
    distances[:] = 0
    distances[nearest, columns] = 1
    return best


def splitmix64(values):
    """The splitmix64 finaliser: a well-mixed 64-bit hash of every value (vectorised, wrapping)."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def random_responsibilities(rows, n_components, seed, dtype):
    """Uniform random responsibilities (K, n) for the given global row indices, columns normalised.

    Each value is a hash of (seed, row, component), so a row gets the same numbers whatever
    block or sub-block it falls in, and whatever the shape of the array it comes from.
    """
    rows = np.asarray(rows, dtype=np.uint64)
    counters = (
        rows[None, :] * np.uint64(n_components) + np.arange(n_components, dtype=np.uint64)[:, None]
    )
    with np.errstate(over="ignore"):
        bits = splitmix64(counters ^ splitmix64(np.uint64(seed)))
    resp = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    resp = resp.astype(dtype)
    resp /= resp.sum(axis=0)
    return resp


def _observed_mask(xb, missing, count_nonfinite):
    """``(observed or None, n_nan, n_inf)`` for a sub-block under the missing-value policy."""
    if xb.dtype.kind != "f" or (missing == "error" and not count_nonfinite):
        return None, 0, 0
    nan = np.isnan(xb)
    n_nan = int(np.count_nonzero(nan))
    n_inf = int(xb.size - n_nan - np.count_nonzero(np.isfinite(xb))) if count_nonfinite else 0
    if n_nan == 0 or missing == "error":
        return None, n_nan, n_inf
    return ~nan, n_nan, n_inf


def chunk_statistics(
    x, responsibilities, missing="error", weights=None, count_nonfinite=False, rows=None
):
    """Sufficient statistics of one block of rows.

    Parameters
    ----------
    x : ndarray of shape (n, D)
        Any real dtype, either byte order; converted to the compute dtype one sub-block at a
        time, after the shift is subtracted in the wider precision (see the module docstring).
    responsibilities : tuple
        ``("gaussian", coef)`` (the E-step), ``("nearest", coef)`` (hard assignment to the
        nearest centre; ``coef`` from :func:`distance_coefficients`) or
        ``("random", shift, sizes, seeds, dtype)`` (uniform random responsibilities of models
        with ``sizes`` components, each from its own seed, stacked as
        :func:`stack_coefficients` stacks models; without ``dtype``, the shift's). The compute
        dtype is the coefficients' (:attr:`Coefficients.dtype`) or that ``dtype``.
    missing : {"error", "drop", "marginalize"}
        What a NaN means (see the module docstring).
    weights : ndarray of shape (n,), optional
        Sample weights (non-negative); each row's responsibilities are scaled by its weight.
    count_nonfinite : bool
        Count NaN and infinite values (and, with weights, negative or non-finite weights).
    rows : ndarray of shape (n,), optional
        Global indices of the rows (only the random responsibilities use them).

    Returns
    -------
    stats : ndarray of shape (K + 1, n_stat_columns(D)), float64
        For stacked coefficients (:func:`stack_coefficients`), one such block per model, one
        under the other (:func:`model_statistics` splits them). Row k is ``[N_k, S0_k, S1_k, S2_k]`` with S0 = Σ r·m (per feature), S1 = Σ r·m·x_c,
        S2 = Σ r·m·x_c². The last row holds :data:`SCALARS`: the objective (Σ w log p(x_i)
        for Gaussian responsibilities, Σ w·distance² for nearest ones), the total weight
        and number of the rows used, the NaN and infinite values, and the bad weights.
    """
    kind = responsibilities[0]
    if kind == "random":
        shift, sizes, seeds, *dtype = responsibilities[1:]
        k, dtype = sum(sizes), np.dtype(dtype[0] if dtype else shift.dtype)
    else:
        coef = responsibilities[1]
        shift, k, sizes, dtype = coef.shift, coef.n_components, coef.model_sizes, coef.dtype
    models = [slice(end - size, end) for size, end in zip(sizes, np.cumsum(sizes))]
    n, d = x.shape
    size = min(n, SUB_ROWS)
    row_buffer = np.empty((size, 2 * d), dtype)
    score_buffer = np.empty(k * size, dtype)  # (K, m) views of it stay contiguous for any m
    mass = np.zeros(k)
    s0, s12 = np.zeros((k, d)), np.zeros((k, 2 * d))
    objective = np.zeros(len(models))
    weight_used = rows_used = 0.0
    n_nan = n_inf = bad_weights = 0
    if weights is not None and count_nonfinite:
        bad_weights = int(np.count_nonzero(~(np.isfinite(weights) & (weights >= 0))))
    # NaN or inf in the data make the statistics non-finite; callers report that clearly.
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, n, SUB_ROWS):
            xb = native_order(x[start : start + SUB_ROWS])
            m = xb.shape[0]
            observed, nan_here, inf_here = _observed_mask(xb, missing, count_nonfinite)
            n_nan, n_inf = n_nan + nan_here, n_inf + inf_here
            stacked = stacked_rows(xb, shift, row_buffer[:m], observed)
            if observed is None:
                used = None
            else:
                used = observed.all(axis=1) if missing == "drop" else observed.any(axis=1)
                mask = observed.astype(dtype) if missing == "marginalize" else None
            sub_mass = sub_objective = row_objective = None
            if kind == "random":
                resp = np.concatenate(
                    [
                        random_responsibilities(rows[start : start + m], size, seed, dtype)
                        for size, seed in zip(sizes, seeds)
                    ]
                )
            else:
                resp, offset = component_log_scores(
                    stacked,
                    coef,
                    mask if observed is not None else None,
                    out=score_buffer[: k * m].reshape(k, m),
                )
                if kind == "gaussian":
                    row_objective, sub_mass, sub_objective = normalise_log_scores(
                        resp, offset, sizes
                    )
                else:
                    if offset is not None:
                        resp += offset
                    row_objective = np.array(
                        [nearest_one_hot(resp[model]) for model in models]
                    )  # (models, m)
            row_weight = None if weights is None else weights[start : start + m].astype(dtype)
            if used is not None:
                row_weight = used.astype(dtype) if row_weight is None else row_weight * used
            if row_weight is not None:
                resp *= row_weight
                sub_mass = None  # the weighted responsibilities' sums, below
                weight_used += float(row_weight.sum(dtype=np.float64))
                rows_used += float(
                    np.count_nonzero(row_weight > 0) if used is None else np.count_nonzero(used)
                )
                if row_objective is not None:
                    counted = np.where(row_weight > 0, row_objective, 0).astype(np.float64)
                    objective += counted @ row_weight.astype(np.float64)
            else:
                weight_used += m
                rows_used += m
                if sub_objective is not None:
                    objective += sub_objective
                elif row_objective is not None:
                    objective += row_objective.sum(axis=1, dtype=np.float64)
            if sub_mass is None:
                sub_mass = resp.sum(axis=1)
            mass += sub_mass
            if observed is not None and missing == "marginalize":
                s0 += resp @ mask
            else:
                s0 += sub_mass[:, None]
            s12 += resp @ stacked
    stats = np.zeros((n_stat_rows(sizes), n_stat_columns(d)))
    for model, block, model_objective in zip(models, model_statistics(stats, sizes), objective):
        size = model.stop - model.start
        block[:size, 0] = mass[model]
        block[:size, 1 : d + 1], block[:size, d + 1 : 3 * d + 1] = s0[model], s12[model]
        block[size, : len(SCALARS)] = (
            model_objective,
            weight_used,
            rows_used,
            n_nan,
            n_inf,
            bad_weights,
        )
    return stats


def _responsibilities(x, coef, missing):
    """Responsibilities (K, n) and ``log p(x_i)`` (n,) of rows under the missing-value policy, and
    which rows can be scored (None: all that are finite)."""
    x = native_order(x)
    n, d = x.shape
    dtype = coef.dtype
    buffer = np.empty((n, 2 * d), dtype)
    observed = ~np.isnan(x) if (missing != "error" and x.dtype.kind == "f") else None
    if observed is None or observed.all():
        observed = usable = mask = None
    elif missing == "drop":
        usable, mask = observed.all(axis=1), None
    else:
        usable, mask = observed.any(axis=1), observed.astype(dtype)
    scores, offset = component_log_scores(stacked_rows(x, coef.shift, buffer, observed), coef, mask)
    return scores, normalise_log_scores(scores, offset).log_norm[0], usable


def row_summary(x, coef, missing="error"):
    """Per row: ``[label, max responsibility, log p(x_i)]`` as float64 (n, 3).

    Rows that cannot be scored (non-finite values; with ``"drop"`` any NaN; with
    ``"marginalize"`` no observed feature) get label -1 and NaN.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        scores, log_norm, usable = _responsibilities(x, coef, missing)
        finite = np.isfinite(log_norm) if usable is None else np.isfinite(log_norm) & usable
        out = np.empty((x.shape[0], 3))
        out[:, 0] = np.where(finite, scores.argmax(axis=0), -1)
        out[:, 1] = np.where(finite, scores.max(axis=0), np.nan)
        out[:, 2] = np.where(finite, log_norm, np.nan)
    return out


def row_labels(x, coef, missing="error"):
    """Most probable component of every row (int64); -1 where the row cannot be scored."""
    return row_summary(x, coef, missing)[:, 0].astype(np.int64)


def row_responsibilities(x, coef, missing="error"):
    """Posterior probabilities of the components for every row, shape (n, K); NaN where unscored."""
    with np.errstate(invalid="ignore", over="ignore"):
        scores, _, usable = _responsibilities(x, coef, missing)
        if usable is not None:
            scores[:, ~usable] = np.nan
    return np.ascontiguousarray(scores.T)


def row_log_likelihood(x, coef, missing="error"):
    """``log p(x_i)`` of every row (over its observed features), float64; NaN where unscored."""
    return row_summary(x, coef, missing)[:, 2]
