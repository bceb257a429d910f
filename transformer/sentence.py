"""Texts -> sentence embeddings, the way sentence-transformers makes them.

    >>> model = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    >>> vectors = model.encode(["A man is eating food.", "A man is eating bread."])
    >>> vectors.shape, vectors.dtype
    ((2, 384), dtype('float32'))
    >>> float(vectors[0] @ vectors[1])          # unit vectors: the dot product is the cosine
    0.7...

A sentence-transformers model folder says, in `modules.json`, which steps turn text into one
vector. This module runs the common ones:

    text --Transformer--> token vectors [seq, hidden] --Pooling--> [hidden] --Dense...--> [out] --Normalize--> unit length

  * Transformer: our `Tokenizer` (truncating at `max_seq_length` from sentence_bert_config.json,
    not at the truncation stored in tokenizer.json) and our `Encoder`;
  * Pooling: the modes in 1_Pooling/config.json (see `transformer.pooling`);
  * Dense (none, one or several): a linear layer and an activation, act(x @ W.T + b), each
    from its folder's config.json and model.safetensors (sentence-t5, EmbeddingGemma);
  * Normalize: scale to unit length, so a dot product is a cosine similarity.

A plain Hugging Face model folder (no modules.json) gets mean pooling, as sentence-transformers
gives it.
"""

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Optional

import numpy as np

from transformer import model as model_math
from transformer import pooling
from transformer.files import ModelFileError, read_json
from transformer.progress import Progress

LONG_TEXT_MODES = ("truncate", "chunk")
# The similarity functions a model may name in config_sentence_transformers.json.
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
# sentence-transformers' SentenceTransformer always knows a "query" and a "document" prompt,
# empty unless the model's config says otherwise.
DEFAULT_PROMPTS = {"query": "", "document": ""}
# encode_document uses the first of these prompt names the model has.
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


