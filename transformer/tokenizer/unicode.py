"""Character classes of the reference, as compiled `re` patterns.

Python's `re` has no `\\p{L}`, and `unicodedata` follows the Python version's Unicode, not the
reference's. So every class comes from `unicode_tables.py` (probed from Rust `tokenizers`) and is
turned into an explicit `[...]` class that `re` matches at C speed.

    >>> import re
    >>> re.fullmatch(f"[{char_class('BERT_PUNCTUATION')}]+", "!?¿")  is not None
    True
"""

from functools import lru_cache

from . import unicode_tables


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
