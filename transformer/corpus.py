"""A small bundled corpus, semantic search, "more like this", and a 2-D map (PCA).

The corpus (`transformer/data/corpus.tsv`) is 300 short sentences written for this project
(public domain), 50 on each of six topics: food, sport, technology, weather, animals, money.
Its topic labels are only for looking at results: search never reads them.

    >>> from transformer.corpus import load_corpus, SemanticIndex
    >>> corpus = load_corpus()
    >>> len(corpus.texts), corpus.topic_names
    (300, ['food', 'sport', 'technology', 'weather', 'animals', 'money'])
    >>> index = SemanticIndex(model, corpus.texts, corpus.topics)        # doctest: +SKIP
    >>> index.search("Will it rain this weekend?", top_k=1)[0].label      # doctest: +SKIP
    'weather'

Search is a sentence embedding of the query against the corpus' embeddings, ranked by cosine
similarity: the texts need not share a single word with the query. "More like this" is the same
with a corpus sentence as the query (the sentence itself left out).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from transformer.pooling import normalize

CORPUS_FILE = "corpus.tsv"


@dataclass(frozen=True)
class Corpus:
    """texts: the sentences; topics: one label per sentence; topic_names: the labels in order
    of first appearance."""

    texts: list
    topics: list

    @property
    def topic_names(self):
        return list(dict.fromkeys(self.topics))


def load_corpus(path=None):
    """The bundled corpus, or a TSV file of your own with a header `topic<TAB>text`."""
    if path is None:
        text = resources.files("transformer").joinpath("data", CORPUS_FILE).read_text(encoding="utf-8")
        source = f"transformer/data/{CORPUS_FILE}"
    else:
        text = Path(path).read_text(encoding="utf-8")
        source = str(path)
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or rows[0] != ["topic", "text"]:
        raise ValueError(f"{source}: expected a header line 'topic<TAB>text', found {rows[:1]}")
    texts, topics = [], []
    for line_number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0] or not row[1]:
            raise ValueError(f"{source}:{line_number}: expected 'topic<TAB>text', found {row!r}")
        topics.append(row[0])
        texts.append(row[1])
    return Corpus(texts, topics)


@dataclass(frozen=True)
class Hit:
    """One search result: cosine similarity to the query, position in the index, text, label."""

    score: float
    index: int
    text: str
    label: str | None = None


class SemanticIndex:
    """Sentence embeddings of a list of texts, searchable by meaning.

    model: a `SentenceEncoder`; texts: list of str; labels: optional list (one per text) that
    rides along in the hits. The texts are embedded once, here: vectors float32 [n, dim], unit
    length, so a dot product is a cosine similarity.
    """

    def __init__(self, model, texts, labels=None, batch_size=32):
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: an index needs at least one text")
        if labels is not None and len(labels) != len(texts):
            raise ValueError(f"got {len(labels)} labels for {len(texts)} texts; give one label per text")
        self.model = model
        self.texts = texts
        self.labels = list(labels) if labels is not None else None
        self.vectors = normalize(model.encode(texts, batch_size=batch_size))  # [n, dim]

    def __len__(self):
        return len(self.texts)

    def search(self, query, top_k=5):
        """The top_k texts closest in meaning to `query` (a str), best first, as `Hit`s."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        query_vector = normalize(self.model.encode([query]))[0]  # [dim]
        return self._top(self.vectors @ query_vector, top_k, exclude=None)  # [n] cosine similarities

    def more_like_this(self, index, top_k=5):
        """The top_k texts closest to text number `index` of the index, leaving that text out."""
        if not isinstance(index, (int, np.integer)) or not -len(self) <= index < len(self):
            raise IndexError(f"index must be an integer in 0..{len(self) - 1}, got {index!r}")
        index = int(index) % len(self)
        return self._top(self.vectors @ self.vectors[index], top_k, exclude=index)

    def _top(self, scores, top_k, exclude):
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        # A stable sort on the negated scores: ties keep corpus order, so results are reproducible.
        order = [int(i) for i in np.argsort(-scores, kind="stable") if i != exclude][:top_k]
        return [Hit(float(scores[i]), i, self.texts[i], self.labels[i] if self.labels else None)
                for i in order]


def pca(vectors, components=2):
    """Principal component analysis in NumPy: the directions along which the vectors vary most.

    vectors float [n, dim] -> (points float32 [n, components], explained float32 [components]):
    each vector's coordinates along the top components, and the share of the total variance each
    component explains. Each direction's sign is fixed (its largest entry positive) so the
    picture does not flip between LAPACK builds.

    >>> points, explained = pca(np.array([[0., 0.], [1., 1.], [2., 2.]]), components=1)
    >>> points.ravel().round(3).tolist(), explained.round(3).tolist()
    ([-1.414, 0.0, 1.414], [1.0])
    """
    vectors = np.asarray(vectors, dtype=np.float64)  # float64: a few hundred rows, and stable signs
    if vectors.ndim != 2 or not 1 <= components <= min(vectors.shape):
        raise ValueError(f"pca needs vectors [n, dim] and 1 <= components <= min(n, dim); "
                         f"got shape {vectors.shape} and components={components}")
    centered = vectors - vectors.mean(axis=0)  # [n, dim]
    _, singular_values, directions = np.linalg.svd(centered, full_matrices=False)  # directions [k, dim]
    directions = directions[:components]  # [components, dim]
    largest = np.argmax(np.abs(directions), axis=1)  # [components]
    directions = directions * np.sign(directions[np.arange(components), largest])[:, None]
    points = centered @ directions.T  # [n, dim] @ [dim, components] -> [n, components]
    variance = singular_values ** 2
    explained = variance[:components] / variance.sum()
    return points.astype(np.float32), explained.astype(np.float32)
