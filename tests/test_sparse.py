"""SparseEncoder (SPLADE) on SPLADE-tiny == sentence-transformers' SparseEncoder: weights within
1e-5 and the same words above 1e-4, with and without max_active_dims, and decode's top words.
tests/references/retrieval_sparse.npz holds the library's answers (tools/make_retrieval_references.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from transformer.files import ModelFileError
from transformer.sparse import SparseEncoder, SparseVector, keep_top, splade_pooling

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_retrieval_references import SPARSE_MAX_ACTIVE_DIMS, SPARSE_TEXTS, dense_from  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "references" / "retrieval_sparse.npz"
TOLERANCE = 1e-5
ACTIVE = 1e-4


@pytest.fixture(scope="module")
def model(splade_tiny_dir):
    return SparseEncoder.from_pretrained(splade_tiny_dir)


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as file:
        return dict(file)


def assert_same_weights(found, expected):
    assert found.dtype == np.float32 and found.shape == expected.shape
    assert np.abs(found - expected).max() <= TOLERANCE
    for row, (ours, theirs) in enumerate(zip(found, expected)):
        assert np.array_equal(np.flatnonzero(ours > ACTIVE), np.flatnonzero(theirs > ACTIVE)), f"text {row}"


def check_against(model, found):
    for name, options in (("all", {}), ("top", {"max_active_dims": SPARSE_MAX_ACTIVE_DIMS})):
        assert_same_weights(model.encode(SPARSE_TEXTS, batch_size=4, **options), dense_from(found, name, 30522))
    decoded = model.decode(model.encode(SPARSE_TEXTS[:2]), top_k=5)
    assert [[token for token, _ in row] for row in decoded] == found["decoded_tokens"].tolist()
    np.testing.assert_allclose([[weight for _, weight in row] for row in decoded], found["decoded_weights"],
                               rtol=0, atol=TOLERANCE)


def test_weights_and_decode_match_the_committed_reference(model, reference):
    check_against(model, reference)


def test_weights_and_decode_match_live_sentence_transformers(model, splade_tiny_dir, reference):
    pytest.importorskip("sentence_transformers")
    from make_retrieval_references import sparse_references

    live = sparse_references(splade_tiny_dir)
    check_against(model, live)
    for name in ("all", "top"):  # the committed file still says what the library says
        assert_same_weights(dense_from(reference, name, 30522), dense_from(live, name, 30522))


def test_weights_are_sparse_and_expand_the_text(model):
    weights = model.encode("The cat sat on the mat.")
    assert weights.shape == (30522,) and weights.min() == 0
    assert 0 < np.count_nonzero(weights) < 100
    assert {"cat", "mat"} <= {token for token, _ in model.decode(weights, top_k=5)}


def test_convert_to_sparse_holds_the_same_weights(model):
    dense = model.encode(SPARSE_TEXTS[:3])
    sparse = model.encode(SPARSE_TEXTS[:3], convert_to_sparse=True)
    assert all(isinstance(vector, SparseVector) for vector in sparse)
    np.testing.assert_array_equal(np.stack([vector.to_dense() for vector in sparse]), dense)
    assert model.decode(sparse[0]) == model.decode(dense[0])


def test_splade_pooling_ignores_padding_and_squashes_with_log1p():
    logits = np.array([[[1.0, -2.0], [3.0, -1.0], [9.0, 9.0]]], dtype=np.float32)  # [1, 3 tokens, 2 words]
    pooled = splade_pooling(logits, np.array([[1, 1, 0]]))
    np.testing.assert_allclose(pooled, [[np.log1p(3.0), 0.0]], rtol=1e-6)


def test_keep_top_keeps_the_largest_weights():
    vectors = np.array([[0.5, 0.0, 2.0, 1.0, 0.1]], dtype=np.float32)
    np.testing.assert_array_equal(keep_top(vectors, 2), [[0.0, 0.0, 2.0, 1.0, 0.0]])


def test_a_checkpoint_without_a_masked_lm_head_is_refused(minilm_dir, tmp_path):
    with pytest.raises(ModelFileError, match=r"is not a SPLADE model: its modules.json lists \['Transformer', "):
        SparseEncoder.from_pretrained(minilm_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):  # the bare encoder, no modules.json
        (tmp_path / name).symlink_to(minilm_dir / name)
    with pytest.raises(ModelFileError, match="is not a SPLADE model: its checkpoint has no task head"):
        SparseEncoder.from_pretrained(tmp_path)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.encode(["a"], max_active_dims=0), "max_active_dims must be a positive integer, got 0"),
    (lambda m: m.decode(np.zeros(7)), r"decode needs \[30522\] or \[n, 30522\] weights"),
    (lambda m: m.decode(np.zeros(30522), top_k=-1), "top_k must be a positive integer, got -1"),
])
def test_bad_arguments_are_refused_by_name(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)
