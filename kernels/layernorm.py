"""LayerNorm, optionally fused with the residual add that precedes it in every BERT layer;
and RMSNorm (Llama, Qwen, Gemma), the LayerNorm without the mean and the bias.

    out[i, :] = (v - mean(v)) / sqrt(var(v) + eps) * weight + bias,   v = x[i, :] (+ residual[i, :])
    out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * (offset + weight)     rms_norm
    out[i, :] = residual[i, :] + rms_norm(x)[i, :]                            rms_norm_add

Layouts: x, residual, out float32 [rows, d] C-contiguous; weight float32 [d]; bias float32
[d], or None for a bias-free LayerNorm (passed to the kernels as an empty array).
`var` is the biased variance (divide by d) with eps inside the square root, as
torch.nn.LayerNorm and the NumPy twin `transformer.model.layer_norm` do.

Fusing saves passes over memory: NumPy's `layer_norm(a + b)` makes five or so passes over
[rows, d] (add, mean, subtract, square-mean, scale); the kernel reads each row once into L1
and writes it once. Rows are split over the threads
(`_jit.run_chunks`); inside a row the sums vectorize (reordered float32 sums).
"""

import math

import numpy as np

from ._jit import (PHASE_FINISHED, add_release, data_address, even_bounds, fetch_add, jit, parallel_chunks, run_chunks,
                   wait_until_at_least)

_F0 = np.float32(0.0)
_ONE = np.float32(1.0)
_NO_BIAS = np.zeros(0, dtype=np.float32)  # a bias-free LayerNorm's bias

# Below about this many elements per thread, handing rows to another thread (tens of
# microseconds) costs more than it saves: small inputs run on the calling thread alone.
_ELEMENTS_PER_CHUNK = 64 * 1024


@jit(fastmath={"reassoc", "nsz", "contract"})
def _sum_and_centered_squares(row):
    """(sum(row), sum((row - mean)^2)): two vectorized passes (reordered float32 sums)."""
    d = row.shape[0]
    total = _F0
    for j in range(d):
        total += row[j]
    mean = total / np.float32(d)
    squares = _F0
    for j in range(d):
        centered = row[j] - mean
        squares += centered * centered
    return total, squares


@jit(fastmath={"contract"})
def normalize_row_inplace(row, weight, bias, eps):
    """row = LayerNorm(row), written over the row; bias [d], or empty for a bias-free
    LayerNorm (ModernBERT)."""
    d = row.shape[0]
    total, squares = _sum_and_centered_squares(row)
    mean = total / np.float32(d)
    inverse_std = _ONE / np.sqrt(squares / np.float32(d) + eps)
    # No `reassoc` here: it would let LLVM turn the multiply by 1/std back into a divide.
    if bias.shape[0] > 0:
        for j in range(d):
            row[j] = (row[j] - mean) * inverse_std * weight[j] + bias[j]
    else:
        for j in range(d):
            row[j] = (row[j] - mean) * inverse_std * weight[j]


@jit(fastmath={"contract"})
def rms_normalize_row_inplace(row, weight, eps, offset):
    """row = RMSNorm(row) = row / sqrt(mean(row^2) + eps) * (offset + weight), written over the
    row (offset 0: Llama; 1: Gemma's (1 + w))."""
    d = row.shape[0]
    squares = sum_of_squares(row)
    inverse_rms = _ONE / np.sqrt(squares / np.float32(d) + eps)
    for j in range(d):
        row[j] = row[j] * inverse_rms * (offset + weight[j])


@jit(fastmath={"reassoc", "nsz", "contract"})
def sum_of_squares(row):
    """sum(row^2): one vectorized pass (a reordered float32 sum)."""
    squares = _F0
    for j in range(row.shape[0]):
        squares += row[j] * row[j]
    return squares


@jit
def copy_row(source, destination):
    """destination[:] = source (1-D views of one length)."""
    for j in range(source.shape[0]):
        destination[j] = source[j]


@jit
def _add(a, b, out):
    """out = a + b for 1-D float32 arrays."""
    for j in range(a.shape[0]):
        out[j] = a[j] + b[j]


@jit
def add_into(row, addend):
    """row += addend (1-D views of one length)."""
    for j in range(row.shape[0]):
        row[j] += addend[j]


# Every row is normalized where it will stay: copied (or summed) into its row of `out`
# first unless it is there already, then normalized in place. When a loop reads and writes
# arrays that might overlap, LLVM checks at run time and takes a scalar loop if they do --
# and for `out is x` (in place, as the forward pass calls it) they do, so the in-place
# LayerNorm would run scalar. So the kernels ask (`data_address`), and the loops
# that write a row read only that row and the weights, which never overlap it.


