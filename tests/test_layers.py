"""The layers of ARCHITECTURE.md: every import goes to the same layer or one below it.

The import graph (imports inside functions included) comes from ``test_architecture``.
A new module must be given a layer here, so that its place is decided, not drifted into.
"""

from __future__ import annotations

import pytest
from test_architecture import import_graph

#: Bottom to top, as in ARCHITECTURE.md: {layer: module prefixes (under diaggmm_dist)}.
LAYERS = {
    "records and checks": (
        "parameters",
        "state",
        "validation",
        "_version",
        "bounded_files",
        "dask_compat",
        "locations",
        "lazy_names",
    ),
    "kernels": ("kernels", "compiled", "mstep", "online", "bayesian_mstep"),
    "readers": ("zarr_chunks", "checked_zarr", "read_ahead"),
    "engine": ("engine",),
    "inputs": ("inputs",),
    "stores": ("stores", "datasets"),
    "model": (
        "em",
        "data_pass",
        "em_settings",
        "fitting",
        "stepwise",
        "seeding",
        "initialization",
        "splitting",
        "mixture",
        "mixture_base",
        "persistence",
        "persistence_gmm",
        "persistence_models",
        "selection",
        "diagonal_check",
        "bayesian",
        "bayesian_checkpoint",
        "bayesian_fit",
        "bayesian_settings",
        "classifier",
        "classifier_labels",
        "classifier_fit",
        "classifier_rows",
        "classifier_checkpoint",
    ),
    "applications": (
        "",
        "__main__",
        "outputs",
        "plots",
        "cluster",
        "tls",
        "worker_logging",
        "cli",
    ),
}
RANKS = list(LAYERS)


def layer_of(module: str) -> str:
    """The layer of ``module`` (a dotted name); ``flows`` are above every library layer."""
    if module == "flows" or module.startswith("flows."):
        return "flows"
    name = module.removeprefix("diaggmm_dist").removeprefix(".")
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if name == prefix or (prefix and name.startswith(prefix + ".")):
                return layer
    raise AssertionError(f"{module} has no layer: add it to LAYERS (and to ARCHITECTURE.md)")


def rank(layer: str) -> int:
    return len(RANKS) if layer == "flows" else RANKS.index(layer)


@pytest.fixture(scope="module")
def graph():
    return import_graph(runtime_only=False)


def test_every_module_has_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_imports_go_down_the_layers(graph):
    upward = sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if rank(layer_of(target)) > rank(layer_of(module))
    )
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import():
    assert rank(layer_of("diaggmm_dist.stores.model_store")) < rank(
        layer_of("diaggmm_dist.mixture")
    )
    assert layer_of("diaggmm_dist") == "applications" and layer_of("flows.train") == "flows"
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("diaggmm_dist.somewhere_new")
