"""Checks of the command's inputs and outputs, made before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from .console import one_line


class UnusableOutputError(Exception):
    """An output location the command cannot or must not write; refused before any work (exit 2)."""


def check_writable(url, what, in_place=False, storage_options=None):
    """Refuse an output location that cannot be written, before any work: one line naming it.

    Local paths: the store is written under its parent folder (the model as a sibling that is
    renamed into place; missing folders are created, as the library does), so the nearest
    existing ancestor of the parent must be a folder in which a file can be created. That is
    tried for real (a file created and removed): permission bits do not bind root, a read-only
    or special file system (``/proc``, ``/sys``) refuses regardless. ``in_place``: the store,
    when it exists, is written inside (a checkpoint), so a file is tried there too.
    fsspec URLs: only that the protocol is known, its package installed and the storage options
    accepted by its file system; whether a bucket exists and may be written is known to the
    object store only, at the cost of requests and credentials that a check should not spend.
    """
    from ..locations import is_local_url, location

    text = os.fspath(url)
    if not is_local_url(text):
        try:
            location(text, storage_options).filesystem()
        except (ValueError, ImportError) as err:  # unknown protocol, or its package missing
            raise UnusableOutputError(
                f"cannot write the {what} to {text!r}: {one_line(err)}"
            ) from None
        except TypeError as err:  # an option its file system does not take (named, no value)
            raise UnusableOutputError(
                f"cannot write the {what} to {text!r}: the storage options do not suit its "
                f"file system ({one_line(err)})"
            ) from None
        return
    target = Path(os.path.realpath(location(text).local_path))
    if target.exists() and not target.is_dir():
        raise UnusableOutputError(
            f"cannot write the {what} to {text!r}: it is a file, not a Zarr store; "
            "choose another path."
        )
    folder = target.parent
    while not folder.exists():  # missing folders are created; the one that exists must take them
        folder = folder.parent
    if not folder.is_dir():
        raise UnusableOutputError(
            f"cannot write the {what} to {text!r}: {str(folder)!r} is a file, not a folder."
        )
    _try_creating_a_file(folder, text, what)
    if in_place and target.is_dir():
        _try_creating_a_file(target, text, what)


def _try_creating_a_file(folder, url, what):
    import tempfile

    try:
        handle, name = tempfile.mkstemp(prefix=".diaggmm-write-test-", dir=folder)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UnusableOutputError(
            f"cannot write the {what} to {url!r}: no file can be created in the folder "
            f"{str(folder)!r} ({reason})."
        ) from None
    os.close(handle)
    os.unlink(name)


def _location(url, storage_options=None):
    """A comparable form of a store location: the protocol and the parts of its absolute path.

    Local paths are resolved (relative or absolute, symbolic links, ``..``, a trailing
    slash); None when an fsspec URL cannot be parsed (opening it reports that).
    """
    from ..locations import is_local_url, location

    text = os.fspath(url)
    if is_local_url(text):
        return ("file", Path(os.path.realpath(location(text).local_path)).parts)
    try:
        fs, path = location(text, storage_options).filesystem()
    except (ValueError, ImportError, TypeError):
        return None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return (protocol, tuple(part for part in path.split("/") if part))


def check_apart(outputs, inputs, storage_options=None):
    """Refuse an output that is, holds or lies inside an input, whatever ``--overwrite`` says.

    ``outputs``, ``inputs``: ``(name, url)`` pairs, e.g. ``("--out", "scores.zarr")``,
    ``("model", "model.zarr")``. Writing an output replaces what is at its path (with
    ``--overwrite``), so an input at or under it would be deleted, and one around it changed.
    Every output is also checked against the outputs after it. ``storage_options``: the
    command's, for every URL.
    """
    outputs = [(name, url) for name, url in outputs if url is not None]
    for position, (name, url) in enumerate(outputs):
        out = _location(url, storage_options)
        for other, other_url in [*outputs[position + 1 :], *inputs]:
            place = _location(other_url, storage_options)
            if out is None or place is None or out[0] != place[0]:
                continue
            if out == place:
                problem = f"is the {other} {os.fspath(other_url)!r}: writing there would replace it"
            elif place[1][: len(out[1])] == out[1]:
                problem = (
                    f"holds the {other} {os.fspath(other_url)!r}: writing there would delete it"
                )
            elif out[1][: len(place[1])] == place[1]:
                problem = (
                    f"is inside the {other} {os.fspath(other_url)!r}: writing there would change it"
                )
            else:
                continue
            raise UnusableOutputError(
                f"{name} {os.fspath(url)!r} {problem} (refused even with --overwrite); "
                "choose another path."
            )


def open_data(url, chunk_size, storage_options=None):
    """The data as a lazy row-chunked dask array; reads Zarr metadata only."""
    from ..inputs import as_row_chunked

    return as_row_chunked(os.fspath(url), chunk_size, storage_options)


def layout_of(args) -> dict:
    """The command's ``feature_dim``, ``features`` and ``columns`` (None when not given)."""
    return {name: getattr(args, name, None) for name in ("feature_dim", "features", "columns")}


