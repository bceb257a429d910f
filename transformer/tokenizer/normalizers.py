"""Stage 1, normalizers: clean up the raw text before it is split into words.

Each normalizer maps `(text, origin) -> (text, origin)`, where `origin` records which original
character every normalized character came from (see `alignment.py`), so token offsets can
point into the original text. `normalize_str(text)` gives just the string.

    >>> BertNormalizer().normalize_str("Héllo\\tWORLD 中文")
    'hello world  中  文 '

The common path (BERT on ASCII text) never loops over characters in Python: it is a couple of
C-speed `str` methods. Non-ASCII text takes regex passes; only characters that actually change
length (removed control characters, spaced-out CJK ideographs, decomposed accents) are handled
one by one.
"""

import re
import unicodedata

from .alignment import apply_changes, as_list, replace_chars, sub_origin
from . import onig
from .schema import objects, type_of
from .unicode import LazyRegex, char_class
from .unicode_tables import COMBINING_CLASS, DECOMPOSITION, LOWERCASE

_CONTROL = LazyRegex(lambda: f"[{char_class('BERT_CONTROL')}]")
_WHITESPACE = LazyRegex(lambda: f"[{char_class('WHITESPACE')}]")
_CHINESE = LazyRegex(lambda: f"[{char_class('CHINESE')}]")
_NONSPACING_MARK = LazyRegex(lambda: f"[{char_class('NONSPACING_MARK')}]")
_LETTER_SPACE = LazyRegex(lambda: f"[{char_class('ONIG_LETTER')}] ")
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ANY_CHAR = re.compile(".", re.DOTALL)
_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")
_ASCII_WHITESPACE = str.maketrans("\t\n\r", "   ")
# Characters whose reference lowercase str.lower() would get wrong when applied to a whole
# string: U+0130 (one char -> two), U+03A3 (Python applies the final-sigma rule, the reference
# lowercases one character at a time) and those where the Unicode versions disagree.
_LOWER_SPECIAL = LazyRegex(lambda: "[\u0130\u03a3" + "".join(chr(c) for c in LOWERCASE) + "]")
_DECOMPOSE_SPECIAL = LazyRegex(lambda: "[" + "".join(chr(c) for c in DECOMPOSITION) + "]") if DECOMPOSITION else None


# --- the building blocks, each (text, origin) -> (text, origin) -------------------------------

def clean_text(text, origin):
    """Remove NUL, U+FFFD and control characters; turn every whitespace character into ' '.

    >>> clean_text("a\\x00b\\tc", 0)
    ('ab c', [0, 2, 3, 4])
    """
    if _CONTROL.search(text):
        text, origin = replace_chars(text, origin, _CONTROL, lambda ch: "")
    if text.isascii():
        return text.translate(_ASCII_WHITESPACE), origin
    return _WHITESPACE.sub(" ", text), origin


def space_chinese_chars(text, origin):
    """Surround every CJK ideograph with spaces, so each becomes its own word.

    >>> space_chinese_chars("a中b", 0)
    ('a 中 b', [0, 1, 1, 1, 2])
    """
    if text.isascii() or not _CHINESE.search(text):
        return text, origin
    return replace_chars(text, origin, _CHINESE, lambda ch: f" {ch} ")


def lowercase(text, origin):
    """Lowercase one character at a time, as the reference does (no final-sigma rule).

    >>> lowercase("ΟΔΟΣ", 0)
    ('οδοσ', 0)
    """
    if text.isascii() or not _LOWER_SPECIAL.search(text):
        return text.lower(), origin
    lowered = [_lower_char(ch) for ch in text]
    if "\u0130" not in text:  # every character still maps to exactly one
        return "".join(lowered), origin
    return replace_chars(text, origin, _ANY_CHAR, _lower_char)


def _lower_char(ch):
    return LOWERCASE.get(ord(ch)) or ch.lower()


def decompose(text, origin, form="NFD"):
    """Canonical (NFD) or compatibility (NFKD) decomposition, tracking origins.

    >>> decompose("\u00e9!", 0)
    ('e\u0301!', [0, 0, 1])
    """
    if text.isascii() or (unicodedata.is_normalized(form, text)
                          and not (_DECOMPOSE_SPECIAL and _DECOMPOSE_SPECIAL.search(text))):
        return text, origin
    # Only non-ASCII runs can change (ASCII is already decomposed, and an ASCII character is a
    # starter that canonical reordering never moves across), so ASCII runs are copied as is.
    origins_in = as_list(origin, len(text))
    pieces, origins, last = [], [], 0
    for run in _NON_ASCII_RUN.finditer(text):
        start, end = run.span()
        pieces.append(text[last:start])
        origins.extend(origins_in[last:start])
        # One char -> its decomposition: the first piece replaces it (change 0), the rest are
        # inserted (change 1). Then marks are put in canonical order, carrying their change.
        stream = []
        for ch in run.group():
            decomposed = DECOMPOSITION.get(ord(ch)) if form == "NFD" else None
            decomposed = decomposed or unicodedata.normalize(form, ch)
            stream.extend((piece, 0 if i == 0 else 1) for i, piece in enumerate(decomposed))
        _canonical_order(stream)
        run_text, run_origins = apply_changes(origins_in[start:end], end - start, stream)
        pieces.append(run_text)
        origins.extend(run_origins)
        last = end
    pieces.append(text[last:])
    origins.extend(origins_in[last:])
    return "".join(pieces), origins


