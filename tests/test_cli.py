"""The ``diaggmm`` console script, run as a real subprocess against real clusters and stores.

No mocks: every command is the installed console script in its own process session (so
the LocalCluster it may start can be killed with it), on Zarr stores under tmp_path, on a
LocalCluster or on the ``dask scheduler`` / ``dask worker`` cluster of ``cli_cluster``.
"""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from diaggmm_dist import DiagGMM
from diaggmm_dist.cli import build_parser, main
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr

DIAGGMM = Path(sys.executable).parent / "diaggmm"
ITERATION_LINE = re.compile(r"^iteration\s+(\d+)\s+lower bound", re.M)
# A line of one of several models fitted side by side: the model named after the iteration.
MODEL_ITERATION_LINE = re.compile(
    r"^iteration\s+(\d+)\s+(K=\d+|init \d+/\d+)\s+lower bound (-?\d+\.\d+)", re.M
)

pytestmark = pytest.mark.timeout(420)

# Small data for the LocalCluster fits: overlapping components, so EM keeps moving for
# all its iterations and a skipped or repeated iteration would change the model.
SMALL_ROWS, SMALL_K = 120_000, 4
SMALL_FIT = [
    "--k",
    str(SMALL_K),
    "--tol",
    "0",
    "--max-iter",
    "20",
    "--seed",
    "7",
    "--dtype",
    "float64",
    "--chunk-size",
    "6000",
]
# Data for the killed-worker fit: 50 chunks and about a second per EM iteration on 2 workers.
BIG_FIT = [
    "--k",
    "8",
    "--tol",
    "0",
    "--max-iter",
    "8",
    "--seed",
    "3",
    "--dtype",
    "float64",
    "--chunk-size",
    "8000",
    "--init",
    "k-means++",
]


# ----------------------------------------------------------------------------- helpers
def cli_env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DASK_SCHEDULER_ADDRESS", None)  # no command here may silently pick another cluster
    return env


def kill_group(proc):
    """SIGKILL the process group of ``proc`` (the CLI and any LocalCluster it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
        pass


def start_cli(*args):
    assert DIAGGMM.exists(), (
        f"{DIAGGMM} is missing: run `.venv/bin/pip install -e .` to install the console script"
    )
    return subprocess.Popen(
        [str(DIAGGMM), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )


def finish(proc, timeout):
    """Output of ``proc`` once it ends (bounded); its whole process group is killed after."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args, timeout=240):
    return finish(start_cli(*args), timeout)


def iterations(stdout):
    return [int(n) for n in ITERATION_LINE.findall(stdout)]


def model_iterations(stdout):
    """``(iteration, model)`` of every line of models fitted side by side, in order."""
    return [(int(n), model) for n, model, _ in MODEL_ITERATION_LINE.findall(stdout)]


def printed_bounds(stdout, model):
    """The lower bounds printed for one of the models fitted side by side."""
    return [
        float(bound) for _, name, bound in MODEL_ITERATION_LINE.findall(stdout) if name == model
    ]


def assert_ok(result):
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def assert_one_line_error(result, code, *fragments):
    """Exit ``code``, stderr exactly one ``diaggmm: error: ...`` line holding every fragment."""
    details = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == code, details
    assert "Traceback" not in result.stderr, details
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diaggmm: error: "), details
    for fragment in fragments:
        assert fragment in lines[0], details


def assert_same_model(got, expected):
    for name in ("weights_", "means_", "covariances_"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.n_iter_ == expected.n_iter_
    assert got.lower_bounds_ == expected.lower_bounds_


class LiveCLI:
    """A running CLI whose stdout and stderr lines are collected as they come."""

    def __init__(self, *args):
        self.proc = start_cli(*args)
        self.out, self.err = [], []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, sink):
        for line in stream:
            sink.append(line)

    @property
    def stdout(self):
        return "".join(self.out)

    @property
    def stderr(self):
        return "".join(self.err)

    def wait_until(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the CLI ended (exit {self.proc.returncode}) before {what}:\n"
                    f"{self.stdout}\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.stdout}\n{self.stderr}")
            time.sleep(0.02)

    def wait(self, timeout):
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        return code

    def kill(self):
        kill_group(self.proc)
        for reader in self.readers:
            reader.join(timeout=10)


