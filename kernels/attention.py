"""Scaled dot-product attention, tiled per (sequence, head), padded or variable-length.

    context[i, :] = sum_j softmax_j(q_i . k_j * scale + position_bias[i, j] + mask[j]) v_j

Two entry points, one core:

`attention(query, key, value, mask_bias=None, position_bias=None)` -- the layout of the NumPy
twin `transformer.model.attention` (which also returns the probabilities; this returns only
the context):
    query, key, value   float32 [batch, heads, seq, head_dim]
    mask_bias           float32 [batch, seq] or [batch, 1, 1, seq]: 0 for tokens, the most
                        negative float32 (`transformer.model.MASK_VALUE`) for padding
    position_bias       float32 [heads, seq, seq] or [1, heads, seq, seq] (MPNet) or None
    -> context          float32 [batch, heads, seq, head_dim]
Padded keys at either end of a row are skipped (their weight is exactly 0 in the reference
too); a row whose keys are all padding gets the reference's uniform weights, never NaN.

`attention_varlen(qkv, cu_seqlens, num_heads, position_bias=None, positions=None)` -- packed
sequences with no padding at all, straight from the fused QKV projection:
    qkv          float32 [total_tokens, 3 * hidden]: query | key | value columns, head h
                 owning columns [h * head_dim, (h + 1) * head_dim) of each third; with
                 head_major=True instead q_h | k_h | v_h, head after head (head h's
                 3 * head_dim columns from h * 3 * head_dim: what one thread's GEMM columns
                 hold whole, see kernels/program.py)
    cu_seqlens   int64 [batch + 1]: sequence b is rows cu_seqlens[b] .. cu_seqlens[b+1]-1
    position_bias float32 [heads, seq, seq] (MPNet, over the padded positions) or None
    positions    int64 [total_tokens]: each token's index in its padded row (picks its
                 row/column of position_bias); None means 0, 1, 2, ... per sequence
    -> context   float32 [total_tokens, hidden]
Every token attends to the tokens of its own sequence only, so no score is spent on padding.

How the core works (`_attend_head`), for one (sequence, head):
1. K is copied once, transposed, into key_t [head_dim, keys] (padded to 16 columns), so
   that the score strip Q K^T is a small GEMM for the micro-kernel of `microkernel.py`.
2. Queries go in blocks of 24 (a sequence of up to 48: one block): scores [24, keys] =
   Q_block K^T through the register-blocked micro-kernel (strips of 6 rows per 16 keys, or
   of 12 rows per 32 keys with AVX-512, so the keys are reused from L1; a short last strip
   in a smaller kernel), then per row: * scale, + position bias, + mask, exp(x - max) in
   place (`softmax.softmax_rows_inplace`, explicit 16-float vectors).
3. context [24, head_dim] = P_block V through the micro-kernel again (V copied once into
   contiguous rows), summed over runs of KEY_RUN keys, then each row is divided by its
   softmax sum: head_dim multiplies instead of keys.
A row-at-a-time attention in plain Numba is slower than NumPy's batched matmul (a dot
product per score cannot keep the vector units busy); the strips through the micro-kernel
are what make it faster.

(sequence, head) pairs are spread over the threads in contiguous runs of about equal cost
(keys x queries), so a batch sorted by length does not leave one thread with all the long
sequences. Small problems run on the calling thread (a hand-off to another costs more than
they take).

`attention_naive` is the reference loop: one query, one key at a time.
"""

import math

import numpy as np

from ._jit import (PHASE_FINISHED, add_release, claim_back, claim_front, even_bounds, fetch_add, jit, parallel_chunks,
                   run_chunks, wait_until_at_least)
from .layernorm import add_into, rms_normalize_row_inplace, sum_of_squares
from . import disentangled, microkernel
from .disentangled import add_position_scores, position_scores
from .microkernel import MR, NR, WIDE_MR, tile
from .softmax import softmax_rows_inplace

_F0 = np.float32(0.0)
_ONE = np.float32(1.0)
_NO_ROWS = np.zeros(0, dtype=np.int64)  # rows_of of attention without DeBERTa's terms
_NO_TABLE = np.zeros(0, dtype=np.float32)
MASK_VALUE = np.finfo(np.float32).min

# Splitting over threads pays off above about this many flops per thread.
_FLOPS_PER_CHUNK = 4e6
QUERY_BLOCK = 4 * MR  # queries whose scores are computed together (scores: [24, keys]; 2 wide strips) ...
SHORT_SEQUENCE = 48  # ... except that a sequence this short is one block (27 tokens: 12 + 12 + 3, not 24, then 3)
# P V sums the keys in runs of this many, each run's float32 sum added to the context: one
# running sum over hundreds of keys rounds every term into a large total, and with a
# relative position bias (T5, MPNet) many keys share a weight, so the roundings add up
# rather than cancel. Runs keep each sum short; a row of at most KEY_RUN keys is one run.
KEY_RUN = 128


# ---------------------------------------------------------------------------------------
# The core: one (sequence, head).