_COMBINING = {}  # char -> the reference's canonical combining class (built on first use)


def _combining(char):
    if not _COMBINING:
        for value, ranges in COMBINING_CLASS.items():
            for item in ranges.split():
                first, _, last = item.partition("-")
                for code_point in range(int(first, 16), int(last or first, 16) + 1):
                    _COMBINING[chr(code_point)] = value
    return _COMBINING.get(char, 0)


def _canonical_order(stream):
    """Stable-sort each run of combining marks (combining class != 0) by combining class.

    The classes are the reference's: marks newer than its Unicode tables count as class 0.
    """
    i = 0
    while i < len(stream):
        if _combining(stream[i][0]) == 0:
            i += 1
            continue
        j = i
        while j < len(stream) and _combining(stream[j][0]) != 0:
            j += 1
        stream[i:j] = sorted(stream[i:j], key=lambda item: _combining(item[0]))
        i = j


def compose(text, origin, form="NFC"):
    """NFC / NFKC, tracking origins as the reference does: decompose (NFD / NFKD pieces:
    change 0 for the first, 1 for the others), put marks in canonical order, then compose; a
    composed character takes the changes of both of its parts minus one, so it consumes the
    characters it merged counting from its own position (even when the mark it absorbed was
    not next to it: the reference aligns by count, not by which mark).

    >>> compose("a\u0316\u0301", 0)   # a + grave-below + acute: the acute merges into the a
    ('\xe1\u0316', [0, 2])
    """
    if text.isascii() or unicodedata.is_normalized(form, text):
        return text, origin
    stream = []
    for ch in text:
        decomposed = DECOMPOSITION.get(ord(ch)) if form == "NFC" else None
        decomposed = decomposed or unicodedata.normalize("NFD" if form == "NFC" else "NFKD", ch)
        stream.extend((piece, 0 if i == 0 else 1) for i, piece in enumerate(decomposed))
    _canonical_order(stream)
    return apply_changes(as_list(origin, len(text)), len(text), _canonical_compose(stream))


def _canonical_compose(stream):
    """Canonical composition (UAX #15) of a [(char, change), ...] stream: each mark not blocked
    from the last starter merges into it when they have a primary composite."""
    result, starter = [], None  # starter: index in result of the last character of class 0
    last_class = 0
    for char, change in stream:
        char_class = _combining(char)
        if starter is not None and (last_class < char_class or (last_class == 0 and len(result) - 1 == starter)):
            composite = _compose_pair(result[starter][0], char)
            if composite is not None:
                result[starter] = (composite, result[starter][1] + change - 1)
                continue
        if char_class == 0:
            starter = len(result)
            last_class = 0
        else:
            last_class = char_class
        result.append((char, change))
    return result


_COMPOSITES = {}  # (first, second) -> composite, built on first use


def _compose_pair(first, second):
    """The primary composite of two characters (Hangul included), or None."""
    lv = _hangul_compose(first, second)
    if lv is not None:
        return lv
    if not _COMPOSITES:
        for code_point in range(0xC0, 0x30000):
            char = chr(code_point)
            parts = unicodedata.normalize("NFD", char)
            if len(parts) < 2 or unicodedata.normalize("NFC", parts) != char:
                continue  # no canonical decomposition, or excluded from composition
            pair = (unicodedata.normalize("NFC", parts[:-1]), parts[-1])
            # only what the reference decomposes this way too (it does not know newer characters)
            if len(pair[0]) == 1 and DECOMPOSITION.get(code_point, parts) == parts:
                _COMPOSITES[pair] = char
    return _COMPOSITES.get((first, second))


def _hangul_compose(first, second):
    l_index, v_index = ord(first) - 0x1100, ord(second) - 0x1161
    if 0 <= l_index < 19 and 0 <= v_index < 21:
        return chr(0xAC00 + (l_index * 21 + v_index) * 28)
    s_index, t_index = ord(first) - 0xAC00, ord(second) - 0x11A7
    if 0 <= s_index < 11172 and s_index % 28 == 0 and 0 < t_index < 28:
        return chr(ord(first) + t_index)
    return None