class SentenceEncoder:
    """A tokenizer, an encoder and the pooling / normalization steps of a sentence model."""

    def __init__(self, tokenizer, encoder, pooling_modes=("mean",), normalize=False,
                 max_seq_length=None, do_lower_case=False, path=None, prompts=None, default_prompt_name=None,
                 similarity_fn_name=None, truncate_dim=None, include_prompt=True, dense=()):
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.pooling_modes = list(pooling_modes)
        self.normalize = bool(normalize)
        # False: the prompt's tokens go through the encoder (they give the text its context)
        # but are left out of the pooling (Pooling's include_prompt, as instruction models use it).
        self.include_prompt = bool(include_prompt)
        self.dense = list(dense)  # DenseLayer steps after the pooling, in modules.json's order
        pooled = encoder.config.hidden_size * len(self.pooling_modes)
        if self.dense and self.dense[0].in_features != pooled:
            raise ModelFileError(f"the first Dense module{f' of {path}' if path else ''} takes "
                                 f"{self.dense[0].in_features} features, but the pooling gives {pooled} "
                                 f"(hidden_size {encoder.config.hidden_size} x {len(self.pooling_modes)} modes)")
        limit = encoder.config.max_sequence_length
        self.max_seq_length = min(max_seq_length or limit, limit)
        self.do_lower_case = bool(do_lower_case)
        self.path = Path(path) if path is not None else None
        self.files_at_load = None  # {file: identity} when loaded from a folder (`from_pretrained`)
        self.prompts = dict(DEFAULT_PROMPTS, **(prompts or {}))
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts "
                             f"{sorted(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        if similarity_fn_name is not None and similarity_fn_name not in SIMILARITY_FUNCTIONS:
            raise ValueError(f"similarity_fn_name={similarity_fn_name!r}; expected one of "
                             f"{', '.join(map(repr, SIMILARITY_FUNCTIONS))}")
        self.similarity_fn_name = similarity_fn_name or "cosine"
        self.truncate_dim = None if truncate_dim is None else self._check_truncate_dim(truncate_dim)

    @classmethod
    def from_pretrained(cls, name_or_path, backend=None, truncate_dim=None, pooling=None, precision="fp32"):
        """Load a sentence-transformers model folder or a known model name.

        name_or_path: "all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2", or a folder
        (resolved by `transformer.store.resolve`: path, weights/, Hugging Face cache, download).
        backend: "numpy", "numba", or None (numba when available).
        precision: "fp32" (the default) or "bf16": the layers' linears on bfloat16 weights and
            inputs, sums in float32, but those `transformer.encoder.BF16_POLICY` keeps in float32
            (`transformer.encoder.PRECISIONS`).
        truncate_dim: keep the first truncate_dim dimensions of every vector (Matryoshka
            models); None for what config_sentence_transformers.json says (else all).

        pooling: the pooling mode(s) ("mean", "lasttoken", ...) instead of what the model's
            Pooling module says.

        config_sentence_transformers.json gives `prompts`, `default_prompt_name`,
        `similarity_fn_name` and `truncate_dim` (see `read_model_config`).

        A GGUF file (llama.cpp's format) is a decoder with its tokenizer and no sentence
        modules: last-token pooling unless `pooling` says otherwise, no normalization.
        """
        from transformer.encoder import Encoder, model_folder
        from transformer.store import resolve
        from transformer.tokenizer import Tokenizer

        resolved = Path(resolve(name_or_path))
        if resolved.suffix == ".gguf" and resolved.is_file():
            modes = _pooling_modes(pooling or "lasttoken")
            encoder = Encoder.from_pretrained(resolved, backend, precision)
            return cls(Tokenizer.from_pretrained(resolved), encoder, modes,
                       path=resolved, truncate_dim=truncate_dim)
        path = model_folder(resolved, name_or_path)
        files_at_load = file_identities(path)  # before anything is read: see `file_identities`
        modules = read_modules(path)
        settings = read_model_config(path)
        transformer_dir = path / modules["transformer"]
        with warnings.catch_warnings():
            # A sentence model runs the base encoder only: a task head named in config.json
            # (all-mpnet-base-v2 says MPNetForMaskedLM) and absent from the file is expected.
            warnings.filterwarnings("ignore", message=r".*holds no .* head tensors")
            encoder = Encoder.from_pretrained(transformer_dir, backend=backend, precision=precision)
        model = cls(
            tokenizer=Tokenizer.from_pretrained(transformer_dir),
            encoder=encoder,
            pooling_modes=_pooling_modes(pooling) if pooling else modules["pooling"],
            normalize=modules["normalize"],
            max_seq_length=modules["max_seq_length"] or _tokenizer_limit(transformer_dir),
            do_lower_case=modules["do_lower_case"],
            path=path,
            prompts=settings["prompts"],
            default_prompt_name=settings["default_prompt_name"],
            similarity_fn_name=settings["similarity_fn_name"],
            truncate_dim=truncate_dim if truncate_dim is not None else settings["truncate_dim"],
            include_prompt=modules["include_prompt"],
            dense=modules["dense"],
        )
        model.files_at_load = files_at_load
        return model

    @property
    def dimension(self):
        """The length of one sentence vector: the last Dense module's out_features, else the
        hidden size times the number of pooling modes."""
        if self.dense:
            return self.dense[-1].out_features
        return self.encoder.config.hidden_size * len(self.pooling_modes)

    @property
    def backend(self):
        return self.encoder.backend

    def encode(self, texts, batch_size=32, normalize=None, show_progress=None, long="truncate",
               stride=None, *, prompt_name=None, prompt=None, truncate_dim=None, precision="float32",
               show_progress_bar=None, normalize_embeddings=None, convert_to_numpy=True,
               convert_to_tensor=False, device=None):
        """Texts -> sentence vectors, float32 [n, dim] (a single str gives [dim]; an empty
        list gives [0, dim]).

        batch_size: texts per forward pass. Texts are sorted by length so each batch pads
            little, and the vectors come back in the input order; a text's vector does not
            depend on which other texts share its batch.
        normalize: None -> as the model says (its Normalize module); True / False to force.
        show_progress: None -> a progress bar on stderr for multi-batch jobs when stderr is a
            terminal; True / False to force.
        long: "truncate" (the default, as sentence-transformers): tokens past max_seq_length
            are dropped. "chunk": a long text is cut into windows of max_seq_length tokens that
            overlap by `stride` tokens (default max_seq_length // 8); the windows' pooled
            vectors are averaged, weighted by their token counts, so every token counts.

        prompt_name: one of `self.prompts` (config_sentence_transformers.json's "prompts"),
            whose text is put before every text; prompt: that text given directly (it wins
            over prompt_name). Neither: the model's default_prompt_name, if it has one.
        truncate_dim: keep the first truncate_dim dimensions (Matryoshka models); None for
            the model's truncate_dim. The model's Normalize step runs before the cut, as in
            sentence-transformers; normalize=True makes the cut vectors unit length again.
        precision: "float32", or "int8" / "uint8" / "binary" / "ubinary" for
            `transformer.quantize.quantize_embeddings` with ranges from these vectors.

        sentence-transformers' names work too: show_progress_bar (= show_progress),
        normalize_embeddings=True (normalize; False leaves it to the model, as there),
        convert_to_numpy=False (a list of [dim] arrays), device "cpu" or None. There are no
        tensors here: convert_to_tensor=True is refused (torch.from_numpy(vectors) makes one).

        Raises ValueError when a vector comes out not finite (NaN or inf): a model whose
        weights or config make the forward pass overflow gives no silent answer.
        """
        show_progress = _one_of("show_progress", show_progress, "show_progress_bar", show_progress_bar)
        if normalize_embeddings:
            normalize = _one_of("normalize", normalize, "normalize_embeddings", True)
        if convert_to_tensor:
            raise ValueError("convert_to_tensor=True: this package computes with NumPy and returns arrays; "
                             "torch.from_numpy(vectors) makes a tensor of them")
        if device not in (None, "cpu"):
            raise ValueError(f"device={device!r}: this package runs on the CPU only; pass device=None or 'cpu'")
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        prompt = self._resolve_prompt(prompt_name, prompt)
        truncate_dim = self.truncate_dim if truncate_dim is None else self._check_truncate_dim(truncate_dim)
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if long not in LONG_TEXT_MODES:
            raise ValueError(f"long={long!r}; expected one of {', '.join(map(repr, LONG_TEXT_MODES))}")
        if stride is None:
            stride = self.max_seq_length // 8
        if long == "chunk":
            self._check_stride(stride)
        prompt_length = 0
        if prompt and not self.include_prompt:
            if long == "chunk":
                raise ValueError("long='chunk' with a prompt this model leaves out of its pooling (include_prompt: "
                                 "false in its Pooling config) is not supported; use long='truncate'")
            prompt_length = self.prompt_length(prompt)
        if prompt:
            texts = [prompt + text for text in texts]
        if self.do_lower_case:
            texts = [text.lower() for text in texts]

        # Longest first, like sentence-transformers: batches of similar lengths pad little.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        if show_progress is None:
            show_progress = None if len(texts) > batch_size else False
        with Progress(len(texts), "embedding", unit="texts", enabled=show_progress) as progress:
            for start in range(0, len(texts), batch_size):
                indices = order[start:start + batch_size]
                batch_texts = [texts[i] for i in indices]
                if long == "chunk":
                    vectors[indices] = self._embed_in_windows(batch_texts, stride, batch_size)
                else:
                    vectors[indices] = self._embed_truncated(batch_texts, prompt_length)
                progress.update(len(indices))

        broken = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(broken):
            named = ", ".join(f"texts[{i}]" for i in broken[:3]) + (" ..." if len(broken) > 3 else "")
            raise ValueError(f"the vectors of {len(broken)} text{'s' if len(broken) > 1 else ''} ({named}) are not "
                             f"finite (NaN or inf): the weights or config of {self.path or 'the model'} make the "
                             f"forward pass overflow")
        if self.normalize if normalize is None else normalize:
            vectors = pooling.normalize(vectors)  # [n, dim], each row of length 1
        if truncate_dim is not None:
            vectors = vectors[:, :truncate_dim]  # [n, dim] -> [n, truncate_dim]
            if normalize:
                vectors = pooling.normalize(vectors)
        if precision != "float32":
            from transformer.quantize import quantize_embeddings

            vectors = quantize_embeddings(vectors, precision)
        if single:
            return vectors[0]
        return vectors if convert_to_numpy else list(vectors)

    def encode_query(self, texts, prompt_name=None, prompt=None, **options):
        """`encode` for search queries: the model's "query" prompt unless one is given."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **options)

    def encode_document(self, texts, prompt_name=None, prompt=None, **options):
        """`encode` for the documents searched: the first of the model's "document",
        "passage", "corpus" prompts unless one is given (as sentence-transformers, whose
        models always have a "document" prompt, empty unless the config sets it)."""
        if prompt_name is None and prompt is None:
            prompt_name = next((name for name in DOCUMENT_PROMPT_NAMES if name in self.prompts), None)
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **options)

    def similarity(self, vectors_a, vectors_b):
        """[n, dim], [m, dim] -> float32 [n, m] by the model's similarity_fn_name (see
        `similarity`); one [dim] vector counts as [1, dim]."""
        return similarity(vectors_a, vectors_b, self.similarity_fn_name)

    def _resolve_prompt(self, prompt_name, prompt):
        """The text to put before every text, or None: `prompt` wins, then `prompt_name`,
        then the model's default_prompt_name."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        if prompt_name is None:
            prompt_name = self.default_prompt_name
            if prompt_name is None:
                return None
        if prompt_name not in self.prompts:
            raise ValueError(f"prompt_name {prompt_name!r} is not one of this model's prompts "
                             f"({', '.join(map(repr, self.prompts))}; config_sentence_transformers.json sets them)")
        return self.prompts[prompt_name]

    def _check_truncate_dim(self, truncate_dim):
        if not isinstance(truncate_dim, (int, np.integer)) or isinstance(truncate_dim, bool) \
                or not 1 <= truncate_dim <= self.dimension:
            raise ValueError(f"truncate_dim must be an integer in [1, {self.dimension}] (the model's vectors have "
                             f"{self.dimension} dimensions), got {truncate_dim!r}")
        return int(truncate_dim)

    def prompt_length(self, prompt):
        """The number of leading tokens a prompt takes in front of a text, as sentence-transformers
        counts them for include_prompt=False: the prompt tokenized alone, its special tokens
        included ([CLS] ...), less a special token closing it ([SEP], EOS) that a text would
        follow instead."""
        if self.do_lower_case:
            prompt = prompt.lower()
        batch = self.tokenizer([prompt], truncation=True, max_length=self.max_seq_length,
                               return_special_tokens_mask=True)
        length = len(batch["input_ids"][0])
        if length and batch["special_tokens_mask"][0][-1]:
            length -= 1
        return length

    def _embed_truncated(self, texts, prompt_length=0):
        """Sentence vectors [len(texts), dim] of texts cut at max_seq_length tokens; the first
        prompt_length tokens of each are left out of the pooling."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length)
        return self._pooled(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], prompt_length)

    def _embed_in_windows(self, texts, stride, batch_size):
        """Pooled vectors [len(texts), dim]: for each text, the average of its overlapping
        windows' vectors, each weighted by its number of tokens (a short last window counts
        for its share, not as much as a full one)."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                               stride=stride, return_overflowing_tokens=True)
        text_of_window = batch["overflow_to_sample_mapping"]  # [windows]: which text each row is from
        pooled = np.concatenate([
            self._pooled(batch["input_ids"][rows], batch["attention_mask"][rows], batch["token_type_ids"][rows])
            for rows in _slices(len(text_of_window), batch_size)
        ])  # [windows, dim]
        weights = batch["attention_mask"].sum(axis=1).astype(np.float32)  # [windows]: tokens in each
        summed = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
        np.add.at(summed, text_of_window, pooled * weights[:, None])  # [windows, dim] -> [texts, dim]
        total = np.bincount(text_of_window, weights=weights, minlength=len(texts)).astype(np.float32)
        return summed / total[:, None]

    def _pooled(self, input_ids, attention_mask, token_type_ids, prompt_length=0):
        """Token ids [batch, seq] -> sentence vectors [batch, dim]: pooled, then through the
        Dense modules (not yet normalized). The first prompt_length positions are seen by the
        encoder but left out of the pooling."""
        # Windows sliced out of a bigger batch may share columns of padding only: drop those.
        used = attention_mask.any(axis=0)  # [seq]
        if not used.all():
            input_ids, attention_mask, token_type_ids = (a[:, used] for a in (input_ids, attention_mask, token_type_ids))
        hidden = self.encoder.last_hidden_state(input_ids, attention_mask, token_type_ids)  # [batch, seq, hidden]
        return self.pool(hidden, attention_mask, prompt_length)

    def pool(self, hidden, attention_mask, prompt_length=0):
        """The steps after the encoder: hidden [batch, seq, hidden] and attention_mask
        [batch, seq] (right padding) -> [batch, dim], pooled by the model's modes (leaving the
        first prompt_length positions out) and through its Dense modules; not normalized."""
        if prompt_length:
            attention_mask = attention_mask.copy()
            attention_mask[:, :prompt_length] = 0  # the prompt's positions: not pooled
        vectors = pooling.pool(hidden, attention_mask, self.pooling_modes)  # [batch, pooled dim]
        for layer in self.dense:
            vectors = layer(vectors)  # [batch, in_features] -> [batch, out_features]
        return vectors

    def _check_stride(self, stride):
        room = self.max_seq_length - self.tokenizer.num_special_tokens_to_add(False)
        if not isinstance(stride, (int, np.integer)) or stride < 0 or stride >= room:
            raise ValueError(
                f"stride must be an integer in [0, {room - 1}] (windows hold {room} tokens besides "
                f"the special ones), got {stride!r}"
            )

    def __repr__(self):
        return (f"SentenceEncoder(path={str(self.path)!r}, dimension={self.dimension}, "
                f"max_seq_length={self.max_seq_length}, pooling={self.pooling_modes}, "
                f"normalize={self.normalize}, backend={self.backend!r})")


