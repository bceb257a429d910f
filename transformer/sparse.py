"""Sparse lexical vectors (SPLADE): one weight per vocabulary word, most of them zero.

    >>> model = SparseEncoder.from_pretrained("splade-tiny")
    >>> vectors = model.encode(["The cat sat on the mat."])      # float32 [1, 30522]
    >>> model.decode(vectors[0], top_k=3)
    [('cat', 2.1...), ('mat', 1.9...), ('sat', 1.6...)]

A masked-LM head scores every vocabulary word at every position; SPLADE keeps, for each
word, its best score over the text's real tokens, squashed by log(1 + relu(x)):

    ids [batch, seq] --Encoder + masked-LM head--> logits [batch, seq, vocab]
        --max over real tokens--> [batch, vocab] --log(1 + relu)--> weights >= 0

A word the text does not suggest gets a negative logit everywhere and so weight 0; words
it does suggest get weight even when absent (the text "expands" to them). Search is a dot
product of two such vectors, which an inverted index computes over the non-zero words only.
This is sentence-transformers' SparseEncoder with SpladePooling("max", "relu"), what it
builds for a plain *ForMaskedLM folder, and what a SPLADE folder's modules.json names.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transformer.files import ModelFileError, read_json

POOLING_STRATEGIES = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")
# How many logits one pass of the masked-LM head may hold (rows * seq * vocab): 32M floats, 128 MB.
HEAD_CHUNK_VALUES = 32 * 1024 * 1024


@dataclass
class SparseVector:
    """One text's weights, compact: the non-zero vocabulary ids (int64, ascending) and their
    weights (float32), out of `dimension` words."""

    indices: np.ndarray
    values: np.ndarray
    dimension: int

    def to_dense(self):
        """float32 [dimension]."""
        dense = np.zeros(self.dimension, dtype=np.float32)
        dense[self.indices] = self.values
        return dense


def splade_pooling(logits, attention_mask, strategy="max", activation="relu"):
    """logits float32 [batch, seq, vocab], attention_mask [batch, seq] -> weights float32
    [batch, vocab]: log(1 + relu(logit)) of each word, the max (or sum) over the real tokens
    (log1p applied twice with activation "log1p_relu")."""
    masked = logits * (attention_mask != 0)[:, :, None].astype(np.float32)  # padding -> 0, weight 0
    weights = np.log1p(np.maximum(masked, np.float32(0)))  # [batch, seq, vocab]
    if activation == "log1p_relu":
        weights = np.log1p(weights)
    return weights.max(axis=1) if strategy == "max" else weights.sum(axis=1)  # -> [batch, vocab]


def keep_top(vectors, max_active_dims):
    """Each row's max_active_dims largest weights (by magnitude), the rest set to 0."""
    if max_active_dims >= vectors.shape[1]:
        return vectors
    smallest_kept = -np.partition(-np.abs(vectors), max_active_dims - 1, axis=1)[:, max_active_dims - 1:max_active_dims]
    pruned = np.where(np.abs(vectors) >= smallest_kept, vectors, np.float32(0))
    # ties at the threshold could keep more than max_active_dims: keep the first ones, as a top-k does
    order = np.argsort(-np.abs(pruned), axis=1, kind="stable")[:, max_active_dims:]
    np.put_along_axis(pruned, order, np.float32(0), axis=1)
    return pruned


