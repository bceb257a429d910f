"""Build benchmarks/data/corpus.txt: the fixed, public-domain corpus the end-to-end benchmark embeds.

    apt-get install bible-kjv dict-gcide        # the two public-domain sources (Debian packages)
    .venv/bin/python benchmarks/make_corpus.py  # writes benchmarks/data/corpus.txt, prints a histogram

One text per line, 3000 texts, 3 to 250 all-MiniLM-L6-v2 WordPiece tokens each ([CLS] and [SEP]
counted, so nothing is truncated at the model's 256), mixed the way search and embedding jobs are:
many short texts, some long ones.

  * King James Bible (1611, public domain), from the `bible-kjv` package's `bible` reader:
    single verses, and passages of consecutive verses of one chapter joined up to a length drawn
    log-uniformly between 40 and 250 tokens.
  * Webster's Revised Unabridged Dictionary (1913, public domain), from the `dict-gcide` package
    (GCIDE). Only paragraphs GCIDE tags `[1913 Webster]` are used: later additions ([PJC],
    [WordNet 1.5], ...) are GPL and are left out. Kinds: bare headwords (query-like, 3-6 tokens),
    definitions ("Coagulate: To undergo coagulation."), quotations, and the long usage notes.

The draw is seeded (SEED), so the same packages give the same file. See benchmarks/data/README.md.
"""

import argparse
import gzip
import re
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "data" / "corpus.txt"
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")  # dictzip is gzip-compatible
TOKENIZER = HERE.parent / "weights" / "all-MiniLM-L6-v2"
SEED = 20250524
MIN_TOKENS, MAX_TOKENS = 3, 250

# How many texts of each kind (3000 in all).
COUNTS = {
    "headword": 150,
    "definition": 950,
    "quotation": 450,
    "usage note": 200,
    "verse": 600,
    "passage": 650,
}


# ---------------------------------------------------------------------------------------
# King James Bible


def kjv_chapters():
    """[[verse text, ...] per chapter] in canon order, read with the `bible` program."""
    try:
        output = subprocess.run(["bible", "-l", "100000", "gen1:1-rev22:21"], capture_output=True, text=True,
                                check=True).stdout
    except FileNotFoundError:
        raise SystemExit("`bible` not found: apt-get install bible-kjv (the King James Bible reader + text)") from None
    chapters = []
    for line in output.splitlines():
        verse = re.match(r"^\s+(\d+) (.+)$", line)
        if verse is None:
            if line.strip():  # "Genesis 1": a new chapter
                chapters.append([])
            continue
        chapters[-1].append(verse.group(2).strip())
    return [chapter for chapter in chapters if chapter]


# ---------------------------------------------------------------------------------------
# Webster 1913 (GCIDE)


def webster_blocks():
    """(headword, kind, text) for every [1913 Webster] paragraph GCIDE holds.

    kind: "definition" (a sense, headword kept apart), "quotation" (an indented citation,
    attribution dropped), "usage note" (the long Usage: / Note: paragraphs).
    """
    if not GCIDE.is_file():
        raise SystemExit(f"{GCIDE} not found: apt-get install dict-gcide (GCIDE, Webster 1913)")
    with gzip.open(GCIDE, "rt", encoding="utf-8", errors="replace") as file:
        text = file.read()
    blocks = []
    headword = None
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not lines or not lines[-1].strip() == "[1913 Webster]":
            header = re.match(r"^(\S[^\\\n]*?) \\", block)
            if header:
                headword = header.group(1)
            continue
        body = "\n".join(lines[:-1])
        header = re.match(r"^(\S[^\\\n]*?) \\", body)
        if header:  # the first paragraph of an entry: "Word \pro*nun"ci*a`tion\, pos. [etymology]"
            headword = header.group(1)
            body = _strip_entry_header(body)
            kind = "definition"
        elif re.match(r"^ {8,}\S", body):
            kind = "quotation"
        elif re.match(r"^\s*(Usage|Note):", body):
            kind = "usage note"
            body = re.sub(r"^\s*(Usage|Note):\s*", "", body)
        elif re.match(r"^\s*\d+\.\s", body):
            kind = "definition"
            body = re.sub(r"^\s*\d+\.\s+", "", body)
        else:
            continue  # Syn: lists, phrase entries, tables
        cleaned = _clean(body, kind)
        if headword and cleaned:
            blocks.append((_clean(headword, "headword"), kind, cleaned))
    return blocks


def _strip_entry_header(body):
    """Drop the header line and any [etymology] groups that run on from it; keep the definition."""
    first_end = body.find("\n")
    if first_end < 0:
        return ""
    depth = 0
    for char in body[:first_end]:
        depth += (char == "[") - (char == "]")
    position = first_end
    while position < len(body):
        char = body[position]
        if depth > 0:
            depth += (char == "[") - (char == "]")
        elif char == "[":
            depth = 1
        elif not char.isspace():
            break
        position += 1
    return re.sub(r"^\d+\.\s+", "", body[position:])


