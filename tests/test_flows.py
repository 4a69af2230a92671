"""The Prefect flows end to end, against a real Prefect server, a real dask cluster and Zarr stores.

The server is ``prefect server start`` (tests/prefect_harness.py), the dask cluster the session's
LocalCluster of worker processes (conftest.py), the data small mixtures written to Zarr. Nothing
is mocked: the only interference is one injected I/O error to exercise a task retry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from prefect.exceptions import ParameterTypeError
from prefect_harness import (
    REPO,
    artifacts,
    background,
    events,
    flush_logs,
    logs,
    prefect_api,  # noqa: F401
    prefect_server,  # noqa: F401
    read_deployment,
    task_runs,
    wait_for,
)

from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr
from diaggmm_dist.stores.registry import ModelRegistry, RegistryError, UnknownVersionError

if str(REPO) not in sys.path:  # `flows` is a package at the repository root
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.timeout(300)

K = 3
FIT = dict(tol=1e-4, max_iter=60, dtype="float64", random_state=0, init_params="kmeans")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Zarr arrays of one 3-component mixture in 4-D (overlapping: ~11 EM iterations), and shifted
    copies.
    """
    root = tmp_path_factory.mktemp("flow-data")
    weights, means, covariances = mixture_parameters(K, 4, seed=0, spread=1.5)

    def write(name, seed, shift=0.0):
        path = write_mixture_zarr(
            root / name,
            20_000,
            weights,
            means + shift,
            covariances,
            chunk_rows=2500,
            seed=seed,
            dtype="float64",
        )
        return f"{path}/X"

    return SimpleNamespace(
        root=root,
        train=write("train.zarr", 1),
        new=write("new.zarr", 2),
        holdout=write("holdout.zarr", 3),
        holdout_shifted=write("holdout-shifted.zarr", 4, 1.0),
        shifted=write("shifted.zarr", 5, 4.0),
    )


@pytest.fixture(scope="module")
def plain(stores, tmp_path_factory):
    """The library's own fit with the flow's settings (dask threads, no Prefect), saved."""
    model = DiagGMM(K, **FIT).fit(stores.train)
    url = str(tmp_path_factory.mktemp("plain") / "model")
    model.save(url)
    return SimpleNamespace(model=model, url=url)


@pytest.fixture(scope="module")
def cluster(local_cluster):
    return local_cluster.scheduler_address


def assert_same_model(a, b):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-10)
    assert (a.n_iter_, a.converged_) == (b.n_iter_, b.converged_)


def completed_task_runs(flow_run_id, expected):
    """Names of the flow run's task runs once ``expected`` of them are recorded (they arrive as
    events).
    """
    runs = wait_for(
        lambda: task_runs(flow_run_id),
        lambda r: len(r) >= expected and all(t.state_type for t in r),
        what=f"{expected} task runs",
    )
    return runs


def scheduler_transitions(address):
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def run_logs(flow_run_id, needle, min_level=logging.INFO):
    flush_logs()
    return wait_for(
        lambda: [entry for entry in logs(flow_run_id, min_level) if needle in entry.message],
        bool,
        what=f"a log line containing {needle!r}",
    )


# --------------------------------------------------------------------------------------- train
def data_passes(monkeypatch, fail_at=None):
    """Record every data pass as (task-run name, attempt); optionally fail one pass once.

    ``fail_at=(name, n)``: the ``n``-th pass (1-based) of the first attempt of the task run
    called ``name`` raises an OSError (a transient failure), after the passes before it in that
    attempt have run and been checkpointed.
    """
    from prefect.context import TaskRunContext

    from diaggmm_dist import engine

    real, passes = engine.pass_statistics, []

    def counted(*args, **kwargs):
        context = TaskRunContext.get()
        name, attempt = (
            (context.task_run.name, context.task_run.run_count) if context else (None, None)
        )
        passes.append((name, attempt))
        if (
            fail_at is not None
            and (name, attempt) == (fail_at[0], 1)
            and passes.count((name, 1)) == fail_at[1]
        ):
            raise OSError("injected: the object store dropped the connection")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "pass_statistics", counted)
    return passes


def em_blocks(runs):
    """(first, last) of the flow run's ``em-iterations-{first}-{last}`` task runs, in order."""
    return sorted(
        tuple(int(v) for v in run.name.split("-")[2:4])
        for run in runs
        if run.name.startswith("em-iterations-")
    )