def file_identities(folder):
    """{file: identity} (transformer.digest) of the model files in `folder` that the vectors
    depend on, taken before a model is loaded from it: a file whose identity is the same
    later was not changed in between, so what was loaded is what a later hash of it sees
    (the search cache keys on those hashes)."""
    from transformer import digest
    from transformer.search_cache import model_files

    return {name: digest.identity(os.stat(os.path.join(folder, name))) for name in model_files(folder)}


def cosine_similarity(vectors_a, vectors_b=None):
    """Cosine similarities between the rows of two sets of vectors: [n, dim], [m, dim] -> [n, m].

    With one argument, every row against every other: [n, n], 1 on the diagonal.
    """
    vectors_a = pooling.normalize(np.atleast_2d(vectors_a))
    vectors_b = vectors_a if vectors_b is None else pooling.normalize(np.atleast_2d(vectors_b))
    return vectors_a @ vectors_b.T  # [n, dim] @ [dim, m] -> [n, m]


def similarity(vectors_a, vectors_b, function="cosine"):
    """Similarities between the rows of two sets of vectors: [n, dim], [m, dim] -> float32 [n, m].

    function: "cosine"; "dot" (the dot product); "euclidean" and "manhattan", the negative L2
    and L1 distances (so that larger is more similar, as for the other two).
    """
    if function not in SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity function {function!r}; expected one of "
                         f"{', '.join(map(repr, SIMILARITY_FUNCTIONS))}")
    vectors_a, vectors_b = (np.atleast_2d(np.asarray(v, dtype=np.float32)) for v in (vectors_a, vectors_b))
    if vectors_a.ndim != 2 or vectors_b.ndim != 2 or vectors_a.shape[1] != vectors_b.shape[1]:
        raise ValueError(f"similarity needs [n, dim] and [m, dim] vectors of one dim, got shapes "
                         f"{list(vectors_a.shape)} and {list(vectors_b.shape)}")
    if function == "cosine":
        return cosine_similarity(vectors_a, vectors_b)
    if function == "dot":
        return vectors_a @ vectors_b.T  # [n, dim] @ [dim, m] -> [n, m]
    order = 2 if function == "euclidean" else 1
    distances = np.empty((len(vectors_a), len(vectors_b)), dtype=np.float32)
    for row, vector in enumerate(vectors_a):  # one row at a time: [m, dim] of differences, not [n, m, dim]
        distances[row] = np.linalg.norm(vectors_b - vector, ord=order, axis=1)  # [m]
    return -distances


