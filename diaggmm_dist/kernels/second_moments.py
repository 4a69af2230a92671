"""Per-component full second moments of a block of rows, under a diagonal model's responsibilities.

The check of the diagonal assumption (:mod:`diaggmm_dist.diagonal_check`) needs, per
component k, Σ r, Σ r·x_c and Σ r·x_c·x_cᵀ (x_c = x − shift), in two folds of the rows (by
the parity of their global index) so that a covariance estimated on one fold is judged on
the other. The D × D moments are computed one block of columns (a "part") at a time, so a
task holds K·D·block values, not K·D², when D is large.
"""

from __future__ import annotations

import numpy as np

from .rows import _responsibilities

#: Folds the rows are split into (by the parity of their global index).
N_FOLDS = 2


def moment_layout(n_components: int, n_features: int, block: int) -> dict[str, tuple]:
    """Shapes of the pieces of one part's flat vector, in order.

    ``mass`` (folds, K), ``first`` (folds, K, D) and ``scalars`` (log-likelihood sum, rows
    used, rows left out) are filled in part 0 only; ``second`` (folds, K, D, block) in
    every part, for its block of columns.
    """
    k, d = n_components, n_features
    return {
        "mass": (N_FOLDS, k),
        "first": (N_FOLDS, k, d),
        "second": (N_FOLDS, k, d, block),
        "scalars": (3,),
    }


def n_moment_values(n_components: int, n_features: int, block: int) -> int:
    """Length of one part's flat vector (see :func:`moment_layout`)."""
    layout = moment_layout(n_components, n_features, block)
    return int(sum(np.prod(shape) for shape in layout.values()))


def split_moments(flat: np.ndarray, n_components: int, n_features: int, block: int) -> dict:
    """Views of one part's flat vector by name (see :func:`moment_layout`)."""
    pieces, start = {}, 0
    for name, shape in moment_layout(n_components, n_features, block).items():
        size = int(np.prod(shape))
        pieces[name] = flat[start : start + size].reshape(shape)
        start += size
    return pieces


def chunk_second_moments(
    x: np.ndarray, rows: np.ndarray, part: int, coef, block: int
) -> np.ndarray:
    """One part of the folded moments of a block of rows (flat, float64).

    Parameters
    ----------
    x : ndarray of shape (n, D)
    rows : ndarray of shape (n,)
        Global indices of the rows: row i is in fold ``rows[i] % 2``.
    part : int
        Which block of columns of the second moments: ``part * block`` onward.
    coef : Coefficients
        The diagonal model's (one model), whose responsibilities weigh the rows.
    block : int
        Columns per part.

    Returns
    -------
    ndarray of shape (n_moment_values(K, D, block),)
        Rows with a NaN or infinite value are left out (counted in ``scalars``).
    """
    x = np.asarray(x)
    k, d = coef.n_components, x.shape[1]
    flat = np.zeros(n_moment_values(k, d, block))
    out = split_moments(flat, k, d, block)
    finite = np.isfinite(x).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        resp, log_likelihood, _ = _responsibilities(x, coef, "drop")
    usable = finite & np.isfinite(log_likelihood)
    # the shift is subtracted in float64; the products run in the model's compute dtype
    centered = (x.astype(np.float64) - coef.shift).astype(coef.dtype)
    columns = slice(part * block, min(d, (part + 1) * block))
    width = columns.stop - columns.start
    for fold in range(N_FOLDS):
        here = usable & (rows % N_FOLDS == fold)
        r = resp[:, here]  # (K, m)
        xc = centered[here]
        right = np.ascontiguousarray(xc[:, columns])
        for k in range(r.shape[0]):  # one matrix product per component (BLAS)
            out["second"][fold, k, :, :width] = (xc.T * r[k]) @ right
        if part == 0:
            out["mass"][fold] = r.sum(axis=1, dtype=np.float64)
            out["first"][fold] = r @ xc
    if part == 0:
        out["scalars"][:] = (
            float(log_likelihood[usable].sum(dtype=np.float64)),
            int(usable.sum()),
            int((~usable).sum()),
        )
    return flat