def convergence_artifact(flow_run_id, key="train-convergence"):
    (artifact,) = wait_for(
        lambda: artifacts(flow_run_id), lambda a: len(a) == 1, what="the convergence artifact"
    )
    assert (artifact.key, artifact.type) == (key, "table")
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_em_block_size_fills_the_time_per_task():
    from flows.blocks import block_size

    assert block_size(60, None, 100) == 1  # nothing timed yet: one iteration, to time it
    assert block_size(60, 2.0, 100) == 30 and block_size(60, 0.7, 1000) == 85
    assert (
        block_size(60, 90.0, 100) == 1 and block_size(0, 0.01, 100) == 1
    )  # at least one; 0: one per task
    assert block_size(60, 0.0, 10**9) == 60_000_000
    assert block_size(60, 2.0, 7) == 7  # no more than remain
    assert (
        block_size(60, 2.0, 45) == 45 and block_size(60, 2.0, 46) == 30
    )  # a tail of <= half a block joins


def test_train_flow_saves_the_library_fit_and_publishes_its_convergence_table(
    prefect_api, stores, plain, cluster, tmp_path, monkeypatch
):
    from flows.train import train

    model_url = str(tmp_path / "model")
    transitions = scheduler_transitions(cluster)
    passes = data_passes(monkeypatch)
    state = train(stores.train, K, model_url, scheduler_address=cluster, return_state=True, **FIT)
    assert state.is_completed(), state
    assert scheduler_transitions(cluster) > transitions + 100  # the passes ran on the cluster
    result = state.result()
    saved = DiagGMM.load(model_url)
    assert_same_model(saved, plain.model)
    assert saved.get_params() == plain.model.get_params()
    seconds = result.pop("seconds_per_iteration")
    assert seconds > 0
    assert result == {
        "model_url": model_url,
        "checkpoint_url": model_url + ".checkpoint",
        "n_iter": plain.model.n_iter_,
        "converged": True,
        "lower_bound": pytest.approx(plain.model.lower_bound_, rel=1e-10),
    }
    assert (
        zarr.open_group(model_url + ".checkpoint", mode="r").attrs["format"]
        == "diaggmm-dist-checkpoint"
    )

    # Blocks: one iteration to time it, then (iterations of a few ms, 60 s per task) all the rest in
    # one task, planned up to max_iter and ended by convergence; that block saves the model (no
    # save-model task).
    flow_run_id = state.state_details.flow_run_id
    n = plain.model.n_iter_
    runs = completed_task_runs(flow_run_id, 3)
    names = sorted(run.name for run in runs)
    last_block = f"em-iterations-2-{FIT['max_iter']}"
    assert em_blocks(runs) == [(1, 1), (2, FIT["max_iter"])], names
    assert sum(name.startswith("initialize") for name in names) == 1
    assert len(runs) == 3 and all(run.state_type.value == "COMPLETED" for run in runs), names
    # One data pass per iteration: a block resumes the checkpoint without repeating any pass.
    em_passes = [name for name, _ in passes if name and name.startswith("em-iterations-")]
    assert em_passes == ["em-iterations-1-1"] + [last_block] * (n - 1)

    table = convergence_artifact(flow_run_id)
    assert [row["iteration"] for row in table] == list(range(1, n + 1))
    np.testing.assert_allclose(
        [row["lower_bound"] for row in table], plain.model.lower_bounds_, rtol=1e-10
    )
    np.testing.assert_allclose(
        [row["change"] for row in table[1:]], np.diff(plain.model.lower_bounds_), rtol=1e-8
    )
    assert all(row["seconds"] > 0 for row in table) and table[0]["change"] is None
    assert seconds == pytest.approx(np.mean([row["seconds"] for row in table]))

    for i in range(1, n + 1):  # every iteration of a block is logged as it happens
        (line,) = run_logs(flow_run_id, f"iteration {i}: lower bound")
        assert ("converged" in line.message) == (i == n), line.message
    (line,) = run_logs(flow_run_id, f"model saved to {model_url}")
    assert line.task_run_id == next(run.id for run in runs if run.name == last_block)


