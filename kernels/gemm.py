"""GEMM for linear layers: out = activation(x @ weight + bias) + residual.

    x         float32 [M, K]   C-contiguous: M tokens (batch * seq), K input features
    weight    float32 [K, N]   the layout of `x @ weight` (torch's Linear stores [N, K];
                               `transformer.loading` transposes once at load)
    bias      float32 [N]      or None
    residual  float32 [M, N]   or None (added after the activation: BERT's dense + skip)
    out       float32 [M, N]

The NumPy twin is `activation(x @ weight + bias) + residual` (`transformer.model.linear`
and friends); `gemm_naive` below is the same thing as three plain loops.

How the fast path works (llm.c / BLIS style):

1. `pack_weight` runs once at load. It cuts the weight into panels of 16 columns, each
   stored row after row: panels[p, k, j] = weight[k, 16 p + j]. A 16-column slice of a row
   is then 64 contiguous bytes (two AVX registers), and the micro-kernel walks a panel
   straight through memory. The last panel is padded with zero columns.
2. `gemm` splits C into blocks (`plan_blocks`), and the threads (`_jit.run_chunks`: the
   calling thread and persistent workers, the kernel compiled nogil) take them through
   atomic counters (`gemm_run`). Many rows: row blocks of up to 576 rows with all the
   columns, claimed in order. Fewer (a batch-1 text): one contiguous run of columns per
   thread, which its owner works through from the front while a thread that is done with
   its own takes the others' from the back, one tile column at a time; so a thread that
   starts late or shares its core does less, and nobody waits long at the end.
   Within a block the depth K goes in blocks of at most 768, the panels in sweeps (4, or 8
   with wide tiles: a strip of x stays in L1 while it meets them; the sweep's panels, 192-384
   KiB at K = 768, stay in L2 while the block's strips pass by), and each tile of C is
   computed by a register-blocked micro-kernel of `microkernel.py`: 6 x 16 (12 AVX2
   accumulators) or, where the CPU has AVX-512, 12 x 32 over two panels (24 accumulators);
   a short last strip by a smaller register block (M = 16 = 6 + 6 + 4 or 12 + 4), so it
   costs its rows of work, not a whole tile's. Inside a pass the tile sums in chains of
   `microkernel.CHAIN` (128) products, each added into C: the passes stay long for the
   cache while the sums stay short for precision (microkernel.py, "The summation order").
3. When a strip of rows x 64 (128) columns (one sweep) has seen its last K block, the
   epilogue runs on it while it is still in the L1 cache: + bias, activation, + residual.
   No separate pass over C. The activation is called through its row loop's C address
   (`activations.activation_row_address`), so this kernel compiles once for every
   activation, and each activation compiles only when a model uses it.

4. With few rows (a batch-1 text) a GEMM mostly waits for its weights to stream in from
   memory (42 MB a MiniLM forward pass, 340 MB BERT-base's, more than the cache keeps).
   Row blocks of at most PREFETCH_MAX_ROWS rows (WIDE_PREFETCH_MAX_ROWS with wide tiles) ask
   for the panels they will need next while they compute (the micro-kernels' prefetch_start),
   so the weights arrive during arithmetic. With many rows a panel serves many strips from
   the cache, and asking for lines already there only costs issue slots.

Small products (under SERIAL_BELOW_FLOPS) run on the calling thread alone: handing work to
another thread costs tens of microseconds, more than such a product takes on one core.

    >>> packed = pack_weight(weight)                  # once, at load
    >>> hidden = gemm(x, packed, bias, activation="gelu")
"""

import functools
from typing import NamedTuple

import numpy as np

from . import bf16, microkernel
from ._jit import (PHASE_FINISHED, add_release, claim_back, claim_front, even_bounds, fetch_add, jit, numba, run_chunks,
                   wait_until_at_least)
from .activations import activation_code, activation_row_address, call_activation_row
from .bf16 import any_tile, new_strip, pack_weight_bf16, strip_operand
from .microkernel import MR, NR, WIDE_MR

