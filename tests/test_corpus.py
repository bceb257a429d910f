"""The bundled corpus, semantic search, "more like this" and PCA."""

import numpy as np
import pytest

from transformer.corpus import Hit, SemanticIndex, load_corpus, pca


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    from transformer import SentenceEncoder

    return SentenceEncoder.from_pretrained(minilm_dir, backend="numpy")


@pytest.fixture(scope="module")
def index(encoder, corpus):
    return SemanticIndex(encoder, corpus.texts, corpus.topics)


# --- the corpus -------------------------------------------------------------------------------


def test_bundled_corpus_has_300_distinct_sentences_50_per_topic(corpus):
    assert len(corpus.texts) == 300 == len(corpus.topics)
    assert corpus.topic_names == ["food", "sport", "technology", "weather", "animals", "money"]
    assert all(corpus.topics.count(name) == 50 for name in corpus.topic_names)
    assert len(set(corpus.texts)) == 300
    assert all(3 <= len(text.split()) <= 16 and text == text.strip() for text in corpus.texts)


def test_load_corpus_reads_a_tsv_of_your_own(tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text("topic\ttext\npets\tA cat.\ncars\tA fast car.\n", encoding="utf-8")
    mine = load_corpus(path)
    assert mine.texts == ["A cat.", "A fast car."] and mine.topics == ["pets", "cars"]


def test_load_corpus_names_the_file_and_line_of_a_bad_row(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("topic\ttext\npets\tA cat.\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:3: expected 'topic<TAB>text'"):
        load_corpus(path)
    path.write_text("A cat.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a header line"):
        load_corpus(path)


# --- PCA --------------------------------------------------------------------------------------


def test_pca_finds_the_direction_of_largest_spread():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    vectors = rng.normal(size=(200, 1)) * 10 * direction + rng.normal(size=(200, 3)) * 0.1
    points, explained = pca(vectors, components=1)
    assert points.shape == (200, 1) and points.dtype == np.float32
    centered = vectors - vectors.mean(axis=0)
    # Up to the sign fixed by pca, the coordinate is the projection on the true direction.
    np.testing.assert_allclose(np.abs(points[:, 0]), np.abs(centered @ direction), atol=0.05)
    assert explained[0] > 0.99


def test_pca_explained_shares_are_the_covariance_eigenvalues():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1])
    _, explained = pca(vectors, components=3)
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(vectors, rowvar=False)))[::-1]
    np.testing.assert_allclose(explained, eigenvalues[:3] / eigenvalues.sum(), rtol=1e-5)


def test_pca_fixes_the_sign_so_the_largest_loading_is_positive():
    vectors = np.array([[0.0, 0.0], [-1.0, 0.0], [-2.0, 0.0]])
    points, _ = pca(vectors, components=1)
    # The direction is +x (its largest entry positive), so the point at -2 is on the negative side.
    assert points[2, 0] < 0 < points[0, 0]


def test_pca_rejects_more_components_than_the_data_has():
    with pytest.raises(ValueError, match=r"components=3"):
        pca(np.zeros((2, 5)), components=3)


# --- search and more like this ----------------------------------------------------------------


def test_search_for_rain_finds_weather_sentences(index):
    hits = index.search("Will it rain this weekend?", top_k=5)
    assert [hit.label for hit in hits] == ["weather"] * 5
    assert hits[0].text == "Heavy rain is expected tomorrow afternoon."
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_search_scores_are_cosine_similarities_of_the_sentence_embeddings(index, encoder):
    hit = index.search("A dog barks.", top_k=1)[0]
    query = encoder.encode(["A dog barks."])[0]
    sentence = encoder.encode([hit.text])[0]
    expected = query @ sentence / (np.linalg.norm(query) * np.linalg.norm(sentence))
    assert hit.score == pytest.approx(float(expected), abs=1e-5)
    assert isinstance(hit, Hit) and hit.label == "animals"


def test_more_like_this_leaves_the_sentence_itself_out(index, corpus):
    money = corpus.texts.index("The bank raised its interest rates again.")
    hits = index.more_like_this(money, top_k=3)
    assert money not in [hit.index for hit in hits]
    assert hits[0].text == "The central bank cut interest rates to support growth."
    assert all(hit.label == "money" for hit in hits)


def test_most_sentences_nearest_neighbour_shares_its_topic(index, corpus):
    agree = [index.more_like_this(i, top_k=1)[0].label == corpus.topics[i] for i in range(len(corpus.texts))]
    assert np.mean(agree) >= 0.85  # 0.90 with all-MiniLM-L6-v2: the topics are real clusters


def test_index_vectors_match_sentence_transformers(index, corpus, minilm_dir):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    expected = reference.encode(corpus.texts, batch_size=32, normalize_embeddings=True)
    np.testing.assert_allclose(index.vectors, expected, atol=1e-5)


def test_index_errors_name_what_was_wrong(index, encoder):
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        index.search("rain", top_k=0)
    with pytest.raises(IndexError, match=r"index must be an integer in 0..299, got 300"):
        index.more_like_this(300)
    with pytest.raises(TypeError, match="query must be a str, got list"):
        index.search(["rain"])
    with pytest.raises(ValueError, match="got 1 labels for 2 texts"):
        SemanticIndex(encoder, ["a", "b"], ["x"])
