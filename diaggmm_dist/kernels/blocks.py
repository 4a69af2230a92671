"""Operations on one sub-block of rows: stacking, log scores, their normalization, hashing."""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

import numpy as np

#: Rows per sub-block: x_c, x_c² (SUB_ROWS × D) and responsibilities (K × SUB_ROWS) stay in
#: cache.
SUB_ROWS = 8192


class Normalized(NamedTuple):
    """What :func:`normalize_log_scores` returns besides the responsibilities (written in place)."""

    log_likelihood: np.ndarray  # (R, n): log p(x_i) under each model, in the scores' dtype
    mass: np.ndarray  # (K,): Σ_i r_ik of each component, float64
    log_likelihood_sum: np.ndarray  # (R,): Σ_i log p(x_i) of each model, float64


def stacked_rows(
    x: np.ndarray, shift: np.ndarray, out: np.ndarray, observed: np.ndarray | None = None
) -> np.ndarray:
    """The rows ``[x − shift | (x − shift)²]`` (n, 2D), written into ``out`` in its dtype.

    The difference is taken in the wider of x's and the shift's precision (float64 for a
    float64 shift) and then rounded to ``out``'s dtype; the square is of that rounded value.

    One (n, 2D) block rather than two (n, D) ones: each side of the E- and M-step is then one
    matrix product over 2D columns instead of two over D, faster for the E-step (see
    bench/FINDINGS.md, "kernels.stacked_rows").
    With an ``observed`` mask, unobserved values become 0 (the shift itself), so that NaN
    never reaches the products.
    """
    if observed is None and (compiled := _compiled_for(x, out)):
        return compiled.stacked_rows(x, shift, out)
    centered = out[:, : x.shape[1]]
    np.subtract(
        x if observed is None else np.where(observed, x, shift),
        shift,
        out=centered,
        casting="unsafe",
    )
    np.multiply(centered, centered, out=out[:, x.shape[1] :])
    return out


def native_order(x: np.ndarray) -> np.ndarray:
    """``x`` in this machine's byte order: itself, or a copy when stored the other way (big-endian).

    Called on a sub-block (or a block of rows to score), so that the copy is of data that is
    read anyway; numba's compiled loops take native arrays only.
    """
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def _compiled_for(*arrays):
    """:mod:`diaggmm_dist.compiled` if all ``arrays`` are C-contiguous native float32/64, else None.

    The compiled loops give the numbers of the numpy code they replace (the normalization:
    to within its exponential's accuracy); anything else takes the numpy code. numba is
    imported here, on the first pass, not with the package.
    """
    global _compiled
    if all(
        a.dtype.char in "fd" and a.dtype.isnative and a.flags.c_contiguous for a in arrays
    ):  # float32, float64
        if _compiled is None:
            from .. import compiled as _compiled
        return _compiled
    return None


_compiled = None  # the compiled module, once imported


def component_log_scores(
    rows: np.ndarray, coef, observed: np.ndarray | None = None, out: np.ndarray | None = None
) -> tuple:
    """Log scores (K, n) of stacked rows (:func:`stacked_rows`) but a per-component constant.

    Returns ``(scores, offset)``: the log scores are ``scores + offset``. The constant (K, 1)
    is left for :func:`normalize_log_scores` to add on its way, which saves a pass over the
    scores. With an observation mask the constant differs from row to row: it is added here,
    over each row's observed features only, and ``offset`` is None.
    """
    scores = np.matmul(coef.products, rows.T, out=out)
    if observed is None:
        return scores, coef.offset
    scores += coef.feature @ observed.T
    scores += coef.log_weight
    return scores, None


def normalize_log_scores(
    scores: np.ndarray, offset: np.ndarray | None = None, model_sizes: tuple | None = None
) -> Normalized:
    """Turn log scores (K, n), plus ``offset`` (K, 1), into responsibilities in place (log-sum-exp).

    ``model_sizes``: the components of each stacked model (:func:`stack_coefficients`), each
    normalized on its own; None is one model. Returns a :class:`Normalized`:
    ``log p(x_i)`` under each model (R, n), and in float64 each component's Σ_i r_ik (K,)
    and each model's Σ_i log p(x_i) (R,). C-contiguous float32 and float64 scores go through
    :mod:`diaggmm_dist.compiled` (one compiled call, with a faster exponential); the numpy
    code below is for anything else.
    """
    ends = np.fromiter(accumulate(model_sizes or (scores.shape[0],)), np.int64)
    offset = np.zeros((scores.shape[0], 1), scores.dtype) if offset is None else offset
    if compiled := _compiled_for(scores):
        return Normalized(*compiled.normalize_log_scores(scores, offset, ends))
    scores += offset
    log_likelihood = np.empty((len(ends), scores.shape[1]), scores.dtype)
    for model, out in zip(np.split(scores, ends[:-1]), log_likelihood):
        top = model.max(axis=0)
        model -= top
        np.exp(model, out=model)
        total = model.sum(axis=0)
        model *= np.reciprocal(total)  # one division per row, not one per row and component
        np.add(top, np.log(total), out=out)
    return Normalized(
        log_likelihood,
        scores.sum(axis=1, dtype=np.float64),
        log_likelihood.sum(axis=1, dtype=np.float64),
    )


def nearest_one_hot(distances: np.ndarray) -> np.ndarray:
    """One-hot responsibilities (K, n) of the nearest center, in place; returns the distances."""
    nearest = distances.argmin(axis=0)
    columns = np.arange(distances.shape[1])
    best = distances[nearest, columns]
    distances[:] = 0
    distances[nearest, columns] = 1
    return best


def splitmix64(values: np.ndarray | np.uint64) -> np.ndarray | np.uint64:
    """The splitmix64 finaliser: a well-mixed 64-bit hash of every value (vectorized, wrapping)."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def random_responsibilities(rows, n_components: int, seed: int, dtype) -> np.ndarray:
    """Uniform random responsibilities (K, n) for the given global row indices, columns normalized.

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
