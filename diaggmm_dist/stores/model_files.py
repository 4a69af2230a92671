"""The files of a model store, each read whole with a size bound, and its arrays read from them.

The checked bytes are also what zarr decodes (from an in-memory store): zarr never opens a file
of the store itself, so it cannot read more than was checked. A chunk must hold exactly its
array's bytes; a symlink to a device or a huge file is refused before it is read
(:mod:`diaggmm_dist.bounded_files`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import zarr
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from ..bounded_files import FileTooLarge, NotARegularFile, read_bounded
from ..locations import location, storage_access_error
from .model_checks import ModelStoreError, check_values, shorten
from .model_record import CHECKED_VERSION

#: Bound on a metadata file (zarr.json). The largest legitimate one lists one lower bound per
#: EM iteration (~20 bytes each) and the feature names: a million iterations take ~25 MB.
MAX_METADATA_BYTES = 64 * 2**20
#: Bound on the bytes a legacy zstd chunk adds to its array's: ZSTD_COMPRESSBOUND is
#: n + n/256 + 64 at most, plus an 18-byte frame header and a 4-byte checksum.
ZSTD_OVERHEAD = 128
#: Each array's dimension names (Zarr v3 ``dimension_names``, which ``xr.open_zarr`` reads).
#: Stores written before they were added have none, and load as before.
DIMENSION_NAMES = {
    "weights": ("component",),
    "means": ("component", "feature"),
    "covariances": ("component", "feature"),
    "running_statistics": ("statistics_row", "statistics_column"),
    "running_shift": ("feature",),
    # BayesianDiagGMM's (.bayesian_store) and DiagGMMClassifier's (.classifier_store)
    **dict.fromkeys(
        (
            "weight_concentration",
            "weight_concentration_a",
            "weight_concentration_b",
            "mean_precision",
            "degrees_of_freedom",
        ),
        ("component",),
    ),
    "mean_prior": ("feature",),
    "covariance_prior": ("feature",),
    "class_count": ("class",),
}

#: The feature-name coordinate (format 4 on, for models fitted on named features): a Zarr v3
#: ``string`` array of dimension ``feature``, which ``xr.open_zarr`` shows as the coordinate.
FEATURE_COORDINATE = "feature"
#: The first format version that writes :data:`FEATURE_COORDINATE`.
COORDINATE_VERSION = 4


class StoreFiles:
    """The files of the model store at ``where``, each read whole with a bound.

    Local files are checked before they are read (a regular file within the bound:
    :mod:`diaggmm_dist.bounded_files`). Elsewhere each file costs one GET of its first
    ``limit + 1`` bytes at most, through the Zarr store (an fsspec URL with its options, or a
    store object).

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
        The store.
    description : str
        The model, as errors name it.
    """

    def __init__(self, where, description: str):
        self.location = location(where)
        self.url, self.where = self.location.url, description
        if self.location.is_local:
            self.fs, self.root = LocalFileSystem(), str(self.location.local_path)
            self.store = None
        else:
            self.fs, self.root = None, None
            self.store = self.location.zarr_store(read_only=True)
        self.read_keys = {}  # key -> bytes, for zarr

    def _path(self, key):
        return f"{self.root.rstrip('/')}/{key}"

    def _read(self, key, limit):
        if self.store is None:
            return read_bounded(self._path(key), limit, self.fs)
        found = sync(
            self.store.get(key, default_buffer_prototype(), RangeByteRequest(0, limit + 1))
        )
        if found is None:
            raise FileNotFoundError(key)
        if len(found) > limit:
            raise FileTooLarge(None, limit)
        return found.to_bytes()

    def read(self, key: str, limit: int, what: str) -> bytes | None:
        """The bytes of ``key`` (None if absent); refused if not a regular file or over ``limit``.

        Raises
        ------
        ModelStoreError
            Not a regular file, more than ``limit`` bytes, or unreadable.
        """
        try:
            data = self._read(key, limit)
        except FileNotFoundError:
            return None
        except NotARegularFile as err:
            kind = (
                "a directory"
                if err.kind == "directory"
                else "not a regular file (a device, pipe or socket?)"
            )
            raise ModelStoreError(
                f"{self.where}: {key} is {kind}: refusing to read it as {what}."
            ) from None
        except FileTooLarge as err:
            if err.size is None:  # it grew while it was read
                raise ModelStoreError(
                    f"{self.where}: {key} holds more than the {limit} bytes {what} can take."
                ) from None
            raise ModelStoreError(
                f"{self.where}: {key} holds {err.size} bytes, more than the {limit} {what} can "
                "take: refusing to read it."
            ) from None
        except Exception as err:  # a symlink loop, a permission error, no credentials
            hint = (
                None
                if self.location.is_local
                else storage_access_error(err, f"read {key} of {self.where}")
            )
            if hint is not None:
                raise hint from err
            if not isinstance(err, OSError):
                raise
            raise ModelStoreError(f"{self.where}: {key} cannot be read ({err}).") from err
        self.read_keys[key] = data
        return data

    def json(self, key: str, what: str) -> dict | None:
        """The parsed JSON object of ``key`` (None if absent).

        Raises
        ------
        ModelStoreError
            Not a readable JSON object.
        """
        raw = self.read(key, MAX_METADATA_BYTES, what)
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
            raise ModelStoreError(
                f"{self.where}: {key} is not valid JSON ({type(err).__name__}: "
                f"{shorten(str(err))})."
            ) from None
        if not isinstance(meta, dict):
            raise ModelStoreError(
                f"{self.where}: {key} must hold a JSON object, found {type(meta).__name__}."
            )
        return meta

    def holds_anything(self) -> bool:
        """True when something (a file, or a non-empty directory) is at the store's root."""
        if self.store is not None:

            async def first():
                async for _ in self.store.list_prefix(""):
                    return True
                return False

            return sync(first())
        try:
            return self.fs.isfile(self.root) or bool(self.fs.ls(self.root, detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return False

    def zarr_array(self, name: str) -> zarr.Array:
        """The Zarr array ``name`` over the bytes read so far (an in-memory store)."""
        buffer = default_buffer_prototype().buffer
        store = MemoryStore(
            {
                key: buffer.from_bytes(data)
                for key, data in self.read_keys.items()
                if key.startswith(name + "/")
            },
            read_only=True,
        )
        return zarr.open_array(store, path=name, mode="r", zarr_format=3)


def _array_metadata_problem(meta, shape, version, name=None):
    """What is wrong with an array's zarr.json for a model array of ``shape`` (None if nothing)."""
    codecs = meta.get("codecs")
    names = (
        [c.get("name") if isinstance(c, dict) else c for c in codecs]
        if isinstance(codecs, list)
        else None
    )
    allowed = [["bytes"]] if version >= CHECKED_VERSION else [["bytes", "zstd"], ["bytes"]]
    grid = meta.get("chunk_grid")
    checks = [
        ("node_type", meta.get("node_type") == "array", "'array'"),
        ("zarr_format", meta.get("zarr_format") == 3, "3"),
        (
            "shape",
            meta.get("shape") == list(shape),
            f"{list(shape)} (n_components and n_features in zarr.json)",
        ),
        ("data_type", meta.get("data_type") == "float64", "'float64'"),
        (
            "chunk_grid",
            isinstance(grid, dict)
            and grid.get("name") == "regular"
            and isinstance(grid.get("configuration"), dict)
            and grid["configuration"].get("chunk_shape") == list(shape),
            f"one regular chunk of shape {list(shape)}",
        ),
        ("codecs", names in allowed, " or ".join(str(a) for a in allowed)),
        ("storage_transformers", meta.get("storage_transformers", []) == [], "[]"),
    ]
    if version >= CHECKED_VERSION:
        checks.append(("fill_value", meta.get("fill_value") == "NaN", "'NaN'"))
    if name in DIMENSION_NAMES:  # absent (older stores) or the names save writes
        dims = meta.get("dimension_names")
        expected = list(DIMENSION_NAMES[name])
        checks.append(("dimension_names", dims is None or dims == expected, f"{expected}"))
    for field, ok, expected in checks:
        if not ok:
            return f"{field!r} must be {expected}, found {shorten(repr(meta.get(field)), 80)}"
    return None


def _check_zstd_size(chunk, nbytes, where, key, name):
    """Decode a legacy zstd chunk into ``nbytes`` at most: a larger frame is refused unallocated."""
    from numcodecs.zstd import decompress

    try:
        decompress(chunk, np.empty(nbytes, dtype=np.uint8))
    except Exception as err:  # the codec's own errors: too large, corrupt
        raise ModelStoreError(
            f"{where}: chunk {key} of array {name!r} does not decode to its {nbytes} bytes "
            f"({type(err).__name__}: {shorten(str(err))})."
        ) from None


def read_model_array(files: StoreFiles, name: str, shape: tuple, version: int) -> np.ndarray:
    """Array ``name`` of the store (float64, ``shape``, finite), read from bounded files.

    Raises
    ------
    ModelStoreError
        Its metadata or its chunk is not what the model store writes, or its values are not
        finite.
    """
    where = files.where
    meta_key = f"{name}/zarr.json"
    meta = files.json(meta_key, "an array's metadata")
    if meta is None:
        raise ModelStoreError(f"{where}: array {name!r} is missing ({meta_key} not found).")
    problem = _array_metadata_problem(meta, shape, version, name)
    if problem:
        raise ModelStoreError(f"{where}: {meta_key} (array {name!r}): {problem}.")
    try:
        array = files.zarr_array(name)
        chunk_key = f"{name}/{array.metadata.encode_chunk_key((0,) * len(shape))}"
    except Exception as err:  # zarr's own parsing of the metadata
        raise ModelStoreError(
            f"{where}: {meta_key} (array {name!r}) is not valid Zarr metadata "
            f"({type(err).__name__}: {shorten(str(err))})."
        ) from None
    nbytes = 8 * math.prod(shape)
    compressed = version < CHECKED_VERSION and len(meta["codecs"]) > 1
    chunk = files.read(
        chunk_key,
        nbytes + (ZSTD_OVERHEAD + nbytes // 256 if compressed else 0),
        f"the chunk of array {name!r} (shape {list(shape)})",
    )
    if chunk is None and version >= CHECKED_VERSION:
        raise ModelStoreError(f"{where}: array {name!r} has lost its chunk {chunk_key}.")
    if chunk is not None and not compressed and len(chunk) != nbytes:
        raise ModelStoreError(
            f"{where}: chunk {chunk_key} of array {name!r} holds {len(chunk)} bytes, expected "
            f"{nbytes} ({math.prod(shape)} float64 values): truncated or replaced."
        )
    if chunk is not None and compressed:
        _check_zstd_size(chunk, nbytes, where, chunk_key, name)
    # (a legacy store may lack a chunk: zarr skipped writing chunks equal to the fill value 0)
    try:
        value = np.asarray(files.zarr_array(name)[...], dtype=np.float64)
    except Exception as err:  # a corrupt chunk fails in the codec
        raise ModelStoreError(
            f"{where}: array {name!r} could not be read from {chunk_key} "
            f"({type(err).__name__}: {shorten(str(err))})."
        ) from None
    check_values(value, name, shape, where)
    return value


def _coordinate_metadata_problem(meta, n_features):
    """What is wrong with the feature coordinate's zarr.json (None if nothing)."""
    codecs = meta.get("codecs")
    grid = meta.get("chunk_grid")
    checks = [
        ("node_type", meta.get("node_type") == "array", "'array'"),
        ("zarr_format", meta.get("zarr_format") == 3, "3"),
        ("shape", meta.get("shape") == [n_features], f"[{n_features}] (n_features)"),
        ("data_type", meta.get("data_type") == "string", "'string'"),
        (
            "chunk_grid",
            isinstance(grid, dict)
            and grid.get("name") == "regular"
            and isinstance(grid.get("configuration"), dict)
            and grid["configuration"].get("chunk_shape") == [n_features],
            f"one regular chunk of shape [{n_features}]",
        ),
        (
            "codecs",
            isinstance(codecs, list)
            and [c.get("name") if isinstance(c, dict) else c for c in codecs] == ["vlen-utf8"],
            "['vlen-utf8']",
        ),
        ("storage_transformers", meta.get("storage_transformers", []) == [], "[]"),
        ("dimension_names", meta.get("dimension_names") == ["feature"], "['feature']"),
    ]
    for field, ok, expected in checks:
        if not ok:
            return f"{field!r} must be {expected}, found {shorten(repr(meta.get(field)), 80)}"
    return None


def check_feature_coordinate(files: StoreFiles, names: list) -> None:
    """Check that the store's feature coordinate holds ``names`` (the ``feature_names``).

    The attribute is covered by the checksums; the coordinate, written for xarray, must say the
    same.

    Raises
    ------
    ModelStoreError
        The coordinate is missing, its metadata or chunk is not what ``save`` writes, or it
        holds other names.
    """
    where, name = files.where, FEATURE_COORDINATE
    meta_key = f"{name}/zarr.json"
    meta = files.json(meta_key, "an array's metadata")
    if meta is None:
        raise ModelStoreError(
            f"{where}: the feature coordinate {name!r} is missing ({meta_key} not found)."
        )
    problem = _coordinate_metadata_problem(meta, len(names))
    if problem:
        raise ModelStoreError(f"{where}: {meta_key} (coordinate {name!r}): {problem}.")
    chunk_key = f"{name}/c/0"
    try:
        array = files.zarr_array(name)  # zarr's own parsing of the metadata
        chunk_key = f"{name}/{array.metadata.encode_chunk_key((0,))}"
        chunk = files.read(chunk_key, MAX_METADATA_BYTES, f"the chunk of coordinate {name!r}")
        values = None if chunk is None else files.zarr_array(name)[...].tolist()
    except ModelStoreError:
        raise
    except Exception as err:  # invalid metadata, a corrupt chunk
        raise ModelStoreError(
            f"{where}: coordinate {name!r} could not be read from {chunk_key} "
            f"({type(err).__name__}: {shorten(str(err))})."
        ) from None
    if chunk is None:
        raise ModelStoreError(f"{where}: coordinate {name!r} has lost its chunk {chunk_key}.")
    if values != list(names):
        raise ModelStoreError(
            f"{where}: coordinate {name!r} holds {shorten(repr(values), 120)}, not the "
            f"feature_names of zarr.json {shorten(repr(list(names)), 120)}."
        )
