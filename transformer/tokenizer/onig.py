"""Oniguruma regexes (as tokenizer.json writes them) -> Python `re`, with the same matches, and
never a pattern that can backtrack for ever.

Rust `tokenizers` runs the Split pre-tokenizer's and the Replace normalizer's regexes with
Oniguruma (Ruby syntax): `^` / `$` are line anchors, `\\h` is a hex digit, `\\p{L}` uses its own
Unicode tables, `(?i)s` also matches 'ſ'. Python's `re` differs on each point, so a pattern
is parsed here into a small tree and written out again for `re` with every class spelled out
as explicit code point ranges from the reference's tables:

    >>> regex = compile(r"\\p{N}{1,3}| ?\\p{L}+")
    >>> [m.group() for m in regex.finditer("abc 12345 déjà")]
    ['abc', '123', '45', ' déjà']

A tree is also what makes the pattern checkable. Python's `re` (like Oniguruma) backtracks:
`(a+)+$` takes exponential time on "aaaa…ab" (Oniguruma gives up after 10 million steps and
the reference panics). A pattern is refused, with one line naming the construct, when

  1. a repetition (`*`, `+`, `{m,n}` with n > 1) contains another repetition;
  2. a repetition repeats anything but a fixed-length run of single characters (`[ab]+`,
     `(?:ab)*`; not `(?:a|ab)*`, not a nullable body);
  3. two repetitions that can match the same character follow each other (only optional
     items between them) and something after them can still fail (`a*a*b`; `\\s*[\\r\\n]+`
     at the end of a branch is fine: once the second has a character, the match succeeds);
  4. it uses what needs more than a regular language (backreferences, recursion,
     conditionals, absence operators, \\K, \\G).

With 1-3, one match attempt backtracks over each character a bounded number of times: it is
linear in the text. Finding all matches restarts an attempt at each position where the
previous one failed, so a pattern whose attempts can fail after scanning a long run (`\\s+$`
on a million spaces) is quadratic there, as in the Rust regex crate's own iterators; the
pattern families real tokenizers use (GPT-2, Llama 3, Qwen2, GPT-4o) match every character
and stay linear (docs/tokenizer.md has the measurements).

Supported syntax: literals and escapes (\\t \\n \\r \\f \\v \\a \\e \\xHH \\x{H..} \\uHHHH \\o{..} octal
\\cX), `.`, classes `[...]` (ranges, negation, nesting, `&&`), \\d \\D \\w \\W \\s \\S \\h \\H,
\\p{..} \\P{..} \\p{^..} for general categories (L, Lu, ..., Any), \\R, groups (capturing, named,
`(?:`, `(?>`, lookahead, fixed-width lookbehind, `(?#..)`), options i and m (Ruby's m: `.`
matches a newline), anchors ^ $ \\A \\z \\Z \\b \\B, greedy / lazy / possessive quantifiers.
Anything else is refused with a message naming it.
"""

import bisect
import re
from dataclasses import dataclass
from functools import lru_cache

from . import unicode_tables
from .unicode import code_point_ranges

MAX_CODE_POINT = 0x10FFFF
_CATEGORIES = ("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi",
               "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Co")


class PatternError(ValueError):
    """A pattern we refuse: invalid, unsupported, or able to backtrack for ever."""


# --- sets of code points, as sorted disjoint inclusive ranges ---------------------------------

def _normalize(ranges):
    """Sort and merge ranges: [(5, 9), (1, 3), (4, 4)] -> [(1, 9)]."""
    merged = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return tuple(merged)


def _complement(ranges):
    result, start = [], 0
    for first, last in ranges:
        if first > start:
            result.append((start, first - 1))
        start = last + 1
    if start <= MAX_CODE_POINT:
        result.append((start, MAX_CODE_POINT))
    return tuple(result)


def _intersect(a, b):
    result, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        first, last = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if first <= last:
            result.append((first, last))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(result)


@lru_cache(maxsize=None)
def _category_ranges():
    """General category -> its ranges, from the reference's Oniguruma table."""
    by_category = {name: [] for name in _CATEGORIES}
    for item in unicode_tables.ONIG_CATEGORY.split():
        span, name = item.split(":")
        first, _, last = span.partition("-")
        by_category[name].append((int(first, 16), int(last or first, 16)))
    return {name: tuple(ranges) for name, ranges in by_category.items()}


