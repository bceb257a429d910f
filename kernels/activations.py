"""Activations in float32 that vectorize: exp, erf, tanh, sigmoid, the GELUs, ReLU, SiLU.

Why not `math.erf` / `math.exp`? Numba compiles them to calls of the scalar C functions
(`erff`, `expf`), one element at a time, and a loop calling them does not vectorize. The
functions here are written with nothing but multiply, add, divide, compare, floor and a bit
cast, so LLVM turns a loop over them into vector instructions, 8 or 16 floats at a time.
Each is accurate to about one float32 ulp:

    exp_f32      Cody-Waite range reduction + degree-6 polynomial (Cephes' expf), <= 2 ulp;
                 0 below -86.6 (no subnormal results, which are slow on x86);
                 exp_nonpositive_f32 the same for x <= 0 only (softmax), without the overflow branch
    erf_f32      |x| <= 0.92: x + x * P(x^2); beyond: 1 - exp(Q(|x|)), Q fitted to log(erfc);
                 <= 2 ulp against math.erf (`gelu_erf` uses the two branches directly)
    tanh_f32     |x| < 0.625: x + x^3 * P(x^2); beyond: 1 - 2 / (exp(2|x|) + 1); <= 2 ulp

The device functions (`gelu_erf`, `gelu_tanh`, ...) are inlined (`inline="always"`) into the
kernels that call them. Callers must not compile with fastmath `reassoc`: it would let LLVM
regroup exp's range reduction and lose its accuracy (`contract`, i.e. FMA, is fine).

Each activation also has a row loop (`gelu_erf_row(values, count)`, ...) reached through its
C address, `activation_row_address(code)`, and `call_activation_row`: that is how a kernel
applies an activation chosen at run time without compiling all seven into itself. The
standalone kernel is `bias_activation(x, bias, "gelu")`, beside its naive loop
`bias_activation_naive`:

    >>> out = bias_activation(x, bias, "gelu")   # x float32 [rows, cols], bias float32 [cols]

The NumPy twins are the functions of `transformer/model.py` of the same names (`gelu`,
`gelu_tanh`, `gelu_fast`, `quick_gelu`, `relu`, `silu`, `tanh`); its `ACTIVATIONS` maps
config.json's names to them, and the tests hold each kernel to its twin.
"""

import functools

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import even_bounds, jit, parallel_chunks, run_chunks

# ---------------------------------------------------------------------------------------
# Which activation: its name -> the code the kernels branch on. The names are those of the
# NumPy twins in `transformer/model.py` (one function each); that module's ACTIVATIONS maps
# config.json's `hidden_act` names ("gelu_new", "swish", ...) to them, once.

RELU, GELU_ERF, GELU_TANH, GELU_FAST, QUICK_GELU, SILU, TANH, IDENTITY = range(8)

ACTIVATION_CODES = {
    "gelu": GELU_ERF,  # 0.5 x (1 + erf(x / sqrt 2)), torch's exact GELU
    "gelu_tanh": GELU_TANH,  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_fast": GELU_FAST,  # 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2)))
    "quick_gelu": QUICK_GELU,  # x sigmoid(1.702 x)
    "relu": RELU,
    "silu": SILU,  # x sigmoid(x)
    "tanh": TANH,
    None: IDENTITY,
}


_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}


def activation_name(code):
    """The name of the activation whose kernel code is `code` (None for IDENTITY)."""
    return _NAMES[int(code)]


def activation_code(name):
    """The kernel code for an activation's name (see ACTIVATION_CODES), with a clear error otherwise."""
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
# Below this exp returns 0 (results under 2.4e-38 flush to zero). Going on into float32's
# subnormal range would make the CPU take microcode assists (~100 cycles) for every masked
# attention score, which sits at -3.4e38.
_EXP_MIN = np.float32(-86.6)
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
    """p * 2**n for an integral float32 n in [-125, 128] (x in [-86.6, 88.72]), 2**n from bits.

    2**(n - 1) is always a normal float32 for these n (2**128 itself is not), so it is
    built from bits and the last factor 2 applied by a multiply.
    """
    half_scale = _float32_from_bits(np.int32((np.int32(n) + np.int32(126)) << np.int32(23)))  # 2**(n - 1)
    return (p * half_scale) * _TWO


