"""The embedding kernel (gather + add + LayerNorm) against transformer.model.embed."""

from pathlib import Path

import numpy as np
import pytest

from transformer import model
from transformer.config import EncoderConfig
from transformer.kernels import embeddings
from transformer.loading import load_params, read_checkpoint
from transformer.numba_backend.forward import embed

FAMILIES = Path(__file__).parent / "references" / "families"


def load(case):
    config = EncoderConfig.from_file(FAMILIES / case / "config.json")
    return config, load_params(read_checkpoint(FAMILIES / case), config)


@pytest.mark.parametrize("case", ["bert_gelu", "roberta_gelu", "mpnet_gelu", "distilbert_gelu", "electra_projection"])
def test_embed_matches_numpy_for_every_family(case):
    config, params = load(case)
    reference = np.load(FAMILIES / case / "reference.npz")
    input_ids, _, token_type_ids = model.check_inputs(
        config, reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    got = embed(params["embeddings"], config, input_ids, token_type_ids)
    expected = model.embed(params["embeddings"], config, input_ids, token_type_ids)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max())


def test_embed_tokens_equals_its_naive_loop_on_a_large_batch():
    rng = np.random.default_rng(0)
    vocab, width, tokens = 50, 48, 3000  # enough tokens for the parallel path
    word, token_type, position = (rng.standard_normal((n, width)).astype(np.float32) for n in (vocab, 2, 64))
    weight, bias = rng.standard_normal(width).astype(np.float32), rng.standard_normal(width).astype(np.float32)
    ids, types, positions = rng.integers(0, vocab, tokens), rng.integers(0, 2, tokens), rng.integers(0, 64, tokens)
    fast = embeddings.embed_tokens(word, token_type, position, weight, bias, 1e-12, ids, types, positions)
    naive = embeddings.embed_naive(word, token_type, position, weight, bias, np.float32(1e-12), ids, types, positions)
    assert fast.dtype == naive.dtype == np.float32
    assert np.abs(fast - naive).max() <= 1e-6 * np.abs(naive).max()


def test_embed_tokens_without_token_types_ignores_them():
    rng = np.random.default_rng(1)
    word, position = rng.standard_normal((10, 16)).astype(np.float32), rng.standard_normal((8, 16)).astype(np.float32)
    ones, zeros = np.ones(16, np.float32), np.zeros(16, np.float32)
    ids, positions = np.array([1, 2, 3]), np.array([0, 1, 2])
    got = embeddings.embed_tokens(word, None, position, ones, zeros, 1e-12, ids, None, positions)
    expected = model.layer_norm(word[ids] + position[positions], ones, zeros, 1e-12)
    assert np.abs(got - expected).max() <= 1e-6