@jit
def _layer_norm_range(x, weight, bias, eps, out, first, stop):
    """Rows first..stop-1 of layer_norm (one thread's share); `out` may be `x`."""
    in_place = data_address(out) == data_address(x)
    for i in range(first, stop):
        if not in_place:
            copy_row(x[i], out[i])
        normalize_row_inplace(out[i], weight, bias, eps)


@jit
def _rms_norm_range(x, weight, eps, offset, out, first, stop):
    """Rows first..stop-1 of rms_norm (one thread's share); `out` may be `x`."""
    in_place = data_address(out) == data_address(x)
    for i in range(first, stop):
        if not in_place:
            copy_row(x[i], out[i])
        rms_normalize_row_inplace(out[i], weight, eps, offset)


@jit
def _rms_norm_add_range(x, weight, eps, offset, residual, out, first, stop):
    """Rows first..stop-1 of rms_norm_add (one thread's share); `out` may be `x`, not `residual`."""
    in_place = data_address(out) == data_address(x)
    for i in range(first, stop):
        if not in_place:
            copy_row(x[i], out[i])
        rms_normalize_row_inplace(out[i], weight, eps, offset)
        add_into(out[i], residual[i])


@jit
def _residual_layer_norm_range(x, residual, weight, bias, eps, out, first, stop):
    """Rows first..stop-1 of residual_layer_norm (one thread's share); `out` may be x or residual."""
    out_is_x = data_address(out) == data_address(x)
    out_is_residual = data_address(out) == data_address(residual)
    for i in range(first, stop):
        if out_is_x:
            add_into(out[i], residual[i])
        elif out_is_residual:
            add_into(out[i], x[i])  # residual + x: the same float as x + residual
        else:
            _add(x[i], residual[i], out[i])
        normalize_row_inplace(out[i], weight, bias, eps)


@jit
def layer_norm_phase(counters, base, bounds, x, weight, bias, eps, out):
    """LayerNorm as one phase of a program (kernels/program.py): runs of rows bounds[t] ..
    bounds[t + 1] - 1 claimed by any thread, then the wait for the others (`out` may be `x`)."""
    n_tasks = bounds.shape[0] - 1
    while True:
        task = fetch_add(counters, base, 1)
        if task >= n_tasks:
            break
        _layer_norm_range(x, weight, bias, eps, out, bounds[task], bounds[task + 1])
        add_release(counters, base + PHASE_FINISHED, 1)
    wait_until_at_least(counters, base + PHASE_FINISHED, n_tasks)


@jit
def rms_norm_phase(counters, base, bounds, x, weight, eps, offset, out):
    """RMSNorm as one phase of a program, as `layer_norm_phase` (`out` may be `x`)."""
    n_tasks = bounds.shape[0] - 1
    while True:
        task = fetch_add(counters, base, 1)
        if task >= n_tasks:
            break
        _rms_norm_range(x, weight, eps, offset, out, bounds[task], bounds[task + 1])
        add_release(counters, base + PHASE_FINISHED, 1)
    wait_until_at_least(counters, base + PHASE_FINISHED, n_tasks)


@jit
def rms_norm_add_phase(counters, base, bounds, x, weight, eps, offset, residual, out):
    """rms_norm_add as one phase of a program, as `layer_norm_phase` (`out` may be `x`)."""
    n_tasks = bounds.shape[0] - 1
    while True:
        task = fetch_add(counters, base, 1)
        if task >= n_tasks:
            break
        _rms_norm_add_range(x, weight, eps, offset, residual, out, bounds[task], bounds[task + 1])
        add_release(counters, base + PHASE_FINISHED, 1)
    wait_until_at_least(counters, base + PHASE_FINISHED, n_tasks)


def rms_norm_add(x, residual, weight, eps, offset=0.0, out=None):
    """residual + RMSNorm(x): a sublayer's output normed, then added to the residual stream
    (Gemma 3's post-attention and post-feed-forward norms). float32 [rows, d] twice -> [rows, d];
    `out` may be `x` (not `residual`)."""
    x, out = _check("rms_norm_add", x, weight, None, out)
    residual = np.asarray(residual)
    if residual.shape != x.shape or residual.dtype != np.float32 or not residual.flags.c_contiguous:
        raise ValueError(f"rms_norm_add: residual must be a C-contiguous float32 array of shape {x.shape}, "
                         f"got {residual.dtype} {residual.shape}")
    if np.may_share_memory(out, residual):
        raise ValueError("rms_norm_add: out must not overlap residual (x's row is normed where it will stay)")
    return rms_norm_add_checked(x, weight, np.float32(eps), np.float32(offset), residual, out,
                                layer_norm_bounds(*x.shape))


