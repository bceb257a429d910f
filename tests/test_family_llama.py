"""Llama and Mistral (rotary, grouped-query causal attention, RMSNorm, SwiGLU, windows)
against transformers: committed references (tests/decoder_cases.py) and live."""

import pytest

from decoder_cases import (DECODERS, check_every_layer, check_last_hidden_state, check_left_context_only,
                           check_live, committed, tool, with_hidden_states)
from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.recipe import Mask

CASES = committed("llama") + committed("mistral")
BACKENDS = ["numpy", "numba"]


def test_committed_llama_cases_cover_gqa_rope_kinds_windows_and_lengths():
    cases = [case for case in tool().CASES if case["model_type"] in ("llama", "mistral")]
    assert sorted(case["name"] for case in cases) == CASES
    kinds = {case["config"].get("rope_parameters", {}).get("rope_type", "default") for case in cases}
    assert kinds == {"default", "linear", "dynamic", "llama3", "yarn"}
    ratios = {case["config"]["num_attention_heads"] // case["config"]["num_key_value_heads"] for case in cases}
    assert {1, 2, 4} <= ratios
    windowed = [case for case in cases if case["config"].get("sliding_window")]
    assert windowed and all(case["config"]["sliding_window"] < max(case["lengths"]) for case in windowed)
    lengths = [length for case in cases for length in case["lengths"]]
    assert 1 in lengths and 17 in lengths and max(lengths) >= 300
    assert {case["padding"] for case in cases} == {"left", "right"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_llama_last_hidden_state_matches_transformers(name, backend):
    check_last_hidden_state(name, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", with_hidden_states(CASES))
def test_llama_every_layer_matches_transformers(name, backend):
    check_every_layer(name, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_llama_token_sees_only_its_left_context(backend):
    check_left_context_only("llama_gqa_llama3_rope", backend)


def test_mistral_recipe_is_a_causal_window_with_one_key_value_head():
    recipe = EncoderConfig.from_file(DECODERS / "mistral_window_5").recipe
    attention = recipe.layers[0].attention()[0]
    assert attention.mask == Mask(causal=True, window=5)
    assert (attention.num_heads, attention.kv_heads) == (4, 1)
    assert attention.key.out_features == attention.head_dim


def test_causal_lm_checkpoint_loads_as_its_base_model_quietly(recwarn):
    model = Encoder.from_pretrained(DECODERS / "llama_mha_biases_linear_rope_left", backend="numpy")
    assert model.head is None
    assert not [w for w in recwarn if "head" in str(w.message)]


@pytest.mark.parametrize("rope, message", [
    (dict(rope_type="longrope", rope_theta=10000.0, factor=2.0), "rope_type 'longrope' is not supported"),
    (dict(rope_type="linear", rope_theta=10000.0), "needs factor"),
    (dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, original_max_position_embeddings=64),
     "needs high_freq_factor"),
    (dict(rope_type="yarn", rope_theta=10000.0, factor=2.0, original_max_position_embeddings=64, truncate=[1]),
     "truncate must be true or false"),
    (dict(rope_type="linear", rope_theta=10000.0, factor=0.5), "factor must be at least 1"),
    (dict(rope_type="llama3", rope_theta=10000.0, factor=8.0), "needs low_freq_factor"),
    (dict(rope_type="default", rope_theta="big"), "rope_theta must be a positive number"),
])
def test_unsupported_or_incomplete_rope_settings_are_refused_by_name(rope, message):
    raw = dict(model_type="llama", hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=48,
               vocab_size=60, rope_parameters=rope)
    with pytest.raises(ConfigError, match=message):
        EncoderConfig.from_dict(raw)


def test_key_value_heads_must_divide_the_query_heads():
    raw = dict(model_type="llama", hidden_size=32, num_attention_heads=4, num_key_value_heads=3, num_hidden_layers=1,
               intermediate_size=48, vocab_size=60)
    with pytest.raises(ConfigError, match="num_attention_heads 4 is not a multiple of num_key_value_heads 3"):
        EncoderConfig.from_dict(raw)


def test_a_text_longer_than_the_context_is_refused():
    model = Encoder.from_pretrained(DECODERS / "llama_gqa_llama3_rope", backend="numpy")
    with pytest.raises(ValueError, match="sequence length 321 is longer than this model accepts"):
        model([[1] * 321])


@pytest.mark.parametrize("name", CASES)
def test_llama_matches_transformers_live(name, tmp_path):
    check_live(name, tmp_path, BACKENDS)
