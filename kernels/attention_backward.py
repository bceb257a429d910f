"""Attention for training, forward and backward, one (sequence, head) at a time on the GEMM
micro-kernel, beside the loops they must equal.

    forward    scores = Q K^T * scale + position_bias + mask          [seq, keys]
               P      = softmax(scores)                               each row sums to 1
               C      = P V                                           [seq, head_dim]
    backward   dV     = P^T dC                                        [keys, head_dim]
               dP     = dC V^T                                        [seq, keys]
               dS     = P * (dP - rowsum(dP * P))                     softmax's backward
               dQ     = dS K * scale,   dK = dS^T Q * scale           [seq | keys, head_dim]

The NumPy twins are `transformer.model.attention` and `transformer.backward.attention_backward`
(the same arrays in and out, except that this backward takes the forward's mask and bias in
place of its probabilities, see below); `attention_forward_naive` and
`attention_backward_naive` here are the same math one element at a time, in float64.

Layouts (float32):

    query, key, value, d_context   [batch, heads, seq, head_dim], any strides. The kernels read
                                   them as [batch, seq, heads, head_dim] (row i of head h of
                                   sequence b at (b * seq + i) * hidden + h * head_dim), the
                                   layout the linear layers write: `model.split_heads` of a
                                   linear's output is that array transposed, no copy. Other
                                   layouts are copied into it first.
    mask_bias                      [batch, 1, 1, seq] or [batch, seq]: 0 for a token, MASK_VALUE
                                   for padding (`model.attention_mask_bias`)
    position_bias                  None, [1, heads, seq, seq] (MPNet) or [batch, heads, seq, seq]
    probabilities, d_scores        [batch, heads, seq, seq], only when asked for
    context, d_query, d_key, d_value   [batch, heads, seq, head_dim], transposed views of
                                   [batch, seq, heads, head_dim] arrays: `model.merge_heads` of
                                   one is a reshape, no copy

No work on padding: the keys before a sequence's first real key and after its last are
skipped (a row with no real key keeps them all: the reference's uniform weights). Their
probability is exactly 0 in the reference too (exp of about -3.4e38), so their scores,
dS, dK and dV are exactly 0: written as zeros, never computed.

The probabilities are not kept between the forward and the backward: the backward computes
them again from Q, K, the mask and the bias (flash attention's trade). Kept, they would be
[batch, heads, seq, seq] per layer (25 MB for MiniLM at 32 x 128), written and read back from
memory; recomputed, an item's P [seq, keys] lives in the cache while it is used, for the cost
of Q K^T and a softmax, a small share of the backward's products.

How an item (one head of one sequence) runs: the operands are copied once into the micro-
kernel's layouts (K^T and V^T as 16-wide panels [head_dim, keys], K, Q and dC as rows of
head_dim rounded up to 16, P^T and dS^T as rows), then every product is a run of register
tiles (`microkernel.tile`, 12 x 32 with AVX-512, else 6 x 16). Long sums (over more than
KEY_RUN keys or queries) go in runs, each run's sum added to the last, as the inference
kernel does (kernels/attention.py). Items are spread over the threads in contiguous runs
(`_jit.run_chunks`), each chunk with its own scratch.
"""

import math

import numpy as np

from ._jit import even_bounds, jit, parallel_chunks, run_chunks
from .microkernel import MR, NR, WIDE_MR, WIDE_TILES, tile
from .softmax import softmax_rows_inplace

_F0 = np.float32(0.0)
_ONE = np.float32(1.0)
MASK_VALUE = np.finfo(np.float32).min
KEY_RUN = 128  # the longest sum of one run (see the module docstring)
# Splitting over threads pays off above about this many flops per thread.
_FLOPS_PER_CHUNK = 4e6


@jit(inline="always")
def _padded(n):
    """n rounded up to a whole number of 16-float panels."""
    return (n + NR - 1) // NR * NR


@jit(inline="always")
def _tile_shape(wide):
    return (WIDE_MR, 2 * NR) if wide else (MR, NR)


