"""A loaded encoder: `Encoder.from_pretrained(path)`, then call it on token ids.

    >>> model = Encoder.from_pretrained("all-MiniLM-L6-v2")
    >>> out = model([[101, 7592, 2088, 102]])
    >>> out.last_hidden_state.shape, out.last_hidden_state.dtype
    ((1, 4, 384), dtype('float32'))

The backend is picked once, at load:

  * "numpy": `transformer.model.encoder_forward(params, config, ...)`, the readable reference.
  * "numba": `transformer.numba_backend.forward.encoder_forward(prepared, config, ...)` on
    `prepared = transformer.numba_backend.forward.prepare(params, config)`, made once at load.
  * None: "numba" when `transformer.numba_backend.forward` imports, else "numpy".

Both take (weights, config, input_ids, attention_mask, token_type_ids, output_hidden_states,
output_attentions) with the inputs already checked by `transformer.model.check_inputs`
(int64 [batch, seq] arrays, never None), and return (last_hidden_state, hidden_states or None,
attentions or None). The numba module also offers `pooler(prepared, last_hidden_state)`:
BERT's pooler through the packed GEMM, so nothing on that path calls BLAS (OpenBLAS's
threads spin after a call and take the cores from the kernels' threads), and
`head_linear(prepared)`, the matrix product the task heads run on there.

`Encoder.last_hidden_state(...)` runs the encoder alone (no pooler, no head): what a
sentence encoder needs.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transformer import digest
from transformer import model as numpy_model
from transformer.config import EncoderConfig
from transformer.files import ModelFileError
from transformer.heads import head_logits, load_head, top_predictions
from transformer.loading import (CheckpointError, checkpoint_layers, keep_big_arrays_out_of_the_heap, load_params,
                                 read_checkpoint, warn_unused_layers)

BACKENDS = ("numpy", "numba")
# The arithmetic of the layers' linears: "fp32", or "bf16" (weights and each linear's input
# rounded to bfloat16, products summed in float32, except the kinds BF16_POLICY keeps in
# float32; everything else float32).
PRECISIONS = ("fp32", "bf16")
# The kinds of a layer's linears, by their place in the recipe (every family's): "qkv" the
# attention's query, key and value (and DeBERTa's position projections), "attention_output"
# its output, "ffn_up" the MLP's up (and a GLU's gate), "ffn_down" the MLP's down.
LINEAR_KINDS = ("qkv", "attention_output", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class Bf16Policy:
    """Which kinds of linears (LINEAR_KINDS) precision="bf16" keeps in float32: their weights
    stay float32 and their inputs are not rounded. Both backends read it from the params:
    a linear's weight is uint16 bfloat16 bits (bf16) or float32 (fp32)."""

    fp32: tuple = ()

    def __post_init__(self):
        unknown = [kind for kind in self.fp32 if kind not in LINEAR_KINDS]
        if unknown:
            raise ValueError(f"Bf16Policy: unknown linear kind(s) {unknown}; choose among {', '.join(LINEAR_KINDS)}")

    @property
    def label(self):
        """"bf16", or "bf16-fp32-<kinds>": the precision's name where what is packed depends
        on it (the packed cache's key)."""
        return "bf16" if not self.fp32 else "bf16-fp32-" + "-".join(sorted(self.fp32))


# precision="bf16"'s policy: the attention's output projection in float32, the smallest
# linear of a layer (hidden x hidden) and the cheapest one that lifts all-mpnet-base-v2's
# worst text over issue 21's bar (docs/performance.md#bf16 has the measurements).
BF16_POLICY = Bf16Policy(fp32=("attention_output",))


@dataclass
class EncoderOutput:
    """What one call of an `Encoder` returns.

    last_hidden_state  float32 [batch, seq, hidden]: one contextual vector per token.
    pooler_output      float32 [batch, hidden]: tanh(dense(first token)), where the
                       checkpoint has a pooler; else None.
    hidden_states      on request: num_layers + 1 arrays [batch, seq, hidden], the embedding
                       output first, then each layer's output; else None.
    attentions         on request: num_layers arrays [batch, heads, seq, seq] of attention
                       probabilities (each row sums to 1); else None.
    logits             where a head was loaded: masked LM [batch, seq, vocab], sequence
                       classification [batch, num_labels], token classification
                       [batch, seq, num_labels], ELECTRA discriminator [batch, seq]; else None.
    """

    last_hidden_state: np.ndarray
    pooler_output: np.ndarray | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    logits: np.ndarray | None = None


def _kernels_forward():
    return importlib.import_module("transformer.numba_backend.forward")


