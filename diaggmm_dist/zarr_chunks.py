"""Reading whole chunks of rows of a local Zarr array straight into the array a pass works on.

Every EM iteration reads every chunk of the data once, on the cores that also run the E-step,
so the CPU time of a read counts as much as the kernel's. zarr (3.1) decodes each chunk into a
buffer of its own, then copies it into the array it returns, through its event loop and
thread pool; reading the file and letting Blosc decode it into the destination takes about
half that CPU (see bench/FINDINGS.md, "zarr_chunks: the direct read";
``bench/out_of_core.py`` times a reading-only pass both ways at each N).

The direct path covers the layout the project writes (:mod:`diaggmm_dist.stores.zarr_groups`) and
that most stores of row-major feature tables have: Zarr format 3, a local store, a regular
chunk grid whose chunks span every column, the ``bytes`` codec in this machine's byte order,
then at most one Blosc codec. For anything else :func:`direct_rows` returns None and zarr
reads the array. A selection of integers and slices is read as the whole chunks that hold it
(as zarr decodes them), then sliced; fancy indices go through zarr.

Corrupt storage never becomes data: each chunk file is checked before it is decoded, in O(1)
(its size from ``fstat``, the 16-byte Blosc header), and one that cannot hold its chunk raises
:class:`CorruptChunkError` naming the chunk and the array. A raw chunk must be exactly the
chunk's bytes; a Blosc frame must decode to exactly them and be as long as its header says.
(c-blosc trusts the header: a short frame made it read past the buffer, into the previous
frame left in the reused buffer, and a frame of a smaller chunk filled only part of the
destination.) A file larger than the codec can write for the chunk, or not a regular file
(a symlink to /dev/zero, a FIFO), is refused before anything is read. Blosc frames carry no
checksum: garbled compressed bytes of the right sizes can still decode to wrong values, the
same ones zarr reads.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
from pathlib import Path

import numcodecs.blosc
import numpy as np

from .bounded_files import NOT_REGULAR, FileTooLarge, NotARegularFile, regular_file_size

#: Alignment of the buffer a chunk's file is read into: a destination a few bytes past a page
#: boundary makes the kernel's copy from the page cache several times slower ("4K aliasing";
#: see bench/FINDINGS.md, "zarr_chunks._READ_ALIGNMENT").
_READ_ALIGNMENT = 4096

_thread_buffers = threading.local()


def _aligned_buffer(size):
    """The first ``size`` bytes (uint8) of this thread's page-aligned scratch buffer (grown).

    Reused for every chunk file the thread reads: a fresh buffer per read page-faults its
    pages in again wherever freed memory goes back to the system at once (distributed's
    workers by default; see bench/FINDINGS.md, "zarr_chunks._aligned_buffer").
    """
    buffer = getattr(_thread_buffers, "read", None)
    if buffer is None or buffer.size < size:
        raw = np.empty(size + _READ_ALIGNMENT, dtype=np.uint8)
        offset = -raw.ctypes.data % _READ_ALIGNMENT
        buffer = _thread_buffers.read = raw[offset : offset + size]
    return buffer[:size]


class CorruptChunkError(ValueError):
    """A chunk file that cannot hold its chunk (its size or its Blosc header disagrees).

    The message is one sentence: which chunk of which array, what is wrong, what to do.

    Parameters
    ----------
    key : str
        The chunk's key (e.g. ``c/2/0``).
    store : str
        The array's directory (the store's root plus the array's path).
    what : str
        What is wrong with the file.
    """

    def __init__(self, key, store, what):
        self.key, self.store, self.what = key, store, what
        super().__init__(
            f"Zarr chunk {key} of {store} is corrupt: {what}; restore it from a copy "
            f"or rewrite the store."
        )

    # pickled with its three fields (dask's workers send errors to the client)
    def __reduce__(self):
        return type(self), (self.key, self.store, self.what)


#: Length of a Blosc (1) frame's header: version, versionlz, flags, typesize (one byte each),
#: then nbytes (decoded size), blocksize and cbytes (the frame's length, header included) as
#: little-endian int32 (c-blosc's README_HEADER). Parsed here: numcodecs 0.16 removed its public
#: ``cbuffer_sizes`` ("not intended to be public API"), and its private one, like c-blosc's
#: decoder, reads these fields without knowing how long the buffer is.
_BLOSC_HEADER = struct.Struct("<BBBBiii")

#: Flags (header byte 2) under which the frame's typesize matters to the decoded bytes:
#: byte- or bit-shuffled (0x01, 0x04), not stored as a plain copy (0x02).
_BLOSC_SHUFFLE, _BLOSC_MEMCPYED, _BLOSC_BITSHUFFLE = 0x01, 0x02, 0x04


def blosc_frame_problem(frame, nbytes=None, typesize=None, chunk_text="chunk"):
    """What is wrong with a stored Blosc ``frame`` (bytes-like), or None: checked before decoding.

    c-blosc trusts the frame's header: told nothing of the buffer's length, it reads as many bytes
    as the header's ``cbytes`` says, past the end of a short frame (wrong values, no error), and
    writes as many as its ``nbytes`` says. So the header must describe the frame and the chunk.

    Parameters
    ----------
    frame : bytes-like
        The stored chunk, as read.
    nbytes : int, optional
        The chunk's decoded size, when the codecs say it (else not checked).
    typesize : int, optional
        The Blosc codec's typesize, checked against a shuffled frame's (1 is also accepted).
    chunk_text : str
        The chunk, as the message names it (e.g. ``(1000, 4) float64 chunk``).

    Returns
    -------
    str or None
        What is wrong (a clause for :class:`CorruptChunkError`), None when the header fits.
    """
    size = len(memoryview(frame).cast("B"))
    if size < _BLOSC_HEADER.size:
        return (
            "it is empty"
            if size == 0
            else f"it holds {size} bytes, fewer than a Blosc header's {_BLOSC_HEADER.size}"
        )
    _version, _versionlz, flags, frame_typesize, frame_nbytes, _blocksize, cbytes = (
        _BLOSC_HEADER.unpack_from(frame)
    )
    if nbytes is not None and frame_nbytes != nbytes:
        return (
            f"its Blosc header says it decodes to {frame_nbytes} bytes, not the {nbytes} of a "
            f"{chunk_text}"
        )
    if cbytes != size:
        return (
            f"its Blosc header says the frame is {cbytes} bytes long, but the chunk holds {size} "
            f"(truncated or overwritten)"
        )
    shuffled = flags & (_BLOSC_SHUFFLE | _BLOSC_BITSHUFFLE) and not flags & _BLOSC_MEMCPYED
    # typesize 1: numcodecs < 0.16 wrote every Zarr v3 Blosc frame so (numcodecs #713); Blosc
    # decodes a frame with its own typesize, so it is the chunk's bytes all the same
    if shuffled and typesize is not None and frame_typesize not in (typesize, 1):
        return (
            f"its Blosc header says its values are {frame_typesize}-byte, but the array's Blosc "
            f"codec has typesize {typesize} (a chunk of another array?)"
        )
    return None


class DirectRows:
    """A 2-D Zarr array for ``dask.array.from_array``: whole chunks of rows read directly.

    Built by :func:`direct_rows`, which checks that the array's layout allows it. Every chunk
    file is checked before it is decoded, in O(1) (its size, its Blosc header): a file that
    cannot hold the chunk raises :class:`CorruptChunkError` naming it, and a file larger than
    the chunk's codec can produce, or not a regular file, is refused before it is read.

    Parameters
    ----------
    array : zarr.Array
        The array; also used as it is for any selection that is not whole chunks of rows.
    root : pathlib.Path
        The directory of the array's chunks (the store's root plus the array's path).
    blosc : bool
        The chunks are Blosc-compressed (else stored raw).
    typesize : int, optional
        The Blosc codec's typesize (from the array's metadata), checked against each frame's.
    """

    def __init__(self, array, root, blosc, typesize=None):
        self.array, self.root, self.blosc, self.typesize = array, Path(root), blosc, typesize
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), 2
        self.chunk_rows = int(array.chunks[0])
        self.fill_value = self.dtype.type(array.metadata.fill_value)
        self.chunk_bytes = self.chunk_rows * self.shape[1] * self.dtype.itemsize
        # the largest file the codec writes for a chunk: Blosc stores what it cannot shrink as a
        # copy behind its header (c-blosc: compression into nbytes + BLOSC_MAX_OVERHEAD, 16, never
        # fails)
        self.max_file_bytes = self.chunk_bytes + (numcodecs.blosc.MAX_OVERHEAD if blosc else 0)

    def __dask_tokenize__(self):
        return (
            "diaggmm-direct-rows",
            str(self.root),
            self.shape,
            str(self.dtype),
            self.chunk_rows,
            self.blosc,
        )

    def __getitem__(self, key):
        rows = _whole_chunk_rows(key, self.shape, self.chunk_rows)
        if rows is not None:
            return self._read_rows(*rows)
        around = _chunks_around(key, self.shape, self.chunk_rows)
        if around is None:  # fancy indices and the like: zarr reads them
            return self.array[key]
        # slices and integers: their whole chunks read (and checked) here, as zarr would decode them
        start, stop, within = around
        chunks = self._read_rows(start, stop)
        part = chunks[within]
        # a view would keep every chunk alive
        return part if np.size(part) == chunks.size else part.copy()

    def _read_rows(self, start, stop):
        """Rows ``start:stop`` (whole chunks of rows; the last may be short) as a new array."""
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        for first in range(start, stop, self.chunk_rows):
            self._read_chunk(
                first // self.chunk_rows, out[first - start : first - start + self.chunk_rows]
            )
        return out

    def _read_chunk(self, index, dest):
        """Decode chunk ``index`` (along the rows) into ``dest`` (its rows; fewer for the last one).

        Every byte of ``dest`` is written, or an error is raised.
        """
        key = self.array.metadata.encode_chunk_key((index, 0))
        try:  # non-blocking: a FIFO in the store must not wait for a writer (it is refused below)
            fd = os.open(self.root / key, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:  # a chunk never written holds the fill value, as zarr reads it
            dest[...] = self.fill_value
            return
        full = dest.shape[0] == self.chunk_rows  # edge chunks are stored at full size
        try:
            size = self._file_size(fd, key)
            with io.FileIO(fd, "rb", closefd=False) as file:
                if full and not self.blosc:  # raw values: from the file straight into place
                    self._read_exactly(file, memoryview(dest).cast("B"), key)
                    return
                data = _aligned_buffer(size)
                self._read_exactly(file, data, key)  # every byte of the frame fresh from the file
        finally:
            os.close(fd)
        values = dest if full else np.empty((self.chunk_rows, self.shape[1]), dtype=self.dtype)
        if self.blosc:
            self._check_blosc_header(data, key)
            try:  # into every byte of ``values``: the header's nbytes is the chunk's size
                numcodecs.blosc.decompress(data, values)
            except (RuntimeError, ValueError) as err:
                raise self._corrupt(key, f"Blosc could not decode it ({err})") from err
        else:
            values[...] = np.frombuffer(data, dtype=self.dtype).reshape(values.shape)
        if not full:
            dest[...] = values[: dest.shape[0]]

    def _file_size(self, fd, key):
        """The size of the open chunk file ``fd``, checked against what the chunk's codec writes."""
        limit = self.max_file_bytes if self.blosc else self.chunk_bytes
        try:
            size = regular_file_size(fd, limit)
        except NotARegularFile:
            raise self._corrupt(key, NOT_REGULAR) from None
        except FileTooLarge as err:
            size = err.size
        if self.blosc:
            if size < _BLOSC_HEADER.size:
                raise self._corrupt(
                    key,
                    "the file is empty"
                    if size == 0
                    else f"the file holds {size} bytes, fewer than a Blosc header's "
                    f"{_BLOSC_HEADER.size}",
                )
            if size > self.max_file_bytes:
                raise self._corrupt(
                    key,
                    f"the file holds {size} bytes, more than the {self.max_file_bytes} of a "
                    f"Blosc frame of a {self._chunk_text()}, so it was not read",
                )
        elif size != self.chunk_bytes:
            raise self._corrupt(
                key,
                f"the file holds {size} bytes, not the {self.chunk_bytes} of a "
                f"{self._chunk_text()} stored raw",
            )
        return size

    def _read_exactly(self, file, view, key):
        """Fill ``view`` from ``file``; a file that ends sooner (shrunk since its size was read) is
        corrupt."""
        size = 0
        while size < len(view) and (count := file.readinto(view[size:])):
            size += count
        if size < len(view):
            raise self._corrupt(key, f"the file ended after {size} of its {len(view)} bytes")

    def _check_blosc_header(self, frame, key):
        """Check that the Blosc ``frame``'s header describes this chunk and the frame's length."""
        problem = blosc_frame_problem(frame, self.chunk_bytes, self.typesize, self._chunk_text())
        if problem:
            raise self._corrupt(key, problem)

    def _chunk_text(self):
        return f"({self.chunk_rows}, {self.shape[1]}) {self.dtype} chunk"

    def _corrupt(self, key, what):
        return CorruptChunkError(key, str(self.root), what)


