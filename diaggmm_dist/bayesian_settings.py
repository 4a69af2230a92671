"""The settings and priors of a ``BayesianDiagGMM``, checked before any work."""

from __future__ import annotations

import numbers

import numpy as np

from .bayesian_mstep import PRIOR_TYPES
from .validation import DTYPES, INIT_PARAMS, is_int


def _is_real(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and bool(np.isfinite(float(value)))
    )


def check_vb_settings(est) -> None:
    """Refuse an out-of-range constructor parameter of a ``BayesianDiagGMM`` before any work.

    Parameters
    ----------
    est : BayesianDiagGMM

    Raises
    ------
    ValueError
        The message names the setting and what it must be.
    """
    positive = "None or a finite number > 0"
    checks = [
        ("n_components", is_int(est.n_components) and est.n_components >= 1, "an integer >= 1"),
        ("tol", _is_real(est.tol) and est.tol >= 0, "a finite number >= 0"),
        ("reg_covar", _is_real(est.reg_covar) and est.reg_covar >= 0, "a finite number >= 0"),
        ("max_iter", is_int(est.max_iter) and est.max_iter >= 0, "an integer >= 0"),
        ("n_init", is_int(est.n_init) and est.n_init >= 1, "an integer >= 1"),
        ("init_params", est.init_params in INIT_PARAMS, f"one of {INIT_PARAMS}"),
        (
            "weight_concentration_prior_type",
            est.weight_concentration_prior_type in PRIOR_TYPES,
            f"one of {PRIOR_TYPES}",
        ),
        (
            "weight_concentration_prior",
            est.weight_concentration_prior is None
            or (_is_real(est.weight_concentration_prior) and est.weight_concentration_prior > 0),
            positive,
        ),
        (
            "mean_precision_prior",
            est.mean_precision_prior is None
            or (_is_real(est.mean_precision_prior) and est.mean_precision_prior > 0),
            positive,
        ),
        (
            "degrees_of_freedom_prior",
            est.degrees_of_freedom_prior is None
            or (_is_real(est.degrees_of_freedom_prior) and est.degrees_of_freedom_prior > 0),
            positive + " (and > n_features - 1)",
        ),
        ("weight_threshold", _is_real(est.weight_threshold) and est.weight_threshold >= 0, ">= 0"),
        ("dtype", _dtype_ok(est.dtype) and np.dtype(est.dtype).name in DTYPES, f"one of {DTYPES}"),
        (
            "chunk_size",
            est.chunk_size is None or (is_int(est.chunk_size) and est.chunk_size >= 1),
            "None or an integer >= 1",
        ),
        ("verbose_interval", is_int(est.verbose_interval) and est.verbose_interval >= 1, ">= 1"),
        ("missing", est.missing in ("error", "drop"), "'error' or 'drop'"),
    ]
    for name, ok, expected in checks:
        if not ok:
            value = getattr(est, name)
            detail = ""
            if name == "missing" and value == "marginalize":
                detail = (
                    " missing='marginalize' is not available for the variational fit: its "
                    "posterior has one mean precision and one degrees of freedom per component "
                    "for all features (scikit-learn's), which per-feature counts of observed "
                    "values would split per feature. Use missing='drop' (rows with a NaN are "
                    "skipped), or DiagGMM(missing='marginalize')."
                )
            raise ValueError(
                f"{type(est).__name__}: {name} must be {expected}, got {value!r}.{detail}"
            )


def _dtype_ok(value) -> bool:
    try:
        np.dtype(value)
    except (TypeError, ValueError):
        return False
    return True


def _prior_array(value, name, n_features, positive):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0 and positive:
        array = np.full(n_features, float(array))
    if array.shape != (n_features,) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} must be finite values of shape ({n_features},) (one per feature), got "
            f"shape {array.shape}."
        )
    if positive and not np.all(array > 0):
        raise ValueError(f"{name} must be > 0 for every feature.")
    return array


def checked_priors(est, n_features: int) -> dict:
    """The given priors checked against the data's features (scikit-learn's rules).

    Returns
    -------
    dict
        ``mean`` and ``covariance`` as arrays of shape (D,) or None.

    Raises
    ------
    ValueError
        A prior of the wrong shape or sign, or ``degrees_of_freedom_prior <= n_features - 1``.
    """
    dof = est.degrees_of_freedom_prior
    if dof is not None and not dof > n_features - 1.0:
        raise ValueError(
            f"The parameter 'degrees_of_freedom_prior' should be greater than {n_features - 1}, "
            f"but got {dof:.3f}."
        )
    return {
        "mean": None
        if est.mean_prior is None
        else _prior_array(est.mean_prior, "mean_prior", n_features, False),
        "covariance": None
        if est.covariance_prior is None
        else _prior_array(est.covariance_prior, "covariance_prior", n_features, True),
    }


def check_enough_rows(est, n_rows: int) -> None:
    """Refuse fewer rows than ``max(2, n_components)`` (scikit-learn's rule).

    Raises
    ------
    ValueError
        Too few rows.
    """
    if n_rows < max(2, est.n_components):
        raise ValueError(
            f"Expected n_samples >= max(2, n_components), got n_components = "
            f"{est.n_components}, n_samples = {n_rows}."
        )
