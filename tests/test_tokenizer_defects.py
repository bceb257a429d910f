"""A defective tokenizer.json that Rust `tokenizers` refuses at load is refused here too, with one
line naming the file and the field; where both accept a file, the ids are the same.

Each test mutates a real file (all-MiniLM-L6-v2's WordPiece, all-mpnet-base-v2's RobertaProcessing,
or a RoBERTa-style byte-level BPE built from GPT-2's files), checks that the reference refuses it,
and that we refuse it naming the field.
"""

import json

import pytest

from transformer.files import ModelFileError
from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def minilm_json(minilm_dir):
    return json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mpnet_json(mpnet_dir):
    return json.loads((mpnet_dir / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bpe_json(gpt2_tokenizer_dir):
    """GPT-2's BPE as a tokenizer.json with ByteLevel pre-tokenizer and decoder, <s> </s> <mask>."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

    bpe = models.BPE.from_file(str(gpt2_tokenizer_dir / "vocab.json"), str(gpt2_tokenizer_dir / "merges.txt"))
    tok = tokenizers.Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>", AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    return json.loads(tok.to_str())


def _mutated(data, mutate):
    data = json.loads(json.dumps(data))
    mutate(data)
    return json.dumps(data)


def _refused_by_both(data, mutate, field):
    """The mutated file is refused by the reference and by us, our message naming `field`."""
    text = _mutated(data, mutate)
    with pytest.raises(BaseException):  # an error, or a Rust panic (PanicException is a BaseException)
        tokenizers.Tokenizer.from_str(text)
    with pytest.raises(ModelFileError) as caught:
        Tokenizer.from_str(text)
    message = str(caught.value)
    assert field in message and "\n" not in message, message
    return message


TEXTS = ["Hello, world! [MASK] <mask> héllo 中文", "The capital of France is [MASK].", "  a  b ", "don't 123"]


def _same_ids(data, mutate):
    """The mutated file is accepted by both, and tokenizes these texts to the same ids."""
    text = _mutated(data, mutate)
    reference, ours = tokenizers.Tokenizer.from_str(text), Tokenizer.from_str(text)
    for tok in (reference, ours):
        tok.no_truncation()
        tok.no_padding()
    assert [e.ids for e in ours.encode_batch(TEXTS)] == [e.ids for e in reference.encode_batch(TEXTS)]
    assert [e.tokens for e in ours.encode_batch(TEXTS)] == [e.tokens for e in reference.encode_batch(TEXTS)]
    return ours


# --- 1. a value of the wrong JSON type ----------------------------------------------------------

def test_a_flag_given_as_a_number_is_refused(minilm_json):
    message = _refused_by_both(minilm_json, lambda d: d["normalizer"].update(lowercase=1), "normalizer.lowercase")
    assert "expected true or false" in message


def test_a_token_given_as_a_number_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["padding"].update(pad_token=0), "padding.pad_token")


def test_a_vocabulary_given_as_a_list_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["model"].update(vocab=["[UNK]"]), "model.vocab")


# --- 2. an integer out of its range ---------------------------------------------------------------

def test_a_negative_pad_id_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["padding"].update(pad_id=-1), "padding.pad_id")


def test_a_pad_id_past_u32_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["padding"].update(pad_id=2 ** 32), "padding.pad_id")


def test_a_fractional_max_length_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["truncation"].update(max_length=1.5), "truncation.max_length")


def test_a_negative_vocabulary_id_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["model"]["vocab"].update(hello=-5), "model.vocab['hello']")


def test_a_negative_template_type_id_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["post_processor"]["single"][1]["Sequence"].update(type_id=-1),
                     "post_processor.single[1].Sequence.type_id")


# --- 3. a required field missing -----------------------------------------------------------------

def test_a_missing_unk_token_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["model"].pop("unk_token"), "model.unk_token is missing")


def test_a_missing_truncation_stride_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["truncation"].pop("stride"), "truncation.stride is missing")


def test_a_missing_added_token_flag_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["added_tokens"][2].pop("special"), "added_tokens[2].special is missing")


def test_a_byte_level_pre_tokenizer_without_add_prefix_space_is_refused(bpe_json):
    _refused_by_both(bpe_json, lambda d: d["pre_tokenizer"].pop("add_prefix_space"),
                     "pre_tokenizer.add_prefix_space is missing")


def test_a_missing_model_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d.pop("model"), "model")


# --- 4. an unknown name where the reference has a fixed list --------------------------------------

def test_an_unknown_padding_direction_is_refused(minilm_json):
    message = _refused_by_both(minilm_json, lambda d: d["padding"].update(direction="Up"), "padding.direction")
    assert "'Left', 'Right'" in message


def test_an_unknown_truncation_strategy_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["truncation"].update(strategy="Middle"), "truncation.strategy")


def test_an_unknown_padding_strategy_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["padding"].update(strategy="Longest"), "padding.strategy")


def test_an_unknown_split_behavior_is_refused(minilm_json):
    def mutate(data):
        data["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "Dropped", "invert": False}
    _refused_by_both(minilm_json, mutate, "pre_tokenizer.behavior")


def test_an_unknown_prepend_scheme_is_refused(minilm_json):
    def mutate(data):
        data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes"}
    _refused_by_both(minilm_json, mutate, "pre_tokenizer.prepend_scheme")


# --- 5. a version other than 1.0 ------------------------------------------------------------------

def test_an_unknown_file_version_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d.update(version="2.0"), "version")


# --- 6. model type null ----------------------------------------------------------------------------

def test_a_null_model_type_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["model"].update(type=None), "model.type")


# --- 7. merges that name tokens outside the vocabulary, or are not pairs ---------------------------

def test_a_merge_of_an_unknown_token_is_refused(bpe_json):
    message = _refused_by_both(bpe_json, lambda d: d["model"]["merges"].insert(5, ["Ġthe", "zzzqqq"]),
                               "model.merges")
    assert "'zzzqqq' is not in the vocabulary" in message


def test_a_merge_whose_result_is_not_in_the_vocabulary_is_refused(bpe_json):
    _refused_by_both(bpe_json, lambda d: d["model"]["merges"].insert(0, ["Ġ", "Ġ"]), "merged token 'ĠĠ'")


def test_a_merge_of_three_tokens_is_refused(bpe_json):
    _refused_by_both(bpe_json, lambda d: d["model"]["merges"].insert(0, ["a", "b", "c"]), "model.merges[0]")


# --- 8. an invalid regular expression --------------------------------------------------------------

def test_an_invalid_split_regex_is_refused(minilm_json):
    def mutate(data):
        data["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated", "invert": False}
    _refused_by_both(minilm_json, mutate, "pre_tokenizer.pattern")


def test_an_invalid_replace_regex_is_refused(minilm_json):
    def mutate(data):
        data["normalizer"] = {"type": "Replace", "pattern": {"Regex": "[z-a]"}, "content": " "}
    _refused_by_both(minilm_json, mutate, "normalizer.pattern")


# --- 9. post-processor pieces of the wrong shape ---------------------------------------------------

def test_a_roberta_sep_that_is_not_a_pair_is_refused(mpnet_json):
    _refused_by_both(mpnet_json, lambda d: d["post_processor"].update(sep=["</s>"]), "post_processor.sep")


def test_a_template_special_token_without_ids_is_refused(minilm_json):
    _refused_by_both(minilm_json, lambda d: d["post_processor"]["special_tokens"]["[CLS]"].pop("ids"),
                     "post_processor.special_tokens['[CLS]'].ids is missing")


# --- 10. Metaspace options that contradict each other -----------------------------------------------

def test_metaspace_add_prefix_space_false_with_prepend_always_is_refused(minilm_json):
    def mutate(data):
        data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": False,
                                 "prepend_scheme": "always"}
    _refused_by_both(minilm_json, mutate, "pre_tokenizer.add_prefix_space")


def test_a_two_character_metaspace_replacement_is_refused(minilm_json):
    def mutate(data):
        data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "__", "prepend_scheme": "always"}
    _refused_by_both(minilm_json, mutate, "pre_tokenizer.replacement")


# --- 11. a BPE dropout outside [0, 1] ---------------------------------------------------------------

def test_a_dropout_above_one_is_refused(bpe_json):
    _refused_by_both(bpe_json, lambda d: d["model"].update(dropout=1.5), "model.dropout")


# --- where both accept: the same ids -----------------------------------------------------------------

def test_added_token_ids_in_the_file_are_ignored_like_the_reference(minilm_json):
    """The reference gives an added token its vocabulary id (or the next free one), whatever
    the file says: [MASK] listed with id 0 is still 103."""
    ours = _same_ids(minilm_json, lambda d: d["added_tokens"][4].update(id=0))
    assert ours.token_to_id("[MASK]") == 103


def test_an_added_token_missing_from_the_vocabulary_gets_the_next_id(bpe_json):
    """Two added tokens written with the same id get distinct ids, as in the reference."""
    def mutate(data):
        data["added_tokens"].append(dict(data["added_tokens"][0], content="<extra_a>", id=7))
        data["added_tokens"].append(dict(data["added_tokens"][0], content="<extra_b>", id=7))
    ours = _same_ids(bpe_json, mutate)
    assert ours.token_to_id("<extra_b>") == ours.token_to_id("<extra_a>") + 1


def test_a_roberta_processor_with_a_bad_flag_is_refused_rather_than_read_as_bert(mpnet_json):
    """The reference reads a RobertaProcessing whose trim_offsets is not a boolean as a
    BertProcessing (other offsets); we refuse it."""
    text = _mutated(mpnet_json, lambda d: d["post_processor"].update(trim_offsets="yes"))
    assert "BertProcessing" in repr(tokenizers.Tokenizer.from_str(text).post_processor)
    with pytest.raises(ModelFileError, match="post_processor.trim_offsets is 'yes'"):
        Tokenizer.from_str(text)


def test_two_added_tokens_with_the_same_normalized_text_are_refused(minilm_json):
    """The reference matches one of the two at random (it varies from run to run)."""
    def mutate(data):
        data["added_tokens"].append(dict(data["added_tokens"][0], content="Hello", normalized=True, special=False))
        data["added_tokens"].append(dict(data["added_tokens"][0], content="HELLO", normalized=True, special=False))
    with pytest.raises(ModelFileError, match=r"added_tokens\[5\] and added_tokens\[6\] .* 'hello'"):
        Tokenizer.from_str(_mutated(minilm_json, mutate))


def test_an_added_token_that_normalizes_to_nothing_is_refused(minilm_json):
    """BertNormalizer removes control characters: the reference then matches the empty string
    everywhere and splits every word into characters."""
    def mutate(data):
        data["added_tokens"].append(dict(data["added_tokens"][0], content="\x01", normalized=True))
    text = _mutated(minilm_json, mutate)
    reference = tokenizers.Tokenizer.from_str(text)
    reference.no_padding()
    assert reference.encode("hello").tokens == ["[CLS]", "h", "e", "l", "l", "o", "[SEP]"]
    with pytest.raises(ModelFileError, match=r"added_tokens\[5\] .* normalizes to the empty string"):
        Tokenizer.from_str(text)


def test_a_vocabulary_giving_one_id_to_two_tokens_is_refused(minilm_json):
    with pytest.raises(ModelFileError, match="gives the id 7592 to both 'hello' and 'hullo'"):
        Tokenizer.from_str(_mutated(minilm_json, lambda d: d["model"]["vocab"].update(hullo=7592)))


def test_a_key_given_twice_is_refused(minilm_dir, tmp_path):
    text = (minilm_dir / "tokenizer.json").read_text(encoding="utf-8")
    text = text.replace('"version":"1.0"', '"version":"1.0","version":"1.0"', 1)
    (tmp_path / "tokenizer.json").write_text(text, encoding="utf-8")
    with pytest.raises(ModelFileError, match="'version' appears twice"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")


def test_bpe_offsets_shift_past_a_dropped_character_like_the_reference(bpe_json):
    """Without a pre-tokenizer, a space is not in GPT-2's vocabulary and there is no unk token:
    the reference drops it and counts the spans after it without its byte."""
    ours = _same_ids(bpe_json, lambda d: d.update(pre_tokenizer=None))
    reference = tokenizers.Tokenizer.from_str(_mutated(bpe_json, lambda d: d.update(pre_tokenizer=None)))
    for text in ("Hello, world! é x", "a  b", "中 文"):
        assert ours.encode(text).offsets == reference.encode(text).offsets


# --- issue 19: the SentencePiece parts -----------------------------------------------------------

@pytest.fixture(scope="module")
def unigram_json():
    """A small Unigram tokenizer.json with a Precompiled normalizer (a charsmap made here:
    fullwidth A -> A, e + acute -> e-acute) and a Metaspace pre-tokenizer."""
    from transformer.tokenizer.precompiled import build_charsmap

    pieces = [["<unk>", 0.0], ["<s>", 0.0], ["</s>", 0.0], ["▁", -2.0], ["a", -3.0], ["b", -3.0], ["▁ab", -1.0],
              ["é", -2.5], ["<0x41>", -9.0]]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": {"type": "Precompiled", "precompiled_charsmap": build_charsmap({"\uff21": "A",
                                                                                       "e\u0301": "\u00e9"})},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
            "post_processor": None, "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                                                 "split": True},
            "model": {"type": "Unigram", "unk_id": 0, "vocab": pieces, "byte_fallback": False}}


def test_a_small_unigram_file_tokenizes_like_the_reference(unigram_json):
    ours = _same_ids(unigram_json, lambda d: None)
    # unknown A and x fuse into one unk token that keeps their (normalized) text
    assert ours.encode("ab e\u0301 \uff21x").tokens == ["▁ab", "▁", "é", "▁", "Ax"]


def test_a_truncated_precompiled_charsmap_is_refused(unigram_json):
    _refused_by_both(unigram_json, lambda d: d["normalizer"].update(
        precompiled_charsmap=d["normalizer"]["precompiled_charsmap"][:40]), "normalizer.precompiled_charsmap")


def test_a_precompiled_charsmap_that_is_not_base64_is_refused(unigram_json):
    message = _refused_by_both(unigram_json, lambda d: d["normalizer"].update(precompiled_charsmap="not base64!"),
                               "normalizer.precompiled_charsmap")
    assert "base64" in message


def test_a_unigram_score_that_is_not_a_number_is_refused(unigram_json):
    _refused_by_both(unigram_json, lambda d: d["model"]["vocab"].__setitem__(4, ["a", "high"]), "model.vocab[4]")


def test_a_nan_unigram_score_is_refused(unigram_json):
    """JSON has no NaN; Python's json module would read one, the reference does not."""
    text = json.dumps(unigram_json).replace('["a", -3.0]', '["a", NaN]')
    with pytest.raises(Exception):
        tokenizers.Tokenizer.from_str(text)
    with pytest.raises(ModelFileError, match="NaN is not a JSON number"):
        Tokenizer.from_str(text)


def test_an_unk_id_past_the_pieces_is_refused(unigram_json):
    _refused_by_both(unigram_json, lambda d: d["model"].update(unk_id=99), "model.unk_id")


@pytest.mark.parametrize("stage, kind", [("normalizer", "Rot13"), ("pre_tokenizer", "Shuffle"), ("decoder", "Reverse")])
def test_an_unknown_component_type_is_refused(unigram_json, stage, kind):
    with pytest.raises(ModelFileError, match=f"{stage}.type '{kind}' is unsupported"):
        Tokenizer.from_str(_mutated(unigram_json, lambda d: d.update({stage: {"type": kind}})))


def test_unknown_characters_without_an_unk_piece_are_refused_when_met(unigram_json):
    """With unk_id null both load; a character no piece covers is an error for both."""
    text = _mutated(unigram_json, lambda d: d["model"].update(unk_id=None))
    reference, ours = tokenizers.Tokenizer.from_str(text), Tokenizer.from_str(text)
    assert ours.encode("ab").ids == reference.encode("ab").ids
    with pytest.raises(BaseException):
        reference.encode("xyz")
    with pytest.raises(ValueError, match="no unk_id"):
        ours.encode("xyz")
