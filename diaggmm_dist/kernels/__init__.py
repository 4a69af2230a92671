"""Per-chunk numpy kernels: one block of rows in, a tiny block of statistics out.

This module knows numpy (and, for the elementwise passes of the E-step,
:mod:`~diaggmm_dist.compiled`'s loops) only: no dask, no I/O, no logging, so every function
here can be tested on its own and runs unchanged on a thread, a worker process or a remote
machine.

The E-step of a block is matrix products. With P = 1/σ² and x_c = x − shift,

    log w_k + log N(x | μ_k, σ_k) = (−½ P) x_c² + (μ_c P) x_c + c_k,
    c_k = log w_k − ½ (D log 2π + Σ_j μ_c,kj² P_kj − Σ_j log P_kj),

so one (K × 2D) matrix, the "linear" one μ_c P beside the "square" one −½ P, times the
stacked rows [x_c | x_c²] gives every component's log-density at once, and one product of
the responsibilities with the same rows gives the sufficient statistics r x_c and r x_c²
(with Σ_i r_ik from the normalization). Results
are laid out components × rows (K × n): the log-sum-exp reductions over components then
run across long contiguous rows instead of along rows of length K. The shift is a
fixed per-feature offset near the data mean: it changes nothing mathematically but keeps
x² and S2/N − μ² free of cancellation when the data sit far from the origin, which matters
in float32. It is kept in float64 and subtracted from the rows in float64 (or the input's
wider precision), and only the difference x − shift is rounded to the compute dtype: the
M-step adds the same float64 shift back, so float32 compute loses nothing to the offset of
the data (a shift rounded to float32 is off by up to 2^-24 of itself, which at an offset of
1e7 standard deviations moved every mean by a fraction of a standard deviation per
iteration).

Input in a non-native byte order (big-endian data on a little-endian machine: Zarr v2
``>f8``, NetCDF-classic files) is converted to native order one sub-block at a time, where
the block is read anyway (:func:`native_order`).

Blocks are processed in cache-sized sub-blocks of ``SUB_ROWS`` rows; each sub-block's
partial sums are added into float64 accumulators, so accumulation is float64 even when
the compute dtype is float32.

Missing values (NaN) follow one of three policies. ``"error"``: they are only counted (the
caller refuses the data). ``"drop"``: a row with any NaN takes no part. ``"marginalize"``:
with diagonal covariances a row's likelihood over its observed features is exact, so each
row uses only those: the per-feature constant of the log-density is multiplied by the
observation mask m, and the statistics become per-feature Σ r·m, Σ r·m·x, Σ r·m·x². A
sub-block without NaN always takes the plain path, whose Σ r·m is Σ r itself, so data
without gaps gives bit-identical results under every policy. Rows with no observed feature
(or, with ``"drop"``, any missing one) get zero responsibility and count for nothing.
"""

from .blocks import (
    SUB_ROWS,
    Normalized,
    component_log_scores,
    native_order,
    nearest_one_hot,
    normalize_log_scores,
    random_responsibilities,
    splitmix64,
    stacked_rows,
)
from .coefficients import (
    LOG_2PI,
    Coefficients,
    data_center,
    distance_coefficients,
    log_prob_coefficients,
    stack_coefficients,
)
from .rows import row_labels, row_log_likelihood, row_responsibilities, row_summary
from .statistics import (
    SCALARS,
    chunk_statistics,
    model_statistics,
    n_stat_columns,
    n_stat_rows,
    pass_models,
    split_statistics,
)

__all__ = [
    "LOG_2PI",
    "SCALARS",
    "SUB_ROWS",
    "Coefficients",
    "data_center",
    "Normalized",
    "chunk_statistics",
    "component_log_scores",
    "distance_coefficients",
    "log_prob_coefficients",
    "model_statistics",
    "n_stat_columns",
    "n_stat_rows",
    "native_order",
    "nearest_one_hot",
    "normalize_log_scores",
    "pass_models",
    "random_responsibilities",
    "row_labels",
    "row_log_likelihood",
    "row_responsibilities",
    "row_summary",
    "splitmix64",
    "split_statistics",
    "stack_coefficients",
    "stacked_rows",
]
