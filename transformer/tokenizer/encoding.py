"""The result of tokenizing one text (or pair): `Encoding`, plus truncation and padding.

    ids             token ids                                   [seq] ints
    tokens          the token strings                           [seq]
    type_ids        0 for the first text, 1 for the pair        [seq]
    attention_mask  1 for real tokens, 0 for padding            [seq]
    offsets         (start, end) character span in the ORIGINAL text; (0, 0) for added specials
    word_ids        index of the word each token came from, None for specials and padding
    special_tokens_mask  1 for special tokens added by the post-processor and padding
    overflowing     the Encodings cut off by truncation (each a window of max_length tokens)

Truncation and padding follow the reference (Rust `tokenizers`) exactly, including how pairs
are shortened ("longest_first": the longer one first) and how `stride` overlaps the windows.
"""

_FIELDS = ("ids", "tokens", "type_ids", "attention_mask", "offsets", "word_ids", "special_tokens_mask")


class Encoding:
    __slots__ = _FIELDS + ("overflowing", "sequence_ids")

    def __init__(self, ids=None, tokens=None, type_ids=None, attention_mask=None, offsets=None,
                 word_ids=None, special_tokens_mask=None, overflowing=None, sequence_ids=None):
        self.ids = ids if ids is not None else []
        n = len(self.ids)
        self.tokens = tokens if tokens is not None else []
        self.type_ids = type_ids if type_ids is not None else [0] * n
        self.attention_mask = attention_mask if attention_mask is not None else [1] * n
        self.offsets = offsets if offsets is not None else [(0, 0)] * n
        self.word_ids = word_ids if word_ids is not None else [None] * n
        self.special_tokens_mask = special_tokens_mask if special_tokens_mask is not None else [0] * n
        self.overflowing = overflowing if overflowing is not None else []
        self.sequence_ids = sequence_ids if sequence_ids is not None else [None] * n

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return (f"Encoding(num_tokens={len(self.ids)}, tokens={self.tokens[:8]}"
                f"{'...' if len(self.ids) > 8 else ''}, overflowing={len(self.overflowing)})")

    def _slice(self, start, stop):
        return Encoding(*(getattr(self, f)[start:stop] for f in _FIELDS),
                        sequence_ids=self.sequence_ids[start:stop])

    def copy(self):
        return Encoding(*(list(getattr(self, f)) for f in _FIELDS),
                        overflowing=[o.copy() for o in self.overflowing],
                        sequence_ids=list(self.sequence_ids))

    def truncate(self, max_length, stride=0, direction="right"):
        """Keep `max_length` tokens; the rest become `overflowing` windows that overlap by `stride`.

        >>> e = Encoding(ids=[1, 2, 3, 4, 5], tokens=list("abcde"))
        >>> e.truncate(3, stride=1)
        >>> e.ids, [o.ids for o in e.overflowing]
        ([1, 2, 3], [[3, 4, 5]])
        """
        length = len(self.ids)
        if max_length >= length:
            return
        if max_length == 0:
            moved = self._slice(0, length)
            moved.overflowing = self.overflowing
            self._assign(Encoding())
            self.overflowing = [moved]
            return
        if stride >= max_length:
            raise ValueError(f"stride ({stride}) must be strictly less than max_length ({max_length}); "
                             "note that max_length excludes the special tokens the post-processor adds")
        step = max_length - stride
        windows = []
        if direction == "right":
            for start in range(0, length, step):
                stop = min(start + max_length, length)
                windows.append((start, stop))
                if stop == length:
                    break
        else:
            for last in range(length - 1, -1, -step):
                stop = last + 1
                start = max(0, stop - max_length)
                windows.append((start, stop))
                if start == 0:
                    break
        first = self._slice(*windows[0])
        first.overflowing = [self._slice(start, stop) for start, stop in windows[1:]]
        self._assign(first)

    def _assign(self, other):
        for field in self.__slots__:
            setattr(self, field, getattr(other, field))

    def pad(self, length, pad_id=0, pad_type_id=0, pad_token="[PAD]", direction="right"):
        """Pad (this and every overflowing window) up to `length` tokens.

        >>> e = Encoding(ids=[7, 8], tokens=["a", "b"])
        >>> e.pad(4, pad_id=0, pad_token="[PAD]")
        >>> e.ids, e.attention_mask
        ([7, 8, 0, 0], [1, 1, 0, 0])
        """
        for window in self.overflowing:
            window.pad(length, pad_id, pad_type_id, pad_token, direction)
        missing = length - len(self.ids)
        if missing <= 0:
            return
        fill = {"ids": [pad_id] * missing, "tokens": [pad_token] * missing,
                "type_ids": [pad_type_id] * missing, "attention_mask": [0] * missing,
                "offsets": [(0, 0)] * missing, "word_ids": [None] * missing,
                "special_tokens_mask": [1] * missing, "sequence_ids": [None] * missing}
        for field, values in fill.items():
            if direction == "right":
                setattr(self, field, getattr(self, field) + values)
            else:
                setattr(self, field, values + getattr(self, field))

    def merge_with(self, pair):
        """Append `pair` (the next piece); overflowing windows are combined exactly as the
        reference does: each of our windows with the pair (and with each of its windows), then
        all of us with each of its windows. So a pair truncated on both sides yields nested
        windows, as in Rust `tokenizers`."""
        overflowing = []
        for mine in self.overflowing:
            combined = mine.copy()
            combined.merge_with(pair.copy())
            overflowing.append(combined)
            for theirs in pair.overflowing:
                combined = mine.copy()
                combined.merge_with(theirs.copy())
                overflowing.append(combined)
        for theirs in pair.overflowing:
            combined = self.copy()  # keeps our windows: they pair up with theirs one level down
            combined.merge_with(theirs.copy())
            overflowing.append(combined)
        for field in _FIELDS + ("sequence_ids",):
            setattr(self, field, getattr(self, field) + getattr(pair, field))
        self.overflowing = overflowing

    @staticmethod
    def merge(encodings):
        """Concatenate encodings (with their overflowing windows) into one."""
        if not encodings:
            return Encoding()
        result = encodings[0]
        for other in encodings[1:]:
            result.merge_with(other)
        return result