# Depth per pass over a tile: a strip of x (rows x K_BLOCK floats) stays in L1 while it meets
# a sweep's panels. Fewer, longer passes win until the strip no longer fits (docs/performance.md
# has the measurements); the precision of the sums is set by the micro-kernel's chains, not here.
K_BLOCK = 768
# Row blocks of up to 576 rows (96 narrow tiles of 6, 48 wide ones of 12). Each sweep's
# panels come from L3 or memory for the block's first strip, which waits for them; the other
# strips find them in L2. More strips per sweep spread that wait over more work. The strips of
# x themselves stream in from L3 at full speed (sequential rows), so they need not fit in L2.
MAX_BLOCK_ROWS = 576
PANELS_PER_SWEEP = 4  # columns met by one strip of x before the next strip: 4 panels = 64
WIDE_PANELS_PER_SWEEP = 8  # ... with wide tiles: 8 panels = 128 (4 tiles, so a strip's loads amortize)
# A column-cut GEMM's ranges, one per thread (more threads only take others' units): each
# range's claim counter sits before the phase's finished count (`_jit.PHASE_FINISHED`).
MAX_RANGES = PHASE_FINISHED
FINISHED = PHASE_FINISHED  # a GEMM's counters: claims at [0, MAX_RANGES), then the finished units
# Row blocks this small prefetch the weight panels ahead (see _gemm_block): a batch-1 text's,
# whose weights stream from memory while a panel serves only a few strips.
PREFETCH_MAX_ROWS = 4 * MR
WIDE_PREFETCH_MAX_ROWS = 11 * WIDE_MR
SERIAL_BELOW_FLOPS = 8e6  # 2 M N K under this: no threads (their wake-up costs more)

_NO_BIAS = np.zeros(0, dtype=np.float32)
_NO_RESIDUAL = np.zeros((0, 0), dtype=np.float32)


class GemmPlan(NamedTuple):
    """How one GEMM is cut into blocks for the threads; made by `plan_blocks`, read by
    `gemm_run` as a `GEMM_PLAN` record (`plan_record`)."""

    units: int  # units of work: row blocks (a grid) or column units (ranges)
    block_rows: int  # rows per row block
    unit_panels: int  # weight panels per column unit
    k_block: int  # depth of one pass over a tile
    ranges: int  # column ranges, range r owned by thread r; 0: a grid of row blocks
    prefetch: bool  # row blocks ask for the weight panels they need next (see _gemm_block)
    wide: bool  # the micro-kernel's wide tiles (12 x 32), else narrow ones (6 x 16)
    owner_batch: int  # units a range's owner takes at a time (one sweep)
    dot: bool  # bf16 panels: the avx512_bf16 tier's tile (vdpbf16ps), else the storage tier's
    bounds: tuple  # ranges + 1 unit indices: range r is units bounds[r] .. bounds[r + 1] - 1


# A GemmPlan as the kernels read it: the same fields, `bounds` padded to MAX_RANGES + 1.
GEMM_PLAN = np.dtype([("units", np.int64), ("block_rows", np.int64), ("unit_panels", np.int64),
                      ("k_block", np.int64), ("ranges", np.int64), ("prefetch", np.bool_), ("wide", np.bool_),
                      ("owner_batch", np.int64), ("dot", np.bool_), ("bounds", np.int64, (MAX_RANGES + 1,))],
                     align=True)


def plan_records(plans):
    """GemmPlans -> a GEMM_PLAN structured array of the same shape (a list, or nested lists)."""
    def as_tuple(plan):
        return (*plan[:-1], tuple(plan.bounds) + (0,) * (MAX_RANGES + 1 - len(plan.bounds)))

    def convert(value):
        return as_tuple(value) if isinstance(value, GemmPlan) else [convert(item) for item in value]

    return np.array(convert(plans), dtype=GEMM_PLAN)


@functools.lru_cache(maxsize=4096)
def plan_record(plan):
    """One GemmPlan as a GEMM_PLAN record (read-only: shared by every caller)."""
    records = plan_records([plan])
    records.flags.writeable = False
    return records[0]


