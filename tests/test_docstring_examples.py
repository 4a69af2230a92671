"""The Examples of the public API run as doctests: the docstrings show what the code does."""

from __future__ import annotations

import doctest
import importlib
import warnings

import pytest
from test_architecture import _resolve, top_level_names

#: The modules that define the public names (``tests/test_architecture.py``): their examples.
MODULES = sorted({_resolve(name).__module__ for name in top_level_names()})


def _examples(module):
    """The doctests of ``module``'s docstrings that hold at least one example."""
    finder = doctest.DocTestFinder()
    tests = finder.find(importlib.import_module(module))
    return [test for test in tests if test.examples]


@pytest.mark.parametrize(
    "test",
    [
        pytest.param(test, id=test.name)
        for module in MODULES
        for test in sorted(_examples(module), key=lambda t: t.name)
    ],
)
def test_docstring_example(test):
    # no option flags: an example needing one says so itself (``# doctest: +ELLIPSIS``), so
    # it also runs as ``python -m doctest`` runs it
    runner = doctest.DocTestRunner(verbose=False)
    report = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny example may not converge: not what it shows
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_the_public_modules_are_run():
    assert {"diaggmm_dist.mixture", "diaggmm_dist.selection", "diaggmm_dist.mstep"} <= set(MODULES)
    for module in MODULES:
        assert _examples(module), f"{module}: no docstring examples found"