@jit
def _attend_head(q, q_start, k, k_start, v, v_start, qkv_stride, n_q, n_k, head_dim, scale,
                 mask, mask_start,
                 bias, bias_start, bias_len, positions, q_pos_start, k_pos_start,
                 out, out_start, out_stride,
                 key_t, value_packed, scores, inverse_sums, wide, window_half, causal,
                 key_cos, key_sin, key_positions, key_position0,
                 position_key, position_query, table_start, table_ld, rows_of, position_scratch,
                 key_norm, norm_eps, norm_offset):
    """context rows for one head of one sequence (all arrays 1-D float32, flat offsets).

    Query i is q[q_start + i * qkv_stride : + head_dim], key j and value j likewise from
    k_start / v_start; context row i goes to out[out_start + i * out_stride : + head_dim].
    Mask value of key j: mask[mask_start + j] (no mask: an empty `mask`). Bias of (i, j):
    bias[bias_start + positions[q_pos_start + i] * bias_len + positions[k_pos_start + j]]
    (no bias: an empty `bias`). Flags are array sizes, not bool arguments, so that every
    caller shares one compiled copy (a literal True/False would specialise it).
    key_t, value_packed, scores, inverse_sums: scratch of at least head_dim * n_pad,
    n_k * d_pad, block rows * n_pad and block rows floats (n_pad, d_pad: n_k, head_dim
    rounded up to 16; block rows: QUERY_BLOCK, or n_q when n_q <= SHORT_SEQUENCE). wide: the
    products in the micro-kernel's wide tiles (12 x 32), else narrow ones (6 x 16); the same
    numbers. window_half >= 0: a sliding window (query i sees keys i - window_half ..
    i + window_half; queries and keys the same sequence): a block of queries computes the
    scores of its window's keys only (from a multiple of 16 below it), the others in that
    range are masked out; -1: every key. causal (0 / 1): query i sees keys 0..i only (a
    decoder; with window_half, keys i - window_half .. i): a block of queries computes no
    score right of its last query (the masked upper triangle is never computed).
    key_cos, key_sin float32 [positions, half] (empty: none): the keys are rotated (rotary
    positions, by the angles of key_positions[key_position0 + j]) as they are copied, so the
    stored keys stay as they were: a key head serves several query heads (grouped-query
    attention), each item reading it unrotated, with no order between them.
    DeBERTa's disentangled terms (kernels/disentangled.py), when rows_of is not empty: the
    head's projected tables position_key (c2p) and position_query (p2c) from table_start,
    rows table_ld floats long (an empty table: no such term); query i and key j are tokens
    i and j of one sequence. position_scratch: `disentangled.scratch_floats` floats.
    key_norm float32 [head_dim] (empty: none): each key is RMS-normalised first (Qwen3, Gemma 3:
    k / sqrt(mean(k^2) + norm_eps) * (norm_offset + key_norm)), then rotated, as it is copied.
    """
    n_pad = (n_k + NR - 1) // NR * NR
    has_mask = mask.shape[0] > 0
    has_bias = bias.shape[0] > 0
    has_relative = rows_of.shape[0] > 0

    # 1. key_t[c, j] = K[j, c]: the keys become the 16-wide panels the micro-kernel reads.
    half = key_cos.shape[1] if key_cos.shape[0] > 0 else 0
    key_normed = key_norm.shape[0] > 0
    for j in range(n_k):
        row = k_start + j * qkv_stride
        if key_normed:  # normalised as rms_normalize_row_inplace does, then turned in key_t itself
            inverse_rms = _ONE / np.sqrt(sum_of_squares(k[row:row + head_dim]) / np.float32(head_dim) + norm_eps)
            for c in range(head_dim):
                key_t[c * n_pad + j] = k[row + c] * inverse_rms * (norm_offset + key_norm[c])
            if half > 0:
                cos_row, sin_row = key_cos[key_positions[key_position0 + j]], key_sin[key_positions[key_position0 + j]]
                for c in range(half):
                    x1, x2 = key_t[c * n_pad + j], key_t[(c + half) * n_pad + j]
                    key_t[c * n_pad + j] = x1 * cos_row[c] - x2 * sin_row[c]
                    key_t[(c + half) * n_pad + j] = x2 * cos_row[c] + x1 * sin_row[c]
            continue
        if half > 0:  # rotated as rotate_rows does: the same float32 operations, the same bits
            cos_row, sin_row = key_cos[key_positions[key_position0 + j]], key_sin[key_positions[key_position0 + j]]
            for c in range(half):
                x1, x2 = k[row + c], k[row + half + c]
                key_t[c * n_pad + j] = x1 * cos_row[c] - x2 * sin_row[c]
                key_t[(c + half) * n_pad + j] = x2 * cos_row[c] + x1 * sin_row[c]
        for c in range(2 * half, head_dim):
            key_t[c * n_pad + j] = k[row + c]
    # The padding columns are read too (their sums dropped): zeros, not whatever the scratch
    # held. Leftover bits can be subnormal floats (small integers read as float32, say), and
    # a multiply-add on one costs a microcode assist of about a hundred cycles.
    if n_pad > n_k:
        for c in range(head_dim):
            padding = key_t[c * n_pad + n_k:c * n_pad + n_pad]
            for j in range(n_pad - n_k):
                padding[j] = _F0

    # V is copied into contiguous rows of d_pad floats: read in place, the QKV rows are
    # 3 * hidden floats apart (a new 4 KiB page every row), which the P V product's loads and
    # the prefetchers handle far worse than consecutive rows.
    d_pad = (head_dim + NR - 1) // NR * NR
    for j in range(n_k):
        source = v[v_start + j * qkv_stride:v_start + j * qkv_stride + head_dim]
        packed_row = value_packed[j * d_pad:j * d_pad + d_pad]
        for c in range(head_dim):
            packed_row[c] = source[c]
        for c in range(head_dim, d_pad):  # read by the micro-kernel too: zeros (see above)
            packed_row[c] = _F0

    # Are this sequence's key positions consecutive? Then each bias row is one slice.
    consecutive = True
    if has_bias:
        for j in range(n_k):
            if positions[k_pos_start + j] != positions[k_pos_start] + j:
                consecutive = False
                break

    tile_rows, tile_cols = (WIDE_MR, 2 * NR) if wide else (MR, NR)  # the micro-kernel's tile
    block_rows = n_q if n_q <= SHORT_SEQUENCE else QUERY_BLOCK
    windowed = window_half >= 0
    masked = windowed or causal != 0
    # DeBERTa: p2c for every key once; c2p per block of queries, in the block's rows.
    r_lo, width = 0, 0
    width_pad = 0
    c2p, p2c = position_scratch[:0], position_scratch[:0]
    if has_relative:
        r_lo, width = disentangled.window(rows_of, n_k)
        width_pad = (width + NR - 1) // NR * NR
        if position_key.shape[0] > 0:
            c2p = position_scratch[:block_rows * width_pad]
        if position_query.shape[0] > 0:
            p2c = position_scratch[block_rows * width_pad:(block_rows + n_k) * width_pad]
            position_scores(k, k_start, qkv_stride, n_k, position_query, table_start, table_ld, head_dim, r_lo, width,
                            p2c, width_pad, wide)
    for i0 in range(0, n_q, block_rows):
        block = min(block_rows, n_q - i0)
        # The block's keys: all, or those its window reaches (from a multiple of 16, so the
        # tiles read whole 16-column panels of key_t).
        k_lo, k_hi = 0, n_k
        if windowed:
            k_lo = max(0, i0 - window_half) // NR * NR
            k_hi = min(n_k, i0 + block + window_half)
        if causal:
            k_hi = min(n_k, i0 + block)
        n_keys = k_hi - k_lo
        # 2. scores[r, j] = q_{i0+r} . k_j for a block of queries, tile by tile; each tile's
        #    keys (16 or 32 columns of key_t) serve all the block's strips while in L1.
        for j0 in range(k_lo, k_hi, tile_cols):  # wide: keys j0 + 16.. are the next 16 columns of key_t
            cols = min(tile_cols, k_hi - j0)
            for s0 in range(0, block, tile_rows):
                tile(q, q_start + (i0 + s0) * qkv_stride, qkv_stride, min(tile_rows, block - s0),
                     key_t, j0, n_pad, head_dim,
                     scores, s0 * n_pad + j0, n_pad, cols, False, wide, NR if cols > NR else 0, -1)
        if c2p.shape[0] > 0:
            position_scores(q, q_start + i0 * qkv_stride, qkv_stride, block, position_key, table_start, table_ld,
                            head_dim, r_lo, width, c2p, width_pad, wide)
        # * scale (+ position bias + mask), then exp(x - max) in place and 1 / the sums
        row_scale = scale
        if has_bias or has_mask or masked or has_relative:
            for r in range(block):
                row = scores[r * n_pad + k_lo:r * n_pad + k_hi]  # a view: loops from 0 vectorize
                for j in range(n_keys):
                    row[j] *= scale
                if has_relative:
                    add_position_scores(row, i0 + r, k_lo, n_keys, rows_of, r_lo, c2p, r * width_pad, p2c, width_pad,
                                        scale)
                if has_bias:
                    bias_row = bias_start + positions[q_pos_start + i0 + r] * bias_len
                    if consecutive:
                        first = bias_row + positions[k_pos_start] + k_lo
                        add_into(row, bias[first:first + n_keys])
                    else:
                        for j in range(n_keys):
                            row[j] += bias[bias_row + positions[k_pos_start + k_lo + j]]
                if has_mask:
                    add_into(row, mask[mask_start + k_lo:mask_start + k_hi])
                if masked:  # the keys this query does not see: weight 0, as the reference's
                    i = i0 + r
                    for j in range(n_keys):
                        key = k_lo + j
                        if (windowed and abs(i - key) > window_half) or (causal and key > i):
                            row[j] = MASK_VALUE
            row_scale = _ONE  # scaled already (x * 1 is x exactly)
        softmax_rows_inplace(scores, k_lo, n_pad, block, n_keys, row_scale, inverse_sums, 0)
        # 3. context = exp-scores @ V, strip by strip, tile by tile, KEY_RUN keys at a time
        #    (each run's sum added to the last); then / the softmax sums.
        for s0 in range(0, block, tile_rows):
            for c0 in range(0, head_dim, tile_cols):
                cols = min(tile_cols, head_dim - c0)
                for j0 in range(0, n_keys, KEY_RUN):
                    tile(scores, s0 * n_pad + k_lo + j0, n_pad, min(tile_rows, block - s0),
                         value_packed, (k_lo + j0) * d_pad + c0, d_pad, min(KEY_RUN, n_keys - j0),
                         out, out_start + (i0 + s0) * out_stride + c0, out_stride,
                         cols, j0 > 0, wide, NR if cols > NR else 0, -1)
        for r in range(block):
            first = out_start + (i0 + r) * out_stride
            context_row = out[first:first + head_dim]
            for c in range(head_dim):
                context_row[c] *= inverse_sums[r]


