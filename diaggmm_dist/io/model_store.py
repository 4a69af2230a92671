"""The model file: a Zarr v3 group of float64 arrays and JSON attributes, never a pickle.

Layout (``FORMAT_VERSION`` 3)::

    model.zarr/
        weights             (K,)     float64
        means               (K, D)   float64
        covariances         (K, D)   float64
        running_statistics  (K + 1, max(3D + 1, 6)) float64   only after partial_fit: the
        running_shift       (D,)     float64                  state of stepwise EM
        zarr.json      attributes: format, format_version, n_components, n_features,
                       feature_names, dtype, reg_covar, params, n_iter, converged,
                       lower_bound, lower_bounds, n_reseeded, data_fingerprint, input_layout
                       (how features were taken from gridded or tabular input), online
                       ({"n_batches_seen", "n_samples_seen"} after partial_fit, else null),
                       library_version, checksums

Each array is one uncompressed chunk (raw little-endian float64, ``K * D * 8`` bytes: model
parameters are tiny and do not compress) with a NaN fill value, so a deleted chunk never reads
as zeros. ``checksums`` holds the SHA-256 of every array's values (:func:`array_checksum`)
and of the other attributes (:func:`attributes_checksum`): a swapped, replaced, bit-rotted or
hand-edited array or attribute is refused at load.

Loading reads data only. Every file is read whole with a size bound (a chunk must hold exactly
its array's bytes; a symlink to a device or a huge file is refused before it is read), and
every field is checked: JSON types, the settings by the constructor's own
:func:`~diaggmm_dist.validation.check_settings`, shapes, finiteness, variances whose
precisions and log-density coefficients are finite in the model's dtype, weights on the
simplex, the running statistics' invariants, then the checksums. Anything else is a
:class:`ModelStoreError` naming the file and the field.

Stores of format versions 1 and 2 (no checksums; arrays zstd-compressed with a fill value of
0) still load, with an :class:`UnverifiedModelWarning`: re-save them to add the checksums.
Version 1 stores (no ``online``, fewer ``params``) are read as models without running
statistics.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import warnings

import numpy as np

from ..parameters import MixtureParameters
from ..validation import check_settings, is_int
from .zarr_groups import NotAGroupError, write_group_atomically

FORMAT = "diaggmm-dist-model"
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)
#: The first format version with checksums, raw (uncompressed) chunks and a NaN fill value.
CHECKED_VERSION = 3
ARRAYS = ("weights", "means", "covariances")
#: The arrays of the stepwise-EM state (see DiagGMM.partial_fit), present only after it.
ONLINE_ARRAYS = ("running_statistics", "running_shift")
#: Constructor parameters kept in the file (JSON values only).
STORED_PARAMS = (
    "tol",
    "max_iter",
    "n_init",
    "init_params",
    "random_state",
    "warm_start",
    "verbose",
    "verbose_interval",
    "chunk_size",
    "missing",
    "learning_decay",
    "learning_offset",
)
#: Stored when the estimator has it (``"diag"`` is the only value); a store without it is "diag".
OPTIONAL_PARAMS = ("covariance_type",)
#: Bound on a metadata file (zarr.json). The largest legitimate one lists one lower bound per
#: EM iteration (~20 bytes each) and the feature names: a million iterations take ~25 MB.
MAX_METADATA_BYTES = 64 * 2**20
#: Bound on the bytes a legacy zstd chunk adds to its array's: ZSTD_COMPRESSBOUND is
#: n + n/256 + 64 at most, plus an 18-byte frame header and a 4-byte checksum.
ZSTD_OVERHEAD = 128


class ModelStoreError(ValueError):
    """A model store that is not a valid diaggmm-dist model (names the file and the field at fault)."""


class UnverifiedModelWarning(UserWarning):
    """A model store of an older format (no checksums) was loaded: its arrays could not be verified."""


# ---------------------------------------------------------------------------- checksums
def array_checksum(value):
    """``"sha256:<hex>"`` of an array's float64 values: little-endian C-order bytes, dtype and shape."""
    value = np.ascontiguousarray(value, dtype="<f8")
    digest = hashlib.sha256(f"{value.dtype.str}{list(value.shape)}".encode())
    digest.update(value.tobytes())
    return "sha256:" + digest.hexdigest()


def _canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


