"""Does the diagonal assumption cost this model anything? One pass over held-out rows says.

Under the model's own responsibilities, each component's full covariance is estimated on
one half of the rows (by the parity of their global index) and judged on the other, beside
the diagonal covariance estimated from the same rows, and the other way round. For a
Gaussian with covariance Σ and responsibilities r, Σ_i r_i log N(x_i | μ, Σ) is
−½ (N (D log 2π + log|Σ|) + tr(Σ⁻¹ M)) with M = Σ_i r_i (x_i − μ)(x_i − μ)ᵀ: moments, so
one pass (:func:`~diaggmm_dist.kernels.second_moments.chunk_second_moments`) gives both.
Judged on rows it was not estimated on, the full covariance pays for its D(D − 1)/2 extra
parameters: a gain near zero or below says the diagonal model loses nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import engine, kernels
from .kernels.second_moments import (
    N_FOLDS,
    chunk_second_moments,
    n_moment_values,
    split_moments,
)

__all__ = ["ComponentReport", "DiagonalFitReport", "diagonal_fit_report"]

#: Values of the D × D moments one task may hold per component (a block of columns each).
MOMENT_VALUES_PER_TASK = 2**22


@dataclasses.dataclass(frozen=True)
class ComponentReport:
    """One component's figures in a :class:`DiagonalFitReport`."""

    component: int
    weight: float
    #: Weight of the held-out rows in the component (Σ r).
    mass: float
    #: Expected log-likelihood per row of the component, diagonal and full covariances.
    diagonal: float
    full: float
    #: ``full - diagonal``, in nats per row of the component.
    gain: float
    #: The strongest correlations the diagonal model ignores: (feature, feature, correlation).
    correlations: tuple


