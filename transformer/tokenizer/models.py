"""Stage 3, models: split one word into vocabulary tokens.

`model.tokenize(word) -> [(id, token, start, end), ...]` with character spans inside the word.

* WordPiece (BERT): greedy longest match from the left; pieces after the first carry "##".
* BPE (GPT-2, RoBERTa): start from single characters and apply the learned merges, lowest
  rank first, until none applies.

Both cache the tokens of every word they have seen: natural text repeats words constantly,
so most words cost one dict lookup.
"""

import heapq
import re

from .schema import U32, USIZE, Fields, show



class MissingUnkError(ValueError):
    """A word needs the unknown token and the vocabulary has none: the reference fails at
    encode time too. The Tokenizer adds the file the vocabulary came from."""


_CACHE_LIMIT = 200_000  # words; the cache is cleared when it grows past this
_CACHED_WORD_LIMIT = 256  # characters: longer words are not cached


def _cached(cache, word, tokenize):
    """tokenize(word), remembered in `cache` (a dict cleared when it outgrows _CACHE_LIMIT)
    when the word is short: like the reference (words under 256 bytes), a long word, such as
    a whole text to a model without a pre-tokenizer, is not kept."""
    tokens = cache.get(word)
    if tokens is None:
        tokens = tokenize(word)
        if len(word) < _CACHED_WORD_LIMIT:
            if len(cache) > _CACHE_LIMIT:
                cache.clear()
            cache[word] = tokens
    return tokens


class WordPiece:
    """Greedy longest-match-first subword splitting.

    >>> wp = WordPiece({"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3})
    >>> [t for _, t, _, _ in wp.tokenize("unaffable")]
    ['un', '##aff', '##able']
    >>> wp.tokenize("xyz")  # no piece matches: the whole word is unknown
    [(0, '[UNK]', 0, 3)]
    """

    def __init__(self, vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                 max_input_chars_per_word=100):
        self.vocab = dict(vocab)
        self.unk_token = unk_token
        self.continuing_subword_prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self.id_to_token_map = {i: t for t, i in self.vocab.items()}
        # No vocabulary entry is longer than this, so longer candidates need not be tried
        # (counting the "##" of continuation pieces too: a bound, found at C speed).
        self._longest = max(map(len, self.vocab), default=0)
        self._cache = {}

    def _unk(self, word):
        if self.unk_token not in self.vocab:
            raise MissingUnkError(f"WordPiece: the unk_token {self.unk_token!r} is not in the vocabulary (model.vocab), "
                                  f"and the word {word!r:.40} needs it")
        return [(self.vocab[self.unk_token], self.unk_token, 0, len(word))]

    def tokenize(self, word):
        return _cached(self._cache, word, self._tokenize)

    def _tokenize(self, word):
        if len(word) > self.max_input_chars_per_word:
            return self._unk(word)
        vocab, prefix, tokens = self.vocab, self.continuing_subword_prefix, []
        start, length = 0, len(word)
        while start < length:
            end = min(length, start + self._longest)
            while end > start:
                piece = word[start:end] if start == 0 else prefix + word[start:end]
                token_id = vocab.get(piece)
                if token_id is not None:
                    tokens.append((token_id, piece, start, end))
                    break
                end -= 1
            else:
                return self._unk(word)
            start = end
        return tokens

    def token_to_id(self, token):
        return self.vocab.get(token)

    def id_to_token(self, token_id):
        return self.id_to_token_map.get(token_id)


