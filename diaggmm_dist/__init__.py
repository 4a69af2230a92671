"""diaggmm-dist: distributed, out-of-core EM for Gaussian mixtures with diagonal covariances."""

from ._version import __version__ as __version__
from .lazy_names import lazy_attributes

__all__ = [
    "BayesianDiagGMM",
    "ComponentSelection",
    "DiagGMM",
    "DiagGMMClassifier",
    "ReseededComponentWarning",
    "select_n_components",
]

# The public names are imported on first use (PEP 562), so that `diaggmm --help` and usage
# errors do not import dask and scikit-learn (see bench/startup.py).
_LAZY = {
    "BayesianDiagGMM": "bayesian",
    "DiagGMM": "mixture",
    "ReseededComponentWarning": "mstep",
    "ComponentSelection": "selection",
    "select_n_components": "selection",
    "DiagGMMClassifier": "classifier",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
