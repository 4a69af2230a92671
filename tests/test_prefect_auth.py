"""The Prefect server as deploy/ runs it refuses callers without its auth string.

The session's real ``prefect server`` (tests/prefect_harness.py) runs with
PREFECT_SERVER_API_AUTH_STRING and PREFECT_SERVER_CSRF_PROTECTION_ENABLED, as the compose file
and the Kubernetes values set them. These tests call its HTTP API with plain ``urllib`` (no
Prefect client, which would add the header itself): no ``Authorization`` header, a wrong
string, and the right one; then a state-changing call without and with a CSRF token. The flow
tests (test_flows.py, test_flow_errors.py, test_flow_specs.py, test_s3_cli_flows.py) run
against the same server, through clients given PREFECT_API_AUTH_STRING.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid

from prefect_harness import prefect_server  # noqa: F401


def call(url, *, method="GET", body=None, auth=None, headers=()):
    """(HTTP status, decoded JSON body or text) of one request; ``auth`` is the auth string."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    for name, value in headers:
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def test_unauthenticated_api_calls_are_refused(prefect_server):
    url = prefect_server.url
    # Reads are refused by the auth check.
    assert call(f"{url}/admin/version") == (401, {"exception_message": "Unauthorized"})
    # Writes meet the CSRF check first (it wraps the auth check), and no CSRF token can be had
    # without the auth string ...
    status, body = call(f"{url}/flows/", method="POST", body={"name": "intruder"})
    assert (status, body) == (403, {"detail": "Missing CSRF token."})
    client = str(uuid.uuid4())
    assert call(f"{url}/csrf-token?client={client}")[0] == 401
    # ... and a valid token (fetched with the string) does not stand in for it.
    status, token = call(f"{url}/csrf-token?client={client}", auth=prefect_server.auth_string)
    assert status == 200, token
    csrf = [("Prefect-Csrf-Token", token["token"]), ("Prefect-Csrf-Client", client)]
    for path, body in (("flows/", {"name": "intruder"}), ("deployments/filter", {})):
        status, answer = call(f"{url}/{path}", method="POST", body=body, headers=csrf)
        assert (status, answer) == (401, {"exception_message": "Unauthorized"}), path
    # The health probe stays open (compose healthcheck, Kubernetes probes), and says nothing.
    assert call(f"{url}/health") == (200, True)


def test_a_wrong_auth_string_is_refused(prefect_server):
    url = prefect_server.url
    for wrong in ("", "wrong", prefect_server.auth_string + "x", prefect_server.auth_string[:-1]):
        status, _ = call(f"{url}/admin/version", auth=wrong)
        assert status == 401, wrong
    # Another scheme with the right string (a Bearer token) is refused too.
    status, _ = call(
        f"{url}/admin/version", headers=[("Authorization", f"Bearer {prefect_server.auth_string}")]
    )
    assert status == 401


def test_the_right_auth_string_passes_and_writes_need_a_csrf_token(prefect_server):
    url, auth = prefect_server.url, prefect_server.auth_string
    status, version = call(f"{url}/admin/version", auth=auth)
    assert status == 200 and isinstance(version, str) and version.startswith("3."), version
    name = f"auth-test-{uuid.uuid4().hex[:8]}"
    # CSRF protection is on: an authenticated write without a token is refused ...
    status, body = call(f"{url}/flows/", method="POST", body={"name": name}, auth=auth)
    assert (status, body) == (403, {"detail": "Missing CSRF token."})
    # ... and passes with the token the server issues to this client id.
    client = str(uuid.uuid4())
    status, token = call(f"{url}/csrf-token?client={client}", auth=auth)
    assert status == 200 and token["client"] == client, token
    csrf = [("Prefect-Csrf-Token", token["token"]), ("Prefect-Csrf-Client", client)]
    status, flow = call(
        f"{url}/flows/", method="POST", body={"name": name}, auth=auth, headers=csrf
    )
    assert status in (200, 201) and flow["name"] == name, (status, flow)
    # A token is bound to its client id.
    other = [("Prefect-Csrf-Token", token["token"]), ("Prefect-Csrf-Client", str(uuid.uuid4()))]
    status, _ = call(f"{url}/flows/", method="POST", body={"name": name}, auth=auth, headers=other)
    assert status == 403
