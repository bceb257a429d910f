"""A layer program: every layer's steps as records, run by all the threads in one compiled call.

    program = Program(...)                                  # once per model (its maker:
                                                            #   transformer/numba_backend/program.py)
    plan = ProgramPlan(program, weights, attend, rows, ffn_rows)   # once per group of sequences
    plan.run(program, weights, buffers, first_layer, stop_layer)   # buffers[HIDDEN] updated in place

This module knows kernels, not models: a step reads and writes buffer slots and names weight
slots; what the steps mean (BERT's layer, a pre-norm layer) is decided by whoever writes the
program. Each step is a record (`kind`, `index` into its kind's table of records):

    step       computes                                         by (each thread its items)
    GEMM       target = act(source @ W + b) + residual          gemm.gemm_phase
    ATTENTION  target = attention(source) per (sequence, head)  attention.attention_phase
    NORM       target = LayerNorm(source) or RMSNorm(source)    layernorm.layer_norm_phase, rms_norm_phase
               (+ residual: an RMSNorm of a sublayer's output       layernorm.rms_norm_add_phase
               added to the stream, Gemma 3's post-norms)
    MLP        per block of <= ffn_rows rows:                   gemm.gemm_phase, twice a block
                 inner = act(source[block] @ W_up + b)
                 target[block] = inner @ W_down + b + residual[block]
               gated (a GLU: W_up holds the gate and up weights in pairs of panels,
               gemm.pack_gated_weight), the first GEMM's epilogue writes
                 gated = act(source @ W_gate + b) * (source @ W_up + b)
               and the second reads it

Buffers, a tuple of float32 C-contiguous [rows, width] arrays indexed by slot: EMPTY
([0, 0]: "no residual"), HIDDEN (the layers' input and output), ATTENDED (the residual
stream's other buffer: a GEMM's output may not overlap its residual input), NORMED (a
pre-norm block's normed input), QKV (attention's head-major q_h | k_h | v_h columns),
CONTEXT, INNER ([ffn_rows, intermediate], a GLU's [ffn_rows, 2 * intermediate rounded up
to 16]), SCRATCH ([threads, attention scratch]), GATED (a GLU's [ffn_rows, intermediate]
product; EMPTY's [0, 0] where no MLP is gated).

Attention may turn its queries and keys by rotary angles first (ATTENTION_STEP.rotary: a
row of the plan's rotary tables, -1 none) and see only a sliding window of keys
(window_half, -1 none): see attention._varlen_range. Before that it may RMS-normalise each
head's query and key (query_norm / key_norm: vector slots, 0 none; Qwen3, Gemma 3).

Weights (`Weights`), stacked over the layers, the layer first: panels[slot] float32
[layers, panels, in, 16] (gemm.pack_weight's panels; for precision="bf16" uint16 [layers,
panels, in / 2, 32], bf16.pack_weight_bf16's, run by bf16.TIER), biases[slot] [layers, out] (or
[layers, 0]: a bias-free linear), vectors[slot] [layers, d] (norm weights and biases),
fp32_panels[slot]: the float32 panels of a slot a bf16 model keeps in float32 (its panels[slot]
then empty, [layers, 0, 0, 32]), else empty ([layers, 0, 0, 16]); a step reads a slot's
non-empty ones (`slot_panels`): one tuple of one dtype each, as a compiled loop indexes them.

Why one call: at small batches a layer's work is small and its steps many. Called one by one
from Python, a batch-1 forward pass is dozens of kernel calls, each a Python call, argument
checks and a hand-off to the worker thread that must take the GIL to start; the cores (and
the memory bus the weights stream through) idle in between, and Python's own data, evicted
from the caches by the weights, comes back from memory for every dispatch. Here every thread
runs every step of every layer inside one nogil call: a thread claims a step's work items
from an atomic counter (`fetch_add`), counts each one finished (`add_release`), and at the
end of the step waits, spinning, until all of them are (`wait_until_at_least`) -- the next
step reads what the others wrote. Any number of threads may take part, one included; a late
thread finds the early steps done and catches up. Which thread computes an item never
changes its numbers, and `run_program_steps` (the same program, kernel by kernel from
Python) gives the same bits.
"""