@lru_cache(maxsize=None)
def property_ranges(name):
    """A \\p{..} name -> ranges: a general category (two letters), a major class (L, M, N, P,
    S, Z, C), or Any; None for a name we do not know."""
    categories = _category_ranges()
    if name in categories:
        return categories[name]
    if name == "Any":
        return ((0, MAX_CODE_POINT),)
    if name == "Cn":  # unassigned: whatever has no category (and is not a surrogate)
        assigned = _normalize([r for ranges in categories.values() for r in ranges] + [(0xD800, 0xDFFF)])
        return _complement(assigned)
    if name == "Cs":
        return ((0xD800, 0xDFFF),)
    if name in ("L", "M", "N", "P", "S", "Z"):
        return _normalize([r for key, ranges in categories.items() if key[0] == name for r in ranges])
    if name == "C":
        return _normalize([r for key, ranges in categories.items() if key[0] == "C" for r in ranges]
                          + list(property_ranges("Cn")) + [(0xD800, 0xDFFF)])
    return None


@lru_cache(maxsize=None)
def _table(name):
    return tuple(code_point_ranges(name))


def _escape_class(name):
    """\\d \\w \\s \\h (and upper-case negations) -> ranges."""
    positive = {"d": lambda: property_ranges("Nd"), "w": lambda: _table("ONIG_WORD"),
                "s": lambda: _table("ONIG_SPACE"),
                "h": lambda: ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66))}[name.lower()]()
    return positive if name.islower() else _complement(positive)


# --- case-insensitive matching ----------------------------------------------------------------

@lru_cache(maxsize=1)
def _fold_groups():
    """Code point -> the code points Oniguruma's (?i) treats as the same letter (for every
    code point with a case variant). Probed: for ASCII letters the groups are those of
    str.lower() plus 's' ~ 'ſ'; beyond ASCII, single-character case folding."""
    groups = {}
    for code_point in range(MAX_CODE_POINT + 1):
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        char = chr(code_point)
        key = char.casefold()
        if len(key) != 1:
            key = char.lower() if len(char.lower()) == 1 else char
        if key != char:
            groups.setdefault(key, {key}).add(char)
    result = {}
    for members in groups.values():
        for member in members:
            result[ord(member)] = frozenset(ord(m) for m in members)
    return result


def _ascii_variants(code_point):
    char = chr(code_point)
    variants = {code_point, ord(char.lower()), ord(char.upper())}
    if char in "sS":
        variants.add(0x17F)
    if char in "kK":
        variants.add(0x212A)
    return variants


def _case_insensitive(ranges):
    """Add the case variants of every code point in `ranges`."""
    extra = []
    for first, last in ranges:
        for code_point in range(first, min(last, 0x7F) + 1):
            extra.extend((v, v) for v in _ascii_variants(code_point))
    if ranges and ranges[-1][1] > 0x7F:
        starts = [first for first, _ in ranges]
        for code_point, members in _fold_groups().items():
            index = bisect.bisect_right(starts, code_point) - 1
            if code_point > 0x7F and index >= 0 and code_point <= ranges[index][1]:
                extra.extend((m, m) for m in members)
    return _normalize(list(ranges) + extra)


# --- the tree ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chars:      # one character from a set
    ranges: tuple


@dataclass(frozen=True)
class Seq:
    items: tuple


@dataclass(frozen=True)
class Alt:
    branches: tuple


@dataclass(frozen=True)
class Repeat:
    body: object
    min: int
    max: object   # int, or None for no upper bound
    mode: str     # "greedy" | "lazy" | "possessive"


@dataclass(frozen=True)
class Group:
    body: object
    kind: str     # "group" (?:..) | "capture" (..) | "options" (?i:..) | "atomic" | "ahead" | "not_ahead"
                  # | "behind" | "not_behind"


PLAIN = ("group", "capture", "options")  # groups that match just what their body matches
LOOK = ("ahead", "not_ahead", "behind", "not_behind")


@dataclass(frozen=True)
class Assert:
    kind: str     # "bol" | "eol" | "start" | "end" | "end_newline" | "word" | "not_word"


_LINE_BREAK = Group(Alt((Seq((Chars(((13, 13),)), Chars(((10, 10),)))),
                         Chars(((10, 13), (0x85, 0x85), (0x2028, 0x2029))))), "atomic")


# --- the parser (Oniguruma's Ruby syntax) ------------------------------------------------------

