"""The direct read of whole chunks of rows gives what zarr gives, and only where the layout allows
it.
"""

import itertools
import types

import dask
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

from diaggmm_dist import inputs, zarr_chunks
from diaggmm_dist.stores.zarr_groups import DATA_COMPRESSORS


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(5).standard_normal((10_000, 6)).astype(np.float32)


def _array(path, rows, chunks=(1_000, 6), **kwargs):
    array = zarr.create_array(
        str(path), shape=rows.shape, chunks=chunks, dtype=rows.dtype, **kwargs
    )
    array[:] = rows
    return zarr.open_array(str(path), mode="r")


@pytest.mark.parametrize(
    "compressors",
    [DATA_COMPRESSORS, None, (BloscCodec(cname="zstd", shuffle="bitshuffle"),)],
    ids=["blosc-lz4", "raw", "blosc-zstd"],
)
def test_whole_chunks_read_directly_equal_zarr(rows, tmp_path, compressors):
    array = _array(
        tmp_path / "x.zarr", rows[:9_500], compressors=compressors
    )  # the last chunk is short
    direct = zarr_chunks.direct_rows(array)
    assert direct is not None
    for selection in (
        np.s_[:, :],
        np.s_[0:2_000, :],
        np.s_[8_000:9_500, :],
        np.s_[3_000:4_000, 0:6],
    ):
        assert np.array_equal(direct[selection], array[selection])
    # parts of chunks: the chunks read whole, then sliced, with zarr's answer
    for selection in (
        np.s_[10:20, :],
        np.s_[0:1_000, 2:4],
        np.s_[0:2_000:2, :],
        np.s_[1_000:1_500, :],
    ):
        assert np.array_equal(direct[selection], array[selection])
    # fancy indices go through zarr, with the same answer
    for selection in (np.s_[[3, 2_500, 9_000], :], np.s_[[3, 2_500], [0, 5]], np.s_[...]):
        assert np.array_equal(direct[selection], array[selection])


@pytest.mark.parametrize("compressors", [DATA_COMPRESSORS, None], ids=["blosc-lz4", "raw"])
def test_slices_and_integers_read_their_chunks_directly_as_zarr_reads_them(
    rows, tmp_path, compressors
):
    array = _array(tmp_path / "x.zarr", rows[:9_500], compressors=compressors)
    direct = zarr_chunks.direct_rows(array)
    direct.array = types.SimpleNamespace(
        metadata=array.metadata
    )  # zarr would fail: every read is direct
    bounds = [None, 0, 1, 999, 1_000, 4_321, 9_499, 9_500, 20_000, -1, -1_000, -9_500, -20_000]
    for start, stop, step in itertools.product(bounds, bounds, [None, 1, 3, 1_000]):
        for columns in (
            slice(None),
            slice(1, 4),
            slice(None, None, 2),
            slice(5, 1),
            0,
            -1,
            np.int64(3),
        ):
            key = (slice(start, stop, step), columns)
            if range(9_500)[key[0]]:  # (zarr reads no rows without reading a chunk)
                assert np.array_equal(direct[key], array[key]), key
    for row in (0, 999, 1_000, 9_499, -1, -9_500, np.int32(4_321)):
        for key in (row, (row,), (row, slice(None)), (row, 2), (row, -1)):
            assert np.array_equal(direct[key], array[key]), key
    part = direct[4_321:4_330, 1:3]
    assert part.base is None or part.base.size == part.size  # not a view of the chunk read for it


def test_a_chunk_never_written_reads_as_the_fill_value(rows, tmp_path):
    array = zarr.create_array(
        str(tmp_path / "x.zarr"),
        shape=rows.shape,
        chunks=(1_000, 6),
        dtype=rows.dtype,
        compressors=DATA_COMPRESSORS,
        fill_value=-7.0,
    )
    array[:3_000] = rows[:3_000]
    array = zarr.open_array(str(tmp_path / "x.zarr"), mode="r")
    read = zarr_chunks.direct_rows(array)[0:5_000, :]
    assert np.array_equal(read, array[0:5_000]) and np.all(read[3_000:] == -7.0)


