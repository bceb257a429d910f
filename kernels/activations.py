"""Activations in float32 that vectorize: exp, erf, tanh, sigmoid, the GELUs, ReLU, SiLU.

Why not `math.erf` / `math.exp`? Numba compiles them to calls of the scalar C functions
(`erff`, `expf`), one element at a time: an erf-GELU built on `math.erf` gained only 1.3x over
NumPy. The functions here are written with nothing but multiply, add, divide, compare, floor
and a bit cast, so LLVM turns a loop over them into AVX instructions, 8 floats at a time
(11-86x NumPy measured for bias + GELU). Each is accurate to about one float32 ulp:

    exp_f32      Cody-Waite range reduction + degree-6 polynomial (Cephes' expf), <= 2 ulp
    erf_f32      |x| <= 0.92: x + x * P(x^2); beyond: 1 - exp(Q(|x|)), Q fitted to log(erfc);
                 <= 2 ulp against math.erf
    tanh_f32     |x| < 0.625: x + x^3 * P(x^2); beyond: 1 - 2 / (exp(2|x|) + 1); <= 2 ulp

The device functions (`gelu_erf`, `gelu_tanh`, ...) are inlined into any kernel that calls
them: the GEMM epilogue in `gemm.py` applies the feed-forward activation to a tile through
`apply_activation(values, start, stop, code)`. The standalone kernel here is
`bias_activation(x, bias, code, out)`, beside its naive loop `bias_activation_naive`.

Activations are picked by an integer code (a jitted loop cannot take a Python function):

    >>> code = ACTIVATION_CODES["gelu"]
    >>> bias_activation(x, bias, code)          # x float32 [rows, cols], bias float32 [cols]

The NumPy twins are `transformer.model.ACTIVATIONS` (the names `transformers` uses in
config.json), and the tests hold each of these to them.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import jit, prange

# ---------------------------------------------------------------------------------------
# Which activation: config.json's `hidden_act` -> the code the kernels branch on.

RELU, GELU_ERF, GELU_TANH, GELU_FAST, QUICK_GELU, SILU, TANH, IDENTITY = range(8)

ACTIVATION_CODES = {
    "gelu": GELU_ERF,  # 0.5 x (1 + erf(x / sqrt 2)), torch's exact GELU
    "gelu_python": GELU_ERF,
    "gelu_new": GELU_TANH,  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_pytorch_tanh": GELU_TANH,
    "gelu_python_tanh": GELU_TANH,
    "gelu_fast": GELU_FAST,  # 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2)))
    "quick_gelu": QUICK_GELU,  # x sigmoid(1.702 x)
    "relu": RELU,
    "silu": SILU,  # x sigmoid(x)
    "swish": SILU,
    "tanh": TANH,
    "linear": IDENTITY,
    None: IDENTITY,
}


def activation_code(name):
    """The kernel code for config.json's `hidden_act` name, with a clear error otherwise."""
    try:
        return ACTIVATION_CODES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(str(k) for k in ACTIVATION_CODES if k is not None))
        raise ValueError(f"activation {name!r} has no kernel; expected one of: {known}") from None


# ---------------------------------------------------------------------------------------
# float32 constants. A bare Python float in a jitted function is a float64 and would turn
# the arithmetic around it into float64: every constant below is an np.float32.

_F0 = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_INF = np.float32(np.inf)

# exp: x = n ln2 + r with ln2 split in two (Cody-Waite) so n*LN2_HIGH is exact.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HIGH = np.float32(0.693359375)
_LN2_LOW = np.float32(-2.12194440e-4)
_EXP_MAX = np.float32(88.72283)  # exp overflows float32 above this
_EXP_MIN = np.float32(-103.97208)  # exp underflows to 0 (past the subnormals) below this
_EXP_P = [np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)]

# erf: fitted by least squares on Chebyshev nodes against math.erf / math.erfc in float64.
_ERF_SPLIT = np.float32(0.921875)
_ERF_SMALL = [np.float32(c) for c in (0.12837916612625122, -0.37612634897232056, 0.11283700168132782, -0.026859646663069725, 0.005201591644436121, -0.0008148506167344749, 8.392696327064186e-05)]
_ERF_LARGE = [np.float32(c) for c in (9.782842971617356e-05, -1.1290501356124878, -0.6345714926719666, -0.10643666982650757, 0.023373831063508987, -0.0030936722178012133, 1.3945774526291643e-06, 8.813902968540788e-05, -1.5676781913498417e-05, 9.746262321641552e-07)]
_ERF_CLAMP = np.float32(4.0)  # erf(4) = 1 - 1.5e-8 rounds to 1.0 in float32

