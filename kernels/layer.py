"""The encoder layers in one compiled call: the layer loop of `forward.py` as phases.

    plan = LayerPlan(attend, rows, config, ffn_rows, stack)   # once per group of sequences
    plan.run(stack, 0, len(stack), hidden, qkv, context, attended, inner, attention_scratch)
                                        # every layer, hidden updated in place

The same steps, the same kernels, the same numbers (bit for bit) as calling them one by one
(`forward.encoder_layer_steps`):

    phase  what                                          work items, claimed by any thread
    0      qkv = hidden @ W_qkv + b                      GEMM blocks (`gemm.gemm_run`)
    1      context = attention(qkv)                      (sequence, head) pairs: each thread
                                                         those of the heads its QKV columns hold
                                                         (a batch-1 text), else runs of pairs
    2      attended = context @ W_o + b + hidden         GEMM blocks
    3      attended = LayerNorm(attended)                runs of rows
    4, 5   per feed-forward block of <= FFN_ROWS rows:
             inner = act(attended[block] @ W_i + b)     GEMM blocks
             hidden[block] = inner @ W_o2 + b + attended[block]
    last   hidden = LayerNorm(hidden)                    runs of rows

Each layer's phases run in turn, layer after layer (`_layers_phases`), the weights taken from
the model's `forward.LayerStack` (one array per kind, the layer first).

Why one call: at small batches a layer's work is small and its steps many. Called one by one
(from Python), a batch-1 forward pass on 16 tokens is ~43 kernel calls, each a Python call,
argument checks and a hand-off to the worker thread that must take the GIL to start; the
cores (and the memory bus the weights stream through) idle in between. Even one call per
layer paid 50-150 us at each layer's start and end (measured inside the call, MiniLM at 128
tokens): Python's own data, evicted from the caches by the weights streaming through, comes
back from memory for the dispatch of ~40 arguments, and the worker waits for the GIL. Here
every thread runs all the phases of all the layers inside one nogil call: a thread claims a
phase's work items from an atomic counter (`fetch_add`), counts each one finished
(`add_release`), and at the end of the phase waits, spinning, until all of them are
(`wait_until_at_least`) -- the next phase reads what the others wrote. Any number of
threads may take part, one included; a late thread finds the early phases done and catches
up. Which thread computes an item never changes its numbers.
"""

import numpy as np

from . import microkernel
from ._jit import (add_release, claim_back, claim_front, even_bounds, fetch_add, jit, numba, run_chunks,
                   wait_until_at_least)
from .activations import activation_code, activation_row_address
from .attention import _balanced_bounds, _varlen_range, scratch_floats
from .gemm import _NO_RESIDUAL, _RANGES, FINISHED, NR, _plan_blocks, gemm_run
from .layernorm import _layer_norm_range

# A phase's counters, at phase * _COUNTER_STRIDE: items claimed at _CLAIMED (or one claim
# counter per range from 0: gemm.gemm_run, _attention_phase), items finished at FINISHED.
_COUNTER_STRIDE = 16  # 128 bytes: each phase's counters on cache lines of their own
_CLAIMED = 0
ATTENTION_RUNS_PER_THREAD = 6  # the attention phase's work items: runs of (sequence, head) pairs


@jit
def _gemm_phase(counters, phase, plan, thread, x, x_row0, m, panels, bias, residual, activation_row, out, out_row0):
    """One GEMM phase: this thread's part of out[out_row0:][:m] = act(x[x_row0:][:m] @ W + b) +
    residual (`gemm.gemm_run`; plan: int64 [gemm.PLAN_SIZE] from `gemm._plan_blocks`), then
    the wait for the other threads' parts."""
    base = phase * _COUNTER_STRIDE
    gemm_run(counters, base, thread, plan, x, x_row0, m, panels, bias, residual, activation_row, out, out_row0)
    wait_until_at_least(counters, base + FINISHED, plan[0])


