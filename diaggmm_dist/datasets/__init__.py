"""Data sets written to Zarr: synthetic mixture rows with a known answer, pvlib's turbidity."""
