"""A lean, conventional install: license, one version, a core without Prefect, plots that
leave the user's matplotlib backend alone, and flows that import their helpers plainly."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter on this worktree; fails the test on a non-zero exit."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def requirement_names(requirements: list[str]) -> set[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_license_is_an_spdx_string_with_its_file():
    """PEP 639: the SPDX expression and the file it ships (the table form is deprecated)."""
    assert PROJECT["license"] == "BSD-3-Clause", PROJECT["license"]
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text  # the third clause
    # setuptools reads the SPDX string and license-files from 77 on
    (backend,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert re.fullmatch(r"setuptools>=(\d+)", backend) and int(backend.split(">=")[1]) >= 77


def test_one_version_source():
    """pyproject takes the version from diaggmm_dist/_version.py; it is not written twice."""
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "diaggmm_dist._version.__version__"
    from diaggmm_dist._version import __version__

    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__), __version__
    versions = re.findall(r"__version__\s*=", (ROOT / "diaggmm_dist" / "_version.py").read_text())
    assert len(versions) == 1


def test_core_dependencies_leave_prefect_to_the_flows_extra():
    core = requirement_names(PROJECT["dependencies"])
    assert "prefect" not in core, sorted(core)
    needed = {"numpy", "dask", "distributed", "zarr", "xarray", "numba", "scikit-learn"}
    assert needed <= core, sorted(needed - core)
    extras = PROJECT["optional-dependencies"]
    assert "prefect" in requirement_names(extras["flows"])
    for extra in ("s3", "gcs", "azure", "tables", "demo", "slurm"):
        assert extras.get(extra), f"no [{extra}] extra"
    # `make test` and `make run` install [test]: it must bring the flows (and Prefect)
    (own,) = [r for r in extras["test"] if r.startswith("diaggmm-dist[")]
    assert "flows" in re.search(r"\[(.*)\]", own).group(1).split(",")


def test_the_image_installs_the_flows_extra_from_its_lock():
    """The Docker image runs the flows: it installs [flows], whose Prefect the lock pins."""
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    install = re.search(r'RUN pip install --no-deps [^"]*"\.\[([^\]]*)\]"', dockerfile)
    assert install and "flows" in install.group(1).split(","), install
    assert re.search(r"^COPY [^\n]*\bLICENSE\b", dockerfile, re.M), "license-files needs it"
    from packaging.requirements import Requirement

    lock = (ROOT / "deploy" / "docker" / "requirements.lock").read_text()
    pinned = re.search(r"^prefect==(\S+)", lock, re.M)
    assert pinned, "the lock has no prefect"
    for requirement in PROJECT["optional-dependencies"]["flows"]:
        assert Requirement(requirement).specifier.contains(pinned.group(1))


def test_the_library_works_without_prefect(tmp_path):
    """Every module imports, `diaggmm --help` runs and a small fit converges with Prefect
    made unimportable."""
    result = run_python(
        """
        import contextlib, io, pkgutil, importlib, sys
        sys.modules["prefect"] = None  # `import prefect` raises ImportError
        import diaggmm_dist
        names = [m.name for m in pkgutil.walk_packages(diaggmm_dist.__path__, "diaggmm_dist.")]
        for name in names:
            if not name.endswith(".__main__"):  # it runs the command
                importlib.import_module(name)
        assert len(names) > 20, names
        from diaggmm_dist.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["--help"])
            except SystemExit as exit:
                assert exit.code in (0, None), exit.code
        assert "usage" in out.getvalue().lower(), out.getvalue()
        import numpy as np
        from diaggmm_dist import DiagGMM
        rng = np.random.default_rng(0)
        X = np.concatenate([rng.normal(-4, 1, (300, 2)), rng.normal(4, 1, (300, 2))])
        gmm = DiagGMM(n_components=2, random_state=0).fit(X)
        assert gmm.converged_, gmm.n_iter_
        assert sorted(np.round(gmm.means_[:, 0]).tolist()) == [-4.0, 4.0], gmm.means_
        assert not any(m == "prefect" or m.startswith("prefect.") for m in sys.modules
                       if sys.modules[m] is not None)
        print("modules", len(names))
        """
    )
    assert "modules" in result.stdout


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """The user's backend (here svg, set by MPLBACKEND) is the same after every plot, and
    pyplot's figure list is not touched."""
    pytest.importorskip("matplotlib")
    run_python(
        f"""
        import matplotlib
        before = matplotlib.get_backend()
        assert before.lower() == "svg", before
        import numpy as np, xarray as xr
        from diaggmm_dist import plots
        labels = xr.DataArray(np.array([[0, 1, -1], [1, 2, 0]]), dims=("lat", "lon"),
                              coords={{"lat": [0.0, 1.0], "lon": [0.0, 1.0, 2.0]}})
        paths = [
            plots.plot_label_map(labels, {str(tmp_path / "map.png")!r}),
            plots.plot_convergence([-3.0, -2.5, -2.4], {str(tmp_path / "em.png")!r}),
            plots.plot_selection(
                [{{"n_components": 2, "bic": 10.0, "aic": 9.0}},
                 {{"n_components": 4, "bic": 8.0, "aic": 7.0}}],
                {str(tmp_path / "bic.png")!r}, chosen=4),
        ]
        for path in paths:
            assert open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n", path
        after = matplotlib.get_backend()
        assert after == before, (before, after)
        assert "matplotlib.pyplot" not in __import__("sys").modules
        """,
        MPLBACKEND="svg",
    )