class BPE:
    """Byte-pair encoding: merge adjacent symbols by rank, lowest rank (earliest merge) first.

    `merges` is a list of pairs in rank order; the merged token must be in `vocab`.

    >>> bpe = BPE({"l": 0, "o": 1, "w": 2, "lo": 3, "low": 4}, [("l", "o"), ("lo", "w")])
    >>> [t for _, t, _, _ in bpe.tokenize("lowl")]
    ['low', 'l']
    """

    def __init__(self, vocab, merges, unk_token=None, continuing_subword_prefix=None,
                 end_of_word_suffix=None, fuse_unk=False, byte_fallback=False, ignore_merges=False,
                 dropout=None):
        if dropout:
            raise ValueError(f"BPE dropout={dropout} is random and not supported (tokenization "
                             "must be deterministic); set it to null")
        self.vocab = dict(vocab)
        self.unk_token = unk_token
        self.continuing_subword_prefix = continuing_subword_prefix or ""
        self.end_of_word_suffix = end_of_word_suffix or ""
        self.fuse_unk = fuse_unk
        self.byte_fallback = byte_fallback
        self.ignore_merges = ignore_merges
        self.id_to_token_map = {i: t for t, i in self.vocab.items()}
        # (left id, right id) -> (rank, merged id), as the reference stores them. The merged
        # token is left + right without its first len(prefix) bytes (the reference cuts them
        # whether or not right starts with the prefix); a later duplicate pair wins.
        prefix_bytes = len(self.continuing_subword_prefix.encode("utf-8"))
        vocab, table = self.vocab, {}
        for rank, (left, right) in enumerate(merges):
            if prefix_bytes:
                right_bytes = right.encode("utf-8")
                merged = (left.encode("utf-8") + right_bytes[prefix_bytes:]).decode("utf-8", "replace") \
                    if len(right_bytes) >= prefix_bytes else None
            else:
                merged = left + right
            left_id, right_id, merged_id = vocab.get(left), vocab.get(right), vocab.get(merged)
            if left_id is None or right_id is None or merged_id is None:
                raise ValueError(self._bad_merge(rank, left, right, merged))
            table[(left_id, right_id)] = (rank, merged_id)
        self.merges = table
        self._joinable = None
        self._cache = {}

    def _bad_merge(self, rank, left, right, merged):
        for name, token in (("left", left), ("right", right)):
            if token not in self.vocab:
                return f"merge #{rank} ({left!r} {right!r}): its {name} token {token!r} is not in the vocabulary"
        if merged is None:
            return (f"merge #{rank} ({left!r} {right!r}): the right token is shorter than the "
                    f"continuing_subword_prefix {self.continuing_subword_prefix!r}")
        return f"merge #{rank} ({left!r} {right!r}): the merged token {merged!r} is not in the vocabulary"

    def tokenize(self, word):
        if len(word) >= _CACHED_WORD_LIMIT and self.unk_token is not None and not (
                self.continuing_subword_prefix or self.end_of_word_suffix or self.ignore_merges):
            return self._tokenize_in_pieces(word)
        return _cached(self._cache, word, self._tokenize)

    def _tokenize_in_pieces(self, word):
        """A long word (a whole text, to a model without a pre-tokenizer) cut where no merge can
        ever join across: between two characters a, b of the vocabulary such that no merge has
        a left part ending in a and a right part starting with b. Each piece is tokenized (and
        cached) on its own; the tokens are those of the whole word. (With an unk token no
        character is dropped, so the pieces' spans just add up.)"""
        joinable, vocab, cache = self._joinable_pairs(), self.vocab, self._cache
        tokens, start = [], 0
        for match in self._cut_candidates.finditer(word, 1):
            position = match.start()
            a, b = word[position - 1], word[position]
            if (a, b) in joinable or a not in vocab or b not in vocab:
                continue
            piece = _cached(cache, word[start:position], self._tokenize)
            tokens.extend((i, t, s + start, e + start) for i, t, s, e in piece)
            start = position
        piece = _cached(cache, word[start:], self._tokenize)
        tokens.extend((i, t, s + start, e + start) for i, t, s, e in piece)
        return tokens

    def _joinable_pairs(self):
        """{(last character of a merge's left part, first character of its right part)}; also
        sets _cut_candidates, a regex of the word-start markers (like '▁': many tokens begin
        with them, few merges join anything in front of them), the places worth a cut."""
        if self._joinable is None:
            id_to_token = self.id_to_token_map
            self._joinable = {(id_to_token[left][-1], id_to_token[right][0]) for left, right in self.merges}
            before, starting = {}, {}
            for _, second in self._joinable:
                before[second] = before.get(second, 0) + 1
            for token in self.vocab:
                starting[token[:1]] = starting.get(token[:1], 0) + 1
            # word-start markers: many tokens begin with them, few merges join anything before them
            markers = sorted(c for c, n in starting.items() if c and n >= 1000 and before.get(c, 0) < 16)
            self._cut_candidates = re.compile("[" + "".join(re.escape(c) for c in markers) + "]" if markers else "(?!)")
        return self._joinable

    def _tokenize(self, word):
        if not word:
            return []
        if self.ignore_merges and word in self.vocab:
            return [(self.vocab[word], word, 0, len(word))]
        ids, starts, ends = self._initial_symbols(word)
        if len(ids) > 1:
            ids, starts, ends = self._merge(ids, starts, ends)
        if not word.isascii():
            starts, ends = _bytes_to_chars(word, starts, ends)
        id_to_token = self.id_to_token_map
        return [(i, id_to_token[i], s, e) for i, s, e in zip(ids, starts, ends)]

    def _initial_symbols(self, word):
        """One symbol per character (with prefix/suffix), unknown ones -> bytes or unk.

        Spans are in UTF-8 bytes, counted as the reference counts them: each symbol adds its
        length to a running offset, so a character that is dropped (unknown, and no unk
        token) shifts the spans after it; byte-fallback pieces count one byte each; an unk
        symbol is written when the next known character comes (fused unks grow until then).
        """
        vocab, prefix, suffix = self.vocab, self.continuing_subword_prefix, self.end_of_word_suffix
        ids, starts, ends = [], [], []
        offset = 0
        pending = None  # [unk id, length in bytes] not written yet
        last = len(word) - 1
        ascii_word = word.isascii()
        for position, char in enumerate(word):
            piece = char
            if position > 0 and prefix:
                piece = prefix + piece
            if position == last and suffix:
                piece = piece + suffix
            length = 1 if ascii_word else len(char.encode("utf-8"))
            token_id = vocab.get(piece)
            if token_id is not None:
                if pending is not None:
                    ids.append(pending[0]), starts.append(offset), ends.append(offset + pending[1])
                    offset += pending[1]
                    pending = None
                ids.append(token_id), starts.append(offset), ends.append(offset + length)
                offset += length
                continue
            if self.byte_fallback:
                byte_ids = [vocab.get(f"<0x{b:02X}>") for b in piece.encode("utf-8")]
                if None not in byte_ids:
                    for byte_id in byte_ids:
                        ids.append(byte_id), starts.append(offset), ends.append(offset + 1)
                        offset += 1
                    continue
            if self.unk_token is None:
                continue  # the reference drops characters it cannot represent
            unk_id = vocab.get(self.unk_token)
            if unk_id is None:
                raise MissingUnkError(f"BPE: the unk_token {self.unk_token!r} is not in the vocabulary (model.vocab), "
                                      f"and {piece!r:.40} needs it")
            if pending is not None and self.fuse_unk:
                pending[1] += length
                continue
            if pending is not None:
                ids.append(pending[0]), starts.append(offset), ends.append(offset + pending[1])
                offset += pending[1]
            pending = [unk_id, length]
        if pending is not None:
            ids.append(pending[0]), starts.append(offset), ends.append(offset + pending[1])
        return ids, starts, ends

    def _merge(self, ids, starts, ends):
        """Apply merges exactly like the reference: a heap of (rank, position) candidates,
        each checked for staleness when popped; symbols form a linked list."""
        merges = self.merges
        count = len(ids)
        next_ = list(range(1, count + 1))
        prev = list(range(-1, count - 1))
        alive = [True] * count
        heap = []
        for position in range(count - 1):
            merge = merges.get((ids[position], ids[position + 1]))
            if merge is not None:
                heap.append((merge[0], position, merge[1]))
        heapq.heapify(heap)
        while heap:
            _rank, position, new_id = heapq.heappop(heap)
            if not alive[position] or next_[position] >= count:
                continue
            right = next_[position]
            current = merges.get((ids[position], ids[right]))
            if current is None or current[1] != new_id:
                continue  # stale: the pair changed since this candidate was pushed
            ids[position] = new_id
            ends[position] = ends[right]
            alive[right] = False
            next_[position] = next_[right]
            if next_[right] < count:
                prev[next_[right]] = position
            if prev[position] >= 0:
                merge = merges.get((ids[prev[position]], new_id))
                if merge is not None:
                    heapq.heappush(heap, (merge[0], prev[position], merge[1]))
            if next_[position] < count:
                merge = merges.get((new_id, ids[next_[position]]))
                if merge is not None:
                    heapq.heappush(heap, (merge[0], position, merge[1]))
        keep = [i for i in range(count) if alive[i]]
        return [ids[i] for i in keep], [starts[i] for i in keep], [ends[i] for i in keep]

    def token_to_id(self, token):
        return self.vocab.get(token)

    def id_to_token(self, token_id):
        return self.id_to_token_map.get(token_id)


