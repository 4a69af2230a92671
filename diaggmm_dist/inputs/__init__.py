"""From what users hold to what the engine reads: a dask array with features on the last axis.

- :mod:`.arrays`: numpy, dask, Zarr arrays and paths as row-chunked dask arrays;
- :mod:`.gridded`: xarray objects (any number of sample dimensions, nothing stacked);
- :mod:`.tables`: pandas or dask DataFrames, Parquet;
- :mod:`.convert`: :func:`as_samples`, any of those as :class:`Samples`, which also remember
  how to give results back in the input's form (coordinates, attributes, feature names);
- :mod:`.layout`: :class:`InputLayout`, how a fitted model reads every later input.

Nothing here reads data, except a dask DataFrame's row counts (one cheap pass).
"""

from .arrays import (
    DEFAULT_CHUNK_BYTES,
    aligned_samples,
    as_row_chunked,
    check_shape_and_dtype,
    default_chunk_rows,
    in_memory_array,
    is_in_memory,
    open_zarr_array,
)
from .convert import as_samples, sample_values
from .gridded import open_gridded
from .layout import InputLayout, check_n_features
from .samples import Samples

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "InputLayout",
    "Samples",
    "aligned_samples",
    "as_row_chunked",
    "as_samples",
    "check_n_features",
    "check_shape_and_dtype",
    "default_chunk_rows",
    "in_memory_array",
    "is_in_memory",
    "open_gridded",
    "open_zarr_array",
    "sample_values",
]
