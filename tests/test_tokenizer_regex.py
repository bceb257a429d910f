"""Split / Replace regexes: Oniguruma's matches (as Rust `tokenizers` runs them), and no pattern
that can backtrack for ever (transformer/tokenizer/onig.py)."""

import json
import time

import pytest

from transformer.files import ModelFileError
from transformer.tokenizer import Tokenizer, onig
from transformer.tokenizer import pre_tokenizers as ours

tokenizers = pytest.importorskip("tokenizers")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tokenizers import Regex  # noqa: E402
from tokenizers import pre_tokenizers as P  # noqa: E402

QWEN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+")
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

TEXTS = ["Hello's WORLD  12345\n\n  x ", "I'LL don't  ſ'S 'Ve\r\n\t tab", "Ünïcödé ΚΑΛΗΜΈΡΑ κόσμε 中文字 ١٢٣٤ ½",
         "e\u0301 👩‍👩‍👧 #️⃣ a\u200bb \u3000 x\u2028y", "    ", "", "a", "1234567 89", "!!!...??? ", "naïve café"]


def _same_split(pattern, behavior="isolated", texts=TEXTS):
    reference, mine = P.Split(Regex(pattern), behavior), ours.Split(pattern, behavior, False, True)
    for text in texts:
        assert mine.pre_tokenize_str(text) == reference.pre_tokenize_str(text), (pattern, text)


def _file_with(minilm_dir, **stages):
    data = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data.update(stages)
    return json.dumps(data)


# --- issue 19: \p{L} / \p{N} in a Split pre-tokenizer ---------------------------------------------

def test_split_with_unicode_classes_loads_and_matches_the_reference(minilm_dir):
    """A Split pattern using \\p{L} and \\p{N} crashed at load (NameError: _L)."""
    text = _file_with(minilm_dir, normalizer=None, pre_tokenizer={
        "type": "Split", "pattern": {"Regex": QWEN}, "behavior": "Isolated", "invert": False})
    reference, mine = tokenizers.Tokenizer.from_str(text), Tokenizer.from_str(text)
    for tok in (reference, mine):
        tok.no_padding()
        tok.no_truncation()
    assert [e.ids for e in mine.encode_batch(TEXTS)] == [e.ids for e in reference.encode_batch(TEXTS)]


@pytest.mark.parametrize("pattern", [QWEN, LLAMA3, GPT4O, GPT2], ids=["qwen2", "llama3", "gpt4o", "gpt2"])
def test_real_split_patterns_match_the_reference(pattern):
    _same_split(pattern)


# --- Oniguruma semantics -------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, text", [
    (r"^a", "a\nab\ra"),            # ^ and $ are line anchors (Ruby syntax)
    (r"a$", "a\na\ra"),
    (r"a\Z", "a\na\n"),             # \Z: the end, or before a final newline
    (r"\h+", "0aGz \t"),            # \h is a hex digit
    (r"(?i)s", "sSſ"),              # (?i)s also matches ſ (U+017F), but (?i)i not İ or ı
    (r"(?i)i", "iIİı"),
    (r"a(?i)b|c", "ac aC AB aB"),   # (?i) runs to the end of the group, across the |
    (r"", "ab"),                    # empty matches split too
    (r"x*", "axxb"),
    (r"[a-z&&[^aeiou]]+", "abcde"),  # class intersection
    (r"\p{Lu}\p{Ll}+", "aAbcÉté"),
    (r"\R", "a\r\nb\nc\rd\x85e"),
    (r"\bx", "ax x_x"),
    (r"a{ 2}", "a{ 2}"),            # not an interval: literal braces
    (r"(?<=ab|c)d", "abd cd"),
])
def test_oniguruma_semantics_match_the_reference(pattern, text):
    for behavior in ("isolated", "removed", "contiguous", "merged_with_previous", "merged_with_next"):
        _same_split(pattern, behavior, [text])


# --- patterns that could backtrack for ever are refused -------------------------------------------

