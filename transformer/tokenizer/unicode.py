"""Character classes of the reference, as compiled `re` patterns.

Python's `re` has no `\\p{L}`, and `unicodedata` follows the Python version's Unicode, not the
reference's. So every class comes from `unicode_tables.py` (probed from Rust `tokenizers`) and is
turned into an explicit `[...]` class that `re` matches at C speed.

    >>> import re
    >>> re.fullmatch(f"[{char_class('BERT_PUNCTUATION')}]+", "!?¿")  is not None
    True
"""

import re
from functools import lru_cache

from . import unicode_tables


class LazyRegex:
    """A regular expression compiled on its first use; otherwise a compiled `re` pattern.

    The tokenizer modules define a dozen patterns over big Unicode classes (letters, word
    characters, punctuation), and a model's tokenizer uses a few of them: compiling them all
    at import took ~60 ms of every new process's start-up.

    >>> words = LazyRegex(lambda: f"[{char_class('BERT_PUNCTUATION')}]")   # nothing compiled yet
    >>> words.findall("a, b!")
    [',', '!']
    """

    __slots__ = ("_build", "_regex")

    def __init__(self, build_pattern):
        self._build = build_pattern  # () -> the pattern string
        self._regex = None

    def __getattr__(self, name):  # search, match, sub, finditer, ...: the compiled pattern's
        regex = self._regex
        if regex is None:
            regex = self._regex = re.compile(self._build())
        return getattr(regex, name)


def code_point_ranges(name):
    """Table name -> [(first, last), ...] inclusive code point ranges."""
    result = []
    for item in getattr(unicode_tables, name).split():
        first, _, last = item.partition("-")
        result.append((int(first, 16), int(last or first, 16)))
    return result


def _escape(code_point):
    return "\\" + chr(code_point) if chr(code_point) in "\\]^-[" else chr(code_point)


@lru_cache(maxsize=None)
def char_class(name):
    """Table name -> the body of a regex character class, e.g. "!-/:-@" (no brackets)."""
    parts = []
    for first, last in code_point_ranges(name):
        parts.append(_escape(first) if first == last else f"{_escape(first)}-{_escape(last)}")
    return "".join(parts)


@lru_cache(maxsize=None)
def code_point_set(name):
    """Table name -> frozenset of the characters (for the rare per-character slow paths)."""
    return frozenset(chr(c) for first, last in code_point_ranges(name) for c in range(first, last + 1))
