"""SentenceEncoder.encode == sentence-transformers' encode, for the two sentence models.

The committed references (tests/references/sentence_<model>.npz, written by
tools/make_sentence_references.py with the pinned sentence-transformers) hold 206 texts: short
sentences, questions, 20+ languages and scripts, punctuation- and symbol-heavy strings,
whitespace oddities, paragraphs, and long texts past 256 / 384 / 512 tokens. Every vector must
match: cosine >= 0.999999 and max |diff| <= 1e-5. When sentence-transformers is importable,
a live run on a spread of the same texts (every long one included) is compared too.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from transformer.sentence import SentenceEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_sentence_references import load_reference  # noqa: E402

REFERENCES = Path(__file__).resolve().parent / "references"
MIN_COSINE = 0.999999
MAX_ABS_DIFF = 1e-5
MODELS = {"all-MiniLM-L6-v2": "minilm_dir", "all-mpnet-base-v2": "mpnet_dir"}


def assert_same_vectors(ours, expected, texts):
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    cosine = (ours * expected).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1))
    worst_diff = np.abs(ours - expected).max(axis=1)
    bad = [i for i in range(len(texts)) if cosine[i] < MIN_COSINE or worst_diff[i] > MAX_ABS_DIFF]
    assert not bad, "; ".join(
        f"text {i} {texts[i][:50]!r}: cosine {cosine[i]:.9f}, max |diff| {worst_diff[i]:.2e}" for i in bad[:5])


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_and_reference(request):
    model_dir = request.getfixturevalue(MODELS[request.param])
    texts, embeddings, meta = load_reference(REFERENCES / f"sentence_{request.param}.npz")
    return SentenceEncoder.from_pretrained(model_dir), texts, embeddings, meta


def test_reference_covers_at_least_200_varied_texts(model_and_reference):
    model, texts, embeddings, meta = model_and_reference
    assert len(texts) >= 200 and embeddings.shape == (len(texts), model.dimension)
    lengths = [model.tokenizer([text])["input_ids"].shape[1] for text in texts]
    assert sum(length > model.max_seq_length for length in lengths) >= 5  # truncation exercised
    assert sum(any(ord(c) > 127 for c in text) for text in texts) >= 30  # accents, scripts, emoji...
    assert "" in texts


def test_encode_matches_the_committed_sentence_transformers_reference(model_and_reference):
    model, texts, embeddings, meta = model_and_reference
    assert model.max_seq_length == meta["max_seq_length"]
    assert_same_vectors(model.encode(texts), embeddings, texts)


def test_encode_matches_live_sentence_transformers(model_and_reference):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model, texts, embeddings, meta = model_and_reference
    # A spread of the texts plus four long ones, to keep the live run short.
    long_ones = [i for i, text in enumerate(texts) if len(text) > 1200]
    chosen = sorted(set(range(0, len(texts), 7)) | set(long_ones[:4]))
    subset = [texts[i] for i in chosen]
    reference = sentence_transformers.SentenceTransformer(str(model.path), device="cpu")
    # Small batches: a long text pads only its own batch to 384 tokens.
    live = reference.encode(subset, batch_size=8, convert_to_numpy=True)
    assert_same_vectors(model.encode(subset, batch_size=8), live, subset)
    # The committed file still says what the installed sentence-transformers says.
    assert_same_vectors(embeddings[chosen], live, subset)