@jit
def _product(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, wide):
    """C[rows, cols] = A[rows, depth] @ B[depth, cols] through the micro-kernel, tile by tile.

    Element (i, k) of A at a[a_start + i * lda + k]; (k, j) of B at b[b_start + k * ldb + j],
    each row of B readable for `cols` rounded up to 16 floats (zeros past cols); (i, j) of C at
    c[c_start + i * ldc + j]. The depth goes in runs of KEY_RUN, each run's sum added to C."""
    tile_rows, tile_cols = _tile_shape(wide)
    for c0 in range(0, cols, tile_cols):
        width = min(tile_cols, cols - c0)
        second = NR if width > NR else 0
        for i0 in range(0, rows, tile_rows):
            height = min(tile_rows, rows - i0)
            for k0 in range(0, depth, KEY_RUN):
                tile(a, a_start + i0 * lda + k0, lda, height, b, b_start + k0 * ldb + c0, ldb,
                     min(KEY_RUN, depth - k0), c, c_start + i0 * ldc + c0, ldc, width, k0 > 0, wide, second, -1)


@jit
def _copy_rows(source, start, stride, rows, width, target, target_width):
    """target[r * target_width + c] = source[start + r * stride + c] for c < width, zeros up
    to target_width (the panels' padding is read by the micro-kernel: keep it zero)."""
    for r in range(rows):
        first = start + r * stride
        out = r * target_width
        for c in range(width):
            target[out + c] = source[first + c]
        for c in range(width, target_width):
            target[out + c] = _F0


@jit
def _copy_transposed(source, start, stride, rows, width, target, target_ld):
    """target[c * target_ld + r] = source[start + r * stride + c] (r < rows, c < width); the
    columns rows..target_ld - 1 of each target row are zeroed."""
    for r in range(rows):
        first = start + r * stride
        for c in range(width):
            target[c * target_ld + r] = source[first + c]
    for c in range(width):
        for r in range(rows, target_ld):
            target[c * target_ld + r] = _F0


# ---------------------------------------------------------------------------------------
# The probabilities of one item, the forward and the backward
# ---------------------------------------------------------------------------------------
@jit
def _probabilities(q, k, row0, ld, seq, head_dim, lo, hi, scale, mask, mask0, bias, bias0, key_t, scores,
                   inverse_sums, wide):
    """P of one item into scores [seq, n_pad] (row i from i * n_pad, column j for key lo + j).
    Rows of q and k from row0, ld floats apart; the mask of key j at mask[mask0 + j]; the
    bias of (i, j) at bias[bias0 + i * seq + j] (an empty bias: none); keys lo..hi-1."""
    n_k = hi - lo
    n_pad = _padded(n_k)
    _copy_transposed(k, row0 + lo * ld, ld, n_k, head_dim, key_t, n_pad)  # K^T [head_dim, n_pad]
    _product(q, row0, ld, seq, key_t, 0, n_pad, head_dim, scores, 0, n_pad, n_k, wide)  # Q K^T
    has_bias = bias.shape[0] > 0
    mask_row = mask[mask0 + lo:mask0 + hi]
    for i in range(seq):
        row = scores[i * n_pad:i * n_pad + n_k]
        for j in range(n_k):
            row[j] *= scale
        if has_bias:
            bias_row = bias[bias0 + i * seq + lo:bias0 + i * seq + hi]
            for j in range(n_k):
                row[j] += bias_row[j]
        for j in range(n_k):
            row[j] += mask_row[j]
    softmax_rows_inplace(scores, 0, n_pad, seq, n_k, _ONE, inverse_sums, 0)  # exp(x - max), 1 / sums
    for i in range(seq):
        row = scores[i * n_pad:i * n_pad + n_k]
        for j in range(n_k):
            row[j] *= inverse_sums[i]


@jit
def _forward_item(q, k, v, row0, ld, seq, head_dim, lo, hi, scale, mask, mask0, bias, bias0, probabilities, p0,
                  context, scratch, wide):
    """One item: the context rows (like q's); the probabilities' row i at probabilities[p0 +
    i * seq:] when probabilities is not empty. scratch: `_forward_scratch_floats` floats."""
    n_k = hi - lo
    n_pad, d_pad, s_pad = _padded(n_k), _padded(head_dim), _padded(seq)
    key_t = scratch[:head_dim * n_pad]
    at = head_dim * s_pad
    scores = scratch[at:at + seq * n_pad]
    at += seq * s_pad
    value_rows = scratch[at:at + n_k * d_pad]
    at += seq * d_pad
    inverse_sums = scratch[at:at + seq]
    _probabilities(q, k, row0, ld, seq, head_dim, lo, hi, scale, mask, mask0, bias, bias0, key_t, scores,
                   inverse_sums, wide)
    _copy_rows(v, row0 + lo * ld, ld, n_k, head_dim, value_rows, d_pad)  # V [n_k, d_pad]
    _product(scores, 0, n_pad, seq, value_rows, 0, d_pad, n_k, context, row0, ld, head_dim, wide)  # P V
    if probabilities.shape[0] > 0:
        for i in range(seq):
            out = probabilities[p0 + i * seq:p0 + (i + 1) * seq]
            for j in range(seq):
                out[j] = _F0
            for j in range(n_k):
                out[lo + j] = scores[i * n_pad + j]


