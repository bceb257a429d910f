"""The tiled attention kernel, padded and variable-length, against transformer.model.attention."""

import numpy as np
import pytest

from transformer import model
from transformer.kernels import attention as kernel
from transformer.kernels import microkernel

# (batch, heads, seq, head_dim, lengths of the real tokens per row or None for no padding, MPNet bias?)
CASES = [
    (1, 1, 1, 32, None, False),  # seq 1
    (1, 2, 5, 64, None, False),  # batch of 1
    (2, 3, 7, 32, [7, 3], False),
    (3, 2, 19, 64, [19, 0, 5], False),  # a fully padded row
    (2, 4, 33, 80, [30, 12], True),  # head_dim 80, relative position bias
    (4, 2, 50, 24, [1, 50, 49, 13], False),  # head_dim not a multiple of 16: V is copied
    (1, 12, 128, 64, None, True),
    (2, 12, 77, 32, [77, 40], True),
]


def make_case(batch, heads, seq, head_dim, lengths, with_bias, seed=0):
    rng = np.random.default_rng(seed + seq)
    query, key, value = (rng.standard_normal((batch, heads, seq, head_dim)).astype(np.float32) for _ in range(3))
    attention_mask = np.ones((batch, seq), np.int64)
    if lengths is not None:
        for row, length in enumerate(lengths):
            attention_mask[row, length:] = 0
    bias = (rng.standard_normal((1, heads, seq, seq)) * 2).astype(np.float32) if with_bias else None
    return query, key, value, attention_mask, bias


def pack(x, attention_mask):
    """[batch, heads, seq, head_dim] -> the real tokens' rows [tokens, heads * head_dim]."""
    batch, heads, seq, head_dim = x.shape
    rows = x.transpose(0, 2, 1, 3).reshape(batch * seq, heads * head_dim)
    return rows[np.flatnonzero(attention_mask)]


def varlen_inputs(query, key, value, attention_mask):
    qkv = np.ascontiguousarray(np.concatenate([pack(x, attention_mask) for x in (query, key, value)], axis=1))
    lengths = attention_mask.sum(axis=1)
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths)))
    positions = np.nonzero(attention_mask)[1]  # each token's index in its padded row
    return qkv, cu_seqlens, positions


def close(got, expected, tolerance=2e-6):
    return np.abs(got - expected).max() <= tolerance * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("case", CASES)
def test_padded_attention_matches_numpy_at_every_position(case):
    query, key, value, attention_mask, bias = make_case(*case)
    expected, _ = model.attention(query, key, value, model.attention_mask_bias(attention_mask), bias)
    got = kernel.attention(query, key, value, model.attention_mask_bias(attention_mask), bias)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.isfinite(got).all()
    assert close(got, expected)


@pytest.mark.parametrize("case", CASES)
def test_varlen_attention_matches_numpy_on_the_real_tokens(case):
    query, key, value, attention_mask, bias = make_case(*case)
    expected, _ = model.attention(query, key, value, model.attention_mask_bias(attention_mask), bias)
    qkv, cu_seqlens, positions = varlen_inputs(query, key, value, attention_mask)
    got = kernel.attention_varlen(qkv, cu_seqlens, case[1], bias, positions)
    assert got.dtype == np.float32 and got.shape == (attention_mask.sum(), case[1] * case[3])
    assert close(got, pack(expected, attention_mask))


@pytest.mark.parametrize("case", CASES[:6])
def test_attention_equals_its_naive_loop(case):
    query, key, value, attention_mask, bias = make_case(*case)
    mask_bias = model.attention_mask_bias(attention_mask)
    batch, heads, seq, _ = query.shape
    naive = kernel.attention_naive(query, key, value, mask_bias.reshape(batch, seq),
                                   bias[0] if bias is not None else np.zeros((heads, seq, seq), np.float32))
    assert naive.dtype == np.float32
    assert close(kernel.attention(query, key, value, mask_bias, bias), naive)


@pytest.mark.parametrize("case", CASES + [(2, 3, 40, 16, [40, 17], False), (1, 2, 97, 48, None, True)])
def test_wide_and_narrow_tiles_give_the_same_bits(case, monkeypatch):
    # The score and context products in the micro-kernel's 12 x 32 (AVX-512) or 6 x 16 (AVX2)
    # tiles: every element is the same chain of multiply-adds, so the same numbers.
    query, key, value, attention_mask, bias = make_case(*case)
    mask_bias = model.attention_mask_bias(attention_mask)
    qkv, cu_seqlens, positions = varlen_inputs(query, key, value, attention_mask)
    results = {}
    for wide in (False, True):
        monkeypatch.setattr(microkernel, "WIDE_TILES", wide)
        results[wide] = (kernel.attention(query, key, value, mask_bias, bias),
                         kernel.attention_varlen(qkv, cu_seqlens, case[1], bias, positions))
    for narrow, wide in zip(results[False], results[True]):
        np.testing.assert_array_equal(wide, narrow)
    expected, _ = model.attention(query, key, value, mask_bias, bias)
    assert close(results[True][1], pack(expected, attention_mask))


def test_left_padding_and_holes_in_the_mask_are_respected():
    query, key, value, attention_mask, bias = make_case(3, 2, 12, 32, None, True)
    attention_mask[0, :4] = 0  # left padding
    attention_mask[1, [2, 5, 6]] = 0  # holes
    attention_mask[2, [0, 11]] = 0  # both ends
    expected, _ = model.attention(query, key, value, model.attention_mask_bias(attention_mask), bias)
    assert close(kernel.attention(query, key, value, model.attention_mask_bias(attention_mask), bias), expected)
    qkv, cu_seqlens, positions = varlen_inputs(query, key, value, attention_mask)
    got = kernel.attention_varlen(qkv, cu_seqlens, 2, bias, positions)
    assert close(got, pack(expected, attention_mask))