def test_seconds_per_task_zero_runs_one_task_per_iteration(
    prefect_api, stores, plain, cluster, tmp_path
):
    from flows.train import train

    model_url = str(tmp_path / "model")
    state = train(
        stores.train,
        K,
        model_url,
        scheduler_address=cluster,
        seconds_per_task=0,
        return_state=True,
        **FIT,
    )
    assert state.is_completed(), state
    assert_same_model(DiagGMM.load(model_url), plain.model)
    n = plain.model.n_iter_
    assert em_blocks(completed_task_runs(state.state_details.flow_run_id, n + 1)) == [
        (i, i) for i in range(1, n + 1)
    ]
    table = convergence_artifact(state.state_details.flow_run_id)
    assert [row["iteration"] for row in table] == list(range(1, n + 1))
    assert all(row["seconds"] > 0 for row in table)

    bad = train(
        stores.train,
        K,
        str(tmp_path / "other"),
        scheduler_address=cluster,
        seconds_per_task=-1,
        return_state=True,
        **FIT,
    )
    assert bad.is_failed()
    with pytest.raises(ValueError, match="seconds_per_task must be a finite number >= 0"):
        bad.result()
    assert not (tmp_path / "other").exists() and not (tmp_path / "other.checkpoint").exists()


def test_a_failed_iteration_is_retried_and_resumes_from_the_checkpoint(
    prefect_api, stores, plain, cluster, tmp_path, monkeypatch
):
    from flows.train import train

    # The block 2..max_iter fails at its second pass (iteration 3), after iteration 2 was
    # checkpointed.
    block = f"em-iterations-2-{FIT['max_iter']}"
    passes = data_passes(monkeypatch, fail_at=(block, 2))
    model_url, checkpoint_url = str(tmp_path / "model"), str(tmp_path / "run.checkpoint")
    state = train(
        stores.train,
        K,
        model_url,
        checkpoint_url=checkpoint_url,
        scheduler_address=cluster,
        return_state=True,
        **FIT,
    )
    assert state.is_completed(), state
    assert_same_model(DiagGMM.load(model_url), plain.model)
    n = plain.model.n_iter_
    runs = completed_task_runs(state.state_details.flow_run_id, 3)
    assert em_blocks(runs) == [(1, 1), (2, FIT["max_iter"])]
    (retried,) = [run for run in runs if run.name == block]
    assert retried.run_count == 2
    assert all(run.run_count == 1 for run in runs if run.name != block)
    # The retry resumed after iteration 2: only the interrupted pass (iteration 3) ran twice.
    assert passes.count((block, 1)) == 2 and passes.count((block, 2)) == n - 2
    # Iteration 2, done by the failed attempt, still has its row and timing.
    table = convergence_artifact(state.state_details.flow_run_id)
    assert [row["iteration"] for row in table] == list(range(1, n + 1))
    assert all(row["seconds"] > 0 for row in table)

    # Run again: the checkpoint says the fit is done, so no iteration runs and save-model saves the
    # same model.
    shutil.rmtree(model_url)
    passes_before = len(passes)
    again = train(
        stores.train,
        K,
        model_url,
        checkpoint_url=checkpoint_url,
        scheduler_address=cluster,
        return_state=True,
        **FIT,
    )
    assert again.is_completed()
    names = sorted(
        run.name.rsplit("-", 1)[0]
        for run in completed_task_runs(again.state_details.flow_run_id, 2)
    )
    assert names == ["initialize", "save-model"], names
    assert passes[passes_before:] == []  # no data pass
    assert_same_model(DiagGMM.load(model_url), plain.model)