@jit
def _layer_norm_phase(counters, phase, bounds, x, weight, bias, eps):
    """One LayerNorm phase, in place: runs of rows bounds[t]..bounds[t + 1] - 1."""
    base = phase * _COUNTER_STRIDE
    n_tasks = bounds.shape[0] - 1
    while True:
        task = fetch_add(counters, base + _CLAIMED, 1)
        if task >= n_tasks:
            break
        _layer_norm_range(x, weight, bias, eps, x, bounds[task], bounds[task + 1])
        add_release(counters, base + FINISHED, 1)
    wait_until_at_least(counters, base + FINISHED, n_tasks)


@jit
def _attention_phase(counters, phase, thread, attention_bounds, head_ranges, qkv_flat, width, cu_seqlens, num_heads,
                     head_dim, scale, position_bias, bias_len, positions, context_flat, max_len, scratch, wide):
    """The attention phase: context = attention(qkv) for every (sequence, head), qkv's columns
    head-major (attention.VarlenPlan's head_major), then the wait for the other threads.

    head_ranges int64 [ranges + 1] (not empty): thread t owns heads head_ranges[t] ..
    head_ranges[t + 1] - 1, of every sequence: the heads whose q | k | v columns its own
    QKV GEMM range computed, so they are in its own cache. It takes its (head, sequence)
    items from the front, then the others' from their back (`_jit.claim_front` /
    `claim_back`). Empty: items (sequence major) in the runs attention_bounds[r] ..
    attention_bounds[r + 1] - 1, claimed in order by any thread.
    """
    base = phase * _COUNTER_STRIDE
    batch = cu_seqlens.shape[0] - 1
    ranges = head_ranges.shape[0] - 1
    if ranges <= 0:
        n_runs = attention_bounds.shape[0] - 1
        while True:
            run = fetch_add(counters, base + _CLAIMED, 1)
            if run >= n_runs:
                break
            _varlen_range(qkv_flat, width, True, cu_seqlens, num_heads, head_dim, scale, position_bias, bias_len,
                          positions, context_flat, max_len, scratch, wide, attention_bounds[run],
                          attention_bounds[run + 1])
            add_release(counters, base + FINISHED, 1)
        wait_until_at_least(counters, base + FINISHED, n_runs)
        return
    for step in range(ranges + 1):  # its own range from the front (step 0), then the others' from their back
        owner = (thread + step) % ranges
        if step == 0 and thread >= ranges:
            continue
        first_head = head_ranges[owner]
        units = (head_ranges[owner + 1] - first_head) * batch
        while True:
            if step == 0:
                unit, count = claim_front(counters, base + owner, units, 1)
                if count <= 0:
                    break
            else:
                unit = claim_back(counters, base + owner, units)
                if unit < 0:
                    break
            head = first_head + unit // batch
            item = (unit % batch) * num_heads + head  # _varlen_range's numbering: sequence major
            _varlen_range(qkv_flat, width, True, cu_seqlens, num_heads, head_dim, scale, position_bias, bias_len,
                          positions, context_flat, max_len, scratch, wide, item, item + 1)
            add_release(counters, base + FINISHED, 1)
    wait_until_at_least(counters, base + FINISHED, num_heads * batch)