def test_flows_import_their_helpers_without_fallbacks():
    """No `try: import ... except ImportError` in flows/: one import path, errors not hidden."""
    problems = []
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Try):
                continue
            imports = any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body)
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None} | {
                "bare" for h in node.handlers if h.type is None
            }
            if imports and caught & {"ImportError", "ModuleNotFoundError", "bare", "Exception"}:
                problems.append(f"{path.name}:{node.lineno}")
    assert not problems, problems


FLOW_CHOICES = {
    "train": {
        "criterion": ["bic", "aic", "heldout"],
        "dtype": ["float32", "float64"],
        "init_params": ["kmeans", "k-means++", "random", "random_from_data", "split"],
    },
    "retrain": {"mode": ["refit", "online"]},
    "score": {},
}


@pytest.mark.parametrize("name", sorted(FLOW_CHOICES))
def test_flow_parameters_have_choices_and_help(name):
    """Prefect's parameter schema (what the UI shows and the server enforces at submission):
    choices as enums, a description for every optional parameter, and a wrong choice refused."""
    import importlib

    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    flow = getattr(importlib.import_module(f"flows.{name}"), name)
    schema = parameter_schema(flow).model_dump_for_openapi()
    properties = schema["properties"]
    for parameter, choices in FLOW_CHOICES[name].items():
        assert properties[parameter]["enum"] == choices, (parameter, properties[parameter])
    # every parameter, required ones too, in what deployments get and in the flow's own schema
    undescribed = [p for p in properties if not properties[p].get("description")]
    assert not undescribed, f"{name}: no description for {undescribed}"
    assert flow.parameters.model_dump_for_openapi() == schema
    for parameter in FLOW_CHOICES[name]:
        # the same validation the Prefect server applies to a run of a deployment
        errors = validate({parameter: "wrong"}, schema, ignore_required=True)
        assert errors and "wrong" in str(errors[0]), (parameter, errors)
        good = {parameter: FLOW_CHOICES[name][parameter][-1]}
        assert not validate(good, schema, ignore_required=True)


def _docstring_parameters(doc: str) -> dict[str, tuple[str, str]]:
    """The numpydoc Parameters section of ``doc``: name to (type, one-line description)."""
    from numpydoc.docscrape import NumpyDocString

    parsed = NumpyDocString(doc)["Parameters"]
    names = [entry.name for entry in parsed]
    assert len(names) == len(set(names)), f"a parameter is described twice: {names}"
    return {entry.name: (entry.type, " ".join(" ".join(entry.desc).split())) for entry in parsed}


