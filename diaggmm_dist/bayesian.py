"""``BayesianDiagGMM``: variational Bayes for diagonal mixtures, out of core.

scikit-learn's ``BayesianGaussianMixture(covariance_type="diag")`` over this library's data
passes (:mod:`diaggmm_dist.bayesian_fit`, :mod:`diaggmm_dist.bayesian_mstep`). Reading
the data, predictions and scores are those of :class:`~diaggmm_dist.mixture_base.MixtureBase`
(shared with :class:`~diaggmm_dist.DiagGMM`), with the variational per-component terms in
place of the log-weights.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from . import engine
from .bayesian_checkpoint import Where, open_vb_checkpoint
from .bayesian_fit import (
    fit_posterior,
    from_sklearn_model,
    per_row,
    set_posterior,
    set_priors,
    to_sklearn_model,
)
from .bayesian_settings import check_enough_rows, check_vb_settings, checked_priors
from .data_pass import DataPass
from .em_settings import store_location
from .locations import StorageOptions, checked_storage_options
from .mixture_base import MixtureBase
from .persistence_models import load_estimator, save_estimator

if TYPE_CHECKING:
    from sklearn.mixture import BayesianGaussianMixture

    from .mixture import Data, PerRow, Weights

__all__ = ["BayesianDiagGMM"]


class BayesianDiagGMM(MixtureBase):
    """Variational Bayesian mixture with diagonal covariances, over chunked (out-of-core) data.

    The parameters, defaults, fitted attributes and iterates of scikit-learn's
    ``BayesianGaussianMixture(covariance_type="diag")``: continuing from a scikit-learn
    model's state (:meth:`from_sklearn`, ``warm_start=True``) gives its iterates in float64.
    The data is read once per iteration, chunk by chunk, on dask threads or on the active
    ``distributed.Client``, as for :class:`~diaggmm_dist.DiagGMM`; the prior's defaults
    (data mean and variance) come from the first pass, not from a pass of their own.

    Parameters
    ----------
    n_components : int, default=1
        The most components; the fit leaves those the data does not need with a weight near 0.
    tol : float, default=1e-3
        The fit stops when the lower bound (a total over the rows) changes by less.
    reg_covar : float, default=1e-6
        Added to every component's weighted variance of the data.
    max_iter : int, default=100
        Iterations at most.
    n_init : int, default=1
        Restarts, run side by side (one pass per iteration for all); the highest lower bound
        wins.
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "split"}, default="kmeans"
        The initial responsibilities (:mod:`diaggmm_dist.bayesian_fit`): hard assignments to
        :class:`~diaggmm_dist.DiagGMM`'s starting centers (for data of at most
        :data:`~diaggmm_dist.seeding.SAMPLE_ROWS` rows, ``"kmeans"`` gives scikit-learn's
        labels), random ones, or (``"split"``) those of the mixture grown by splitting.
        ``"random_from_data"`` assigns every row to its nearest drawn row (scikit-learn gives
        the drawn rows alone a responsibility).
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}, \
default="dirichlet_process"
        The weights' prior: stick-breaking or a Dirichlet distribution.
    weight_concentration_prior : float, default=None
        γ₀ > 0; None is 1 / n_components.
    mean_precision_prior : float, default=None
        β₀ > 0; None is 1.
    mean_prior : array-like of shape (n_features,), default=None
        m₀; None is the data mean.
    degrees_of_freedom_prior : float, default=None
        ν₀ > n_features − 1; None is n_features.
    covariance_prior : float or array-like of shape (n_features,), default=None
        ψ₀ > 0 (a number is used for every feature); None is the data variance (ddof=1).
    random_state : int, RandomState instance or None, default=None
        Seed of the initialization (and of :meth:`sample`).
    warm_start : bool, default=False
        If true, ``fit`` continues from the fitted posterior (one restart).
    verbose : int, default=0
        1 prints the initialization and every ``verbose_interval`` iterations; 2 adds the
        change of the lower bound.
    verbose_interval : int, default=10
        Iterations between progress lines.
    weight_threshold : float, default=1e-3
        A component counts as effective when its expected weight (``weights_``) is above this
        (the heaviest always counts); :meth:`predict` never returns the others. The weight
        left to an unused component is about 1 / (n_components · n_rows), so the default
        suits data of more than a few thousand rows.
    dtype : {"float64", "float32"}, default="float64"
        Compute precision of the per-chunk products (accumulation is float64 either way).
    chunk_size : int, default=None
        Rows per chunk for numpy input (see :class:`~diaggmm_dist.DiagGMM`).
    missing : {"error", "drop"}, default="error"
        What NaN values mean: refused, or rows with any NaN skipped. ``"marginalize"`` is
        refused: the posterior shares one mean precision and one ν per component across
        features, which per-feature counts of observed values would split.

    Attributes
    ----------
    weight_concentration_ : ndarray of shape (n_components,) or tuple of two
        Dirichlet parameters, or (for the Dirichlet process) the Betas' (a_k, b_k).
    mean_precision_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    degrees_of_freedom_ : ndarray of shape (n_components,)
    covariances_ : ndarray of shape (n_components, n_features)
        scikit-learn's: the Wishart scale divided by the degrees of freedom.
    precisions_, precisions_cholesky_ : ndarray of shape (n_components, n_features)
    weights_ : ndarray of shape (n_components,)
        The expected weights.
    weight_concentration_prior_, mean_precision_prior_, mean_prior_, \
