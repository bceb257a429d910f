"""The NumPy math, piece by piece: activations, LayerNorm, masks, positions, attention, inputs."""

import math

import numpy as np
import pytest

from transformer import model
from transformer.config import EncoderConfig

RNG = np.random.default_rng(0)


def small_config(**overrides):
    raw = dict(model_type="bert", vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=12, max_position_embeddings=16, type_vocab_size=2, pad_token_id=0)
    raw.update(overrides)
    return EncoderConfig.from_dict(raw)


# --- activations --------------------------------------------------------------------------
def test_gelu_is_the_exact_erf_form_to_float32_precision():
    x = np.linspace(-12, 12, 20001, dtype=np.float32)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2.0)) for v in x.astype(np.float64)])
    got = model.gelu(x)
    assert got.dtype == np.float32
    # within a few float32 ulps of the exact value everywhere, tiny negative tail included
    ulps = np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64).clip(1e-45)
    assert ulps.max() <= 3


def test_erf_matches_math_erf():
    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.abs(model.erf(x) - exact).max() < 2e-7


def test_gelu_differs_from_its_tanh_approximation():
    x = np.array([-2.0, -1.0, 1.5], dtype=np.float32)
    assert np.abs(model.gelu(x) - model.gelu_tanh(x)).max() > 1e-5


def test_tanh_gelu_variants_follow_their_formulas():
    x = np.linspace(-8, 8, 1001, dtype=np.float32)
    x64 = x.astype(np.float64)
    new = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    fast = 0.5 * x64 * (1 + np.tanh(x64 * 0.7978845608 * (1 + 0.044715 * x64 * x64)))
    assert np.abs(model.gelu_tanh(x) - new).max() < 5e-6
    assert np.abs(model.gelu_fast(x) - fast).max() < 5e-6


@pytest.mark.parametrize("name", sorted(model.ACTIVATIONS))
def test_every_activation_keeps_float32(name):
    x = RNG.standard_normal((3, 5)).astype(np.float32) * 4
    assert model.activation(name)(x).dtype == np.float32


def test_relu_silu_quick_gelu_values():
    x = np.array([-3.0, 0.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(model.relu(x), [0.0, 0.0, 2.0])
    np.testing.assert_allclose(model.silu(x), x / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(model.quick_gelu(x), x / (1 + np.exp(-1.702 * x.astype(np.float64))), rtol=1e-6)
    assert np.isfinite(model.silu(np.array([-1e4], dtype=np.float32))).all()


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="unknown activation 'mish'"):
        model.activation("mish")


# --- LayerNorm, softmax, linear -----------------------------------------------------------
def test_layer_norm_uses_biased_variance_with_eps_inside_the_root():
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    weight = RNG.standard_normal(6).astype(np.float32)
    bias = RNG.standard_normal(6).astype(np.float32)
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 0.1) * weight + bias
    got = model.layer_norm(x, weight, bias, eps=0.1)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-6


def test_layer_norm_of_a_constant_row_is_its_bias():
    x = np.full((1, 4), 3.0, dtype=np.float32)
    bias = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(model.layer_norm(x, np.ones(4, np.float32), bias, 1e-12), bias[None])


def test_softmax_rows_sum_to_one_even_for_huge_scores():
    scores = np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    probabilities = model.softmax(scores)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[1], 1 / 3, rtol=1e-6)
    assert probabilities[0, 2] == 0.0


def test_linear_weights_are_in_by_out():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    weight = RNG.standard_normal((4, 5)).astype(np.float32)
    bias = RNG.standard_normal(5).astype(np.float32)
    got = model.linear(x, weight, bias)
    assert got.shape == (2, 3, 5)
    np.testing.assert_allclose(got, np.einsum("bsi,io->bso", x, weight) + bias, rtol=1e-5, atol=1e-6)


# --- masks, positions, heads --------------------------------------------------------------
def test_attention_mask_bias_is_zero_for_tokens_and_float32_min_for_padding():
    bias = model.attention_mask_bias(np.array([[1, 1, 0]]))
    assert bias.shape == (1, 1, 1, 3)
    assert bias.dtype == np.float32
    np.testing.assert_array_equal(bias[0, 0, 0], [0.0, 0.0, np.finfo(np.float32).min])


