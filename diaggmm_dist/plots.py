"""PNG figures of a fit: the map of regimes and the convergence curve (matplotlib).

Figures are made with :class:`matplotlib.figure.Figure`, not pyplot: the user's backend and
pyplot's open figures are left as they were (saving a PNG needs no backend).
"""

from __future__ import annotations

import numpy as np


def _figure(figsize, dpi=110):
    """A figure outside pyplot: no backend is chosen or changed, nothing to close."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots()


def plot_label_map(labels, path, *, title="Mixture regimes", max_pixels=1200):
    """Save a categorical map of a 2-D ``labels`` DataArray (lat, lon) to ``path``; -1 is grey."""
    import matplotlib

    step = max(1, int(np.ceil(max(labels.shape) / max_pixels)))
    small = labels[::step, ::step]
    values = np.asarray(small.values, dtype=float)
    values[values < 0] = np.nan
    k = int(np.nanmax(values)) + 1 if np.isfinite(values).any() else 1
    palette = matplotlib.colormaps["tab20" if k > 10 else "tab10"]
    cmap = palette.resampled(k).with_extremes(bad="0.8")
    dims = small.dims
    x, y = small[dims[1]].values, small[dims[0]].values
    fig, ax = _figure((10, 5.2))
    mesh = ax.pcolormesh(x, y, values, cmap=cmap, vmin=-0.5, vmax=k - 0.5, shading="auto")
    ax.set_xlabel(dims[1])
    ax.set_ylabel(dims[0])
    ax.set_title(title)
    fig.colorbar(mesh, ax=ax, ticks=range(k), label="component")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_convergence(lower_bounds, path, *, title="EM convergence"):
    """Save the lower bound (mean log-likelihood per sample) against the iteration."""
    fig, ax = _figure((6, 4))
    ax.plot(np.arange(1, len(lower_bounds) + 1), lower_bounds, marker="o", markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean log-likelihood per sample")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_selection(
    table, path, *, chosen=None, criterion="bic", title="Choice of the number of components"
):
    """Save BIC and AIC against the number of components K (lower is better), ``chosen`` marked.

    ``table`` is :func:`diaggmm_dist.select_n_components`'s (dicts with ``n_components``,
    ``bic``, ``aic``); ``path`` a file name or a binary file object.
    """
    rows = sorted(table, key=lambda row: row["n_components"])
    ks = [row["n_components"] for row in rows]

    def values(name):
        return [np.nan if row.get(name) is None else row[name] for row in rows]

    fig, ax = _figure((6, 4))
    ax.plot(ks, values("bic"), marker="o", label="BIC")
    ax.plot(ks, values("aic"), marker="s", markersize=4, linestyle="--", label="AIC")
    if chosen is not None:
        ax.axvline(chosen, color="0.5", linestyle=":", label=f"chosen K = {chosen} ({criterion})")
    ax.set_xticks(ks)
    ax.set_xlabel("number of components K")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
