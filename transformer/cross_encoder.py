"""A cross-encoder: a (query, document) pair read together -> one relevance score, for reranking.

    >>> model = CrossEncoder.from_pretrained("path/to/ms-marco-MiniLM-L6-v2")
    >>> model.predict([("How many people live in Berlin?", "Berlin has 3.5 million people."),
    ...                ("How many people live in Berlin?", "Berlin is known for its museums.")])
    array([0.99..., 0.01...], dtype=float32)
    >>> model.rank("How many people live in Berlin?", documents, top_k=3)
    [{'corpus_id': 0, 'score': 0.99...}, ...]

A bi-encoder (`SentenceEncoder`) embeds query and document apart and compares the vectors; a
cross-encoder puts both into one sequence, [CLS] query [SEP] document [SEP], so every query
token attends to every document token, and a sequence-classification head turns the first
token into num_labels scores:

    pair --Tokenizer--> ids [batch, seq] --Encoder + head--> logits [batch, num_labels]
         --activation--> scores ([batch] when num_labels is 1)

The checkpoint is a Hugging Face *ForSequenceClassification folder (BERT, RoBERTa / XLM-R,
ELECTRA, DistilBERT, MPNet: the heads of `transformer.heads`). The activation is the one
sentence-transformers' CrossEncoder reads from config.json ("sentence_transformers":
{"activation_fn": ...}), else sigmoid for one label and none for several.
"""

import numpy as np

from pathlib import Path

from transformer.files import ModelFileError, read_json
from transformer.progress import Progress

# torch's activation classes (as sentence-transformers names them in config.json) -> ours.
ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.Softmax": "softmax",
}
ACTIVATION_NAMES = ("sigmoid", "identity", "tanh", "softmax")


def apply_activation(logits, name):
    """logits float32 [batch, num_labels] -> the same shape through `name` (softmax: over labels)."""
    if name == "sigmoid":
        return (1 / (1 + np.exp(-logits))).astype(np.float32)
    if name == "tanh":
        return np.tanh(logits)
    if name == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))  # [batch, labels], no overflow
        return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    return logits


