"""The register-blocked GEMM micro-kernels: a tile of C from a strip of A and panels of B.

    C[rows, cols] (+)= A[rows, depth] @ B[depth, cols]

This is the innermost loop of every matrix product in `kernels/` (the GEMM in `gemm.py`, and the
attention strips). Plain Numba loops do not keep a tile's accumulators in registers, so the
loop body is written directly as LLVM vector instructions through a Numba `@intrinsic`.
Two tile shapes, one per vector width, computing the same numbers:

    narrow  6 x 16 (AVX2: 256-bit ymm registers, 8 floats each). 12 accumulators (6 rows x 2
            halves of a 16-column panel) stay in the 16 ymm registers; each step of k does 2
            vector loads of B, 6 broadcasts of A and 12 fused multiply-adds (`vfmadd231ps`).
    wide    12 x 32 (AVX-512: 512-bit zmm registers, 16 floats each). 24 accumulators (12 rows
            x 2 panels of 16 columns) of the 32 zmm registers; each step of k does 2 loads of B
            (one row of each panel), 12 broadcasts of A and 24 fused multiply-adds: twice the
            floats per instruction, and fewer loads per multiply-add than the narrow tile.

`WIDE_TILES` says which one the kernels use by default: wide where the CPU has AVX-512
(`host_has_avx512`), narrow elsewhere. Both compile everywhere (LLVM splits a 512-bit vector
into two 256-bit ones, or four 128-bit ones, on a CPU without it: correct, slower), so the
tests hold the two equal bit for bit on any machine: each element of C is the same sum in the
same order, whatever the tile.

The summation order. k goes in chains of CHAIN (128) steps: each chain sums its products
from zero in one run of fused multiply-adds, and is then added into C on its own:

    s_r = 0;  s_r = fma(a[i, k], b[k, j], s_r)   for k = r CHAIN .. min((r + 1) CHAIN, depth) - 1
    C[i, j] = s_0 (C[i, j] + s_0 when accumulating), then C[i, j] += s_r for r = 1, 2, ...

Why chains: each multiply-add rounds at the size of its running sum, so the error of one chain
over all of k grows with its length (the bound is depth units of roundoff times the sum of
|products|), and sums of hundreds of products into large values (a decoder's residual stream
reaches 24,000) lose several float32 units that way. Chains added to one another bound it by
CHAIN + depth / CHAIN units instead (134 for depth 768), while a pass over a tile stays as
deep as the cache blocking wants (gemm.K_BLOCK = 768: shorter passes re-walk the tiles). A
chain's flush costs one load, add and store per accumulator per CHAIN steps of k.

Layouts (all float32, indices are flat element offsets into each array's buffer, so any
C-contiguous array works whatever its number of dimensions):

    A: element (i, k) at a[a_start + i * lda + k]           i < rows, k < depth
    B: element (k, j) at b[b_start + k * ldb + j]           k < depth, j < 16 (all 16 are read)
       wide: element (k, 16 + j) at b[b_start + b_second + k * ldb + j]   (the second panel)
    C: element (i, j) at c[c_start + i * ldc + j]           i < rows, j < cols (only these are written)

For a packed weight (`gemm.pack_weight`, panels [P, K, 16]) the second panel starts K * 16
floats after the first (b_second = K * 16); for attention's row-major scratch it is simply the
next 16 columns (b_second = 16). A wide tile with cols <= 16 reads no second panel: pass
b_second = 0 (the first is read twice, its sums dropped), so nothing past B is touched.

Edges without copies: rows 0 < rows <= tile rows -- the missing rows of A re-read row
`rows - 1`, and their results are never stored; cols 0 < cols <= 16 (32 wide) -- B must still
hold 16 readable floats per row and panel (a packed panel is zero-padded; keep such padding
zero: its products are computed and dropped, and a subnormal float there costs a microcode
assist per multiply-add), and C is written through a masked store. With `accumulate=False`
the tile is overwritten, with `accumulate=True` it is added to C.

The contract, one signature for both tiles (the BLIS way: everything else -- packing,
blocking, threads -- lives around it, in gemm.py and attention.py):

    microkernel_6x16 / microkernel_12x32(
        a, a_start, lda, rows,        A (rows <= 6 / 12)
        b, b_start, ldb, depth,       B (16 columns per panel)
        c, c_start, ldc, cols,        C (cols <= 16 / 32): written, or added to
        accumulate,                   True: C += A @ B (a later K block); False: C = A @ B
        b_second,                     wide: where B's second panel starts, relative to b_start
        prefetch_start)               >= 0: per step of k, ask for b[prefetch_start + k * ldb]
                                      (wide: and its second panel's line) on its way to the cache

Inside, the rows pick the smallest register block that holds them (narrow 6 or 4, wide 12, 8
or 4 rows: a short last strip costs its rows of work), and prefetch_start picks the loop with
or without the extra prefetches; each sums in the same order. The caller
guarantees the bounds (no checks inside: this is the hot loop). Inside a jitted loop, the
GEMM's call for the tile at row i0, panel p, K block k0 reads (`tile` picks the width):

    microkernel_12x32(x, i0 * K + k0, K, rows,                 # A = x[i0:i0+rows, k0:]
                      panels, (p * K + k0) * 16, 16, depth,    # B = panels[p:p+2, k0:k0+depth, :]
                      out, i0 * N + 16 * p, N, cols,           # C = out[i0:, 16p:16p+cols]
                      k0 > 0, K * 16, -1)                      # add to earlier K blocks; no prefetch
"""

