"""Corrupt chunks never become data on zarr's own read path either
(:mod:`diaggmm_dist.checked_zarr`).

The direct reader covers local Zarr v3 Blosc or raw arrays; zarr reads every other array: Zarr v2
stores, other codecs, sharded arrays, fsspec URLs. There a truncated Blosc frame used to decode to
wrong values with no error, other corruption raised an error naming neither chunk nor store, and a
chunk symlinked to /dev/zero was read forever. Every store here is real (a local directory, or
fsspec's ``memory://`` file system), written by zarr itself, corrupted by editing a chunk's bytes.
"""

import os
import uuid
from pathlib import Path

import fsspec
import numcodecs
import numcodecs.blosc
import numpy as np
import pytest
import zarr
from distributed import Client
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.codec_pipeline import BatchedCodecPipeline

from diaggmm_dist import DiagGMM, inputs
from diaggmm_dist.zarr_chunks import CorruptChunkError

ROWS, CHUNK_ROWS, N_FEATURES = 8_000, 1_000, 4

#: Layouts zarr reads: (create_array settings, local or memory://, key of the chunk corrupted).
#: Sharded: shards of two (1000, 4) chunks, shard c/2/0 holds rows 4000-6000.
LAYOUTS = {
    "zarr-v2-blosc": ({"zarr_format": 2, "compressors": numcodecs.Blosc()}, "local", "5.0"),
    "zarr-v3-zstd": ({"compressors": ZstdCodec()}, "local", "c/5/0"),
    "zarr-v3-sharded-blosc": (
        {"shards": (2 * CHUNK_ROWS, N_FEATURES), "compressors": BloscCodec()},
        "local",
        "c/2/0",
    ),
    "memory-zarr-v3-blosc": ({"compressors": BloscCodec()}, "memory", "c/5/0"),
}


def _values(seed=0):
    """Rows that compress (3 decimals): Blosc frames are compressed, not stored as copies."""
    return np.round(np.random.default_rng(seed).normal(size=(ROWS, N_FEATURES)), 3)


class Store:
    """A Zarr array written by zarr, with one chunk's stored bytes to read and replace."""

    def __init__(self, layout, tmp_path, values=None):
        settings, self.kind, self.key = LAYOUTS[layout]
        if self.kind == "local":
            self.location = str(tmp_path / "data.zarr")
        else:
            self.location = f"memory://{uuid.uuid4().hex}/data.zarr"
        self.values = _values() if values is None else values
        array = zarr.create_array(
            self.location,
            shape=self.values.shape,
            chunks=(CHUNK_ROWS, N_FEATURES),
            dtype=self.values.dtype,
            **settings,
        )
        array[:] = self.values
        self.original = self.read()

    @property
    def _path(self):
        return (
            Path(self.location) / self.key
            if self.kind == "local"
            else f"{self.location}/{self.key}"
        )

    def read(self):
        return (
            self._path.read_bytes()
            if self.kind == "local"
            else fsspec.filesystem("memory").cat(self._path)
        )

    def write(self, data):
        if self.kind == "local":
            self._path.unlink()
            self._path.write_bytes(data)
        else:
            fsspec.filesystem("memory").pipe(self._path, data)

    def link_to(self, target):
        self._path.unlink()
        self._path.symlink_to(target)

    def assert_names_the_chunk(self, err):
        assert err.key == self.key, str(err)
        if self.kind == "local":
            assert err.store == self.location, str(err)
        else:  # fsspec's spelling of the URL: memory:///<name>/data.zarr
            assert err.store.startswith("memory://") and err.store.endswith(
                self.location[len("memory://") :]
            ), str(err)
        assert str(err).startswith(f"Zarr chunk {self.key} of {err.store} is corrupt: "), str(err)
        assert str(err).endswith("; restore it from a copy or rewrite the store."), str(err)


