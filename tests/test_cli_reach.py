"""The command line reaches what the library does (issue 23, section 1).

``--missing``, ``--feature-dim``, ``--features``, ``--columns`` and ``--sample-weight`` give
exactly the library's fit; ``--threads`` runs without a cluster; ``python -m diaggmm_dist``
is the command; ``--help`` and usage errors import neither dask nor scikit-learn. The fits run
in-process with ``--threads`` (dask's threaded scheduler, no cluster), on real stores.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from diaggmm_dist import DiagGMM
from diaggmm_dist.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """A store written by xarray: dims (time, y, x, band), one NaN, and weights (time, y, x)."""
    folder = tmp_path_factory.mktemp("cube")
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(0, 1, (2, 12, 10, 3)), rng.normal(4, 1, (2, 12, 10, 3))], axis=0
    )
    values[1, 2, 3, 1] = np.nan
    cube = xr.DataArray(
        values, dims=("time", "y", "x", "band"), coords={"band": ["B02", "B03", "B04"]}
    )
    cube.chunk({"time": 1}).to_dataset(name="reflectance").to_zarr(folder / "cube.zarr")
    weights = xr.DataArray(rng.uniform(0.5, 2.0, (4, 12, 10)), dims=("time", "y", "x"))
    weights.chunk({"time": 1}).to_dataset(name="w").to_zarr(folder / "w.zarr")
    return folder


FIT = ["--k", "2", "--max-iter", "20", "--seed", "1", "--threads", "--quiet"]


def test_an_xarray_store_fits_with_feature_dim_missing_and_weights(cube, tmp_path, capsys):
    store = cube / "cube.zarr"
    code, _, err = run(["fit", store, *FIT, "--out", tmp_path / "a.zarr"], capsys)
    assert code == 2 and "--feature-dim DIM" in err and "\n" not in err.strip()
    code, _, err = run(["fit", store / "reflectance", *FIT, "--out", tmp_path / "a.zarr"], capsys)
    assert code == 2 and "got 4D array" in err and "--feature-dim DIM" in err

    # The NaN error's advice names the command's flag, not the library's keyword.
    fit = ["fit", store, *FIT, "--feature-dim", "band"]
    code, _, err = run([*fit, "--out", tmp_path / "a.zarr"], capsys)
    assert code == 2 and "--missing marginalize" in err and "missing='" not in err

    weights = cube / "w.zarr"
    extra = ["--missing", "marginalize", "--sample-weight", weights]
    code, _, err = run([*fit, *extra, "--out", tmp_path / "a.zarr"], capsys)
    assert code == 0, err
    saved = DiagGMM.load(tmp_path / "a.zarr")
    data = xr.open_zarr(store)["reflectance"]
    w = xr.open_zarr(weights)["w"]
    expected = DiagGMM(2, max_iter=20, random_state=1, missing="marginalize").fit(
        data, feature_dim="band", sample_weight=w
    )
    np.testing.assert_array_equal(saved.means_, expected.means_)
    np.testing.assert_array_equal(saved.weights_, expected.weights_)
    assert list(saved.feature_names_in_) == ["B02", "B03", "B04"]
    assert saved.missing == "marginalize"


def test_weights_and_layout_are_checked_before_any_work(cube, tmp_path, capsys):
    fit = ["fit", cube / "cube.zarr", *FIT, "--missing", "drop", "--out", tmp_path / "m.zarr"]
    code, _, err = run([*fit, "--feature-dim", "color"], capsys)
    assert code == 2 and "'color' is not a dimension" in err
    flat = tmp_path / "flat.zarr"
    zarr.create_array(flat, shape=(7,), chunks=(7,), dtype="f8")[...] = 1.0
    code, _, err = run([*fit, "--feature-dim", "band", "--sample-weight", flat], capsys)
    assert code == 2 and "--sample-weight" in err and "xarray" in err
    for bad in ("a,,b", "a,a"):
        code, _, err = run([*fit, "--features", bad], capsys)
        assert code == 2 and "--features" in err
    assert not (tmp_path / "m.zarr").exists()


def test_row_weights_and_a_model_scored_with_missing_values(tmp_path, capsys):
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(0, 1, (300, 4)), rng.normal(3, 1, (300, 4))])
    X[5, 2] = np.nan
    w = rng.integers(1, 4, len(X)).astype("f8")
    data, weights = tmp_path / "X.zarr", tmp_path / "w.zarr"
    zarr.create_array(data, shape=X.shape, chunks=(100, 4), dtype="f8")[...] = X
    zarr.create_array(weights, shape=w.shape, chunks=(150,), dtype="f8")[...] = w
    fit = ["fit", data, *FIT, "--missing", "drop", "--init", "k-means++", "--n-init", "2"]
    code, _, err = run([*fit, "--sample-weight", weights, "--out", tmp_path / "m.zarr"], capsys)
    assert code == 0, err
    expected = DiagGMM(
        2, max_iter=20, random_state=1, missing="drop", init_params="k-means++", n_init=2
    ).fit(X, sample_weight=w)
    saved = DiagGMM.load(tmp_path / "m.zarr")
    np.testing.assert_allclose(saved.means_, expected.means_, rtol=1e-12)
    assert saved.init_params == "k-means++" and saved.n_init == 2

    short = tmp_path / "short.zarr"
    zarr.create_array(short, shape=(10,), chunks=(10,), dtype="f8")[...] = 1.0
    code, _, err = run([*fit, "--sample-weight", short, "--out", tmp_path / "n.zarr"], capsys)
    assert code == 2 and "--sample-weight" in err

    # predict --missing marginalize scores the row with a NaN; the model's own policy skips it
    for policy, unscored in ((None, 1), ("marginalize", 0)):
        out = tmp_path / f"scores-{policy}.zarr"
        extra = [] if policy is None else ["--missing", policy]
        code, _, err = run(
            ["predict", tmp_path / "m.zarr", data, "--out", out, "--threads", *extra], capsys
        )
        assert code == 0, err
        assert (zarr.open_group(out, mode="r")["labels"][...] == -1).sum() == unscored


def test_columns_of_a_parquet_table(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(3)
    table = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    table["id"] = np.arange(400)
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    code, _, err = run(["fit", path, *FIT, "--columns", "a,c", "--out", tmp_path / "m"], capsys)
    assert code == 0, err
    saved = DiagGMM.load(tmp_path / "m")
    assert list(saved.feature_names_in_) == ["a", "c"]
    expected = DiagGMM(2, max_iter=20, random_state=1).fit(table, columns=["a", "c"])
    np.testing.assert_allclose(saved.means_, expected.means_, rtol=1e-12)


def test_usage_of_the_new_options(capsys):
    code, _, err = run(
        ["fit", "X", "--k", "2", "--out", "m", "--threads", "--scheduler", "x"], capsys
    )
    assert code == 2 and "not allowed with argument" in err
    code, _, err = run(["fit", "X", "--k", "2", "--out", "m", "--missing", "ignore"], capsys)
    assert code == 2 and "--missing" in err
    code, _, err = run(["--log-level", "loud", "info", "m"], capsys)
    assert code == 2 and "--log-level" in err


def test_python_dash_m_and_a_lean_start():
    """``python -m diaggmm_dist`` is the command; --help and a usage error import no dask."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    probe = (
        "import sys, runpy; sys.argv = ['diaggmm'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('diaggmm_dist', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    heavy = [m for m in ('dask', 'distributed', 'sklearn', 'zarr', 'tqdm')\n"
        "             if m in sys.modules]\n"
        "    print('HEAVY', heavy, 'CODE', e.code)\n"
    )
    for arguments, code in ((["--help"], 0), (["fit"], 2)):
        done = subprocess.run(
            [sys.executable, "-c", probe, *arguments], env=env, capture_output=True, text=True
        )
        assert f"HEAVY [] CODE {code}" in done.stdout, done.stdout + done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "diaggmm_dist", "--version"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("diaggmm "), done.stderr
    import diaggmm_dist

    assert "DiagGMM" in dir(diaggmm_dist) and diaggmm_dist.DiagGMM is DiagGMM
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        diaggmm_dist.nothing  # noqa: B018