import functools

from ._jit import jit

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# B's rows are asked into the L1 cache this many steps of k ahead of their use: the hardware
# prefetchers alone leave the kernel waiting on B from L2; far enough ahead to cover L2's
# latency, near enough that the lines are still in L1 when used.
L1_AHEAD = 16
MR = 6  # rows of the narrow C tile: 6 x 2 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm
NR = 16  # columns of a packed weight panel (the narrow tile's width; a wide tile spans two)
WIDE_MR = 12  # rows of the wide C tile: 12 x 2 accumulators + 2 B vectors + 1 broadcast = 27 of 32 zmm
WIDE_NR = 2 * NR  # columns of the wide tile: two panels
# Products summed in one chain of multiply-adds before it is added into C (the summation
# order, in the module docstring): short enough that large sums keep their precision, long
# enough that the chains' flushes into C cost next to nothing.
CHAIN = 128

_f32 = ir.FloatType()
_i1 = ir.IntType(1)
_i32 = ir.IntType(32)


@functools.lru_cache(maxsize=None)
def host_has_avx512():
    """True when Numba compiles for a CPU with AVX-512F (its own view of the host, so
    NUMBA_CPU_NAME / NUMBA_CPU_FEATURES are obeyed)."""
    from numba.core import config
    import llvmlite.binding as ll

    if config.CPU_FEATURES is not None:
        return "+avx512f" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME is not None and config.CPU_NAME != "host":
        return False  # a named target (often generic, for shipping code): stay narrow
    try:
        return bool(ll.get_host_cpu_features().get("avx512f", False)) and config.ENABLE_AVX
    except RuntimeError:
        return False


WIDE_TILES = host_has_avx512()


# Small LLVM builders, shared with the softmax row kernel (softmax.py).


def declare(module, name, return_type, argument_types):
    """The function `name` (an LLVM intrinsic such as "llvm.fma.v16f32") declared in module."""
    return cgutils.get_or_insert_function(module, ir.FunctionType(return_type, argument_types), name)


def splat(builder, scalar, lanes):
    """<lanes x float> with `scalar` in every lane (a `vbroadcastss`)."""
    vector = ir.VectorType(_f32, lanes)
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, ir.Constant(_i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined), ir.Constant(ir.VectorType(_i32, lanes), [0] * lanes))


def lane_mask(builder, cols, first_column, lanes):
    """<lanes x i1>: lane l is on when column first_column + l < cols."""
    index_vector = ir.VectorType(cols.type, lanes)
    lane_columns = ir.Constant(index_vector, [first_column + lane for lane in range(lanes)])
    cols_vector = builder.insert_element(ir.Constant(index_vector, ir.Undefined), cols, ir.Constant(_i32, 0))
    cols_vector = builder.shuffle_vector(cols_vector, ir.Constant(index_vector, ir.Undefined),
                                         ir.Constant(ir.VectorType(_i32, lanes), [0] * lanes))
    return builder.icmp_signed("<", lane_columns, cols_vector)


