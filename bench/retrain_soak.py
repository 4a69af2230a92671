"""Soak: the ``retrain`` deployment run 50 times on an accelerated schedule (issue 22, item 6).

Everything is real and on 127.0.0.1: ``prefect server start`` (SQLite under a temporary
``PREFECT_HOME``), a ``dask scheduler`` and a ``dask worker`` from their command lines, and
``retrain.serve(interval=...)`` in its own process, which the server's scheduler feeds with a
flow run every ``--interval`` seconds (one at a time: ``limit=1``). The deployment's parameters
are fixed, as in deploy/prefect.yaml: the training data and the held-out data are at fixed
paths, and new data arrives there between runs, as an upstream job would deliver it:

* after each run, a writer replaces ``incoming.zarr`` with a new partition (a new sample of the
  mixture; written beside it and renamed into place);
* every ``--shift-every`` runs the world shifts: the partition and the held-out data move by
  ``--shift``, so the current model's held-out score drops (a drift warning) and the model
  fitted on the new data is promoted;
* every ``--bad-every`` runs the partition alone is shifted (a bad delivery): the candidate
  scores worse on the held-out data and is not promoted.

Meanwhile a reader thread loads the registry's current model over and over, as a scoring job
would, while the runs promote and prune: it must never fail.

Per run it records the disk used by the registry's versions and by its ``work/`` folder
(checkpoints, candidates), the Prefect database, the resident memory (RSS) of the Prefect
server, of the serving process, of the dask scheduler and worker, and the run's promotion and
drift warning (from the Prefect API's logs). At the end it checks that

* the registry holds exactly the ``keep_versions`` newest versions (and the current one) and
  every one of them loads; every promoted version loaded right after its run;
* the disk of the registry and work folder, and each process's RSS, are flat over the last
  ``--flat-window`` runs (least-squares slope times the window below ``--flat-tolerance`` of
  the mean, or below 1 MiB);
* the reader never failed.

    python bench/retrain_soak.py                  # 50 runs, one every 25 s: ~21 min
    python bench/retrain_soak.py --runs 5 --interval 15     # smoke run

Writes ``bench/results/retrain_soak.json`` and prints a table. Not part of ``bench/suite.py``
(it takes 20 minutes); see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the `flows` package and the library, from a clone
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
K, D, ROWS = 3, 4, 5_000
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLI_PROMPT": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command, log, env=None, cwd=None):
    """``command`` in its own process group, output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd or ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process, grace=20):
    """SIGTERM the process group, then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_until(check, what, timeout=180, process=None, log=None):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited\n{Path(log).read_text()[-3000:]}")
        if time.monotonic() > deadline:
            tail = Path(log).read_text()[-3000:] if log else ""
            raise RuntimeError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.5)


def rss_mib(pid):
    """Resident memory of process ``pid`` and its descendants, MiB (0 when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def disk_bytes(path):
    """Bytes of the files under ``path`` (allocated blocks, as ``du`` counts them)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def replace_store(write, target):
    """Write a new Zarr store with ``write(path)`` beside ``target`` and rename it into place."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    if target.exists():
        retired = target.with_name(f".{target.name}.old")
        os.replace(target, retired)
        os.replace(partial, target)
        shutil.rmtree(retired)
    else:
        os.replace(partial, target)


class Data:
    """The upstream job: partitions and held-out data at fixed paths, with shifts."""

    def __init__(self, folder, shift):
        from diaggmm_dist.datasets.synthetic import mixture_parameters

        self.folder, self.shift = folder, shift
        self.weights, self.means, self.covariances = mixture_parameters(K, D, seed=0, spread=1.5)
        self.world = 0.0  # the current shift of the world
        self.train = folder / "incoming.zarr"
        self.holdout = folder / "holdout.zarr"

    def _write(self, target, seed, shift):
        from diaggmm_dist.datasets.synthetic import write_mixture_zarr

        replace_store(
            lambda path: write_mixture_zarr(
                path,
                ROWS,
                self.weights,
                self.means + shift,
                self.covariances,
                chunk_rows=2500,
                seed=seed,
                dtype="float64",
            ),
            target,
        )

    def deliver(self, run, kind):
        """The data for run ``run`` (1-based): ``kind`` is "same", "shift" or "bad"."""
        if kind == "shift":
            self.world += self.shift
            self._write(self.holdout, 100_000 + run, self.world)
        self._write(self.train, run, self.world + (self.shift if kind == "bad" else 0.0))


class Reader(threading.Thread):
    """Loads the registry's current model in a loop, as a scoring job would."""

    def __init__(self, registry_url):
        super().__init__(daemon=True)
        self.registry_url, self.loads, self.errors = registry_url, 0, []
        self.halt = threading.Event()

    def run(self):
        from diaggmm_dist import DiagGMM
        from diaggmm_dist.stores.registry import ModelRegistry

        registry = ModelRegistry(self.registry_url)
        while not self.halt.is_set():
            try:
                if registry.current(DiagGMM.load) is not None:
                    self.loads += 1
            except Exception as err:  # noqa: BLE001 - every failure is a finding
                self.errors.append(f"{type(err).__name__}: {err}")
            time.sleep(0.05)


def slope(values):
    """Least-squares slope per run of ``values``."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den if den else 0.0


def flow_runs(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
    )


def run_logs(client, flow_run_id):
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def finished_logs(client, flow_run_id):
    """The flow run's own log lines ``(level, message)`` once its last one has reached the
    server (its final state; the tasks' own "Finished in state" lines do not count)."""
    logs = run_logs(client, flow_run_id)
    own = [(log.level, log.message) for log in logs if log.task_run_id is None]
    return own if any(m.startswith("Finished in state") for _, m in own) else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--interval", type=float, default=25.0, help="seconds between runs")
    parser.add_argument("--keep-versions", type=int, default=5)
    parser.add_argument("--shift-every", type=int, default=10)
    parser.add_argument("--bad-every", type=int, default=7)
    parser.add_argument("--shift", type=float, default=1.0)
    parser.add_argument("--flat-window", type=int, default=25)
    parser.add_argument("--flat-tolerance", type=float, default=0.05)
    parser.add_argument("--out", default=str(RESULTS / "retrain_soak.json"))
    parser.add_argument("--keep-folder", action="store_true", help="leave the temporary folder")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="retrain-soak-"))
    print(f"working in {folder}", flush=True)
    registry_url = str(folder / "registry")
    server_home = folder / "prefect-server"
    server_home.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    server_env = dict(
        clean,
        **QUIET,
        PREFECT_HOME=str(server_home),
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        # the scheduler service looks for runs to create every 5 s instead of 60 s
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
    )
    client_env = dict(
        clean,
        **QUIET,
        PREFECT_API_URL=api,
        PREFECT_HOME=str(folder / "prefect-client"),
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        PYTHONPATH=str(ROOT),
    )
    os.environ.update({k: v for k, v in client_env.items() if k.startswith("PREFECT_")})
    processes = []
    reader = None
    try:
        server = start(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
            + ["--no-ui", "--analytics-off"],
            folder / "server.log",
            env=server_env,
            cwd=server_home,
        )
        processes.append(server)
        wait_until(
            lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200,
            "the Prefect server",
            process=server,
            log=folder / "server.log",
        )
        scheduler_file = folder / "scheduler.json"
        dask_env = dict(clean, DASK_DISTRIBUTED__WORKER__DAEMON="False")
        scheduler = start(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"]
            + ["--no-dashboard", "--scheduler-file", str(scheduler_file)],
            folder / "scheduler.log",
            env=dask_env,
            cwd=folder,
        )
        processes.append(scheduler)
        worker = start(
            [str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file)]
            + ["--nworkers", "1", "--nthreads", "2", "--no-dashboard", "--host", "127.0.0.1"]
            + ["--local-directory", str(folder / "dask-worker")],
            folder / "worker.log",
            env=dask_env,
            cwd=folder,
        )
        processes.append(worker)
        address = wait_until(
            lambda: json.loads(scheduler_file.read_text())["address"],
            "the dask scheduler",
            process=scheduler,
            log=folder / "scheduler.log",
        )
        data = Data(folder, args.shift)
        data.deliver(0, "same")  # the first partition and the held-out data
        data._write(data.holdout, 99_999, 0.0)
        first_delivery = time.time()
        parameters = {
            "registry_url": registry_url,
            "data_url": f"{data.train}/X",
            "holdout_url": f"{data.holdout}/X",
            "n_components": K,
            "margin": 0.01,
            "drift_threshold": 0.5,
            "max_iter": 30,
            "scheduler_address": address,
            "seconds_per_task": 1.0,
            "keep_versions": args.keep_versions,
            "prune_work": True,
        }
        serve_script = (
            "import datetime, json, sys\n"
            "from flows.retrain import retrain\n"
            "retrain.serve(name='soak', interval=datetime.timedelta(seconds=float(sys.argv[1])),"
            " parameters=json.loads(sys.argv[2]), limit=1)\n"
        )
        serve = start(
            [sys.executable, "-c", serve_script, str(args.interval), json.dumps(parameters)],
            folder / "serve.log",
            env=client_env,
        )
        processes.append(serve)

        from prefect.client.orchestration import get_client

        from diaggmm_dist import DiagGMM
        from diaggmm_dist.stores.registry import ModelRegistry

        registry = ModelRegistry(registry_url)
        reader = Reader(registry_url)
        reader.start()
        rows, seen, started, delivered = [], set(), time.monotonic(), first_delivery
        with get_client(sync_client=True) as client:
            deployment = wait_until(
                lambda: client.read_deployment_by_name("diaggmm-retrain/soak"),
                "the served deployment",
                process=serve,
                log=folder / "serve.log",
            )
            print(
                f"{'run':>3} {'state':<9} {'s':>5} {'promoted':<8} {'drift':<5} "
                f"{'kept':>4} {'reg KiB':>8} {'work KiB':>8} {'db MiB':>7} {'server':>7} "
                f"{'serve':>6} {'sched':>6} {'worker':>6} (RSS MiB)",
                flush=True,
            )
            while len(rows) < args.runs:
                finished = [
                    run
                    for run in flow_runs(client, deployment.id)
                    if run.state is not None and run.state.is_final() and run.id not in seen
                ]
                if not finished:
                    if serve.poll() is not None:
                        raise RuntimeError(
                            "the serving process exited\n"
                            + (folder / "serve.log").read_text()[-3000:]
                        )
                    time.sleep(0.5)
                    continue
                run = finished[0]
                seen.add(run.id)
                number = len(rows) + 1
                # measured at once, before the next run can start: what a finished run leaves
                work = folder / "registry" / "work"
                row = {
                    "run": number,
                    "state": run.state.type.value,
                    "seconds": (run.total_run_time.total_seconds() if run.total_run_time else None),
                    "started": run.start_time.timestamp() if run.start_time else None,
                    "data_delivered": delivered,
                    "versions": registry.versions(),
                    "current": registry.current_version(),
                    "registry_bytes": disk_bytes(folder / "registry") - disk_bytes(work),
                    "work_bytes": disk_bytes(work),
                    "prefect_db_bytes": disk_bytes(server_home),
                    "rss_server_mib": rss_mib(server.pid),
                    "rss_serve_mib": rss_mib(serve.pid),
                    "rss_scheduler_mib": rss_mib(scheduler.pid),
                    "rss_worker_mib": rss_mib(worker.pid),
                }
                kind = (
                    "shift"
                    if number % args.shift_every == 0
                    else "bad"
                    if number % args.bad_every == 0
                    else "same"
                )
                data.deliver(number, kind)  # the next run's data
                delivered, row["next_data"] = time.time(), kind
                # logs reach the server after the state: wait for the run's last line
                messages = wait_until(
                    lambda: finished_logs(client, run.id), f"the logs of run {number}", 60
                )
                row["drift"] = any(
                    level >= logging.WARNING and "DRIFT" in m for level, m in messages
                )
                promoted = next(  # the flow's "promoted v0007: held-out score ..."
                    (m.split()[1].rstrip(":") for _, m in messages if m.startswith("promoted v")),
                    None,
                )
                row["promoted"], row["promoted_loads"] = promoted, None
                if promoted is not None:  # a reader after the run: the new version loads
                    row["promoted_loads"] = registry.load(promoted, DiagGMM.load).n_components == K
                drift, versions = row["drift"], row["versions"]
                rows.append(row)
                print(
                    f"{number:>3} {row['state']:<9} {row['seconds'] or 0:>5.1f} "
                    f"{promoted or '-':<8} {'yes' if drift else '-':<5} {len(versions):>4} "
                    f"{row['registry_bytes'] / 1024:>8.0f} {row['work_bytes'] / 1024:>8.0f} "
                    f"{row['prefect_db_bytes'] / 2**20:>7.1f} {row['rss_server_mib']:>7.0f} "
                    f"{row['rss_serve_mib']:>6.0f} {row['rss_scheduler_mib']:>6.0f} "
                    f"{row['rss_worker_mib']:>6.0f}",
                    flush=True,
                )
        wall = time.monotonic() - started
        reader.halt.set()
        reader.join(timeout=30)
        report = verdict(rows, registry, reader, args, wall)
    finally:
        if reader is not None:
            reader.halt.set()
        for process in reversed(processes):
            stop(process)
        if not args.keep_folder:
            shutil.rmtree(folder, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "rows": rows, **report}, indent=1))
    print(json.dumps(report["summary"], indent=1))
    print(f"written {out}")
    return 0 if report["passed"] else 1