def _forward_scratch_floats(seq, head_dim):
    s_pad, d_pad = _padded.py_func(seq), _padded.py_func(head_dim)
    return head_dim * s_pad + seq * s_pad + seq * d_pad + seq


@jit
def _forward_chunks(q, k, v, num_heads, seq, head_dim, scale, mask, key_first, key_stop, bias, bias_batch_stride,
                    probabilities, context, item_bounds, scratch, wide, first_chunk, stop_chunk):
    """Chunks first_chunk..stop_chunk-1 of the (batch, head) items, chunk c being items
    item_bounds[c]..item_bounds[c + 1] - 1 with scratch[c]."""
    ld = num_heads * head_dim
    for c in range(first_chunk, stop_chunk):
        for item in range(item_bounds[c], item_bounds[c + 1]):
            b = item // num_heads
            h = item - b * num_heads
            _forward_item(q, k, v, b * seq * ld + h * head_dim, ld, seq, head_dim, key_first[b], key_stop[b], scale,
                          mask, b * seq, bias, b * bias_batch_stride + h * seq * seq, probabilities, item * seq * seq,
                          context, scratch[c], wide)


@jit(fastmath={"reassoc", "nsz", "contract"})
def _softmax_backward_rows(scores, n_pad, seq, lo, hi, d_probabilities, scale, d_scores, d0):
    """Rows i < seq, P's row i at scores[i * n_pad:] and dP's at d_probabilities[i * n_pad:]:
    dS = p * (dP - sum(dP * p)) into d_scores' row i (from d0 + i * seq, zero outside keys
    lo..hi-1) when d_scores is not empty, and dS * scale into dP's row, in place."""
    n_k = hi - lo
    has_scores = d_scores.shape[0] > 0
    for i in range(seq):
        p = scores[i * n_pad:i * n_pad + n_k]
        d_p = d_probabilities[i * n_pad:i * n_pad + n_k]
        weighted = _F0
        for j in range(n_k):
            weighted += d_p[j] * p[j]
        if has_scores:
            out = d_scores[d0 + i * seq:d0 + (i + 1) * seq]
            for j in range(seq):
                out[j] = _F0
            for j in range(n_k):
                out[lo + j] = p[j] * (d_p[j] - weighted)
        for j in range(n_k):
            d_p[j] = p[j] * (d_p[j] - weighted) * scale


@jit
def _zero_rows(x, start, stride, rows, width):
    for r in range(rows):
        row = x[start + r * stride:start + r * stride + width]
        for c in range(width):
            row[c] = _F0


