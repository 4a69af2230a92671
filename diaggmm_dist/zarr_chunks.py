"""Reading whole chunks of rows of a local Zarr array straight into the array a pass works on.

Every EM iteration reads every chunk of the data once, on the cores that also run the E-step,
so the CPU time of a read counts as much as the kernel's. zarr (3.1) decodes each chunk into a
buffer of its own, then copies it into the array it returns, through its event loop and
thread pool. Measured on this project's 2-core VM, one 16 MiB chunk (131,072 rows x 32
float32, two Blosc-LZ4 Zarr chunks, page cache warm, the workers' malloc settings): 16 ms of
CPU through zarr, 7-8 ms when the file is read and Blosc decodes it into the destination; the
kernel takes ~27 ms on such a chunk. (``bench/out_of_core.py`` times a reading-only pass both
ways at each N.)

The direct path covers the layout the project writes (:mod:`diaggmm_dist.io.zarr_groups`) and
that most stores of row-major feature tables have: Zarr format 3, a local store, a regular
chunk grid whose chunks span every column, the ``bytes`` codec in this machine's byte order,
then at most one Blosc codec. For anything else :func:`direct_rows` returns None and zarr
reads the array; a selection other than whole chunks of rows also goes through zarr.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np

#: Alignment of the buffer a chunk's file is read into. The kernel copies the file from
#: the page cache (whole pages) into it; on this project's AMD VM a destination that starts
#: 8-24 bytes past a page boundary made that copy 3.5-4x slower (store-to-load "4K aliasing"
#: between the page-aligned source and the destination), whereas a page-aligned one reads
#: 8 MiB in ~0.9 ms.
_READ_ALIGNMENT = 4096

_thread_buffers = threading.local()


def _aligned_buffer(size):
    """The first ``size`` bytes (uint8) of this thread's page-aligned scratch buffer, grown as needed.

    Reused for every chunk file the thread reads: a fresh buffer per read page-faults its
    pages in again wherever freed memory goes back to the system at once (distributed's
    workers by default: ~5.5 ms per 8 MiB file there, against ~0.9 ms into this buffer).
    """
    buffer = getattr(_thread_buffers, "read", None)
    if buffer is None or buffer.size < size:
        raw = np.empty(size + _READ_ALIGNMENT, dtype=np.uint8)
        offset = -raw.ctypes.data % _READ_ALIGNMENT
        buffer = _thread_buffers.read = raw[offset : offset + size]
    return buffer[:size]


class DirectRows:
    """A 2-D Zarr array for ``dask.array.from_array``: whole chunks of rows read directly.

    Built by :func:`direct_rows`, which checks that the array's layout allows it.

    Parameters
    ----------
    array : zarr.Array
        The array; also used as it is for any selection that is not whole chunks of rows.
    root : pathlib.Path
        The directory of the array's chunks (the store's root plus the array's path).
    blosc : bool
        The chunks are Blosc-compressed (else stored raw).
    """

    def __init__(self, array, root, blosc):
        self.array, self.root, self.blosc = array, Path(root), blosc
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), 2
        self.chunk_rows = int(array.chunks[0])
        self.fill_value = self.dtype.type(array.metadata.fill_value)

    def __dask_tokenize__(self):
        return ("diaggmm-direct-rows", str(self.root), self.shape, str(self.dtype), self.chunk_rows, self.blosc)

    def __getitem__(self, key):
        rows = _whole_chunk_rows(key, self.shape, self.chunk_rows)
        if rows is None:
            return self.array[key]
        start, stop = rows
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        for first in range(start, stop, self.chunk_rows):
            self._read_chunk(first // self.chunk_rows, out[first - start : first - start + self.chunk_rows])
        return out

    def _read_chunk(self, index, dest):
        """Decode chunk ``index`` (along the rows) into ``dest`` (its rows; fewer for the last chunk)."""
        path = self.root / self.array.metadata.encode_chunk_key((index, 0))
        try:
            file = open(path, "rb", buffering=0)
        except FileNotFoundError:  # a chunk never written holds the fill value, as zarr reads it
            dest[...] = self.fill_value
            return
        full = dest.shape[0] == self.chunk_rows  # edge chunks are stored at full size
        with file:
            if full and not self.blosc:  # raw values: from the file straight into place
                size = file.readinto(memoryview(dest).cast("B")) + len(file.read())
                self._check_values(path, size // self.dtype.itemsize)
                return
            buffer = _aligned_buffer(os.fstat(file.fileno()).st_size)
            size = 0
            while size < buffer.size and (count := file.readinto(buffer[size:])):
                size += count
            data = buffer[:size]
        if self.blosc:
            from numcodecs import Blosc

            try:
                decoded = Blosc().decode(data, out=dest if full else None)
            except (RuntimeError, ValueError) as err:
                raise ValueError(f"Zarr chunk {path} could not be decoded into a ({self.chunk_rows}, {self.shape[1]}) "
                                 f"{self.dtype} chunk: {err}") from err
            if full:
                return
            data = decoded
        values = np.frombuffer(data, dtype=self.dtype)
        self._check_values(path, values.size)
        dest[...] = values.reshape(self.chunk_rows, self.shape[1])[: dest.shape[0]]

    def _check_values(self, path, count):
        if count != self.chunk_rows * self.shape[1]:
            raise ValueError(f"Zarr chunk {path} holds {count} values, not the {self.chunk_rows * self.shape[1]} "
                             f"of a ({self.chunk_rows}, {self.shape[1]}) chunk.")


def _whole_chunk_rows(key, shape, chunk_rows):
    """``(start, stop)`` when ``key`` selects every column of whole chunks of rows (the last may be short), else None."""
    if not isinstance(key, tuple) or len(key) != 2 or not all(isinstance(k, slice) for k in key):
        return None
    (start, stop, step), columns = key[0].indices(shape[0]), key[1].indices(shape[1])
    if step != 1 or columns != (0, shape[1], 1) or start >= stop or start % chunk_rows:
        return None
    if stop % chunk_rows and stop != shape[0]:
        return None
    return start, stop


def direct_rows(array):
    """A :class:`DirectRows` view of ``array`` when its layout allows the direct read, else None."""
    try:
        from zarr.codecs import BloscCodec, BytesCodec
        from zarr.storage import LocalStore

        metadata = array.metadata
        store = array.store_path.store
        codecs = tuple(metadata.codecs)
        if (metadata.zarr_format != 3 or not isinstance(store, LocalStore) or len(array.shape) != 2
                or tuple(metadata.chunk_grid.chunk_shape)[1] != array.shape[1]
                or not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2
                or (len(codecs) == 2 and not isinstance(codecs[1], BloscCodec))):
            return None
        dtype = np.dtype(array.dtype)
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        if dtype.kind not in "fiu" or (dtype.itemsize > 1 and endian != sys.byteorder):
            return None
        return DirectRows(array, Path(store.root) / array.store_path.path, blosc=len(codecs) == 2)
    except (AttributeError, ImportError, TypeError):  # another zarr version's internals: zarr reads it
        return None
