"""Qwen2 (q/k/v biases, windowed layers) and Qwen3 (per-head q/k RMSNorm) against
transformers: committed references (tests/decoder_cases.py) and live."""

import numpy as np
import pytest

from decoder_cases import (DECODERS, check_every_layer, check_fused_equals_stepwise, check_last_hidden_state,
                           check_left_context_only, check_live, check_numba_equals_numpy_long, committed, tool,
                           with_hidden_states)
from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.recipe import CAUSAL, Mask

CASES = committed("qwen")
BACKENDS = ["numpy", "numba"]


def test_committed_qwen_cases_cover_both_types_windows_and_lengths():
    cases = [case for case in tool().CASES if case["model_type"] in ("qwen2", "qwen3")]
    assert sorted(case["name"] for case in cases) == CASES
    assert {case["model_type"] for case in cases} == {"qwen2", "qwen3"}
    lengths = [length for case in cases for length in case["lengths"]]
    assert 1 in lengths and 17 in lengths and max(lengths) >= 300
    assert {case["padding"] for case in cases} == {"left", "right"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_qwen_last_hidden_state_matches_transformers(name, backend):
    check_last_hidden_state(name, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", with_hidden_states(CASES))
def test_qwen_every_layer_matches_transformers(name, backend):
    check_every_layer(name, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_qwen3_token_sees_only_its_left_context(backend):
    check_left_context_only("qwen3_qk_norm_gqa", backend)


def test_qwen3_on_numba_equals_numpy_past_1024_tokens(tmp_path):
    check_numba_equals_numpy_long("qwen3_long_left_tied", tmp_path, padding="left")


def test_qwen3_fused_layers_and_kernel_by_kernel_give_the_same_bits(monkeypatch):
    check_fused_equals_stepwise("qwen3_qk_norm_gqa", monkeypatch)


def test_qwen2_has_biases_on_query_key_value_only_and_windows_from_max_window_layers():
    recipe = EncoderConfig.from_file(DECODERS / "qwen2_biases_window_layers").recipe
    first, second = (layer.attention()[0] for layer in recipe.layers)
    assert first.query.bias and first.key.bias and first.value.bias and not first.output.bias
    assert first.mask == CAUSAL and second.mask == Mask(causal=True, window=6)  # max_window_layers=1


def test_qwen3_normalises_each_heads_query_and_key():
    attention = EncoderConfig.from_file(DECODERS / "qwen3_qk_norm_gqa").recipe.layers[0].attention()[0]
    assert attention.query_norm.size == attention.key_norm.size == attention.head_dim == 16
    assert attention.query_norm.kind == "rms_norm"


def test_a_window_is_ignored_unless_use_sliding_window():
    raw = dict(model_type="qwen2", hidden_size=32, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
               intermediate_size=48, vocab_size=60, use_sliding_window=False, sliding_window=4)
    assert all(layer.attention()[0].mask == CAUSAL for layer in EncoderConfig.from_dict(raw).recipe.layers)
    with pytest.raises(ConfigError, match="use_sliding_window must be true or false"):
        EncoderConfig.from_dict(dict(raw, use_sliding_window="no"))


def test_a_qwen_token_id_outside_the_vocabulary_is_refused():
    model = Encoder.from_pretrained(DECODERS / "qwen3_qk_norm_gqa", backend="numpy")
    with pytest.raises(ValueError, match="token id 60"):
        model(np.array([[1, 60]]))


@pytest.mark.parametrize("name", CASES)
def test_qwen_matches_transformers_live(name, tmp_path):
    check_live(name, tmp_path, BACKENDS)
