"""Tables (pandas or dask DataFrames, Parquet) as row-chunked engine arrays of numeric columns."""

from __future__ import annotations

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


def looks_like_parquet(path: str | os.PathLike) -> bool:
    """True for a ``.parquet``/``.pq`` name, or a local directory holding such files."""
    text = os.fspath(path).rstrip("/")
    if text.endswith((".parquet", ".pq")):
        return True
    if "://" not in text and os.path.isdir(text):
        return any(name.endswith((".parquet", ".pq")) for name in os.listdir(text))
    return False


def _is_numeric(dtype):
    try:
        return np.dtype(dtype).kind in "iuf"
    except TypeError:  # pandas extension dtypes (strings, categories)
        return False


def _numeric_columns(dtypes, columns):
    if columns is None:
        return [name for name, dtype in dtypes.items() if _is_numeric(dtype)]
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


def from_table(X, chunk_size=None, columns=None, storage_options=None) -> Samples:
    """A DataFrame or Parquet path as :class:`Samples` of its numeric (or the given) columns.

    A Parquet path may be an fsspec URL (with ``storage_options``) or a Location: its file
    system, with the options, travels with the tasks that read its row groups.

    Raises
    ------
    ValueError
        Unknown columns; Parquet data without rows.
    TypeError
        Non-numeric columns named, or no numeric column.
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

    Row counts come from the Parquet footers, so no data is read to size the chunks.
    """
    import dask
    import pandas as pd
    import pyarrow.dataset as pads

    url = where.url
    if where.is_local:
        dataset = pads.dataset(str(where.local_path), format="parquet")
    else:  # pyarrow reads through the fsspec file system, which pickles with its options
        fs, path = where.filesystem()
        dataset = pads.dataset(path, format="parquet", filesystem=fs)
    dtypes = pd.Series(
        {
            field.name: (
                np.dtype(field.type.to_pandas_dtype())
                if _arrow_is_numeric(field.type)
                else np.dtype(object)
            )
            for field in dataset.schema
        }
    )
    names = _numeric_columns(dtypes, columns)
    if not names:
        raise TypeError(f"The Parquet data at {url!r} has no numeric columns: pass columns=[...].")
    dtype = np.result_type(*[dtypes[n] for n in names])
    groups = [
        (group, rows)
        for fragment in dataset.get_fragments()
        for group in fragment.split_by_row_group()
        # row counts from the footer: no data read
        if (rows := sum(info.num_rows for info in group.row_groups))
    ]
    if not groups:
        raise ValueError(f"The Parquet data at {url!r} has no rows.")
    counts = tuple(n for _, n in groups)
    reader = RowGroups([group for group, _ in groups], names, dtype, counts)
    token = dask.base.tokenize(url, names, str(dtype), counts)
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


class RowGroups:
    """The row groups of a Parquet data set as one 2-D array of columns, read by row groups.

    Parameters
    ----------
    groups : list of pyarrow.dataset.ParquetFileFragment
        One row group each, in row order.
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
        read = [_read_row_group(g, self.names, self.dtype) for g in self.groups[first:last]]
        block = read[0] if len(read) == 1 else np.concatenate(read)
        offset = int(self.starts[first])
        part = block[start - offset : stop - offset : step, columns]
        return part if part.size == block.size else part.copy()


def _arrow_is_numeric(arrow_type):
    import pyarrow.types as pat

    return pat.is_integer(arrow_type) or pat.is_floating(arrow_type)


def _read_row_group(fragment, names, dtype):
    table = fragment.to_table(columns=names)
    return np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False).astype(dtype) for n in names]
    )
