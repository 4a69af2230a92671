"""The library, the CLI and the flows on s3:// through storage options, against the real S3
server of tests/s3_harness.py (moto behind the project's proxy).

The endpoint is never in the environment, neither of this process nor of the LocalCluster's
worker processes: every URL works only because its options reach whatever opens it, on the
workers too (they travel in the task graphs). Each model is compared bit for bit with the same
fit of the same chunks in a local Zarr store.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import zarr
from conftest import mixture_data
from prefect_harness import REPO, prefect_api, prefect_server, task_runs  # noqa: F401
from s3_harness import ENDPOINT_VARIABLES, s3, s3_service  # noqa: F401

from diaggmm_dist import DiagGMM
from diaggmm_dist.cli import main
from diaggmm_dist.cli.exits import EXIT_OK
from diaggmm_dist.locations import location
from diaggmm_dist.outputs.label_maps import write_label_map
from diaggmm_dist.outputs.scores import write_scores

if str(REPO) not in sys.path:  # `flows` is a package at the repository root
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.timeout(300)

K = 3
SETTINGS = dict(random_state=0, tol=0.0, max_iter=6)


def put_rows(s3, key, X, chunks=(500, 4)):
    """``X`` as a Zarr v3 array at ``s3://<bucket>/<key>`` (written through the options)."""
    array = zarr.open_array(
        s3.zarr_store(key), mode="w", shape=X.shape, dtype=X.dtype, chunks=chunks
    )
    array[:] = X
    return s3.url(key)


def local_rows(folder, X, chunks=(500, 4)):
    """The same chunks in a local Zarr store: the reference every s3 fit is compared with."""
    path = str(folder / "rows.zarr")
    zarr.open_array(path, mode="w", shape=X.shape, dtype=X.dtype, chunks=chunks)[:] = X
    return path


def assert_same_model(a, b):
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.n_iter_, a.converged_) == (b.n_iter_, b.converged_)


def written_paths(s3, key):
    """The object keys under ``key`` that the proxy saw written (200 PUTs)."""
    prefix = s3.log_path(key)
    return {
        r.path for r in s3.proxy.requests("PUT") if r.status == 200 and r.path.startswith(prefix)
    }


@pytest.fixture
def rows():
    X, _ = mixture_data(4000, 4, K, seed=3)
    return X


def endpoint_variables():
    """The endpoint variables set in this process's environment."""
    return [name for name in ENDPOINT_VARIABLES if name in os.environ]


def test_the_workers_and_this_process_have_no_endpoint(s3, local_cluster):
    from distributed import Client

    with Client(local_cluster, set_as_default=False) as client:
        seen = client.run(endpoint_variables)
    assert endpoint_variables() == [] and all(names == [] for names in seen.values()), seen


def test_fit_resume_predict_save_and_load_on_s3_with_options(s3, rows, tmp_path):
    options = s3.storage_options
    data = put_rows(s3, "data.zarr", rows)
    local = DiagGMM(K, **SETTINGS).fit(local_rows(tmp_path, rows))

    paused = DiagGMM(K, **SETTINGS).fit(
        data, checkpoint=s3.url("run.zarr"), storage_options=options, until=3
    )
    assert paused.n_iter_ == 3
    assert any(path.endswith("/zarr.json") for path in written_paths(s3, "run.zarr"))
    resumed = DiagGMM(K, **SETTINGS).fit(
        data, checkpoint=s3.url("run.zarr"), storage_options=options
    )
    assert_same_model(resumed, local)

    np.testing.assert_array_equal(
        np.asarray(resumed.predict(data, storage_options=options)), local.predict(rows)
    )
    assert resumed.score(data, storage_options=options) == local.score(local_rows(tmp_path, rows))

    resumed.save(s3.url("model.zarr"), storage_options=options)
    assert written_paths(s3, "model.zarr")
    assert_same_model(DiagGMM.load(s3.url("model.zarr"), storage_options=options), local)
    # a store object configured in code carries its own options
    assert_same_model(DiagGMM.load(s3.zarr_store("model.zarr", read_only=True)), local)
    with pytest.raises(FileExistsError):
        resumed.save(s3.url("model.zarr"), storage_options=options)


def test_scores_and_label_maps_go_to_s3_by_url_and_by_store_object(s3, rows):
    xr = pytest.importorskip("xarray")
    options = s3.storage_options
    data = put_rows(s3, "data.zarr", rows)
    model = DiagGMM(K, random_state=0).fit(rows)

    assert write_scores(model, data, s3.url("scores.zarr"), storage_options=options) == s3.url(
        "scores.zarr"
    )
    group = zarr.open_group(s3.zarr_store("scores.zarr", read_only=True), mode="r")
    np.testing.assert_array_equal(group["labels"][:], model.predict(rows))
    np.testing.assert_array_equal(group["log_likelihood"][:], model.score_samples(rows))
    with pytest.raises(FileExistsError, match="already exists"):
        write_scores(model, data, s3.url("scores.zarr"), storage_options=options)

    write_scores(model, rows, s3.zarr_store("by-store.zarr"))
    group = zarr.open_group(s3.zarr_store("by-store.zarr", read_only=True), mode="r")
    np.testing.assert_array_equal(group["labels"][:], model.predict(rows))

    grid = xr.DataArray(
        rows.reshape(40, 100, 4), dims=("y", "x", "band"), coords={"y": np.arange(40)}
    )
    gridded = DiagGMM(K, random_state=0).fit(grid, feature_dim="band")
    expected = gridded.predict(grid).values
    write_label_map(gridded, grid, s3.url("map.zarr"), storage_options=options)
    write_label_map(gridded, grid, s3.zarr_store("map-by-store.zarr"))
    for key in ("map.zarr", "map-by-store.zarr"):
        written = xr.open_zarr(s3.zarr_store(key, read_only=True), consolidated=False)
        np.testing.assert_array_equal(written["labels"].values, expected)
        np.testing.assert_array_equal(written["y"].values, np.arange(40))


