"""Storage options at the user-facing surface, without a server: the CLI's ``--storage-option``
and ``--storage-options``, the library's ``storage_options=`` and store objects, the outputs, and
the flows' helpers.

``needsopts://`` is an in-memory fsspec file system that refuses to open without the option
``must="pass"``: a call that drops the options on the way fails, whatever it reads or writes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from types import SimpleNamespace

import fsspec
import numpy as np
import pytest
import zarr
from fsspec.implementations.memory import MemoryFileSystem
from zarr.storage import MemoryStore

from diaggmm_dist import DiagGMM
from diaggmm_dist.cli import build_parser, main
from diaggmm_dist.cli import commands as cli_commands
from diaggmm_dist.cli.exits import EXIT_OK, EXIT_USAGE
from diaggmm_dist.cli.options import command_storage_options, storage_option
from diaggmm_dist.locations import location
from diaggmm_dist.outputs.label_maps import write_label_map
from diaggmm_dist.outputs.scores import write_scores
from diaggmm_dist.stores.zarr_groups import NotAGroupError

#: A value that stands for a credential: no message may show it.
SECRET = "AKIA-DO-NOT-PRINT-7f3a9"
OPTIONS = {"must": "pass"}
_names = itertools.count()


class NeedsOptions(MemoryFileSystem):
    """fsspec's memory file system that opens only with ``must="pass"`` (as s3 needs its
    endpoint and keys)."""

    protocol = ("needsopts",)

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str) and path.startswith("needsopts://"):
            path = "memory://" + path[len("needsopts://") :]
        return super()._strip_protocol(path)

    def __init__(self, *args, must=None, **options):
        options.pop("asynchronous", None)
        options.pop("skip_instance_cache", None)
        if options:  # as real file systems refuse a keyword they do not know
            raise TypeError(f"unexpected keyword argument {sorted(options)[0]!r}")
        if must != "pass":
            raise PermissionError("needsopts:// opened without its storage options")
        super().__init__()


fsspec.register_implementation("needsopts", NeedsOptions, clobber=True)


@pytest.fixture
def place():
    """A fresh ``needsopts://`` prefix: ``place("x.zarr")`` is a URL under it."""
    root = f"needsopts://t{next(_names)}"
    yield lambda key: f"{root}/{key}"
    with contextlib.suppress(FileNotFoundError):
        NeedsOptions(must="pass").rm(root.removeprefix("needsopts://"), recursive=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (300, 3)), rng.normal(6, 1, (300, 3))])
    return X[rng.permutation(len(X))]


@pytest.fixture(scope="module")
def model(data):
    return DiagGMM(2, random_state=0, chunk_size=100).fit(data)


def write_array(url, X, chunks=(100, 3)):
    store = location(url, OPTIONS).zarr_store()
    array = zarr.open_array(store, mode="w", shape=X.shape, dtype=X.dtype, chunks=chunks)
    array[:] = X
    return url


def read_group(url):
    return zarr.open_group(location(url, OPTIONS).zarr_store(read_only=True), mode="r")


def test_the_test_file_system_refuses_to_open_without_its_options(place):
    with pytest.raises(PermissionError):
        location(place("x.zarr")).zarr_store()
    assert location(place("x.zarr"), OPTIONS).zarr_store() is not None


# --- the CLI: parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("anon=true", ("anon",), True),
        ("max_concurrency=8", ("max_concurrency",), 8),
        ('key="123"', ("key",), "123"),  # JSON quotes keep a number-looking value a string
        ("region=eu-west-1", ("region",), "eu-west-1"),  # not JSON: the string itself
        (
            "client_kwargs.endpoint_url=http://h:9000",
            ("client_kwargs", "endpoint_url"),
            "http://h:9000",
        ),
        (
            'config_kwargs={"retries": {"max_attempts": 2}}',
            ("config_kwargs",),
            {"retries": {"max_attempts": 2}},
        ),
        ("token=", ("token",), ""),
        ("secret=a=b", ("secret",), "a=b"),  # only the first '=' splits
    ],
)
def test_a_storage_option_is_a_dotted_key_and_a_json_or_string_value(text, path, value):
    assert storage_option(text) == (path, value)


