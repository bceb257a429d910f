"""The tokenizer a GGUF file carries (`tokenizer.ggml.*` metadata), typed and checked.

    tokenizer_metadata(read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf"))
    -> GGUFTokenizer(model="gpt2", pre="smollm", tokens=["<|endoftext|>", ...], merges=["Ġ t", ...],
                     special_ids={"bos": 1, "eos": 2, "unknown": 0, "padding": 2}, add_bos_token=False, ...)

Only the values, as llama.cpp's converter wrote them; building the pipeline from them is the
tokenizer package's job. Keys (llama.cpp's `LLM_KV_TOKENIZER_*`):

    tokenizer.ggml.model            string          "llama" (SentencePiece-style), "gpt2" (byte-level BPE), ...
    tokenizer.ggml.pre              string          the pre-tokenizer ("smollm", "qwen2", "default", ...)
    tokenizer.ggml.tokens           array[string]   the vocabulary, by id
    tokenizer.ggml.scores           array[float32]  one per token (SentencePiece scores)
    tokenizer.ggml.token_type       array[int32]    one per token: 1 normal, 2 unknown, 3 control,
                                                    4 user-defined, 5 unused, 6 byte
    tokenizer.ggml.merges           array[string]   BPE merges, "left right"
    tokenizer.ggml.<name>_token_id  uint32          bos, eos, eot, eom, unknown, seperator (sic), padding, cls, mask
    tokenizer.ggml.add_bos_token, add_eos_token, add_sep_token, add_space_prefix,
    remove_extra_whitespaces        bool
    tokenizer.ggml.precompiled_charsmap  array[uint8]  a SentencePiece normalizer's table
    tokenizer.chat_template         string
"""

from dataclasses import dataclass

import numpy as np

from transformer.gguf.reader import GGUFError

TOKEN_TYPES = {1: "normal", 2: "unknown", 3: "control", 4: "user_defined", 5: "unused", 6: "byte"}

# metadata key part -> special_ids key
SPECIAL_IDS = {"bos": "bos", "eos": "eos", "eot": "eot", "eom": "eom", "unknown": "unknown",
               "seperator": "separator", "padding": "padding", "cls": "cls", "mask": "mask"}
FLAGS = ("add_bos_token", "add_eos_token", "add_sep_token", "add_space_prefix", "remove_extra_whitespaces")
_INTEGER_TYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"}


@dataclass(frozen=True)
class GGUFTokenizer:
    """A GGUF file's tokenizer metadata (see the module docstring); None where the file has none.

    tokens: list of str [vocab]; scores: float32 [vocab]; token_types: int32 [vocab];
    merges: list of str; special_ids: {"bos", "eos", "unknown", "padding", ...: token id};
    flags as bools; precompiled_charsmap: bytes.
    """
    model: str
    pre: object
    tokens: list
    scores: object
    token_types: object
    merges: object
    special_ids: dict
    add_bos_token: object
    add_eos_token: object
    add_sep_token: object
    add_space_prefix: object
    remove_extra_whitespaces: object
    precompiled_charsmap: object
    chat_template: object


def tokenizer_metadata(gguf) -> GGUFTokenizer:
    """The `tokenizer.ggml.*` values of a GGUFFile, each checked for its type and, per token,
    for its length; GGUFError naming the key otherwise."""
    metadata, types = gguf.metadata, gguf.metadata_types

    def get(key, expected, default=None):
        if key not in metadata:
            return default
        if types[key] not in expected:
            raise GGUFError(f"{gguf.path}: metadata {key!r} is a {types[key]}; expected a {' or '.join(expected)}")
        return metadata[key]

    model = get("tokenizer.ggml.model", {"string"})
    if model is None:
        raise GGUFError(f"{gguf.path}: the metadata has no 'tokenizer.ggml.model'; the file carries no tokenizer")
    tokens = get("tokenizer.ggml.tokens", {"array[string]"})
    if tokens is None:
        raise GGUFError(f"{gguf.path}: the metadata has no 'tokenizer.ggml.tokens' (the vocabulary)")
    scores = get("tokenizer.ggml.scores", {"array[float32]"})
    token_types = get("tokenizer.ggml.token_type", {"array[int32]"})
    for key, values in (("tokenizer.ggml.scores", scores), ("tokenizer.ggml.token_type", token_types)):
        if values is not None and len(values) != len(tokens):
            raise GGUFError(f"{gguf.path}: metadata {key!r} has {len(values):,} items; expected one per token "
                            f"({len(tokens):,})")
    if token_types is not None and len(token_types) and not np.isin(token_types, list(TOKEN_TYPES)).all():
        bad = int(np.flatnonzero(~np.isin(token_types, list(TOKEN_TYPES)))[0])
        raise GGUFError(f"{gguf.path}: metadata 'tokenizer.ggml.token_type'[{bad}] is {int(token_types[bad])}; "
                        f"expected one of {sorted(TOKEN_TYPES)}")
    special_ids = {}
    for key, name in SPECIAL_IDS.items():
        value = get(f"tokenizer.ggml.{key}_token_id", _INTEGER_TYPES)
        if value is None:
            continue
        if not 0 <= value < len(tokens):
            raise GGUFError(f"{gguf.path}: metadata 'tokenizer.ggml.{key}_token_id' is {value}; expected a token "
                            f"id below {len(tokens):,}")
        special_ids[name] = int(value)
    charsmap = get("tokenizer.ggml.precompiled_charsmap", {"array[uint8]", "array[int8]"})
    return GGUFTokenizer(
        model=model, pre=get("tokenizer.ggml.pre", {"string"}), tokens=tokens,
        scores=None if scores is None else scores.astype(np.float32),
        token_types=None if token_types is None else token_types.astype(np.int32),
        merges=get("tokenizer.ggml.merges", {"array[string]"}), special_ids=special_ids,
        **{flag: get(f"tokenizer.ggml.{flag}", {"bool"}) for flag in FLAGS},
        precompiled_charsmap=None if charsmap is None else charsmap.tobytes(),
        chat_template=get("tokenizer.chat_template", {"string"}),
    )