@jit
def _backward_item(q, k, v, d_context, row0, ld, seq, head_dim, lo, hi, scale, mask, mask0, bias, bias0, d_scores,
                   d0, d_query, d_key, d_value, scratch, wide):
    """One item, the layouts of `_forward_item`; P recomputed (`_probabilities`); d_scores
    like the probabilities (empty: not wanted), d_query, d_key, d_value like q, k, v.
    scratch: `_backward_scratch_floats(seq, head_dim)` floats."""
    n_k = hi - lo
    n_pad, d_pad, s_pad = _padded(n_k), _padded(head_dim), _padded(seq)
    # the scratch's parts (sizes for n_k <= seq)
    key_t = scratch[:head_dim * n_pad]  # K^T, then V^T [head_dim, n_pad]
    at = head_dim * s_pad
    scores = scratch[at:at + seq * n_pad]  # P [seq, n_pad]
    at += seq * s_pad
    d_probabilities = scratch[at:at + seq * n_pad]  # dP, then dS * scale [seq, n_pad]
    at += seq * s_pad
    transposed = scratch[at:at + n_k * s_pad]  # P^T, then dS^T [n_k, s_pad]
    at += seq * s_pad
    key_rows = scratch[at:at + n_k * d_pad]  # K [n_k, d_pad]
    at += seq * d_pad
    query_rows = scratch[at:at + seq * d_pad]  # Q [seq, d_pad]
    at += seq * d_pad
    d_context_rows = scratch[at:at + seq * d_pad]  # dC [seq, d_pad]
    at += seq * d_pad
    inverse_sums = scratch[at:at + seq]

    _probabilities(q, k, row0, ld, seq, head_dim, lo, hi, scale, mask, mask0, bias, bias0, key_t, scores,
                   inverse_sums, wide)
    key0 = row0 + lo * ld
    value_t = key_t  # K^T is spent
    _copy_transposed(v, key0, ld, n_k, head_dim, value_t, n_pad)
    _copy_rows(k, key0, ld, n_k, head_dim, key_rows, d_pad)
    _copy_rows(q, row0, ld, seq, head_dim, query_rows, d_pad)
    _copy_rows(d_context, row0, ld, seq, head_dim, d_context_rows, d_pad)
    # dV = P^T dC: keys lo..hi-1 (the others' probabilities are 0)
    _copy_transposed(scores, 0, n_pad, seq, n_k, transposed, s_pad)  # P^T [n_k, s_pad]
    _product(transposed, 0, s_pad, n_k, d_context_rows, 0, d_pad, seq, d_value, key0, ld, head_dim, wide)
    # dP = dC V^T, then dS (into d_scores) and dS * scale in place
    _product(d_context, row0, ld, seq, value_t, 0, n_pad, head_dim, d_probabilities, 0, n_pad, n_k, wide)
    _softmax_backward_rows(scores, n_pad, seq, lo, hi, d_probabilities, scale, d_scores, d0)
    # dQ = (dS * scale) K ; dK = (dS * scale)^T Q
    _product(d_probabilities, 0, n_pad, seq, key_rows, 0, d_pad, n_k, d_query, row0, ld, head_dim, wide)
    _copy_transposed(d_probabilities, 0, n_pad, seq, n_k, transposed, s_pad)
    _product(transposed, 0, s_pad, n_k, query_rows, 0, d_pad, seq, d_key, key0, ld, head_dim, wide)
    # the padding keys: no gradient
    _zero_rows(d_key, row0, ld, lo, head_dim)
    _zero_rows(d_value, row0, ld, lo, head_dim)
    _zero_rows(d_key, row0 + hi * ld, ld, seq - hi, head_dim)
    _zero_rows(d_value, row0 + hi * ld, ld, seq - hi, head_dim)


def _backward_scratch_floats(seq, head_dim):
    s_pad, d_pad = _padded.py_func(seq), _padded.py_func(head_dim)
    return head_dim * s_pad + 3 * seq * s_pad + 3 * seq * d_pad + seq


@jit
def _backward_chunks(q, k, v, d_context, num_heads, seq, head_dim, scale, mask, key_first, key_stop, bias,
                     bias_batch_stride, d_scores, d_query, d_key, d_value, item_bounds, scratch, wide, first_chunk,
                     stop_chunk):
    ld = num_heads * head_dim
    for c in range(first_chunk, stop_chunk):
        for item in range(item_bounds[c], item_bounds[c + 1]):
            b = item // num_heads
            h = item - b * num_heads
            _backward_item(q, k, v, d_context, b * seq * ld + h * head_dim, ld, seq, head_dim, key_first[b],
                           key_stop[b], scale, mask, b * seq, bias, b * bias_batch_stride + h * seq * seq, d_scores,
                           item * seq * seq, d_query, d_key, d_value, scratch[c], wide)


# ---------------------------------------------------------------------------------------
# The entry points
# ---------------------------------------------------------------------------------------
def _token_major(name, heads):
    """[batch, heads, seq, head_dim] -> the flat float32 [batch, seq, heads, head_dim] buffer
    (no copy for a split_heads view of a contiguous array)."""
    if not isinstance(heads, np.ndarray) or heads.ndim != 4 or heads.dtype != np.float32:
        found = f"{heads.dtype} {heads.shape}" if isinstance(heads, np.ndarray) else type(heads).__name__
        raise TypeError(f"attention: {name} must be a float32 [batch, heads, seq, head_dim] array, got {found}")
    return np.ascontiguousarray(heads.transpose(0, 2, 1, 3)).reshape(-1)


def _heads_view(flat, shape):
    """A flat [batch, seq, heads, head_dim] buffer -> its [batch, heads, seq, head_dim] view."""
    batch, heads, seq, head_dim = shape
    return flat.reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3)