def checkpoint_step(url):
    """The step number the checkpoint's ``latest`` pointer names (-1 while there is none)."""
    try:
        latest = zarr.open_group(str(url), mode="r").attrs.get("latest")
    except Exception:  # not created yet, or being rewritten this instant
        return -1
    return int(latest.rsplit("-", 1)[1]) if latest else -1


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cli_address(cli_cluster):
    """tcp:// address of the cluster started with ``dask scheduler`` / ``dask worker``."""
    with open(cli_cluster) as f:
        return json.load(f)["address"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-small")
    params = mixture_parameters(SMALL_K, 6, seed=3, spread=1.5)
    write_mixture_zarr(
        folder / "small.zarr", SMALL_ROWS, *params, chunk_rows=6000, seed=3, dtype="float64"
    )
    return str(folder / "small.zarr" / "X")


@pytest.fixture(scope="module")
def big_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-big")
    params = mixture_parameters(8, 16, seed=5, spread=1.5)
    write_mixture_zarr(
        folder / "big.zarr", 400_000, *params, chunk_rows=8000, seed=5, dtype="float64"
    )
    return str(folder / "big.zarr" / "X")


@pytest.fixture(scope="module")
def reference_fit(small_data, tmp_path_factory):
    """An uninterrupted ``diaggmm fit`` on a LocalCluster: its result and model path."""
    folder = tmp_path_factory.mktemp("cli-reference")
    model = folder / "model.zarr"
    result = run_cli(
        "fit", small_data, *SMALL_FIT, "--out", model, "--checkpoint", folder / "ckpt.zarr"
    )
    assert_ok(result)
    return result, model


# ------------------------------------------------------------------- 1. fit, info, predict
def test_fit_info_predict(reference_fit, small_data, cli_address, tmp_path, capsys):
    result, model_path = reference_fit
    assert iterations(result.stdout) == list(range(1, 21))
    assert re.search(r"^done: K=4, 20 iterations .* model saved to ", result.stdout, re.M), (
        result.stdout
    )
    model = DiagGMM.load(model_path)
    assert model.n_components == SMALL_K and model.n_features_in_ == 6 and model.n_iter_ == 20
    assert model.dtype == "float64" and model.random_state == 7
    printed = [float(v) for v in re.findall(r"lower bound (-?\d+\.\d+)", result.stdout)[:20]]
    np.testing.assert_allclose(printed, model.lower_bounds_, rtol=1e-8)

    info = run_cli("info", model_path, timeout=120)
    assert_ok(info)
    assert re.search(r"^components \(K\)\s+4$", info.stdout, re.M), info.stdout
    assert re.search(r"^features \(D\)\s+6$", info.stdout, re.M), info.stdout
    assert re.search(r"^iterations\s+20$", info.stdout, re.M), info.stdout
    assert (
        main(["info", str(model_path), "--json"]) == 0
    )  # in-process: the same code, no interpreter start
    described = json.loads(capsys.readouterr().out)
    assert (
        described["n_components"] == 4
        and described["n_features"] == 6
        and described["dtype"] == "float64"
    )
    assert described["n_iter"] == 20 and described["converged"] is False
    assert described["lower_bound"] == model.lower_bound_
    assert described["weights"] == model.weights_.tolist()
    assert described["data_fingerprint"]["shape"] == [SMALL_ROWS, 6]

    scores = tmp_path / "scores.zarr"
    predicted = run_cli(
        "predict", model_path, small_data, "--out", scores, "--scheduler", cli_address
    )
    assert_ok(predicted)
    group = zarr.open_group(str(scores), mode="r")
    labels = group["labels"][...]
    assert labels.shape == (SMALL_ROWS,) and labels.dtype == np.int16
    assert group["max_resp"].dtype == np.float32 and group["log_likelihood"].dtype == np.float64
    X = zarr.open_array(small_data, mode="r")[...]
    np.testing.assert_array_equal(labels, model.predict(X))
    counts = np.bincount(labels, minlength=SMALL_K)
    assert f"rows per component [{', '.join(str(c) for c in counts)}]" in predicted.stdout

    assert (
        main(["predict", str(model_path), small_data, "--out", str(scores)]) == 2
    )  # refused before any work
    error = capsys.readouterr().err.strip()
    assert error.startswith("diaggmm: error: ") and "already exists" in error and "\n" not in error


def test_fit_with_split_initialization(small_data, cli_address, tmp_path):
    model = tmp_path / "split.zarr"
    settings = [
        "--k",
        str(SMALL_K),
        "--tol",
        "0",
        "--max-iter",
        "3",
        "--dtype",
        "float64",
        "--chunk-size",
        "6000",
    ]
    result = run_cli(
        "fit", small_data, *settings, "--init", "split", "--out", model, "--scheduler", cli_address
    )
    assert_ok(result)
    saved = DiagGMM.load(model)
    assert saved.init_params == "split" and saved.n_iter_ == 3
    expected = DiagGMM(SMALL_K, init_params="split", tol=0, max_iter=3, chunk_size=6000).fit(
        small_data
    )
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(saved, name), getattr(expected, name), rtol=1e-10, err_msg=name
        )


