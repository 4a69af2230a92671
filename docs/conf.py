"""Sphinx configuration of the documentation site (`make docs`, tests/test_docs.py)."""

import importlib
import inspect
import os
import re
import sys

from sphinx.pycode import ModuleAnalyzer

# The package documented is the one in this checkout, not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from diaggmm_dist import __version__  # noqa: E402

project = "diaggmm-dist"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "examples", "auto_examples/*.ipynb"]
# The autosummary stubs' templates (docs/_templates/autosummary: a class with its own methods,
# a mixture estimator with those it inherits from MixtureBase too, a Prefect flow as a function)
templates_path = ["_templates"]

# The gallery: docs/examples/plot_*.py run at every build (a failing example fails it), their
# pages generated into docs/auto_examples (not committed).
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    # DIAGGMM_DOCS_QUICK=1 (tests/test_docs.py) runs only the examples of a few seconds: the
    # turbidity regimes take about 20 s more on 2 cores, so only `make docs` runs them.
    "filename_pattern": r"/plot_choose_k" if os.environ.get("DIAGGMM_DOCS_QUICK") else r"/plot_",
    "run_stale_examples": True,  # every build runs them, even when a script is unchanged
    "download_all_examples": False,
    "show_memory": False,
    "show_signature": False,
    "matplotlib_animations": False,
}
root_doc = "index"

# The included pages (ARCHITECTURE.md, deploy/, flows/) use GitHub-style heading anchors.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Offline build: no inventories fetched (intersphinx_mapping left empty on purpose).
intersphinx_mapping: dict = {}

# The theme of the PyData projects these users read (NumPy, xarray, dask, scikit-learn)
html_theme = "pydata_sphinx_theme"
html_title = f"diaggmm-dist {release}"
html_theme_options = {
    "navbar_align": "left",
    "header_links_before_dropdown": 6,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # no "edit this page" or "show source": the site is built from a checkout, not a hosted repo
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_show_sourcelink = False
copyright = "the diaggmm-dist authors (BSD-3-Clause)"

# ---------------------------------------------------------------- pages outside docs/
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Site pages whose text is a Markdown file elsewhere in the repository (kept where it is, so
#: that the repository's own links and the tests that read it keep working).
repo_pages = {
    "architecture": "ARCHITECTURE.md",
    "deploy": "deploy/README.md",
    "flows": "flows/README.md",
}
#: Where each repository Markdown file is in the site (the inverse of repo_pages, and docs/).
_site_page = {path: f"{page}.md" for page, path in repo_pages.items()}
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#]*)(#[^)\s]*)?\)")


def _rewrite_links(text: str, source: str) -> str:
    """Links in ``text`` (the repository file ``source``) made relative to docs/.

    A link to a page of the site becomes a link to that page; a link to another repository file
    (bench/FINDINGS.md, a script) becomes its path as code, since the site does not hold it. A
    link to a file that does not exist is left alone, so the build warns about it.
    """

    # where the page of ``source`` is in the site, for links relative to it
    here = os.path.dirname(
        source[len("docs/") :] if source.startswith("docs/") else _site_page.get(source, "")
    )

    def sub(match: re.Match) -> str:
        label, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        if not target or "://" in target or target.startswith("mailto:"):
            return match.group(0)
        path = os.path.normpath(os.path.join(os.path.dirname(source), target))
        page = None
        if path.startswith("docs/") and path.endswith(".md"):
            page = path[len("docs/") :]
        elif path in _site_page:
            page = _site_page[path]
        if page is not None:
            return f"[{label}]({os.path.relpath(page, here or '.')}{anchor})"
        if os.path.exists(os.path.join(ROOT, path)):
            return f"`{path}`" if label.strip("`") == path else f"{label} (`{path}`)"
        return match.group(0)

    return _LINK.sub(sub, text)


_AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\n(?:   :.*\n)*", re.MULTILINE)


def _undocumented_data(name: str) -> list[str]:
    """The constants of a module's ``__all__`` without a ``#:`` comment in its source.

    autodoc skips module-level data without a doc comment, even with ``undoc-members``: these
    are named one by one (``autodata``) so that every name of ``__all__`` is in the reference.
    """
    module = importlib.import_module(name)
    documented = {attr for _, attr in ModuleAnalyzer.for_module(name).find_attr_docs()}
    return [
        public
        for public in getattr(module, "__all__", ())
        if public not in documented and not callable(getattr(module, public))
    ]


def _with_constants(text: str) -> str:
    """Each ``automodule`` directive followed by the ``autodata`` of its undocumented constants."""

    def sub(match: re.Match) -> str:
        if ":no-members:" in match.group(0):
            return match.group(0)
        extra = "".join(
            f"\n.. autodata:: {match.group(1)}.{c}\n" for c in _undocumented_data(match.group(1))
        )
        return match.group(0) + extra

    return _AUTOMODULE.sub(sub, text)


def _source_read(app, docname: str, source: list[str]) -> None:
    """The text of a repository page (repo_pages) or a docs/ page, its links made site links."""
    if docname in repo_pages:
        with open(os.path.join(ROOT, repo_pages[docname]), encoding="utf-8") as file:
            source[0] = _rewrite_links(file.read(), repo_pages[docname])
    else:
        source[0] = _with_constants(_rewrite_links(source[0], f"docs/{docname}.md"))


def _skip_member(app, what, name, obj, skip, options):
    """scikit-learn's metadata-routing methods (set_*_request) are its, documented there."""
    if name == "get_metadata_routing" or (name.startswith("set_") and name.endswith("_request")):
        return True
    return None


def _flow_signature(app, what, name, obj, options, signature, return_annotation):
    """A Prefect flow's signature with its parameters' defaults, not their pydantic ``Field``s."""
    from pydantic.fields import FieldInfo

    if not (type(obj).__module__.startswith("prefect.") and callable(getattr(obj, "fn", None))):
        return None
    parameters = [
        parameter.replace(
            annotation=inspect.Parameter.empty,
            default=parameter.default.default
            if isinstance(parameter.default, FieldInfo)
            else parameter.default,
        )
        for parameter in inspect.signature(obj.fn).parameters.values()
    ]
    return str(inspect.Signature(parameters)), None


def setup(app):
    app.connect("source-read", _source_read)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-signature", _flow_signature)
