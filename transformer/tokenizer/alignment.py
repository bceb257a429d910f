"""Where each character of a normalized string came from in the original text.

Normalizers change text (lowercase, strip accents, remove control characters, insert spaces) but
token offsets must point into the ORIGINAL text. So next to every string we carry its *origin*:

* an int `start`: nothing changed yet, character i came from original character `start + i`;
* a list of ints: character i came from original character `origin[i]`
  (-1 for a character inserted at the very start, which the reference gives offsets (0, 0)).

    >>> replace_chars("Ab\\x00c", 0, re.compile("[\\x00]"), lambda ch: "")
    ('Abc', [0, 1, 3])
    >>> replace_chars("x中", 10, re.compile("中"), lambda ch: f" {ch} ")
    ('x 中 ', [10, 11, 11, 11])

Every character of a normalized string comes from exactly one original character: that is how
the reference (Rust `tokenizers`' NormalizedString) aligns them too, so offsets agree.
"""

import re  # noqa: F401  (used in the doctest)


def as_list(origin, length):
    """An origin (int or list) -> a list of `length` original indices."""
    if isinstance(origin, int):
        return list(range(origin, origin + length))
    return origin


def sub_origin(origin, start, end):
    """The origin of text[start:end]."""
    if isinstance(origin, int):
        return origin + start
    return origin[start:end]


def span(origin, start, end):
    """Characters [start, end) of a normalized string -> (start, end) in the original text.

    Like the reference: the start of the first character to the end of the last one.
    """
    if isinstance(origin, int):
        return origin + start, origin + end
    first, last = origin[start], origin[end - 1]
    return (0 if first < 0 else first), (0 if last < 0 else last + 1)


def replace_chars(text, origin, pattern, replace):
    """Replace each single-character match of `pattern` by `replace(char)` (any length, or "").

    Every output character of a replacement keeps the origin of the character it replaced.
    Returns (new_text, new_origin); the origin stays an int only when nothing matched.
    """
    pieces, origins, last = [], [], 0
    for match in pattern.finditer(text):
        position = match.start()
        replacement = replace(match.group())
        if position > last:
            pieces.append(text[last:position])
            origins.extend(_slice(origin, last, position))
        pieces.append(replacement)
        origins.extend([_at(origin, position)] * len(replacement))
        last = position + 1
    if not pieces:
        return text, origin
    pieces.append(text[last:])
    origins.extend(_slice(origin, last, len(text)))
    return "".join(pieces), origins


def apply_changes(origin, length, chars_and_changes):
    """The reference's alignment rule for a stream of (char, change) pairs.

    change <= 0: the char replaces the next unconsumed input char (and consumes -change more);
    change > 0:  the char is inserted and shares the origin of the last consumed input char.
    Returns (new_text, new_origins).
    """
    origins_in = as_list(origin, length)
    chars, origins, consumed = [], [], 0
    for char, change in chars_and_changes:
        if change > 0:
            origins.append(origins_in[consumed - 1] if consumed > 0 else -1)
        else:
            origins.append(origins_in[consumed])
            consumed += 1 - change
        chars.append(char)
    return "".join(chars), origins


def _slice(origin, start, end):
    return range(origin + start, origin + end) if isinstance(origin, int) else origin[start:end]


def _at(origin, index):
    return origin + index if isinstance(origin, int) else origin[index]