def test_the_reference_gives_up_on_a_catastrophic_replace_pattern(minilm_dir):
    """Oniguruma backtracks (a+)+$ exponentially too, stops after its retry limit and panics."""
    text = _file_with(minilm_dir, normalizer={"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "x"})
    reference = tokenizers.Tokenizer.from_str(text)
    with pytest.raises(BaseException, match="retry-limit"):
        reference.encode("a" * 28 + "b")


def test_a_catastrophic_replace_pattern_is_refused_at_load(minilm_dir):
    text = _file_with(minilm_dir, normalizer={"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "x"})
    with pytest.raises(ModelFileError, match=r"normalizer.pattern repeats a repetition .*exponential"):
        Tokenizer.from_str(text)


def test_a_catastrophic_split_pattern_is_refused_at_load(minilm_dir):
    text = _file_with(minilm_dir, pre_tokenizer={"type": "Split", "pattern": {"Regex": r"(\w+\s?)+$"},
                                                "behavior": "Isolated", "invert": False})
    with pytest.raises(ModelFileError, match=r"pre_tokenizer.pattern repeats a repetition"):
        Tokenizer.from_str(text)


@pytest.mark.parametrize("pattern, reason", [
    (r"(a+)+$", "repeats a repetition"),
    (r"(a*)*b", "repeats a repetition"),
    (r"(a|ab)*c", "fixed run of single characters"),
    (r"(?:a|aa)*b", "fixed run of single characters"),
    (r"a*a*b", "two repetitions"),
    (r"\s*\s*x", "two repetitions"),
    (r"(a)\1", "backreference"),
    (r"(?<=a+)b", "lookbehind whose width is not fixed"),
    (r"\p{Greek}", r"property \\p\{Greek\}"),
    (r"a\Kb", r"\\K"),
])
def test_unsafe_or_unsupported_patterns_are_refused_with_a_reason(pattern, reason):
    with pytest.raises(onig.PatternError, match=reason):
        onig.compile(pattern, "pre_tokenizer.pattern")


@pytest.mark.parametrize("pattern", [QWEN, LLAMA3, GPT4O, GPT2])
def test_real_patterns_run_in_linear_time_on_long_runs(pattern):
    """100,000 characters of each kind of run in well under a second (quadratic would take minutes)."""
    regex = onig.compile(pattern)
    for run in (" " * 100_000 + "x", "a" * 100_000, "1" * 100_000, "!" * 100_000 + " ", " \n" * 50_000):
        start = time.perf_counter()
        regex.spans(run)
        assert time.perf_counter() - start < 5.0


# --- random patterns against the reference ---------------------------------------------------------

_ATOMS = ["a", "b", "x", " ", "\\n", ".", "\\s", "\\S", "\\w", "\\W", "\\d", "\\h", "\\p{L}", "\\p{N}", "\\p{Lu}",
          "\\P{L}", "[ab]", "[^a]", "[a-c&&[^b]]", "[\\s\\d]", "[\\p{L}x]", "(?i:a)", "(?i)a", "'s", "é", "\\x41",
          "\\u00e9", "\\t", "[-a]", "[]a]", "\\R", "(?i:ss)", "(?m:.)"]
_ANCHORS = ["^", "$", "\\A", "\\z", "\\Z", "\\b", "\\B", "(?=a)", "(?!a)", "(?<=a)", "(?<!b)"]
_QUANTIFIERS = ["", "", "", "*", "+", "?", "{1,3}", "{2}", "{,2}", "{2,}", "*?", "+?", "??", "++", "*+"]


def _patterns(depth=2):
    item = st.one_of(st.tuples(st.sampled_from(_ATOMS), st.sampled_from(_QUANTIFIERS)).map("".join),
                     st.sampled_from(_ANCHORS))
    if depth > 0:
        group = st.builds(lambda inner, q, kind: f"({kind}{inner}){q}", _patterns(depth - 1),
                          st.sampled_from(_QUANTIFIERS[:6]), st.sampled_from(["?:", "", "?>", "?i:"]))
        item = st.one_of(item, group)
    return st.lists(st.lists(item, max_size=4).map("".join), min_size=1, max_size=3).map("|".join)


_TEXTS = st.text(st.sampled_from(list("abxAB é1٣ \n\r\t'sSſKk_-")), max_size=14)


def test_random_patterns_match_the_reference():
    """Random patterns over the supported syntax: each is refused by both, refused by us as
    unsafe, or splits random texts exactly as the reference does (every behaviour)."""
    outcomes = {"same": 0, "unsafe": 0}

    @settings(max_examples=600, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(_patterns(), st.lists(_TEXTS, min_size=3, max_size=3),
           st.sampled_from(["isolated", "removed", "contiguous", "merged_with_previous", "merged_with_next"]))
    def check(pattern, texts, behavior):
        try:
            reference = P.Split(Regex(pattern), behavior)
        except Exception:
            with pytest.raises(onig.PatternError):
                onig.compile(pattern)
            return
        try:
            mine = ours.Split(pattern, behavior, False, True)
        except onig.PatternError as error:
            assert "time" in str(error), f"{pattern!r} refused: {error}"
            outcomes["unsafe"] += 1
            return
        for text in texts:
            assert mine.pre_tokenize_str(text) == reference.pre_tokenize_str(text), (pattern, behavior, text)
        outcomes["same"] += 1

    check()
    assert outcomes["same"] >= 200, outcomes
