"""``DiagGMMClassifier``: Gaussian naive Bayes, semi-supervised EM and mixture discriminant
analysis with diagonal covariances, out of core, over the library's engine.

Every class owns ``n_components_per_class`` diagonal Gaussian components. A labelled row
keeps its class: its responsibilities are those of its class's components only (one-hot
with one component per class); an unlabelled row (label -1, as in
:mod:`sklearn.semi_supervised`) gets EM responsibilities over all components. With every
row labelled and one component per class the fit is scikit-learn's ``GaussianNB``, in one
pass; with unlabelled rows it is semi-supervised EM (Nigam et al. 2000), one pass per
iteration, started from the labelled rows' class statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if

from . import inputs
from .classifier_checkpoint import (
    Where,
    fit_classes,
    labelled_moments,
    open_classifier_checkpoint,
)
from .classifier_fit import (
    check_classifier_settings,
    checked_priors,
    merged_moments,
    partial_fit_start,
)
from .classifier_labels import LabelledDataPass, label_column, row_labels
from .classifier_rows import best_class, class_log_joint, class_log_proba, wrap_classes
from .data_pass import DataPass
from .em_settings import store_location
from .locations import checked_storage_options
from .persistence_models import load_estimator, save_estimator

__all__ = ["DiagGMMClassifier"]


class DiagGMMClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose classes are mixtures of diagonal Gaussians; labels may be missing.

    Parameters
    ----------
    n_components_per_class : int, default=1
        Components of every class. 1 with every row labelled is Gaussian naive Bayes;
        more is mixture discriminant analysis with diagonal covariances (each class's
        component split in two along its widest feature, repeatedly, to start).
    priors : array-like of shape (n_classes,), optional
        Fixed class priors (as ``GaussianNB`` takes them); by default the fitted ones.
    var_smoothing : float, default=1e-9
        ``var_smoothing`` times the largest variance of a feature over all rows is added to
        every variance (``epsilon_``), as ``GaussianNB`` does; in EM it is the ``reg_covar``.
    tol : float, default=1e-3
        EM stops when the mean log-likelihood per row changes by less than this.
    max_iter : int, default=100
        EM iterations at most (EM runs only with unlabelled rows or several components
        per class).
    chunk_size : int, optional
        Rows per chunk for in-memory input.
    dtype : {"float64", "float32"}, default="float64"
        Compute dtype of the passes' products (statistics are summed in float64).
    missing : {"error", "drop", "marginalize"}, default="error"
        What a NaN means, as in :class:`~diaggmm_dist.DiagGMM`.
    verbose : int, default=0
        Print every EM iteration.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_count_ : ndarray of shape (n_classes,)
        Labelled rows (their weight) of each class.
    class_prior_ : ndarray of shape (n_classes,)
    epsilon_ : float
        Added to every variance.
    weights_, means_, covariances_ : ndarrays of shape (K,), (K, D), (K, D)
        The mixture: K = n_classes * n_components_per_class, class by class.
    component_classes_ : ndarray of shape (K,)
        The class index of every component.
    theta_, var_ : ndarray of shape (n_classes, n_features)
        With one component per class: ``GaussianNB``'s names for the means and variances.
    n_iter_ : int
        EM iterations; 1 for Gaussian naive Bayes (its one pass).
    converged_ : bool
    lower_bounds_ : list of float
        Mean of log p(x, class) over labelled rows and log p(x) over unlabelled ones, per
        EM iteration.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When the input has feature names.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (50, 2)), rng.normal(4, 1, (50, 2))])
    >>> y = np.repeat([0, 1], 50)
    >>> y[::3] = -1  # a third of the rows unlabelled
    >>> clf = DiagGMMClassifier().fit(X, y)
    >>> clf.classes_.tolist(), clf.predict([[0.0, 0.0], [4.0, 4.0]]).tolist()
    ([0, 1], [0, 1])
    """

    def __init__(
        self,
        n_components_per_class: int = 1,
        *,
        priors: Any = None,
        var_smoothing: float = 1e-9,
        tol: float = 1e-3,
        max_iter: int = 100,
        chunk_size: int | None = None,
        dtype: str = "float64",
        missing: str = "error",
        verbose: int = 0,
    ) -> None:
        self.n_components_per_class = n_components_per_class
        self.priors = priors
        self.var_smoothing = var_smoothing
        self.tol = tol
        self.max_iter = max_iter
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.missing = missing
        self.verbose = verbose

    # the model store (diaggmm_dist.stores.classifier_store)
    save = save_estimator
    load = classmethod(load_estimator)

    # ----------------------------------------------------------------- fitting
    def _read(self, X, y, sample_weight, classes, storage_options, layout):
        """The data, its checked labels and a labelled data pass; nothing is read but labels."""
        check_classifier_settings(self)
        if storage_options is not None:
            storage_options = checked_storage_options(storage_options, "DiagGMMClassifier.fit")
        columns, _ = label_column(X, y, layout.get("columns"))
        layout = {**layout, "columns": columns}
        samples = inputs.as_samples(X, self.chunk_size, storage_options=storage_options, **layout)
        labels = row_labels(y, X, samples, classes, storage_options)
        data_pass = DataPass.of_samples(samples, self.dtype, self.missing, sample_weight)
        n = len(labels.classes)
        classes_of = np.repeat(np.arange(n), self.n_components_per_class)
        return samples, labels, LabelledDataPass(data_pass, labels.indices, classes_of), layout

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        *,
        storage_options: dict | None = None,
        feature_dim: str | None = None,
        features: list | None = None,
        columns: list | None = None,
        checkpoint: Where | None = None,
        overwrite_checkpoint: bool = False,
    ) -> DiagGMMClassifier:
        """Fit the class mixtures: one pass without unlabelled rows, else semi-supervised EM.

        Parameters
        ----------
        X : any input of :class:`~diaggmm_dist.DiagGMM` (numpy, dask, Zarr, xarray, tables)
        y : array-like, dask array, zarr.Array, xarray.DataArray, Series, or a column name
            One label per row, -1 for unlabelled: integers (in memory also strings, see
            :func:`~diaggmm_dist.classifier_labels.row_labels`); a string names a column of
            the table ``X`` (never a feature then) or else a Zarr array's path or URL.
        sample_weight : array-like, dask array or DataArray, optional
            Aligned with the rows.
        storage_options : dict, optional
            fsspec options for URLs.
        feature_dim, features, columns : optional
            How to read ``X``, as :meth:`DiagGMM.fit <diaggmm_dist.DiagGMM.fit>` takes them.
        checkpoint : str, os.PathLike, Location or zarr store, optional
            Zarr group where semi-supervised EM's state is written after its labelled pass and
            every iteration (naive Bayes: its finished model, once): a fit of the same
            settings, data, labels and weights resumes after its last complete iteration and
            ends with the model of an uninterrupted fit, to the bit (``max_iter`` may differ);
            a finished one gives its model without a pass over the data.
        overwrite_checkpoint : bool, default=False
            Start afresh when ``checkpoint`` holds another run, or another estimator's.

        Returns
        -------
        DiagGMMClassifier
            self.

        Raises
        ------
        CheckpointMismatchError, CheckpointInUseError
            ``checkpoint`` holds another run (without ``overwrite_checkpoint``), or a live fit
            holds it; before any pass over the data.
        """
        layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
        samples, labels, data_pass, layout = self._read(
            X, y, sample_weight, None, storage_options, layout
        )
        priors = checked_priors(self.priors, len(labels.classes))
        where = store_location(checkpoint, storage_options)
        with open_classifier_checkpoint(
            self, where, data_pass, labels, priors, overwrite_checkpoint
        ) as store:
            state = fit_classes(self, data_pass, labels, priors, store)
        self.classes_, self.epsilon_ = labels.classes, state.epsilon
        self.class_count_, self.n_unlabelled_ = state.class_count, labels.n_unlabelled
        self._set_mixture(state.weights, state.means, state.covariances)
        self.lower_bounds_, self.converged_ = state.lower_bounds, state.converged
        self.n_iter_ = len(state.lower_bounds) if state.lower_bounds or not state.converged else 1
        self._set_layout(layout, samples)
        return self

    def _streams(self):
        """``partial_fit`` exists with one component per class only (``available_if``)."""
        if self.n_components_per_class != 1:
            raise AttributeError(
                "partial_fit streams Gaussian naive Bayes: it needs n_components_per_class=1 "
                f"(got {self.n_components_per_class}); use fit for several per class."
            )
        return True

    @available_if(_streams)
    def partial_fit(
        self,
        X: Any,
        y: Any,
        classes: Any = None,
        sample_weight: Any = None,
        *,
        storage_options: dict | None = None,
        feature_dim: str | None = None,
        features: list | None = None,
        columns: list | None = None,
    ) -> DiagGMMClassifier:
        """One more batch of Gaussian naive Bayes, as ``GaussianNB.partial_fit`` takes it.

        Each batch is one labelled pass; its classes' moments are merged with the running
        ones by scikit-learn's update, and ``epsilon_`` is that batch's (taken off the
        variances before the merge and added back after it, as ``GaussianNB`` does).
        Unlabelled rows (-1) count only in ``epsilon_``. Needs ``n_components_per_class=1``.

        Parameters
        ----------
        X, y
            As in :meth:`fit`.
        classes : array-like of int, optional
            Every class there can be: needed on the first call.
        sample_weight, storage_options, feature_dim, features, columns
            As in :meth:`fit`.

        Returns
        -------
        DiagGMMClassifier
            self.

        Raises
        ------
        ValueError
            No ``classes`` on the first call, other ``classes`` later, a label not among
            them, or another number of features.
        AttributeError
            ``n_components_per_class`` above 1 (``partial_fit`` does not exist then).
        """
        first = partial_fit_start(self, classes)
        layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
        samples, labels, data_pass, layout = self._read(
            X, y, sample_weight, self.classes_ if not first else classes, storage_options, layout
        )
        if not first:
            inputs.check_n_features(samples.n_features, self.n_features_in_, "DiagGMMClassifier")
        priors = checked_priors(self.priors, len(labels.classes)) if first else None
        moments, self.epsilon_ = labelled_moments(
            data_pass, len(labels.classes), self.var_smoothing
        )
        if first:
            n, d = len(labels.classes), samples.n_features
            self.classes_ = labels.classes
            self.theta_, self.var_, self.class_count_ = (
                np.zeros((n, d)),
                np.zeros((n, d)),
                np.zeros(n),
            )
            self.class_prior_ = priors if priors is not None else np.zeros(n)
            self.n_iter_, self.converged_, self.lower_bounds_ = 1, True, []
        else:
            self.var_ = self.var_ - self.epsilon_
        for i in np.flatnonzero(labels.present):
            self.theta_[i], self.var_[i] = merged_moments(
                self.class_count_[i],
                self.theta_[i],
                self.var_[i],
                moments.counts[i],
                moments.means[i],
                moments.variances[i],
            )
            self.class_count_[i] += moments.counts[i]
        self.var_ = self.var_ + self.epsilon_
        if self.priors is None:
            self.class_prior_ = self.class_count_ / self.class_count_.sum()
        self._set_mixture(self.class_prior_, self.theta_, self.var_)
        self._set_layout(layout, samples)
        return self

    def _set_mixture(self, weights, means, variances):
        """The fitted mixture and its derived names (``theta_``, ``var_``: one per class)."""
        m = self.n_components_per_class
        self.weights_, self.means_, self.covariances_ = (
            np.asarray(weights, dtype=np.float64),
            np.asarray(means, dtype=np.float64),
            np.asarray(variances, dtype=np.float64),
        )
        self.component_classes_ = np.repeat(np.arange(len(self.classes_)), m)
        self.class_prior_ = np.bincount(
            self.component_classes_, self.weights_, minlength=len(self.classes_)
        )
        if m == 1:
            self.theta_, self.var_ = self.means_, self.covariances_
        else:  # (a refit with several components per class)
            self.__dict__.pop("theta_", None), self.__dict__.pop("var_", None)

    def _set_layout(self, layout, samples):
        fitted = inputs.InputLayout.from_dict(layout).fitted(samples)
        self.input_layout_ = fitted.to_dict()
        self.n_features_in_ = samples.n_features
        if fitted.feature_names is not None:
            self.feature_names_in_ = np.asarray(fitted.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    # -------------------------------------------------------------- prediction
    def predict_log_proba(self, X: Any, **read: Any) -> Any:
        """Log class probabilities per row (n, n_classes): numpy, dask or xarray like ``X``.

        Parameters
        ----------
        X : any input :meth:`fit` takes
        **read
            ``storage_options``, ``feature_dim``, ``features``, ``columns`` as in :meth:`fit`.

        Returns
        -------
        ndarray, dask array or DataArray
            NaN for rows that cannot be scored.
        """
        joint, samples = class_log_joint(self, X, read.pop("storage_options", None), read)
        log_proba = joint.map_blocks(class_log_proba, dtype=np.float64)
        return wrap_classes(self.classes_, samples, log_proba, "log_proba")

    def predict_proba(self, X: Any, **read: Any) -> Any:
        """Class probabilities per row (n, n_classes), summed over each class's components.

        Parameters
        ----------
        X : any input :meth:`fit` takes
        **read
            ``storage_options``, ``feature_dim``, ``features``, ``columns`` as in :meth:`fit`.

        Returns
        -------
        ndarray, dask array or DataArray
            NaN for rows that cannot be scored.
        """
        joint, samples = class_log_joint(self, X, read.pop("storage_options", None), read)
        proba = joint.map_blocks(lambda b: np.exp(class_log_proba(b)), dtype=np.float64)
        return wrap_classes(self.classes_, samples, proba, "proba")

    def predict(self, X: Any, **read: Any) -> Any:
        """The most probable class of every row (-1 for rows that cannot be scored).

        Parameters
        ----------
        X : any input :meth:`fit` takes
        **read
            ``storage_options``, ``feature_dim``, ``features``, ``columns`` as in :meth:`fit`.

        Returns
        -------
        ndarray, dask array or DataArray
            Labels from ``classes_``.
        """
        joint, samples = class_log_joint(self, X, read.pop("storage_options", None), read)
        labels = joint.map_blocks(
            best_class, self.classes_, drop_axis=joint.ndim - 1, dtype=self.classes_.dtype
        )
        return wrap_classes(self.classes_, samples, labels, "labels")