def read_model_config(path):
    """config_sentence_transformers.json -> {"prompts": {name: text}, "default_prompt_name",
    "similarity_fn_name", "truncate_dim"} (None where the file, or the field, is absent).
    ModelFileError naming the field that is malformed."""
    config_file = Path(path) / "config_sentence_transformers.json"
    config = _read_json(config_file, "sentence-transformers model config", default={})
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_file} must hold a JSON object, found {_show(config)}")
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(text, str) for text in prompts.values()):
        raise ModelFileError(f"{config_file}: prompts must be an object of name: text, found {_show(prompts)}")
    default_prompt_name = config.get("default_prompt_name")
    if default_prompt_name is not None and default_prompt_name not in dict(DEFAULT_PROMPTS, **prompts):
        raise ModelFileError(f"{config_file}: default_prompt_name {_show(default_prompt_name)} is not one of the "
                             f"prompts ({', '.join(map(repr, dict(DEFAULT_PROMPTS, **prompts)))})")
    similarity_fn_name = config.get("similarity_fn_name")
    if similarity_fn_name is not None and similarity_fn_name not in SIMILARITY_FUNCTIONS:
        raise ModelFileError(f"{config_file}: similarity_fn_name is {_show(similarity_fn_name)}; expected one of "
                             f"{', '.join(map(repr, SIMILARITY_FUNCTIONS))}")
    truncate_dim = config.get("truncate_dim")
    if truncate_dim is not None and (type(truncate_dim) is not int or truncate_dim < 1):
        raise ModelFileError(f"{config_file}: truncate_dim must be a positive integer or null, found "
                             f"{_show(truncate_dim)}")
    return {"prompts": prompts, "default_prompt_name": default_prompt_name,
            "similarity_fn_name": similarity_fn_name, "truncate_dim": truncate_dim}