class Unigram:
    """SentencePiece's unigram model: the split of a word whose pieces' log-probabilities sum
    highest (Viterbi over every way to cover the word with vocabulary pieces).

    `pieces` is the vocabulary as [(piece, score), ...] (the id is the position). A character
    no piece covers gets the unk id with score min(scores) - 10; neighbouring unknowns fuse
    into one token, whose text is the original characters (or its UTF-8 bytes as <0xXX>
    pieces with byte_fallback).

    >>> model = Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("ab", -1.5), ("c", -3.0)], unk_id=0)
    >>> [t for _, t, _, _ in model.tokenize("abcab")]
    ['ab', 'c', 'ab']
    >>> model.tokenize("xyb")
    [(0, 'xy', 0, 2), (2, 'b', 2, 3)]
    """

    UNK_PENALTY = 10.0

    def __init__(self, pieces, unk_id=None, byte_fallback=False):
        self.pieces = [(piece, float(score)) for piece, score in pieces]
        if unk_id is not None and not 0 <= unk_id < len(self.pieces):
            raise ValueError(f"unk_id {unk_id} is not the index of a piece (there are {len(self.pieces)})")
        self.unk_id = unk_id
        self.byte_fallback = byte_fallback
        # a repeated piece keeps its last id, as in the reference
        self.vocab = {piece: index for index, (piece, _) in enumerate(self.pieces)}
        self.scores = {piece: self.pieces[index][1] for piece, index in self.vocab.items()}
        self.min_score = min((score for _, score in self.pieces), default=float("inf"))
        self._prefixes = None  # every proper prefix of a piece, built on first use
        self._longest = max((len(piece) for piece in self.vocab), default=0)
        self._cache = {}

    def tokenize(self, word):
        return _cached(self._cache, word, self._tokenize)

    def _proper_prefixes(self):
        if self._prefixes is None:
            self._prefixes = {piece[:end] for piece in self.vocab for end in range(1, len(piece))}
        return self._prefixes

    def _tokenize(self, word):
        if not word:
            return []
        spans = self._best_path(word)
        tokens = []
        for start, end, is_unk in spans:
            text = word[start:end]
            token_id = self.vocab.get(text)
            if token_id is not None:
                tokens.append((token_id, text, start, end))
                continue
            if self.byte_fallback:
                byte_ids = [self.vocab.get(f"<0x{b:02X}>") for b in text.encode("utf-8")]
                if None not in byte_ids:
                    tokens.extend((i, f"<0x{b:02X}>", start, end) for i, b in zip(byte_ids, text.encode("utf-8")))
                    continue
            if self.unk_id is None:
                raise MissingUnkError(f"Unigram: {text!r:.40} is not in the vocabulary (model.vocab) and the model "
                                      "has no unk_id")
            tokens.append((self.unk_id, text, start, end))
        return tokens

    def _best_path(self, word):
        """Viterbi: [(start, end, is_unk), ...] covering `word`, unknowns fused."""
        scores, prefixes, longest = self.scores, self._proper_prefixes(), self._longest
        unk_score = self.min_score - self.UNK_PENALTY
        length = len(word)
        best = [0.0] * (length + 1)
        back = [-1] * (length + 1)  # where the best path to here starts its last piece; -1: none yet
        unknown = [False] * (length + 1)
        for start in range(length):
            if start and back[start] < 0:
                continue  # unreachable (cannot happen: every character has a piece or the unk)
            here = best[start]
            single = False
            for end in range(start + 1, min(length, start + longest) + 1):
                piece = word[start:end]
                score = scores.get(piece)
                if score is not None:
                    candidate = here + score
                    if back[end] < 0 or candidate > best[end]:
                        best[end], back[end], unknown[end] = candidate, start, False
                    if end == start + 1:
                        single = True
                if piece not in prefixes:
                    break
            if not single:
                if self.unk_id is None:
                    raise MissingUnkError(f"Unigram: {word[start]!r} is not in the vocabulary (model.vocab) and the "
                                          "model has no unk_id")
                end = start + 1
                candidate = here + unk_score
                if back[end] < 0 or candidate > best[end]:
                    best[end], back[end], unknown[end] = candidate, start, True
        spans, end = [], length
        while end > 0:
            start = back[end]
            if unknown[end] and spans and spans[-1][2]:
                spans[-1] = (start, spans[-1][1], True)  # fuse with the unknown after it
            else:
                spans.append((start, end, unknown[end]))
            end = start
        spans.reverse()
        return spans

    def token_to_id(self, token):
        return self.vocab.get(token)

    def id_to_token(self, token_id):
        return self.pieces[token_id][0] if 0 <= token_id < len(self.pieces) else None