import inspect
from typing import NamedTuple

import numpy as np

from . import microkernel
from ._jit import PHASE_COUNTERS, even_bounds, jit, numba, run_chunks
from .activations import activation_name
from .attention import attention_phase, balanced_bounds, scratch_floats
from .gemm import NR, PackedWeight, gemm, gemm_gated, gemm_phase, plan_blocks, plan_records, tier_of
from .layernorm import (layer_norm_bounds, layer_norm_checked, layer_norm_phase, rms_norm_add_checked,
                        rms_norm_add_phase, rms_norm_checked, rms_norm_phase)

# Step kinds.
GEMM, ATTENTION, NORM, MLP = range(4)
STEP_NAMES = ("GEMM", "ATTENTION", "NORM", "MLP")

# Buffer slots.
EMPTY, HIDDEN, ATTENDED, NORMED, QKV, CONTEXT, INNER, SCRATCH, GATED = range(9)
BUFFER_NAMES = ("EMPTY", "HIDDEN", "ATTENDED", "NORMED", "QKV", "CONTEXT", "INNER", "SCRATCH", "GATED")

# The records. Buffer fields hold slots; `linear`, `up`, `down` slots of Weights.panels and
# .biases; `weight`, `bias` slots of Weights.vectors; `activation` an activations code and
# `activation_row` its row loop's address (activations.activation_row_address; 0: none).
STEP = np.dtype([("kind", np.int64), ("index", np.int64)], align=True)
GEMM_STEP = np.dtype([("linear", np.int64), ("source", np.int64), ("target", np.int64), ("residual", np.int64),
                      ("activation", np.int64), ("activation_row", np.int64)], align=True)
# ATTENTION's table_ld: the row length of DeBERTa's projected tables (Weights.position_keys /
# position_queries, kernels/disentangled.py); 0 when the step adds no disentangled terms.
ATTENTION_STEP = np.dtype([("source", np.int64), ("target", np.int64), ("num_heads", np.int64), ("kv_heads", np.int64),
                           ("head_dim", np.int64), ("scale", np.float32), ("position_bias", np.bool_),
                           ("window_half", np.int64), ("rotary", np.int64), ("causal", np.int64),
                           ("table_ld", np.int64), ("query_norm", np.int64), ("key_norm", np.int64),
                           ("norm_eps", np.float32), ("norm_offset", np.float32)], align=True)
NORM_STEP = np.dtype([("weight", np.int64), ("bias", np.int64), ("source", np.int64), ("target", np.int64),
                      ("eps", np.float32), ("rms", np.int64), ("offset", np.float32), ("residual", np.int64)],
                     align=True)  # residual: EMPTY, or the stream an RMSNorm's output is added to
MLP_STEP = np.dtype([("up", np.int64), ("down", np.int64), ("source", np.int64), ("inner", np.int64),
                     ("target", np.int64), ("residual", np.int64), ("activation", np.int64),
                     ("activation_row", np.int64), ("gated", np.int64)], align=True)

_NO_FLAT = np.zeros(0, dtype=np.float32)  # flat_buffers' entry for a buffer read as 2-D only
_NO_TABLES = np.zeros((1, 0, 0), dtype=np.float32)  # GroupPlan's rotary tables where no step rotates

# A GEMM's plan per row regime: every row of the group, a whole feed-forward block, the last
# (shorter) block.
ALL_ROWS, BLOCK, LAST_BLOCK = range(3)
ATTENTION_RUNS_PER_THREAD = 6  # the attention step's work items: runs of (sequence, head) pairs


class Program(NamedTuple):
    """Every layer's steps: layer l is steps[layer_steps[l]:layer_steps[l + 1]]; each step's
    record is in the table of its kind (gemms, attentions, norms, mlps) at its index."""

    layer_steps: np.ndarray  # int64 [layers + 1]
    steps: np.ndarray  # STEP [steps]
    gemms: np.ndarray  # GEMM_STEP [...]
    attentions: np.ndarray  # ATTENTION_STEP [...]
    norms: np.ndarray  # NORM_STEP [...]
    mlps: np.ndarray  # MLP_STEP [...]


