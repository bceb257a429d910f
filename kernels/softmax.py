"""Softmax over the rows of a float32 matrix, and the row pieces attention reuses.

    softmax(x)[i, j] = exp(x[i, j] - max_k x[i, k]) / sum_k exp(x[i, k] - max_k x[i, k])

Layouts: x float32 [rows, cols] C-contiguous -> out float32 [rows, cols].
The NumPy twin is `transformer.model.softmax`; `softmax_naive` is the reference loop.

Subtracting the row maximum keeps exp from overflowing and does not change the result. A
row of scores that were all pushed to float32's most negative value by the padding mask
(`transformer.model.MASK_VALUE`) has all-equal entries, so it comes out uniform, never NaN.

Why the reductions are separate small functions: a float32 sum or max only vectorizes when
LLVM may reorder it (fastmath `reassoc` / `nnan`), but the same flag inside the exp would
let LLVM undo its careful range reduction. Numba compiles each jitted function with its
own flags, so `row_max` and `row_sum` carry the reordering flags and the exp loop does not.
"""

import numpy as np

from ._jit import even_bounds, jit, parallel_chunks, run_chunks
from .activations import exp_nonpositive_f32, max_f32

_F0 = np.float32(0.0)
_ONE = np.float32(1.0)
_NEG_INF = np.float32(-np.inf)
_ELEMENTS_PER_CHUNK = 32 * 1024  # below this per thread, one thread is faster


# The row functions take a 1-D view (`scores[start:stop]`, not the array plus offsets) and
# loop from 0: an index LLVM can see is never negative needs no wraparound check, and
# only then does the loop vectorize (with `values[start + j]` and a run-time start the
# exp loop measured 8x slower).


@jit(fastmath={"reassoc", "nsz", "nnan"})
def row_max(values):
    """max(values) of a non-empty 1-D float32 array."""
    best = values[0]
    for j in range(1, values.shape[0]):
        best = max_f32(best, values[j])
    return best


@jit(fastmath={"reassoc", "nsz"})
def row_sum(values):
    """sum(values) of a 1-D float32 array, float32 accumulators."""
    total = _F0
    for j in range(values.shape[0]):
        total += values[j]
    return total


@jit
def exp_shifted_inplace(values, shift):
    """values[j] = exp(values[j] - shift) for every j; shift >= every value (the row max).
    Without FMA contraction (one rounding per operation, as `exp_f32` is tested): with it
    the loop ran ~13% faster, but all-MiniLM-L6-v2's hidden states moved from 5.0e-6 to
    6.5e-6 of the reference's."""
    for j in range(values.shape[0]):
        values[j] = exp_nonpositive_f32(values[j] - shift)


@jit
def softmax_row_inplace(values):
    """Turn the 1-D `values` into exp(values - max) in place and return 1 / their sum.

    The caller multiplies by the returned factor where it is cheapest (attention scales
    the head_dim-wide output row instead of the seq-wide probability row).
    """
    exp_shifted_inplace(values, row_max(values))
    return _ONE / row_sum(values)


@jit
def _softmax_range(x, out, first, stop):
    """Rows first..stop-1 of x into out."""
    for i in range(first, stop):
        row = out[i]
        _copy(x[i], row)
        inverse_sum = softmax_row_inplace(row)
        for j in range(row.shape[0]):
            row[j] *= inverse_sum


@jit
def _copy(source, destination):
    for j in range(source.shape[0]):
        destination[j] = source[j]


def softmax(x, out=None):
    """Softmax over the last axis. float32 [..., cols] -> float32 [..., cols] (`out` may be x)."""
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"softmax: x must be a float32 array [..., cols] with cols > 0, got {x.dtype} {x.shape}")
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])  # [..., cols] -> [rows, cols]
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    if out.shape != x.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"softmax: out must be a C-contiguous float32 array of shape {x.shape}")
    bounds = even_bounds(rows.shape[0], parallel_chunks(rows.size, _ELEMENTS_PER_CHUNK))
    run_chunks(_softmax_range, bounds, rows, out.reshape(-1, x.shape[-1]))
    return out


@jit
def softmax_naive(x):
    """The reference loop: float32 [rows, cols] -> [rows, cols], one element at a time."""
    rows, cols = x.shape
    out = np.empty((rows, cols), dtype=np.float32)
    for i in range(rows):
        largest = _NEG_INF
        for j in range(cols):
            largest = max(largest, x[i, j])
        total = _F0
        for j in range(cols):
            out[i, j] = np.exp(x[i, j] - largest)
            total += out[i, j]
        for j in range(cols):
            out[i, j] = out[i, j] / total
    return out
