"""A GGUF file's tokenizer (its `tokenizer.ggml.*` metadata) as a pipeline.

    >>> tok = Tokenizer.from_pretrained("weights/gemma-3-270m-Q4_K_M/gemma-3-270m-q4_k_m.gguf")  # doctest: +SKIP
    >>> tok.encode("Hello world").tokens                                                         # doctest: +SKIP
    ['<bos>', 'Hello', '▁world']

A GGUF holds no tokenizer.json: it holds the vocabulary, the merges (or scores), the token
types and the special ids (transformer.gguf.tokenizer reads them). This module writes the
tokenizer.json that transformers' GGUF converter (`integrations/gguf/gguf_tokenizer_mapping.py`)
builds from them, and reads it like any other (loaders.from_tokenizer_json): the same ids as
`AutoTokenizer.from_pretrained(folder, gguf_file=...)` on the same file.

    tokenizer.ggml.model "gpt2"    byte-level BPE (GPT-2's): tokens spelled in GPT-2's byte
                                   alphabet, the file's merges; the text split by the regex
                                   `tokenizer.ggml.pre` names (PRE_TOKENIZER_SPLITS), or by
                                   GPT-2's own for the names in GPT2_SPLIT
    tokenizer.ggml.model "llama"   SentencePiece-style BPE with byte fallback (<0x41>): "▁" for
                                   a space, one put before the text (Metaspace, "first"); the
                                   merges the file lists, else rebuilt from the scores
      Gemma (gemma, gemma2, gemma3 architectures): spaces turned into "▁" by a normalizer, no
                                   space put before the text, a token of spaces spelled in "▁",
                                   merges rebuilt in the vocabulary's order (Gemma's scores do
                                   not follow its merge order)

Then, for every kind: the tokens typed "control" are special added tokens (matched whole in
the text), "user-defined" ones plain added tokens; BOS / EOS put around each text when
`tokenizer.ggml.add_bos_token` / `add_eos_token` say so (a "llama" vocabulary adds BOS when
the file does not say).

Where transformers and llama.cpp disagree, this follows transformers: for `pre` "smollm"
llama.cpp also splits every digit alone, transformers splits as GPT-2.
"""

from transformer.files import ModelFileError

from . import loaders
from .pre_tokenizers import BYTES_TO_CHARS

CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> the regex its vocabulary's merges were learned on (llama.cpp's names).
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano", "dbrx", "smaug-bpe"], _LLAMA3_SPLIT),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"], _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], _GPT4O_SPLIT),
}
# tokenizer.ggml.pre values split as GPT-2 splits (its ByteLevel regex); None: no key.
GPT2_SPLIT = (None, "default", "gpt-2", "smollm")
GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
MODELS = ("gpt2", "llama")


def from_gguf(path, cls):
    """A GGUF file -> a `cls` (Tokenizer) built from its tokenizer metadata. GGUFError (a
    ValueError) for a file that is not GGUF or carries no tokenizer; ModelFileError naming
    the key for a tokenizer kind or pre-tokenizer this module does not build."""
    from transformer.gguf import read_gguf, tokenizer_metadata

    gguf = read_gguf(path)
    data, roles = tokenizer_json(tokenizer_metadata(gguf), gguf.architecture, path)
    return loaders.from_tokenizer_json(data, cls, roles, source=path)


