"""Stage 2, pre-tokenizers: split normalized text into words (with where each came from).

Each pre-tokenizer maps `(text, origin) -> [(word, origin), ...]` (origins: see `alignment.py`).
The model then splits each word into tokens on its own, so a pre-tokenizer decides which
characters can never share a token. Splitting is done with compiled regexes built from the
reference's Unicode tables, so it runs at C speed.

    >>> [w for w, _ in BertPreTokenizer().split("hello, world!", 0)]
    ['hello', ',', 'world', '!']
    >>> [w for w, _ in ByteLevel(add_prefix_space=False).split("Hello world", 0)]
    ['Hello', 'Ġworld']
"""

import re

from . import onig
from .alignment import as_list, sub_origin
from .schema import objects, type_of
from .unicode import LazyRegex, char_class

_WS = char_class("WHITESPACE")
_LETTER_SPACE = LazyRegex(lambda: f"[{char_class('ONIG_LETTER')}] ")


def bytes_to_unicode():
    """GPT-2's table byte -> printable character, so every byte sequence is a visible string.

    Printable Latin-1 bytes map to themselves; the other 68 (control chars, space, ...) map to
    U+0100 and up, in order. So b" " -> "Ġ" (U+0120) and b"\\n" -> "Ċ" (U+010A).

    >>> bytes_to_unicode()[ord(" ")], bytes_to_unicode()[ord("A")]
    ('Ġ', 'A')
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


BYTES_TO_CHARS = bytes_to_unicode()
CHARS_TO_BYTES = {char: byte for byte, char in BYTES_TO_CHARS.items()}
# str.translate table: a byte read as a Latin-1 character -> its GPT-2 character.
_LATIN1_TO_BYTE_CHAR = {byte: char for byte, char in BYTES_TO_CHARS.items()}


def to_byte_chars(text, origin):
    """Text -> its UTF-8 bytes written as GPT-2 characters; every byte keeps its char's origin.

    >>> to_byte_chars("é!", 0)
    ('Ã©!', [0, 0, 1])
    """
    mapped = text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTE_CHAR)
    if len(mapped) == len(text):
        return mapped, origin
    origins_in = as_list(origin, len(text))
    origins = []
    for ch, where in zip(text, origins_in):
        origins.extend([where] * len(ch.encode("utf-8")))
    return mapped, origins


# --- splitting by pattern, with the reference's five behaviours -------------------------------

def split_by_pattern(text, origin, pattern, behavior="removed", invert=False):
    """Split at every match of a compiled regex (an onig.Regex or a `re` pattern).

    behavior: "removed" drops the matches, "isolated" keeps each as its own word,
    "merged_with_previous" / "merged_with_next" glue it to the neighbour, "contiguous" keeps
    runs of adjacent matches together as one word. Empty matches split too, as in the
    reference (the empty pieces are dropped).

    >>> [w for w, _ in split_by_pattern("a-b--c", 0, re.compile("-"), "contiguous")]
    ['a', '-', 'b', '--', 'c']
    """
    pieces = [(s, e, is_match != invert) for s, e, is_match in _match_pieces(text, pattern)]
    if behavior == "removed":
        kept = [(s, e) for s, e, is_match in pieces if not is_match]
    elif behavior == "isolated":
        kept = [(s, e) for s, e, _ in pieces]
    elif behavior == "contiguous":
        kept, previous_match = [], False
        for s, e, is_match in pieces:
            if is_match == previous_match and kept:
                kept[-1] = (kept[-1][0], e)
            else:
                kept.append((s, e))
            previous_match = is_match
    elif behavior == "merged_with_previous":
        kept, previous_match = [], False
        for s, e, is_match in pieces:
            if is_match and not previous_match and kept:
                kept[-1] = (kept[-1][0], e)
            else:
                kept.append((s, e))
            previous_match = is_match
    elif behavior == "merged_with_next":
        kept, previous_match = [], False
        for s, e, is_match in reversed(pieces):
            if is_match and not previous_match and kept:
                kept[-1] = (s, kept[-1][1])
            else:
                kept.append((s, e))
            previous_match = is_match
        kept.reverse()
    else:
        raise ValueError(f"unknown split behavior {behavior!r}; expected removed, isolated, "
                         "contiguous, merged_with_previous or merged_with_next")
    return [(text[s:e], sub_origin(origin, s, e)) for s, e in kept if e > s]


def _match_pieces(text, pattern):
    """The text cut into [(start, end, is_match), ...] covering it, as the reference's
    find_matches does (an empty text is one non-match; empty matches are pieces too)."""
    if not text:
        return [(0, 0, False)]
    spans = pattern.spans(text) if isinstance(pattern, onig.Regex) else [m.span() for m in pattern.finditer(text)]
    pieces, last = [], 0
    for start, end in spans:
        if start != last:
            pieces.append((last, start, False))
        pieces.append((start, end, True))
        last = end
    if last != len(text):
        pieces.append((last, len(text), False))
    return pieces


def _words(text, origin, pattern):
    """Each match of `pattern` is a word; the text between matches is dropped."""
    if isinstance(origin, int):
        return [(m.group(), origin + m.start()) for m in pattern.finditer(text)]
    return [(m.group(), origin[m.start():m.end()]) for m in pattern.finditer(text)]


class PreTokenizer:
    """Base: subclasses implement `split(text, origin) -> [(word, origin), ...]`.

    For a text cut just before a space that follows a letter (see Tokenizer._encode_prefix):
    local: the words before the cut do not depend on what follows it (the last one may be
    the start of a longer word); splits_at_space: a word always ends at such a cut.
    """

    local = True
    splits_at_space = True

    def pre_tokenize_str(self, text):
        """Text -> [(word, (start, end)), ...] like the reference's `pre_tokenize_str`."""
        from .alignment import span
        return [(word, span(origin, 0, len(word))) for word, origin in self.split(text, 0)]

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class BertPreTokenizer(PreTokenizer):
    """Split on whitespace, and make every punctuation character its own word.

    >>> [w for w, _ in BertPreTokenizer().split("don't stop", 0)]
    ['don', "'", 't', 'stop']
    """
    _pattern = LazyRegex(lambda: f"[{char_class('BERT_PUNCTUATION')}]|[^{char_class('BERT_PUNCTUATION')}{_WS}]+")

    def split(self, text, origin):
        return _words(text, origin, self._pattern)