#: The attributes :func:`save_model` writes (besides ``checksums``), all covered by its checksum.
#: Others a user adds to the group are not the library's: they are ignored, not refused.
MODEL_ATTRIBUTES = (
    "format",
    "format_version",
    "library_version",
    "n_components",
    "n_features",
    "feature_names",
    "dtype",
    "reg_covar",
    "params",
    "n_iter",
    "converged",
    "lower_bound",
    "lower_bounds",
    "n_reseeded",
    "data_fingerprint",
    "input_layout",
    "online",
)


def attributes_checksum(attrs):
    """``"sha256:<hex>"`` of the model's attributes (:data:`MODEL_ATTRIBUTES`) as canonical JSON."""
    covered = {name: attrs[name] for name in MODEL_ATTRIBUTES if name in attrs}
    return "sha256:" + hashlib.sha256(_canonical_json(covered).encode()).hexdigest()


# ---------------------------------------------------------------------------- writing
def _json_params(gmm):
    params = {name: getattr(gmm, name) for name in STORED_PARAMS}
    params.update(
        {
            name: value
            for name, value in gmm.get_params(deep=False).items()
            if name in OPTIONAL_PARAMS
        }
    )
    if not (params["random_state"] is None or isinstance(params["random_state"], numbers.Integral)):
        params["random_state"] = None  # a RandomState instance is not data
    return {
        k: (int(v) if isinstance(v, np.integer) else float(v) if isinstance(v, np.floating) else v)
        for k, v in params.items()
    }


def _online_attributes(gmm):
    if getattr(gmm, "running_statistics_", None) is None:
        return None
    return {"n_batches_seen": int(gmm.n_batches_seen_), "n_samples_seen": int(gmm.n_samples_seen_)}


def model_attributes(gmm):
    """The JSON attributes describing a fitted model (without its checksums)."""
    from .. import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "n_components": int(gmm.means_.shape[0]),
        "n_features": int(gmm.means_.shape[1]),
        "feature_names": [str(n) for n in gmm.feature_names_in_]
        if hasattr(gmm, "feature_names_in_")
        else None,
        "dtype": str(np.dtype(gmm.dtype)),
        "reg_covar": float(gmm.reg_covar),
        "params": _json_params(gmm),
        "n_iter": int(gmm.n_iter_),
        "converged": bool(gmm.converged_),
        "lower_bound": float(gmm.lower_bound_),
        "lower_bounds": [float(v) for v in gmm.lower_bounds_],
        "n_reseeded": int(getattr(gmm, "n_reseeded_", 0)),
        "data_fingerprint": getattr(gmm, "data_fingerprint_", None),
        "input_layout": getattr(gmm, "input_layout_", None),
        "online": _online_attributes(gmm),
    }


