"""diaggmm-dist: distributed, out-of-core EM for Gaussian mixtures with diagonal covariances."""

from ._version import __version__ as __version__
from .mixture import DiagGMM
from .mstep import ReseededComponentWarning
from .selection import ComponentSelection, select_n_components

__all__ = ["ComponentSelection", "DiagGMM", "ReseededComponentWarning", "select_n_components"]
