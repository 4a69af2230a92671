"""The stores on a real S3-compatible server: options and store objects, and what each costs.

Every store (model, registry, checkpoint, lease) is reached with storage options (a
:class:`~diaggmm_dist.locations.Location`) or a Zarr store object; the endpoint is never in the
environment, so code that dropped the options would fail. Request counts come from the proxy's
log: a checkpoint step at most 8 requests, none of them reading what the fit just wrote; a
model saved with one PUT per file, and loaded with one GET per file.
"""

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from children import sigkill_when
from conftest import mixture_data
from s3_harness import ENDPOINT_VARIABLES, s3, s3_service  # noqa: F401
from zarr.storage import MemoryStore

from diaggmm_dist import DiagGMM, engine
from diaggmm_dist.locations import location
from diaggmm_dist.persistence import model_from_record, record_of
from diaggmm_dist.stores import lease
from diaggmm_dist.stores.checkpoint import Checkpoints
from diaggmm_dist.stores.model_store import read_record, write_record
from diaggmm_dist.stores.registry import ModelRegistry

#: The files of a model saved after ``fit`` (three arrays of one chunk each, and the root).
MODEL_FILES = (
    "zarr.json",
    "weights/zarr.json",
    "weights/c/0",
    "means/zarr.json",
    "means/c/0/0",
    "covariances/zarr.json",
    "covariances/c/0/0",
)
#: The files of a checkpoint step, whatever its number of restarts: the metadata and the one
#: chunk of its array of every restart's planes, and its zarr.json (the completion mark).
STEP_FILES = ("planes/zarr.json", "planes/c/0", "zarr.json")
#: What Zarr v2 (or zarr probing for it) would read: never asked for.
V2_FILES = (".zgroup", ".zattrs", ".zarray", ".zmetadata")
SETTINGS = dict(n_components=3, random_state=5, tol=0.0, max_iter=8, init_params="random")


@pytest.fixture(scope="module")
def X():
    return mixture_data(2000, 3, 3, seed=8)[0]


@pytest.fixture(scope="module")
def fitted(X):
    return DiagGMM(**SETTINGS).fit(X)


def assert_identical(got, expected):
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.lower_bounds_ == expected.lower_bounds_
    assert (got.n_iter_, got.converged_) == (expected.n_iter_, expected.converged_)


def keys_of(s3, requests, prefix):
    """The keys under ``prefix`` that ``requests`` name (paths without the bucket)."""
    head = s3.log_path(prefix) + "/"
    return [r.path[len(head) :] for r in requests if r.path.startswith(head)]


def test_a_model_saves_one_put_per_file_and_loads_one_get_per_file(s3, fitted):
    where = location(s3.url("model.zarr"), s3.storage_options)
    s3.proxy.clear()
    write_record(record_of(fitted), where)
    log = s3.proxy.log
    puts = [r for r in log if r.method == "PUT"]
    assert sorted(keys_of(s3, puts, "model.zarr")) == sorted(MODEL_FILES)
    assert keys_of(s3, puts[-1:], "model.zarr") == ["zarr.json"]  # the completion mark last
    # the existence check: the root's zarr.json (absent), then one listing (s3fs: two requests)
    checks = [r for r in log if r.method != "PUT"]
    assert len(checks) <= 3 and all(r.method == "GET" for r in checks), checks
    assert len(log) <= len(MODEL_FILES) + 3

    s3.proxy.clear()
    loaded = model_from_record(DiagGMM, read_record(where, DiagGMM().get_params()))
    assert_identical(loaded, fitted)
    log = s3.proxy.log
    assert all(r.method == "GET" for r in log), [(r.method, r.path) for r in log]
    assert Counter(keys_of(s3, log, "model.zarr")) == Counter(
        MODEL_FILES
    )  # each once, nothing else
    assert len(log) == len(MODEL_FILES)