class _Parser:
    def __init__(self, pattern, where):
        self.text = pattern
        self.pos = 0
        self.where = where

    def fail(self, message, position=None):
        position = self.pos if position is None else position
        raise PatternError(f"{self.where} {message} (at character {position} of {self.text!r:.80})")

    def peek(self, count=1):
        return self.text[self.pos:self.pos + count]

    def take(self):
        char = self.text[self.pos]
        self.pos += 1
        return char

    def parse(self):
        tree = self.alternation({"i": False, "m": False})
        if self.pos < len(self.text):
            self.fail("has an unmatched ')'")
        return tree

    def alternation(self, flags):
        branches = [self.sequence(flags)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence(flags))
        if len(branches) == 1:
            return branches[0]
        if all(isinstance(branch, Chars) for branch in branches):  # a|b|c matches as [abc]
            return Chars(_normalize([r for branch in branches for r in branch.ranges]))
        return Alt(tuple(branches))

    def sequence(self, flags):
        items = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            changed = self._inline_options(flags) if self.text.startswith("(?", self.pos) else None
            if changed is not None:
                # (?i) alone changes the options up to the end of the enclosing group, the
                # alternatives after it included: a(?i)b|c is a(?i:b|c) to Oniguruma.
                items.append(Group(self.alternation(changed), "options"))
                break
            atom = self.atom(flags)
            if atom is None:
                continue
            items.append(self.quantified(atom))
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def _inline_options(self, flags):
        """(?imx-imx) alone -> the options after it (a new dict); None for any other (? group."""
        match = re.match(r"\(\?([a-z]*)(?:-([a-z]*))?\)", self.text[self.pos:])
        if not match:
            return None
        flags = dict(flags)
        self._apply_options(flags, match.group(1), match.group(2) or "")
        self.pos += match.end()
        return flags

    def _apply_options(self, flags, on, off):
        for letter in on + off:
            if letter not in "im":
                self.fail(f"uses the option (?{letter}), which is not supported (supported: i, m)")
        for letter in on:
            flags[letter] = True
        for letter in off:
            flags[letter] = False

    def quantified(self, atom):
        start = self.pos
        char = self.peek()
        if char in ("*", "+", "?"):
            self.pos += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        elif char == "{":
            match = re.match(r"\{(\d*)(,?)(\d*)\}", self.text[self.pos:])
            if not match or not (match.group(1) or match.group(3)):
                return atom  # Ruby reads a brace that is not an interval as a literal
            self.pos += match.end()
            low = int(match.group(1) or 0)
            high = int(match.group(3)) if match.group(3) else (None if match.group(2) else low)
            if high is not None and high < low:
                self.fail("has a repetition {m,n} with n < m", start)
            if low > 1000 or (high or 0) > 1000:
                self.fail("repeats more than 1000 times", start)
        else:
            return atom
        mode = "greedy"
        if self.peek() == "?":
            mode, self.pos = "lazy", self.pos + 1
        elif self.peek() == "+" and char != "{":
            mode, self.pos = "possessive", self.pos + 1
        if self.peek() and self.peek() in "*+?" or (self.peek() == "{" and re.match(r"\{\d*,?\d*\}", self.text[self.pos:])):
            self.fail("repeats a repetition directly (write a group)")
        if _invalid_repeat_target(atom):
            self.fail("repeats an anchor or a lookaround", start)
        return Repeat(atom, low, high, mode)

    def atom(self, flags):
        start = self.pos
        char = self.take()
        if char == "(":
            return self.group(flags, start)
        if char == "[":
            return Chars(self.maybe_fold(self.bracket(flags), flags))
        if char == ".":
            return Chars(((0, MAX_CODE_POINT),) if flags["m"] else _complement(((10, 10),)))
        if char == "^":
            return Assert("bol")
        if char == "$":
            return Assert("eol")
        if char == "\\":
            return self.escape(flags, start)
        if char in "*+?":
            self.fail(f"has a '{char}' with nothing to repeat", start)
        return Chars(self.maybe_fold(((ord(char), ord(char)),), flags))

    @staticmethod
    def maybe_fold(ranges, flags):
        return _case_insensitive(ranges) if flags["i"] else ranges

    def group(self, flags, start):
        kind = "capture"
        inner = dict(flags)
        if self.peek() == "?":
            self.pos += 1
            rest = self.text[self.pos:]
            if rest.startswith("#"):
                end = self.text.find(")", self.pos)
                if end < 0:
                    self.fail("has an unterminated comment (?#", start)
                self.pos = end + 1
                return None
            for prefix, name in ((":", "group"), (">", "atomic"), ("=", "ahead"), ("!", "not_ahead"),
                                 ("<=", "behind"), ("<!", "not_behind")):
                if rest.startswith(prefix):
                    kind = name
                    self.pos += len(prefix)
                    break
            else:
                named = re.match(r"<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'", rest)
                options = re.match(r"([a-z]*)(?:-([a-z]*))?:", rest)
                if named:
                    self.pos += named.end()
                elif options:
                    self._apply_options(inner, options.group(1), options.group(2) or "")
                    self.pos += options.end()
                    kind = "options"
                else:
                    self.fail(f"uses the group '(?{rest[:2]}', which is not supported", start)
        body = self.alternation(inner)
        if self.peek() != ")":
            self.fail("has an unclosed '('", start)
        self.pos += 1
        if kind in ("behind", "not_behind") and _lookbehind_branches(body) is None:
            self.fail("has a lookbehind whose width is not fixed", start)
        return Group(body, kind)

    def escape(self, flags, start):
        if self.pos >= len(self.text):
            self.fail("ends with a lone backslash", start)
        char = self.take()
        anchors = {"A": "start", "z": "end", "Z": "end_newline", "b": "word", "B": "not_word"}
        if char in anchors:
            return Assert(anchors[char])
        if char == "R":
            return _LINE_BREAK
        if char in "dDwWsShH":
            return Chars(self.maybe_fold(_escape_class(char), flags))
        if char in "pP":
            return Chars(self.maybe_fold(self.property(char, start), flags))
        if char in "123456789" and not re.match(r"[1-7][0-7]{2}", self.text[self.pos - 1:]):
            self.fail("has a backreference, which is not supported", start)
        if char in "GKXNOgkyY":
            self.fail(f"uses \\{char}, which is not supported", start)
        code_point = self.char_escape(char, start)
        return Chars(self.maybe_fold(((code_point, code_point),), flags))

    def char_escape(self, char, start):
        """The character an escape stands for (after the backslash and `char`)."""
        simple = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11, "a": 7, "e": 27}
        if char in simple:
            return simple[char]
        if char == "x":
            match = re.match(r"\{([0-9a-fA-F]{1,8})\}|([0-9a-fA-F]{1,2})", self.text[self.pos:])
            if not match:
                self.fail("has \\x without hex digits", start)
            self.pos += match.end()
            return self.code_point(int(match.group(1) or match.group(2), 16), start)
        if char == "u":
            match = re.match(r"[0-9a-fA-F]{4}", self.text[self.pos:])
            if not match:
                self.fail("has \\u without four hex digits", start)
            self.pos += 4
            return self.code_point(int(match.group(), 16), start)
        if char == "o":
            match = re.match(r"\{([0-7]{1,11})\}", self.text[self.pos:])
            if not match:
                self.fail("has \\o without {octal digits}", start)
            self.pos += match.end()
            return self.code_point(int(match.group(1), 8), start)
        if char in "01234567":
            match = re.match(r"[0-7]{0,2}", self.text[self.pos:])
            self.pos += match.end()
            return int(char + match.group(), 8)
        if char == "c":
            if self.pos >= len(self.text):
                self.fail("has \\c without a character", start)
            return ord(self.take()) & 0x1F
        if char.isascii() and char.isalnum():
            self.fail(f"uses the escape \\{char}, which is not supported", start)
        return ord(char)  # an escaped punctuation (or non-ASCII) character stands for itself

    def code_point(self, value, start):
        if value > MAX_CODE_POINT or 0xD800 <= value <= 0xDFFF:
            self.fail(f"names the code point {value:#x}, which is not a character", start)
        return value

    def property(self, letter, start):
        match = re.match(r"\{(\^?)([A-Za-z_ &]+)\}", self.text[self.pos:])
        if not match:
            self.fail(f"has \\{letter} without {{name}}", start)
        self.pos += match.end()
        name = match.group(2).replace(" ", "").replace("_", "")
        name = {"Letter": "L", "Mark": "M", "Number": "N", "Punctuation": "P", "Symbol": "S",
                "Separator": "Z", "Other": "C"}.get(name, name)
        ranges = property_ranges(name)
        if ranges is None:
            self.fail(f"uses the property \\{letter}{{{match.group(2)}}}, which is not supported "
                      "(supported: general categories such as L, Lu, N, Nd, P, S, Z, and Any)", start)
        if (letter == "P") != (match.group(1) == "^"):
            ranges = _complement(ranges)
        return ranges

    def bracket(self, flags):
        """After '[': a class -> its ranges (negation, nesting, ranges and && handled)."""
        start = self.pos - 1
        negate = self.peek() == "^"
        if negate:
            self.pos += 1
        parts = []     # the union being built since the last &&
        result = None  # the intersection of the unions closed by &&
        first = True
        while True:
            if self.pos >= len(self.text):
                self.fail("has an unclosed '['", start)
            char = self.peek()
            if char == "]" and not first:
                self.pos += 1
                break
            first = False
            if self.text.startswith("&&", self.pos):
                self.pos += 2
                union = _normalize(parts)
                result = union if result is None else _intersect(result, union)
                parts = []
                continue
            if char == "[":
                if self.text.startswith("[:", self.pos):
                    self.fail("uses a POSIX class [:name:], which is not supported", self.pos)
                self.pos += 1
                parts.extend(self.bracket(flags))
                continue
            low = self.class_item(start)
            if isinstance(low, tuple):  # a class escape such as \w
                parts.extend(low)
                continue
            if self.peek() == "-" and self.peek(2) != "-]" and self.pos + 1 < len(self.text) and \
                    self.text[self.pos + 1] != "]":
                dash = self.pos
                self.pos += 1
                high = self.class_item(start)
                if isinstance(high, tuple):
                    self.fail("has a range ending in a class", dash)
                if high < low:
                    self.fail("has a range whose end comes before its start", dash)
                parts.append((low, high))
            else:
                parts.append((low, low))
        union = _normalize(parts)
        ranges = union if result is None else _intersect(result, union)
        return _complement(ranges) if negate else ranges

    def class_item(self, start):
        """One character inside [...] (an int), or the ranges of a class escape (a tuple)."""
        char = self.take()
        if char != "\\":
            return ord(char)
        if self.pos >= len(self.text):
            self.fail("has an unclosed '['", start)
        escape_start = self.pos - 1
        char = self.take()
        if char in "dDwWsShH":
            return _escape_class(char)
        if char in "pP":
            return self.property(char, escape_start)
        if char == "b":
            return 8
        if char in "123456789" and not re.match(r"[1-7][0-7]{2}", self.text[self.pos - 1:]):
            self.fail("has a backreference inside a class", escape_start)
        return self.char_escape(char, escape_start)


