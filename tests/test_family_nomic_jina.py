"""NomicBERT (nomic-embed-text v1 / v1.5) and Jina Embeddings v3 (transformers' own ports)
against transformers' outputs, on both backends: BERT's post-norm layers with rotary
positions instead of a position table (`nomic_bert.rotary_post_norm_recipe`).

tests/references/families/nomic_bert_*/ and jina_v3_*/ hold tiny random checkpoints written
by transformers and its fp32 eager outputs (tools/make_references.py says how they
were made): rotary positions with the default and a set theta, NomicBERT's SwiGLU / GeGLU
without biases, Jina's plain MLP with biases, token types, every head (NomicBERT's pooler for
sequence classification, Jina's RoBERTa heads), padded batches, rows of 1, 17 and 1030
tokens. Where torch is installed, the live tests rebuild every case and compare directly.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.recipe import Rotary

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ROOT / "tests" / "references" / "families"
PREFIXES = {"nomic_bert": "nomic_bert_", "jina_embeddings_v3": "jina_v3_"}  # model_type -> case names
CASES = sorted(p.name for p in FAMILIES.iterdir() if p.name.startswith(tuple(PREFIXES.values())))
BACKENDS = ("numpy", "numba")


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_references", ROOT / "tools" / "make_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_references = _load_maker()


@pytest.mark.parametrize("prefix", PREFIXES.values())
def test_the_cases_cover_every_head_and_length(prefix):
    names = [name for name in CASES if name.startswith(prefix)]
    assert len(names) >= 4
    for kind in ("masked_lm", "sequence_classification", "token_classification"):
        assert any(kind in name for name in names), kind
    lengths = {int(n) for name in names for n in np.load(FAMILIES / name / "reference.npz")["attention_mask"].sum(axis=1)}
    assert {1, 17} <= lengths and max(lengths) > 1024


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_committed_case_matches_transformers(name, backend):
    reference = dict(np.load(FAMILIES / name / "reference.npz"))
    make_references.assert_matches(Encoder.from_pretrained(FAMILIES / name, backend=backend), reference)


@pytest.mark.parametrize("name, theta, biases, gated", [("nomic_bert_swiglu", 1000.0, False, True),
                                                         ("jina_v3_gelu", 20000.0, True, False)])
def test_recipe_is_post_norm_rotary(name, theta, biases, gated):
    config = EncoderConfig.from_file(FAMILIES / name)
    layer = config.recipe.layers[0]
    attention, mlp = (block.sublayer for block in layer.blocks)
    assert attention.positions == Rotary(theta=theta)  # the config class's default theta
    assert (mlp.gate is not None) == gated
    assert all(linear.bias == biases for linear in layer.linears())
    assert all(block.norm_after_residual is not None and block.norm_before is None for block in layer.blocks)
    assert config.recipe.embeddings.positions is None and config.recipe.embeddings.token_types


@pytest.mark.parametrize("model_type, setting, message", [
    ("nomic_bert", {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "rope_type 'yarn' is not supported"),
    ("nomic_bert", {"n_embd": 768}, "n_embd is nomic's remote-code config format"),
    ("nomic_bert", {"head_dim": 8}, "head_dim 8 is not supported"),
    ("jina_embeddings_v3", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
     "rope_type 'dynamic' is not supported by jina_embeddings_v3"),
])
def test_unsupported_settings_are_refused_naming_them(model_type, setting, message):
    raw = dict(model_type=model_type, vocab_size=50, hidden_size=32, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=40, **setting)
    with pytest.raises(ConfigError, match=message):
        EncoderConfig.from_dict(raw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in make_references.CASES
                                  if c["model_type"] in PREFIXES and "long" not in c["name"]],
                         ids=lambda case: case["name"])
def test_live_case_matches_transformers(case, backend, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    reference = make_references.write_case(case, tmp_path / case["name"])
    make_references.assert_matches(Encoder.from_pretrained(tmp_path / case["name"], backend=backend),
                                          reference)