# ----------------------------------------------------- 2. a dask worker killed mid-iteration
def test_fit_survives_a_killed_worker(cli_cluster, cli_address, big_data, tmp_path):
    from distributed import Client

    command = ["fit", big_data, *BIG_FIT, "--scheduler", cli_address]
    reference = run_cli(*command, "--out", tmp_path / "reference.zarr")
    assert_ok(reference)
    assert iterations(reference.stdout) == list(range(1, 9))

    with Client(cli_address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=120)
        pids = client.run(os.getpid)  # worker address -> pid
        live = LiveCLI(*command, "--out", tmp_path / "interrupted.zarr")
        try:
            live.wait_until(lambda: len(iterations(live.stdout)) >= 2, 180, "two iteration lines")
            # The next pass is under way: kill a worker while it runs chunk tasks of it (their
            # keys are (name, row block, column block) tuples).
            deadline = time.monotonic() + 60
            victim = None
            while victim is None:
                busy = [
                    address
                    for address, keys in client.processing().items()
                    if address in pids and any(isinstance(key, tuple) for key in keys)
                ]
                victim = busy[0] if busy else None
                assert time.monotonic() < deadline, "no worker was ever busy"
            os.kill(pids[victim], signal.SIGKILL)
            done_at_kill = len(iterations(live.stdout))
            code = live.wait(timeout=240)
        finally:
            live.kill()
            client.wait_for_workers(
                2, timeout=120
            )  # the nanny restarts it; leave the cluster whole
        assert pids[victim] not in client.run(os.getpid).values(), "the worker was not replaced"

    assert code == 0, f"{live.stdout}\n{live.stderr}"
    assert done_at_kill < 8, "the fit ended before the worker was killed"
    assert iterations(live.stdout) == list(range(1, 9))
    assert "Traceback" not in live.stderr
    assert_same_model(
        DiagGMM.load(tmp_path / "interrupted.zarr"), DiagGMM.load(tmp_path / "reference.zarr")
    )


