"""Fuzzing the readers of vocab.txt, vocab.json + merges.txt, and tokenizer_config.json /
special_tokens_map.json (see fuzz_tokenizer_support for the property).

The reference for a folder is what `transformers` 5.24 builds from it (BertTokenizerFast,
GPT2TokenizerFast, AutoTokenizer). Inputs are small real files (~200 tokens of
all-MiniLM-L6-v2's vocab.txt, GPT-2's first 100 merges) changed line by line or entry by
entry: lines deleted, repeated, inserted (any characters, trailing spaces, CR, empty lines),
special tokens removed, ids changed to other numbers or types, bytes that are not UTF-8,
truncated files; config fields set to other values and types.
"""

import json
import logging
import warnings

import pytest

from fuzz_tokenizer_support import (INPUTS_PER_EXAMPLE, PROFILE, TEXTS, Outcomes, _attempt, compare_tokenizers,
                                    refused_clearly, scratch_folder)
from transformer.files import ModelFileError
from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TOKENS = st.one_of(st.sampled_from(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "hello", "##s", "world", "", " ",
                                     "a ", "\r", "x\ry", "中", "é", "##", "#", "[mask]", "\x85", "<|endoftext|>"]),
                    st.text(max_size=4))


@pytest.fixture()
def tmp_path():
    """Each suite's files, in memory where possible (see scratch_folder)."""
    import shutil

    folder = scratch_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def quiet_transformers():
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _reference(cls_name, folder):
    cls = getattr(transformers, cls_name)
    return cls.from_pretrained(str(folder)).backend_tokenizer


def _load_both(folder, reference_class, label, outcomes):
    reference, reference_error = _attempt(lambda: _reference(reference_class, folder))
    try:
        ours = Tokenizer.from_pretrained(folder)
    except ModelFileError as error:
        refused_clearly(error, str(folder))
        outcomes.add("refused" + (" by both" if reference_error else " (the reference loads it)"))
        return None, None
    assert reference_error is None, f"{label}: the reference refuses ({reference_error}) but we load it"
    return ours, reference


# --- vocab.txt -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert_lines(minilm_dir):
    lines = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return lines[:5] + lines[99:104] + lines[1000:1200] + lines[7000:7100]


# A change to vocab.txt: (action, position in [0, 1), token); applied by _vocab_txt.
_LINE_OPS = st.tuples(st.sampled_from(["delete", "repeat", "insert", "suffix", "truncate", "not utf-8"]),
                      st.floats(0, 1, exclude_max=True), _TOKENS)


