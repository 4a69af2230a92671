"""diaggmm-dist: distributed, out-of-core EM for Gaussian mixtures with diagonal covariances."""

from ._version import __version__ as __version__

__all__ = ["ComponentSelection", "DiagGMM", "ReseededComponentWarning", "select_n_components"]

# The public names are imported on first use (PEP 562), so that `diaggmm --help` and usage
# errors do not import dask and scikit-learn (see bench/startup.py).
_LAZY = {
    "DiagGMM": "mixture",
    "ReseededComponentWarning": "mstep",
    "ComponentSelection": "selection",
    "select_n_components": "selection",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