def save_model(gmm, url, overwrite=False):
    """Write the fitted ``gmm`` to the Zarr group at ``url`` (local path or fsspec URL)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(gmm, "means_")
    attrs = json.loads(json.dumps(model_attributes(gmm)))  # as it reads back (tuples become lists)
    names = ARRAYS + (ONLINE_ARRAYS if attrs["online"] is not None else ())
    arrays = {
        name: np.ascontiguousarray(getattr(gmm, name + "_"), dtype=np.float64) for name in names
    }
    attrs["checksums"] = {name: array_checksum(value) for name, value in arrays.items()}
    attrs["checksums"]["attributes"] = attributes_checksum(attrs)

    def write(group):
        for name, value in arrays.items():
            # One raw chunk: its size is known exactly, and nothing is decompressed at load.
            group.create_array(
                name,
                shape=value.shape,
                dtype="float64",
                chunks=value.shape,
                fill_value=np.nan,
                compressors=None,
                config={"write_empty_chunks": True},
            )[...] = value
        group.attrs.update(attrs)  # last: a store with attributes is complete

    write_group_atomically(url, write, overwrite)


# ---------------------------------------------------------------------------- checks shared with checkpoints
def read_array(group, name, shape, where):
    """Array ``name`` of the open Zarr ``group`` as float64, checked for shape and finiteness."""
    try:
        value = np.asarray(group[name][...], dtype=np.float64)
    except KeyError:
        raise ModelStoreError(f"{where}: array {name!r} is missing.") from None
    except Exception as err:  # a truncated or corrupt chunk fails in the codec
        raise ModelStoreError(
            f"{where}: array {name!r} could not be read ({type(err).__name__}: {err})."
        ) from err
    _check_values(value, name, shape, where)
    return value


def _check_values(value, name, shape, where):
    if value.shape != shape:
        raise ModelStoreError(f"{where}: array {name!r} has shape {value.shape}, expected {shape}.")
    if not np.all(np.isfinite(value)):
        raise ModelStoreError(
            f"{where}: array {name!r} holds NaN or infinite values ({int(np.sum(~np.isfinite(value)))} "
            f"of {value.size}; a lost chunk reads as NaN)."
        )


def check_mixture(weights, means, covariances, where):
    """Raise ModelStoreError unless the parameters form a valid diagonal mixture.

    Finite parameters, variances > 0 whose inverses (the precisions) are finite, and
    weights >= 0 that sum to 1 (within 1e-6).
    """
    for name, value in (("weights", weights), ("means", means), ("covariances", covariances)):
        if not np.all(np.isfinite(value)):
            raise ModelStoreError(f"{where}: array {name!r} holds NaN or infinite values.")
    if np.any(covariances <= 0):
        raise ModelStoreError(
            f"{where}: array 'covariances' has {int(np.sum(covariances <= 0))} value(s) <= 0."
        )
    with np.errstate(over="ignore"):
        infinite = ~np.isfinite(1.0 / covariances)
    if infinite.any():
        raise ModelStoreError(
            f"{where}: array 'covariances' has {int(infinite.sum())} value(s) so small that "
            f"their precisions (1/variance) overflow, e.g. {covariances[infinite].min():.3g}."
        )
    if np.any(weights < 0):
        raise ModelStoreError(f"{where}: array 'weights' has negative values.")
    if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise ModelStoreError(f"{where}: array 'weights' sums to {weights.sum():.8f}, not 1.")


def check_scores_finite(weights, means, covariances, dtype, where):
    """Raise ModelStoreError unless the model's log-density coefficients are finite in ``dtype``.

    These are the numbers predict and score compute with (:func:`kernels.log_prob_coefficients`);
    a component of weight 0 has a log-weight of -inf by design (it is never chosen).
    """
    from ..em import data_center
    from ..kernels import log_prob_coefficients

    precisions = 1.0 / covariances
    with np.errstate(over="ignore", invalid="ignore"):
        shift = data_center(weights, means, precisions)
        coef = log_prob_coefficients(weights, means, precisions, shift, np.dtype(dtype))
    live = np.asarray(weights) > 0
    parts = {
        "shift": coef.shift,
        "products": coef.products,
        "feature": coef.feature,
        "offset": coef.offset[live],
    }
    bad = [name for name, value in parts.items() if not np.all(np.isfinite(value))]
    if bad:
        raise ModelStoreError(
            f"{where}: arrays 'means' and 'covariances' give non-finite log-density coefficients ({', '.join(bad)}) "
            f"in {np.dtype(dtype).name}: their scores would be NaN or infinite."
        )


# ---------------------------------------------------------------------------- reading files
def _buffer(data):
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().buffer.from_bytes(data)


class _StoreFiles:
    """The files of the store at ``url`` (local path or fsspec URL), each read whole with a size bound.

    The checked bytes are also what zarr decodes (from an in-memory store): zarr never opens a
    file of the store itself, so it cannot read more than was checked.
    """

    def __init__(self, url, where):
        import fsspec

        self.url, self.where = os.fspath(url), where
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.read_keys = {}  # key -> bytes, for zarr

    def _path(self, key):
        return f"{self.root.rstrip('/')}/{key}"

    def read(self, key, limit, what):
        """The bytes of ``key`` (None if absent); refused if not a regular file or over ``limit`` bytes."""
        path = self._path(key)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        except OSError as err:  # a symlink loop, a permission error
            raise ModelStoreError(f"{self.where}: {key} cannot be read ({err}).") from err
        if info.get("type") != "file":
            kind = (
                "a directory"
                if info.get("type") == "directory"
                else "not a regular file (a device, pipe or socket?)"
            )
            raise ModelStoreError(f"{self.where}: {key} is {kind}: refusing to read it as {what}.")
        if info.get("size") is not None and info["size"] > limit:
            raise ModelStoreError(
                f"{self.where}: {key} holds {info['size']} bytes, more than the {limit} {what} can "
                "take: refusing to read it."
            )
        try:
            data = self.fs.cat_file(path, start=0, end=limit + 1)  # bounded even if it grew since
        except OSError as err:
            raise ModelStoreError(f"{self.where}: {key} cannot be read ({err}).") from err
        if len(data) > limit:
            raise ModelStoreError(
                f"{self.where}: {key} holds more than the {limit} bytes {what} can take."
            )
        self.read_keys[key] = data
        return data

    def json(self, key, what):
        """The parsed JSON object of ``key`` (None if absent)."""
        raw = self.read(key, MAX_METADATA_BYTES, what)
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except (
            ValueError,
            RecursionError,
        ) as err:  # JSONDecodeError, UnicodeDecodeError: binary junk
            raise ModelStoreError(
                f"{self.where}: {key} is not valid JSON ({type(err).__name__}: {_short(str(err))})."
            ) from None
        if not isinstance(meta, dict):
            raise ModelStoreError(
                f"{self.where}: {key} must hold a JSON object, found {type(meta).__name__}."
            )
        return meta

    def holds_anything(self):
        """True when something (a file, or a non-empty directory) is at the store's root."""
        try:
            return self.fs.isfile(self.root) or bool(self.fs.ls(self.root, detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return False

    def zarr_array(self, name):
        """The Zarr array ``name`` over the bytes read so far (an in-memory store)."""
        import zarr
        from zarr.storage import MemoryStore

        store = MemoryStore(
            {
                key: _buffer(data)
                for key, data in self.read_keys.items()
                if key.startswith(name + "/")
            },
            read_only=True,
        )
        return zarr.open_array(store, path=name, mode="r", zarr_format=3)


def _short(text, limit=120):
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value):
    return f"{type(value).__name__} {_short(repr(value), 80)}"


# ---------------------------------------------------------------------------- attributes
_REQUIRED = object()


def _is_number(value):
    """A JSON number a float64 can hold (not a bool, not an integer of 400 digits)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_name_list(value, length=None):
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(isinstance(v, str) or is_int(v) for v in value)
    )


FINGERPRINT_KEYS = {"shape", "dtype", "row_chunks", "chunks_sha256", "sample_sha256"}


def _is_fingerprint(value):
    return value is None or (
        isinstance(value, dict)
        and set(value) == FINGERPRINT_KEYS
        and isinstance(value["shape"], list)
        and all(is_int(v) and v >= 0 for v in value["shape"])
        and all(isinstance(value[key], str) for key in FINGERPRINT_KEYS - {"shape"})
    )


def _is_layout(value):
    return value is None or (
        isinstance(value, dict)
        and set(value) <= {"feature_dim", "features", "columns"}
        and (value.get("feature_dim") is None or isinstance(value["feature_dim"], str))
        and all(
            value.get(key) is None or _is_name_list(value[key]) for key in ("features", "columns")
        )
    )


def _is_online(value):
    return value is None or (
        isinstance(value, dict)
        and set(value) == {"n_batches_seen", "n_samples_seen"}
        and is_int(value["n_batches_seen"])
        and value["n_batches_seen"] >= 1
        and is_int(value["n_samples_seen"])
        and value["n_samples_seen"] >= 0
    )


#: name -> (valid, what it must 'be ...' or 'hold ...', default when absent; _REQUIRED if it must be there).
#: The settings (dtype, reg_covar, params) are checked by the constructor's own check_settings.
ATTRIBUTES = {
    "library_version": (lambda v: isinstance(v, str), "be a string", None),
    "n_features": (lambda v: is_int(v) and v >= 1, "be an integer >= 1", _REQUIRED),
    "dtype": (lambda v: isinstance(v, str), "be a string ('float32' or 'float64')", _REQUIRED),
    "reg_covar": (_is_number, "be a number >= 0", _REQUIRED),
    "params": (
        lambda v: isinstance(v, dict),
        "be a JSON object of constructor parameters",
        _REQUIRED,
    ),
    "n_iter": (lambda v: is_int(v) and v >= 0, "be an integer >= 0", _REQUIRED),
    "converged": (lambda v: isinstance(v, bool), "be true or false", _REQUIRED),
    # -inf before any EM iteration (max_iter=0)
    "lower_bound": (
        lambda v: _is_number(v) and not math.isnan(v) and v != math.inf,
        "be a number (or -Infinity)",
        _REQUIRED,
    ),
    "lower_bounds": (
        lambda v: isinstance(v, list) and all(_is_number(x) and math.isfinite(x) for x in v),
        "be a list of finite numbers",
        _REQUIRED,
    ),
    "n_reseeded": (lambda v: is_int(v) and v >= 0, "be an integer >= 0", 0),
    "data_fingerprint": (
        _is_fingerprint,
        f"be null or an object with the keys {sorted(FINGERPRINT_KEYS)}",
        None,
    ),
    "input_layout": (
        _is_layout,
        "be null or an object mapping feature_dim (a string) and features/columns (lists of names)",
        None,
    ),
    "online": (
        _is_online,
        "hold n_batches_seen >= 1 and n_samples_seen >= 0 (integers), or be null",
        None,
    ),
}

#: Stored parameters the constructor does not check (they cannot be wrong for a fit to start).
PARAM_TYPES = {
    "random_state": (
        lambda v: v is None or (is_int(v) and 0 <= v < 2**32),
        "null or an integer in [0, 2**32)",
    ),
    "warm_start": (lambda v: isinstance(v, bool), "true or false"),
    "verbose": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
}


def _attribute(attrs, name, where):
    valid, expected, default = ATTRIBUTES[name]
    if name not in attrs:
        if default is _REQUIRED:
            raise ModelStoreError(f"{where}, zarr.json: attribute {name!r} is missing.")
        return default
    value = attrs[name]
    if not valid(value):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute {name!r} must {expected}, found {_show(value)}."
        )
    return value


def _root_attributes(files, where):
    """The attributes of the root zarr.json, after checking that it is a diaggmm-dist model group."""
    meta = files.json("zarr.json", "a model's metadata")
    if meta is None:
        if files.holds_anything():
            raise ModelStoreError(
                NotAGroupError(files.url, "files").describe("diaggmm-dist model")
                + " (a Zarr group written by save): it has no zarr.json."
            )
        raise FileNotFoundError(f"No model found at {files.url!r}: check the path or URL.")
    if meta.get("node_type") == "array":
        raise ModelStoreError(
            NotAGroupError(files.url, "array").describe("diaggmm-dist model") + "."
        )
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise ModelStoreError(
            f"{where}: zarr.json is not the metadata of a Zarr v3 group (zarr_format "
            f"{_short(repr(meta.get('zarr_format')), 40)}, node_type "
            f"{_short(repr(meta.get('node_type')), 40)})."
        )
    attrs = meta.get("attributes")
    if not isinstance(attrs, dict):
        raise ModelStoreError(
            f"{where}, zarr.json: 'attributes' must be a JSON object, found {_show(attrs)}."
        )
    if attrs.get("format") != FORMAT:
        raise ModelStoreError(
            f"{where} is not a diaggmm-dist model (zarr.json: attribute 'format' is "
            f"{_short(repr(attrs.get('format')), 80)})."
        )
    version = attrs.get("format_version")
    if not (is_int(version) and version in SUPPORTED_VERSIONS):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'format_version' is {_short(repr(version), 40)}; this "
            f"library reads the versions {list(SUPPORTED_VERSIONS)} (a newer diaggmm-dist may read "
            "it)."
        )
    return attrs


def _estimator(cls, attrs, version, where):
    """An unfitted ``cls`` with the stored settings, checked by the constructor's own rules."""
    params = _attribute(attrs, "params", where)
    unknown = set(params) - set(STORED_PARAMS) - set(OPTIONAL_PARAMS)
    if unknown:
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'params' has unknown keys {sorted(unknown)}."
        )
    absent = [name for name in STORED_PARAMS if name not in params]
    if (
        absent and version >= CHECKED_VERSION
    ):  # older versions stored fewer: those take their defaults
        raise ModelStoreError(f"{where}, zarr.json: attribute 'params' lacks {absent}.")
    for (
        name,
        value,
    ) in params.items():  # numpy cannot compare an integer beyond float64 with anything
        if is_int(value) and not _is_number(value):
            raise ModelStoreError(
                f"{where}, zarr.json: attribute 'params': {name} is a number beyond float64's "
                f"range, found {_show(value)}."
            )
    for name, (valid, expected) in PARAM_TYPES.items():
        if name in params and not valid(params[name]):
            raise ModelStoreError(
                f"{where}, zarr.json: attribute 'params': {name} must be {expected}, "
                f"found {_show(params[name])}."
            )
    settings = {
        "n_components": attrs.get("n_components"),
        "reg_covar": _attribute(attrs, "reg_covar", where),
        "dtype": _attribute(attrs, "dtype", where),
        **params,
    }
    accepted = set(cls._get_param_names())
    for (
        name
    ) in OPTIONAL_PARAMS:  # a store written by a version with the parameter, read by one without
        if name in settings and name not in accepted:
            if settings.pop(name) != "diag":
                raise ModelStoreError(
                    f"{where}, zarr.json: attribute 'params': covariance_type must be 'diag'."
                )
    gmm = cls(**settings)
    try:
        check_settings(gmm)
    except (TypeError, ValueError) as err:
        raise ModelStoreError(
            f"{where}, zarr.json: a setting is invalid: {_short(err, 300)}"
        ) from None
    return gmm


