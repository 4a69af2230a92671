"""A real one-node SLURM cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd.

``slurm`` (session scope) starts Debian's ``slurm-wlm`` daemons (``make test-slurm`` installs
them: packages ``slurmctld slurmd slurm-client munge``) with their own munge key, sockets,
ports, state, spool and logs under a new temporary directory, from the configuration template
``deploy/slurm/local/slurm.conf.in``; it waits until ``sinfo`` shows the node idle, and at the
end cancels every job and stops the three daemons it started. Nothing of the system's SLURM or
munge (``/etc/slurm``, ``/etc/munge``, ``/run/munge``) is read or changed.

The tests are skipped, with the reason, when the machine cannot run it (not root, packages not
installed, a daemon that does not start: the reason holds its log). With
``DIAGGMM_SLURM_REQUIRED=1`` in the environment (``make test-slurm`` sets it) they fail instead.

Import the fixture into a test module (``from slurm_harness import slurm``). To try
deploy/slurm/jobqueue_cluster.py on one machine, ``python tests/slurm_harness.py`` (as root)
starts the same cluster until Ctrl-C and prints the ``SLURM_CONF`` to export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "slurm" / "local" / "slurm.conf.in"
#: Debian packages with the daemons and commands used here.
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PARTITION = "debug"
#: Seconds for the node to become idle after the daemons start.
START_TIMEOUT = 60


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the local SLURM cluster; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"{path.name}: (no log)"
    return f"{path.name}:\n" + "\n".join(text)


def _memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return total_kb // 1024


class LocalSlurm:
    """munged, slurmctld and slurmd for one node, everything under ``root``.

    Parameters
    ----------
    root : Path
        An empty directory; it must be reachable (``x``) by every user, as munged requires of
        the directory of its socket.
    cpus : int, default=2
        CPUs of the node (jobs of one CPU each run side by side).
    memory_mb : int, default=2048
        RealMemory of the node, capped at the machine's.
    """

    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 2048):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.logs = self.root / "log"
        self.munge_socket = self.root / "munge-socket" / "munge.socket"
        self.cpus, self.memory_mb = cpus, min(memory_mb, _memory_mb() // 2)
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with SLURM_CONF pointing at this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM command (``squeue``, ``scancel``, ...) against this cluster."""
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, check=check, timeout=30
        )

    def log_excerpt(self) -> str:
        names = ("munged.stdout", "slurmctld.log", "slurmd.log")  # munged -F logs to stderr
        return "\n".join(_tail(self.logs / name) for name in names)

    def start(self) -> None:
        """Start the three daemons and wait for the node to be idle; :class:`SlurmUnavailable`
        (with the logs) if that fails.
        """
        for folder, mode in (("munge", 0o700), ("munge-socket", 0o755), ("state", 0o700)):
            (self.root / folder).mkdir(mode=mode)
        for folder in ("spool", "log"):
            (self.root / folder).mkdir()
        key = self.root / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, timeout=30)
        self._start(
            "munged",
            [
                "munged",
                "--foreground",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
        )
        self._wait(self.munge_socket.exists, "munged to create its socket")
        self.conf.write_text(
            string.Template(TEMPLATE.read_text()).substitute(
                host=self.host,
                root=self.root,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                munge_socket=self.munge_socket,
                cpus=self.cpus,
                memory_mb=self.memory_mb,
                partition=PARTITION,
            )
        )
        # -D: in the foreground, so that the process started here is the daemon itself.
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.host])
        self._wait(lambda: self.node_state() == "idle", "the node to be idle in sinfo")

    def node_state(self) -> str:
        result = self.run("sinfo", "--noheader", "--Node", "--format=%t", check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    def job_ids(self, name: str | None = None) -> list[str]:
        """Ids of this cluster's jobs still queued or running (named ``name``, if given)."""
        command = ["squeue", "--noheader", "--format=%i"]
        command += [f"--name={name}"] if name else []
        return self.run(*command).stdout.split()

    def jobs_left(self, name: str | None = None, timeout: float = 30) -> list[str]:
        """Ids of the jobs (named ``name``) still there after waiting up to ``timeout`` s for
        them to end (a cancelled job stays in the queue while it completes).
        """
        deadline = time.monotonic() + timeout
        while (left := self.job_ids(name)) and time.monotonic() < deadline:
            time.sleep(0.25)
        return left

    def stop(self) -> None:
        """Cancel every job, wait for them to end, then stop the daemons started here."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", f"--partition={PARTITION}", check=False)
            with contextlib.suppress(subprocess.SubprocessError):
                self.jobs_left()
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def _start(self, name: str, command: list[str]) -> None:
        out = open(self.logs / f"{name}.stdout", "wb")
        with out:
            self.processes[name] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait(self, done, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            exited = [n for n, p in self.processes.items() if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                why = f"{', '.join(exited)} exited" if exited else f"{timeout:.0f} s passed"
                stdout = "\n".join(_tail(self.logs / f"{n}.stdout", 5) for n in exited)
                raise SlurmUnavailable(
                    f"waiting for {what}: {why}.\n{self.log_excerpt()}\n{stdout}".rstrip()
                )
            time.sleep(0.25)


def why_unavailable() -> str | None:
    """Why SLURM cannot be started here, before trying; None when it may."""
    if os.geteuid() != 0:
        return "the local SLURM cluster runs its daemons as root; run the tests as root"
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed: `make test-slurm` (as root) installs the "
            f"Debian packages {' '.join(PACKAGES)}"
        )
    return None


def _unavailable(reason: str):
    if os.environ.get("DIAGGMM_SLURM_REQUIRED") == "1":
        pytest.fail(f"SLURM is required (DIAGGMM_SLURM_REQUIRED=1) but cannot run: {reason}")
    pytest.skip(f"no local SLURM cluster: {reason}")


@pytest.fixture(scope="session")
def slurm():
    """A running :class:`LocalSlurm`, its node idle; ``SLURM_CONF`` is set in ``os.environ``
    for the session (dask-jobqueue calls ``sbatch`` and ``scancel`` from this process).
    """
    reason = why_unavailable()
    if reason:
        _unavailable(reason)
    # Not under pytest's basetemp: its parents are private (0700), and munged refuses a
    # socket whose directory not everyone can reach.
    root = Path(tempfile.mkdtemp(prefix="diaggmm-slurm-"))
    root.chmod(0o755)
    cluster = LocalSlurm(root)
    previous = os.environ.get("SLURM_CONF")
    try:
        try:
            cluster.start()
        except (SlurmUnavailable, subprocess.SubprocessError, OSError) as err:
            _unavailable(str(err))
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    """Start the one-node cluster until Ctrl-C: to try deploy/slurm/jobqueue_cluster.py here."""
    reason = why_unavailable()
    if reason:
        raise SystemExit(reason)
    root = Path(tempfile.mkdtemp(prefix="diaggmm-slurm-"))
    root.chmod(0o755)
    cluster = LocalSlurm(root)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    try:
        cluster.start()
        print(f"SLURM is up (node {cluster.host}, partition {PARTITION}); in another shell:")
        print(f"    export SLURM_CONF={cluster.conf}")
        print("Ctrl-C cancels every job and stops it.", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
