"""The kernels of the newer encoders' operations beside their NumPy twins and naive loops:
the gated MLP epilogue (GLU), rotary position embeddings and the sliding window inside the
varlen attention, bias-free LayerNorm, embeddings without a position table."""

import numpy as np
import pytest

from transformer import model
from transformer.kernels import attention as kernel
from transformer.kernels import gemm as gemm_module
from transformer.kernels import microkernel
from transformer.kernels.embeddings import embed_tokens
from transformer.kernels.layernorm import layer_norm as kernel_layer_norm
from transformer.recipe import Rotary

RNG = np.random.default_rng(7)


def normal(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


# --- gated MLP: act(x @ Wg + bg) * (x @ Wu + bu) in one GEMM --------------------------------
@pytest.mark.parametrize("rows, k, inner", [(1, 32, 48), (7, 32, 40), (130, 40, 33), (700, 96, 100), (3, 256, 1152)])
@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_gated_gemm_matches_the_numpy_glu_and_its_naive_loop(rows, k, inner, activation):
    x = normal(rows, k)
    gate, up = normal(k, inner, scale=k ** -0.5), normal(k, inner, scale=k ** -0.5)
    gate_bias, up_bias = normal(inner, scale=0.1), normal(inner, scale=0.1)
    weight, bias = gemm_module.pack_gated_weight(gate, up, gate_bias, up_bias)
    out = gemm_module.gemm_gated(x, gemm_module.pack_weight(weight), bias, activation, inner)
    numpy_twin = model.activation(activation)(model.linear(x, gate, gate_bias)) * model.linear(x, up, up_bias)
    naive = gemm_module.gemm_gated_naive(x, gate, up, gate_bias, up_bias, activation)
    assert out.dtype == np.float32 and out.shape == (rows, inner)
    scale = max(1.0, float(np.abs(numpy_twin).max()))
    assert np.abs(out - numpy_twin).max() <= 1e-5 * scale
    assert np.abs(out - naive).max() <= 1e-5 * scale


def test_gated_gemm_without_biases():
    x, gate, up = normal(9, 32), normal(32, 20, scale=0.2), normal(32, 20, scale=0.2)
    weight, bias = gemm_module.pack_gated_weight(gate, up)
    assert bias is None
    out = gemm_module.gemm_gated(x, gemm_module.pack_weight(weight), None, "gelu", 20)
    assert np.abs(out - model.gelu(x @ gate) * (x @ up)).max() <= 1e-5


def test_the_gated_weight_pairs_gate_and_up_panels_and_unpacks_back():
    gate, up = normal(4, 20), normal(4, 20)
    weight, _ = gemm_module.pack_gated_weight(gate, up)
    assert weight.shape == (4, 64)  # 20 -> 2 chunks of 16, gate | up each
    np.testing.assert_array_equal(weight[:, :16], gate[:, :16])
    np.testing.assert_array_equal(weight[:, 16:32], up[:, :16])
    np.testing.assert_array_equal(weight[:, 36:48], 0)  # the gate's padding columns
    halves = gemm_module.unpack_gated_weight(weight, 20)
    np.testing.assert_array_equal(halves[0], gate)
    np.testing.assert_array_equal(halves[1], up)


@pytest.mark.parametrize("rows", [1, 12, 200])
def test_gated_gemm_gives_the_same_bits_on_one_thread_and_many(rows, monkeypatch):
    x = normal(rows, 64)
    weight, bias = gemm_module.pack_gated_weight(normal(64, 72, scale=0.1), normal(64, 72, scale=0.1),
                                                 normal(72), normal(72))
    packed = gemm_module.pack_weight(weight)
    many = gemm_module.gemm_gated(x, packed, bias, "gelu", 72)
    monkeypatch.setattr(gemm_module, "SERIAL_BELOW_FLOPS", float("inf"))
    np.testing.assert_array_equal(gemm_module.gemm_gated(x, packed, bias, "gelu", 72), many)


def test_gated_plans_cut_columns_in_whole_pairs():
    for wide in (False, True):
        plan = gemm_module.plan_blocks(12, 8, 64, 2, wide, True)
        assert plan.ranges == 2 and plan.unit_panels == 2


def test_gated_gemm_refuses_a_weight_that_is_not_paired():
    with pytest.raises(ValueError, match="pairs of 16 columns"):
        gemm_module.gemm_gated(normal(2, 8), gemm_module.pack_weight(normal(8, 24)), None, "gelu")


# --- attention: rotary and the sliding window -----------------------------------------------
def padded_reference(x, lengths, heads, window, rotary):
    """The NumPy twin on a padded batch: context of the real tokens, [tokens, hidden]."""
    batch, seq, width = x.shape
    hidden = width // 3
    mask = np.zeros((batch, seq), np.int64)
    for b, length in enumerate(lengths):
        mask[b, :length] = 1
    query, key, value = (model.split_heads(x[..., i * hidden:(i + 1) * hidden], heads) for i in range(3))
    if rotary is not None:
        query, key = model.apply_rotary(query, *rotary), model.apply_rotary(key, *rotary)
    mask_bias = model.attention_mask_bias(mask)
    if window is not None:
        mask_bias = np.minimum(mask_bias, model.sliding_window_bias(seq, window))
    context, _ = model.attention(query, key, value, mask_bias)
    return model.merge_heads(context)[mask.astype(bool)], np.ascontiguousarray(x[mask.astype(bool)])


@pytest.mark.parametrize("lengths, heads, head_dim, window, dims", [
    ([17, 9, 1], 2, 16, 8, None), ([100, 3], 4, 8, 6, None), ([1030], 2, 8, 64, None), ([60], 2, 16, None, None),
    ([60, 31], 2, 16, 16, 8), ([50, 49, 48], 3, 32, 100, None)])
def test_varlen_attention_with_rotary_and_window_matches_numpy(lengths, heads, head_dim, window, dims):
    x = normal(len(lengths), max(lengths), 3 * heads * head_dim)
    rotary = model.rotary_angles(Rotary(theta=10000.0, dims=dims), head_dim, np.arange(max(lengths)))
    expected, packed = padded_reference(x, lengths, heads, window, rotary)
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths)))
    out = kernel.attention_varlen(packed, cu_seqlens, heads, window=window, rotary=rotary)
    assert np.abs(out - expected).max() <= 1e-5


