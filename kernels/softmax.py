"""Softmax over the rows of a float32 matrix, and the row kernel attention reuses.

    softmax(x)[i, j] = exp(x[i, j] - max_k x[i, k]) / sum_k exp(x[i, k] - max_k x[i, k])

Layouts: x float32 [rows, cols] C-contiguous -> out float32 [rows, cols].
The NumPy twin is `transformer.model.softmax`; `softmax_naive` is the reference loop.

Subtracting the row maximum keeps exp from overflowing and does not change the result. A
row of scores that were all pushed to float32's most negative value by the padding mask
(`transformer.model.MASK_VALUE`) has all-equal entries, so it comes out uniform, never NaN.

The row kernel, `softmax_rows_inplace`, is written directly as LLVM vector instructions
(vectors of LANES = 16 floats: one AVX-512 register, or two AVX2 ones), like the GEMM's
micro-kernel, in two passes over each row:

    1. v = x * scale, stored back; m = max over the row (16 running maxima, then a tree)
    2. e = exp(v - m) (`activations.exp_nonpositive_ir`), stored back; s = sum of the e
       (16 running sums, then a fixed tree of adds: the same order on every CPU)
    -> 1 / s, which the caller multiplies in where it is cheapest

A row's last partial vector is read and written through masks, so rows of any length work
and nothing past a row is touched. Why not plain loops: LLVM vectorizes a loop in steps of
4 vectors (64 floats at 512 bits), so the 16- to 128-wide rows of attention would run mostly
in its scalar remainder, and a loop writing scalars that the next one reads as a vector
stalls on store forwarding, for longer than its arithmetic takes.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

import numpy as np

from ._jit import even_bounds, jit, parallel_chunks, run_chunks
from .activations import exp_nonpositive_ir
from .layernorm import copy_row
from .microkernel import declare, lane_mask, splat

_F0 = np.float32(0.0)
_ONE = np.float32(1.0)
_NEG_INF = np.float32(-np.inf)
_ELEMENTS_PER_CHUNK = 32 * 1024  # below this per thread, one thread is faster
LANES = 16  # floats per vector in softmax_rows_inplace

_f32 = ir.FloatType()
_i32 = ir.IntType(32)
_vector = ir.VectorType(_f32, LANES)
_mask_type = ir.VectorType(ir.IntType(1), LANES)


def _tree(builder, vector, combine):
    """combine(...) of the 16 lanes as a fixed tree: lanes l and l + 8, then l and l + 4, ..."""
    width = LANES
    while width > 1:
        width //= 2
        low = builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_i32, width), list(range(width))))
        high = builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_i32, width), list(range(width, 2 * width))))
        vector = combine(low, high)
    return builder.extract_element(vector, ir.Constant(_i32, 0))


def _row_pass(builder, row, n, step):
    """Call step(vector) -> vector for each vector of the row's n floats, storing the result
    back: whole vectors with plain loads and stores, the last partial one through masks (its
    missing lanes read as -inf, and not written)."""
    intp = n.type
    masked_load = declare(builder.module, "llvm.masked.load.v16f32.p0", _vector,
                           [_vector.as_pointer(), _i32, _mask_type, _vector])
    masked_store = declare(builder.module, "llvm.masked.store.v16f32.p0", ir.VoidType(),
                            [_vector, _vector.as_pointer(), _i32, _mask_type])
    whole = builder.udiv(n, ir.Constant(intp, LANES))
    with cgutils.for_range(builder, whole, intp=intp) as loop:
        pointer = builder.bitcast(builder.gep(row, [builder.mul(loop.index, ir.Constant(intp, LANES))]), _vector.as_pointer())
        builder.store(step(builder.load(pointer, align=4)), pointer, align=4)
    rest = builder.sub(n, builder.mul(whole, ir.Constant(intp, LANES)))
    with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(intp, 0))):
        pointer = builder.bitcast(builder.gep(row, [builder.mul(whole, ir.Constant(intp, LANES))]), _vector.as_pointer())
        mask = lane_mask(builder, rest, 0, LANES)
        align = ir.Constant(_i32, 4)
        value = builder.call(masked_load, [pointer, align, mask, ir.Constant(_vector, [float("-inf")] * LANES)])
        builder.call(masked_store, [step(value), pointer, align, mask])


@intrinsic
def softmax_rows_inplace(typingctx, values, start, stride, rows, n, scale, inverse_sums, sums_start):
    """For rows r < rows of `values` (float32, flat: row r is values[start + r * stride:][:n],
    n >= 1): row = exp(row * scale - max(row * scale)), in place, and
    inverse_sums[sums_start + r] = 1 / sum(row). See the module docstring. The caller
    guarantees the bounds."""
    for label, array in (("values", values), ("inverse_sums", inverse_sums)):
        if not (isinstance(array, types.Array) and array.dtype == types.float32 and array.layout == "C"):
            raise TypeError(f"softmax_rows_inplace: {label} must be a C-contiguous float32 array, got {array}")
    signature = types.void(values, types.intp, types.intp, types.intp, types.intp, types.float32, inverse_sums, types.intp)

    def codegen(context, builder, sig, args):
        values_val, start, stride, rows, n, scale, sums_val, sums_start = args
        data = context.make_array(sig.args[0])(context, builder, values_val).data
        sums = context.make_array(sig.args[6])(context, builder, sums_val).data
        module = builder.module
        maxnum = declare(module, "llvm.maxnum.v16f32", _vector, [_vector, _vector])
        scale_vector = splat(builder, scale, LANES)
        largest = cgutils.alloca_once(builder, _vector)
        total = cgutils.alloca_once(builder, _vector)
        with cgutils.for_range(builder, rows, intp=start.type) as loop:
            row = builder.gep(data, [builder.add(start, builder.mul(loop.index, stride))])
            # 1. row *= scale; the running maxima (a NaN loses, as in max_f32)
            builder.store(ir.Constant(_vector, [float("-inf")] * LANES), largest)

            def scale_and_track(vector):
                scaled = builder.fmul(vector, scale_vector)
                builder.store(builder.call(maxnum, [builder.load(largest), scaled]), largest)
                return scaled

            _row_pass(builder, row, n, scale_and_track)
            row_max = _tree(builder, builder.load(largest), lambda a, b: builder.call(
                declare(module, f"llvm.maxnum.v{a.type.count}f32", a.type, [a.type, a.type]), [a, b]))
            shift = splat(builder, row_max, LANES)
            # 2. row = exp(row - max); the running sums
            builder.store(ir.Constant(_vector, [0.0] * LANES), total)

            def exp_and_sum(vector):
                exps = exp_nonpositive_ir(builder, builder.fsub(vector, shift))
                builder.store(builder.fadd(builder.load(total), exps), total)
                return exps

            _row_pass(builder, row, n, exp_and_sum)
            row_sum = _tree(builder, builder.load(total), builder.fadd)
            builder.store(builder.fdiv(ir.Constant(_f32, 1.0), row_sum), builder.gep(sums, [builder.add(sums_start, loop.index)]))
        return context.get_dummy_value()

    return signature, codegen


@jit
def _softmax_range(x, out, inverse_sums, first, stop):
    """Rows first..stop-1 of x into out (inverse_sums: float32 [rows], scratch)."""
    cols = x.shape[1]
    for i in range(first, stop):
        copy_row(x[i], out[i])
    softmax_rows_inplace(out, first * cols, cols, stop - first, cols, _ONE, inverse_sums, first)
    for i in range(first, stop):
        row = out[i]
        inverse_sum = inverse_sums[i]
        for j in range(cols):
            row[j] *= inverse_sum


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
    inverse_sums = np.empty(rows.shape[0], dtype=np.float32)
    run_chunks(_softmax_range, bounds, rows, out.reshape(-1, x.shape[-1]), inverse_sums)
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