def pick_backend(backend):
    """"numpy" / "numba" / None -> (name, the module whose encoder_forward runs the model)."""
    if backend is None:
        try:
            return "numba", _kernels_forward()
        except ImportError:
            return "numpy", numpy_model
    if backend == "numpy":
        return "numpy", numpy_model
    if backend == "numba":
        try:
            return "numba", _kernels_forward()
        except ImportError as error:
            raise ImportError(
                f"backend='numba' needs transformer.numba_backend.forward, which failed to import ({error}); "
                f"use backend='numpy'"
            ) from error
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))} or None (auto)")


class Encoder:
    """An encoder with its weights loaded: config, params, an optional task head, a backend.

    Call it on token ids: `model(input_ids, attention_mask=None, token_type_ids=None,
    output_hidden_states=False, output_attentions=False)` -> EncoderOutput.
    """

    def __init__(self, config: EncoderConfig, params: dict, head=None, backend=None, path=None, prepared=None,
                 precision="fp32"):
        self.config = config
        self.precision = check_precision(precision)
        if precision == "bf16" and prepared is None:
            params = dict(params, layers=bf16_layers(params["layers"], config.recipe))
        self.params = params
        self.head = head
        self.path = Path(path) if path is not None else None
        self.backend, self._forward_module = pick_backend(backend)
        # The numba backend lays the weights out its own way, once (or is handed them so laid
        # out: `prepared`, from the packed cache). It takes the layers' weights over
        # (params["layers"] then re-derives them from the packed form on demand): one copy of
        # each weight in memory.
        if self.backend == "numba":
            self._weights = prepared if prepared is not None else self._forward_module.prepare(params, config)
        else:
            numpy_model.check_recipe(config.recipe)  # a step it cannot run is refused here, by name
            self._weights = params
        # The heads' matrix products: the packed GEMM on the numba backend (no BLAS call there).
        self._head_linear = None  # None: transformer.model.linear
        if self.backend == "numba" and hasattr(self._forward_module, "head_linear"):
            self._head_linear = self._forward_module.head_linear(self._weights)

    @classmethod
    def from_pretrained(cls, name_or_path, backend=None, precision="fp32") -> "Encoder":
        """Load a model folder (config.json + model.safetensors or its shards), a GGUF file
        (llama.cpp's format: a decoder's config and weights in one file, dequantized to
        float32), or a model name that `transformer.store.resolve` knows (e.g. "all-MiniLM-L6-v2").
        precision: "fp32" (the default: the reference's numbers) or "bf16" (see PRECISIONS)."""
        from transformer import store

        check_precision(precision)

        path = Path(store.resolve(name_or_path))
        if path.suffix == ".gguf" and path.is_file():
            return cls._load_gguf_file(path, backend, precision)
        model_dir = model_folder(path, name_or_path)
        if path.is_file() and not path.name.endswith(".safetensors"):  # its config.json: the folder's checkpoint
            path = model_dir
        # Either way of loading (below) and every batch after it: big arrays in their own
        # pages, returned to the OS when freed, never left as holes in the heap.
        keep_big_arrays_out_of_the_heap()
        # Tensors are read one by one, each by its file's name: a checkpoint replaced or
        # rewritten meanwhile would give some tensors of each. Loaded again until no file
        # changed from before the first read to after the last.
        for _ in range(LOAD_ATTEMPTS):
            before = _file_identities(model_dir, path)
            encoder = cls._load(path, model_dir, backend, precision)
            if _file_identities(model_dir, path) == before:
                return encoder
        raise CheckpointError(f"{path}: the checkpoint changed while it was being read, {LOAD_ATTEMPTS} times "
                              f"running; load it again once it is written")

    @classmethod
    def _load(cls, path, model_dir, backend, precision="fp32"):
        """An Encoder from the checkpoint at `path` (a folder, or a .safetensors file) and the
        config.json of `model_dir`."""
        backend_name, module = pick_backend(backend)
        # The numba backend keeps a packed copy of a big checkpoint next to it (see
        # transformer.numba_backend.packed_cache): reading it back skips reading, transposing and
        # packing the weights. Found before any file is read: it saves what was packed only
        # when the files are still the ones it found then.
        cache = None
        if path.is_dir() and hasattr(module, "find_packed_cache"):
            cache = module.find_packed_cache(model_dir, packed_precision(precision))
        config = EncoderConfig.from_file(model_dir / "config.json")
        tensors = read_checkpoint(path)  # the headers only: tensors are read when looked up
        layers = checkpoint_layers(tensors, config)
        if layers and max(layers) + 1 < config.num_hidden_layers:  # else: "missing tensor ...layer.6..."
            raise CheckpointError(f"{model_dir / 'config.json'} says num_hidden_layers={config.num_hidden_layers}, "
                                  f"but {path} holds {max(layers) + 1} layers")
        prepared = cache.load(config) if cache is not None else None
        if prepared is not None:
            warn_unused_layers(tensors, config)  # as load_params does on the other path
            params = prepared.params
            head = load_head(tensors, config, params)
            return cls(config, params, head=head, backend=backend_name, path=model_dir, prepared=prepared,
                       precision=precision)
        params = load_params(tensors, config)
        head = load_head(tensors, config, params)
        encoder = cls(config, params, head=head, backend=backend_name, path=model_dir, precision=precision)
        if cache is not None:
            cache.save(encoder._weights)
        return encoder

    @classmethod
    def _load_gguf_file(cls, path, backend, precision="fp32"):
        """An Encoder from a GGUF file (llama.cpp's format): its metadata read as config.json
        (transformer.gguf.config_from_gguf), its tensors dequantized to float32 under
        transformers' names (checkpoint_arrays). The numba backend's packed cache is keyed on
        the GGUF file as on safetensors files: the weights are dequantized once."""
        from transformer.gguf import checkpoint_arrays, config_from_gguf, read_gguf
        from transformer.config import ConfigError

        keep_big_arrays_out_of_the_heap()
        for _ in range(LOAD_ATTEMPTS):  # as from_pretrained: again when the file changed meanwhile
            before = digest.identity(os.stat(path))
            backend_name, module = pick_backend(backend)
            cache = module.find_packed_cache(path.parent, packed_precision(precision), [path.name]) \
                if hasattr(module, "find_packed_cache") else None
            gguf = read_gguf(path)
            raw = config_from_gguf(gguf)
            try:
                config = EncoderConfig.from_dict(raw)
            except ConfigError as error:
                raise ConfigError(f"{path}: {error}") from None
            prepared = cache.load(config) if cache is not None else None
            if prepared is not None:
                encoder = cls(config, prepared.params, backend=backend_name, path=path, prepared=prepared,
                              precision=precision)
            else:
                encoder = cls(config, load_params(checkpoint_arrays(gguf, raw), config), backend=backend_name,
                              path=path, precision=precision)
                if cache is not None:
                    cache.save(encoder._weights)
            if digest.identity(os.stat(path)) == before:
                return encoder
        raise CheckpointError(f"{path}: the file changed while it was being read, {LOAD_ATTEMPTS} times running; "
                              f"load it again once it is written")

    def __getstate__(self):
        """Pickled by value (multiprocessing with spawn, joblib): the config, the weights in
        `transformer.model`'s layout, the head, the backend's name. The numba backend lays the
        weights out again when unpickled."""
        return {"config": self.config, "params": _plain(self.params), "head": self.head,
                "backend": self.backend, "path": self.path, "precision": self.precision}

    def __setstate__(self, state):
        self.__init__(state["config"], state["params"], head=state["head"], backend=state["backend"],
                      path=state["path"], precision=state.get("precision", "fp32"))

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 output_hidden_states=False, output_attentions=False) -> EncoderOutput:
        """Token ids -> EncoderOutput. input_ids int [batch, seq] (lists or arrays); attention_mask
        [batch, seq] of 1/0 (default all 1); token_type_ids [batch, seq] (default all 0)."""
        input_ids, attention_mask, token_type_ids = numpy_model.check_inputs(
            self.config, input_ids, attention_mask, token_type_ids)
        last_hidden_state, hidden_states, attentions = self._forward_module.encoder_forward(
            self._weights, self.config, input_ids, attention_mask, token_type_ids,
            bool(output_hidden_states), bool(output_attentions))
        pooler_output = None
        if self.params["pooler"] is not None:
            if self.backend == "numba":
                pooler_output = self._forward_module.pooler(self._weights, last_hidden_state)
            else:
                pooler_output = numpy_model.pooler(self.params["pooler"], last_hidden_state)
        logits = None
        if self.head is not None:
            logits = head_logits(self.head, self.config, last_hidden_state, pooler_output, self._head_linear,
                                 attention_mask)
        return EncoderOutput(last_hidden_state, pooler_output, hidden_states, attentions, logits)

    def last_hidden_state(self, input_ids, attention_mask=None, token_type_ids=None):
        """Token ids -> float32 [batch, seq, hidden], the encoder alone: no pooler, no head.

        The same array as `self(...).last_hidden_state`, without the work a sentence
        encoder throws away."""
        input_ids, attention_mask, token_type_ids = numpy_model.check_inputs(
            self.config, input_ids, attention_mask, token_type_ids)
        return self._forward_module.encoder_forward(
            self._weights, self.config, input_ids, attention_mask, token_type_ids, False, False)[0]

    def fill_mask(self, text, tokenizer, top_k=5):
        """The top_k words for each mask token in `text`, for a masked-LM checkpoint.

        tokenizer: anything with `encode(text)` returning `.ids`, `mask_token_id` (or
        `token_to_id`) and `id_to_token` (this package's Tokenizer does).
        Returns one list per mask token of (token, probability), most likely first.

            >>> model.fill_mask("Paris is the [MASK] of France.", tokenizer, top_k=1)
            [[('capital', 0.99)]]
        """
        if self.head is None or self.head.kind != "masked_lm":
            raise ValueError("fill_mask needs a masked-LM head; this checkpoint was loaded without one "
                             f"(architectures: {list(self.config.architectures)})")
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
        if mask_token_id is None:
            mask_token_id = tokenizer.token_to_id("[MASK]") if tokenizer.token_to_id("[MASK]") is not None \
                else tokenizer.token_to_id("<mask>")
        ids = [tokenizer.encode(text).ids]
        if mask_token_id not in ids[0]:
            raise ValueError(f"the text has no mask token (id {mask_token_id}); write it where a word is missing")
        logits = self(ids).logits
        return [[(tokenizer.id_to_token(i), p) for i, p in predictions]
                for predictions in top_predictions(logits, ids, mask_token_id, top_k)[0]]

    def __repr__(self):
        head = f", head={self.head.kind}" if self.head is not None else ""
        precision = f", precision={self.precision!r}" if self.precision != "fp32" else ""
        return (f"Encoder({self.config.model_type}, layers={self.config.num_hidden_layers}, "
                f"hidden={self.config.hidden_size}, backend={self.backend!r}{precision}{head})")


