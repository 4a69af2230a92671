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

import numbers
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .bayesian_mstep import (
    PRIOR_TYPES,
    Posterior,
    Priors,
    e_step_log_weights,
    lower_bound,
    sum_resp_log_resp,
    vb_m_step,
)
from .em import e_step_models, first_rows_center
from .initialization import initial_parameters_of_models
from .kernels.coefficients import log_weight_coefficients
from .seeding import lloyd_statistics, starting_centers
from .validation import DTYPES, INIT_PARAMS, is_int


@dataclass
class VBState:
    """One restart's variational fit between two iterations."""

    posterior: Posterior
    lower_bound: float  # of the last iteration (-inf before the first)
    lower_bounds: list = field(default_factory=list)  # this fit's iterations
    iteration: int = 0
    converged: bool = False


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


def run_vb(data_pass, states, make_priors, reg_covar, tol, max_iter, report=None):
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


def best_state(states):
    """The first state with the highest lower bound (scikit-learn's choice among restarts)."""
    best = states[0]
    for state in states[1:]:
        if state.lower_bound > best.lower_bound:
            best = state
    return best


def _is_real(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and bool(np.isfinite(float(value)))
    )


def check_vb_settings(est) -> None:
    """Refuse an out-of-range constructor parameter of a ``BayesianDiagGMM`` before any work.

    Parameters
    ----------
    est : BayesianDiagGMM

    Raises
    ------
    ValueError
        The message names the setting and what it must be.
    """
    positive = "None or a finite number > 0"
    checks = [
        ("n_components", is_int(est.n_components) and est.n_components >= 1, "an integer >= 1"),
        ("tol", _is_real(est.tol) and est.tol >= 0, "a finite number >= 0"),
        ("reg_covar", _is_real(est.reg_covar) and est.reg_covar >= 0, "a finite number >= 0"),
        ("max_iter", is_int(est.max_iter) and est.max_iter >= 0, "an integer >= 0"),
        ("n_init", is_int(est.n_init) and est.n_init >= 1, "an integer >= 1"),
        ("init_params", est.init_params in INIT_PARAMS, f"one of {INIT_PARAMS}"),
        (
            "weight_concentration_prior_type",
            est.weight_concentration_prior_type in PRIOR_TYPES,
            f"one of {PRIOR_TYPES}",
        ),
        (
            "weight_concentration_prior",
            est.weight_concentration_prior is None
            or (_is_real(est.weight_concentration_prior) and est.weight_concentration_prior > 0),
            positive,
        ),
        (
            "mean_precision_prior",
            est.mean_precision_prior is None
            or (_is_real(est.mean_precision_prior) and est.mean_precision_prior > 0),
            positive,
        ),
        (
            "degrees_of_freedom_prior",
            est.degrees_of_freedom_prior is None
            or (_is_real(est.degrees_of_freedom_prior) and est.degrees_of_freedom_prior > 0),
            positive + " (and > n_features - 1)",
        ),
        ("weight_threshold", _is_real(est.weight_threshold) and est.weight_threshold >= 0, ">= 0"),
        ("dtype", _dtype_ok(est.dtype) and np.dtype(est.dtype).name in DTYPES, f"one of {DTYPES}"),
        (
            "chunk_size",
            est.chunk_size is None or (is_int(est.chunk_size) and est.chunk_size >= 1),
            "None or an integer >= 1",
        ),
        ("verbose_interval", is_int(est.verbose_interval) and est.verbose_interval >= 1, ">= 1"),
        ("missing", est.missing in ("error", "drop"), "'error' or 'drop'"),
    ]
    for name, ok, expected in checks:
        if not ok:
            value = getattr(est, name)
            detail = ""
            if name == "missing" and value == "marginalize":
                detail = (
                    " missing='marginalize' is not available for the variational fit: its "
                    "posterior has one mean precision and one degrees of freedom per component "
                    "for all features (scikit-learn's), which per-feature counts of observed "
                    "values would split per feature. Use missing='drop' (rows with a NaN are "
                    "skipped), or DiagGMM(missing='marginalize')."
                )
            raise ValueError(
                f"{type(est).__name__}: {name} must be {expected}, got {value!r}.{detail}"
            )


def _dtype_ok(value) -> bool:
    try:
        np.dtype(value)
    except (TypeError, ValueError):
        return False
    return True


def _prior_array(value, name, n_features, positive):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0 and positive:
        array = np.full(n_features, float(array))
    if array.shape != (n_features,) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} must be finite values of shape ({n_features},) (one per feature), got "
            f"shape {array.shape}."
        )
    if positive and not np.all(array > 0):
        raise ValueError(f"{name} must be > 0 for every feature.")
    return array


def checked_priors(est, n_features: int) -> dict:
    """The given priors checked against the data's features (scikit-learn's rules).

    Returns
    -------
    dict
        ``mean`` and ``covariance`` as arrays of shape (D,) or None.

    Raises
    ------
    ValueError
        A prior of the wrong shape or sign, or ``degrees_of_freedom_prior <= n_features - 1``.
    """
    dof = est.degrees_of_freedom_prior
    if dof is not None and not dof > n_features - 1.0:
        raise ValueError(
            f"The parameter 'degrees_of_freedom_prior' should be greater than {n_features - 1}, "
            f"but got {dof:.3f}."
        )
    return {
        "mean": None
        if est.mean_prior is None
        else _prior_array(est.mean_prior, "mean_prior", n_features, False),
        "covariance": None
        if est.covariance_prior is None
        else _prior_array(est.covariance_prior, "covariance_prior", n_features, True),
    }
