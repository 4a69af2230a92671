"""In-memory data fitted under a distributed Client is sent to the cluster once per fit."""

import gc
import time

import numpy as np
from conftest import mixture_data
from distributed import Client

from diaggmm_dist import DiagGMM, dask_compat, engine
from diaggmm_dist.engine import cluster


def numpy_chunks(graph, at_least):
    """The numpy arrays of ``at_least`` bytes carried as data in a submitted graph."""
    values = [node.value if dask_compat.is_data(node) else node for node in graph.values()]
    return [v for v in values if isinstance(v, np.ndarray) and v.nbytes >= at_least]


def test_numpy_input_is_persisted_once_and_the_passes_carry_no_data(local_cluster, monkeypatch):
    X, _ = mixture_data(20000, 4, 3, seed=7)
    settings = {"n_components": 3, "random_state": 0, "tol": 0, "max_iter": 4, "chunk_size": 2500}
    chunk_bytes = 2500 * 4 * X.itemsize
    submitted = []
    recorded = cluster._submitted

    def record(graph):
        submitted.append(numpy_chunks(graph, chunk_bytes))
        return recorded(graph)

    monkeypatch.setattr(cluster, "_submitted", record)
    with Client(local_cluster) as client:
        held = DiagGMM(**settings).fit(X)
        assert submitted and not any(submitted)  # no pass graph carried a chunk of X
        with monkeypatch.context() as before:  # as before: every pass carries every chunk
            before.setattr(engine, "held_on_cluster", lambda array: array)
            submitted.clear()
            sent = DiagGMM(**settings).fit(X)
        assert submitted and all(len(chunks) == 8 for chunks in submitted)
        for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
            np.testing.assert_array_equal(getattr(held, name), getattr(sent, name))

        def held_keys(dask_scheduler):
            return [key for key in dask_scheduler.tasks if "in-memory" in str(key)]

        gc.collect()
        deadline = time.monotonic() + 30  # a liveness bound for the release messages
        while client.run_on_scheduler(held_keys) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.run_on_scheduler(held_keys)  # released with the fit