LOAD_ATTEMPTS = 3


def _file_identities(model_dir, path):
    """{name: identity} of the files a load reads (config.json and the checkpoint's files):
    any write to one, or its replacement, changes its identity (see transformer.digest)."""
    names = ["config.json", path.name] if path.is_file() else \
        [name for name in sorted(os.listdir(model_dir))
         if name == "config.json" or name.endswith(".safetensors") or name == "model.safetensors.index.json"]
    identities = {}
    for name in names:
        try:
            identities[name] = digest.identity(os.stat(model_dir / name))
        except OSError:
            identities[name] = None
    return identities


def model_folder(path, name=None):
    """The model folder a resolved path stands for: the path itself when it is a folder, the
    folder a model file (its config.json or a .safetensors file) is in. ModelFileError (a
    ValueError) for another file: a text file given as the model is not its folder's model."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.name == "config.json" or path.name.endswith(".safetensors"):
        return path.parent
    raise ModelFileError(f"model path {os.fspath(name if name is not None else path)!r} is a file, not a model: "
                         f"expected a model folder (config.json, model.safetensors, tokenizer files), or its "
                         f"config.json or .safetensors file")


def _plain(value):
    """A copy of a params tree made of dicts, lists and plain ndarrays: a prepared model's
    re-derived layers (`UnpackedLayers`) become a list of dicts, mapped arrays become arrays."""
    if isinstance(value, dict):
        return {key: _plain(part) for key, part in value.items()}
    if isinstance(value, np.ndarray):
        return np.array(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return [_plain(part) for part in value]  # a list, or a prepared model's UnpackedLayers


def check_precision(precision):
    """precision, when it is one of PRECISIONS; else a clear ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
    return precision