@jit(inline="always")
def _exp_reduced(x):
    """(p, n) with e**x = p * 2**n: n the nearest integer to x / ln2 (a float32), p = e**r for
    r = x - n ln2, |r| <= ln2 / 2. No clamping: the callers bound x."""
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HIGH  # exact: n * LN2_HIGH has few mantissa bits
    r = r - n * _LN2_LOW
    # e**r = 1 + r + r^2 P(r), P of degree 5 in Estrin's scheme (short dependency chains,
    # so the out-of-order core overlaps neighbouring vectors)
    r2 = r * r
    p = (_EP5 + _EP4 * r) + (_EP3 + _EP2 * r) * r2 + (_EP1 + _EP0 * r) * (r2 * r2)
    return p * r2 + r + _ONE, n


@jit(inline="always")
def exp_f32(x):
    """e**x for a float32 x (about 1 ulp), 0 below -86.6, inf above 88.72, NaN stays NaN."""
    p, n = _exp_reduced(min(max(x, _EXP_MIN), _EXP_MAX))
    y = _scale_by_pow2(p, n)
    if x < _EXP_MIN:
        y = _F0
    if x > _EXP_MAX:
        y = _INF
    if x != x:  # NaN
        y = x
    return y


def exp_nonpositive_ir(builder, x):
    """LLVM code for e**x, x <= 0, on a float or a vector of floats: the operations of
    `exp_f32` in its order (`_exp_reduced`, then * 2**n from bits), without the overflow
    branch and without fused multiply-adds (one rounding each), so the same bits as
    exp_f32 for these x (tested). Written as LLVM instructions, not a jitted function, so
    that the softmax kernel (`softmax.softmax_rows_inplace`) can run it on explicit vectors
    of 16 floats; `exp_nonpositive_f32` is the same code on one float."""
    float_type = x.type
    lanes = getattr(float_type, "count", None)

    def constant(value):
        value = float(np.float32(value))
        return ir.Constant(float_type, [value] * lanes if lanes else value)

    int_type = ir.VectorType(ir.IntType(32), lanes) if lanes else ir.IntType(32)
    suffix = f"v{lanes}f32" if lanes else "f32"
    floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(float_type, [float_type]), f"llvm.floor.{suffix}")
    q = builder.select(builder.fcmp_ordered(">", x, constant(_EXP_MIN)), x, constant(_EXP_MIN))  # max(x, -86.6)
    # _exp_reduced(q): n = floor(q / ln2 + 1/2), r = q - n ln2 (Cody-Waite), e**r = 1 + r + r^2 P(r)
    n = builder.call(floor, [builder.fadd(builder.fmul(q, constant(_LOG2E)), constant(_HALF))])
    r = builder.fsub(q, builder.fmul(n, constant(_LN2_HIGH)))
    r = builder.fsub(r, builder.fmul(n, constant(_LN2_LOW)))
    r2 = builder.fmul(r, r)
    low = builder.fadd(constant(_EP5), builder.fmul(constant(_EP4), r))
    middle = builder.fadd(constant(_EP3), builder.fmul(constant(_EP2), r))
    high = builder.fadd(constant(_EP1), builder.fmul(constant(_EP0), r))
    p = builder.fadd(builder.fadd(low, builder.fmul(middle, r2)), builder.fmul(high, builder.fmul(r2, r2)))
    p = builder.fadd(builder.fadd(builder.fmul(p, r2), r), constant(_ONE))
    # * 2**n, n in [-125, 0], the float built from its bits
    exponent = builder.shl(builder.add(builder.fptosi(n, int_type), ir.Constant(int_type, [127] * lanes if lanes else 127)),
                           ir.Constant(int_type, [23] * lanes if lanes else 23))
    y = builder.fmul(p, builder.bitcast(exponent, float_type))
    y = builder.select(builder.fcmp_ordered("<", x, constant(_EXP_MIN)), constant(_F0), y)  # underflow: 0
    return builder.select(builder.fcmp_unordered("uno", x, x), x, y)  # NaN stays NaN


@intrinsic
def exp_nonpositive_f32(typingctx, x):
    """e**x for a float32 x <= 0 (about 1 ulp), 0 below -86.6, NaN stays NaN: `exp_f32`
    without the overflow branch, for softmax, whose inputs are x - max(row) <= 0 (4 fewer
    operations of about 20). Positive x: wrong results. The code is `exp_nonpositive_ir`."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return exp_nonpositive_ir(builder, args[0])

    return types.float32(types.float32), codegen


@jit(inline="always")
def _exp_of_negative(q):
    """e**q for -86.6 <= q <= 0 that the caller guarantees: `exp_f32` without its clamps
    and edge cases (7 fewer operations; for the polynomial exponents of erfc)."""
    p, n = _exp_reduced(q)
    return p * _float32_from_bits(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))  # * 2**n, n in [-125, 0]


@jit(inline="always")
def _erf_small(x):
    """erf(x) for |x| <= 0.92: x + x * P(x^2), P in Estrin's scheme (short dependency chains)."""
    s = x * x
    s2 = s * s
    p = (_ES0 + _ES1 * s) + (_ES2 + _ES3 * s) * s2 + ((_ES4 + _ES5 * s) + _ES6 * s2) * (s2 * s2)
    return x + x * p