def _clean(text, kind):
    """GCIDE markup -> plain text; "" when something unreadable is left."""
    if kind == "quotation":
        text = re.split(r"--[A-Z]", text, maxsplit=1)[0]
    else:
        text = re.sub(r"--[A-Z][^\n]*", "", text)  # attributions: --Shak., --Boyle.
    text = re.sub(r"\[[^\]]*\]", "", text)  # [Obs.], [R.], [Colloq.]
    text = re.sub(r"[{}]", "", text)  # {cross references} keep their words
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    if re.search(r"[\\\[\]<>|]|\s--\s*$", text) or len(text) < 2:
        return ""
    return text


# ---------------------------------------------------------------------------------------


def build(rng, count_tokens):
    """The texts, one list per kind, drawn with rng; count_tokens(list of str) -> token counts."""
    corpus = {}
    fits = lambda n: MIN_TOKENS <= n <= MAX_TOKENS  # noqa: E731

    blocks = webster_blocks()
    for kind in ("definition", "quotation", "usage note"):
        candidates = [b for b in blocks if b[1] == kind]
        picked = [candidates[i] for i in rng.permutation(len(candidates))[: COUNTS[kind] * 3]]
        texts = []
        for headword, _, text in picked:
            if kind == "definition" and rng.random() < 0.6:
                text = f"{headword}: {text}"  # a glossary line; the rest are bare senses
            texts.append(text)
        counts = count_tokens(texts)
        corpus[kind] = [t for t, n in zip(texts, counts) if fits(n)][: COUNTS[kind]]
    headwords = sorted({b[0] for b in blocks if re.fullmatch(r"[A-Za-z][A-Za-z' -]+", b[0])})
    picked = [headwords[i] for i in rng.permutation(len(headwords))[: COUNTS["headword"]]]
    corpus["headword"] = [h if rng.random() < 0.5 else h.lower() for h in picked]

    chapters = kjv_chapters()
    verses = [verse for chapter in chapters for verse in chapter]
    corpus["verse"] = [verses[i] for i in rng.choice(len(verses), COUNTS["verse"], replace=False)]
    passages = []
    while len(passages) < COUNTS["passage"]:
        chapter = chapters[rng.integers(len(chapters))]
        target = int(np.exp(rng.uniform(np.log(40), np.log(MAX_TOKENS))))
        start = int(rng.integers(len(chapter)))
        joined = chapter[start]
        for verse in chapter[start + 1:]:
            longer = f"{joined} {verse}"
            length = count_tokens([longer])[0]
            if length > MAX_TOKENS:
                break
            joined = longer
            if length >= target:
                break
        if fits(count_tokens([joined])[0]):
            passages.append(joined)
    corpus["passage"] = passages
    for kind, wanted in COUNTS.items():
        if len(corpus[kind]) < wanted:
            raise SystemExit(f"only {len(corpus[kind])} {kind} texts fit {MIN_TOKENS}-{MAX_TOKENS} tokens, wanted {wanted}")
    return corpus


def histogram(counts, edges=(3, 8, 16, 32, 64, 128, 192, 251)):
    """Lines of a text histogram of token counts."""
    counts = np.asarray(counts)
    lines = []
    for low, high in zip(edges[:-1], edges[1:]):
        n = int(((counts >= low) & (counts < high)).sum())
        lines.append(f"{low:>4}-{high - 1:<4} {n:5d}  {'#' * round(60 * n / len(counts))}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="only print the histogram of the existing file")
    args = parser.parse_args()

    from transformer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(TOKENIZER)
    tokenizer.no_padding()  # tokenizer.json pads and truncates to 128; we count every token
    tokenizer.no_truncation()

    def count_tokens(texts):
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts)]

    if not args.check:
        rng = np.random.default_rng(SEED)
        corpus = build(rng, count_tokens)
        texts = [text for kind in COUNTS for text in corpus[kind]]
        texts = [texts[i] for i in rng.permutation(len(texts))]
        assert all("\n" not in t and t == t.strip() for t in texts)
        args.out.write_text("\n".join(texts) + "\n", encoding="utf-8")
        for kind in COUNTS:
            counts = count_tokens(corpus[kind])
            print(f"{kind:<11} {len(counts):5d} texts, tokens median {int(np.median(counts)):3d}, "
                  f"min {min(counts)}, max {max(counts)}")
    texts = args.out.read_text(encoding="utf-8").splitlines()
    counts = count_tokens(texts)
    print(f"\n{args.out}: {len(texts)} texts, {sum(counts)} tokens; per text median {int(np.median(counts))}, "
          f"mean {np.mean(counts):.1f}, min {min(counts)}, max {max(counts)}")
    print("\n".join(histogram(counts)))


if __name__ == "__main__":
    main()
