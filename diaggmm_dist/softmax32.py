"""The float32 E-step normalisation (log-sum-exp over components), compiled with numba.

numpy's float32 ``exp`` costs about 2.3 ns per value on the 2-core reference machine (AVX2),
so for K=16 the N·K exponentials alone were a third of a float32 EM iteration, and the
log-sum-exp around them (subtract the row maximum, exponentiate, sum, scale) is five more
passes over the (K, n) scores. Here one compiled loop per component row does the
subtraction, the exponential and the running sum, and one more does the scaling; the
exponential is a polynomial that the compiler vectorises (~0.6 ns per value).

The exponential is Cephes' ``expf``: x = m ln 2 + r with |r| ≤ ½ ln 2 (ln 2 split in two
parts so that m ln 2 is exact), exp(r) by a degree-6 polynomial, and 2^m put into the float's
exponent bits. Its error is at most 2 units in the last place of float32 (tested against
float64 ``exp``). Values below −87 (under float32's smallest normal number once
exponentiated) give 0 where numpy would give a subnormal; as they are exponents relative
to the row's maximum, such a component's share of the row is below 1e-38. NaN stays NaN,
−∞ gives 0, as in numpy. float64 keeps numpy's ``exp`` (the scikit-learn equivalence tests
compare float64 to 1e-8).

numba compiles the loops on first use (about a second) and caches the machine code next to
this module (``cache=True``), so worker processes load it instead of compiling again.
:mod:`diaggmm_dist.kernels` imports this module on the first float32 normalisation, so
that importing the package does not import numba.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

_F32 = np.float32
#: exp(x) for x below this is 0 here (see the module docstring).
UNDERFLOW = -87.0


_LOG2E, _ROUND = _F32(1.4426950408889634), _F32(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer
_LN2_HI, _LN2_LO = _F32(0.693359375), _F32(-2.12194440e-4)
_P0, _P1, _P2 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
_P3, _P4, _P5 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)
_ONE, _UNDERFLOW32 = _F32(1.0), _F32(UNDERFLOW)

# Only "contract" (fused multiply-add): reassociation would undo the rounding trick and the
# two-part reduction by ln 2.
_jit = numba.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy", boundscheck=False)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (no conversion: a reinterpretation)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@_jit
def _exp_rows(scores, top, total):  # pragma: no cover (compiled)
    """In place: scores[k, i] <- exp(scores[k, i] - top[i]); total[i] <- Σ_k of those."""
    n_components, n = scores.shape
    for i in range(n):
        total[i] = 0
    for k in range(n_components):
        row = scores[k]
        for i in range(n):
            x = row[i] - top[i]
            m = (x * _LOG2E + _ROUND) - _ROUND
            r = (x - m * _LN2_HI) - m * _LN2_LO
            p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
            p = p * r * r + r + _ONE
            power = _float32_from_bits((np.int32(m) + np.int32(127)) << np.int32(23))  # 2^m
            value = _F32(0) if x < _UNDERFLOW32 else p * power  # x < ... is False for NaN: NaN stays
            row[i] = value
            total[i] += value


@_jit
def _normalise(scores, top, total, scale):  # pragma: no cover (compiled)
    """In place: scores[k, i] <- exp(scores[k, i] - top[i]) / Σ_k (same); ``total`` gets the Σ."""
    _exp_rows(scores, top, total)
    n_components, n = scores.shape
    for i in range(n):
        scale[i] = _ONE / total[i]
    for k in range(n_components):
        row = scores[k]
        for i in range(n):
            row[i] *= scale[i]


def normalise_log_scores(scores):
    """:func:`diaggmm_dist.kernels.normalise_log_scores` for float32 scores (..., K, n), C-contiguous."""
    if scores.dtype != np.float32 or not scores.flags.c_contiguous:
        raise TypeError("softmax32 takes C-contiguous float32 scores.")
    models = scores.reshape((-1,) + scores.shape[-2:])
    n = scores.shape[-1]
    log_norm = np.empty((models.shape[0], n), np.float32)
    total, scale = np.empty(n, np.float32), np.empty(n, np.float32)
    for model, out in zip(models, log_norm):
        top = model.max(axis=0)  # numpy's max: a NaN anywhere in a row makes its maximum NaN
        _normalise(model, top, total, scale)
        np.log(total, out=out)
        out += top
    return log_norm.reshape(scores.shape[:-2] + (n,))


def exp(values):
    """exp of float32 values by the compiled loop (what the tests check against float64 exp)."""
    values = np.array(values, dtype=np.float32, ndmin=1)
    out = values.reshape(1, -1).copy()
    _exp_rows(out, np.zeros(out.shape[1], np.float32), np.empty(out.shape[1], np.float32))
    return out.reshape(values.shape)