degrees_of_freedom_prior_, covariance_prior_
        The priors used.
    effective_components_ : ndarray of bool, shape (n_components,)
        Components whose weight is above ``weight_threshold`` (or the heaviest).
    effective_n_components_ : int
        How many.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        The lower bound of the best restart's last iteration (a total, as scikit-learn's).
    lower_bounds_ : list of float
        The best restart's lower bound at every iteration of this fit.
    n_features_in_ : int

    Notes
    -----
    scikit-learn's ``BayesianGaussianMixture`` takes no ``sample_weight``; here the weights
    scale every row's responsibilities in the statistics (integer weights give the fit of the
    rows repeated, the initialization as for ``DiagGMM``).

    Examples
    --------
    >>> import numpy as np
    >>> from diaggmm_dist import BayesianDiagGMM
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (500, 2)), rng.normal(8, 1, (500, 2))])
    >>> bgm = BayesianDiagGMM(n_components=6, random_state=0, weight_threshold=0.01).fit(X)
    >>> bgm.weights_.round(2)
    array([0. , 0.5, 0.5, 0. , 0. , 0. ])
    >>> bgm.effective_n_components_, np.unique(bgm.predict(X))
    (2, array([1, 2]))
    """

    def __init__(
        self,
        *,
        n_components: int = 1,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
        random_state: int | np.random.RandomState | None = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        weight_threshold: float = 1e-3,
        dtype: str | np.dtype = "float64",
        chunk_size: int | None = None,
        missing: str = "error",
    ) -> None:
        self.n_components = n_components
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.weight_threshold = weight_threshold
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.missing = missing

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.missing == "drop"
        return tags

    # the model store (diaggmm_dist.stores.bayesian_store)
    save = save_estimator
    load = classmethod(load_estimator)

    def fit(
        self,
        X: Data,
        y: None = None,
        *,
        sample_weight: Weights | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
        checkpoint: Where | None = None,
        overwrite_checkpoint: bool = False,
        storage_options: StorageOptions | None = None,
    ) -> BayesianDiagGMM:
        """Fit the variational posterior (one data pass per iteration).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows of features, in any form :meth:`DiagGMM.fit` takes.
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like, dask array or DataArray, optional
            Non-negative weight of every row (scikit-learn's ``BayesianGaussianMixture``
            has none): each row's responsibilities are scaled by it.
        feature_dim, features, columns : optional
            How to read ``X`` (see :meth:`DiagGMM.fit`).
        checkpoint : str, os.PathLike, Location or zarr store, optional
            Zarr group where every restart's posterior is written after the initialization
            and every iteration, as :meth:`DiagGMM.fit` does: a fit of the same settings,
            priors, weights and data (and warm-start posterior) resumes after its last
            complete iteration and ends with the model of an uninterrupted fit, to the bit
            (``max_iter`` may differ).
        overwrite_checkpoint : bool, default=False
            Start afresh when ``checkpoint`` holds another run, or a DiagGMM's.
        storage_options : dict, optional
            fsspec options for ``X`` and ``checkpoint`` when they are paths or URLs.

        Returns
        -------
        self : BayesianDiagGMM

        Raises
        ------
        ValueError
            Bad settings, priors or data, before any pass over the data.
        CheckpointMismatchError, CheckpointInUseError
            ``checkpoint`` holds another run (without ``overwrite_checkpoint``), or a live fit
            holds it.
        """
        check_vb_settings(self)
        options = (
            None
            if storage_options is None
            else checked_storage_options(storage_options, "BayesianDiagGMM.fit")
        )
        samples = self._samples(
            X, options, feature_dim=feature_dim, features=features, columns=columns
        )
        data = samples.array
        n_features = data.shape[-1]
        check_enough_rows(self, engine.n_rows(data))
        given = checked_priors(self, n_features)
        warm = self.warm_start and hasattr(self, "converged_")
        if warm:
            self._check_n_features(n_features)
        data_pass = DataPass.of_samples(samples, self.dtype, self.missing, sample_weight)
        where = store_location(checkpoint, options)
        with open_vb_checkpoint(
            self, where, data, data_pass.weights, given, warm, overwrite_checkpoint
        ) as store:
            best, priors = fit_posterior(self, data, data_pass, given, warm, store)
        set_posterior(self, best.posterior)
        set_priors(self, priors)
        self.converged_ = best.converged
        self.n_iter_ = best.iteration
        # with max_iter=0 scikit-learn reports a lower bound of -inf, warm or not
        self.lower_bound_ = best.lower_bound if self.max_iter > 0 else -np.inf
        self.lower_bounds_ = list(best.lower_bounds)
        self.n_features_in_ = n_features
        layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
        self._set_input_layout(layout, samples)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        return self

    def _map(self, samples, kind):
        """Lazy per-row results of a kind (:func:`~diaggmm_dist.bayesian_fit.per_row`)."""
        return per_row(self, samples, kind)

    def predict(
        self,
        X: Data,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> PerRow:
        """The most probable effective component of every row.

        scikit-learn's ``predict`` over the components of ``effective_components_`` only:
        the same labels wherever scikit-learn's label is an effective component.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows with the model's features (read with the fitted input layout).
        storage_options : dict, optional
            fsspec options for ``X`` when it is a path or URL.
        feature_dim, features, columns : optional
            How to read ``X``; by default the fitted layout's.

        Returns
        -------
        labels : ndarray, dask array or DataArray of shape (n_samples,), int64
            As :meth:`DiagGMM.predict` gives them (-1 for a row that cannot be scored).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            ``X`` has other features than the model, or values the missing-value policy
            refuses.
        """
        samples = self._prediction_samples(
            X, storage_options, "predict", feature_dim, features, columns
        )
        return samples.wrap(self._map(samples, "labels"), "labels", self.n_components)

    # ------------------------------------------------------------------ scikit-learn
    def to_sklearn(self) -> BayesianGaussianMixture:
        """An equivalent fitted ``BayesianGaussianMixture(covariance_type="diag")``.

        Returns
        -------
        sklearn.mixture.BayesianGaussianMixture
            With this model's settings and copies of its fitted attributes.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        """
        return to_sklearn_model(self)

    @classmethod
    def from_sklearn(cls, bgm: BayesianGaussianMixture, **params: Any) -> BayesianDiagGMM:
        """A ``BayesianDiagGMM`` from a fitted diagonal ``BayesianGaussianMixture``.

        Parameters
        ----------
        bgm : sklearn.mixture.BayesianGaussianMixture
            Fitted, with ``covariance_type="diag"``.
        **params
            Settings of the new model that replace or add to ``bgm``'s (``dtype``,
            ``chunk_size``, ``weight_threshold``, ...).

        Returns
        -------
        BayesianDiagGMM
            The fitted model, of class ``cls``.

        Raises
        ------
        ValueError
            ``bgm`` is not a diagonal mixture.
        sklearn.exceptions.NotFittedError
            ``bgm`` is not fitted.
        """
        return from_sklearn_model(cls, bgm, params)