# ---------------------------------------------------------------------------- arrays
def _array_metadata_problem(meta, shape, version):
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
    for field, ok, expected in checks:
        if not ok:
            return f"{field!r} must be {expected}, found {_short(repr(meta.get(field)), 80)}"
    return None


def _check_zstd_size(chunk, nbytes, where, key, name):
    """Decode a legacy zstd chunk into ``nbytes`` at most: a frame that claims more is refused unallocated."""
    from numcodecs.zstd import decompress

    try:
        decompress(chunk, np.empty(nbytes, dtype=np.uint8))
    except Exception as err:  # the codec's own errors: too large, corrupt
        raise ModelStoreError(
            f"{where}: chunk {key} of array {name!r} does not decode to its {nbytes} bytes "
            f"({type(err).__name__}: {_short(str(err))})."
        ) from None


def _read_model_array(files, name, shape, version, where):
    """Array ``name`` of the store (float64, ``shape``, finite), read from bounded files."""
    meta_key = f"{name}/zarr.json"
    meta = files.json(meta_key, "an array's metadata")
    if meta is None:
        raise ModelStoreError(f"{where}: array {name!r} is missing ({meta_key} not found).")
    problem = _array_metadata_problem(meta, shape, version)
    if problem:
        raise ModelStoreError(f"{where}: {meta_key} (array {name!r}): {problem}.")
    try:
        array = files.zarr_array(name)
        chunk_key = f"{name}/{array.metadata.encode_chunk_key((0,) * len(shape))}"
    except Exception as err:  # zarr's own parsing of the metadata
        raise ModelStoreError(
            f"{where}: {meta_key} (array {name!r}) is not valid Zarr metadata "
            f"({type(err).__name__}: {_short(str(err))})."
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
            f"({type(err).__name__}: {_short(str(err))})."
        ) from None
    _check_values(value, name, shape, where)
    return value


