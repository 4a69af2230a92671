"""What the checks on zarr's own read path cost (:mod:`diaggmm_dist.checked_zarr`).

A Zarr v2 Blosc-LZ4 store (byte shuffle, the values of a mixture in float32, written once under
``--store``) is read whole, chunk by chunk, once through a plain ``zarr.Array`` and once through
:func:`diaggmm_dist.checked_zarr.checked_array` of it: the fit's chunks, a thread per core taking
the next one, each read and dropped (no EM). The two readers alternate, ``--repeats`` passes
each; the report gives each one's best and median seconds, and the difference per chunk.

    python bench/zarr_path_checks.py --store /tmp/zarr-path-bench [--rows 1638400 --features 16]
"""

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from dask.system import CPU_COUNT

from diaggmm_dist import checked_zarr, inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402 - the bench's shared helpers, beside this script


def write_store(path, rows, features, chunk_rows):
    """A Zarr v2 Blosc-LZ4 store of mixture-like float32 rows (written once, reused)."""
    if (path / ".zarray").exists():
        return zarr.open_array(str(path), mode="r")
    array = zarr.create_array(
        str(path),
        shape=(rows, features),
        chunks=(chunk_rows, features),
        dtype="f4",
        zarr_format=2,
        compressors=numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
    )
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5, size=(8, features))
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        array[start : start + n] = (
            centers[rng.integers(0, 8, n)] + rng.normal(size=(n, features))
        ).astype("f4")
    return array


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1_638_400)  # x 16 float32: 100 MiB
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--chunk-rows", type=int, default=65_536)  # 4 MiB chunks
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    path = args.store / f"v2-blosc-{args.rows}x{args.features}-{args.chunk_rows}.zarr"
    plain = write_store(path, args.rows, args.features, args.chunk_rows)
    readers = {"zarr": plain, "checked": checked_zarr.checked_array(plain)}
    dask_chunks = inputs.as_row_chunked(str(path)).chunks[0]
    bounds = np.cumsum((0,) + dask_chunks)
    slices = [np.s_[a:b, :] for a, b in itertools.pairwise(bounds)]
    assert np.array_equal(readers["zarr"][:], readers["checked"][:])
    times = {name: [] for name in readers}
    for _ in range(args.repeats):
        for name, reader in readers.items():
            times[name].append(_common.read_pass(reader, slices, CPU_COUNT))
    n_chunks = -(-args.rows // args.chunk_rows)
    raw_mib = args.rows * args.features * 4 / 2**20
    stored_mib = sum(f.stat().st_size for f in path.iterdir() if not f.name.startswith(".")) / 2**20
    report = {
        "raw_MiB": round(raw_mib, 1),
        "stored_MiB": round(stored_mib, 1),
        "zarr_chunks": n_chunks,
        "dask_chunks": len(slices),
        "threads": CPU_COUNT,
        "zarr_version": zarr.__version__,
        "numcodecs_version": numcodecs.__version__,
    }
    for name, values in times.items():
        report[name] = {
            "best_s": round(min(values), 4),
            "median_s": round(statistics.median(values), 4),
        }
    for stat in ("best_s", "median_s"):
        delta = report["checked"][stat] - report["zarr"][stat]
        report[f"checked_minus_zarr_{stat}"] = round(delta, 4)
        report[f"checked_minus_zarr_{stat}_per_chunk_ms"] = round(1e3 * delta / n_chunks, 3)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
