"""The statistics of a block of rows: its layout, and :func:`chunk_statistics` that fills it."""

from __future__ import annotations

import numpy as np

from .blocks import (
    SUB_ROWS,
    component_log_scores,
    native_order,
    nearest_one_hot,
    normalize_log_scores,
    random_responsibilities,
    stacked_rows,
)

#: The scalars carried in the last row of a statistics block.
SCALARS = ("log_likelihood", "weight", "rows", "nan", "inf", "bad_weights")


def n_stat_columns(n_features: int) -> int:
    """Columns of a statistics block: [N_k, S0 (D), S1 (D), S2 (D)], at least ``len(SCALARS)``."""
    return max(3 * n_features + 1, len(SCALARS))


def n_stat_rows(model_sizes: tuple) -> int:
    """Rows of the statistics block of stacked models: each model's K rows and its scalars row."""
    return sum(k + 1 for k in model_sizes)


def model_statistics(stats: np.ndarray, model_sizes: tuple) -> list:
    """The statistics block of each stacked model (views), in order."""
    ends = np.cumsum([k + 1 for k in model_sizes])
    return [stats[end - k - 1 : end] for k, end in zip(model_sizes, ends)]


def split_statistics(stats: np.ndarray) -> tuple:
    """``(N_k, S0, S1, S2, scalars)`` views of one model's statistics block (scalars: a dict)."""
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


def one_hot_labels(labels: np.ndarray, n_classes: int, dtype) -> np.ndarray:
    """Responsibilities (n_classes + 1, n): each labelled row's class, then 1 for every row."""
    resp = np.zeros((n_classes + 1, labels.shape[0]), dtype)
    labelled = np.flatnonzero(labels >= 0)
    resp[labels[labelled], labelled] = 1
    resp[-1] = 1
    return resp


def exclude_other_classes(scores: np.ndarray, labels: np.ndarray, component_classes) -> None:
    """Log scores (K, n) of labelled rows set to −∞ for the components of other classes."""
    other = (np.asarray(component_classes)[:, None] != labels) & (labels >= 0)
    scores[other] = -np.inf


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


def pass_models(pass_spec) -> tuple[bool, tuple]:
    """Whether a pass draws random responsibilities, and the sizes of the models it serves.

    Parameters
    ----------
    pass_spec : tuple
        What a pass computes (see :func:`chunk_statistics`).

    Returns
    -------
    random : bool
    model_sizes : tuple of int
    """
    random = pass_spec[0] == "random"
    if pass_spec[0] == "labels":
        return False, (int(pass_spec[2]), 1)
    return random, tuple(pass_spec[2]) if random else pass_spec[1].model_sizes


