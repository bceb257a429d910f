"""transformer.eval: the measures (against hand-made values and scipy), the tasks on the real
data of the store (lee-lp50, uci-sentiment: `make test` fetches them), and the same numbers
from this package's vectors as from sentence-transformers' (committed: retrieval_eval.json by
tools/make_retrieval_references.py, and the scorecard's own numbers, retrieval_scorecard.json
by tools/make_scorecard.py; live where the library is installed)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from transformer import eval as evaluation
from transformer.sentence import SentenceEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_retrieval_references import EVAL_SLICE, eval_slices  # noqa: E402

REFERENCES = Path(__file__).resolve().parent / "references"
SAME_TO_4_DECIMALS = 5e-5


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir)


def test_ranks_share_the_mean_rank_between_ties():
    np.testing.assert_array_equal(evaluation.ranks([10, 30, 20, 20]), [1, 4, 2.5, 2.5])


def test_pearson_and_spearman_of_hand_made_series():
    assert evaluation.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert evaluation.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert evaluation.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotonic, not linear
    assert evaluation.pearson([1, 2, 3, 4], [1, 8, 27, 64]) < 0.99


def test_pearson_and_spearman_equal_scipys():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.random(200)
    y = np.round(x + rng.random(200), 1)  # ties in y
    assert evaluation.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert evaluation.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_the_probe_separates_separable_classes_and_not_random_ones():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200, 16))
    assert evaluation.probe_accuracy(vectors, (vectors[:, 3] > 0).astype(int)) >= 0.9  # 300 steps, not to convergence
    assert 0.3 <= evaluation.probe_accuracy(vectors, rng.integers(0, 2, 200)) <= 0.7


def test_the_data_sets_are_what_the_papers_describe():
    documents, ratings = evaluation.lee_data()
    assert len(documents) == 50 and all(len(document) > 300 for document in documents)
    assert np.all(np.diag(ratings) == 1) and np.all(np.tril(ratings, -1) == 0)
    for source, (texts, labels) in evaluation.uci_data().items():
        assert len(texts) == 1000 and labels.sum() == 500, source


def test_the_newer_data_sets_are_what_their_sources_describe():
    snippets, fresh = evaluation.rotten_tomatoes_data()
    assert len(snippets) == 12808 and fresh.sum() == 7403 and all(snippets)
    articles, topics = evaluation.bbc_data()
    assert len(articles) == 2225 and np.bincount(topics).tolist() == [510, 386, 417, 511, 401]
    assert articles[0].startswith("Ad sales boost Time Warner profit")
    declarations = evaluation.udhr_data(("deu_1996",))
    assert sorted(declarations["eng"]) == sorted(declarations["deu_1996"]) == list(range(1, 31))
    assert declarations["eng"][1].startswith("All human beings are born free and equal in dignity and rights.")
    assert declarations["deu_1996"][1].startswith("Alle Menschen sind frei und gleich an Würde und Rechten geboren.")


def test_v_measure_is_one_for_the_classes_renumbered_and_zero_for_one_cluster():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert evaluation.v_measure(labels, np.array([5, 5, 3, 3, 9, 9])) == pytest.approx(1.0)
    assert evaluation.v_measure(labels, np.zeros(6, dtype=int)) == pytest.approx(0.0)


def test_v_measure_equals_scikit_learns():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels, clusters = rng.integers(0, 5, 300), rng.integers(0, 4, 300)
    clusters[:150] = labels[:150]  # half agree
    assert evaluation.v_measure(labels, clusters) == pytest.approx(metrics.v_measure_score(labels, clusters),
                                                                   abs=1e-12)


def test_kmeans_finds_separated_blobs():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((4, 8)) * 10
    labels = np.repeat(np.arange(4), 25)
    points = centers[labels] + rng.standard_normal((100, 8))
    assert evaluation.v_measure(labels, evaluation.kmeans(points, 4)) == pytest.approx(1.0)


def test_the_newer_tasks_on_slices_match_sentence_transformers_vectors(minilm):
    expected = json.loads((REFERENCES / "retrieval_eval.json").read_text(encoding="utf-8"))
    found = eval_slices(lambda texts: minilm.encode(texts, batch_size=16))
    for task, metrics in found.items():
        for metric, value in metrics.items():
            assert abs(value - expected[task][metric]) < SAME_TO_4_DECIMALS, f"{task} {metric}"


def test_udhr_bitext_accuracy_agrees_with_sentence_transformers_translation_evaluator(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.evaluation import TranslationEvaluator

    declarations = evaluation.udhr_data(("fra",))
    numbers = sorted(declarations["eng"])
    evaluator = TranslationEvaluator([declarations["eng"][n] for n in numbers],
                                     [declarations["fra"][n] for n in numbers], batch_size=16)
    theirs = evaluator(sentence_transformers.SentenceTransformer(str(minilm.path), device="cpu"))
    ours = evaluation.udhr_bitext(lambda texts: minilm.encode(texts, batch_size=16), ("fra",))
    assert ours["accuracy@1"] == pytest.approx(theirs["src2trg_accuracy"], abs=SAME_TO_4_DECIMALS)


def test_lee_similarity_matches_sentence_transformers_vectors_to_4_decimals(minilm):
    expected = json.loads((REFERENCES / "retrieval_eval.json").read_text(encoding="utf-8"))["lee-similarity"]
    ours = evaluation.evaluate(minilm, ["lee-similarity"], batch_size=16)["lee-similarity"]
    for metric in ("pearson", "spearman"):
        assert abs(ours[metric] - expected[metric]) < SAME_TO_4_DECIMALS, metric


def test_the_scorecard_gives_the_same_numbers_for_both_vectors():
    scorecard = json.loads((REFERENCES / "retrieval_scorecard.json").read_text(encoding="utf-8"))
    assert "all-MiniLM-L6-v2" in scorecard
    for name, sides in scorecard.items():
        for task, metrics in sides["transformer"].items():
            for metric, value in metrics.items():
                theirs = sides["sentence_transformers"][task][metric]
                assert abs(value - theirs) < SAME_TO_4_DECIMALS, f"{name} {task} {metric}"


def test_lee_similarity_agrees_with_sentence_transformers_evaluator(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    documents, ratings = evaluation.lee_data()
    documents = documents[:12]  # 66 pairs: the evaluator embeds both texts of every pair
    first, second = np.triu_indices(len(documents), k=1)
    evaluator = EmbeddingSimilarityEvaluator([documents[i] for i in first], [documents[j] for j in second],
                                             ratings[first, second].tolist(), batch_size=16)
    theirs = evaluator(sentence_transformers.SentenceTransformer(str(minilm.path), device="cpu"))
    similarities = evaluation.cosine_matrix(minilm.encode(documents, batch_size=16))[first, second]
    assert evaluation.pearson(similarities, ratings[first, second]) == pytest.approx(
        theirs["pearson_cosine"], abs=SAME_TO_4_DECIMALS)
    assert evaluation.spearman(similarities, ratings[first, second]) == pytest.approx(
        theirs["spearman_cosine"], abs=SAME_TO_4_DECIMALS)


def test_probe_accuracy_on_a_slice_matches_sentence_transformers_vectors(minilm):
    expected = json.loads((REFERENCES / "retrieval_eval.json").read_text(encoding="utf-8"))
    for source, (texts, labels) in evaluation.uci_data().items():
        accuracy = evaluation.probe_accuracy(minilm.encode(texts[:EVAL_SLICE], batch_size=16), labels[:EVAL_SLICE])
        assert accuracy == pytest.approx(expected[source], abs=SAME_TO_4_DECIMALS), source


def test_an_unknown_task_is_refused_naming_the_tasks(minilm):
    with pytest.raises(ValueError, match="unknown task 'sts-b'; the tasks are lee-similarity, uci-sentiment, "
                                         "rotten-tomatoes, bbc-news, udhr-bitext"):
        evaluation.evaluate(minilm, ["sts-b"])


def test_cli_eval_prints_the_scores_as_json(capsys):
    from transformer.cli import main

    assert main(["eval", "--task", "lee-similarity", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == "all-MiniLM-L6-v2"
    assert set(printed["scores"]["lee-similarity"]) == {"pearson", "spearman"}