# ---------------------------------------------------------------------------------------
# Variable-length (packed) sequences.


# Scratch: the kernels allocate nothing. Whoever runs them hands each thread (or chunk of
# items) its own float32 run of `scratch_floats(max_len, head_dim)`, which one (sequence,
# head) after another uses for its transposed K, packed V, scores and softmax sums.


@jit(inline="always")
def _scratch_layout(max_len, head_dim):
    """Where `_attend_head`'s scratch parts start in one thread's scratch, for sequences of up
    to max_len tokens: (value_packed, scores, inverse_sums, the end); key_t starts at 0.
    Sizes: key_t head_dim x n_pad, value_packed max_len x d_pad, scores block rows x n_pad,
    inverse_sums block rows (n_pad, d_pad: max_len, head_dim rounded up to 16; block rows:
    QUERY_BLOCK, or up to SHORT_SEQUENCE for a sequence that short, its own n_pad)."""
    n_pad = (max_len + NR - 1) // NR * NR
    d_pad = (head_dim + NR - 1) // NR * NR
    short = min(max_len, SHORT_SEQUENCE)  # the biggest one-block sequence
    value0 = head_dim * n_pad
    scores0 = value0 + max_len * d_pad
    sums0 = scores0 + max(QUERY_BLOCK * n_pad, short * ((short + NR - 1) // NR * NR))
    return value0, scores0, sums0, sums0 + max(QUERY_BLOCK, short)


def scratch_floats(max_len, head_dim):
    """Scratch floats one thread needs for sequences of up to max_len tokens (the layout's
    plain Python twin: no compilation here)."""
    return _scratch_layout.py_func(max_len, head_dim)[3]


@jit
def _split_scratch(scratch, max_len, head_dim):
    """(key_t, value_packed, scores, inverse_sums): consecutive views of `scratch`, the sizes
    `_attend_head` needs (see `_scratch_layout`)."""
    value0, scores0, sums0, end = _scratch_layout(max_len, head_dim)
    return scratch[:value0], scratch[value0:scores0], scratch[scores0:sums0], scratch[sums0:end]


@jit
def rotate_rows(x, row0, stride, n, cos, sin, positions, position0):
    """Rotary position embedding, in place, of n rows of one head's queries or keys: row t is
    x[row0 + t * stride:][:2 * half] (flat float32), turned by the angles of its position
    positions[position0 + t]: the pairs (x_i, x_{i + half}) of the halves layout, with
    cos, sin float32 [positions, half]. The twin is `transformer.model.apply_rotary`; the
    same float32 operations in the same order, so the same bits."""
    half = cos.shape[1]
    for t in range(n):
        position = positions[position0 + t]
        cos_row, sin_row = cos[position], sin[position]
        first = x[row0 + t * stride:row0 + t * stride + half]
        second = x[row0 + t * stride + half:row0 + t * stride + 2 * half]
        for i in range(half):
            x1, x2 = first[i], second[i]
            first[i] = x1 * cos_row[i] - x2 * sin_row[i]
            second[i] = x2 * cos_row[i] + x1 * sin_row[i]


@jit
def _varlen_range(qkv, hidden, head_major, cu_seqlens, num_heads, kv_heads, head_dim, scale,
                  bias, bias_len, positions, out, max_len, scratch, wide, window_half, causal, rotary_cos, rotary_sin,
                  rotary_positions, first_item, stop_item, position_key, position_query, table_ld, rows_of,
                  query_norm, key_norm, norm_eps, norm_offset):
    """(sequence, head) items first_item..stop_item-1 (item = b * heads + h); scratch: float32
    [>= scratch_floats(max_len, head_dim)], this thread's own (plus the disentangled terms'
    when rows_of is not empty); wide: the micro-kernel's tiles;
    head_major: qkv's columns q_h | k_h | v_h head after head, else q | k | v (see VarlenPlan;
    with kv_heads < num_heads, grouped-query attention: program.head_major's layout);
    window_half, causal: see `_attend_head`; rotary_cos / rotary_sin float32 [positions, half] (empty:
    no rotary): each item first rotates its head's queries in place, by the angles of
    rotary_positions int64 [total tokens] (its slot in the padded row): they are in this
    thread's cache for the scores right after, and no other item reads them; its keys as
    `_attend_head` copies them (another item may read the same key head). position_key,
    position_query: one layer's `disentangled.pack_tables` row (or empty), see _attend_head.
    query_norm, key_norm float32 [head_dim] (each empty: none): the per-head RMSNorms of the
    queries and keys (Qwen3, Gemma 3), before the rotation: a query head is normalised in
    place by the one item that reads it, a key head as `_attend_head` copies it."""
    key_t, value_packed, scores, inverse_sums = _split_scratch(scratch, max_len, head_dim)
    position_scratch = scratch[_scratch_layout(max_len, head_dim)[3]:]
    no_mask = scratch[:0]
    group = num_heads // kv_heads  # query heads per key/value head
    stride = (num_heads + 2 * kv_heads) * head_dim
    rotary = rotary_cos.shape[0] > 0
    for item in range(first_item, stop_item):
        b = item // num_heads
        h = item - b * num_heads
        start = cu_seqlens[b]
        n = cu_seqlens[b + 1] - start
        if n == 0:
            continue
        g = h // group
        if head_major:  # [q of the group's G heads | k_g | v_g] per key/value head
            q0 = (g * (group + 2) + h - g * group) * head_dim
            k0 = (g * (group + 2) + group) * head_dim
            v0 = k0 + head_dim
        else:  # [q of every head | k of every key head | v likewise]
            q0 = h * head_dim
            k0 = (num_heads + g) * head_dim
            v0 = (num_heads + kv_heads + g) * head_dim
        row0 = start * stride
        if query_norm.shape[0] > 0:
            for t in range(n):
                first = row0 + q0 + t * stride
                rms_normalize_row_inplace(qkv[first:first + head_dim], query_norm, norm_eps, norm_offset)
        if rotary:
            rotate_rows(qkv, row0 + q0, stride, n, rotary_cos, rotary_sin, rotary_positions, start)
        _attend_head(qkv, row0 + q0, qkv, row0 + k0, qkv, row0 + v0, stride, n, n, head_dim, scale,
                     no_mask, start,
                     bias, h * bias_len * bias_len, bias_len, positions, start, start,
                     out, start * hidden + h * head_dim, hidden,
                     key_t, value_packed, scores, inverse_sums, wide, window_half, causal,
                     rotary_cos, rotary_sin, rotary_positions, start,
                     position_key, position_query, h * head_dim * table_ld, table_ld, rows_of, position_scratch,
                     key_norm, norm_eps, norm_offset)


@jit
def _varlen_chunks(qkv, hidden, head_major, cu_seqlens, num_heads, kv_heads, head_dim, scale, bias, bias_len, positions,
                   out,
                   max_len, item_bounds, scratch, wide, window_half, causal, rotary_cos, rotary_sin, rotary_positions,
                   position_key, position_query, table_ld, rows_of, query_norm, key_norm, norm_eps, norm_offset,
                   first_chunk, stop_chunk):
    """Chunks first_chunk..stop_chunk-1 of `_varlen_range`: chunk c is the items
    item_bounds[c]..item_bounds[c + 1] - 1, with scratch[c] (float32 [chunks, floats])."""
    for c in range(first_chunk, stop_chunk):
        _varlen_range(qkv, hidden, head_major, cu_seqlens, num_heads, kv_heads, head_dim, scale, bias, bias_len,
                      positions, out,
                      max_len, scratch[c], wide, window_half, causal, rotary_cos, rotary_sin, rotary_positions,
                      item_bounds[c], item_bounds[c + 1], position_key, position_query, table_ld, rows_of,
                      query_norm, key_norm, norm_eps, norm_offset)


@jit
def attention_phase(counters, base, thread, attention_bounds, head_ranges, qkv_flat, width, cu_seqlens, num_heads,
                    kv_heads, head_dim, scale, position_bias, bias_len, positions, context_flat, max_len, scratch, wide,
                    window_half, causal, rotary_cos, rotary_sin, rotary_positions, position_key, position_query,
                    table_ld, rows_of, query_norm, key_norm, norm_eps, norm_offset):
    """Attention as one phase of a program (kernels/program.py): context = attention(qkv) for
    every (sequence, head), qkv's columns head-major (VarlenPlan's head_major), then the wait
    for the other threads. counters[base:] are the phase's (see `_jit.PHASE_COUNTERS`);
    scratch: this thread's float32 [scratch_floats(max_len, head_dim)]; window_half, causal and the
    rotary and norm arguments: see `_varlen_range`.

    head_ranges int64 [ranges + 1] (not empty): thread t owns heads head_ranges[t] ..
    head_ranges[t + 1] - 1, of every sequence: the heads whose q | k | v columns its own
    QKV GEMM range computed, so they are in its own cache. It takes its (head, sequence)
    items from the front, then the others' from their back (`_jit.claim_front` /
    `claim_back`). Empty: items (sequence major) in the runs attention_bounds[r] ..
    attention_bounds[r + 1] - 1, claimed in order by any thread.
    """
    batch = cu_seqlens.shape[0] - 1
    ranges = head_ranges.shape[0] - 1
    if ranges <= 0:
        n_runs = attention_bounds.shape[0] - 1
        while True:
            run = fetch_add(counters, base, 1)
            if run >= n_runs:
                break
            _varlen_range(qkv_flat, width, True, cu_seqlens, num_heads, kv_heads, head_dim, scale, position_bias,
                          bias_len, positions, context_flat, max_len, scratch, wide, window_half, causal, rotary_cos,
                          rotary_sin, rotary_positions, attention_bounds[run], attention_bounds[run + 1],
                          position_key, position_query, table_ld, rows_of, query_norm, key_norm, norm_eps,
                          norm_offset)
            add_release(counters, base + PHASE_FINISHED, 1)
        wait_until_at_least(counters, base + PHASE_FINISHED, n_runs)
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
            _varlen_range(qkv_flat, width, True, cu_seqlens, num_heads, kv_heads, head_dim, scale, position_bias,
                          bias_len, positions, context_flat, max_len, scratch, wide, window_half, causal, rotary_cos,
                          rotary_sin, rotary_positions, item, item + 1, position_key, position_query, table_ld, rows_of,
                          query_norm, key_norm, norm_eps, norm_offset)
            add_release(counters, base + PHASE_FINISHED, 1)
    wait_until_at_least(counters, base + PHASE_FINISHED, num_heads * batch)


def balanced_bounds(costs, chunks):
    """Split items (in order) into `chunks` contiguous runs of about equal total cost.

    costs float64 [items] -> [chunks + 1] boundaries (run c is items bounds[c]..bounds[c+1]-1).
    """
    if chunks == 1:
        return [0, len(costs)]
    ends = np.cumsum(costs)  # an item goes to the run its cost midpoint falls in
    midpoints = ends - costs / 2
    targets = ends[-1] * np.arange(1, chunks) / chunks
    inner = np.searchsorted(midpoints, targets)
    return [0, *inner.tolist(), len(costs)]


def attention_varlen(qkv, cu_seqlens, num_heads, position_bias=None, positions=None, out=None, head_major=False,
                     window=None, rotary=None, rotary_positions=None, causal=False, kv_heads=None):
    """Attention over packed sequences; see the module docstring for the layouts (head_major:
    qkv's columns q_h | k_h | v_h for each head in turn, as `forward` packs its QKV weight).
    window: a sliding window (a query sees window // 2 keys either side) or None; rotary:
    (cos, sin) float32 [positions, half] (`transformer.model.rotary_angles`) to rotate the
    queries and keys by, in place in qkv, or None; rotary_positions int64 [total_tokens]
    (None: 0, 1, ... per sequence).

    Returns the context, float32 [total_tokens, hidden] (written into `out` when given).
    """
    qkv = np.asarray(qkv)
    kv_heads = num_heads if kv_heads is None else kv_heads
    parts = num_heads + 2 * kv_heads  # head-widths of q, k and v in a row
    if qkv.ndim != 2 or qkv.dtype != np.float32 or not qkv.flags.c_contiguous:
        raise ValueError(f"attention_varlen: qkv must be a C-contiguous float32 [tokens, (heads + 2 * kv_heads) * "
                         f"head_dim] array, got {qkv.dtype} {qkv.shape}")
    if qkv.shape[1] % parts:
        raise ValueError(f"attention_varlen: qkv's {qkv.shape[1]} columns are not a multiple of num_heads={num_heads} "
                         f"+ 2 * kv_heads={kv_heads} head widths")
    plan = VarlenPlan(cu_seqlens, num_heads, qkv.shape[1] // parts * num_heads, position_bias, positions, head_major,
                      window=window, rotary=rotary, rotary_positions=rotary_positions, causal=causal,
                      kv_heads=kv_heads)
    if qkv.shape[0] != plan.total:
        raise ValueError(f"attention_varlen: cu_seqlens must rise from 0 to the {qkv.shape[0]} rows of qkv, "
                         f"got {plan.cu_seqlens.tolist()[:8]}")
    return plan(qkv, out)


class VarlenPlan:
    """What `attention_varlen` works out from the sequence lengths alone (checks, the split of
    (sequence, head) items over the threads, the position bias arguments), made once and run
    on every layer's qkv: a model calls attention once per layer with the same sequences.

        plan = VarlenPlan(cu_seqlens, num_heads, hidden)
        context = plan(qkv, out)          # qkv float32 [total, 3 * hidden] -> [total, hidden]

    causal: each token sees itself and the tokens before it only (a decoder); a window then
    keeps the `window` most recent of them (Mistral, Gemma 3's local layers) instead of
    window // 2 either side.
    """

    def __init__(self, cu_seqlens, num_heads, hidden, position_bias=None, positions=None, head_major=False,
                 scale=None, window=None, rotary=None, rotary_positions=None, causal=False, kv_heads=None,
                 rows_of=None, table_rows=0):
        if hidden % num_heads:
            raise ValueError(f"attention_varlen: hidden size {hidden} is not a multiple of num_heads={num_heads}")
        head_dim = hidden // num_heads
        cu_seqlens = np.ascontiguousarray(cu_seqlens, dtype=np.int64)
        lengths = np.diff(cu_seqlens)
        if cu_seqlens.ndim != 1 or len(cu_seqlens) < 2 or cu_seqlens[0] != 0 or (lengths < 0).any():
            raise ValueError(f"attention_varlen: cu_seqlens must rise from 0 to the rows of qkv, "
                             f"got {cu_seqlens.tolist()[:8]}")
        total = int(cu_seqlens[-1])
        self.cu_seqlens, self.num_heads, self.hidden, self.head_dim, self.total = (
            cu_seqlens, num_heads, hidden, head_dim, total)
        self.kv_heads = num_heads if kv_heads is None else int(kv_heads)
        if self.kv_heads < 1 or num_heads % self.kv_heads:
            raise ValueError(f"attention_varlen: num_heads={num_heads} is not a multiple of kv_heads={kv_heads}")
        self.qkv_width = (num_heads + 2 * self.kv_heads) * head_dim  # q, k and v columns of a row
        self.bias, self.bias_len, self.positions = _position_bias_args(
            position_bias, num_heads, positions, total, cu_seqlens)
        self.max_len = int(lengths.max())
        # DeBERTa's disentangled terms: rows_of int64 [2 * max_len - 1], the relative table's
        # row of each distance (kernels/disentangled.py), table_rows its rows; else empty.
        self.rows_of = _NO_ROWS if rows_of is None else np.ascontiguousarray(rows_of, dtype=np.int64)
        if len(self.rows_of) not in (0, 2 * self.max_len - 1):
            raise ValueError(f"attention_varlen: rows_of must hold 2 * {self.max_len} - 1 rows (one per distance), "
                             f"got {len(self.rows_of)}")
        self.position_floats = 0 if rows_of is None else disentangled.scratch_floats(
            self.max_len, table_rows, max(QUERY_BLOCK, min(self.max_len, SHORT_SEQUENCE)))
        self.scale = np.float32(1.0 / math.sqrt(head_dim) if scale is None else scale)  # on q . k
        self.wide = microkernel.WIDE_TILES  # the micro-kernel's tiles (same numbers either way)
        self.head_major = bool(head_major)  # qkv's columns: q_h | k_h | v_h per head, else q | k | v
        # A sliding window (ModernBERT's local layers): a query sees window // 2 keys either side;
        # a causal one the window - 1 keys before it.
        self.causal = np.int64(bool(causal))
        self.window_half = -1 if window is None else int(window) - 1 if causal else int(window) // 2
        self.rotary, self.rotary_positions = _rotary_args(rotary, rotary_positions, head_dim, total, cu_seqlens)
        costs = np.repeat(lengths.astype(np.float64) ** 2 * head_dim * 4 + 1.0, num_heads)  # per (b, h)
        self.item_bounds = np.array(balanced_bounds(costs, parallel_chunks(costs.sum(), _FLOPS_PER_CHUNK)),
                                    dtype=np.int64)  # [chunks + 1]

    def __call__(self, qkv, out=None, window_half=None, rotary=None, causal=None, scale=None, position_tables=None,
                 head_norms=None):
        """qkv float32 [total, 3 * hidden], C-contiguous -> context [total, hidden] (into `out`).
        window_half, rotary, causal, scale: this call's instead of the plan's (a program's
        layers differ: ModernBERT's local and global layers), rotary as (cos, sin) float32
        [positions, half]. position_tables: (position_key, position_query, table_ld) of one
        layer for DeBERTa's terms (`disentangled.pack_tables` rows, each possibly empty), when
        rows_of was given. head_norms: (query_norm, key_norm, eps, offset), the per-head
        RMSNorms of the queries and keys before the rotation (Qwen3, Gemma 3), each weight float32
        [head_dim] or None; None: no norms."""
        shape = (self.total, self.hidden)
        if qkv.shape != (self.total, self.qkv_width) or qkv.dtype != np.float32 or not qkv.flags.c_contiguous:
            raise ValueError(f"attention_varlen: qkv must be a C-contiguous float32 array of shape "
                             f"{(self.total, self.qkv_width)}, got {qkv.dtype} {qkv.shape}")
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"attention_varlen: out must be a C-contiguous float32 array of shape {shape}")
        if self.total == 0:
            return out
        chunks = len(self.item_bounds) - 1
        scratch = np.empty((chunks, scratch_floats(self.max_len, self.head_dim) + self.position_floats),
                           dtype=np.float32)
        if position_tables is None:
            if len(self.rows_of):
                raise ValueError("attention_varlen: this plan has disentangled positions (rows_of); pass the "
                                 "layer's position_tables")
            position_tables = (_NO_TABLE, _NO_TABLE, 0)
        norm_args = (_NO_TABLE, _NO_TABLE, np.float32(0.0), np.float32(0.0))
        if head_norms is not None:
            query_norm, key_norm, eps, offset = head_norms
            norm_args = tuple(_NO_TABLE if weight is None else _head_vector(name, weight, self.head_dim)
                              for name, weight in (("query_norm", query_norm), ("key_norm", key_norm))) + \
                (np.float32(eps), np.float32(offset))
        run_chunks(_varlen_chunks, range(chunks + 1), qkv.reshape(-1), self.hidden, self.head_major, self.cu_seqlens,
                   self.num_heads, self.kv_heads, self.head_dim, self.scale if scale is None else np.float32(scale), self.bias,
                   self.bias_len, self.positions, out.reshape(-1), self.max_len, self.item_bounds, scratch, self.wide,
                   self.window_half if window_half is None else window_half,
                   self.causal if causal is None else np.int64(bool(causal)),
                   *(self.rotary if rotary is None else rotary), self.rotary_positions, *position_tables, self.rows_of,
                   *norm_args)
        return out


def _head_vector(name, weight, head_dim):
    """A per-head norm's weight as the kernels take it: float32 [head_dim], C-contiguous."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if weight.shape != (head_dim,):
        raise ValueError(f"attention_varlen: {name} must be float32 [head_dim={head_dim}], got {weight.shape}")
    return weight


_NO_ROTARY = (np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))


def _rotary_args(rotary, positions, head_dim, total, cu_seqlens):
    """((cos, sin) float32 [positions, half] or empty, int64 positions [total]) for the kernels.
    rotary: None or (cos, sin) from `transformer.model.rotary_angles`; positions: each token's
    position (None: 0, 1, 2, ... within each sequence)."""
    if rotary is None:  # positions kept for a program's rotary steps (kernels/program.py)
        return _NO_ROTARY, np.ascontiguousarray(np.zeros(1) if positions is None else positions, dtype=np.int64)
    cos, sin = (np.ascontiguousarray(table, dtype=np.float32) for table in rotary)
    if cos.ndim != 2 or cos.shape != sin.shape or not 0 < 2 * cos.shape[1] <= head_dim:
        raise ValueError(f"rotary: cos and sin must be float32 [positions, half] with 2 * half <= head_dim="
                         f"{head_dim}, got {cos.shape} and {sin.shape}")
    if positions is None:
        positions = np.arange(total, dtype=np.int64) - np.repeat(cu_seqlens[:-1], np.diff(cu_seqlens))
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    if positions.shape != (total,) or (total and (positions.min() < 0 or positions.max() >= cos.shape[0])):
        raise ValueError(f"rotary positions must be int64 [{total}] in [0, {cos.shape[0]})")
    return (cos, sin), positions


def _position_bias_args(position_bias, num_heads, positions, total, cu_seqlens):
    """(flat bias, its seq length, int64 positions) for the kernels; an empty bias for none."""
    if position_bias is None:
        return np.zeros(0, np.float32), 0, np.zeros(1, np.int64)
    position_bias = np.asarray(position_bias)
    if position_bias.ndim == 4 and position_bias.shape[0] == 1:
        position_bias = position_bias[0]  # [1, heads, seq, seq] -> [heads, seq, seq]
    if position_bias.ndim != 3 or position_bias.shape[0] != num_heads or position_bias.shape[1] != position_bias.shape[2] \
            or position_bias.dtype != np.float32:
        raise ValueError(f"position_bias must be float32 [heads={num_heads}, seq, seq], "
                         f"got {position_bias.dtype} {position_bias.shape}")
    bias_len = position_bias.shape[1]
    if positions is None:  # 0, 1, 2, ... within each sequence
        starts = np.repeat(cu_seqlens[:-1], np.diff(cu_seqlens))
        positions = np.arange(total, dtype=np.int64) - starts
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    if positions.shape != (total,) or (total and (positions.min() < 0 or positions.max() >= bias_len)):
        raise ValueError(f"positions must be int64 [{total}] in [0, {bias_len}), "
                         f"got shape {positions.shape}")
    return np.ascontiguousarray(position_bias).reshape(-1), bias_len, positions


# ---------------------------------------------------------------------------------------
# Padded batches with an additive mask: the NumPy twin's layout.


@jit
def _padded_chunks(q, k, v, num_heads, seq, head_dim, scale, mask, key_first, key_stop,
                   bias, positions, out, item_bounds, scratch, wide, first_chunk, stop_chunk):
    """(batch, head) items of [batch, heads, seq, head_dim] arrays, chunk c being the items
    item_bounds[c]..item_bounds[c + 1] - 1 with scratch[c] (float32 [chunks, floats])."""
    first_query = first_chunk - first_chunk  # 0 as a run-time int64: a literal 0 would specialise _attend_head
    no_window = first_query - 1  # -1, likewise
    no_causal = first_query  # the padded layout runs encoders' (bidirectional) attention only
    no_rotary = scratch[0, :0].reshape(0, 1)  # float32 [0, 1]: no rotation of the keys
    for c in range(first_chunk, stop_chunk):
        key_t, value_packed, scores, inverse_sums = _split_scratch(scratch[c], seq, head_dim)
        for item in range(item_bounds[c], item_bounds[c + 1]):
            b = item // num_heads
            h = item - b * num_heads
            lo, hi = key_first[b], key_stop[b]
            head0 = item * seq * head_dim
            _attend_head(q, head0, k, head0 + lo * head_dim, v, head0 + lo * head_dim, head_dim,
                         seq, hi - lo, head_dim, scale,
                         mask, b * seq + lo,
                         bias, h * seq * seq, seq, positions, first_query, lo,
                         out, head0, head_dim,
                         key_t, value_packed, scores, inverse_sums, wide, no_window, no_causal,
                         no_rotary, no_rotary, positions, first_query,
                         scratch[c, :0], scratch[c, :0], first_query, first_query, positions[:0], scratch[c, :0],
                         scratch[c, :0], scale - scale, scale - scale)


def attention(query, key, value, mask_bias=None, position_bias=None, out=None):
    """Attention over a padded batch; see the module docstring for the layouts.

    Returns the context, float32 [batch, heads, seq, head_dim].
    """
    query, key, value = (_as_heads_f32(name, array) for name, array in (("query", query), ("key", key), ("value", value)))
    if not (query.shape == key.shape == value.shape):
        raise ValueError(f"attention: query, key and value must have one shape [batch, heads, seq, head_dim], "
                         f"got {query.shape}, {key.shape}, {value.shape}")
    batch, num_heads, seq, head_dim = query.shape
    if mask_bias is None:
        mask = np.zeros((batch, seq), dtype=np.float32)
    else:
        mask = np.asarray(mask_bias, dtype=np.float32)
        if mask.size != batch * seq or mask.shape[0] != batch or mask.shape[-1] != seq:
            raise ValueError(f"attention: mask_bias must be [batch={batch}, seq={seq}] (or [batch, 1, 1, seq]), "
                             f"got {mask.shape}")
        mask = np.ascontiguousarray(mask.reshape(batch, seq))
    # Keys before the first and after the last non-padding key are skipped: their weight
    # is exactly 0 (exp of ~ -3.4e38). A row with no real key keeps them all: uniform.
    real = mask > MASK_VALUE
    any_real = real.any(axis=1)
    key_first = np.where(any_real, real.argmax(axis=1), 0).astype(np.int64)
    key_stop = np.where(any_real, seq - real[:, ::-1].argmax(axis=1), seq).astype(np.int64)
    if position_bias is None:
        bias = np.zeros(0, np.float32)
    else:
        bias, _, _ = _position_bias_args(position_bias, num_heads, None, 0, np.zeros(1, np.int64))
        if bias.size != num_heads * seq * seq:
            raise ValueError(f"attention: position_bias must cover seq={seq}, got {np.shape(position_bias)}")
    positions = np.arange(seq, dtype=np.int64)
    if out is None:
        out = np.empty(query.shape, dtype=np.float32)
    scale = np.float32(1.0 / math.sqrt(head_dim))
    flops = 4.0 * batch * num_heads * seq * seq * head_dim
    item_bounds = np.array(even_bounds(batch * num_heads, parallel_chunks(flops, _FLOPS_PER_CHUNK)), dtype=np.int64)
    chunks = len(item_bounds) - 1
    scratch = np.empty((chunks, scratch_floats(seq, head_dim)), dtype=np.float32)
    run_chunks(_padded_chunks, range(chunks + 1), query.reshape(-1), key.reshape(-1), value.reshape(-1), num_heads,
               seq, head_dim, scale, mask.reshape(-1), key_first, key_stop, bias, positions, out.reshape(-1),
               item_bounds, scratch, microkernel.WIDE_TILES)
    return out


def _as_heads_f32(name, array):
    array = np.asarray(array)
    if array.ndim != 4 or array.dtype != np.float32:
        raise ValueError(f"attention: {name} must be a float32 [batch, heads, seq, head_dim] array, "
                         f"got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------------------
# The reference loop.


@jit
def attention_naive(query, key, value, mask_bias, position_bias):
    """One query row, one key at a time. query/key/value float32 [batch, heads, seq, head_dim],
    mask_bias float32 [batch, seq], position_bias float32 [heads, seq, seq] -> context."""
    batch, num_heads, seq, head_dim = query.shape
    scale = np.float32(1.0 / math.sqrt(head_dim))
    out = np.zeros((batch, num_heads, seq, head_dim), dtype=np.float32)
    scores = np.empty(seq, dtype=np.float32)
    for b in range(batch):
        for h in range(num_heads):
            for i in range(seq):
                largest = np.float32(-np.inf)
                for j in range(seq):
                    dot = _F0
                    for c in range(head_dim):
                        dot += query[b, h, i, c] * key[b, h, j, c]
                    scores[j] = dot * scale + position_bias[h, i, j] + mask_bias[b, j]
                    largest = max(largest, scores[j])
                total = _F0
                for j in range(seq):
                    scores[j] = np.exp(scores[j] - largest)
                    total += scores[j]
                for j in range(seq):
                    weight = scores[j] / total
                    for c in range(head_dim):
                        out[b, h, i, c] += weight * value[b, h, j, c]
    return out
