"""The backward pass's hot steps, for training: the matrix products on the packed GEMM, and the
heaviest element-wise backwards fused, each beside the naive loop it must equal.

Layouts (float32, C-contiguous unless said):

    matmul                a [M, K] (any strides: copied contiguous) @ b [K, N] (any strides:
                          packed, `gemm.pack_weight`) -> [M, N]
    layer_norm_backward   d_out, x [rows, d]; weight [d] -> d_x [rows, d], d_weight [d], d_bias [d]
    gelu_backward         d_out, x [n] -> d_x [n]   (exact GELU: Phi(x) + x phi(x))
    gelu_tanh_backward    d_out, x [n] -> d_x [n]   (the tanh form, `scale` its constant)
    softmax_backward      d_p, p [rows, n]; scale -> d_scores [rows, n] = scale * p * (d_p - sum(d_p * p))

The NumPy twins are the functions of the same names in `transformer/backward.py`; the naive
loops here (`*_naive`) are the same math one element at a time, for the tests.

Why fused: NumPy's LayerNorm backward makes about twelve passes over [rows, d] (the mean, the
centring, the variance, the normalised rows, d_n, its two means, d_x), each a fresh
temporary; the kernel reads a row of x and of d_out into L1 once and writes one row of d_x.
The exact GELU's backward in NumPy is a float64 erfc and an exp over the whole intermediate
activation; here it is one float32 pass (`activations.erf_f32`, `exp_f32`: vectorized
polynomials, <= 2 ulp). Rows (elements) are split over the threads (`_jit.run_chunks`).

The two products of a linear layer's backward are ordinary GEMMs once one operand is laid out:
d_x = d_y @ W^T packs W^T (the weight changes every optimizer step, so packing it per step is
the price), d_W = x^T @ d_y transposes the narrower of x and d_y (`transpose`, block by
block) and packs the other.
"""

import math
import threading

import numpy as np

from ._jit import even_bounds, jit, parallel_chunks, run_chunks
from .activations import activation_code, bias_activation, erf_f32, exp_f32, tanh_f32
from .gemm import PackedWeight, gemm, pack_weight
from .microkernel import NR

_F0 = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_THREE = np.float32(3.0)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
_INV_SQRT_2PI = np.float32(1.0 / math.sqrt(2.0 * math.pi))
_CUBIC = np.float32(0.044715)

# Below about this many elements per thread a second thread costs more than it saves.
_ELEMENTS_PER_CHUNK = 64 * 1024


def _check(name, **arrays):
    """Every array float32 and C-contiguous, and all of one shape; else TypeError / ValueError
    naming the function and the argument."""
    shape = None
    for argument, array in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise TypeError(f"{name}: {argument} must be a float32 array, got {found}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{name}: {argument} must be C-contiguous")
        if shape is not None and array.shape != shape:
            raise ValueError(f"{name}: {argument} has shape {array.shape}, expected {shape} as the first argument")
        shape = array.shape


# ---------------------------------------------------------------------------------------
# Matrix products
# ---------------------------------------------------------------------------------------
class WeightPacks:
    """Each weight packed once (`pack_weight`), and its transpose once, for as long as this
    object lives. The packs are not refreshed when a weight changes in place: make a new
    WeightPacks after every optimizer step."""

    def __init__(self):
        self._packs = {}  # (id(weight), transposed) -> (weight, PackedWeight)

    def packed(self, weight, transposed=False):
        """pack_weight(weight) or pack_weight(weight.T), made on the first call for this array."""
        key = (id(weight), transposed)
        found = self._packs.get(key)
        if found is None or found[0] is not weight:  # the weight itself is kept, so its id stays its own
            found = (weight, pack_panels(weight.T if transposed else weight))
            self._packs[key] = found
        return found[1]


_TRANSPOSE_BLOCK = 32  # a 32 x 32 block of floats (4 KiB) read and written while in L1


@jit
def _transpose_range(x, out, first, stop):
    """out[c, r] = x[r, c] for the columns of x in blocks first..stop-1 of _TRANSPOSE_BLOCK."""
    rows, cols = x.shape
    for block in range(first, stop):
        c0 = block * _TRANSPOSE_BLOCK
        c1 = min(cols, c0 + _TRANSPOSE_BLOCK)
        for r0 in range(0, rows, _TRANSPOSE_BLOCK):
            r1 = min(rows, r0 + _TRANSPOSE_BLOCK)
            for c in range(c0, c1):
                out_row = out[c]
                for r in range(r0, r1):
                    out_row[r] = x[r, c]