def truncate_pair(first, second, max_length, strategy="longest_first", stride=0, direction="right"):
    """Shorten `first` (and `second`, if given) so together they fit `max_length` tokens.

    longest_first: take tokens from the longer one until both fit (an odd remainder goes to the
    second); only_first / only_second: take them all from that one.
    """
    if max_length == 0:
        first.truncate(0, stride, direction)
        if second is not None:
            second.truncate(0, stride, direction)
        return
    total = len(first) + (len(second) if second is not None else 0)
    if total <= max_length:
        return
    to_remove = total - max_length
    if strategy == "longest_first":
        if second is None:
            first.truncate(total - to_remove, stride, direction)
            return
        n1, n2 = len(first), len(second)
        swap = n1 > n2
        if swap:
            n1, n2 = n2, n1
        n2 = n1 if n1 > max_length else max(n1, max_length - n1)
        if n1 + n2 > max_length:
            n1 = max_length // 2
            n2 = n1 + max_length % 2
        if swap:
            n1, n2 = n2, n1
        first.truncate(n1, stride, direction)
        second.truncate(n2, stride, direction)
    elif strategy in ("only_first", "only_second"):
        if strategy == "only_second" and second is None:
            raise ValueError("truncation='only_second' needs a pair of texts, but only one was given")
        target = first if strategy == "only_first" else second
        if len(target) <= to_remove:
            raise ValueError(
                f"truncation={strategy!r}: that sequence is too short ({len(target)} tokens) to remove "
                f"the {to_remove} needed to reach max_length={max_length}; use 'longest_first'")
        target.truncate(len(target) - to_remove, stride, direction)
    else:
        raise ValueError(f"unknown truncation strategy {strategy!r}; expected 'longest_first', "
                         "'only_first' or 'only_second'")
