"""The E-step's elementwise passes, compiled with numba: centring the rows, adding the
products' parts, and the normalisation (log-sum-exp over components).

Per 8,192-row sub-block (K=16, D=32, one thread on the 2-core reference machine), the
matrix products take ~0.35 ms (E-step) and ~0.27 ms (M-step) in float32 with OpenBLAS;
what surrounds them were numpy passes over the (n, D) rows and the (K, n) scores, each
reading and writing memory again. Here they are fused loops:

* :func:`centred_rows`: ``x − shift`` and its square in one pass over the rows, rounded
  exactly as numpy's two passes round them (0.07-0.10 ms against 0.18-0.20 ms in float32,
  0.18 against 0.33-0.36 ms in float64);
* :func:`add_scores`: the two products' sum plus the per-component offset, one pass;
* :func:`normalise_log_scores`: one loop per component row does the subtraction of the
  row maximum, the exponential and the running sum, and one more does the scaling; the
  exponentials are vectorised by the compiler. numpy's ``exp`` costs about 2.3 ns per
  float32 value and 9 ns per float64 value there (AVX2; float64 is a scalar libm call),
  so for K=16 the N·K exponentials were a third of a float32 EM iteration and more of a
  float64 one. The whole normalisation of a 16 × 8,192 block takes ~0.15 ms in float32
  and ~0.4–0.55 ms in float64, against ~0.25–0.33 and ~1.0 ms with numpy.

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


def _jit(function):
    """numba's njit for these loops: no GIL, checks off, and the machine code cached on disk where possible."""
    # Only "contract" (fused multiply-add): reassociation would undo the rounding by adding
    # and subtracting 1.5 * 2^mantissa bits, and the two-part reduction by ln 2.
    options = dict(nogil=True, fastmath={"contract"}, error_model="numpy", boundscheck=False)
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # nowhere writable to cache (read-only install and home): compile in each process
        return numba.njit(cache=False, **options)(function)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float of ``bits``' width whose bit pattern is the integer ``bits`` (a reinterpretation)."""
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
            m = (x * _F32(1.4426950408889634) + _F32(12582912.0)) - _F32(12582912.0)  # round(x / ln 2)
            r = (x - m * _F32(0.693359375)) - m * _F32(-2.12194440e-4)
            p = _F32(1.9875691500e-4) * r + _F32(1.3981999507e-3)
            p = ((p * r + _F32(8.3334519073e-3)) * r + _F32(4.1665795894e-2)) * r + _F32(1.6666665459e-1)
            p = (p * r + _F32(5.0000001201e-1)) * r * r + r + _F32(1.0)
            power = _float_from_bits(np.int32((np.int32(m) + np.int32(127)) << np.int32(23)))  # 2^m
            return _F32(0) if x < _UNDERFLOW32 else p * power  # the test is False for NaN: NaN stays

        return exp32
    if x == types.float64:
        def exp64(x):
            m = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0  # round(x / ln 2)
            r = (x - m * 6.93145751953125e-1) - m * 1.42860682030941723212e-6
            rr = r * r
            p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1)
            q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                 + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
            power = _float_from_bits(np.int64((np.int64(m) + np.int64(1023)) << np.int64(52)))  # 2^m
            return 0.0 if x < _UNDERFLOW64 else (1.0 + 2.0 * (p / (q - p))) * power  # NaN stays, as above

        return exp64
    return None


@_jit
def _centre_rows(x, shift, centred, squares):  # pragma: no cover (compiled)
    """centred <- x − shift, squares <- centred², row by row (each rounded to the buffers' dtype)."""
    n, d = x.shape
    for i in range(n):
        row, centred_row, squares_row = x[i], centred[i], squares[i]
        for j in range(d):
            centred_row[j] = row[j] - shift[j]  # in x's precision, then stored in the buffer's
        for j in range(d):
            squares_row[j] = centred_row[j] * centred_row[j]


@_jit
def _add_scores(scores, other, offset):  # pragma: no cover (compiled)
    """In place: scores[k, i] <- (scores[k, i] + other[k, i]) + offset[k, 0]."""
    n_components, n = scores.shape
    for k in range(n_components):
        row, other_row, constant = scores[k], other[k], offset[k, 0]
        for i in range(n):
            row[i] = (row[i] + other_row[i]) + constant


def _check(name, *arrays):
    if any(a.dtype not in UNDERFLOW or not a.flags.c_contiguous for a in arrays):
        raise TypeError(f"compiled.{name} takes C-contiguous float32 or float64 arrays.")


def centred_rows(x, shift, centred, squares):
    """:func:`diaggmm_dist.kernels.centred_rows` without a mask, in one pass: the same numbers as numpy's two.

    ``x`` (n, D) and the buffers C-contiguous float32 or float64 (``x`` may have the other
    precision: the difference is taken in the wider one and rounded to the buffers', as numpy's is).
    """
    _check("centred_rows", x, centred, squares)
    _centre_rows(x, np.ascontiguousarray(shift, dtype=centred.dtype), centred, squares)
    return centred, squares


def add_scores(scores, other, offset):
    """``scores += other; scores += offset`` (offset (K, 1)) in one pass, rounded as those two numpy passes."""
    _check("add_scores", scores, other)
    _add_scores(scores, other, offset.astype(scores.dtype, copy=False))
    return scores


@_jit
def _exp_rows(scores, top, total):  # pragma: no cover (compiled)
    """In place: scores[k, i] <- exp(scores[k, i] - top[i]); total[i] <- Σ_k of those."""
    n_components, n = scores.shape
    for i in range(n):
        total[i] = 0
    for k in range(n_components):
        row = scores[k]
        for i in range(n):
            value = _exp(row[i] - top[i])
            row[i] = value
            total[i] += value


@_jit
def _scale_rows(scores, total, scale):  # pragma: no cover (compiled)
    """In place: scores[k, i] <- scores[k, i] / total[i] (one division per row)."""
    n_components, n = scores.shape
    for i in range(n):
        scale[i] = 1 / total[i]
    for k in range(n_components):
        row = scores[k]
        for i in range(n):
            row[i] *= scale[i]


def normalise_log_scores(scores):
    """:func:`diaggmm_dist.kernels.normalise_log_scores` for C-contiguous float32 or float64 scores."""
    _check("normalise_log_scores", scores)
    models = scores.reshape((-1,) + scores.shape[-2:])
    n = scores.shape[-1]
    log_norm = np.empty((models.shape[0], n), scores.dtype)
    total, scale = np.empty(n, scores.dtype), np.empty(n, scores.dtype)
    for model, out in zip(models, log_norm):
        top = model.max(axis=0)  # numpy's max: a NaN anywhere in a row makes its maximum NaN
        _exp_rows(model, top, total)
        _scale_rows(model, total, scale)
        np.log(total, out=out)
        out += top
    return log_norm.reshape(scores.shape[:-2] + (n,))


def exp(values, dtype):
    """exp of ``values`` in ``dtype`` by the compiled loop (what the tests check against exact values)."""
    values = np.array(values, dtype=dtype, ndmin=1)
    out = values.reshape(1, -1).copy()
    _exp_rows(out, np.zeros(out.shape[1], out.dtype), np.empty(out.shape[1], out.dtype))
    return out.reshape(values.shape)
