"""ModernBERT against transformers' own outputs, on both backends.

tests/references/families/modernbert_*/ hold tiny random checkpoints written by transformers
and its fp32 eager outputs (tests/make_modern_references.py says how they were made): global
and sliding-window layers with the window smaller than the input, both rope thetas, GeGLU
and SwiGLU, with and without biases, every head, padded batches, rows of 1, 17 and 1030
tokens. Where torch is installed, the live tests rebuild every case and compare directly.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from transformer import model as numpy_model
from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.recipe import Rotary

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ROOT / "tests" / "references" / "families"
CASES = sorted(p.name for p in FAMILIES.iterdir() if p.name.startswith("modernbert_"))
BACKENDS = ("numpy",)
TOLERANCE = 1e-5


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_modern_references", ROOT / "tests" / "make_modern_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_modern_references = _load_maker()


def assert_matches(model, reference):
    """Every output transformers gave, within TOLERANCE over the real tokens."""
    out = model(reference["input_ids"], reference["attention_mask"], output_hidden_states=True)
    real = reference["attention_mask"].astype(bool)
    assert out.last_hidden_state.dtype == np.float32
    assert np.abs(out.last_hidden_state - reference["last_hidden_state"])[real].max() <= TOLERANCE
    if "hidden_states" in reference:
        assert len(out.hidden_states) == len(reference["hidden_states"])
        for ours, theirs in zip(out.hidden_states, reference["hidden_states"]):
            assert np.abs(ours - theirs)[real].max() <= TOLERANCE
    if "logits" in reference:
        logits, expected = out.logits, reference["logits"]
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        if logits.shape[:2] == real.shape:  # per-token heads: the real tokens
            logits, expected = logits[real], expected[real]
        assert np.abs(logits - expected).max() <= TOLERANCE


def test_the_cases_cover_every_head_and_option():
    assert len(CASES) >= 4
    heads = {name for name in CASES if any(kind in name for kind in ("masked_lm", "classification"))}
    assert {"modernbert_biases_masked_lm", "modernbert_token_classification",
            "modernbert_sequence_classification_mean", "modernbert_sequence_classification_cls"} <= heads
    lengths = {int(n) for name in CASES
               for n in np.load(FAMILIES / name / "reference.npz")["attention_mask"].sum(axis=1)}
    assert {1, 17} <= lengths and max(lengths) > 1024


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_committed_case_matches_transformers(name, backend):
    reference = dict(np.load(FAMILIES / name / "reference.npz"))
    assert_matches(Encoder.from_pretrained(FAMILIES / name, backend=backend), reference)


def test_local_layers_see_half_the_window_either_side():
    config = EncoderConfig.from_file(FAMILIES / "modernbert_gelu_window")
    kinds = [layer.attention()[0].mask.window for layer in config.recipe.layers]
    assert kinds == [None, 8, 8]  # global every third layer, from layer 0
    bias = numpy_model.sliding_window_bias(9, 8)
    assert (bias[4] == 0).all()  # the middle query sees 4 keys either side
    assert bias[0, 4] == 0 and bias[0, 5] == numpy_model.MASK_VALUE


def test_two_thetas_one_per_layer_type():
    config = EncoderConfig.from_file(FAMILIES / "modernbert_biases_masked_lm")
    thetas = [layer.attention()[0].positions.theta for layer in config.recipe.layers]
    assert thetas == [300.0, 5000.0]  # layer_types: sliding, then full


def test_rotary_turns_pairs_and_keeps_lengths():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)
    cos, sin = numpy_model.rotary_angles(Rotary(theta=10000.0), 8, np.arange(5))
    rotated = numpy_model.apply_rotary(x, cos, sin)
    assert rotated.dtype == np.float32
    np.testing.assert_array_equal(rotated[:, :, 0], x[:, :, 0])  # position 0: angle 0
    pairs = np.hypot(x[..., :4], x[..., 4:])
    np.testing.assert_allclose(np.hypot(rotated[..., :4], rotated[..., 4:]), pairs, rtol=1e-6)


def test_partial_rotary_leaves_the_other_dimensions():
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 8)).astype(np.float32)
    cos, sin = numpy_model.rotary_angles(Rotary(dims=4), 8, np.arange(4))
    rotated = numpy_model.apply_rotary(x, cos, sin)
    np.testing.assert_array_equal(rotated[..., 4:], x[..., 4:])


@pytest.mark.parametrize("setting, message", [
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}}, "rope_type 'linear'"),
    ({"classifier_pooling": "max"}, "classifier_pooling 'max'"),
    ({"layer_types": ["full_attention"]}, "layer_types must list 2"),
    ({"norm_bias": "yes"}, "norm_bias must be true or false"),
])
def test_unsupported_settings_are_refused_naming_them(setting, message):
    raw = dict(model_type="modernbert", vocab_size=50, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=48, pad_token_id=0, **setting)
    with pytest.raises(ConfigError, match=message):
        EncoderConfig.from_dict(raw)


# --- live: transformers itself, where the test extra installed it ------------------------------
def _live():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in make_modern_references.CASES if c["name"] != "modernbert_long_1030"],
                         ids=lambda case: case["name"])
def test_live_case_matches_transformers(case, backend, tmp_path):
    _live()
    reference = make_modern_references.write_case(case, tmp_path / case["name"])
    assert_matches(Encoder.from_pretrained(tmp_path / case["name"], backend=backend), reference)


def test_rotary_angles_agree_with_transformers_up_to_8192_positions():
    _live()
    import torch
    from transformers.models.modernbert.modeling_modernbert import ModernBertRotaryEmbedding

    def theirs(theta, head_dim):
        config = type("Config", (), dict(rope_parameters={"full_attention": {"rope_theta": theta}},
                                         hidden_size=head_dim, num_attention_heads=1, head_dim=head_dim))
        return ModernBertRotaryEmbedding.compute_default_rope_parameters(config, layer_type="full_attention")[0]

    # torch's float32 pow is within 1 ulp, not correctly rounded: our correctly rounded
    # frequencies differ from its in at most one ulp (1 of 32 at head_dim 64, or none)
    for theta in (10_000.0, 160_000.0, 300.0):
        for head_dim in (16, 64, 128):
            ours = numpy_model.rotary_inverse_frequencies(Rotary(theta=theta), head_dim)
            np.testing.assert_array_max_ulp(ours, theirs(theta, head_dim).numpy(), maxulp=1)
    # ModernBERT's own thetas at its head_dim: the same angles over its 8192 positions
    for theta in (10_000.0, 160_000.0):
        freqs = torch.arange(8192)[:, None].float() * theirs(theta, 64)
        cos, sin = numpy_model.rotary_angles(Rotary(theta=theta), 64, np.arange(8192))
        assert np.abs(cos - freqs.cos().numpy()).max() <= 1e-7
        assert np.abs(sin - freqs.sin().numpy()).max() <= 1e-7
