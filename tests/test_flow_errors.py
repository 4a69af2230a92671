"""The flows spend no retry on an error that a retry cannot cure, against a real Prefect server.

The server is ``prefect server start`` (tests/prefect_harness.py), the dask cluster the session's
LocalCluster of worker processes (conftest.py), the data small Zarr stores in which one chunk
file is overwritten with random bytes: a corrupt chunk, read on a dask worker. Nothing is mocked.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import zarr
from prefect_harness import REPO, prefect_api, prefect_server, task_runs, wait_for  # noqa: F401

from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr

if str(REPO) not in sys.path:  # `flows` is a package at the repository root
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.timeout(300)

K = 3
ROWS, CHUNK_ROWS = 8000, 1000
#: The chunk (along the rows) that is garbled: neither the first nor the last.
BAD_CHUNK = 5


def garble(path):
    """Overwrite the chunk file at ``path`` with random bytes of the same length (at least 64)."""
    size = max(64, len(path.read_bytes()))
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    """Three stores of the same mixture, each with chunk ``BAD_CHUNK`` garbled.

    ``blosc``: the project's layout (Zarr v3, Blosc), read by the library's own chunk reader.
    ``zstd``: Zarr v3 with Zstd, read by zarr, whose codec's error the library turns into the same
    error. Both raise a ValueError (CorruptChunkError) naming the chunk, on a dask worker.
    ``clean``: an intact copy.
    """
    root = tmp_path_factory.mktemp("corrupt")
    params = mixture_parameters(K, 4, seed=0, spread=1.5)
    write_mixture_zarr(
        root / "blosc.zarr", ROWS, *params, chunk_rows=CHUNK_ROWS, seed=1, dtype="float64"
    )
    write_mixture_zarr(
        root / "clean.zarr", ROWS, *params, chunk_rows=CHUNK_ROWS, seed=1, dtype="float64"
    )
    values = zarr.open_array(str(root / "clean.zarr" / "X"), mode="r")[:]
    zstd = zarr.create_array(
        str(root / "zstd.zarr"),
        shape=values.shape,
        chunks=(CHUNK_ROWS, 4),
        dtype="f8",
        compressors=[zarr.codecs.ZstdCodec()],
    )
    zstd[:] = values
    garble(root / "blosc.zarr" / "X" / "c" / str(BAD_CHUNK) / "0")
    garble(root / "zstd.zarr" / "c" / str(BAD_CHUNK) / "0")
    return {
        "blosc": str(root / "blosc.zarr" / "X"),
        "zstd": str(root / "zstd.zarr"),
        "clean": str(root / "clean.zarr" / "X"),
    }


@pytest.fixture(scope="module")
def cluster(local_cluster):
    return local_cluster.scheduler_address


def finished_task_runs(state, expected):
    """The flow run's task runs once ``expected`` of them are recorded with a state."""
    flow_run_id = state.state_details.flow_run_id
    return wait_for(
        lambda: task_runs(flow_run_id),
        lambda r: len(r) >= expected and all(t.state_type for t in r),
        what=f"{expected} task runs",
    )


#: The error each corrupt store raises, as the flow re-raises it.
ERRORS = {
    "blosc": (ValueError, rf"Zarr chunk c/{BAD_CHUNK}/0 of .*blosc\.zarr/X is corrupt"),
    "zstd": (
        ValueError,
        (
            rf"Zarr chunk c/{BAD_CHUNK}/0 of .*zstd\.zarr is corrupt: zarr could not decode it "
            rf"\(RuntimeError: Zstd decompression error"
        ),
    ),
}


@pytest.mark.parametrize("store", ["blosc", "zstd"])
def test_train_on_a_corrupt_store_fails_at_the_first_attempt(
    prefect_api, corrupt, cluster, tmp_path, store
):
    from flows.train import train

    model_url = str(tmp_path / "model")
    state = train(
        corrupt[store],
        K,
        model_url,
        scheduler_address=cluster,
        max_iter=20,
        dtype="float64",
        return_state=True,
    )
    assert state.is_failed(), state
    error, match = ERRORS[store]
    with pytest.raises(error, match=match):
        state.result()
    # The initialization reads every chunk: it fails, once, and no other task runs.
    (run,) = finished_task_runs(state, 1)
    assert run.name.startswith("initialize") and run.state_type.value == "FAILED"
    assert run.run_count == 1, f"{run.name} ran {run.run_count} times"
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("store", ["blosc", "zstd"])
def test_score_on_a_corrupt_store_fails_at_the_first_attempt(
    prefect_api, corrupt, cluster, tmp_path, store
):
    from flows.score import score

    model_url = str(tmp_path / "model")
    DiagGMM(K, max_iter=5, random_state=0).fit(corrupt["clean"]).save(model_url)
    state = score(
        model_url,
        corrupt[store],
        str(tmp_path / "scores"),
        scheduler_address=cluster,
        return_state=True,
    )
    assert state.is_failed(), state
    error, match = ERRORS[store]
    with pytest.raises(error, match=match):
        state.result()
    (run,) = finished_task_runs(state, 1)
    assert run.name.startswith("write-scores") and run.run_count == 1, (run.name, run.run_count)
    assert DiagGMM.load(model_url).n_components == K  # the model is untouched


def test_only_errors_a_retry_may_cure_are_transient(local_cluster):
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    from diaggmm_dist.cluster import SchedulerUnreachableError
    from diaggmm_dist.stores.checkpoint import CheckpointMismatchError
    from diaggmm_dist.stores.model_store import ModelStoreError
    from flows.runtime import is_transient

    transient = [
        OSError("EIO"),
        ConnectionResetError("reset"),
        TimeoutError("slow"),
        CommClosedError("closed"),
        SchedulerUnreachableError("nobody"),
        KilledWorker("task", "worker", 3),
    ]
    permanent = [
        ValueError("corrupt chunk"),
        TypeError("bad type"),
        CheckpointMismatchError("other run"),
        ModelStoreError("bad model"),
        RuntimeError("Zstd decompression error"),
        FloatingPointError("nan"),
        FileNotFoundError("missing"),
        FileExistsError("taken"),
        NotADirectoryError("file"),
        PermissionError("forbidden"),
        NotImplementedError("no"),
        KeyError("x"),
    ]
    assert [error for error in transient if not is_transient(error)] == []
    assert [error for error in permanent if is_transient(error)] == []


def test_a_worker_error_arrives_in_the_flow_as_it_was_raised(local_cluster):
    """What the retry condition sees of an error raised on a dask worker: its own type and
    message.
    """
    from distributed import Client

    from flows.runtime import is_transient

    def read_chunk(kind):
        raise {"value": ValueError, "os": ConnectionResetError}[kind](
            f"{kind} error on chunk c/5/0"
        )

    with Client(local_cluster.scheduler_address, set_as_default=False) as client:
        for kind, transient in (("value", False), ("os", True)):
            future = client.submit(read_chunk, kind, pure=False)
            error = future.exception()
            assert type(error) is {"value": ValueError, "os": ConnectionResetError}[kind]
            assert str(error) == f"{kind} error on chunk c/5/0"
            assert is_transient(error) is transient
