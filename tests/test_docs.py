"""The documentation site and the README: what `make docs` builds, and the quickstart.

* The site (docs/, Sphinx with MyST Markdown and numpydoc) builds with warnings as errors, the
  way `make docs` builds it, and holds every page of docs/ and the repository pages it shows;
  the gallery's examples (docs/examples/plot_*.py) run in that build.
* Its API reference (pydata-sphinx-theme) has one page per group of names (docs/api/), each
  listing its names with a page per name, and documents every public name of the modules it
  lists.
* The README's quickstart runs as written in a fresh interpreter (every name it uses is
  defined in it), and is the quickstart page's; the README stays short and its links resolve.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: The API reference's groups (docs/api/<group>.md), and the internals page.
API_GROUPS = (
    "estimator",
    "model-selection",
    "outputs",
    "stores",
    "clusters",
    "datasets",
    "plots",
    "flows",
    "cli",
)
REFERENCE_PAGES = (*(f"api/{group}.md" for group in API_GROUPS), "api/index.md", "internals.md")
#: A module's names listed in a group: ``.. currentmodule:: X`` and the autosummary under it.
_CURRENT = re.compile(
    r"^\.\. currentmodule:: (\S+)\n(.*?)(?=^\.\. currentmodule::|\Z)", re.M | re.S
)
_AUTOSUMMARY = re.compile(r"^\.\. autosummary::\n(?:   :.*\n)*\n((?:   \S.*\n)+)", re.M)


def _python_block(path: Path) -> str:
    """The first ```python block of a Markdown file."""
    match = re.search(r"^```python\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)
    assert match, f"{path.name} has no python block"
    return match.group(1)


def _documented_modules() -> list[str]:
    """The modules the reference pages document (``automodule`` and ``currentmodule``)."""
    names = []
    for page in REFERENCE_PAGES:
        text = (DOCS / page).read_text()
        names += re.findall(r"^\.\. (?:auto|current)module:: (\S+)", text, re.MULTILINE)
    return list(dict.fromkeys(names))


def _listed(group: str) -> dict[str, list[str]]:
    """The names a group page lists in its autosummary tables, by module."""
    listed: dict[str, list[str]] = {}
    for module, body in _CURRENT.findall((DOCS / "api" / f"{group}.md").read_text()):
        for table in _AUTOSUMMARY.findall(body):
            listed.setdefault(module, []).extend(line.strip() for line in table.splitlines())
    return listed


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
    """The site built as `make docs` builds it (every page reread, warnings are errors), with the
    gallery's slow example (the turbidity regimes) shown but not run."""
    out = tmp_path_factory.mktemp("site")
    # the quick gallery: only the examples of a few seconds run (docs/conf.py)
    env = dict(os.environ, PYTHONPATH=str(ROOT), DIAGGMM_DOCS_QUICK="1")
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
    pages = {str(path.relative_to(DOCS).with_suffix("")) for path in DOCS.glob("*.md")}
    pages |= {str(path.relative_to(DOCS).with_suffix("")) for path in DOCS.glob("api/*.md")}
    assert {"index", "quickstart", "usage", "object-storage", "api/index", "api/flows"} <= pages
    missing = sorted(page for page in pages if not (site / f"{page}.html").is_file())
    assert not missing, missing
    # the repository pages are shown with their own text, and their links rewritten
    architecture = (site / "architecture.html").read_text()
    assert "Where each thing lives" in architecture
    assert "Docker" in (site / "deploy.html").read_text()
    assert 'href="how-it-works.html' in architecture
    # the gallery's example ran in this build: its output and figure are on its page
    example = (site / "auto_examples" / "plot_choose_k.html").read_text()
    assert re.search(r"chosen K: 5\b", example)  # the mixture written has 5 components
    assert (site / "_images" / "sphx_glr_plot_choose_k_001.png").stat().st_size > 1000