def test_padding_keys_receive_exactly_zero_attention():
    query = key = value = RNG.standard_normal((1, 2, 4, 3)).astype(np.float32)
    mask_bias = model.attention_mask_bias(np.array([[1, 1, 1, 0]]))
    _, probabilities = model.attention(query, key, value, mask_bias)
    assert (probabilities[..., 3] == 0).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-6)


def test_all_padding_row_attends_uniformly_instead_of_nan():
    query = key = value = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32) * 10
    mask_bias = model.attention_mask_bias(np.array([[0, 0, 0]]))
    context, probabilities = model.attention(query, key, value, mask_bias)
    assert np.isfinite(context).all()
    np.testing.assert_allclose(probabilities, 1 / 3, rtol=1e-6)


def test_bert_positions_count_from_zero():
    config = small_config()
    np.testing.assert_array_equal(model.position_ids(config, np.array([[5, 6, 0, 0]])), [[0, 1, 2, 3]])


def test_roberta_positions_start_after_padding_idx_and_padding_keeps_it():
    config = small_config(model_type="roberta", pad_token_id=1)
    ids = np.array([[0, 5, 7, 1, 1], [0, 9, 9, 9, 2]])
    np.testing.assert_array_equal(model.position_ids(config, ids), [[2, 3, 4, 1, 1], [2, 3, 4, 5, 6]])


def test_relative_position_buckets_split_before_and_after():
    buckets = model.relative_position_buckets(200)
    assert buckets.shape == (200, 200)
    assert (np.diag(buckets) == 0).all()
    assert buckets[5, 0] == 5  # key 5 before the query: exact bucket 5
    assert buckets[0, 5] == 16 + 5  # key 5 after the query: the upper half
    assert buckets[150, 0] == 15 and buckets[0, 150] == 31  # past max_distance: the last bucket of each half
    # buckets never shrink as keys move away from the query, and use every bucket of a half
    distances_before = buckets[199, ::-1]
    assert (np.diff(distances_before) >= 0).all()
    assert set(distances_before) == set(range(16))


def test_relative_position_bias_reads_the_table_per_head():
    table = np.arange(32 * 3, dtype=np.float32).reshape(32, 3)
    bias = model.relative_position_bias(table, 5)
    assert bias.shape == (1, 3, 5, 5)
    buckets = model.relative_position_buckets(5)
    np.testing.assert_array_equal(bias[0, 2], table[buckets, 2])


def test_split_and_merge_heads_are_inverse():
    x = RNG.standard_normal((2, 5, 12)).astype(np.float32)
    heads = model.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(heads[:, 1], x[..., 4:8])
    np.testing.assert_array_equal(model.merge_heads(heads), x)


