"""A bad argument to the tokenizer gets one clear line naming it and what was expected."""

import json

import numpy as np
import pytest

from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture()
def fresh(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bytes_are_refused_with_a_hint_to_decode(tok):
    with pytest.raises(TypeError) as error:
        tok(b"hi")
    assert "texts is bytes" in _one_line(error) and "decode" in _one_line(error)
    with pytest.raises(TypeError, match=r"text is bytes; expected a str \(decode"):
        tok.encode(b"hi")


def test_none_is_refused(tok):
    with pytest.raises(TypeError, match="texts is None; expected a list of str"):
        tok(None)
    with pytest.raises(TypeError, match="text is None; expected a str"):
        tok.encode(None)


def test_an_int_is_refused(tok):
    with pytest.raises(TypeError, match="texts is int; expected a list of str"):
        tok(5)


def test_a_nested_list_names_the_item(tok):
    with pytest.raises(TypeError, match=r"texts\[0\] is list; expected a str"):
        tok([["a", "b"]])


def test_encode_with_a_list_points_to_encode_batch(tok):
    with pytest.raises(TypeError, match="text is list; expected a str .use encode_batch"):
        tok.encode(["a", "b"])


def test_a_single_text_with_a_list_of_pairs_is_refused(tok):
    with pytest.raises(TypeError, match="pairs is list but texts is a single str"):
        tok("a", ["b"])


def test_pairs_of_another_length_are_refused(tok):
    with pytest.raises(ValueError, match="got 1 texts but 2 pairs"):
        tok(["a"], ["b", "c"])


def test_a_pair_of_three_is_refused(tok):
    with pytest.raises(ValueError, match=r"texts\[0\] has 3 items; expected a str or a \(text, pair\)"):
        tok.encode_batch([("a", "b", "c")])


def test_text_pair_tuples_encode_like_the_reference(tok, minilm_dir):
    reference = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    inputs = [("Hello there", "General Kenobi"), "alone", ["a b", "c"]]
    assert [e.ids for e in tok.encode_batch(inputs)] == [e.ids for e in reference.encode_batch(inputs)]
    assert [e.type_ids for e in tok.encode_batch(inputs)] == [e.type_ids for e in reference.encode_batch(inputs)]


@pytest.mark.parametrize("value, kind", [(-1, ValueError), (1.5, TypeError), ("8", TypeError), (True, TypeError)])
def test_a_bad_max_length_is_refused(tok, value, kind):
    with pytest.raises(kind, match="max_length is .*; expected a non-negative integer"):
        tok(["a"], truncation=True, max_length=value)


def test_a_negative_stride_is_refused(tok):
    with pytest.raises(ValueError, match="stride is -1; expected a non-negative integer"):
        tok(["a"], truncation=True, max_length=8, stride=-1)


def test_an_unknown_padding_side_is_refused(tok):
    with pytest.raises(ValueError, match="padding_side='up'; expected 'right' or 'left'"):
        tok(["a"], padding=True, padding_side="up")


def test_a_negative_pad_to_multiple_of_is_refused(tok):
    with pytest.raises(ValueError, match="pad_to_multiple_of is -8"):
        tok(["a"], padding=True, pad_to_multiple_of=-8)


def test_a_non_boolean_flag_is_refused(tok):
    with pytest.raises(TypeError, match="add_special_tokens is 'no'; expected True or False"):
        tok(["a"], add_special_tokens="no")
    with pytest.raises(TypeError, match="return_offsets_mapping is 1; expected True or False"):
        tok(["a"], return_offsets_mapping=1)


@pytest.mark.parametrize("call, message", [
    (lambda t: t.enable_truncation(-1), "max_length is -1"),
    (lambda t: t.enable_truncation(8, strategy="middle"), "strategy is 'middle'; expected one of 'longest_first'"),
    (lambda t: t.enable_truncation(8, direction="up"), "direction is 'up'; expected one of 'right', 'left'"),
    (lambda t: t.enable_padding(direction="up"), "direction is 'up'"),
    (lambda t: t.enable_padding(length=-1), "length is -1"),
    (lambda t: t.enable_padding(pad_id="x"), "pad_id is 'x'"),
])
def test_bad_stored_settings_are_refused(fresh, call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call(fresh)


@pytest.mark.parametrize("ids, message", [
    ("abc", "ids is str; expected a list of int token ids"),
    (None, "ids is None;"),
    ([1.5], r"ids\[0\] is 1.5"),
    ([-1], r"ids\[0\] is -1"),
    ([2 ** 32], r"ids\[0\] is 4294967296; expected a token id below 2\*\*32"),
    ([[1, 2]], r"ids\[0\] is \[1, 2\]"),
])
def test_decode_names_the_bad_id(tok, ids, message):
    with pytest.raises((TypeError, ValueError), match=message):
        tok.decode(ids)


def test_decode_accepts_numpy_ids(tok):
    ids = tok(["hello world"])["input_ids"]
    assert tok.decode(ids[0]) == "hello world"
    assert tok.decode_batch(ids) == ["hello world"]


def test_decode_batch_names_the_bad_sequence(tok):
    with pytest.raises(TypeError, match=r"sequences\[0\] is int; expected a list of token ids"):
        tok.decode_batch([1, 2])


def test_vocabulary_lookups_check_their_argument(tok):
    with pytest.raises(TypeError, match="token is int; expected a str"):
        tok.token_to_id(5)
    with pytest.raises(TypeError, match="token_id is 'x'"):
        tok.id_to_token("x")


def test_from_pretrained_names_a_wrong_argument():
    with pytest.raises(TypeError, match="name_or_path is int; expected a model name or a path"):
        Tokenizer.from_pretrained(5)


def test_from_str_refuses_what_is_not_json_text():
    with pytest.raises(TypeError, match="json_text is int"):
        Tokenizer.from_str(5)
    with pytest.raises(ValueError, match="tokenizer.json text is not valid JSON"):
        Tokenizer.from_str("{")


def test_numpy_strings_are_texts(tok):
    assert tok(np.array(["a b", "c"]), padding=True)["input_ids"].shape == (2, 4)


# --- errors that only encoding finds still name the file ---------------------------------------

def test_a_vocabulary_without_the_unk_token_names_the_file_when_a_word_needs_it(minilm_dir, tmp_path):
    data = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["vocab"] = {}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BaseException):  # the reference loads it too, and fails when a word needs [UNK]
        tokenizers.Tokenizer.from_file(str(path)).encode("hello")
    with pytest.raises(ValueError) as caught:
        Tokenizer.from_file(path).encode("hello")
    assert _one_line(caught) == (f"{path}: WordPiece: the unk_token '[UNK]' is not in the vocabulary "
                                 "(model.vocab), and the word 'hello' needs it")


def test_an_empty_vocab_txt_is_refused_naming_the_file(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        Tokenizer.from_pretrained(tmp_path)
    assert _one_line(caught) == f"vocabulary {tmp_path / 'vocab.txt'} is empty; expected one token per line"
