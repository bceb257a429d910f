"""bfloat16 GEMM tiers: packed bf16 weights, the A strip rounded to bf16, and the bf16 tile.

    C[rows, cols] (+)= bf16(A)[rows, depth] @ bf16(B)[depth, cols], products summed in float32

bfloat16 is the upper half of a float32 (its sign, its 8 exponent bits, 7 of its 23 fraction
bits): a float32 rounds to it by rounding away the low 16 bits (nearest, ties to even), and
widens back exactly by putting 16 zero bits under it. A product of two bfloat16 numbers has at
most 16 significant bits, so it is exact in float32; only the sums round. The NumPy twin is
`transformer.model.linear` on uint16 weights (`round_to_bf16`, `to_bf16`, `from_bf16`): that
emulation is what every tier is tested against.

Packed weights (`pack_weight_bf16`): the same 16-column panels as `gemm.pack_weight`, in
bf16, with the rows of k taken in pairs and the pair interleaved per column, which is what
`vdpbf16ps` reads (one 64-byte line holds 16 columns x 2 rows of k):

    panels  uint16 [P, Kp/2, 32]    panels[p, q, 2 j + h] = bf16(weight[2 q + h, 16 p + j])
                                    Kp = K rounded up to even (the pad row is 0), and columns
                                    past N are 0 (as in the float32 panels)

The A operand: each strip of rows x depth of x is rounded once per strip (not per tile) into
`strip`, the same pairs along k (`round_strip`):

    strip   uint32 [rows, ceil(depth/2)]   low half bf16(x[i, k0 + 2q]), high half
                                           bf16(x[i, k0 + 2q + 1]) (0 past depth)

Tiers (`TIER`, chosen once from the CPU's features; `tiers()` says which this CPU has):

    avx512_bf16  `vdpbf16ps`: per step of k-pair, each of the 24 accumulators of the wide
                 12 x 32 tile takes acc + a0 b0 + a1 b1 on 16 columns in one instruction
                 (a broadcast A pair, a B pair-row). Needs the CPU flag avx512_bf16.
    storage      the same bf16 panels widened to float32 in registers (a shift or a mask:
                 the pair's two halves), two float32 multiply-adds per pair: runs on every
                 CPU; half the weight bytes of float32 (what batch-1 streams from memory).
    amx          not built: this project has no AMX machine to test tile code on.

The tile sums in the float32 micro-kernel's order: chains of CHAIN products (CHAIN / 2
pairs of k) from zero, each chain added into C (`microkernel.py`'s docstring says why).

The tile's contract is the float32 micro-kernel's (`microkernel.py`) with these changes:
a is the strip (uint32 pairs, lda in pairs), b the bf16 panels (uint16, ldb = 32 per pair
row, b_start / b_second / prefetch_start in uint16 elements), depth in pairs, and `dot`
picks vdpbf16ps (True) or the storage arithmetic (False).
"""

import functools
import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._jit import jit
from .microkernel import (CHAIN, L1_AHEAD, NR, WIDE_MR, by_row_blocks, chains, declare, host_has_avx512,
                          store_accumulators)

TIER_NAMES = ("avx512_bf16", "storage", "amx")
PAIR_ROW = 2 * NR  # uint16 elements in one pair-row of a panel: 16 columns x 2 rows of k
STRIP_PAIRS = 384  # pairs in the deepest strip of x: gemm.K_BLOCK (768) floats of k

_f32 = ir.FloatType()
_i32 = ir.IntType(32)


class _BFloat(ir.Type):
    """LLVM's `bfloat` type (llvmlite's IR builder has none): vdpbf16ps's operands are
    <32 x bfloat>."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloat)

    def __hash__(self):
        return hash("bfloat")


def cpu_flags():
    """The flags of /proc/cpuinfo's first processor (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def host_has_avx512_bf16():
    """True when Numba compiles for a CPU with AVX512-BF16 (`vdpbf16ps`): its view of the host
    (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES obeyed, as `microkernel.host_has_avx512`)."""
    from numba.core import config
    import llvmlite.binding as ll

    if not host_has_avx512():
        return False
    if config.CPU_FEATURES is not None:
        return "+avx512bf16" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME is not None and config.CPU_NAME != "host":
        return False
    try:
        return bool(ll.get_host_cpu_features().get("avx512bf16", False))
    except RuntimeError:
        return "avx512_bf16" in cpu_flags()