# --- the whole forward pass on random parameters ------------------------------------------
def random_params(config):
    def lin(n_in, n_out):
        return {"weight": (RNG.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
                "bias": RNG.standard_normal(n_out).astype(np.float32) * 0.1}

    def norm(n):
        return {"weight": np.ones(n, np.float32), "bias": np.zeros(n, np.float32)}

    h, i = config.hidden_size, config.intermediate_size
    return {
        "embeddings": {"word": RNG.standard_normal((config.vocab_size, h)).astype(np.float32),
                       "position": RNG.standard_normal((config.max_position_embeddings, h)).astype(np.float32),
                       "token_type": RNG.standard_normal((config.type_vocab_size, h)).astype(np.float32),
                       "layer_norm": norm(h), "projection": None},
        "relative_attention_bias": None,
        "layers": [{"query": lin(h, h), "key": lin(h, h), "value": lin(h, h), "attention_output": lin(h, h),
                    "attention_layer_norm": norm(h), "intermediate": lin(h, i), "output": lin(i, h),
                    "output_layer_norm": norm(h)} for _ in range(config.num_hidden_layers)],
        "pooler": lin(h, h),
    }


def test_encoder_forward_shapes_and_float32_everywhere():
    config = small_config(num_hidden_layers=3)
    params = random_params(config)
    ids = np.array([[3, 4, 5, 6], [7, 8, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    last, hidden_states, attentions = model.encoder_forward(params, config, ids, mask, None, True, True)
    assert last.shape == (2, 4, 8) and last.dtype == np.float32
    assert len(hidden_states) == 4 and all(h.dtype == np.float32 for h in hidden_states)
    assert hidden_states[-1] is last
    assert len(attentions) == 3 and attentions[0].shape == (2, 2, 4, 4)
    assert all(a.dtype == np.float32 for a in attentions)
    assert model.pooler(params["pooler"], last).shape == (2, 8)


def test_per_layer_outputs_only_on_request():
    config = small_config()
    _, hidden_states, attentions = model.encoder_forward(random_params(config), config, np.array([[3, 4]]))
    assert hidden_states is None and attentions is None


def test_padding_does_not_change_the_real_tokens():
    config = small_config(num_hidden_layers=2)
    params = random_params(config)
    alone, _, _ = model.encoder_forward(params, config, np.array([[3, 4, 5]]))
    padded, _, _ = model.encoder_forward(params, config, np.array([[3, 4, 5, 0, 0]]), np.array([[1, 1, 1, 0, 0]]))
    assert np.abs(padded[:, :3] - alone).max() < 1e-6


# --- input checking -----------------------------------------------------------------------
def test_check_inputs_fills_defaults_as_int64():
    ids, mask, types = model.check_inputs(small_config(), [[1, 2, 3]])
    assert ids.dtype == mask.dtype == types.dtype == np.int64
    np.testing.assert_array_equal(mask, [[1, 1, 1]])
    np.testing.assert_array_equal(types, [[0, 0, 0]])


def test_check_inputs_accepts_bool_and_float_masks():
    _, mask, _ = model.check_inputs(small_config(), [[1, 2]], np.array([[True, False]]))
    np.testing.assert_array_equal(mask, [[1, 0]])
    _, mask, _ = model.check_inputs(small_config(), [[1, 2]], np.array([[1.0, 0.0]]))
    assert mask.dtype == np.int64


@pytest.mark.parametrize("ids, error, message", [
    ([1, 2, 3], ValueError, r"input_ids must be 2-D \[batch, seq\]; found shape \(3,\).*wrap"),
    ([[1.5, 2.0]], TypeError, "input_ids must hold integers; found dtype float64"),
    (np.zeros((0, 3), np.int64), ValueError, "empty batch"),
    (np.zeros((2, 0), np.int64), ValueError, "length 0"),
    ([[1, 50]], ValueError, r"token id 50, outside the vocabulary \[0, 49\]"),
    ([[-1, 3]], ValueError, "token id -1, outside the vocabulary"),
    ([[1, 2], [3]], ValueError, "rows have different lengths"),
    ([[1] * 17], ValueError, r"sequence length 17 is longer than this model accepts \(16"),
])
def test_check_inputs_names_what_is_wrong(ids, error, message):
    with pytest.raises(error, match=message):
        model.check_inputs(small_config(), ids)


@pytest.mark.parametrize("ids, error, message", [
    ([[]], ValueError, "input_ids has sequences of length 0"),
    (None, TypeError, r"input_ids is None; expected token ids, integers \[batch, seq\]"),
    ("hello", TypeError, "input_ids is str; expected token ids"),
    (b"hello", TypeError, "input_ids is bytes; expected token ids"),
    ([["101", "102"]], TypeError, r"input_ids holds str values \('101'\); expected integer token ids"),
])
def test_check_inputs_names_what_was_given_not_what_numpy_made_of_it(ids, error, message):
    with pytest.raises(error, match=message):
        model.check_inputs(small_config(), ids)


def test_check_inputs_checks_mask_and_token_types():
    config = small_config()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\), expected the shape of input_ids \(1, 3\)"):
        model.check_inputs(config, [[1, 2, 3]], [[1, 1]])
    with pytest.raises(ValueError, match="attention_mask must hold only 1"):
        model.check_inputs(config, [[1, 2]], [[1, 2]])
    with pytest.raises(ValueError, match=r"token_type_ids holds values outside \[0, 1\]"):
        model.check_inputs(config, [[1, 2]], None, [[0, 2]])
    distilbert = EncoderConfig.from_dict(dict(model_type="distilbert", vocab_size=50, dim=8, n_heads=2, n_layers=1,
                                              hidden_dim=8, max_position_embeddings=16))
    with pytest.raises(ValueError, match="distilbert models have no token-type embeddings"):
        model.check_inputs(distilbert, [[1, 2]], None, [[0, 1]])


def test_roberta_length_limit_leaves_room_for_the_position_offset():
    config = small_config(model_type="roberta", pad_token_id=1, max_position_embeddings=18)
    model.check_inputs(config, [[3] * 16])
    with pytest.raises(ValueError, match="sequence length 17"):
        model.check_inputs(config, [[3] * 17])