@jit
def _layers_phases(hidden, qkv, context, attended, inner, qkv_flat, context_flat, attention_scratch,
                   qkv_panels, qkv_bias, output1_panels, output1_bias, up_panels, up_bias, down_panels, down_bias,
                   norm1_weight, norm1_bias, norm2_weight, norm2_bias, eps,
                   cu_seqlens, num_heads, head_dim, scale, position_bias, bias_len, positions, max_len,
                   attention_bounds, head_ranges, activation_row, gemm_plans, norm_bounds, ffn_rows, counters,
                   no_residual, first_layer, stop_layer, first_thread, stop_thread):
    """Every phase (see the module docstring) of layers first_layer..stop_layer-1, one layer
    after another, as one of the threads taking part. A layer's last phase ends when every
    thread is done with it, so the next layer reads a finished `hidden`.

    hidden [rows, d] (updated in place), qkv [rows, 3d], context and attended [rows, d],
    inner [>= min(rows, ffn_rows), d_ff]: float32 C-contiguous buffers; qkv_flat and
    context_flat: qkv and context as 1-D views; attention_scratch float32 [threads,
    attention.scratch_floats(max_len, head_dim)], a row for each thread; attention_bounds and
    head_ranges: the attention phase's work (see `_attention_phase`); the weights stacked,
    the layer first (qkv_panels [layers, panels, in, 16], qkv_bias [layers, 3d], ...,
    norm2_bias [layers, d]); gemm_plans int64 [6, gemm.PLAN_SIZE]: qkv, attention output, up and down for
    a whole feed-forward block, up and down for the last (shorter) one; counters int64
    [stop_layer - first_layer, phases * 16], zero; no_residual: an empty float32 [0, 0] (an
    argument, not the global: a global array is typed read-only, and every GEMM phase would
    then compile twice).
    """
    rows, width = hidden.shape
    wide = gemm_plans[0, 6] != 0  # the micro-kernel's tiles, for attention as for the GEMMs
    for layer in range(first_layer, stop_layer):
        layer_counters = counters[layer - first_layer]
        # 0. qkv = hidden @ W_qkv + b
        _gemm_phase(layer_counters, 0, gemm_plans[0], first_thread, hidden, 0, rows, qkv_panels[layer], qkv_bias[layer],
                    no_residual, 0, qkv, 0)
        # 1. context = attention(qkv), per (sequence, head)
        _attention_phase(layer_counters, 1, first_thread, attention_bounds, head_ranges, qkv_flat, width, cu_seqlens,
                         num_heads, head_dim, scale, position_bias, bias_len, positions, context_flat, max_len,
                         attention_scratch[first_thread], wide)
        # 2. attended = context @ W_o + b + hidden;  3. LayerNorm
        _gemm_phase(layer_counters, 2, gemm_plans[1], first_thread, context, 0, rows, output1_panels[layer], output1_bias[layer],
                    hidden, 0, attended, 0)
        _layer_norm_phase(layer_counters, 3, norm_bounds, attended, norm1_weight[layer], norm1_bias[layer], eps)
        # 4, 5, ... the feed-forward block, ffn_rows rows at a time
        phase = 4
        for block0 in range(0, rows, ffn_rows):
            block_rows = min(ffn_rows, rows - block0)
            plan = 2 if block_rows == ffn_rows else 4
            _gemm_phase(layer_counters, phase, gemm_plans[plan], first_thread, attended, block0, block_rows, up_panels[layer],
                        up_bias[layer], no_residual, activation_row, inner, 0)
            _gemm_phase(layer_counters, phase + 1, gemm_plans[plan + 1], first_thread, inner, 0, block_rows, down_panels[layer],
                        down_bias[layer], attended, 0, hidden, block0)
            phase += 2
        # last. hidden = LayerNorm(hidden)
        _layer_norm_phase(layer_counters, phase, norm_bounds, hidden, norm2_weight[layer], norm2_bias[layer], eps)


def _head_ranges(qkv_plan, num_heads, head_dim):
    """int64 [ranges + 1]: the heads each thread's column range of the QKV GEMM computes
    whole (head h's q | k | v columns are 3 * head_dim from h * 3 * head_dim: forward packs
    them head-major), a head going to the range its middle column falls in; empty when the
    GEMM has no column ranges (many rows: row blocks)."""
    ranges = int(qkv_plan[4])
    if ranges == 0:
        return np.zeros(0, dtype=np.int64)
    column_bounds = qkv_plan[_RANGES:_RANGES + ranges + 1] * qkv_plan[2] * NR  # units -> panels -> columns
    middles = (np.arange(num_heads) * 3 + 1.5) * head_dim  # each head's middle column
    owners = np.searchsorted(column_bounds[1:], middles, side="right")  # the range each falls in
    return np.searchsorted(owners, np.arange(ranges + 1), side="left").astype(np.int64)  # [ranges + 1]


