"""Data sets written to Zarr: synthetic mixture rows with a known answer, and pvlib's Linke turbidity."""
