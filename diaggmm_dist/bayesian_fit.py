"""The variational Bayes driver of :class:`~diaggmm_dist.bayesian.BayesianDiagGMM`.

One data pass per iteration serves every restart still running (their coefficients stacked,
as :mod:`diaggmm_dist.fitting` stacks EM's). Each pass is the Gaussian E-step of
:mod:`diaggmm_dist.kernels` with the variational per-component terms
(:func:`~diaggmm_dist.bayesian_mstep.e_step_log_weights`); its statistics give the M-step
and the lower bound (:mod:`diaggmm_dist.bayesian_mstep`), as scikit-learn's
``BayesianGaussianMixture.fit`` computes them from the responsibilities.

The initial responsibilities are those of :mod:`diaggmm_dist.initialization`: the last
Lloyd pass's hard assignments (``"kmeans"``, ``"k-means++"``, ``"random_from_data"``), the
random ones (``"random"``) or the Gaussian ones of the grown mixture (``"split"``); their
statistics go to the variational M-step, as scikit-learn's ``_initialize`` does. The priors'
defaults (the data mean and variance) come from the first pass's statistics summed over the
components: every row's responsibilities sum to one, so no pass is spent on them.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import engine, kernels
from .bayesian_mstep import (
    Posterior,
    Priors,
    VBState,
    e_step_log_weights,
    lower_bound,
    priors_from_totals,
    sum_resp_log_resp,
    vb_m_step,
)
from .em import e_step_models, first_rows_center
from .initialization import initial_parameters_of_models
from .kernels.coefficients import log_weight_coefficients
from .seeding import lloyd_statistics, starting_centers

logger = logging.getLogger("diaggmm_dist")


def initial_statistics(X, n_models, n_components, init_params, random_state, reg_covar, data_pass):
    """Statistics of every restart's initial responsibilities, sharing the passes.

    Parameters
    ----------
    X : dask.array.Array
        Row-chunked data.
    n_models : int
        Restarts (``n_init``).
    n_components : int
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "split"}
    random_state : numpy.random.RandomState
    reg_covar : float
    data_pass : DataPass

    Returns
    -------
    blocks : list of ndarray of shape (K + 1, n_stat_columns(D))
    shift : ndarray of shape (D,)
    """
    sizes = [n_components] * n_models
    if init_params == "random":
        seeds = tuple(int(random_state.randint(np.iinfo(np.int32).max)) for _ in sizes)
        shift = first_rows_center(X)
        stats = data_pass(("random", shift, tuple(sizes), seeds, data_pass.dtype))
        return kernels.model_statistics(stats, sizes), shift
    if init_params == "split":
        models = initial_parameters_of_models(
            X, sizes, init_params, random_state, reg_covar, data_pass
        )
        blocks, shift, _ = e_step_models(data_pass, models)
        return blocks, shift
    centers, shift, passes, tol = starting_centers(
        X,
        sizes,
        init_params,
        random_state,
        data_pass.missing,
        None,
        reg_covar,
        getattr(data_pass, "weights", None),
    )
    return lloyd_statistics(data_pass, centers, shift, passes, tol), shift


def vb_coefficients(posterior: Posterior, shift: np.ndarray, dtype, exclude=None):
    """The E-step coefficients of a posterior; components in ``exclude`` (a mask) left out."""
    log_weights = e_step_log_weights(posterior)
    if exclude is not None:
        log_weights = np.where(exclude, -np.inf, log_weights)
    return log_weight_coefficients(
        log_weights, posterior.means, 1.0 / posterior.covariances, shift, dtype
    )


def _shift(posterior: Posterior) -> np.ndarray:
    return kernels.data_center(posterior.weights, posterior.means, 1.0 / posterior.covariances)


def run_vb(data_pass, states, make_priors, reg_covar, tol, max_iter, report=None, save=None):
    """Iterate every state up to ``max_iter`` or convergence, one pass per iteration for all.

    Parameters
    ----------
    data_pass : DataPass
    states : list of VBState
        Stepped in place.
    make_priors : callable or Priors
        The priors, or ``make_priors(stats, shift)`` that makes them from the first pass's
        statistics (of the first state).
    reg_covar, tol : float
    max_iter : int
    report : callable, optional
        ``report(index, state, change)`` after every iteration of a state.
    save : callable, optional
        ``save(priors)`` after every pass, once its states are stepped (the checkpoint).

    Returns
    -------
    Priors
        The priors used.
    """
    priors = make_priors
    while True:
        running = [i for i, s in enumerate(states) if not s.converged and s.iteration < max_iter]
        if not running:
            return priors
        shift = _shift(states[running[0]].posterior)
        coefficients = [
            vb_coefficients(states[i].posterior, shift, data_pass.dtype) for i in running
        ]
        stacked = kernels.stack_coefficients(coefficients)
        stats = data_pass(("gaussian", stacked))
        blocks = kernels.model_statistics(stats, stacked.model_sizes)
        if not isinstance(priors, Priors):
            priors = priors(blocks[0], shift)
        for i, block, coef in zip(running, blocks, coefficients):
            if not np.isfinite(kernels.split_statistics(block)[-1]["log_likelihood"]):
                raise FloatingPointError(
                    "The log-likelihood is not finite: the data hold values too large for the "
                    "compute dtype (try dtype='float64', or rescale the features)."
                )
            state = states[i]
            resp_log_resp = sum_resp_log_resp(block, coef)
            state.posterior = vb_m_step(block, shift, priors, reg_covar)
            bound = lower_bound(state.posterior, resp_log_resp)
            change = bound - state.lower_bound
            state.lower_bound = bound
            state.lower_bounds.append(bound)
            state.iteration += 1
            state.converged = bool(abs(change) < tol)
            if report is not None:
                report(i, state, change)
        if save is not None:
            save(priors)


def best_state(states):
    """The first state with the highest lower bound (scikit-learn's choice among restarts)."""
    best = states[0]
    for state in states[1:]:
        if state.lower_bound > best.lower_bound:
            best = state
    return best


#: scikit-learn's settings of BayesianGaussianMixture, copied by to_sklearn/from_sklearn.
SKLEARN_SETTINGS = (
    "n_components",
    "tol",
    "reg_covar",
    "max_iter",
    "n_init",
    "init_params",
    "weight_concentration_prior_type",
    "weight_concentration_prior",
    "mean_precision_prior",
    "mean_prior",
    "degrees_of_freedom_prior",
    "covariance_prior",
    "random_state",
    "warm_start",
    "verbose",
    "verbose_interval",
)
#: The fitted attributes of a variational posterior, as scikit-learn names them.
POSTERIOR = ("weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_")
PRIORS = (
    "weight_concentration_prior_",
    "mean_precision_prior_",
    "mean_prior_",
    "degrees_of_freedom_prior_",
    "covariance_prior_",
)
#: Derived from the posterior, and the run's record.
DERIVED = ("covariances_", "precisions_", "precisions_cholesky_", "weights_")
RUN = ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_")


def posterior_of(est) -> Posterior:
    """The posterior of a fitted ``BayesianDiagGMM`` (or scikit-learn model): its attributes."""
    concentration = est.weight_concentration_
    if est.weight_concentration_prior_type == "dirichlet_process":
        concentration = tuple(np.array(part, dtype=np.float64) for part in concentration)
    else:
        concentration = np.array(concentration, dtype=np.float64)
    return Posterior(
        est.weight_concentration_prior_type,
        concentration,
        *(
            np.array(getattr(est, name), dtype=np.float64)
            for name in ("mean_precision_", "means_", "degrees_of_freedom_", "covariances_")
        ),
    )


def set_posterior(est, posterior: Posterior) -> None:
    """Set a posterior and what derives from it on ``est``: the one place that does."""
    est.weight_concentration_ = posterior.weight_concentration
    est.mean_precision_ = posterior.mean_precision
    est.means_ = posterior.means
    est.degrees_of_freedom_ = posterior.degrees_of_freedom
    est.covariances_ = posterior.covariances
    est.precisions_cholesky_ = posterior.precisions_cholesky
    est.precisions_ = est.precisions_cholesky_**2
    est.weights_ = posterior.weights
    effective = est.weights_ > est.weight_threshold
    effective[np.argmax(est.weights_)] = True  # the heaviest component always counts
    est.effective_components_ = effective
    est.effective_n_components_ = int(effective.sum())


def set_priors(est, priors: Priors) -> None:
    """Set the priors used on ``est`` (scikit-learn's ``*_prior_`` attributes)."""
    est.weight_concentration_prior_ = priors.weight_concentration
    est.mean_precision_prior_ = priors.mean_precision
    est.mean_prior_ = priors.mean
    est.degrees_of_freedom_prior_ = priors.degrees_of_freedom
    est.covariance_prior_ = priors.covariance


def to_sklearn_model(est):
    """A fitted ``BayesianGaussianMixture(covariance_type="diag")`` with ``est``'s state."""
    from sklearn.mixture import BayesianGaussianMixture

    check_is_fitted(est, "means_")
    bgm = BayesianGaussianMixture(
        covariance_type="diag", **{name: getattr(est, name) for name in SKLEARN_SETTINGS}
    )
    for name in (*POSTERIOR, *PRIORS, *DERIVED, *RUN):
        setattr(bgm, name, copy.deepcopy(getattr(est, name)))
    return bgm


def from_sklearn_model(cls, bgm, params: dict):
    """A ``cls`` (``BayesianDiagGMM``) with a fitted ``BayesianGaussianMixture``'s state."""
    if getattr(bgm, "covariance_type", None) != "diag":
        raise ValueError(
            "Only covariance_type='diag' mixtures can become a BayesianDiagGMM, got "
            f"{getattr(bgm, 'covariance_type', type(bgm).__name__)!r}."
        )
    check_is_fitted(bgm, "means_")
    model = cls(**{**{name: getattr(bgm, name) for name in SKLEARN_SETTINGS}, **params})
    for name in (*POSTERIOR, "covariances_", *PRIORS, "n_features_in_"):
        setattr(model, name, copy.deepcopy(getattr(bgm, name)))
    set_posterior(model, posterior_of(model))
    model.converged_, model.n_iter_ = bool(bgm.converged_), int(bgm.n_iter_)
    model.lower_bound_ = float(bgm.lower_bound_)
    model.lower_bounds_ = [float(v) for v in getattr(bgm, "lower_bounds_", [bgm.lower_bound_])]
    return model


def fit_posterior(est, data, data_pass, given: dict, warm: bool, store=None):
    """The best restart of a variational fit of ``est``'s settings, and the priors used.

    Parameters
    ----------
    est : BayesianDiagGMM
    data : dask.array.Array
        The fit's rows.
    data_pass : DataPass
    given : dict
        The checked ``mean`` and ``covariance`` priors (None for the defaults).
    warm : bool
        Continue from ``est``'s posterior (one restart) instead of initializing.
    store : Checkpoints, optional
        A checkpoint of :data:`~diaggmm_dist.stores.bayesian_steps.BAYESIAN_STEPS`: the fit
        resumes from its latest step, and saves every pass's states to it.

    Returns
    -------
    best : VBState
    priors : Priors
    """

    def make_priors(stats, shift):
        return priors_from_totals(
            stats,
            shift,
            est.weight_concentration_prior_type,
            est.n_components,
            est.weight_concentration_prior,
            est.mean_precision_prior,
            given["mean"],
            est.degrees_of_freedom_prior,
            given["covariance"],
        )

    saved = store.latest() if store is not None else None
    if saved:
        states, priors = saved
        resumed = max(state.iteration for state in states)
        logger.info(
            "resuming from checkpoint: %d restart(s) after iteration %d",
            len(states),
            resumed,
            extra={"resumed_iteration": resumed, "restarts": len(states)},
        )
    elif warm:  # the priors come from the first pass (its first save)
        states, priors = [VBState(posterior_of(est), est.lower_bound_)], make_priors
    else:
        est._print(1, "Initialization")
        blocks, shift = initial_statistics(
            data,
            est.n_init,
            est.n_components,
            est.init_params,
            check_random_state(est.random_state),
            est.reg_covar,
            data_pass,
        )
        priors = make_priors(blocks[0], shift)
        states = [
            VBState(vb_m_step(block, shift, priors, est.reg_covar), -np.inf) for block in blocks
        ]
        if store is not None:
            store.save((states, priors))

    def report(index, state, change):
        if state.iteration % est.verbose_interval == 0 or state.converged:
            est._print(1, f"  Iteration {state.iteration}", f"\t change: {change:.5g}")

    save = None if store is None else lambda used: store.save((states, used))
    priors = run_vb(data_pass, states, priors, est.reg_covar, est.tol, est.max_iter, report, save)
    if not isinstance(priors, Priors):  # a warm start with max_iter=0 reads no data
        priors = Priors(
            est.weight_concentration_prior_type,
            *(getattr(est, name) for name in PRIORS),
        )
    # scikit-learn keeps the last restart's initialization when max_iter is 0
    return (states[-1] if est.max_iter == 0 else best_state(states)), priors


def per_row(est, samples, kind: str):
    """Lazy per-row results of ``est`` (as ``DiagGMM._map``): labels, proba or log_likelihood.

    Labels leave the components that are not effective out.
    """
    posterior = posterior_of(est)
    dtype = np.dtype(est.dtype)
    shift = _shift(posterior)
    data = samples.array
    if kind == "labels":
        coef = vb_coefficients(posterior, shift, dtype, ~est.effective_components_)
        return engine.map_rows(data, kernels.row_labels, coef, est.missing, dtype=np.int64)
    coef = vb_coefficients(posterior, shift, dtype)
    if kind == "proba":
        return engine.map_rows(
            data,
            kernels.row_responsibilities,
            coef,
            est.missing,
            n_columns=est.n_components,
            dtype=dtype,
        )
    return engine.map_rows(data, kernels.row_log_likelihood, coef, est.missing, dtype=np.float64)