def _xarray_could_read(err) -> bool:
    """A refusal of a Zarr group, or of an array with more than two dimensions."""
    text = str(err)
    return "Zarr group" in text or ("Expected 2D array" in text and "2D array, got 1D" not in text)


def open_samples(url, chunk_size, layout, storage_options=None):
    """The data as the library reads it (:func:`~diaggmm_dist.inputs.as_samples`): a Zarr
    array, a gridded store with ``feature_dim``/``features``, a Parquet table; metadata only.
    """
    from ..inputs import as_samples

    try:
        return as_samples(os.fspath(url), chunk_size, storage_options=storage_options, **layout)
    except ValueError as err:
        if any(value is not None for value in layout.values()) or not _xarray_could_read(err):
            raise
        # e.g. a store written by xarray: the library reads it, told where the features are
        raise ValueError(
            f"{one_line(err)} For a store written by xarray (dims like time, y, x, band), "
            "give the group and --feature-dim DIM (or --features VAR,VAR) instead."
        ) from None


def open_weights(url, samples, layout, storage_options=None):
    """``--sample-weight``: the weights, lazily, checked against the data's samples up front.

    With ``feature_dim`` or ``features`` (gridded data) a store with one data variable opened
    with xarray, whose dims must be the data's sample dims; otherwise a 1-D Zarr array with
    one weight per row.
    """
    import dask.array as da

    from ..inputs import open_gridded, open_zarr_array, sample_values

    text = os.fspath(url)
    if layout.get("feature_dim") is not None or layout.get("features") is not None:
        try:
            weights = open_gridded(text, storage_options)
        except (KeyError, ValueError) as err:  # e.g. a Zarr group that xarray did not write
            raise ValueError(
                f"--sample-weight {text!r} cannot be read with xarray (the data's layout): "
                f"{one_line(err)}"
            ) from None
        if not hasattr(weights, "dims") or hasattr(weights, "data_vars"):
            raise ValueError(
                f"--sample-weight {text!r} must hold one data variable (the weights), it has "
                f"{len(weights.data_vars)}: {list(weights.data_vars)}."
            )
    else:
        array = open_zarr_array(text, storage_options)
        if array.ndim != 1:
            raise ValueError(
                f"--sample-weight {text!r} must be a 1-D Zarr array with one weight per row, "
                f"it has shape {array.shape}."
            )
        weights = da.from_array(array, chunks=array.chunks)
    sample_values(weights, samples, f"--sample-weight {text!r}")  # the shape, before any work
    return weights


def check_output(url, overwrite, what, storage_options=None):
    """Refuse an output path that holds something else, or an existing store without --overwrite."""
    from ..locations import location
    from ..stores.zarr_groups import NotAGroupError, open_group_or_none

    try:
        exists = open_group_or_none(location(url, storage_options)) is not None
    except NotAGroupError as err:
        raise FileExistsError(
            err.describe(what) + ": refusing to replace it; choose another output path."
        ) from None
    if exists and not overwrite:
        raise FileExistsError(
            f"{url!r} already exists: pass --overwrite to replace it, or choose another path."
        )


def load_model(url, storage_options=None):
    """The model saved at ``url`` (opened with the command's storage options): a ``DiagGMM``,
    ``BayesianDiagGMM`` or ``DiagGMMClassifier``, whichever the store holds."""
    from ..persistence import load_any

    return load_any(url, storage_options=storage_options)
