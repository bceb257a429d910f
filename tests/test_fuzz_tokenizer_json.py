"""Fuzzing the tokenizer.json parser: real files' JSON trees, mutated (see fuzz_tokenizer_support).

Each input is a small tokenizer.json made from a real one (all-MiniLM-L6-v2's WordPiece,
all-mpnet-base-v2's RobertaProcessing, a RoBERTa-style byte-level BPE from GPT-2's files,
XLM-R's Unigram with Precompiled and Metaspace, Qwen3's regex-split byte-level BPE, Gemma 3's
byte-fallback BPE; the vocabularies cut to a few hundred entries so one input takes about a
millisecond), with 1-3 mutations: a
field deleted, set to another JSON value, set to another name the format knows, a component
replaced by another (Split / Replace with random regexes, Metaspace, ...), vocabulary and
merge entries added, removed or duplicated.
"""

import json

import pytest

from fuzz_tokenizer_support import (INPUTS_PER_EXAMPLE, PROFILE, TEXTS, Outcomes, _attempt, compare_tokenizers,
                                    is_huge, refused_clearly)
from transformer.files import ModelFileError
from transformer.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SOURCE = "tokenizer.json text"


# --- the base files ----------------------------------------------------------------------------------

def _small_wordpiece(data, keep=150):
    data = json.loads(json.dumps(data))
    vocab = data["model"]["vocab"]
    specials = {t["content"] for t in data["added_tokens"]} | {data["model"]["unk_token"]}
    chosen = sorted(vocab, key=vocab.get)
    kept = [t for t in chosen if t in specials] + [t for t in chosen if t not in specials][1000:1000 + keep]
    data["model"]["vocab"] = {t: vocab[t] for t in kept}
    return data


def _small_bpe(data, merges=120):
    data = json.loads(json.dumps(data))
    vocab, kept = data["model"]["vocab"], []
    small = {t: i for t, i in vocab.items() if i < 256}
    for left, right in data["model"]["merges"]:
        if len(kept) == merges:
            break
        if left in small and right in small and left + right in vocab:
            small[left + right] = vocab[left + right]
            kept.append([left, right])
    data["model"]["vocab"], data["model"]["merges"] = small, kept
    return data


def _small_unigram(data, keep=300):
    """XLM-R's file with ~300 pieces (the specials, every single character piece among the
    first 3,000, and some longer ones) and a small charsmap in place of the 316 kB one."""
    from transformer.tokenizer.precompiled import build_charsmap

    data = json.loads(json.dumps({k: v for k, v in data.items() if k != "model"}))
    pieces = _XLMR_PIECES
    kept = pieces[:4] + [p for p in pieces[4:3000] if len(p[0]) == 1][:150] + pieces[3000:3000 + keep - 150]
    kept.append(pieces[-1])  # <mask>
    data["model"] = {"type": "Unigram", "unk_id": 3, "vocab": kept, "byte_fallback": False}
    data["normalizer"]["normalizers"][0]["precompiled_charsmap"] = build_charsmap(
        {"\uff21": "A", "e\u0301": "\u00e9", "\t": " ", "\x01": "", "\u2160": "I", "\ufb01": "fi"})
    for token in data["added_tokens"]:
        token["id"] = min(token["id"], len(kept) - 1)
    return data


def _small_byte_fallback(data, keep=600):
    """Gemma 3's file with its specials, the 256 byte pieces and ~600 merges' worth of pieces."""
    data = json.loads(json.dumps({k: v for k, v in data.items() if k not in ("model", "added_tokens")}))
    model = _GEMMA_MODEL
    vocab = model["vocab"]
    small = {t: i for t, i in vocab.items() if i < 300}  # specials, <0x00>..<0xFF> and more
    kept = []
    for left, right in model["merges"][1000:]:
        if len(kept) == keep:
            break
        if left in small and right in small and left + right in vocab:
            small[left + right] = vocab[left + right]
            kept.append([left, right])
    data["model"] = dict({k: v for k, v in model.items() if k not in ("vocab", "merges")}, vocab=small, merges=kept)
    data["added_tokens"] = [t for t in _GEMMA_ADDED if t["id"] < 300][:40]
    return data


_XLMR_PIECES, _GEMMA_MODEL, _GEMMA_ADDED = [], {}, []


