"""The varlen attention kernel under a causal mask (decoders), with and without a sliding
window, against the NumPy twin (transformer.model.attention with causal_bias)."""

import numpy as np
import pytest

from transformer import model
from transformer.kernels import attention as kernel
from transformer.kernels import microkernel

# (heads, head_dim, lengths of the packed sequences, window or None)
CASES = [
    (1, 32, [1], None),
    (2, 64, [17, 3, 1], None),
    (3, 24, [50, 49, 13], None),  # past one query block (24 rows), head_dim not a multiple of 16
    (2, 32, [130, 7], 5),  # a window much smaller than the sequence
    (4, 16, [77, 40, 2], 33),  # a window not on a 16-key panel boundary
    (2, 64, [300], 128),
]


def reference(qkv, cu_seqlens, heads, head_dim, window):
    """Each sequence through transformer.model.attention on its own: [tokens, heads * head_dim]."""
    hidden = heads * head_dim
    out = np.empty((qkv.shape[0], hidden), np.float32)
    for start, stop in zip(cu_seqlens[:-1], cu_seqlens[1:]):
        n = stop - start
        q, k, v = (qkv[start:stop, i * hidden:(i + 1) * hidden].reshape(1, n, heads, head_dim).transpose(0, 2, 1, 3)
                   for i in range(3))  # -> [1, heads, n, head_dim]
        context, _ = model.attention(q, k, v, model.causal_bias(n, window))
        out[start:stop] = context.transpose(0, 2, 1, 3).reshape(n, hidden)
    return out


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("heads, head_dim, lengths, window", CASES)
def test_causal_varlen_attention_matches_the_numpy_twin(heads, head_dim, lengths, window, wide, monkeypatch):
    if wide and not microkernel.WIDE_TILES:
        pytest.skip("the wide tiles need AVX-512 (this CPU has none)")
    monkeypatch.setattr(microkernel, "WIDE_TILES", wide)
    rng = np.random.default_rng(len(lengths) + head_dim)
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    qkv = rng.standard_normal((cu_seqlens[-1], 3 * heads * head_dim)).astype(np.float32)
    got = kernel.attention_varlen(qkv, cu_seqlens, heads, causal=True, window=window)
    expected = reference(qkv, cu_seqlens, heads, head_dim, window)
    assert np.abs(got - expected).max() <= 2e-6 * max(1.0, np.abs(expected).max())


def test_causal_first_token_attends_to_itself_alone():
    heads, head_dim = 2, 32
    qkv = np.random.default_rng(0).standard_normal((9, 3 * heads * head_dim)).astype(np.float32)
    got = kernel.attention_varlen(qkv, np.array([0, 9]), heads, causal=True)
    np.testing.assert_array_equal(got[0], qkv[0, 2 * heads * head_dim:])  # softmax of one key: its value


def test_a_causal_plan_runs_bidirectional_layers_too():
    heads, head_dim = 2, 16
    qkv = np.random.default_rng(1).standard_normal((20, 3 * heads * head_dim)).astype(np.float32)
    cu_seqlens = np.array([0, 20])
    plan = kernel.VarlenPlan(cu_seqlens, heads, heads * head_dim, causal=True)
    np.testing.assert_array_equal(plan(qkv, causal=False), kernel.attention_varlen(qkv, cu_seqlens, heads))


def test_causal_bias_with_a_window():
    bias = model.causal_bias(4, window=2)
    np.testing.assert_array_equal(bias == 0, [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])


