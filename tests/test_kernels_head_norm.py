"""The kernels Qwen3 and Gemma 3 add: each head's query and key RMS-normalised inside the
attention kernel (before the rotation), and Gemma's post-norm `residual + RMSNorm(x)`;
against the NumPy twin (transformer.model.rms_norm per head, apply_rotary, attention) and
the naive loop (layernorm.rms_norm_naive)."""

import numpy as np
import pytest

from transformer import model
from transformer.kernels import attention as kernel
from transformer.kernels import layernorm
from transformer.numba_backend.program import head_major
from transformer.recipe import Rotary


def twin(q, k, v, cu_seqlens, heads, kv_heads, head_dim, query_norm, key_norm, eps, offset, cos, sin, causal):
    """Per sequence: RMSNorm each head's query and key, rotate, attend (K, V repeated per query head)."""
    out = np.empty_like(q)
    group = heads // kv_heads
    for start, stop in zip(cu_seqlens[:-1], cu_seqlens[1:]):
        n = stop - start
        query = q[start:stop].reshape(1, n, heads, head_dim).transpose(0, 2, 1, 3)  # -> [1, heads, n, hd]
        key, value = (x[start:stop].reshape(1, n, kv_heads, head_dim).transpose(0, 2, 1, 3) for x in (k, v))
        if query_norm is not None:
            query = model.rms_norm(query, query_norm, eps, offset)
        if key_norm is not None:
            key = model.rms_norm(key, key_norm, eps, offset)
        query, key = model.apply_rotary(query, cos[:n], sin[:n]), model.apply_rotary(key, cos[:n], sin[:n])
        mask = model.causal_bias(n) if causal else np.zeros((n, n), np.float32)
        context, _ = model.attention(query, np.repeat(key, group, 1), np.repeat(value, group, 1), mask)
        out[start:stop] = context.transpose(0, 2, 1, 3).reshape(n, -1)
    return out


@pytest.mark.parametrize("heads, kv_heads, head_dim, lengths, offset, causal, norms", [
    (4, 2, 16, [17, 3, 1], 0.0, True, "both"),  # Qwen3
    (2, 1, 32, [60, 9], 1.0, True, "both"),  # Gemma 3: (1 + w), past one query block
    (4, 4, 24, [30, 1], 1.0, False, "both"),  # EmbeddingGemma: bidirectional
    (2, 2, 16, [12], 0.0, True, "query"),
    (2, 2, 16, [12], 0.0, True, "key"),
])
def test_query_and_key_norms_in_the_attention_kernel_match_the_numpy_twin(heads, kv_heads, head_dim, lengths, offset,
                                                                         causal, norms):
    rng = np.random.default_rng(heads + head_dim + len(lengths))
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    total = cu_seqlens[-1]
    q = (rng.standard_normal((total, heads * head_dim)) * 4).astype(np.float32)
    k, v = ((rng.standard_normal((total, kv_heads * head_dim)) * 4).astype(np.float32) for _ in range(2))
    query_norm = (rng.standard_normal(head_dim) * 0.3 + 1 - offset).astype(np.float32) if norms != "key" else None
    key_norm = (rng.standard_normal(head_dim) * 0.3 + 1 - offset).astype(np.float32) if norms != "query" else None
    cos, sin = model.rotary_angles(Rotary(theta=1000.0), head_dim, np.arange(max(lengths)))
    packed, _ = head_major([q, k, v], [None] * 3, heads, kv_heads)
    packed = np.ascontiguousarray(packed)
    keys_and_values = packed.copy()
    plan = kernel.VarlenPlan(cu_seqlens, heads, heads * head_dim, head_major=True, causal=causal, kv_heads=kv_heads,
                             rotary=(cos, sin))
    got = plan(packed, head_norms=(query_norm, key_norm, 1e-6, offset))
    expected = twin(q, k, v, cu_seqlens, heads, kv_heads, head_dim, query_norm, key_norm, 1e-6, offset, cos, sin, causal)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= 2e-6 * max(1.0, np.abs(expected).max())
    # the shared key heads are normalised as they are copied: qkv's keys and values stay as they were
    group = heads // kv_heads
    grouped = packed.reshape(total, kv_heads, group + 2, head_dim)
    np.testing.assert_array_equal(grouped[:, :, group:], keys_and_values.reshape(total, kv_heads, group + 2,
                                                                                 head_dim)[:, :, group:])


def test_a_norm_weight_of_the_wrong_width_is_refused_by_name():
    plan = kernel.VarlenPlan(np.array([0, 4]), 2, 32, head_major=True)
    qkv = np.zeros((4, 96), np.float32)
    with pytest.raises(ValueError, match=r"key_norm must be float32 \[head_dim=16\]"):
        plan(qkv, head_norms=(np.ones(16, np.float32), np.ones(32, np.float32), 1e-6, 0.0))


@pytest.mark.parametrize("rows, width", [(1, 16), (7, 33), (300, 64)])
def test_rms_norm_add_matches_the_numpy_twin_and_the_naive_loop(rows, width):
    rng = np.random.default_rng(rows * width)
    x = (rng.standard_normal((rows, width)) * 3).astype(np.float32)
    residual = (rng.standard_normal((rows, width)) * 10).astype(np.float32)
    weight = (rng.standard_normal(width) * 0.2).astype(np.float32)
    expected = residual + model.rms_norm(x, weight, 1e-6, 1.0)  # Gemma 3: hidden + post_norm(sublayer(x))
    got = layernorm.rms_norm_add(x, residual, weight, 1e-6, 1.0)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= 2e-6 * np.abs(expected).max()
    naive = residual + layernorm.rms_norm_naive(x, weight, np.float32(1e-6), np.float32(1.0))
    assert np.abs(naive - expected).max() <= 2e-6 * np.abs(expected).max()
    in_place = x.copy()
    layernorm.rms_norm_add(in_place, residual, weight, 1e-6, 1.0, out=in_place)
    np.testing.assert_array_equal(in_place, got)


def test_rms_norm_add_refuses_to_write_over_its_residual():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="out must not overlap residual"):
        layernorm.rms_norm_add(x, x, np.ones(8, np.float32), 1e-6, out=x)