def _corruptions(frame, kind):
    """``(what, bytes or None)``: None links the chunk to /dev/zero (local stores only)."""
    rng = np.random.default_rng(len(frame))
    yield "truncated by 1 byte", frame[:-1]
    yield "truncated by 8 bytes", frame[:-8]
    yield "truncated to half", frame[: len(frame) // 2]
    yield "empty", b""
    yield "random bytes of its length", rng.bytes(len(frame))
    yield "1 MiB appended", frame + bytes(2**20)
    if kind == "local":
        yield "symlink to /dev/zero", None


CASES = [
    (layout, what)
    for layout, (_, kind, _) in LAYOUTS.items()
    for what, _ in _corruptions(b"x" * 64, kind)
]


@pytest.mark.parametrize(
    ("layout", "what"), CASES, ids=[f"{layout}: {what}" for layout, what in CASES]
)
def test_a_fit_on_a_corrupt_chunk_that_zarr_reads_raises_the_error_naming_it(
    tmp_path, layout, what
):
    store = Store(layout, tmp_path)
    data = dict(_corruptions(store.original, store.kind))[what]
    if data is None:
        store.link_to("/dev/zero")
    else:
        store.write(data)
    with pytest.raises(CorruptChunkError) as raised:
        DiagGMM(3, max_iter=3, random_state=0).fit(store.location)
    store.assert_names_the_chunk(raised.value)


def _fuzz(frame):
    """``(what, bytes, must_raise)``: cut at many lengths, grown, bytes flipped (sizes kept: may
    read).
    """
    rng = np.random.default_rng(1)
    for length in sorted(
        {*range(40), *range(40, len(frame), max(1, len(frame) // 60)), len(frame) - 1}
    ):
        yield f"truncated to {length} bytes", frame[:length], True
    for extra in (b"\0", bytes(16), rng.bytes(300)):
        yield f"{len(extra)} bytes appended", frame + extra, True
    for position in [*range(16), *rng.integers(16, len(frame), 30)]:
        garbled = bytearray(frame)
        garbled[position] ^= 0xFF
        yield f"byte {position} xor 0xff", bytes(garbled), False


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_corrupt_chunk_reads_as_zarr_reads_it_or_is_refused(tmp_path, layout):
    store = Store(layout, tmp_path)
    read, refused = [], []
    for what, data, must_raise in _fuzz(store.original):
        store.write(data)
        try:
            values = inputs.as_row_chunked(store.location).compute()  # the read a fit does
        except CorruptChunkError as err:
            store.assert_names_the_chunk(err)
            refused.append(what)
            continue
        assert not must_raise, f"{what}: read without an error"
        # sizes kept, values garbled: what zarr itself decodes from those bytes, never other data
        assert np.array_equal(
            values, zarr.open_array(store.location, mode="r")[:], equal_nan=True
        ), what
        read.append(what)
    assert len(refused) > 60 and all(
        what in refused for what in ("truncated to 0 bytes", "1 bytes appended")
    )


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("values", ["compressible", "random bits"])
def test_intact_stores_read_exactly_what_zarr_reads(tmp_path, layout, values):
    # random bits: frames at their largest (Blosc stores them as copies), NaN payloads included
    rows = (
        _values()
        if values == "compressible"
        else np.random.default_rng(3)
        .integers(0, 2**63, size=(ROWS, N_FEATURES), dtype=np.uint64)
        .view(np.float64)
    )
    store = Store(layout, tmp_path, rows)
    read = inputs.as_row_chunked(store.location).compute()
    assert np.array_equal(read.view(np.uint64), rows.view(np.uint64))


@pytest.mark.parametrize("where", ["local", "memory"])
def test_zarr_v3_blosc_frames_of_1_byte_values_are_read(tmp_path, where):
    # numcodecs < 0.16 wrote every Zarr v3 Blosc frame with typesize 1 whatever the codec's
    # (zarr 3.0.8 with numcodecs 0.15.1 writes header flags 0x21, typesize 1, for typesize 8).
    # Such stores are valid: the direct reader (local) and zarr's path (memory://) read them.
    store = Store("memory-zarr-v3-blosc", tmp_path)
    if where == "local":
        store.location = str(tmp_path / "v3.zarr")
        store.kind = "local"
        zarr.create_array(
            store.location,
            shape=store.values.shape,
            chunks=(CHUNK_ROWS, N_FEATURES),
            dtype="f8",
            compressors=BloscCodec(cname="lz4", shuffle="shuffle"),
        )[:] = store.values
    rows = np.ascontiguousarray(store.values[5 * CHUNK_ROWS : 6 * CHUNK_ROWS]).view(np.uint8)
    frame = numcodecs.blosc.compress(
        rows, b"lz4", 5, numcodecs.blosc.SHUFFLE
    )  # typesize: the buffer's, 1
    assert frame[2] & 0x01 and frame[3] == 1
    store.write(frame)
    assert np.array_equal(inputs.as_row_chunked(store.location).compute(), store.values)


def test_a_zarr_v2_blosc_store_written_with_its_own_typesize_is_read(tmp_path):
    # numcodecs' Blosc(typesize=4) writes 4-byte frames of float64 values and Zarr v2 metadata
    # does not keep the typesize: a valid store, not "a chunk of another array"
    path = str(tmp_path / "typesize4.zarr")
    rows = _values()
    zarr.create_array(
        path,
        shape=rows.shape,
        chunks=(CHUNK_ROWS, N_FEATURES),
        dtype="f8",
        zarr_format=2,
        compressors=numcodecs.Blosc(typesize=4),
    )[:] = rows
    assert (Path(path) / "5.0").read_bytes()[3] == 4
    assert np.array_equal(inputs.as_row_chunked(path).compute(), rows)


def test_an_error_of_the_file_system_is_not_called_a_corrupt_chunk(tmp_path):
    # a symlink loop: the OS refuses to open it (ELOOP), as it would refuse a failing disk. An
    # error of the store reaches the caller as it was raised (a retry may cure those).
    store = Store("zarr-v2-blosc", tmp_path)
    store.link_to(store.key)
    with pytest.raises(OSError, match="Too many levels of symbolic links") as raised:
        DiagGMM(3, max_iter=3, random_state=0).fit(store.location)
    assert not isinstance(raised.value, CorruptChunkError)


def test_a_zarr_array_object_is_read_checked_and_left_as_it_was(tmp_path):
    store = Store("zarr-v2-blosc", tmp_path)
    store.write(store.original[:-1])
    array = zarr.open_array(store.location, mode="r")
    with pytest.raises(CorruptChunkError) as raised:
        DiagGMM(3, max_iter=3, random_state=0).fit(array)
    store.assert_names_the_chunk(raised.value)
    # the caller's array and the arrays zarr opens afterwards keep zarr's own pipeline: nothing
    # process-wide
    assert type(array.async_array.codec_pipeline) is BatchedCodecPipeline
    assert (
        type(zarr.open_array(store.location, mode="r").async_array.codec_pipeline)
        is BatchedCodecPipeline
    )


def test_on_worker_processes_a_fit_reads_as_in_process_and_a_corrupt_chunk_reaches_the_client(
    local_cluster, tmp_path
):
    store = Store("zarr-v2-blosc", tmp_path)
    expected = DiagGMM(3, max_iter=5, random_state=0, tol=0).fit(store.location)
    with Client(local_cluster):
        got = DiagGMM(3, max_iter=5, random_state=0, tol=0).fit(store.location)
        np.testing.assert_allclose(got.means_, expected.means_, rtol=1e-10)
        store.write(store.original[:-1])
        with pytest.raises(CorruptChunkError) as raised:
            DiagGMM(3, max_iter=5, random_state=0).fit(store.location)
    store.assert_names_the_chunk(raised.value)
    assert "its Blosc header says the frame is" in str(raised.value)
    assert os.path.exists(store.location)


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "FIFO"])
def test_a_local_chunk_that_is_not_a_regular_file_is_refused_unread_also_through_a_file_url(
    tmp_path, kind
):
    # zarr 3.1 reads a file:// URL with fsspec's local file system, not its LocalStore (3.4 does):
    # the same check
    store = Store("zarr-v2-blosc", tmp_path)
    if kind == "FIFO":  # no writer: opening it would wait for ever
        Path(store.location, store.key).unlink()
        os.mkfifo(Path(store.location, store.key))
    else:
        store.link_to("/dev/zero")
    with pytest.raises(CorruptChunkError, match="it is not a regular file") as raised:
        DiagGMM(3, max_iter=3, random_state=0).fit(f"file://{store.location}")
    assert raised.value.key == store.key and raised.value.store in (
        f"file://{store.location}",
        store.location,
    )
