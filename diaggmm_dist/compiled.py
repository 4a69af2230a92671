"""The E-step's elementwise passes, compiled with numba: stacking the centered rows and their
squares, and the normalization (log-sum-exp over components) with the sums the M-step needs.

Around the two matrix products of a sub-block, numpy's passes over the (n, D) rows and the
(K, n) scores each read and write memory again, and each takes and gives back the GIL: two
threads lost much of their parallelism to those handovers (see bench/FINDINGS.md,
"compiled"). Here each is one compiled call:

* :func:`stacked_rows`: ``[x − shift | (x − shift)²]``, the difference taken in float64
  (the shift's precision) and rounded to the buffer's dtype, exactly as numpy's two passes
  round them;
* :func:`normalize_log_scores`: per model, one loop per component row adds the products'
  constant and keeps the row maximum, one more does the exponential and the running sum,
  one the log of the sums (and Σ_i log p(x_i) in float64) and one the scaling (and each
  component's Σ_i r_ik in float64). The exponentials are vectorized by the compiler (numpy's
  float64 ``exp`` is a scalar libm call).

The exponentials are Cephes' ``expf`` and ``exp``: x = m ln 2 + r with |r| ≤ ½ ln 2 (ln 2
split in two parts so that m ln 2 is exact), exp(r) by a degree-6 polynomial (float32) or
Cephes' Padé form 1 + 2 r P(r²) / (Q(r²) − r P(r²)) (float64), and 2^m written into the
float's exponent bits. The error is at
most 2 units in the last place (tested against exact values: 1.01 in float32, where numpy's
own float32 ``exp`` reaches 2.4, and 1.6 in float64). Exponents below ``UNDERFLOW`` (whose
exponential is under the smallest normal float) give 0 where numpy would give a subnormal;
as they are relative to the row's maximum, such a component's share of the row is below
1e-37 (float32) or 1e-307 (float64). NaN stays NaN and −∞ gives 0, as in numpy.

numba compiles the loops on first use (a few seconds) and caches the machine code next
to this module, or in the user's cache directory if that is read-only (``cache=True``), so
worker processes load it instead of compiling again; with neither writable, every process
compiles its own. :mod:`diaggmm_dist.kernels` imports this module on the first pass, so that
importing the package does not import numba.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic, overload

_F32 = np.float32
_UNDERFLOW32, _UNDERFLOW64 = _F32(-87.0), -708.0

#: exp(x) is 0 here for x below this, per dtype (see the module docstring).
UNDERFLOW = {np.dtype(np.float32): float(_UNDERFLOW32), np.dtype(np.float64): _UNDERFLOW64}


def _jit(function, fastmath=frozenset({"contract"})):
    """numba's njit for these loops: no GIL, checks off, machine code cached on disk if possible."""
    # By default only "contract" (fused multiply-add): reassociation would undo the rounding
    # by adding and subtracting 1.5 * 2^mantissa bits, and the two-part reduction by ln 2.
    options = dict(nogil=True, fastmath=set(fastmath), error_model="numpy", boundscheck=False)
    try:
        return numba.njit(cache=True, **options)(function)
    except (
        RuntimeError
    ):  # nowhere writable to cache (read-only install and home): compile in each process
        return numba.njit(cache=False, **options)(function)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float of ``bits``' width whose bit pattern is the integer ``bits`` (reinterpreted)."""
    float_type = {32: types.float32, 64: types.float64}[bits.bitwidth]

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(float_type))

    return float_type(bits), codegen


def _exp(x):
    """exp(x) for x ≤ 0 (relative to the row maximum); compiled only, per dtype (below)."""
    raise NotImplementedError("compiled only: numba takes its code from _exp_for")