def strip_nonspacing_marks(text, origin):
    """Remove the characters the reference calls non-spacing marks (Mn)."""
    if text.isascii() or not _NONSPACING_MARK.search(text):
        return text, origin
    return replace_chars(text, origin, _NONSPACING_MARK, lambda ch: "")


# --- the normalizers a tokenizer.json names ---------------------------------------------------

class Normalizer:
    """Base: subclasses implement `normalize(text, origin) -> (text, origin)`.

    prefix_safe: normalizing a text cut just before a space that follows a letter gives the
    start of the whole text's normalization (true of every character-by-character step).
    """

    prefix_safe = True

    def normalize_str(self, text):
        return self.normalize(text, 0)[0]

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class BertNormalizer(Normalizer):
    """BERT's cleanup: clean_text, handle_chinese_chars, strip_accents, lowercase.

    strip_accents=None means "strip accents when lowercasing" (the reference's rule).

    >>> BertNormalizer().normalize_str("Crème BRÛLÉE")
    'creme brulee'
    """

    def __init__(self, clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True):
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.strip_accents = strip_accents
        self.lowercase = lowercase

    def normalize(self, text, origin):
        strip = self.lowercase if self.strip_accents is None else self.strip_accents
        if text.isascii():  # the fast path: no CJK, no accents, one pass for each step
            if self.clean_text:
                if _ASCII_CONTROL.search(text):
                    text, origin = replace_chars(text, origin, _ASCII_CONTROL, lambda ch: "")
                text = text.translate(_ASCII_WHITESPACE)
            return (text.lower() if self.lowercase else text), origin
        if self.clean_text:
            text, origin = clean_text(text, origin)
        if self.handle_chinese_chars:
            text, origin = space_chinese_chars(text, origin)
        if strip:
            text, origin = decompose(text, origin, "NFD")
            text, origin = strip_nonspacing_marks(text, origin)
        if self.lowercase:
            text, origin = lowercase(text, origin)
        return text, origin


class Lowercase(Normalizer):
    """Example:

    >>> Lowercase().normalize_str("HeLLo")
    'hello'
    """

    def normalize(self, text, origin):
        return lowercase(text, origin)


class NFD(Normalizer):
    """Example:

    >>> len(NFD().normalize_str("é"))
    2
    """

    def normalize(self, text, origin):
        return decompose(text, origin, "NFD")


class NFKD(Normalizer):
    """Example:

    >>> NFKD().normalize_str("ﬁ")
    'fi'
    """

    def normalize(self, text, origin):
        return decompose(text, origin, "NFKD")


class NFC(Normalizer):
    """Example:

    >>> len(NFC().normalize_str("e\\u0301"))
    1
    """

    def normalize(self, text, origin):
        return compose(text, origin, "NFC")


class NFKC(Normalizer):
    """Example:

    >>> NFKC().normalize_str("Ｈｅｌｌｏ")
    'Hello'
    """

    def normalize(self, text, origin):
        return compose(text, origin, "NFKC")


class StripAccents(Normalizer):
    """Remove non-spacing marks (use after NFD to remove accents).

    >>> StripAccents().normalize_str(NFD().normalize_str("café"))
    'cafe'
    """

    def normalize(self, text, origin):
        return strip_nonspacing_marks(text, origin)


class Strip(Normalizer):
    """Remove whitespace at the left and/or right end.

    >>> Strip().normalize_str("  hi  ")
    'hi'
    """

    def __init__(self, left=True, right=True):
        self.left = left
        self.right = right

    def normalize(self, text, origin):
        start, end = 0, len(text)
        if self.left:
            match = re.match(f"[{char_class('WHITESPACE')}]*", text)
            start = match.end()
        if self.right:
            while end > start and _WHITESPACE.match(text, end - 1):
                end -= 1
        if (start, end) == (0, len(text)):
            return text, origin
        return text[start:end], as_list(sub_origin(origin, start, end), end - start)