def _pooling_modes(value):
    """from_pretrained's pooling: a mode or a list of modes -> [mode, ...], each one of
    pooling.POOLING_FUNCTIONS."""
    modes = [value] if isinstance(value, str) else list(value)
    for mode in modes:
        if mode not in pooling.POOLING_FUNCTIONS:
            raise ValueError(f"pooling {mode!r} is not a pooling mode; expected one of "
                             f"{', '.join(pooling.POOLING_FUNCTIONS)}")
    return modes


def read_modules(path):
    """A model folder's sentence-transformers files -> what they say, checked:

        {"transformer": subfolder, "pooling": [modes], "include_prompt": bool,
         "dense": [DenseLayer], "normalize": bool, "max_seq_length": int or None,
         "do_lower_case": bool}

    modules.json lists the steps, run in its order (as sentence-transformers runs them):
    a Transformer, then optionally Pooling (its modes in <path>/config.json), then optionally
    Normalize. max_seq_length and do_lower_case come from the Transformer folder's
    sentence_bert_config.json. A folder without modules.json (a plain Hugging Face model)
    gets mean pooling, no normalize.

    Every file is read through `transformer.files` (a regular file, bounded, strict JSON).
    Raises ModelFileError (a ValueError) naming the file and the field that is wrong, or a
    module this package does not run (e.g. Dense).
    """
    path = Path(path)
    modules_file = path / "modules.json"
    listed = _read_json(modules_file, "module list", default=_ABSENT)
    found = {"transformer": "", "pooling": ["mean"], "include_prompt": True, "dense": [], "normalize": False}
    if listed is not _ABSENT:
        found.update(_modules_in_order(path, modules_file, listed))
    try:
        found.update(_sentence_settings(path / found["transformer"] / "sentence_bert_config.json"))
    except OSError as error:  # the Transformer's path from modules.json: a name too long, a loop of links
        raise ModelFileError(f"{modules_file}: the Transformer module's path {_show(found['transformer'])} "
                             f"cannot be read: {error.strerror or error}") from None
    return found