@pytest.mark.parametrize("wide", [False, True])
def test_windowed_attention_gives_the_same_bits_in_both_tile_sizes(wide, monkeypatch):
    x = normal(1, 90, 3 * 32)
    rotary = model.rotary_angles(Rotary(theta=10000.0), 16, np.arange(90))
    _, packed = padded_reference(x, [90], 2, 10, rotary)

    def run(tiles):
        monkeypatch.setattr(microkernel, "WIDE_TILES", tiles)
        return kernel.attention_varlen(packed.copy(), np.array([0, 90]), 2, window=10, rotary=rotary)

    if wide and not microkernel.WIDE_TILES:
        pytest.skip("this CPU has no AVX-512 for the wide tiles")
    np.testing.assert_array_equal(run(wide), run(False))


def test_rotary_rows_are_the_numpy_twins_bits():
    x = normal(1, 2, 5, 8)
    cos, sin = model.rotary_angles(Rotary(theta=160000.0), 8, np.arange(5))
    expected = model.apply_rotary(x, cos, sin)
    flat = np.ascontiguousarray(x[0, 1]).reshape(-1)  # head 1: 5 rows of 8
    kernel.rotate_rows(flat, 0, 8, 5, cos, sin, np.arange(5, dtype=np.int64), 0)
    np.testing.assert_array_equal(flat.reshape(5, 8), expected[0, 1])


# --- bias-free LayerNorm, embeddings without positions ---------------------------------------
def test_bias_free_layer_norm_matches_numpy():
    x, weight = normal(37, 48), normal(48)
    out = kernel_layer_norm(x, weight, None, 1e-5)
    assert np.abs(out - model.layer_norm(x, weight, None, 1e-5)).max() <= 1e-5


def test_embeddings_without_a_position_table_or_norm_bias_match_numpy():
    word, weight = normal(30, 16), normal(16)
    ids = RNG.integers(0, 30, 11)
    out = embed_tokens(word, None, None, weight, None, 1e-5, ids, None, None)
    assert np.abs(out - model.layer_norm(word[ids], weight, None, 1e-5)).max() <= 1e-5