def transpose(x, reuse=None):
    """x.T as a new C-contiguous array: float32 [rows, cols] -> [cols, rows], block by block
    (NumPy's copy of a transposed view walks one of the two arrays a float per cache line).
    reuse: a role name for a `_reusable` output (valid until the next call for that role)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    shape = (x.shape[1], x.shape[0])
    out = np.empty(shape, dtype=np.float32) if reuse is None else _reusable(reuse, shape)
    blocks = -(-x.shape[1] // _TRANSPOSE_BLOCK)
    run_chunks(_transpose_range, even_bounds(blocks, parallel_chunks(x.size, _ELEMENTS_PER_CHUNK * 4)), x, out)
    return out


_PACK_ROWS = 64  # rows of x per block: 64 rows of a few KiB stay in L2 while every panel takes its slice


@jit
def _pack_range(x, depth, n, panels, first, stop):
    """Blocks first..stop-1 of _PACK_ROWS rows of x (flat float32 [depth * n]) into panels
    (flat [panels * depth * 16]): panel p, row k, column j <- x[k * n + 16 p + j], zeros past
    column n. Row block by row block, so that x is read once from memory and each panel gets
    a contiguous run of rows (one page per panel, not one per row); flat indices and a fixed
    16-float copy for whole panels, so the copies are plain vector loads and stores."""
    n_panels = (n + NR - 1) // NR
    for block in range(first, stop):
        k0 = block * _PACK_ROWS
        k1 = min(depth, k0 + _PACK_ROWS)
        for p in range(n_panels):
            c0 = p * NR
            target = p * depth * NR
            if c0 + NR <= n:
                for k in range(k0, k1):
                    source, out = k * n + c0, target + k * NR
                    for j in range(NR):
                        panels[out + j] = x[source + j]
            else:
                width = n - c0
                for k in range(k0, k1):
                    source, out = k * n + c0, target + k * NR
                    for j in range(width):
                        panels[out + j] = x[source + j]
                    for j in range(width, NR):
                        panels[out + j] = _F0


_reused = threading.local()  # per thread: (role, shape) -> a float32 buffer kept between calls


def _reusable(role, shape):
    """A float32 array of `shape` for `role`, the same one on every call from this thread: for
    temporaries of tens of MB that each training step needs again, since writing a fresh
    array first costs a page fault per 4 KiB (the kernel zeroes each page), about as long as
    the copy that fills it. Its contents are overwritten by the next call for the same role."""
    buffers = getattr(_reused, "buffers", None)
    if buffers is None:
        buffers = _reused.buffers = {}
    found = buffers.get((role, shape))
    if found is None:
        found = buffers[(role, shape)] = np.empty(shape, dtype=np.float32)
    return found


def pack_panels(x, reuse=None):
    """`gemm.pack_weight(x)` for float32 [K, N] in one pass over x, the row blocks split over
    the threads: for operands packed once per use (activations, the gradients of the
    outputs), where NumPy's padded copy and transposed copy cost as much as the product.
    reuse: a role name for `_reusable` panels (valid until the next call for that role)."""
    if x.ndim != 2 or x.dtype != np.float32:
        raise TypeError(f"pack_panels: x must be a float32 [K, N] array, got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)  # a transposed weight is copied first (weights are small)
    depth, n = x.shape
    shape = (-(-n // NR), depth, NR)  # [panels, K, 16]
    panels = np.empty(shape, dtype=np.float32) if reuse is None else _reusable(reuse, shape)
    blocks = -(-depth // _PACK_ROWS)
    run_chunks(_pack_range, even_bounds(blocks, parallel_chunks(x.size, _ELEMENTS_PER_CHUNK * 4)), x.reshape(-1),
               depth, n, panels.reshape(-1))
    return PackedWeight(panels, depth, n)


def weight_gradient(x, d_out):
    """x^T @ d_out for the weight's gradient of a linear layer: x [tokens, in], d_out [tokens,
    out] (C-contiguous) -> float32 [in, out]. The GEMM reads its left operand along the
    depth (tokens here), so one of the two is transposed: the narrower one, the other packed
    as the right operand; (d_out^T @ x)^T when d_out is the narrower."""
    if x.shape[1] <= d_out.shape[1]:
        return gemm(transpose(x, "left"), pack_panels(d_out, "right"))  # [in, tokens] @ [tokens, out]
    return transpose(gemm(transpose(d_out, "left"), pack_panels(x, "right")))  # ([out, tokens] @ [tokens, in])^T


def matmul(a, b, bias=None):
    """a [M, K] @ b [K, N] (+ bias [N]) on the packed GEMM -> float32 [M, N]. Either operand
    may be a transposed view: a is copied contiguous, b packed (`pack_weight` reads any strides)."""
    return gemm(np.ascontiguousarray(a, dtype=np.float32), pack_weight(b), bias)


def linear(x, weight, bias, packs=None):
    """The forward's `x @ weight + bias` on the packed GEMM. x [..., in], weight [in, out],
    bias [out] or None -> [..., out]; packs: a WeightPacks (None: the weight packed now)."""
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)  # [..., in] -> [tokens, in]
    packed = pack_weight(weight) if packs is None else packs.packed(weight)
    return gemm(flat, packed, bias).reshape(*x.shape[:-1], weight.shape[1])  # -> [..., out]


def linear_backward(d_out, x, weight, bias, packs=None):
    """The twin of `transformer.backward.linear_backward`: d_out [..., out], x [..., in],
    weight [in, out], bias [out] or None -> (d_x [..., in], {"weight": [in, out], "bias": [out] or None})."""
    flat_x = x.reshape(-1, x.shape[-1])  # [..., in] -> [tokens, in]
    flat_d = np.ascontiguousarray(d_out.reshape(-1, d_out.shape[-1]), dtype=np.float32)  # [..., out] -> [tokens, out]
    packed_transpose = pack_weight(weight.T) if packs is None else packs.packed(weight, transposed=True)
    d_x = gemm(flat_d, packed_transpose).reshape(x.shape)  # [tokens, out] @ [out, in] -> [..., in]
    d_weight = weight_gradient(np.ascontiguousarray(flat_x, dtype=np.float32), flat_d)  # [in, tokens] @ [tokens, out]
    d_bias = None if bias is None else flat_d.sum(axis=0)  # [tokens, out] -> [out]
    return d_x, {"weight": d_weight, "bias": d_bias}


def activation(name):
    """The forward activation `name` on the vectorized float32 kernels
    (`activations.bias_activation`), or None when they have no such activation."""
    try:
        activation_code(name)
    except ValueError:
        return None

    def apply(x):  # float32 [...] -> [...]
        rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])  # -> [tokens, d]
        return bias_activation(rows, np.zeros(rows.shape[1], np.float32), name).reshape(x.shape)

    return apply


# ---------------------------------------------------------------------------------------
# LayerNorm backward
# ---------------------------------------------------------------------------------------
@jit(fastmath={"reassoc", "nsz", "contract"})
def _layer_norm_backward_range(d_out, x, weight, eps, d_x, partial_weight, partial_bias, first, stop):
    """Rows first..stop-1; this chunk's sums of d_out * n and of d_out go to its rows of
    partial_weight / partial_bias [d] (one row per chunk, so threads never share one)."""
    d = x.shape[1]
    for i in range(first, stop):
        row, d_row = x[i], d_out[i]
        total = _F0
        for j in range(d):
            total += row[j]
        mean = total / np.float32(d)
        squares = _F0
        for j in range(d):
            centered = row[j] - mean
            squares += centered * centered
        inverse_std = _ONE / np.sqrt(squares / np.float32(d) + eps)
        sum_dn = _F0
        sum_dn_n = _F0
        for j in range(d):
            normalized = (row[j] - mean) * inverse_std
            d_normalized = d_row[j] * weight[j]
            sum_dn += d_normalized
            sum_dn_n += d_normalized * normalized
            partial_weight[j] += d_row[j] * normalized
            partial_bias[j] += d_row[j]
        mean_dn = sum_dn / np.float32(d)
        mean_dn_n = sum_dn_n / np.float32(d)
        out = d_x[i]
        for j in range(d):
            normalized = (row[j] - mean) * inverse_std
            out[j] = inverse_std * (d_row[j] * weight[j] - mean_dn - normalized * mean_dn_n)


@jit
def _layer_norm_backward_chunks(d_out, x, weight, eps, d_x, partial_weight, partial_bias, bounds, first, stop):
    """Chunks first..stop-1 of the rows (`bounds` their row boundaries), chunk c into row c
    of the partial sums."""
    for chunk in range(first, stop):
        _layer_norm_backward_range(d_out, x, weight, eps, d_x, partial_weight[chunk], partial_bias[chunk],
                                   bounds[chunk], bounds[chunk + 1])


def layer_norm_backward(d_out, x, weight, bias, eps):
    """The twin of `transformer.backward.layer_norm_backward` for float32 arrays: d_out and x
    [..., d], weight [d], bias [d] or None -> (d_x [..., d], {"weight": [d], "bias": [d] or None})."""
    d = x.shape[-1]
    flat_x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, d)  # [..., d] -> [rows, d]
    flat_d = np.ascontiguousarray(d_out, dtype=np.float32).reshape(-1, d)
    _check("layer_norm_backward", d_out=flat_d, x=flat_x)
    rows = flat_x.shape[0]
    chunks = parallel_chunks(rows * d, _ELEMENTS_PER_CHUNK)
    bounds = np.array(even_bounds(rows, chunks), dtype=np.int64)
    partial_weight = np.zeros((chunks, d), dtype=np.float32)  # [chunks, d]
    partial_bias = np.zeros((chunks, d), dtype=np.float32)  # [chunks, d]
    d_x = np.empty_like(flat_x)
    run_chunks(_layer_norm_backward_chunks, list(range(chunks + 1)), flat_d, flat_x,
               np.ascontiguousarray(weight, dtype=np.float32), np.float32(eps), d_x, partial_weight, partial_bias,
               bounds)
    d_bias = None if bias is None else partial_bias.sum(axis=0)  # [chunks, d] -> [d]
    return d_x.reshape(x.shape), {"weight": partial_weight.sum(axis=0), "bias": d_bias}


def layer_norm_backward_naive(d_out, x, weight, eps):
    """The same math one element at a time, in float64: d_out, x [rows, d], weight [d] ->
    (d_x [rows, d], d_weight [d], d_bias [d])."""
    rows, d = x.shape
    d_x = np.zeros((rows, d))
    d_weight, d_bias = np.zeros(d), np.zeros(d)
    for i in range(rows):
        mean = sum(float(v) for v in x[i]) / d
        variance = sum((float(v) - mean) ** 2 for v in x[i]) / d
        inverse_std = 1.0 / math.sqrt(variance + eps)
        normalized = [(float(v) - mean) * inverse_std for v in x[i]]
        d_normalized = [float(d_out[i, j]) * float(weight[j]) for j in range(d)]
        mean_dn = sum(d_normalized) / d
        mean_dn_n = sum(a * b for a, b in zip(d_normalized, normalized)) / d
        for j in range(d):
            d_x[i, j] = inverse_std * (d_normalized[j] - mean_dn - normalized[j] * mean_dn_n)
            d_weight[j] += float(d_out[i, j]) * normalized[j]
            d_bias[j] += float(d_out[i, j])
    return d_x, d_weight, d_bias


# ---------------------------------------------------------------------------------------
# Activations' backward: d_x = d_out * activation'(x), element by element
# ---------------------------------------------------------------------------------------
@jit(inline="always")
def _gelu_derivative(x):
    """Phi(x) + x phi(x): the normal CDF plus x times the normal density."""
    cdf = _HALF * (_ONE + erf_f32(x * _INV_SQRT2))
    return cdf + x * _INV_SQRT_2PI * exp_f32(-_HALF * x * x)


@jit(inline="always")
def _gelu_tanh_derivative(x, scale):
    """d/dx of 0.5 x (1 + tanh(scale (x + 0.044715 x^3)))."""
    tanh = tanh_f32(scale * (x + _CUBIC * x * x * x))
    d_inner = scale * (_ONE + _THREE * _CUBIC * x * x)
    return _HALF * (_ONE + tanh) + _HALF * x * (_ONE - tanh * tanh) * d_inner


@jit(fastmath={"contract"})
def _gelu_backward_range(d_out, x, d_x, first, stop):
    for i in range(first, stop):
        d_x[i] = d_out[i] * _gelu_derivative(x[i])


@jit(fastmath={"contract"})
def _gelu_tanh_backward_range(d_out, x, scale, d_x, first, stop):
    for i in range(first, stop):
        d_x[i] = d_out[i] * _gelu_tanh_derivative(x[i], scale)


def _elementwise(name, range_kernel, d_out, x, *constants):
    """Run an element-wise backward over flat views, split over the threads -> d_x (x's shape)."""
    flat_x = np.ascontiguousarray(x).reshape(-1)  # [...] -> [n]
    flat_d = np.ascontiguousarray(d_out).reshape(-1)
    _check(name, d_out=flat_d, x=flat_x)
    d_x = np.empty_like(flat_x)
    bounds = even_bounds(flat_x.shape[0], parallel_chunks(flat_x.shape[0], _ELEMENTS_PER_CHUNK))
    run_chunks(range_kernel, bounds, flat_d, flat_x, *constants, d_x)
    return d_x.reshape(x.shape)


def gelu_backward(d_out, x):
    """The twin of `transformer.backward.gelu_backward` (exact GELU): float32 [...] -> [...]."""
    return _elementwise("gelu_backward", _gelu_backward_range, d_out, x)


def gelu_tanh_backward(d_out, x):
    """The twin of `transformer.backward.gelu_tanh_backward`: float32 [...] -> [...]."""
    return _elementwise("gelu_tanh_backward", _gelu_tanh_backward_range, d_out, x,
                        np.float32(math.sqrt(2.0 / math.pi)))


def gelu_fast_backward(d_out, x):
    """The twin of `transformer.backward.gelu_fast_backward` (the tanh form, rounded constant)."""
    return _elementwise("gelu_fast_backward", _gelu_tanh_backward_range, d_out, x, np.float32(0.7978845608))


def gelu_backward_naive(d_out, x):
    """Phi(x) + x phi(x) times d_out, one element at a time in float64 (math.erf)."""
    flat_x, flat_d = x.reshape(-1), d_out.reshape(-1)
    d_x = np.zeros(flat_x.shape)
    for i in range(flat_x.shape[0]):
        v = float(flat_x[i])
        cdf = 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))
        d_x[i] = float(flat_d[i]) * (cdf + v * math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi))
    return d_x.reshape(x.shape)


