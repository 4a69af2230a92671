"""
Does the diagonal assumption cost me?
=====================================

A diagonal mixture treats the features of each component as independent. Where they are not,
the model spends extra components on the correlation, or fits worse. One more pass over
held-out rows, :meth:`diaggmm_dist.DiagGMM.diagonal_fit_report`, measures it: under the
model's own responsibilities it estimates each component's full covariance on one half of the
rows and judges it on the other, beside the diagonal one, and reports the gain in nats per row
and the strongest correlations the model ignores.

First on data whose features are independent within each component (the diagonal is
fine), then on pvlib's Linke-turbidity climatology, whose 12 monthly values of a pixel rise and
fall together over the year (it is not). It needs the ``demo`` extra (pvlib ships the data).
"""

# %%
# Independent features: a mixture of two blobs with their own scales.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.linke import convert_linke_turbidity

rng = np.random.default_rng(0)
centers = np.array([[0.0, 0.0, 0.0], [4.0, -3.0, 2.0]])
X = centers[rng.integers(0, 2, 20_000)] + rng.normal(size=(20_000, 3)) * [1.0, 0.5, 2.0]
independent = DiagGMM(2, random_state=0).fit(X[:10_000])
report = independent.diagonal_fit_report(X[10_000:])
print(report.to_markdown())

# %%
# Turbidity over Europe (540 x 540 pixels, 12 months as features): fitted on every other
# latitude row, checked on the rows in between.
folder = Path(tempfile.mkdtemp())
url = convert_linke_turbidity(
    str(folder / "linke.zarr"), lat_slice=slice(270, 810), lon_slice=slice(2160, 2700)
)
cube = xr.open_zarr(url, consolidated=False)["turbidity"]
regimes = DiagGMM(6, random_state=0).fit(cube.isel(lat=slice(0, None, 2)), feature_dim="month")
turbidity_report = regimes.diagonal_fit_report(cube.isel(lat=slice(1, None, 2)))
print(turbidity_report.to_markdown())

# %%
# The gain of full covariances per component, in nats per row of the component.
fig, ax = plt.subplots(figsize=(6, 3.5))
for offset, (name, rep) in enumerate([("independent", report), ("turbidity", turbidity_report)]):
    gains = [c.gain for c in rep.components]
    ax.bar(np.arange(len(gains)) + 0.4 * offset, gains, width=0.4, label=name)
ax.axhline(0.0, color="black", linewidth=0.8)
ax.set_xlabel("component")
ax.set_ylabel("gain of full covariances (nats per row)")
ax.legend()
fig.tight_layout()