# The steps this package runs, in the order it runs them (Dense any number of times).
_MODULE_ORDER = ("Transformer", "Pooling", "Dense", "Normalize")
_ABSENT = object()  # a file that does not exist (a file holding null is not absent)


def _modules_in_order(path, modules_file, listed):
    """modules.json's list -> {"transformer", "pooling", "normalize"}; ModelFileError when the
    list is malformed, names a module this package does not run, or puts them out of order."""
    if not isinstance(listed, list):
        raise ModelFileError(f"{modules_file} must hold a list of modules, found {_show(listed)}")
    found = {"transformer": None, "pooling": ["mean"], "include_prompt": True, "dense": [], "normalize": False}
    last = -1
    for index, module in enumerate(listed):
        where = f"{modules_file}: module {index}"
        if not isinstance(module, dict):
            raise ModelFileError(f"{where} is {_show(module)}; expected an object with type and path")
        kind, subfolder = module.get("type"), module.get("path")
        if not isinstance(kind, str):
            raise ModelFileError(f"{where} has type {_show(kind)}; expected a class name such as "
                                 f"'sentence_transformers.models.Pooling'")
        kind = kind.rsplit(".", 1)[-1]
        if kind not in _MODULE_ORDER:
            raise ModelFileError(
                f"{modules_file} lists a {module['type']!r} module, which this package does "
                f"not run (it runs Transformer, Pooling, Dense and Normalize)"
            )
        if not _is_relative_folder(subfolder):  # sentence-transformers needs a path for every module
            raise ModelFileError(f"{where} has {'no path' if 'path' not in module else f'path {_show(subfolder)}'}; "
                                 f"expected a folder inside the model folder (relative, no '..')")
        if _MODULE_ORDER.index(kind) < last or (_MODULE_ORDER.index(kind) == last and kind != "Dense"):
            raise ModelFileError(f"{where} is a {kind} after a {_MODULE_ORDER[last]}; this package runs "
                                 f"{', then '.join(_MODULE_ORDER)}, each at most once but Dense")
        last = _MODULE_ORDER.index(kind)
        if kind == "Transformer":
            found["transformer"] = subfolder
        elif kind == "Pooling":
            pooling_file = path / subfolder / "config.json"
            try:
                config = _read_json(pooling_file, "pooling config", default=_ABSENT)
            except OSError as error:  # the path from modules.json: a name too long, a loop of links
                raise ModelFileError(f"{where} is a Pooling module in {_show(subfolder)}, whose config.json cannot "
                                     f"be read: {error.strerror or error}") from None
            if config is _ABSENT:
                raise ModelFileError(f"{where} is a Pooling module in {_show(subfolder)}, but {pooling_file} "
                                     f"does not exist")
            try:
                found["pooling"] = pooling.pooling_modes_from_config(config)
            except ValueError as error:
                raise ModelFileError(f"{pooling_file}: {error}") from None
            found["include_prompt"] = config.get("include_prompt", True)
            if not isinstance(found["include_prompt"], bool):
                raise ModelFileError(f"{pooling_file}: include_prompt must be true or false, found "
                                     f"{_show(found['include_prompt'])}")
        elif kind == "Dense":
            try:
                found["dense"].append(read_dense(path / subfolder))
            except OSError as error:  # the path from modules.json: a name too long, a loop of links
                raise ModelFileError(f"{where} is a Dense module in {_show(subfolder)}, which cannot be read: "
                                     f"{error.strerror or error}") from None
        else:
            found["normalize"] = True
    if found["transformer"] is None:
        raise ModelFileError(f"{modules_file} lists no Transformer module")
    for index, (before, after) in enumerate(zip(found["dense"], found["dense"][1:])):
        if after.in_features != before.out_features:
            raise ModelFileError(f"{modules_file}: Dense module {index + 2} takes {after.in_features} features, but the "
                                 f"Dense before it gives {before.out_features}")
    return found