def test_the_reference_is_grouped_with_a_page_per_name(site):
    """The theme these users know; an index of the groups, and per group its names, each with
    a page of its own (an autosummary stub) linked from the group's page."""
    index = (site / "index.html").read_text()
    assert "pydata-sphinx-theme.css" in index, "not the PyData theme"
    overview = (site / "api" / "index.html").read_text()
    for group in API_GROUPS:
        assert f'href="{group}.html"' in overview, f"the API index does not link to {group}"
        page = (site / "api" / f"{group}.html").read_text()
        listed = _listed(group)
        assert listed, f"the group {group} lists no names"
        for module, names in listed.items():
            for name in names:
                stub = f"generated/{module}.{name}.html"
                assert f'href="{stub}' in page, f"{group} does not link to {stub}"
                assert f'id="{module}.{name}"' in (site / "api" / stub).read_text(), stub
    # a flow's page: its signature shows defaults, not pydantic Fields
    train = (site / "api" / "generated" / "flows.train.train.html").read_text()
    assert "FieldInfo" not in train and "tls_directory" in train


def test_every_public_name_is_in_the_reference(site):
    pages = [site / "internals.html", *sorted((site / "api").rglob("*.html"))]
    html = "".join(page.read_text() for page in pages)
    modules = _documented_modules()
    for name in ("diaggmm_dist", "diaggmm_dist.outputs.scores", "diaggmm_dist.stores.registry"):
        assert name in modules
    for name in ("diaggmm_dist.tls", "flows.train", "flows.score", "flows.retrain"):
        assert name in modules
    listed = {}
    for group in API_GROUPS:
        for module, names in _listed(group).items():
            listed.setdefault(module, set()).update(names)
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
            elif name in listed and public not in listed[name]:
                missing.append(f"{name}.{public} (not in its group's list)")
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
    # a page below docs/ (the API groups) links relative to its own folder
    assert rewrite("[f](../formats.md#checkpoint)", "docs/api/stores.md") == (
        "[f](../formats.md#checkpoint)"
    )
    assert rewrite("[d](../../deploy/README.md)", "docs/api/flows.md") == "[d](../deploy.md)"
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


def _attributes(path: Path) -> dict:
    """The attributes of a Zarr v3 node."""
    return json.loads((path / "zarr.json").read_text()).get("attributes", {})


def _table(page: str, heading: str) -> dict[str, str]:
    """The first table under ``## heading`` of a docs page: array name to dtype."""
    section = page.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", section, re.MULTILINE))