class Whitespace(PreTokenizer):
    """Words are runs of word characters, or runs of other non-space characters (`\\w+|[^\\w\\s]+`).

    >>> [w for w, _ in Whitespace().split("Hi, you!", 0)]
    ['Hi', ',', 'you', '!']
    """
    _pattern = LazyRegex(lambda: f"[{char_class('RUST_WORD')}]+|[^{char_class('RUST_WORD')}{char_class('RUST_SPACE')}]+")

    def split(self, text, origin):
        return _words(text, origin, self._pattern)


class WhitespaceSplit(PreTokenizer):
    """Split on whitespace only.

    >>> [w for w, _ in WhitespaceSplit().split("Hi, you!", 0)]
    ['Hi,', 'you!']
    """
    _pattern = LazyRegex(lambda: f"[^{_WS}]+")

    def split(self, text, origin):
        return _words(text, origin, self._pattern)


class Punctuation(PreTokenizer):
    """Split off punctuation characters (each one a match), default behaviour "isolated".

    >>> [w for w, _ in Punctuation().split("a,b", 0)]
    ['a', ',', 'b']
    """
    _pattern = LazyRegex(lambda: f"[{char_class('PUNCTUATION')}]")
    splits_at_space = False

    def __init__(self, behavior="isolated"):
        self.behavior = behavior

    def split(self, text, origin):
        return split_by_pattern(text, origin, self._pattern, self.behavior)