def parsed(*extra):
    return build_parser().parse_args(
        ["predict", "model.zarr", "data.zarr", "--out", "s.zarr", *extra]
    )


def test_the_options_file_comes_first_and_each_option_goes_over_it(tmp_path):
    file = tmp_path / "options.json"
    file.write_text(
        json.dumps({"key": "K", "client_kwargs": {"endpoint_url": "http://a", "region_name": "r"}})
    )
    args = parsed(
        "--storage-options",
        str(file),
        "--storage-option",
        "client_kwargs.endpoint_url=http://b",
        "--storage-option",
        "anon=false",
        "--storage-option",
        "key=L",
    )
    assert command_storage_options(args) == {
        "key": "L",
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://b", "region_name": "r"},
    }
    assert command_storage_options(parsed()) is None
    assert command_storage_options(parsed("--storage-option", "a.b.c=1")) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("command", ["fit", "predict", "info"])
def test_every_command_takes_the_options(command):
    argv = {
        "fit": ["fit", "d.zarr", "--k", "2", "--out", "m.zarr"],
        "predict": ["predict", "m.zarr", "d.zarr", "--out", "s.zarr"],
        "info": ["info", "m.zarr"],
    }[command]
    args = build_parser().parse_args([*argv, "--storage-option", "anon=true"])
    assert command_storage_options(args) == {"anon": True}


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


FIT = ["fit", "data.zarr", "--k", "2", "--out", "model.zarr"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--storage-option", SECRET], "expected KEY=VALUE"),
        (["--storage-option", f"=x{SECRET}"], "empty part"),
        (["--storage-option", f"client_kwargs..endpoint_url={SECRET}"], "empty part"),
        (["--storage-options", "no-such-options.json"], "cannot read 'no-such-options.json'"),
        (["--storage-options", "{bad}"], "not valid JSON"),
        (["--storage-options", "[list]"], "must hold a JSON object"),
        (
            [
                "--storage-option",
                f"client_kwargs={SECRET}",
                "--storage-option",
                "client_kwargs.x=1",
            ],
            "'client_kwargs' is already given a value",
        ),
        (
            [
                "--storage-option",
                "client_kwargs.x=1",
                "--storage-option",
                f"client_kwargs={SECRET}",
            ],
            "already a group of options",
        ),
    ],
)
def test_malformed_storage_options_are_usage_errors_that_never_show_a_value(
    extra, says, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "{bad}").write_text('{"secret": "' + SECRET + '", }')
    (tmp_path / "[list]").write_text(json.dumps([SECRET]))
    code, output = run([*FIT, *extra], capsys)
    assert code == EXIT_USAGE, output
    assert says in output
    assert SECRET not in output
    assert not (tmp_path / "model.zarr").exists()


def test_options_the_file_system_does_not_take_are_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = f"needsopts://t{next(_names)}/model.zarr"
    options = ["--storage-option", "must=pass", "--storage-option", f"bogus={SECRET}"]
    code, output = run([*FIT[:-1], out, *options], capsys)
    assert code == EXIT_USAGE, output
    assert "storage options do not suit its file system" in output and "bogus" in output
    assert SECRET not in output


# --- the CLI: the options reach every URL ----------------------------------------------------


@pytest.fixture
def on_threads(monkeypatch):
    """The commands' dask work on local threads (no LocalCluster of processes, which would not
    know the test's file system)."""

    @contextlib.contextmanager
    def threads(args):
        yield SimpleNamespace(scheduler=SimpleNamespace(address="local threads"), cluster=None)

    monkeypatch.setattr(cli_commands, "_dask_client", threads)