class Weights(NamedTuple):
    """The weights a program reads, by slot (see the module docstring)."""

    panels: tuple  # float32 [layers, panels, in, 16] each
    biases: tuple  # float32 [layers, out] or [layers, 0] each
    vectors: tuple  # float32 [layers, d] each
    position_keys: np.ndarray  # float32 [layers, heads * head_dim * table_ld]: DeBERTa's c2p tables, or [layers, 0]
    position_queries: np.ndarray  # float32 [layers, heads * head_dim * table_ld]: its p2c tables, or [layers, 0]
    fp32_panels: tuple = ()  # float32 [layers, panels, in, 16] each, or [layers, 0, 0, 16]; () as panels


def slot_panels(weights, slot):
    """The panels a step reads for linear `slot`: its float32 ones where a bf16 model keeps the
    slot in float32 (Weights.fp32_panels), else weights.panels[slot]."""
    if weights.fp32_panels and weights.fp32_panels[slot].shape[1]:
        return weights.fp32_panels[slot]
    return weights.panels[slot]


class GroupPlan(NamedTuple):
    """What the steps need besides the program, weights and buffers, for one group of sequences."""

    gemm_plans: np.ndarray  # gemm.GEMM_PLAN [linear slots, 3 row regimes]
    attention_bounds: np.ndarray  # int64: runs of (sequence, head) items (attention.attention_phase)
    head_ranges: np.ndarray  # int64: the heads each thread's QKV columns hold (empty: none)
    norm_bounds: np.ndarray  # int64: runs of rows for the NORM steps
    cu_seqlens: np.ndarray  # int64 [sequences + 1]
    position_bias: np.ndarray  # float32 flat [heads * bias_len * bias_len] or empty
    no_position_bias: np.ndarray  # float32 [0]: for the attention steps that add none
    bias_len: int
    positions: np.ndarray  # int64 [rows]: each token's row / column of the position bias
    rotary_cos: np.ndarray  # float32 [rotary schemes, positions, half], or [0, 0, 0]
    rotary_sin: np.ndarray  # likewise
    no_rotary: np.ndarray  # float32 [0, 0]: for the attention steps that rotate nothing
    rotary_positions: np.ndarray  # int64 [rows]: each token's position (its slot in the padded row)
    max_len: int  # the longest sequence
    ffn_rows: int  # rows per MLP block
    wide: bool  # the micro-kernel's tiles, for attention as for the GEMMs
    rows_of: np.ndarray  # int64 [2 * max_len - 1]: DeBERTa's table row per distance (attention.VarlenPlan), or [0]