# Dense's activation_function as sentence-transformers saves it (torch's class path) -> the
# function; only torch.nn classes are loaded there without trust_remote_code.
DENSE_ACTIVATIONS = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": model_math.relu,
    "Sigmoid": model_math.sigmoid,
    "GELU": model_math.gelu,
    "SiLU": model_math.silu,
}
# sentence-transformers' Dense without an activation_function in its config uses Tanh.
DENSE_DEFAULT_ACTIVATION = "torch.nn.modules.activation.Tanh"


@dataclass(frozen=True)
class DenseLayer:
    """sentence-transformers' Dense module: [batch, in_features] -> [batch, out_features],
    activation(x @ weight.T + bias), plus x (or x @ residual.T) when use_residual."""

    weight: np.ndarray  # float32 [out_features, in_features], as nn.Linear stores it
    bias: Optional[np.ndarray]  # float32 [out_features], or None (bias: false)
    activation: str  # a key of DENSE_ACTIVATIONS
    residual: Optional[np.ndarray] = None  # float32 [out, in]; None: the identity (when use_residual)
    use_residual: bool = False

    @property
    def in_features(self):
        return self.weight.shape[1]

    @property
    def out_features(self):
        return self.weight.shape[0]

    def __call__(self, vectors):
        out = vectors @ self.weight.T  # [batch, in] @ [in, out] -> [batch, out]
        if self.bias is not None:
            out = out + self.bias
        out = DENSE_ACTIVATIONS[self.activation](out).astype(np.float32)
        if self.use_residual:
            out = out + (vectors if self.residual is None else vectors @ self.residual.T)  # [batch, out]
        return out


def read_dense(folder):
    """A Dense module's folder (config.json, model.safetensors) -> DenseLayer. ModelFileError
    naming the file and the field that is wrong; a pytorch_model.bin (a pickle, which this
    package does not load) is refused with how to convert it."""
    from transformer.loading import read_safetensors

    folder = Path(folder)
    config_file = folder / "config.json"
    config = _read_json(config_file, "Dense config", default=_ABSENT)
    if config is _ABSENT:
        raise ModelFileError(f"{config_file} does not exist; a Dense module's folder needs its config.json")
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_file} must hold a JSON object, found {_show(config)}")
    sizes = {}
    for key in ("in_features", "out_features"):
        if type(config.get(key)) is not int or config[key] < 1:
            raise ModelFileError(f"{config_file}: {key} must be a positive integer, found {_show(config.get(key))}")
        sizes[key] = config[key]
    has_bias, use_residual = config.get("bias", True), config.get("use_residual", False)
    for key, value in (("bias", has_bias), ("use_residual", use_residual)):
        if not isinstance(value, bool):
            raise ModelFileError(f"{config_file}: {key} must be true or false, found {_show(value)}")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise ModelFileError(f"{config_file}: {key} is {_show(config[key])}; this package runs Dense on the "
                                 f"sentence embedding only (\"sentence_embedding\")")
    activation = config.get("activation_function", DENSE_DEFAULT_ACTIVATION)
    name = activation.rsplit(".", 1)[-1] if isinstance(activation, str) and activation.startswith("torch.") else None
    if name not in DENSE_ACTIVATIONS:
        raise ModelFileError(f"{config_file}: activation_function {_show(activation)} is not one this package runs; "
                             f"expected torch.nn's {', '.join(DENSE_ACTIVATIONS)} (e.g. "
                             f"\"torch.nn.modules.activation.Tanh\")")

    weights_file = folder / "model.safetensors"
    if not weights_file.exists():
        if (folder / "pytorch_model.bin").exists():
            raise ModelFileError(f"{folder / 'pytorch_model.bin'} is a pickle, which this package does not load (it can "
                                 f"run code); convert it to model.safetensors: load the model with "
                                 f"sentence-transformers and save it again (model.save(folder), safetensors by default)")
        raise ModelFileError(f"{weights_file} does not exist; a Dense module's folder needs its weights")
    tensors = read_safetensors(weights_file)
    expected = {"linear.weight": (sizes["out_features"], sizes["in_features"])}
    if has_bias:
        expected["linear.bias"] = (sizes["out_features"],)
    if use_residual and sizes["in_features"] != sizes["out_features"]:
        expected["residual.weight"] = (sizes["out_features"], sizes["in_features"])
    found = {}
    for tensor, shape in expected.items():
        if tensor not in tensors:
            raise ModelFileError(f"{weights_file} has no tensor {tensor!r} (found: {', '.join(tensors) or 'none'})")
        value = np.asarray(tensors[tensor])
        if value.shape != shape or value.dtype != np.float32:
            raise ModelFileError(f"{weights_file}: {tensor} is {value.dtype} {list(value.shape)}; expected float "
                                 f"{list(shape)} (config.json's in_features {sizes['in_features']}, out_features "
                                 f"{sizes['out_features']})")
        if not np.isfinite(value).all():
            raise ModelFileError(f"{weights_file}: {tensor} holds values that are not finite (NaN or inf)")
        found[tensor] = value
    return DenseLayer(found["linear.weight"], found.get("linear.bias"), name, found.get("residual.weight"),
                      use_residual)