def packed_precision(precision):
    """The name of what `precision` packs: "fp32", or BF16_POLICY's label for "bf16" (a packed
    cache written under one policy is never read under another)."""
    return BF16_POLICY.label if precision == "bf16" else precision


def linear_kinds(layer_recipe):
    """{linear name: its kind (LINEAR_KINDS)} for one recipe Layer."""
    from transformer.recipe import Attention

    kinds = {}
    for block in layer_recipe.blocks:
        sublayer = block.sublayer
        if isinstance(sublayer, Attention):
            for linear in sublayer.linears():
                kinds[linear.name] = "qkv"
            kinds[sublayer.output.name] = "attention_output"
        else:
            for linear in sublayer.linears():
                kinds[linear.name] = "ffn_up"
            kinds[sublayer.down.name] = "ffn_down"
    return kinds


def bf16_layers(layers, recipe, policy=None):
    """The layers' params with every linear weight of the recipe as bfloat16 bits (uint16
    [in, out], `transformer.model.to_bf16`) but those of the kinds `policy` (default
    BF16_POLICY) keeps in float32: a new list of new dicts; weights already uint16 stay as
    they are. Biases, norms and embeddings stay float32."""
    policy = BF16_POLICY if policy is None else policy
    converted = []
    for layer, layer_recipe in zip(layers, recipe.layers):
        layer = dict(layer)
        for name, kind in linear_kinds(layer_recipe).items():
            part = layer.get(name)
            if part is not None and part["weight"].dtype != np.uint16 and kind not in policy.fp32:
                layer[name] = dict(part, weight=numpy_model.to_bf16(part["weight"]))
        converted.append(layer)
    return converted