@pytest.fixture(scope="module")
def bases(minilm_dir, mpnet_dir, gpt2_tokenizer_dir, xlmr_tokenizer_dir, qwen3_tokenizer_dir, gemma3_tokenizer_dir):
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

    bpe = models.BPE.from_file(str(gpt2_tokenizer_dir / "vocab.json"), str(gpt2_tokenizer_dir / "merges.txt"))
    roberta = tokenizers.Tokenizer(bpe)
    roberta.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    roberta.decoder = decoders.ByteLevel()
    roberta.add_special_tokens(["<s>", "<pad>", "</s>", AddedToken("<mask>", lstrip=True, special=True)])
    roberta.post_processor = processors.RobertaProcessing(("</s>", roberta.token_to_id("</s>")),
                                                          ("<s>", roberta.token_to_id("<s>")))
    xlmr = json.loads((xlmr_tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    _XLMR_PIECES[:] = xlmr["model"]["vocab"]
    qwen3 = json.loads((qwen3_tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    gemma3 = json.loads((gemma3_tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    _GEMMA_MODEL.update(gemma3["model"])
    _GEMMA_ADDED[:] = gemma3["added_tokens"]
    qwen_small = _small_bpe(qwen3)
    qwen_small["added_tokens"] = [dict(t, id=t["id"] - 151643 + 400) for t in qwen3["added_tokens"][:8]]
    return [
        _small_wordpiece(json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))),
        _small_wordpiece(json.loads((mpnet_dir / "tokenizer.json").read_text(encoding="utf-8"))),
        _small_bpe(json.loads(roberta.to_str())),
        _small_unigram(xlmr),       # Unigram, Precompiled + Replace, Metaspace
        qwen_small,                 # NFC, a regex Split + ByteLevel without regex, added tokens
        _small_byte_fallback(gemma3),  # BPE with byte fallback and fused unks, Replace, decoders
    ]


# --- mutations ---------------------------------------------------------------------------------------

NAMES = ["BertNormalizer", "Lowercase", "NFD", "NFKC", "NFC", "NFKD", "StripAccents", "Strip", "Replace", "Prepend",
         "Sequence", "BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits", "ByteLevel",
         "Split", "Metaspace", "TemplateProcessing", "BertProcessing", "RobertaProcessing", "WordPiece", "BPE",
         "WordLevel", "Fuse", "ByteFallback", "Strip", "CTC", "BPEDecoder", "Removed", "Isolated", "Contiguous",
         "MergedWithPrevious", "MergedWithNext", "LongestFirst", "OnlyFirst", "OnlySecond", "Left", "Right",
         "BatchLongest", "always", "first", "never", "A", "B", "[CLS]", "[SEP]", "<s>", "</s>", "[UNK]", "▁", "##",
         "1.0", "", " ", "x"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, 2, -1, 7, 2 ** 32, 2 ** 64, 10 ** 6, 128]),
                     st.sampled_from([1.5, -0.0, 1e300, 0.5]), st.sampled_from(NAMES),
                     st.text(max_size=4))
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(st.sampled_from(NAMES), _SCALARS,
                                                                               max_size=2))
_PATTERNS = st.sampled_from([r"\s+", r"\p{L}+|\p{N}", r"(a+)+$", r"'s|'t| ?\p{L}+| ?[^\s\p{L}]+", r"[", r"\w+|\W",
                             r"(?i)the", r" ", r"a*a*b", r"$", r"\d{1,3}", "▁"])


def _make_components():
    pattern = st.one_of(st.builds(lambda p: {"Regex": p}, _PATTERNS), st.builds(lambda p: {"String": p}, _PATTERNS))
    behavior = st.sampled_from(["Removed", "Isolated", "Contiguous", "MergedWithPrevious", "MergedWithNext"])
    return st.one_of(
        st.builds(lambda p, b, i: {"type": "Split", "pattern": p, "behavior": b, "invert": i}, pattern, behavior,
                  st.booleans()),
        st.builds(lambda p, c: {"type": "Replace", "pattern": p, "content": c}, pattern, st.sampled_from(["", " ", "▁"])),
        st.builds(lambda r, s, sp: {"type": "Metaspace", "replacement": r, "prepend_scheme": s, "split": sp},
                  st.sampled_from(["▁", "_", " "]), st.sampled_from(["always", "first", "never"]), st.booleans()),
        st.builds(lambda a: {"type": "ByteLevel", "add_prefix_space": a, "trim_offsets": True, "use_regex": True},
                  st.booleans()),
        st.sampled_from([{"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Whitespace"}, {"type": "Digits",
                         "individual_digits": True}, {"type": "Punctuation", "behavior": "Isolated"},
                         {"type": "Prepend", "prepend": "▁"}, {"type": "Strip", "strip_left": True, "strip_right": False},
                         {"type": "Fuse"}, {"type": "ByteFallback"}, {"type": "Strip", "content": " ", "start": 1,
                                                                      "stop": 0}]),
    )


COMPONENTS = _make_components()
STAGES = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "decoder": "decoders"}
COMPONENT_TREES = {stage: st.one_of(COMPONENTS, st.builds(lambda items, key=key: {"type": "Sequence", key: items},
                                                          st.lists(COMPONENTS, max_size=3)))
                   for stage, key in STAGES.items()}