# ------------------------------------------------------- 3. the CLI killed, then resumed
def test_killed_fit_resumes_from_checkpoint(reference_fit, small_data, tmp_path):
    _, reference_model = reference_fit
    checkpoint, model = tmp_path / "ckpt.zarr", tmp_path / "model.zarr"
    command = ["fit", small_data, *SMALL_FIT, "--out", model, "--checkpoint", checkpoint]

    live = LiveCLI(*command)
    try:
        live.wait_until(lambda: checkpoint_step(checkpoint) >= 3, 180, "checkpoint step 3")
        os.killpg(live.proc.pid, signal.SIGKILL)  # the CLI and its LocalCluster, at once
        assert live.wait(timeout=60) == -signal.SIGKILL
    finally:
        live.kill()
    done_before = iterations(live.stdout)
    assert len(done_before) < 20 and not model.exists()

    resumed = run_cli(*command)
    assert_ok(resumed)
    ran = iterations(resumed.stdout)
    assert ran and ran[0] > 1 and ran == list(range(ran[0], 21)), resumed.stdout
    assert ran[0] - 1 >= 2  # checkpoint step 3 is the state after iteration 2
    assert f"resumed from the checkpoint after iteration {ran[0] - 1}" in resumed.stdout
    assert re.search(
        rf"^done: K=4, 20 iterations \({len(ran)} in this run, resumed after", resumed.stdout, re.M
    )
    assert_same_model(DiagGMM.load(model), DiagGMM.load(reference_model))


# ---------------------------------------------------------------------- 4. bad input
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bad_runs(small_data, tmp_path_factory):
    """Every bad-input command, started at once (each is mostly interpreter start-up)."""
    folder = tmp_path_factory.mktemp("cli-bad")
    (folder / "empty").mkdir()
    zarr.open_group(str(folder / "taken.zarr"), mode="w")
    (folder / "notes").mkdir()
    (folder / "notes" / "keep.txt").write_text("not a checkpoint")
    commands = {
        "missing data": ["fit", folder / "missing.zarr", "--k", "2", "--out", folder / "m1.zarr"],
        "info on a Zarr array": ["info", small_data],
        "info on an empty directory": ["info", folder / "empty"],
        "predict with a Zarr array as model": [
            "predict",
            small_data,
            small_data,
            "--out",
            folder / "s1.zarr",
        ],
        "predict with an empty directory as model": [
            "predict",
            folder / "empty",
            small_data,
            "--out",
            folder / "s2.zarr",
        ],
        "k larger than rows": [
            "fit",
            small_data,
            "--k",
            str(SMALL_ROWS + 1),
            "--out",
            folder / "m2.zarr",
        ],
        "existing output": ["fit", small_data, "--k", "2", "--out", folder / "taken.zarr"],
        "checkpoint on a plain directory": [
            "fit",
            small_data,
            "--k",
            "2",
            "--out",
            folder / "m4.zarr",
            "--checkpoint",
            folder / "notes",
        ],
        "unreachable scheduler": [
            "fit",
            small_data,
            "--k",
            "2",
            "--out",
            folder / "m3.zarr",
            "--scheduler",
            f"tcp://127.0.0.1:{_free_port()}",
        ],
        "several k with restarts": [
            "fit",
            small_data,
            "--k",
            "2,4",
            "--out",
            folder / "m6.zarr",
            "--n-init",
            "3",
        ],
        "debug": ["--debug", "info", folder / "empty"],
    }
    started = {name: (start_cli(*args), time.monotonic()) for name, args in commands.items()}
    results = {}
    try:
        for name, (proc, t0) in started.items():
            results[name] = finish(proc, timeout=max(1.0, 60 - (time.monotonic() - t0)))
    finally:
        for proc, _ in started.values():
            kill_group(proc)
    return results, folder


