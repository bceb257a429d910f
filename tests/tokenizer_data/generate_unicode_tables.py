"""Regenerate transformer/tokenizer/unicode_tables.py by asking the reference, Rust `tokenizers`.

The reference does not use one Unicode version: its BERT normalizer and BertPreTokenizer read the
`unicode_categories` crate (old tables), lowercasing uses Rust's std (new tables), the byte-level
split pattern runs in Oniguruma and `Whitespace` in the `regex` crate (each with its own tables).
Python's `unicodedata` matches none of them exactly. So we probe the reference one code point at
a time and store what it does:

* character classes as full range lists (independent of the Python version that runs us);
* lowercase / NFD mappings only where they differ from this Python's `unicodedata`
  (the version is recorded; tests/test_tokenizer_unicode.py re-checks every code point).

Run:  .venv/bin/python tests/tokenizer_data/generate_unicode_tables.py   (about 30 s)
"""

import sys
import unicodedata
from pathlib import Path

import tokenizers
from tokenizers import Regex
from tokenizers import normalizers as N
from tokenizers import pre_tokenizers as P

OUT = Path(__file__).resolve().parents[2] / "transformer" / "tokenizer" / "unicode_tables.py"
sys.path.insert(0, str(OUT.parents[2]))  # build_charsmap, to make probe charsmaps
CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def ranges(code_points):
    """Sorted code points -> [(first, last), ...] of consecutive runs."""
    runs = []
    for c in sorted(code_points):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return runs


def encode_ranges(code_points):
    """-> "0-8 e-1f 7f-9f ..." (hex, inclusive): compact and easy to read back."""
    return " ".join(f"{a:x}" if a == b else f"{a:x}-{b:x}" for a, b in ranges(code_points))


def probe():
    clean = N.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    chinese = N.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    strip = N.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    lower = N.Lowercase()
    nfd = N.NFD()
    bert_pre = P.BertPreTokenizer()
    punctuation = P.Punctuation()
    whitespace = P.Whitespace()
    digits = P.Digits(individual_digits=False)
    onig_letter = P.Split(Regex(r"\p{L}"), "removed")
    onig_number = P.Split(Regex(r"\p{N}"), "removed")
    onig_space = P.Split(Regex(r"\s"), "removed")

    sets = {name: [] for name in (
        "BERT_CONTROL", "WHITESPACE", "CHINESE", "BERT_PUNCTUATION", "NONSPACING_MARK",
        "PUNCTUATION", "RUST_WORD", "RUST_SPACE", "NUMERIC", "ONIG_LETTER", "ONIG_NUMBER", "ONIG_SPACE")}
    lowercase, decomposition = {}, {}
    for c in CODE_POINTS:
        ch = chr(c)
        if clean.normalize_str(ch) == "":
            sets["BERT_CONTROL"].append(c)
        if len(bert_pre.pre_tokenize_str("a" + ch + "a")) == 2:
            sets["WHITESPACE"].append(c)
        elif len(bert_pre.pre_tokenize_str("a" + ch + "a")) == 3:
            sets["BERT_PUNCTUATION"].append(c)
        if chinese.normalize_str(ch) != ch:
            sets["CHINESE"].append(c)
        decomposed = nfd.normalize_str(ch)
        if decomposed == ch and strip.normalize_str(ch) == "":
            sets["NONSPACING_MARK"].append(c)
        if decomposed != unicodedata.normalize("NFD", ch):
            decomposition[c] = decomposed
        lowered = lower.normalize_str(ch)
        if lowered != ch.lower():
            lowercase[c] = lowered
        if len(punctuation.pre_tokenize_str("a" + ch + "a")) == 3:
            sets["PUNCTUATION"].append(c)
        pieces = whitespace.pre_tokenize_str("a" + ch)
        if len(pieces) == 1 and pieces[0][0] == "a" + ch:
            sets["RUST_WORD"].append(c)
        elif len(pieces) == 1:
            sets["RUST_SPACE"].append(c)
        if len(digits.pre_tokenize_str("a" + ch)) == 2:
            sets["NUMERIC"].append(c)
        if not onig_letter.pre_tokenize_str(ch):
            sets["ONIG_LETTER"].append(c)
        if not onig_number.pre_tokenize_str(ch):
            sets["ONIG_NUMBER"].append(c)
        if not onig_space.pre_tokenize_str(ch):
            sets["ONIG_SPACE"].append(c)
    return sets, lowercase, decomposition


CATEGORIES = ("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf",
              "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Co")


