"""The register-blocked GEMM micro-kernel: a 6 x 16 tile of C from a strip of A and a panel of B.

    C[6, 16] (+)= A[6, depth] @ B[depth, 16]

This is the innermost loop of every matrix product in `kernels/` (the GEMM in `gemm.py`, and the
attention strips). Plain Numba loops do not vectorize this shape well (3-15 GFLOP/s measured), so
the loop body is written directly as LLVM vector instructions through a Numba `@intrinsic`:
12 accumulators of 8 floats (6 rows x 2 halves of 16 columns) stay in the 16 AVX2 `ymm` registers,
and each step of `k` does 2 vector loads of B, 6 broadcasts of A and 12 fused multiply-adds
(`vfmadd231ps ymm`). LLVM picks the instructions for the machine it runs on, so the same code
runs (slower) on CPUs without FMA.

Layouts (all float32, indices are flat element offsets into each array's buffer, so any
C-contiguous array works whatever its number of dimensions):

    A: element (i, k) at a[a_start + i * lda + k]      i < rows, k < depth
    B: element (k, j) at b[b_start + k * ldb + j]      k < depth, j < 16 (all 16 are read)
    C: element (i, j) at c[c_start + i * ldc + j]      i < rows, j < cols (only these are written)

Edges without copies: rows 0 < rows <= 6 -- the missing rows of A re-read row `rows - 1`, and
their results are never stored; cols 0 < cols <= 16 -- B must still hold 16 readable floats per
row (a packed panel is zero-padded), and C is written through a masked store. With
`accumulate=False` the tile is overwritten, with `accumulate=True` it is added to C.

The caller guarantees the bounds (no checks inside: this is the hot loop). Inside a jitted
loop, the GEMM's call for the tile at row i0, panel p, K block k0 reads:

    microkernel_6x16(x, i0 * K + k0, K, rows,                  # A = x[i0:i0+rows, k0:]
                     panels, (p * K + k0) * 16, 16, depth,     # B = panels[p, k0:k0+depth, :]
                     out, i0 * N + 16 * p, N, cols,            # C = out[i0:, 16p:16p+cols]
                     k0 > 0)                                   # add to earlier K blocks
"""

from . import _jit  # noqa: F401  (sets the threading layer before numba is imported)

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

MR = 6  # rows of the C tile: 6 x 2 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm
NR = 16  # columns of the C tile = the width of a packed weight panel
_LANES = 8  # floats in one 256-bit AVX register

_f32 = ir.FloatType()
_i1 = ir.IntType(1)
_i32 = ir.IntType(32)
_vec = ir.VectorType(_f32, _LANES)  # <8 x float>
_mask = ir.VectorType(_i1, _LANES)  # <8 x i1>


def _declare(module, name, return_type, argument_types):
    return cgutils.get_or_insert_function(module, ir.FunctionType(return_type, argument_types), name)


def _splat(builder, scalar):
    """<8 x float> with `scalar` in every lane (a `vbroadcastss`)."""
    one = builder.insert_element(ir.Constant(_vec, ir.Undefined), scalar, ir.Constant(_i32, 0))
    return builder.shuffle_vector(one, ir.Constant(_vec, ir.Undefined), ir.Constant(ir.VectorType(_i32, _LANES), [0] * _LANES))


def _load_vector(builder, pointer):
    """Unaligned load of 8 consecutive floats at `pointer` (float*)."""
    return builder.load(builder.bitcast(pointer, _vec.as_pointer()), align=4)


def _column_mask(builder, cols, first_column):
    """<8 x i1>: lane l is on when column first_column + l < cols."""
    lane_columns = ir.Constant(ir.VectorType(cols.type, _LANES), [first_column + lane for lane in range(_LANES)])
    cols_vector = builder.insert_element(ir.Constant(ir.VectorType(cols.type, _LANES), ir.Undefined), cols, ir.Constant(_i32, 0))
    cols_vector = builder.shuffle_vector(cols_vector, ir.Constant(ir.VectorType(cols.type, _LANES), ir.Undefined), ir.Constant(ir.VectorType(_i32, _LANES), [0] * _LANES))
    return builder.icmp_signed("<", lane_columns, cols_vector)