def test_cli_fit_predict_and_info_open_every_url_with_the_options(
    place, data, on_threads, capsys, tmp_path
):
    data_url = write_array(place("data.zarr"), data)
    file = tmp_path / "options.json"
    file.write_text(json.dumps(OPTIONS))
    common = ["--quiet", "--storage-option", "must=pass"]
    fit = ["fit", data_url, "--k", "2", "--out", place("model.zarr"), "--max-iter", "5"]
    code, output = run([*fit, "--checkpoint", place("run.zarr"), *common], capsys)
    assert code == EXIT_OK, output
    expected = DiagGMM(2, random_state=0, max_iter=5).fit(data)
    saved = DiagGMM.load(place("model.zarr"), storage_options=OPTIONS)
    np.testing.assert_array_equal(saved.means_, expected.means_)
    assert read_group(place("run.zarr")).attrs["format"] == "diaggmm-dist-checkpoint"

    predict = ["predict", place("model.zarr"), data_url, "--out", place("scores.zarr")]
    code, output = run([*predict, "--quiet", "--storage-options", str(file)], capsys)
    assert code == EXIT_OK, output
    labels = read_group(place("scores.zarr"))["labels"][:]
    np.testing.assert_array_equal(labels, expected.predict(data))

    code, output = run(["info", place("model.zarr"), "--json", *common], capsys)
    assert code == EXIT_OK, output
    assert json.loads(output)["n_components"] == 2

    # without the options, the same command cannot open the data: the options were needed
    code, output = run([*predict, "--overwrite", "--quiet"], capsys)
    assert code != EXIT_OK and "storage options" in output


# --- the library ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [("must=pass", TypeError), ({1: "x"}, TypeError), ({"k": b"x"}, ValueError)],
)
def test_bad_storage_options_are_refused_before_any_work(data, model, options, error):
    with pytest.raises(error, match="storage_options"):
        DiagGMM(2).fit(data, storage_options=options)
    with pytest.raises(error, match="storage_options"):
        model.predict(data, storage_options=options)
    with pytest.raises(error, match="storage_options"):
        DiagGMM.load("model.zarr", storage_options=options)
    assert not hasattr(DiagGMM(2), "means_")


def test_options_with_a_store_object_are_refused(data, model):
    with pytest.raises(TypeError, match="store object carries its own"):
        DiagGMM(2).fit(data, checkpoint=MemoryStore(), storage_options=OPTIONS)
    with pytest.raises(TypeError, match="store object carries its own"):
        model.save(MemoryStore(), storage_options=OPTIONS)


def test_fit_predict_save_and_load_open_every_url_with_the_options(place, data):
    data_url = write_array(place("data.zarr"), data)
    expected = DiagGMM(2, random_state=0, max_iter=4).fit(data)
    gmm = DiagGMM(2, random_state=0, max_iter=4).fit(
        data_url, checkpoint=place("run.zarr"), storage_options=OPTIONS
    )
    np.testing.assert_array_equal(gmm.means_, expected.means_)
    np.testing.assert_array_equal(
        gmm.predict(data_url, storage_options=OPTIONS).compute(), expected.predict(data)
    )
    assert gmm.score(data_url, storage_options=OPTIONS) == pytest.approx(expected.score(data))
    gmm.save(place("model.zarr"), storage_options=OPTIONS)
    loaded = DiagGMM.load(place("model.zarr"), OPTIONS)
    np.testing.assert_array_equal(loaded.means_, expected.means_)
    with pytest.raises(PermissionError):  # the options were what opened it
        DiagGMM.load(place("model.zarr"))


def test_save_and_load_take_a_store_object(model):
    store = MemoryStore()
    model.save(store)
    np.testing.assert_array_equal(DiagGMM.load(store).means_, model.means_)
    with pytest.raises(FileExistsError):
        model.save(store)


# --- the outputs ------------------------------------------------------------------------------