class Digits(PreTokenizer):
    """Split off numbers (runs of digits), or every digit when individual_digits.

    >>> [w for w, _ in Digits(individual_digits=True).split("a12", 0)]
    ['a', '1', '2']
    """
    _digit = LazyRegex(lambda: f"[{char_class('NUMERIC')}]")
    splits_at_space = False

    def __init__(self, individual_digits=False):
        self.individual_digits = individual_digits

    def split(self, text, origin):
        if self.individual_digits:
            return split_by_pattern(text, origin, self._digit, "isolated")
        return split_by_pattern(text, origin, self._digit, "contiguous")




def _gpt2_pattern():
    letter, number, space = char_class("ONIG_LETTER"), char_class("ONIG_NUMBER"), char_class("ONIG_SPACE")
    return (f"'s|'t|'re|'ve|'m|'ll|'d| ?[{letter}]+| ?[{number}]+| ?[^{space}{letter}{number}]+"
            f"|[{space}]+(?![^{space}])|[{space}]+")


# GPT-2's split pattern: contractions, letters, numbers, other symbols, each optionally with
# one leading space; runs of spaces keep their last space for the next word.
GPT2_PATTERN = LazyRegex(_gpt2_pattern)


class ByteLevel(PreTokenizer):
    """GPT-2's pre-tokenizer: split with GPT2_PATTERN, then write each word as byte characters.

    add_prefix_space puts a space in front (so the first word looks like the others).

    >>> [w for w, _ in ByteLevel(add_prefix_space=True).split("héllo", 0)]
    ['ĠhÃ©llo']
    """

    def __init__(self, add_prefix_space=True, use_regex=True, trim_offsets=True):
        self.add_prefix_space = add_prefix_space
        self.use_regex = use_regex
        self.trim_offsets = trim_offsets

    @property
    def splits_at_space(self):
        return self.use_regex  # GPT-2's pattern starts a word at a space after a letter

    def split(self, text, origin):
        if self.add_prefix_space and text and not text.startswith(" "):
            first = origin if isinstance(origin, int) else origin[0]
            origin = [first] + as_list(origin, len(text))
            text = " " + text
        if self.use_regex:
            words = _words(text, origin, GPT2_PATTERN) if text else []
        else:
            words = [(text, origin)] if text else []
        return [to_byte_chars(word, word_origin) for word, word_origin in words]


class Split(PreTokenizer):
    """Split on a literal string or a regex, with one of the five behaviours.

    >>> [w for w, _ in Split("-", "isolated").split("a-b", 0)]
    ['a', '-', 'b']
    """

    def __init__(self, pattern, behavior="removed", invert=False, is_regex=False, where="Split.pattern"):
        self.pattern = pattern
        self.behavior = behavior
        self.invert = invert
        self.is_regex = is_regex
        self._regex = onig.compile(pattern, where) if is_regex else onig.literal(pattern)

    @property
    def local(self):
        # With these behaviours no piece is glued to the one after it. A literal that holds no
        # letter-space pair cannot straddle the cut; a regex is checked (onig.cuttable_split).
        if self.invert or self.behavior not in ("removed", "isolated"):
            return False
        if self.is_regex:
            return onig.cuttable_split(self._regex)
        return not _LETTER_SPACE.search(self.pattern)

    @property
    def splits_at_space(self):
        return self.local and (self.is_regex or self.pattern.startswith(" "))

    def split(self, text, origin):
        return split_by_pattern(text, origin, self._regex, self.behavior, self.invert)


class Metaspace(PreTokenizer):
    """SentencePiece style: spaces become '▁', a '▁' is prepended, words start at each '▁'.

    >>> [w for w, _ in Metaspace().split("Hey friend", 0)]
    ['▁Hey', '▁friend']
    """

    def __init__(self, replacement="▁", prepend_scheme="always", split=True):
        self.replacement = replacement
        self.prepend_scheme = prepend_scheme
        self.split_words = split
        self._regex = re.compile(re.escape(replacement))

    @property
    def splits_at_space(self):
        return self.split_words  # the space becomes the replacement, which starts a word

    def split(self, text, origin):
        text = text.replace(" ", self.replacement)
        starts_at_zero = (origin if isinstance(origin, int) else (origin[0] if origin else 0)) == 0
        if text and not text.startswith(self.replacement) and (
                self.prepend_scheme == "always" or (self.prepend_scheme == "first" and starts_at_zero)):
            first = origin if isinstance(origin, int) else origin[0]
            origin = [first] * len(self.replacement) + as_list(origin, len(text))
            text = self.replacement + text
        if not self.split_words:
            return [(text, origin)] if text else []
        return split_by_pattern(text, origin, self._regex, "merged_with_next")