def test_a_fully_padded_row_attends_uniformly_like_the_reference():
    query, key, value, attention_mask, _ = make_case(2, 1, 6, 32, [6, 0], False)
    got = kernel.attention(query, key, value, model.attention_mask_bias(attention_mask))
    # every query of the padded row gets the plain average of all values
    np.testing.assert_allclose(got[1, 0], np.broadcast_to(value[1, 0].mean(axis=0), (6, 32)), rtol=1e-5, atol=1e-6)


def test_parallel_and_serial_paths_agree_exactly(monkeypatch):
    query, key, value, attention_mask, bias = make_case(3, 4, 40, 64, [40, 17, 33], True)
    qkv, cu_seqlens, positions = varlen_inputs(query, key, value, attention_mask)
    mask_bias = model.attention_mask_bias(attention_mask)
    monkeypatch.setattr(kernel, "parallel_chunks", lambda work, per_chunk: 1)
    serial = kernel.attention_varlen(qkv, cu_seqlens, 4, bias, positions)
    serial_padded = kernel.attention(query, key, value, mask_bias, bias)
    monkeypatch.setattr(kernel, "parallel_chunks", lambda work, per_chunk: 2)
    np.testing.assert_array_equal(kernel.attention_varlen(qkv, cu_seqlens, 4, bias, positions), serial)
    np.testing.assert_array_equal(kernel.attention(query, key, value, mask_bias, bias), serial_padded)


def test_work_is_split_into_runs_of_about_equal_cost():
    costs = np.array([1.0] * 8 + [64.0, 64.0])  # short sequences first, then two long ones
    bounds = kernel.balanced_bounds(costs, 2)
    assert bounds[0] == 0 and bounds[-1] == 10
    first, second = costs[: bounds[1]].sum(), costs[bounds[1]:].sum()
    assert abs(first - second) <= 64


def test_varlen_refuses_offsets_that_do_not_cover_qkv():
    with pytest.raises(ValueError, match="cu_seqlens must rise from 0 to the 5 rows of qkv"):
        kernel.attention_varlen(np.zeros((5, 24), np.float32), [0, 3], 2)


def test_varlen_refuses_a_hidden_size_that_heads_do_not_divide():
    with pytest.raises(ValueError, match="not a multiple of num_heads=3"):
        kernel.attention_varlen(np.zeros((5, 24), np.float32), [0, 5], 3)


def test_padded_attention_refuses_mismatched_shapes():
    q = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="query, key and value must have one shape"):
        kernel.attention(q, q, np.zeros((1, 2, 4, 4), np.float32))


@pytest.mark.parametrize("case", [CASES[2], CASES[4], CASES[7]])
def test_head_major_qkv_columns_give_the_same_bits(case):
    # forward packs the fused QKV weight head after head (q_h | k_h | v_h): the same
    # attention on the same numbers, only the columns read differ.
    query, key, value, attention_mask, bias = make_case(*case)
    qkv, cu_seqlens, positions = varlen_inputs(query, key, value, attention_mask)
    heads, head_dim = case[1], case[3]
    head_major = np.ascontiguousarray(qkv.reshape(len(qkv), 3, heads, head_dim).transpose(0, 2, 1, 3).reshape(len(qkv), -1))
    np.testing.assert_array_equal(kernel.attention_varlen(head_major, cu_seqlens, heads, bias, positions, head_major=True),
                                  kernel.attention_varlen(qkv, cu_seqlens, heads, bias, positions))


@pytest.mark.parametrize("length, head_dim", [(27, 64), (24, 24), (5, 32)])
def test_the_scratch_padding_read_by_the_micro_kernel_is_zeroed(length, head_dim):
    # The micro-kernel reads key_t's columns up to a multiple of 16 (and V's up to d_pad):
    # the kernel writes zeros there, whatever the scratch held before (leftover subnormal
    # floats there made a head ~17x slower; NaN must not leak either).
    heads = 2
    query, key, value, attention_mask, _ = make_case(1, heads, length, head_dim, None, False)
    qkv, cu_seqlens, positions = varlen_inputs(query, key, value, attention_mask)
    plan = kernel.VarlenPlan(cu_seqlens, heads, heads * head_dim)
    expected = plan(qkv)
    for leftover in (np.arange(1, 1000, dtype=np.int32).view(np.float32)[:1], np.float32(np.nan)):  # a subnormal, NaN
        scratch = np.full((1, kernel.scratch_floats(length, head_dim)), leftover, dtype=np.float32)
        out = np.empty_like(expected)
        kernel._varlen_chunks(qkv.reshape(-1), heads * head_dim, False, cu_seqlens, heads, heads, head_dim, plan.scale,
                              plan.bias,
                              plan.bias_len, plan.positions, out.reshape(-1), length, np.array([0, heads]), scratch,
                              plan.wide, plan.window_half, plan.causal, *plan.rotary, plan.rotary_positions,
                              kernel._NO_TABLE, kernel._NO_TABLE, 0, kernel._NO_ROWS, kernel._NO_TABLE, kernel._NO_TABLE,
                              np.float32(0.0), np.float32(0.0), 0, 1)
        np.testing.assert_array_equal(out, expected)
        n_pad, d_pad = -(-length // 16) * 16, -(-head_dim // 16) * 16
        key_t = scratch[0, :head_dim * n_pad].reshape(head_dim, n_pad)
        value_packed = scratch[0, head_dim * n_pad:head_dim * n_pad + length * d_pad].reshape(length, d_pad)
        assert (key_t[:, length:] == 0).all() and (value_packed[:, head_dim:] == 0).all()
