"""The model file: a Zarr v3 group of float64 arrays and JSON attributes, never a pickle.

Layout (``FORMAT_VERSION`` 2)::

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
                       library_version

Version 1 stores (no ``online``, fewer ``params``) are read as models without running
statistics.

Loading reads data only and checks every field (types, shapes, finiteness, positive
variances, weights on the simplex); a tampered or truncated store gets a
:class:`ModelStoreError` naming the field.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from .zarr_groups import NotAGroupError, open_group_or_none, write_group_atomically

FORMAT = "diaggmm-dist-model"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
ARRAYS = ("weights", "means", "covariances")
#: The arrays of the stepwise-EM state (see DiagGMM.partial_fit), present only after it.
ONLINE_ARRAYS = ("running_statistics", "running_shift")
#: Constructor parameters kept in the file (JSON values only).
STORED_PARAMS = ("tol", "max_iter", "n_init", "init_params", "random_state", "warm_start", "verbose",
                 "verbose_interval", "chunk_size", "missing", "learning_decay", "learning_offset")


class ModelStoreError(ValueError):
    """A model store that is not a valid diaggmm-dist model (names the field at fault)."""


def _json_params(gmm):
    params = {name: getattr(gmm, name) for name in STORED_PARAMS}
    if not (params["random_state"] is None or isinstance(params["random_state"], numbers.Integral)):
        params["random_state"] = None  # a RandomState instance is not data
    return {k: (int(v) if isinstance(v, np.integer) else float(v) if isinstance(v, np.floating) else v)
            for k, v in params.items()}


def _online_attributes(gmm):
    if getattr(gmm, "running_statistics_", None) is None:
        return None
    return {"n_batches_seen": int(gmm.n_batches_seen_), "n_samples_seen": int(gmm.n_samples_seen_)}


def model_attributes(gmm):
    """The JSON attributes describing a fitted model."""
    from .. import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "n_components": int(gmm.means_.shape[0]),
        "n_features": int(gmm.means_.shape[1]),
        "feature_names": [str(n) for n in gmm.feature_names_in_] if hasattr(gmm, "feature_names_in_") else None,
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
    attrs = model_attributes(gmm)

    names = ARRAYS + (ONLINE_ARRAYS if attrs["online"] is not None else ())

    def write(group):
        for name in names:
            value = np.asarray(getattr(gmm, name + "_"), dtype=np.float64)
            group.create_array(name, shape=value.shape, dtype="float64", chunks=value.shape)[...] = value
        group.attrs.update(attrs)  # last: a store with attributes is complete

    write_group_atomically(url, write, overwrite)


def _require(attrs, name, kind, where):
    if name not in attrs:
        raise ModelStoreError(f"{where}: attribute {name!r} is missing.")
    value = attrs[name]
    ok = {
        "int": isinstance(value, numbers.Integral) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "float": isinstance(value, numbers.Real) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }[kind]
    if not ok:
        raise ModelStoreError(f"{where}: attribute {name!r} should be {kind}, found {type(value).__name__} {value!r}.")
    return value


def read_array(group, name, shape, where):
    """Array ``name`` of ``group`` as float64, checked for shape and finiteness."""
    try:
        value = np.asarray(group[name][...], dtype=np.float64)
    except KeyError:
        raise ModelStoreError(f"{where}: array {name!r} is missing.") from None
    except Exception as err:  # a truncated or corrupt chunk fails in the codec
        raise ModelStoreError(f"{where}: array {name!r} could not be read ({type(err).__name__}: {err}).") from err
    if value.shape != shape:
        raise ModelStoreError(f"{where}: array {name!r} has shape {value.shape}, expected {shape}.")
    if not np.all(np.isfinite(value)):
        raise ModelStoreError(f"{where}: array {name!r} holds NaN or infinite values.")
    return value


def check_mixture(weights, means, covariances, where):
    """Raise ModelStoreError unless the parameters form a valid diagonal mixture."""
    if np.any(covariances <= 0):
        raise ModelStoreError(f"{where}: array 'covariances' has {int(np.sum(covariances <= 0))} value(s) <= 0.")
    if np.any(weights < 0):
        raise ModelStoreError(f"{where}: array 'weights' has negative values.")
    if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise ModelStoreError(f"{where}: array 'weights' sums to {weights.sum():.8f}, not 1.")


def _load_online_state(gmm, group, online, k, d, where):
    """Set the stepwise-EM state of ``gmm`` from the store (nothing when ``online`` is null)."""
    from ..kernels import n_stat_columns

    if online is None:
        return
    if not (isinstance(online, dict) and set(online) == {"n_batches_seen", "n_samples_seen"}):
        raise ModelStoreError(f"{where}: attribute 'online' must be null or map n_batches_seen and n_samples_seen.")
    counts = [online[name] for name in ("n_batches_seen", "n_samples_seen")]
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in counts) or counts[0] < 1:
        raise ModelStoreError(f"{where}: attribute 'online' must hold n_batches_seen >= 1 and n_samples_seen >= 0, "
                              f"found {online}.")
    statistics = read_array(group, "running_statistics", (k + 1, n_stat_columns(d)), where)
    if np.any(statistics[:k, : d + 1] < 0) or np.any(statistics[:k, 2 * d + 1 : 3 * d + 1] < 0):
        raise ModelStoreError(f"{where}: array 'running_statistics' has negative masses or second moments.")
    gmm.running_statistics_ = statistics
    gmm.running_shift_ = read_array(group, "running_shift", (d,), where)
    gmm.n_batches_seen_, gmm.n_samples_seen_ = (int(v) for v in counts)


def load_model(url, cls=None):
    """Read and validate the model at ``url``; return a fitted ``DiagGMM``.

    Raises
    ------
    FileNotFoundError
        Nothing is stored at ``url``.
    ModelStoreError
        The store is not a valid model; the message names the field.
    """
    from ..mixture import DiagGMM

    cls = cls or DiagGMM
    where = f"model {os.fspath(url)!r}"
    try:
        group = open_group_or_none(url)
    except NotAGroupError as err:
        raise ModelStoreError(err.describe("diaggmm-dist model") + " (a Zarr group written by save).") from None
    if group is None:
        raise FileNotFoundError(f"No model found at {os.fspath(url)!r}: check the path or URL.")
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise ModelStoreError(f"{where} is not a diaggmm-dist model (attribute 'format' is {attrs.get('format')!r}).")
    version = _require(attrs, "format_version", "int", where)
    if version not in SUPPORTED_VERSIONS:
        raise ModelStoreError(f"{where}: format_version {version} is not supported (this library reads {SUPPORTED_VERSIONS}).")
    k = _require(attrs, "n_components", "int", where)
    d = _require(attrs, "n_features", "int", where)
    if k < 1 or d < 1:
        raise ModelStoreError(f"{where}: n_components and n_features must be >= 1, found {k} and {d}.")
    dtype = _require(attrs, "dtype", "str", where)
    if dtype not in ("float32", "float64"):
        raise ModelStoreError(f"{where}: attribute 'dtype' must be 'float32' or 'float64', found {dtype!r}.")
    reg_covar = _require(attrs, "reg_covar", "float", where)
    params = _require(attrs, "params", "dict", where)
    unknown = set(params) - set(STORED_PARAMS)
    if unknown:
        raise ModelStoreError(f"{where}: attribute 'params' has unknown keys {sorted(unknown)}.")
    lower_bounds = _require(attrs, "lower_bounds", "list", where)
    if not all(isinstance(v, numbers.Real) for v in lower_bounds):
        raise ModelStoreError(f"{where}: attribute 'lower_bounds' must be a list of numbers.")
    names = attrs.get("feature_names")
    if names is not None and (not isinstance(names, list) or len(names) != d or not all(isinstance(n, str) for n in names)):
        raise ModelStoreError(f"{where}: attribute 'feature_names' must be None or {d} strings.")
    weights = read_array(group, "weights", (k,), where)
    means = read_array(group, "means", (k, d), where)
    covariances = read_array(group, "covariances", (k, d), where)
    check_mixture(weights, means, covariances, where)

    gmm = cls(n_components=k, reg_covar=reg_covar, dtype=dtype, **params)
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covariances
    gmm.precisions_ = 1.0 / covariances
    gmm.precisions_cholesky_ = np.sqrt(gmm.precisions_)
    gmm.n_features_in_ = d
    gmm.n_iter_ = _require(attrs, "n_iter", "int", where)
    gmm.converged_ = _require(attrs, "converged", "bool", where)
    gmm.lower_bound_ = float(_require(attrs, "lower_bound", "float", where))
    gmm.lower_bounds_ = [float(v) for v in lower_bounds]
    gmm.n_reseeded_ = int(attrs.get("n_reseeded", 0))
    if names is not None:
        gmm.feature_names_in_ = np.asarray(names, dtype=object)
    gmm.data_fingerprint_ = attrs.get("data_fingerprint")
    _load_online_state(gmm, group, attrs.get("online"), k, d, where)
    layout = attrs.get("input_layout")
    if layout is not None:
        if not (isinstance(layout, dict) and set(layout) <= {"feature_dim", "features", "columns"}):
            raise ModelStoreError(f"{where}: attribute 'input_layout' must map feature_dim/features/columns.")
        gmm.input_layout_ = layout
    return gmm
