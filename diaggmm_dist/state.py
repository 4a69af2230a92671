"""The state of a fit between two EM iterations: what a checkpoint holds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrainingState:
    """Everything needed to continue a fit exactly where it stopped."""

    restart: int  # index of the initialisation being run
    iteration: int  # EM iterations done in this restart (0: just initialised)
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions: np.ndarray
    lower_bounds: list
    finished: bool  # this restart has stopped (converged or max_iter)
    converged: bool
    random_state: tuple  # numpy RandomState.get_state() after this restart's initialisation
    n_reseeded: int = 0
    best: dict | None = field(default=None)  # best finished restart so far