def test_info_json_still_lists_the_missing_policy_free_settings(tmp_path, capsys):
    """``info`` moved to cli/info.py: its JSON is unchanged in form."""
    X = np.random.default_rng(4).normal(size=(50, 2))
    DiagGMM(2, random_state=0).fit(X).save(tmp_path / "m.zarr")
    code, out, _ = run(["info", tmp_path / "m.zarr", "--json"], capsys)
    assert code == 0 and json.loads(out)["n_features"] == 2


def test_choosing_k_takes_the_layout_and_the_weights(cube, tmp_path, capsys):
    from diaggmm_dist import select_n_components

    store, weights = cube / "cube.zarr", cube / "w.zarr"
    fit = ["fit", store, "--k", "2,3", "--max-iter", "10", "--seed", "1", "--threads", "--quiet"]
    extra = ["--feature-dim", "band", "--missing", "marginalize", "--sample-weight", weights]
    code, out, err = run([*fit, *extra, "--out", tmp_path / "m.zarr"], capsys)
    assert code == 0, err
    result = select_n_components(
        xr.open_zarr(store)["reflectance"],
        [2, 3],
        "bic",
        feature_dim="band",
        sample_weight=xr.open_zarr(weights)["w"],
        max_iter=10,
        random_state=1,
        missing="marginalize",
    )
    saved = DiagGMM.load(tmp_path / "m.zarr")
    assert saved.n_components == result.best.n_components
    np.testing.assert_array_equal(saved.means_, result.best.means_)


