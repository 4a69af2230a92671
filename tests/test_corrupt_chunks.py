"""Corrupt chunk files never become data: the direct reader either gives what zarr gives for the
same bytes, or raises :class:`~diaggmm_dist.zarr_chunks.CorruptChunkError` naming the chunk.

The stores are written by the project's own writer
(:func:`~diaggmm_dist.datasets.synthetic.write_mixture_zarr`).
"""

import os
import pickle
import re
import shutil
import struct

import numpy as np
import pytest
import zarr
from distributed import Client
from zarr.codecs import BloscCodec

from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr
from diaggmm_dist.zarr_chunks import CorruptChunkError, direct_rows

#: The Blosc header: version, versionlz, flags, typesize (bytes), nbytes, blocksize, cbytes (int32).
HEADER = struct.Struct("<BBBBiii")
FIELDS = ("version", "versionlz", "flags", "typesize", "nbytes", "blocksize", "cbytes")

#: Stores the fuzz corrupts: (codecs, rows per chunk). Rows: three full chunks and a short last one.
STORES = {
    "blosc-lz4": ("default", 2_048),  # the project's codec
    "blosc-lz4-3-blocks": (
        [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", blocksize=4_096)],
        8_192,
    ),
    "blosc-zstd-bitshuffle": (
        [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")],
        2_048,
    ),  # memcpyed frames
    "raw": (None, 2_048),
}


def _write(
    path, chunk_rows, n_features=5, dtype="float32", compressors="default", n_chunks=3.5, seed=2
):
    """The X array of a mixture store written by the project's writer: its directory."""
    weights, means, covariances = mixture_parameters(3, n_features, seed=1)
    write_mixture_zarr(
        path,
        int(n_chunks * chunk_rows),
        weights,
        means,
        covariances,
        chunk_rows=chunk_rows,
        seed=seed,
        dtype=dtype,
        compressors=compressors,
    )
    return path / "X"


@pytest.fixture(scope="module")
def donors(tmp_path_factory):
    """Chunk files of other arrays (other rows, columns, dtype or codec): name -> bytes."""
    folder = tmp_path_factory.mktemp("donors")
    files = {}
    for rows, columns, dtype in [
        (1_024, 5, "float32"),
        (2_048, 4, "float32"),
        (2_048, 6, "float32"),
        (1_024, 10, "float32"),
        (1_024, 5, "float64"),
        (2_048, 5, "float64"),
        (8_192, 5, "float32"),
        (4_096, 5, "float32"),
    ]:
        for codec, compressors in [
            ("blosc-lz4", "default"),
            ("raw", None),
            ("blosc-zstd", [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]),
        ]:
            name = f"{codec} chunk of a ({rows}, {columns}) {dtype} array"
            array_dir = _write(
                folder / name.replace(" ", "_"),
                rows,
                columns,
                dtype,
                compressors,
                n_chunks=1,
                seed=9,
            )
            files[name] = (array_dir / "c" / "0" / "0").read_bytes()
    return files


def _blosc_corruptions(frame, rng):
    """``(what, bytes, must_raise)`` for the Blosc frame of a chunk: cut, grown, garbled, edited
    headers.
    """
    size = len(frame)
    yield "empty", b"", True
    for length in [*range(1, 400), *range(400, size, max(1, size // 97)), size - 1]:
        yield f"truncated to {length} bytes", frame[:length], True
    for extra in (frame[:1], bytes(16), bytes(17), rng.bytes(300), frame):
        yield f"{len(extra)} bytes appended", frame + extra, True
    for length in (1, 15, 16, 17, 100, size - 1, size, size + 16, size + 17):
        yield f"{length} random bytes", rng.bytes(length), True
    header = HEADER.unpack_from(frame)
    yield "the frame's header over random bytes", frame[:16] + rng.bytes(size - 16), False
    for field, value in _edited_header_fields(header, size):
        edited = HEADER.pack(
            *(value if name == field else old for name, old in zip(FIELDS, header))
        )
        # another size is refused outright; another shape of values with shuffling too, but for
        # 1-byte values: numcodecs < 0.16 wrote every Zarr v3 Blosc frame so (they read, as zarr
        # reads them)
        must = field in ("nbytes", "cbytes") or (
            field == "typesize" and value != 1 and header[2] & 0x05 and not header[2] & 0x02
        )
        yield (
            f"header {field} {header[FIELDS.index(field)]} -> {value}",
            edited + frame[16:],
            bool(must),
        )
    for position in [*range(16), *rng.integers(16, size, 40)]:
        for mask in (0x01, 0x80, 0xFF):
            garbled = bytearray(frame)
            garbled[position] ^= mask
            yield (
                f"byte {position} xor {mask:#x}",
                bytes(garbled),
                position in range(4, 8) or position in range(12, 16),
            )


def _edited_header_fields(header, size):
    """``(field, value)`` edits of a Blosc header: each field to 0, 1, its neighbors, extremes and
    others.
    """
    for index, field in enumerate(FIELDS):
        old = header[index]
        if index < 4:  # one byte each
            values = {
                0,
                1,
                2,
                4,
                8,
                255,
                old ^ 0x01,
                old ^ 0x02,
                old ^ 0x04,
                old ^ 0x08,
                old ^ 0x10,
                old ^ 0x20,
                old ^ 0xE0,
                (old + 1) % 256,
            }
        else:
            values = {
                0,
                1,
                -1,
                16,
                old - 1,
                old + 1,
                old // 2,
                old * 2,
                size,
                size - 1,
                size + 1,
                2**31 - 1,
                -(2**31),
            }
        for value in sorted(values - {old}):
            yield field, value


def _raw_corruptions(values, rng):
    """``(what, bytes, must_raise)`` for a raw chunk: cut, grown, or other bytes of the same
    size.
    """
    size = len(values)
    yield "empty", b"", True
    for length in [*range(1, 400), *range(400, size, max(1, size // 97)), size - 1]:
        yield f"truncated to {length} bytes", values[:length], True
    for extra in (values[:1], bytes(4), rng.bytes(300), values):
        yield f"{len(extra)} bytes appended", values + extra, True
    yield (
        "random bytes of the chunk's size",
        rng.bytes(size),
        False,
    )  # values like any other: zarr reads them too
    for position in rng.integers(0, size, 20):
        garbled = bytearray(values)
        garbled[position] ^= 0xFF
        yield f"byte {position} xor 0xff", bytes(garbled), False


def _check_every_read(array_dir, chunk, contents, read_from):
    """Write each of ``contents`` as ``chunk``; read rows ``read_from:`` (the chunk before it
    first), and a strided slice of some rows and columns of ``chunk``.

    Each read raises :class:`CorruptChunkError` naming the chunk (always where ``must_raise``),
    or equals zarr's own read of the same files. Returns the cases that read, and those refused.
    """
    array = zarr.open_array(str(array_dir), mode="r")
    direct = direct_rows(array)
    assert direct is not None
    rows = direct.chunk_rows
    whole = np.s_[read_from : min(read_from + 2 * rows, array.shape[0]), :]
    part = np.s_[read_from + rows + 3 : read_from + rows + 60 : 2, 1:4]  # rows of ``chunk`` only
    key, path = f"c/{chunk}/0", array_dir / "c" / str(chunk) / "0"
    original = path.read_bytes()
    read, refused = [], []
    for what, data, must_raise in contents:
        path.write_bytes(data)
        outcomes = []
        for selection in (whole, part):
            try:
                values = direct[
                    selection
                ]  # whole: chunk ``chunk - 1`` first, its frame left in the buffer
            except CorruptChunkError as err:
                assert (err.key, err.store) == (key, str(array_dir)), what
                assert str(err).startswith(f"Zarr chunk {key} of {array_dir} is corrupt: "), what
                assert str(err).endswith("; restore it from a copy or rewrite the store."), what
                outcomes.append("refused")
                continue
            assert not must_raise, f"{what}: read without an error"
            assert np.array_equal(values, array[selection], equal_nan=True), (
                f"{what}: not what zarr reads"
            )
            outcomes.append("read")
        assert outcomes[0] == outcomes[1], f"{what}: {outcomes}"
        (read if outcomes[0] == "read" else refused).append(what)
    path.write_bytes(original)
    return read, refused


@pytest.mark.parametrize("store", list(STORES))
@pytest.mark.parametrize("chunk", [1, 3], ids=["full chunk", "last, short chunk"])
def test_every_corrupt_chunk_file_reads_as_zarr_reads_it_or_is_refused(
    tmp_path, donors, store, chunk
):
    compressors, chunk_rows = STORES[store]
    array_dir = _write(tmp_path / "data.zarr", chunk_rows, compressors=compressors)
    original = (array_dir / "c" / str(chunk) / "0").read_bytes()
    rng = np.random.default_rng(chunk)
    blosc = compressors is not None
    cases = list(_blosc_corruptions(original, rng) if blosc else _raw_corruptions(original, rng))
    expected_bytes = chunk_rows * 5 * 4
    for (
        name,
        data,
    ) in donors.items():  # a chunk of another array: refused unless it holds as many values
        same_size = (
            len(data) == expected_bytes
            if not blosc
            else (
                len(data) >= 16
                and HEADER.unpack_from(data)[4] == expected_bytes
                and "float64" not in name
            )
        )
        cases.append((name, data, not same_size))
    cases.append(
        ("the chunk before it", (array_dir / "c" / str(chunk - 1) / "0").read_bytes(), False)
    )
    read, refused = _check_every_read(array_dir, chunk, cases, (chunk - 1) * chunk_rows)
    assert len(read) + len(refused) == len(cases) > 500
    # the reads compared with zarr's include chunks swapped from elsewhere, not only refusals
    assert "the chunk before it" in read
    if blosc:
        assert "blosc-zstd chunk of a (1024, 10) float32 array" in read or chunk_rows != 2_048
        assert (
            "blosc-lz4 chunk of a (1024, 5) float64 array" in refused
        )  # as many bytes, 8-byte values
    else:
        assert (
            "raw chunk of a (1024, 10) float32 array" in read
            and "random bytes of the chunk's size" in read
        )


def test_an_empty_chunk_file_is_refused_not_read_as_the_previous_chunk(tmp_path):
    # The reader keeps one buffer per thread for the files it reads; an empty file once "read"
    # as the previous frame left in it, so chunk 1 held chunk 0's rows and a fit went on.
    array_dir = _write(tmp_path / "data.zarr", 1_000)
    (array_dir / "c" / "1" / "0").write_bytes(b"")
    direct = direct_rows(zarr.open_array(str(array_dir), mode="r"))
    with pytest.raises(
        CorruptChunkError,
        match=r"^Zarr chunk c/1/0 of .*data\.zarr/X is corrupt: the file is empty; "
        r"restore it from a copy or rewrite the store\.$",
    ):
        direct[0:2_000, :]


def test_a_frame_of_a_smaller_chunk_is_refused_not_padded_with_uninitialized_rows(tmp_path):
    # A frame that decodes to fewer bytes than the chunk once filled only the first rows of the
    # destination (np.empty): the rest were whatever memory held.
    array_dir = _write(tmp_path / "data.zarr", 1_000)
    smaller = _write(tmp_path / "smaller.zarr", 600)
    shutil.copy(smaller / "c" / "0" / "0", array_dir / "c" / "2" / "0")
    direct = direct_rows(zarr.open_array(str(array_dir), mode="r"))
    with pytest.raises(
        CorruptChunkError,
        match=r"c/2/0 of .* its Blosc header says it decodes to 12000 bytes, "
        r"not the 20000 of a \(1000, 5\) float32 chunk",
    ):
        direct[2_000:3_000, :]


@pytest.mark.parametrize("compressors", ["default", None], ids=["blosc-lz4", "raw"])
def test_a_fit_on_a_store_with_a_corrupt_chunk_raises_the_error_naming_it(tmp_path, compressors):
    # chunk 5 is read right after chunk 4 (one dask chunk): the old reader gave it chunk 4's rows
    array_dir = _write(tmp_path / "data.zarr", 1_000, compressors=compressors, n_chunks=6)
    (array_dir / "c" / "5" / "0").write_bytes(b"")
    with pytest.raises(
        CorruptChunkError, match=r"Zarr chunk c/5/0 of .*data\.zarr/X is corrupt: the file "
    ):
        DiagGMM(3, random_state=0, max_iter=5, chunk_size=2_000).fit(str(array_dir))


def test_a_corrupt_chunk_read_on_a_worker_process_reaches_the_client_as_the_same_error(
    local_cluster, tmp_path
):
    array_dir = _write(tmp_path / "data.zarr", 1_000, n_chunks=6)
    (array_dir / "c" / "3" / "0").write_bytes((array_dir / "c" / "3" / "0").read_bytes()[:-1])
    with Client(local_cluster), pytest.raises(CorruptChunkError) as raised:
        DiagGMM(3, random_state=0, max_iter=5, chunk_size=2_000).fit(str(array_dir))
    assert raised.value.key == "c/3/0" and raised.value.store == str(array_dir)
    assert "its Blosc header says the frame is" in str(raised.value)


@pytest.mark.parametrize("compressors", ["default", None], ids=["blosc-lz4", "raw"])
@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "FIFO", "directory"])
def test_a_chunk_that_is_not_a_regular_file_is_refused_before_it_is_read(
    tmp_path, compressors, kind
):
    # /dev/zero never ends (nor might a FIFO's writer): the size of what is there is not the
    # size of what a read would take. Neither is read; a FIFO without writer is not waited on.
    array_dir = _write(tmp_path / "data.zarr", 1_000, compressors=compressors)
    chunk = array_dir / "c" / "1" / "0"
    chunk.unlink()
    if kind == "FIFO":
        os.mkfifo(chunk)
    elif kind == "directory":
        chunk.mkdir()
    else:
        chunk.symlink_to("/dev/zero")
    direct = direct_rows(zarr.open_array(str(array_dir), mode="r"))
    with pytest.raises(
        CorruptChunkError,
        match=r"c/1/0 of .* it is not a regular file \(a directory, device, FIFO "
        r"or socket\), so it was not read",
    ):
        direct[0:2_000, :]


@pytest.mark.parametrize("compressors", ["default", None], ids=["blosc-lz4", "raw"])
def test_a_chunk_file_larger_than_its_codec_writes_is_refused_before_it_is_read(
    tmp_path, compressors
):
    # Blosc stores what it cannot shrink as a copy behind its 16-byte header: 20,016 bytes at
    # most for a (1000, 5) float32 chunk; raw chunks are exactly 20,000. A sparse file of 1 TiB
    # (no disk used) is refused from its size, without reading it.
    array_dir = _write(tmp_path / "data.zarr", 1_000, compressors=compressors)
    chunk = array_dir / "c" / "1" / "0"
    with open(chunk, "r+b") as file:
        file.truncate(2**40)
    bound = (
        "more than the 20016 of a Blosc frame"
        if compressors
        else "not the 20000 of a (1000, 5) float32 chunk"
    )
    with pytest.raises(
        CorruptChunkError,
        match=rf"c/1/0 of .* the file holds 1099511627776 bytes, {re.escape(bound)}",
    ):
        direct_rows(zarr.open_array(str(array_dir), mode="r"))[0:2_000, :]


def test_the_largest_frames_blosc_writes_are_read():
    # The bound the reader enforces (nbytes + 16) is what Blosc writes for incompressible
    # values, with every compressor and shuffle: random bytes are stored as a copy.
    from numcodecs import Blosc

    values = np.random.default_rng(0).bytes(20_000)
    for cname in ("lz4", "lz4hc", "zstd", "zlib", "blosclz"):
        for shuffle in (Blosc.NOSHUFFLE, Blosc.SHUFFLE, Blosc.BITSHUFFLE):
            assert len(Blosc(cname=cname, clevel=9, shuffle=shuffle).encode(values)) <= 20_000 + 16


def test_incompressible_chunks_at_the_bound_are_read(tmp_path):
    # random bits: every frame is a 16-byte header and a copy of the values, the largest allowed
    rows = (
        np.random.default_rng(4)
        .integers(0, 2**32, size=(3_500, 5), dtype=np.uint32)
        .view(np.float32)
    )
    array = zarr.create_array(
        str(tmp_path / "noise.zarr"),
        shape=rows.shape,
        chunks=(1_000, 5),
        dtype=rows.dtype,
        compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
    )
    array[:] = rows
    assert (tmp_path / "noise.zarr" / "c" / "1" / "0").stat().st_size == 20_016
    read = direct_rows(zarr.open_array(str(tmp_path / "noise.zarr"), mode="r"))[:, :]
    assert np.array_equal(
        read.view(np.uint32), rows.view(np.uint32)
    )  # bit for bit, NaN payloads too


def test_the_error_survives_pickling_as_dask_workers_send_it():
    err = CorruptChunkError("c/4/0", "/data/x.zarr/X", "the file is empty")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValueError) and type(back) is CorruptChunkError
    assert (back.key, back.store, back.what, str(back)) == (err.key, err.store, err.what, str(err))
    assert str(back) == (
        "Zarr chunk c/4/0 of /data/x.zarr/X is corrupt: the file is empty; restore it from a copy "
        "or rewrite the store."
    )