def _invalid_repeat_target(node):
    """What Oniguruma refuses to repeat: an anchor or lookaround, seen through (?:..) groups,
    or an alternation with such a branch (capturing, atomic and (?i:..) groups are fine)."""
    if isinstance(node, Assert) or (isinstance(node, Group) and node.kind in LOOK):
        return True
    if isinstance(node, Group) and node.kind == "group":
        return _invalid_repeat_target(node.body)
    if isinstance(node, Alt):
        return any(_invalid_repeat_target(branch) for branch in node.branches)
    return False


def _lookbehind_branches(body):
    """A lookbehind's body as branches of fixed width each (Oniguruma allows (?<=ab|c), Python
    only one width per lookbehind), or None when a branch's width varies."""
    if _width(body) is not None:
        return [body]
    if isinstance(body, Alt) and all(_width(branch) is not None for branch in body.branches):
        return list(body.branches)
    return None


def _width(node):
    """The number of characters `node` always matches, or None when it varies."""
    if isinstance(node, Chars):
        return 1
    if isinstance(node, Assert):
        return 0
    if isinstance(node, Seq):
        widths = [_width(item) for item in node.items]
        return None if None in widths else sum(widths)
    if isinstance(node, Alt):
        widths = {_width(branch) for branch in node.branches}
        return widths.pop() if len(widths) == 1 else None
    if isinstance(node, Repeat):
        inner = _width(node.body)
        return inner * node.min if inner is not None and node.min == node.max else None
    if isinstance(node, Group):
        return 0 if node.kind in LOOK else _width(node.body)
    return None