class WordLevel:
    """A whole word is one token (or the unk token).

    >>> WordLevel({"[UNK]": 0, "hello": 1}).tokenize("hello"), WordLevel({"[UNK]": 0}).tokenize("bye")
    ([(1, 'hello', 0, 5)], [(0, '[UNK]', 0, 3)])
    """

    def __init__(self, vocab, unk_token="[UNK]"):
        self.vocab = dict(vocab)
        self.unk_token = unk_token
        self.id_to_token_map = {i: t for t, i in self.vocab.items()}

    def tokenize(self, word):
        token_id = self.vocab.get(word)
        if token_id is not None:
            return [(token_id, word, 0, len(word))]
        if self.unk_token not in self.vocab:
            raise MissingUnkError(f"WordLevel: the unk_token {self.unk_token!r} is not in the vocabulary "
                                  f"(model.vocab), and the word {word!r:.40} needs it")
        return [(self.vocab[self.unk_token], self.unk_token, 0, len(word))]

    def token_to_id(self, token):
        return self.vocab.get(token)

    def id_to_token(self, token_id):
        return self.id_to_token_map.get(token_id)


def _bytes_to_chars(word, starts, ends):
    """Spans in UTF-8 bytes of `word` -> spans in characters (a span starts at the character
    holding its first byte and ends after the one holding its last byte)."""
    char_at = [index for index, char in enumerate(word) for _ in range(len(char.encode("utf-8")))]
    size = len(char_at)
    return ([char_at[s] if s < size else len(word) for s in starts],
            [char_at[min(e, size) - 1] + 1 if e > 0 else 0 for e in ends])


