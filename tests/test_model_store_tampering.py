"""Tampered model stores: every change is refused with the field named, or loads the identical
model.

Each case saves a real model (a Zarr v3 group on disk), changes one thing in it (an
attribute, an array's metadata, a chunk file, zarr.json itself), and loads it. The load must
either raise :class:`ModelStoreError` whose message names the field (and the model's path), or
return a model equal to the saved one in every fitted attribute and setting. A different model
is never loaded.
"""

import json
import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import mixture_data

from diaggmm_dist import DiagGMM
from diaggmm_dist.persistence import record_of
from diaggmm_dist.stores import model_record, model_store
from diaggmm_dist.stores.model_files import MAX_METADATA_BYTES
from diaggmm_dist.stores.model_record import ARRAYS, ONLINE_ARRAYS
from diaggmm_dist.stores.model_store import ModelStoreError, UnverifiedModelWarning

HARMLESS = None


class _Delete:
    def __repr__(self):
        return "DELETE"


DELETE = _Delete()


@pytest.fixture(scope="module")
def models():
    """A model fitted on a table (feature names, a data fingerprint) and one after partial_fit."""
    X, _ = mixture_data(600, 3, 2, seed=5)
    table = pd.DataFrame(
        X + 50.0, columns=["red", "green", "blue"]
    )  # off the origin: a non-zero running shift
    fitted = DiagGMM(2, random_state=0).fit(table)
    online = DiagGMM(2, random_state=0).partial_fit(X[:300] + 50.0).partial_fit(X[300:] + 50.0)
    assert np.any(online.running_shift_ != 0)
    return {"fitted": fitted, "online": online}


def assert_identical(loaded, saved):
    """Every fitted attribute, every setting."""
    assert loaded.get_params() == saved.get_params()
    fitted = sorted(name for name in vars(saved) if name.endswith("_") and not name.startswith("_"))
    # fit's per-restart diagnostics are not part of the file
    fitted = [name for name in fitted if name not in ("lower_bounds_per_init_", "best_init_")]
    assert sorted(name for name in vars(loaded) if name.endswith("_")) == fitted
    for name in fitted:
        got, want = getattr(loaded, name), getattr(saved, name)
        if isinstance(want, np.ndarray):
            assert got.dtype == want.dtype and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            assert got == want, name


# ------------------------------------------------------------------ tamperings
def attr(key, value):
    """Set (or DELETE) attribute ``key`` of the root zarr.json; "params.tol" reaches into params."""

    def change(meta):
        target, *rest = key.split(".")
        holder = meta["attributes"]
        if rest:
            holder, target = holder[target], rest[0]
        if value is DELETE:
            del holder[target]
        else:
            holder[target] = value

    return edit_json("zarr.json", change)


def edit_json(relpath, change):
    def tamper(path):
        file = path / relpath
        meta = json.loads(file.read_text())
        change(meta)
        file.write_text(json.dumps(meta))

    return tamper


def write_bytes(relpath, data):
    def tamper(path):
        (path / relpath).write_bytes(data(path / relpath) if callable(data) else data)

    return tamper


def chunk_of(path, name):
    return next(p for p in (path / name / "c").rglob("*") if p.is_file())


def on_chunk(name, action):
    """``action(chunk_path, store_path)`` on the one chunk file of array ``name``."""
    return lambda path: action(chunk_of(path, name), path)


def flip_bit(chunk, _):
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x04
    chunk.write_bytes(bytes(data))


def random_bytes(chunk, _):
    chunk.write_bytes(np.random.default_rng(0).bytes(chunk.stat().st_size))


def symlink_to(target):
    def action(chunk, _):
        chunk.unlink()
        chunk.symlink_to(target)

    return action


def symlink_to_array(other):
    return lambda chunk, path: symlink_to(chunk_of(path, other))(chunk, path)


def sparse_file(size):
    def action(file, _=None):
        with open(file, "r+b") as handle:
            handle.truncate(size)

    return action


def fifo(file, _=None):
    file.unlink()
    os.mkfifo(file)


def into_directory(file, _=None):
    file.unlink()
    file.mkdir()


