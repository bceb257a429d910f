"""Gemma 3 text and EmbeddingGemma's bidirectional variant (scaled embeddings, (1 + w)
RMSNorm before and after each sublayer, local / global layers with two thetas,
query_pre_attn_scalar) against transformers: committed references and live."""

import math

import pytest

from decoder_cases import (DECODERS, ROOT, check_every_layer, check_fused_equals_stepwise, check_last_hidden_state,
                           check_left_context_only, check_live, check_numba_equals_numpy_long, committed, tool,
                           with_hidden_states)
from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.recipe import BIDIRECTIONAL, CAUSAL, Mask

CASES = committed("gemma3")
BACKENDS = ["numpy", "numba"]


def test_committed_gemma3_cases_cover_both_variants_windows_and_lengths():
    cases = [case for case in tool().CASES if case["model_type"] == "gemma3_text"]
    assert sorted(case["name"] for case in cases) == CASES
    assert {case["config"].get("use_bidirectional_attention", False) for case in cases} == {True, False}
    assert all(case["config"]["sliding_window"] < max(case["lengths"]) for case in cases)
    lengths = [length for case in cases for length in case["lengths"]]
    assert 1 in lengths and 17 in lengths and max(lengths) >= 300


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_gemma3_last_hidden_state_matches_transformers(name, backend):
    check_last_hidden_state(name, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", with_hidden_states(CASES))
def test_gemma3_every_layer_matches_transformers(name, backend):
    check_every_layer(name, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gemma3_token_sees_only_its_left_context(backend):
    check_left_context_only("gemma3_text_local_global", backend)


@pytest.mark.parametrize("name, padding", [("gemma3_text_long_left", "left"), ("gemma3_text_bidirectional", "right")])
def test_gemma3_on_numba_equals_numpy_past_1024_tokens(name, padding, tmp_path):
    check_numba_equals_numpy_long(name, tmp_path, padding=padding)


def test_the_architecture_pages_gemma3_layer_is_what_numba_compiles():
    from transformer.kernels.program import describe

    prepared = Encoder.from_pretrained(DECODERS / "gemma3_text_local_global", backend="numba")._weights
    listing = describe(prepared.program, 0, [linear.name for linear in prepared.stack.layout.linears])
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert "\n".join("    " + line for line in listing.splitlines()) in page


def test_gemma3_fused_layers_and_kernel_by_kernel_give_the_same_bits(monkeypatch):
    check_fused_equals_stepwise("gemma3_text_local_global", monkeypatch)


def test_gemma3_recipe():
    recipe = EncoderConfig.from_file(DECODERS / "gemma3_text_local_global").recipe
    assert recipe.embeddings.scale == math.sqrt(32)
    local, global_ = recipe.layers[0].attention()[0], recipe.layers[1].attention()[0]
    assert local.mask == Mask(causal=True, window=6) and global_.mask == CAUSAL
    assert (local.positions.theta, global_.positions.theta) == (10000.0, 1000000.0)
    assert local.scale == 12 ** -0.5
    block = recipe.layers[0].blocks[0]
    assert block.norm_before.offset == block.norm_after.offset == 1.0


def test_embeddinggemma_lifts_the_causal_mask_and_windows_either_side():
    recipe = EncoderConfig.from_file(DECODERS / "gemma3_text_bidirectional").recipe
    local, global_ = recipe.layers[0].attention()[0], recipe.layers[1].attention()[0]
    assert global_.mask == BIDIRECTIONAL
    assert local.mask == Mask(window=6)  # keys at most 6 // 2 = 3 positions away


def test_attention_logit_softcapping_is_refused():
    raw = dict(model_type="gemma3_text", hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
               intermediate_size=48, vocab_size=60, head_dim=8, attn_logit_softcapping=50.0)
    with pytest.raises(ConfigError, match="attn_logit_softcapping"):
        EncoderConfig.from_dict(raw)


@pytest.mark.parametrize("name", CASES)
def test_gemma3_matches_transformers_live(name, tmp_path):
    check_live(name, tmp_path, BACKENDS)