class SparseEncoder:
    """A tokenizer and an encoder with a masked-LM head, pooled the SPLADE way."""

    def __init__(self, tokenizer, encoder, max_seq_length, pooling_strategy="max", activation="relu",
                 max_active_dims=None, path=None):
        if pooling_strategy not in POOLING_STRATEGIES:
            raise ValueError(f"pooling_strategy={pooling_strategy!r}; expected one of {POOLING_STRATEGIES}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; expected one of {ACTIVATIONS}")
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.max_seq_length = max_seq_length
        self.pooling_strategy = pooling_strategy
        self.activation = activation
        self.max_active_dims = None if max_active_dims is None else _check_positive(max_active_dims, "max_active_dims")
        self.path = path

    @classmethod
    def from_pretrained(cls, name_or_path, backend=None, max_active_dims=None, precision="fp32"):
        """Load a *ForMaskedLM folder (or a name `transformer.store` knows, e.g. "splade-tiny").
        precision: "fp32" or "bf16" (`transformer.encoder.PRECISIONS`).
        ModelFileError when the checkpoint has no masked-LM head."""
        from transformer.encoder import Encoder, model_folder
        from transformer.store import resolve
        from transformer.tokenizer import Tokenizer

        path = model_folder(resolve(name_or_path), name_or_path)
        pooling = read_splade_modules(path)
        encoder = Encoder.from_pretrained(path / pooling["transformer"], backend=backend, precision=precision)
        if encoder.head is None or encoder.head.kind != "masked_lm":
            found = f"a {encoder.head.kind} head" if encoder.head is not None else "no task head"
            raise ModelFileError(f"{path} is not a SPLADE model: its checkpoint has {found} (config.json "
                                 f"architectures: {list(encoder.config.architectures) or 'none'}); SPLADE needs "
                                 f"a *ForMaskedLM checkpoint with its masked-LM head tensors")
        tokenizer = Tokenizer.from_pretrained(path / pooling["transformer"])
        limit = encoder.config.max_sequence_length
        max_seq_length = min(pooling["max_seq_length"] or tokenizer.model_max_length, limit)
        return cls(tokenizer, encoder, max_seq_length, pooling["strategy"], pooling["activation"],
                   max_active_dims, path=path)

    @property
    def dimension(self):
        """The vocabulary size: one weight per word."""
        return self.encoder.config.vocab_size

    def encode(self, texts, batch_size=32, convert_to_sparse=False, max_active_dims=None):
        """Texts -> SPLADE weights: float32 [n, vocab] (a single str: [vocab]), or with
        convert_to_sparse=True a list of `SparseVector` (a single str: one).

        max_active_dims: keep each text's largest max_active_dims weights, the rest 0 (None:
        the model's max_active_dims, else all).
        """
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        if isinstance(texts, (bytes, dict)) or not all(isinstance(text, str) for text in texts):
            raise TypeError("texts must be a str or a list of str")
        texts = list(texts)
        batch_size = _check_positive(batch_size, "batch_size")
        max_active_dims = self.max_active_dims if max_active_dims is None else \
            _check_positive(max_active_dims, "max_active_dims")
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([-len(text) for text in texts], kind="stable")  # batches of similar lengths
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            vectors[rows] = self._weights([texts[i] for i in rows])
        if max_active_dims is not None:
            vectors = keep_top(vectors, max_active_dims)
        if convert_to_sparse:
            sparse = [SparseVector(np.flatnonzero(row), row[row != 0], self.dimension) for row in vectors]
            return sparse[0] if single else sparse
        return vectors[0] if single else vectors

    def decode(self, vectors, top_k=None):
        """Weights -> [(token, weight)] of the non-zero words, heaviest first, at most top_k.
        A [vocab] vector or one SparseVector gives one list; [n, vocab] or a list of them, a list each."""
        if top_k is not None:
            top_k = _check_positive(top_k, "top_k")
        if isinstance(vectors, SparseVector):
            return self._decode_one(vectors.indices, vectors.values, top_k)
        if isinstance(vectors, list) and all(isinstance(v, SparseVector) for v in vectors):
            return [self._decode_one(v.indices, v.values, top_k) for v in vectors]
        dense = np.asarray(vectors)
        if dense.ndim not in (1, 2) or dense.shape[-1] != self.dimension:
            raise ValueError(f"decode needs [{self.dimension}] or [n, {self.dimension}] weights (one per vocabulary "
                             f"word) or SparseVector(s), got shape {list(dense.shape)}")
        rows = [self._decode_one(np.flatnonzero(row), row[row != 0], top_k) for row in np.atleast_2d(dense)]
        return rows[0] if dense.ndim == 1 else rows

    def _decode_one(self, indices, values, top_k):
        order = np.argsort(-values, kind="stable")[:top_k]
        return [(self.tokenizer.id_to_token(int(indices[i])), float(values[i])) for i in order]

    def _weights(self, texts):
        """float32 [len(texts), vocab]: the pooled weights of texts cut at max_seq_length."""
        from transformer.heads import masked_lm_logits

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length)
        attention_mask = batch["attention_mask"]
        token_type_ids = batch["token_type_ids"] if self.encoder.config.type_vocab_size else None
        hidden = self.encoder.last_hidden_state(batch["input_ids"], attention_mask, token_type_ids)  # [b, s, h]
        head = self.encoder.head
        # The logits of a whole batch are big ([b, s, vocab]): a few rows at a time.
        rows_per_pass = max(1, HEAD_CHUNK_VALUES // (hidden.shape[1] * self.dimension))
        pooled = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), rows_per_pass):
            rows = slice(start, start + rows_per_pass)
            logits = masked_lm_logits(head.params, head.activation, self.encoder.config.layer_norm_eps,
                                      hidden[rows])  # [r, s, h] -> [r, s, vocab]
            pooled[rows] = splade_pooling(logits, attention_mask[rows], self.pooling_strategy, self.activation)
        return pooled

    def __repr__(self):
        return (f"SparseEncoder(path={str(self.path)!r}, dimension={self.dimension}, "
                f"max_seq_length={self.max_seq_length}, pooling={self.pooling_strategy!r}, "
                f"activation={self.activation!r}, backend={self.encoder.backend!r})")


def read_splade_modules(path):
    """A SPLADE folder's modules.json -> {"transformer": subfolder, "strategy", "activation",
    "max_seq_length"}: an MLMTransformer then a SpladePooling (its config.json gives
    pooling_strategy and activation_function). No modules.json: the folder is the masked LM,
    pooled with max and relu, as sentence-transformers builds it."""
    path = Path(path)
    found = {"transformer": "", "strategy": "max", "activation": "relu", "max_seq_length": None}
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return found
    listed = read_json(modules_file, "module list")
    kinds = [module.get("type", "").rsplit(".", 1)[-1] if isinstance(module, dict) else None for module in listed] \
        if isinstance(listed, list) else None
    if kinds is None or kinds[:1] not in (["MLMTransformer"], ["Transformer"]) or kinds[1:] != ["SpladePooling"]:
        raise ModelFileError(f"{path} is not a SPLADE model: its modules.json lists {kinds}; a SPLADE model is "
                             f"an MLMTransformer then a SpladePooling (or a *ForMaskedLM folder without modules.json)")
    found["transformer"] = listed[0].get("path", "")
    settings_file = path / found["transformer"] / "sentence_bert_config.json"
    if settings_file.is_file():
        found["max_seq_length"] = read_json(settings_file, "sentence-transformers config").get("max_seq_length")
    config_file = path / listed[1].get("path", "") / "config.json"
    config = read_json(config_file, "SpladePooling config") if config_file.is_file() else {}
    found["strategy"] = config.get("pooling_strategy", "max")
    found["activation"] = config.get("activation_function", "relu")
    if found["strategy"] not in POOLING_STRATEGIES or found["activation"] not in ACTIVATIONS:
        raise ModelFileError(f"{config_file}: pooling_strategy {found['strategy']!r} and activation_function "
                             f"{found['activation']!r}; expected {POOLING_STRATEGIES} and {ACTIVATIONS}")
    return found


def _check_positive(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