def test_scores_go_to_a_url_with_options_or_to_a_store_object(place, data, model):
    url = write_scores(model, data, place("scores.zarr"), storage_options=OPTIONS)
    assert url == place("scores.zarr")
    group = read_group(url)
    np.testing.assert_array_equal(group["labels"][:], model.predict(data))
    assert group.attrs["n_rows"] == len(data)
    with pytest.raises(FileExistsError, match="already exists"):
        write_scores(model, data, place("scores.zarr"), storage_options=OPTIONS)
    write_scores(model, data[:300], place("scores.zarr"), storage_options=OPTIONS, overwrite=True)
    assert read_group(url)["labels"].shape == (300,)
    with pytest.raises(PermissionError):
        write_scores(model, data, place("other.zarr"))  # no options: cannot open the place

    store = MemoryStore()
    write_scores(model, data, store)
    np.testing.assert_array_equal(
        zarr.open_group(store, mode="r")["log_likelihood"][:], model.score_samples(data)
    )


def test_scores_refuse_to_replace_an_array_without_overwrite_or_other_files(place, data, model):
    write_array(place("array.zarr"), data)
    with pytest.raises(FileExistsError, match="already exists"):
        write_scores(model, data, place("array.zarr"), storage_options=OPTIONS)
    NeedsOptions(must="pass").pipe(place("notes/readme.txt").removeprefix("needsopts://"), b"x")
    with pytest.raises(NotAGroupError, match="not a Zarr store"):
        write_scores(model, data, place("notes"), storage_options=OPTIONS, overwrite=True)
    assert NeedsOptions(must="pass").cat(place("notes/readme.txt").removeprefix("needsopts://"))


def test_a_label_map_goes_to_a_url_with_options_or_to_a_store_object(place):
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 1, (10, 8, 2)), rng.normal(5, 1, (10, 8, 2))])
    grid = xr.DataArray(
        values, dims=("y", "x", "band"), coords={"y": np.arange(20.0), "band": ["a", "b"]}
    )
    model = DiagGMM(2, random_state=0).fit(grid, feature_dim="band")
    expected = model.predict(grid).values
    write_label_map(model, grid, place("map.zarr"), storage_options=OPTIONS)
    written = xr.open_zarr(
        location(place("map.zarr"), OPTIONS).zarr_store(read_only=True), consolidated=False
    )
    np.testing.assert_array_equal(written["labels"].values, expected)
    np.testing.assert_array_equal(written["y"].values, np.arange(20.0))
    store = MemoryStore()
    write_label_map(model, grid, store, probabilities=True)
    assert set(xr.open_zarr(store, consolidated=False).data_vars) >= {"labels", "responsibility"}


# --- the flows' helpers -----------------------------------------------------------------------


@pytest.fixture
def flows_path():
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)


def test_flow_options_without_a_block_are_the_parameter_checked(flows_path):
    from flows.runtime import flow_storage_options

    assert flow_storage_options(None, None) is None
    assert flow_storage_options({"a": {"b": 1}}, None) == {"a": {"b": 1}}
    with pytest.raises(TypeError, match="storage_options"):
        flow_storage_options("must=pass", None)


def test_a_fit_spec_carries_its_options_to_the_fit_but_never_shows_them(flows_path):
    from flows.specs import FitSpec

    spec = FitSpec("d", "c", "m", {}, 3, storage_options={"secret": SECRET})
    assert spec.fit_options == {"checkpoint": "c", "storage_options": {"secret": SECRET}}
    assert SECRET not in repr(spec) and "storage_options=<1 keys>" in repr(spec)
    assert "storage_options" not in FitSpec("d", "c", "m", {}, 3).fit_options


def test_flow_parameters_name_the_options(flows_path):
    import inspect

    from flows.retrain import retrain
    from flows.score import score
    from flows.train import train

    for flow in (train, retrain, score):
        parameters = inspect.signature(flow.fn).parameters
        for name in ("storage_options", "storage_options_block"):
            default = parameters[name].default  # a pydantic Field (with help for Prefect's UI)
            assert getattr(default, "default", default) is None, (flow.name, name)
        assert "Secret" in flow.fn.__doc__, flow.name
