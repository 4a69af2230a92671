"""deploy/slurm/jobqueue_cluster.py on a real SLURM cluster: Dask workers as SLURM jobs, over TLS.

The cluster is tests/slurm_harness.py's: Debian's slurmctld, slurmd and munge on 127.0.0.1,
one node of 2 CPUs; each worker job is 1 CPU, 1 Dask worker, 1 thread. The fits are the
script itself, run as a user runs it, compared bit for bit with ``diaggmm fit`` on a
LocalCluster. Skipped (with the reason) where SLURM cannot run: see the harness.
"""

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import numpy as np
import pytest
from slurm_harness import slurm  # noqa: F401

from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr
from diaggmm_dist.tls import ALL_ROLES

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is in the test extra")

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "slurm" / "jobqueue_cluster.py"
DIAGGMM = Path(sys.executable).parent / "diaggmm"
ITERATION_LINE = re.compile(r"^iteration\s+(\d+)\s+lower bound", re.M)
MAX_ITER = 40
# Overlapping components (spread 1.5): EM keeps moving for all its iterations, so a skipped or
# repeated iteration, or a pass that missed a chunk, would change the model. 6 chunks.
FIT = ["--k", "3", "--tol", "0", "--max-iter", str(MAX_ITER), "--chunk-size", "4000"]
# Each SLURM job: one CPU of the node's two, one Dask worker with one thread.
JOB = ["--cores", "1", "--processes", "1", "--memory", "1GB", "--walltime", "00:10:00"]


def load_script():
    spec = spec_from_file_location("jobqueue_cluster", SCRIPT)
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_arguments(data, out, folder, *extra):
    """The script's command-line arguments for a 2-job cluster on 127.0.0.1 under ``folder``."""
    return [
        str(data),
        "--out",
        str(out),
        *FIT,
        *JOB,
        "--jobs",
        "2",
        "--min-workers",
        "2",
        "--interface",
        "lo",
        "--log-directory",
        str(folder / "logs"),
        "--credentials-directory",
        str(folder),
        "--dashboard-address",
        "127.0.0.1:0",
        *extra,
    ]


def assert_same_model(got, expected):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.n_iter_ == expected.n_iter_
    assert got.lower_bounds_ == expected.lower_bounds_


class Live:
    """A running process whose output lines (stdout and stderr together) are collected."""

    def __init__(self, command, env):
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(env, PYTHONUNBUFFERED="1"),
            cwd=REPO,
            start_new_session=True,
        )
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return "".join(self.lines)

    def wait_until(self, condition, what, timeout=180):
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"ended (exit {self.proc.returncode}) before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output}"
            time.sleep(0.02)

    def wait(self, timeout=240):
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


def run_script(data, out, folder, env, *extra):
    live = Live([sys.executable, str(SCRIPT), *script_arguments(data, out, folder, *extra)], env)
    return live.wait(), live.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm-data")
    params = mixture_parameters(3, 4, seed=8, spread=1.5)
    write_mixture_zarr(
        folder / "data.zarr", 24_000, *params, chunk_rows=4000, seed=8, dtype="float64"
    )
    return folder / "data.zarr" / "X"


