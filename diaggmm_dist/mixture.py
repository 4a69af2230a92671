"""``DiagGMM``: the scikit-learn-style estimator; the EM loop, convergence and restarts."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
import warnings

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import engine, inputs, kernels, online, parameters, persistence
from .em import data_centre, e_step, e_step_models
from .initialization import initial_parameters, initial_parameters_of_models
from .kernels import split_statistics
from .mstep import m_step
from .parameters import MixtureParameters
from .state import TrainingState
from .validation import (
    bad_weights_error,
    check_initial_parameters,
    check_settings,
    is_int,
    nonfinite_error,
)

logger = logging.getLogger("diaggmm_dist")

#: The fitted state of stepwise EM (:meth:`DiagGMM.partial_fit`); ``fit`` starts without it.
ONLINE_STATE = ("running_statistics_", "running_shift_", "n_batches_seen_", "n_samples_seen_")


class ReseededComponentWarning(UserWarning):
    """A component lost all its mass and was re-seeded by splitting the heaviest one."""


class _DataPass:
    """One pass of statistics over the fit's data; the first pass also checks the values."""

    def __init__(self, X, dtype, missing="error", weights=None, checked=False):
        self.X = X
        self.dtype = np.dtype(dtype)
        self.resolution = float(np.finfo(self.dtype).eps)
        self.missing = missing
        self.weights = weights
        self.checked = checked
        self.graphs = {}  # the pass's task graphs, built once for the whole fit

    def __call__(self, pass_spec):
        stats = engine.pass_statistics(
            self.X,
            pass_spec,
            self.missing,
            self.weights,
            count_nonfinite=not self.checked,
            graphs=self.graphs,
        )
        if not self.checked:
            scalars = split_statistics(stats)[-1]
            _raise_for_bad_values(
                int(scalars["nan"]),
                int(scalars["inf"]),
                int(scalars["bad_weights"]),
                int(scalars["rows"]),
                self.missing,
                self.weights is not None,
            )
            self.checked = True
        return stats


def _warn_reseeded(reseeded, when):
    """Warn about components the M-step re-seeded (``when``: e.g. "Iteration 3")."""
    if reseeded:
        warnings.warn(
            f"{when}: {reseeded} component(s) lost all their mass and were re-seeded "
            "by splitting the heaviest component.",
            ReseededComponentWarning,
        )


def _raise_for_bad_values(n_nan, n_inf, bad_weights, usable_rows, missing, weighted=False):
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


