"""One resumable EM driver: EM of one or many models side by side, checkpointed.

:class:`EMRun` holds the training states of one or many models (the restarts of ``n_init``,
the candidates of :func:`~diaggmm_dist.selection.select_n_components`, the one model of the
EM between two splits) and steps them side by side: every iteration is one data pass
(:class:`~diaggmm_dist.data_pass.DataPass`) for all the models still running. It initializes
the models it does not hold yet, saves every state to a checkpoint before the next pass,
reports each iteration to a callback and the ``diaggmm_dist`` logger, and resumes from the
checkpoint where it stopped (:func:`~diaggmm_dist.em_settings.checkpoint_identity` says
which checkpoints it may resume). ``max_iter`` is not part of that identity and
:meth:`EMRun.run` stops at ``until`` when given: a run stepped to N, saved, opened again and
run to its end gives the states of an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .em import e_step_models
from .em_settings import EMSettings
from .locations import Location
from .mstep import m_step, warn_reseeded
from .parameters import MixtureParameters
from .state import TrainingState
from .stores.checkpoint import Checkpoints

logger = logging.getLogger("diaggmm_dist")


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
    Two models side by side, checkpointed, paused after iteration 2 and continued later:

    >>> import tempfile
    >>> import dask.array as da
    >>> import numpy as np
    >>> from diaggmm_dist import DiagGMM
    >>> from diaggmm_dist.data_pass import DataPass
    >>> from diaggmm_dist.em_settings import checkpoint_identity
    >>> X = da.from_array(np.random.default_rng(0).normal(size=(100, 2)), chunks=50)
    >>> means = np.array([[-1.0, 0.0], [1.0, 0.0]])
    >>> def initial_models(indices):
    ...     return [(np.full(2, 0.5), means * (i + 1), np.ones((2, 2))) for i in indices]
    >>> url, settings = tempfile.mkdtemp() + "/run.zarr", EMSettings(max_iter=20)
    >>> identity = checkpoint_identity(DiagGMM(2).get_params(), {"rows": 100})
    >>> with EMRun.open(DataPass(X, "float64"), settings, url, identity) as run:
    ...     run.initialize(2, initial_models, np.random.RandomState(0))
    ...     paused = run.run(until=2)
    >>> with EMRun.open(DataPass(X, "float64"), settings, url, identity) as run:
    ...     states = run.run()
    >>> [state.iteration for state in paused], [state.index for state in states], run.finished
    ([2, 2], [0, 1], True)
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
        checkpoint: str | os.PathLike | Location | Any | None = None,
        identity: dict | None = None,
        *,
        overwrite: bool = False,
        on_iteration: Callable[[dict], Any] | None = None,
    ) -> EMRun:
        """A run that saves to ``checkpoint`` and holds the states it has (none if fresh).

        Parameters
        ----------
        data_pass : DataPass
            The fit's data.
        settings : EMSettings
            As in the class.
        checkpoint : str, os.PathLike, Location or zarr store, optional
            Zarr group (path, fsspec URL, Location with its options, or store object) of the
            run's checkpoints; its lease is taken until :meth:`close`. None: no checkpoints.
        identity : dict, optional
            :func:`checkpoint_identity` of the run (needed with ``checkpoint``).
        overwrite : bool, default=False
            Start afresh when ``checkpoint`` holds another run (otherwise refused).
        on_iteration : callable, optional
            As in the class.

        Returns
        -------
        EMRun

        Raises
        ------
        ValueError
            ``identity`` is missing, or has another ``tol`` or ``reg_covar`` than ``settings``.
        CheckpointMismatchError, CheckpointInUseError, CheckpointError
            As :class:`~diaggmm_dist.stores.checkpoint.Checkpoints` raises them.
        """
        store = None
        if checkpoint is not None:
            if identity is None:
                raise ValueError("A checkpointed run needs its identity (checkpoint_identity).")
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
            first when resuming; its state afterwards is saved with every model (needed
            when the run has a checkpoint).
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
            Positions in :attr:`states`, in order.
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
        weights, means, covariances, reseeded = m_step(
            stats, self.settings.reg_covar, shift, self.data_pass.resolution
        )
        parameters = MixtureParameters(weights, means, covariances)
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
