"""The E-step on chunked data: one pass under one or several models, their mean log-likelihoods.

Shared by the EM driver (:class:`diaggmm_dist.fitting.EMRun`: ``fit``, splitting,
``select_n_components``), stepwise EM (:func:`diaggmm_dist.stepwise.online_step`) and the
initialization's in-memory EM, so all compute the E-step the same way; and a center of the
data before any model is known.
"""

from __future__ import annotations

import numpy as np

from . import engine, kernels
from .kernels import data_center, split_statistics


def first_rows_center(X, n_rows=16):
    """A point near the data before any pass: the mean of the finite values of its first rows.

    The shift of the passes that come before any model is known (random responsibilities,
    the one-component fit of ``init_params="split"``): with no shift, data offset far from
    the origin would lose x² and S2/N − μ² to cancellation there (in float32 at an offset of
    1e3 standard deviations the initial variances were already off). Reads ``n_rows`` rows
    (one chunk).

    Parameters
    ----------
    X : dask.array.Array
        Samples along every axis but the last, features along the last.

    Returns
    -------
    ndarray of shape (D,), float64
        0 for a feature without a finite value in those rows.
    """
    rows = np.asarray(
        engine.take_rows(X, np.arange(min(n_rows, engine.n_rows(X)))), dtype=np.float64
    )
    finite = np.isfinite(rows)
    with np.errstate(over="ignore"):
        center = np.where(finite, rows, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
    return np.where(np.isfinite(center), center, 0.0)


def e_step_models(data_pass, models):
    """One pass of Gaussian responsibilities under several models at once (coefficients stacked).

    Parameters
    ----------
    data_pass : callable
        ``data_pass(pass_spec)`` runs one pass and returns the summed statistics; it
        has a ``dtype`` attribute (the compute dtype).
    models : list of (weights, means, precisions)
        Shapes (K,), (K, D), (K, D); K may differ between models.

    Returns
    -------
    blocks : list of ndarray of shape (K + 1, n_stat_columns(D))
        Each model's summed statistics, of data shifted by ``shift``.
    shift : ndarray of shape (D,)
        One for all (it only guards float32 against cancellation): the first model's.
    lower_bounds : list of float
        Each model's mean log-likelihood per unit of weight under its given parameters.

    Raises
    ------
    FloatingPointError
        A log-likelihood is not finite.
    """
    shift = data_center(*models[0])
    coefficients = kernels.stack_coefficients(
        [
            kernels.log_prob_coefficients(weights, means, precisions, shift, data_pass.dtype)
            for weights, means, precisions in models
        ]
    )
    stats = data_pass(("gaussian", coefficients))
    blocks = kernels.model_statistics(stats, coefficients.model_sizes)
    lower_bounds = []
    for block in blocks:
        scalars = split_statistics(block)[-1]
        lower_bounds.append(scalars["log_likelihood"] / scalars["weight"])
        if not np.isfinite(lower_bounds[-1]):
            raise FloatingPointError(
                "The log-likelihood is not finite: the data hold values too large for the compute "
                "dtype (try dtype='float64', or rescale the features)."
            )
    return blocks, shift, lower_bounds


def e_step(data_pass, weights, means, precisions):
    """:func:`e_step_models` for one model: ``(stats, shift, lower_bound)``."""
    blocks, shift, lower_bounds = e_step_models(data_pass, [(weights, means, precisions)])
    return blocks[0], shift, lower_bounds[0]