@pytest.fixture(scope="module")
def local_model(data, tmp_path_factory):
    """The same fit by ``diaggmm fit`` on a LocalCluster (no --scheduler)."""
    out = tmp_path_factory.mktemp("slurm-local") / "model.zarr"
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    result = subprocess.run(
        [str(DIAGGMM), "fit", str(data), "--out", str(out), "--cluster", *FIT],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the CLI started a LocalCluster
    assert re.search(r"scheduler (tcp|tls)://127\.0\.0\.1:", result.stdout), result.stdout
    model = DiagGMM.load(out)
    assert model.n_iter_ == MAX_ITER
    return model


def refused(address, security, what):
    from distributed import Client

    try:
        with Client(address, security=security, timeout="3s"):
            pass
    except (OSError, TimeoutError):
        return
    raise AssertionError(f"the scheduler accepted a client {what}")


def handshake_without_certificate(address, ca_file):
    """A TLS client that trusts the run's CA but has no certificate: the scheduler's answer."""
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False  # the temporary certificate names "dask-internal"
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            try:
                tls.recv(1)  # TLS 1.3: the server's verdict on the client comes after the handshake
            except ssl.SSLError as err:
                return str(err)
    return "no error"


def test_workers_are_slurm_jobs_that_only_this_runs_credentials_reach(slurm, tmp_path):
    import dask
    from distributed import Client, Security

    script = load_script()
    args = script.arguments(
        [
            "data",
            "--k",
            "1",
            "--out",
            "model",
            *JOB,
            "--interface",
            "lo",
            "--dashboard-address",
            "127.0.0.1:0",
        ]
    )
    args.log_directory = str(tmp_path / "logs")
    with script.private_directory(tmp_path) as credentials:
        written = script.write_credentials(Security.temporary(), credentials)
        security = written.security(ALL_ROLES)  # as main() starts the cluster
        tls_config = written.dask_config()
        assert credentials.stat().st_mode & 0o777 == 0o700
        files = sorted(credentials.iterdir())
        assert [f.name for f in files] == ["ca.pem", "cert.pem", "key.pem"]
        assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
        key = credentials / "key.pem"
        assert "PRIVATE KEY" in key.read_text()
        assert written.key_file == str(key)
        # what `diaggmm fit` gets: dask's own variables naming the files
        environment = written.environment()
        assert environment["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == str(key)
        from_environment = dask.config.collect_env(environment)
        for name, value in tls_config.items():
            assert dask.config.get(name, config=from_environment) == value, name

        with script.make_cluster(args, security) as cluster:
            job_script = cluster.job_script()
            # the job script (readable by other users) names the files; no key material
            assert f"--tls-key {key}" in job_script, job_script
            assert "PRIVATE KEY" not in job_script and "BEGIN" not in job_script, job_script
            address = cluster.scheduler_address
            assert address.startswith("tls://127.0.0.1:"), address

            cluster.scale(jobs=1)
            with dask.config.set(tls_config):
                client = Client(address, timeout="30s")  # as `diaggmm fit` connects
            with client:
                client.wait_for_workers(1, timeout=120)
                workers = client.scheduler_info()["workers"]
                assert all(w.startswith("tls://127.0.0.1:") for w in workers), workers
                job_ids = client.run(os.getenv, "SLURM_JOB_ID")
                assert len(job_ids) == 1, job_ids
                assert set(job_ids.values()) <= set(slurm.job_ids("diaggmm-worker")), job_ids

                refused(address.replace("tls://", "tcp://"), None, "over plain TCP")
                other = Security.temporary()
                refused(address, other, "with another run's credentials")
                # trusts this run's scheduler, but shows a certificate of another run
                stranger = Security(
                    require_encryption=True,
                    tls_ca_file=str(credentials / "ca.pem"),
                    tls_client_cert=other.tls_client_cert,
                    tls_client_key=other.tls_client_key,
                )
                refused(address, stranger, "with a certificate this run did not issue")
                verdict = handshake_without_certificate(address, str(credentials / "ca.pem"))
                assert "CERTIFICATE_REQUIRED" in verdict.upper(), verdict
                # and the scheduler was up all along
                assert client.submit(sum, [1, 2], pure=False).result() == 3
    assert not credentials.exists(), "the run's credentials outlived it"


def test_fit_on_slurm_workers_over_tls_matches_a_local_cluster(slurm, data, local_model, tmp_path):
    out = tmp_path / "model.zarr"
    code, output = run_script(data, out, tmp_path, slurm.env)
    assert code == 0, output
    assert re.search(r"^scheduler tls://127\.0\.0\.1:\d+; waiting", output, re.M), output
    assert re.search(r"^fit: .* 6 chunks, scheduler tls://127\.0\.0\.1:", output, re.M), output
    assert [int(n) for n in ITERATION_LINE.findall(output)] == list(range(1, MAX_ITER + 1))
    assert_same_model(DiagGMM.load(out), local_model)
    # both jobs ran a worker that joined the scheduler over TLS
    logs = sorted((tmp_path / "logs").glob("diaggmm-worker-*.err"))
    assert len(logs) == 2, logs
    for log in logs:
        assert re.search(r"Registered to:\s+tls://127\.0\.0\.1:", log.read_text()), log
    assert not list(tmp_path.glob(".diaggmm-tls-*")), "the run's credentials outlived it"
    assert not slurm.jobs_left("diaggmm-worker"), "worker jobs outlived the run"


def test_a_worker_job_cancelled_mid_fit_is_survived(slurm, data, local_model, tmp_path):
    from distributed import Client, Security

    out = tmp_path / "model.zarr"
    arguments = script_arguments(data, out, tmp_path, "--checkpoint", str(tmp_path / "ckpt"))
    live = Live([sys.executable, str(SCRIPT), *arguments], slurm.env)
    try:
        live.wait_until(lambda: "waiting for workers" in live.output, "the scheduler")
        address = re.search(r"^scheduler (tls://\S+);", live.output, re.M).group(1)
        # The user's own client of the run, with the run's credentials (the same user).
        (credentials,) = tmp_path.glob(".diaggmm-tls-*")
        security = Security(
            require_encryption=True,
            tls_ca_file=str(credentials / "ca.pem"),
            tls_client_cert=str(credentials / "cert.pem"),
            tls_client_key=str(credentials / "key.pem"),
        )
        with Client(address, security=security, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
            jobs = client.run(os.getenv, "SLURM_JOB_ID")  # worker address -> job id
            live.wait_until(lambda: ITERATION_LINE.search(live.output), "an iteration line")

            # The next pass is under way: cancel the job of a worker running chunk tasks of it
            # (their keys are (name, row block, column block) tuples).
            busy = []
            live.wait_until(
                lambda: (
                    busy.extend(
                        worker
                        for worker, keys in client.processing().items()
                        if worker in jobs and any(isinstance(key, tuple) for key in keys)
                    )
                    or busy
                ),
                "a worker running chunk tasks",
            )
            victim = busy[0]
            slurm.run("scancel", jobs[victim])
            done_at_cancel = len(ITERATION_LINE.findall(live.output))
            # The scheduler loses the worker (asked directly: ncores) while the fit goes on.
            live.wait_until(lambda: victim not in client.ncores(), "the worker to leave")
            done_at_loss = len(ITERATION_LINE.findall(live.output))
            assert "done:" not in live.output, "the fit ended before the worker left"
            assert set(jobs) - {victim} <= set(client.ncores()), "the other worker left too"
        code = live.wait()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
            live.wait()
    assert code == 0, live.output
    assert done_at_cancel <= done_at_loss < MAX_ITER
    assert [int(n) for n in ITERATION_LINE.findall(live.output)] == list(range(1, MAX_ITER + 1))
    state = slurm.run("scontrol", "show", "job", jobs[victim]).stdout
    assert "JobState=CANCELLED" in state, state
    assert_same_model(DiagGMM.load(out), local_model)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--credentials-directory", "/nonexistent"], "is not a directory"),
        (["--jobs", "1", "--processes", "1", "--min-workers", "2"], "can never connect"),
    ],
)
def test_bad_arguments_are_refused_before_any_job(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script().arguments(["data", "--k", "2", "--out", "model", *extra])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