def test_a_model_round_trips_through_store_objects(s3, fitted):
    store = s3.zarr_store("object.zarr")
    write_record(record_of(fitted), store)
    assert_identical(DiagGMM.load(store), fitted)
    with pytest.raises(FileExistsError, match="already exists"):
        write_record(record_of(fitted), s3.zarr_store("object.zarr"))
    # the same model, read back through the URL and its options
    assert_identical(DiagGMM.load(location(s3.url("object.zarr"), s3.storage_options)), fitted)
    # a store with no file system at all: only Zarr's operations are needed
    memory = MemoryStore()
    write_record(record_of(fitted), memory)
    assert_identical(DiagGMM.load(memory), fitted)
    write_record(record_of(fitted), memory, overwrite=True)
    assert_identical(DiagGMM.load(memory), fitted)


def test_the_registry_publishes_and_loads_through_its_options(s3, fitted, X):
    registry = ModelRegistry(s3.url("registry"), storage_options=s3.storage_options)
    assert registry.current(DiagGMM.load) is None
    first = registry.promote(fitted, {"data_url": "features.zarr"})
    other = DiagGMM(**dict(SETTINGS, random_state=6)).fit(X)
    second = registry.promote(other, {"holdout_mean_log_likelihood": -3.5})
    assert registry.versions() == [first, second] == ["v0001", "v0002"]
    version, model = registry.current(DiagGMM.load)
    assert version == second
    assert_identical(model, other)
    assert_identical(registry.load(first, DiagGMM.load), fitted)
    assert registry.metadata(second)["parent"] == first
    # the models are where the URLs say, readable with the same options
    assert_identical(DiagGMM.load(registry.model_location(first)), fitted)
    assert registry.model_location(first).url == registry.url(first) == s3.url("registry/v0001")
    # a store object as the root works too (its file system lists the versions)
    assert ModelRegistry(s3.zarr_store("registry")).current_version() == second
    with pytest.raises(TypeError, match="no fsspec file system"):
        ModelRegistry(MemoryStore())  # nothing to list its versions with


@pytest.mark.parametrize("n_init", [1, 2, 8])
def test_a_checkpoint_step_costs_at_most_8_requests_and_reads_nothing_it_wrote(
    s3, X, fitted, monkeypatch, n_init
):
    monkeypatch.setattr(lease, "HEARTBEAT_SECONDS", 3600.0)  # no renewal inside a step
    settings = dict(SETTINGS, n_init=n_init)
    where = location(s3.url("ck.zarr"), s3.storage_options)
    marks = []

    def on_iteration(summary):  # called for each restart once the iteration is checkpointed
        if summary["restart"] == n_init - 1:
            marks.append(len(s3.proxy.log))

    s3.proxy.clear()
    stopped = DiagGMM(**dict(settings, max_iter=6)).fit(
        X, checkpoint=where, on_iteration=on_iteration
    )
    log = s3.proxy.log
    steps = [log[a:b] for a, b in zip(marks, marks[1:])]
    assert len(steps) == 5
    for number, step in enumerate(steps, start=2):
        shown = [(r.method, r.path, r.query) for r in step]
        # a lease GET, the step's three files and the pointer, a bulk delete: for any n_init
        assert len(step) <= 6, shown
        # the step's files and the new pointer, each put once
        puts = [r for r in step if r.method == "PUT"]
        written = sorted(keys_of(s3, puts, "ck.zarr"))
        name = f"step-{number:08d}"
        assert written == sorted(["zarr.json", *(f"{name}/{key}" for key in STEP_FILES)]), shown
        # the completion mark after the array, the pointer last
        assert keys_of(s3, puts[-2:], "ck.zarr") == [f"{name}/zarr.json", "zarr.json"], shown
        # read: the lease only (one GET); nothing of the checkpoint, no HEAD, no v2 probe
        reads = [r for r in step if r.method in ("GET", "HEAD") and "list-type" not in r.query]
        assert [(r.method, r.path) for r in reads] == [("GET", s3.log_path("ck.zarr.lease"))]
        assert not [r for r in step if r.path.endswith(V2_FILES)]
        # a retired step (from the fourth on): one bulk delete of the files this fit wrote
        others = [(r.method, r.query) for r in step if r not in reads and r.method != "PUT"]
        assert others == ([("POST", "delete")] if number >= 3 else []), shown
    resumed = DiagGMM(**settings).fit(X, checkpoint=where)
    assert stopped.n_iter_ == 6
    assert_identical(resumed, fitted if n_init == 1 else DiagGMM(**settings).fit(X))
    fs = s3.filesystem()
    names = [path.rsplit("/", 1)[-1] for path in fs.ls(s3.url("ck.zarr"))]
    steps_left = sorted(name for name in names if name.startswith("step-"))
    assert steps_left == ["step-00000006", "step-00000007", "step-00000008"]  # KEEP newest
    assert not fs.exists(s3.url("ck.zarr.lease"))  # released


