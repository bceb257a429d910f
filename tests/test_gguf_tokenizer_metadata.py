"""`tokenizer.ggml.*` metadata, typed and checked (the pipeline is built from it elsewhere)."""

import numpy as np
import pytest

pytest.importorskip("gguf")
from gguf_files import pack_gguf, write_gguf  # noqa: E402

from transformer.gguf import GGUFError, read_gguf, tokenizer_metadata  # noqa: E402

TOKENS = ["<unk>", "<s>", "</s>", "▁a", "b", "<0x0A>"]


def spm_file(tmp_path, **changes):
    metadata = {"tokenizer.ggml.model": ("STRING", "llama"), "tokenizer.ggml.pre": ("STRING", "default"),
                "tokenizer.ggml.tokens": ("ARRAY", TOKENS),
                "tokenizer.ggml.scores": ("ARRAY", [0.0, 0.0, 0.0, -1.5, -2.0, 0.0]),
                "tokenizer.ggml.token_type": ("ARRAY", [2, 3, 3, 1, 1, 6]),
                "tokenizer.ggml.bos_token_id": ("UINT32", 1), "tokenizer.ggml.eos_token_id": ("UINT32", 2),
                "tokenizer.ggml.unknown_token_id": ("UINT32", 0), "tokenizer.ggml.seperator_token_id": ("UINT32", 2),
                "tokenizer.ggml.add_bos_token": ("BOOL", True), "tokenizer.ggml.add_eos_token": ("BOOL", False),
                "tokenizer.ggml.precompiled_charsmap": ("ARRAY", bytes([1, 2, 255])),  # as the converter writes it
                "tokenizer.chat_template": ("STRING", "{{ messages }}")}
    metadata.update(changes)
    return read_gguf(write_gguf(tmp_path / "spm.gguf", "llama", {k: v for k, v in metadata.items() if v}))


def test_a_sentencepiece_vocabulary_reads_with_its_types(tmp_path):
    tokenizer = tokenizer_metadata(spm_file(tmp_path))
    assert (tokenizer.model, tokenizer.pre, tokenizer.tokens) == ("llama", "default", TOKENS)
    assert tokenizer.scores.dtype == np.float32 and tokenizer.scores.tolist() == [0, 0, 0, -1.5, -2.0, 0]
    assert tokenizer.token_types.dtype == np.int32 and tokenizer.token_types.tolist() == [2, 3, 3, 1, 1, 6]
    assert tokenizer.special_ids == {"bos": 1, "eos": 2, "unknown": 0, "separator": 2}
    assert (tokenizer.add_bos_token, tokenizer.add_eos_token, tokenizer.add_space_prefix) == (True, False, None)
    assert tokenizer.merges is None and tokenizer.precompiled_charsmap == b"\x01\x02\xff"
    assert tokenizer.chat_template == "{{ messages }}"


@pytest.mark.parametrize("changes, fragment", [
    ({"tokenizer.ggml.model": None}, "no 'tokenizer.ggml.model'"),
    ({"tokenizer.ggml.tokens": None}, "no 'tokenizer.ggml.tokens'"),
    ({"tokenizer.ggml.model": ("UINT32", 1)}, "'tokenizer.ggml.model' is a uint32; expected a string"),
    ({"tokenizer.ggml.scores": ("ARRAY", [0.0, 1.0])}, "'tokenizer.ggml.scores' has 2 items; expected one per token (6)"),
    ({"tokenizer.ggml.token_type": ("ARRAY", [1, 1, 1, 1, 1, 9])}, "'tokenizer.ggml.token_type'[5] is 9"),
    ({"tokenizer.ggml.eos_token_id": ("UINT32", 6)}, "'tokenizer.ggml.eos_token_id' is 6; expected a token id below 6"),
    ({"tokenizer.ggml.add_bos_token": ("UINT8", 1)}, "'tokenizer.ggml.add_bos_token' is a uint8; expected a bool"),
    ({"tokenizer.ggml.merges": ("ARRAY", [1, 2])}, "'tokenizer.ggml.merges' is a array[int32]"),
])
def test_wrong_tokenizer_metadata_is_refused_by_key(tmp_path, changes, fragment):
    with pytest.raises(GGUFError, match="^" + str(tmp_path).replace(".", r"\.")) as caught:
        tokenizer_metadata(spm_file(tmp_path, **changes))
    assert fragment in str(caught.value)


def test_a_file_without_a_tokenizer_says_so(tmp_path):
    path = tmp_path / "bare.gguf"
    path.write_bytes(pack_gguf([("general.architecture", 8, "llama")]))
    with pytest.raises(GGUFError, match="the file carries no tokenizer"):
        tokenizer_metadata(read_gguf(path))
