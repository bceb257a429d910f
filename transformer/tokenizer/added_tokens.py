"""Added and special tokens ([CLS], <mask>, ...) found inside the raw text.

Before normalizing, the text is cut at every added token, so "[MASK]" in a sentence becomes
the mask id instead of being split into "[", "mask", "]". Tokens with `normalized=False` are
matched in the raw text; those with `normalized=True` in the normalized text. The longest token
wins among those starting at the leftmost position (the reference uses Aho-Corasick,
leftmost-longest; an alternation sorted longest-first does the same).

Options, as in tokenizer.json: `single_word` (only when not inside a word), `lstrip` / `rstrip`
(also swallow the whitespace on that side), `special` (dropped by decode(skip_special_tokens)).

    >>> vocab = AddedVocabulary([AddedToken("[MASK]", 103, special=True)])
    >>> vocab.split_raw("Paris is [MASK].")
    [(0, 9, None), (9, 15, 103), (15, 16, None)]
"""

import re
from dataclasses import dataclass

from .unicode import LazyRegex, char_class

_WORD_CHAR = LazyRegex(lambda: f"[{char_class('RUST_WORD')}]")
_TRAILING_SPACE = LazyRegex(lambda: f"[{char_class('WHITESPACE')}]*\\Z")
_LEADING_SPACE = LazyRegex(lambda: f"[{char_class('WHITESPACE')}]*")


@dataclass
class AddedToken:
    content: str
    id: int
    special: bool = False
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = None  # None: the reference's default, not special

    def __post_init__(self):
        if self.normalized is None:
            self.normalized = not self.special


class AddedVocabulary:
    def __init__(self, tokens, normalizer=None, special=None):
        self.tokens = list(tokens)
        self.by_content = {t.content: t for t in self.tokens}
        self.by_id = {t.id: t for t in self.tokens}
        # contents decode(skip_special_tokens) drops (a token listed twice, once as special,
        # stays special, as in the reference)
        self.special = set(special) if special is not None else {t.content for t in self.tokens if t.special}
        raw = [t for t in self.tokens if not t.normalized]
        normalized = [t for t in self.tokens if t.normalized]
        self._raw = self._matcher({t.content: t for t in raw})
        # normalized tokens are matched by their normalized form, which is also what decode
        # writes for them (the reference's decode reads its normalized cache)
        forms = {t.id: normalizer.normalize_str(t.content) if normalizer else t.content for t in normalized}
        self._normalized = self._matcher({forms[t.id]: t for t in normalized})
        self.decoded = {t.id: forms.get(t.id, t.content) for t in self.tokens}

    @staticmethod
    def _matcher(by_text):
        by_text = {text: token for text, token in by_text.items() if text}
        if not by_text:
            return None
        alternation = "|".join(re.escape(text) for text in sorted(by_text, key=len, reverse=True))
        return re.compile(alternation), by_text

    @property
    def prefix_safe(self):
        """No added token can straddle a cut made just before a space that follows a letter:
        none holds a space, and none that swallows the spaces after it ends with a letter."""
        for token in self.tokens:
            if " " in token.content or (token.rstrip and token.content[-1:].isalpha()):
                return False
        normalized = self._normalized[1] if self._normalized else {}
        return not any(" " in text for text in normalized)

    def split_raw(self, text):
        """Cut the raw text at added tokens: [(start, end, token_id or None), ...]."""
        return self._split(text, self._raw)

    def split_normalized(self, text):
        return self._split(text, self._normalized)

    def _split(self, text, matcher):
        if matcher is None or not text:
            return [(0, len(text), None)]
        pattern, by_text = matcher
        pieces, last = [], 0
        for match in pattern.finditer(text):
            start, stop = match.span()
            token = by_text[match.group()]
            if token.single_word:
                before_is_word = start > 0 and _WORD_CHAR.match(text, start - 1)
                after_is_word = stop < len(text) and _WORD_CHAR.match(text, stop)
                if before_is_word or after_is_word:
                    continue
            if token.lstrip:
                start = max(_TRAILING_SPACE.search(text, 0, start).start(), last)
            if token.rstrip:
                stop = _LEADING_SPACE.match(text, stop).end()
            if last < start:
                pieces.append((last, start, None))
            pieces.append((start, stop, token.id))
            last = stop
        if last != len(text):
            pieces.append((last, len(text), None))
        return pieces