@pytest.mark.parametrize("name", sorted(FLOW_CHOICES))
def test_each_flow_parameter_is_described_once(name):
    """One help text per parameter: the docstring's Parameters section is made from it (the
    source docstring has none of its own) and the Prefect UI's schema carries the same text."""
    import importlib
    import inspect

    from prefect.utilities.callables import parameter_schema

    module = importlib.import_module(f"flows.{name}")
    flow = getattr(module, name)
    (source,) = [
        node
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    written = ast.get_docstring(source)
    assert "Parameters\n----------" not in written, f"{name}: a hand-written Parameters section"
    assert "Returns\n-------" in written

    documented = _docstring_parameters(flow.__doc__)
    assert documented == _docstring_parameters(flow.fn.__doc__)  # help() of either: the same
    # every parameter once, in the signature's order
    assert list(documented) == list(inspect.signature(flow.fn).parameters)
    properties = parameter_schema(flow).model_dump_for_openapi()["properties"]
    for parameter, (kind, text) in documented.items():
        assert text == " ".join(properties[parameter]["description"].split()), parameter
    if name == "train":
        assert documented["criterion"][0] == '{"bic", "aic", "heldout"}, default="bic"'
        assert documented["n_components"][0] == "int or list of int"
        assert documented["tls_directory"][0] == "str, optional"
    # a call that leaves out a required parameter is refused, not given a Field as its value
    required = next(iter(documented))
    with pytest.raises(Exception, match=required):
        flow.validate_parameters({})


def test_parameters_of_several_flows_share_one_text():
    """The help of a parameter several flows take is one text (flows/parameters.py), the same
    in each flow's schema; only the data parameters, whose meaning differs, differ."""
    from prefect.utilities.callables import parameter_schema

    from flows import parameters
    from flows.retrain import retrain
    from flows.score import score
    from flows.train import train

    shared = {
        "scheduler_address": parameters.SCHEDULER_ADDRESS,
        "storage_options": parameters.STORAGE_OPTIONS,
        "storage_options_block": parameters.STORAGE_OPTIONS_BLOCK,
        "tls_directory": parameters.TLS_DIRECTORY,
    }
    for flow in (train, score, retrain):
        properties = parameter_schema(flow).model_dump_for_openapi()["properties"]
        for parameter, text in shared.items():
            assert properties[parameter]["description"] == text, (flow.name, parameter)
    # the long texts are not repeated in the flows' sources (drift starts with a copy)
    for path in sorted((ROOT / "flows").glob("*.py")):
        if path.name == "parameters.py":
            continue
        source = " ".join(path.read_text().split())
        for text in (parameters.STORAGE_OPTIONS, parameters.TLS_DIRECTORY):
            assert text[:60] not in source, f"{path.name} repeats {text[:40]!r}"


def test_parameter_help_refuses_a_parameter_without_help():
    from prefect import flow
    from pydantic import Field

    from flows.parameters import parameter_help

    def undescribed(data_url: str, k: int = Field(2, description="Components.")):
        """Fit.

        Returns
        -------
        dict
        """

    with pytest.raises(TypeError, match="no help for the parameter data_url"):
        parameter_help()(flow(name="x")(undescribed))
    with pytest.raises(TypeError, match="no parameter labels_url"):
        parameter_help(data_url="Data.", labels_url="Labels.")(flow(name="x")(undescribed))

    def plain_default(data_url: str, k: int = 2):
        """Fit."""

    with pytest.raises(TypeError, match="give k its default as Field"):
        parameter_help(data_url="Data.")(flow(name="x")(plain_default))
    described = parameter_help(data_url="Data.")(flow(name="x")(undescribed))
    assert described.parameters.properties["data_url"]["description"] == "Data."
    assert described.parameters.required == ["data_url"]
    assert "data_url : str\n    Data.\nk : int, default=2\n    Components." in described.__doc__
    # a copy (with_options) given the same help again: the same docstring and schema
    copy = parameter_help(data_url="Data.")(described.with_options(name="y"))
    assert copy.__doc__ == described.__doc__
    assert copy.parameters == described.parameters
    with pytest.raises(TypeError, match="its own Parameters section"):
        parameter_help(data_url="Other.")(described.with_options(name="z"))


def test_the_flows_dtype_default_is_documented():
    """The flows default to float32 where the library defaults to float64: said, with why."""
    import inspect

    from diaggmm_dist import DiagGMM
    from flows.parameters import DEFAULT_DTYPE, DTYPE
    from flows.train import train

    library = inspect.signature(DiagGMM).parameters["dtype"].default
    flow = inspect.signature(train.fn).parameters["dtype"].default.default
    assert flow == DEFAULT_DTYPE
    if flow != library:
        assert library in DTYPE and flow in DTYPE and "bytes" in DTYPE
        assert f"library's default is {library}" in " ".join(train.fn.__doc__.split())
