"""Tables (pandas or dask DataFrames, Parquet) as row-chunked engine arrays of numeric columns."""

from __future__ import annotations

import functools
import os

import dask.array as da
import numpy as np

from .. import engine, read_ahead
from ..locations import Location, location
from .arrays import as_row_chunked
from .samples import Samples, is_xarray


def is_dataframe(X) -> bool:
    """True for pandas and dask DataFrames (anything with columns and dtypes, not xarray)."""
    return hasattr(X, "columns") and hasattr(X, "dtypes") and not is_xarray(X)


#: The names of Parquet files and directories.
PARQUET_SUFFIXES = (".parquet", ".pq")


def looks_like_parquet(path: str | os.PathLike) -> bool:
    """True for a ``.parquet``/``.pq`` name, or a local directory holding such files."""
    text = os.fspath(path).rstrip("/")
    if text.endswith(PARQUET_SUFFIXES):
        return True
    if "://" not in text and os.path.isdir(text):
        return any(name.endswith(PARQUET_SUFFIXES) for name in os.listdir(text))
    return False


def holds_parquet_files(where: Location) -> bool:
    """True for a directory at ``where`` (an object-store prefix too) holding ``.parquet``/``.pq``
    files, from one listing; what Spark and dask write under a name with no suffix.
    """
    fs, path = where.filesystem()
    try:
        names = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(name.endswith(PARQUET_SUFFIXES) for name in names)


def _is_numeric(dtype):
    try:
        return np.dtype(dtype).kind in "iuf"
    except TypeError:  # pandas extension dtypes (strings, categories)
        return False


def _numeric_columns(dtypes, columns):
    """The feature columns: ``columns``, or every column when all are of one numeric kind.

    Without ``columns`` nothing is chosen silently: a table with a non-numeric column (a
    string, a category, a bool) or with integer columns beside float ones (an id or a label,
    most often) is refused, naming the columns.
    """
    if columns is None:
        return _all_columns(dtypes)
    missing = [c for c in columns if c not in dtypes.index]
    if missing:
        raise ValueError(f"columns {missing} are not in the table; it has {list(dtypes.index)}.")
    bad = [c for c in columns if not _is_numeric(dtypes[c])]
    if bad:
        raise TypeError(
            f"columns {bad} are not numeric ({[str(dtypes[c]) for c in bad]}): choose numeric "
            "columns."
        )
    return list(columns)


def _all_columns(dtypes):
    """Every column, when they are all float or all integer (see :func:`_numeric_columns`)."""
    other = [name for name, dtype in dtypes.items() if not _is_numeric(dtype)]
    if other:
        kinds = [str(dtypes[name]) for name in other]
        raise TypeError(
            f"The table has non-numeric columns {other} ({kinds}): name the feature columns "
            "with columns=[...] (no column is dropped silently)."
        )
    integers = [name for name, dtype in dtypes.items() if np.dtype(dtype).kind in "iu"]
    if integers and len(integers) < len(dtypes):
        raise TypeError(
            f"The table has integer columns {integers} beside float ones: an integer column is "
            "often an id or a label. Name the feature columns with columns=[...]."
        )
    return list(dtypes.index)


def from_table(X, chunk_size=None, columns=None, storage_options=None) -> Samples:
    """A DataFrame or Parquet path as :class:`Samples` of its numeric (or the given) columns.

    A Parquet path may be an fsspec URL (with ``storage_options``) or a Location: its file
    system, with the options, travels with the tasks that read its row groups.

    Raises
    ------
    ValueError
        Unknown columns; Parquet data without rows.
    TypeError
        Non-numeric columns named, or no numeric column; without ``columns``, a non-numeric
        column, or integer columns beside float ones (features are never chosen silently).
    """
    if isinstance(X, (str, os.PathLike, Location)):
        return _from_parquet(location(X, storage_options), columns)
    names = _numeric_columns(X.dtypes, columns)
    if not names:
        raise TypeError("The table has no numeric columns: pass columns=[...] naming numeric ones.")
    if hasattr(X, "to_dask_array"):  # a dask DataFrame: lengths need one cheap pass of row counts
        lengths = tuple(int(n) for n in engine.compute(X.map_partitions(len))[0])
        array = X[names].to_dask_array(lengths=lengths)
        return Samples(
            as_row_chunked(array), in_memory=False, feature_names=[str(n) for n in names]
        )
    values = X[names].to_numpy()
    array = as_row_chunked(values, chunk_size)
    return Samples(array, in_memory=True, values=values, feature_names=[str(n) for n in names])


def _from_parquet(where, columns):
    """A Parquet file or directory as a row-chunked dask array, one chunk per row group.

    Row counts come from the Parquet footers, so no data is read to size the chunks. Locally
    pyarrow's dataset reads the row groups; from object storage the fsspec file system does
    (:class:`ObjectRowGroups`), each row group read ahead (:mod:`diaggmm_dist.read_ahead`).
    """
    import dask
    import pandas as pd

    url = where.url
    if where.is_local:
        import pyarrow.dataset as pads

        dataset = pads.dataset(str(where.local_path), format="parquet")
        schema = dataset.schema
        groups = [
            (group, rows)
            for fragment in dataset.get_fragments()
            for group in fragment.split_by_row_group()
            # row counts from the footer: no data read
            if (rows := sum(info.num_rows for info in group.row_groups))
        ]
    else:
        fs, path = where.filesystem()
        schema, groups = _object_row_groups(fs, path)
    dtypes = pd.Series(
        {
            field.name: (
                np.dtype(field.type.to_pandas_dtype())
                if _arrow_is_numeric(field.type)
                else np.dtype(object)
            )
            for field in schema
        }
    )
    names = _numeric_columns(dtypes, columns)
    if not names:
        raise TypeError(f"The Parquet data at {url!r} has no numeric columns: pass columns=[...].")
    dtype = np.result_type(*[dtypes[n] for n in names])
    if not groups:
        raise ValueError(f"The Parquet data at {url!r} has no rows.")
    counts = tuple(n for _, n in groups)
    token = dask.base.tokenize(url, names, str(dtype), counts)
    kind = RowGroups if where.is_local else ObjectRowGroups
    reader = kind([group for group, _ in groups], names, dtype, counts)
    if not where.is_local:  # object storage: the next row groups read while one is computed on
        reader = read_ahead.ReadAhead(reader, counts, token)
    array = da.from_array(
        reader,
        chunks=(counts, (len(names),)),
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0), dtype=dtype),
        name=f"parquet-{token}",
    )
    return Samples(array, in_memory=False, feature_names=names)


