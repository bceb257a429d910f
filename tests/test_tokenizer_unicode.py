"""The Unicode tables shipped in transformer/tokenizer/unicode_tables.py still describe the reference.

Rust `tokenizers` mixes Unicode versions (see docs/tokenizer.md); the tables were probed from it.
These tests re-probe a sample of every table against the reference, and pin the known places
where the reference and Python's `unicodedata` disagree.
"""

import unicodedata

import pytest

from transformer.tokenizer import normalizers, pre_tokenizers
from transformer.tokenizer.unicode import code_point_ranges

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import normalizers as N  # noqa: E402
from tokenizers import pre_tokenizers as P  # noqa: E402

# Every 7th code point of the BMP and of plane 1, plus planes 2-3 sparsely: ~20k probes.
SAMPLE = [c for c in list(range(0, 0x20000, 7)) + list(range(0x20000, 0x40000, 97)) + list(range(0xE0000, 0xE0200))
          if not 0xD800 <= c <= 0xDFFF]


def test_bert_normalizer_matches_reference_one_code_point_at_a_time():
    ours, reference = normalizers.BertNormalizer(), N.BertNormalizer()
    for c in SAMPLE:
        text = "A" + chr(c) + "b"
        assert ours.normalize_str(text) == reference.normalize_str(text), hex(c)


def test_bert_pre_tokenizer_matches_reference_one_code_point_at_a_time():
    ours, reference = pre_tokenizers.BertPreTokenizer(), P.BertPreTokenizer()
    for c in SAMPLE:
        text = "a" + chr(c) + "b"
        assert ours.pre_tokenize_str(text) == reference.pre_tokenize_str(text), hex(c)


def test_byte_level_split_matches_reference_one_code_point_at_a_time():
    ours, reference = pre_tokenizers.ByteLevel(add_prefix_space=False), P.ByteLevel(add_prefix_space=False)
    for c in SAMPLE:
        text = "a" + chr(c) + " 1" + chr(c)
        assert ours.pre_tokenize_str(text) == reference.pre_tokenize_str(text), hex(c)


def test_new_punctuation_is_not_punctuation_to_the_reference():
    # U+2E4F CORNISH VERSE DIVIDER (Unicode 11) is Po to Python, unknown to the reference's
    # unicode_categories tables, so BertPreTokenizer keeps it inside the word.
    assert unicodedata.category("\u2e4f") == "Po"
    text = "a\u2e4fb"
    assert P.BertPreTokenizer().pre_tokenize_str(text) == [(text, (0, 3))]
    assert pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text) == [(text, (0, 3))]


def test_new_marks_survive_strip_accents_and_keep_their_place_like_the_reference():
    # U+10D27 HANIFI ROHINGYA SIGN TASSI (Unicode 11): Mn with combining class 230 to Python,
    # an ordinary character (class 0, not Mn) to the reference.
    assert unicodedata.category("\U00010d27") == "Mn" and unicodedata.combining("\U00010d27") == 230
    text = "i\u030d\U00010d27\u20d2\u0612"
    assert N.BertNormalizer().normalize_str(text) == "i\U00010d27"
    assert normalizers.BertNormalizer().normalize(text, 0) == ("i\U00010d27", [0, 2])


def test_lowercase_follows_the_reference_for_newer_capitals():
    # U+A7CB LATIN CAPITAL LETTER RAMS HORN (Unicode 16): Python 3.11 (Unicode 14) leaves it.
    assert N.Lowercase().normalize_str("\ua7cb") == "\u0264"
    assert normalizers.Lowercase().normalize_str("\ua7cb") == "\u0264"


def test_lowercase_has_no_final_sigma_rule_like_the_reference():
    assert "ΟΔΟΣ".lower() == "οδος"  # Python's str.lower applies the final-sigma rule
    assert normalizers.Lowercase().normalize_str("ΟΔΟΣ") == N.Lowercase().normalize_str("ΟΔΟΣ") == "οδοσ"


def test_tables_are_sorted_disjoint_ranges():
    from transformer.tokenizer import unicode_tables

    for name in ("BERT_CONTROL", "WHITESPACE", "CHINESE", "BERT_PUNCTUATION", "NONSPACING_MARK", "ONIG_LETTER",
                 "ONIG_NUMBER", "ONIG_SPACE", "RUST_WORD", "NUMERIC", "PUNCTUATION"):
        ranges = code_point_ranges(name)
        assert all(a <= b for a, b in ranges)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:])), name
    assert unicode_tables.REFERENCE_VERSION == tokenizers.__version__