def test_wrong_input_fails_the_flow_at_once_without_retries(prefect_api, stores, cluster, tmp_path):
    from flows.train import train

    state = train(
        str(tmp_path / "missing.zarr/X"),
        K,
        str(tmp_path / "model"),
        scheduler_address=cluster,
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(FileNotFoundError, match="No Zarr array found"):
        state.result()
    (initialize,) = completed_task_runs(state.state_details.flow_run_id, 1)
    assert initialize.name.startswith("initialize") and initialize.run_count == 1
    assert not (tmp_path / "model").exists()


# ------------------------------------------------------------------------------- choosing K
@pytest.fixture(scope="module")
def separated(stores):
    """A Zarr array of a well-separated 4-component mixture in 3-D."""
    weights, means, covariances = mixture_parameters(4, 3, seed=0, spread=8.0)
    path = write_mixture_zarr(
        stores.root / "separated.zarr",
        8000,
        weights,
        means,
        covariances,
        chunk_rows=2000,
        seed=0,
        dtype="float64",
    )
    return f"{path}/X"


def test_train_chooses_k_among_candidates_and_publishes_the_table_and_the_plot(
    prefect_api, separated, cluster, tmp_path
):
    from diaggmm_dist import select_n_components
    from flows.train import train

    candidates = [1, 2, 4, 6]
    model_url = str(tmp_path / "model")
    state = train(
        separated, candidates, model_url, scheduler_address=cluster, return_state=True, **FIT
    )
    assert state.is_completed(), state
    result = state.result()
    assert result["n_components"] == 4 and result["criterion"] == "bic"
    assert result["checkpoint_url"] == model_url + ".checkpoint"
    model = DiagGMM.load(model_url)
    assert model.n_components == 4 and model.means_.shape == (4, 3)
    # the library's selection with the same settings, on dask threads
    expected = select_n_components(separated, candidates, "bic", **FIT)
    np.testing.assert_allclose(model.means_, expected.best.means_, rtol=1e-10)
    assert (result["n_iter"], result["converged"]) == (model.n_iter_, model.converged_)
    table = result["table"]
    assert [row["n_components"] for row in table] == candidates
    assert [row["chosen"] for row in table] == [k == 4 for k in candidates]
    np.testing.assert_allclose(
        [row["bic"] for row in table], [row["bic"] for row in expected.table], rtol=1e-10
    )
    assert min(table, key=lambda row: row["bic"])["n_components"] == 4
    assert all(row["heldout_log_likelihood"] is not None for row in table)
    assert os.path.exists(
        model_url + ".checkpoint"
    )  # every candidate's state, for a retry to resume

    # the plot, next to the model
    png = model_url + ".bic.png"
    assert result["plot_url"] == png
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    flow_run_id = state.state_details.flow_run_id
    names = sorted(run.name.rsplit("-", 1)[0] for run in completed_task_runs(flow_run_id, 2))
    assert names == ["plot-selection", "select-n-components"], names
    found = {
        a.key: a
        for a in wait_for(
            lambda: artifacts(flow_run_id), lambda a: len(a) == 2, what="the selection artifacts"
        )
    }
    assert set(found) == {"train-selection", "train-selection-summary"}
    rows = found["train-selection"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert found["train-selection"].type == "table"
    assert [row["n_components"] for row in rows] == candidates
    assert {
        "lower_bound",
        "log_likelihood",
        "bic",
        "aic",
        "heldout_log_likelihood",
        "n_iter",
        "converged",
    } <= set(rows[0])
    np.testing.assert_allclose(
        [row["bic"] for row in rows], [row["bic"] for row in table], rtol=1e-12
    )
    summary = found["train-selection-summary"]
    assert summary.type == "markdown"
    assert "K = 4" in summary.data and "| 4 **(chosen)** |" in summary.data and png in summary.data
    (line,) = run_logs(flow_run_id, "chose K=4 by bic")
    assert line.task_run_id is not None


def test_without_matplotlib_the_choice_of_k_is_published_without_the_plot(
    prefect_api, separated, cluster, tmp_path, monkeypatch
):
    import flows.select_k
    from flows.train import train

    monkeypatch.setattr(flows.select_k, "_has_matplotlib", lambda: False)
    model_url = str(tmp_path / "model")
    state = train(separated, [4, 2], model_url, scheduler_address=cluster, return_state=True, **FIT)
    assert state.is_completed(), state
    result = state.result()
    assert result["n_components"] == 4 and result["plot_url"] is None
    assert [row["n_components"] for row in result["table"]] == [4, 2]
    assert sorted(os.listdir(tmp_path)) == ["model", "model.checkpoint"]  # no plot
    flow_run_id = state.state_details.flow_run_id
    run_logs(flow_run_id, "matplotlib is not installed")
    found = {
        a.key: a
        for a in wait_for(
            lambda: artifacts(flow_run_id), lambda a: len(a) == 2, what="the selection artifacts"
        )
    }
    assert "not written (matplotlib is not installed)" in found["train-selection-summary"].data


@pytest.mark.parametrize(
    "n_components, extra, error, message",
    [
        ([], {}, ValueError, "n_components is an empty list"),
        ([2, 0, 4], {}, ValueError, r"integers >= 1; got \[0\]"),
        ([2, 4, 2], {}, ValueError, r"lists \[2\] more than once"),
        # a Literal parameter: Prefect refuses the run before the flow starts
        (
            [2, 4],
            {"criterion": "loglik"},
            ParameterTypeError,
            "criterion: Input should be 'bic', 'aic' or 'heldout'",
        ),
        (3, {"criterion": "BIC"}, ParameterTypeError, "criterion: Input should be 'bic'"),
        (
            [2, 4],
            {"heldout_fraction": 1.0},
            ValueError,
            r"heldout_fraction must be a number in \[0, 1\)",
        ),
        (
            [2, 4],
            {"criterion": "heldout", "heldout_fraction": 0},
            ValueError,
            "needs held-out rows",
        ),
    ],
)
def test_a_wrong_choice_of_k_is_refused_before_any_work(
    prefect_api, stores, tmp_path, n_components, extra, error, message
):
    from flows.train import train

    model_url = tmp_path / "model"
    # no scheduler address: a flow that got past the checks would start a LocalCluster and fit
    state = train(stores.train, n_components, str(model_url), return_state=True, **extra)
    assert state.is_failed()
    with pytest.raises(error, match=message):
        state.result()
    assert list(tmp_path.iterdir()) == []  # no model, checkpoint or plot


# --------------------------------------------------------------------------------------- score
def test_score_flow_writes_labels_responsibilities_and_log_likelihoods(
    prefect_api, stores, plain, cluster, tmp_path
):
    from flows.score import score

    X = zarr.open_array(stores.holdout, mode="r")[...]
    X[5, 2] = np.nan
    source = zarr.create_array(
        str(tmp_path / "input.zarr"), shape=X.shape, chunks=(2500, X.shape[1]), dtype="float64"
    )
    source[...] = X
    out_url = str(tmp_path / "scores.zarr")
    summary = score(plain.url, str(tmp_path / "input.zarr"), out_url, scheduler_address=cluster)
    assert summary["n_rows"] == X.shape[0] and summary["arrays"] == [
        "labels",
        "max_resp",
        "log_likelihood",
    ]

    group = zarr.open_group(out_url, mode="r")
    labels, max_resp, log_likelihood = (
        group[name][...] for name in ("labels", "max_resp", "log_likelihood")
    )
    assert (labels.dtype, max_resp.dtype, log_likelihood.dtype) == (
        np.int16,
        np.float32,
        np.float64,
    )
    for name in ("labels", "max_resp", "log_likelihood"):
        chunk = group[name].chunks[0]
        assert chunk == summary["chunk_rows"] and chunk % 2500 == 0, (
            name,
            chunk,
        )  # whole input chunks
    ok = np.isfinite(X).all(axis=1)
    assert labels[5] == -1 and np.isnan(log_likelihood[5]) and ok.sum() == X.shape[0] - 1
    model = plain.model
    np.testing.assert_array_equal(labels[ok], model.predict(X[ok]))
    np.testing.assert_allclose(max_resp[ok], model.predict_proba(X[ok]).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(log_likelihood[ok], model.score_samples(X[ok]), rtol=1e-10)


# ------------------------------------------------------------------------------------- retrain
def test_retrain_promotes_models_that_are_not_worse_and_warns_on_drift(
    prefect_api, stores, cluster, tmp_path
):
    from flows.retrain import retrain

    root = str(tmp_path / "registry")
    registry = ModelRegistry(root)
    common = dict(n_components=K, max_iter=25, scheduler_address=cluster)

    # 1. empty registry: train from scratch, promote v0001
    first = retrain(root, stores.train, stores.holdout, **common)
    assert first["promoted"] == first["current"] == "v0001" and first["parent"] is None
    assert first["old_score"] is None and first["drift"] is False
    version, model = registry.current(DiagGMM.load)
    assert version == "v0001" and model.n_components == K
    meta = registry.metadata("v0001")
    assert (
        meta["data_url"] == stores.train
        and meta["holdout_url"] == stores.holdout
        and meta["parent"] is None
    )
    assert meta["holdout_mean_log_likelihood"] == pytest.approx(first["new_score"], rel=1e-12)
    assert meta["holdout_mean_log_likelihood"] == pytest.approx(
        model.score(stores.holdout), rel=1e-9
    )

    # 2. new data, same distribution: warm start from v0001; not worse on the holdout, so promoted
    state = retrain(root, stores.new, stores.holdout, margin=0.01, return_state=True, **common)
    second = state.result()
    assert (
        second["promoted"] == "v0002" and second["parent"] == "v0001" and second["drift"] is False
    )
    assert second["old_score"] == pytest.approx(
        first["new_score"], rel=1e-9
    )  # v0001 on the same holdout
    assert second["new_score"] >= second["old_score"] - 0.01
    assert (
        registry.versions() == ["v0001", "v0002"] and registry.current(DiagGMM.load)[0] == "v0002"
    )
    assert registry.metadata("v0002")["parent"] == "v0001"
    run_logs(state.state_details.flow_run_id, "warm-starting from the current model v0001")

    # 3. the world shifted: v0002 scores far below its promotion score (drift), and the model fitted
    #    on the newest (even more shifted) data is worse still, so it is not promoted
    state = retrain(
        root,
        stores.shifted,
        stores.holdout_shifted,
        drift_threshold=0.5,
        return_state=True,
        **common,
    )
    third = state.result()
    assert third["drift"] is True and third["promoted"] is None and third["current"] == "v0002"
    assert third["new_score"] < third["old_score"]
    assert second["new_score"] - third["old_score"] > 0.5
    assert (
        registry.versions() == ["v0001", "v0002"] and registry.current(DiagGMM.load)[0] == "v0002"
    )
    (warning,) = run_logs(state.state_details.flow_run_id, "DRIFT", min_level=logging.WARNING)
    assert "v0002" in warning.message and warning.level == logging.WARNING
    # the drift is also an event, recorded by the server, for automations to act on
    (event,) = wait_for(
        lambda: events("diaggmm.model.drift", f"diaggmm.registry.{root}"),
        lambda found: len(found) == 1,
        what="the drift event",
    )
    assert event.payload["version"] == "v0002" and event.payload["drift_threshold"] == 0.5
    assert event.payload["holdout_score"] == pytest.approx(third["old_score"], rel=1e-12)
    assert event.payload["drop"] > 0.5 and event.payload["holdout_url"] == stores.holdout_shifted
    assert str(state.state_details.flow_run_id) in {
        r.id.removeprefix("prefect.flow-run.") for r in event.related
    }
    assert events("diaggmm.model.drift", f"diaggmm.registry.{root}-none") == []
    decision = [
        a
        for a in wait_for(
            lambda: artifacts(state.state_details.flow_run_id),
            lambda a: len(a) == 2,
            what="the retrain artifacts",
        )
        if a.key == "retrain-decision"
    ]
    assert len(decision) == 1


def test_retrain_online_folds_new_partitions_into_the_current_model(
    prefect_api, stores, cluster, tmp_path
):
    from flows.retrain import FROM_SCRATCH, retrain

    more = (
        write_mixture_zarr(
            tmp_path / "more.zarr",
            20_000,
            *mixture_parameters(K, 4, seed=0, spread=1.5),
            chunk_rows=2500,
            seed=6,
            dtype="float64",
        )
        + "/X"
    )
    root = str(tmp_path / "registry")
    registry = ModelRegistry(root)
    common = dict(n_components=K, scheduler_address=cluster, mode="online")

    def assert_same_online_model(got, expected):
        for name in ("weights_", "means_", "covariances_", "running_statistics_", "running_shift_"):
            np.testing.assert_allclose(
                getattr(got, name), getattr(expected, name), rtol=1e-10, err_msg=name
            )
        assert (got.n_batches_seen_, got.n_samples_seen_) == (
            expected.n_batches_seen_,
            expected.n_samples_seen_,
        )

    def fold_tasks(state, expected_runs):
        runs = completed_task_runs(state.state_details.flow_run_id, expected_runs)
        assert all(run.state_type.value == "COMPLETED" for run in runs)
        return sorted(run.name for run in runs if run.name.startswith("fold-partition"))

    # 1. empty registry: a new model initialized on the first partition, the second folded in after
    # it
    state = retrain(root, [stores.train, stores.new], stores.holdout, return_state=True, **common)
    first = state.result()
    assert (first["promoted"], first["mode"], first["n_batches_seen"], first["parent"]) == (
        "v0001",
        "online",
        2,
        None,
    )
    expected = DiagGMM(K, **FROM_SCRATCH).partial_fit(stores.train).partial_fit(stores.new)
    version, model = registry.current(DiagGMM.load)
    assert version == "v0001"
    assert_same_online_model(model, expected)
    meta = registry.metadata("v0001")
    assert (
        meta["mode"] == "online"
        and meta["data_urls"] == [stores.train, stores.new]
        and meta["data_url"] is None
    )
    assert meta["holdout_mean_log_likelihood"] == pytest.approx(
        model.score(stores.holdout), rel=1e-9
    )
    assert fold_tasks(state, 6) == ["fold-partition-0", "fold-partition-1"]
    assert first["pruned"]["work"] == ["retrain-online-0", "retrain-online-1"]  # retention
    assert registry.scratch_names() == []
    table = [
        a
        for a in wait_for(
            lambda: artifacts(state.state_details.flow_run_id),
            lambda a: len(a) == 2,
            what="the retrain artifacts",
        )
        if a.key == "retrain-online"
    ][0].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [row["n_batches_seen"] for row in table] == [1, 2] and table[0]["step_size"] == 1.0

    # 2. one new partition: folded into v0001, reading only that partition (and the held-out data)
    state = retrain(root, more, stores.holdout, margin=0.01, return_state=True, **common)
    second = state.result()
    assert (second["promoted"], second["parent"], second["n_batches_seen"]) == ("v0002", "v0001", 3)
    assert second["new_score"] >= second["old_score"] - 0.01
    assert_same_online_model(registry.current(DiagGMM.load)[1], expected.partial_fit(more))
    assert fold_tasks(state, 6) == ["fold-partition-0"]
    assert registry.metadata("v0002")["data_urls"] == [more]
    run_logs(state.state_details.flow_run_id, "folding new data into the current model v0001")

    with pytest.raises(ValueError, match="mode='refit' fits one data set, got 2 data URLs"):
        retrain(
            root, [stores.train, more], stores.holdout, n_components=K, scheduler_address=cluster
        )
    with pytest.raises(ParameterTypeError, match="mode: Input should be 'refit' or 'online'"):
        retrain(
            root, more, stores.holdout, n_components=K, scheduler_address=cluster, mode="stream"
        )
    assert registry.versions() == ["v0001", "v0002"]


# ------------------------------------------------------------------------------ served deployment
def test_served_retrain_deployment_runs_on_request_and_promotes(prefect_api, stores, tmp_path):
    from prefect.deployments import run_deployment

    root = str(tmp_path / "registry")
    command = [
        sys.executable,
        "-c",
        "from flows.retrain import retrain; retrain.serve(name='retrain-test', cron='0 3 * * 1')",
    ]
    log = tmp_path / "serve.log"
    with background(
        command, env=prefect_api.env(PREFECT_RUNNER_POLL_FREQUENCY="1"), log=log
    ) as process:
        deployment = wait_for(
            lambda: (
                read_deployment("diaggmm-retrain/retrain-test")
                if process.poll() is None
                else "exited"
            ),
            lambda d: d is not None,
            timeout=90,
            what="the served deployment",
        )
        assert deployment != "exited", log.read_text()[-3000:]
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 1"]
        # No scheduler address: the flow run starts its own LocalCluster.
        flow_run = run_deployment(
            name="diaggmm-retrain/retrain-test",
            timeout=240,
            poll_interval=1,
            parameters={
                "registry_url": root,
                "data_url": stores.train,
                "holdout_url": stores.holdout,
                "n_components": K,
                "max_iter": 25,
            },
        )
        assert flow_run.state.is_completed(), (flow_run.state, log.read_text()[-5000:])
        assert process.poll() is None  # still serving
    registry = ModelRegistry(root)
    version, model = registry.current(DiagGMM.load)
    assert version == "v0001" and registry.versions() == ["v0001"] and model.n_components == K
    assert registry.metadata(version)["data_url"] == stores.train


# ---------------------------------------------------------------------------- no Prefect server
def test_train_flow_runs_without_a_prefect_server(prefect_server, stores, plain, tmp_path):
    model_url = str(tmp_path / "model")
    env = {k: v for k, v in prefect_server.env().items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(tmp_path / "ephemeral-home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    script = textwrap.dedent(f"""
        import json
        from flows.train import train
        result = train({stores.train!r}, {K}, {model_url!r}, max_iter=3, dtype="float64")
        print("RESULT", json.dumps(result))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "Starting temporary server" in done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert json.loads(line[len("RESULT ") :])["n_iter"] == 3
    expected = DiagGMM(K, **dict(FIT, max_iter=3)).fit(stores.train)
    assert_same_model(DiagGMM.load(model_url), expected)


def test_flows_load_from_their_entrypoints_outside_the_repository(tmp_path):
    """As deploy/slurm does: load_flow_from_entrypoint with an absolute path, another working
    directory.
    """
    script = textwrap.dedent(f"""
        from prefect.flows import load_flow_from_entrypoint
        for name in ("train", "score", "retrain"):
            flow = load_flow_from_entrypoint({str(REPO)!r} + f"/flows/{{name}}.py:{{name}}")
            print(flow.name)
    """)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "PYTHONPATH"
    }
    env["PREFECT_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["diaggmm-train", "diaggmm-score", "diaggmm-retrain"]


# ------------------------------------------------------------------------------------ registry
def test_registry_validates_what_it_reads(tmp_path, plain):
    root = tmp_path / "registry"
    registry = ModelRegistry(str(root))
    assert registry.current(DiagGMM.load) is None and registry.versions() == []
    v1 = registry.promote(
        plain.model, {"data_url": "a.zarr/X", "holdout_mean_log_likelihood": -1.5}
    )
    v2 = registry.promote(plain.model, {"data_url": "b.zarr/X", "note": "weekly"})
    assert (v1, v2) == ("v0001", "v0002") and registry.versions() == ["v0001", "v0002"]
    assert (
        registry.metadata("v0002")["parent"] == "v0001"
        and registry.metadata("v0002")["note"] == "weekly"
    )
    assert_same_model(registry.current(DiagGMM.load)[1], plain.model)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary files left

    # an interrupted promotion (model written, metadata not) is not a version, and its number is not
    # reused
    plain.model.save(str(root / "v0003"))
    assert (
        registry.versions() == ["v0001", "v0002"] and registry.current(DiagGMM.load)[0] == "v0002"
    )
    assert registry.promote(plain.model, {}) == "v0004"

    with pytest.raises(UnknownVersionError, match="No version 'v0009'.*v0001 to v0004"):
        registry.metadata("v0009")
    with pytest.raises(UnknownVersionError, match="not a version name"):
        registry.metadata("../elsewhere")
    with pytest.raises(ValueError, match="set by the registry"):
        registry.promote(plain.model, {"version": "v0100"})
    with pytest.raises(ValueError, match="finite number"):
        registry.promote(plain.model, {"holdout_mean_log_likelihood": float("nan")})
    (root / "current.json").write_text(
        json.dumps({"format": "diaggmm-dist-registry", "format_version": 1, "current": "v0003"})
    )
    with pytest.raises(RegistryError, match="points at 'v0003', which is not a committed version"):
        registry.current(DiagGMM.load)
    (root / "current.json").write_text("{not json")
    with pytest.raises(RegistryError, match="current.json is not valid JSON"):
        registry.current(DiagGMM.load)
    registry.set_current("v0001")
    assert registry.current(DiagGMM.load)[0] == "v0001"
    meta = json.loads((root / "v0002" / "registry.json").read_text())
    (root / "v0002" / "registry.json").write_text(
        json.dumps(dict(meta, holdout_mean_log_likelihood="high"))
    )
    with pytest.raises(
        RegistryError, match="'holdout_mean_log_likelihood' should be a finite number"
    ):
        registry.metadata("v0002")


def test_registry_works_on_fsspec_urls(plain):
    registry = ModelRegistry(f"memory://registry-{os.getpid()}")
    assert registry.promote(plain.model, {"data_url": "x"}) == "v0001"
    version, model = registry.current(DiagGMM.load)
    assert version == "v0001" and registry.versions() == ["v0001"]
    assert_same_model(model, plain.model)


def test_train_flow_on_a_gridded_store_keeps_the_layout(prefect_api, tmp_path):
    import xarray as xr

    from diaggmm_dist.datasets.linke import convert_linke_turbidity
    from flows.train import train

    pytest.importorskip("pvlib")
    url = str(tmp_path / "linke.zarr")
    convert_linke_turbidity(url, lat_slice=slice(600, 870), lon_slice=slice(2000, 2540))
    model_url = str(tmp_path / "model.zarr")
    result = train(url, 4, model_url, feature_dim="month", max_iter=5, tol=0, dtype="float64")
    model = DiagGMM.load(model_url)
    assert result["n_iter"] == model.n_iter_ == 5
    data = xr.open_zarr(url, consolidated=False).turbidity
    plain = DiagGMM(4, max_iter=5, tol=0, random_state=0).fit(data, feature_dim="month")
    np.testing.assert_allclose(model.means_, plain.means_, rtol=1e-10)
    labels = model.predict(data)  # the stored layout (feature_dim) is used after loading
    assert labels.dims == ("lat", "lon")
