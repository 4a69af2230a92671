"""The library's version, readable by any module without importing the package."""

__version__ = "0.1.0"