# --- the safety check ---------------------------------------------------------------------------

def _nullable(node):
    if isinstance(node, Chars):
        return False
    if isinstance(node, Assert):
        return True
    if isinstance(node, Seq):
        return all(_nullable(item) for item in node.items)
    if isinstance(node, Alt):
        return any(_nullable(branch) for branch in node.branches)
    if isinstance(node, Repeat):
        return node.min == 0 or _nullable(node.body)
    return node.kind in LOOK or _nullable(node.body)


def _is_loop(node):
    return isinstance(node, Repeat) and (node.max is None or node.max > 1)


def _has_loop(node):
    if _is_loop(node):
        return True
    if isinstance(node, Seq):
        return any(_has_loop(item) for item in node.items)
    if isinstance(node, Alt):
        return any(_has_loop(branch) for branch in node.branches)
    if isinstance(node, (Repeat, Group)):
        return _has_loop(node.body)
    return False


def _cannot_fail(node):
    """True when `node` always matches (the empty string at least) without any test."""
    if isinstance(node, (Chars, Assert)):
        return False
    if isinstance(node, Seq):
        return all(_cannot_fail(item) for item in node.items)
    if isinstance(node, Alt):
        return any(_cannot_fail(branch) for branch in node.branches)
    if isinstance(node, Repeat):
        return node.min == 0
    return (node.kind in PLAIN or node.kind == "atomic") and _cannot_fail(node.body)