def swap_arrays(a, b):
    def tamper(path):
        (path / a).rename(path / "tmp")
        (path / b).rename(path / a)
        (path / "tmp").rename(path / b)

    return tamper


def chunk_from_another_model(name):
    def tamper(path):
        other = DiagGMM(2, random_state=1, max_iter=3).fit(mixture_data(200, 3, 2, seed=9)[0])
        other.save(path.parent / "other.zarr")
        shutil.copy(chunk_of(path.parent / "other.zarr", name), chunk_of(path, name))

    return tamper


def nested_json(path):
    (path / "zarr.json").write_text("[" * 100_000 + "]" * 100_000)


def nothing(path):
    pass


ATTRIBUTE_CASES = [
    # (attribute, value, field the error must name; HARMLESS: loads the same model)
    ("format", "something-else", "'format'"),
    ("format", DELETE, "'format'"),
    ("format_version", 99, "'format_version'"),
    ("format_version", "3", "'format_version'"),
    ("format_version", 3.0, "'format_version'"),
    ("format_version", True, "'format_version'"),
    ("format_version", DELETE, "'format_version'"),
    ("library_version", 7, "'library_version'"),
    ("n_components", 0, "n_components"),
    ("n_components", "2", "n_components"),
    ("n_components", 3, "n_components"),
    ("n_components", DELETE, "n_components"),
    ("n_features", 4, "n_features"),
    ("n_features", -1, "'n_features'"),
    ("n_features", DELETE, "'n_features'"),
    ("dtype", "float16", "dtype"),
    ("dtype", 64, "'dtype'"),
    ("reg_covar", -1.0, "reg_covar"),
    ("reg_covar", "abc", "'reg_covar'"),
    ("reg_covar", float("nan"), "reg_covar"),
    ("reg_covar", 1e-3, "'attributes'"),  # valid but not what was saved: the attributes' checksum
    ("params", [], "'params'"),
    ("params.tol", "abc", "tol"),
    ("params.tol", -1.0, "tol"),
    ("params.tol", 0.5, "'attributes'"),
    ("params.tol", DELETE, "tol"),
    ("params.tol", 10**400, "tol"),
    ("params.n_init", 10**400, "n_init"),
    ("params.tol", ["a" * 10**5], "tol"),
    ("params.chunk_size", 0, "chunk_size"),
    ("params.chunk_size", 1.5, "chunk_size"),
    ("params.missing", "bogus", "missing"),
    ("params.max_iter", -1, "max_iter"),
    ("params.n_init", 0, "n_init"),
    ("params.init_params", "evil", "init_params"),
    ("params.init_params", [1], "init_params"),
    ("params.verbose_interval", 0, "verbose_interval"),
    ("params.learning_decay", 0.3, "learning_decay"),
    ("params.learning_offset", -1.0, "learning_offset"),
    ("params.random_state", -5, "random_state"),
    ("params.random_state", "seed", "random_state"),
    ("params.warm_start", "yes", "warm_start"),
    ("params.verbose", -1, "verbose"),
    ("params.evil", "__import__('os')", "evil"),
    ("params.covariance_type", "full", "covariance_type"),
    ("n_iter", -1, "'n_iter'"),
    ("n_iter", "7", "'n_iter'"),
    ("n_iter", DELETE, "'n_iter'"),
    ("converged", "yes", "'converged'"),
    ("converged", 1, "'converged'"),
    ("lower_bound", "x", "'lower_bound'"),
    ("lower_bound", float("nan"), "'lower_bound'"),
    ("lower_bound", float("inf"), "'lower_bound'"),
    ("lower_bound", 12.5, "'attributes'"),
    ("lower_bound", 10**400, "'lower_bound'"),
    ("reg_covar", 10**400, "'reg_covar'"),
    ("lower_bounds", [1.0, "a"], "'lower_bounds'"),
    ("lower_bounds", "abc", "'lower_bounds'"),
    ("lower_bounds", [float("nan")], "'lower_bounds'"),
    ("n_reseeded", -1, "'n_reseeded'"),
    ("feature_names", ["a", "b"], "'feature_names'"),
    ("feature_names", [1, 2, 3], "'feature_names'"),
    ("feature_names", ["x", "y", "z"], "'attributes'"),
    ("feature_names", DELETE, "'attributes'"),
    ("data_fingerprint", "x", "'data_fingerprint'"),
    ("data_fingerprint", {"shape": [600, 3]}, "'data_fingerprint'"),
    ("input_layout", {"evil": 1}, "'input_layout'"),
    ("input_layout", {"columns": "red"}, "'input_layout'"),
    ("online", {"n_batches_seen": 1, "n_samples_seen": 600}, "running_statistics"),
    ("online", {"n_batches_seen": 0, "n_samples_seen": 5}, "'online'"),
    ("online", [], "'online'"),
    ("checksums", DELETE, "'checksums'"),
    ("checksums", "abc", "'checksums'"),
    ("checksums.means", "sha256:" + "0" * 64, "'means'"),
    ("checksums.attributes", "sha256:" + "0" * 64, "'attributes'"),
    ("checksums.weights", DELETE, "'checksums'"),
    ("note", "a user's own attribute", HARMLESS),
]

ONLINE_ATTRIBUTE_CASES = [
    ("online", None, "'attributes'"),  # would drop the running state: a different model
    ("online", {"n_batches_seen": 5, "n_samples_seen": 600}, "'attributes'"),
    ("online", {"n_batches_seen": 2}, "'online'"),
    ("checksums.running_shift", "sha256:" + "1" * 64, "'running_shift'"),
]

ROOT_CASES = [
    ("zarr.json: not JSON", write_bytes("zarr.json", b"not json {"), "zarr.json"),
    (
        "zarr.json: binary junk",
        write_bytes("zarr.json", np.random.default_rng(1).bytes(300)),
        "zarr.json",
    ),
    (
        "zarr.json: invalid UTF-8",
        write_bytes("zarr.json", b'{"attributes": "\xff\xfe\xfa"}'),
        "zarr.json",
    ),
    ("zarr.json: empty", write_bytes("zarr.json", b""), "zarr.json"),
    (
        "zarr.json: truncated",
        write_bytes("zarr.json", lambda f: f.read_bytes()[: len(f.read_bytes()) // 2]),
        "zarr.json",
    ),
    ("zarr.json: a list", write_bytes("zarr.json", b"[1, 2]"), "zarr.json"),
    ("zarr.json: null", write_bytes("zarr.json", b"null"), "zarr.json"),
    ("zarr.json: nested 100,000 deep", nested_json, "zarr.json"),
    ("zarr.json: deleted", lambda p: (p / "zarr.json").unlink(), "zarr.json"),
    ("zarr.json: a directory", lambda p: into_directory(p / "zarr.json"), "zarr.json"),
    (
        "zarr.json: symlink to /dev/zero",
        lambda p: symlink_to("/dev/zero")(p / "zarr.json", p),
        "zarr.json",
    ),
    ("zarr.json: a FIFO", lambda p: fifo(p / "zarr.json"), "zarr.json"),
    (
        "zarr.json: sparse, over the bound",
        lambda p: sparse_file(MAX_METADATA_BYTES + 1)(p / "zarr.json"),
        "zarr.json",
    ),
    (
        "zarr.json: attributes a list",
        edit_json("zarr.json", lambda m: m.update(attributes=[])),
        "'attributes'",
    ),
    (
        "zarr.json: attributes deleted",
        edit_json("zarr.json", lambda m: m.pop("attributes")),
        "'attributes'",
    ),
    (
        "zarr.json: node_type array",
        edit_json("zarr.json", lambda m: m.update(node_type="array")),
        "Zarr array",
    ),
    (
        "zarr.json: zarr_format 2",
        edit_json("zarr.json", lambda m: m.update(zarr_format=2)),
        "zarr_format",
    ),
    (
        "zarr.json: reformatted, keys reordered",
        lambda p: (p / "zarr.json").write_text(
            json.dumps(json.loads((p / "zarr.json").read_text()), indent=7, sort_keys=True)
        ),
        HARMLESS,
    ),
    (
        "zarr.json: consolidated metadata added",
        edit_json(
            "zarr.json",
            lambda m: m.update(
                consolidated_metadata={"kind": "inline", "must_understand": False, "metadata": {}}
            ),
        ),
        HARMLESS,
    ),
    ("nothing changed", nothing, HARMLESS),
    ("means and covariances swapped", swap_arrays("means", "covariances"), "'means'"),
    ("weights chunk from another model", chunk_from_another_model("weights"), "'weights'"),
    ("means chunk from another model", chunk_from_another_model("means"), "'means'"),
    (
        "means chunk a symlink to covariances'",
        on_chunk("means", symlink_to_array("covariances")),
        "'means'",
    ),
    (
        "means chunk a symlink to a copy of itself",
        on_chunk(
            "means",
            lambda c, p: (shutil.copy(c, p.parent / "copy"), symlink_to(p.parent / "copy")(c, p)),
        ),
        HARMLESS,
    ),
]


def array_cases(name):
    """The same damage done to array ``name``: its chunk file and its zarr.json."""
    meta = f"{name}/zarr.json"
    field = f"'{name}'"
    return [
        (f"{name}: chunk deleted", on_chunk(name, lambda c, p: c.unlink()), field),
        (f"{name}: chunk empty", on_chunk(name, lambda c, p: c.write_bytes(b"")), field),
        (
            f"{name}: chunk truncated",
            on_chunk(name, lambda c, p: c.write_bytes(c.read_bytes()[:-3])),
            field,
        ),
        (
            f"{name}: chunk extended",
            on_chunk(name, lambda c, p: c.write_bytes(c.read_bytes() + b"\0" * 8)),
            field,
        ),
        (f"{name}: chunk random bytes", on_chunk(name, random_bytes), field),
        (f"{name}: one bit flipped", on_chunk(name, flip_bit), field),
        (f"{name}: chunk symlink to /dev/zero", on_chunk(name, symlink_to("/dev/zero")), field),
        (f"{name}: chunk a FIFO", on_chunk(name, lambda c, p: fifo(c)), field),
        (f"{name}: chunk sparse 1 GiB", on_chunk(name, lambda c, p: sparse_file(2**30)(c)), field),
        (f"{name}: chunk a directory", on_chunk(name, lambda c, p: into_directory(c)), field),
        (f"{name}: array deleted", lambda p: shutil.rmtree(p / name), field),
        (f"{name}: zarr.json deleted", lambda p: (p / meta).unlink(), field),
        (
            f"{name}: zarr.json binary junk",
            write_bytes(meta, np.random.default_rng(2).bytes(200)),
            meta,
        ),
        (
            f"{name}: fill_value 0",
            edit_json(meta, lambda m: m.update(fill_value=0.0)),
            "'fill_value'",
        ),
        (
            f"{name}: data_type float32",
            edit_json(meta, lambda m: m.update(data_type="float32")),
            "'data_type'",
        ),
        (
            f"{name}: data_type int64",
            edit_json(meta, lambda m: m.update(data_type="int64")),
            "'data_type'",
        ),
        (
            f"{name}: shape changed",
            edit_json(meta, lambda m: m.update(shape=[1] * len(m["shape"]))),
            "'shape'",
        ),
        (
            f"{name}: chunks of 1",
            edit_json(
                meta,
                lambda m: m["chunk_grid"]["configuration"].update(
                    chunk_shape=[1] * len(m["shape"])
                ),
            ),
            "'chunk_grid'",
        ),
        (
            f"{name}: zstd added",
            edit_json(
                meta,
                lambda m: m["codecs"].append(
                    {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
                ),
            ),
            "'codecs'",
        ),
        (
            f"{name}: big-endian",
            edit_json(meta, lambda m: m["codecs"][0]["configuration"].update(endian="big")),
            field,
        ),
        (
            f"{name}: v2 chunk keys",
            edit_json(
                meta,
                lambda m: m.update(
                    chunk_key_encoding={"name": "v2", "configuration": {"separator": "."}}
                ),
            ),
            field,
        ),
        (
            f"{name}: a storage transformer",
            edit_json(meta, lambda m: m.update(storage_transformers=[{"name": "x"}])),
            "'storage_transformers'",
        ),
        (
            f"{name}: its own attributes",
            edit_json(meta, lambda m: m.update(attributes={"note": 1})),
            HARMLESS,
        ),
        (
            f"{name}: dimension names edited",
            edit_json(meta, lambda m: m.update(dimension_names=["a"] * len(m["shape"]))),
            "'dimension_names'",
        ),
        (
            f"{name}: dimension names removed (as stores written before them)",
            edit_json(meta, lambda m: m.pop("dimension_names")),
            HARMLESS,
        ),
    ]


CASES = (
    [
        pytest.param("fitted", attr(key, value), field, id=f"{key}={value!r}"[:60])
        for key, value, field in ATTRIBUTE_CASES
    ]
    + [
        pytest.param("online", attr(key, value), field, id=f"online {key}={value!r}"[:60])
        for key, value, field in ONLINE_ATTRIBUTE_CASES
    ]
    + [pytest.param("fitted", tamper, field, id=name) for name, tamper, field in ROOT_CASES]
    + [
        pytest.param("fitted", tamper, field, id=name)
        for array in ("weights", "means", "covariances")
        for name, tamper, field in array_cases(array)
    ]
    + [
        pytest.param("online", tamper, field, id=name)
        for array in ("running_statistics", "running_shift")
        for name, tamper, field in array_cases(array)
    ]
)


def test_there_are_at_least_60_tamperings():
    assert len(CASES) >= 60


@pytest.mark.parametrize("kind, tamper, field", CASES)
def test_a_tampered_store_is_refused_with_the_field_named_or_loads_the_same_model(
    models, tmp_path, kind, tamper, field
):
    saved = models[kind]
    path = tmp_path / "model.zarr"
    saved.save(path)
    tamper(path)
    if field is HARMLESS:
        assert_identical(DiagGMM.load(path), saved)
        return
    with pytest.raises(ModelStoreError) as caught:
        DiagGMM.load(path)
    message = str(caught.value)
    assert field in message, message
    assert str(path) in message, message  # names the model (and, in the field, the file)
    assert len(message) < 600 and "\n" not in message  # one readable line, never a dump of junk


def test_the_attributes_written_are_those_covered_by_the_checksum(models):
    for model in models.values():
        assert set(model_record.model_attributes(record_of(model))) == set(
            model_record.MODEL_ATTRIBUTES
        )


def test_without_the_checksums_a_swap_would_load_a_different_model(models, tmp_path, monkeypatch):
    """Control: the checksum, not a value check, is what refuses swapped arrays of the same
    shape.
    """
    saved = models["fitted"]
    assert np.all(
        saved.means_ > 0
    )  # (the data sit at +50): as variances, the means pass every value check
    path = tmp_path / "model.zarr"
    saved.save(path)
    swap_arrays("means", "covariances")(path)
    monkeypatch.setattr(model_store, "verify_checksums", lambda *args: None)
    np.testing.assert_array_equal(
        DiagGMM.load(path).covariances_, saved.means_
    )  # silently another model
    monkeypatch.undo()
    with pytest.raises(ModelStoreError, match="array 'means' does not match its checksum"):
        DiagGMM.load(path)


def test_a_deleted_chunk_reads_as_nan_not_zeros(models, tmp_path):
    path = tmp_path / "model.zarr"
    models["fitted"].save(path)
    chunk_of(path, "means").unlink()
    assert np.all(np.isnan(zarr.open_array(str(path / "means"), mode="r")[...]))


def test_stores_on_fsspec_urls_are_checked_the_same_way(models):
    import fsspec

    url = f"memory://tampered-{os.getpid()}"
    models["fitted"].save(url)
    assert_identical(DiagGMM.load(url), models["fitted"])
    fs = fsspec.filesystem("memory")
    key = f"/tampered-{os.getpid()}/covariances/c/0/0"
    data = bytearray(fs.cat_file(key))
    data[3] ^= 0x10
    fs.pipe_file(key, bytes(data))
    with pytest.raises(ModelStoreError, match="array 'covariances'"):
        DiagGMM.load(url)
    fs.pipe_file(f"/tampered-{os.getpid()}/zarr.json", b"\x00\x01binary")
    with pytest.raises(ModelStoreError, match="zarr.json is not valid JSON"):
        DiagGMM.load(url)


# ------------------------------------------------------------------ stores of format version 2
def save_as_format_2(gmm, path):
    """What the format-2 writer did: zarr's default codecs (zstd) and fill value (0), no
    checksums.
    """
    attrs = model_record.model_attributes(record_of(gmm))
    attrs["format_version"] = 2
    attrs["params"].pop("covariance_type", None)
    group = zarr.open_group(str(path), mode="w")
    for name in ARRAYS + (ONLINE_ARRAYS if attrs["online"] is not None else ()):
        value = np.asarray(getattr(gmm, name + "_"), dtype=np.float64)
        group.create_array(name, shape=value.shape, dtype="float64", chunks=value.shape)[...] = (
            value
        )
    group.attrs.update(attrs)


@pytest.mark.parametrize("kind", ["fitted", "online"])
def test_a_format_2_store_loads_with_a_warning_and_saving_it_again_adds_the_checksums(
    models, tmp_path, kind
):
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    save_as_format_2(models[kind], old)
    assert "checksums" not in json.loads((old / "zarr.json").read_text())["attributes"]
    with pytest.warns(
        UnverifiedModelWarning, match=r"format version 2, written without checksums.*Save it again"
    ):
        loaded = DiagGMM.load(old)
    assert_identical(loaded, models[kind])
    loaded.save(new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_identical(DiagGMM.load(new), models[kind])
    assert json.loads((new / "zarr.json").read_text())["attributes"]["format_version"] == (
        model_record.FORMAT_VERSION
    )


def test_a_format_2_store_without_the_chunk_zarr_skipped_loads(tmp_path):
    """zarr does not write a chunk equal to the fill value: a zero running shift had no chunk
    file.
    """
    X, _ = mixture_data(600, 3, 2, seed=6)
    online = DiagGMM(2, random_state=0).partial_fit(X - X.mean(axis=0))
    assert np.all(online.running_shift_ == 0)
    path = tmp_path / "old.zarr"
    save_as_format_2(online, path)
    assert not (path / "running_shift" / "c").exists()
    with pytest.warns(UnverifiedModelWarning):
        assert_identical(DiagGMM.load(path), online)


def _zstd_of_zeros(n):
    from numcodecs.zstd import compress

    return compress(bytes(n), 1)


@pytest.mark.parametrize(
    "name, tamper, field",
    [
        (
            "weights chunk deleted",
            on_chunk("weights", lambda c, p: c.unlink()),
            "'weights' sums to 0",
        ),
        (
            "covariances chunk deleted",
            on_chunk("covariances", lambda c, p: c.unlink()),
            "'covariances' has 6 value(s) <= 0",
        ),
        (
            "means chunk truncated",
            on_chunk("means", lambda c, p: c.write_bytes(c.read_bytes()[:-4])),
            "'means'",
        ),
        (
            "means chunk a zstd bomb (100 kB of zeros)",
            on_chunk("means", lambda c, p: c.write_bytes(_zstd_of_zeros(10**5))),
            "'means' does not decode to its 48 bytes",
        ),
        (
            "means chunk a zstd frame of 10 MB",
            on_chunk("means", lambda c, p: c.write_bytes(_zstd_of_zeros(10**7))),
            "'means'",
        ),
        ("means chunk symlink to /dev/zero", on_chunk("means", symlink_to("/dev/zero")), "'means'"),
        (
            "means codecs blosc",
            edit_json("means/zarr.json", lambda m: m["codecs"].__setitem__(1, {"name": "blosc"})),
            "'codecs'",
        ),
        ("zarr.json binary junk", write_bytes("zarr.json", b"\x89PNG\r\n\x1a\n"), "zarr.json"),
    ],
)
def test_a_tampered_format_2_store_is_refused(models, tmp_path, name, tamper, field):
    path = tmp_path / "old.zarr"
    save_as_format_2(models["fitted"], path)
    tamper(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedModelWarning)
        with pytest.raises(ModelStoreError) as caught:
            DiagGMM.load(path)
    assert field in str(caught.value), str(caught.value)


# -------------------------------------------------------------- values checked beyond the checksums
def forge(name, change):
    """Rewrite array ``name`` as ``change(values)`` with matching checksums: only the value
    checks can refuse it.
    """

    def tamper(path):
        values = np.asarray(zarr.open_array(str(path / name), mode="r")[...])
        changed = np.ascontiguousarray(change(values.copy()), dtype="<f8")
        chunk_of(path, name).write_bytes(changed.tobytes())
        forge_attributes(
            lambda attrs: attrs["checksums"].update({name: model_record.array_checksum(changed)})
        )(path)

    return tamper


def forge_attributes(change):
    def tamper(path):
        meta = json.loads((path / "zarr.json").read_text())
        change(meta["attributes"])
        meta["attributes"]["checksums"]["attributes"] = model_record.attributes_checksum(
            meta["attributes"]
        )
        (path / "zarr.json").write_text(json.dumps(meta))

    return tamper


def both(*tampers):
    def tamper(path):
        for each in tampers:
            each(path)

    return tamper


def _set(index, value):
    def change(values):
        values[index] = value
        return values

    return change


@pytest.mark.parametrize(
    "kind, tamper, message",
    [
        ("fitted", forge("covariances", _set((0, 0), 0.0)), "'covariances' has 1 value(s) <= 0"),
        ("fitted", forge("covariances", _set((0, 0), -2.0)), "'covariances' has 1 value(s) <= 0"),
        (
            "fitted",
            forge("covariances", _set((0, 0), np.inf)),
            "'covariances' holds NaN or infinite",
        ),
        (
            "fitted",
            forge("covariances", _set((1, 2), 1e-320)),
            "'covariances' has 1 value(s) so small that their precisions",
        ),
        ("fitted", forge("means", _set((0, 1), np.nan)), "'means' holds NaN or infinite"),
        (
            "fitted",
            forge("means", _set((0, 1), 1e200)),
            "'means' and 'covariances' give non-finite log-density",
        ),
        ("fitted", forge("weights", lambda w: w * 1.1), "'weights' sums to"),
        (
            "fitted",
            forge("weights", lambda w: np.array([1.5, -0.5])),
            "'weights' has negative values",
        ),
        # fine in float64, but the precision 1e39 overflows the float32 a float32 model scores in
        (
            "fitted",
            both(
                forge_attributes(lambda a: a.update(dtype="float32")),
                forge("covariances", _set((0, 0), 1e-39)),
            ),
            "non-finite log-density coefficients (products",
        ),
        (
            "online",
            forge("running_statistics", _set((2, 1), 2.0)),
            "'running_statistics' has a last row",
        ),
        (
            "online",
            forge("running_statistics", lambda s: s * [[2.0]] * [[1], [1], [0.5]]),
            "masses summing to",
        ),
        ("online", forge("running_statistics", _set((0, 1), 0.9)), "per-feature masses above"),
        (
            "online",
            forge("running_statistics", _set((1, 8), -1.0)),
            "negative masses or second moments",
        ),
        (
            "online",
            forge("running_shift", _set(1, np.inf)),
            "'running_shift' holds NaN or infinite",
        ),
    ],
)
def test_values_are_checked_even_when_the_checksums_match(models, tmp_path, kind, tamper, message):
    path = tmp_path / "model.zarr"
    models[kind].save(path)
    tamper(path)
    with pytest.raises(ModelStoreError) as caught:
        DiagGMM.load(path)
    assert message in str(caught.value), str(caught.value)


def test_forged_checksums_are_accepted_so_the_value_checks_are_what_refuses(models, tmp_path):
    """Control of the test above: a forged change that keeps a valid mixture loads (the forgery
    works).
    """
    path = tmp_path / "model.zarr"
    models["fitted"].save(path)
    forge("covariances", lambda c: c * 2)(path)
    np.testing.assert_array_equal(
        DiagGMM.load(path).covariances_, models["fitted"].covariances_ * 2
    )