class Sequence(PreTokenizer):
    """Apply pre-tokenizers one after another, each on the words of the previous.

    >>> [w for w, _ in Sequence([WhitespaceSplit(), Digits(True)]).split("a1 b", 0)]
    ['a', '1', 'b']
    """

    def __init__(self, pre_tokenizers):
        self.pre_tokenizers = list(pre_tokenizers)

    @property
    def local(self):
        return all(p.local for p in self.pre_tokenizers)

    @property
    def splits_at_space(self):
        # once one step has ended a word at the cut, the steps after it see the same words
        return any(p.splits_at_space for p in self.pre_tokenizers)

    def split(self, text, origin):
        words = [(text, origin)]
        for pre_tokenizer in self.pre_tokenizers:
            words = [piece for word, word_origin in words for piece in pre_tokenizer.split(word, word_origin)]
        return words


def from_config(config, where="pre_tokenizer"):
    """A tokenizer.json "pre_tokenizer" object -> a PreTokenizer (or None for null).

    Fields are read with the reference's types (see schema.py).
    """
    if config is None:
        return None
    fields, kind = type_of(config, where, _KINDS)
    if kind in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit"):
        return {"BertPreTokenizer": BertPreTokenizer, "Whitespace": Whitespace,
                "WhitespaceSplit": WhitespaceSplit}[kind]()
    if kind == "Punctuation":
        return Punctuation(fields.choice("behavior", BEHAVIORS, "isolated"))
    if kind == "Digits":
        return Digits(fields.boolean("individual_digits"))
    if kind == "ByteLevel":
        return ByteLevel(fields.boolean("add_prefix_space"), fields.boolean("use_regex", True),
                         fields.boolean("trim_offsets"))
    if kind == "Split":
        pattern, is_regex = fields.pattern("pattern")
        return Split(pattern, fields.choice("behavior", BEHAVIORS), fields.boolean("invert"), is_regex,
                     where=fields.path("pattern"))
    if kind == "Metaspace":
        replacement, scheme, split = metaspace_fields(fields)
        return Metaspace(replacement, scheme, split)
    if kind == "Sequence":
        items = objects(fields, "pretokenizers")
        return Sequence(from_config(item, f"{where}.pretokenizers[{i}]") for i, item in enumerate(items))


_KINDS = ("BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits", "ByteLevel", "Split",
          "Metaspace", "Sequence")
BEHAVIORS = {"Removed": "removed", "Isolated": "isolated", "Contiguous": "contiguous",
             "MergedWithPrevious": "merged_with_previous", "MergedWithNext": "merged_with_next"}


def metaspace_fields(fields):
    """The Metaspace fields (shared with the Metaspace decoder) -> (replacement, scheme, split).

    Older files say add_prefix_space instead of prepend_scheme; false must agree with
    prepend_scheme "never" (the reference refuses the file otherwise).
    """
    replacement = fields.char("replacement")
    scheme = fields.choice("prepend_scheme", {"always": "always", "first": "first", "never": "never"}, "always")
    if fields.boolean("add_prefix_space", None) is False:
        if scheme != "never":
            raise ValueError(f"{fields.where}.add_prefix_space is false but prepend_scheme is {scheme!r}; "
                             "expected prepend_scheme 'never' (or no add_prefix_space)")
    split = fields.boolean("split", None)
    fields.string("str_rep", None)
    return replacement, scheme, True if split is None else split