def tiers():
    """{tier: None when this CPU runs it, else why not}, every tier of TIER_NAMES."""
    return {"avx512_bf16": None if host_has_avx512_bf16() else "this CPU lacks the flag avx512_bf16",
            "storage": None,
            "amx": "not built"}


def select_tier():
    """The fastest tier this CPU runs: avx512_bf16, else storage. TRANSFORMER_BF16_TIER=storage
    asks for the storage tier (a slower one is always allowed; a faster one the CPU lacks is
    refused by name)."""
    wanted = os.environ.get("TRANSFORMER_BF16_TIER")
    available = tiers()
    if wanted:
        if wanted not in available:
            raise ValueError(f"TRANSFORMER_BF16_TIER={wanted!r}; expected one of {', '.join(TIER_NAMES)}")
        if available[wanted] is not None:
            raise ValueError(f"TRANSFORMER_BF16_TIER={wanted!r}: {available[wanted]}")
        return wanted
    return "avx512_bf16" if available["avx512_bf16"] is None else "storage"


TIER = select_tier()


# ---------------------------------------------------------------------------------------
# Packing


def to_bf16(x):
    """float32 [...] -> uint16 [...]: the bits of the nearest bfloat16, ties to even; a NaN stays
    a (quiet) NaN. The rounding of the NumPy twin, `transformer.model.to_bf16` (a kernel imports
    nothing from the package: tests/test_bf16_kernels.py holds the two equal bit for bit).

    bfloat16 is the top 16 bits of a float32: add just under half of the dropped low 16 bits
    (0x7FFF, plus 1 when the kept part is odd), then keep the top half.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    odd = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + odd) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)  # a NaN's low bits could carry into its sign


def pack_weight_bf16(weight):
    """A float32 [K, N] weight (or its bf16 bits, uint16 [K, N]) -> bf16 panels uint16
    [ceil(N / 16), ceil(K / 2), 32] (see the module docstring), weights rounded to nearest even.

    >>> pack_weight_bf16(np.ones((5, 20), np.float32)).shape   # 2 panels, 3 pairs of k
    (2, 3, 32)
    """
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"pack_weight_bf16: weight must be 2-D [in_features, out_features], got shape {weight.shape}")
    if weight.dtype == np.float32:
        weight = to_bf16(weight)
    elif weight.dtype != np.uint16:
        raise TypeError(f"pack_weight_bf16: weight must be float32 or uint16 bf16 bits, got {weight.dtype}")
    k, n = weight.shape
    n_panels, pairs = -(-n // NR), -(-k // 2)
    padded = np.zeros((2 * pairs, n_panels * NR), dtype=np.uint16)  # [K, N] -> [Kp, 16 * panels]
    padded[:k, :n] = weight
    paired = padded.reshape(pairs, 2, n_panels, NR)  # -> [Kp/2, 2 (h), panels, 16 (j)]
    return np.ascontiguousarray(paired.transpose(2, 0, 3, 1)).reshape(n_panels, pairs, PAIR_ROW)  # -> [P, Kp/2, 16 * 2]


def unpack_weight_bf16(panels, k, n):
    """`pack_weight_bf16` undone: uint16 panels -> the uint16 [K, N] bf16 bits."""
    n_panels, pairs, _ = panels.shape
    paired = panels.reshape(n_panels, pairs, NR, 2).transpose(1, 3, 0, 2)  # -> [Kp/2, 2, P, 16]
    return np.ascontiguousarray(paired.reshape(2 * pairs, n_panels * NR)[:k, :n])


# ---------------------------------------------------------------------------------------
# The A strip


@jit(inline="always")
def bf16_half(bits):
    """A float32's bits (uint32) -> its nearest bfloat16's 16 bits (ties to even), as int64;
    a NaN stays a NaN."""
    b = np.int64(bits)
    if (b & 0x7FFFFFFF) > 0x7F800000:
        return ((b >> 16) | 0x40) & 0xFFFF
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


@jit(inline="always")
def round_strip(x, row, k0, rows, depth, strip):
    """strip[i * lda + q] = bf16 pair (x[row + i, k0 + 2q], x[row + i, k0 + 2q + 1]) for i < rows,
    q < lda = ceil(depth / 2); the second half 0 past depth. Returns lda."""
    lda = (depth + 1) // 2
    bits = x.view(np.uint32)
    for i in range(rows):
        source = bits[row + i, k0:k0 + depth]
        target = strip[i * lda:(i + 1) * lda]
        for q in range(depth // 2):
            target[q] = np.uint32(bf16_half(source[2 * q]) | (bf16_half(source[2 * q + 1]) << 16))
        if depth % 2:
            target[lda - 1] = np.uint32(bf16_half(source[depth - 1]))
    return lda


def new_strip(x, panels):
    """The scratch a block rounds its strips of x into: uint32 [12 * 384] for bf16 panels;
    float32 panels need none (x itself is returned, nothing is allocated)."""


@overload(new_strip, inline="always")
def _new_strip(x, panels):
    if isinstance(panels, types.Array) and panels.dtype == types.uint16:
        def make(x, panels):
            return np.empty(WIDE_MR * STRIP_PAIRS, dtype=np.uint32)
    else:
        def make(x, panels):
            return x
    return make


def strip_operand(x, row, k0, rows, depth, panels, strip):
    """The A operand of a strip's tiles: (a, a_start, lda). Float32 panels: x itself; bf16
    panels: the strip rounded into `strip` (`round_strip`)."""


@overload(strip_operand, inline="always")
def _strip_operand(x, row, k0, rows, depth, panels, strip):
    if isinstance(panels, types.Array) and panels.dtype == types.uint16:
        def operand(x, row, k0, rows, depth, panels, strip):
            return strip, 0, round_strip(x, row, k0, rows, depth, strip)
    else:
        def operand(x, row, k0, rows, depth, panels, strip):
            return x, row * x.shape[1] + k0, x.shape[1]
    return operand


# ---------------------------------------------------------------------------------------
# The tile


def _typed_signature(name, a, b, c):
    for label, array, dtype in (("a", a, types.uint32), ("b", b, types.uint16), ("c", c, types.float32)):
        if not (isinstance(array, types.Array) and array.dtype == dtype and array.layout == "C"):
            raise TypeError(f"{name}: {label} must be a C-contiguous {dtype} array, got {array}")
    return types.void(a, types.intp, types.intp, types.intp, b, types.intp, types.intp, types.intp, c, types.intp,
                      types.intp, types.intp, types.boolean, types.intp, types.intp, types.boolean)


@intrinsic
def microkernel_bf16_12x32(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols,
                           accumulate, b_second, prefetch_start, dot):
    """The wide bf16 tile: C[rows, cols] (+)= A[rows, 2 depth] @ [B | B'][2 depth, :cols], rows <=
    12, cols <= 32, A and B in bf16 pairs (module docstring); dot: vdpbf16ps, else storage."""
    return _typed_signature("microkernel_bf16_12x32", a, b, c), _tile_codegen((12, 8, 4), wide=True)


@intrinsic
def microkernel_bf16_6x16(typingctx, a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols,
                          accumulate, b_second, prefetch_start, dot):
    """The narrow bf16 tile (storage only: the CPUs without AVX-512): C[rows, cols] (+)=
    A[rows, 2 depth] @ B[2 depth, 16][:, :cols], rows <= 6; b_second and dot unused."""
    return _typed_signature("microkernel_bf16_6x16", a, b, c), _tile_codegen((6, 4), wide=False)


def _tile_codegen(row_blocks, wide):
    """For each register block of `row_blocks` rows (the call's rows pick the smallest that
    holds them) and for dot / storage: the loop of `_emit_tile`."""

    def codegen(context, builder, sig, args):
        rows, dot = args[3], args[15]

        def by_rows(blocks, use_dot):
            by_row_blocks(builder, rows, blocks,
                          lambda tile_rows: _emit_tile(context, builder, sig, args, tile_rows, wide, use_dot))

        # vdpbf16ps is emitted only for a CPU that has it: LLVM cannot select it for another.
        if wide and host_has_avx512_bf16():
            with builder.if_else(dot) as (with_dot, storage):
                with with_dot:
                    by_rows(row_blocks, True)
                with storage:
                    by_rows(row_blocks, False)
        else:
            by_rows(row_blocks, False)
        return context.get_dummy_value()

    return codegen


def _emit_tile(context, builder, sig, args, tile_rows, wide, dot):
    """One register block of `tile_rows` rows: per pair of k, two B vectors (wide: a pair-row
    of each of two panels, b_second apart; narrow: the two halves of one panel's pair-row),
    each row's A pair broadcast, and per accumulator one vdpbf16ps (`dot`) or two float32
    multiply-adds on the widened halves."""
    lanes = 16 if wide else 8
    a_val, a_start, lda, rows, b_val, b_start, ldb, depth, c_val, c_start, ldc, cols, accumulate = args[:13]
    b_second, prefetch_start = args[13], args[14]
    module = builder.module
    vector = ir.VectorType(_f32, lanes)
    int_vector = ir.VectorType(_i32, lanes)
    bf16_vector = ir.VectorType(_BFloat(), 2 * lanes)
    fma = declare(module, f"llvm.fma.v{lanes}f32", vector, [vector, vector, vector])
    dpbf16ps = declare(module, "llvm.x86.avx512bf16.dpbf16ps.512", vector, [vector, bf16_vector, bf16_vector]) \
        if dot else None
    a_data = context.make_array(sig.args[0])(context, builder, a_val).data  # i32*
    b_data = context.make_array(sig.args[4])(context, builder, b_val).data  # i16*
    c_data = context.make_array(sig.args[8])(context, builder, c_val).data
    intp = lda.type
    zero_vec = ir.Constant(vector, [0.0] * lanes)
    high_mask = ir.Constant(int_vector, [0xFFFF0000 - (1 << 32)] * lanes)  # i32 -65536: the high halves
    shift = ir.Constant(int_vector, [16] * lanes)
    b_offsets = [ir.Constant(intp, 0), b_second if wide else ir.Constant(intp, 2 * lanes)]

    last_row = builder.sub(rows, ir.Constant(intp, 1))
    a_rows = []
    for i in range(tile_rows):
        row = builder.select(builder.icmp_signed("<", ir.Constant(intp, i), rows), ir.Constant(intp, i), last_row)
        a_rows.append(builder.gep(a_data, [builder.add(a_start, builder.mul(row, lda))]))
    b_row0 = builder.gep(b_data, [b_start])
    byte_pointer = ir.IntType(8).as_pointer()
    prefetch_line = declare(module, "llvm.prefetch.p0", ir.VoidType(), [byte_pointer, _i32, _i32, _i32])
    b_ahead0 = builder.gep(b_row0, [builder.mul(ir.Constant(intp, L1_AHEAD), ldb)])
    ahead_offsets = b_offsets if wide else b_offsets[:1]
    # With prefetch_start < 0 the prefetches still run, at harmless addresses (prefetches never
    # fault): one loop for both, as the pair-row lines are few.
    has_prefetch = builder.icmp_signed(">=", prefetch_start, ir.Constant(intp, 0))
    prefetch_base = builder.select(has_prefetch, prefetch_start, b_start)
    prefetch_rows0 = [builder.gep(b_data, [prefetch_base])]
    if wide:
        prefetch_rows0.append(builder.gep(b_data, [builder.add(prefetch_base, b_second)]))

    def widen(pairs):
        """<lanes x i32> of bf16 pairs -> (low halves, high halves) as <lanes x float>."""
        low = builder.bitcast(builder.shl(pairs, shift), vector)
        high = builder.bitcast(builder.and_(pairs, high_mask), vector)
        return low, high

    accumulators = [cgutils.alloca_once_value(builder, zero_vec) for _ in range(tile_rows * 2)]

    def step(q):
        """One pair of k: per accumulator one vdpbf16ps, or two multiply-adds."""
        b_row = builder.gep(b_row0, [builder.mul(q, ldb)])
        b_pairs = [builder.load(builder.bitcast(builder.gep(b_row, [offset]), int_vector.as_pointer()), align=4)
                   for offset in b_offsets]
        b_ahead = builder.gep(b_ahead0, [builder.mul(q, ldb)])
        for offset in ahead_offsets:  # read (0), into L1 (locality 3), data cache (1)
            line = builder.bitcast(builder.gep(b_ahead, [offset]), byte_pointer)
            builder.call(prefetch_line, [line, ir.Constant(_i32, 0), ir.Constant(_i32, 3), ir.Constant(_i32, 1)])
        for prefetch_row0 in prefetch_rows0:  # read (0), keep in L2 and beyond (locality 2), data cache (1)
            line = builder.bitcast(builder.gep(prefetch_row0, [builder.mul(q, ldb)]), byte_pointer)
            builder.call(prefetch_line, [line, ir.Constant(_i32, 0), ir.Constant(_i32, 2), ir.Constant(_i32, 1)])
        if dot:
            b_operands = [builder.bitcast(pairs, bf16_vector) for pairs in b_pairs]
        else:
            b_operands = [widen(pairs) for pairs in b_pairs]
        for i in range(tile_rows):
            a_pair = builder.load(builder.gep(a_rows[i], [q]))
            a_pairs = splat_int(builder, a_pair, lanes)
            if dot:
                a_operand = builder.bitcast(a_pairs, bf16_vector)
            else:
                a_low, a_high = widen(a_pairs)
            for half, b_operand in enumerate(b_operands):
                slot = accumulators[2 * i + half]
                if dot:
                    builder.store(builder.call(dpbf16ps, [builder.load(slot), a_operand, b_operand]), slot)
                else:
                    total = builder.call(fma, [a_low, b_operand[0], builder.load(slot)])
                    builder.store(builder.call(fma, [a_high, b_operand[1], total]), slot)

    def flush(later_chain):
        store_accumulators(builder, c_data, c_start, ldc, rows, cols, [builder.load(slot) for slot in accumulators],
                           lanes, builder.or_(accumulate, later_chain))

    chains(builder, depth, CHAIN // 2, accumulators, zero_vec, step, flush)  # CHAIN products: CHAIN / 2 pairs


def splat_int(builder, scalar, lanes):
    """<lanes x i32> with the i32 `scalar` in every lane (a `vpbroadcastd`)."""
    vector = ir.VectorType(_i32, lanes)
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, ir.Constant(_i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined), ir.Constant(ir.VectorType(_i32, lanes), [0] * lanes))


def any_tile(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, wide, b_second,
             prefetch_start, dot):
    """One tile of C by the micro-kernel of the panels' type: float32 panels, `microkernel.tile`
    (depth in floats of k, ldb 16); bf16 panels, the bf16 tile (depth still in floats of k: it
    takes ceil(depth / 2) pairs, ldb 32 per pair-row); dot: vdpbf16ps (bf16 panels only)."""


@overload(any_tile, inline="always")
def _any_tile(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, wide, b_second,
              prefetch_start, dot):
    from .microkernel import tile

    if isinstance(b, types.Array) and b.dtype == types.uint16:
        def bf16_tile(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, wide,
                      b_second, prefetch_start, dot):
            if wide:
                microkernel_bf16_12x32(a, a_start, lda, rows, b, b_start, PAIR_ROW, (depth + 1) // 2, c, c_start, ldc,
                                       cols, accumulate, b_second, prefetch_start, dot)
            else:
                microkernel_bf16_6x16(a, a_start, lda, rows, b, b_start, PAIR_ROW, (depth + 1) // 2, c, c_start, ldc,
                                      cols, accumulate, b_second, prefetch_start, dot)
        return bf16_tile

    def float32_tile(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, wide, b_second,
                     prefetch_start, dot):
        tile(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, wide, b_second,
             prefetch_start)
    return float32_tile
