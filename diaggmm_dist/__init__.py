"""diaggmm-dist: distributed, out-of-core EM for Gaussian mixtures with diagonal covariances."""

from .mixture import DiagGMM, ReseededComponentWarning

__all__ = ["DiagGMM", "ReseededComponentWarning"]
__version__ = "0.1.0"