def from_config(config, where="model"):
    """A tokenizer.json "model" object -> WordPiece, BPE or WordLevel, its fields read with the
    reference's types (see schema.py)."""
    fields = Fields(config, where)
    kind = fields.string("type", "")
    if not fields.has("type"):  # old files omit the type: guess from the fields, as the reference does
        kind = ("BPE" if "merges" in config else "WordPiece" if "continuing_subword_prefix" in config
                else "WordLevel" if "unk_token" in config else "Unigram" if isinstance(config.get("vocab"), list)
                else None)
        if kind is None:
            raise ValueError(f"{where} has no field 'type'; expected one of {', '.join(_KINDS)}")
    if kind not in _KINDS:
        raise ValueError(f"{where}.type {kind!r} is unsupported; supported: {', '.join(_KINDS)}")
    if kind == "WordPiece":
        unk_token = fields.string("unk_token")
        prefix = fields.string("continuing_subword_prefix")
        longest = fields.uint("max_input_chars_per_word", limit=USIZE)
        return WordPiece(vocab_of(fields), unk_token, prefix, longest)
    if kind == "WordLevel":
        unk_token = fields.string("unk_token")
        return WordLevel(vocab_of(fields), unk_token)
    if kind == "Unigram":
        pieces = pieces_of(fields)
        unk_id = fields.uint("unk_id", None, limit=USIZE)
        if unk_id is not None and unk_id >= len(pieces):
            raise ValueError(f"{where}.unk_id is {unk_id}; expected the index of a piece (there are {len(pieces)})")
        return Unigram(pieces, unk_id, bool(fields.boolean("byte_fallback", False)))
    dropout = fields.number("dropout", None)
    if dropout is not None and not 0.0 <= dropout <= 1.0:
        raise ValueError(f"{where}.dropout is {dropout}; expected a probability from 0 to 1 (or null)")
    if dropout:
        raise ValueError(f"{where}.dropout is {dropout}: random merge dropout is not supported (tokenization "
                         "must be deterministic); expected null or 0")
    options = dict(unk_token=fields.string("unk_token", None),
                   continuing_subword_prefix=fields.string("continuing_subword_prefix", None),
                   end_of_word_suffix=fields.string("end_of_word_suffix", None),
                   fuse_unk=bool(fields.boolean("fuse_unk", None)),
                   byte_fallback=bool(fields.boolean("byte_fallback", None)),
                   ignore_merges=bool(fields.boolean("ignore_merges", None)))
    vocab = vocab_of(fields)
    merges = merges_of(fields)
    try:
        return BPE(vocab, merges, dropout=dropout, **options)
    except ValueError as error:
        raise ValueError(f"{where}.merges: {error}") from None


