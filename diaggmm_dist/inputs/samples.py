"""What the engine reads, and how results go back to the input's form."""

from __future__ import annotations

from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from .. import engine


def is_xarray(X) -> bool:
    """True for xarray objects (checked by module, so xarray is never imported for it)."""
    return type(X).__module__.startswith("xarray.")


@dataclass
class Samples:
    """Data ready for the engine, and what is needed to shape results like the input."""

    array: da.Array  # samples along all axes but the last; features along the last, one chunk
    in_memory: bool  # results come back as numpy (in a DataArray for numpy-backed xarray)
    values: np.ndarray | None = None  # the in-memory rows, for checks before any work
    feature_names: list | None = None
    template: object = None  # the xarray object whose sample coordinates results carry
    sample_dims: tuple = field(default=())

    @property
    def n_rows(self) -> int:
        """Number of samples (every axis but the features')."""
        return engine.n_rows(self.array)

    @property
    def n_features(self) -> int:
        """Number of features (the last axis)."""
        return self.array.shape[-1]

    def wrap(self, result, kind: str, n_components: int | None = None):
        """Give a per-row ``result`` back as numpy, dask or xarray, like the input.

        Eager input gives eager results: a numpy-backed DataArray gives a numpy-backed one.

        An xarray result gets its own attributes (:func:`result_attributes`), not the input's.
        """
        if self.in_memory and isinstance(result, da.Array):
            (result,) = engine.compute(result)
        if self.template is None:
            return result
        import xarray as xr

        coords = {
            name: coord
            for name, coord in self.template.coords.items()
            if set(coord.dims) <= set(self.sample_dims)
        }
        dims = self.sample_dims + (("component",) if kind == "proba" else ())
        if kind == "proba":
            coords["component"] = np.arange(n_components)
        names = {
            "labels": "labels",
            "proba": "responsibility",
            "log_likelihood": "log_likelihood",
            "max_resp": "max_resp",
        }
        return xr.DataArray(
            result,
            dims=dims,
            coords=coords,
            name=names[kind],
            attrs=result_attributes(kind, n_components),
        )


def result_attributes(kind: str, n_components: int | None = None) -> dict:
    """The CF attributes of a per-row result: its own, never the input's.

    Labels get CF flag attributes (-1 is unlabelled, then one flag per component) when
    ``n_components`` is given; no ``_FillValue`` is set, so stored labels read back as integers.

    Parameters
    ----------
    kind : {"labels", "proba", "max_resp", "log_likelihood"}
        The result.
    n_components : int, optional
        The model's number of components (for the labels' flags).

    Returns
    -------
    dict
        ``long_name`` and ``units`` (and the labels' flags).
    """
    if kind == "labels":
        attrs = {"long_name": "mixture component"}
        if n_components is not None:
            k = int(n_components)
            attrs.update(
                valid_min=0,
                valid_max=k - 1,
                flag_values=list(range(-1, k)),
                flag_meanings=" ".join(["unlabelled"] + [f"component_{i}" for i in range(k)]),
            )
        return attrs
    return {
        "proba": {"long_name": "responsibility of each component", "units": "1"},
        "max_resp": {"long_name": "responsibility of the chosen component", "units": "1"},
        # the log of a density: its units are those of 1/(the features' units multiplied)
        "log_likelihood": {"long_name": "log-likelihood under the mixture", "units": "1"},
    }[kind]
