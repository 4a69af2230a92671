"""The tooling a new user and CI run: `make test` lints, formats and tests; py.typed ships."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def recipe(target):
    """The command lines of a Makefile target, in order (tabs and continuations kept out)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{target}\s*:(?!=)", line))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        commands.append(line.strip())
    return commands


def command_lines(path):
    """The lines of a shell script that are not comments or blank."""
    lines = (ROOT / path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_make_test_runs_ruff_before_pytest():
    commands = recipe("test")
    lint = [i for i, c in enumerate(commands) if re.search(r"\bruff check \.", c)]
    form = [i for i, c in enumerate(commands) if re.search(r"\bruff format --check \.", c)]
    tests = [i for i, c in enumerate(commands) if re.search(r"-m pytest\b", c)]
    assert lint and form and tests, commands
    assert max(lint + form) < min(tests), "ruff runs first: a style error fails fast"


def test_ci_and_readme_call_make_test():
    assert "make test" in command_lines(".ci/run")
    assert re.search(r"^make test\b", (ROOT / "README.md").read_text(), re.MULTILINE)


def test_ruff_is_configured_and_installed_with_the_tests():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["ruff"]["line-length"] == 100
    extras = " ".join(project["project"]["optional-dependencies"]["test"])
    assert "ruff" in extras and "numpydoc" in extras


def test_py_typed_ships():
    assert (ROOT / "diaggmm_dist" / "py.typed").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["diaggmm_dist"]
