"""What stored mixture parameters must satisfy: the checks the model store and checkpoints share.

Each check raises :class:`ModelStoreError` naming where the values were read (``where``: the
model or checkpoint step, and the file) and the array at fault.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..kernels import data_center, log_prob_coefficients
from ..online import WEIGHT_COLUMN

__all__ = [
    "ModelStoreError",
    "check_mixture",
    "check_running_statistics",
    "check_scores_finite",
    "check_values",
    "is_number",
    "read_array",
    "shorten",
    "show",
]


class ModelStoreError(ValueError):
    """A store that is not a valid diaggmm-dist model (names the file and the field at fault)."""


def shorten(text, limit: int = 120) -> str:
    """``text`` (as a string) cut to ``limit`` characters, with "..." when it was longer."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def show(value) -> str:
    """A stored value in a message: its JSON type and its start (``"list [1, 2]"``)."""
    return f"{type(value).__name__} {shorten(repr(value), 80)}"


def is_number(value) -> bool:
    """A JSON number a float64 can hold (not a bool, not an integer of 400 digits)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def read_array(group, name: str, shape: tuple, where: str) -> np.ndarray:
    """Array ``name`` of the open Zarr ``group`` as float64, checked for shape and finiteness.

    Raises
    ------
    ModelStoreError
        It is missing, cannot be read, has another shape or holds NaN or infinite values.
    """
    try:
        value = np.asarray(group[name][...], dtype=np.float64)
    except KeyError:
        raise ModelStoreError(f"{where}: array {name!r} is missing.") from None
    except Exception as err:  # a truncated or corrupt chunk fails in the codec
        raise ModelStoreError(
            f"{where}: array {name!r} could not be read ({type(err).__name__}: {err})."
        ) from err
    check_values(value, name, shape, where)
    return value


def check_values(value: np.ndarray, name: str, shape: tuple, where: str) -> None:
    """Raise ModelStoreError unless array ``name`` has ``shape`` and finite values."""
    if value.shape != shape:
        raise ModelStoreError(f"{where}: array {name!r} has shape {value.shape}, expected {shape}.")
    if not np.all(np.isfinite(value)):
        raise ModelStoreError(
            f"{where}: array {name!r} holds NaN or infinite values "
            f"({int(np.sum(~np.isfinite(value)))} of {value.size}; a lost chunk reads as NaN)."
        )


def check_mixture(weights, means, covariances, where: str) -> None:
    """Raise ModelStoreError unless the parameters form a valid diagonal mixture.

    Finite parameters, variances > 0 whose inverses (the precisions) are finite, and
    weights >= 0 that sum to 1 (within 1e-6).
    """
    for name, value in (("weights", weights), ("means", means), ("covariances", covariances)):
        if not np.all(np.isfinite(value)):
            raise ModelStoreError(f"{where}: array {name!r} holds NaN or infinite values.")
    if np.any(covariances <= 0):
        raise ModelStoreError(
            f"{where}: array 'covariances' has {int(np.sum(covariances <= 0))} value(s) <= 0."
        )
    with np.errstate(over="ignore"):
        infinite = ~np.isfinite(1.0 / covariances)
    if infinite.any():
        raise ModelStoreError(
            f"{where}: array 'covariances' has {int(infinite.sum())} value(s) so small that "
            f"their precisions (1/variance) overflow, e.g. {covariances[infinite].min():.3g}."
        )
    if np.any(weights < 0):
        raise ModelStoreError(f"{where}: array 'weights' has negative values.")
    if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise ModelStoreError(f"{where}: array 'weights' sums to {weights.sum():.8f}, not 1.")


def check_scores_finite(weights, means, covariances, dtype, where: str) -> None:
    """Raise ModelStoreError unless the model's log-density coefficients are finite in ``dtype``.

    These are the numbers predict and score compute with (:func:`kernels.log_prob_coefficients`);
    a component of weight 0 has a log-weight of -inf by design (it is never chosen).
    """
    precisions = 1.0 / covariances
    with np.errstate(over="ignore", invalid="ignore"):
        shift = data_center(weights, means, precisions)
        coef = log_prob_coefficients(weights, means, precisions, shift, np.dtype(dtype))
    live = np.asarray(weights) > 0
    parts = {
        "shift": coef.shift,
        "products": coef.products,
        "feature": coef.feature,
        "offset": coef.offset[live],
    }
    bad = [name for name, value in parts.items() if not np.all(np.isfinite(value))]
    if bad:
        raise ModelStoreError(
            f"{where}: arrays 'means' and 'covariances' give non-finite log-density coefficients "
            f"({', '.join(bad)}) in {np.dtype(dtype).name}: their scores would be NaN or infinite."
        )


def check_running_statistics(statistics: np.ndarray, k: int, d: int, where: str) -> None:
    """Raise ModelStoreError unless per-unit-weight statistics keep their invariants.

    See :mod:`diaggmm_dist.online`: masses and second moments >= 0, a last row that is the unit
    weight, masses summing to 1, per-feature masses no larger than their component's.
    """
    masses, observed = statistics[:k, 0], statistics[:k, 1 : d + 1]
    if (
        np.any(masses < 0)
        or np.any(observed < 0)
        or np.any(statistics[:k, 2 * d + 1 : 3 * d + 1] < 0)
    ):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has negative masses or second moments."
        )
    unit = np.zeros(statistics.shape[1])
    unit[WEIGHT_COLUMN] = 1.0
    if not np.array_equal(statistics[k], unit):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has a last row {statistics[k].tolist()}, "
            f"not the unit weight {unit.tolist()}."
        )
    if not np.isclose(masses.sum(), 1.0, rtol=0, atol=1e-6):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has masses summing to {masses.sum():.8f}, "
            "not 1 (they are per unit weight)."
        )
    if np.any(observed > masses[:, None] + 1e-9):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has per-feature masses above their "
            "component's mass."
        )