def test_the_formats_page_names_what_the_stores_hold(tmp_path):
    """Every file, array and attribute each store writes is named where the page describes it."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    from diaggmm_dist import DiagGMM
    from diaggmm_dist.outputs.label_maps import write_label_map
    from diaggmm_dist.outputs.scores import write_scores
    from diaggmm_dist.stores import checkpoint, model_store, registry

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    gmm = DiagGMM(2, random_state=0, max_iter=2, tol=0).fit(X, checkpoint=tmp_path / "c.zarr")
    gmm.save(tmp_path / "model.zarr")
    write_scores(gmm, X, tmp_path / "scores.zarr")
    dims = ("time", "y", "x", "band")
    cube = xr.DataArray(rng.normal(size=(2, 5, 6, 3)), dims=dims)
    cube = cube.assign_coords(time=[0, 1], y=np.arange(5), x=np.arange(6))
    fitted = DiagGMM(2, random_state=0, max_iter=2, tol=0).fit(cube, feature_dim="band")
    write_label_map(fitted, cube, tmp_path / "labels.zarr")
    version = registry.ModelRegistry(tmp_path / "registry").promote(gmm)

    def named(names, doc, where):
        missing = sorted(name for name in names if not re.search(rf"\b{name}\b", doc))
        assert not missing, f"{where} writes {missing}, not on the formats page"

    model = tmp_path / "model.zarr"
    named(_attributes(model), model_store.__doc__, "the model store")
    named([p.name for p in model.iterdir() if p.is_dir()], model_store.__doc__, "the model store")
    ckpt = tmp_path / "c.zarr"
    named(_attributes(ckpt), checkpoint.__doc__, "a checkpoint")
    step = sorted(ckpt.glob("step-*"))[-1]
    named(_attributes(step)["restarts"][0], checkpoint.__doc__, "a checkpoint step")
    named([p.name for p in step.iterdir() if p.is_dir()], checkpoint.__doc__, "a checkpoint step")
    # a BayesianDiagGMM's checkpoint: the root's estimator, its steps' own attributes
    from diaggmm_dist import BayesianDiagGMM
    from diaggmm_dist.stores import bayesian_steps

    BayesianDiagGMM(n_components=2, max_iter=2).fit(X, checkpoint=tmp_path / "vb.zarr")
    named(_attributes(tmp_path / "vb.zarr"), checkpoint.__doc__, "a Bayesian checkpoint")
    step = sorted((tmp_path / "vb.zarr").glob("step-*"))[-1]
    named(_attributes(step), bayesian_steps.__doc__, "a Bayesian checkpoint step")
    named(_attributes(step)["restarts"][0], bayesian_steps.__doc__, "a Bayesian checkpoint step")
    named([p.name for p in step.iterdir() if p.is_dir()], bayesian_steps.__doc__, "its step")
    # a DiagGMMClassifier's checkpoint: semi-supervised EM's steps
    from diaggmm_dist import DiagGMMClassifier
    from diaggmm_dist.stores import classifier_steps

    y = np.where(np.arange(len(X)) % 3 == 0, (X[:, 0] > 0).astype(int), -1)
    DiagGMMClassifier(max_iter=2).fit(X, y, checkpoint=tmp_path / "clf.zarr")
    named(_attributes(tmp_path / "clf.zarr"), checkpoint.__doc__, "a classifier checkpoint")
    step = sorted((tmp_path / "clf.zarr").glob("step-*"))[-1]
    named(_attributes(step), classifier_steps.__doc__, "a classifier checkpoint step")
    named(_attributes(step)["state"], classifier_steps.__doc__, "a classifier checkpoint step")
    named([p.name for p in step.iterdir() if p.is_dir()], classifier_steps.__doc__, "its step")
    root = tmp_path / "registry"
    named([p.name for p in root.iterdir() if p.is_file()], registry.__doc__, "the registry")
    named(json.loads((root / "current.json").read_text()), registry.__doc__, "current.json")
    named(json.loads((root / version / "registry.json").read_text()), registry.__doc__, version)

    # the other estimators' stores, with named features (the feature coordinate) and both
    # kinds of weight concentration
    from diaggmm_dist import BayesianDiagGMM, DiagGMMClassifier
    from diaggmm_dist.stores import bayesian_store, classifier_store

    table = pd.DataFrame(X, columns=["a", "b", "c"])
    for kind in ("dirichlet_process", "dirichlet_distribution"):
        vb = BayesianDiagGMM(n_components=2, weight_concentration_prior_type=kind, max_iter=2)
        vb.fit(table).save(tmp_path / f"{kind}.zarr")
    DiagGMMClassifier().fit(table, X[:, 0] > 0).save(tmp_path / "classifier.zarr")
    for store, module in (
        ("dirichlet_process.zarr", bayesian_store),
        ("dirichlet_distribution.zarr", bayesian_store),
        ("classifier.zarr", classifier_store),
    ):
        path = tmp_path / store
        named(_attributes(path), module.__doc__, store)
        named([p.name for p in path.iterdir() if p.is_dir()], module.__doc__, store)

    page = (DOCS / "formats.md").read_text()
    for module in ("model_store", "bayesian_store", "classifier_store"):
        assert f".. automodule:: diaggmm_dist.stores.{module}" in page
    for store, heading in (("scores.zarr", "Per-row scores"), ("labels.zarr", "Label maps")):
        table = _table(page, heading)
        section = page.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        named(_attributes(tmp_path / store), section, store)
        arrays = {
            p.name: json.loads((p / "zarr.json").read_text())["data_type"]
            for p in (tmp_path / store).iterdir()
            if p.is_dir() and p.name not in dims
        }
        assert arrays == table, (store, arrays, table)