# config.hidden_act -> the fused backward (the others have only their NumPy twin)
ACTIVATION_BACKWARDS = {
    "gelu": gelu_backward,
    "gelu_python": gelu_backward,
    "gelu_new": gelu_tanh_backward,
    "gelu_pytorch_tanh": gelu_tanh_backward,
    "gelu_python_tanh": gelu_tanh_backward,
    "gelu_fast": gelu_fast_backward,
}


# ---------------------------------------------------------------------------------------
# Softmax backward
# ---------------------------------------------------------------------------------------
@jit(fastmath={"reassoc", "nsz", "contract"})
def _softmax_backward_range(d_probabilities, probabilities, scale, d_scores, first, stop):
    n = probabilities.shape[1]
    for i in range(first, stop):
        p, d_p, out = probabilities[i], d_probabilities[i], d_scores[i]
        weighted = _F0
        for j in range(n):
            weighted += d_p[j] * p[j]
        for j in range(n):
            out[j] = scale * p[j] * (d_p[j] - weighted)


def softmax_backward(d_probabilities, probabilities, scale=1.0):
    """The twin of `transformer.backward.softmax_backward`, times `scale` (attention's
    1 / sqrt(head_dim), folded in): float32 [..., n] -> [..., n]."""
    n = probabilities.shape[-1]
    flat_p = np.ascontiguousarray(probabilities).reshape(-1, n)  # [..., n] -> [rows, n]
    flat_d = np.ascontiguousarray(d_probabilities).reshape(-1, n)
    _check("softmax_backward", d_probabilities=flat_d, probabilities=flat_p)
    d_scores = np.empty_like(flat_p)
    bounds = even_bounds(flat_p.shape[0], parallel_chunks(flat_p.size, _ELEMENTS_PER_CHUNK))
    run_chunks(_softmax_backward_range, bounds, flat_d, flat_p, np.float32(scale), d_scores)
    return d_scores.reshape(probabilities.shape)


def softmax_backward_naive(d_probabilities, probabilities, scale=1.0):
    """scale * p_i * (d_p_i - sum_j d_p_j p_j), row by row in float64."""
    flat_p = probabilities.reshape(-1, probabilities.shape[-1])
    flat_d = d_probabilities.reshape(flat_p.shape)
    out = np.zeros(flat_p.shape)
    for i in range(flat_p.shape[0]):
        weighted = sum(float(a) * float(b) for a, b in zip(flat_d[i], flat_p[i]))
        for j in range(flat_p.shape[1]):
            out[i, j] = scale * float(flat_p[i, j]) * (float(flat_d[i, j]) - weighted)
    return out.reshape(probabilities.shape)

