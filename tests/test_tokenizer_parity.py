"""Id-for-id parity with Rust `tokenizers` 0.23.3 on four tokenizers, >= 10,000 inputs each.

Every input is compared field by field: ids, tokens, type_ids, attention_mask, offsets (character
spans in the original text), word_ids, special_tokens_mask, and the overflowing windows.

Inputs (deterministic): real multilingual text (tests/tokenizer_data/multilingual.txt plus Faker
text, names and addresses in ~45 locales), adversarial strings generated with hypothesis
(control/format characters, combining marks, CJK incl. extension planes, emoji ZWJ sequences and
flags, RTL scripts, fullwidth forms, 100+ character words, whitespace runs, special tokens inside
text, any code point), pairs, and truncation / padding / stride combinations.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")
hypothesis = pytest.importorskip("hypothesis")
faker = pytest.importorskip("faker")
from tokenizer_inputs import (  # noqa: E402
    SPECIAL_STRINGS, adversarial as draw_adversarial, assert_same as _assert_same, compare_truncation_settings)

DATA = Path(__file__).parent / "tokenizer_data"


# --- the four tokenizers, each as (ours, reference) -------------------------------------------

def _pair_from_json(path):
    reference = tokenizers.Tokenizer.from_file(str(path))
    ours = Tokenizer.from_file(path)
    for tok in (reference, ours):
        tok.no_truncation()
        tok.no_padding()
    return ours, reference


@pytest.fixture(scope="module")
def roberta_json(tmp_path_factory, gpt2_tokenizer_dir):
    """A RoBERTa-style tokenizer built with `tokenizers` itself: GPT-2's BPE, <s> A </s> template,
    add_prefix_space, <mask> with lstrip."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

    bpe = models.BPE.from_file(str(gpt2_tokenizer_dir / "vocab.json"), str(gpt2_tokenizer_dir / "merges.txt"))
    tok = tokenizers.Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=True)
    path = tmp_path_factory.mktemp("roberta") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_pairs(minilm_dir, mpnet_dir, gpt2_tokenizer_dir, roberta_json):
    from transformers import GPT2TokenizerFast

    gpt2_reference = GPT2TokenizerFast.from_pretrained(str(gpt2_tokenizer_dir)).backend_tokenizer
    gpt2_reference.no_truncation()
    gpt2_reference.no_padding()
    return {
        "all-MiniLM-L6-v2": _pair_from_json(minilm_dir / "tokenizer.json"),
        "all-mpnet-base-v2": _pair_from_json(mpnet_dir / "tokenizer.json"),
        # GPT-2 from vocab.json + merges.txt: ours reads the files, the reference is what
        # transformers' fast tokenizer builds from the same files.
        "gpt2": (Tokenizer.from_pretrained(gpt2_tokenizer_dir), gpt2_reference),
        "roberta": _pair_from_json(roberta_json),
    }


NAMES = ["all-MiniLM-L6-v2", "all-mpnet-base-v2", "gpt2", "roberta"]


# --- the inputs -------------------------------------------------------------------------------

FAKER_LOCALES = ["ja_JP", "zh_CN", "zh_TW", "ru_RU", "ar_AA", "he_IL", "hi_IN", "th_TH", "ko_KR", "el_GR",
                 "fa_IR", "hy_AM", "ka_GE", "bn_BD", "ta_IN", "uk_UA", "vi_VN", "tr_TR", "pl_PL", "de_DE",
                 "fr_FR", "cs_CZ", "ne_NP", "en_US", "es_ES", "pt_BR", "it_IT", "sv_SE", "hu_HU", "ro_RO",
                 "id_ID", "az_AZ", "bg_BG", "lt_LT", "lv_LV", "et_EE", "sk_SK", "sl_SI", "hr_HR", "da_DK",
                 "fi_FI", "no_NO", "nl_NL", "ga_IE", "en_IN"]


@pytest.fixture(scope="module")
def multilingual():
    """~3,000 lines of real text in many scripts (deterministic: fixed Faker seeds)."""
    from faker import Faker

    texts = [line for line in (DATA / "multilingual.txt").read_text(encoding="utf-8").split("\n") if line]
    for index, locale in enumerate(FAKER_LOCALES):
        fake = Faker(locale)
        fake.seed_instance(1234 + index)
        for _ in range(22):
            texts.append(fake.text(max_nb_chars=200))
            texts.append(fake.address())
            texts.append(f"{fake.name()}, {fake.job()} — {fake.company()}")
    return texts


