"""The stores sit below the model layer: a model store reads and writes records, not estimators.

Also: the record round trip without an estimator, the registry's loader, and the one bounded
file reader the chunk readers and the model store share.
"""

import ast
import os
from pathlib import Path

import fsspec
import numpy as np
import pytest
from conftest import mixture_data

import diaggmm_dist
from diaggmm_dist import DiagGMM
from diaggmm_dist.bounded_files import (
    FileTooLarge,
    NotARegularFile,
    read_bounded,
    regular_file_size,
)
from diaggmm_dist.parameters import MixtureParameters
from diaggmm_dist.persistence import model_from_record, record_of
from diaggmm_dist.stores.model_record import ModelRecord, OnlineState
from diaggmm_dist.stores.model_store import ModelStoreError, read_record, write_record
from diaggmm_dist.stores.registry import ModelRegistry

PACKAGE = Path(diaggmm_dist.__file__).parent
#: Modules of the model layer and above: nothing in the lower packages may import them.
ABOVE = ("mixture", "selection", "fitting", "persistence", "outputs", "cli", "__init__")


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name, path, modules):
    """Modules of the package that module ``name`` imports, anywhere (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            # ``from . import x`` imports the submodule x when there is one
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                for alias in node.names
            ]
        else:
            continue
        found.update(target for target in targets if target in modules)
    return found


def _reachable(start, modules):
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        for imported in _imports(name, modules[name], modules):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def _is_above(module):
    rest = module.split(".", 1)[1] if "." in module else "__init__"
    return rest.split(".")[0] in ABOVE


@pytest.mark.parametrize("package", ["stores", "datasets"])
def test_the_stores_and_data_sets_never_import_the_model_layer(package):
    modules = _modules()
    names = [name for name in modules if name.startswith(f"diaggmm_dist.{package}")]
    assert len(names) >= 2
    for name in names:
        above = sorted(m for m in _reachable(name, modules) if _is_above(m))
        assert not above, f"{name} imports the model layer: {above}"


def test_the_walk_sees_imports_inside_functions():
    """Control: the walk follows imports inside functions (the CLI imports its commands' there)."""
    modules = _modules()
    assert "diaggmm_dist.outputs.scores" in _reachable("diaggmm_dist.cli", modules)
    assert "diaggmm_dist.stores.model_store" in _reachable("diaggmm_dist.mixture", modules)


# ------------------------------------------------------------------ records
@pytest.fixture(scope="module")
def fitted():
    return DiagGMM(2, random_state=0, max_iter=5).fit(mixture_data(200, 3, 2, seed=2)[0])


def test_a_record_is_written_and_read_without_an_estimator(fitted, tmp_path):
    rng = np.random.default_rng(3)
    parameters = MixtureParameters(
        np.array([0.25, 0.75]), rng.normal(size=(2, 3)), rng.uniform(0.5, 2.0, size=(2, 3))
    )
    record = ModelRecord(
        settings=record_of(fitted).settings,
        parameters=parameters,
        n_iter=7,
        converged=True,
        lower_bound=-3.5,
        lower_bounds=[-4.0, -3.5],
        feature_names=["a", "b", "c"],
    )
    url = tmp_path / "model.zarr"
    write_record(record, url)
    back = read_record(url, DiagGMM().get_params())
    assert back.settings == record.settings and back.online is None
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(back.parameters, name), getattr(parameters, name))
    assert (back.n_iter, back.converged, back.lower_bound, back.lower_bounds) == (
        7,
        True,
        -3.5,
        [-4.0, -3.5],
    )
    assert back.feature_names == ["a", "b", "c"]
    # a format-3 store holds every stored setting: one without them all is refused
    partial = ModelRecord(**{**vars(record), "settings": {"reg_covar": 1e-6, "dtype": "float64"}})
    write_record(partial, url, overwrite=True)
    with pytest.raises(ModelStoreError, match="attribute 'params' lacks"):
        read_record(url, DiagGMM().get_params())


def test_a_setting_is_checked_by_the_estimators_rules_and_named_after_it(fitted, tmp_path):
    record = record_of(fitted)
    bad = ModelRecord(**{**vars(record), "settings": {**record.settings, "n_init": 0}})
    write_record(bad, tmp_path / "bad.zarr")
    with pytest.raises(ModelStoreError, match="a setting is invalid: Owner: n_init must be"):
        read_record(tmp_path / "bad.zarr", DiagGMM().get_params(), owner="Owner")


@pytest.mark.parametrize("online", [False, True])
def test_record_of_and_model_from_record_are_inverse(tmp_path, online):
    if online:
        model = DiagGMM(2, random_state=0).partial_fit(mixture_data(300, 3, 2, seed=1)[0])
    else:
        model = DiagGMM(2, random_state=0).fit(mixture_data(300, 3, 2, seed=1)[0])
    record = record_of(model)
    assert isinstance(record.online, OnlineState) == online
    again = model_from_record(DiagGMM, record)
    assert again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.precisions_cholesky_, model.precisions_cholesky_)
    write_record(record, tmp_path / "m.zarr")
    loaded = DiagGMM.load(tmp_path / "m.zarr")
    np.testing.assert_array_equal(loaded.means_, model.means_)
    assert loaded.n_iter_ == model.n_iter_


# ------------------------------------------------------------------ the registry's loader
def test_the_registry_hands_the_models_url_to_the_loader(fitted, tmp_path):
    model = fitted
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.current(DiagGMM.load) is None
    version = registry.promote(model)
    urls = []
    assert registry.current(lambda url: urls.append(url) or "read") == (version, "read")
    assert urls == [registry.url(version)]
    loaded = registry.load(version, DiagGMM.load)
    np.testing.assert_array_equal(loaded.means_, model.means_)


# ------------------------------------------------------------------ bounded files
def test_a_regular_file_within_its_bound_is_read(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert regular_file_size(str(path), 5) == 5
    with open(path, "rb") as handle:
        assert regular_file_size(handle.fileno(), 5) == 5
    assert read_bounded(str(path), 5, fsspec.filesystem("file")) == b"12345"
    memory = fsspec.filesystem("memory")
    memory.pipe_file(f"/bounded-{os.getpid()}", b"abc")
    assert read_bounded(f"/bounded-{os.getpid()}", 3, memory) == b"abc"
    with pytest.raises(FileTooLarge) as caught:
        read_bounded(f"/bounded-{os.getpid()}", 2, memory)
    assert (caught.value.size, caught.value.limit) == (3, 2)


@pytest.mark.parametrize("fs", [None, "file"])
def test_what_is_not_a_small_regular_file_is_refused_unread(tmp_path, fs):
    fs = fs and fsspec.filesystem(fs)
    (tmp_path / "big").write_bytes(b"x" * 10)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(FileTooLarge):
        regular_file_size(str(tmp_path / "big"), 9, fs)
    with pytest.raises(NotARegularFile) as caught:
        regular_file_size(str(tmp_path / "dir"), None, fs)
    assert caught.value.kind == "directory"
    for name in ("fifo", "zero"):
        with pytest.raises(NotARegularFile) as caught:
            regular_file_size(str(tmp_path / name), 100, fs)
        assert caught.value.kind == "other"
    with pytest.raises(FileNotFoundError):
        regular_file_size(str(tmp_path / "absent"), 100, fs)
