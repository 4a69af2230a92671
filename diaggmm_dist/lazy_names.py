"""A package's names imported on first use (PEP 562), so that the command line starts fast.

``diaggmm --help`` and usage errors need neither numpy, dask nor scikit-learn; the packages
whose public names pull them in import those names only when asked (see bench/startup.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(
    package: str, modules: dict[str, str], namespace: dict
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` that import ``name`` from its submodule
    ``modules[name]`` on first use and keep it in ``namespace`` (the package's globals).

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    modules : dict of str to str
        Each lazy name's submodule, relative to the package.
    namespace : dict
        The package's ``globals()``.

    Returns
    -------
    tuple of callables
        ``(__getattr__, __dir__)``, to assign at the package's top level.
    """

    def __getattr__(name: str):
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{modules[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *modules])

    return __getattr__, __dir__