def test_a_checkpoint_needs_a_file_system(X):
    with pytest.raises(TypeError, match="no fsspec file system"):
        Checkpoints(MemoryStore(), {"config": {}})


def test_a_checkpoint_through_an_fsspec_store_object(s3, X, fitted):
    DiagGMM(**dict(SETTINGS, max_iter=3)).fit(X, checkpoint=s3.zarr_store("ck.zarr"))
    root = json.loads(s3.filesystem().cat_file(s3.url("ck.zarr/zarr.json")))
    assert root["attributes"]["latest"] == "step-00000003"
    assert_identical(DiagGMM(**SETTINGS).fit(X, checkpoint=s3.zarr_store("ck.zarr")), fitted)


#: The child: fits with a checkpoint on the S3 server, slowly, until the parent kills it.
CHILD = r"""
import json, sys, time
import numpy as np
from diaggmm_dist import DiagGMM
from diaggmm_dist.locations import location

cfg = json.loads(sys.argv[1])
X = np.load(cfg["data"])
checkpoint = location(cfg["checkpoint"], cfg["storage_options"])
DiagGMM(**cfg["settings"]).fit(X, checkpoint=checkpoint, on_iteration=lambda _: time.sleep(0.2))
sys.exit(3)  # never killed: the parent reports it
"""


def _pointer(fs, url):
    try:
        return json.loads(fs.cat_file(f"{url}/zarr.json"))["attributes"]["latest"]
    except FileNotFoundError:
        return None


def test_a_fit_killed_mid_run_resumes_bit_for_bit_from_s3(s3, X, fitted, tmp_path, monkeypatch):
    data = tmp_path / "X.npy"
    np.save(data, X)
    url = s3.url("killed.zarr")
    config = {
        "data": str(data),
        "checkpoint": url,
        "storage_options": s3.storage_options,  # the endpoint travels in argv, not the env
        "settings": SETTINGS,
    }
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARIABLES}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    fs = s3.filesystem()
    sigkill_when(
        child, lambda: (_pointer(fs, url) or "step-0") >= "step-00000003", "step 3", poll=0.05
    )
    lease_record = json.loads(fs.cat_file(f"{url}.lease"))
    assert lease_record["pid"] == child.pid  # it died holding the lease
    committed = int(_pointer(fs, url)[5:])
    assert 3 <= committed < SETTINGS["max_iter"]  # killed mid-run

    passes, real = [], engine.pass_statistics
    monkeypatch.setattr(
        engine, "pass_statistics", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    resumed = DiagGMM(**SETTINGS).fit(X, checkpoint=location(url, s3.storage_options))
    monkeypatch.undo()
    assert len(passes) == SETTINGS["max_iter"] - committed  # only the passes not committed
    assert_identical(resumed, fitted)
    assert not fs.exists(f"{url}.lease")  # taken over from the dead pid, then released
