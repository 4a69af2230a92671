"""``diaggmm`` refuses outputs it cannot or must not write before any work, and reports an error
raised on a dask worker in one line.

Every command is the installed console script in its own process (tests/test_cli.py's helpers),
on real Zarr stores under tmp_path, on a LocalCluster it starts itself or none. The tests run
as root, whom permission bits do not stop, so the unwritable places are ones that refuse root
too: a path under a regular file (NotADirectory), ``/proc`` (procfs creates no files: ENOENT)
and ``/sys`` (sysfs: EACCES).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from test_cli import _free_port, assert_one_line_error, finish, kill_group, start_cli

from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr

pytestmark = pytest.mark.timeout(420)

K, ROWS, CHUNK_ROWS = 3, 12_000, 1000
#: The chunk (along the rows) that is garbled: neither the first nor the last.
BAD_CHUNK = 5
LINUX = sys.platform.startswith("linux")


def garble(path):
    """Overwrite the chunk file at ``path`` with random bytes of the same length."""
    size = max(64, len(path.read_bytes()))
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def run_all(commands, timeout=120):
    """Run the commands at once (each is mostly interpreter start-up); their results by name."""
    started = {name: start_cli(*args) for name, args in commands.items()}
    try:
        return {name: finish(proc, timeout) for name, proc in started.items()}
    finally:
        for proc in started.values():
            kill_group(proc)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A clean store, a copy with chunk ``BAD_CHUNK`` garbled, a model fitted to the clean one, a
    file.
    """
    root = tmp_path_factory.mktemp("cli-errors")
    params = mixture_parameters(K, 4, seed=0, spread=1.5)
    for name in ("clean.zarr", "corrupt.zarr"):
        write_mixture_zarr(
            root / name, ROWS, *params, chunk_rows=CHUNK_ROWS, seed=1, dtype="float64"
        )
    garble(root / "corrupt.zarr" / "X" / "c" / str(BAD_CHUNK) / "0")
    model = root / "model.zarr"
    DiagGMM(K, max_iter=5, random_state=0).fit(str(root / "clean.zarr" / "X")).save(str(model))
    (root / "a-file").write_text("not a folder")
    return root


def without_load_warnings(result):
    """``result`` without distributed's "Event loop was unresponsive" lines: on a loaded machine a
    worker may say so at any time; it is about the machine, not about the failure reported."""
    kept = [
        line
        for line in result.stderr.splitlines(keepends=True)
        if "Event loop was unresponsive" not in line
    ]
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout, "".join(kept))


def snapshot(folder):
    """Every file under ``folder`` with its bytes: what a refused command must leave as it was."""
    return {path: path.read_bytes() for path in sorted(Path(folder).rglob("*")) if path.is_file()}


# ----------------------------------------------------------- 1. unwritable outputs, before any work
def unwritable_commands(root, scheduler):
    """Commands with a fault in an output and everywhere else: the data is missing (fit: opening it
    fails) or corrupt (predict), the model missing (loading it fails) and the scheduler unreachable
    (connecting fails), so the output's error comes first only if it is checked before all of
    that.
    """
    missing_data, missing_model = root / "no-data.zarr" / "X", root / "no-model.zarr"
    corrupt, under_file = root / "corrupt.zarr" / "X", root / "a-file" / "m.zarr"
    fit = ["fit", missing_data, "--k", str(K), "--scheduler", scheduler]
    predict = ["predict", missing_model, corrupt, "--scheduler", scheduler]
    cases = {
        "fit --out under a file": (
            fit + ["--out", under_file],
            [str(under_file), "is a file, not a folder"],
        ),
        "fit --out is a file": (
            fit + ["--out", root / "a-file"],
            ["a-file", "is a file, not a Zarr store"],
        ),
        "fit --checkpoint under a file": (
            fit + ["--out", root / "m.zarr", "--checkpoint", under_file],
            ["cannot write the checkpoint", str(under_file)],
        ),
        "fit --out with an unknown protocol": (
            fit + ["--out", "nosuchprotocol://bucket/m.zarr"],
            ["'nosuchprotocol://bucket/m.zarr'", "Protocol not known"],
        ),
        "predict --out under a file": (
            predict + ["--out", under_file],
            ["cannot write the scores", str(under_file)],
        ),
    }
    if LINUX:
        cases.update(
            {
                "fit --out in /proc": (
                    fit + ["--out", "/proc/m.zarr"],
                    ["'/proc/m.zarr'", "no file can be created in the folder '/proc'"],
                ),
                "fit --checkpoint in /sys": (
                    fit + ["--out", root / "m.zarr", "--checkpoint", "/sys/c.zarr"],
                    ["'/sys/c.zarr'", "no file can be created in the folder '/sys'"],
                ),
                "predict --out in /proc": (
                    predict + ["--out", "/proc/s.zarr"],
                    ["'/proc/s.zarr'", "/proc"],
                ),
            }
        )
    return cases