def key_ranges(mask_bias, batch, seq):
    """The keys each sequence attends to: (first, stop) int64 [batch] each, from the first to
    the last real key (all keys when a row has none, as the reference's uniform weights), and
    the mask as float32 [batch * seq]. mask_bias [batch, 1, 1, seq] or [batch, seq] or None."""
    if mask_bias is None:
        mask = np.zeros((batch, seq), dtype=np.float32)
    else:
        mask = np.asarray(mask_bias)
        if mask.dtype != np.float32 or mask.size != batch * seq or mask.shape[0] != batch or mask.shape[-1] != seq:
            raise ValueError(f"attention: mask_bias must be float32 [batch={batch}, 1, 1, seq={seq}], got "
                             f"{mask.dtype} {mask.shape}")
        mask = mask.reshape(batch, seq)
    real = mask > MASK_VALUE
    any_real = real.any(axis=1)
    first = np.where(any_real, real.argmax(axis=1), 0).astype(np.int64)
    stop = np.where(any_real, seq - real[:, ::-1].argmax(axis=1), seq).astype(np.int64)
    return first, stop, np.ascontiguousarray(mask, dtype=np.float32).reshape(-1)


def supports(mask_bias, position_bias, batch, seq):
    """True when these kernels take this mask and bias: a key mask ([batch, 1, 1, seq]; not a
    mask per query, as causal or DeBERTa's) and no bias or a [1 | batch, heads, seq, seq] one."""
    if mask_bias is not None and np.shape(mask_bias) not in ((batch, 1, 1, seq), (batch, seq)):
        return False
    return position_bias is None or (np.ndim(position_bias) == 4 and np.shape(position_bias)[0] in (1, batch)
                                     and np.shape(position_bias)[2:] == (seq, seq))


def _bias_args(position_bias, batch, num_heads, seq):
    """(flat float32 bias, the floats between two sequences' biases: 0 when shared)."""
    if position_bias is None:
        return np.zeros(0, np.float32), 0
    if not supports(None, position_bias, batch, seq) or np.shape(position_bias)[1] != num_heads:
        raise ValueError(f"attention: position_bias must be float32 [1 or {batch}, {num_heads}, {seq}, {seq}], "
                         f"got {np.shape(position_bias)}")
    stride = 0 if np.shape(position_bias)[0] == 1 else num_heads * seq * seq
    return np.ascontiguousarray(position_bias, dtype=np.float32).reshape(-1), stride


def _chunks(batch, num_heads, seq, head_dim):
    flops = 4.0 * batch * num_heads * seq * seq * head_dim
    return np.array(even_bounds(batch * num_heads, parallel_chunks(flops, _FLOPS_PER_CHUNK)), dtype=np.int64)


def _check_heads(names_and_arrays):
    shapes = [array.shape for _, array in names_and_arrays]
    if len(set(shapes)) > 1:
        names = ", ".join(name for name, _ in names_and_arrays)
        raise ValueError(f"attention: {names} must have one shape [batch, heads, seq, head_dim], got "
                         f"{', '.join(map(str, shapes))}")
    return [_token_major(name, array) for name, array in names_and_arrays]


def attention_forward(query, key, value, mask_bias=None, position_bias=None, probabilities=False, wide=WIDE_TILES):
    """The twin of `transformer.model.attention` -> context float32 [batch, heads, seq,
    head_dim], and with probabilities=True also the probabilities [batch, heads, seq, seq]
    (the backward recomputes them: training keeps none). Layouts: the module docstring."""
    q, k, v = _check_heads((("query", query), ("key", key), ("value", value)))
    batch, num_heads, seq, head_dim = query.shape
    first, stop, mask = key_ranges(mask_bias, batch, seq)
    bias, bias_batch_stride = _bias_args(position_bias, batch, num_heads, seq)
    kept = np.empty((batch, num_heads, seq, seq) if probabilities else (0,), dtype=np.float32)
    context = np.empty(q.shape, dtype=np.float32)
    item_bounds = _chunks(batch, num_heads, seq, head_dim)
    chunks = len(item_bounds) - 1
    scratch = np.empty((chunks, _forward_scratch_floats(seq, head_dim)), dtype=np.float32)
    run_chunks(_forward_chunks, range(chunks + 1), q, k, v, num_heads, seq, head_dim,
               np.float32(1.0 / math.sqrt(head_dim)), mask, first, stop, bias, bias_batch_stride,
               kept.reshape(-1), context, item_bounds, scratch, bool(wide))
    context = _heads_view(context, query.shape)
    return (context, kept) if probabilities else context