def _vocab_txt(lines, ops):
    lines = list(lines)
    broken = False
    for action, where, token in ops:
        index = int(where * len(lines))
        if action == "insert" or not lines:
            lines.insert(index, token)
        elif action == "delete":
            lines.pop(index)
        elif action == "repeat":
            lines.insert(int(where * 7919) % (len(lines) + 1), lines[index])
        elif action == "suffix":
            lines[index] += token[:1] or " "
        elif action == "truncate":
            lines = lines[:index]
        else:
            broken = True
    data = "\n".join(lines).encode("utf-8")
    return data[:len(data) // 2] + b"\xff\xfe" + data[len(data) // 2:] if broken else data


def test_vocab_txt_is_refused_clearly_or_tokenizes_like_the_reference(bert_lines, tmp_path):
    outcomes = Outcomes("vocab.txt")

    @PROFILE
    @given(st.lists(st.lists(_LINE_OPS, min_size=1, max_size=4), min_size=INPUTS_PER_EXAMPLE,
                    max_size=INPUTS_PER_EXAMPLE))
    def check(changes):
        for ops in changes:
            data = _vocab_txt(bert_lines, ops)
            (tmp_path / "vocab.txt").write_bytes(data)
            ours, reference = _load_both(tmp_path, "BertTokenizerFast", repr(data[:200]), outcomes)
            if ours is not None:
                compare_tokenizers(ours, reference, TEXTS, repr(data[:300]), outcomes)

    check()
    assert sum(outcomes.values()) >= INPUTS_PER_EXAMPLE * PROFILE.max_examples
    assert outcomes.get("same encodings", 0) > sum(outcomes.values()) // 2, outcomes


# --- vocab.json + merges.txt ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2_files(gpt2_tokenizer_dir):
    vocab = json.loads((gpt2_tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = [line for line in (gpt2_tokenizer_dir / "merges.txt").read_text(encoding="utf-8").split("\n")[1:] if line]
    small = {token: index for token, index in vocab.items() if index < 256}
    kept = []
    for line in merges:
        left, right = line.split(" ")
        if left in small and right in small and left + right in vocab and len(kept) < 100:
            small[left + right] = vocab[left + right]
            kept.append(line)
    small["<|endoftext|>"] = vocab["<|endoftext|>"]
    return small, kept


_NEW_IDS = st.integers(300, 60_000)
_IDS = st.one_of(_NEW_IDS, _NEW_IDS, _NEW_IDS, st.integers(-2, 299), st.sampled_from([2 ** 32, 1.5, "7", None, True]))


# A change to vocab.json + merges.txt: (action, position in [0, 1), position, token, id, line).
_GPT2_OPS = st.tuples(st.sampled_from(["vocab"] * 4 + ["move"] * 3 + ["drop", "merge", "line", "header"]
                                     + ["vocab"] * 2),
                      st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True), _TOKENS, _IDS,
                      st.sampled_from(["", "a b c", "ab", "#x y", " a b", "a  b", "a b\r", "a b\r\r", "Ġ t",
                                       "#version: 0.2"]))


_CUT_JSON = ("cut json", 0.0, 0.0, "", 0, "")  # a vocab.json cut in the middle (1 input in 31)


def _gpt2_files(files, ops, ending):
    vocab, merges = dict(files[0]), list(files[1])
    cut = False
    for action, where, other, token, token_id, line in ops:
        tokens = sorted(vocab)
        if action == "vocab":
            vocab[tokens[int(where * len(tokens))] if token == "" and tokens else token] = token_id
        elif action == "drop" and tokens:
            vocab.pop(tokens[int(where * len(tokens))])
        elif action == "merge" and tokens:
            merges.insert(int(where * (len(merges) + 1)),
                          f"{tokens[int(where * len(tokens))]} {tokens[int(other * len(tokens))]}")
        elif action == "move" and merges:
            merges.insert(int(other * len(merges)), merges.pop(int(where * len(merges))))
        elif action == "line":
            merges.insert(int(where * (len(merges) + 1)), line)
        elif action == "header":
            merges.insert(0, "#version: 0.2")
        elif action == "cut json":
            cut = True
    vocab_text = json.dumps(vocab)
    return vocab_text[:len(vocab_text) // 2] if cut else vocab_text, "\n".join(merges) + ending


def test_gpt2_files_are_refused_clearly_or_tokenize_like_the_reference(gpt2_files, tmp_path):
    outcomes = Outcomes("vocab.json + merges.txt")

    @PROFILE
    @given(st.lists(st.tuples(st.lists(_GPT2_OPS, min_size=1, max_size=4), st.sampled_from(["", "\n", "\r\n"]),
                              st.integers(0, 30)),
                    min_size=INPUTS_PER_EXAMPLE, max_size=INPUTS_PER_EXAMPLE))
    def check(changes):
        for ops, ending, cut in changes:
            vocab_text, merges_text = _gpt2_files(gpt2_files, ops + [_CUT_JSON] * (cut == 0), ending)
            (tmp_path / "vocab.json").write_text(vocab_text, encoding="utf-8")
            (tmp_path / "merges.txt").write_text(merges_text, encoding="utf-8")
            label = f"merges {merges_text[:200]!r}"
            ours, reference = _load_both(tmp_path, "GPT2TokenizerFast", label, outcomes)
            if ours is not None:
                compare_tokenizers(ours, reference, TEXTS, label, outcomes)

    check()
    assert sum(outcomes.values()) >= INPUTS_PER_EXAMPLE * PROFILE.max_examples
    assert outcomes.get("same encodings", 0) > sum(outcomes.values()) // 8, outcomes


# --- tokenizer_config.json + special_tokens_map.json (with vocab.txt) ------------------------------------

_CONFIG_KEYS = ["do_lower_case", "tokenize_chinese_chars", "strip_accents", "unk_token", "sep_token", "pad_token",
                "cls_token", "mask_token", "model_max_length", "tokenizer_class"]
_CONFIG_VALUES = st.one_of(st.booleans(), st.none(), st.sampled_from(["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]",
                                                                      "hello", "<new>", "", "BertTokenizer"]),
                           st.sampled_from([512, 0, -1, 1e30, 2.5, "512"]),
                           st.builds(lambda c: {"content": c, "special": True}, st.sampled_from(["[MASK]", "<x>", "hello"])),
                           st.lists(st.integers(0, 3), max_size=2))
# A change to the two config files: (file, key, delete?, value), or a file cut in the middle.
_CONFIG_OPS = st.tuples(st.sampled_from(["tokenizer_config.json", "special_tokens_map.json"]),
                        st.sampled_from(_CONFIG_KEYS), st.booleans(), _CONFIG_VALUES)


def test_tokenizer_configs_are_refused_clearly_or_tokenize_like_the_reference(minilm_dir, bert_lines, tmp_path):
    outcomes = Outcomes("tokenizer_config.json + special_tokens_map.json")
    base = {name: json.loads((minilm_dir / name).read_text(encoding="utf-8"))
            for name in ("tokenizer_config.json", "special_tokens_map.json")}
    (tmp_path / "vocab.txt").write_text("\n".join(bert_lines), encoding="utf-8")

    @PROFILE
    @given(st.lists(st.tuples(st.lists(_CONFIG_OPS, min_size=1, max_size=3), st.integers(0, 40)),
                    min_size=INPUTS_PER_EXAMPLE, max_size=INPUTS_PER_EXAMPLE))
    def check(changes):
        for ops, cut in changes:
            files = json.loads(json.dumps(base))
            for name, key, delete, value in ops:
                if delete:
                    files[name].pop(key, None)
                else:
                    files[name][key] = value
            for name, data in files.items():
                text = json.dumps(data)
                (tmp_path / name).write_text(text[:len(text) // 2] if cut == 0 else text, encoding="utf-8")
            label = json.dumps(files)[:600]
            ours, reference = _load_both(tmp_path, "BertTokenizerFast", label, outcomes)
            if ours is not None:
                compare_tokenizers(ours, reference, TEXTS, label, outcomes)

    check()
    assert sum(outcomes.values()) >= INPUTS_PER_EXAMPLE * PROFILE.max_examples
    assert outcomes.get("same encodings", 0) > sum(outcomes.values()) // 8, outcomes