def test_fit_chooses_k_among_candidates_in_the_same_passes(small_data, tmp_path):
    out, checkpoint = tmp_path / "chosen.zarr", tmp_path / "chosen.checkpoint"
    command = (
        "fit",
        small_data,
        "--k",
        "1,2,4,6",
        "--max-iter",
        "30",
        "--seed",
        "1",
        "--chunk-size",
        "30000",
        "--out",
        out,
        "--checkpoint",
        checkpoint,
    )
    result = run_cli(*command)
    assert_ok(result)
    assert "| K | lower bound" in result.stdout
    chosen = DiagGMM.load(out)
    assert f"chose K={chosen.n_components} of 1, 2, 4, 6 by bic" in result.stdout
    assert chosen.n_components == SMALL_K  # the data's own number of components
    # the same command again takes every candidate from the finished checkpoint: no iteration runs
    again = run_cli(*command, "--overwrite")
    assert_ok(again)
    assert model_iterations(result.stdout) and not model_iterations(again.stdout)

    def table(stdout):
        return stdout[stdout.index("| K |") : stdout.index("done:")]

    assert table(again.stdout) == table(result.stdout)
    np.testing.assert_array_equal(DiagGMM.load(out).means_, chosen.means_)


def test_models_side_by_side_are_named_on_every_line(small_data, tmp_path):
    """Candidates of --k and restarts of --n-init share each pass: one line per model and pass,
    named.
    """
    settings = ("--tol", "0", "--max-iter", "3", "--seed", "1", "--chunk-size", "30000")
    candidates = run_cli("fit", small_data, "--k", "2,3", *settings, "--out", tmp_path / "k.zarr")
    restarts = run_cli(
        "fit", small_data, "--k", "4", "--n-init", "2", *settings, "--out", tmp_path / "n.zarr"
    )
    for result in (candidates, restarts):
        assert_ok(result)
        # the models are interleaved, not one after the other: no "next initialization" between them
        assert "next initialization" not in result.stdout and not iterations(result.stdout), (
            result.stdout
        )

    assert model_iterations(candidates.stdout) == [
        (i, f"K={k}") for i in (1, 2, 3) for k in (2, 3)
    ], candidates.stdout
    assert "K=2,3," in candidates.stdout.splitlines()[0]
    chosen = DiagGMM.load(tmp_path / "k.zarr")
    np.testing.assert_allclose(
        printed_bounds(candidates.stdout, f"K={chosen.n_components}"),
        chosen.lower_bounds_,
        rtol=1e-8,
    )

    assert model_iterations(restarts.stdout) == [
        (i, f"init {r}/2") for i in (1, 2, 3) for r in (1, 2)
    ], restarts.stdout
    done = re.search(
        r"^done: K=4, 3 iterations \(3 in this run\), .*, kept (init \d/2), ", restarts.stdout, re.M
    )
    assert done, restarts.stdout
    kept = DiagGMM.load(tmp_path / "n.zarr")
    np.testing.assert_allclose(
        printed_bounds(restarts.stdout, done[1]), kept.lower_bounds_, rtol=1e-8
    )


@pytest.mark.parametrize(
    "case, code, fragments",
    [
        ("missing data", 2, ["No Zarr array found", "missing.zarr"]),
        ("info on a Zarr array", 2, ["is a Zarr array, not a diaggmm-dist model"]),
        ("info on an empty directory", 2, ["No model found", "empty"]),
        ("predict with a Zarr array as model", 2, ["is a Zarr array, not a diaggmm-dist model"]),
        ("predict with an empty directory as model", 2, ["No model found"]),
        (
            "k larger than rows",
            2,
            [f"--k {SMALL_ROWS + 1} is larger than the number of rows", str(SMALL_ROWS)],
        ),
        ("existing output", 2, ["already exists", "--overwrite"]),
        (
            "checkpoint on a plain directory",
            2,
            ["exists and is not a checkpoint", "refusing to replace it"],
        ),
        ("unreachable scheduler", 1, ["No dask scheduler answered at 'tcp://127.0.0.1:"]),
        ("several k with restarts", 2, ["--n-init must be 1 with several --k"]),
    ],
)
def test_bad_input_is_one_line_error(bad_runs, case, code, fragments):
    results, folder = bad_runs
    assert_one_line_error(
        results[case], code, *fragments
    )  # ended within the 60 s bound of `finish`
    assert not any(folder.glob("m*.zarr")) and not any(folder.glob("s*.zarr"))
    assert (folder / "notes" / "keep.txt").read_text() == "not a checkpoint"


