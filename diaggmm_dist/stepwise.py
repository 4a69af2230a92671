"""One step of stepwise EM (``DiagGMM.partial_fit``): a batch's E-step pass, folded in.

The arithmetic of the running statistics is in :mod:`diaggmm_dist.online` (pure numpy);
this module adds the data pass and the M-step around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import online
from .em import e_step
from .kernels import split_statistics
from .mstep import m_step, warn_reseeded
from .parameters import MixtureParameters


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
    start: tuple,
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
        The new parameters and running statistics, and the batch's lower bound.

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
    weights, means, covariances, reseeded = m_step(
        running * scalars["weight"], reg_covar, shift, data_pass.resolution
    )
    parameters = MixtureParameters(weights, means, covariances)
    warn_reseeded(reseeded, f"Batch {t + 1}")
    return OnlineStep(parameters, running, shift, lower_bound, int(scalars["rows"]), reseeded)