@dataclasses.dataclass(frozen=True)
class DiagonalFitReport:
    """What full covariances would gain over the diagonal model, on held-out rows.

    The figures are expected complete-data log-likelihoods per row,
    Σ_k r_k (log w_k + log N(x | μ_k, Σ_k)), under the model's responsibilities, with Σ_k
    estimated on the other half of the rows (two-fold cross-fitting), so they judge the
    covariances out of sample. ``gain`` is ``full - diagonal`` in nats per row.
    """

    #: Mean log-likelihood per row of the model itself (its :meth:`DiagGMM.score`).
    model_log_likelihood: float
    diagonal: float
    full: float
    gain: float
    n_rows: int
    #: Rows left out: a NaN or infinite value (full second moments need every feature).
    n_rows_left_out: int
    components: tuple[ComponentReport, ...]

    def is_diagonal_adequate(self, tolerance: float = 0.01) -> bool:
        """Whether full covariances gain less than ``tolerance`` nats per row."""
        return self.gain < tolerance

    def to_markdown(self) -> str:
        """The report as a Markdown table, one row per component and an overall one."""
        lines = [
            "| component | weight | diagonal | full | gain (nats/row) | strongest ignored "
            "correlations |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for c in self.components:
            pairs = ", ".join(f"{a}~{b} {rho:+.2f}" for a, b, rho in c.correlations[:3])
            lines.append(
                f"| {c.component} | {c.weight:.3f} | {c.diagonal:.4f} | {c.full:.4f} | "
                f"{c.gain:+.4f} | {pairs} |"
            )
        lines.append(
            f"| all | 1.000 | {self.diagonal:.4f} | {self.full:.4f} | {self.gain:+.4f} | |"
        )
        verdict = (
            "diagonal is fine"
            if self.is_diagonal_adequate()
            else "full covariances would fit better"
        )
        return (
            "\n".join(lines)
            + f"\n\n{self.n_rows:,} rows ({self.n_rows_left_out:,} left out); the model's "
            f"mean log-likelihood {self.model_log_likelihood:.4f}; {verdict} "
            f"(gain {self.gain:+.4f} nats per row)."
        )


def _expected_log_likelihood(mass, first, second, mean, covariance):
    """Σ_i r_i log N(x_i | mean, covariance) from the moments of the rows (shifted alike)."""
    d = mean.shape[0]
    scatter = second - np.outer(first, mean) - np.outer(mean, first) + mass * np.outer(mean, mean)
    chol = np.linalg.cholesky(covariance)
    log_det = 2.0 * np.log(np.diag(chol)).sum()
    solved = np.linalg.solve(covariance, scatter)
    return -0.5 * (mass * (d * kernels.LOG_2PI + log_det) + np.trace(solved))


def _fold_estimates(mass, first, second, reg_covar):
    """Mean and full covariance of one component from one fold's moments (None if empty)."""
    if mass <= 0:
        return None
    mean = first / mass
    covariance = second / mass - np.outer(mean, mean)
    covariance = 0.5 * (covariance + covariance.T)
    covariance[np.diag_indices_from(covariance)] += reg_covar
    return mean, covariance


def _strongest_correlations(covariance, names, n):
    spread = np.sqrt(np.clip(np.diag(covariance), np.finfo(float).tiny, None))
    correlation = covariance / np.outer(spread, spread)
    i, j = np.triu_indices_from(correlation, k=1)
    order = np.argsort(-np.abs(correlation[i, j]), kind="stable")[:n]
    return tuple((names[i[o]], names[j[o]], float(correlation[i[o], j[o]])) for o in order)


def diagonal_fit_report(model, samples, n_correlations: int = 5) -> DiagonalFitReport:
    """The :class:`DiagonalFitReport` of a fitted ``DiagGMM`` on ``samples`` (one pass).

    Parameters
    ----------
    model : DiagGMM
        Fitted.
    samples : Samples
        Held-out rows, read with the model's input layout (``DiagGMM._prediction_samples``).
    n_correlations : int
        Correlations to report per component.

    Returns
    -------
    DiagonalFitReport
    """
    k, d = model.n_components, model.n_features_in_
    shift = kernels.data_center(model.weights_, model.means_, model.precisions_)
    coef = kernels.log_prob_coefficients(
        model.weights_, model.means_, model.precisions_, shift, np.dtype(model.dtype)
    )
    block = max(1, min(d, MOMENT_VALUES_PER_TASK // max(1, k * d)))
    n_parts = -(-d // block)
    summed = engine.summed_chunk_vectors(
        samples.array,
        chunk_second_moments,
        coef,
        block,
        n_values=n_moment_values(k, d, block),
        n_parts=n_parts,
    )
    (parts,) = engine.compute(summed)
    pieces = [split_moments(part, k, d, block) for part in parts]
    mass, first, scalars = pieces[0]["mass"], pieces[0]["first"], pieces[0]["scalars"]
    second = np.concatenate([p["second"] for p in pieces], axis=-1)[..., :d]
    n_rows = int(scalars[1])
    if model.missing == "error" and scalars[2] > 0:
        raise ValueError(
            f"The held-out rows have {int(scalars[2])} row(s) with NaN or infinite values, and "
            "the model's missing='error' refuses them: set missing='drop' (or 'marginalize') "
            "on the model to leave those rows out of the check."
        )
    if n_rows == 0:
        raise ValueError("No held-out row can be scored: every row has a NaN or infinite value.")
    names = (
        [str(name) for name in model.feature_names_in_]
        if hasattr(model, "feature_names_in_")
        else [f"x{j}" for j in range(d)]
    )
    log_weights = np.log(np.asarray(model.weights_, dtype=np.float64))
    components, totals = [], np.zeros(2)
    for c in range(k):
        q = np.zeros(2)  # diagonal, full
        for held in range(N_FOLDS):
            other = 1 - held
            estimate = _fold_estimates(
                mass[other, c], first[other, c], second[other, c], model.reg_covar
            )
            if estimate is None or mass[held, c] <= 0:
                continue
            mean, covariance = estimate
            moments = (mass[held, c], first[held, c], second[held, c], mean)
            q += [
                _expected_log_likelihood(*moments, np.diag(np.diag(covariance))),
                _expected_log_likelihood(*moments, covariance),
            ]
        component_mass = float(mass[:, c].sum())
        q += component_mass * log_weights[c]
        totals += q
        pooled = _fold_estimates(component_mass, first[:, c].sum(0), second[:, c].sum(0), 0.0)
        per_row = q / component_mass if component_mass > 0 else np.full(2, np.nan)
        components.append(
            ComponentReport(
                component=c,
                weight=float(model.weights_[c]),
                mass=component_mass,
                diagonal=float(per_row[0]),
                full=float(per_row[1]),
                gain=float(per_row[1] - per_row[0]),
                correlations=()
                if pooled is None
                else _strongest_correlations(pooled[1], names, n_correlations),
            )
        )
    diagonal, full = totals / n_rows
    return DiagonalFitReport(
        model_log_likelihood=float(scalars[0] / n_rows),
        diagonal=float(diagonal),
        full=float(full),
        gain=float(full - diagonal),
        n_rows=n_rows,
        n_rows_left_out=int(scalars[2]),
        components=tuple(components),
    )