def attention_backward(d_context, query, key, value, mask_bias=None, position_bias=None, d_scores=False,
                       wide=WIDE_TILES):
    """The twin of `transformer.backward.attention_backward`, from the forward's inputs (the
    probabilities recomputed, item by item, in cache) -> (d_query, d_key, d_value [batch,
    heads, seq, head_dim], d_scores [batch, heads, seq, seq] when d_scores=True, else None),
    float32. d_scores: the gradient of what the position bias was added to."""
    dc, q, k, v = _check_heads((("d_context", d_context), ("query", query), ("key", key), ("value", value)))
    batch, num_heads, seq, head_dim = query.shape
    first, stop, mask = key_ranges(mask_bias, batch, seq)
    bias, bias_batch_stride = _bias_args(position_bias, batch, num_heads, seq)
    scores_out = np.empty((batch, num_heads, seq, seq) if d_scores else (0,), dtype=np.float32)
    d_query, d_key, d_value = (np.empty(q.shape, dtype=np.float32) for _ in range(3))
    item_bounds = _chunks(batch, num_heads, seq, head_dim)
    chunks = len(item_bounds) - 1
    scratch = np.empty((chunks, _backward_scratch_floats(seq, head_dim)), dtype=np.float32)
    run_chunks(_backward_chunks, range(chunks + 1), q, k, v, dc, num_heads, seq, head_dim,
               np.float32(1.0 / math.sqrt(head_dim)), mask, first, stop, bias, bias_batch_stride,
               scores_out.reshape(-1), d_query, d_key, d_value, item_bounds, scratch, bool(wide))
    return (_heads_view(d_query, query.shape), _heads_view(d_key, query.shape), _heads_view(d_value, query.shape),
            scores_out if d_scores else None)


# ---------------------------------------------------------------------------------------
# The reference loops
# ---------------------------------------------------------------------------------------
def attention_forward_naive(query, key, value, mask_bias, position_bias=None):
    """One score at a time in float64: query, key, value [batch, heads, seq, head_dim],
    mask_bias [batch, 1, 1, seq], position_bias None or [1 | batch, heads, seq, seq] ->
    (context, probabilities) float64."""
    batch, num_heads, seq, head_dim = query.shape
    mask = np.asarray(mask_bias, np.float64).reshape(batch, seq)
    bias = np.zeros((1, num_heads, seq, seq)) if position_bias is None else np.asarray(position_bias, np.float64)
    scale = 1.0 / math.sqrt(head_dim)
    context = np.zeros((batch, num_heads, seq, head_dim))
    probabilities = np.zeros((batch, num_heads, seq, seq))
    for b in range(batch):
        for h in range(num_heads):
            bias_bh = bias[min(b, len(bias) - 1), h]
            for i in range(seq):
                scores = [sum(float(query[b, h, i, c]) * float(key[b, h, j, c]) for c in range(head_dim)) * scale
                          + bias_bh[i, j] + mask[b, j] for j in range(seq)]
                largest = max(scores)
                exps = [math.exp(s - largest) for s in scores]
                total = sum(exps)
                for j in range(seq):
                    probabilities[b, h, i, j] = exps[j] / total
                    for c in range(head_dim):
                        context[b, h, i, c] += probabilities[b, h, i, j] * float(value[b, h, j, c])
    return context, probabilities


def attention_backward_naive(d_context, query, key, value, probabilities):
    """The backward one element at a time in float64 -> (d_query, d_key, d_value, d_scores)."""
    batch, num_heads, seq, head_dim = query.shape
    scale = 1.0 / math.sqrt(head_dim)
    d_query, d_key, d_value = (np.zeros((batch, num_heads, seq, head_dim)) for _ in range(3))
    d_scores = np.zeros((batch, num_heads, seq, seq))
    for b in range(batch):
        for h in range(num_heads):
            p = probabilities[b, h].astype(np.float64)
            for i in range(seq):
                d_p = [sum(float(d_context[b, h, i, c]) * float(value[b, h, j, c]) for c in range(head_dim))
                       for j in range(seq)]
                weighted = sum(d_p[j] * p[i, j] for j in range(seq))
                for j in range(seq):
                    d_score = p[i, j] * (d_p[j] - weighted)
                    d_scores[b, h, i, j] = d_score
                    for c in range(head_dim):
                        d_value[b, h, j, c] += p[i, j] * float(d_context[b, h, i, c])
                        d_query[b, h, i, c] += d_score * scale * float(key[b, h, j, c])
                        d_key[b, h, j, c] += d_score * scale * float(query[b, h, i, c])
    return d_query, d_key, d_value, d_scores
