"""Checks of estimator settings and initial parameters: clear errors before any work starts."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data", "split")
COVARIANCE_TYPES = ("diag",)
DTYPES = ("float32", "float64")
MISSING = ("error", "drop", "marginalize")
#: How :func:`~diaggmm_dist.selection.select_n_components` picks among its candidates.
CRITERIA = ("bic", "aic", "heldout")


def is_int(value) -> bool:
    """Whether ``value`` is an integer (Python's or numpy's), booleans excluded.

    Parameters
    ----------
    value : object
        Anything.

    Returns
    -------
    bool
        True for ``3`` or ``np.int64(3)``; False for ``True``, ``3.0`` or ``"3"``.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _choice_list(choices):
    return ", ".join(map(repr, choices))


def check_criterion(criterion: str) -> str:
    """``criterion`` itself, if it is one of :data:`CRITERIA`.

    Parameters
    ----------
    criterion : str
        How a selection picks its model: ``"bic"``, ``"aic"`` or ``"heldout"``.

    Returns
    -------
    str
        ``criterion``.

    Raises
    ------
    ValueError
        ``criterion`` is not one of :data:`CRITERIA`.

    Examples
    --------
    >>> check_criterion("bic")
    'bic'
    """
    if not (isinstance(criterion, str) and criterion in CRITERIA):
        raise ValueError(f"criterion must be one of {_choice_list(CRITERIA)}, got {criterion!r}.")
    return criterion


def check_heldout_fraction(heldout_fraction: float, name: str = "heldout_fraction") -> float:
    """``heldout_fraction`` as a float, if it is a number in [0, 1).

    Parameters
    ----------
    heldout_fraction : float
        The share of the rows held out of a selection's fit and scored.
    name : str, default="heldout_fraction"
        How the error names the value (the CLI's option, a flow's parameter).

    Returns
    -------
    float
        ``heldout_fraction``.

    Raises
    ------
    ValueError
        ``heldout_fraction`` is not a number (booleans are not), or lies outside [0, 1).

    Examples
    --------
    >>> check_heldout_fraction(0.1)
    0.1
    """
    if not (
        isinstance(heldout_fraction, (int, float))
        and not isinstance(heldout_fraction, bool)
        and 0 <= heldout_fraction < 1
    ):
        raise ValueError(f"{name} must be a number in [0, 1), got {heldout_fraction!r}.")
    return float(heldout_fraction)


def check_candidates(candidates, name: str = "candidates") -> list[int]:
    """The candidate numbers of components as a list of Python ints.

    Parameters
    ----------
    candidates : iterable of int
        Numbers of components, each >= 1, none repeated.
    name : str, default="candidates"
        How the errors name the value (the CLI's ``--k``, the flow's ``n_components``).

    Returns
    -------
    list of int
        The candidates, in the order given.

    Raises
    ------
    TypeError
        ``candidates`` is not iterable.
    ValueError
        It is empty, holds a value that is not an integer >= 1, or repeats a value.

    Examples
    --------
    >>> check_candidates((2, 4, 8))
    [2, 4, 8]
    """
    try:
        values = list(candidates)
    except TypeError:
        raise TypeError(f"{name} must be a list of integers, got {candidates!r}.") from None
    if not values:
        raise ValueError(
            f"{name} is empty: give at least one number of components, e.g. [2, 4, 8]."
        )
    bad = [value for value in values if not is_int(value) or value < 1]
    if bad:
        raise ValueError(f"{name} must be integers >= 1; got {bad}.")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(
            f"{name} has repeated values: it lists {repeated} more than once; "
            "give each candidate once."
        )
    return [int(value) for value in values]


def check_selection(
    candidates, criterion: str, heldout_fraction: float, name: str = "candidates"
) -> list[int]:
    """Check a choice among candidate numbers of components before any work.

    Parameters
    ----------
    candidates : iterable of int
        As :func:`check_candidates`.
    criterion : str
        As :func:`check_criterion`.
    heldout_fraction : float
        As :func:`check_heldout_fraction`; must be above 0 for ``criterion="heldout"``.
    name : str, default="candidates"
        How the errors name the candidates.

    Returns
    -------
    list of int
        The candidates, in the order given.

    Raises
    ------
    TypeError, ValueError
        As the three checks; ``ValueError`` also for ``criterion="heldout"`` without
        held-out rows.

    Examples
    --------
    >>> check_selection([2, 4], "heldout", 0.1)
    [2, 4]
    """
    values = check_candidates(candidates, name)
    check_criterion(criterion)
    check_heldout_fraction(heldout_fraction)
    if criterion == "heldout" and heldout_fraction == 0:
        raise ValueError(
            "criterion='heldout' needs held-out rows: give heldout_fraction > 0 (e.g. 0.1)."
        )
    return values


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


def nonfinite_error(count, where="X", allow_missing=True):
    """The error for NaN or infinite values in the data (``count`` of them).

    It starts as scikit-learn's does ("Input X contains NaN"; "infinity"), then says what
    to do here.

    Parameters
    ----------
    count : int
        How many values are not finite.
    where : str, default="X"
        The input's name.
    allow_missing : bool, default=True
        False: some values are infinite, which no missing-value policy accepts.

    Returns
    -------
    ValueError
        The error, to raise.
    """
    hint = (
        "drop or impute those rows, or let DiagGMM handle NaN: missing='marginalize' (exact "
        "likelihood over each row's observed features) or missing='drop'."
        if allow_missing
        else "infinite values cannot be fitted: remove or clip them."
    )
    return ValueError(
        f"Input {where} contains NaN or infinity: {count} value(s) are not finite. "
        f"DiagGMM needs finite data: {hint}"
    )


def bad_weights_error(count):
    """The error for ``count`` negative, NaN or infinite sample weights.

    Parameters
    ----------
    count : int
        How many weights are bad.

    Returns
    -------
    ValueError
        The error, to raise.
    """
    return ValueError(
        f"sample_weight holds {count} negative, NaN or infinite value(s): weights must be "
        "finite and >= 0."
    )


def dense_numeric(X):
    """``X`` itself, or an in-memory object array as float64; sparse matrices are refused.

    As scikit-learn's ``check_array`` does, an object array whose values are numbers (or
    strings of numbers) is converted; one holding anything else is a ``TypeError`` that
    quotes numpy's own message.

    Parameters
    ----------
    X : array-like
        The input.

    Returns
    -------
    object
        ``X``, or an ndarray for a list, a tuple or an object array.

    Raises
    ------
    TypeError
        ``X`` is a scipy.sparse matrix or array (DiagGMM reads dense rows), or an object
        array with a value that is not a number.
    """
    if scipy.sparse.issparse(X):
        raise TypeError(
            f"Sparse data ({type(X).__name__}) is not supported: DiagGMM reads dense rows. "
            "Convert it with X.toarray() if it fits in memory, or write it densely to a Zarr or "
            "dask array."
        )
    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    if isinstance(X, np.ndarray) and X.dtype == object:
        try:
            return X.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                "Expected numeric (integer or float) data, got dtype object holding a value that "
                f"is not a number ({err}): convert the features to numbers first."
            ) from err
    return X
