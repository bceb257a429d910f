"""`transformer serve --kind rerank | sparse`: POST /rerank and POST /embed_sparse as
text-embeddings-inference answers them, called over HTTP on a loopback port; the scores and
weights checked against CrossEncoder.predict and SparseEncoder.encode in this process."""

import sys
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest

from test_serve import post, start_server, stop_server
from transformer.cross_encoder import CrossEncoder
from transformer.sparse import SparseEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_retrieval_references import minilm_cross_encoder  # noqa: E402

QUERY = "How do vaccines train the immune system?"
TEXTS = [
    "The stock market closed higher on Friday after a week of losses.",
    "Vaccines expose the immune system to a harmless piece of a pathogen so it learns to recognise it.",
    "Antibodies are made by B cells after an infection or a vaccination.",
    "word " * 600,  # past the model's 512 tokens with the query
]


@pytest.fixture(scope="module")
def cross_dir(minilm_dir, tmp_path_factory):
    return minilm_cross_encoder(minilm_dir, tmp_path_factory.mktemp("models") / "cross1", 1)


@pytest.fixture(scope="module")
def reranker(cross_dir):
    process, url = start_server("--model", str(cross_dir), "--max-queue", "64")  # the kind read from the folder
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def cross_encoder(cross_dir):
    return CrossEncoder.from_pretrained(cross_dir)


@pytest.fixture(scope="module")
def sparse_server(splade_tiny_dir):
    process, url = start_server("--model", str(splade_tiny_dir), "--kind", "sparse")
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def splade(splade_tiny_dir):
    return SparseEncoder.from_pretrained(splade_tiny_dir)


# --- /rerank -----------------------------------------------------------------------------------


def test_rerank_scores_are_the_cross_encoders_best_first(reranker, cross_encoder):
    response = post(reranker, "/rerank", {"query": QUERY, "texts": TEXTS, "truncate": True})
    assert response.status_code == 200, response.text
    results = response.json()
    expected = cross_encoder.predict([(QUERY, text) for text in TEXTS])  # sigmoid, the model's activation
    assert sorted(result["index"] for result in results) == list(range(len(TEXTS)))
    assert [result["index"] for result in results] == np.argsort(-expected, kind="stable").tolist()
    for result in results:
        assert set(result) == {"index", "score"}
        assert abs(result["score"] - expected[result["index"]]) <= 1e-6


def test_raw_scores_are_the_logits_and_return_text_adds_the_text(reranker, cross_encoder):
    response = post(reranker, "/rerank", {"query": QUERY, "texts": TEXTS[:3], "raw_scores": True,
                                          "return_text": True})
    logits = cross_encoder.predict([(QUERY, text) for text in TEXTS[:3]], activation="identity")
    for result in response.json():
        assert result["text"] == TEXTS[result["index"]]
        assert abs(result["score"] - logits[result["index"]]) <= 1e-5


def test_the_rerank_server_says_what_it_serves(reranker):
    assert httpx.get(f"{reranker}/health").json()["kind"] == "rerank"
    card = httpx.get(f"{reranker}/v1/models").json()["data"][0]
    assert card["kind"] == "rerank" and card["max_input_tokens"] == 512
    missing = post(reranker, "/v1/embeddings", {"input": "x"})
    assert missing.status_code == 404 and "POST /rerank" in missing.json()["error"]["message"]


MALFORMED_RERANK = [
    ({"texts": ["a"]}, "query", "required"),
    ({"query": "q"}, "texts", "required"),
    ({"query": "", "texts": ["a"]}, "query", "empty"),
    ({"query": "q", "texts": []}, "texts", "empty"),
    ({"query": "q", "texts": ["a", " "]}, "texts[1]", "empty"),
    ({"query": "q", "texts": "a"}, "texts", "valid list"),
    ({"query": "q", "texts": ["a", 3]}, "texts", "valid string"),
    ({"query": "q", "texts": ["a"], "raw_scores": "yes"}, "raw_scores", "bool"),
    ({"query": "q", "texts": ["a"], "truncation_direction": "Left"}, "truncation_direction", "Right"),
    ({"query": "q", "texts": ["a"], "top_n": 3}, "top_n", "not a field"),
    ({"query": QUERY, "texts": ["a", "word " * 600]}, "texts[1]", "512 tokens"),  # truncate: false by default
    ({"query": "q", "texts": ["a"], "model": "bge-reranker"}, "model", "not served"),
]


@pytest.mark.parametrize("body, param, words", MALFORMED_RERANK)
def test_a_malformed_rerank_request_gets_a_4xx_naming_the_field(reranker, body, param, words):
    response = post(reranker, "/rerank", body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_rerank_refuses_a_cross_encoder_with_several_labels(minilm_dir, tmp_path):
    folder = minilm_cross_encoder(minilm_dir, tmp_path / "cross3", 3)
    with pytest.raises(AssertionError, match="--kind rerank needs a cross-encoder with one label.*has 3"):
        start_server("--model", str(folder), "--kind", "rerank")


# --- /embed_sparse -----------------------------------------------------------------------------


def test_embed_sparse_gives_the_non_zero_weights_of_encode(sparse_server, splade):
    texts = ["The cat sat on the mat.", "what is the capital of france"]
    response = post(sparse_server, "/embed_sparse", {"inputs": texts})
    assert response.status_code == 200, response.text
    expected = splade.encode(texts)
    for found, row in zip(response.json(), expected):
        indices = [item["index"] for item in found]
        assert indices == np.flatnonzero(row).tolist()  # every non-zero word, by index
        np.testing.assert_array_equal(np.array([item["value"] for item in found], dtype=np.float32), row[indices])


def test_embed_sparse_takes_one_string_and_cuts_long_texts_when_asked(sparse_server, splade):
    one = post(sparse_server, "/embed_sparse", {"inputs": "The cat sat on the mat."}).json()
    assert len(one) == 1 and len(one[0]) == np.count_nonzero(splade.encode("The cat sat on the mat."))
    long_text = "sparse retrieval " * 400
    cut = post(sparse_server, "/embed_sparse", {"inputs": [long_text], "truncate": True}).json()[0]
    assert [item["index"] for item in cut] == np.flatnonzero(splade.encode(long_text)).tolist()


MALFORMED_SPARSE = [
    ({}, "inputs", "required"),
    ({"inputs": []}, "inputs", "empty"),
    ({"inputs": [""]}, "inputs[0]", "empty"),
    ({"inputs": 5}, "inputs", "a string or a list of strings"),
    ({"inputs": ["ok", None]}, "inputs", "a string or a list of strings"),
    ({"inputs": "x", "truncate": 1}, "truncate", "bool"),
    ({"inputs": ["ok", "sparse retrieval " * 400]}, "inputs[1]", "512 tokens"),
]


@pytest.mark.parametrize("body, param, words", MALFORMED_SPARSE)
def test_a_malformed_sparse_request_gets_a_4xx_naming_the_field(sparse_server, body, param, words):
    response = post(sparse_server, "/embed_sparse", body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error