def rms_norm_add_checked(x, weight, eps, offset, residual, out, bounds):
    """`rms_norm_add` without the argument checks (as `layer_norm_checked`); eps, offset np.float32."""
    run_chunks(_rms_norm_add_range, bounds, x, weight, eps, offset, residual, out)
    return out


def rms_norm(x, weight, eps, offset=0.0, out=None):
    """RMSNorm over the last axis, the twin of `transformer.model.rms_norm`. float32 [rows, d]
    -> [rows, d]; `out` may be `x`."""
    x, out = _check("rms_norm", x, weight, None, out)
    return rms_norm_checked(x, weight, np.float32(eps), np.float32(offset), out, layer_norm_bounds(*x.shape))


def rms_norm_checked(x, weight, eps, offset, out, bounds):
    """`rms_norm` without the argument checks (as `layer_norm_checked`); eps, offset np.float32."""
    run_chunks(_rms_norm_range, bounds, x, weight, eps, offset, out)
    return out


def layer_norm(x, weight, bias, eps, out=None):
    """LayerNorm over the last axis. float32 [rows, d] -> [rows, d]; `out` may be `x`; bias
    None: none."""
    x, out = _check("layer_norm", x, weight, bias, out)
    return layer_norm_checked(x, weight, bias, np.float32(eps), out, layer_norm_bounds(*x.shape))


def layer_norm_bounds(rows, width):
    """How `layer_norm` splits rows x width over the threads: [chunks + 1] row boundaries."""
    return even_bounds(rows, parallel_chunks(rows * width, _ELEMENTS_PER_CHUNK))


def layer_norm_checked(x, weight, bias, eps, out, bounds):
    """`layer_norm` without the argument checks, for a caller that has made them once and
    calls it many times on the same shapes (the forward pass: twice a layer). x and out
    float32 [rows, d] C-contiguous (out may be x), weight and bias float32 [d], eps a
    np.float32, bounds from `layer_norm_bounds(rows, d)`."""
    run_chunks(_layer_norm_range, bounds, x, weight, _NO_BIAS if bias is None else bias, eps, out)
    return out


def residual_layer_norm(x, residual, weight, bias, eps, out=None):
    """LayerNorm(x + residual) in one pass. float32 [rows, d] twice -> [rows, d].

    `out` may be `x` or `residual`.
    """
    x, out = _check("residual_layer_norm", x, weight, bias, out)
    residual = np.asarray(residual)
    if residual.shape != x.shape or residual.dtype != np.float32 or not residual.flags.c_contiguous:
        raise ValueError(
            f"residual_layer_norm: residual must be a C-contiguous float32 array of shape {x.shape}, "
            f"got {residual.dtype} {residual.shape}"
        )
    run_chunks(_residual_layer_norm_range, layer_norm_bounds(*x.shape), x, residual, weight,
               _NO_BIAS if bias is None else bias, np.float32(eps), out)
    return out


def _check(name, x, weight, bias, out):
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.float32 or not x.flags.c_contiguous:
        raise ValueError(f"{name}: x must be a C-contiguous float32 [rows, d] array, got {x.dtype} {x.shape}")
    for label, vector in (("weight", weight), ("bias", bias)):
        if vector is None and label == "bias":
            continue
        if vector.shape != (x.shape[1],) or vector.dtype != np.float32:
            raise ValueError(f"{name}: {label} must be float32 [{x.shape[1]}], got {vector.dtype} {vector.shape}")
    if out is None:
        out = np.empty_like(x)
    elif out.shape != x.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"{name}: out must be a C-contiguous float32 array of shape {x.shape}")
    return x, out


@jit
def layer_norm_naive(x, residual, weight, bias, eps):
    """The reference loop: LayerNorm(x + residual) one element at a time (float32 [rows, d])."""
    rows, d = x.shape
    out = np.empty((rows, d), dtype=np.float32)
    for i in range(rows):
        mean = _F0
        for j in range(d):
            mean += x[i, j] + residual[i, j]
        mean /= np.float32(d)
        variance = _F0
        for j in range(d):
            centered = x[i, j] + residual[i, j] - mean
            variance += centered * centered
        variance /= np.float32(d)
        std = np.float32(math.sqrt(variance + eps))
        for j in range(d):
            out[i, j] = (x[i, j] + residual[i, j] - mean) / std * weight[j] + bias[j]
    return out


@jit
def rms_norm_naive(x, weight, eps, offset):
    """The reference loop: RMSNorm one element at a time (float32 [rows, d])."""
    rows, d = x.shape
    out = np.empty((rows, d), dtype=np.float32)
    for i in range(rows):
        squares = _F0
        for j in range(d):
            squares += x[i, j] * x[i, j]
        rms = np.float32(math.sqrt(squares / np.float32(d) + eps))
        for j in range(d):
            out[i, j] = x[i, j] / rms * (offset + weight[j])
    return out
