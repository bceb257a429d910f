"""ModernBERT against transformers' own outputs, on both backends.

tests/references/families/modernbert_*/ hold tiny random checkpoints written by transformers
and its fp32 eager outputs (tools/make_references.py says how they were made): global
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
BACKENDS = ("numpy", "numba")
TOLERANCE = 1e-5


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_references", ROOT / "tools" / "make_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_references = _load_maker()


assert_matches = make_references.assert_matches


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


def test_numba_layers_step_by_step_give_the_same_bits(monkeypatch):
    from transformer.numba_backend import forward

    reference = dict(np.load(FAMILIES / "modernbert_biases_masked_lm" / "reference.npz"))
    model = Encoder.from_pretrained(FAMILIES / "modernbert_biases_masked_lm", backend="numba")
    fused = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    monkeypatch.setattr(forward, "FUSED_LAYERS", False)
    stepped = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    np.testing.assert_array_equal(fused, stepped)


def test_numba_program_of_a_local_layer():
    from transformer.kernels.program import describe

    model = Encoder.from_pretrained(FAMILIES / "modernbert_gelu_window", backend="numba")
    prepared = model._weights
    names = [linear.name for linear in prepared.stack.layout.linears]
    assert describe(prepared.program, 1, names).splitlines() == [
        "NORM       NORMED = LayerNorm(HIDDEN)",
        "GEMM       QKV = NORMED @ W[qkv] + b",
        "ATTENTION  CONTEXT = attention(QKV; rotary[1], window 4 either side)",
        "GEMM       ATTENDED = CONTEXT @ W[attention_output] + b + HIDDEN",
        "NORM       NORMED = LayerNorm(ATTENDED)",
        "MLP        HIDDEN = gelu(NORMED @ W[gate+up].gate + b) * (NORMED @ W[gate+up].up + b) @ W[down] + b + ATTENDED",
    ]
    local = prepared.program.attentions[1]
    assert local["window_half"] == 4 and local["rotary"] == 1  # 8 // 2; the local theta
    assert prepared.program.attentions[0]["window_half"] == -1
    assert "attention(QKV; rotary[0])" in describe(prepared.program, 0, names)  # global: every key


def test_numba_packed_cache_keeps_the_gated_weights(tmp_path, monkeypatch):
    import shutil

    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    folder = tmp_path / "model"
    shutil.copytree(FAMILIES / "modernbert_biases_masked_lm", folder)
    reference = dict(np.load(folder / "reference.npz"))
    packed = Encoder.from_pretrained(folder, backend="numba")(reference["input_ids"], reference["attention_mask"])
    assert (folder / ".transformer-packed").is_dir()
    cached = Encoder.from_pretrained(folder, backend="numba")(reference["input_ids"], reference["attention_mask"])
    np.testing.assert_array_equal(cached.logits, packed.logits)


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
@pytest.mark.parametrize("case", [c for c in make_references.CASES
                                  if c["model_type"] == "modernbert" and "long" not in c["name"]],
                         ids=lambda case: case["name"])
def test_live_case_matches_transformers(case, backend, tmp_path):
    _live()
    reference = make_references.write_case(case, tmp_path / case["name"])
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


SENTENCES = ["A man is eating food.", "ModernBERT reads long inputs: " + "a b c d e f g " * 30,
             "Über den Wolken.", "x"]


@pytest.mark.parametrize("model_type", ["modernbert", "nomic_bert", "jina_embeddings_v3", "t5"])
def test_sentence_encoder_matches_sentence_transformers_live(model_type, minilm_dir, tmp_path):
    """A random model of the family with all-MiniLM-L6-v2's tokenizer, modules.json and mean
    pooling: SentenceEncoder.encode == sentence-transformers' encode."""
    _live()
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import json
    import shutil

    base_models = {"modernbert": "ModernBertModel", "nomic_bert": "NomicBertModel",
                   "jina_embeddings_v3": "JinaEmbeddingsV3Model", "t5": "T5EncoderModel"}
    case = next(c for c in make_references.CASES if c["architecture"] == base_models[model_type])
    case = dict(case, config=dict(case["config"], vocab_size=30522, pad_token_id=0, max_position_embeddings=512))
    folder = tmp_path / model_type
    model = make_references.build_model(case)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
                 "sentence_bert_config.json"):
        shutil.copy(Path(minilm_dir) / name, folder / name)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": model.config.hidden_size, "pooling_mode_mean_tokens": True}))
    theirs = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    from transformer.sentence import SentenceEncoder

    for backend in BACKENDS:
        ours = SentenceEncoder.from_pretrained(folder, backend=backend).encode(SENTENCES)
        assert np.abs(ours - theirs).max() <= TOLERANCE, backend


def test_numba_rotary_tables_cut_from_longer_ones_are_the_same_bits():
    from transformer.numba_backend.program import rotary_tables

    model = Encoder.from_pretrained(FAMILIES / "modernbert_biases_masked_lm", backend="numba")
    prepared, recipe = model._weights, model.config.recipe
    for seq_len in (1, 300, 17, 1100, 5):  # longer, shorter, longer again, shorter
        cos, sin = prepared.rotary(seq_len)
        fresh_cos, fresh_sin = rotary_tables(recipe, seq_len)
        assert cos.flags.c_contiguous and cos.dtype == np.float32 and cos.shape == fresh_cos.shape
        np.testing.assert_array_equal(cos, fresh_cos)
        np.testing.assert_array_equal(sin, fresh_sin)