def test_cli_fit_and_predict_on_s3_with_storage_options(s3, rows, tmp_path, local_cluster, capsys):
    data = put_rows(s3, "data.zarr", rows)
    options = s3.storage_options
    endpoint = options["client_kwargs"]["endpoint_url"]
    given = [
        "--storage-option",
        f"key={options['key']}",
        "--storage-option",
        f"secret={options['secret']}",
        "--storage-option",
        f"client_kwargs.endpoint_url={endpoint}",
        "--storage-option",
        f"client_kwargs.region_name={options['client_kwargs']['region_name']}",
    ]
    scheduler = ["--scheduler", local_cluster.scheduler_address, "--quiet"]
    fit = ["fit", data, "--k", str(K), "--out", s3.url("model.zarr"), "--max-iter", "6"]
    code = main([*fit, "--tol", "0", "--checkpoint", s3.url("run.zarr"), *scheduler, *given])
    output = capsys.readouterr()
    assert code == EXIT_OK, output
    local = DiagGMM(K, **SETTINGS).fit(local_rows(tmp_path, rows))
    saved = DiagGMM.load(s3.url("model.zarr"), storage_options=options)
    assert_same_model(saved, local)
    assert written_paths(s3, "run.zarr") and written_paths(s3, "model.zarr")

    file = tmp_path / "options.json"
    file.write_text(json.dumps(options))
    predict = ["predict", s3.url("model.zarr"), data, "--out", s3.url("scores.zarr")]
    code = main([*predict, *scheduler, "--storage-options", str(file)])
    output = capsys.readouterr()
    assert code == EXIT_OK, output
    labels = zarr.open_group(s3.zarr_store("scores.zarr", read_only=True), mode="r")["labels"]
    np.testing.assert_array_equal(labels[:], local.predict(rows))

    code = main(["info", s3.url("model.zarr"), "--json", "--storage-options", str(file)])
    output = capsys.readouterr()
    assert code == EXIT_OK, output
    assert json.loads(output.out)["n_iter"] == local.n_iter_


def test_train_score_and_retrain_flows_on_s3_with_options_and_a_secret_block(
    prefect_api, s3, rows, tmp_path, local_cluster
):
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    from flows.retrain import retrain
    from flows.score import score
    from flows.train import train

    options = s3.storage_options
    data = put_rows(s3, "data.zarr", rows)
    holdout = put_rows(s3, "holdout.zarr", mixture_data(2000, 4, K, seed=4)[0])
    settings = dict(tol=1e-4, max_iter=30, dtype="float64", random_state=0)
    local = DiagGMM(K, init_params="kmeans", **settings).fit(local_rows(tmp_path, rows))

    state = train(
        data,
        K,
        s3.url("models/k3"),
        scheduler_address=local_cluster.scheduler_address,
        storage_options=options,
        return_state=True,
        **settings,
    )
    assert state.is_completed(), state
    assert state.result()["checkpoint_url"] == s3.url("models/k3.checkpoint")
    assert_same_model(DiagGMM.load(s3.url("models/k3"), storage_options=options), local)
    assert written_paths(s3, "models/k3.checkpoint")

    # credentials in a Secret block, the endpoint as a parameter: merged in the flow run
    # the server checks no signature: credentials that are easy to find if they leak
    credentials = {"key": "AKIA-FLOW-TEST", "secret": "flow-secret-DO-NOT-STORE"}
    Secret(value=credentials).save("s3-test-credentials", overwrite=True)
    endpoint = {"client_kwargs": dict(options["client_kwargs"])}
    summary = score(
        s3.url("models/k3"),
        data,
        s3.url("scores.zarr"),
        scheduler_address=local_cluster.scheduler_address,
        storage_options=endpoint,
        storage_options_block="s3-test-credentials",
    )
    assert summary["n_rows"] == len(rows)
    labels = zarr.open_group(s3.zarr_store("scores.zarr", read_only=True), mode="r")["labels"]
    np.testing.assert_array_equal(labels[:], local.predict(rows))

    state = retrain(
        s3.url("registry"),
        data,
        holdout,
        n_components=K,
        max_iter=30,
        scheduler_address=local_cluster.scheduler_address,
        storage_options=endpoint,
        storage_options_block="s3-test-credentials",
        return_state=True,
    )
    assert state.is_completed(), state
    result = state.result()
    assert result["promoted"] == result["current"] == "v0001"
    assert written_paths(s3, "registry")
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(state.state_details.flow_run_id).parameters
    assert parameters["storage_options"] == endpoint  # the block's credentials are not stored
    assert "secret" not in json.dumps(parameters)
    runs = task_runs(state.state_details.flow_run_id)
    for task in ("read-current", "initialize", "em-iterations", "holdout-score", "promote"):
        assert any(run.name.startswith(task) for run in runs), (task, [r.name for r in runs])
    assert not any(credentials["secret"] in run.model_dump_json() for run in runs)

    from diaggmm_dist.stores.registry import ModelRegistry

    registry = ModelRegistry(location(s3.url("registry"), options))
    version, model = registry.current(
        lambda where: DiagGMM.load(
            where if not isinstance(where, str) else location(where, options)
        )
    )
    assert version == "v0001" and model.n_components == K
    assert model.score(holdout, storage_options=options) == pytest.approx(result["new_score"])