def _check_running_statistics(statistics, k, d, where):
    """The invariants of per-unit-weight statistics (see :mod:`diaggmm_dist.online`)."""
    from ..online import WEIGHT_COLUMN

    masses, observed = statistics[:k, 0], statistics[:k, 1 : d + 1]
    if (
        np.any(masses < 0)
        or np.any(observed < 0)
        or np.any(statistics[:k, 2 * d + 1 : 3 * d + 1] < 0)
    ):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has negative masses or second moments."
        )
    unit = np.zeros(statistics.shape[1])
    unit[WEIGHT_COLUMN] = 1.0
    if not np.array_equal(statistics[k], unit):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has a last row {statistics[k].tolist()}, "
            f"not the unit weight {unit.tolist()}."
        )
    if not np.isclose(masses.sum(), 1.0, rtol=0, atol=1e-6):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has masses summing to {masses.sum():.8f}, "
            "not 1 (they are per unit weight)."
        )
    if np.any(observed > masses[:, None] + 1e-9):
        raise ModelStoreError(
            f"{where}: array 'running_statistics' has per-feature masses above their "
            "component's mass."
        )


def _verify_checksums(attrs, arrays, where):
    checksums = attrs.get("checksums")
    if checksums is None:
        raise ModelStoreError(f"{where}, zarr.json: attribute 'checksums' is missing.")
    expected_keys = set(arrays) | {"attributes"}
    if not (
        isinstance(checksums, dict)
        and set(checksums) == expected_keys
        and all(isinstance(v, str) for v in checksums.values())
    ):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'checksums' must map {sorted(expected_keys)} to "
            f"strings, found {_show(checksums)}."
        )
    for name, value in arrays.items():
        if checksums[name] != array_checksum(value):
            raise ModelStoreError(
                f"{where}: array {name!r} does not match its checksum in zarr.json: the array was replaced, swapped "
                "or corrupted. Restore the model from a copy or re-fit it."
            )
    if checksums["attributes"] != attributes_checksum(attrs):
        raise ModelStoreError(
            f"{where}: the attributes in zarr.json do not match their checksum ('checksums' -> 'attributes'): they "
            "were edited or corrupted. Restore the model from a copy, or load the original and save it again."
        )


