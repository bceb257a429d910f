"""What a sentence model is worth on real data: small, public evaluation tasks.

    >>> from transformer.eval import evaluate
    >>> evaluate(SentenceEncoder.from_pretrained("all-MiniLM-L6-v2"))          # doctest: +SKIP
    {'lee-similarity': {'pearson': 0.6..., 'spearman': 0.4...}, 'uci-sentiment': {...}}

Every task takes an `embed(texts) -> float32 [n, dim]` function, so any model's vectors
(sentence-transformers' too) go through the same code. The data are fetched into the store
from registry packages, pinned by sha256 in transformer/models.json:

  lee-similarity   the Lee LP50 set (PyPI gensim): 50 news documents, every pair rated by
                   people. Pearson and Spearman correlation between the cosine similarity
                   of the two documents' vectors and the people's mean rating, over the
                   1,225 pairs.
  uci-sentiment    the UCI labelled sentences (npm sentiment): 1,000 Amazon, IMDb and Yelp
                   sentences each, positive or negative. A logistic-regression probe on the
                   frozen vectors, 5-fold accuracy, per source and their mean.
"""

import json

import numpy as np

FOLDS = 5
PROBE_STEPS = 300
PROBE_L2 = 1e-3  # ridge on the probe's weights: the classes of a small set separate in 384+ dimensions


# --- the measures -----------------------------------------------------------------------------


def pearson(x, y):
    """Pearson's correlation of two equal-length sequences, in float64."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / np.sqrt((x @ x) * (y @ y)))


def ranks(values):
    """1-based ranks, ties sharing their mean rank: [10, 30, 20, 20] -> [1, 4, 2.5, 2.5]."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranked = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranked[order[start:end + 1]] = (start + end) / 2 + 1  # the mean of ranks start+1 .. end+1
        start = end + 1
    return ranked


def spearman(x, y):
    """Spearman's rank correlation: Pearson's on the ranks."""
    return pearson(ranks(x), ranks(y))


def train_logistic_regression(features, labels, num_classes, steps=PROBE_STEPS, l2=PROBE_L2):
    """A softmax classifier by full-batch gradient descent (deterministic: zero start, fixed
    step). features float [n, dim] (standardized by the caller), labels int [n] ->
    (weight float64 [dim, classes], bias [classes])."""
    features = features.astype(np.float64)
    targets = np.eye(num_classes)[labels]  # [n, classes], one-hot
    weight = np.zeros((features.shape[1], num_classes))
    bias = np.zeros(num_classes)
    step = 1.0
    for _ in range(steps):
        logits = features @ weight + bias  # [n, classes]
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        error = (probabilities - targets) / len(features)  # d(mean cross-entropy)/d(logits)
        weight -= step * (features.T @ error + l2 * weight)  # [dim, n] @ [n, classes]
        bias -= step * error.sum(axis=0)
    return weight, bias


def probe_accuracy(vectors, labels, folds=FOLDS, seed=0):
    """k-fold accuracy of a logistic-regression probe on frozen vectors [n, dim] with int labels [n]:
    each fold is held out once, the probe trained on the rest (features standardized by the
    training part's mean and deviation). The folds come from a fixed shuffle."""
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1
    order = np.random.default_rng(seed).permutation(len(labels))
    correct = 0
    for held_out in np.array_split(order, folds):
        train = np.setdiff1d(order, held_out)
        mean, deviation = vectors[train].mean(axis=0), vectors[train].std(axis=0) + 1e-8
        weight, bias = train_logistic_regression((vectors[train] - mean) / deviation, labels[train], num_classes)
        predicted = (((vectors[held_out] - mean) / deviation) @ weight + bias).argmax(axis=1)
        correct += int((predicted == labels[held_out]).sum())
    return correct / len(labels)


def cosine_matrix(vectors):
    """[n, dim] -> [n, n] cosine similarities, in float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


# --- the tasks --------------------------------------------------------------------------------


def lee_data(folder=None):
    """(documents: 50 str, ratings float64 [50, 50] upper triangle: people's mean similarity)."""
    folder = _data_folder("lee-lp50", folder)
    # The file is Latin-1 (its pound signs are the byte 0xa3), one document per line.
    documents = [line.strip() for line in (folder / "lee.cor").read_text(encoding="latin-1").splitlines()
                 if line.strip()]
    ratings = np.loadtxt(folder / "similarities0-1.txt", dtype=np.float64)
    if len(documents) != 50 or ratings.shape != (50, 50):
        raise ValueError(f"{folder}: expected 50 documents and a 50x50 matrix, found {len(documents)} and "
                         f"{ratings.shape}")
    return documents, ratings


def lee_similarity(embed, folder=None):
    """{"pearson", "spearman"} between cosine similarities and people's ratings over the 1,225 pairs."""
    documents, ratings = lee_data(folder)
    similarities = cosine_matrix(embed(documents))  # [50, 50]
    upper = np.triu_indices(len(documents), k=1)  # every pair once
    return {"pearson": pearson(similarities[upper], ratings[upper]),
            "spearman": spearman(similarities[upper], ratings[upper])}


UCI_SOURCES = ("amazon", "imdb", "yelp")


def uci_data(folder=None):
    """{source: (texts, labels int [n])}: 1 positive, 0 negative."""
    folder = _data_folder("uci-sentiment", folder)
    found = {}
    for source in UCI_SOURCES:
        rows = json.loads((folder / f"{source}.json").read_text(encoding="utf-8"))
        rows = [row for row in rows if row.get("class") is not None]  # each file ends with an empty, unlabelled row
        found[source] = ([row["text"] for row in rows], np.array([int(row["class"]) for row in rows]))
    return found


def uci_sentiment(embed, folder=None):
    """{"<source>_accuracy" for each source, "accuracy": their mean}: 5-fold probe accuracy."""
    scores = {}
    for source, (texts, labels) in uci_data(folder).items():
        scores[f"{source}_accuracy"] = probe_accuracy(embed(texts), labels)
    scores["accuracy"] = float(np.mean([scores[f"{source}_accuracy"] for source in UCI_SOURCES]))
    return scores


TASKS = {"lee-similarity": lee_similarity, "uci-sentiment": uci_sentiment}


def evaluate(model, tasks=None, batch_size=32):
    """{task: {metric: value}} for a SentenceEncoder (or anything with encode(texts, batch_size=)).
    tasks: names from TASKS (None: all)."""
    tasks = list(TASKS) if tasks is None else list(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; the tasks are {', '.join(TASKS)}")

    def embed(texts):
        return np.asarray(model.encode(texts, batch_size=batch_size), dtype=np.float32)

    return {task: TASKS[task](embed) for task in tasks}


def _data_folder(name, folder):
    """The folder holding a data set: `folder` when given, else the store's copy (fetched
    from its registry package on first use, as `transformer download NAME` does)."""
    from pathlib import Path

    from transformer.store import resolve

    return Path(folder) if folder is not None else Path(resolve(name))