def _edge_chars(node, last=False):
    """The characters a match of `node` can start with (or end with, `last`), as ranges;
    assertions ignored."""
    if isinstance(node, Chars):
        return node.ranges
    if isinstance(node, Assert):
        return ()
    if isinstance(node, Seq):
        return _chars_at_edge(reversed(node.items) if last else node.items, last)
    if isinstance(node, Alt):
        return _normalize([r for branch in node.branches for r in _edge_chars(branch, last)])
    if isinstance(node, Group) and node.kind in LOOK:
        return ()
    return _edge_chars(node.body, last)


def _chars_at_edge(items, last=False):
    """The characters a run of `items` can start with (or, given nearest first, end with: `last`),
    reading over the optional ones."""
    ranges = []
    for item in items:
        ranges.extend(_edge_chars(item, last))
        if not _nullable(item):
            break
    return _normalize(ranges)


def _flatten(node):
    """A node as the list of items it matches one after the other (groups of one branch opened)."""
    if isinstance(node, Seq):
        return [part for item in node.items for part in _flatten(item)]
    if isinstance(node, Group) and node.kind in PLAIN and not isinstance(node.body, Alt):
        return _flatten(node.body)
    return [node]


def _check(node, after, refuse):
    """Apply rules 1-3 of the module docstring to `node`, followed by the items `after`."""
    if isinstance(node, Seq):
        items = _flatten(node)
        for index, item in enumerate(items):
            _check(item, items[index + 1:] + after, refuse)
    elif isinstance(node, Alt):
        for branch in node.branches:
            _check(branch, after, refuse)
    elif isinstance(node, Group):
        inner_after = [] if node.kind in LOOK else after
        _check(node.body, inner_after, refuse)
    elif isinstance(node, Repeat):
        if _is_loop(node):
            if _has_loop(node.body):
                refuse("repeats a repetition (like (a+)+), which can take exponential time")
            body = _flatten(node.body)
            if not all(isinstance(item, Chars) for item in body) or not body:
                refuse("repeats something other than a fixed run of single characters "
                       "(like (?:a|ab)*), which can take exponential time")
            _check_followers(node, after, refuse)
        else:
            _check(node.body, after, refuse)


def _check_followers(loop, after, refuse):
    """Rule 3: a second loop overlapping `loop`, reachable over optional items, must end the match."""
    first = _edge_chars(loop.body)
    for index, item in enumerate(after):
        for candidate, rest in _loops_at_start(item, after[index + 1:]):
            if _intersect(first, _edge_chars(candidate.body)) and not all(_cannot_fail(r) for r in rest):
                refuse("has two repetitions that can match the same characters one after the other, "
                       "followed by more pattern (like a*a*b), which can take polynomial time")
        if not _nullable(item):
            return


def _loops_at_start(item, rest):
    """The loops `item` can begin with, each with what follows it: [(loop, [items after]), ...]."""
    if _is_loop(item):
        return [(item, rest)]
    if isinstance(item, Alt):
        return [found for branch in item.branches for found in _loops_at_start_of_seq(_flatten(branch), rest)]
    if isinstance(item, Group) and item.kind not in LOOK:
        return _loops_at_start_of_seq(_flatten(item.body), rest)
    return []


def _loops_at_start_of_seq(items, rest):
    found = []
    for index, item in enumerate(items):
        found.extend(_loops_at_start(item, items[index + 1:] + rest))
        if not _nullable(item):
            break
    return found


# --- where a text may be cut (Tokenizer._encode_prefix) -------------------------------------------
#
# A long text truncated on the right is tokenized from a prefix that ends just before a space
# following a letter. A Replace normalizer's regex or a Split pre-tokenizer's gives the same
# matches up to such a cut when the checks below hold (each is sufficient, not necessary).

