"""SentencePiece's normalizer as tokenizer.json stores it: `precompiled_charsmap`.

The charsmap is base64 of: a little-endian u32 N, then N bytes of a double-array trie (u32
units), then a string table of NUL-terminated replacements. The trie maps byte strings (the
UTF-8 of what to replace) to an offset in the table:

    unit   has_leaf = bit 8, label = low 8 bits (+ bit 31), offset = (unit >> 10) << (bit 9 ? 8 : 0)
    walk   pos = root.offset; for each byte b: pos ^= b; unit = array[pos]; stop unless
           label(unit) == b; pos ^= offset(unit); if has_leaf(unit): value = array[pos] & 0x7FFFFFFF

`transform(text)` gives the replacement of the *shortest* key that starts `text` (as the
reference's spm_precompiled crate does). The normalizer walks grapheme clusters: a cluster of
fewer than 6 bytes whose start is a key is replaced whole; otherwise each character is
looked up alone:

    >>> charsmap = build_charsmap({"\\uff21": "A", "e\\u0301": "\\u00e9", "\\r": " "})
    >>> Precompiled(charsmap).normalize_str("\\uff21\\u0301 e\\u0301 \\r\\n")
    'A é  '

(the fullwidth A takes its accent with it; CR LF is one cluster, replaced by CR's space.)
"""

import base64
import binascii
import struct

from .alignment import apply_changes
from .graphemes import boundaries

_VALUE_MASK = (1 << 31) - 1
_LABEL_MASK = (1 << 31) | 0xFF


class CharsmapError(ValueError):
    """A precompiled_charsmap that cannot be read."""


def parse_charsmap(encoded, where="precompiled_charsmap"):
    """The base64 text of a charsmap -> (trie units as a list of ints, the replacement table bytes)."""
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise CharsmapError(f"{where} is not base64 text") from None
    if len(blob) < 4:
        raise CharsmapError(f"{where} holds {len(blob)} bytes; expected at least the 4-byte trie size")
    (trie_size,) = struct.unpack_from("<I", blob, 0)
    units = trie_size // 4
    if 4 + 4 * units > len(blob):
        raise CharsmapError(f"{where} says its trie has {trie_size:,} bytes but only {len(blob) - 4:,} follow; "
                            "the charsmap is truncated")
    if units == 0:
        raise CharsmapError(f"{where} has an empty trie; expected at least its root")
    array = list(struct.unpack_from(f"<{units}I", blob, 4))
    table = blob[4 + 4 * units:]
    try:
        table.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CharsmapError(f"{where}'s replacement table is not UTF-8 (byte {error.start})") from None
    return array, table


def build_charsmap(mapping):
    """{text: replacement} -> the base64 charsmap (a small, unoptimized double array; for
    tests and examples: the inverse of parse_charsmap)."""
    table, offsets = b"", {}
    for replacement in sorted(set(mapping.values())):
        offsets[replacement] = len(table)
        table += replacement.encode("utf-8") + b"\0"
    keys = {key.encode("utf-8"): offsets[value] for key, value in mapping.items()}
    children = {}  # prefix -> set of next bytes
    for key in keys:
        for i in range(len(key)):
            children.setdefault(key[:i], set()).add(key[i])
    array = [0] * 1024
    used = {0}  # positions given to a unit (written or reserved)

    def place(prefix, node_pos):
        """An offset (a multiple of 256) for prefix's children and value: free slots, reserved."""
        labels = sorted(children.get(prefix, ()))
        offset = 256
        while True:
            base = node_pos ^ offset
            slots = [base] + [base ^ b for b in labels]
            if not used.intersection(slots):
                break
            offset += 256
        used.update(slots)
        while max(slots) >= len(array):
            array.extend([0] * 1024)
        return offset, base

    root_offset, root_base = place(b"", 0)
    array[0] = (root_offset >> 8) << 10 | (1 << 9)
    queue = [(b"", root_base)]
    while queue:
        prefix, base = queue.pop()
        for byte in sorted(children.get(prefix, ())):
            child = prefix + bytes([byte])
            position = base ^ byte
            offset, child_base = place(child, position)
            array[position] = byte | ((offset >> 8) << 10) | (1 << 9) | ((1 << 8) if child in keys else 0)
            if child in keys:
                array[child_base] = keys[child] | (1 << 31)
            queue.append((child, child_base))
    trie = struct.pack(f"<{len(array)}I", *array)
    return base64.b64encode(struct.pack("<I", len(trie)) + trie + table).decode("ascii")


