"""The documentation site and the README: what `make docs` builds, and the quickstart.

* The site (docs/, Sphinx with MyST Markdown and numpydoc) builds with warnings as errors, the
  way `make docs` builds it, and holds every page of docs/ and the repository pages it shows.
* Its API reference documents every public name of the modules it lists.
* The README's quickstart runs as written in a fresh interpreter (every name it uses is
  defined in it), and is the quickstart page's; the README stays short and its links resolve.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE_PAGES = ("api.md", "internals.md")


def _python_block(path: Path) -> str:
    """The first ```python block of a Markdown file."""
    match = re.search(r"^```python\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"{path.name} has no python block"
    return match.group(1)


def _documented_modules() -> list[str]:
    """The modules the reference pages document (their ``automodule`` directives)."""
    names = []
    for page in REFERENCE_PAGES:
        names += re.findall(r"^\.\. automodule:: (\S+)", (DOCS / page).read_text(), re.MULTILINE)
    return names


def _public_names(module) -> list[str]:
    """A module's ``__all__``, or else the functions and classes it defines without a _."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built as `make docs` builds it (every page reread, warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return out / "html"


def test_make_docs_builds_the_site_with_warnings_as_errors():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^docs:.*\n\t(.*)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no docs target"
    assert re.search(r"-m sphinx .*-W .*docs docs/_build/html$", recipe.group(1)), recipe.group(1)
    assert "docs/_build/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_site_builds_and_holds_every_page(site):
    pages = {path.stem for path in DOCS.glob("*.md")}
    assert {"index", "quickstart", "usage", "object-storage", "api"} <= pages
    missing = sorted(page for page in pages if not (site / f"{page}.html").is_file())
    assert not missing, missing
    # the repository pages are shown with their own text, and their links rewritten
    architecture = (site / "architecture.html").read_text()
    assert "Where each thing lives" in architecture
    assert "Docker" in (site / "deploy.html").read_text()
    assert 'href="how-it-works.html' in architecture


def test_every_public_name_is_in_the_reference(site):
    html = "".join((site / page.replace(".md", ".html")).read_text() for page in REFERENCE_PAGES)
    modules = _documented_modules()
    for name in ("diaggmm_dist", "diaggmm_dist.outputs.scores", "diaggmm_dist.stores.registry"):
        assert name in modules
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        for public in _public_names(module):
            value = getattr(module, public)
            # the reference is where a name is defined (re-exports document the original)
            origin = getattr(value, "__module__", name) if callable(value) else name
            ids = {f'id="{name}.{public}"', f'id="{origin}.{public}"'}
            if not any(found in html for found in ids):
                missing.append(f"{name}.{public}")
    assert not missing, missing
    for method in ("fit", "predict", "score_rows", "partial_fit", "save"):
        assert f'id="diaggmm_dist.DiagGMM.{method}"' in html


def test_links_to_repository_files_become_site_pages_or_paths():
    conf = runpy.run_path(str(DOCS / "conf.py"))
    rewrite = conf["_rewrite_links"]
    text = "[the map](../ARCHITECTURE.md#layers), [`bench/FINDINGS.md`](../bench/FINDINGS.md)"
    assert rewrite(text, "docs/how-it-works.md") == (
        "[the map](architecture.md#layers), `bench/FINDINGS.md`"
    )
    assert rewrite("[usage](docs/usage.md)", "ARCHITECTURE.md") == "[usage](usage.md)"
    assert rewrite("[x](https://example.org/a.md)", "ARCHITECTURE.md").endswith("a.md)")
    # a broken link is left for the build to warn about (and so to fail)
    assert rewrite("[gone](no/such/file.md)", "ARCHITECTURE.md") == "[gone](no/such/file.md)"


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to a missing {target}"
    for command in ("make run", "make test", "make docs", "pip install"):
        assert command in text


def test_readme_quickstart_runs_as_written(tmp_path):
    code = _python_block(ROOT / "README.md")
    assert len(code.strip().splitlines()) <= 12
    assert code == _python_block(DOCS / "quickstart.md"), "the two quickstarts differ"
    (tmp_path / "quickstart.py").write_text(code)
    # a fresh interpreter in an empty folder: every name it uses is defined in the snippet
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "quickstart.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("True "), lines  # converged
    assert lines[-1] == "K by BIC: 4", lines  # the mixture written has 4 components
    assert (tmp_path / "demo.zarr").is_dir()