ACTIONS = st.sampled_from(["delete", "value", "value", "component", "vocab", "merge", "added"])
ADDED_CONTENTS = st.sampled_from(["[MASK]", "hello", "<s>", "x y", "\x01", "", "Hello", "#"])


def _paths(node, prefix=()):
    """Every place in the tree a mutation can hit (vocab and merges as wholes, plus a few entries)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("vocab", "merges") and isinstance(value, (dict, list)) and len(value) > 20:
                yield prefix + (key,)
                continue
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node[:6]):
            yield from _paths(value, prefix + (index,))


def _at(node, path):
    for key in path:
        node = node[key]
    return node


_BASES = []  # the `bases` fixture's files as JSON text (kept out of the strategy's arguments)


@st.composite
def mutated_files(draw):
    data = json.loads(_BASES[draw(st.integers(0, len(_BASES) - 1))])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent, key = _at(data, path[:-1]), path[-1]
        action = draw(ACTIONS)
        model = data.get("model") if isinstance(data.get("model"), dict) else None
        if action == "delete":
            parent.pop(key)
        elif action == "value":
            parent[key] = draw(_VALUES)
        elif action == "component":
            stage = draw(st.sampled_from(sorted(STAGES)))
            data[stage] = draw(COMPONENT_TREES[stage])
        elif action == "vocab" and model and isinstance(model.get("vocab"), dict):
            vocab = model["vocab"]
            token = draw(st.one_of(st.text(max_size=3), st.sampled_from(sorted(vocab)[:50])))
            if draw(st.booleans()):
                vocab[token] = draw(st.one_of(st.integers(-2, 40_000), st.sampled_from(sorted(vocab.values())[:50])))
            else:
                vocab.pop(token, None)
        elif action == "merge" and model and isinstance(model.get("merges"), list):
            tokens = sorted(model.get("vocab") or {"a": 0})[:60]
            model["merges"].insert(draw(st.integers(0, 5)), [draw(st.sampled_from(tokens)), draw(st.sampled_from(tokens))])
        elif action == "added" and isinstance(data.get("added_tokens"), list) and data["added_tokens"]:
            entry = draw(st.sampled_from(data["added_tokens"]))
            if isinstance(entry, dict):  # an earlier mutation may have put any value there
                entry = dict(entry, content=draw(ADDED_CONTENTS), id=draw(st.integers(0, 40_000)),
                             normalized=draw(st.booleans()))
                data["added_tokens"].append(entry)
    return data


def _label(data):
    """The mutated file, short: everything but the vocabulary and merges."""
    if not isinstance(data, dict):
        return repr(data)[:300]
    model = data.get("model")
    short = dict(data, model={k: v for k, v in model.items() if k not in ("vocab", "merges")}
                 if isinstance(model, dict) else model)
    return json.dumps(short, ensure_ascii=False)[:1500]


# --- the suite -----------------------------------------------------------------------------------------

def test_mutated_tokenizer_json_is_refused_clearly_or_tokenizes_like_the_reference(bases):
    outcomes = Outcomes("tokenizer.json")
    _BASES[:] = [json.dumps(base) for base in bases]

    @PROFILE
    @given(st.lists(mutated_files(), min_size=INPUTS_PER_EXAMPLE, max_size=INPUTS_PER_EXAMPLE))
    def check(files):
        for data in files:
            text = json.dumps(data)
            reference, reference_error = _attempt(lambda: tokenizers.Tokenizer.from_str(text))
            try:
                ours = Tokenizer.from_str(text)
            except ModelFileError as error:
                refused_clearly(error, SOURCE)
                outcomes.add("refused" + (" by both" if reference_error else " (the reference loads it)"))
                continue
            assert reference_error is None, f"the reference refuses ({reference_error}) but we load {_label(data)}"
            compare_tokenizers(ours, reference, TEXTS, _label(data), outcomes, huge=is_huge(data))

    check()
    total = sum(outcomes.values())
    assert total >= INPUTS_PER_EXAMPLE * PROFILE.max_examples
    assert outcomes.get("same encodings", 0) > total // 10, outcomes  # the property was really exercised