def test_a_chunk_of_the_wrong_size_is_an_error_naming_it(rows, tmp_path):
    raw = _array(tmp_path / "raw.zarr", rows, compressors=None)
    chunk = tmp_path / "raw.zarr" / "c" / "2" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-4])
    with pytest.raises(
        zarr_chunks.CorruptChunkError,
        match=r"^Zarr chunk c/2/0 of .*raw\.zarr is corrupt: the file holds 23996 bytes, not the "
        r"24000 of a \(1000, 6\) float32 chunk stored raw; restore it from a copy or rewrite "
        r"the store\.$",
    ):
        zarr_chunks.direct_rows(raw)[2_000:3_000, :]
    blosc = _array(tmp_path / "blosc.zarr", rows, compressors=DATA_COMPRESSORS)
    (tmp_path / "blosc.zarr" / "c" / "2" / "0").write_bytes(b"garbage!" * 300)
    with pytest.raises(
        ValueError,
        match=r"c/2/0 of .*blosc\.zarr is corrupt: its Blosc header says it decodes to "
        r"\d+ bytes, not the 24000 of a \(1000, 6\) float32 chunk",
    ):
        zarr_chunks.direct_rows(blosc)[2_000:3_000, :]
    (tmp_path / "raw.zarr" / "c" / "3" / "0").write_bytes(b"\0" * (6_001 * 4))  # one value too many
    with pytest.raises(ValueError, match=r"c/3/0 of .* the file holds 24004 bytes, not the 24000"):
        zarr_chunks.direct_rows(raw)[3_000:4_000, :]


@pytest.mark.parametrize(
    "layout", ["zstd", "zarr v2", "column chunks", "sharded", "big-endian", "in memory", "1-D"]
)
def test_other_layouts_are_left_to_zarr(rows, tmp_path, layout):
    path, kwargs = str(tmp_path / "x.zarr"), {}
    if layout == "zstd":
        kwargs = {"compressors": (ZstdCodec(),)}
    elif layout == "zarr v2":
        kwargs = {"zarr_format": 2}
    elif layout == "column chunks":
        kwargs = {"chunks": (1_000, 3)}
    elif layout == "sharded":
        kwargs = {"chunks": (1_000, 6), "shards": (2_000, 6)}
    elif layout == "big-endian":
        kwargs = {"serializer": BytesCodec(endian="big"), "compressors": None}
    elif layout == "in memory":
        path = zarr.storage.MemoryStore()
    data = rows[:, 0] if layout == "1-D" else rows
    array = zarr.create_array(
        path, shape=data.shape, dtype=data.dtype, **{"chunks": (1_000,) + data.shape[1:], **kwargs}
    )
    array[:] = data
    assert zarr_chunks.direct_rows(array) is None
    if data.ndim == 2:  # the engine still reads it, through zarr
        assert np.array_equal(inputs.as_row_chunked(array, chunk_size=2_000).compute(), rows)


def test_the_engine_reads_the_project_layout_directly(rows, tmp_path):
    array = _array(tmp_path / "x.zarr", rows, compressors=DATA_COMPRESSORS)
    X = inputs.as_row_chunked(str(tmp_path / "x.zarr"), chunk_size=2_000)
    values = [getattr(node, "value", node) for node in dict(X.__dask_graph__()).values()]
    assert any(isinstance(value, zarr_chunks.DirectRows) for value in values)
    assert np.array_equal(X.compute(), array[:])
    # the name is stable for the same array (graph caches and checkpoints rely on it)
    assert inputs.as_row_chunked(str(tmp_path / "x.zarr"), chunk_size=2_000).name == X.name
    with dask.config.set(scheduler="sync"):
        assert np.array_equal(X[[3, 4_321, 9_999]].compute(), rows[[3, 4_321, 9_999]])


def test_compressed_chunks_of_any_size_read_through_one_reused_aligned_buffer(tmp_path):
    # chunks that compress to very different sizes, read small, large, small on one thread
    values = np.zeros((3_000, 8), dtype=np.float32)
    values[1_000:2_000] = np.random.default_rng(1).standard_normal((1_000, 8))
    array = _array(tmp_path / "x.zarr", values, chunks=(1_000, 8), compressors=DATA_COMPRESSORS)
    direct = zarr_chunks.direct_rows(array)
    for start in (0, 1_000, 2_000, 1_000):
        assert np.array_equal(direct[start : start + 1_000, :], values[start : start + 1_000])
    largest = max(f.stat().st_size for f in (tmp_path / "x.zarr" / "c").rglob("*") if f.is_file())
    buffer = zarr_chunks._aligned_buffer(16)
    assert buffer.ctypes.data % zarr_chunks._READ_ALIGNMENT == 0
    assert buffer.base.size >= largest  # grown to the largest chunk read, and kept