@overload(_exp, inline="always")
def _exp_for(x):  # pragma: no cover (compiled)
    """Cephes' expf for float32, exp for float64 (module docstring); 0 below ``UNDERFLOW``."""
    if x == types.float32:

        def exp32(x):
            # round(x / ln 2)
            m = (x * _F32(1.4426950408889634) + _F32(12582912.0)) - _F32(12582912.0)
            r = (x - m * _F32(0.693359375)) - m * _F32(-2.12194440e-4)
            p = _F32(1.9875691500e-4) * r + _F32(1.3981999507e-3)
            p = ((p * r + _F32(8.3334519073e-3)) * r + _F32(4.1665795894e-2)) * r + _F32(
                1.6666665459e-1
            )
            p = (p * r + _F32(5.0000001201e-1)) * r * r + r + _F32(1.0)
            power = _float_from_bits(np.int32((np.int32(m) + np.int32(127)) << np.int32(23)))  # 2^m
            # the test is False for NaN: NaN stays
            return _F32(0) if x < _UNDERFLOW32 else p * power

        return exp32
    if x == types.float64:

        def exp64(x):
            m = (
                x * 1.4426950408889634 + 6755399441055744.0
            ) - 6755399441055744.0  # round(x / ln 2)
            r = (x - m * 6.93145751953125e-1) - m * 1.42860682030941723212e-6
            rr = r * r
            p = r * (
                (1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                + 9.99999999999999999910e-1
            )
            q = (
                (3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                + 2.27265548208155028766e-1
            ) * rr + 2.00000000000000000009e0
            # 2^m
            power = _float_from_bits(np.int64((np.int64(m) + np.int64(1023)) << np.int64(52)))
            # NaN stays, as above
            return 0.0 if x < _UNDERFLOW64 else (1.0 + 2.0 * (p / (q - p))) * power

        return exp64
    return None


@_jit
def _stack_rows(x, shift, rows):  # pragma: no cover (compiled)
    """rows[i] <- [x_i − shift | (x_i − shift)²], row by row, rounded to the buffer's dtype."""
    n, d = x.shape
    for i in range(n):
        row, out = x[i], rows[i]
        for j in range(d):
            # in float64 (the shift's), then stored in the buffer's precision
            out[j] = row[j] - shift[j]
        for j in range(d):
            out[d + j] = out[j] * out[j]


@_jit
def _stack_rows_in_two_passes(x, shift, rows):  # pragma: no cover (compiled)
    """:func:`_stack_rows` as two passes over the rows: the differences, then the squares.

    For a float32 buffer and the float64 shift the compiler vectorizes these two loops but
    not the one-pass loop; for a float64 buffer the one pass is faster, as the squares would
    re-read twice the memory (see bench/FINDINGS.md, "compiled._stack_rows_in_two_passes").
    """
    n, d = x.shape
    for i in range(n):
        row, out = x[i], rows[i]
        for j in range(d):
            # in float64 (the shift's), then stored in the buffer's precision
            out[j] = row[j] - shift[j]
    for i in range(n):
        out = rows[i]
        for j in range(d):
            out[d + j] = out[j] * out[j]


def _check(name, *arrays):
    if any(a.dtype not in UNDERFLOW or not a.flags.c_contiguous for a in arrays):
        raise TypeError(
            f"compiled.{name} takes C-contiguous float32 or float64 arrays in native byte order."
        )


def stacked_rows(x, shift, rows):
    """:func:`diaggmm_dist.kernels.stacked_rows` without a mask, in one call.

    The same numbers as numpy's two passes.

    ``x`` (n, D) and ``rows`` (n, 2D) C-contiguous float32 or float64 in native byte order
    (``x`` may have the other precision). The shift is taken in float64 and the difference
    is rounded to the buffer's dtype, as numpy's is for a float64 shift (so a float64 shift
    is never rounded to a float32 buffer's precision before it is subtracted).
    """
    _check("stacked_rows", x, rows)
    stack = _stack_rows_in_two_passes if rows.dtype == np.float32 else _stack_rows
    stack(x, np.ascontiguousarray(shift, dtype=np.float64), rows)
    return rows


def _jit_sum(function):
    """:func:`_jit` that may also reorder the additions of a sum (so that the sum is vectorized)."""
    return _jit(function, fastmath={"contract", "reassoc"})


@_jit_sum
def _log_likelihood_sum(total, top, scale):  # pragma: no cover (compiled)
    """In place: total[i] <- log(total[i]) + top[i] (log p(x_i)), scale[i] <- 1 / total[i].

    Returns Σ_i log p(x_i) (float64).
    """
    acc = 0.0
    for i in range(total.shape[0]):
        t = total[i]
        scale[i] = 1 / t
        value = np.log(t) + top[i]
        total[i] = value
        acc += value
    return acc


@_jit_sum
def _scaled_sum(row, scale):  # pragma: no cover (compiled)
    """In place: row[i] <- row[i] * scale[i]; Σ_i of those (float64)."""
    acc = 0.0
    for i in range(row.shape[0]):
        value = row[i] * scale[i]
        row[i] = value
        acc += value
    return acc


@_jit
def _normalize(
    scores, offset, ends, log_likelihood, mass, log_likelihood_sum, top, other
):  # pragma: no cover (compiled)
    """The normalization of each model's rows ``scores[ends[g-1]:ends[g]]``, in place.

    See the module docstring.
    """
    n = scores.shape[1]
    begin = 0
    for g in range(ends.shape[0]):
        end = ends[g]
        # Row maximum, with the offset added on the way. It goes from one buffer to the other
        # and back: written in place, the compiler makes it a masked store, which is slow on AMD.
        # NaN does not win the comparison, but it reaches the row's total below, so a row
        # with a NaN (or only -inf, or +inf) gets NaN everywhere, as with numpy's max.
        src, dst = top, other
        for i in range(n):
            src[i] = -np.inf
        for k in range(begin, end):
            row, constant = scores[k], offset[k]
            for i in range(n):
                value = row[i] + constant
                row[i] = value
                current = src[i]
                dst[i] = value if value > current else current
            src, dst = dst, src
        total = log_likelihood[g]
        for i in range(n):
            total[i] = 0
        for k in range(begin, end):
            row = scores[k]
            for i in range(n):
                value = _exp(row[i] - src[i])
                row[i] = value
                total[i] += value
        log_likelihood_sum[g] = _log_likelihood_sum(total, src, dst)
        for k in range(begin, end):
            # one division per row, not one per row and component
            mass[k] = _scaled_sum(scores[k], dst)
        begin = end


def normalize_log_scores(scores, offset, ends):
    """:func:`diaggmm_dist.kernels.normalize_log_scores` for C-contiguous float32 or float64 scores.

    ``offset`` (K, 1) in any float dtype; ``ends`` (int64): where each model's rows end. Returns
    ``(log_likelihood, mass, log_likelihood_sum)``, the fields of
    :class:`diaggmm_dist.kernels.Normalized`.
    """
    _check("normalize_log_scores", scores)
    n = scores.shape[1]
    normalized = (
        np.empty((len(ends), n), scores.dtype),
        np.empty(scores.shape[0]),
        np.empty(len(ends)),
    )
    _normalize(
        scores,
        offset.astype(scores.dtype, copy=False).ravel(),
        ends,
        *normalized,
        np.empty(n, scores.dtype),
        np.empty(n, scores.dtype),
    )
    return normalized


@_jit
def _exp_values(values):  # pragma: no cover (compiled)
    for i in range(values.shape[0]):
        values[i] = _exp(values[i])


def exp(values, dtype):
    """exp of ``values`` in ``dtype`` by the compiled loop (tests check it against exact values)."""
    values = np.array(values, dtype=dtype, ndmin=1)
    out = values.ravel().copy()
    _exp_values(out)
    return out.reshape(values.shape)
