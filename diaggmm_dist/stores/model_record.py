"""What a model store holds: a :class:`ModelRecord`, its JSON attributes, their checks, checksums.

The record is data only (arrays and JSON values), with no estimator in it: the model store
writes and reads records (:mod:`.model_store`), and :mod:`diaggmm_dist.persistence` converts a
fitted ``DiagGMM`` to a record and back.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from .._version import __version__
from ..parameters import MixtureParameters
from ..validation import check_settings, is_int
from .model_checks import ModelStoreError, is_number, shorten, show

FORMAT = "diaggmm-dist-model"
FORMAT_VERSION = 4
SUPPORTED_VERSIONS = (1, 2, 3, 4)
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
#: Settings stored as attributes of their own rather than in ``params``.
TOP_LEVEL_SETTINGS = ("reg_covar", "dtype")


@dataclass(frozen=True)
class OnlineState:
    """The state of stepwise EM (``DiagGMM.partial_fit``) that a model store keeps.

    Parameters
    ----------
    running_statistics : ndarray of shape (K + 1, n_stat_columns(D))
        Running sufficient statistics per unit of sample weight.
    running_shift : ndarray of shape (D,)
        The shift of the data they were computed on.
    n_batches_seen, n_samples_seen : int
        Batches folded in, and their rows that were used.
    """

    running_statistics: np.ndarray
    running_shift: np.ndarray
    n_batches_seen: int
    n_samples_seen: int


@dataclass(frozen=True)
class ModelRecord:
    """A fitted diagonal mixture as a model store holds it: arrays and JSON values.

    Parameters
    ----------
    settings : dict
        Constructor settings as stored (JSON values): ``reg_covar``, ``dtype`` and the
        :data:`STORED_PARAMS` (and ``covariance_type`` when stored). ``n_components`` is the
        parameters'. A store of an older format may lack some: those take the constructor's
        defaults.
    parameters : MixtureParameters
        Weights, means and covariances.
    n_iter : int
    converged : bool
    lower_bound : float
    lower_bounds : list of float
        The fit's diagnostics.
    n_reseeded : int
        Components re-seeded during the fit.
    feature_names : list of str, optional
    data_fingerprint : dict, optional
    input_layout : dict, optional
        How features were taken from gridded or tabular input.
    online : OnlineState, optional
        Present after ``partial_fit`` only.
    """

    settings: dict
    parameters: MixtureParameters
    n_iter: int
    converged: bool
    lower_bound: float
    lower_bounds: list = field(default_factory=list)
    n_reseeded: int = 0
    feature_names: list | None = None
    data_fingerprint: dict | None = None
    input_layout: dict | None = None
    online: OnlineState | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store, by name: float64, C-ordered."""
        p = self.parameters
        values = {"weights": p.weights, "means": p.means, "covariances": p.covariances}
        if self.online is not None:
            values["running_statistics"] = self.online.running_statistics
            values["running_shift"] = self.online.running_shift
        return {name: np.ascontiguousarray(v, dtype=np.float64) for name, v in values.items()}


# ---------------------------------------------------------------------------- checksums
def array_checksum(value) -> str:
    """``"sha256:<hex>"`` of an array's float64 values: little-endian C-order bytes, its shape."""
    value = np.ascontiguousarray(value, dtype="<f8")
    digest = hashlib.sha256(f"{value.dtype.str}{list(value.shape)}".encode())
    digest.update(value.tobytes())
    return "sha256:" + digest.hexdigest()


def _canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


#: The attributes :func:`model_attributes` gives (besides ``checksums``), all covered by its
#: checksum. Others a user adds to the group are not the library's: they are ignored, not refused.
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


def attributes_checksum(attrs: Mapping[str, Any], names: tuple = MODEL_ATTRIBUTES) -> str:
    """``"sha256:<hex>"`` of the model's attributes ``names`` (present ones), canonical JSON."""
    covered = {name: attrs[name] for name in names if name in attrs}
    return "sha256:" + hashlib.sha256(_canonical_json(covered).encode()).hexdigest()


def model_attributes(record: ModelRecord) -> dict:
    """The JSON attributes describing ``record`` (without their checksums).

    Parameters
    ----------
    record : ModelRecord

    Returns
    -------
    dict
        One entry per name of :data:`MODEL_ATTRIBUTES`.
    """
    settings, online = record.settings, record.online
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "n_components": record.parameters.n_components,
        "n_features": record.parameters.n_features,
        "feature_names": record.feature_names,
        "dtype": settings["dtype"],
        "reg_covar": settings["reg_covar"],
        "params": {k: v for k, v in settings.items() if k not in TOP_LEVEL_SETTINGS},
        "n_iter": record.n_iter,
        "converged": record.converged,
        "lower_bound": record.lower_bound,
        "lower_bounds": record.lower_bounds,
        "n_reseeded": record.n_reseeded,
        "data_fingerprint": record.data_fingerprint,
        "input_layout": record.input_layout,
        "online": None
        if online is None
        else {"n_batches_seen": online.n_batches_seen, "n_samples_seen": online.n_samples_seen},
    }