class CrossEncoder:
    """A tokenizer and an encoder with a sequence-classification head."""

    def __init__(self, tokenizer, encoder, max_length, activation, path=None):
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.max_length = max_length
        self.activation = _check_activation(activation)
        self.path = path

    @classmethod
    def from_pretrained(cls, name_or_path, backend=None, max_length=None, precision="fp32"):
        """Load a sequence-classification model folder (or a name `transformer.store` knows).

        max_length: tokens per pair, longer pairs cut from the longer side ("longest_first");
        None: tokenizer_config.json's model_max_length, at most what the positions allow.
        precision: "fp32" or "bf16" (`transformer.encoder.PRECISIONS`).
        ModelFileError when the checkpoint has no sequence-classification head.
        """
        import warnings

        from transformer.encoder import Encoder, model_folder
        from transformer.sentence import read_modules
        from transformer.store import resolve
        from transformer.tokenizer import Tokenizer

        path = model_folder(resolve(name_or_path), name_or_path)
        with warnings.catch_warnings():
            # a base model without a head is reported below, as the error it is here
            warnings.filterwarnings("ignore", message=r".*holds no .* head tensors")
            encoder = Encoder.from_pretrained(path, backend=backend, precision=precision)
        if encoder.head is None or encoder.head.kind != "sequence_classification":
            found = f"a {encoder.head.kind} head" if encoder.head is not None else "no task head"
            raise ModelFileError(
                f"{path} is not a cross-encoder: its checkpoint has {found} (config.json architectures: "
                f"{list(encoder.config.architectures) or 'none'}); a cross-encoder needs a "
                f"*ForSequenceClassification checkpoint with its classifier tensors")
        tokenizer = Tokenizer.from_pretrained(path)
        limit = encoder.config.max_sequence_length
        if max_length is None:  # sentence-transformers' own setting first, then the tokenizer's
            saved = read_modules(path)["max_seq_length"] if (path / "modules.json").is_file() else None
            max_length = min(saved or tokenizer.model_max_length, limit)
        elif not isinstance(max_length, int) or isinstance(max_length, bool) or not 1 <= max_length <= limit:
            raise ValueError(f"max_length must be an integer in [1, {limit}], got {max_length!r}")
        num_labels = encoder.head.params["out"]["weight"].shape[1]
        activation = activation_from_config(path, num_labels)
        return cls(tokenizer, encoder, max_length, activation, path=path)

    @property
    def num_labels(self):
        return self.encoder.head.params["out"]["weight"].shape[1]

    def predict(self, pairs, batch_size=32, activation=None, apply_softmax=False, show_progress=None):
        """(text, text) pairs -> scores float32 [n] (one label) or [n, num_labels]; one pair
        alone gives a float32 scalar (or [num_labels]).

        activation: None for the model's (see the module docstring), or "sigmoid",
            "identity", "tanh", "softmax".
        apply_softmax: with several labels, a softmax over them after the activation.
        """
        activation = self.activation if activation is None else _check_activation(activation)
        single = isinstance(pairs, (tuple, list)) and len(pairs) == 2 and all(isinstance(p, str) for p in pairs)
        pairs = _check_pairs([pairs] if single else pairs)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        scores = np.empty((len(pairs), self.num_labels), dtype=np.float32)
        # Longest first, as sentence-transformers: batches of similar lengths pad little.
        order = np.argsort([-(len(first) + len(second)) for first, second in pairs], kind="stable")
        with Progress(len(pairs), "scoring", unit="pairs",
                      enabled=show_progress if len(pairs) > batch_size else False) as progress:
            for start in range(0, len(pairs), batch_size):
                rows = order[start:start + batch_size]
                scores[rows] = self._logits([pairs[i] for i in rows])
                progress.update(len(rows))
        scores = apply_activation(scores, activation)
        if apply_softmax and self.num_labels > 1:
            scores = apply_activation(scores, "softmax")
        if self.num_labels == 1:
            scores = scores[:, 0]  # [n, 1] -> [n]
        return scores[0] if single else scores

    def rank(self, query, documents, top_k=None, return_documents=False, batch_size=32, activation=None):
        """Score every document against the query; a list of {"corpus_id", "score"} (and
        "text" with return_documents=True), best first, the top_k of them (None: all)."""
        if self.num_labels != 1:
            raise ValueError(f"rank needs a model with one label (a relevance score); this one has "
                             f"{self.num_labels}: use predict on the pairs")
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if isinstance(documents, str):
            raise TypeError("documents is a single str; give a list of str")
        documents = list(documents)
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        scores = self.predict([(query, document) for document in documents], batch_size=batch_size,
                              activation=activation) if documents else np.zeros(0, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:top_k]  # best first; ties keep the input order
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]

    def _logits(self, pairs):
        """float32 [len(pairs), num_labels]: the head's scores before any activation."""
        batch = self.tokenizer([first for first, _ in pairs], [second for _, second in pairs],
                               padding=True, truncation="longest_first", max_length=self.max_length)
        # DistilBERT and MPNet have no token types: which text a token is from, only [SEP] says.
        token_type_ids = batch["token_type_ids"] if self.encoder.config.type_vocab_size else None
        return self.encoder(batch["input_ids"], batch["attention_mask"], token_type_ids).logits

    def __repr__(self):
        return (f"CrossEncoder(path={str(self.path)!r}, num_labels={self.num_labels}, max_length={self.max_length}, "
                f"activation={self.activation!r}, backend={self.encoder.backend!r})")


def activation_from_config(folder, num_labels):
    """The activation sentence-transformers' CrossEncoder applies: "activation_fn" in
    config_sentence_transformers.json (where version 5 and later save it, e.g.
    "torch.nn.modules.activation.Sigmoid"), else config.json's "sentence_transformers":
    {"activation_fn": ...} (or the older "sbert_ce_default_activation_function"), else sigmoid
    for one label and identity for several."""
    folder = Path(folder)
    config_file = folder / "config_sentence_transformers.json"
    named = None
    if config_file.is_file():
        named = _object(read_json(config_file, "sentence-transformers model config"), config_file).get("activation_fn")
    if named is None:
        config_file = folder / "config.json"
        config = _object(read_json(config_file, "model config"), config_file)
        named = (config.get("sentence_transformers") or {}).get("activation_fn") \
            or config.get("sbert_ce_default_activation_function")
    if named is None:
        return "sigmoid" if num_labels == 1 else "identity"
    if named not in ACTIVATIONS:
        raise ModelFileError(f"{config_file}: the activation {named!r} is not one this package runs "
                             f"({', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[named]


def _object(value, file):
    if not isinstance(value, dict):
        raise ModelFileError(f"{file} must hold a JSON object, found {type(value).__name__}")
    return value


def _check_activation(name):
    if name not in ACTIVATION_NAMES:
        raise ValueError(f"activation={name!r}; expected one of {', '.join(map(repr, ACTIVATION_NAMES))}")
    return name


def _check_pairs(pairs):
    """A list of (str, str), or a TypeError naming the first item that is not one."""
    if isinstance(pairs, (str, bytes)):
        raise TypeError("pairs must be a list of (text, text) pairs, got a single str")
    pairs = list(pairs)
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise TypeError(f"pairs[{index}] is {pair!r:.60}; expected a (text, text) pair of str")
    return [tuple(pair) for pair in pairs]