def _whole_chunk_rows(key, shape, chunk_rows):
    """``(start, stop)`` when ``key`` selects every column of whole chunks of rows (the last may
    be short), else None."""
    if not isinstance(key, tuple) or len(key) != 2 or not all(isinstance(k, slice) for k in key):
        return None
    (start, stop, step), columns = key[0].indices(shape[0]), key[1].indices(shape[1])
    if step != 1 or columns != (0, shape[1], 1) or start >= stop or start % chunk_rows:
        return None
    if stop % chunk_rows and stop != shape[0]:
        return None
    return start, stop


def _chunks_around(key, shape, chunk_rows):
    """The whole chunks of rows holding what ``key`` selects, and ``key`` within them.

    ``(start, stop, within)``; None unless ``key`` is integers and slices (steps up, as zarr
    allows) that select some rows.
    """
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > 2 or not all(
        isinstance(k, (slice, int, np.integer)) and not isinstance(k, (bool, np.bool_)) for k in key
    ):
        return None
    if any(isinstance(k, slice) and k.step is not None and k.step < 1 for k in key):
        return None  # zarr refuses steps down (and numpy a step of 0)
    rows, columns = (*key, slice(None))[:2]
    if isinstance(rows, slice):
        selected = range(*rows.indices(shape[0]))
        if not selected:
            return None
        low, high, within = (
            selected.start,
            selected[-1] + 1,
            slice(selected.start, selected.stop, selected.step),
        )
    else:
        low = int(rows) + shape[0] if rows < 0 else int(rows)
        if not 0 <= low < shape[0]:
            return None  # zarr raises its IndexError
        high, within = low + 1, low
    start, stop = low // chunk_rows * chunk_rows, min(-(-high // chunk_rows) * chunk_rows, shape[0])
    if isinstance(within, slice):
        within = slice(within.start - start, within.stop - start, within.step)
    else:
        within -= start
    return start, stop, (within, columns)


def direct_rows(array):
    """A :class:`DirectRows` view of ``array`` when its layout allows the direct read, else None."""
    try:
        from zarr.codecs import BloscCodec, BytesCodec
        from zarr.storage import LocalStore

        metadata = array.metadata
        store = array.store_path.store
        codecs = tuple(metadata.codecs)
        if (
            metadata.zarr_format != 3
            or not isinstance(store, LocalStore)
            or len(array.shape) != 2
            or tuple(metadata.chunk_grid.chunk_shape)[1] != array.shape[1]
            or not codecs
            or not isinstance(codecs[0], BytesCodec)
            or len(codecs) > 2
            or (len(codecs) == 2 and not isinstance(codecs[1], BloscCodec))
        ):
            return None
        dtype = np.dtype(array.dtype)
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        if dtype.kind not in "fiu" or (dtype.itemsize > 1 and endian != sys.byteorder):
            return None
        typesize = getattr(codecs[1], "typesize", None) if len(codecs) == 2 else None
        return DirectRows(
            array,
            Path(store.root) / array.store_path.path,
            blosc=len(codecs) == 2,
            typesize=typesize,
        )
    except (
        AttributeError,
        ImportError,
        TypeError,
    ):  # another zarr version's internals: zarr reads it
        return None