# ---------------------------------------------------------------------------- attribute checks
_REQUIRED = object()


def is_name_list(value, length: int | None = None) -> bool:
    """A list of names (strings or integers), of ``length`` when given."""
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
            value.get(key) is None or is_name_list(value[key]) for key in ("features", "columns")
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


#: name -> (valid, what it must 'be ...' or 'hold ...', default when absent; _REQUIRED if it
#: must be there). The settings (dtype, reg_covar, params) are then checked by the
#: constructor's own rules (:func:`checked_settings`).
ATTRIBUTES = {
    "library_version": (lambda v: isinstance(v, str), "be a string", None),
    "n_features": (lambda v: is_int(v) and v >= 1, "be an integer >= 1", _REQUIRED),
    "dtype": (lambda v: isinstance(v, str), "be a string ('float32' or 'float64')", _REQUIRED),
    "reg_covar": (is_number, "be a number >= 0", _REQUIRED),
    "params": (
        lambda v: isinstance(v, dict),
        "be a JSON object of constructor parameters",
        _REQUIRED,
    ),
    "n_iter": (lambda v: is_int(v) and v >= 0, "be an integer >= 0", _REQUIRED),
    "converged": (lambda v: isinstance(v, bool), "be true or false", _REQUIRED),
    # -inf before any EM iteration (max_iter=0)
    "lower_bound": (
        lambda v: is_number(v) and not math.isnan(v) and v != math.inf,
        "be a number (or -Infinity)",
        _REQUIRED,
    ),
    "lower_bounds": (
        lambda v: isinstance(v, list) and all(is_number(x) and math.isfinite(x) for x in v),
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


def checked_attribute(attrs: Mapping[str, Any], name: str, where: str):
    """Attribute ``name`` (of :data:`ATTRIBUTES`) of ``attrs``, or its default when absent.

    Raises
    ------
    ModelStoreError
        It is absent and required, or not of its type.
    """
    valid, expected, default = ATTRIBUTES[name]
    if name not in attrs:
        if default is _REQUIRED:
            raise ModelStoreError(f"{where}, zarr.json: attribute {name!r} is missing.")
        return default
    value = attrs[name]
    if not valid(value):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute {name!r} must {expected}, found {show(value)}."
        )
    return value


def _checked_params(params, version, where):
    """Raise ModelStoreError unless ``params`` has known keys of the right JSON types."""
    unknown = set(params) - set(STORED_PARAMS) - set(OPTIONAL_PARAMS)
    if unknown:
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'params' has unknown keys {sorted(unknown)}."
        )
    absent = [name for name in STORED_PARAMS if name not in params]
    if absent and version >= CHECKED_VERSION:  # older versions stored fewer: they take defaults
        raise ModelStoreError(f"{where}, zarr.json: attribute 'params' lacks {absent}.")
    for name, value in params.items():  # numpy cannot compare an integer beyond float64
        if is_int(value) and not is_number(value):
            raise ModelStoreError(
                f"{where}, zarr.json: attribute 'params': {name} is a number beyond float64's "
                f"range, found {show(value)}."
            )
    for name, (valid, expected) in PARAM_TYPES.items():
        if name in params and not valid(params[name]):
            raise ModelStoreError(
                f"{where}, zarr.json: attribute 'params': {name} must be {expected}, "
                f"found {show(params[name])}."
            )


def checked_settings(
    attrs: Mapping, version: int, defaults: Mapping, owner: str, where: str
) -> dict:
    """The stored constructor settings, checked by the constructor's own rules.

    Parameters
    ----------
    attrs : mapping
        The root attributes (``n_components``, ``reg_covar``, ``dtype``, ``params``).
    version : int
        The store's format version.
    defaults : mapping
        Every constructor parameter of the estimator and its default: what a setting an older
        store lacks takes (to be checked), and the names the estimator accepts.
    owner : str
        The estimator's class name, as a setting's error names it.
    where : str
        The model, as errors name it.

    Returns
    -------
    dict
        ``reg_covar``, ``dtype`` and the stored ``params`` (``covariance_type`` dropped when
        the estimator has no such parameter).

    Raises
    ------
    ModelStoreError
        An unknown, missing or invalid setting.
    """
    params = checked_attribute(attrs, "params", where)
    _checked_params(params, version, where)
    settings = {
        "reg_covar": checked_attribute(attrs, "reg_covar", where),
        "dtype": checked_attribute(attrs, "dtype", where),
        **params,
    }
    # a store written by a version with the parameter, read by one without
    for name in OPTIONAL_PARAMS:
        if name in settings and name not in defaults:
            if settings.pop(name) != "diag":
                raise ModelStoreError(
                    f"{where}, zarr.json: attribute 'params': covariance_type must be 'diag'."
                )
    candidate = {**defaults, "n_components": attrs.get("n_components"), **settings}
    try:
        check_settings(type(owner, (SimpleNamespace,), {})(**candidate))
    except (TypeError, ValueError) as err:
        raise ModelStoreError(
            f"{where}, zarr.json: a setting is invalid: {shorten(err, 300)}"
        ) from None
    return settings