def probe_onig_classes():
    """Oniguruma's general category of every code point (Cn, unassigned, left out) and its \\w,
    by splitting one string of all code points on \\p{Xx} (and \\w)."""
    text = "".join(map(chr, CODE_POINTS))

    def matched(pattern):
        unmatched = bytearray(len(CODE_POINTS))
        for _, (start, end) in P.Split(Regex(pattern), "removed").pre_tokenize_str(text):
            unmatched[start:end] = b"\x01" * (end - start)
        return [c for c, miss in zip(CODE_POINTS, unmatched) if not miss]

    category = {}
    for name in CATEGORIES:
        for c in matched(rf"\p{{{name}}}"):
            assert c not in category, (hex(c), name, category[c])
            category[c] = name
    runs = []
    for c in sorted(category):
        if runs and runs[-1][1] == c - 1 and runs[-1][2] == category[c]:
            runs[-1][1] = c
        else:
            runs.append([c, c, category[c]])
    encoded = " ".join((f"{a:x}" if a == b else f"{a:x}-{b:x}") + f":{name}" for a, b, name in runs)
    return encoded, matched(r"\w")


GRAPHEME_CLASSES = ("CR", "LF", "Control", "Extend", "ZWJ", "Regional_Indicator", "Prepend", "SpacingMark", "L",
                    "V", "T", "LV", "LVT")


def grapheme_tables():
    """Grapheme_Cluster_Break, Extended_Pictographic and Indic_Conjunct_Break of every code
    point, for the extended grapheme clusters the reference's Precompiled normalizer walks
    (Rust unicode-segmentation). Read from the `regex` module's Unicode data (a test
    dependency, a newer Unicode than the reference's), then corrected by asking the reference
    where it matters (clusters under 6 bytes, which Precompiled looks up whole):

    * what extends a cluster (Extend, ZWJ, SpacingMark): "a" + c with a charsmap {"a": "A"}
      gives "A" exactly when c joins a's cluster;
    * Prepend: c + "b" with a charsmap {c: "X"} gives "X" exactly when c prepends.
    """
    import base64

    import regex

    from transformer.tokenizer.precompiled import build_charsmap

    text = "".join(map(chr, CODE_POINTS))

    def members(pattern):
        return [ord(ch) for ch in regex.findall(pattern, text)]

    joins = N.Precompiled(base64.b64decode(build_charsmap({"a": "A"})))
    extends = {c for c in CODE_POINTS if joins.normalize_str("a" + chr(c)) == "A"}
    candidates = set(members(r"\p{Grapheme_Cluster_Break=Prepend}")) | set(members(r"\p{Cf}"))
    candidates -= {0}
    prepends_probe = N.Precompiled(base64.b64decode(build_charsmap({chr(c): "X" for c in candidates})))
    prepends = {c for c in candidates if prepends_probe.normalize_str(chr(c) + "b") == "X"}
    runs = []
    for name in GRAPHEME_CLASSES:
        code_points = set(members(rf"\p{{Grapheme_Cluster_Break={name}}}"))
        if name in ("Extend", "ZWJ", "SpacingMark"):
            code_points &= extends
        elif name == "Prepend":
            code_points = prepends
        runs.extend((a, b, name) for a, b in ranges(code_points))
    runs.sort()
    encoded = " ".join((f"{a:x}" if a == b else f"{a:x}-{b:x}") + f":{name}" for a, b, name in runs)
    return {"GRAPHEME_BREAK": encoded, "EXTENDED_PICTOGRAPHIC": encode_ranges(members(r"\p{Extended_Pictographic}")),
            "INCB_LINKER": encode_ranges(members(r"\p{InCB=Linker}")),
            "INCB_CONSONANT": encode_ranges(members(r"\p{InCB=Consonant}")),
            "INCB_EXTEND": encode_ranges(members(r"\p{InCB=Extend}"))}


def probe_combining_classes():
    """class -> code points, for every mark the reference's NFD reorders (it may know fewer
    marks than this Python: the others are starters, class 0, to it)."""
    nfd = N.NFD()
    classes = {}
    for c in CODE_POINTS:
        python_class = unicodedata.combining(chr(c))
        if python_class == 0:
            continue
        # A mark of class > 1 after one of class 1 moves in front of it only if the reference
        # knows its class; a class-1 mark moves in front of a class-220 one likewise.
        low, high = ("\u0334", chr(c)) if python_class > 1 else ("\u0316", chr(c))
        reordered = nfd.normalize_str("a" + high + low) if python_class > 1 else nfd.normalize_str("a" + low + high)
        expected_reordered = ("a" + unicodedata.normalize("NFD", low + high)) if python_class > 1 else \
            ("a" + unicodedata.normalize("NFD", high + low))
        if python_class > 1:
            known = reordered.index("\u0334") < reordered.index(unicodedata.normalize("NFD", high)[0])
        else:
            known = reordered.index(unicodedata.normalize("NFD", high)[0]) < reordered.index("\u0316")
        del expected_reordered
        if known:
            classes.setdefault(python_class, []).append(c)
    return classes