@jit(inline="always")
def _erfc_large(a):
    """erfc(a) for 0.92 <= a, as exp(Q(a)) with Q fitted to log(erfc) on [0.92, 4];
    a is clamped to 4 (erfc(4) = 1.5e-8: 1 - erfc rounds to 1 in float32 from there on)."""
    t = min(a, _ERF_CLAMP)
    t2 = t * t
    t4 = t2 * t2
    q_low = (_EL0 + _EL1 * t) + (_EL2 + _EL3 * t) * t2
    q_high = (_EL4 + _EL5 * t) + (_EL6 + _EL7 * t) * t2
    q = q_low + q_high * t4 + (_EL8 + _EL9 * t) * (t4 * t4)  # log erfc(t), in [-17.7, -1.6]
    return _exp_of_negative(q)


@jit(inline="always")
def erf_f32(x):
    """The error function of a float32 x, about 1 ulp (see the module docstring)."""
    # Both branches are computed and one is picked: the loop stays branch-free and vectorizes.
    small = _erf_small(x)
    large = _ONE - _erfc_large(abs(x))
    if x < _F0:
        large = -large
    return small if abs(x) <= _ERF_SPLIT else large


@jit(inline="always")
def tanh_f32(x):
    """tanh of a float32 x, about 1 ulp."""
    s = x * x
    s2 = s * s
    p = (_TP0 + _TP1 * s) + (_TP2 + _TP3 * s) * s2 + _TP4 * (s2 * s2)
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
    """The exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (`hidden_act="gelu"`).

    Beyond erf's polynomial branch (|x / sqrt 2| > 0.92) it is written with e = erfc(|x / sqrt 2|):
    0.5 x (2 - e) for x > 0 and 0.5 x e for x < 0. That saves the steps of building erf
    from e and, for x < 0, keeps the value instead of cancelling 1 + erf (within 2 ulp
    and 2**-24 |x| of the exact GELU; see the tests).
    """
    half_x = _HALF * x
    u = x * _SQRT_HALF
    a = abs(u)
    small = half_x + half_x * _erf_small(u)
    e = _erfc_large(a)
    if a > _ERF_CLAMP:  # erfc beyond 4 (x < -5.66): under 1.5e-8, and 0.5 x e must not grow with |x|
        e = _F0
    large = half_x * (_TWO - e) if x > _F0 else half_x * e
    return small if a <= _ERF_SPLIT else large


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
    """max(x, 0) (`relu`). Through maxnum: the `x if x > 0 else 0` form compiles to a
    masked store (only the changed lanes), which is slow on AMD cores."""
    return max_f32(x, _F0)


# ---------------------------------------------------------------------------------------
# Row loops, one per activation, reached through their C address.
#
# Why addresses: a kernel that branches on the activation code compiles all seven loops
# into itself (seconds of LLVM time for every kernel that has an epilogue), and one
# specialised on a jitted function argument is not cached by Numba. So each activation has its own tiny loop, compiled (or loaded from the
# disk cache) the first time it is used, and kernels call it through its address.


# FMA (`contract`) shortens the polynomials' dependency chains and rounds less; no `reassoc`.
_ROW_FLAGS = {"contract"}


@jit(fastmath=_ROW_FLAGS)
def gelu_erf_row(values, count):
    for j in range(count):
        values[j] = gelu_erf(values[j])


@jit(fastmath=_ROW_FLAGS)
def gelu_tanh_row(values, count):
    for j in range(count):
        values[j] = gelu_tanh(values[j])


@jit(fastmath=_ROW_FLAGS)
def gelu_fast_row(values, count):
    for j in range(count):
        values[j] = gelu_fast(values[j])


@jit(fastmath=_ROW_FLAGS)
def quick_gelu_row(values, count):
    for j in range(count):
        values[j] = quick_gelu(values[j])


@jit(fastmath=_ROW_FLAGS)
def silu_row(values, count):
    for j in range(count):
        values[j] = silu(values[j])


@jit(fastmath=_ROW_FLAGS)
def relu_row(values, count):
    for j in range(count):
        values[j] = relu(values[j])


@jit(fastmath=_ROW_FLAGS)
def tanh_row(values, count):
    for j in range(count):
        values[j] = tanh_f32(values[j])


