"""Data adapters and stores: Zarr (and later xarray, Parquet, the model store)."""