# tanh near 0: x + x^3 P(x^2), fitted like erf against np.tanh in float64.
_TANH_SPLIT = np.float32(0.625)
_TANH_P = [np.float32(c) for c in (-0.333333283662796, 0.13332782685756683, -0.053852491080760956, 0.021003615111112595, -0.006104918196797371)]

_SQRT_HALF = np.float32(0.7071067811865476)  # 1 / sqrt(2)
_SQRT_2_OVER_PI = np.float32(0.7978845608028654)
_GELU_CUBIC = np.float32(0.044715)
_QUICK_GELU_SCALE = np.float32(1.702)

# Unpacked to module-level names: a jitted function reads globals as compile-time constants.
_EP0, _EP1, _EP2, _EP3, _EP4, _EP5 = _EXP_P
_ES0, _ES1, _ES2, _ES3, _ES4, _ES5, _ES6 = _ERF_SMALL
_EL0, _EL1, _EL2, _EL3, _EL4, _EL5, _EL6, _EL7, _EL8, _EL9 = _ERF_LARGE
_TP0, _TP1, _TP2, _TP3, _TP4 = _TANH_P


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (a register move; vectorizes)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def max_f32(typingctx, a, b):
    """The larger of two float32 (LLVM's maxnum: a NaN loses). Unlike Python's max, a
    loop reducing with it vectorizes."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, signature, args):
        float_type = ir.FloatType()
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(float_type, [float_type, float_type]), "llvm.maxnum.f32"
        )
        return builder.call(function, args)

    return types.float32(types.float32, types.float32), codegen


@jit(inline="always")
def _scale_by_pow2(p, n):
    """p * 2**n for an integral float32 n in [-150, 128], 2**n built from exponent bits.

    Two factors 2**(n//2) and 2**(n - n//2) keep each exponent in float32's normal range,
    so results near overflow and in the subnormal range come out right.
    """
    half = np.floor(n * _HALF)
    first = _float32_from_bits(np.int32((np.int32(half) + np.int32(127)) << np.int32(23)))
    second = _float32_from_bits(np.int32((np.int32(n - half) + np.int32(127)) << np.int32(23)))
    return (p * first) * second


@jit(inline="always")
def exp_f32(x):
    """e**x for a float32 x (about 1 ulp), 0 below -103.97, inf above 88.72, NaN stays NaN."""
    clamped = min(max(x, _EXP_MIN), _EXP_MAX)
    n = np.floor(clamped * _LOG2E + _HALF)  # nearest integer to x / ln2
    r = clamped - n * _LN2_HIGH  # exact: n * LN2_HIGH has few mantissa bits
    r = r - n * _LN2_LOW  # |r| <= ln2 / 2
    p = ((((_EP0 * r + _EP1) * r + _EP2) * r + _EP3) * r + _EP4) * r + _EP5
    p = p * r * r + r + _ONE  # e**r
    y = _scale_by_pow2(p, n)
    if x < _EXP_MIN:
        y = _F0
    if x > _EXP_MAX:
        y = _INF
    if x != x:  # NaN
        y = x
    return y


@jit(inline="always")
def erf_f32(x):
    """The error function of a float32 x, about 1 ulp (see the module docstring)."""
    t = min(abs(x), _ERF_CLAMP)
    s = x * x
    # |x| <= 0.92: erf(x) = x + x * P(x^2)
    p = (((((_ES6 * s + _ES5) * s + _ES4) * s + _ES3) * s + _ES2) * s + _ES1) * s + _ES0
    small = x + x * p
    # |x| > 0.92: erf(|x|) = 1 - erfc(|x|) = 1 - exp(Q(|x|))
    q = _EL9
    q = q * t + _EL8
    q = q * t + _EL7
    q = q * t + _EL6
    q = q * t + _EL5
    q = q * t + _EL4
    q = q * t + _EL3
    q = q * t + _EL2
    q = q * t + _EL1
    q = q * t + _EL0
    large = _ONE - exp_f32(q)
    if x < _F0:
        large = -large
    return small if abs(x) <= _ERF_SPLIT else large


@jit(inline="always")
def tanh_f32(x):
    """tanh of a float32 x, about 1 ulp."""
    s = x * x
    p = (((_TP4 * s + _TP3) * s + _TP2) * s + _TP1) * s + _TP0
    small = x + x * s * p
    large = _ONE - _TWO / (exp_f32(_TWO * abs(x)) + _ONE)  # exp overflow -> inf -> exactly 1
    if x < _F0:
        large = -large
    return small if abs(x) < _TANH_SPLIT else large


@jit(inline="always")
def sigmoid_f32(x):
    """1 / (1 + e**-x) for a float32 x."""
    return _ONE / (_ONE + exp_f32(-x))


@jit(inline="always")
def gelu_erf(x):
    """The exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (`hidden_act="gelu"`)."""
    return _HALF * x * (_ONE + erf_f32(x * _SQRT_HALF))


@jit(inline="always")
def gelu_tanh(x):
    """The tanh GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (`gelu_new`)."""
    return _HALF * x * (_ONE + tanh_f32(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)))


@jit(inline="always")
def gelu_fast(x):
    """0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2))) (`gelu_fast`)."""
    return _HALF * x * (_ONE + tanh_f32(x * _SQRT_2_OVER_PI * (_ONE + _GELU_CUBIC * x * x)))


@jit(inline="always")
def quick_gelu(x):
    """x sigmoid(1.702 x) (`quick_gelu`)."""
    return x * sigmoid_f32(_QUICK_GELU_SCALE * x)


@jit(inline="always")
def silu(x):
    """x sigmoid(x) (`silu`, `swish`)."""
    return x * sigmoid_f32(x)


@jit(inline="always")
def relu(x):
    """max(x, 0) (`relu`)."""
    return x if x > _F0 else _F0


@jit(inline="always")
def activate(x, code):
    """One value through the activation `code` (scalar; loops should use apply_activation)."""
    if code == GELU_ERF:
        return gelu_erf(x)
    if code == GELU_TANH:
        return gelu_tanh(x)
    if code == GELU_FAST:
        return gelu_fast(x)
    if code == QUICK_GELU:
        return quick_gelu(x)
    if code == SILU:
        return silu(x)
    if code == RELU:
        return relu(x)
    if code == TANH:
        return tanh_f32(x)
    return x


@jit(inline="always")
def apply_activation(values, start, stop, code):
    """values[start:stop] = activation(values[start:stop]) in place (a 1-D float32 view).

    The branch on `code` is outside the loops, so each loop is one straight vectorizable
    body. This is what the GEMM epilogue calls on each finished row of a tile.
    """
    if code == GELU_ERF:
        for j in range(start, stop):
            values[j] = gelu_erf(values[j])
    elif code == GELU_TANH:
        for j in range(start, stop):
            values[j] = gelu_tanh(values[j])
    elif code == GELU_FAST:
        for j in range(start, stop):
            values[j] = gelu_fast(values[j])
    elif code == QUICK_GELU:
        for j in range(start, stop):
            values[j] = quick_gelu(values[j])
    elif code == SILU:
        for j in range(start, stop):
            values[j] = silu(values[j])
    elif code == RELU:
        for j in range(start, stop):
            values[j] = relu(values[j])
    elif code == TANH:
        for j in range(start, stop):
            values[j] = tanh_f32(values[j])


# ---------------------------------------------------------------------------------------
# Standalone kernels: bias + activation over a [rows, cols] matrix.


@jit(parallel=True)
def _bias_activation_rows(x, bias, code, out):
    rows, cols = x.shape
    for i in prange(rows):
        row_out = out[i]
        row_in = x[i]
        for j in range(cols):
            row_out[j] = row_in[j] + bias[j]
        apply_activation(row_out, 0, cols, code)


def bias_activation(x, bias, code, out=None):
    """out = activation(x + bias), row-parallel, vectorized; `out` may be `x` (in place).

    x: float32 [rows, cols] (C-contiguous); bias: float32 [cols]; code: an activation code
    (`activation_code("gelu")`); out: float32 [rows, cols] or None for a new array.
    Returns out.
    """
    x = _as_rows_f32(x, "x")
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    if bias.shape != (x.shape[1],):
        raise ValueError(f"bias_activation: bias must have shape ({x.shape[1]},), got {bias.shape}")
    if out is None:
        out = np.empty_like(x)
    _bias_activation_rows(x, bias, np.int64(code), out)
    return out


@jit
def bias_activation_naive(x, bias, code):
    """The reference loop: one element at a time through the scalar `activate`."""
    rows, cols = x.shape
    out = np.empty((rows, cols), dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = activate(x[i, j] + bias[j], code)
    return out


def _as_rows_f32(x, name):
    """A C-contiguous float32 2-D view, with a clear error for anything else."""
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"{name} must be a float32 [rows, cols] array, got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x)