def test_debug_shows_the_traceback(bad_runs):
    results, _ = bad_runs
    result = results["debug"]
    assert result.returncode == 2
    assert (
        "Traceback (most recent call last)" in result.stderr
        and "FileNotFoundError" in result.stderr
    )
    assert result.stderr.strip().splitlines()[-1].startswith("diaggmm: error: No model found")


def test_usage_errors_and_parser(capsys):
    parser = build_parser()
    args = parser.parse_args(["fit", "data.zarr/X", "--k", "3", "--out", "m.zarr"])
    assert (args.command, args.data, args.k, args.out, args.checkpoint, args.scheduler) == (
        "fit",
        "data.zarr/X",
        [3],
        "m.zarr",
        None,
        None,
    )
    assert parser.parse_args(["fit", "d", "--k", "2,4,8", "--out", "m"]).k == [2, 4, 8]
    assert (
        args.init,
        args.tol,
        args.max_iter,
        args.dtype,
        args.seed,
        args.n_init,
        args.overwrite,
        args.debug,
    ) == ("kmeans", 1e-3, 100, "float64", 0, 1, False, False)
    assert (
        parser.parse_args(["fit", "d", "--k", "2", "--out", "m", "--init", "split"]).init == "split"
    )
    assert parser.parse_args(["info", "m.zarr", "--debug"]).debug is True
    assert parser.parse_args(["--debug", "info", "m.zarr"]).debug is True
    for argv in (
        ["fit", "d", "--k", "0", "--out", "m"],
        ["fit", "d", "--out", "m"],
        ["fit", "d", "--k", "2,x", "--out", "m"],
        ["fit", "d", "--k", "2,2", "--out", "m"],
        ["fit", "d", "--k", "2,0", "--out", "m"],
        ["fit", "d", "--k", "2", "--out", "m", "--dtype", "float16"],
        ["frobnicate"],
        [],
    ):
        assert main(argv) == 2
        assert "error:" in capsys.readouterr().err
    assert main(["info", "--help"]) == 0


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so the command shows its bar there."""

    def isatty(self):
        return True


def test_progress_bar_and_iteration_lines_share_the_terminal(monkeypatch):
    import logging

    import dask.array as da

    from diaggmm_dist.cli import console as console_module
    from diaggmm_dist.cli.console import Console, PassBar, library_output
    from diaggmm_dist.engine.progress import announce_rows, pass_started

    monkeypatch.setattr(console_module, "BAR_INTERVAL", 0)  # every chunk redraws the bar
    out, err = io.StringIO(), Terminal()
    console = Console(out, err)
    with library_output(console, quiet=False) as printer, PassBar(console, 4):
        announce_rows(da.zeros((4000, 2), chunks=(1000, 2)))  # the engine's pass hook: 4 chunks
        tracker = pass_started()
        tracker.done(0)
        tracker.done(1)
        mid_pass = err.getvalue()
        logging.getLogger("diaggmm_dist").info(
            "iteration", extra={"iteration": 3, "lower_bound": -1.5, "change": 0.25, "seconds": 0.5}
        )
        tracker.done(2)
        after_line = err.getvalue()[len(mid_pass) :]
    assert out.getvalue() == (
        "resumed from the checkpoint after iteration 2\n"
        "iteration    3  lower bound -1.50000000  delta +2.500e-01  0.50 s\n"
    )
    # mid-pass: iterations done, chunks and rows of the pass, their rate and the ETA
    assert re.search(r"EM 0/4 \| chunks 2/4 \|.*\| 2\.00k/4\.00k rows, .*rows/s, ETA ", mid_pass)
    last = after_line.rstrip(" \r").rsplit("\r", 1)[-1]
    assert last.startswith("EM 3/4 | chunks 3/4 |"), after_line
    assert last.endswith("lower bound -1.500000 delta +2.500e-01"), after_line
    assert err.getvalue().endswith("\r")  # the bar is cleared at the end (leave=False)
    assert printer.iterations_run == {0: 1} and printer.first_iteration == 3


def test_the_bar_advances_within_the_passes_of_a_fit(tmp_path, monkeypatch, capsys):
    """``diaggmm fit`` on a terminal: the bar shows chunks done mid-pass; the lines on stdout
    stay whole; with --quiet, or off a terminal, there is no bar."""
    from diaggmm_dist.cli import console as console_module

    X = np.random.default_rng(1).normal(size=(8000, 3))
    zarr.create_array(tmp_path / "X.zarr", shape=X.shape, chunks=(1000, 3), dtype="f8")[...] = X
    monkeypatch.setattr(console_module, "BAR_INTERVAL", 0)
    fit = ["fit", str(tmp_path / "X.zarr"), "--k", "2", "--max-iter", "3", "--chunk-size", "1000"]
    for quiet in ([], ["--quiet"]):
        err = Terminal()
        monkeypatch.setattr(sys, "stderr", err)
        code = main([*fit, *quiet, "--out", str(tmp_path / f"m{len(quiet)}.zarr")])
        out = capsys.readouterr().out
        assert code == 0, err.getvalue()
        if quiet:
            assert "chunks" not in err.getvalue() and "\r" not in err.getvalue()
            continue
        shown = re.findall(r"chunks (\d+)/(\d+) \|.*?(\d+\.\d+k?) rows/s", err.getvalue())
        assert {total for _, total, _ in shown} == {"8"}, err.getvalue()
        assert any(0 < int(done) < 8 for done, _, _ in shown), err.getvalue()
        assert "EM 3/3 |" in err.getvalue()
        assert "\r" not in out and iterations(out) == [1, 2, 3]
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar
    assert main([*fit, "--out", str(tmp_path / "m2.zarr")]) == 0
    assert "chunks" not in sys.stderr.getvalue()


@pytest.mark.parametrize("quiet", [False, True])
def test_side_by_side_records_become_named_lines(quiet):
    import io
    import logging

    from diaggmm_dist.cli.console import Console, library_output, model_labels

    out, err = io.StringIO(), io.StringIO()
    labels = model_labels([2, 16], 1)
    with library_output(Console(out, err), quiet=quiet, labels=labels) as printer:
        for iteration, restarts in (
            (4, (0, 1)),
            (5, (1,)),
        ):  # resumed after iteration 3; K=2 then stops
            for restart in restarts:
                logging.getLogger("diaggmm_dist").info(
                    "iteration",
                    extra={
                        "iteration": iteration,
                        "restart": restart,
                        "lower_bound": -1.5,
                        "change": 0.25,
                        "seconds": 0.5,
                        "converged": (iteration, restart) == (4, 0),
                    },
                )
    expected = (
        "resumed from the checkpoint after iteration 3\n"
        "iteration    4  K=2   lower bound -1.50000000  delta +2.500e-01  0.50 s  converged\n"
        "iteration    4  K=16  lower bound -1.50000000  delta +2.500e-01  0.50 s\n"
        "iteration    5  K=16  lower bound -1.50000000  delta +2.500e-01  0.50 s\n"
    )
    assert out.getvalue() == ("" if quiet else expected) and err.getvalue() == ""
    assert printer.iterations_run == {0: 1, 1: 2} and printer.first_iteration == 4
    assert (
        model_labels([4], 3) == {0: "init 1/3", 1: "init 2/3", 2: "init 3/3"}
        and model_labels([4], 1) is None
    )
