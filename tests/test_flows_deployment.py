"""The shipped deployments of the flows, on the session's real Prefect server, refuse bad
parameters.

The server is tests/prefect_harness.py's (auth string and CSRF, as deploy/ runs it). The
deployments are made as deploy/README.md makes them, ``prefect deploy --prefect-file
deploy/prefect.yaml --all`` from the repository root, into the process work pool ``diaggmm``
that no worker polls here: nothing runs. Then flow runs are asked for, as ``prefect deployment
run`` and the UI ask for them: a wrong ``criterion``, ``dtype`` or ``mode``, a missing required
parameter and a wrong type are refused by the server (Prefect 3 deployments enforce their
parameter schema), with a message that names the parameter; a good parameter set is accepted
(the run is created, Scheduled). The deployments, their runs and the pool are deleted after.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prefect_harness import prefect_api, prefect_server, read_deployment  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `flows` is a package at the repository root
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.timeout(300)

GOOD_TRAIN = {"data_url": "/data/features.zarr/X", "n_components": [2, 4], "model_url": "/m/k"}
GOOD_RETRAIN = {"registry_url": "/r", "data_url": "/data/new.zarr/X", "holdout_url": "/h.zarr/X"}
#: The deployments of deploy/prefect.yaml, by flow.
DEPLOYMENTS = {"diaggmm-train": "train", "diaggmm-score": "score", "diaggmm-retrain": "retrain"}
POOL = "diaggmm"  # deploy/prefect.yaml's


@pytest.fixture(scope="module")
def deployed(prefect_api):
    """deploy/prefect.yaml's deployments on the server, by flow name; removed after."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(POOL)
            made_pool = False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            made_pool = True
    ids = {}
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), "deploy"]
            + ["--prefect-file", "deploy/prefect.yaml", "--all"],
            cwd=REPO,
            env=prefect_api.env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        for flow, name in DEPLOYMENTS.items():
            deployment = read_deployment(f"{flow}/{name}")
            if deployment is not None:
                ids[flow] = deployment.id
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert set(ids) == set(DEPLOYMENTS), done.stdout[-3000:]
        yield ids
    finally:
        with get_client(sync_client=True) as client:
            for deployment_id in ids.values():
                runs = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                for run in client.read_flow_runs(deployment_filter=runs):
                    client.delete_flow_run(run.id)
                client.delete_deployment(deployment_id)
            if made_pool:
                client.delete_work_pool(POOL)


def refusal(deployment_id, parameters) -> tuple[int, str]:
    """The server's HTTP status and message when asked for a run with ``parameters``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    response = refused.value.response
    return response.status_code, response.json()["detail"]


@pytest.mark.parametrize("flow", sorted(DEPLOYMENTS))
def test_the_deployments_enforce_the_flows_schema_with_its_help(deployed, flow):
    import importlib

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployed[flow])
    assert deployment.enforce_parameter_schema is True
    assert deployment.work_pool_name == POOL
    schema = deployment.parameter_openapi_schema
    name = flow.removeprefix("diaggmm-")
    expected = getattr(importlib.import_module(f"flows.{name}"), name).parameters
    assert schema["properties"] == expected.model_dump_for_openapi()["properties"]
    assert schema["required"] == expected.required
    # what the UI shows: the help of every parameter (required ones too), the choices
    assert all(p.get("description") for p in schema["properties"].values()), schema
    if flow == "diaggmm-train":
        assert schema["properties"]["criterion"]["enum"] == ["bic", "aic", "heldout"]
        assert schema["required"] == ["data_url", "n_components", "model_url"]


@pytest.mark.parametrize(
    "flow, change, named, reason",
    [
        ("diaggmm-train", {"criterion": "best"}, "criterion", "'best' is not one of"),
        ("diaggmm-train", {"dtype": "float16"}, "dtype", "'float16' is not one of"),
        ("diaggmm-train", {"n_components": "four"}, "n_components", "'four' is not valid"),
        ("diaggmm-train", {"data_url": None}, "data_url", "'data_url' is a required property"),
        ("diaggmm-retrain", {"mode": "incremental"}, "mode", "'incremental' is not one of"),
    ],
)
def test_a_bad_parameter_is_refused_by_the_server_naming_it(deployed, flow, change, named, reason):
    good = GOOD_TRAIN if flow == "diaggmm-train" else GOOD_RETRAIN
    parameters = {k: v for k, v in {**good, **change}.items() if v is not None}
    status, message = refusal(deployed[flow], parameters)
    assert status == 409, (status, message)
    assert message.startswith("Error creating flow run: Validation failed"), message
    assert named in message and reason in message, message


def test_good_parameters_are_accepted_and_the_run_is_scheduled(deployed):
    from prefect.deployments import run_deployment

    for flow, good in (("diaggmm-train", GOOD_TRAIN), ("diaggmm-retrain", GOOD_RETRAIN)):
        run = run_deployment(
            f"{flow}/{DEPLOYMENTS[flow]}",
            parameters={**good, **({"criterion": "aic"} if flow == "diaggmm-train" else {})},
            timeout=0,  # no worker polls the pool: the run waits, Scheduled
        )
        assert run.deployment_id == deployed[flow]
        assert run.state.is_scheduled(), run.state
        assert run.parameters["data_url"] == good["data_url"]
    # as run_deployment does, a refused run raises where it is asked for
    from prefect.exceptions import PrefectHTTPStatusError

    with pytest.raises(PrefectHTTPStatusError, match="409"):
        run_deployment(
            "diaggmm-retrain/retrain", parameters={**GOOD_RETRAIN, "mode": "x"}, timeout=0
        )