@pytest.fixture(scope="module")
def adversarial():
    """6,000 adversarial strings: hypothesis draws 300 batches of 20 distinct strings, each
    1-8 fragments joined."""
    return draw_adversarial(6000)


# --- the tests --------------------------------------------------------------------------------

def test_the_inputs_number_over_ten_thousand_per_tokenizer(multilingual, adversarial):
    pairs, truncated = 1000, 12 * 100  # see the pair and truncation tests below
    assert len(multilingual) + len(adversarial) + pairs + truncated >= 10_000


@pytest.mark.parametrize("name", NAMES)
def test_multilingual_text_matches_reference(name, tokenizer_pairs, multilingual):
    ours, reference = tokenizer_pairs[name]
    _assert_same(ours.encode_batch(multilingual), reference.encode_batch(multilingual), multilingual)


@pytest.mark.parametrize("name", NAMES)
def test_adversarial_text_matches_reference(name, tokenizer_pairs, adversarial):
    ours, reference = tokenizer_pairs[name]
    _assert_same(ours.encode_batch(adversarial), reference.encode_batch(adversarial), adversarial)


@pytest.mark.parametrize("name", NAMES)
def test_pairs_match_reference(name, tokenizer_pairs, multilingual, adversarial):
    ours, reference = tokenizer_pairs[name]
    firsts = (multilingual + adversarial)[:1000]
    seconds = (adversarial[::-1] + multilingual)[:1000]
    _assert_same(ours.encode_batch(firsts, seconds),
                 reference.encode_batch(list(zip(firsts, seconds))), list(zip(firsts, seconds)))


@pytest.mark.parametrize("name", NAMES)
def test_truncation_padding_and_stride_match_reference(name, tokenizer_pairs, multilingual, adversarial):
    ours, reference = tokenizer_pairs[name]
    checked, refused = compare_truncation_settings(ours, reference, multilingual + adversarial, 100, "[PAD]")
    assert checked + refused == 1200 and checked >= 1000


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_call_arrays_equal_the_reference_rows(name, tokenizer_pairs, multilingual):
    """tok(texts, padding=True, truncation=True, max_length, stride, return_overflowing_tokens)
    gives the reference's encodings (each followed by its overflowing windows) as int64 arrays."""
    ours, reference = tokenizer_pairs[name]
    texts = multilingual[:300]
    reference.enable_truncation(24, stride=6)
    reference.enable_padding(pad_id=ours.pad_token_id, pad_token=ours.id_to_token(ours.pad_token_id))
    try:
        encodings = reference.encode_batch(texts)
    finally:
        reference.no_truncation()
        reference.no_padding()
    rows = [row for e in encodings for row in [e] + list(e.overflowing)]
    sample = [i for i, e in enumerate(encodings) for _ in range(1 + len(e.overflowing))]
    batch = ours(texts, padding=True, truncation=True, max_length=24, stride=6, return_overflowing_tokens=True,
                 return_offsets_mapping=True)
    assert all(array.dtype == np.int64 for array in batch.values())
    np.testing.assert_array_equal(batch["input_ids"], [r.ids for r in rows])
    np.testing.assert_array_equal(batch["attention_mask"], [r.attention_mask for r in rows])
    np.testing.assert_array_equal(batch["token_type_ids"], [r.type_ids for r in rows])
    np.testing.assert_array_equal(batch["offset_mapping"], [r.offsets for r in rows])
    np.testing.assert_array_equal(batch["overflow_to_sample_mapping"], sample)


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_reference(name, tokenizer_pairs, multilingual):
    ours, reference = tokenizer_pairs[name]
    for text in multilingual[:500]:
        ids = reference.encode(text).ids
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("name", ["gpt2", "roberta"])
def test_byte_level_decode_round_trips_the_text(name, tokenizer_pairs, multilingual):
    ours, _ = tokenizer_pairs[name]
    for text in multilingual[:500]:
        if any(s in text for s in SPECIAL_STRINGS):
            continue
        decoded = ours.decode(ours.encode(text).ids)
        assert decoded == (text if name == "gpt2" or text.startswith(" ") else " " + text)


def test_stored_truncation_and_padding_apply_to_encode_like_the_reference(minilm_dir):
    reference = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    ours = Tokenizer.from_pretrained(minilm_dir)
    text = "word " * 300
    assert ours.encode(text).ids == reference.encode(text).ids
    assert len(ours.encode("short").ids) == 128  # Fixed(128) padding from the file