class Precompiled:
    """The normalizer: `normalize(text, origin) -> (text, origin)` (see the module docstring)."""

    def __init__(self, charsmap, where="precompiled_charsmap"):
        self.charsmap = charsmap
        self.where = where
        self._array, self._table = parse_charsmap(charsmap, where)
        self._cache = {}
        self._needs = None  # the quick check's characters, found on first use

    def __repr__(self):
        return f"Precompiled({len(self._array):,} trie units, {len(self._table):,} bytes of replacements)"

    # A cut before a space that follows a letter is a cluster boundary, and clusters are looked
    # up on their own: the clusters before the cut normalize the same whatever follows.
    prefix_safe = True

    def transform(self, text):
        """The replacement for the shortest key that `text` starts with, or None."""
        cached = self._cache.get(text)
        if cached is not None or text in self._cache:
            return cached
        result = self._lookup(text.encode("utf-8"))
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[text] = result
        return result

    def _lookup(self, key):
        array = self._array
        try:
            unit = array[0]
            position = (unit >> 10) << ((unit & (1 << 9)) >> 6)
            for byte in key:
                if byte == 0:
                    return None
                position ^= byte
                unit = array[position]
                if unit & _LABEL_MASK != byte:
                    return None
                position ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
                if (unit >> 8) & 1:
                    start = array[position] & _VALUE_MASK
                    end = self._table.find(b"\0", start)
                    return self._table[start:end if end >= 0 else len(self._table)].decode("utf-8", "replace")
        except IndexError:
            raise ValueError(f"{self.where} is malformed: its trie points past its end") from None
        return None

    def normalize_str(self, text):
        return self.normalize(text, 0)[0]

    def _quick_check(self):
        """The characters that can make normalize change anything: the keys of one character,
        and what can join a grapheme cluster (marks, joiners, prepended characters, CR, Hangul
        jamo, regional indicators, pictographs). Text without any of them is returned as it
        is, without walking its clusters."""
        if self._needs is None:
            from .graphemes import joining_characters

            self._needs = frozenset(self._single_character_keys()) | joining_characters()
        return self._needs

    def _single_character_keys(self):
        """Every character that is a key by itself (walking the trie one UTF-8 character deep)."""
        array, keys = self._array, []

        def walk(position, prefix, remaining):
            for byte in (range(1, 256) if not prefix else range(0x80, 0xC0)):
                if not prefix and (0x80 <= byte < 0xC2 or byte > 0xF4):
                    continue  # not a UTF-8 lead byte
                child = position ^ byte
                if child >= len(array) or array[child] & _LABEL_MASK != byte:
                    continue
                unit = array[child]
                below = child ^ ((unit >> 10) << ((unit & (1 << 9)) >> 6))
                size = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
                left = (size - 1) if not prefix else remaining - 1
                if left == 0:
                    if (unit >> 8) & 1:
                        keys.append(bytes(prefix + [byte]).decode("utf-8", "replace"))
                else:
                    walk(below, prefix + [byte], left)

        unit = array[0]
        walk((unit >> 10) << ((unit & (1 << 9)) >> 6), [], 0)
        return keys

    def normalize(self, text, origin):
        if not text or self._quick_check().isdisjoint(text):
            return text, origin
        stream, modified = [], False
        cuts = boundaries(text)
        for start, end in zip(cuts, cuts[1:]):
            cluster = text[start:end]
            if len(cluster.encode("utf-8")) < 6:
                replacement = self.transform(cluster)
                if replacement is not None:
                    modified = True
                    _replace(stream, cluster, replacement)
                    continue
            for char in cluster:
                replacement = self.transform(char)
                if replacement is not None:
                    modified = True
                    _replace(stream, char, replacement)
                else:
                    stream.append((char, 0))
        if not modified:
            return text, origin
        return apply_changes(origin, len(text), stream)


def _replace(stream, old, new):
    """Append `new` for `old` to a (char, change) stream with the reference's alignment: extra
    new characters are inserted (change 1); fewer make the last one consume the rest."""
    stream.extend((char, 0) for char in new)
    diff = len(new) - len(old)
    if diff > 0:
        for index in range(len(stream) - diff, len(stream)):
            stream[index] = (stream[index][0], 1)
    elif diff < 0 and stream:
        stream[-1] = (stream[-1][0], stream[-1][1] + diff)
