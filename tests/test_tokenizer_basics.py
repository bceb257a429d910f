"""Behaviour of the tokenizer's parts, each checked against Rust `tokenizers` or a worked example."""

import numpy as np
import pytest

from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def minilm_reference(minilm_dir):
    return tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))


def test_from_pretrained_resolves_a_model_name(minilm):
    tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")
    assert tok.encode("hello").ids == minilm.encode("hello").ids


def test_mask_token_inside_text_gives_the_mask_id(minilm, minilm_reference):
    text = "The capital of France is [MASK]."
    assert minilm.encode(text).ids == minilm_reference.encode(text).ids
    assert minilm.mask_token_id in minilm.encode(text).ids


def test_call_returns_int64_arrays_padded_to_the_longest(minilm):
    batch = minilm(["Hello world", "Hi"], padding=True, truncation=True, max_length=256)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(a.dtype == np.int64 for a in batch.values())
    assert batch["input_ids"].tolist() == [[101, 7592, 2088, 102], [101, 7632, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


# --- loaders ------------------------------------------------------------------------------------

def test_bert_vocab_txt_loader_matches_what_transformers_builds(tmp_path, minilm_dir):
    import shutil

    from transformers import BertTokenizerFast

    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    reference = BertTokenizerFast.from_pretrained(str(tmp_path)).backend_tokenizer
    ours = Tokenizer.from_pretrained(tmp_path)
    texts = ["Hello, World! [MASK] héllo 中文", "The capital of France is [MASK].", "", "x" * 120]
    for text in texts:
        assert ours.encode(text).ids == reference.encode(text).ids
        assert ours.encode(text).offsets == reference.encode(text).offsets
    assert ours.encode(texts[0], texts[1]).type_ids == reference.encode(texts[0], texts[1]).type_ids
    assert ours.model_max_length == 512
    assert (ours.pad_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == (0, 101, 102, 103)


def test_convenience_attributes(minilm, mpnet_dir):
    assert minilm.vocab_size == 30522 == len(minilm.get_vocab())
    assert minilm.token_to_id("[MASK]") == 103 and minilm.id_to_token(103) == "[MASK]"
    assert minilm.model_max_length == 512
    mpnet = Tokenizer.from_pretrained(mpnet_dir)
    assert (mpnet.pad_token_id, mpnet.cls_token_id, mpnet.sep_token_id, mpnet.mask_token_id) == (1, 0, 2, 30526)


def test_call_arguments_override_the_stored_truncation(minilm):
    assert minilm.truncation["max_length"] == 128  # what all-MiniLM-L6-v2's tokenizer.json stores
    batch = minilm(["word " * 400], truncation=True, max_length=256)
    assert batch["input_ids"].shape == (1, 256)


def test_call_pads_left_and_to_a_multiple(minilm):
    batch = minilm(["a b c", "a"], padding=True, pad_to_multiple_of=8, padding_side="left")
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][1].tolist() == [0] * 5 + [1] * 3


def test_decode_gives_the_normalized_text_like_the_reference(minilm, minilm_reference):
    text = "Hello, world! It's 3.5 degrees."
    ids = minilm.encode(text).ids
    assert minilm.decode(ids) == minilm_reference.decode(ids) == "hello, world! it ' s 3. 5 degrees."


# --- errors name what is wrong ------------------------------------------------------------------

def test_non_str_item_names_its_index(minilm):
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        minilm(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[1\] is None;"):
        minilm.encode_batch(["a", None])


def test_empty_batch_is_refused(minilm):
    with pytest.raises(ValueError, match="empty"):
        minilm([])


def test_ragged_rows_without_padding_are_refused(minilm):
    with pytest.raises(ValueError, match="padding=True"):
        minilm(["a", "a b c"])


def test_malformed_tokenizer_json_names_the_field(tmp_path, minilm_dir):
    import json

    data = json.loads((minilm_dir / "tokenizer.json").read_text())
    del data["model"]["vocab"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"model\.vocab"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")
    data = json.loads((minilm_dir / "tokenizer.json").read_text())
    data["padding"] = {"strategy": {"Fixed": 1}, "direction": 7}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="padding"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("stage, config, kind", [
    ("normalizer", {"type": "Rot13"}, "Rot13"),
    ("pre_tokenizer", {"type": "SplitEveryThirdWord"}, "SplitEveryThirdWord"),
    ("model", {"type": "Trigram", "vocab": []}, "Trigram"),
])
def test_unsupported_type_is_named(tmp_path, minilm_dir, stage, config, kind):
    import json

    data = json.loads((minilm_dir / "tokenizer.json").read_text())
    data[stage] = config
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"{stage}.type '{kind}' is unsupported"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json, or vocab.txt, or vocab.json"):
        Tokenizer.from_pretrained(tmp_path)


def test_padding_without_a_pad_token_is_refused(gpt2_tokenizer_dir):
    gpt2 = Tokenizer.from_pretrained(gpt2_tokenizer_dir)
    with pytest.raises(ValueError, match="no pad token"):
        gpt2(["a", "a b"], padding=True)


def test_wordpiece_splits_unknown_word_into_unk():
    from transformer.tokenizer.models import WordPiece

    wordpiece = WordPiece({"[UNK]": 0, "hel": 1, "##lo": 2})
    assert wordpiece.tokenize("hello") == [(1, "hel", 0, 3), (2, "##lo", 3, 5)]
    assert wordpiece.tokenize("help") == [(0, "[UNK]", 0, 4)]