def test_unwritable_outputs_are_refused_before_any_work(stores):
    before = snapshot(stores)
    cases = unwritable_commands(stores, f"tcp://127.0.0.1:{_free_port()}")
    results = run_all({name: args for name, (args, _) in cases.items()})
    for name, (_, fragments) in cases.items():
        assert_one_line_error(results[name], 2, "cannot write the", *fragments)
        assert "No dask scheduler answered" not in results[name].stderr, name
    assert snapshot(stores) == before  # no probe file or partial store left behind
    assert not list(Path("/proc").glob(".diaggmm-write-test-*"))


# --------------------------------------------- 2. an output that is an input, even with --overwrite
def overlapping_commands(root, scheduler):
    model, data, group = root / "model.zarr", root / "clean.zarr" / "X", root / "clean.zarr"
    relative = os.path.relpath(model)
    predict = ["predict", model, data, "--overwrite", "--scheduler", scheduler, "--out"]
    fit = ["fit", data, "--k", str(K), "--overwrite", "--scheduler", scheduler, "--out"]
    (root / "link.zarr").unlink(missing_ok=True)
    (root / "link.zarr").symlink_to(model)
    return {
        "predict --out the model": (predict + [model], "is the model"),
        "predict --out the model, trailing slash": (predict + [f"{model}/"], "is the model"),
        "predict --out the model, relative": (predict + [relative], "is the model"),
        "predict --out the model as file://": (predict + [f"file://{model}"], "is the model"),
        "predict --out a link to the model": (predict + [root / "link.zarr"], "is the model"),
        "predict --out inside the model": (predict + [model / "scores"], "is inside the model"),
        "predict --out the data": (predict + [data], "is the data"),
        "predict --out the data's group": (predict + [group], "holds the data"),
        "fit --out the data's group": (fit + [group], "holds the data"),
        "fit --out the model, --checkpoint inside it": (
            fit + [root / "new.zarr", "--checkpoint", root / "new.zarr" / "ckpt"],
            "holds the --checkpoint",
        ),
        "fit --checkpoint the data's group": (
            fit + [root / "new.zarr", "--checkpoint", group],
            "holds the data",
        ),
    }


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(stores):
    cases = overlapping_commands(stores, f"tcp://127.0.0.1:{_free_port()}")
    before = snapshot(stores)
    model = DiagGMM.load(str(stores / "model.zarr"))
    results = run_all({name: args for name, (args, _) in cases.items()})
    for name, (_, fragment) in cases.items():
        assert_one_line_error(results[name], 2, fragment, "refused even with --overwrite")
    assert snapshot(stores) == before
    np.testing.assert_array_equal(DiagGMM.load(str(stores / "model.zarr")).means_, model.means_)


def test_predict_writes_beside_its_inputs(stores, tmp_path):
    """The control: a sibling of the data in its group and a sibling of the model are fine."""
    beside_data = stores / "clean.zarr" / "scores"
    result = finish(
        start_cli(
            "predict", stores / "model.zarr", stores / "clean.zarr" / "X", "--out", beside_data
        ),
        240,
    )
    assert result.returncode == 0, result.stderr
    assert zarr.open_group(str(beside_data), mode="r")["labels"].shape == (ROWS,)
    assert zarr.open_array(str(stores / "clean.zarr" / "X"), mode="r").shape == (ROWS, 4)


