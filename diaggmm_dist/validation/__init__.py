"""The library's choices and checks: clear errors before any work starts.

The library's one source of the choices (:mod:`.choices`) and of the checks: settings and
initial parameters (:mod:`.settings`), the data and sample weights (:mod:`.data`).
"""

from ..lazy_names import lazy_attributes
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

# The checks that need numpy and scipy are imported on first use (PEP 562): the CLI's parser
# reads the choices above without them (bench/startup.py).
_LAZY = {
    "bad_weights_error": "data",
    "dense_numeric": "data",
    "nonfinite_error": "data",
    "check_initial_parameters": "settings",
    "check_settings": "settings",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
