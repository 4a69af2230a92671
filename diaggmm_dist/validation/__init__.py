"""The library's choices and checks: clear errors before any work starts.

The library's one source of the choices (:mod:`.choices`) and of the checks: settings and
initial parameters (:mod:`.settings`), the data and sample weights (:mod:`.data`).
"""

from .choices import (
    COVARIANCE_TYPES,
    CRITERIA,
    DTYPES,
    INIT_PARAMS,
    MISSING,
    check_candidates,
    check_criterion,
    check_heldout_fraction,
    check_selection,
    is_int,
)
from .data import bad_weights_error, dense_numeric, nonfinite_error
from .settings import check_initial_parameters, check_settings

__all__ = [
    "COVARIANCE_TYPES",
    "CRITERIA",
    "DTYPES",
    "INIT_PARAMS",
    "MISSING",
    "bad_weights_error",
    "check_candidates",
    "check_criterion",
    "check_heldout_fraction",
    "check_initial_parameters",
    "check_selection",
    "check_settings",
    "dense_numeric",
    "is_int",
    "nonfinite_error",
]
