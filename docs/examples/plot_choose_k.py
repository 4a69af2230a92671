"""
Choosing K with the BIC
=======================

A mixture of 5 components is written to a Zarr store; :func:`diaggmm_dist.select_n_components`
fits every candidate number of components K in the same passes over the data (one read of the
store per EM iteration, whatever the number of candidates) and picks the lowest BIC. The BIC
falls steeply up to the true K and rises slowly after it: each extra component costs more
parameters than the likelihood it adds.
"""

# %%
# The data: 100,000 rows of 4 features from a known mixture of 5 components, in Zarr.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from diaggmm_dist import select_n_components
from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr

folder = Path(tempfile.mkdtemp())
weights, means, covariances = mixture_parameters(n_components=5, n_features=4, seed=1)
write_mixture_zarr(folder / "data.zarr", 100_000, weights, means, covariances, seed=1)

# %%
# Every candidate K fitted side by side, the lowest BIC chosen.
choice = select_n_components(
    str(folder / "data.zarr/X"), candidates=[1, 2, 3, 4, 5, 6, 8], random_state=0
)
for row in choice.table:
    print(f"K = {row['n_components']}: BIC {row['bic']:.4g}, AIC {row['aic']:.4g}")
print("chosen K:", choice.best.n_components)

# %%
# The criteria against K: lower is better.
ks = [row["n_components"] for row in choice.table]
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(ks, [row["bic"] for row in choice.table], marker="o", label="BIC")
ax.plot(ks, [row["aic"] for row in choice.table], marker="s", linestyle="--", label="AIC")
ax.axvline(choice.best.n_components, color="0.5", linestyle=":", label="chosen K")
ax.set_xlabel("number of components K")
ax.set_ylabel("criterion (lower is better)")
ax.legend()
plt.show()
