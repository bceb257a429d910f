"""Jina Embeddings v3 (transformers' own port) against transformers' outputs, on both backends.

tests/references/families/jina_v3_*/ hold tiny random checkpoints written by transformers and
its fp32 eager outputs (tests/make_modern_references.py says how they were made): rotary
positions with the default and a set theta, biases everywhere, every head (RoBERTa's),
padded batches, rows of 1, 17 and 1030 tokens. Where torch is installed, the live tests
rebuild every case and compare directly.
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
CASES = sorted(p.name for p in FAMILIES.iterdir() if p.name.startswith("jina_v3_"))
BACKENDS = ("numpy", "numba")


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_modern_references", ROOT / "tests" / "make_modern_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_modern_references = _load_maker()


def test_the_cases_cover_every_head_and_length():
    assert len(CASES) >= 4
    for kind in ("masked_lm", "sequence_classification", "token_classification"):
        assert any(kind in name for name in CASES), kind
    lengths = {int(n) for name in CASES
               for n in np.load(FAMILIES / name / "reference.npz")["attention_mask"].sum(axis=1)}
    assert {1, 17} <= lengths and max(lengths) > 1024


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_committed_case_matches_transformers(name, backend):
    reference = dict(np.load(FAMILIES / name / "reference.npz"))
    make_modern_references.assert_matches(Encoder.from_pretrained(FAMILIES / name, backend=backend), reference)


def test_recipe_is_post_norm_rotary_with_biases():
    config = EncoderConfig.from_file(FAMILIES / "jina_v3_gelu")
    attention, mlp = (block.sublayer for block in config.recipe.layers[0].blocks)
    assert attention.positions == Rotary(theta=20000.0)  # JinaEmbeddingsV3Config's default theta
    assert mlp.gate is None and all(linear.bias for linear in config.recipe.layers[0].linears())
    assert config.recipe.embeddings.positions is None


def test_other_rope_types_are_refused():
    raw = dict(model_type="jina_embeddings_v3", vocab_size=50, hidden_size=32, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=40, rope_parameters={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ConfigError, match="rope_type 'dynamic' is not supported by jina_embeddings_v3"):
        EncoderConfig.from_dict(raw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in make_modern_references.CASES
                                  if c["model_type"] == "jina_embeddings_v3" and "long" not in c["name"]],
                         ids=lambda case: case["name"])
def test_live_case_matches_transformers(case, backend, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    reference = make_modern_references.write_case(case, tmp_path / case["name"])
    make_modern_references.assert_matches(Encoder.from_pretrained(tmp_path / case["name"], backend=backend),
                                          reference)