_KINDS = ("BPE", "WordPiece", "WordLevel", "Unigram")


def vocab_of(fields):
    """fields.vocab, an object token -> id: every id an integer from 0 to 2**32 - 1, and no
    id given twice (the reference would decode such an id to either token)."""
    vocab = fields.object("vocab")
    seen = {}
    for token, token_id in vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < U32:
            raise ValueError(f"{fields.path('vocab')}[{token!r}] is {show(token_id)}; "
                             f"expected an integer id from 0 to {U32 - 1}")
        other = seen.setdefault(token_id, token)
        if other != token:
            raise ValueError(f"{fields.path('vocab')} gives the id {token_id} to both {other!r} and {token!r}; "
                             "expected one token per id")
    return vocab


def pieces_of(fields):
    """fields.vocab of a Unigram model: a list of [piece, score] pairs (score a finite number)."""
    pieces = fields.array("vocab")
    where = fields.path("vocab")
    result = []
    for index, item in enumerate(pieces):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (int, float)) and not isinstance(item[1], bool)):
            raise ValueError(f"{where}[{index}] is {show(item)}; expected a [piece, score] pair")
        if item[1] != item[1] or item[1] in (float("inf"), float("-inf")):
            raise ValueError(f"{where}[{index}] has the score {item[1]}; expected a finite number")
        result.append((item[0], item[1]))
    return result


def merges_of(fields):
    """fields.merges: a list of [left, right] pairs, or of "left right" strings (older files),
    not a mixture -> [(left, right), ...]."""
    merges = fields.array("merges")
    where = fields.path("merges")
    as_strings = bool(merges) and isinstance(merges[0], str)
    if as_strings:
        pairs = [merge.split(" ") if type(merge) is str else None for merge in merges]
    else:
        pairs = merges
    # one fast pass to find a bad entry; the message is written only then
    for rank, pair in enumerate(pairs):
        if not (type(pair) is list and len(pair) == 2 and type(pair[0]) is str and type(pair[1]) is str):
            merge = merges[rank]
            if as_strings and isinstance(merge, str):
                raise ValueError(f"{where}[{rank}] is {show(merge)}; expected two tokens separated by one space")
            expected = 'a "left right" string' if as_strings else "a [left, right] pair of strings"
            raise ValueError(f"{where}[{rank}] is {show(merge)}; expected {expected} like the first merge")
    return pairs
