"""One resumable EM driver: the data pass of a fit, and EM of one or many models side by side.

:class:`DataPass` reads the fit's data once per call (checking its values on the first) and
returns the summed statistics of the responsibilities it is given. :class:`EMRun` holds the
training states of one or many models (the restarts of ``n_init``, the candidates of
:func:`~diaggmm_dist.selection.select_n_components`, the one model of the EM between two
splits) and steps them side by side: every iteration is one data pass for all the models
still running. It initializes the models it does not hold yet, saves every state to a
checkpoint (:class:`~diaggmm_dist.io.checkpoint.Checkpoints`) before the next pass, reports
each iteration to a callback and to the ``diaggmm_dist`` logger, and resumes from the
checkpoint where it stopped. :func:`checkpoint_identity` is the one definition of which
settings a checkpoint must share with a run to be resumed.

Continuing a checkpointed run up to iteration N is a feature: ``max_iter`` is not part of
a checkpoint's identity, and :meth:`EMRun.run` stops at ``until`` when given. A run stepped
to N, saved, opened again and run to its end gives the states of an uninterrupted run, bit
for bit (``tests/test_fitting.py``).

:func:`online_step` is the step of stepwise EM (:meth:`DiagGMM.partial_fit`).
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import engine, inputs, online
from .em import e_step, e_step_models
from .io.checkpoint import Checkpoints
from .kernels import split_statistics
from .mstep import m_step
from .parameters import MixtureParameters
from .state import TrainingState
from .validation import bad_weights_error, nonfinite_error

logger = logging.getLogger("diaggmm_dist")

#: A model's starting weights, means and precisions, shapes (K,), (K, D), (K, D).
StartingParameters = tuple


class ReseededComponentWarning(UserWarning):
    """A component lost all its mass and was re-seeded by splitting the heaviest one."""


def warn_reseeded(reseeded: int, when: str) -> None:
    """Warn about components the M-step re-seeded.

    Parameters
    ----------
    reseeded : int
        How many; nothing is said for 0.
    when : str
        Where in the fit, e.g. ``"Iteration 3"``.
    """
    if reseeded:
        warnings.warn(
            f"{when}: {reseeded} component(s) lost all their mass and were re-seeded "
            "by splitting the heaviest component.",
            ReseededComponentWarning,
        )


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
    weighted : bool
        Whether sample weights were given.

    Raises
    ------
    ValueError
        Infinite values, NaN under ``missing="error"``, bad weights, or no usable row.
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

    Attributes
    ----------
    dtype : numpy.dtype
    resolution : float
        Machine epsilon of ``dtype`` (the M-step's test for a constant feature).
    """

    def __init__(self, X, dtype, missing="error", weights=None, checked=False):
        self.X = X
        self.dtype = np.dtype(dtype)
        self.resolution = float(np.finfo(self.dtype).eps)
        self.missing = missing
        self.weights = weights
        self.checked = checked
        self.graphs = {}  # the pass's task graphs, built once for the whole fit

    @classmethod
    def of_samples(
        cls, samples: inputs.Samples, dtype: Any, missing: str, sample_weight: Any = None
    ) -> DataPass:
        """The data pass of a fit of ``samples``: in-memory data is checked up front.

        Parameters
        ----------
        samples : inputs.Samples
            The converted input.
        dtype, missing
            As in the class.
        sample_weight : array-like, dask array or DataArray, optional
            Aligned with the samples (:func:`diaggmm_dist.inputs.sample_values`).

        Returns
        -------
        DataPass

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
        stats = engine.pass_statistics(
            self.X,
            responsibilities,
            self.missing,
            self.weights,
            count_nonfinite=not self.checked,
            graphs=self.graphs,
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


@dataclass(frozen=True)
class EMSettings:
    """The settings of EM itself (a :class:`~diaggmm_dist.mixture.DiagGMM`'s of that name).

    Parameters
    ----------
    tol : float
        A model has converged when its lower bound changes by less than this.
    reg_covar : float
        Added to every variance.
    max_iter : int
        EM iterations of each model, at most; a state is ``finished`` when it gets there.
    verbose, verbose_interval : int
        Progress printed (see ``DiagGMM``); 0 prints nothing.
    """

    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    verbose: int = 0
    verbose_interval: int = 10

    @classmethod
    def of(cls, estimator: Any) -> EMSettings:
        """The EM settings of an estimator with ``get_params`` (a ``DiagGMM``).

        Parameters
        ----------
        estimator : DiagGMM
            Any object whose ``get_params()`` holds the fields.

        Returns
        -------
        EMSettings
        """
        params = estimator.get_params()
        return cls(**{name: params[name] for name in cls.__dataclass_fields__})


def _digest(array):
    if array is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def checkpoint_identity(
    params: Mapping[str, Any],
    fingerprint: Any,
    *,
    inits: Sequence[Any] = (None, None, None),
    warm_start_from: MixtureParameters | None = None,
    **extra: Any,
) -> dict:
    """What a checkpoint must share with a run to be resumed by it (JSON-able).

    ``max_iter`` is not part of it: a run continues a checkpoint that stopped at a smaller
    ``max_iter`` (or at :meth:`EMRun.run`'s ``until``) up to its own.

    Parameters
    ----------
    params : mapping
        The estimator's parameters (``DiagGMM.get_params()``): ``n_components``, ``tol``,
        ``reg_covar``, ``n_init``, ``init_params``, ``dtype``, ``missing`` and
        ``random_state`` are used.
    fingerprint : JSON-able
        The data's fingerprint (:func:`diaggmm_dist.engine.fingerprint`).
    inits : sequence of ndarray or None
        The validated ``weights_init``, ``means_init`` and ``precisions_init``.
    warm_start_from : MixtureParameters, optional
        The parameters a warm start begins from.
    **extra
        More settings of the run (``select_n_components``: ``candidates`` and
        ``heldout_fraction``).

    Returns
    -------
    dict
        ``{"config": {...}, "fingerprint": fingerprint}``.
    """
    seed = params["random_state"]
    config = {
        "n_components": int(params["n_components"]),
        "tol": float(params["tol"]),
        "reg_covar": float(params["reg_covar"]),
        "n_init": int(params["n_init"]),
        "init_params": params["init_params"],
        "dtype": str(np.dtype(params["dtype"])),
        "missing": params["missing"],
        "random_state": int(seed)
        if isinstance(seed, (int, np.integer))
        else (None if seed is None else "instance"),
        "inits": [_digest(a) for a in inits],
        "warm_start_from": None
        if warm_start_from is None
        else _digest(
            np.concatenate([warm_start_from.means.ravel(), warm_start_from.covariances.ravel()])
        ),
        **extra,
    }
    return {"config": config, "fingerprint": fingerprint}


class EMRun:
    """EM of one or many models side by side, resumable from a checkpoint.

    The models still running share each data pass: their coefficients are stacked, so an
    iteration costs one read of the data and one matrix product per chunk for all of them;
    a model that has stopped costs nothing more. After every iteration the states go to
    ``store`` (if any) before the next pass, then each stepped model's summary to the logger
    and to ``on_iteration``.

    Parameters
    ----------
    data_pass : DataPass
        The fit's data (any callable with ``dtype`` and ``resolution`` attributes).
    settings : EMSettings
        Convergence threshold, regularization, ``max_iter`` and verbosity.
    store : Checkpoints, optional
        Where every state is saved; :meth:`close` releases it. :meth:`open` makes one.
    on_iteration : callable, optional
        Called after every iteration (after its checkpoint is written) with one dict per
        model stepped: ``restart`` (the model's index), ``iteration``, ``lower_bound``,
        ``change``, ``converged`` and ``seconds`` (the iteration's time, checkpoint write
        included). An exception it raises ends the run (the checkpoint already holds that
        iteration).
    report : bool, default=True
        Log every iteration, print progress and warn about re-seeded components; False for
        the EM inside an initialization (:mod:`diaggmm_dist.splitting`).

    Attributes
    ----------
    states : list of TrainingState
        One per model, in order (``states[i].index == i``).

    Examples
    --------
    Continue a checkpointed run up to iteration 5, then later to its end::

        with EMRun.open(data_pass, settings, url, identity) as run:
            run.initialize(n_models, initial_models, random_state)
            run.run(until=5)
        with EMRun.open(data_pass, settings, url, identity) as run:
            run.run()  # resumes after iteration 5: the states of an uninterrupted run
    """

    def __init__(
        self,
        data_pass: Callable,
        settings: EMSettings,
        *,
        store: Checkpoints | None = None,
        on_iteration: Callable[[dict], Any] | None = None,
        report: bool = True,
    ):
        self.data_pass = data_pass
        self.settings = settings
        self.store = store
        self.on_iteration = on_iteration
        self.report = report
        self.states: list[TrainingState] = []

    @classmethod
    def open(
        cls,
        data_pass: Callable,
        settings: EMSettings,
        checkpoint: Any = None,
        identity: dict | None = None,
        *,
        overwrite: bool = False,
        on_iteration: Callable[[dict], Any] | None = None,
    ) -> EMRun:
        """A run that saves to ``checkpoint`` and holds the states it has (none if fresh).

        Parameters
        ----------
        data_pass, settings, on_iteration
            As in the class.
        checkpoint : str or os.PathLike, optional
            Zarr group (local path or fsspec URL) of the run's checkpoints; its lease is
            taken until :meth:`close`. None: a run without checkpoints.
        identity : dict, optional
            :func:`checkpoint_identity` of the run (needed with ``checkpoint``).
        overwrite : bool, default=False
            Start afresh when ``checkpoint`` holds another run (otherwise refused).

        Returns
        -------
        EMRun

        Raises
        ------
        ValueError
            ``identity`` has another ``tol`` or ``reg_covar`` than ``settings``.
        CheckpointMismatchError, CheckpointInUseError, CheckpointError
            As :class:`~diaggmm_dist.io.checkpoint.Checkpoints` raises them.
        """
        store = None
        if checkpoint is not None:
            config = identity.get("config", {})
            if config.get("tol") != settings.tol or config.get("reg_covar") != settings.reg_covar:
                raise ValueError(
                    f"The checkpoint identity's tol and reg_covar ({config.get('tol')}, "
                    f"{config.get('reg_covar')}) are not the run's ({settings.tol}, "
                    f"{settings.reg_covar}): build both from the same parameters."
                )
            store = Checkpoints(checkpoint, identity, overwrite=overwrite)
        run = cls(data_pass, settings, store=store, on_iteration=on_iteration)
        try:
            run._resume()
        except BaseException:
            run.close()
            raise
        return run

    def _resume(self):
        states = self.store.latest() if self.store is not None else None
        if states:
            resumed = max(state.iteration for state in states)
            logger.info(
                "resuming from checkpoint: %d restart(s) after iteration %d",
                len(states),
                resumed,
                extra={"resumed_iteration": resumed, "restarts": len(states)},
            )
            self.states = list(states)

    def close(self) -> None:
        """Release the checkpoint's lease (idempotent; also on errors with ``with``)."""
        if self.store is not None:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def initialize(
        self,
        n_models: int,
        initial_models: Callable[[range], list],
        random_state: np.random.RandomState | None = None,
        *,
        lower_bounds: Sequence[float] = (),
    ) -> None:
        """Start the models ``0 .. n_models - 1`` that the run does not hold yet, and save them.

        All of them are initialized together (their data passes shared), then checkpointed.
        A resumed run holds them all already: nothing is done. (A checkpoint of an older
        version, written between two restarts' initializations, holds fewer: the others are
        initialized from its random state.)

        Parameters
        ----------
        n_models : int
            How many models the run has.
        initial_models : callable
            ``initial_models(indices)``: the starting ``(weights, means, precisions)`` of the
            models of ``indices`` (a range), in order.
        random_state : numpy.random.RandomState, optional
            The generator ``initial_models`` draws from: set to the checkpoint's state
            first when resuming; its state afterwards is saved with every model.
        lower_bounds : sequence of float
            The history every new model starts with (a warm start's lower bound).
        """
        if self.states and random_state is not None:
            random_state.set_state(self.states[-1].random_state)
        indices = range(len(self.states), n_models)
        if not indices:
            return
        self._print(1, f"Initialization {', '.join(str(index) for index in indices)}")
        models = initial_models(indices)
        rng = None if random_state is None else random_state.get_state()
        self.states += [
            TrainingState.initial(
                index,
                weights,
                means,
                precisions,
                lower_bounds=list(lower_bounds),
                finished=self.settings.max_iter == 0,
                random_state=rng,
            )
            for index, (weights, means, precisions) in zip(indices, models)
        ]
        if self.store is not None:
            self.store.save(self.states)

    def _limit(self, until):
        return self.settings.max_iter if until is None else min(until, self.settings.max_iter)

    def running(self, until: int | None = None) -> list[int]:
        """Indices of the models that have neither converged nor reached ``until``.

        Parameters
        ----------
        until : int, optional
            An iteration at most ``max_iter`` (default ``max_iter``).

        Returns
        -------
        list of int
        """
        limit = self._limit(until)
        return [
            i
            for i, state in enumerate(self.states)
            if not state.converged and state.iteration < limit
        ]

    @property
    def finished(self) -> bool:
        """Every model has converged or reached ``max_iter``."""
        return not self.running()

    @property
    def best(self) -> TrainingState:
        """The state of the highest lower bound (the first of them, as scikit-learn keeps it)."""
        return max(self.states, key=lambda state: (state.lower_bound, -state.index))

    def step(self, until: int | None = None) -> list[dict]:
        """One EM iteration (one data pass) of every model still running; save and report it.

        Parameters
        ----------
        until : int, optional
            Models at this iteration are not stepped (default ``max_iter``).

        Returns
        -------
        list of dict
            The summary of every model stepped (as given to ``on_iteration``); empty when
            none was running.

        Raises
        ------
        FloatingPointError
            A log-likelihood is not finite.
        """
        running = self.running(until)
        if not running:
            return []
        tick = time.perf_counter()
        blocks, shift, lower_bounds = e_step_models(
            self.data_pass,
            [
                (self.states[i].weights, self.states[i].means, self.states[i].precisions)
                for i in running
            ],
        )
        summaries = []
        for i, block, lower_bound in zip(running, blocks, lower_bounds):
            state = self.states[i]
            new = self.states[i] = self._stepped(state, block, shift, lower_bound)
            summaries.append(
                {
                    "iteration": new.iteration,
                    "lower_bound": new.lower_bound,
                    "change": new.lower_bound - state.lower_bound,
                    "converged": new.converged,
                    "restart": new.index,
                }
            )
        if self.store is not None:
            self.store.save(self.states)
        seconds = time.perf_counter() - tick
        for summary in summaries:
            summary["seconds"] = seconds
            if self.report:
                logger.info(
                    "iteration %d lower bound %.8f change %.3e %.3fs",
                    summary["iteration"],
                    summary["lower_bound"],
                    summary["change"],
                    seconds,
                    extra=summary,
                )
            if self.on_iteration is not None:
                self.on_iteration(dict(summary))
        return summaries

    def run(self, until: int | None = None) -> list[TrainingState]:
        """Step until every model has converged or reached ``until`` (default ``max_iter``).

        ``until`` below ``max_iter`` pauses the run: a later run opened on the same
        checkpoint continues it, and ends exactly as an uninterrupted one.

        Parameters
        ----------
        until : int, optional
            The last iteration to run now (capped at ``max_iter``).

        Returns
        -------
        list of TrainingState
            :attr:`states`.
        """
        start = time.perf_counter()
        while summaries := self.step(until):
            n_iter = summaries[0]["iteration"]
            if n_iter % self.settings.verbose_interval == 0:
                now = time.perf_counter()
                self._print(
                    1,
                    f"  Iteration {n_iter}",
                    f"\t time lapse {now - start:.5f}s\t ll change {summaries[0]['change']:.5f}",
                )
                start = now
        if self.settings.max_iter > 0 and self.finished:  # a paused run has no verdict yet
            for state in self.states:
                verdict = "converged" if state.converged else "did not converge"
                self._print(
                    1, f"Initialization {verdict}.", f" lower bound {state.lower_bound:.5f}."
                )
        return self.states

    def _stepped(self, state, stats, shift, lower_bound):
        """The state after one EM iteration of ``state``, given its statistics of the pass."""
        n_iter = state.iteration + 1
        parameters, reseeded = _m_step(stats, self.settings.reg_covar, shift, self.data_pass)
        if self.report:
            warn_reseeded(reseeded, f"Iteration {n_iter}")
        converged = bool(abs(lower_bound - state.lower_bound) < self.settings.tol)
        return TrainingState(
            state.index,
            n_iter,
            parameters.weights,
            parameters.means,
            parameters.covariances,
            parameters.precisions,
            state.lower_bounds + [lower_bound],
            converged or n_iter == self.settings.max_iter,
            converged,
            state.random_state,
            state.n_reseeded + reseeded,
        )

    def _print(self, level, message, detail=""):
        verbose = self.settings.verbose
        if self.report and verbose >= level:
            print(message + (detail if verbose >= 2 else ""))


def _m_step(stats, reg_covar, shift, data_pass):
    weights, means, covariances, reseeded = m_step(stats, reg_covar, shift, data_pass.resolution)
    return MixtureParameters(weights, means, covariances), reseeded


class OnlineStep(NamedTuple):
    """What one step of stepwise EM (:func:`online_step`) gives."""

    parameters: MixtureParameters  # the M-step of the new running statistics
    running: np.ndarray  # the running statistics per unit weight, of data shifted by ``shift``
    shift: np.ndarray
    lower_bound: float  # the batch's mean log-likelihood under the parameters before the step
    rows: int  # the batch's rows that were used
    n_reseeded: int


def online_step(
    data_pass: Callable,
    start: StartingParameters,
    running: np.ndarray | None,
    running_shift: np.ndarray | None,
    t: int,
    *,
    reg_covar: float,
    learning_decay: float,
    learning_offset: float,
) -> OnlineStep:
    """Fold one batch into running statistics: one E-step pass, then the M-step of the fold.

    Parameters
    ----------
    data_pass : DataPass
        The batch.
    start : tuple of ndarray
        ``(weights, means, precisions)`` of the model before the step.
    running, running_shift : ndarray or None
        The running statistics per unit weight and their shift (None: take the batch's
        whole), see :func:`diaggmm_dist.online.fold`.
    t : int
        Batches folded in before this one.
    reg_covar, learning_decay, learning_offset : float
        As in ``DiagGMM``.

    Returns
    -------
    OnlineStep

    Raises
    ------
    FloatingPointError
        The batch's log-likelihood is not finite.
    """
    stats, shift, lower_bound = e_step(data_pass, *start)
    scalars = split_statistics(stats)[-1]
    eta = online.step_size(t, learning_decay, learning_offset)
    running = online.fold(running, running_shift, stats, shift, eta)
    # Scaled to the batch's weight, the M-step's safety rails (a component re-seeded below
    # 0.001 rows of mass) mean what they mean in a fit of this batch.
    parameters, reseeded = _m_step(running * scalars["weight"], reg_covar, shift, data_pass)
    warn_reseeded(reseeded, f"Batch {t + 1}")
    return OnlineStep(parameters, running, shift, lower_bound, int(scalars["rows"]), reseeded)