def _is_relative_folder(subfolder):
    """A path inside the model folder, as sentence-transformers accepts it: a string with no
    root or drive (POSIX or Windows) and no '..' part."""
    if not isinstance(subfolder, str) or "\0" in subfolder or not _is_encodable(subfolder):
        return False
    windows = PureWindowsPath(subfolder)  # splits on / and \ both
    return not windows.anchor and ".." not in windows.parts


def _is_encodable(name):
    """Whether the OS can take `name` as a file name (a lone surrogate, "\ud800", it cannot)."""
    try:
        os.fsencode(name)
        return True
    except UnicodeEncodeError:
        return False


def _sentence_settings(config_file):
    """sentence_bert_config.json -> {"max_seq_length": int or None, "do_lower_case": bool}
    (absent file: None and False)."""
    settings = _read_json(config_file, "sentence-transformers config", default={})
    if not isinstance(settings, dict):
        raise ModelFileError(f"{config_file} must hold a JSON object, found {_show(settings)}")
    max_seq_length = settings.get("max_seq_length")
    if max_seq_length is not None and (type(max_seq_length) is not int or max_seq_length < 1):
        raise ModelFileError(f"{config_file}: max_seq_length must be a positive integer or null, found "
                             f"{_show(max_seq_length)}")
    do_lower_case = settings.get("do_lower_case", False)
    if not isinstance(do_lower_case, bool):
        raise ModelFileError(f"{config_file}: do_lower_case must be true or false, found {_show(do_lower_case)}")
    return {"max_seq_length": max_seq_length, "do_lower_case": do_lower_case}


def _tokenizer_limit(model_dir):
    """tokenizer_config.json's model_max_length, the fallback when no max_seq_length is set.
    None when absent or not a real limit (transformers writes 1e30 for "no limit")."""
    config_file = Path(model_dir) / "tokenizer_config.json"
    config = _read_json(config_file, "tokenizer config", default={})
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_file} must hold a JSON object, found {_show(config)}")
    value = config.get("model_max_length")
    return value if type(value) is int and 0 < value < 1_000_000 else None


def _read_json(path, what="file", default=...):
    """The JSON in `path`, read through `transformer.files` (regular file, bounded, strict JSON,
    no key twice); `default` when the file does not exist (FileNotFoundError without one)."""
    try:
        return read_json(path, what, unique_keys=True)
    except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: a file where a folder should be
        if default is ...:
            raise
        return default


def _show(value, width=60):
    """A JSON value as the file writes it, cut at `width` characters, for an error message."""
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()  # a lone surrogate too
    return text if len(text) <= width else text[:width] + "..."


# Half of a UTF-16 pair on its own: Python strings may hold one (bytes decoded with
# errors="surrogateescape"), text may not; the Rust tokenizers refuse it too.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_texts(texts):
    """A list of str, or a TypeError naming what was given or the offending item (a
    ValueError for a text holding a lone surrogate)."""
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError(f"texts is {type(texts).__name__}; expected a str or a list of str "
                        f"(decode bytes first: data.decode('utf-8'))")
    if isinstance(texts, (dict, set, frozenset)):
        raise TypeError(f"texts is a {type(texts).__name__}; expected a str or a list of str (in the order "
                        f"the vectors should come back)")
    try:
        texts = list(texts)
    except TypeError:
        given = "None" if texts is None else f"the {type(texts).__name__} {texts!r:.40}"
        raise TypeError(f"texts must be a str or a list of str, got {given}") from None
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            hint = " (decode bytes first: data.decode('utf-8'))" if isinstance(text, (bytes, bytearray)) else ""
            raise TypeError(f"texts[{index}] is {'None' if text is None else type(text).__name__}; "
                            f"expected str{hint}")
        surrogate = _LONE_SURROGATE.search(text)
        if surrogate:
            raise ValueError(f"texts[{index}] holds a lone surrogate ({surrogate.group()!r} at character "
                             f"{surrogate.start()}), which is no character; decode its bytes with "
                             f"errors='replace', not 'surrogateescape'")
    return texts


def _one_of(name, value, alias, alias_value):
    """The value of an argument that also has sentence-transformers' name: either may be
    given, not both with different values."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ValueError(f"{name}={value!r} and {alias}={alias_value!r} say different things; give one")
    return alias_value


def _slices(count, size):
    return [slice(start, start + size) for start in range(0, count, size)]
