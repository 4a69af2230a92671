"""The model file: a Zarr v3 group of float64 arrays and JSON attributes, never a pickle.

:func:`write_record` writes a :class:`~.model_record.ModelRecord` and :func:`read_record`
reads one back, validated; neither knows the estimator (``DiagGMM.save``/``load`` convert,
:mod:`diaggmm_dist.persistence`).

Layout (``FORMAT_VERSION`` 4)::

    model.zarr/
        weights             (K,)     float64
        means               (K, D)   float64
        covariances         (K, D)   float64
        feature             (D,)     string                   only for named features: the
                                                              feature_names, as a coordinate
        running_statistics  (K + 1, max(3D + 1, 6)) float64   only after partial_fit: the
        running_shift       (D,)     float64                  state of stepwise EM
        zarr.json      attributes: format, format_version, n_components, n_features,
                       feature_names, dtype, reg_covar, params, n_iter, converged,
                       lower_bound, lower_bounds, n_reseeded, data_fingerprint, input_layout
                       (how features were taken from gridded or tabular input), online
                       ({"n_batches_seen", "n_samples_seen"} after partial_fit, else null),
                       library_version, checksums; consolidated_metadata (every
                       array's zarr.json, for xr.open_zarr)

Each array names its dimensions (``dimension_names``: ``component``, ``feature``; stores
written before they were added have none and load as before), so ``xr.open_zarr`` reads the
store as a Dataset. A model fitted on named features (xarray ``feature_dim`` coordinates,
``features=``, DataFrame columns) also has the coordinate ``feature`` (format 4 on): a Zarr
v3 ``string`` array (one ``vlen-utf8`` chunk) holding ``feature_names``, which ``load`` checks
against that attribute. The root zarr.json holds the consolidated metadata (written with it,
last), so ``xr.open_zarr`` reads one file and gives no warning; ``load`` reads each array's
own zarr.json and ignores that copy. Each array is one uncompressed chunk (raw little-endian
float64, ``K * D * 8`` bytes: model parameters are tiny and do not compress) with a NaN fill
value, so a deleted chunk never reads as zeros. ``checksums`` holds the SHA-256 of every array's
values (:func:`~.model_record.array_checksum`) and of the other attributes
(:func:`~.model_record.attributes_checksum`): a swapped, replaced, bit-rotted or hand-edited
array or attribute is refused at load.

Loading reads data only. Every file is read whole with a size bound (a chunk must hold exactly
its array's bytes; a symlink to a device or a huge file is refused before it is read), and
every field is checked: JSON types, the settings by the constructor's own
:func:`~diaggmm_dist.validation.check_settings`, shapes, finiteness, variances whose
precisions and log-density coefficients are finite in the model's dtype, weights on the
simplex, the running statistics' invariants, then the checksums. Anything else is a
:class:`~.model_checks.ModelStoreError` naming the file and the field.

Stores of format version 3 (no feature coordinate, no consolidated metadata) load as before.
Stores of format versions 1 and 2 (no checksums; arrays zstd-compressed with a fill value of
0) still load, with an :class:`UnverifiedModelWarning`: re-save them to add the checksums.
Version 1 stores (no ``online``, fewer ``params``) are read as models without running
statistics.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping

from ..kernels import n_stat_columns
from ..locations import Location, location
from ..parameters import MixtureParameters
from .estimator_store import root_attributes, verify_checksums, write_store
from .model_checks import (
    ModelStoreError,
    check_mixture,
    check_running_statistics,
    check_scores_finite,
    show,
)
from .model_files import COORDINATE_VERSION, StoreFiles, check_feature_coordinate, read_model_array
from .model_record import (
    ATTRIBUTES,
    CHECKED_VERSION,
    FORMAT,
    MODEL_ATTRIBUTES,
    SUPPORTED_VERSIONS,
    ModelRecord,
    OnlineState,
    checked_attribute,
    checked_settings,
    is_name_list,
    model_attributes,
)

__all__ = ["ModelStoreError", "UnverifiedModelWarning", "read_record", "write_record"]


class UnverifiedModelWarning(UserWarning):
    """A model store of an older format (no checksums) was loaded: its arrays were not verified."""


# ---------------------------------------------------------------------------- writing
def write_record(
    record: ModelRecord, where: str | os.PathLike | Location, overwrite: bool = False
) -> None:
    """Write ``record`` as a Zarr v3 group at ``where``.

    The group is rendered in memory, then written one file per key, its root ``zarr.json``
    (which holds the attributes) last: a store with attributes is complete. On object stores
    that is one PUT per key after one existence check.

    Parameters
    ----------
    record : ModelRecord
    where : str, os.PathLike, Location or zarr.abc.store.Store
        Local path, fsspec URL (options in a :class:`~diaggmm_dist.locations.Location`), or a
        Zarr store object.
    overwrite : bool
        Replace an existing store (atomically on local disks).

    Raises
    ------
    FileExistsError
        A store is at ``where`` and ``overwrite`` is False.
    """
    write_store(
        where,
        model_attributes(record),
        record.arrays(),
        MODEL_ATTRIBUTES,
        overwrite,
        record.feature_names,
    )


# ---------------------------------------------------------------------------- reading
def read_record(
    where: str | os.PathLike | Location, defaults: Mapping[str, Any], owner: str = "DiagGMM"
) -> ModelRecord:
    """Read and validate the model at ``where``.

    On object stores this costs one GET per file read (the root's and each array's zarr.json,
    and each array's chunk), nothing else.

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
        Local path, fsspec URL (options in a :class:`~diaggmm_dist.locations.Location`), or a
        Zarr store object.
    defaults : mapping
        The estimator's constructor parameters and their defaults: the settings are checked by
        its rules (:func:`~.model_record.checked_settings`).
    owner : str
        The estimator's class name, as an invalid setting's error names it.

    Returns
    -------
    ModelRecord

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
    store = location(where)
    where = f"model {store.url!r}"
    files = StoreFiles(store, where)
    attrs = root_attributes(files, where, FORMAT, SUPPORTED_VERSIONS)
    version = attrs["format_version"]
    values = {name: checked_attribute(attrs, name, where) for name in ATTRIBUTES}
    settings = checked_settings(attrs, version, defaults, owner, where)
    k, d = attrs["n_components"], values["n_features"]
    names = attrs.get("feature_names")
    if names is not None and not (
        is_name_list(names, d) and all(isinstance(n, str) for n in names)
    ):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'feature_names' must be null or n_features ({d}) "
            f"strings, found {show(names)}."
        )

    online = values["online"]
    shapes = {"weights": (k,), "means": (k, d), "covariances": (k, d)}
    if online is not None:
        shapes.update(running_statistics=(k + 1, n_stat_columns(d)), running_shift=(d,))
    arrays = {name: read_model_array(files, name, shape, version) for name, shape in shapes.items()}
    check_mixture(arrays["weights"], arrays["means"], arrays["covariances"], where)
    check_scores_finite(
        arrays["weights"], arrays["means"], arrays["covariances"], settings["dtype"], where
    )
    if online is not None:
        check_running_statistics(arrays["running_statistics"], k, d, where)
    if version >= CHECKED_VERSION:
        verify_checksums(attrs, arrays, where, MODEL_ATTRIBUTES)
    else:
        warnings.warn(
            f"{where} is of format version {version}, written without checksums: its arrays "
            "could not be verified against corruption. Save it again "
            "(DiagGMM.load(url).save(new_url)) to add them.",
            UnverifiedModelWarning,
            stacklevel=4,
        )
    if version >= COORDINATE_VERSION and names is not None:
        check_feature_coordinate(files, names)
    return ModelRecord(
        settings=settings,
        parameters=MixtureParameters(arrays["weights"], arrays["means"], arrays["covariances"]),
        n_iter=values["n_iter"],
        converged=values["converged"],
        lower_bound=float(values["lower_bound"]),
        lower_bounds=[float(v) for v in values["lower_bounds"]],
        n_reseeded=values["n_reseeded"],
        feature_names=names,
        data_fingerprint=values["data_fingerprint"],
        input_layout=values["input_layout"],
        online=None
        if online is None
        else OnlineState(
            arrays["running_statistics"],
            arrays["running_shift"],
            online["n_batches_seen"],
            online["n_samples_seen"],
        ),
    )