class Replace(Normalizer):
    """Replace every match of a literal string or a regex by `content`.

    >>> Replace(" ", "▁").normalize_str("a b")
    'a▁b'
    """

    def __init__(self, pattern, content, is_regex=False, where="Replace.pattern"):
        self.pattern = pattern
        self.content = content
        self.is_regex = is_regex
        self._regex = onig.compile(pattern, where) if is_regex else onig.literal(pattern)

    @property
    def prefix_safe(self):
        # a literal can only straddle the cut if it holds a letter followed by a space; a regex
        # is checked (onig.cuttable_replace)
        if self.is_regex:
            return onig.cuttable_replace(self._regex)
        return not _LETTER_SPACE.search(self.pattern)

    def normalize(self, text, origin):
        if not text or not self._regex.search(text):  # the reference matches nothing in ''
            return text, origin
        origins_in = as_list(origin, len(text))
        pieces, origins, last = [], [], 0
        for match in self._regex.finditer(text):
            start, end = match.span()
            pieces.append(text[last:start])
            origins.extend(origins_in[last:start])
            # the reference aligns the new content with the last replaced character
            anchor = origins_in[end - 1] if end > 0 else -1
            pieces.append(self.content)
            origins.extend([anchor] * len(self.content))
            last = end
        pieces.append(text[last:])
        origins.extend(origins_in[last:])
        return "".join(pieces), origins


class Nmt(Normalizer):
    """SentencePiece's nmt cleanup: drop ASCII control characters, turn a few others (tab,
    newlines, zero-width spaces, '▁', BOM, U+FFFD) into spaces.

    >>> Nmt().normalize_str("a\\tb\\x01c\\u200bd")
    'a bc d'
    """

    _DROP = re.compile("[\x01-\x08\x0b\x0e-\x1f\x7f\x8f\x9f]")
    _SPACE = str.maketrans({c: " " for c in "\t\n\x0c\r\u1680\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u2581\ufeff\ufffd"})

    def normalize(self, text, origin):
        if self._DROP.search(text):
            text, origin = replace_chars(text, origin, self._DROP, lambda ch: "")
        return text.translate(self._SPACE), origin


class ByteLevel(Normalizer):
    """Every UTF-8 byte as its GPT-2 character (see pre_tokenizers.bytes_to_unicode).

    >>> ByteLevel().normalize_str("é ")
    'Ã©Ġ'
    """

    def normalize(self, text, origin):
        from .pre_tokenizers import to_byte_chars
        return to_byte_chars(text, origin)


class Prepend(Normalizer):
    """Put a string in front of non-empty text (SentencePiece-style '▁').

    >>> Prepend("▁").normalize_str("hey")
    '▁hey'
    """

    def __init__(self, prepend):
        self.prepend = prepend

    def normalize(self, text, origin):
        if not text:
            return text, origin
        first = origin if isinstance(origin, int) else origin[0]
        return self.prepend + text, [first] * len(self.prepend) + as_list(origin, len(text))


class Sequence(Normalizer):
    """Apply normalizers one after another.

    >>> Sequence([NFD(), StripAccents(), Lowercase()]).normalize_str("Ça")
    'ca'
    """

    def __init__(self, normalizers):
        self.normalizers = list(normalizers)

    @property
    def prefix_safe(self):
        return all(n.prefix_safe for n in self.normalizers)

    def normalize(self, text, origin):
        for normalizer in self.normalizers:
            text, origin = normalizer.normalize(text, origin)
        return text, origin


def from_config(config, where="normalizer"):
    """A tokenizer.json "normalizer" object -> a Normalizer (or None for null).

    Fields are read with the reference's types (see schema.py): a wrong type or a missing
    required field is a ValueError naming it.
    """
    if config is None:
        return None
    fields, kind = type_of(config, where, _KINDS)
    if kind == "BertNormalizer":
        return BertNormalizer(fields.boolean("clean_text"), fields.boolean("handle_chinese_chars"),
                              fields.boolean("strip_accents", None), fields.boolean("lowercase"))
    if kind in _SIMPLE:
        return _SIMPLE[kind]()
    if kind == "Strip":
        return Strip(fields.boolean("strip_left"), fields.boolean("strip_right"))
    if kind == "Replace":
        pattern, is_regex = fields.pattern("pattern")
        return Replace(pattern, fields.string("content"), is_regex, where=fields.path("pattern"))
    if kind == "Prepend":
        return Prepend(fields.string("prepend"))
    if kind == "Precompiled":
        from .precompiled import Precompiled
        return Precompiled(fields.string("precompiled_charsmap"), fields.path("precompiled_charsmap"))
    if kind == "Sequence":
        items = objects(fields, "normalizers")
        return Sequence(from_config(item, f"{where}.normalizers[{i}]") for i, item in enumerate(items))


_SIMPLE = {"Lowercase": Lowercase, "NFD": NFD, "NFKD": NFKD, "NFC": NFC, "NFKC": NFKC,
           "StripAccents": StripAccents, "Nmt": Nmt, "ByteLevel": ByteLevel}
_KINDS = ("BertNormalizer", *_SIMPLE, "Strip", "Replace", "Prepend", "Precompiled", "Sequence")
