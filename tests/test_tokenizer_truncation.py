"""tok(texts, truncation=True, max_length=n) without overflow tokenizes only a prefix of a long
text (Tokenizer._encode_prefix): the result is the whole text's first window, field for field."""

from pathlib import Path

import numpy as np
import pytest

from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FIELDS = ("ids", "tokens", "type_ids", "attention_mask", "offsets", "word_ids", "special_tokens_mask")
DATA = Path(__file__).parent / "tokenizer_data"
WORDS = sorted(set((DATA / "multilingual.txt").read_text(encoding="utf-8").split()))


@pytest.fixture(scope="module")
def tokenizers_by_name(minilm_dir, mpnet_dir, gpt2_tokenizer_dir, xlmr_tokenizer_dir, qwen3_tokenizer_dir,
                       tmp_path_factory):
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

    bpe = models.BPE.from_file(str(gpt2_tokenizer_dir / "vocab.json"), str(gpt2_tokenizer_dir / "merges.txt"))
    roberta = tokenizers.Tokenizer(bpe)
    roberta.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    roberta.decoder = decoders.ByteLevel()
    roberta.add_special_tokens(["<s>", "<pad>", "</s>", AddedToken("<mask>", lstrip=True, special=True)])
    roberta.post_processor = processors.RobertaProcessing(("</s>", roberta.token_to_id("</s>")),
                                                          ("<s>", roberta.token_to_id("<s>")))
    path = tmp_path_factory.mktemp("roberta") / "tokenizer.json"
    roberta.save(str(path))
    return {"all-MiniLM-L6-v2": Tokenizer.from_pretrained(minilm_dir),
            "all-mpnet-base-v2": Tokenizer.from_pretrained(mpnet_dir),
            "gpt2": Tokenizer.from_pretrained(gpt2_tokenizer_dir),
            "roberta": Tokenizer.from_file(path),
            "xlmr": Tokenizer.from_file(xlmr_tokenizer_dir / "tokenizer.json"),
            "qwen3": Tokenizer.from_file(qwen3_tokenizer_dir / "tokenizer.json")}


# Gemma 3's tokenizer is not among them: with no pre-tokenizer splitting at spaces, a whole
# text is one BPE word, which no prefix can stand for (test_gemma_tokenizes_the_whole_text).
NAMES = ["all-MiniLM-L6-v2", "all-mpnet-base-v2", "gpt2", "roberta", "xlmr", "qwen3"]

_GLUE = st.sampled_from([" ", " ", " ", "  ", ", ", ". ", "\n", " - ", "", "'s ", " [MASK] ", "<mask>", "\t", "。"])
_TEXT = st.lists(st.tuples(st.sampled_from(WORDS), _GLUE).map("".join), min_size=20, max_size=400).map("".join)


def _fields(encoding):
    return {field: list(getattr(encoding, field)) for field in FIELDS}


@pytest.mark.parametrize("name", NAMES)
def test_a_truncated_prefix_gives_the_whole_texts_first_window(name, tokenizers_by_name):
    """Random texts of 20-400 words, random max_length, random first prefix size (so the cut
    falls anywhere): every field equals what tokenizing the whole text gives."""
    tok = tokenizers_by_name[name]
    assert tok._prefix_safe()
    cut = {"prefix": 0, "whole": 0}

    @settings(max_examples=150, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(_TEXT, min_size=1, max_size=3), st.integers(2, 64), st.integers(1, 12))
    def check(texts, max_length, chars_per_token):
        tok.PREFIX_CHARS_PER_TOKEN = chars_per_token
        truncation = dict(max_length=max_length, stride=0, strategy="longest_first", direction="right")
        prefix = tok._encode_many(texts, None, True, truncation, overflow=False)
        whole = tok._encode_many(texts, None, True, truncation, overflow=True)
        assert [_fields(e) for e in prefix] == [_fields(e) for e in whole]
        for text in texts:
            # stronger: every token of the prefix, not only the kept ones, is the whole text's
            part, full = _fields(tok._encode_prefix(text, max_length)), _fields(tok._encode_sequence(text))
            assert part == {field: values[:len(part["ids"])] for field, values in full.items()}
            cut["prefix" if len(part["ids"]) < len(full["ids"]) else "whole"] += 1

    try:
        check()
    finally:
        del tok.PREFIX_CHARS_PER_TOKEN
    assert cut["prefix"] > 100, cut  # most texts really were cut


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "gpt2"])
def test_a_long_text_truncated_in_a_call_equals_the_reference(name, tokenizers_by_name, minilm_dir,
                                                              gpt2_tokenizer_dir):
    from transformers import GPT2TokenizerFast

    tok = tokenizers_by_name[name]
    if name == "gpt2":
        reference = GPT2TokenizerFast.from_pretrained(str(gpt2_tokenizer_dir)).backend_tokenizer
    else:
        reference = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    reference.no_padding()
    reference.enable_truncation(256)
    rng = np.random.default_rng(0)
    text = " ".join(rng.choice(WORDS, 20_000))
    batch = tok([text], truncation=True, max_length=256, return_offsets_mapping=True)
    expected = reference.encode(text)
    assert batch["input_ids"][0].tolist() == expected.ids
    assert [tuple(pair) for pair in batch["offset_mapping"][0].tolist()] == expected.offsets


def test_a_pipeline_that_is_not_local_tokenizes_the_whole_text(minilm_dir):
    """A Split regex is not analysed for cuts: the whole text is tokenized (same answer)."""
    import json

    data = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": r"\w+|[^\w\s]+"}, "behavior": "Contiguous",
                             "invert": False}
    tok = Tokenizer.from_str(json.dumps(data))
    assert not tok._prefix_safe()
    reference = tokenizers.Tokenizer.from_str(json.dumps(data))
    reference.no_padding()
    text = "word " * 3000
    assert tok([text], truncation=True, max_length=128)["input_ids"][0].tolist() == reference.encode(text).ids


def test_gemma_tokenizes_the_whole_text(gemma3_tokenizer_dir):
    tok = Tokenizer.from_file(gemma3_tokenizer_dir / "tokenizer.json")
    assert not tok._prefix_safe()
