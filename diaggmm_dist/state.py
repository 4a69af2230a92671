"""The state of a fit between two EM iterations: what a checkpoint holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrainingState:
    """Everything needed to continue a fit exactly where it stopped."""

    restart: int  # index of the initialisation (restarts run side by side, one state each)
    iteration: int  # EM iterations done in this restart (0: just initialised)
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions: np.ndarray
    lower_bounds: list
    finished: bool  # this restart has stopped (converged or max_iter)
    converged: bool
    random_state: tuple  # numpy RandomState.get_state() after the initialisation of the restarts
    n_reseeded: int = 0

    @property
    def lower_bound(self):
        """The latest lower bound (-inf before the first iteration)."""
        return self.lower_bounds[-1] if self.lower_bounds else -np.inf
