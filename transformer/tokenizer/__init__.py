"""Tokenizers from scratch: normalizer -> pre-tokenizer -> model -> post-processor.

    >>> from transformer.tokenizer import Tokenizer
    >>> tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")               # doctest: +SKIP
    >>> tok(["Hello world"], padding=True)["input_ids"]                    # doctest: +SKIP
    array([[ 101, 7592, 2088,  102]])

Modules, in pipeline order: added_tokens, normalizers, pre_tokenizers, models, post_processors,
decoders; encoding (Encoding, truncation, padding), tokenizer (Tokenizer), loaders (the files),
training (train_bpe). Results equal Rust `tokenizers` id for id (see docs/tokenizer.md).
"""

from .encoding import Encoding
from .tokenizer import Tokenizer

__all__ = ["Tokenizer", "Encoding", "train_bpe", "bpe_tokenizer", "save_bpe"]


def __getattr__(name):
    if name in ("train_bpe", "bpe_tokenizer", "save_bpe"):
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module 'transformer.tokenizer' has no attribute {name!r}")
