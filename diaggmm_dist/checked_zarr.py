"""zarr's own read path, each chunk checked before it is decoded, each decoding error naming it.

The direct reader (:mod:`diaggmm_dist.zarr_chunks`) covers local Zarr v3 Blosc or raw arrays.
zarr reads every other array the library is given: Zarr v2 stores, other codecs (Zstd, gzip),
sharded arrays, and every fsspec or object-store URL. On that path, as measured with zarr 3.1
and numcodecs 0.16, a truncated Blosc frame decoded to wrong values with no error (numcodecs gives
c-blosc no source length, and c-blosc reads as many bytes as the frame's header says: numcodecs
PR #854), any other corruption raised an error that named neither the chunk nor the store, and a
local chunk symlinked to ``/dev/zero`` was read forever.

:func:`checked_array` gives an array the library reads the same guarantees as the direct reader,
without changing anything for the rest of the process: the array is read by zarr's default codec
pipeline (:class:`~zarr.core.codec_pipeline.BatchedCodecPipeline`, zarr's extension point for
how chunks are fetched and decoded), subclassed so that each chunk is

* read with a bound: at most twice its decoded size plus 64 KiB (no codec that zarr or numcodecs
  ships writes more). A local chunk (a path or a ``file://`` URL) that is not a regular file (a
  symlink to ``/dev/zero``, a FIFO, a directory) or is larger than that is refused before it is
  opened; from any other store no more than one byte past the bound is read;
* checked, when it is stored as a Blosc frame, by
  :func:`~diaggmm_dist.zarr_chunks.blosc_frame_problem` (the direct reader's check) before Blosc
  decodes it;
* named in any error decoding it: :class:`~diaggmm_dist.zarr_chunks.CorruptChunkError`. An error
  of the store itself (I/O, network) reaches the caller as it was raised, so that a retry may
  cure it.

A codec replaced in zarr's and numcodecs' registries (``zarr.config`` ``codecs.blosc``,
``numcodecs.register_codec``) would check Blosc frames in every array of the process, but a codec
never learns its chunk's key, nor bounds a read, and would change the process for everyone.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, replace
from math import prod

import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.codecs import BloscCodec, BytesCodec, TransposeCodec
from zarr.codecs.sharding import ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, StorePath, WrapperStore

from .bounded_files import NOT_REGULAR, FileTooLarge, NotARegularFile, regular_file_size
from .locations import storage_access_error
from .zarr_chunks import CorruptChunkError, blosc_frame_problem

#: Slack of the read bound over twice a chunk's decoded size: codecs' headers (Blosc's 16 bytes,
#: gzip's ~20, Zstd's frame header) and a shard's index.
_BOUND_SLACK = 64 * 1024


def checked_array(array):
    """``array`` (a :class:`zarr.Array`) read through :class:`CheckedCodecPipeline`.

    Same metadata and store.

    Parameters
    ----------
    array : zarr.Array

    Returns
    -------
    zarr.Array
        A new array object; ``array`` itself is left as it was.
    """
    if isinstance(array.async_array.codec_pipeline, CheckedCodecPipeline):
        return array
    async_array = array.async_array
    return zarr.Array(
        _CheckedAsyncArray(async_array.metadata, async_array.store_path, async_array.config)
    )


def open_checked_array(store):
    """The Zarr array at the root of ``store``, read through :class:`CheckedCodecPipeline`.

    Its metadata is read in one request for Zarr v3 and three for v2: ``zarr.json`` with one
    ranged GET (a whole-object GET costs s3fs a HEAD first, and ``zarr.open`` probes ``.zarray``,
    ``.zattrs`` and lists the prefix too); only when it is absent, ``.zarray`` and ``.zattrs``
    side by side.

    Parameters
    ----------
    store : zarr.abc.store.Store

    Returns
    -------
    zarr.Array or None
        None when the root of ``store`` is a Zarr group.

    Raises
    ------
    FileNotFoundError
        No Zarr metadata at the root of ``store``.
    """
    try:
        return sync(_open_checked_array(store))
    except Exception as err:
        hint = storage_access_error(
            err, f"open the Zarr array at {_location(StorePath(store, ''))}"
        )
        if hint is not None:
            raise hint from err
        raise


async def _open_checked_array(store):
    root = StorePath(store, "")
    whole = OffsetByteRequest(0)  # "bytes=0-": the object in one GET, no HEAD for its size
    prototype = default_buffer_prototype()
    stored = await (root / "zarr.json").get(prototype, whole)
    if stored is not None:
        metadata = json.loads(stored.to_bytes())
        if not isinstance(metadata, dict) or metadata.get("node_type") != "array":
            return None
    else:
        zarray, zattrs = await asyncio.gather(
            (root / ".zarray").get(prototype, whole), (root / ".zattrs").get(prototype, whole)
        )
        if zarray is None:
            if await (root / ".zgroup").get(prototype, whole) is not None:
                return None
            raise FileNotFoundError(f"No Zarr array metadata in {store}.")
        metadata = json.loads(zarray.to_bytes())
        metadata["attributes"] = json.loads(zattrs.to_bytes()) if zattrs is not None else {}
    return zarr.Array(_CheckedAsyncArray(metadata, root))


class _CheckedAsyncArray(zarr.AsyncArray):
    """An AsyncArray whose chunks are read through :class:`CheckedCodecPipeline` (rest: zarr's)."""

    def __init__(self, metadata, store_path, config=None):
        super().__init__(metadata, store_path, config)
        pipeline = CheckedCodecPipeline.from_codecs(tuple(self.codec_pipeline), batch_size=1)
        where = _location(store_path)
        # frozen dataclass: zarr's own __init__ sets its fields the same way
        object.__setattr__(
            self, "codec_pipeline", replace(pipeline, location=where, array_path=store_path.path)
        )


@dataclass(frozen=True)
class CheckedCodecPipeline(BatchedCodecPipeline):
    """zarr's default codec pipeline, each chunk read with a bound, checked, named in errors.

    Built by :func:`checked_array` with ``batch_size=1``: each batch zarr decodes is one chunk,
    so an error decoding it is that chunk's.

    Parameters
    ----------
    location : str
        The array, as errors name it (its directory or URL).
    array_path : str
        The array's path in its store (a prefix of its chunks' keys).
    """

    location: str = ""
    array_path: str = ""

    async def read_batch(self, batch_info, out, drop_axes=()):
        batch = [
            (_CheckedChunk(getter, spec, self), spec, *rest) for getter, spec, *rest in batch_info
        ]
        try:
            return await super().read_batch(batch, out, drop_axes)
        except (CorruptChunkError, MemoryError):
            raise
        except Exception as err:
            if any(chunk.store_error is err for chunk, *_ in batch):
                chunk = batch[0][0]
                hint = storage_access_error(err, f"read {chunk.describe()}")
                if hint is not None:
                    raise hint from err
                raise  # the store's own error (I/O, network), as it was: a retry may cure it
            chunk = batch[0][0]
            raise chunk.corrupt(f"zarr could not decode it ({type(err).__name__}: {err})") from err

    def blosc_frame(self, spec):
        """``(nbytes, typesize)`` that a stored chunk's Blosc frame must have (None where the codecs
        do not say), or None when chunks are not stored as Blosc frames."""
        codec, decoded = self.array_bytes_codec, _decoded_bytes(spec)
        if self.bytes_bytes_codecs and isinstance(
            self.bytes_bytes_codecs[-1], BloscCodec
        ):  # Zarr v3
            plain = (
                isinstance(codec, BytesCodec)
                and len(self.bytes_bytes_codecs) == 1
                and all(isinstance(c, TransposeCodec) for c in self.array_array_codecs)
            )
            return (decoded, self.bytes_bytes_codecs[-1].typesize) if plain else (None, None)
        # Zarr v2: zarr's V2Codec(filters, compressor)
        compressor = getattr(codec, "compressor", None)
        if getattr(compressor, "codec_id", None) == "blosc":
            # no typesize: numcodecs' Blosc(typesize=...) writes its own, and Zarr v2 metadata does
            # not keep it
            return (None if getattr(codec, "filters", None) else decoded), None
        return None

    def max_stored_bytes(self, spec):
        """The most bytes a chunk (a shard, for a sharded array) may hold: a local file holding more
        is refused unread, and no more than one byte past it is read from any other store."""
        bound = 2 * _decoded_bytes(spec) + _BOUND_SLACK
        if isinstance(
            self.array_bytes_codec, ShardingCodec
        ):  # per inner chunk: its codecs' headers, its index entry
            bound += _BOUND_SLACK * prod(
                -(-s // c) for s, c in zip(spec.shape, self.array_bytes_codec.chunk_shape)
            )
        return bound


class _CheckedChunk:
    """One chunk's stored bytes for zarr's codecs (a ``ByteGetter``): read with a bound, checked.

    Errors of the store (I/O, network) are raised as they come and kept in ``store_error``.
    """

    def __init__(self, store_path, spec, pipeline):
        self.store_path, self.spec, self.pipeline = store_path, spec, pipeline
        self.store_error = None

    async def get(self, prototype=None, byte_range=None):
        limit = self.pipeline.max_stored_bytes(self.spec)
        try:
            local = _local_file(self.store_path)
            if (
                local is None
            ):  # a whole chunk is read up to one byte past the bound, whatever the store holds
                request = RangeByteRequest(0, limit + 1) if byte_range is None else byte_range
            elif await asyncio.to_thread(self._check_local_file, local, limit):
                # a regular file within the bound: read whole, as zarr reads it (a ranged read of a
                # local file is slower: see bench/FINDINGS.md, "checked_zarr: whole-file reads")
                request = byte_range
            else:
                return None  # no such file: the chunk was never written, it reads as the fill value
            data = await self.store_path.get(prototype, request)
        except CorruptChunkError:
            raise
        except BaseException as err:
            self.store_error = err
            raise
        if data is not None:
            self._check(data.as_numpy_array(), limit, byte_range)
        return data

    def _check_local_file(self, path, limit):
        """False when ``path`` does not exist; raise when not a regular file or over ``limit``."""
        try:
            regular_file_size(path, limit)
        except FileNotFoundError:
            return False
        except NotARegularFile:
            raise self.corrupt(NOT_REGULAR) from None
        except FileTooLarge as err:
            raise self.corrupt(
                f"it holds {err.size} bytes, more than the {limit} any codec writes for a "
                f"{self._chunk_text()}, so it was not read"
            ) from None
        return True

    def _check(self, stored, limit, byte_range):
        """Raise if the bytes read cannot be what zarr asked for.

        That is a chunk (``byte_range`` None) or a part of a shard.
        """
        if byte_range is not None:  # a shard's index, or an inner chunk that its index locates
            wanted = _requested_length(byte_range)
            if wanted is not None and len(stored) < wanted:
                raise self.corrupt(
                    f"it ends before the bytes its shard index locates ({len(stored)} of the "
                    f"{wanted} asked for)"
                )
            return
        if len(stored) > limit:
            raise self.corrupt(
                f"it holds more than the {limit} bytes any codec writes for a {self._chunk_text()}"
            )
        if not len(
            stored
        ):  # no codec writes nothing (zarr read an empty shard as missing: fill values)
            raise self.corrupt("it is empty")
        frame = self.pipeline.blosc_frame(self.spec)
        if frame is not None:
            problem = blosc_frame_problem(stored, *frame, chunk_text=self._chunk_text())
            if problem:
                raise self.corrupt(problem)

    def _chunk_text(self):
        return f"{tuple(self.spec.shape)} {self.spec.dtype.to_native_dtype()} chunk"

    def key(self):
        """This chunk's key in its array."""
        key, prefix = self.store_path.path, self.pipeline.array_path
        return key[len(prefix) + 1 :] if prefix and key.startswith(prefix + "/") else key

    def describe(self):
        """'chunk <key> of <array>', as errors name this chunk."""
        return f"chunk {self.key()} of {self.pipeline.location}"

    def corrupt(self, what):
        """A :class:`CorruptChunkError` naming this chunk (its key in the array) and the array."""
        return CorruptChunkError(self.key(), self.pipeline.location, what)


class WholeReadsInOneRequest(WrapperStore):
    """A store whose reads of whole objects are one request each: ranged from byte 0.

    zarr asks a store for a whole object with no range, and s3fs then sends a HEAD for the
    object's size before its GET; a ``bytes=0-`` range is one GET. For the arrays zarr reads
    with its own pipeline (xarray's, through :func:`~diaggmm_dist.inputs.open_gridded`).

    Parameters
    ----------
    store : zarr.abc.store.Store
    """

    async def get(self, key, prototype, byte_range=None):
        """The value of ``key`` (see :meth:`zarr.abc.store.Store.get`)."""
        return await self._store.get(key, prototype, _whole(byte_range))

    async def get_partial_values(self, prototype, key_ranges):
        """The values of ``key_ranges`` (see :meth:`zarr.abc.store.Store.get_partial_values`)."""
        wanted = [(key, _whole(byte_range)) for key, byte_range in key_ranges]
        return await self._store.get_partial_values(prototype, wanted)


def _whole(byte_range):
    return OffsetByteRequest(0) if byte_range is None else byte_range


def is_local(array) -> bool:
    """True for a Zarr array in a local directory (a path, ``file://``) or in memory."""
    from zarr.storage import MemoryStore

    store_path = array.store_path
    return isinstance(store_path.store, MemoryStore) or _local_file(store_path) is not None


def array_url(array) -> str:
    """A Zarr array's directory or URL, as messages name it."""
    return _location(array.store_path)


def _requested_length(byte_range):
    """How many bytes a ranged read of a long enough object returns (None: up to its end)."""
    if isinstance(byte_range, RangeByteRequest):
        return byte_range.end - byte_range.start
    if isinstance(byte_range, SuffixByteRequest):
        return byte_range.suffix
    return None


def _decoded_bytes(spec):
    return prod(spec.shape) * spec.dtype.to_native_dtype().itemsize


def _location(store_path):
    """The array at ``store_path`` as a user names it: a local directory, or the store's URL."""
    store, path = store_path.store, store_path.path
    if isinstance(store, LocalStore):
        return os.path.join(str(store.root), path) if path else str(store.root)
    if isinstance(store, FsspecStore):
        return store.fs.unstrip_protocol(f"{store.path.rstrip('/')}/{path}" if path else store.path)
    return str(store_path)


def _local_file(store_path):
    """The local file a key of a local store (a path or a ``file://`` URL) is read from, or None."""
    store = store_path.store
    if isinstance(store, LocalStore):
        return os.path.join(str(store.root), store_path.path)
    if isinstance(store, FsspecStore) and {"file", "local"} & set(_protocols(store.fs)):
        return os.path.join(store.path, store_path.path)
    return None


def _protocols(fs):
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