def test_a_cluster_started_for_the_command_is_quiet_and_shows_its_dashboard(cube, tmp_path):
    """With --cluster (the input is small): a LocalCluster, its dashboard link on the first
    line (saying when bokeh is needed to draw it), none of distributed's log lines unless
    --log-level asks, and the model of the library's own fit (on threads) to the bit."""
    import importlib.util

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    command = [sys.executable, "-m", "diaggmm_dist", "fit", str(cube / "cube.zarr"), "--k", "2"]
    command += ["--feature-dim", "band", "--missing", "drop", "--out", str(tmp_path / "m.zarr")]
    done = subprocess.run(
        [*command, "--cluster"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("fit: 480 rows x 3 features") and "scheduler tls://" in first
    assert "dashboard http://127.0.0.1:" in first, first
    assert ("install bokeh" in first) == (importlib.util.find_spec("bokeh") is None), first
    assert "distributed." not in done.stderr, done.stderr
    expected = DiagGMM(2, missing="drop", random_state=0).fit(
        xr.open_zarr(cube / "cube.zarr")["reflectance"], feature_dim="band"
    )
    _assert_same_model(DiagGMM.load(tmp_path / "m.zarr"), expected)


def _assert_same_model(got, expected):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.lower_bounds_ == expected.lower_bounds_ and got.n_iter_ == expected.n_iter_


def test_a_small_input_runs_on_threads_without_a_cluster(cube, tmp_path, capsys, monkeypatch):
    """No --scheduler, --threads or --cluster, and a small input: the command's threads (said
    on the first line), the library's model to the bit; a larger input, or more chunks than
    the tree sum adds at once, or a scheduler in the environment: a cluster."""
    import argparse

    from diaggmm_dist.cli.commands import _small_input
    from diaggmm_dist.cli.parser import SMALL_INPUT_BYTES
    from diaggmm_dist.engine.local import local_threads

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    fit = ["fit", cube / "cube.zarr", "--k", "2", "--feature-dim", "band", "--missing", "drop"]
    code, out, err = run([*fit, "--out", tmp_path / "m.zarr"], capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("fit: 480 rows x 3 features"), first
    assert first.endswith(f"4 chunks, on {local_threads()} local threads (small input: no cluster)")
    expected = DiagGMM(2, missing="drop", random_state=0).fit(
        xr.open_zarr(cube / "cube.zarr")["reflectance"], feature_dim="band"
    )
    _assert_same_model(DiagGMM.load(tmp_path / "m.zarr"), expected)

    args = argparse.Namespace(scheduler=None, cluster=False)
    assert _small_input(args, SMALL_INPUT_BYTES, 8)
    assert not _small_input(args, SMALL_INPUT_BYTES + 1, 1)
    assert not _small_input(args, 1000, 9)  # 9 chunks: the sums' order would differ
    assert not _small_input(argparse.Namespace(scheduler="tcp://h:1", cluster=False), 1000, 1)
    assert not _small_input(argparse.Namespace(scheduler=None, cluster=True), 1000, 1)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")
    assert not _small_input(args, 1000, 1)
    code, _, err = run([*fit, "--out", tmp_path / "n.zarr", "--cluster", "--threads"], capsys)
    assert code == 2 and "not allowed with argument" in err