_SPACE = ((0x20, 0x20),)
_FORWARD_ASSERTS = ("eol", "end", "end_newline", "word", "not_word")  # they look at what follows


@lru_cache(maxsize=1)
def _letters():
    return _table("ONIG_LETTER")


def _walk(node, before, after, visit):
    """Call visit(node, before, after) on every node, with the items matched just before it
    (nearest first) and just after it, across group boundaries."""
    visit(node, before, after)
    if isinstance(node, Seq):
        items = _flatten(node)
        for index, item in enumerate(items):
            _walk(item, list(reversed(items[:index])) + before, items[index + 1:] + after, visit)
    elif isinstance(node, Alt):
        for branch in node.branches:
            _walk(branch, before, after, visit)
    elif isinstance(node, Group):
        if node.kind in LOOK:
            _walk(node.body, [], [], visit)
        else:
            _walk(node.body, before, after, visit)
    elif isinstance(node, Repeat):
        again = [Repeat(node.body, 0, node.max, node.mode)] if _is_loop(node) else []
        _walk(node.body, again + before, again + after, visit)


def _reads_past_a_letter(tree):
    """Whether a forward assertion (lookahead, $, \\z, \\Z, \\b, \\B) can be checked right after
    a matched letter: at a cut it would see the end of the text instead of the space."""
    found = []

    def visit(node, before, after):
        forward = (isinstance(node, Assert) and node.kind in _FORWARD_ASSERTS) or \
            (isinstance(node, Group) and node.kind in ("ahead", "not_ahead"))
        if forward and _intersect(_chars_at_edge(before, last=True), _letters()):
            found.append(node)

    _walk(tree, [], [], visit)
    return bool(found)


def _matches_letter_then_space(tree):
    """Whether one match can hold a letter directly followed by a space."""
    found = []

    def visit(node, before, after):
        if isinstance(node, Chars) and _intersect(node.ranges, _letters()) and \
                _intersect(_chars_at_edge(after), _SPACE):
            found.append(node)

    _walk(tree, [], [], visit)
    return bool(found)


def _matches_any_single_letter(tree):
    """Whether a single letter, whatever follows, is a whole match of some top-level branch
    (so no letter is ever left outside the matches)."""
    letters = _letters()
    for branch in (tree.branches if isinstance(tree, Alt) else (tree,)):
        items = _flatten(branch)
        if any(isinstance(item, (Assert, Group)) for item in items):
            continue
        required = [item for item in items if not _nullable(item)]
        if len(required) != 1:
            continue
        item = required[0]
        chars = item if isinstance(item, Chars) else item.body if isinstance(item, Repeat) else None
        if isinstance(chars, Chars) and (isinstance(item, Chars) or item.min <= 1) and \
                _intersect(chars.ranges, letters) == letters:
            return True
    return False


def cuttable_replace(regex):
    """A Replace regex matches the same up to a cut just before a space that follows a letter:
    it cannot match a letter, nor look past one."""
    tree = regex.tree
    found = []

    def visit(node, before, after):
        if isinstance(node, Chars) and _intersect(node.ranges, _letters()):
            found.append(node)

    _walk(tree, [], [], visit)
    return not found and not _reads_past_a_letter(tree)


def cuttable_split(regex):
    """A Split regex (isolated or removed, not inverted) always ends a word at a cut just before
    a space that follows a letter, and finds the same matches before it: no match holds a
    letter followed by a space, none looks past a letter, and every letter is in a match."""
    tree = regex.tree
    return (not _matches_letter_then_space(tree) and not _reads_past_a_letter(tree)
            and _matches_any_single_letter(tree))


# --- writing the tree out for Python's re --------------------------------------------------------

def _char(code_point):
    char = chr(code_point)
    return "\\" + char if char in "\\]^-[" else char


def _class_body(ranges):
    return "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in ranges)


def _emit_chars(ranges):
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return re.escape(chr(ranges[0][0]))
    if not ranges:
        return "[^\\s\\S]"  # matches nothing
    complement = _complement(ranges)
    if len(complement) < len(ranges):
        return f"[^{_class_body(complement)}]" if complement else "[\\s\\S]"
    return f"[{_class_body(ranges)}]"


