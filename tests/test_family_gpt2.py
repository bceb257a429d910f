"""GPT-2 (a decoder: causal attention, pre-norm, Conv1D weights) against transformers.

tests/references/decoders/gpt2_*/ hold tiny random checkpoints written by transformers and
its fp32 eager hidden states (tools/make_references.py): right and left padding,
1 to 307 tokens, both attention scalings. Both backends must agree with them to 1e-5 (the
hidden values stay below 5 in magnitude, so 1e-5 is absolute and relative alike), and with
transformers live where it is installed.
"""

import numpy as np
import pytest

from decoder_cases import (DECODERS, check_every_layer, check_last_hidden_state, check_left_context_only,
                           check_live, committed, tool, with_hidden_states)
from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.recipe import CAUSAL

CASES = committed("gpt2")


def test_committed_gpt2_cases_cover_padding_sides_lengths_and_scalings():
    cases = {case["name"]: case for case in tool().CASES if case["model_type"] == "gpt2"}
    assert sorted(cases) == CASES
    lengths = [length for case in cases.values() for length in case["lengths"]]
    assert 1 in lengths and 17 in lengths and max(lengths) >= 300
    assert {case["padding"] for case in cases.values()} == {"left", "right"}
    assert any(case["config"].get("scale_attn_by_inverse_layer_idx") for case in cases.values())
    assert any(case["config"].get("scale_attn_weights") is False for case in cases.values())


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", CASES)
def test_gpt2_last_hidden_state_matches_transformers(name, backend):
    check_last_hidden_state(name, backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", with_hidden_states(CASES))
def test_gpt2_every_layer_matches_transformers(name, backend):
    check_every_layer(name, backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_gpt2_token_sees_only_its_left_context(backend):
    check_left_context_only("gpt2_gelu_new", backend)


def test_gpt2_recipe_is_pre_norm_causal_with_a_final_norm():
    config = EncoderConfig.from_file(DECODERS / "gpt2_gelu_new")
    recipe = config.recipe
    assert recipe.embeddings.norm is None and not recipe.embeddings.token_types
    assert recipe.final_norm.name == "final_norm"
    attention, mlp = (block for block in recipe.layers[0].blocks)
    assert attention.sublayer.mask == CAUSAL and attention.norm_before is not None
    assert mlp.sublayer.activation == "gelu_new" and mlp.norm_before is not None
    assert config.intermediate_size == 4 * config.hidden_size  # n_inner null


def test_gpt2_layer_program_says_causal_attention():
    model = Encoder.from_pretrained(DECODERS / "gpt2_gelu_new", backend="numba")
    from transformer.kernels.program import describe

    text = describe(model._weights.program, linear_names=[s.name for s in model._weights.stack.layout.linears])
    assert "attention(QKV; causal)" in text
    assert text.splitlines()[0].startswith("NORM")  # pre-norm: the layer starts with its norm


def test_gpt2_config_refuses_a_flag_that_is_not_a_boolean():
    raw = dict(model_type="gpt2", n_embd=32, n_head=4, n_layer=1, vocab_size=60, scale_attn_weights="yes")
    with pytest.raises(ConfigError, match="scale_attn_weights"):
        EncoderConfig.from_dict(raw)


def test_gpt2_input_longer_than_its_positions_is_refused():
    model = Encoder.from_pretrained(DECODERS / "gpt2_gelu_new", backend="numpy")
    with pytest.raises(ValueError, match="n_positions|320"):
        model(np.ones((1, 321), dtype=np.int64))


@pytest.mark.parametrize("name", CASES)
def test_gpt2_matches_transformers_live(name, tmp_path):
    check_live(name, tmp_path, ("numpy", "numba"))