def _store_tile(builder, c_data, c_start, ldc, rows, values, accumulate, load, store):
    """C[i, :] = values[i] (or C[i, :] += values[i] when `accumulate`) for the rows i < rows."""
    intp = ldc.type
    for add in (False, True):
        with builder.if_then(accumulate if add else builder.not_(accumulate)):
            for i in range(len(values) // 2):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(intp, i), rows)):
                    c_row = builder.gep(c_data, [builder.add(c_start, builder.mul(ir.Constant(intp, i), ldc))])
                    for half in range(2):
                        pointer = builder.bitcast(builder.gep(c_row, [ir.Constant(intp, half * _LANES)]), _vec.as_pointer())
                        value = values[2 * i + half]
                        if add:
                            value = builder.fadd(value, load(pointer, half))
                        store(value, pointer, half)


def _typed_signature(name, a, b, c, prefetch=False):
    """The intrinsics' signature, after checking the three arrays' types."""
    for label, array in (("a", a), ("b", b), ("c", c)):
        if not (isinstance(array, types.Array) and array.dtype == types.float32 and array.layout == "C"):
            raise TypeError(f"{name}: {label} must be a C-contiguous float32 array, got {array}")
    extra = (types.intp,) if prefetch else ()
    return types.void(a, types.intp, types.intp, types.intp, b, types.intp, types.intp, types.intp, c, types.intp, types.intp,
                      types.intp, types.boolean, *extra)


@intrinsic
def microkernel_6x16(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate):
    """C[rows, cols] (+)= A[rows, depth] @ B[depth, 16][:, :cols], rows <= 6; see the module docstring."""
    return _typed_signature("microkernel_6x16", a, b, c), _tile_codegen(6)


@intrinsic
def microkernel_4x16(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate):
    """The same for rows <= 4, with 8 accumulators: 2/3 of the 6-row kernel's work, for the
    last tile of a row block whose rows are not a multiple of 6 (M = 16 = 6 + 6 + 4)."""
    return _typed_signature("microkernel_4x16", a, b, c), _tile_codegen(4)


@intrinsic
def microkernel_6x16_prefetching(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols,
                                 accumulate, prefetch_start):
    """`microkernel_6x16`, and on the way one 64-byte line of b per step of k is asked into
    the cache ahead of need: the line at b[prefetch_start + k * ldb]. The GEMM points it at
    a panel it will need soon, so weights coming from memory arrive during arithmetic on
    panels already in the cache instead of stalling it."""
    return _typed_signature("microkernel_6x16_prefetching", a, b, c, prefetch=True), _tile_codegen(6, prefetch=True)


@intrinsic
def microkernel_4x16_prefetching(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols,
                                 accumulate, prefetch_start):
    """`microkernel_4x16` with the prefetch of `microkernel_6x16_prefetching`."""
    return _typed_signature("microkernel_4x16_prefetching", a, b, c, prefetch=True), _tile_codegen(4, prefetch=True)


def _tile_codegen(tile_rows, prefetch=False):
    """The LLVM code of a `tile_rows` x 16 micro-kernel (tile_rows <= MR); with `prefetch`,
    one more argument: where in b to prefetch a line per step of k."""

    def codegen(context, builder, sig, args):
        a_val, a_start, lda, rows, b_val, b_start, ldb, depth, c_val, c_start, ldc, cols, accumulate = args[:13]
        module = builder.module
        fma = _declare(module, "llvm.fma.v8f32", _vec, [_vec, _vec, _vec])
        if prefetch:
            byte_pointer = ir.IntType(8).as_pointer()
            prefetch_line = _declare(module, "llvm.prefetch.p0", ir.VoidType(), [byte_pointer, _i32, _i32, _i32])
        a_data = context.make_array(sig.args[0])(context, builder, a_val).data
        b_data = context.make_array(sig.args[4])(context, builder, b_val).data
        c_data = context.make_array(sig.args[8])(context, builder, c_val).data
        intp = lda.type
        zero_vec = ir.Constant(_vec, [0.0] * _LANES)

        # Row pointers of A; rows past `rows` re-read the last real row (results dropped).
        last_row = builder.sub(rows, ir.Constant(intp, 1))
        a_rows = []
        for i in range(tile_rows):
            row = builder.select(builder.icmp_signed("<", ir.Constant(intp, i), rows), ir.Constant(intp, i), last_row)
            a_rows.append(builder.gep(a_data, [builder.add(a_start, builder.mul(row, lda))]))
        b_row0 = builder.gep(b_data, [b_start])
        if prefetch:
            prefetch_row0 = builder.gep(b_data, [args[13]])

        # The 2 * tile_rows accumulators (12 for 6 rows) live in allocas that LLVM promotes to registers (mem2reg).
        accumulators = [cgutils.alloca_once_value(builder, zero_vec) for _ in range(tile_rows * 2)]
        with cgutils.for_range(builder, depth, intp=intp) as loop:
            k = loop.index
            b_row = builder.gep(b_row0, [builder.mul(k, ldb)])
            b_low = _load_vector(builder, b_row)
            b_high = _load_vector(builder, builder.gep(b_row, [ir.Constant(intp, _LANES)]))
            if prefetch:  # read (0), keep in L2 and beyond (locality 2), data cache (1); never faults
                line = builder.bitcast(builder.gep(prefetch_row0, [builder.mul(k, ldb)]), byte_pointer)
                builder.call(prefetch_line, [line, ir.Constant(_i32, 0), ir.Constant(_i32, 2), ir.Constant(_i32, 1)])
            for i in range(tile_rows):
                a_broadcast = _splat(builder, builder.load(builder.gep(a_rows[i], [k])))
                for half, b_half in enumerate((b_low, b_high)):
                    slot = accumulators[2 * i + half]
                    builder.store(builder.call(fma, [a_broadcast, b_half, builder.load(slot)]), slot)

        # Store the tile. A full-width tile uses plain vector loads and stores; an edge tile
        # masked ones (vmaskmovps is slow on some CPUs, so only at the edges).
        masked_load = _declare(module, "llvm.masked.load.v8f32.p0", _vec, [ir.PointerType(_vec), _i32, _mask, _vec])
        masked_store = _declare(module, "llvm.masked.store.v8f32.p0", ir.VoidType(), [_vec, ir.PointerType(_vec), _i32, _mask])
        align = ir.Constant(_i32, 4)
        values = [builder.load(slot) for slot in accumulators]
        full_width = builder.icmp_signed("==", cols, ir.Constant(intp, NR))
        with builder.if_else(full_width) as (full, edge):
            with full:
                _store_tile(builder, c_data, c_start, ldc, rows, values, accumulate,
                            load=lambda pointer, half: builder.load(pointer, align=4),
                            store=lambda value, pointer, half: builder.store(value, pointer, align=4))
            with edge:
                masks = [_column_mask(builder, cols, 0), _column_mask(builder, cols, _LANES)]
                _store_tile(builder, c_data, c_start, ldc, rows, values, accumulate,
                            load=lambda pointer, half: builder.call(masked_load, [pointer, align, masks[half], zero_vec]),
                            store=lambda value, pointer, half: builder.call(masked_store, [value, pointer, align, masks[half]]))
        return context.get_dummy_value()

    return codegen
