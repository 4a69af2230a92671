"""What every model store shares: its root attributes, checksums, arrays and atomic writes.

A model store is a Zarr v3 group of one-chunk float64 arrays and JSON attributes; its
``format`` attribute names the estimator it holds (:data:`FORMAT_OWNERS`): ``DiagGMM``
(:mod:`.model_store`), ``BayesianDiagGMM`` (:mod:`.bayesian_store`) or
``DiagGMMClassifier`` (:mod:`.classifier_store`). Each store's reader checks the root with
:func:`root_attributes` (a store of another estimator is refused naming the class that loads
it), reads its arrays with :func:`~.model_files.read_model_array` and verifies them with
:func:`verify_checksums`; :func:`write_store` writes any of them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from .._version import __version__
from ..locations import Location, location
from ..validation import is_int
from .model_checks import ModelStoreError, is_number, shorten, show
from .model_files import DIMENSION_NAMES, FEATURE_COORDINATE, StoreFiles
from .model_record import FORMAT_VERSION, PARAM_TYPES, array_checksum, attributes_checksum
from .zarr_groups import NotAGroupError, rendered, write_keys_atomically

__all__ = [
    "ARRAY_VERSION",
    "FORMAT_OWNERS",
    "root_attributes",
    "store_format",
    "verify_checksums",
    "write_store",
]

#: The ``format`` attribute of each model store, and the class whose ``load`` reads it.
FORMAT_OWNERS = {
    "diaggmm-dist-model": "DiagGMM",
    "diaggmm-dist-bayesian-model": "BayesianDiagGMM",
    "diaggmm-dist-classifier-model": "DiagGMMClassifier",
}

#: The arrays of every store are written as DiagGMM's format 4 writes its own (raw chunks, a
#: NaN fill value, dimension names): :func:`~.model_files.read_model_array` reads them so.
ARRAY_VERSION = FORMAT_VERSION


def _root_metadata(files: StoreFiles, where: str) -> dict:
    """The attributes of the root zarr.json, after checking that it is a Zarr v3 group."""
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
            f"{shorten(repr(meta.get('zarr_format')), 40)}, node_type "
            f"{shorten(repr(meta.get('node_type')), 40)})."
        )
    attrs = meta.get("attributes")
    if not isinstance(attrs, dict):
        raise ModelStoreError(
            f"{where}, zarr.json: 'attributes' must be a JSON object, found {show(attrs)}."
        )
    return attrs


def _check_format(attrs: Mapping, where: str, expected: str | None) -> None:
    found = attrs.get("format")
    if found in FORMAT_OWNERS and expected is not None and found != expected:
        owner = FORMAT_OWNERS[found]
        raise ModelStoreError(
            f"{where} holds a {owner}, not a {FORMAT_OWNERS[expected]} (zarr.json: attribute "
            f"'format' is {found!r}): load it with {owner}.load(url), or with "
            "diaggmm_dist.persistence.load_any(url), which loads any model store."
        )
    if found not in FORMAT_OWNERS or (expected is not None and found != expected):
        raise ModelStoreError(
            f"{where} is not a diaggmm-dist model (zarr.json: attribute 'format' is "
            f"{shorten(repr(found), 80)})."
        )


def root_attributes(
    files: StoreFiles, where: str, expected: str, versions: tuple[int, ...]
) -> dict:
    """The root attributes of a model store of format ``expected``, of one of ``versions``.

    Parameters
    ----------
    files : StoreFiles
        The store's files.
    where : str
        The model, as errors name it.
    expected : str
        The ``format`` attribute (a key of :data:`FORMAT_OWNERS`).
    versions : tuple of int
        The format versions this library reads.

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError
        Nothing is stored there.
    ModelStoreError
        Not a Zarr v3 group, another estimator's store (the message names the class that
        loads it), not a model store, or a format version this library does not read.
    """
    attrs = _root_metadata(files, where)
    _check_format(attrs, where, expected)
    version = attrs.get("format_version")
    if not (is_int(version) and version in versions):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'format_version' is {shorten(repr(version), 40)}; "
            f"this library reads the versions {list(versions)} (a newer diaggmm-dist "
            "may read it)."
        )
    return attrs


def store_format(where: str | os.PathLike | Location) -> str:
    """The ``format`` attribute of the model store at ``where`` (one GET of its zarr.json).

    Raises
    ------
    FileNotFoundError
        Nothing is stored there.
    ModelStoreError
        Not a model store of this library.
    """
    files = StoreFiles(where, f"model {location(where).url!r}")
    attrs = _root_metadata(files, files.where)
    _check_format(attrs, files.where, None)
    return attrs["format"]


def verify_checksums(
    attrs: Mapping, arrays: Mapping[str, np.ndarray], where: str, names: tuple[str, ...]
) -> None:
    """Raise ModelStoreError unless ``checksums`` matches every array and the attributes.

    Parameters
    ----------
    attrs : mapping
        The root attributes, with ``checksums``.
    arrays : mapping
        The arrays read, by name: exactly those the checksums cover.
    where : str
        The model, as errors name it.
    names : tuple of str
        The attributes the ``"attributes"`` checksum covers.
    """
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
            f"strings, found {show(checksums)}."
        )
    for name, value in arrays.items():
        if checksums[name] != array_checksum(value):
            raise ModelStoreError(
                f"{where}: array {name!r} does not match its checksum in zarr.json: the array "
                "was replaced, swapped or corrupted. Restore the model from a copy or re-fit it."
            )
    if checksums["attributes"] != attributes_checksum(attrs, names):
        raise ModelStoreError(
            f"{where}: the attributes in zarr.json do not match their checksum ('checksums' -> "
            "'attributes'): they were edited or corrupted. Restore the model from a copy, or "
            "load the original and save it again."
        )


def write_store(
    where: str | os.PathLike | Location,
    attributes: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    names: tuple[str, ...],
    overwrite: bool = False,
    feature_names: list | None = None,
) -> None:
    """Write a model store: ``arrays`` (one raw float64 chunk each) and ``attributes``.

    ``checksums`` is added (every array's, and the attributes' ``names``); the feature
    coordinate is written when there are ``feature_names``, the metadata consolidated, and
    the root zarr.json written last (atomically on local disks).

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
    attributes : mapping
        JSON values, with ``format`` and ``format_version`` (``library_version`` is added).
    arrays : mapping
        Arrays by name (names of :data:`~.model_files.DIMENSION_NAMES`).
    names : tuple of str
        The attributes covered by the checksum.
    overwrite : bool
        Replace an existing store.
    feature_names : list of str, optional
        Written as the ``feature`` coordinate.

    Raises
    ------
    FileExistsError
        A store is at ``where`` and ``overwrite`` is False.
    """
    attrs = json.loads(json.dumps({**attributes}))  # as it reads back (tuples: lists)
    attrs.setdefault("library_version", __version__)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}
    attrs["checksums"] = {name: array_checksum(value) for name, value in arrays.items()}
    attrs["checksums"]["attributes"] = attributes_checksum(attrs, names)

    def write(group):
        for name, value in arrays.items():
            # One raw chunk: its size is known exactly, and nothing is decompressed at load.
            group.create_array(
                name,
                shape=value.shape,
                dtype="float64",
                chunks=value.shape,
                fill_value=float("nan"),
                compressors=None,
                config={"write_empty_chunks": True},
                dimension_names=DIMENSION_NAMES[name],  # what xr.open_zarr needs
            )[...] = value
        if feature_names is not None:  # xr.open_zarr shows the features by name
            group.create_array(
                FEATURE_COORDINATE,
                shape=(len(feature_names),),
                dtype=str,
                chunks=(len(feature_names),),
                compressors=None,
                config={"write_empty_chunks": True},
                dimension_names=("feature",),
            )[...] = np.asarray(feature_names, dtype=str)

    write_keys_atomically(location(where), rendered(write, attrs, consolidated=True), overwrite)


def checked_value(
    attrs: Mapping, name: str, valid: Callable[[Any], bool], expected: str, where: str
) -> Any:
    """Attribute ``name`` of ``attrs``, which must be present and ``valid``.

    Raises
    ------
    ModelStoreError
        It is missing, or not valid (the message says it must ``expected``).
    """
    if name not in attrs:
        raise ModelStoreError(f"{where}, zarr.json: attribute {name!r} is missing.")
    value = attrs[name]
    if not valid(value):
        raise ModelStoreError(
            f"{where}, zarr.json: attribute {name!r} must {expected}, found {show(value)}."
        )
    return value


def check_param_types(params: Mapping[str, Any], where: str) -> None:
    """Refuse stored parameters the estimators do not check themselves (as DiagGMM's store does).

    ``random_state``, ``warm_start`` and ``verbose`` (when the estimator has them) must be of
    their types (:data:`~.model_record.PARAM_TYPES`), and no integer may be beyond float64's
    range.

    Raises
    ------
    ModelStoreError
        Names the attribute ``params`` and the parameter.
    """
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