def layer_phases(program, layer, rows, ffn_rows):
    """How many phases (each with its own counters) layer `layer` of `program` takes on `rows` rows."""
    kinds = program.steps["kind"][program.layer_steps[layer]:program.layer_steps[layer + 1]]
    blocks = -(-rows // ffn_rows)
    return int(np.sum(np.where(kinds == MLP, 2 * blocks, 1)))


@jit
def _run_layers(layer_steps, steps, gemms, attentions, norms, mlps,
                gemm_plans, attention_bounds, head_ranges, norm_bounds, cu_seqlens, position_bias, no_position_bias,
                bias_len, positions, rotary_cos, rotary_sin, no_rotary, rotary_positions, max_len, ffn_rows, wide,
                rows_of, panels, biases, vectors, position_keys, position_queries, fp32_panels,
                buffers, flat_buffers, counters, first_layer, stop_layer, first_thread, stop_thread):
    """Every step of layers first_layer..stop_layer-1, layer after layer, as one of the threads
    taking part (first_thread: its index). A step ends when every thread is done with it, so
    the next step (and the next layer) reads finished buffers.

    The arguments are the fields of Program, GroupPlan and Weights, in their order (passed one
    by one: Numba dispatches flat arguments faster than nested named tuples), then the
    buffers, flat_buffers (the buffers attention reads, as 1-D views: a reshape here would
    link NumPy's allocating array code into the kernel; the others empty), counters (int64
    [layers run, phases * PHASE_COUNTERS], zero) and the layers to run."""
    rows = buffers[HIDDEN].shape[0]
    no_residual = buffers[EMPTY]
    scratch = buffers[SCRATCH][first_thread]
    for layer in range(first_layer, stop_layer):
        layer_counters = counters[layer - first_layer]
        phase = 0
        for s in range(layer_steps[layer], layer_steps[layer + 1]):
            step = steps[s]
            base = phase * PHASE_COUNTERS
            if step.kind == GEMM:
                g = gemms[step.index]
                if fp32_panels[g.linear].shape[1]:  # a slot kept in float32 (Weights.fp32_panels)
                    gemm_phase(layer_counters, base, first_thread, gemm_plans[g.linear, ALL_ROWS], buffers[g.source],
                               0, rows, fp32_panels[g.linear][layer], biases[g.linear][layer],
                               buffers[g.residual], g.activation_row, buffers[g.target], 0, no_residual)
                else:
                    gemm_phase(layer_counters, base, first_thread, gemm_plans[g.linear, ALL_ROWS], buffers[g.source],
                               0, rows, panels[g.linear][layer], biases[g.linear][layer],
                               buffers[g.residual], g.activation_row, buffers[g.target], 0, no_residual)
                phase += 1
            elif step.kind == ATTENTION:
                a = attentions[step.index]
                bias = position_bias if a.position_bias else no_position_bias
                cos, sin = (rotary_cos[a.rotary], rotary_sin[a.rotary]) if a.rotary >= 0 else (no_rotary, no_rotary)
                attention_phase(layer_counters, base, first_thread, attention_bounds, head_ranges,
                                flat_buffers[a.source], buffers[a.target].shape[1], cu_seqlens, a.num_heads,
                                a.kv_heads, a.head_dim, a.scale, bias, bias_len, positions, flat_buffers[a.target],
                                max_len, scratch, wide, a.window_half, a.causal, cos, sin, rotary_positions,
                                position_keys[layer], position_queries[layer], a.table_ld, rows_of,
                                vectors[a.query_norm][layer], vectors[a.key_norm][layer], a.norm_eps, a.norm_offset)
                phase += 1
            elif step.kind == NORM:
                n = norms[step.index]
                if n.residual != EMPTY:
                    rms_norm_add_phase(layer_counters, base, norm_bounds, buffers[n.source], vectors[n.weight][layer],
                                       n.eps, n.offset, buffers[n.residual], buffers[n.target])
                elif n.rms:
                    rms_norm_phase(layer_counters, base, norm_bounds, buffers[n.source], vectors[n.weight][layer],
                                   n.eps, n.offset, buffers[n.target])
                else:
                    layer_norm_phase(layer_counters, base, norm_bounds, buffers[n.source], vectors[n.weight][layer],
                                     vectors[n.bias][layer], n.eps, buffers[n.target])
                phase += 1
            else:  # MLP, ffn_rows rows at a time (each row is independent)
                m = mlps[step.index]
                source, inner, target, residual = buffers[m.source], buffers[m.inner], buffers[m.target], \
                    buffers[m.residual]
                gated = buffers[m.gated]  # a GLU's product (the down GEMM's input), or EMPTY
                down_input = gated if m.gated != EMPTY else inner
                up_fp32, down_fp32 = fp32_panels[m.up].shape[1] > 0, fp32_panels[m.down].shape[1] > 0
                for block0 in range(0, rows, ffn_rows):
                    block_rows = min(ffn_rows, rows - block0)
                    regime = BLOCK if block_rows == ffn_rows else LAST_BLOCK
                    if up_fp32:
                        gemm_phase(layer_counters, phase * PHASE_COUNTERS, first_thread, gemm_plans[m.up, regime],
                                   source, block0, block_rows, fp32_panels[m.up][layer], biases[m.up][layer],
                                   no_residual, m.activation_row, inner, 0, gated)
                    else:
                        gemm_phase(layer_counters, phase * PHASE_COUNTERS, first_thread, gemm_plans[m.up, regime],
                                   source, block0, block_rows, panels[m.up][layer], biases[m.up][layer],
                                   no_residual, m.activation_row, inner, 0, gated)
                    if down_fp32:
                        gemm_phase(layer_counters, (phase + 1) * PHASE_COUNTERS, first_thread,
                                   gemm_plans[m.down, regime], down_input, 0, block_rows, fp32_panels[m.down][layer],
                                   biases[m.down][layer], residual, 0, target, block0, no_residual)
                    else:
                        gemm_phase(layer_counters, (phase + 1) * PHASE_COUNTERS, first_thread,
                                   gemm_plans[m.down, regime], down_input, 0, block_rows, panels[m.down][layer],
                                   biases[m.down][layer], residual, 0, target, block0, no_residual)
                    phase += 2


# _run_layers takes the fields of Program, GroupPlan and Weights by name, in their order.
assert tuple(inspect.signature(_run_layers.py_func).parameters)[:len(Program._fields + GroupPlan._fields +
                                                                      Weights._fields)] == \
    Program._fields + GroupPlan._fields + Weights._fields, "_run_layers' parameters and the records' fields differ"


def head_ranges(qkv_plan, num_heads, head_dim, kv_heads=None):
    """int64 [ranges + 1]: the heads each thread's column range of the QKV GEMM (a GemmPlan)
    computes whole (head h's q | k | v columns are 3 * head_dim from h * 3 * head_dim: the
    QKV weight is packed head-major; with grouped-query attention a group's G query heads,
    key and value are (G + 2) * head_dim), a head going to the range its group's middle
    column falls in; empty when the GEMM has no column ranges (many rows: row blocks)."""
    if qkv_plan.ranges == 0:
        return np.zeros(0, dtype=np.int64)
    group = num_heads // (num_heads if kv_heads is None else kv_heads)
    column_bounds = np.array(qkv_plan.bounds) * qkv_plan.unit_panels * NR  # units -> panels -> columns
    middles = (np.arange(num_heads) // group + 0.5) * (group + 2) * head_dim  # each head's group's middle column
    owners = np.searchsorted(column_bounds[1:], middles, side="right")  # the range each falls in
    return np.searchsorted(owners, np.arange(qkv_plan.ranges + 1), side="left").astype(np.int64)  # [ranges + 1]


class ProgramPlan:
    """How a program's steps are cut into work items for one group of sequences: each GEMM's
    blocking per row regime, the attention and LayerNorm items, the counters' size. Made once
    per group (and kept for groups of the same lengths), used by every layer.

    program: the Program; weights: its Weights (for the GEMMs' shapes); attend: the group's
    `attention.VarlenPlan` (sequence bounds, heads, position bias; head-major qkv); rows: the
    group's tokens; ffn_rows: rows per MLP block; rotary: (cos, sin) float32 [rotary schemes,
    positions, half] for the attention steps' `rotary` rows, or None.
    """

    def __init__(self, program, weights, attend, rows, ffn_rows, rotary=None):
        threads = numba.get_num_threads()
        self.threads, self.attend, self.rows, self.ffn_rows = threads, attend, rows, ffn_rows
        wide = microkernel.WIDE_TILES
        last_rows = rows - (-(-rows // ffn_rows) - 1) * ffn_rows  # the last feed-forward block's rows
        regime_rows = {ALL_ROWS: rows, BLOCK: min(rows, ffn_rows), LAST_BLOCK: last_rows}
        uses = {}  # linear slot -> its row regimes
        for g in program.gemms:
            uses.setdefault(int(g["linear"]), set()).add(ALL_ROWS)
        for m in program.mlps:
            for slot in (int(m["up"]), int(m["down"])):
                uses.setdefault(slot, set()).update((BLOCK, LAST_BLOCK))
        # a GLU's gate and up weights: units of whole pairs of panels (gemm.plan_blocks)
        paired = {int(m["up"]) for m in program.mlps if m["gated"] != EMPTY}
        empty = plan_blocks(0, 0, 0, threads, wide)
        plans = [[empty] * 3 for _ in weights.panels]
        for slot, regimes in uses.items():
            panels = slot_panels(weights, slot)
            _, n_panels, rows_of_k, row_width = panels.shape  # [layers, panels, in, 16] (bf16: in / 2, 32)
            k = rows_of_k * row_width // NR  # in (bf16: rounded up to even)
            for regime in regimes:
                # No serial cut-off for small products here: the hand-off it avoids is not paid.
                plans[slot][regime] = plan_blocks(regime_rows[regime], n_panels, k, threads, wide, slot in paired,
                                                  tier_of(panels))
        self.gemm_plans = plans  # [slot][regime] GemmPlans
        if len(program.attentions):
            if not attend.head_major:
                raise ValueError("ProgramPlan: the attention plan must be for head-major qkv columns "
                                 "(VarlenPlan head_major)")
            qkv_slots = {int(g["linear"]) for g, step in _steps_feeding(program, QKV)}
            # Where the QKV GEMM gives each thread a range of columns (a batch-1 text), each
            # thread attends the heads whose columns it computed (see attention.attention_phase);
            # else the items go in ATTENTION_RUNS_PER_THREAD runs per thread, balanced by cost.
            qkv_plan = plans[min(qkv_slots)][ALL_ROWS] if qkv_slots else empty
            ranges = head_ranges(qkv_plan, attend.num_heads, attend.head_dim, attend.kv_heads)
        else:
            ranges = np.zeros(0, dtype=np.int64)
        lengths = np.diff(attend.cu_seqlens)
        costs = np.repeat(lengths.astype(np.float64) ** 2 * attend.head_dim * 4 + 1.0, attend.num_heads)
        runs = max(1, min(len(costs), ATTENTION_RUNS_PER_THREAD * threads))
        self.phases = max(layer_phases(program, layer, rows, ffn_rows) for layer in range(len(program.layer_steps) - 1))
        # Which buffers attention reads as 1-D views (the others get an empty one), and the
        # kernel's leading arguments, made once: every call passes the same ones.
        self.flat_slots = frozenset(int(a[field]) for a in program.attentions for field in ("source", "target"))
        self.group = GroupPlan(
            gemm_plans=plan_records(plans),
            attention_bounds=np.array(balanced_bounds(costs, runs), dtype=np.int64),
            head_ranges=ranges,
            norm_bounds=np.array(even_bounds(rows, max(1, min(rows, 2 * threads))), dtype=np.int64),  # 2 runs per thread
            cu_seqlens=attend.cu_seqlens, position_bias=attend.bias, no_position_bias=np.zeros(0, np.float32),
            bias_len=attend.bias_len, positions=attend.positions,
            rotary_cos=_NO_TABLES if rotary is None else rotary[0], rotary_sin=_NO_TABLES if rotary is None else rotary[1],
            no_rotary=_NO_TABLES[0], rotary_positions=attend.rotary_positions,
            max_len=attend.max_len, ffn_rows=ffn_rows, wide=wide, rows_of=attend.rows_of)

    @property
    def attention_scratch_shape(self):
        """(threads, floats): the SCRATCH buffer `run` takes, a row for each thread."""
        return self.threads, scratch_floats(self.attend.max_len, self.attend.head_dim) + self.attend.position_floats

    def run(self, program, weights, buffers, first_layer, stop_layer):
        """Layers first_layer..stop_layer-1 of `program` on the group, in one call: buffers[HIDDEN]
        updated in place (buffers: a tuple by slot; the others are scratch, SCRATCH of
        `attention_scratch_shape`)."""
        counters = np.zeros((stop_layer - first_layer, self.phases * PHASE_COUNTERS), dtype=np.int64)
        flat = [_NO_FLAT] * len(buffers)
        for slot in self.flat_slots:
            flat[slot] = buffers[slot].reshape(-1)
        if not weights.fp32_panels:  # no slot kept in float32: an empty one for every slot
            empty = np.zeros((len(weights.biases[0]), 0, 0, NR), dtype=np.float32)
            weights = weights._replace(fp32_panels=(empty,) * len(weights.panels))
        run_chunks(_run_layers, range(self.threads + 1), *program, *self.group, *weights, buffers, tuple(flat),
                   counters, first_layer, stop_layer)


def _steps_feeding(program, slot):
    """(GEMM record, step) pairs of the GEMM steps that write buffer `slot`."""
    for step in program.steps:
        if step["kind"] == GEMM:
            g = program.gemms[step["index"]]
            if g["target"] == slot:
                yield g, step


def run_program_steps(program, weights, buffers, attend, ffn_rows, first_layer, stop_layer, rotary=None):
    """`ProgramPlan.run` kernel by kernel from Python (the standalone gemm, attention and
    LayerNorm): the same steps, the same numbers bit for bit; slower (a Python call and a
    thread hand-off per kernel), for tests and for reading. attend: the group's VarlenPlan;
    rotary: ProgramPlan's."""
    rows = buffers[HIDDEN].shape[0]
    norm_bounds = None
    for layer in range(first_layer, stop_layer):
        for step in program.steps[program.layer_steps[layer]:program.layer_steps[layer + 1]]:
            kind, index = int(step["kind"]), int(step["index"])
            if kind == GEMM:
                g = program.gemms[index]
                _gemm_step(weights, layer, g["linear"], buffers[g["source"]], buffers[g["target"]],
                           buffers[g["residual"]], g["activation"])
            elif kind == ATTENTION:
                a = program.attentions[index]
                tables = None if a["rotary"] < 0 else (rotary[0][a["rotary"]], rotary[1][a["rotary"]])
                position_tables = (weights.position_keys[layer], weights.position_queries[layer], int(a["table_ld"]))
                norms = [weights.vectors[a[name]][layer] if a[name] else None for name in ("query_norm", "key_norm")]
                attend(buffers[a["source"]], out=buffers[a["target"]], window_half=int(a["window_half"]),
                       rotary=tables, causal=bool(a["causal"]), scale=a["scale"],
                       position_tables=position_tables if a["table_ld"] else None,
                       head_norms=(*norms, a["norm_eps"], a["norm_offset"]) if any(w is not None for w in norms)
                       else None)
            elif kind == NORM:
                n = program.norms[index]
                source = buffers[n["source"]]
                if norm_bounds is None:
                    norm_bounds = layer_norm_bounds(rows, source.shape[1])  # the thread split, once
                if n["residual"] != EMPTY:
                    rms_norm_add_checked(source, weights.vectors[n["weight"]][layer], n["eps"], n["offset"],
                                         buffers[n["residual"]], buffers[n["target"]], norm_bounds)
                elif n["rms"]:
                    rms_norm_checked(source, weights.vectors[n["weight"]][layer], n["eps"], n["offset"],
                                     buffers[n["target"]], norm_bounds)
                else:
                    layer_norm_checked(source, weights.vectors[n["weight"]][layer], weights.vectors[n["bias"]][layer],
                                       n["eps"], buffers[n["target"]], norm_bounds)
            else:
                m = program.mlps[index]
                source, inner, target, residual = (buffers[m[name]] for name in ("source", "inner", "target", "residual"))
                gated = buffers[m["gated"]] if m["gated"] != EMPTY else None
                for block0 in range(0, rows, ffn_rows):
                    block = slice(block0, min(rows, block0 + ffn_rows))
                    block_inner = inner[:block.stop - block.start]
                    if gated is None:
                        _gemm_step(weights, layer, m["up"], source[block], block_inner, buffers[EMPTY], m["activation"])
                    else:
                        block_inner = gated[:block.stop - block.start]
                        _gated_step(weights, layer, m["up"], source[block], block_inner, m["activation"])
                    _gemm_step(weights, layer, m["down"], block_inner, target[block],
                               residual[block] if residual.size else residual, None)


def _gemm_step(weights, layer, slot, x, out, residual, activation):
    """out = act(x @ W + b) + residual with the weights of `slot` at `layer`, by `gemm.gemm`."""
    panels = slot_panels(weights, slot)[layer]  # [panels, in, 16]
    bias = weights.biases[slot][layer]
    packed = PackedWeight(panels, x.shape[1], out.shape[1])
    gemm(x, packed, bias if bias.size else None, residual if residual.size else None,
         activation=None if activation is None else activation_name(activation), out=out)


def _gated_step(weights, layer, slot, x, out, activation):
    """out = act(x @ W_gate + b) * (x @ W_up + b) with the paired weights of `slot` at `layer`,
    by `gemm.gemm_gated`."""
    panels = slot_panels(weights, slot)[layer]  # [panels, in, 16]
    bias = weights.biases[slot][layer]
    packed = PackedWeight(panels, x.shape[1], panels.shape[0] * NR)
    gemm_gated(x, packed, bias if bias.size else None, activation_name(activation), out.shape[1], out=out)


def describe(program, layer=0, linear_names=None):
    """Layer `layer`'s steps as text, one a line: what the program does, for people.
    linear_names: the weight slots' names (default W[0], W[1], ...).

    >>> print(describe(program, linear_names=["qkv", "attention_output", "intermediate", "output"]))
    GEMM       QKV = HIDDEN @ W[qkv] + b
    ATTENTION  CONTEXT = attention(QKV)
    ..."""
    def weight(slot):
        return f"W[{slot if linear_names is None else linear_names[slot]}]"

    def buffer(slot):
        return BUFFER_NAMES[slot]

    lines = []
    for step in program.steps[program.layer_steps[layer]:program.layer_steps[layer + 1]]:
        kind, index = int(step["kind"]), int(step["index"])
        name = STEP_NAMES[kind].ljust(10)
        if kind == GEMM:
            g = program.gemms[index]
            product = f"{buffer(g['source'])} @ {weight(g['linear'])} + b"
            if g["activation_row"]:
                product = f"{activation_name(g['activation'])}({product})"
            residual = "" if g["residual"] == EMPTY else f" + {buffer(g['residual'])}"
            lines.append(f"{name} {buffer(g['target'])} = {product}{residual}")
        elif kind == ATTENTION:
            a = program.attentions[index]
            side = "back" if a["causal"] else "either side"
            extras = (["q/k RMSNorm"] if a["query_norm"] or a["key_norm"] else []) + \
                ([f"rotary[{a['rotary']}]"] if a["rotary"] >= 0 else []) + (["causal"] if a["causal"] else []) + \
                ([f"window {a['window_half']} {side}"] if a["window_half"] >= 0 else [])
            source = "; ".join([buffer(a["source"]), ", ".join(extras)] if extras else [buffer(a["source"])])
            terms = "  (scores + c2p + p2c)" if a["table_ld"] else ""  # DeBERTa's disentangled terms
            lines.append(f"{name} {buffer(a['target'])} = attention({source}){terms}")
        elif kind == NORM:
            n = program.norms[index]
            kind = "RMSNorm" if n["rms"] else "LayerNorm"
            residual = "" if n["residual"] == EMPTY else f"{buffer(n['residual'])} + "
            lines.append(f"{name} {buffer(n['target'])} = {residual}{kind}({buffer(n['source'])})")
        else:
            m = program.mlps[index]
            act = activation_name(m["activation"])
            if m["gated"] != EMPTY:  # a GLU: W[up] holds the gate and up halves
                inner = f"{act}({buffer(m['source'])} @ {weight(m['up'])}.gate + b) * ({buffer(m['source'])} @ " \
                        f"{weight(m['up'])}.up + b)"
            else:
                inner = f"{act}({buffer(m['source'])} @ {weight(m['up'])} + b)"
            residual = "" if m["residual"] == EMPTY else f" + {buffer(m['residual'])}"
            lines.append(f"{name} {buffer(m['target'])} = {inner} @ {weight(m['down'])} + b{residual}")
    return "\n".join(lines)
