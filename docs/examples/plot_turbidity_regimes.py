"""
Turbidity regimes of Europe and North Africa
============================================

pvlib's Linke-turbidity climatology (the data of the main job, ``make run``) gives each pixel
12 monthly values of atmospheric turbidity. A mixture of 6 components fitted to the pixels of
Europe and North Africa (810 x 1080 pixels from 67.5N to the equator, 45W to 45E; 12 features:
the months) finds regimes of the seasonal cycle, each with its level and its summer peak. The
cube is fitted as it is, ``month`` its feature dimension and every other dimension a sample
dimension, with nothing stacked or rechunked; the labels come back as a map with the cube's
coordinates.

It needs the ``demo`` extra (pvlib ships the data) and runs in ``make docs``; the test build
(``tests/test_docs.py``) skips it for time.
"""

# %%
# The climatology as a chunked Zarr store (converted once), opened lazily with xarray.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import xarray as xr

from diaggmm_dist import DiagGMM
from diaggmm_dist.datasets.linke import convert_linke_turbidity

folder = Path(tempfile.mkdtemp())
region = {"lat_slice": slice(270, 1080), "lon_slice": slice(1620, 2700)}  # 67.5N-0, 45W-45E
url = convert_linke_turbidity(str(folder / "linke.zarr"), **region)
cube = xr.open_zarr(url, consolidated=False).turbidity  # (lat, lon, month), Linke x 20
print(dict(cube.sizes))

# %%
# Six regimes, one read of the store per EM iteration.
gmm = DiagGMM(6, dtype="float32", random_state=0).fit(cube, feature_dim="month")
print(f"{gmm.n_iter_} iterations, converged: {gmm.converged_}")
labels = gmm.predict(cube)  # a DataArray (lat, lon), the cube's coordinates

# %%
# The map of regimes and each regime's mean seasonal cycle (Linke turbidity, the store's
# values divided by 20).
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
labels.plot(ax=left, cmap="tab10", vmin=-0.5, vmax=9.5, add_colorbar=False)
left.set_title("regimes")
for k, mean in enumerate(gmm.means_):
    right.plot(range(1, 13), mean / 20, color=plt.get_cmap("tab10")(k), label=f"regime {k}")
right.set_xlabel("month")
right.set_ylabel("Linke turbidity")
right.legend(fontsize="small")
plt.tight_layout()
plt.show()
