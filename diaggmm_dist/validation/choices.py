"""The choices of the library's settings, and the checks of a choice among candidate models.

The one source of every choice list: the estimator, the CLI's argparse ``choices`` and the
flows all read these.
"""

from __future__ import annotations

import numbers

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
