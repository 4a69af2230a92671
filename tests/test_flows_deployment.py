"""Deployments of the flows on the session's real Prefect server refuse bad parameters.

The server is tests/prefect_harness.py's (auth string and CSRF, as deploy/ runs it). The train
and retrain flows are deployed to it (``flow.to_deployment(...).apply()``, into a process work
pool that no worker polls: nothing runs), then flow runs are asked for, as ``prefect deployment
run`` and the UI ask for them: a wrong ``criterion``, ``dtype`` or ``mode``, a missing required
parameter and a wrong type are refused by the server, with a message that names the parameter;
a good parameter set is accepted (the run is created, Scheduled). The deployments, their runs
and the pool are deleted after.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from prefect_harness import prefect_api, prefect_server  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `flows` is a package at the repository root
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.timeout(300)

GOOD_TRAIN = {"data_url": "/data/features.zarr/X", "n_components": [2, 4], "model_url": "/m/k"}
GOOD_RETRAIN = {"registry_url": "/r", "data_url": "/data/new.zarr/X", "holdout_url": "/h.zarr/X"}


@pytest.fixture(scope="module")
def deployed(prefect_api):
    """The train and retrain flows deployed into a new process work pool; removed after."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.retrain import retrain
    from flows.train import train

    pool = f"diaggmm-test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    ids = {}
    try:
        for flow in (train, retrain):
            deployment = flow.to_deployment(name="refusal-test", work_pool_name=pool)
            ids[flow.name] = deployment.apply()
        yield ids
    finally:
        with get_client(sync_client=True) as client:
            for deployment_id in ids.values():
                runs = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                for run in client.read_flow_runs(deployment_filter=runs):
                    client.delete_flow_run(run.id)
                client.delete_deployment(deployment_id)
            client.delete_work_pool(pool)


def refusal(deployment_id, parameters) -> tuple[int, str]:
    """The server's HTTP status and message when asked for a run with ``parameters``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    response = refused.value.response
    return response.status_code, response.json()["detail"]


def test_the_deployments_enforce_the_flows_schema_with_its_help(deployed):
    from prefect.client.orchestration import get_client

    from flows.train import train

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployed["diaggmm-train"])
    assert deployment.enforce_parameter_schema is True
    schema = deployment.parameter_openapi_schema
    expected = train.parameters.model_dump_for_openapi()
    assert schema["properties"] == expected["properties"]
    # what the UI shows: the choices, and the help of every parameter (required ones too)
    assert schema["properties"]["criterion"]["enum"] == ["bic", "aic", "heldout"]
    assert schema["required"] == ["data_url", "n_components", "model_url"]
    assert all(p.get("description") for p in schema["properties"].values()), schema


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
            f"{flow}/refusal-test",
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
            "diaggmm-retrain/refusal-test", parameters={**GOOD_RETRAIN, "mode": "x"}, timeout=0
        )