class DiagGMM(DensityMixin, BaseEstimator):
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
        Number of initialisations; the one with the highest lower bound is kept. They are
        initialised together, then run side by side: every data pass serves all those that
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
        Seed of the initialisation (and of :meth:`sample`).
    warm_start : bool, default=False
        If true, ``fit`` starts from the previous fit's parameters (and ``n_init`` is 1).
    verbose : int, default=0
        1 prints the initialisation and every ``verbose_interval`` iterations; 2 adds
        timings and the change of the lower bound.
    verbose_interval : int, default=10
        Iterations between progress lines.
    dtype : {"float64", "float32"}, default="float64"
        Compute precision of the per-chunk products. Accumulation is float64 either way;
        float32 is about twice as fast and agrees with float64 to about 1e-5.
    missing : {"error", "drop", "marginalize"}, default="error"
        What NaN values mean. ``"error"``: data with NaN is refused. ``"drop"``: rows with any
        NaN are skipped in fitting and get the label -1. ``"marginalize"``: each row uses its
        observed features only; its likelihood over them is exact with diagonal covariances
        (no imputation), and only rows with no observed value get -1. Without NaN all three
        give identical models. Infinite values are always refused.
    chunk_size : int, default=None
        Rows per chunk for numpy input; by default chunks of about 16 MiB. Zarr chunks are
        grouped whole into dask chunks of about this many rows. Dask input keeps its chunks.
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
        EM iterations of the best initialisation (:meth:`partial_fit` adds one per batch).
    lower_bound_ : float
        Mean log-likelihood per sample of the best initialisation at its last iteration
        (of the parameters before the last M-step, as in scikit-learn). After
        :meth:`partial_fit`: the last batch's, under the parameters before its step.
    lower_bounds_ : list of float
        The lower bound of every iteration of the best initialisation (and of every batch
        given to :meth:`partial_fit` since).
    n_features_in_ : int
    n_reseeded_ : int
        Components re-seeded (split from the heaviest) because they lost all their mass.
    lower_bounds_per_init_ : list of list of float
        ``lower_bounds_`` of every initialisation (restart), in order.
    best_init_ : int
        Which initialisation gave the fitted parameters (the first with the best lower bound).
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
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="diag",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        dtype="float64",
        chunk_size=None,
        missing="error",
        learning_decay=0.7,
        learning_offset=10.0,
    ):
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
        X,
        y=None,
        *,
        sample_weight=None,
        feature_dim=None,
        features=None,
        columns=None,
        checkpoint=None,
        overwrite_checkpoint=False,
        on_iteration=None,
    ):
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array, str, xarray object or table
            Rows of features: numpy or dask arrays of shape (n_samples, n_features); a
            ``zarr.Array`` or a path/URL to one (opened lazily); an ``xarray.DataArray``
            (``feature_dim`` names the features, every other dim is a sample dim) or
            ``Dataset`` (its variables, or ``features``, are the features), lazily from
            ``xr.open_zarr``; a pandas or dask DataFrame, or a Parquet path (numeric
            columns, or ``columns``).
        y : ignored
        sample_weight : array-like, dask array or DataArray, optional
            Non-negative weight of every sample (weighted EM); integer weights give the model
            of the data with rows repeated, the initialisation included when the data has at
            most :data:`~diaggmm_dist.initialization.SAMPLE_ROWS` rows (except
            ``init_params="random"``, equal in expectation only; see
            :mod:`diaggmm_dist.initialization`). Chunked like ``X`` if lazy.
        feature_dim : str, optional
            DataArray input: the dimension holding the features.
        features : list of str, optional
            Dataset input: the variables to use.
        columns : list of str, optional
            Table input: the columns to use.
        checkpoint : str or os.PathLike, optional
            Zarr group (local path or fsspec URL) where the training state is written after
            the initialisation and after every iteration. If it already holds a run with the
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

        Returns
        -------
        self : DiagGMM
        """
        check_settings(self)
        samples = self._samples(X, feature_dim=feature_dim, features=features, columns=columns)
        data = samples.array
        n_features = data.shape[-1]
        self._check_enough_samples(data)
        inits = check_initial_parameters(
            self.weights_init, self.means_init, self.precisions_init, self.n_components, n_features
        )
        warm = self.warm_start and hasattr(self, "converged_")
        if warm:
            self._check_n_features(n_features)
        data_pass = self._data_pass(samples, sample_weight)
        random_state = check_random_state(self.random_state)
        fingerprint = engine.fingerprint(data)
        store = None
        if checkpoint is not None:
            from .stores.checkpoint import Checkpoints

            identity = {"config": self._checkpoint_config(inits, warm), "fingerprint": fingerprint}
            store = Checkpoints(checkpoint, identity, overwrite=overwrite_checkpoint)
        try:
            states = store.latest() if store is not None else None
            if states:
                logger.info(
                    "resuming from checkpoint: %d restart(s) after iteration %d",
                    len(states),
                    max(state.iteration for state in states),
                    extra={
                        "resumed_iteration": max(state.iteration for state in states),
                        "restarts": len(states),
                    },
                )
                random_state.set_state(states[-1].random_state)
            # Every restart is initialised first, all together (their data passes shared); then EM
            # runs them side by side: one pass per iteration serves every restart not stopped yet.
            # One checkpoint holds them all. (A checkpoint of an older version, written between
            # two restarts' initialisations, holds fewer: the others are initialised here, from
            # its random state.)
            states = list(states or [])
            restarts = range(len(states), 1 if warm else self.n_init)
            if restarts:
                self._print(1, f"Initialization {', '.join(str(restart) for restart in restarts)}")
                if warm:
                    models, lower_bounds = (
                        [(self.weights_, self.means_, self.precisions_)],
                        [self.lower_bound_],
                    )
                else:
                    models = initial_parameters_of_models(
                        data,
                        [self.n_components] * len(restarts),
                        self.init_params,
                        random_state,
                        self.reg_covar,
                        data_pass,
                        *inits,
                        tol=self.tol,
                    )
                    lower_bounds = []
                states += [
                    TrainingState(
                        restart,
                        0,
                        weights,
                        means,
                        1.0 / precisions,
                        precisions,
                        list(lower_bounds),
                        self.max_iter == 0,
                        False,
                        random_state.get_state(),
                    )
                    for restart, (weights, means, precisions) in zip(restarts, models)
                ]
                if store is not None:
                    store.save(states)
            states = self._run_em(data_pass, states, store, on_iteration)
        finally:
            if store is not None:
                store.close()  # releases the checkpoint's lease, also on errors
        self.lower_bounds_per_init_ = [
            list(state.lower_bounds[1:] if warm else state.lower_bounds) for state in states
        ]
        # the first best, as scikit-learn keeps it
        best = max(states, key=lambda state: (state.lower_bound, -state.restart))
        self.best_init_ = best.restart
        self.n_reseeded_ = sum(state.n_reseeded for state in states)
        self._adopt(
            best,
            warm,
            samples,
            fingerprint,
            {"feature_dim": feature_dim, "features": features, "columns": columns},
        )
        for name in ONLINE_STATE:  # the parameters no longer come from these statistics
            if hasattr(self, name):
                delattr(self, name)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )
        return self

    def _adopt(self, state, warm, samples, fingerprint, layout):
        """Take a finished training state as this estimator's fitted parameters."""
        self._set_parameters(MixtureParameters(state.weights, state.means, state.covariances))
        self.converged_ = state.converged
        self.n_iter_ = state.iteration
        self.lower_bound_ = state.lower_bound
        self.lower_bounds_ = state.lower_bounds[1:] if warm else list(state.lower_bounds)
        self.n_features_in_ = samples.array.shape[-1]
        self.data_fingerprint_ = fingerprint
        self._set_input_layout(layout, samples)

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

    def _data_pass(self, samples, sample_weight):
        """The data pass of a fit: weights aligned with the samples, in-memory data checked up front."""
        weights = (
            None
            if sample_weight is None
            else inputs.sample_values(sample_weight, samples, "sample_weight")
        )
        checked = samples.values is not None and (
            sample_weight is None or isinstance(sample_weight, np.ndarray)
        )
        if checked:
            _check_in_memory(samples.values, self.missing, sample_weight)
        return _DataPass(samples.array, self.dtype, self.missing, weights, checked)

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

    def partial_fit(
        self, X, y=None, sample_weight=None, *, feature_dim=None, features=None, columns=None
    ):
        """Fold one batch of rows into the model with one step of stepwise (online) EM.

        The model keeps running sufficient statistics ``s`` per unit of sample weight (see
        :mod:`diaggmm_dist.online`). Each call reads the batch once (one E-step pass under the
        current parameters, giving the batch's statistics ŝ), updates

            s ← (1 − η_t) s + η_t ŝ,    η_t = min(1, (t + learning_offset) ** (−learning_decay)),

        with ``t`` the number of batches folded in before this one (``n_batches_seen_``), and
        sets the parameters to the M-step of ``s``. Earlier batches are never read again.

        The first call on an unfitted model initialises the parameters on its batch with
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
        y : ignored
        sample_weight : array-like, dask array or DataArray, optional
            Non-negative weight of every row of the batch. A batch counts as one step
            whatever its total weight; within it, rows count by their weights.
        feature_dim, features, columns : optional
            As in :meth:`fit`; by default the layout of the previous fit or batch.

        Returns
        -------
        self : DiagGMM

        Raises
        ------
        ValueError
            The batch has a different number of features than the model (or other feature
            names), or its rows cannot be used (see :meth:`fit`); ``learning_decay`` is not
            in (0.5, 1] or ``learning_offset`` is negative.
        """
        check_settings(self)
        fitted = hasattr(self, "means_")
        layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
        if fitted and not any(value is not None for value in layout.values()):
            layout = getattr(self, "input_layout_", layout)
        samples = self._samples(X, **layout)
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
        data_pass = self._data_pass(samples, sample_weight)
        if fitted:
            weights, means, precisions = self.weights_, self.means_, self.precisions_
            running = getattr(self, "running_statistics_", None)
            if running is None:
                running_shift = data_centre(weights, means, precisions)
                running = online.implied_statistics(
                    weights, means, self.covariances_, self.reg_covar, running_shift
                )
            else:
                running_shift = self.running_shift_
        else:
            self._print(1, "Initialization on the first batch")
            weights, means, precisions = initial_parameters(
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
        stats, shift, lower_bound = e_step(data_pass, weights, means, precisions)
        scalars = split_statistics(stats)[-1]
        t = getattr(self, "n_batches_seen_", 0)
        eta = online.step_size(t, self.learning_decay, self.learning_offset)
        running = online.fold(running, running_shift, stats, shift, eta)
        # Scaled to the batch's weight, the M-step's safety rails (a component re-seeded below
        # 0.001 rows of mass) mean what they mean in a fit of this batch.
        weights, means, covariances, reseeded = m_step(
            running * scalars["weight"], self.reg_covar, shift, data_pass.resolution
        )
        self.n_reseeded_ = getattr(self, "n_reseeded_", 0)
        self._note_reseeded(reseeded, f"Batch {t + 1}")
        self._set_parameters(MixtureParameters(weights, means, covariances))
        self.running_statistics_, self.running_shift_ = running, shift
        self.n_batches_seen_ = t + 1
        self.n_samples_seen_ = getattr(self, "n_samples_seen_", 0) + int(scalars["rows"])
        self.n_iter_ = getattr(self, "n_iter_", 0) + 1
        self.lower_bound_ = lower_bound
        self.lower_bounds_ = list(getattr(self, "lower_bounds_", [])) + [lower_bound]
        self.converged_ = False
        self.n_features_in_ = data.shape[-1]
        self.data_fingerprint_ = None  # a stream of batches, not one data set
        if not fitted:
            self._set_input_layout(layout, samples)
        self._print(1, f"Batch {t + 1}: mean log-likelihood {lower_bound:.5f}")
        return self

    def _checkpoint_config(self, inits, warm):
        """The settings a checkpoint must share with this run to be resumed (JSON)."""

        def digest(array):
            return (
                None
                if array is None
                else hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            )

        seed = self.random_state
        return {
            "n_components": int(self.n_components),
            "tol": float(self.tol),
            "reg_covar": float(self.reg_covar),
            "n_init": int(self.n_init),
            "init_params": self.init_params,
            "dtype": str(np.dtype(self.dtype)),
            "missing": self.missing,
            "random_state": int(seed)
            if isinstance(seed, (int, np.integer))
            else (None if seed is None else "instance"),
            "inits": [digest(a) for a in inits],
            "warm_start_from": digest(
                np.concatenate([self.means_.ravel(), self.covariances_.ravel()])
            )
            if warm
            else None,
        }

    def _running(self, state):
        # max_iter is not part of the checkpoint identity: a restart that stopped only because
        # it reached a smaller max_iter continues up to this run's max_iter.
        return not state.converged and state.iteration < self.max_iter

    def _run_em(self, data_pass, states, store=None, on_iteration=None):
        """EM iterations of every restart until each converges or reaches ``max_iter``.

        The restarts still running share each data pass: their coefficients are stacked, so a
        pass costs one read of the data and one matrix product per chunk for all of them;
        a restart that has stopped costs nothing more. After every iteration the states go
        to ``store`` (if any) before the next pass, then each running restart's summary to
        ``on_iteration`` (if any). Returns the final list of :class:`TrainingState`.
        """
        states = list(states)
        start = time.perf_counter()
        while True:
            running = [state for state in states if self._running(state)]
            if not running:
                break
            tick = time.perf_counter()
            blocks, shift, lower_bounds = e_step_models(
                data_pass, [(state.weights, state.means, state.precisions) for state in running]
            )
            summaries = []
            for state, block, lower_bound in zip(running, blocks, lower_bounds):
                new = self._em_step(state, block, shift, lower_bound, data_pass.resolution)
                states[states.index(state)] = new
                summaries.append(
                    {
                        "iteration": new.iteration,
                        "lower_bound": new.lower_bound,
                        "change": new.lower_bound - state.lower_bound,
                        "converged": new.converged,
                        "restart": new.restart,
                    }
                )
            if store is not None:
                store.save(states)
            seconds = time.perf_counter() - tick
            for summary in summaries:
                summary["seconds"] = seconds
                logger.info(
                    "iteration %d lower bound %.8f change %.3e %.3fs",
                    summary["iteration"],
                    summary["lower_bound"],
                    summary["change"],
                    seconds,
                    extra=summary,
                )
                if on_iteration is not None:
                    on_iteration(dict(summary))
            n_iter = summaries[0]["iteration"]
            if n_iter % self.verbose_interval == 0:
                now = time.perf_counter()
                self._print(
                    1,
                    f"  Iteration {n_iter}",
                    f"\t time lapse {now - start:.5f}s\t ll change {summaries[0]['change']:.5f}",
                )
                start = now
        if self.max_iter > 0:
            for state in states:
                verdict = "converged" if state.converged else "did not converge"
                self._print(
                    1, f"Initialization {verdict}.", f" lower bound {state.lower_bound:.5f}."
                )
        return states

    def _em_step(self, state, stats, shift, lower_bound, resolution):
        """The state after one EM iteration of ``state``, given its statistics of the data pass."""
        n_iter = state.iteration + 1
        weights, means, covariances, reseeded = m_step(stats, self.reg_covar, shift, resolution)
        _warn_reseeded(reseeded, f"Iteration {n_iter}")
        converged = bool(abs(lower_bound - state.lower_bound) < self.tol)
        return TrainingState(
            state.restart,
            n_iter,
            weights,
            means,
            covariances,
            1.0 / covariances,
            state.lower_bounds + [lower_bound],
            converged or n_iter == self.max_iter,
            converged,
            state.random_state,
            state.n_reseeded + reseeded,
        )

    def _note_reseeded(self, reseeded, when):
        """Count and warn about components the M-step re-seeded (``when``: e.g. "Iteration 3")."""
        self.n_reseeded_ += reseeded
        _warn_reseeded(reseeded, when)

    def _print(self, level, message, detail=""):
        if self.verbose >= level:
            print(message + (detail if self.verbose >= 2 else ""))

    def fit_predict(self, X, y=None):
        """Fit, then return the component label of every row (see :meth:`predict`)."""
        return self.fit(X).predict(X)

    # --------------------------------------------------------------- prediction
    def _samples(self, X, **layout):
        """:func:`inputs.as_samples` of ``X``, in this estimator's ``chunk_size``."""
        return inputs.as_samples(X, self.chunk_size, **layout)

    def _input_layout(self):
        """The fitted :class:`~diaggmm_dist.inputs.InputLayout` (from the fitted attributes)."""
        return inputs.InputLayout.of(self)

    def _check_n_features(self, n_features):
        inputs.check_n_features(n_features, self.n_features_in_, type(self).__name__)

    def _check_features(self, samples):
        """The same number of features as the model, and the same names when both have names."""
        self._input_layout().check(samples, type(self).__name__)

    def _prediction_samples(self, X):
        """``X`` read once with the fitted input layout, its features and values checked."""
        check_is_fitted(self, "means_")
        layout = self._input_layout()
        samples = layout.samples(X, self.chunk_size)
        layout.check(samples, type(self).__name__)
        if samples.values is not None:
            _check_in_memory(samples.values, self.missing)
        return samples

    def _map(self, samples, kind):
        """Lazy per-row results of kind ``"labels"``, ``"proba"``, ``"log_norm"`` or ``"summary"``.

        ``samples`` come from :meth:`_prediction_samples` (and shape the result).
        """
        data = samples.array
        dtype = np.dtype(self.dtype)
        shift = data_centre(self.weights_, self.means_, self.precisions_)
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

    def predict(self, X):
        """Component label of every row (the most probable component).

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,), int64
            Numpy for in-memory input; a lazy dask array chunked like the input otherwise.
            For lazy input, rows holding NaN or infinite values get the label -1.
        """
        samples = self._prediction_samples(X)
        return samples.wrap(self._map(samples, "labels"), "labels")

    def predict_proba(self, X):
        """Posterior probability of every component for every row, (n_samples, n_components)."""
        samples = self._prediction_samples(X)
        return samples.wrap(self._map(samples, "proba"), "proba", self.n_components)

    def score_samples(self, X):
        """Log-likelihood ``log p(x)`` of every row, shape (n_samples,), float64."""
        samples = self._prediction_samples(X)
        return samples.wrap(self._map(samples, "log_norm"), "log_norm")

    def score_rows(self, X):
        """Labels, maximum responsibility and log-likelihood of every row, from one pass.

        Returns
        -------
        labels : (n_samples,) int16, -1 where the row could not be scored (NaN or inf)
        max_resp : (n_samples,) float32, the responsibility of the chosen component
        log_likelihood : (n_samples,) float64, ``log p(x)`` (NaN where not scored)
            Numpy for in-memory input; lazy dask arrays chunked like the input otherwise
            (the three share one read of each chunk when computed or stored together).
        """
        samples = self._prediction_samples(X)
        summary = self._map(samples, "summary")
        if samples.in_memory:
            (summary,) = engine.compute(summary)
            return summary[:, 0].astype(np.int16), summary[:, 1].astype(np.float32), summary[:, 2]
        labels = samples.wrap(summary[..., 0].astype(np.int16), "labels")
        return (
            labels,
            samples.wrap(summary[..., 1].astype(np.float32), "max_resp"),
            samples.wrap(summary[..., 2], "log_norm"),
        )

    def _mean_log_likelihood(self, samples):
        """Mean log-likelihood per row of ``samples`` (rows that cannot be scored left out)."""
        mean = da.mean if self.missing == "error" else da.nanmean
        (value,) = engine.compute(mean(self._map(samples, "log_norm")))
        return float(value)

    def score(self, X, y=None):
        """Mean log-likelihood per row (a float; computed even for lazy input).

        With a missing-value policy, rows that cannot be scored are left out of the mean.
        """
        return self._mean_log_likelihood(self._prediction_samples(X))

    def bic(self, X):
        """Bayesian information criterion of the model on ``X`` (lower is better)."""
        samples = self._prediction_samples(X)
        return parameters.bic(
            self._mean_log_likelihood(samples), samples.n_rows, *self.means_.shape
        )

    def aic(self, X):
        """Akaike information criterion of the model on ``X`` (lower is better)."""
        samples = self._prediction_samples(X)
        return parameters.aic(
            self._mean_log_likelihood(samples), samples.n_rows, *self.means_.shape
        )

    # ------------------------------------------------------------ persistence
    def save(self, url: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the fitted model to a Zarr group (local path or fsspec URL); data only, no pickle.

        See :mod:`diaggmm_dist.stores.model_store` for the layout.

        Parameters
        ----------
        url : str or os.PathLike
            Local path or fsspec URL of the group to write.
        overwrite : bool, default=False
            Replace an existing store (on local disks the new store replaces the old one
            atomically); without it an existing store is refused.

        Raises
        ------
        FileExistsError
            A store exists at ``url`` and ``overwrite`` is False.
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        """
        persistence.save_model(self, url, overwrite=overwrite)

    @classmethod
    def load(cls, url: str | os.PathLike) -> DiagGMM:
        """Read a model written by :meth:`save`, validating every field (never runs code).

        Parameters
        ----------
        url : str or os.PathLike
            Local path or fsspec URL of the model store.

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
        """
        return persistence.load_model(cls, url)

    def to_sklearn(self):
        """An equivalent fitted ``sklearn.mixture.GaussianMixture(covariance_type="diag")``."""
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
    def from_sklearn(cls, gm, **params):
        """A ``DiagGMM`` from a fitted diagonal ``GaussianMixture`` (extra ``params``: e.g. ``dtype``)."""
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

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows from the fitted mixture (as scikit-learn does).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            The component of each row.
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


def _check_in_memory(X, missing, sample_weight=None):
    """The first pass's checks, done up front for in-memory data."""
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
    _raise_for_bad_values(
        n_nan, n_inf, bad_weights, int(np.count_nonzero(usable)), missing, sample_weight is not None
    )
