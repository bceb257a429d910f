"""transformer: a from-scratch transformer encoder.

Text -> tokens (`Tokenizer`) -> contextual vectors (`Encoder`) -> a sentence embedding
(`SentenceEncoder`). NumPy carries the readable reference math; Numba kernels carry the
hot paths. Importing this package is cheap: nothing heavy is imported and no kernel is
compiled until it is first used.

    >>> from transformer import SentenceEncoder
    >>> model = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    >>> model.encode(["Hello world"]).shape
    (1, 384)
"""

__version__ = "0.1.0"

# Public names and the module each lives in, imported on first use (PEP 562).
_LAZY = {
    "Tokenizer": "transformer.tokenizer",
    "Encoding": "transformer.tokenizer",
    "Encoder": "transformer.encoder",
    "EncoderConfig": "transformer.config",
    "SentenceEncoder": "transformer.sentence",
    "set_num_threads": "transformer.threads",
    "get_num_threads": "transformer.threads",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'transformer' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
