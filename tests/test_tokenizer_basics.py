"""Behaviour of the tokenizer's parts, each checked against Rust `tokenizers` or a worked example."""

import numpy as np
import pytest

from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def minilm_reference(minilm_dir):
    return tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))


def test_from_pretrained_resolves_a_model_name(minilm):
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    assert tok.encode("hello").ids == minilm.encode("hello").ids


def test_mask_token_inside_text_gives_the_mask_id(minilm, minilm_reference):
    text = "The capital of France is [MASK]."
    assert minilm.encode(text).ids == minilm_reference.encode(text).ids
    assert minilm.mask_token_id in minilm.encode(text).ids


def test_call_returns_int64_arrays_padded_to_the_longest(minilm):
    batch = minilm(["Hello world", "Hi"], padding=True, truncation=True, max_length=256)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(a.dtype == np.int64 for a in batch.values())
    assert batch["input_ids"].tolist() == [[101, 7592, 2088, 102], [101, 7632, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
