"""CrossEncoder without torch: all-MiniLM-L6-v2's encoder with a NumPy-drawn classifier (1 and
3 labels; tools/make_retrieval_references.py) against the scores sentence-transformers gave for
the same files (tests/references/retrieval_cross_encoder_*.npz), and the errors for bad input.
tests/test_cross_encoder_live.py compares every family live."""

import sys
from pathlib import Path

import numpy as np
import pytest

from transformer.cross_encoder import CrossEncoder
from transformer.files import ModelFileError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_retrieval_references import CROSS_PAIRS, minilm_cross_encoder  # noqa: E402

REFERENCES = Path(__file__).resolve().parent / "references"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def folders(minilm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    return {labels: minilm_cross_encoder(minilm_dir, root / f"cross{labels}", labels) for labels in (1, 3)}


@pytest.fixture(scope="module")
def one_label(folders):
    return CrossEncoder.from_pretrained(folders[1])


@pytest.mark.parametrize("labels", [1, 3])
def test_scores_match_the_committed_sentence_transformers_scores(folders, labels):
    model = CrossEncoder.from_pretrained(folders[labels])
    assert model.activation == ("sigmoid" if labels == 1 else "identity")
    expected = np.load(REFERENCES / f"retrieval_cross_encoder_{labels}.npz")["scores"]
    found = model.predict(CROSS_PAIRS, batch_size=4)
    assert found.dtype == np.float32 and found.shape == expected.shape
    assert np.abs(found - expected).max() <= TOLERANCE


@pytest.mark.parametrize("labels", [1, 3])
def test_scores_match_live_sentence_transformers(folders, labels):
    pytest.importorskip("sentence_transformers")
    from make_retrieval_references import cross_encoder_references

    live = cross_encoder_references(folders[labels])
    assert np.abs(CrossEncoder.from_pretrained(folders[labels]).predict(CROSS_PAIRS) - live["scores"]).max() <= TOLERANCE
    expected = np.load(REFERENCES / f"retrieval_cross_encoder_{labels}.npz")["scores"]
    assert np.abs(expected - live["scores"]).max() <= TOLERANCE


def test_rank_orders_documents_as_the_reference(one_label):
    reference = np.load(REFERENCES / "retrieval_cross_encoder_1.npz")
    ranked = one_label.rank(CROSS_PAIRS[0][0], [document for _, document in CROSS_PAIRS], return_documents=True)
    assert [hit["corpus_id"] for hit in ranked] == reference["rank_ids"].tolist()
    np.testing.assert_allclose([hit["score"] for hit in ranked], reference["rank_scores"], rtol=0, atol=TOLERANCE)
    assert ranked[0]["text"] == CROSS_PAIRS[reference["rank_ids"][0]][1]
    assert len(one_label.rank(CROSS_PAIRS[0][0], ["a", "b", "c"], top_k=2)) == 2


def test_a_pair_scores_the_same_alone_and_in_a_batch(one_label):
    batch = one_label.predict(CROSS_PAIRS, batch_size=3)
    alone = one_label.predict(CROSS_PAIRS[2])
    assert alone.shape == () and abs(float(alone) - float(batch[2])) <= 1e-6


def test_identity_activation_gives_the_logits_sigmoid_would_squash(one_label):
    logits = one_label.predict(CROSS_PAIRS[:3], activation="identity")
    np.testing.assert_allclose(one_label.predict(CROSS_PAIRS[:3]), 1 / (1 + np.exp(-logits)), rtol=1e-6)


def test_apply_softmax_gives_distributions_over_three_labels(folders):
    scores = CrossEncoder.from_pretrained(folders[3]).predict(CROSS_PAIRS, apply_softmax=True)
    np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-6)


def test_a_folder_without_a_classification_head_is_refused(minilm_dir, splade_tiny_dir):
    with pytest.raises(ModelFileError, match=r"is not a cross-encoder: its checkpoint has no task head .*BertModel"):
        CrossEncoder.from_pretrained(minilm_dir)
    with pytest.raises(ModelFileError, match="is not a cross-encoder: its checkpoint has a masked_lm head"):
        CrossEncoder.from_pretrained(splade_tiny_dir)


def test_rank_needs_a_one_label_model(folders):
    with pytest.raises(ValueError, match="rank needs a model with one label .* this one has 3"):
        CrossEncoder.from_pretrained(folders[3]).rank("query", ["a document"])


@pytest.mark.parametrize("pairs, message", [
    ("just a text", "pairs must be a list of .text, text. pairs, got a single str"),
    ([("a", "b"), ("only one",)], r"pairs\[1\] is \('only one',\); expected a \(text, text\) pair of str"),
    ([("a", None)], r"pairs\[0\] is \('a', None\)"),
])
def test_malformed_pairs_are_refused_naming_the_item(one_label, pairs, message):
    with pytest.raises(TypeError, match=message):
        one_label.predict(pairs)


def test_an_unknown_activation_is_refused(one_label):
    with pytest.raises(ValueError, match="activation='relu'; expected one of 'sigmoid', 'identity'"):
        one_label.predict(CROSS_PAIRS[:1], activation="relu")


def test_cli_rerank_prints_the_lines_best_first(folders, tmp_path, capsys):
    from transformer.cli import main

    documents = tmp_path / "docs.txt"
    documents.write_text("\n".join(document for _, document in CROSS_PAIRS[:4]) + "\n", encoding="utf-8")
    assert main(["rerank", CROSS_PAIRS[0][0], "--file", str(documents), "--model", str(folders[1]),
                 "--top-k", "2"]) == 0
    reference = np.load(REFERENCES / "retrieval_cross_encoder_1.npz")
    expected = [int(i) for i in reference["rank_ids"] if i < 4][:2]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Top 2 of 4 lines in {documents} for: {CROSS_PAIRS[0][0]}"
    assert [line.split("line ")[1].split(":")[0] for line in out[1:]] == [str(i + 1) for i in expected]


def test_cli_rerank_without_a_model_says_it_needs_a_cross_encoder(tmp_path, capsys):
    from transformer.cli import main

    documents = tmp_path / "docs.txt"
    documents.write_text("a\n", encoding="utf-8")
    assert main(["rerank", "query", "--file", str(documents)]) == 1
    assert "rerank needs --model: a cross-encoder folder" in capsys.readouterr().err