def _object_row_groups(fs, path):
    """The schema and ``((fs, details, index), rows)`` of every row group at ``path``.

    A file's details (one HEAD) or a directory's listing (sizes included), and one ranged GET
    of each file's footer: pyarrow's dataset through fsspec made a HEAD per file and row group,
    and read each row group up to the file's end.
    """
    info = fs.info(path)
    found = fs.find(path, detail=True) if info["type"] == "directory" else {path: info}
    files = sorted(
        (name, info)
        for name, info in found.items()
        if info.get("type", "file") == "file"
        and not os.path.basename(name).startswith((".", "_"))  # pyarrow's ignore_prefixes
    )
    if not files:
        raise FileNotFoundError(f"No Parquet files at {fs.unstrip_protocol(path)!r}.")
    schema, groups = None, []
    for name, info in files:
        # what a file object needs not to ask for them again (s3fs: a HEAD per read)
        kept = {"name": name, "size": int(info["size"]), "type": "file"}
        kept.update({key: info[key] for key in ("ETag", "mtime") if key in info})
        details = tuple(sorted((key, str(value)) for key, value in kept.items()))
        metadata = _footer(fs, details)
        schema = schema or metadata.schema.to_arrow_schema()
        for index in range(metadata.num_row_groups):
            rows = metadata.row_group(index).num_rows
            if rows:
                groups.append(((fs, details, index), rows))
    return schema, groups


@functools.lru_cache(maxsize=64)
def _footer(fs, details):
    """A Parquet file's footer (``FileMetaData``), read once per process and file version."""
    import pyarrow.parquet as pq

    with _unbuffered(fs, details) as file:
        return pq.ParquetFile(file).metadata


def _unbuffered(fs, details):
    """The file of ``details`` opened to read: each read pyarrow asks for is one ranged GET."""
    details = dict(details)
    details["size"] = int(details["size"])
    file = fs.open(details["name"], "rb", size=details["size"], cache_type="none")
    if hasattr(type(file), "details"):  # fsspec's buffered files: no lookup of their details
        file.details = details
    return file


class RowGroups:
    """The row groups of a Parquet data set as one 2-D array of columns, read by row groups.

    Parameters
    ----------
    groups : list
        One row group each, in row order (a ``pyarrow.dataset`` fragment of one row group).
    names : list of str
        The columns read, in order.
    dtype : numpy.dtype
        Of the array (every column cast to it).
    row_counts : list of int
        Rows of each group (from the footers).
    """

    def __init__(self, groups, names, dtype, row_counts):
        self.groups, self.names, self.dtype = list(groups), list(names), np.dtype(dtype)
        self.row_counts = tuple(int(n) for n in row_counts)
        self.starts = np.cumsum((0,) + self.row_counts)
        self.shape, self.ndim = (int(self.starts[-1]), len(self.names)), 2

    def __getitem__(self, key):
        rows, columns = (*key, slice(None))[:2] if isinstance(key, tuple) else (key, slice(None))
        start, stop, step = rows.indices(self.shape[0])
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = max(first + 1, int(np.searchsorted(self.starts, stop, side="left")))
        read = [self.read_group(group) for group in self.groups[first:last]]
        block = read[0] if len(read) == 1 else np.concatenate(read)
        offset = int(self.starts[first])
        part = block[start - offset : stop - offset : step, columns]
        return part if part.size == block.size else part.copy()

    def read_group(self, group) -> np.ndarray:
        """One row group's columns, as an array of :attr:`dtype`."""
        return _columns(group.to_table(columns=self.names), self.names, self.dtype)


class ObjectRowGroups(RowGroups):
    """:class:`RowGroups` of Parquet files on object storage, read through their fsspec file system.

    A group is ``(fs, details, index)``; the file system pickles with its options.
    Each row group costs one ranged GET (its column chunks, coalesced by pyarrow), plus one of
    the footer in the first read of each file in a process.
    """

    def read_group(self, group) -> np.ndarray:
        """One row group's columns, as an array of :attr:`dtype`."""
        import pyarrow.parquet as pq

        fs, details, index = group
        metadata = _footer(fs, details)
        with _unbuffered(fs, details) as file:
            table = pq.ParquetFile(file, metadata=metadata).read_row_group(
                index, columns=self.names
            )
        return _columns(table, self.names, self.dtype)


def _arrow_is_numeric(arrow_type):
    import pyarrow.types as pat

    return pat.is_integer(arrow_type) or pat.is_floating(arrow_type)


def _columns(table, names, dtype):
    return np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False).astype(dtype) for n in names]
    )
