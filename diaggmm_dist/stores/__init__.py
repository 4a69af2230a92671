"""What the library persists: models, checkpoints, the model registry, their shared Zarr helpers.

Nothing here imports the model layer (:mod:`diaggmm_dist.mixture` and above): a model store
reads and writes a :class:`~diaggmm_dist.stores.model_record.ModelRecord`, and the estimator
converts (:mod:`diaggmm_dist.persistence`).
"""