class PackedWeight:
    """A [K, N] weight cut into 16-column panels, made once at load by `pack_weight`.

    panels: float32 [ceil(N / 16), K, 16], panels[p, k, j] = weight[k, 16 p + j] (0 for
    columns past N); or, packed for precision="bf16", uint16 [ceil(N / 16), ceil(K / 2), 32]:
    the same panels in bfloat16 with the rows of k in interleaved pairs (`bf16.pack_weight_bf16`);
    in_features = K, out_features = N.
    """

    __slots__ = ("panels", "in_features", "out_features")

    def __init__(self, panels, in_features, out_features):
        self.panels = panels
        self.in_features = in_features
        self.out_features = out_features

    @property
    def shape(self):
        """(K, N): the shape of the weight this was packed from."""
        return (self.in_features, self.out_features)

    def __repr__(self):
        return f"PackedWeight(in_features={self.in_features}, out_features={self.out_features})"


def pack_weight(weight, precision="fp32"):
    """Pack a float32 [K, N] weight (the layout of `x @ weight`) into 16-column panels;
    precision="bf16": into bf16 panels (`bf16.pack_weight_bf16`; the weight may be float32 or
    its bf16 bits, uint16).

    >>> packed = pack_weight(np.ones((384, 1536), np.float32))
    >>> packed.panels.shape
    (96, 384, 16)
    """
    if precision == "bf16":
        panels = pack_weight_bf16(weight)
        return PackedWeight(panels, *np.shape(weight))
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"pack_weight: weight must be 2-D [in_features, out_features], got shape {weight.shape}")
    if weight.dtype != np.float32:
        raise TypeError(f"pack_weight: weight must be float32, got {weight.dtype}")
    k, n = weight.shape
    n_panels = -(-n // NR)
    padded = np.zeros((k, n_panels * NR), dtype=np.float32)  # [K, N] -> [K, 16 * panels]
    padded[:, :n] = weight
    panels = np.ascontiguousarray(padded.reshape(k, n_panels, NR).transpose(1, 0, 2))  # -> [panels, K, 16]
    return PackedWeight(panels, k, n)


# ---------------------------------------------------------------------------------------
# The blocked kernel. One task computes C[row0:row1, 16 panel0 : 16 panel1] completely.


@jit(inline="always")
def _epilogue(out, row0, rows, col0, cols, bias, residual, activation_row, gated):
    """out[tile] = activation(out[tile] + bias) + residual for the tile's rows and columns.

    With a gated output (`gated` not empty: a GLU, see `pack_gated_weight`) the tile's
    columns come in pairs of panels, gate then up (col0 and cols multiples of 32), and the
    epilogue writes gated[i, 16 c + j] = activation(gate + bias) * (up + bias) instead."""
    n = out.shape[1]
    has_bias = bias.shape[0] > 0
    has_residual = residual.shape[0] > 0
    # Loops over j in range(cols) on slices: j >= 0 is then evident to LLVM, so it drops
    # the negative-index wraparound and vectorizes the adds.
    bias_tile = bias[col0:col0 + cols] if has_bias else bias
    if gated.shape[0] > 0:
        inner = gated.shape[1]
        for i in range(row0, row0 + rows):
            out_tile = out[i, col0:col0 + cols]
            if has_bias:
                for j in range(cols):
                    out_tile[j] += bias_tile[j]
            for pair0 in range(col0, col0 + cols, 2 * NR):
                first = pair0 // 2  # the pair's first column of the gated output
                width = min(NR, inner - first)
                if width <= 0:
                    break
                if activation_row != 0:
                    call_activation_row(activation_row, out, i * n + pair0, width)
                gate = out[i, pair0:pair0 + width]
                up = out[i, pair0 + NR:pair0 + NR + width]
                gated_row = gated[i, first:first + width]
                for j in range(width):
                    gated_row[j] = gate[j] * up[j]
        return
    for i in range(row0, row0 + rows):
        out_tile = out[i, col0:col0 + cols]
        if has_bias:
            for j in range(cols):
                out_tile[j] += bias_tile[j]
        if activation_row != 0:
            call_activation_row(activation_row, out, i * n + col0, cols)
        if has_residual:
            residual_tile = residual[i, col0:col0 + cols]
            for j in range(cols):
                out_tile[j] += residual_tile[j]


@jit
def _gemm_block(x, x_row0, panels, bias, residual, activation_row, out, out_row0, gated, plan, row0, row1, panel0,
                panel1, prefetch_limit):
    """Compute the block rows row0..row1-1 x panels panel0..panel1-1 of C, C being rows
    out_row0.. of `out` and A rows x_row0.. of x (the residual, if any, is read at out's
    rows); plan: a GEMM_PLAN record. With plan.prefetch, panels up to prefetch_limit may be
    asked into the cache ahead of need.

    The standalone `gemm` has both offsets 0; a program's MLP step (`program.py`) runs the
    feed-forward block on slices of its buffers this way. gated: [0, 0], or a GLU's output
    (see `_epilogue`; panel0 and panel1 are then even).
    """
    k_block = plan.k_block
    prefetch = plan.prefetch
    wide = plan.wide
    dot = plan.dot
    tile_rows = WIDE_MR if wide else MR
    tile_panels = 2 if wide else 1
    sweep_panels = WIDE_PANELS_PER_SWEEP if wide else PANELS_PER_SWEEP
    k = x.shape[1]
    n = out.shape[1]
    # Elements per panel: K * 16 floats, or ceil(K / 2) pair-rows of 32 bf16.
    panel_stride = panels.shape[1] * panels.shape[2]
    strip = new_strip(x, panels)  # bf16 panels: the strips of x rounded to bf16 pairs
    # max(k, 1): with K = 0 one pass of depth 0 still writes the zeros and the epilogue.
    for k0 in range(0, max(k, 1), k_block):
        depth = min(k_block, k - k0)
        last_pass = k0 + k_block >= k
        # Columns in sweeps of sweep_panels panels: a strip of x (6 or 12 rows x up to
        # 768 floats) stays in L1 while it meets each panel of the sweep.
        for sweep0 in range(panel0, panel1, sweep_panels):
            sweep1 = min(panel1, sweep0 + sweep_panels)
            for tile_row in range(row0, row1, tile_rows):
                rows = min(tile_rows, row1 - tile_row)
                # A: x[x_row0 + tile_row:, k0:] (row stride K), or its rounding to bf16 pairs
                a, a_start, lda = strip_operand(x, x_row0 + tile_row, k0, rows, depth, panels, strip)
                out_row = out_row0 + tile_row
                for panel in range(sweep0, sweep1, tile_panels):
                    col0 = panel * NR
                    b_start = panel * panel_stride + k0 * NR  # B: panels[panel, k0:, :] (bf16: k0 / 2 pairs on)
                    c_start = out_row * n + col0  # C: out[out_row:, col0:]
                    cols = min(NR * min(tile_panels, sweep1 - panel), n - col0)
                    # A wide tile's second panel is K * 16 floats on; none past the block's last.
                    b_second = panel_stride if cols > NR else 0
                    # Weights coming from memory (a batch-1 text's layers do not fit in the
                    # cache): the first strip asks for the next panel(s) while on these, on
                    # past the block's end up to prefetch_limit (the thread's next block), so
                    # they arrive during arithmetic. Only the first strip asks: the others
                    # would ask again for lines already on their way.
                    ahead = -1
                    if prefetch and tile_row == row0 and panel + tile_panels < prefetch_limit:
                        ahead = panel + tile_panels
                    prefetch_start = ahead * panel_stride + k0 * NR if ahead >= 0 else -1
                    any_tile(a, a_start, lda, rows, panels, b_start, NR, depth, out, c_start, n, cols, k0 > 0, wide,
                             b_second, prefetch_start, dot)
                if last_pass:  # the finished rows x 64 (128) columns, still in L1
                    sweep_col0 = sweep0 * NR
                    _epilogue(out, out_row, rows, sweep_col0, min(n, sweep1 * NR) - sweep_col0, bias, residual,
                              activation_row, gated)


@jit
def gemm_run(counters, base, thread, plan, x, x_row0, m, panels, bias, residual, activation_row, out, out_row0, gated):
    """One thread's part of C = act(x[x_row0:][:m] @ W + b) + residual into out[out_row0:][:m]
    (plan: a GEMM_PLAN record, `plan_record(plan_blocks(...))`): it claims blocks until none
    are left, and adds each finished unit of work to counters[base + FINISHED] (the caller
    waits for plan.units). counters: int64, counters[base:base + FINISHED + 1] zero at the
    start; `thread`: this thread's index (run_chunks' chunk), 0 <= thread. Any number of
    threads may take part, one included; which thread computes a block never changes its numbers.

    A grid plan (plan.ranges = 0): row blocks, claimed in order from counters[base].
    A range plan (plan.ranges = R): R contiguous runs of column units (plan.unit_panels
    panels each), range r owned by thread r. The owner takes its range's units from the front,
    plan.owner_batch at a time (one sweep: `_gemm_block` keeps the sweep's strips of x in L1
    and prefetches its next sweep); then it takes units of the other ranges from their back,
    one at a time, so a thread that finishes first (cores of a shared host rarely run at
    one speed; a worker may start late) does more of the other's work instead of waiting.
    Both ends claim through one atomic counter per range (`_jit.claim_front` / `claim_back`):
    a unit is taken at most once, and all are taken. gated: see `_epilogue` (the plan's units
    then hold whole pairs of panels: `plan_blocks(..., pairs=True)`).
    """
    n_panels = panels.shape[0]
    if plan.ranges == 0:
        while True:
            task = fetch_add(counters, base, 1)
            if task >= plan.units:
                return
            row0 = task * plan.block_rows
            _gemm_block(x, x_row0, panels, bias, residual, activation_row, out, out_row0, gated, plan, row0,
                        min(m, row0 + plan.block_rows), 0, n_panels, n_panels)
            add_release(counters, base + FINISHED, 1)
    ranges, unit, batch = plan.ranges, plan.unit_panels, plan.owner_batch
    bounds = plan.bounds
    if thread < ranges:  # its own range, from the front
        first, stop = bounds[thread], bounds[thread + 1]
        while True:
            offset, take = claim_front(counters, base + thread, stop - first, batch)
            if take <= 0:
                break
            front = first + offset
            _gemm_block(x, x_row0, panels, bias, residual, activation_row, out, out_row0, gated, plan, 0, m,
                        front * unit, min(n_panels, (front + take) * unit), min(n_panels, stop * unit))
            add_release(counters, base + FINISHED, take)
    for step in range(1, ranges + 1):  # the others' ranges (its own last), from the back
        other = (thread + step) % ranges
        first, stop = bounds[other], bounds[other + 1]
        while True:
            offset = claim_back(counters, base + other, stop - first)
            if offset < 0:
                break
            last = first + offset
            _gemm_block(x, x_row0, panels, bias, residual, activation_row, out, out_row0, gated, plan, 0, m,
                        last * unit, min(n_panels, (last + 1) * unit), min(n_panels, (last + 1) * unit))
            add_release(counters, base + FINISHED, 1)


@jit
def gemm_phase(counters, base, thread, plan, x, x_row0, m, panels, bias, residual, activation_row, out, out_row0,
               gated):
    """`gemm_run` as one phase of a program (kernels/program.py): this thread's part, then the
    wait until every thread's part is done (the next phase reads `out`, or `gated`)."""
    gemm_run(counters, base, thread, plan, x, x_row0, m, panels, bias, residual, activation_row, out, out_row0, gated)
    wait_until_at_least(counters, base + FINISHED, plan.units)


@jit
def _gemm_tasks(x, panels, bias, residual, activation_row, out, gated, plan, counters, first_thread, stop_thread):
    """`gemm_run` as one of the threads of `run_chunks` (first_thread: this thread's index)."""
    gemm_run(counters, 0, first_thread, plan, x, 0, x.shape[0], panels, bias, residual, activation_row, out, 0, gated)


@functools.lru_cache(maxsize=4096)
def plan_blocks(m, n_panels, k, threads, wide, pairs=False, tier="fp32"):
    """How one GEMM is cut into blocks for `threads` threads, with the micro-kernel tiles of
    `wide` (microkernel.py: 12 rows x 2 panels, else 6 rows x 1 panel): a GemmPlan.

    Many rows (more than MAX_BLOCK_ROWS on 2 threads): a grid of row blocks, as even as
    possible in whole tiles, their number a multiple of `threads`, each with all the columns.
    Fewer (up to ~600 rows, a batch-1 text among them): one row block, its columns in units of
    one tile, in one range per thread (see `gemm_run`). Row blocks of at most
    PREFETCH_MAX_ROWS (wide: WIDE_PREFETCH_MAX_ROWS) rows prefetch the weights ahead. K goes
    in the fewest blocks of at most K_BLOCK, evenly. pairs: a gated GEMM's (`gemm_gated`):
    column units of whole pairs of panels (gate and up), so each block's epilogue has both.
    tier: "fp32" (float32 panels), or bf16 panels' "storage" / "avx512_bf16" (`bf16.TIER`):
    their K blocks hold whole pairs of k (an even depth), and avx512_bf16 needs wide tiles.

    >>> plan_blocks(128, 72, 384, 2, True)  # 128 x 1152: 36 units of 2 panels, 18 each
    GemmPlan(units=36, block_rows=132, unit_panels=2, k_block=384, ranges=2, prefetch=True, wide=True, owner_batch=4, dot=False, bounds=(0, 18, 36))
    """
    tile_rows, tile_panels = (WIDE_MR, 2) if wide else (MR, 1)
    if pairs:
        tile_panels = 2  # a column unit holds a gate panel and its up panel
    sweep_panels = WIDE_PANELS_PER_SWEEP if wide else PANELS_PER_SWEEP
    tiles = max(1, -(-m // tile_rows))
    n_row_blocks = -(-tiles // (MAX_BLOCK_ROWS // tile_rows))
    if threads > 1 and n_row_blocks >= threads:
        n_row_blocks = min(tiles, threads * -(-n_row_blocks // threads))
    rows_per_block = tile_rows * -(-tiles // n_row_blocks)
    n_k_blocks = max(1, -(-k // K_BLOCK))
    k_block = max(1, -(-k // n_k_blocks))
    if tier != "fp32":
        k_block += k_block % 2  # a pair of k never straddles two K blocks (K_BLOCK is even)
    dot = tier == "avx512_bf16"
    if dot and not wide:
        raise ValueError("plan_blocks: the avx512_bf16 tier runs on wide tiles only")
    prefetch = rows_per_block <= (WIDE_PREFETCH_MAX_ROWS if wide else PREFETCH_MAX_ROWS)
    wide = bool(wide)
    if m == 0 or n_panels == 0:
        return GemmPlan(0, rows_per_block, n_panels, k_block, 0, False, wide, 1, dot, ())
    if threads > 1 and n_row_blocks == 1:
        units = -(-n_panels // tile_panels)
        ranges = min(threads, MAX_RANGES)
        return GemmPlan(units, rows_per_block, tile_panels, k_block, ranges, prefetch, wide,
                        sweep_panels // tile_panels, dot, tuple(even_bounds(units, ranges)))
    return GemmPlan(-(-m // rows_per_block), rows_per_block, n_panels, k_block, 0, prefetch, wide, 1, dot, ())


# ---------------------------------------------------------------------------------------
# The public functions.


def _check_matrix(name, array, shape):
    """A clear error unless `array` is a C-contiguous float32 ndarray of `shape`."""
    if type(array) is np.ndarray and array.dtype == np.float32 and array.shape == shape and array.flags.c_contiguous:
        return  # the common case, in one test
    if not isinstance(array, np.ndarray):
        raise TypeError(f"gemm: {name} must be a numpy float32 array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise TypeError(f"gemm: {name} must be float32, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"gemm: {name} must have shape {shape}, got {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"gemm: {name} must be C-contiguous (np.ascontiguousarray({name}))")


def _check_inputs(x, k, n, bias, residual, out):
    """Validate the arguments of `gemm` / `gemm_naive`; returns (bias, residual, out) ready."""
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        shape = getattr(x, "shape", None)
        raise ValueError(f"gemm: x must be a float32 [M, K] array with K = {k}, got shape {shape}")
    m = x.shape[0]
    _check_matrix("x", x, (m, k))
    if bias is None:
        bias = _NO_BIAS
    else:
        _check_matrix("bias", bias, (n,))
    if residual is None:
        residual = _NO_RESIDUAL
    else:
        _check_matrix("residual", residual, (m, n))
    if out is None:
        return bias, residual, np.empty((m, n), dtype=np.float32)
    _check_matrix("out", out, (m, n))
    # The kernel writes partial sums into out while x and the residual are still being read.
    if np.may_share_memory(out, x):
        raise ValueError("gemm: out must not overlap x (it is written before x is fully read)")
    if residual.size and np.may_share_memory(out, residual):
        raise ValueError("gemm: out must not overlap residual (it is written before residual is fully read)")
    return bias, residual, out


def tier_of(panels):
    """The tier that runs these panels: "fp32" for float32 ones, `bf16.TIER` for bf16 ones."""
    return bf16.TIER if panels.dtype == np.uint16 else "fp32"


def gemm(x, packed, bias=None, residual=None, activation=None, out=None):
    """out = activation(x @ weight + bias) + residual, with `packed = pack_weight(weight)`.

    x: float32 [M, K] C-contiguous; packed: a PackedWeight of a [K, N] weight;
    bias: float32 [N] or None; residual: float32 [M, N] or None; activation: None or an
    activation's name ("gelu", "gelu_tanh", "relu", "silu", ... see
    `activations.ACTIVATION_CODES`); out: float32 [M, N] to write into, or None for a new
    array (it must not overlap x or residual). Returns out, float32 [M, N].
    Every argument is checked; bad input raises TypeError / ValueError naming it.
    """
    if not isinstance(packed, PackedWeight):
        raise TypeError(f"gemm: packed must be a PackedWeight from pack_weight(weight), got {type(packed).__name__}")
    k, n = packed.in_features, packed.out_features
    bias, residual, out = _check_inputs(x, k, n, bias, residual, out)
    activation_row = activation_row_address(activation_code(activation))
    m = x.shape[0]
    threads = numba.get_num_threads() if 2.0 * m * n * k >= SERIAL_BELOW_FLOPS else 1
    plan = plan_blocks(m, packed.panels.shape[0], k, threads, microkernel.WIDE_TILES, False, tier_of(packed.panels))
    if plan.units == 0:  # M = 0 or N = 0: nothing to compute
        return out
    counters = np.zeros(FINISHED + 1, dtype=np.int64)  # the blocks' claim counters (see gemm_run)
    run_chunks(_gemm_tasks, range(min(threads, plan.units) + 1),
               x, packed.panels, bias, residual, activation_row, out, _NO_RESIDUAL, plan_record(plan), counters)
    return out


# ---------------------------------------------------------------------------------------
# Gated linear units: act(x @ Wg + bg) * (x @ Wu + bu) in one GEMM.


def pack_gated_weight(gate, up, gate_bias=None, up_bias=None):
    """A GLU's gate and up weights (float32 [K, inner] each; biases [inner] or None) as one
    [K, 2 * inner_pad] weight and its bias, inner_pad = inner rounded up to 16: columns in
    pairs of 16, gate chunk c at 32 c .. 32 c + 15 and up chunk c at 32 c + 16 .. 32 c + 31
    (zeros past inner). Packed (`pack_weight`), panel 2 c is gate chunk c and panel 2 c + 1
    up chunk c, so the epilogue that finishes a pair has both halves in L1.
    Returns (weight [K, 2 * inner_pad], bias [2 * inner_pad] or None)."""
    k, inner = gate.shape
    chunks = -(-inner // NR)
    weight = np.zeros((k, chunks, 2, NR), dtype=np.float32)  # [K, chunks, gate | up, 16]
    for half, part in enumerate((gate, up)):
        padded = np.zeros((k, chunks * NR), dtype=np.float32)
        padded[:, :inner] = part
        weight[:, :, half] = padded.reshape(k, chunks, NR)
    bias = None
    if gate_bias is not None:
        bias = np.zeros((chunks, 2, NR), dtype=np.float32)
        for half, part in enumerate((gate_bias, up_bias)):
            padded = np.zeros(chunks * NR, dtype=np.float32)
            padded[:inner] = part
            bias[:, half] = padded.reshape(chunks, NR)
        bias = bias.reshape(-1)
    return weight.reshape(k, -1), bias  # -> [K, 2 * inner_pad], [2 * inner_pad]


def unpack_gated_weight(weight, inner):
    """`pack_gated_weight` undone for a weight or a bias: [..., 2 * inner_pad] -> (gate, up), [..., inner] each."""
    pairs = weight.reshape(*weight.shape[:-1], -1, 2, NR)  # [..., chunks, 2, 16]
    gate = pairs[..., 0, :].reshape(*weight.shape[:-1], -1)[..., :inner]
    up = pairs[..., 1, :].reshape(*weight.shape[:-1], -1)[..., :inner]
    return np.ascontiguousarray(gate), np.ascontiguousarray(up)


def gemm_gated(x, packed, bias=None, activation=None, inner=None, out=None):
    """A GLU: out = activation(x @ Wg + bg) * (x @ Wu + bu), one GEMM whose epilogue forms
    the product, with `packed = pack_weight(pack_gated_weight(gate, up, ...)[0])`.

    x: float32 [M, K] C-contiguous; bias: the packed bias [2 * inner_pad] or None; inner:
    the GLU's width (default: every pair's 16 columns); out: float32 [M, inner] or None.
    Returns out. The NumPy twin is `transformer.model.feed_forward`'s gated branch;
    `gemm_gated_naive` the reference loop.
    """
    if not isinstance(packed, PackedWeight):
        raise TypeError(f"gemm_gated: packed must be a PackedWeight, got {type(packed).__name__}")
    k, n = packed.in_features, packed.out_features
    if n % (2 * NR):
        raise ValueError(f"gemm_gated: the packed weight must have pairs of 16 columns (pack_gated_weight), got {n}")
    inner = n // 2 if inner is None else inner
    if not 0 < inner <= n // 2 or -(-inner // NR) != n // (2 * NR):
        raise ValueError(f"gemm_gated: inner={inner} does not fit a packed weight of {n} columns")
    bias, _, wide = _check_inputs(x, k, n, bias, None, None)  # wide: the [M, 2 * inner_pad] products
    if out is None:
        out = np.empty((x.shape[0], inner), dtype=np.float32)
    _check_matrix("out", out, (x.shape[0], inner))
    activation_row = activation_row_address(activation_code(activation))
    m = x.shape[0]
    threads = numba.get_num_threads() if 2.0 * m * n * k >= SERIAL_BELOW_FLOPS else 1
    plan = plan_blocks(m, packed.panels.shape[0], k, threads, microkernel.WIDE_TILES, True, tier_of(packed.panels))
    if plan.units == 0:
        return out
    counters = np.zeros(FINISHED + 1, dtype=np.int64)
    run_chunks(_gemm_tasks, range(min(threads, plan.units) + 1),
               x, packed.panels, bias, _NO_RESIDUAL, activation_row, wide, out, plan_record(plan), counters)
    return out


# ---------------------------------------------------------------------------------------
# The naive reference: three loops, one dot product per output element.


@jit
def _gemm_naive_loops(x, weight, bias, residual, activation_row, out):
    m, k = x.shape
    n = weight.shape[1]
    for i in range(m):
        for j in range(n):
            acc = np.float32(0.0)
            for p in range(k):
                acc += x[i, p] * weight[p, j]
            if bias.shape[0] > 0:
                acc += bias[j]
            out[i, j] = acc
            if activation_row != 0:  # the same activation loop as gemm's, on one element
                call_activation_row(activation_row, out, i * n + j, 1)
            if residual.shape[0] > 0:
                out[i, j] += residual[i, j]


def gemm_gated_naive(x, gate, up, gate_bias=None, up_bias=None, activation=None):
    """The reference for `gemm_gated`: two `gemm_naive` products, then their product
    element by element. float32 [M, K], [K, inner] twice -> [M, inner]."""
    activated = gemm_naive(x, np.ascontiguousarray(gate), gate_bias, activation=activation)
    return activated * gemm_naive(x, np.ascontiguousarray(up), up_bias)


def gemm_naive(x, weight, bias=None, residual=None, activation=None, out=None):
    """The reference loop for `gemm`, on the unpacked float32 [K, N] weight.

    out[i, j] = activation(sum_p x[i, p] weight[p, j] + bias[j]) + residual[i, j];
    same arguments and checks as `gemm` (with `weight` in place of `packed`). Slow: for tests.
    """
    if not isinstance(weight, np.ndarray) or weight.ndim != 2:
        raise ValueError(f"gemm_naive: weight must be a float32 [K, N] array, got shape {getattr(weight, 'shape', None)}")
    k, n = weight.shape
    _check_matrix("weight", weight, (k, n))
    bias, residual, out = _check_inputs(x, k, n, bias, residual, out)
    _gemm_naive_loops(x, weight, bias, residual, activation_row_address(activation_code(activation)), out)
    return out
