"""Extended grapheme clusters (Unicode UAX #29): what a reader sees as one character.

The Precompiled normalizer (SentencePiece) looks characters up one grapheme cluster at a time,
as the reference does with Rust's unicode-segmentation, so we cut text the same way:

    >>> [len(cluster) for cluster in clusters_of("e\\u0301x\\r\\n🇫🇷")]   # e + accent, x, CR LF, a flag
    [2, 1, 2, 2]

The break classes come from unicode_tables.py (GRAPHEME_BREAK & co.); the rules are UAX #29's
GB3-GB13 with GB9c (Indic conjuncts).
"""

import bisect
from functools import lru_cache

from . import unicode_tables
from .unicode import code_point_set


@lru_cache(maxsize=1)
def _break_table():
    """(starts, ends, classes) of the GRAPHEME_BREAK runs, for bisect."""
    starts, ends, classes = [], [], []
    for item in unicode_tables.GRAPHEME_BREAK.split():
        span, name = item.split(":")
        first, _, last = span.partition("-")
        starts.append(int(first, 16))
        ends.append(int(last or first, 16))
        classes.append(name)
    return starts, ends, classes


@lru_cache(maxsize=65536)
def break_class(char):
    """A character's Grapheme_Cluster_Break ("Other" when it has none)."""
    starts, ends, classes = _break_table()
    code_point = ord(char)
    index = bisect.bisect_right(starts, code_point) - 1
    return classes[index] if index >= 0 and code_point <= ends[index] else "Other"


_CONTROLS = ("Control", "CR", "LF")


@lru_cache(maxsize=1)
def joining_characters():
    """Every character that can share a cluster with its neighbour: all but Other and the
    controls (LF included for CR LF), plus pictographs (emoji ZWJ sequences) and Indic
    conjunct consonants."""
    starts, ends, classes = _break_table()
    joining = {chr(c) for a, b, name in zip(starts, ends, classes) if name not in ("Control",)
               for c in range(a, b + 1)}
    for name in ("EXTENDED_PICTOGRAPHIC", "INCB_CONSONANT", "INCB_LINKER", "INCB_EXTEND"):
        joining |= code_point_set(name)
    return frozenset(joining)
_HANGUL_NEXT = {"L": ("L", "V", "LV", "LVT"), "LV": ("V", "T"), "V": ("V", "T"), "LVT": ("T",), "T": ("T",)}


def boundaries(text):
    """The indices where `text` may be cut between grapheme clusters (0 and len(text) included)."""
    if not text:
        return [0]
    pictographic = code_point_set("EXTENDED_PICTOGRAPHIC")
    linker, consonant, extend = (code_point_set(name) for name in ("INCB_LINKER", "INCB_CONSONANT", "INCB_EXTEND"))
    cuts = [0]
    previous = break_class(text[0])
    emoji = text[0] in pictographic          # GB11: ExtPict Extend* (ZWJ)? so far
    emoji_zwj = False
    conjunct = 1 if text[0] in consonant else 0  # GB9c: 1 after a consonant, 2 once a linker followed
    regional = 1 if previous == "Regional_Indicator" else 0
    for index in range(1, len(text)):
        char = text[index]
        current = break_class(char)
        if previous == "CR" and current == "LF":
            joined = True                                                         # GB3
        elif previous in _CONTROLS or current in _CONTROLS:
            joined = False                                                        # GB4, GB5
        elif current in _HANGUL_NEXT.get(previous, ()):
            joined = True                                                         # GB6-8
        elif current in ("Extend", "ZWJ", "SpacingMark") or previous == "Prepend":
            joined = True                                                         # GB9, GB9a, GB9b
        elif conjunct == 2 and char in consonant:
            joined = True                                                         # GB9c
        elif emoji_zwj and char in pictographic:
            joined = True                                                         # GB11
        elif current == "Regional_Indicator" and regional % 2 == 1:
            joined = True                                                         # GB12, GB13
        else:
            joined = False                                                        # GB999
        if not joined:
            cuts.append(index)
        # the states the next decision needs
        if char in pictographic:
            emoji, emoji_zwj = True, False
        elif emoji and current == "Extend":
            emoji_zwj = False
        elif emoji and current == "ZWJ":
            emoji_zwj = True
        else:
            emoji = emoji_zwj = False
        if char in consonant:
            conjunct = 1
        elif conjunct and char in linker:
            conjunct = 2
        elif conjunct and char in extend:
            pass
        else:
            conjunct = 0
        regional = regional + 1 if current == "Regional_Indicator" else 0
        previous = current
    cuts.append(len(text))
    return cuts


def clusters_of(text):
    """The grapheme clusters of `text`, in order."""
    cuts = boundaries(text)
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]
