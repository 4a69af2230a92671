"""pvlib's global Linke-turbidity climatology as a chunked Zarr store with coordinates.

The data ships inside the ``pvlib`` wheel (the project's ``demo`` extra): HDF5 dataset
``LinkeTurbidity``, uint8 (2160 lat × 4320 lon × 12 months) on a 1/12° grid, values are the
Linke turbidity × 20. It is converted once, block by block (never held whole), to a Zarr
store that ``xr.open_zarr`` opens lazily with latitude/longitude/month coordinates.
"""

from __future__ import annotations

import os

import numpy as np

from ..stores.zarr_groups import open_group_or_none, write_atomically

#: Rows of latitude per chunk, and columns of longitude per chunk (12 months per chunk).
#: The store keeps zarr's default codec (zstd), not the Blosc LZ4 of the float data the
#: project writes (``zarr_groups.DATA_COMPRESSORS``): this smooth uint8 climatology stores
#: much smaller in zstd, for a decode cost that is a few % of an EM iteration of the demo
#: (see bench/FINDINGS.md, "datasets.linke.CHUNK_LAT").
CHUNK_LAT, CHUNK_LON = 270, 540


def linke_source_path():
    """Path of ``LinkeTurbidities.h5`` inside the installed pvlib."""
    try:
        import pvlib
    except ImportError as err:
        raise ImportError(
            "The turbidity demo needs pvlib: pip install 'diaggmm-dist[demo]'."
        ) from err
    return os.path.join(os.path.dirname(pvlib.__file__), "data", "LinkeTurbidities.h5")


def linke_grid(n_lat=2160, n_lon=4320):
    """Cell-center latitudes (90 → −90) and longitudes (−180 → 180) of the climatology."""
    lat = 90 - (np.arange(n_lat) + 0.5) * 180 / n_lat
    lon = -180 + (np.arange(n_lon) + 0.5) * 360 / n_lon
    return lat, lon


def convert_linke_turbidity(url, *, lat_slice=slice(None), lon_slice=slice(None), overwrite=False):
    """Write the climatology (or a spatial subset) to a Zarr store at ``url``; return ``url``.

    Reuses an existing store unless ``overwrite``. The store holds variable ``turbidity``
    (uint8, dims ``lat, lon, month``, chunks of CHUNK_LAT × CHUNK_LON × 12).
    """
    import dask.array as da
    import h5py
    import xarray as xr

    if open_group_or_none(url) is not None and not overwrite:
        return os.fspath(url)
    source = linke_source_path()
    with h5py.File(source, "r") as handle:
        cube = handle["LinkeTurbidity"]
        lat, lon = linke_grid(cube.shape[0], cube.shape[1])
        lat, lon = lat[lat_slice], lon[lon_slice]
        lat_index = np.arange(cube.shape[0])[lat_slice]
        lon_index = np.arange(cube.shape[1])[lon_slice]
    lazy = da.from_array(
        _H5Cube(source, lat_index, lon_index), chunks=(CHUNK_LAT, CHUNK_LON, 12), lock=True
    )
    data = xr.Dataset(
        {
            "turbidity": (
                ("lat", "lon", "month"),
                lazy,
                {"long_name": "Linke turbidity x 20", "source": "pvlib LinkeTurbidities.h5"},
            )
        },
        coords={
            "lat": ("lat", lat, {"units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
            "month": ("month", np.arange(1, 13)),
        },
    )
    write_atomically(
        url, lambda target: data.to_zarr(target, mode="w", consolidated=False), overwrite
    )
    return os.fspath(url)


class _H5Cube:
    """A lazily sliced subset of the HDF5 cube (opened per read, so it pickles to workers)."""

    def __init__(self, path, lat_index, lon_index):
        self.path, self.lat_index, self.lon_index = path, lat_index, lon_index
        self.shape = (lat_index.size, lon_index.size, 12)
        self.dtype = np.dtype("uint8")
        self.ndim = 3

    def __getitem__(self, key):
        import h5py

        lat_key, lon_key, month_key = key
        lats, lons = self.lat_index[lat_key], self.lon_index[lon_key]
        with h5py.File(self.path, "r") as handle:
            block = (
                handle["LinkeTurbidity"][lats[0] : lats[-1] + 1, lons[0] : lons[-1] + 1, month_key]
                if lats.size and lons.size
                else np.empty((lats.size, lons.size, 12), np.uint8)
            )
        return block[np.ix_(lats - lats[0], lons - lons[0])] if lats.size and lons.size else block
