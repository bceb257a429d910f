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