def _emit(node):
    if isinstance(node, Chars):
        return _emit_chars(node.ranges)
    if isinstance(node, Seq):
        return "".join(_emit_atom(item) if isinstance(item, Alt) else _emit(item) for item in node.items)
    if isinstance(node, Alt):
        return "|".join(_emit(branch) for branch in node.branches)
    if isinstance(node, Repeat):
        quantifier = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((node.min, node.max))
        if quantifier is None:
            quantifier = f"{{{node.min},{'' if node.max is None else node.max}}}"
        suffix = {"greedy": "", "lazy": "?", "possessive": "+"}[node.mode]
        return _emit_atom(node.body) + quantifier + suffix
    if isinstance(node, Group):
        if node.kind in ("behind", "not_behind"):
            # (?<=ab|c) -> (?:(?<=ab)|(?<=c)); (?<!ab|c) -> (?<!ab)(?<!c)
            parts = [("(?<=" if node.kind == "behind" else "(?<!") + _emit(branch) + ")"
                     for branch in _lookbehind_branches(node.body)]
            return "(?:" + "|".join(parts) + ")" if node.kind == "behind" else "".join(parts)
        opening = {"atomic": "(?>", "ahead": "(?=", "not_ahead": "(?!"}.get(node.kind, "(?:")
        return opening + _emit(node.body) + ")"
    word = _emit_chars(_table("ONIG_WORD"))
    return {"bol": "^", "eol": "$", "start": "\\A", "end": "\\Z", "end_newline": "(?=\\n?\\Z)",
            "word": f"(?:(?<={word})(?!{word})|(?<!{word})(?={word}))",
            "not_word": f"(?:(?<={word})(?={word})|(?<!{word})(?!{word}))"}[node.kind]


def _emit_atom(node):
    """`node` as something a quantifier can follow."""
    text = _emit(node)
    if isinstance(node, Chars) or (isinstance(node, Group)):
        return text
    return f"(?:{text})"


# --- the compiled pattern ------------------------------------------------------------------------

class Regex:
    """A compiled Oniguruma pattern: `finditer(text)` and `sub(repl, text)` with the
    reference's matches (including where it allows empty matches)."""

    def __init__(self, pattern, tree):
        self.pattern = pattern
        self.tree = tree
        self.compiled = re.compile(_emit(tree), re.MULTILINE)
        self.can_be_empty = _nullable(tree)

    def spans(self, text):
        """[(start, end), ...] of the matches, as Oniguruma's find_iter gives them: an empty
        match right where the previous match ended is skipped."""
        if not self.can_be_empty:
            return [match.span() for match in self.compiled.finditer(text)]
        spans, position, last_end = [], 0, None
        search = self.compiled.search
        while position <= len(text):
            match = search(text, position)
            if match is None:
                break
            start, end = match.span()
            if start == end and end == last_end:
                position = start + 1
                continue
            spans.append((start, end))
            last_end = position = end
        return spans

    def finditer(self, text):
        return iter(_Match(text, span) for span in self.spans(text))

    def search(self, text):
        spans = self.spans(text)
        return _Match(text, spans[0]) if spans else None

    def sub(self, replacement, text):
        pieces, last = [], 0
        for start, end in self.spans(text):
            pieces.append(text[last:start])
            pieces.append(replacement)
            last = end
        pieces.append(text[last:])
        return "".join(pieces)


class _Match:
    __slots__ = ("_text", "_span")

    def __init__(self, text, span):
        self._text, self._span = text, span

    def span(self):
        return self._span

    def start(self):
        return self._span[0]

    def end(self):
        return self._span[1]

    def group(self):
        return self._text[self._span[0]:self._span[1]]


def parse(pattern, where="pattern"):
    """An Oniguruma pattern -> its tree (PatternError naming `where` if invalid or unsupported)."""
    if not isinstance(pattern, str):
        raise PatternError(f"{where} is not a string")
    return _Parser(pattern, where).parse()


def check(tree, pattern, where="pattern"):
    """PatternError when `tree` could backtrack for ever (rules 1-3 of the module docstring)."""
    def refuse(reason):
        raise PatternError(f"{where} {reason}; refused: {pattern!r:.80}")
    _check(tree, [], refuse)


@lru_cache(maxsize=256)
def _compile(pattern, where):
    tree = parse(pattern, where)
    check(tree, pattern, where)
    return Regex(pattern, tree)


@lru_cache(maxsize=256)
def literal(text):
    """A Regex matching `text` literally (an empty text matches nothing, as in the reference)."""
    tree = Seq(tuple(Chars(((ord(c), ord(c)),)) for c in text)) if text else Chars(())
    return Regex(text, tree)


def compile(pattern, where="pattern"):
    """An Oniguruma pattern -> Regex, or PatternError (a ValueError) naming `where`."""
    return _compile(pattern, where)
