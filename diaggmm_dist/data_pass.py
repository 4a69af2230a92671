"""The data pass of a fit: one read of the data per call, its values checked on the first.

:class:`DataPass` returns the summed statistics of the responsibilities it is given (see
:mod:`diaggmm_dist.engine`); the first pass also counts the values the missing-value policy
refuses, and :func:`raise_for_bad_values` refuses them. In-memory data is checked up front
instead (:func:`check_in_memory`), before any pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from . import engine, inputs
from .kernels import split_statistics
from .validation import bad_weights_error, nonfinite_error

if TYPE_CHECKING:
    import dask.array as da


def raise_for_bad_values(
    n_nan: int,
    n_inf: int,
    bad_weights: int,
    usable_rows: int,
    missing: str,
    weighted: bool = False,
) -> None:
    """Refuse data whose values the missing-value policy does not allow, or with no usable row.

    Parameters
    ----------
    n_nan, n_inf : int
        NaN and infinite values counted in the data.
    bad_weights : int
        Sample weights that are negative or not finite.
    usable_rows : int
        Rows with a positive weight that the policy can use.
    missing : {"error", "drop", "marginalize"}
        The missing-value policy.
    weighted : bool, default=False
        Whether sample weights were given.

    Raises
    ------
    ValueError
        Infinite values, NaN under ``missing="error"``, bad weights, or no usable row.

    Examples
    --------
    >>> raise_for_bad_values(2, 0, 0, 10, "drop")  # NaN that missing="drop" skips
    >>> raise_for_bad_values(0, 0, 0, 0, "error", weighted=True)
    Traceback (most recent call last):
    ...
    ValueError: No row can be used: every sample weight is zero. Give some rows a weight > 0.
    """
    if n_inf or (missing == "error" and n_nan):
        raise nonfinite_error(
            n_nan + n_inf if missing == "error" else n_inf, allow_missing=not n_inf
        )
    if bad_weights:
        raise bad_weights_error(bad_weights)
    if usable_rows == 0:
        if weighted and missing == "error":  # (NaN were refused above)
            raise ValueError(
                "No row can be used: every sample weight is zero. Give some rows a weight > 0."
            )
        raise ValueError(
            "No row can be used: every row has "
            + ("a sample weight of zero or missing values" if weighted else "missing values")
            + (
                " (missing='drop' skips rows with any NaN; try missing='marginalize')."
                if missing == "drop"
                else "."
            )
        )


def check_in_memory(X: Any, missing: str, sample_weight: Any = None) -> None:
    """The first pass's checks (:func:`raise_for_bad_values`), done up front for in-memory data.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The rows.
    missing : {"error", "drop", "marginalize"}
        The missing-value policy.
    sample_weight : array-like of shape (n_samples,), optional
        The rows' weights.

    Raises
    ------
    ValueError
        As :func:`raise_for_bad_values`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 1.0], [np.nan, 2.0]])
    >>> check_in_memory(X, "marginalize")
    >>> check_in_memory(X, "error")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...
    """
    array = np.asarray(X)
    n_nan = n_inf = 0
    usable = np.ones(array.shape[0], dtype=bool)
    if array.dtype.kind == "f":
        nan = np.isnan(array)
        n_nan = int(np.count_nonzero(nan))
        n_inf = int(array.size - n_nan - np.count_nonzero(np.isfinite(array)))
        if n_nan and missing != "error":
            usable = ~nan.all(axis=1) if missing == "marginalize" else ~nan.any(axis=1)
    bad_weights = 0
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        bad_weights = int(np.count_nonzero(~(np.isfinite(w) & (w >= 0))))
        usable = usable & (w > 0)
    raise_for_bad_values(
        n_nan, n_inf, bad_weights, int(np.count_nonzero(usable)), missing, sample_weight is not None
    )


class DataPass:
    """One pass of statistics over a fit's data; the first pass also checks the values.

    Parameters
    ----------
    X : dask.array.Array
        Row-chunked data: samples along every axis but the last, features along the last.
    dtype : {"float64", "float32"} or numpy.dtype
        Compute dtype of the per-chunk products.
    missing : {"error", "drop", "marginalize"}, default="error"
        The missing-value policy.
    weights : dask.array.Array, optional
        Sample weights, chunked like ``X``'s sample axes.
    checked : bool, default=False
        The values were checked already (:func:`check_in_memory`): no pass counts them.

    Notes
    -----
    With a ``distributed.Client`` active, in-memory data (and weights) are persisted on its
    cluster once, here, and every pass names their chunks by key instead of carrying them in
    its graph (:func:`~diaggmm_dist.engine.held_on_cluster`); they are released with the pass.

    Attributes
    ----------
    dtype : numpy.dtype
        Compute dtype of the per-chunk products.
    resolution : float
        Machine epsilon of ``dtype`` (the M-step's test for a constant feature).

    Examples
    --------
    One pass with the responsibilities of one model (see :mod:`diaggmm_dist.engine`),
    as :func:`diaggmm_dist.em.e_step_models` makes them:

    >>> import dask.array as da
    >>> import numpy as np
    >>> from diaggmm_dist.em import e_step_models
    >>> X = da.from_array(np.arange(12.0).reshape(6, 2), chunks=3)
    >>> data_pass = DataPass(X, "float64")
    >>> model = (np.full(2, 0.5), np.array([[0.0, 1.0], [10.0, 11.0]]), np.ones((2, 2)))
    >>> blocks, shift, lower_bounds = e_step_models(data_pass, [model])
    >>> data_pass.checked, len(lower_bounds)
    (True, 1)
    """

    def __init__(
        self,
        X: da.Array,
        dtype: DTypeLike,
        missing: str = "error",
        weights: da.Array | None = None,
        checked: bool = False,
    ) -> None:
        self.X = engine.held_on_cluster(X)
        self.dtype = np.dtype(dtype)
        self.resolution = float(np.finfo(self.dtype).eps)
        self.missing = missing
        self.weights = engine.held_on_cluster(weights)
        self.checked = checked
        self.graphs = {}  # the pass's task graphs, built once for the whole fit

    @classmethod
    def of_samples(
        cls, samples: inputs.Samples, dtype: DTypeLike, missing: str, sample_weight: Any = None
    ) -> DataPass:
        """The data pass of a fit of ``samples``: in-memory data is checked up front.

        Parameters
        ----------
        samples : inputs.Samples
            The converted input.
        dtype : {"float64", "float32"} or numpy.dtype
            Compute dtype of the per-chunk products.
        missing : {"error", "drop", "marginalize"}
            The missing-value policy.
        sample_weight : array-like, dask array or DataArray, optional
            Aligned with the samples (:func:`diaggmm_dist.inputs.sample_values`).

        Returns
        -------
        DataPass
            Reading ``samples.array``.

        Raises
        ------
        ValueError
            In-memory data or weights that :func:`check_in_memory` refuses.
        """
        weights = (
            None
            if sample_weight is None
            else inputs.sample_values(sample_weight, samples, "sample_weight")
        )
        checked = samples.values is not None and (
            sample_weight is None or isinstance(sample_weight, np.ndarray)
        )
        if checked:
            check_in_memory(samples.values, missing, sample_weight)
        return cls(samples.array, dtype, missing, weights, checked)

    def __call__(self, responsibilities):
        """The statistics of one pass with ``responsibilities`` (see :mod:`diaggmm_dist.engine`)."""
        return self.statistics(responsibilities)

    def statistics(self, pass_spec, **more) -> np.ndarray:
        """One pass (``more``: further per-row inputs of the pass, e.g. ``labels``); the first
        one also counts the values that cannot be used, and refuses them."""
        stats = engine.pass_statistics(
            self.X,
            pass_spec,
            self.missing,
            self.weights,
            count_nonfinite=not self.checked,
            graphs=self.graphs,
            **more,
        )
        if not self.checked:
            scalars = split_statistics(stats)[-1]
            raise_for_bad_values(
                int(scalars["nan"]),
                int(scalars["inf"]),
                int(scalars["bad_weights"]),
                int(scalars["rows"]),
                self.missing,
                self.weights is not None,
            )
            self.checked = True
        return stats
