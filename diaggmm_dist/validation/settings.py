"""Checks of an estimator's settings and initial parameters: clear errors before any work."""

from __future__ import annotations

import numbers

import numpy as np

from .choices import COVARIANCE_TYPES, DTYPES, INIT_PARAMS, MISSING, is_int


def _is_real(value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    # a Python int beyond float64 is not a usable number (np.isfinite refuses it: TypeError)
    try:
        return bool(np.isfinite(float(value)))
    except OverflowError:
        return False


def _dtype_name(value):
    """``"float32"`` for "float32", ``np.float32`` or ``np.dtype("float32")``; else None."""
    if value is None:  # np.dtype(None) would be float64
        return None
    try:
        return np.dtype(value).name
    except (TypeError, ValueError):
        return None


def check_settings(est) -> None:
    """Refuse an out-of-range constructor parameter of ``est`` before any work.

    Parameters
    ----------
    est : DiagGMM
        The estimator whose settings are checked.

    Raises
    ------
    TypeError
        ``init_params`` or ``covariance_type`` is not a string.
    ValueError
        Any other setting out of range; the message names it and what it must be.
    """
    checks = [
        ("n_components", is_int(est.n_components) and est.n_components >= 1, "an integer >= 1"),
        (
            "covariance_type",
            isinstance(est.covariance_type, str) and est.covariance_type in COVARIANCE_TYPES,
            "'diag': DiagGMM fits diagonal covariances only (use "
            "sklearn.mixture.GaussianMixture for 'full', 'tied' or 'spherical')",
        ),
        ("tol", _is_real(est.tol) and est.tol >= 0, "a finite number >= 0"),
        (
            "reg_covar",
            _is_real(est.reg_covar) and est.reg_covar >= 0,
            "a finite number >= 0 (the default is 1e-6)",
        ),
        ("max_iter", is_int(est.max_iter) and est.max_iter >= 0, "an integer >= 0"),
        ("n_init", is_int(est.n_init) and est.n_init >= 1, "an integer >= 1"),
        ("init_params", est.init_params in INIT_PARAMS, f"one of {INIT_PARAMS}"),
        ("dtype", _dtype_name(est.dtype) in DTYPES, f"one of {DTYPES}"),
        (
            "chunk_size",
            est.chunk_size is None or (is_int(est.chunk_size) and est.chunk_size >= 1),
            "None or an integer >= 1",
        ),
        (
            "verbose_interval",
            is_int(est.verbose_interval) and est.verbose_interval >= 1,
            "an integer >= 1",
        ),
        ("missing", est.missing in MISSING, f"one of {MISSING}"),
        (
            "learning_decay",
            _is_real(est.learning_decay) and 0.5 < est.learning_decay <= 1,
            "a number in (0.5, 1] (so that the step sizes of partial_fit sum to infinity and "
            "their squares do not)",
        ),
        (
            "learning_offset",
            _is_real(est.learning_offset) and est.learning_offset >= 0,
            "a finite number >= 0",
        ),
    ]
    for name, ok, expected in checks:
        if not ok:
            value = getattr(est, name)
            error = (
                TypeError
                if name in ("init_params", "covariance_type") and not isinstance(value, str)
                else ValueError
            )
            raise error(f"{type(est).__name__}: {name} must be {expected}, got {value!r}.")


def _as_float_array(value, name, shape):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a numeric array of shape {shape}, got {type(value).__name__}."
        ) from err
    if array.shape != shape:
        meaning = "(n_components,)" if len(shape) == 1 else "(n_components, n_features)"
        raise ValueError(
            f"{name} must have shape {shape} {meaning} for this data, got {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} holds {int(np.sum(~np.isfinite(array)))} NaN or infinite value(s)."
        )
    return array


def check_initial_parameters(weights_init, means_init, precisions_init, n_components, n_features):
    """Validated float64 copies of the user's initial parameters (``None`` stays ``None``).

    Parameters
    ----------
    weights_init, means_init, precisions_init : array-like or None
        The estimator's ``weights_init`` (n_components,), ``means_init`` and
        ``precisions_init`` (n_components, n_features).
    n_components, n_features : int
        The shapes they must have.

    Returns
    -------
    tuple of (ndarray or None)
        The weights, means and precisions.

    Raises
    ------
    TypeError
        A value that is not a numeric array.
    ValueError
        A wrong shape, a NaN or infinite value, weights outside [0, 1] or not summing to 1,
        precisions <= 0.
    """
    weights = means = precisions = None
    if weights_init is not None:
        weights = _as_float_array(weights_init, "weights_init", (n_components,))
        if np.any(weights < 0) or np.any(weights > 1):
            raise ValueError(
                f"weights_init must lie in [0, 1], got min {weights.min():.6g} and "
                f"max {weights.max():.6g}."
            )
        if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
            raise ValueError(f"weights_init must sum to 1, got {weights.sum():.8f}.")
    if means_init is not None:
        means = _as_float_array(means_init, "means_init", (n_components, n_features))
    if precisions_init is not None:
        precisions = _as_float_array(precisions_init, "precisions_init", (n_components, n_features))
        if np.any(precisions <= 0):
            raise ValueError(
                "precisions_init must be positive (they are inverse variances); "
                f"{int(np.sum(precisions <= 0))} value(s) are <= 0."
            )
    return weights, means, precisions
