"""A real Prefect server for the flow tests, and helpers to read what the flows left in it.

``prefect_server`` (session scope) starts ``prefect server start`` on a free 127.0.0.1 port with
its own PREFECT_HOME (a SQLite database under a temporary directory) and waits for
``/api/health``. The server is set up as deploy/ sets it up: it requires an auth string
(PREFECT_SERVER_API_AUTH_STRING, random per session) on every API call but the health probes,
and enforces CSRF tokens on state-changing calls (PREFECT_SERVER_CSRF_PROTECTION_ENABLED), so
every flow test runs against an authenticated server. ``prefect_api`` (module scope) points
this process at it: it sets PREFECT_API_URL, PREFECT_API_AUTH_STRING (and a PREFECT_HOME of its
own) in ``os.environ``, refreshes Prefect's global settings in case Prefect was imported earlier
in the session, and restores them afterwards, so that no other test module sees a Prefect
server. ``PrefectServer.env()`` gives a subprocess the same three.

Import the fixtures into a test module (``from prefect_harness import prefect_server,
prefect_api``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
#: Environment that keeps every Prefect process quiet and offline.
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLI_PROMPT": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(*processes, grace=20):
    """SIGTERM the process groups of ``processes`` (started with start_new_session=True), wait
    up to ``grace`` seconds for each, then SIGKILL what is left of the groups.
    """
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Children (flow-run processes, dask workers) may outlive the leader: finish the group.
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def _tail(path, lines=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PrefectServer:
    def __init__(self, url, home, log, auth_string):
        self.url, self.home, self.log = url, home, log
        # Not in repr(): a secret, even a per-session one, stays out of test reports.
        self._auth_string = auth_string

    def __repr__(self):
        return f"PrefectServer(url={self.url!r}, home={str(self.home)!r})"

    @property
    def auth_string(self):
        """The string the server requires (``PREFECT_API_AUTH_STRING`` of its clients)."""
        return self._auth_string

    def client_env(self):
        """The settings a client of this server needs: API URL, auth string, PREFECT_HOME."""
        return {
            "PREFECT_API_URL": self.url,
            "PREFECT_API_AUTH_STRING": self._auth_string,
            "PREFECT_HOME": str(self.home / "client"),
        }

    def env(self, **extra):
        """Environment for a subprocess that talks to this server (and nothing else)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.pop("DASK_SCHEDULER_ADDRESS", None)
        env.update(QUIET, **self.client_env(), **extra)
        return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """``prefect server start`` on 127.0.0.1:<free port>, SQLite under a temporary PREFECT_HOME,
    with an auth string and CSRF protection.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    log = home / "server.log"
    auth_string = f"diaggmm-test:{secrets.token_urlsafe(24)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        QUIET,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_API_AUTH_STRING=auth_string,
        PREFECT_SERVER_CSRF_PROTECTION_ENABLED="true",
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
                "--analytics-off",
            ],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180  # the first start migrates a new database
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"prefect server exited with {process.returncode}:\n{_tail(log)}", pytrace=False
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"prefect server did not answer on {url}/health:\n{_tail(log)}", pytrace=False
                )
            time.sleep(0.5)
        yield PrefectServer(url, home, log, auth_string)
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def prefect_api(prefect_server):
    """This process talks to ``prefect_server`` for the duration of the module; restored after."""
    client = prefect_server.client_env()
    names = [*client, *QUIET]
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(QUIET, **client)
    _refresh_prefect_settings()
    try:
        yield prefect_server
    finally:
        _drain_prefect_workers()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _refresh_prefect_settings()


def _refresh_prefect_settings():
    if "prefect" not in sys.modules:
        return  # read from the environment when first imported
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


def _drain_prefect_workers():
    """Send what Prefect still queues (logs, events) to the server before it goes away."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


# --------------------------------------------------------------------------- reading the server
def flush_logs():
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)


def wait_for(read, done, timeout=30.0, interval=0.25, what="the Prefect server"):
    """Call ``read()`` until ``done(value)``; return the value (fail with the last one on
    timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout} s waiting for {what}; last value: {value!r}",
                pytrace=False,
            )
        time.sleep(interval)


def task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def logs(flow_run_id, min_level=0):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    with get_client(sync_client=True) as client:
        return client.read_logs(
            LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]),
                level=LogFilterLevel(ge_=min_level),
            )
        )


def artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def events(name, resource_id):
    """The events called ``name`` about the resource ``resource_id`` the server recorded."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        return client.read_events(
            EventFilter(
                event=EventNameFilter(name=[name]),
                resource=EventResourceFilter(id=[resource_id]),
            ),
            limit=50,  # the server's maximum (prefect 3.9.1's client defaults to 100: refused)
        ).events


def read_deployment(name):
    """The deployment called ``flow/deployment``, or None while it does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


@contextlib.contextmanager
def background(command, *, env, log, cwd=REPO):
    """Run ``command`` in its own process group for the block; the whole group is stopped after."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop_process_group(process)