def _store_tile(builder, c_data, c_start, ldc, rows, values, lanes, accumulate, load, store):
    """C[i, :] = values[i] (or C[i, :] += values[i] when `accumulate`) for the rows i < rows;
    values: two vectors of `lanes` floats per row."""
    intp = ldc.type
    vector = ir.VectorType(_f32, lanes)
    for add in (False, True):
        with builder.if_then(accumulate if add else builder.not_(accumulate)):
            for i in range(len(values) // 2):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(intp, i), rows)):
                    c_row = builder.gep(c_data, [builder.add(c_start, builder.mul(ir.Constant(intp, i), ldc))])
                    for half in range(2):
                        pointer = builder.bitcast(builder.gep(c_row, [ir.Constant(intp, half * lanes)]), vector.as_pointer())
                        value = values[2 * i + half]
                        if add:
                            value = builder.fadd(value, load(pointer, half))
                        store(value, pointer, half)


def _typed_signature(name, a, b, c):
    """The micro-kernels' signature (one for both tiles), after checking the three arrays' types."""
    for label, array in (("a", a), ("b", b), ("c", c)):
        if not (isinstance(array, types.Array) and array.dtype == types.float32 and array.layout == "C"):
            raise TypeError(f"{name}: {label} must be a C-contiguous float32 array, got {array}")
    return types.void(a, types.intp, types.intp, types.intp, b, types.intp, types.intp, types.intp, c, types.intp, types.intp,
                      types.intp, types.boolean, types.intp, types.intp)


@intrinsic
def microkernel_6x16(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate,
                     b_second, prefetch_start):
    """The narrow tile (AVX2): C[rows, cols] (+)= A[rows, depth] @ B[depth, 16][:, :cols], rows <= 6,
    cols <= 16; b_second unused (the panel's two halves are its 16 floats). See the contract above."""
    return _typed_signature("microkernel_6x16", a, b, c), _tile_codegen((6, 4), wide=False)


@intrinsic
def microkernel_12x32(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate,
                      b_second, prefetch_start):
    """The wide tile (AVX-512): C[rows, cols] (+)= A[rows, depth] @ [B | B'][:, :cols], rows <= 12,
    cols <= 32, B' starting b_second floats after B. See the contract above."""
    return _typed_signature("microkernel_12x32", a, b, c), _tile_codegen((12, 8, 4), wide=True)


def _tile_codegen(row_blocks, wide):
    """A micro-kernel's LLVM code: for each register block of `row_blocks` rows, with and without
    the prefetch, the loop of `_emit_tile`; the call's rows and prefetch_start pick one (a
    short last strip takes the smallest block that holds it: M = 16 = 12 + 4 or 6 + 6 + 4)."""

    def codegen(context, builder, sig, args):
        rows, prefetch_start = args[3], args[14]

        def by_rows(prefetch):
            by_row_blocks(builder, rows, row_blocks,
                          lambda tile_rows: _emit_tile(context, builder, sig, args, tile_rows, prefetch, wide))

        with builder.if_else(builder.icmp_signed(">=", prefetch_start, ir.Constant(rows.type, 0))) as (ahead, plain):
            with ahead:
                by_rows(True)
            with plain:
                by_rows(False)
        return context.get_dummy_value()

    return codegen


def by_row_blocks(builder, rows, blocks, emit):
    """Emit `emit(block_rows)` for each register block of `blocks` (largest first), each under
    the branch the call's `rows` takes: the smallest block that holds them."""
    if len(blocks) == 1:
        emit(blocks[0])
        return
    with builder.if_else(builder.icmp_signed(">", rows, ir.Constant(rows.type, blocks[1]))) as (big, small):
        with big:
            emit(blocks[0])
        with small:
            by_row_blocks(builder, rows, blocks[1:], emit)


def _emit_tile(context, builder, sig, args, tile_rows, prefetch, wide):
    """The code of one register block of `tile_rows` rows: narrow (two 8-float halves of one
    16-column panel) or `wide` (16 floats from each of two panels, b_second apart); with
    `prefetch`, a line at b[prefetch_start + k * ldb] asked for per step of k (wide: two
    lines, one per panel)."""
    lanes = 16 if wide else 8
    a_val, a_start, lda, rows, b_val, b_start, ldb, depth, c_val, c_start, ldc, cols, accumulate = args[:13]
    module = builder.module
    vector = ir.VectorType(_f32, lanes)
    fma = declare(module, f"llvm.fma.v{lanes}f32", vector, [vector, vector, vector])
    a_data = context.make_array(sig.args[0])(context, builder, a_val).data
    b_data = context.make_array(sig.args[4])(context, builder, b_val).data
    c_data = context.make_array(sig.args[8])(context, builder, c_val).data
    intp = lda.type
    zero_vec = ir.Constant(vector, [0.0] * lanes)
    # Where each step of k reads its two B vectors, relative to the row of k in B.
    b_offsets = [ir.Constant(intp, 0), args[13] if wide else ir.Constant(intp, lanes)]
    prefetch_start = args[14] if prefetch else None

    # Row pointers of A; rows past `rows` re-read the last real row (results dropped).
    last_row = builder.sub(rows, ir.Constant(intp, 1))
    a_rows = []
    for i in range(tile_rows):
        row = builder.select(builder.icmp_signed("<", ir.Constant(intp, i), rows), ir.Constant(intp, i), last_row)
        a_rows.append(builder.gep(a_data, [builder.add(a_start, builder.mul(row, lda))]))
    b_row0 = builder.gep(b_data, [b_start])
    byte_pointer = ir.IntType(8).as_pointer()
    prefetch_line = declare(module, "llvm.prefetch.p0", ir.VoidType(), [byte_pointer, _i32, _i32, _i32])
    # Each step of k also asks for B's row L1_AHEAD steps on into the L1 cache (one line
    # per panel: the row of a 16-column panel is one 64-byte line).
    b_ahead0 = builder.gep(b_row0, [builder.mul(ir.Constant(intp, L1_AHEAD), ldb)])
    ahead_offsets = b_offsets if wide else b_offsets[:1]
    if prefetch:
        prefetch_rows0 = [builder.gep(b_data, [prefetch_start])]
        if wide:
            prefetch_rows0.append(builder.gep(b_data, [builder.add(prefetch_start, b_offsets[1])]))

    # The 2 * tile_rows accumulators live in allocas that LLVM promotes to registers (mem2reg).
    accumulators = [cgutils.alloca_once_value(builder, zero_vec) for _ in range(tile_rows * 2)]

    def step(k):
        """One step of k: two B vectors, tile_rows broadcasts of A, 2 * tile_rows multiply-adds."""
        b_row = builder.gep(b_row0, [builder.mul(k, ldb)])
        b_halves = [builder.load(builder.bitcast(builder.gep(b_row, [offset]), vector.as_pointer()), align=4)
                    for offset in b_offsets]
        b_ahead = builder.gep(b_ahead0, [builder.mul(k, ldb)])
        for offset in ahead_offsets:  # read (0), into L1 (locality 3), data cache (1); never faults
            line = builder.bitcast(builder.gep(b_ahead, [offset]), byte_pointer)
            builder.call(prefetch_line, [line, ir.Constant(_i32, 0), ir.Constant(_i32, 3), ir.Constant(_i32, 1)])
        if prefetch:  # read (0), keep in L2 and beyond (locality 2), data cache (1); never faults
            for prefetch_row0 in prefetch_rows0:
                line = builder.bitcast(builder.gep(prefetch_row0, [builder.mul(k, ldb)]), byte_pointer)
                builder.call(prefetch_line, [line, ir.Constant(_i32, 0), ir.Constant(_i32, 2), ir.Constant(_i32, 1)])
        for i in range(tile_rows):
            a_broadcast = splat(builder, builder.load(builder.gep(a_rows[i], [k])), lanes)
            for half, b_half in enumerate(b_halves):
                slot = accumulators[2 * i + half]
                builder.store(builder.call(fma, [a_broadcast, b_half, builder.load(slot)]), slot)

    def flush(later_chain):
        store_accumulators(builder, c_data, c_start, ldc, rows, cols, [builder.load(slot) for slot in accumulators],
                           lanes, builder.or_(accumulate, later_chain))

    chains(builder, depth, CHAIN, accumulators, zero_vec, step, flush)


def chains(builder, steps, chain, accumulators, zero, step, flush):
    """A tile's loop over k = 0 .. steps - 1 in chains of `chain` steps (the last may be
    shorter; steps = 0: one empty chain, so C is still written): each chain restarts the
    accumulators from `zero`, emits `step(k)` per step of k, then `flush(later_chain)` adds
    its sums into C (later_chain, an i1: false for the first chain, which writes C unless
    the call accumulates)."""
    intp = steps.type
    one = ir.Constant(intp, 1)
    length = ir.Constant(intp, chain)
    count = builder.sdiv(builder.add(steps, ir.Constant(intp, chain - 1)), length)
    count = builder.select(builder.icmp_signed("<", count, one), one, count)
    with cgutils.for_range(builder, count, intp=intp) as chain_loop:
        first = builder.mul(chain_loop.index, length)
        stop = builder.add(first, length)
        stop = builder.select(builder.icmp_signed(">", stop, steps), steps, stop)
        for slot in accumulators:
            builder.store(zero, slot)
        with cgutils.for_range_slice(builder, first, stop, one, intp=intp) as (k, _):
            step(k)
        flush(builder.icmp_signed(">", chain_loop.index, ir.Constant(intp, 0)))


def store_accumulators(builder, c_data, c_start, ldc, rows, cols, values, lanes, accumulate):
    """Store a tile's accumulators (two vectors of `lanes` floats per row) into C's rows < rows
    and columns < cols, or add them to C. A full-width tile uses plain vector loads and stores;
    an edge tile masked ones (vmaskmovps is slow on some CPUs, so only at the edges)."""
    module = builder.module
    intp = ldc.type
    vector = ir.VectorType(_f32, lanes)
    zero_vec = ir.Constant(vector, [0.0] * lanes)
    mask = ir.VectorType(_i1, lanes)
    masked_load = declare(module, f"llvm.masked.load.v{lanes}f32.p0", vector, [ir.PointerType(vector), _i32, mask, vector])
    masked_store = declare(module, f"llvm.masked.store.v{lanes}f32.p0", ir.VoidType(), [vector, ir.PointerType(vector), _i32, mask])
    align = ir.Constant(_i32, 4)
    full_width = builder.icmp_signed("==", cols, ir.Constant(intp, 2 * lanes))
    with builder.if_else(full_width) as (full, edge):
        with full:
            _store_tile(builder, c_data, c_start, ldc, rows, values, lanes, accumulate,
                        load=lambda pointer, half: builder.load(pointer, align=4),
                        store=lambda value, pointer, half: builder.store(value, pointer, align=4))
        with edge:
            masks = [lane_mask(builder, cols, 0, lanes), lane_mask(builder, cols, lanes, lanes)]
            _store_tile(builder, c_data, c_start, ldc, rows, values, lanes, accumulate,
                        load=lambda pointer, half: builder.call(masked_load, [pointer, align, masks[half], zero_vec]),
                        store=lambda value, pointer, half: builder.call(masked_store, [value, pointer, align, masks[half]]))


@jit(inline="always")
def tile(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, wide, b_second,
         prefetch_start):
    """One tile of C through the micro-kernel of its width: wide, up to 12 rows x 32 columns
    from two panels (b_second floats apart); narrow, up to 6 rows x 16 columns from one panel
    (b_second unused). prefetch_start < 0: nothing to prefetch."""
    if wide:
        microkernel_12x32(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, b_second,
                          prefetch_start)
    else:
        microkernel_6x16(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, b_second,
                         prefetch_start)