def chunk_statistics(
    x: np.ndarray,
    pass_spec: tuple,
    missing: str = "error",
    weights: np.ndarray | None = None,
    count_nonfinite: bool = False,
    rows: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Sufficient statistics of one block of rows.

    Parameters
    ----------
    x : ndarray of shape (n, D)
        Any real dtype, either byte order; converted to the compute dtype one sub-block at a
        time, after the shift is subtracted in the wider precision (see the module docstring).
    pass_spec : tuple
        What the pass computes, a tag and its parameters: ``("gaussian", coef)`` (the
        E-step), ``("nearest", coef)`` (hard assignment to the nearest center; ``coef`` from
        :func:`distance_coefficients`) or
        ``("random", shift, sizes, seeds, dtype)`` (uniform random responsibilities of models
        with ``sizes`` components, each from its own seed, stacked as
        :func:`stack_coefficients` stacks models; without ``dtype``, the shift's). The compute
        dtype is the coefficients' (:attr:`Coefficients.dtype`) or that ``dtype``.
        With ``labels``: ``("gaussian", coef, component_classes)``, the E-step where a row
        labelled c has its responsibilities restricted to the components of class c
        (``component_classes[k] == c``) and renormalized among them (its scores of the other
        components are −∞ before the normalization; its log-likelihood is then
        log Σ_{k of c} w_k N(x | k), the joint of x and its class), and an unlabelled row
        (-1) the E-step's own; or ``("labels", shift, n_classes, dtype)``, no model at all:
        two stacked blocks, one-hot responsibilities of each labelled row's class (unlabelled
        rows count in none) and one component that every usable row counts in with
        responsibility 1, unweighted (the data's own totals).
    missing : {"error", "drop", "marginalize"}
        What a NaN means (see the module docstring).
    weights : ndarray of shape (n,), optional
        Sample weights (non-negative); each row's responsibilities are scaled by its weight.
    count_nonfinite : bool
        Count NaN and infinite values (and, with weights, negative or non-finite weights).
    rows : ndarray of shape (n,), optional
        Global indices of the rows (only the random responsibilities use them).
    labels : ndarray of shape (n,), optional
        Each row's class index (0 .. n_classes - 1), -1 for an unlabelled row (the
        ``"labels"`` pass and the labelled ``"gaussian"`` one).

    Returns
    -------
    stats : ndarray of shape (K + 1, n_stat_columns(D)), float64
        For stacked coefficients (:func:`stack_coefficients`), one such block per model, one
        under the other (:func:`model_statistics` splits them). Row k is
        ``[N_k, S0_k, S1_k, S2_k]`` with S0 = Σ r·m (per feature), S1 = Σ r·m·x_c,
        S2 = Σ r·m·x_c². The last row holds :data:`SCALARS`: the log_likelihood (Σ w log p(x_i)
        for Gaussian responsibilities, Σ w·distance² for nearest ones), the total weight
        and number of the rows used, the NaN and infinite values, and the bad weights.
    """
    kind = pass_spec[0]
    if kind == "random":
        shift, sizes, seeds, *dtype = pass_spec[1:]
        k, dtype = sum(sizes), np.dtype(dtype[0] if dtype else shift.dtype)
    elif kind == "labels":
        shift, n_classes, dtype = pass_spec[1], int(pass_spec[2]), np.dtype(pass_spec[3])
        sizes = (n_classes, 1)
        k = n_classes + 1
    else:
        coef = pass_spec[1]
        shift, k, sizes, dtype = coef.shift, coef.n_components, coef.model_sizes, coef.dtype
    models = [slice(end - size, end) for size, end in zip(sizes, np.cumsum(sizes))]
    n, d = x.shape
    size = min(n, SUB_ROWS)
    row_buffer = np.empty((size, 2 * d), dtype)
    score_buffer = np.empty(k * size, dtype)  # (K, m) views of it stay contiguous for any m
    mass = np.zeros(k)
    s0, s12 = np.zeros((k, d)), np.zeros((k, 2 * d))
    log_likelihood = np.zeros(len(models))
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
            sub_mass = sub_log_likelihood = row_log_likelihood = None
            if kind == "labels":
                resp = one_hot_labels(labels[start : start + m], n_classes, dtype)
            elif kind == "random":
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
                if labels is not None:
                    exclude_other_classes(resp, labels[start : start + m], pass_spec[2])
                if kind == "gaussian":
                    row_log_likelihood, sub_mass, sub_log_likelihood = normalize_log_scores(
                        resp, offset, sizes
                    )
                else:
                    if offset is not None:
                        resp += offset
                    row_log_likelihood = np.array(
                        [nearest_one_hot(resp[model]) for model in models]
                    )  # (models, m)
            row_weight = None if weights is None else weights[start : start + m].astype(dtype)
            if used is not None:
                row_weight = used.astype(dtype) if row_weight is None else row_weight * used
            if row_weight is not None:
                resp *= row_weight
                if kind == "labels":  # the data's own totals: every usable row counts once
                    resp[-1] = 1 if used is None else used
                sub_mass = None  # the weighted responsibilities' sums, below
                weight_used += float(row_weight.sum(dtype=np.float64))
                rows_used += float(
                    np.count_nonzero(row_weight > 0) if used is None else np.count_nonzero(used)
                )
                if row_log_likelihood is not None:
                    counted = np.where(row_weight > 0, row_log_likelihood, 0).astype(np.float64)
                    log_likelihood += counted @ row_weight.astype(np.float64)
            else:
                weight_used += m
                rows_used += m
                if sub_log_likelihood is not None:
                    log_likelihood += sub_log_likelihood
                elif row_log_likelihood is not None:
                    log_likelihood += row_log_likelihood.sum(axis=1, dtype=np.float64)
            if sub_mass is None:
                sub_mass = resp.sum(axis=1)
            mass += sub_mass
            if observed is not None and missing == "marginalize":
                s0 += resp @ mask
            else:
                s0 += sub_mass[:, None]
            s12 += resp @ stacked
    stats = np.zeros((n_stat_rows(sizes), n_stat_columns(d)))
    for model, block, model_log_likelihood in zip(
        models, model_statistics(stats, sizes), log_likelihood
    ):
        size = model.stop - model.start
        block[:size, 0] = mass[model]
        block[:size, 1 : d + 1], block[:size, d + 1 : 3 * d + 1] = s0[model], s12[model]
        block[size, : len(SCALARS)] = (
            model_log_likelihood,
            weight_used,
            rows_used,
            n_nan,
            n_inf,
            bad_weights,
        )
    return stats
