"""The state of a fit between two EM iterations: what a checkpoint holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .parameters import MixtureParameters


@dataclass
class TrainingState:
    """Everything needed to continue the EM of one model exactly where it stopped.

    The precisions are kept beside the covariances, not derived: the first E-step uses the
    initial precisions exactly as given (``precisions_init``), as scikit-learn does.
    """

    index: int  # the model's place in its run (a restart, or a candidate of select_n_components)
    iteration: int  # EM iterations done on this model (0: just initialized)
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions: np.ndarray
    lower_bounds: list
    finished: bool  # this model has stopped (converged or max_iter)
    converged: bool
    random_state: tuple  # numpy RandomState.get_state() after the run's initialization
    n_reseeded: int = 0

    @classmethod
    def initial(
        cls,
        index: int,
        weights: np.ndarray,
        means: np.ndarray,
        precisions: np.ndarray,
        *,
        lower_bounds: list,
        finished: bool,
        random_state: tuple,
    ) -> TrainingState:
        """The state of a model just initialized (no EM iteration yet).

        Parameters
        ----------
        index : int
            The model's place in its run.
        weights, means, precisions : ndarray
            Its starting parameters, of shapes (K,), (K, D) and (K, D).
        lower_bounds : list of float
            Empty, or a warm start's one lower bound (of the model it starts from).
        finished : bool
            Whether EM stops here (``max_iter=0``).
        random_state : tuple
            ``RandomState.get_state()`` after the run's initialization.

        Returns
        -------
        TrainingState
        """
        covariances = MixtureParameters.from_precisions(weights, means, precisions).covariances
        return cls(
            index,
            0,
            weights,
            means,
            covariances,
            precisions,
            list(lower_bounds),
            finished,
            False,
            random_state,
        )

    @property
    def parameters(self) -> MixtureParameters:
        """Weights, means and covariances as one record."""
        return MixtureParameters(self.weights, self.means, self.covariances)

    @property
    def lower_bound(self) -> float:
        """The latest lower bound (-inf before the first iteration)."""
        return self.lower_bounds[-1] if self.lower_bounds else -np.inf