class LayerPlan:
    """What `_layers_phases` needs besides the weights and the buffers, for one group of
    sequences: the GEMMs' blocking, the attention and LayerNorm work items, the counters'
    size. Made once per group, used by every layer.

    attend: the group's `attention.VarlenPlan` (sequence bounds, heads, position bias);
    rows: the group's tokens; config: the EncoderConfig; ffn_rows: feed-forward block rows;
    stack: the model's `forward.LayerStack` (for the weights' shapes).
    """

    def __init__(self, attend, rows, config, ffn_rows, stack):
        threads = numba.get_num_threads()
        self.threads = threads
        self.attend = attend
        self.ffn_rows = ffn_rows
        last_rows = rows - (-(-rows // ffn_rows) - 1) * ffn_rows  # the last feed-forward block's rows
        plans = []
        for name, m in (("qkv", rows), ("attention_output", rows), ("intermediate", min(rows, ffn_rows)),
                        ("output", min(rows, ffn_rows)), ("intermediate", last_rows), ("output", last_rows)):
            _, n_panels, k, _ = stack.panels[name].shape  # [layers, panels, in, 16]
            # No serial cut-off for small products here: the hand-off it avoids is not paid.
            plans.append(_plan_blocks(m, n_panels, k, threads, microkernel.WIDE_TILES))
        self.gemm_plans = np.array(plans, dtype=np.int64)  # [6, gemm.PLAN_SIZE]
        # Attention: where the QKV GEMM gives each thread a range of columns (a batch-1 text),
        # each thread the heads whose columns it computed (see _attention_phase); else the
        # items in ATTENTION_RUNS_PER_THREAD runs per thread (balanced by cost). LayerNorm rows
        # in 2 runs per thread.
        if not attend.head_major:
            raise ValueError("LayerPlan: the attention plan must be for head-major qkv columns (VarlenPlan head_major)")
        self.head_ranges = _head_ranges(self.gemm_plans[0], attend.num_heads, attend.head_dim)
        lengths = np.diff(attend.cu_seqlens)
        costs = np.repeat(lengths.astype(np.float64) ** 2 * attend.head_dim * 4 + 1.0, attend.num_heads)
        runs = max(1, min(len(costs), ATTENTION_RUNS_PER_THREAD * threads))
        self.attention_bounds = np.array(_balanced_bounds(costs, runs), dtype=np.int64)
        self.norm_bounds = np.array(even_bounds(rows, max(1, min(rows, 2 * threads))), dtype=np.int64)
        self.phases = 4 + 2 * -(-rows // ffn_rows) + 1
        self.activation_row = activation_row_address(activation_code(config.hidden_act))
        self.eps = np.float32(config.layer_norm_eps)

    @property
    def attention_scratch_shape(self):
        """(threads, floats): the attention scratch `run` takes, a row for each thread."""
        return self.threads, scratch_floats(self.attend.max_len, self.attend.head_dim)

    def run(self, stack, first_layer, stop_layer, hidden, qkv, context, attended, inner, attention_scratch):
        """Layers first_layer..stop_layer-1 of `stack` on the group, in one call: hidden float32
        [rows, d] updated in place (the other arguments are scratch buffers of
        `forward.encoder_forward`; attention_scratch float32 of `attention_scratch_shape`)."""
        attend = self.attend
        counters = np.zeros((stop_layer - first_layer, self.phases * 16), dtype=np.int64)
        panels, bias, norms = stack.panels, stack.bias, stack.norms
        norm1, norm2 = norms["attention_layer_norm"], norms["output_layer_norm"]
        run_chunks(_layers_phases, range(self.threads + 1),
                   hidden, qkv, context, attended, inner, qkv.reshape(-1), context.reshape(-1), attention_scratch,
                   panels["qkv"], bias["qkv"], panels["attention_output"], bias["attention_output"],
                   panels["intermediate"], bias["intermediate"], panels["output"], bias["output"],
                   norm1["weight"], norm1["bias"], norm2["weight"], norm2["bias"], self.eps,
                   attend.cu_seqlens, attend.num_heads, attend.head_dim, attend.scale, attend.bias, attend.bias_len,
                   attend.positions, attend.max_len, self.attention_bounds, self.head_ranges, self.activation_row,
                   self.gemm_plans,
                   self.norm_bounds, self.ffn_rows, counters, _NO_RESIDUAL, first_layer, stop_layer)