def tokenizer_json(meta, architecture, path="the GGUF file"):
    """GGUFTokenizer metadata -> (the tokenizer.json dict, {role: token} as tokenizer_config.json
    would give them)."""
    if meta.model not in MODELS:
        raise ModelFileError(f"{path}: metadata 'tokenizer.ggml.model' is {meta.model!r}, a tokenizer this package "
                             f"does not build; it builds {', '.join(map(repr, MODELS))}")
    if meta.model == "gpt2":
        model, tokens, pipeline = _byte_level(meta, path)
    else:
        model, tokens, pipeline = _sentencepiece(meta, architecture, path)
    roles = {role: tokens[meta.special_ids[key]] for role, key in
             (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding"))
             if key in meta.special_ids}
    add_bos = meta.add_bos_token if meta.add_bos_token is not None else meta.model == "llama"
    data = {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": _added_tokens(meta, model["vocab"]), **pipeline,
            "post_processor": _template(roles.get("bos_token") if add_bos else None,
                                        roles.get("eos_token") if meta.add_eos_token else None, model["vocab"]),
            "model": model}
    return data, roles


def _byte_level(meta, path):
    """GPT-2's byte-level BPE: (model, tokens as the vocabulary spells them, the other stages)."""
    alphabet = set(BYTES_TO_CHARS.values())
    # A token outside the byte alphabet (a file that stores text) is spelled in it.
    tokens = [token if set(token) <= alphabet else "".join(BYTES_TO_CHARS[byte] for byte in token.encode("utf-8"))
              for token in meta.tokens]
    vocab = {token: index for index, token in enumerate(tokens)}
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
             "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vocab, "merges": _merges(meta, vocab, None, path)}
    if meta.pre in PRE_TOKENIZER_SPLITS:
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PRE_TOKENIZER_SPLITS[meta.pre]}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    elif meta.pre in GPT2_SPLIT:
        pre_tokenizer = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        known = sorted(name for name in (*GPT2_SPLIT, *PRE_TOKENIZER_SPLITS) if name)
        raise ModelFileError(f"{path}: metadata 'tokenizer.ggml.pre' is {meta.pre!r}, a pre-tokenizer this package "
                             f"does not know; it knows {', '.join(known)}")
    stages = {"normalizer": None, "pre_tokenizer": pre_tokenizer,
              "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}}
    return model, tokens, stages


def _sentencepiece(meta, architecture, path):
    """SentencePiece-style BPE with byte fallback: (model, tokens, the other stages)."""
    if meta.pre not in (None, "default"):
        raise ModelFileError(f"{path}: metadata 'tokenizer.ggml.pre' is {meta.pre!r}; a 'llama' (SentencePiece) "
                             f"vocabulary is built here with the pre-tokenizer 'default' only")
    if meta.merges is None and meta.scores is None:
        raise ModelFileError(f"{path}: the metadata has neither 'tokenizer.ggml.merges' nor 'tokenizer.ggml.scores'; "
                             f"a 'llama' vocabulary needs one of them to merge its pieces")
    decode = [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
              {"type": "Fuse"}]
    if architecture in GEMMA_ARCHITECTURES:
        # Gemma stores a token of spaces with real spaces; its normalizer looks it up in "▁".
        tokens = ["▁" * len(token) if " " in token and not token.strip() else token for token in meta.tokens]
        vocab = {token: index for index, token in enumerate(tokens)}
        order = {token: -index for index, token in enumerate(tokens)}  # earlier in the file: merged first
        stages = {"normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
                  "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                                    "invert": False},
                  "decoder": {"type": "Sequence", "decoders": decode}}
        unk_token = "<unk>"
        merges = _merges(meta, vocab, order, path)
    else:
        tokens = list(meta.tokens)
        vocab = {token: index for index, token in enumerate(tokens)}
        scores = None if meta.scores is None else dict(zip(tokens, meta.scores.tolist()))
        stages = {"normalizer": None,
                  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                    "split": False},
                  "decoder": {"type": "Sequence", "decoders": decode + [
                      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}
        unk_token = None
        merges = _merges(meta, vocab, scores, path)
    model = {"type": "BPE", "dropout": None, "unk_token": unk_token, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
             "vocab": vocab, "merges": merges}
    return model, tokens, stages


def _merges(meta, vocab, scores, path):
    """The file's merges as [left, right] pairs, else the ones its vocabulary implies."""
    if meta.merges is not None:
        pairs = [merge.split(" ") for merge in meta.merges]
        for rank, pair in enumerate(pairs):
            if len(pair) != 2:
                raise ModelFileError(f"{path}: metadata 'tokenizer.ggml.merges'[{rank}] is {meta.merges[rank]!r:.80}; "
                                     f"expected two tokens separated by one space")
        return pairs
    if scores is None:
        raise ModelFileError(f"{path}: the metadata has no 'tokenizer.ggml.merges'; a byte-level BPE vocabulary "
                             f"needs them")
    return implied_merges(vocab, scores)


def implied_merges(vocab, scores):
    """The merges a vocabulary implies: every split of a token into two tokens, best-scored
    token first (ties: the longer left piece, then the longer right piece first).

    vocab: {token: id}; scores: {token: score}, higher merged earlier.

    >>> implied_merges({"a": 0, "b": 1, "ab": 2, "abb": 3}, {"a": 0, "b": 0, "ab": -1, "abb": -2})
    [['a', 'b'], ['ab', 'b']]
    """
    found = []
    for token, score in scores.items():
        splits = [(token[:cut], token[cut:]) for cut in range(1, len(token))
                  if token[:cut] in vocab and token[cut:] in vocab]
        splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        found.extend((score, left, right) for left, right in splits)
    found.sort(key=lambda merge: (merge[0], len(merge[1]), len(merge[2])), reverse=True)
    return [[left, right] for _, left, right in found]


def _added_tokens(meta, vocab):
    """The control tokens (special) and the user-defined ones (not special), as the file spells
    them, as added tokens (matched whole in the text), by id. In a byte-level vocabulary a
    token marked control that is not spelled in the byte alphabet is a mislabel of llama.cpp's
    converter: left out; so is a user-defined token the vocabulary spells otherwise (Gemma's
    tokens of spaces)."""
    if meta.token_types is None:
        return []
    alphabet = set(BYTES_TO_CHARS.values()) if meta.model == "gpt2" else None
    types = meta.token_types.tolist()
    added = {}
    for token, kind in zip(meta.tokens, types):
        if kind == CONTROL and (alphabet is None or set(token) <= alphabet) and token in vocab:
            added.setdefault(vocab[token], _added(token, vocab[token], True))
    for token, kind in zip(meta.tokens, types):
        if kind == USER_DEFINED and token in vocab:
            added.setdefault(vocab[token], _added(token, vocab[token], False))
    return [added[token_id] for token_id in sorted(added)]


def _added(content, token_id, special):
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def _template(bos, eos, vocab):
    """TemplateProcessing: BOS before and EOS after each sequence, where given."""
    def sequence(name, type_id):
        return ([{"SpecialToken": {"id": bos, "type_id": type_id}}] if bos else []) + \
            [{"Sequence": {"id": name, "type_id": type_id}}] + \
            ([{"SpecialToken": {"id": eos, "type_id": type_id}}] if eos else [])

    special = {token: {"id": token, "ids": [vocab[token]], "tokens": [token]} for token in (bos, eos) if token}
    return {"type": "TemplateProcessing", "single": sequence("A", 0), "pair": sequence("A", 0) + sequence("B", 1),
            "special_tokens": special}