# -------------------------------------------------------------- 3. an error raised on a dask worker
def test_a_corrupt_chunk_read_on_a_worker_is_one_line(stores, tmp_path):
    corrupt = stores / "corrupt.zarr" / "X"
    chunk = f"Zarr chunk c/{BAD_CHUNK}/0 of {corrupt} is corrupt"
    results = run_all(
        {
            "fit": ["fit", corrupt, "--k", str(K), "--cluster", "--out", tmp_path / "m.zarr"],
            "predict": ["predict", stores / "model.zarr", corrupt, "--out", tmp_path / "s.zarr"],
        },
        timeout=300,
    )
    for name, result in results.items():
        result = without_load_warnings(result)
        # the library's reader raises a ValueError: bad input (exit 2), its message names the store
        # and the chunk
        assert_one_line_error(result, 2, chunk)
        assert "Compute Failed" not in result.stderr and "distributed." not in result.stderr, name
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "s.zarr").exists()


def test_debug_shows_the_worker_traceback(stores, tmp_path):
    corrupt = stores / "corrupt.zarr" / "X"
    result = finish(
        start_cli(
            "--debug", "fit", corrupt, "--k", str(K), "--cluster", "--out", tmp_path / "m.zarr"
        ),
        300,
    )
    assert result.returncode == 2, result.stderr
    assert (
        "Traceback (most recent call last)" in result.stderr and "zarr_chunks.py" in result.stderr
    )
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("diaggmm: error: ")
        and f"Zarr chunk c/{BAD_CHUNK}/0 of {corrupt} is corrupt" in last
    ), last


def test_a_codec_error_on_a_worker_is_one_line(tmp_path):
    """A store that zarr decodes itself (Zstd): the codec's error, on a worker, names the chunk and
    the store (the library reads zarr's path through :mod:`diaggmm_dist.checked_zarr`): bad input,
    exit 2.
    """
    values = np.random.default_rng(0).normal(size=(ROWS, 4))
    store = zarr.create_array(
        str(tmp_path / "zstd.zarr"),
        shape=values.shape,
        chunks=(CHUNK_ROWS, 4),
        dtype="f8",
        compressors=[zarr.codecs.ZstdCodec()],
    )
    store[:] = values
    garble(tmp_path / "zstd.zarr" / "c" / str(BAD_CHUNK) / "0")
    result = finish(
        start_cli(
            "fit", tmp_path / "zstd.zarr", "--k", str(K), "--cluster", "--out", tmp_path / "m.zarr"
        ),
        300,
    )
    assert_one_line_error(
        without_load_warnings(result),
        2,
        f"Zarr chunk c/{BAD_CHUNK}/0 of {tmp_path / 'zstd.zarr'} is corrupt: zarr could not decode "
        "it",
        "Zstd decompression error",
        "restore it from a copy or rewrite the store",
    )
    assert "Compute Failed" not in result.stderr
    assert not (tmp_path / "m.zarr").exists()


# ------------------------------------------- 4. distributed's wrappings of a worker's error, undone
def test_error_text_undoes_distributed_wrappings(local_cluster):
    from distributed import Client

    from diaggmm_dist.cli.exits import error_text

    class ChunkError(ValueError):
        """Holds an open file: it cannot be pickled, so distributed sends its repr instead."""

        def __init__(self, store, key):
            super().__init__(f"Zarr chunk {key} of {store} is corrupt")
            self.file = open(os.devnull, "rb")  # noqa: SIM115 - the point is an unpicklable attribute

    def fail(kind):
        if kind == "long":
            raise ValueError("chunk c/5/0 " + "x" * 20_000)
        if kind == "unpicklable":
            raise ChunkError("data.zarr", "c/5/0")
        raise ValueError("chunk c/5/0 is corrupt")

    with Client(local_cluster.scheduler_address, set_as_default=False) as client:
        errors = {
            kind: client.submit(fail, kind, pure=False).exception()
            for kind in ("plain", "long", "unpicklable")
        }
    # as distributed delivers them
    assert type(errors["plain"]) is ValueError
    assert errors["long"].args[0] == "Long error message"
    assert type(errors["unpicklable"]) is Exception and errors["unpicklable"].args[0].startswith(
        "ChunkError("
    )
    # as the command line shows them
    assert error_text(errors["plain"]) == ("ValueError", "chunk c/5/0 is corrupt")
    name, message = error_text(errors["long"])
    assert (
        name == "ValueError"
        and message.startswith("chunk c/5/0 xxx")
        and "Long error message" not in message
    )
    assert error_text(errors["unpicklable"]) == (
        "ChunkError",
        "Zarr chunk c/5/0 of data.zarr is corrupt",
    )
    # a plain Exception whose message only looks like a call is left as it is
    assert error_text(Exception("print(x)")) == ("Exception", "print(x)")