ROW_FUNCTIONS = {
    GELU_ERF: gelu_erf_row,
    GELU_TANH: gelu_tanh_row,
    GELU_FAST: gelu_fast_row,
    QUICK_GELU: quick_gelu_row,
    SILU: silu_row,
    RELU: relu_row,
    TANH: tanh_row,
}
# The C signature of a row loop: void f(float *values, intp count), values[:count] in place.
_ROW_SIGNATURE = (types.CPointer(types.float32), types.intp)


@functools.lru_cache(maxsize=None)
def activation_row_address(code):
    """The C address of the row loop for activation `code`; 0 for IDENTITY (do nothing).

    Compiles the loop, or loads it from the disk cache, on first use.
    """
    if code == IDENTITY:
        return 0
    row_function = ROW_FUNCTIONS[code]
    row_function.compile(_ROW_SIGNATURE)
    compiled = row_function.overloads[_ROW_SIGNATURE]
    return compiled.library.get_pointer_to_function(compiled.fndesc.llvm_cfunc_wrapper_name)


@intrinsic
def call_activation_row(typingctx, address, array, start, count):
    """Apply the row loop at `address` to `count` floats of `array` from flat index `start`."""
    signature = types.void(types.intp, array, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        address, array_value, start, count = args
        data = context.make_array(sig.args[1])(context, builder, array_value).data
        function_type = ir.FunctionType(ir.VoidType(), [data.type, count.type])
        function = builder.inttoptr(address, function_type.as_pointer())
        builder.call(function, [builder.gep(data, [start]), count])
        return context.get_dummy_value()

    return signature, codegen


# ---------------------------------------------------------------------------------------
# The standalone kernel: bias + activation over a [rows, cols] matrix.

# Handing rows to another thread costs tens of microseconds: small inputs stay on one thread.
_ELEMENTS_PER_CHUNK = 32 * 1024


@jit
def _bias_activation_range(x, bias, activation_row, out, first, stop):
    """Rows first..stop-1: out = activation(x + bias)."""
    cols = x.shape[1]
    for i in range(first, stop):
        _add_bias(x[i], bias, out[i])
        if activation_row != 0:
            call_activation_row(activation_row, out, i * cols, cols)


@jit
def _add_bias(row, bias, out_row):
    """out_row = row + bias. In two steps: a loop reading `row` and writing an `out_row` that
    may be the same array would fall back to scalar code (LLVM's run-time overlap check)."""
    if row.ctypes.data != out_row.ctypes.data:
        for j in range(row.shape[0]):
            out_row[j] = row[j]
    for j in range(row.shape[0]):
        out_row[j] += bias[j]


def bias_activation(x, bias, activation, out=None):
    """out = activation(x + bias), rows split over the threads, vectorized; `out` may be `x` (in place).

    x: float32 [rows, cols] C-contiguous; bias: float32 [cols]; activation: a name of
    ACTIVATION_CODES ("gelu", "gelu_tanh", "relu", ...); out: float32 [rows, cols] or None
    for a new array. Returns out.
    """
    code = activation_code(activation)
    x = _as_rows_f32(x, "x")
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    if bias.shape != (x.shape[1],):
        raise ValueError(f"bias_activation: bias must have shape ({x.shape[1]},), got {bias.shape}")
    if out is None:
        out = np.empty_like(x)
    elif out.shape != x.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"bias_activation: out must be a C-contiguous float32 array of shape {x.shape}")
    bounds = even_bounds(x.shape[0], parallel_chunks(x.size, _ELEMENTS_PER_CHUNK))
    run_chunks(_bias_activation_range, bounds, x, bias, activation_row_address(code), out)
    return out


@jit
def _bias_activation_naive_loops(x, bias, activation_row, out):
    rows, cols = x.shape
    for i in range(rows):
        for j in range(cols):
            out[i, j] = x[i, j] + bias[j]
            if activation_row != 0:  # the same scalar activation, one element at a time
                call_activation_row(activation_row, out, i * cols + j, 1)


def bias_activation_naive(x, bias, activation):
    """The reference loop for bias_activation: one element at a time. For tests."""
    x = _as_rows_f32(x, "x")
    out = np.empty_like(x)
    _bias_activation_naive_loops(x, np.ascontiguousarray(bias, dtype=np.float32),
                                 activation_row_address(activation_code(activation)), out)
    return out


def _as_rows_f32(x, name):
    """A C-contiguous float32 2-D array, with a clear error for anything else."""
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"{name} must be a float32 [rows, cols] array, got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x)
