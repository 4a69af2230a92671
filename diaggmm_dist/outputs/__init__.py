"""A fitted model's results written to Zarr: per-row scores and label maps.

These call a model's methods (``score_rows``, ``predict_proba``): they sit above the model layer.
"""