@pytest.mark.parametrize("heads, kv_heads, head_dim, lengths, causal", [
    (4, 2, 16, [17, 3, 1], True),
    (6, 1, 32, [50, 9], True),
    (4, 4, 24, [30, 1], False),
    (8, 2, 8, [77], False),
])
def test_grouped_query_attention_reads_each_key_value_head_in_place(heads, kv_heads, head_dim, lengths, causal):
    # qkv packed as program.head_major packs it: [q of the group's heads | k_g | v_g] per key/value
    # head; the kernel must equal the NumPy twin with K and V repeated per query head.
    from transformer.numba_backend.program import head_major

    rng = np.random.default_rng(heads * 10 + kv_heads)
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    total, group = cu_seqlens[-1], heads // kv_heads
    q = rng.standard_normal((total, heads * head_dim)).astype(np.float32)
    k, v = (rng.standard_normal((total, kv_heads * head_dim)).astype(np.float32) for _ in range(2))
    packed, _ = head_major([q, k, v], [None] * 3, heads, kv_heads)
    got = kernel.attention_varlen(np.ascontiguousarray(packed), cu_seqlens, heads, head_major=True, causal=causal,
                                  kv_heads=kv_heads)
    expected = np.empty_like(q)
    for start, stop in zip(cu_seqlens[:-1], cu_seqlens[1:]):
        n = stop - start
        query = q[start:stop].reshape(1, n, heads, head_dim).transpose(0, 2, 1, 3)
        key, value = (np.repeat(x[start:stop].reshape(1, n, kv_heads, head_dim).transpose(0, 2, 1, 3), group, axis=1)
                      for x in (k, v))
        mask = model.causal_bias(n) if causal else np.zeros((n, n), np.float32)
        context, _ = model.attention(query, key, value, mask)
        expected[start:stop] = context.transpose(0, 2, 1, 3).reshape(n, -1)
    assert np.abs(got - expected).max() <= 2e-6 * max(1.0, np.abs(expected).max())


def test_rotary_keys_rotated_on_copy_leave_qkv_keys_as_they_were():
    # A key head serves several query heads: the kernel rotates keys as it copies them, queries in place.
    heads, kv_heads, head_dim, n = 4, 1, 16, 12
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((n, (heads + 2 * kv_heads) * head_dim)).astype(np.float32)
    keys_before = qkv[:, heads * head_dim:(heads + 1) * head_dim].copy()
    from transformer.recipe import Rotary

    cos, sin = model.rotary_angles(Rotary(theta=100.0), head_dim, np.arange(n))
    got = kernel.attention_varlen(qkv.copy(), np.array([0, n]), heads, causal=True, kv_heads=kv_heads,
                                  rotary=(cos, sin))
    query = model.apply_rotary(qkv[:, :heads * head_dim].reshape(1, n, heads, head_dim).transpose(0, 2, 1, 3), cos, sin)
    key = model.apply_rotary(keys_before.reshape(1, n, 1, head_dim).transpose(0, 2, 1, 3), cos, sin)
    value = qkv[:, (heads + 1) * head_dim:].reshape(1, n, 1, head_dim).transpose(0, 2, 1, 3)
    context, _ = model.attention(query, np.repeat(key, heads, 1), np.repeat(value, heads, 1), model.causal_bias(n))
    assert np.abs(got - context.transpose(0, 2, 1, 3).reshape(n, -1)).max() <= 2e-6
    kept = qkv.copy()
    kernel.attention_varlen(kept, np.array([0, n]), heads, causal=True, kv_heads=kv_heads, rotary=(cos, sin))
    np.testing.assert_array_equal(kept[:, heads * head_dim:], qkv[:, heads * head_dim:])  # keys and values untouched


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("rows, width", [(1, 16), (7, 33), (300, 64)])
def test_rms_norm_kernel_matches_the_numpy_twin_and_the_naive_loop(rows, width, offset):
    from transformer.kernels import layernorm

    rng = np.random.default_rng(rows + width)
    x = (rng.standard_normal((rows, width)) * 3).astype(np.float32)
    weight = (rng.standard_normal(width) * 0.2 + (0.0 if offset else 1.0)).astype(np.float32)
    expected = model.rms_norm(x, weight, 1e-6, offset)
    got = layernorm.rms_norm(x, weight, 1e-6, offset)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= 2e-6 * np.abs(expected).max()
    assert np.abs(layernorm.rms_norm_naive(x, weight, np.float32(1e-6), np.float32(offset)) - expected).max() \
        <= 2e-6 * np.abs(expected).max()
    in_place = x.copy()
    layernorm.rms_norm(in_place, weight, 1e-6, offset, out=in_place)
    np.testing.assert_array_equal(in_place, got)
