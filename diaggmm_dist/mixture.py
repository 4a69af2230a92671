"""``DiagGMM``: the scikit-learn-style estimator over the EM driver of :mod:`.fitting`."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from numpy.typing import ArrayLike
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import engine, inputs, kernels, online, parameters, persistence_gmm, stepwise
from .data_pass import DataPass
from .em_settings import EMSettings, checkpoint_identity, store_location, weights_fingerprint
from .fitting import EMRun
from .initialization import initial_parameters, initial_parameters_of_models
from .locations import Location, StorageOptions
from .mixture_base import MixtureBase, checked_options
from .parameters import MixtureParameters
from .state import TrainingState
from .validation import check_initial_parameters, check_settings, is_int

if TYPE_CHECKING:
    from typing import TypeAlias

    import pandas as pd
    import xarray as xr
    import zarr
    from sklearn.mixture import GaussianMixture
    from zarr.abc.store import Store

    from .diagonal_check import DiagonalFitReport

    #: What ``fit``, ``predict`` and the others read (see :func:`diaggmm_dist.inputs.as_samples`).
    Data: TypeAlias = (
        ArrayLike
        | da.Array
        | zarr.Array
        | str
        | os.PathLike
        | Location
        | Store
        | xr.DataArray
        | xr.Dataset
        | pd.DataFrame
    )
    #: A per-row result, in the form of the input: numpy, dask or xarray.
    PerRow: TypeAlias = np.ndarray | da.Array | xr.DataArray
    #: Sample weights, aligned with the rows of the data.
    Weights: TypeAlias = ArrayLike | da.Array | xr.DataArray
    #: Where a store lives: a path or URL (with ``storage_options``), a Location or a Zarr store.
    Where: TypeAlias = str | os.PathLike | Location | Store

__all__ = ["DiagGMM"]

#: The fitted state of stepwise EM (:meth:`DiagGMM.partial_fit`); ``fit`` starts without it.
ONLINE_STATE = ("running_statistics_", "running_shift_", "n_batches_seen_", "n_samples_seen_")


class DiagGMM(MixtureBase):
    """Gaussian mixture with diagonal covariances, fitted by EM over chunked (out-of-core) data.

    A drop-in for ``sklearn.mixture.GaussianMixture(covariance_type="diag")``: same
    parameters, fitted attributes and methods, and, given the same initial parameters, the
    same iterates in float64. The data is read once per EM iteration, chunk by chunk, on
    dask threads or on the active ``distributed.Client``; only a (K + 1, 3D + 1) block of
    statistics per chunk is ever gathered.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"diag"}, default="diag"
        Only diagonal covariances; accepted (and checked at ``fit``) so that code written
        for ``GaussianMixture`` can set and read it.
    tol : float, default=1e-3
        Convergence threshold: EM stops when the change of the mean log-likelihood per sample
        (the lower bound) is below it.
    reg_covar : float, default=1e-6
        Non-negative value added to every variance.
    max_iter : int, default=100
        Number of EM iterations to perform, at most.
    n_init : int, default=1
        Number of initializations; the one with the highest lower bound is kept. They are
        initialized together, then run side by side: every data pass serves all those that
        need it (one read of each chunk and one stacked matrix product). With
        ``init_params="kmeans"``, ``"k-means++"`` or ``"random_from_data"`` all restarts
        share one sample of the data and each Lloyd pass (the k-means of each restart
        starts from its own random numbers); ``"random"`` draws every restart's random
        responsibilities in one pass; ``"split"`` takes its own passes per restart. Every EM
        pass serves all restarts still running, so n_init=8 costs far less than eight fits.
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "split"}, default="kmeans"
        How starting parameters are made without loading the data; see
        :mod:`diaggmm_dist.initialization`. ``"split"`` grows the mixture from one
        component by splitting the heaviest, with a few EM iterations after each split
        (:mod:`diaggmm_dist.splitting`): robust for large K, at the price of more passes.
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like of shape (n_components, n_features), default=None
        User-provided initial parameters (precisions are inverse variances).
    random_state : int, RandomState instance or None, default=None
        Seed of the initialization (and of :meth:`sample`).
    warm_start : bool, default=False
        If true, ``fit`` starts from the previous fit's parameters (and ``n_init`` is 1).
    verbose : int, default=0
        1 prints the initialization and every ``verbose_interval`` iterations; 2 adds
        timings and the change of the lower bound.
    verbose_interval : int, default=10
        Iterations between progress lines.
    dtype : {"float64", "float32"}, default="float64"
        Compute precision of the per-chunk products. Accumulation is float64 either way;
        float32 is about twice as fast and agrees with float64 to about 1e-5.
    chunk_size : int, default=None
        Rows per chunk for numpy input; by default chunks of about 16 MiB. Zarr chunks are
        grouped whole into dask chunks of about this many rows. Dask input keeps its chunks.
    missing : {"error", "drop", "marginalize"}, default="error"
        What NaN values mean. ``"error"``: data with NaN is refused. ``"drop"``: rows with any
        NaN are skipped in fitting and get the label -1. ``"marginalize"``: each row uses its
        observed features only; its likelihood over them is exact with diagonal covariances
        (no imputation), and only rows with no observed value get -1. Without NaN all three
        give identical models. Infinite values are always refused.
    learning_decay : float, default=0.7
        :meth:`partial_fit` only: batch number ``t`` (from 0) is folded in with the step
        size ``min(1, (t + learning_offset) ** -learning_decay)``. Must be in (0.5, 1]: the
        steps then sum to infinity and their squares do not (stepwise EM converges). Larger
        values forget the early batches faster.
    learning_offset : float, default=10.0
        :meth:`partial_fit` only: non-negative; larger values make the first steps smaller,
        so that early batches move the model less.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray of shape (n_components, n_features)
    precisions_ : ndarray of shape (n_components, n_features)
    precisions_cholesky_ : ndarray of shape (n_components, n_features)
    converged_ : bool
    n_iter_ : int
        EM iterations of the best initialization (:meth:`partial_fit` adds one per batch).
    lower_bound_ : float
        Mean log-likelihood per sample of the best initialization at its last iteration
        (of the parameters before the last M-step, as in scikit-learn). After
        :meth:`partial_fit`: the last batch's, under the parameters before its step.
    lower_bounds_ : list of float
        The lower bound of every iteration of the best initialization (and of every batch
        given to :meth:`partial_fit` since).
    n_features_in_ : int
    n_reseeded_ : int
        Components re-seeded (split from the heaviest) because they lost all their mass.
    lower_bounds_per_init_ : list of list of float
        ``lower_bounds_`` of every initialization (restart), in order.
    best_init_ : int
        Which initialization gave the fitted parameters (the first with the best lower bound).
    running_statistics_ : ndarray of shape (n_components + 1, n_stat_columns(n_features))
        :meth:`partial_fit` only: the running sufficient statistics per unit of sample
        weight, of data shifted by ``running_shift_`` (layout of
        :func:`diaggmm_dist.kernels.chunk_statistics`). ``fit`` removes them.
    running_shift_ : ndarray of shape (n_features,)
    n_batches_seen_ : int
        :meth:`partial_fit` only: the batches folded in (``t`` of the step size).
    n_samples_seen_ : int
        :meth:`partial_fit` only: the rows of those batches that were used.

    Notes
    -----
    Numerical safety rails (see :mod:`diaggmm_dist.mstep`): log-sum-exp responsibilities,
    statistics of data shifted to the mixture's mean so that ``S2/N − μ²`` does not cancel,
    variances clipped at zero before ``reg_covar`` and floored at 1e-9 of the feature's
    variance, and collapsed components re-seeded by splitting the heaviest one (with a
    ``ReseededComponentWarning``).

    Examples
    --------
    >>> import numpy as np
    >>> from diaggmm_dist import DiagGMM
    >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
    >>> gmm = DiagGMM(2, random_state=0).fit(X)
    >>> gmm.means_.shape
    (2, 2)
    >>> gmm.weights_
    array([0.5, 0.5])
    >>> gmm.converged_
    True
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "diag",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: ArrayLike | None = None,
        means_init: ArrayLike | None = None,
        precisions_init: ArrayLike | None = None,
        random_state: int | np.random.RandomState | None = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        dtype: str | np.dtype = "float64",
        chunk_size: int | None = None,
        missing: str = "error",
        learning_decay: float = 0.7,
        learning_offset: float = 10.0,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.missing = missing
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # NaN are missing values under missing="drop" or "marginalize" (infinity never is)
        tags.input_tags.allow_nan = self.missing in ("drop", "marginalize")
        return tags

    # ------------------------------------------------------------------ fitting
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
        on_iteration: Callable[[dict], object] | None = None,
        until: int | None = None,
        storage_options: StorageOptions | None = None,
    ) -> DiagGMM:
        """Estimate the parameters with EM (the driver of :mod:`diaggmm_dist.fitting`).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows of features: numpy or dask arrays of shape (n_samples, n_features); a
            ``zarr.Array`` or where one lives (opened lazily): a path or URL (opened with
            ``storage_options``), a :class:`~diaggmm_dist.locations.Location` or a Zarr
            store object; an ``xarray.DataArray`` (``feature_dim`` names the features, every
            other dim is a sample dim) or ``Dataset`` (its variables, or ``features``, are the
            features), lazily from ``xr.open_zarr``; a pandas or dask DataFrame, or a Parquet
            path (every column when all are float or all integer; otherwise ``columns``).
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like, dask array or DataArray, optional
            Non-negative weight of every sample (weighted EM); integer weights give the model
            of the data with rows repeated, the initialization included when the data has at
            most :data:`~diaggmm_dist.seeding.SAMPLE_ROWS` rows (except
            ``init_params="random"``, equal in expectation only; see
            :mod:`diaggmm_dist.initialization`). Chunked like ``X`` if lazy.
        feature_dim : str, optional
            DataArray input: the dimension holding the features.
        features : list of str, optional
            Dataset input: the variables to use.
        columns : list of str, optional
            Table input: the columns to use. Needed when the table has a non-numeric column,
            or integer columns beside float ones (nothing is chosen silently).
        checkpoint : str, os.PathLike, Location or zarr store, optional
            Zarr group (local path, fsspec URL or store) where the training state is written after
            the initialization and after every iteration. If it already holds a run with the
            same settings and data, the fit resumes after its last complete iteration and
            ends with exactly the model an uninterrupted run gives. ``max_iter`` is not part
            of the settings compared: a run that stopped at a smaller ``max_iter`` (and did
            not converge) continues up to this one.
        overwrite_checkpoint : bool, default=False
            Start afresh when ``checkpoint`` holds a run with other settings or data
            (otherwise that is refused with a ``CheckpointMismatchError``).
        on_iteration : callable, optional
            Called after every EM iteration (after its checkpoint is written) with a dict:
            ``restart``, ``iteration``, ``lower_bound``, ``change``, ``converged`` and
            ``seconds`` (the iteration's time, checkpoint write included). An exception it
            raises ends the fit (the checkpoint already holds that iteration).
        until : int, optional
            Pause after this iteration (at most ``max_iter``): the estimator then holds the
            model at iteration ``until`` (no ``ConvergenceWarning`` unless EM ended), and a
            later fit on the same ``checkpoint`` continues up to ``max_iter`` and ends exactly
            as an uninterrupted fit. For running a long fit in blocks.
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for every URL of this call: ``X``
            (when it is a path or URL) and ``checkpoint``. For other options per URL, pass Zarr
            store objects (or :class:`~diaggmm_dist.locations.Location` objects) instead. The
            options are plain data that travel with the tasks to the workers (README, "Data in
            object storage").

        Returns
        -------
        self : DiagGMM
            The fitted estimator.

        Raises
        ------
        ValueError
            Bad settings, initial parameters or data (see :mod:`diaggmm_dist.validation`), or
            ``until`` is not an integer >= 0.
        CheckpointMismatchError
            ``checkpoint`` holds another run (without ``overwrite_checkpoint``).

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> gmm.n_iter_, gmm.lower_bounds_ == gmm.lower_bounds_per_init_[gmm.best_init_]
        (2, True)

        A long fit in blocks of iterations, resumed from its checkpoint:

        >>> import tempfile
        >>> url = tempfile.mkdtemp() + "/run.zarr"
        >>> paused = DiagGMM(2, random_state=0).fit(X, checkpoint=url, until=1)
        >>> resumed = DiagGMM(2, random_state=0).fit(X, checkpoint=url)
        >>> np.array_equal(resumed.means_, gmm.means_)
        True
        """
        check_settings(self)
        if until is not None and not (is_int(until) and until >= 0):
            raise ValueError(f"until must be an integer >= 0 or None, got {until!r}.")
        storage_options = checked_options(storage_options, f"{type(self).__name__}.fit")
        checkpoint = store_location(checkpoint, storage_options)
        samples = self._samples(
            X, storage_options, feature_dim=feature_dim, features=features, columns=columns
        )
        data = samples.array
        n_features = data.shape[-1]
        self._check_enough_samples(data)
        inits = check_initial_parameters(
            self.weights_init, self.means_init, self.precisions_init, self.n_components, n_features
        )
        warm = self.warm_start and hasattr(self, "converged_")
        if warm:
            self._check_n_features(n_features)
        data_pass = DataPass.of_samples(samples, self.dtype, self.missing, sample_weight)
        random_state = check_random_state(self.random_state)
        fingerprint = engine.fingerprint(data)
        start = self._parameters() if warm else None
        weighted = weights_fingerprint(data_pass.weights)
        identity = checkpoint_identity(
            self.get_params(),
            fingerprint,
            inits=inits,
            warm_start_from=start,
            # only when given: the identity of an unweighted fit is the one it always was
            **({} if weighted is None else {"sample_weight": weighted}),
        )
        with EMRun.open(
            data_pass,
            EMSettings.of(self),
            checkpoint,
            identity,
            overwrite=overwrite_checkpoint,
            on_iteration=on_iteration,
        ) as run:
            if warm:
                run.initialize(
                    1,
                    lambda _: [(self.weights_, self.means_, self.precisions_)],
                    random_state,
                    lower_bounds=[self.lower_bound_],
                )
            else:
                run.initialize(
                    self.n_init,
                    lambda indices: initial_parameters_of_models(
                        data,
                        [self.n_components] * len(indices),
                        self.init_params,
                        random_state,
                        self.reg_covar,
                        data_pass,
                        *inits,
                        tol=self.tol,
                    ),
                    random_state,
                )
            run.run(until)
        self.lower_bounds_per_init_ = [
            list(state.lower_bounds[1:] if warm else state.lower_bounds) for state in run.states
        ]
        self.best_init_ = run.best.index
        self.n_reseeded_ = sum(state.n_reseeded for state in run.states)
        layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
        self.adopt_state(run.best, samples, layout, fingerprint, warm=warm)
        for name in ONLINE_STATE:  # the parameters no longer come from these statistics
            if hasattr(self, name):
                delattr(self, name)
        if not self.converged_ and self.max_iter > 0 and run.finished:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        return self

    def adopt_state(
        self,
        state: TrainingState,
        samples: inputs.Samples,
        layout: dict,
        fingerprint: dict | None,
        *,
        warm: bool = False,
    ) -> DiagGMM:
        """Take a training state of :class:`~diaggmm_dist.fitting.EMRun` as the fitted model.

        Sets the parameters, ``converged_``, ``n_iter_``, ``lower_bound_``,
        ``lower_bounds_``, ``n_features_in_``, ``data_fingerprint_`` and the input layout
        (used by :meth:`fit` and :func:`~diaggmm_dist.selection.select_n_components`).

        Parameters
        ----------
        state : TrainingState
            The model's state.
        samples : inputs.Samples
            The data it was fitted on.
        layout : dict
            ``feature_dim``, ``features`` and ``columns`` as given to the fit.
        fingerprint : dict or None
            The data's fingerprint (:func:`diaggmm_dist.engine.fingerprint`); None for a
            stream of batches.
        warm : bool, default=False
            The state's history begins with the lower bound of a warm start (left out).

        Returns
        -------
        self : DiagGMM
            The fitted estimator.
        """
        self._set_parameters(state.parameters)
        self.converged_ = state.converged
        self.n_iter_ = state.iteration
        self.lower_bound_ = state.lower_bound
        self.lower_bounds_ = state.lower_bounds[1:] if warm else list(state.lower_bounds)
        self.n_features_in_ = samples.array.shape[-1]
        self.data_fingerprint_ = fingerprint
        self._set_input_layout(layout, samples)
        return self

    def _parameters(self):
        """The fitted parameters as one record."""
        return MixtureParameters(self.weights_, self.means_, self.covariances_)

    def _set_parameters(self, params):
        """Set the fitted parameters and their derived precisions: the one place that does."""
        self.weights_, self.means_, self.covariances_ = (
            params.weights,
            params.means,
            params.covariances,
        )
        self.precisions_ = params.precisions
        self.precisions_cholesky_ = params.precisions_cholesky

    def _check_enough_samples(self, data):
        n_samples = engine.n_rows(data)
        if self.n_components > n_samples:
            raise ValueError(
                f"n_components={self.n_components} is larger than the number of samples "
                f"({n_samples}): use at most {n_samples} components."
            )

    def partial_fit(
        self,
        X: Data,
        y: None = None,
        sample_weight: Weights | None = None,
        *,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
        storage_options: StorageOptions | None = None,
    ) -> DiagGMM:
        """Fold one batch of rows into the model with one step of stepwise (online) EM.

        The model keeps running sufficient statistics ``s`` per unit of sample weight (see
        :mod:`diaggmm_dist.online`). Each call reads the batch once (one E-step pass under the
        current parameters, giving the batch's statistics ŝ), updates

            s ← (1 − η_t) s + η_t ŝ,    η_t = min(1, (t + learning_offset) ** (−learning_decay)),

        with ``t`` the number of batches folded in before this one (``n_batches_seen_``), and
        sets the parameters to the M-step of ``s``. Earlier batches are never read again.

        The first call on an unfitted model initializes the parameters on its batch with
        ``init_params`` (or ``weights_init``/``means_init``/``precisions_init``; ``n_init``
        is not used) and takes the batch's statistics whole, so it gives the model of
        ``fit(batch)`` with ``max_iter=1``. A model fitted by :meth:`fit`, loaded from a store
        without running statistics, or made by :meth:`from_sklearn` continues from its
        parameters: ``s`` starts as the statistics those parameters imply (the M-step's fixed
        point) and ``t`` at 0, so the first batch weighs ``learning_offset ** −learning_decay``
        (0.2 by default). :meth:`save` and :meth:`load` keep ``s`` and ``t``, so a loaded model
        continues exactly where it stopped.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            A batch of rows, in any form :meth:`fit` takes, with the model's features. The
            first batch needs at least ``n_components`` rows.
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like, dask array or DataArray, optional
            Non-negative weight of every row of the batch. A batch counts as one step
            whatever its total weight; within it, rows count by their weights.
        feature_dim, features, columns : optional
            As in :meth:`fit`; by default the layout of the previous fit or batch.
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for ``X`` when it is a path or URL.
            For other options per URL, pass Zarr store objects (or
            :class:`~diaggmm_dist.locations.Location` objects) instead. The options are plain
            data that travel with the tasks to the workers (docs/object-storage.md).

        Returns
        -------
        self : DiagGMM
            The estimator, one batch further.

        Raises
        ------
        ValueError
            The batch has a different number of features than the model (or other feature
            names), or its rows cannot be used (see :meth:`fit`); ``learning_decay`` is not
            in (0.5, 1] or ``learning_offset`` is negative.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).partial_fit(X[::2]).partial_fit(X[1::2])
        >>> gmm.n_batches_seen_, gmm.n_samples_seen_
        (2, 6)
        """
        check_settings(self)
        storage_options = checked_options(storage_options, f"{type(self).__name__}.partial_fit")
        fitted = hasattr(self, "means_")
        layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
        if fitted and not any(value is not None for value in layout.values()):
            layout = getattr(self, "input_layout_", layout)
        samples = self._samples(X, storage_options, **layout)
        data = samples.array
        if fitted:
            self._check_features(samples)
        else:
            self._check_enough_samples(data)
            inits = check_initial_parameters(
                self.weights_init,
                self.means_init,
                self.precisions_init,
                self.n_components,
                data.shape[-1],
            )
        data_pass = DataPass.of_samples(samples, self.dtype, self.missing, sample_weight)
        if fitted:
            model = (self.weights_, self.means_, self.precisions_)
            running = getattr(self, "running_statistics_", None)
            if running is None:
                running_shift = kernels.data_center(*model)
                running = online.implied_statistics(
                    self.weights_, self.means_, self.covariances_, self.reg_covar, running_shift
                )
            else:
                running_shift = self.running_shift_
        else:
            self._print(1, "Initialization on the first batch")
            model = initial_parameters(
                data,
                self.n_components,
                self.init_params,
                check_random_state(self.random_state),
                self.reg_covar,
                data_pass,
                *inits,
                tol=self.tol,
            )
            running = running_shift = None
        t = getattr(self, "n_batches_seen_", 0)
        step = stepwise.online_step(
            data_pass,
            model,
            running,
            running_shift,
            t,
            reg_covar=self.reg_covar,
            learning_decay=self.learning_decay,
            learning_offset=self.learning_offset,
        )
        self.n_reseeded_ = getattr(self, "n_reseeded_", 0) + step.n_reseeded
        self._set_parameters(step.parameters)
        self.running_statistics_, self.running_shift_ = step.running, step.shift
        self.n_batches_seen_ = t + 1
        self.n_samples_seen_ = getattr(self, "n_samples_seen_", 0) + step.rows
        self.n_iter_ = getattr(self, "n_iter_", 0) + 1
        self.lower_bound_ = step.lower_bound
        self.lower_bounds_ = list(getattr(self, "lower_bounds_", [])) + [step.lower_bound]
        self.converged_ = False
        self.n_features_in_ = data.shape[-1]
        self.data_fingerprint_ = None  # a stream of batches, not one data set
        if not fitted:
            self._set_input_layout(layout, samples)
        self._print(1, f"Batch {t + 1}: mean log-likelihood {step.lower_bound:.5f}")
        return self

    # --------------------------------------------------------------- prediction

    def _map(self, samples, kind):
        """Lazy per-row results of a kind: labels, proba, log_likelihood or summary.

        ``samples`` come from :meth:`_prediction_samples` (and shape the result).
        """
        data = samples.array
        dtype = np.dtype(self.dtype)
        shift = kernels.data_center(self.weights_, self.means_, self.precisions_)
        coef = kernels.log_prob_coefficients(
            self.weights_, self.means_, self.precisions_, shift, dtype
        )
        if kind == "labels":
            return engine.map_rows(data, kernels.row_labels, coef, self.missing, dtype=np.int64)
        if kind == "proba":
            return engine.map_rows(
                data,
                kernels.row_responsibilities,
                coef,
                self.missing,
                n_columns=self.n_components,
                dtype=dtype,
            )
        if kind == "summary":
            return engine.map_rows(
                data, kernels.row_summary, coef, self.missing, n_columns=3, dtype=np.float64
            )
        return engine.map_rows(
            data, kernels.row_log_likelihood, coef, self.missing, dtype=np.float64
        )

    def predict(
        self,
        X: Data,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> PerRow:
        """Component label of every row (the most probable component).

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
        labels : ndarray, dask array or DataArray of shape (n_samples,), int64
            int64 for every input kind, as scikit-learn's (:meth:`score_rows` and the stored
            outputs use int16). Numpy for in-memory input; a lazy dask array chunked like the
            input otherwise. xarray input gives a DataArray over its sample dims, with CF flag
            attributes of its own: numpy-backed for a numpy-backed input, lazy for a dask one.
            Rows that cannot be scored (NaN under a missing-value policy; NaN or infinite
            values in lazy input) get -1.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            ``X`` has other features than the model, or in-memory values the missing-value
            policy refuses.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> labels = gmm.predict(X)
        >>> labels.shape, bool(labels[0] == labels[2] != labels[3])
        ((6,), True)
        """
        samples = self._prediction_samples(
            X, storage_options, "predict", feature_dim, features, columns
        )
        return samples.wrap(self._map(samples, "labels"), "labels", self.n_components)

    def score_rows(
        self,
        X: Data,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> tuple[PerRow, PerRow, PerRow]:
        """Labels, maximum responsibility and log-likelihood of every row, from one pass.

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
        labels : ndarray, dask array or DataArray of shape (n_samples,), int16
            -1 where the row could not be scored (NaN or inf). int16 for every input kind
            (compact where it is stored: write_scores, label maps); :meth:`predict` gives
            int64.
        max_resp : ndarray, dask array or DataArray of shape (n_samples,), float32
            The responsibility of the chosen component.
        log_likelihood : ndarray, dask array or DataArray of shape (n_samples,), float64
            ``log p(x)`` (NaN where not scored). All three are numpy for in-memory input;
            lazy dask arrays chunked like the input otherwise (they share one read of each
            chunk when computed or stored together).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> labels, max_resp, log_likelihood = gmm.score_rows(X)
        >>> labels.dtype, max_resp.dtype, np.allclose(log_likelihood, gmm.score_samples(X))
        (dtype('int16'), dtype('float32'), True)
        """
        samples = self._prediction_samples(
            X, storage_options, "score_rows", feature_dim, features, columns
        )
        summary = self._map(samples, "summary")
        if samples.in_memory:  # one computation for the three
            (summary,) = engine.compute(summary)
        return (
            samples.wrap(summary[..., 0].astype(np.int16), "labels", self.n_components),
            samples.wrap(summary[..., 1].astype(np.float32), "max_resp"),
            samples.wrap(summary[..., 2], "log_likelihood"),
        )

    def bic(
        self,
        X: Data,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> float:
        """Bayesian information criterion of the model on ``X`` (lower is better).

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
        float
            ``-2 * score(X) * n_samples + n_parameters * log(n_samples)``, as
            ``GaussianMixture.bic`` (:func:`diaggmm_dist.parameters.information_criterion`).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> one, two = (DiagGMM(k, random_state=0).fit(X) for k in (1, 2))
        >>> bool(two.bic(X) < one.bic(X))
        True
        """
        return self._information_criterion(
            "bic", X, storage_options, feature_dim, features, columns
        )

    def aic(
        self,
        X: Data,
        *,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> float:
        """Akaike information criterion of the model on ``X`` (lower is better).

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
        float
            ``-2 * score(X) * n_samples + 2 * n_parameters``, as ``GaussianMixture.aic``
            (:func:`diaggmm_dist.parameters.information_criterion`).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        ValueError
            As :meth:`predict`.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> bool(np.isclose(gmm.aic(X), gmm.to_sklearn().aic(X)))  # scikit-learn's formula
        True
        """
        return self._information_criterion(
            "aic", X, storage_options, feature_dim, features, columns
        )

    def _information_criterion(self, criterion, X, storage_options, *layout):
        samples = self._prediction_samples(X, storage_options, criterion, *layout)
        return parameters.information_criterion(
            criterion, self._mean_log_likelihood(samples), samples.n_rows, *self.means_.shape
        )

    def diagonal_fit_report(
        self,
        X: Data,
        *,
        n_correlations: int = 5,
        storage_options: StorageOptions | None = None,
        feature_dim: str | None = None,
        features: list[str] | None = None,
        columns: list[str] | None = None,
    ) -> DiagonalFitReport:
        """What full covariances would gain over this diagonal model, on held-out rows (one pass).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Held-out rows with the model's features, in any form :meth:`fit` takes. Rows with
            a NaN are refused under ``missing="error"`` and left out otherwise (full
            covariances need every feature).
        n_correlations : int, default=5
            Strongest ignored correlations to report per component.
        storage_options : dict, optional
            fsspec options for ``X`` when it is a path or URL.
        feature_dim, features, columns : optional
            How to read ``X``, as :meth:`fit` takes them; by default the fitted layout's.

        Returns
        -------
        DiagonalFitReport
            ``gain`` (nats per row that full covariances with the same responsibilities
            would add, judged out of sample), per-component figures and the strongest
            correlations the diagonal model ignores (see :mod:`diaggmm_dist.diagonal_check`).

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(2000, 3))
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> gmm.diagonal_fit_report(rng.normal(size=(2000, 3))).is_diagonal_adequate()
        True
        """
        from .diagonal_check import diagonal_fit_report

        samples = self._prediction_samples(
            X, storage_options, "diagonal_fit_report", feature_dim, features, columns
        )
        return diagonal_fit_report(self, samples, n_correlations)

    # ------------------------------------------------------------ persistence
    def save(
        self,
        url: Where,
        *,
        overwrite: bool = False,
        storage_options: StorageOptions | None = None,
    ) -> None:
        """Write the fitted model to a Zarr group (local path or fsspec URL); data only, no pickle.

        See :mod:`diaggmm_dist.stores.model_store` for the layout.

        Parameters
        ----------
        url : str, os.PathLike, Location or zarr store
            Local path or fsspec URL of the group to write, or a Zarr store object.
        overwrite : bool, default=False
            Replace an existing store (on local disks the new store replaces the old one
            atomically); without it an existing store is refused.
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for ``url`` (a path or URL); a Zarr
            store object or a :class:`~diaggmm_dist.locations.Location` carries its own.

        Raises
        ------
        FileExistsError
            A store exists at ``url`` and ``overwrite`` is False.
        sklearn.exceptions.NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> import tempfile
        >>> url = tempfile.mkdtemp() + "/model.zarr"
        >>> DiagGMM(2, random_state=0).fit(X).save(url)
        >>> DiagGMM.load(url).means_.shape
        (2, 2)
        """
        where = store_location(url, checked_options(storage_options, f"{type(self).__name__}.save"))
        persistence_gmm.save_model(self, where, overwrite=overwrite)

    @classmethod
    def load(cls, url: Where, storage_options: StorageOptions | None = None) -> DiagGMM:
        """Read a model written by :meth:`save`, validating every field (never runs code).

        Parameters
        ----------
        url : str, os.PathLike, Location or zarr store
            Local path or fsspec URL of the model store, or a Zarr store object.
        storage_options : dict, optional
            fsspec options (endpoint, credentials, ...) for ``url`` (a path or URL); a Zarr
            store object or a :class:`~diaggmm_dist.locations.Location` carries its own.

        Returns
        -------
        DiagGMM
            The fitted model, of class ``cls``.

        Raises
        ------
        FileNotFoundError
            Nothing is stored at ``url``.
        ModelStoreError
            The store is not a valid model; the message names the file and the field.

        Warns
        -----
        UnverifiedModelWarning
            The store is of format version 1 or 2, written without checksums.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> import tempfile
        >>> url = tempfile.mkdtemp() + "/model.zarr"
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> gmm.save(url)
        >>> loaded = DiagGMM.load(url)
        >>> np.array_equal(loaded.predict(X), gmm.predict(X))
        True
        """
        where = store_location(url, checked_options(storage_options, f"{cls.__name__}.load"))
        return persistence_gmm.load_model(cls, where)

    def to_sklearn(self) -> GaussianMixture:
        """An equivalent fitted ``sklearn.mixture.GaussianMixture(covariance_type="diag")``.

        Returns
        -------
        sklearn.mixture.GaussianMixture
            With this model's settings and copies of its fitted attributes: it predicts and
            scores as this model does (in float64).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> gmm = DiagGMM(2, random_state=0).fit(X)
        >>> gm = gmm.to_sklearn()
        >>> type(gm).__name__, bool(np.allclose(gm.score_samples(X), gmm.score_samples(X)))
        ('GaussianMixture', True)
        """
        from sklearn.mixture import GaussianMixture

        check_is_fitted(self, "means_")
        gm = GaussianMixture(
            self.n_components,
            covariance_type="diag",
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_init,
            init_params=self.init_params,
            random_state=self.random_state,
            warm_start=self.warm_start,
            verbose=self.verbose,
            verbose_interval=self.verbose_interval,
        )
        for name in (
            "weights_",
            "means_",
            "covariances_",
            "precisions_",
            "precisions_cholesky_",
            "converged_",
            "n_iter_",
            "lower_bound_",
            "lower_bounds_",
            "n_features_in_",
        ):
            setattr(gm, name, copy.deepcopy(getattr(self, name)))
        return gm

    @classmethod
    def from_sklearn(cls, gm: GaussianMixture, **params: Any) -> DiagGMM:
        """A ``DiagGMM`` from a fitted diagonal ``GaussianMixture``.

        Parameters
        ----------
        gm : sklearn.mixture.GaussianMixture
            Fitted, with ``covariance_type="diag"``; its settings and fitted attributes are
            copied.
        **params
            Settings of the new model that ``GaussianMixture`` does not have, or that replace
            its own (``dtype``, ``chunk_size``, ``missing``, ...).

        Returns
        -------
        DiagGMM
            The fitted model, of class ``cls``.

        Raises
        ------
        ValueError
            ``gm`` is not a diagonal mixture.
        sklearn.exceptions.NotFittedError
            ``gm`` is not fitted.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]])
        >>> from sklearn.mixture import GaussianMixture
        >>> gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
        >>> gmm = DiagGMM.from_sklearn(gm, chunk_size=4)
        >>> gmm.chunk_size, bool(np.array_equal(gmm.predict(X), gm.predict(X)))
        (4, True)
        """
        if getattr(gm, "covariance_type", None) != "diag":
            raise ValueError(
                f"Only covariance_type='diag' mixtures can become a DiagGMM, got "
                f"{getattr(gm, 'covariance_type', type(gm).__name__)!r}."
            )
        check_is_fitted(gm, "means_")
        settings = {
            name: getattr(gm, name)
            for name in (
                "covariance_type",
                "tol",
                "reg_covar",
                "max_iter",
                "n_init",
                "init_params",
                "random_state",
                "warm_start",
                "verbose",
                "verbose_interval",
            )
        }
        model = cls(gm.n_components, **{**settings, **params})
        model._set_parameters(
            MixtureParameters(
                np.array(gm.weights_, dtype=np.float64),
                np.array(gm.means_, dtype=np.float64),
                np.array(gm.covariances_, dtype=np.float64),
            )
        )
        model.converged_, model.n_iter_ = bool(gm.converged_), int(gm.n_iter_)
        model.lower_bound_ = float(gm.lower_bound_)
        model.lower_bounds_ = list(getattr(gm, "lower_bounds_", [gm.lower_bound_]))
        model.n_features_in_ = int(gm.n_features_in_)
        model.n_reseeded_ = 0
        return model
