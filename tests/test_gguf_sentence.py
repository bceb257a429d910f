"""Decoder sentence embeddings from a GGUF file: `SentenceEncoder.from_pretrained(gguf)` pools
each text's last token (the only one that has seen the whole text under a causal mask),
padded on the right or the left, and `transformer embed -m x.gguf` gives the same vectors."""

import os
import subprocess
import sys

import numpy as np
import pytest

from transformer.pooling import last_token_pooling
from transformer.sentence import SentenceEncoder

TEXTS = ["The bank of the river was flooded.", "I deposited money at the bank.", "Hi",
         "A decoder's vector for a text is its last token's."]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    """SmolLM2 as a sentence encoder (numba backend), without a packed cache beside the weights."""
    before = os.environ.get("TRANSFORMER_PACKED_CACHE")
    os.environ["TRANSFORMER_PACKED_CACHE"] = "0"
    yield SentenceEncoder.from_pretrained(smollm2_gguf, backend="numba")
    if before is None:
        del os.environ["TRANSFORMER_PACKED_CACHE"]
    else:
        os.environ["TRANSFORMER_PACKED_CACHE"] = before


def test_last_token_pooling_finds_the_last_real_token_on_either_side():
    hidden = np.arange(2 * 4 * 2, dtype=np.float32).reshape(2, 4, 2)   # [batch, seq, hidden]
    right = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_pooling(hidden, right).tolist() == [[2, 3], [14, 15]]
    assert last_token_pooling(hidden, left).tolist() == [[6, 7], [14, 15]]
    assert last_token_pooling(hidden, np.zeros((2, 4))).tolist() == [[0, 0], [0, 0]]  # no tokens: zeros, as ST gives


def test_a_gguf_sentence_encoder_pools_the_last_token(smollm2, smollm2_gguf):
    assert smollm2.pooling_modes == ["lasttoken"] and not smollm2.normalize
    assert smollm2.dimension == 576 and smollm2.max_seq_length == 8192  # llama.context_length
    vectors = smollm2.encode(TEXTS)
    encoder = smollm2.encoder
    for text, vector in zip(TEXTS, vectors):
        ids = smollm2.tokenizer.encode(text).ids
        alone = encoder.last_hidden_state([ids])[0, -1]    # [hidden]: the text alone, no padding
        np.testing.assert_allclose(vector, alone, rtol=0, atol=1e-5 * np.abs(alone).max())


def test_left_and_right_padding_give_the_same_vectors(smollm2):
    right = smollm2.encode(TEXTS)
    smollm2.tokenizer.enable_padding(direction="left")
    try:
        left = smollm2.encode(TEXTS)
    finally:
        smollm2.tokenizer.no_padding()
    np.testing.assert_allclose(left, right, rtol=0, atol=1e-5 * np.abs(right).max())


def test_pooling_can_be_chosen(smollm2_gguf, monkeypatch):
    monkeypatch.setenv("TRANSFORMER_PACKED_CACHE", "0")
    model = SentenceEncoder.from_pretrained(smollm2_gguf, backend="numba", pooling="mean")
    assert model.pooling_modes == ["mean"]
    with pytest.raises(ValueError, match="pooling 'final' is not a pooling mode"):
        SentenceEncoder.from_pretrained(smollm2_gguf, pooling="final")


def test_the_cli_embeds_with_a_gguf_model(smollm2, smollm2_gguf, tmp_path):
    output = tmp_path / "vectors.npy"
    result = subprocess.run([sys.executable, "-m", "transformer", "embed", "-m", str(smollm2_gguf), "-o", str(output),
                             *TEXTS[:2]], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TRANSFORMER_PACKED_CACHE="0"))
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(output), smollm2.encode(TEXTS[:2]))