# ---------------------------------------------------------------------------- loading
def load_model(url, cls=None):
    """Read and validate the model at ``url``; return a fitted ``DiagGMM``.

    Raises
    ------
    FileNotFoundError
        Nothing is stored at ``url``.
    ModelStoreError
        The store is not a valid model; the message names the file and the field.

    Warns
    -----
    UnverifiedModelWarning
        The store is of format version 1 or 2, written without checksums.
    """
    from ..mixture import DiagGMM

    cls = cls or DiagGMM
    where = f"model {os.fspath(url)!r}"
    files = _StoreFiles(url, where)
    attrs = _root_attributes(files, where)
    version = attrs["format_version"]
    values = {name: _attribute(attrs, name, where) for name in ATTRIBUTES}
    gmm = _estimator(cls, attrs, version, where)
    k, d = gmm.n_components, values["n_features"]
    names = values["feature_names"] = attrs.get("feature_names")
    if names is not None and not (
        _is_name_list(names, d) and all(isinstance(n, str) for n in names)
    ):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'feature_names' must be null or n_features ({d}) "
            f"strings, found {_show(names)}."
        )

    online = values["online"]
    shapes = {"weights": (k,), "means": (k, d), "covariances": (k, d)}
    if online is not None:
        from ..kernels import n_stat_columns

        shapes.update(running_statistics=(k + 1, n_stat_columns(d)), running_shift=(d,))
    arrays = {
        name: _read_model_array(files, name, shape, version, where)
        for name, shape in shapes.items()
    }
    check_mixture(arrays["weights"], arrays["means"], arrays["covariances"], where)
    check_scores_finite(arrays["weights"], arrays["means"], arrays["covariances"], gmm.dtype, where)
    if online is not None:
        _check_running_statistics(arrays["running_statistics"], k, d, where)
    if version >= CHECKED_VERSION:
        _verify_checksums(attrs, arrays, where)
    else:
        warnings.warn(
            f"{where} is of format version {version}, written without checksums: its arrays could not be verified "
            "against corruption. Save it again (DiagGMM.load(url).save(new_url)) to add them.",
            UnverifiedModelWarning,
            stacklevel=3,
        )
    return _fitted(gmm, arrays, values)


def _fitted(gmm, arrays, values):
    """``gmm`` with the checked arrays and attributes as its fitted state."""
    gmm._set_parameters(
        MixtureParameters(arrays["weights"], arrays["means"], arrays["covariances"])
    )
    gmm.n_features_in_ = values["n_features"]
    gmm.n_iter_ = values["n_iter"]
    gmm.converged_ = values["converged"]
    gmm.lower_bound_ = float(values["lower_bound"])
    gmm.lower_bounds_ = [float(v) for v in values["lower_bounds"]]
    gmm.n_reseeded_ = values["n_reseeded"]
    if values["feature_names"] is not None:
        gmm.feature_names_in_ = np.asarray(values["feature_names"], dtype=object)
    gmm.data_fingerprint_ = values["data_fingerprint"]
    if values["online"] is not None:
        gmm.running_statistics_, gmm.running_shift_ = (
            arrays["running_statistics"],
            arrays["running_shift"],
        )
        gmm.n_batches_seen_, gmm.n_samples_seen_ = (
            values["online"]["n_batches_seen"],
            values["online"]["n_samples_seen"],
        )
    if values["input_layout"] is not None:
        gmm.input_layout_ = values["input_layout"]
    return gmm
