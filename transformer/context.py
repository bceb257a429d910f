"""Why "bank" means something else next to "river" than next to "money": contextual vectors.

A static word embedding (Word2Vec, GloVe, or the first table of this encoder) gives a word one
vector, wherever it appears. An encoder's layers mix every token with the others (attention),
so after each layer the same word carries more of its sentence. This module measures that on a
real model: the cosine similarity of one word's vectors across sentences, from the embedding
table up through every layer.

    >>> from transformer.context import word_similarities, format_word_similarities
    >>> result = word_similarities(["She sat by the river bank.",
    ...                             "He went to the bank to deposit money."], "bank",
    ...                            model, tokenizer)                       # doctest: +SKIP
    >>> round(float(result.static[0, 1]), 3), round(float(result.layers[-1][0, 1]), 3)  # doctest: +SKIP
    (1.0, 0.812)

A similarity means little on its own, so `sense_contrast` gives each claim its controls: the
word in two senses (same-sense pairs against other-sense pairs, every sentence holding the same
token) and an unrelated-word baseline (other words in sentences of their own, `UNRELATED`).

It also gives the attention map of one head (`attention_map`): how much each token draws from
every other, the mixing that makes the vectors contextual.

Words are found by their characters, not by their token strings: a word split into several
word pieces ("embeddings" -> em ##bed ##ding ##s) is every token whose character span (the
tokenizer's offsets) overlaps the word, and its vector is the mean of those pieces' vectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from transformer.sentence import cosine_similarity

# Each demo word in two senses, two sentences each. Every sentence holds the same token (no
# "banks", no "running"), so the rows of the embedding table are identical and whatever tells
# the senses apart is the layers' doing.
SENSES = {
    "bank": {
        "river": ["She sat by the river bank.", "The fisherman sat on the bank of the river."],
        "money": ["He went to the bank to deposit money.", "The bank approved my loan application."],
    },
    "run": {
        "exercise": ["He went for a run.", "She goes for a run every morning."],
        "manage": ["The hotel is run by a family.", "They run a small bakery together."],
    },
}

# Other words, each in a sentence of its own: what two vectors that have nothing to do with
# each other score at each stage. A similarity can only be read next to this baseline.
UNRELATED = [
    ("carrot", "I bought a carrot at the market."),
    ("violin", "He played the violin."),
    ("kitten", "The kitten chased a ball of wool."),
    ("traffic", "Turn left at the next traffic light."),
]


@dataclass
class WordSimilarities:
    """The cosine similarities of one word's vectors across n sentences.

    word        what was searched for (one str, or one per sentence)
    sentences   the n sentences
    spans       [(start, end)] the word's characters in each sentence
    pieces      [[token, ...]] the word pieces that make up the word in each sentence
    static      float32 [n, n]: rows of the word-embedding table (mean over the pieces).
                Context never reaches them, so a word made of the same pieces gets exactly 1.
    layers      float32 [num_layers + 1, n, n]: layers[0] is the embedding output (word +
                position + token type, LayerNorm), layers[k] the output of encoder layer k.
    """

    word: str | list
    sentences: list
    spans: list
    pieces: list
    static: np.ndarray
    layers: np.ndarray

    def pairs(self):
        """[(i, j)] for every pair of sentences i < j, in reading order."""
        n = len(self.sentences)
        return [(i, j) for i in range(n) for j in range(i + 1, n)]

    def stages(self):
        """The names of the stages: ["static", "embed", "layer1", ..., "layerL"]."""
        return ["static", "embed"] + [f"layer{k}" for k in range(1, len(self.layers))]

    def by_stage(self):
        """float32 [num_layers + 2, n, n]: static, then layers[0] (embed), then each layer."""
        return np.concatenate([self.static[None], self.layers])


def find_word(text, word):
    """The (start, end) character span of `word` in `text`, ignoring case.

    A whole-word match wins ("bank" in "the bank of"); if there is none, the first word that
    starts with `word` ("run" finds "running"). Raises ValueError naming the text otherwise.

    >>> find_word("The company is running a promotion", "run")
    (15, 22)
    >>> find_word("She sat by the river bank.", "Bank")
    (21, 25)
    """
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"the word to look for must be a non-empty str, got {word!r}")
    escaped = re.escape(word.strip())
    whole = re.search(rf"(?<!\w){escaped}(?!\w)", text, flags=re.IGNORECASE)
    if whole:
        return whole.span()
    prefix = re.search(rf"(?<!\w){escaped}\w*", text, flags=re.IGNORECASE)
    if prefix:
        return prefix.span()
    raise ValueError(f"the word {word!r} is not in the sentence {text!r}")


def word_token_positions(offsets, span):
    """Which tokens make up the characters span = (start, end): every token whose offsets
    overlap it. offsets: [(start, end)] per token, (0, 0) for special tokens and padding.

    >>> word_token_positions([(0, 0), (0, 2), (3, 5), (5, 9), (0, 0)], (3, 9))   # [CLS] ab cd ##efgh [SEP]
    [2, 3]
    """
    start, end = span
    positions = [i for i, (token_start, token_end) in enumerate(offsets)
                 if token_end > token_start and token_start < end and token_end > start]
    if not positions:
        raise ValueError(f"no token covers the characters {start}..{end}; was the word cut off by truncation?")
    return positions


def word_similarities(sentences, word, model, tokenizer):
    """The same word in several sentences: how alike its vectors are, layer by layer.

    sentences: list of n >= 2 str. word: one str for all sentences, or a list of n str (one
    per sentence, e.g. ["run", "running"]); found by `find_word`. model: an `Encoder`;
    tokenizer: its `Tokenizer`. Returns a `WordSimilarities` with float32 [n, n] matrices.
    """
    sentences = list(sentences)
    if len(sentences) < 2 or not all(isinstance(s, str) for s in sentences):
        raise ValueError(f"give at least two sentences (str) to compare, got {sentences!r}")
    words = [word] * len(sentences) if isinstance(word, str) else list(word)
    if len(words) != len(sentences):
        raise ValueError(f"got {len(words)} words for {len(sentences)} sentences; give one word, or one per sentence")

    word_table = model.params["embeddings"]["word"]  # [vocab, embedding_size]
    spans, pieces, static_vectors, layer_vectors = [], [], [], []
    for sentence, target in zip(sentences, words):
        span = find_word(sentence, target)
        encoding = tokenizer.encode(sentence)
        length = sum(encoding.attention_mask)  # the stored padding of tokenizer.json is cut off
        positions = word_token_positions(encoding.offsets[:length], span)
        output = model([encoding.ids[:length]], output_hidden_states=True)
        hidden_states = np.stack(output.hidden_states)[:, 0]  # -> [num_layers + 1, seq, hidden]
        ids = [encoding.ids[p] for p in positions]
        spans.append(span)
        pieces.append([encoding.tokens[p] for p in positions])
        static_vectors.append(word_table[ids].mean(axis=0))  # [pieces, embedding_size] -> [embedding_size]
        layer_vectors.append(hidden_states[:, positions].mean(axis=1))  # -> [num_layers + 1, hidden]

    static = cosine_similarity(np.stack(static_vectors))  # [n, embedding_size] -> [n, n]
    by_layer = np.stack(layer_vectors, axis=1)  # [num_layers + 1, n, hidden]
    layers = np.stack([cosine_similarity(vectors) for vectors in by_layer])  # [num_layers + 1, n, n]
    return WordSimilarities(word, sentences, spans, pieces, static, layers)


def format_word_similarities(result, decimals=3, baseline=None):
    """A `WordSimilarities` as a text table: one row per sentence pair, one column per stage
    (static table row, embedding output, then each layer). baseline: optional float
    [num_stages], printed as a last row (e.g. `unrelated_baseline`)."""
    word = result.word if isinstance(result.word, str) else " / ".join(result.word)
    lines = [f'"{word}" in {len(result.sentences)} sentences (its word pieces in brackets):']
    for index, (sentence, pieces) in enumerate(zip(result.sentences, result.pieces), start=1):
        lines.append(f"  {index}  {sentence}  [{' '.join(pieces)}]")
    headers = result.stages()
    width = max(decimals + 3, max(len(h) for h in headers))
    stages = result.by_stage()  # [stages, n, n]
    lines.append("cosine similarity of its vectors:")
    lines.append("  pair " + " ".join(h.rjust(width) for h in headers))
    for i, j in result.pairs():
        label = f"{i + 1}-{j + 1}"
        lines.append(f"  {label:<5}" + " ".join(f"{float(v):{width}.{decimals}f}" for v in stages[:, i, j]))
    if baseline is not None:
        lines.append("  unrel" + " ".join(f"{float(v):{width}.{decimals}f}" for v in baseline))
    lines.append("static: the row of the embedding table, the same in every sentence (as Word2Vec/GloVe);")
    lines.append("embed: after adding position vectors; layerK: after encoder layer K (contextual).")
    if baseline is not None:
        lines.append("unrel: the mean over unrelated words in sentences of their own (the baseline).")
    return "\n".join(lines)


# --- controls: same sense, other sense, unrelated words -----------------------------------------


@dataclass
class SenseContrast:
    """One word in several senses, with the pairs a claim about context needs.

    word         the word (the same token in every sentence)
    senses       {sense: [sentences]} as given
    similarities the `WordSimilarities` over the sense sentences, then the unrelated ones
    labels       the sense of each sentence of `similarities`, None for an unrelated one
    same, other, unrelated
                 float32 [num_stages, 3]: (min, mean, max) cosine over the pairs of
                 sentences of one sense / of two senses / (word, unrelated word)
    """

    word: str
    senses: dict
    similarities: WordSimilarities
    labels: list
    same: np.ndarray
    other: np.ndarray
    unrelated: np.ndarray

    def stages(self):
        return self.similarities.stages()

    def apart(self):
        """bool [num_stages]: every same-sense pair more alike than every other-sense pair."""
        return self.same[:, 0] > self.other[:, 2]


def _pair_summary(by_stage, pairs):
    """by_stage float32 [stages, n, n], pairs [(i, j)] -> float32 [stages, 3] of min, mean, max."""
    values = np.stack([by_stage[:, i, j] for i, j in pairs], axis=1)  # [stages, pairs]
    return np.stack([values.min(axis=1), values.mean(axis=1), values.max(axis=1)], axis=1).astype(np.float32)


def sense_contrast(senses, word, model, tokenizer, unrelated=UNRELATED):
    """How far context separates the senses of `word`, with its controls, stage by stage.

    senses: {sense: [sentences]} with at least two senses and two sentences in one of them;
    word: the word to follow (found by `find_word`); unrelated: [(other word, its sentence)].
    Returns a `SenseContrast`.
    """
    if len(senses) < 2:
        raise ValueError(f"give at least two senses to contrast, got {list(senses)}")
    labels = [sense for sense, sentences in senses.items() for _ in sentences]
    if len(labels) == len(set(labels)):
        raise ValueError("give at least two sentences of one sense, so that there is a same-sense pair")
    sentences = [sentence for group in senses.values() for sentence in group]
    words = [word] * len(sentences) + [other for other, _ in unrelated]
    result = word_similarities(sentences + [text for _, text in unrelated], words, model, tokenizer)
    labels = labels + [None] * len(unrelated)
    by_stage = result.by_stage()
    n = len(sentences)
    same = [(i, j) for i, j in result.pairs() if j < n and labels[i] == labels[j]]
    other = [(i, j) for i, j in result.pairs() if j < n and labels[i] != labels[j]]
    baseline = [(i, j) for i in range(n) for j in range(n, len(labels))]
    return SenseContrast(word, dict(senses), result, labels, _pair_summary(by_stage, same),
                         _pair_summary(by_stage, other),
                         _pair_summary(by_stage, baseline) if unrelated else None)


def unrelated_baseline(sentences, word, model, tokenizer, unrelated=UNRELATED):
    """float32 [num_stages]: the mean cosine between `word` in each of `sentences` and the
    unrelated words in theirs, stage by stage (see `UNRELATED`)."""
    sentences = list(sentences)
    words = [word] * len(sentences) if isinstance(word, str) else list(word)
    result = word_similarities(sentences + [text for _, text in unrelated], words + [w for w, _ in unrelated],
                               model, tokenizer)
    n = len(sentences)
    pairs = [(i, j) for i in range(n) for j in range(n, n + len(unrelated))]
    return _pair_summary(result.by_stage(), pairs)[:, 1]


def format_sense_contrast(contrast, decimals=3):
    """A `SenseContrast` as a text table: one row per stage, one column per kind of pair."""
    lines = [f'"{contrast.word}" in {len(contrast.senses)} senses (its word pieces in brackets):']
    result = contrast.similarities
    for index, label in enumerate(contrast.labels):
        if label is not None:
            lines.append(f"  {label:<9} {result.sentences[index]}  [{' '.join(result.pieces[index])}]")
    if contrast.unrelated is not None:
        others = [w for w, label in zip(result.word, contrast.labels) if label is None]
        lines.append(f"  unrelated {', '.join(others)}: other words, each in a sentence of its own")

    def cell(row):
        low, mean, high = (f"{float(v):.{decimals}f}" for v in row)
        return f"{mean} ({low}..{high})"

    kinds = [("same sense", contrast.same), ("other sense", contrast.other)]
    if contrast.unrelated is not None:
        kinds.append(("unrelated word", contrast.unrelated))
    width = 2 + max(len(cell(row)) for _, values in kinds for row in values)
    lines.append("cosine similarity of its vectors: mean (min..max) over the pairs")
    stage_width = max(7, max(len(name) + 1 for name in contrast.stages()))  # "layer12 ": past 9 layers
    lines.append("  " + "stage".ljust(stage_width) + "".join(name.ljust(width) for name, _ in kinds) + "apart")
    for stage, name in enumerate(contrast.stages()):
        cells = "".join(cell(values[stage]).ljust(width) for _, values in kinds)
        lines.append(f"  {name:<{stage_width}}{cells}{'yes' if contrast.apart()[stage] else 'no'}")
    lines.append("apart: every same-sense pair is more alike than every other-sense pair.")
    return "\n".join(lines)


def attention_map(text, model, tokenizer, layer, head=None):
    """How much each token attends to each other token in one layer: (tokens, weights).

    layer: 1 .. num_layers. head: 1 .. num_heads, or None for the mean over all heads.
    Returns the token strings [seq] and float32 weights [seq, seq], row i = how token i's new
    vector is mixed from every token's value vector (each row sums to 1).
    """
    config = model.config
    if not isinstance(layer, (int, np.integer)) or not 1 <= layer <= config.num_hidden_layers:
        raise ValueError(f"layer must be an integer in 1..{config.num_hidden_layers}, got {layer!r}")
    if head is not None and (not isinstance(head, (int, np.integer)) or not 1 <= head <= config.num_attention_heads):
        raise ValueError(f"head must be an integer in 1..{config.num_attention_heads} (or None for the mean), got {head!r}")
    encoding = tokenizer.encode(text)
    length = sum(encoding.attention_mask)
    output = model([encoding.ids[:length]], output_attentions=True)
    probabilities = output.attentions[layer - 1][0]  # [heads, seq, seq]
    weights = probabilities.mean(axis=0) if head is None else probabilities[head - 1]  # -> [seq, seq]
    return encoding.tokens[:length], weights.astype(np.float32)


def format_attention_map(tokens, weights, decimals=2):
    """An attention map as a text table: one row per query token, one column per key token."""
    width = max(decimals + 3, max(len(t) for t in tokens))
    lines = [" " * width + "  " + " ".join(t.rjust(width) for t in tokens)]
    for token, row in zip(tokens, weights):
        lines.append(token.rjust(width) + "  " + " ".join(f"{float(v):{width}.{decimals}f}" for v in row))
    return "\n".join(lines)