def verdict(rows, registry, reader, args, wall):
    """The end-of-soak checks and summary."""
    from diaggmm_dist import DiagGMM
    from diaggmm_dist.stores.retention import GRACE_SECONDS

    window = rows[-args.flat_window :]
    keys = ("registry_bytes", "work_bytes", "rss_server_mib", "rss_serve_mib")
    keys += ("rss_scheduler_mib", "rss_worker_mib", "prefect_db_bytes")
    summary, checks = {"runs": len(rows), "wall_seconds": round(wall)}, {}
    for key in keys:
        values = [row[key] for row in rows]
        last = [row[key] for row in window]
        mean = sum(last) / len(last)
        growth = slope(last) * len(last)  # over the window
        floor = 2**20 if key.endswith("bytes") else 1.0  # 1 MiB
        summary[key] = {
            "first": values[0],
            "last": values[-1],
            "max": max(values),
            "window_growth": round(growth, 3),
            "window_growth_fraction": round(growth / mean, 4) if mean else 0.0,
        }
        if key != "prefect_db_bytes":  # Prefect keeps every run's history: it grows by design
            checks[f"{key} flat"] = abs(growth) <= max(args.flat_tolerance * mean, floor)
    promoted = [row["promoted"] for row in rows if row["promoted"]]
    summary["promotions"] = len(promoted)
    summary["drift_warnings"] = sum(row["drift"] for row in rows)
    summary["failed_runs"] = sum(row["state"] != "COMPLETED" for row in rows)
    summary["reader_loads"], summary["reader_errors"] = reader.loads, reader.errors[:5]
    versions = registry.versions()
    current = registry.current_version()
    expected = set(promoted[-args.keep_versions :]) | {current}
    # beyond those, only versions replaced within the grace period of the last prune
    grace = set(registry.recently_replaced(GRACE_SECONDS + 60))
    summary["versions_left"] = versions
    checks["every run completed"] = summary["failed_runs"] == 0
    # each run read only data delivered before it started, never data replaced under it
    checks["every run started after its data arrived"] = all(
        row["started"] is not None and row["started"] > row["data_delivered"] for row in rows
    )
    # the logs' promotions are the registry's new versions, run by run
    newest = [row["versions"][-1] if row["versions"] else None for row in rows]
    checks["the logged promotions are the registry's new versions"] = all(
        row["promoted"] == (newest[i] if newest[i] != (newest[i - 1] if i else None) else None)
        for i, row in enumerate(rows)
    )
    checks["every promoted version loaded after its run"] = all(
        row["promoted_loads"] for row in rows if row["promoted"]
    )
    checks["the registry keeps the newest versions and the current"] = (
        expected <= set(versions) <= (expected | grace)
    )
    checks["every version left loads"] = all(
        registry.load(version, DiagGMM.load).n_components == K for version in versions
    )
    checks["the reader never failed"] = not reader.errors and reader.loads > 0
    summary["checks"] = checks
    return {"summary": summary, "passed": all(checks.values())}


if __name__ == "__main__":
    sys.exit(main())
