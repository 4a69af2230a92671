"""Checks of the data and sample weights: the errors for bad values, dense numeric input."""

from __future__ import annotations

import numpy as np
import scipy.sparse


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
