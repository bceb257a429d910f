"""Train a byte-level BPE vocabulary, for learners: the algorithm in a few dozen lines.

    >>> vocab, merges = train_bpe(["low lower lowest", "new newer newest"] * 10, vocab_size=262)
    >>> merges[:3]
    [('w', 'e'), ('l', 'o'), ('n', 'e')]
    >>> bpe_tokenizer(vocab, merges).encode("lowest").tokens
    ['lowe', 'st']

1. Split each text into words with GPT-2's pattern and write them as byte characters, so the
   alphabet is the 256 byte values (nothing is ever unknown).
2. Count every adjacent pair of symbols over all words (weighted by how often each word occurs).
3. Merge the most frequent pair everywhere into one new symbol; record it as the next merge.
4. Repeat until the vocabulary has `vocab_size` entries.

`save_bpe(vocab, merges, directory)` writes vocab.json + merges.txt, which both
`Tokenizer.from_pretrained(directory)` and Rust `tokenizers` load and apply identically.
"""

import json
from collections import Counter
from pathlib import Path

from . import decoders, models, post_processors, pre_tokenizers


def train_bpe(texts, vocab_size):
    """Texts -> (vocab {token: id}, merges [(left, right), ...] in merge order).

    Ties between equally frequent pairs go to the pair that sorts first, so training is
    deterministic.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str, got a single str (wrap it in a list)")
    alphabet = [pre_tokenizers.BYTES_TO_CHARS[b] for b in range(256)]
    if vocab_size < len(alphabet):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the 256 byte symbols it must contain")
    splitter = pre_tokenizers.ByteLevel(add_prefix_space=False)
    word_counts = Counter()
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}; expected str")
        word_counts.update(word for word, _ in splitter.split(text, 0))

    words = {word: list(word) for word in word_counts}  # word -> its current symbols
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    merges = []
    while len(vocab) < vocab_size:
        pair_counts = Counter()
        for word, symbols in words.items():
            count = word_counts[word]
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break  # every word is a single symbol: nothing left to merge
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merged = best[0] + best[1]
        merges.append(best)
        if merged not in vocab:
            vocab[merged] = len(vocab)
        for symbols in words.values():
            _merge_in_place(symbols, best, merged)
    return vocab, merges


def _merge_in_place(symbols, pair, merged):
    """['l', 'o', 'w'], ('l', 'o') -> ['lo', 'w'] (left to right, non-overlapping)."""
    i = 0
    while i < len(symbols) - 1:
        if symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            symbols[i:i + 2] = [merged]
        i += 1


def bpe_tokenizer(vocab, merges):
    """A GPT-2-style byte-level Tokenizer from trained vocab + merges."""
    from .tokenizer import Tokenizer

    return Tokenizer(models.BPE(vocab, merges), None, pre_tokenizers.ByteLevel(add_prefix_space=False),
                     post_processors.ByteLevel(trim_offsets=False), decoders.ByteLevel())


def save_bpe(vocab, merges, directory):
    """Write vocab.json + merges.txt (the GPT-2 file formats) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory
