"""What every mixture estimator shares: reading its input, and per-row results from ``_map``.

:class:`MixtureBase` holds the reading of the data (the fitted
:class:`~diaggmm_dist.inputs.InputLayout`, the feature checks) and the predictions that only
need the estimator's ``_map`` (its lazy per-row results): :class:`~diaggmm_dist.DiagGMM` and
:class:`~diaggmm_dist.BayesianDiagGMM` inherit them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import engine, inputs
from .data_pass import check_in_memory
from .locations import StorageOptions, checked_storage_options
from .validation import is_int

if TYPE_CHECKING:
    from .mixture import Data, PerRow

__all__ = ["MixtureBase"]


def checked_options(storage_options: StorageOptions | None, where: str) -> dict | None:
    """``storage_options`` checked once (a plain dict), or None; refused before any work.

    Parameters
    ----------
    storage_options : dict or None
        fsspec options, as given.
    where : str
        The method they were given to (``"DiagGMM.fit"``), as messages name it.

    Returns
    -------
    dict or None
        None when none were given.
    """
    if storage_options is None:
        return None
    return checked_storage_options(storage_options, where)


class MixtureBase(DensityMixin, BaseEstimator):
    """A mixture estimator's reading of its input and its per-row predictions.

    A subclass sets its settings (``chunk_size``, ``missing``, ``dtype``, ``verbose``,
    ``random_state``, ``n_components``), its fitted ``weights_``, ``means_`` and
    ``covariances_``, and defines ``fit`` and ``_map(samples, kind)``: the lazy per-row
    results of a kind (``"labels"``, ``"proba"`` or ``"log_likelihood"``) of rows read by
    :meth:`_prediction_samples`. The methods here read the data and shape those results
    like the input.

    Examples
    --------
    >>> import numpy as np
    >>> from diaggmm_dist import BayesianDiagGMM, DiagGMM
    >>> from diaggmm_dist.mixture_base import MixtureBase
    >>> issubclass(DiagGMM, MixtureBase), issubclass(BayesianDiagGMM, MixtureBase)
    (True, True)
    """

    def _samples(self, X, storage_options=None, **layout):
        """:func:`inputs.as_samples` of ``X``, in this estimator's ``chunk_size``."""
        if isinstance(X, inputs.Samples):
            return X
        return inputs.as_samples(X, self.chunk_size, storage_options=storage_options, **layout)

    def _input_layout(self):
        """The fitted :class:`~diaggmm_dist.inputs.InputLayout` (from the fitted attributes)."""
        return inputs.InputLayout.of(self)

    def _check_n_features(self, n_features):
        """``n_features`` is the fitted model's number of features, or a clear error."""
        inputs.check_n_features(n_features, self.n_features_in_, type(self).__name__)

    def _check_features(self, samples):
        """The same number of features as the model, and the same names when both have names."""
        self._input_layout().check(samples, type(self).__name__)

    def _prediction_samples(
        self,
        X,
        storage_options=None,
        method="predict",
        feature_dim=None,
        features=None,
        columns=None,
    ):
        """``X`` read once with the fitted input layout, its features and values checked.

        ``feature_dim``, ``features`` and ``columns``, when given, replace the fitted ones.
        """
        check_is_fitted(self, "means_")
        storage_options = checked_options(storage_options, f"{type(self).__name__}.{method}")
        layout = self._input_layout()
        options = {"feature_dim": feature_dim, "features": features, "columns": columns}
        given = {key: value for key, value in options.items() if value is not None}
        if given:  # read as the caller says; still checked against the fitted features
            layout = dataclasses.replace(layout, **given)
        samples = layout.samples(X, self.chunk_size, storage_options)
        layout.check(samples, type(self).__name__)
        if samples.values is not None:
            check_in_memory(samples.values, self.missing)
        return samples

    def _set_input_layout(self, layout, samples):
        """Keep the input layout ``layout`` (a dict or an InputLayout) and the feature names."""
        if not isinstance(layout, inputs.InputLayout):
            layout = inputs.InputLayout.from_dict(layout)
        fitted = layout.fitted(samples)
        self.input_layout_ = fitted.to_dict()  # the persisted form
        if fitted.feature_names is not None:
            self.feature_names_in_ = np.asarray(fitted.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _print(self, level, message, detail=""):
        """Print ``message`` at ``verbose >= level`` (and ``detail`` at ``verbose >= 2``)."""
        if self.verbose >= level:
            print(message + (detail if self.verbose >= 2 else ""))

    def _mean_log_likelihood(self, samples):
        """Mean log-likelihood per row of ``samples`` (rows that cannot be scored left out)."""
        mean = da.mean if self.missing == "error" else da.nanmean
        (value,) = engine.compute(mean(self._map(samples, "log_likelihood")))
        return float(value)

    def predict_proba(
        self,
        X: Data,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> PerRow:
        """Posterior probability of every component for every row (the responsibilities).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows with the model's features, in any form :meth:`fit` takes (read with the
            fitted input layout).
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for ``X`` when it is a path or URL.
            For other options per URL, pass Zarr store objects (or
            :class:`~diaggmm_dist.locations.Location` objects) instead. The options are plain
            data that travel with the tasks to the workers (docs/object-storage.md).
        feature_dim, features, columns : optional
            How to read ``X``, as :meth:`fit` takes them; by default the fitted layout's.

        Returns
        -------
        proba : ndarray, dask array or DataArray of shape (n_samples, n_components)
            In the model's ``dtype``; each row sums to one. Numpy, dask or xarray as
            :meth:`predict` gives its labels.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> from diaggmm_dist import DiagGMM
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> proba = DiagGMM(2, random_state=0).fit(X).predict_proba(X)
        >>> proba.shape, np.allclose(proba.sum(axis=1), 1.0)
        ((6, 2), True)
        """
        samples = self._prediction_samples(
            X, storage_options, "predict_proba", feature_dim, features, columns
        )
        return samples.wrap(self._map(samples, "proba"), "proba", self.n_components)

    def score_samples(
        self,
        X: Data,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> PerRow:
        """Log-likelihood ``log p(x)`` of every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows with the model's features, in any form :meth:`fit` takes (read with the
            fitted input layout).
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for ``X`` when it is a path or URL.
            For other options per URL, pass Zarr store objects (or
            :class:`~diaggmm_dist.locations.Location` objects) instead. The options are plain
            data that travel with the tasks to the workers (docs/object-storage.md).
        feature_dim, features, columns : optional
            How to read ``X``, as :meth:`fit` takes them; by default the fitted layout's.

        Returns
        -------
        log_likelihood : ndarray, dask array or DataArray of shape (n_samples,), float64
            NaN where a row cannot be scored. Numpy, dask or xarray as :meth:`predict` gives
            its labels.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> from diaggmm_dist import DiagGMM
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> bool(np.isclose(gmm.score_samples(X).mean(), gmm.score(X)))
        True
        """
        samples = self._prediction_samples(
            X, storage_options, "score_samples", feature_dim, features, columns
        )
        return samples.wrap(self._map(samples, "log_likelihood"), "log_likelihood")

    def score(
        self,
        X: Data,
        y: None = None,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> float:
        """Mean log-likelihood per row (computed even for lazy input).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows with the model's features, in any form :meth:`fit` takes (read with the
            fitted input layout).
        y : None
            Ignored (scikit-learn's API).
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for ``X`` when it is a path or URL.
            For other options per URL, pass Zarr store objects (or
            :class:`~diaggmm_dist.locations.Location` objects) instead. The options are plain
            data that travel with the tasks to the workers (docs/object-storage.md).
        feature_dim, features, columns : optional
            How to read ``X``, as :meth:`fit` takes them; by default the fitted layout's.

        Returns
        -------
        float
            The mean of :meth:`score_samples`; with a missing-value policy, rows that cannot
            be scored are left out of the mean.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> from diaggmm_dist import DiagGMM
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> bool(gmm.score(X) >= gmm.lower_bound_)
        True
        """
        samples = self._prediction_samples(
            X, storage_options, "score", feature_dim=feature_dim, features=features, columns=columns
        )
        return self._mean_log_likelihood(samples)

    def fit_predict(
        self, X: Data, y: None = None, *, storage_options: StorageOptions | None = None
    ) -> PerRow:
        """Fit, then return the component label of every row (see :meth:`predict`).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows of features, in any form :meth:`fit` takes.
        y : None
            Ignored (scikit-learn's API).
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for ``X`` when it is a path or URL.
            For other options per URL, pass Zarr store objects (or
            :class:`~diaggmm_dist.locations.Location` objects) instead. The options are plain
            data that travel with the tasks to the workers (docs/object-storage.md).

        Returns
        -------
        labels : ndarray, dask array or DataArray of shape (n_samples,)
            As :meth:`predict` gives them.

        Raises
        ------
        ValueError
            As :meth:`fit`.

        Examples
        --------
        >>> import numpy as np
        >>> from diaggmm_dist import DiagGMM
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> labels = DiagGMM(2, random_state=0).fit_predict(X)
        >>> bool(labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5])
        True
        """
        return self.fit(X, storage_options=storage_options).predict(
            X, storage_options=storage_options
        )

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` rows from the fitted mixture (as scikit-learn does).

        The rows come grouped by component, in order, drawn from ``random_state``.

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows to draw.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The rows.
        y : ndarray of shape (n_samples,)
            The component of each row.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            ``n_samples`` is not an integer >= 1.

        Examples
        --------
        >>> import numpy as np
        >>> from diaggmm_dist import DiagGMM
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> rows, components = DiagGMM(2, random_state=0).fit(X).sample(4)
        >>> rows.shape, components.shape
        ((4, 2), (4,))
        """
        check_is_fitted(self, "means_")
        if not (is_int(n_samples) and n_samples >= 1):
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}.")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        X = np.vstack(
            [
                mean + rng.standard_normal(size=(count, mean.shape[0])) * np.sqrt(cov)
                for mean, cov, count in zip(self.means_, self.covariances_, counts)
            ]
        )
        y = np.concatenate([np.full(count, k, dtype=int) for k, count in enumerate(counts)])
        return X, y