DESCRIPTIONS = {
    "BERT_CONTROL": "removed by BertNormalizer(clean_text): NUL, U+FFFD and what the reference calls control",
    "WHITESPACE": "Rust char::is_whitespace (BertNormalizer maps these to ' ', BertPreTokenizer splits on them)",
    "CHINESE": "CJK ideographs that BertNormalizer(handle_chinese_chars) surrounds with spaces",
    "BERT_PUNCTUATION": "isolated by BertPreTokenizer (ASCII punctuation + the unicode_categories crate's P*)",
    "NONSPACING_MARK": "removed by strip_accents after NFD (the unicode_categories crate's Mn)",
    "PUNCTUATION": "isolated by the Punctuation pre-tokenizer",
    "RUST_WORD": "\\w of the Rust regex crate (the Whitespace pre-tokenizer)",
    "RUST_SPACE": "\\s of the Rust regex crate (the Whitespace pre-tokenizer)",
    "NUMERIC": "Rust char::is_numeric (the Digits pre-tokenizer)",
    "ONIG_LETTER": "\\p{L} of Oniguruma (the ByteLevel split pattern)",
    "ONIG_NUMBER": "\\p{N} of Oniguruma (the ByteLevel split pattern)",
    "ONIG_SPACE": "\\s of Oniguruma (the ByteLevel split pattern)",
    "ONIG_WORD": "\\w of Oniguruma (Split / Replace regexes)",
}


def main():
    sets, lowercase, decomposition = probe()
    categories, sets["ONIG_WORD"] = probe_onig_classes()
    classes = probe_combining_classes()
    lines = [
        '"""Unicode tables of the reference (Rust `tokenizers` %s), probed code point by code point.' % tokenizers.__version__,
        "",
        "GENERATED by tests/tokenizer_data/generate_unicode_tables.py: do not edit by hand.",
        "Ranges are inclusive hex code points. LOWERCASE and DECOMPOSITION list only the code points",
        "where the reference differs from Python's unicodedata %s (str.lower / NFD, one char at a time)." % unicodedata.unidata_version,
        '"""',
        "",
        f"REFERENCE_VERSION = {tokenizers.__version__!r}",
        f"PYTHON_UNIDATA_VERSION = {unicodedata.unidata_version!r}",
        "",
    ]
    for name, code_points in sets.items():
        lines.append(f"# {DESCRIPTIONS[name]}")
        lines.append(f"{name} = {encode_ranges(code_points)!r}")
        lines.append("")
    lines.append("# general category of every assigned code point to Oniguruma (Split / Replace regexes' \\p{..}):")
    lines.append("# 'first-last:Xx' runs, hex; code points not listed are unassigned (Cn) or surrogates (Cs)")
    lines.append(f"ONIG_CATEGORY = {categories!r}")
    lines.append("")
    lines.append("# extended grapheme clusters (UAX #29) for the Precompiled normalizer: Grapheme_Cluster_Break")
    lines.append("# as 'first-last:Class' runs (others: Other), Extended_Pictographic and Indic_Conjunct_Break ranges")
    for name, value in grapheme_tables().items():
        lines.append(f"{name} = {value!r}")
    lines.append("")
    lines.append("# canonical combining class -> the marks the reference's NFD gives that class (others: 0)")
    lines.append("COMBINING_CLASS = {")
    for value, code_points in sorted(classes.items()):
        lines.append(f"    {value}: {encode_ranges(code_points)!r},")
    lines.append("}")
    lines.append("")
    lines.append("# code point -> what the reference's lowercasing gives, where str.lower() differs")
    lines.append("LOWERCASE = {" + ", ".join(f"0x{c:x}: {v!r}" for c, v in sorted(lowercase.items())) + "}")
    lines.append("")
    lines.append("# code point -> the reference's NFD, where unicodedata.normalize('NFD') differs")
    lines.append("DECOMPOSITION = {" + ", ".join(f"0x{c:x}: {v!r}" for c, v in sorted(decomposition.items())) + "}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
