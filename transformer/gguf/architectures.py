"""What a GGUF file means as a transformers checkpoint: its config and its tensors' names.

    gguf = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    config = config_from_gguf(gguf)       # {"model_type": "llama", "hidden_size": 576, ...}, config.json names
    weights = checkpoint_arrays(gguf)     # {"model.layers.0.self_attn.q_proj.weight": float32 [576, 576], ...}

A decoder family reads both as it reads a transformers folder's config.json and
model.safetensors. The values mean what llama.cpp computes with them (`llama_model::
load_hparams` and the converter `convert_hf_to_gguf.py` that wrote the file); where llama.cpp
fixes a value the file does not hold (Gemma 3's layer pattern), it is fixed here the same way.

Names: one table per architecture, from the GGUF names (`blk.{i}.attn_q.weight`) to the
names `*ForCausalLM.save_pretrained` writes (`model.layers.{i}.self_attn.q_proj.weight`).
Values: the converter changed a few tensors on the way in, and `checkpoint_arrays` changes
them back, as transformers' GGUF loader does (`modeling_gguf_pytorch_utils.py`):

  llama   q and k projections: rows reordered per head for llama.cpp's rotary layout
          (`unpermute_heads` undoes it)
  gemma3  every norm weight stored as 1 + w (Gemma's RMSNorm scales by 1 + w): minus 1
  gpt2    the Conv1D weights ([in, out]) stored transposed: transposed back
"""

import math
import re
from collections.abc import Mapping

import numpy as np

from transformer.gguf.reader import GGUFError

# --- metadata -> config -------------------------------------------------------------------------

_INTEGER_TYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"}
_FLOAT_TYPES = {"float32", "float64"}
_MISSING = object()


class _Metadata:
    """Typed, checked lookups of one architecture's metadata keys (`{arch}.` prefixed)."""

    def __init__(self, gguf):
        self.gguf, self.arch = gguf, gguf.architecture

    def fail(self, key, found, expected):
        raise GGUFError(f"{self.gguf.path}: metadata {key!r} is {found}; expected {expected}")

    def _raw(self, key, default):
        key = key.format(arch=self.arch)
        if key not in self.gguf.metadata:
            if default is _MISSING:
                raise GGUFError(f"{self.gguf.path}: the metadata has no {key!r}, which a {self.arch} model needs")
            return key, None, default
        return key, self.gguf.metadata_types[key], self.gguf.metadata[key]

    def count(self, key, default=_MISSING, least=1):
        """An integer >= least (a size or a count)."""
        key, kind, value = self._raw(key, default)
        if kind is None:
            return value
        if kind not in _INTEGER_TYPES:
            self.fail(key, f"a {kind}" + (" (one value per layer)" if kind.startswith("array") else ""),
                      "one integer")
        if value < least:
            self.fail(key, value, f"an integer >= {least}")
        return int(value)

    def number(self, key, default=_MISSING, positive=True):
        """A finite float (> 0 when `positive`)."""
        key, kind, value = self._raw(key, default)
        if kind is None:
            return value
        if kind not in _FLOAT_TYPES and kind not in _INTEGER_TYPES:
            self.fail(key, f"a {kind}", "a number")
        value = float(value)
        if not math.isfinite(value) or (positive and value <= 0):
            self.fail(key, value, "a finite number > 0" if positive else "a finite number")
        return value

    def text(self, key, default=_MISSING):
        key, kind, value = self._raw(key, default)
        if kind is not None and kind != "string":
            self.fail(key, f"a {kind}", "a string")
        return value


def config_from_gguf(gguf) -> dict:
    """The config.json a transformers checkpoint of this model would have, as a dict:
    {"model_type", "vocab_size", "hidden_size", "num_hidden_layers", ...} (transformers 5's
    names, rotary settings as `rope_parameters`). Raises GGUFError for an architecture not
    listed in ARCHITECTURES, a missing or nonsensical value, or a setting llama.cpp has and
    transformers has not."""
    arch = gguf.architecture
    if arch is None:
        kind = gguf.metadata_types.get("general.architecture")
        raise GGUFError(f"{gguf.path}: the metadata has no 'general.architecture' string"
                        + (f" (it is a {kind})" if kind else "") + "; expected one of " + ", ".join(ARCHITECTURES))
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{gguf.path}: architecture {arch!r} (metadata 'general.architecture') is not one this "
                        f"reader knows; it reads {', '.join(ARCHITECTURES)}")
    meta = _Metadata(gguf)
    _check_layers(gguf, meta.count("{arch}.block_count"))
    config = ARCHITECTURES[arch].config(meta)
    config.update(_vocabulary(gguf, meta, config))
    config.update(_special_tokens(meta))
    return config


def _check_layers(gguf, layers):
    """`{arch}.block_count` must be the number of layers the tensors hold (blk.0 to blk.N-1), as
    llama.cpp looks for each layer's tensors."""
    found = {int(match[1]) for name in gguf.tensors if (match := re.match(r"blk\.(0|[1-9]\d*)\.", name))}
    whole = not found or max(found) == len(found) - 1  # 0 .. n-1, none missing
    if len(found) != layers or not whole:
        held = "no layers" if not found else f"blk.0 to blk.{max(found)}" if whole else \
            f"layers {', '.join(map(str, sorted(found)[:8]))}{', ...' if len(found) > 8 else ''}"
        raise GGUFError(f"{gguf.path}: metadata '{gguf.architecture}.block_count' is {layers}; the tensors hold "
                        f"{held}")


def _attention_sizes(meta):
    """The sizes every rotary decoder here has, checked against each other."""
    hidden = meta.count("{arch}.embedding_length")
    heads = meta.count("{arch}.attention.head_count")
    kv_heads = meta.count("{arch}.attention.head_count_kv", heads)
    if heads % kv_heads:
        meta.fail(f"{meta.arch}.attention.head_count_kv", kv_heads,
                  f"a divisor of {meta.arch}.attention.head_count ({heads})")
    if f"{meta.arch}.attention.key_length" in meta.gguf.metadata:
        head_dim = meta.count("{arch}.attention.key_length")
    elif hidden % heads:
        meta.fail(f"{meta.arch}.attention.head_count", heads,
                  f"a divisor of {meta.arch}.embedding_length ({hidden}) when there is no attention.key_length")
    else:
        head_dim = hidden // heads
    value_dim = meta.count("{arch}.attention.value_length", head_dim)
    if value_dim != head_dim:
        meta.fail(f"{meta.arch}.attention.value_length", value_dim,
                  f"the key length ({head_dim}): transformers' {meta.arch} has one head size")
    rotary_dims = meta.count("{arch}.rope.dimension_count", head_dim)
    if rotary_dims != head_dim:
        meta.fail(f"{meta.arch}.rope.dimension_count", rotary_dims,
                  f"the head size ({head_dim}): transformers' {meta.arch} rotates whole heads")
    return {
        "hidden_size": hidden,
        "intermediate_size": meta.count("{arch}.feed_forward_length"),
        "num_hidden_layers": meta.count("{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": meta.count("{arch}.context_length"),
        "rms_norm_eps": meta.number("{arch}.attention.layer_norm_rms_epsilon"),
    }


_ROPE_SCALING_KEYS = {"type", "factor", "original_context_length", "finetuned", "yarn_beta_fast", "yarn_beta_slow"}


def _rope_parameters(meta, theta_default=10000.0):
    """transformers' `rope_parameters` from `{arch}.rope.*`: {"rope_type", "rope_theta", ...}."""
    theta = meta.number("{arch}.rope.freq_base", theta_default)
    prefix = f"{meta.arch}.rope.scaling."
    unknown = sorted(key for key in meta.gguf.metadata
                     if key.startswith(prefix) and key[len(prefix):] not in _ROPE_SCALING_KEYS)
    if unknown:
        raise GGUFError(f"{meta.gguf.path}: metadata {unknown[0]!r} sets a rotary scaling this reader does not "
                        f"carry over to transformers (it reads {', '.join(sorted(_ROPE_SCALING_KEYS))})")
    kind = meta.text("{arch}.rope.scaling.type", None)
    if kind is None and f"{meta.arch}.rope.scale_linear" in meta.gguf.metadata:  # the older key for linear
        return {"rope_type": "linear", "factor": meta.number("{arch}.rope.scale_linear"), "rope_theta": theta}
    if kind in (None, "none"):
        return {"rope_type": "default", "rope_theta": theta}
    if kind == "linear":
        return {"rope_type": "linear", "factor": meta.number("{arch}.rope.scaling.factor"), "rope_theta": theta}
    if kind == "yarn":
        parameters = {"rope_type": "yarn", "factor": meta.number("{arch}.rope.scaling.factor"),
                      "original_max_position_embeddings": meta.count("{arch}.rope.scaling.original_context_length"),
                      "rope_theta": theta}
        for key, name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
            if f"{prefix}{key}" in meta.gguf.metadata:
                parameters[name] = meta.number(prefix + key)
        return parameters
    meta.fail(f"{meta.arch}.rope.scaling.type", repr(kind), "'none', 'linear' or 'yarn'")


def _llama_config(meta):
    if "rope_freqs.weight" in meta.gguf.tensors:
        raise GGUFError(f"{meta.gguf.path}: tensor 'rope_freqs.weight' holds per-frequency rotary factors "
                        f"(Llama 3.1's 'llama3' scaling, as llama.cpp stores it), which cannot be turned back "
                        f"into transformers' rope_parameters")
    return {"model_type": "llama", **_attention_sizes(meta), "hidden_act": "silu",
            "rope_parameters": _rope_parameters(meta),
            "attention_bias": _has_biases(meta, "attention", ["attn_q", "attn_k", "attn_v", "attn_output"]),
            "mlp_bias": _has_biases(meta, "feed-forward", ["ffn_gate", "ffn_up", "ffn_down"])}


def _has_biases(meta, part, projections):
    """True when every projection of `part` has a bias, False when none has (transformers has
    one switch for all of them)."""
    present = [f"blk.0.{projection}.bias" in meta.gguf.tensors for projection in projections]
    if any(present) and not all(present):
        raise GGUFError(f"{meta.gguf.path}: the {part} projections of layer 0 have biases for "
                        f"{', '.join(p for p, has in zip(projections, present) if has)} only; transformers' "
                        f"{meta.arch} has them on all of {', '.join(projections)} or on none")
    return all(present)


def _qwen2_config(meta):
    config = {"model_type": "qwen2", **_attention_sizes(meta), "hidden_act": "silu",
              "rope_parameters": _rope_parameters(meta)}
    head_dim = config.pop("head_dim")  # transformers' Qwen2 has no head_dim: hidden / heads
    if head_dim * config["num_attention_heads"] != config["hidden_size"]:
        meta.fail(f"{meta.arch}.attention.key_length", head_dim,
                  f"embedding_length / head_count ({config['hidden_size']} / {config['num_attention_heads']})")
    return config


def _qwen3_config(meta):
    return {"model_type": "qwen3", **_attention_sizes(meta), "hidden_act": "silu",
            "rope_parameters": _rope_parameters(meta),
            "attention_bias": _has_biases(meta, "attention", ["attn_q", "attn_k", "attn_v", "attn_output"])}


GEMMA3_SLIDING_WINDOW_PATTERN = 6  # llama.cpp: five sliding-window layers, then a global one
GEMMA3_LOCAL_ROPE_THETA = 10000.0  # llama.cpp: the sliding-window layers' rotary base


def _gemma3_config(meta):
    sizes = _attention_sizes(meta)
    layers = sizes["num_hidden_layers"]
    # llama.cpp scales queries by 1/sqrt(head_dim), except for the 62-layer (27B) model, which
    # Google trained with 1/sqrt(hidden / heads) (gemma_pytorch's config).
    scalar = (sizes["hidden_size"] // sizes["num_attention_heads"] if layers == 62 else sizes["head_dim"])
    global_rope = _rope_parameters(meta, theta_default=1000000.0)
    local_theta = meta.number("{arch}.rope.freq_base_swa", GEMMA3_LOCAL_ROPE_THETA)
    pattern = GEMMA3_SLIDING_WINDOW_PATTERN
    return {"model_type": "gemma3_text", **sizes, "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": scalar,
            "sliding_window": meta.count("{arch}.attention.sliding_window"),
            "layer_types": ["full_attention" if (layer + 1) % pattern == 0 else "sliding_attention"
                            for layer in range(layers)],
            "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
                                "full_attention": global_rope},
            "attention_bias": False, "final_logit_softcapping": None, "attn_logit_softcapping": None,
            "use_bidirectional_attention": False}


def _gpt2_config(meta):
    hidden = meta.count("{arch}.embedding_length")
    heads = meta.count("{arch}.attention.head_count")
    if hidden % heads:
        meta.fail(f"{meta.arch}.attention.head_count", heads, f"a divisor of {meta.arch}.embedding_length ({hidden})")
    return {"model_type": "gpt2", "n_embd": hidden, "n_layer": meta.count("{arch}.block_count"), "n_head": heads,
            "n_inner": meta.count("{arch}.feed_forward_length"), "n_positions": meta.count("{arch}.context_length"),
            "layer_norm_epsilon": meta.number("{arch}.attention.layer_norm_epsilon"),
            "activation_function": "gelu_new"}


def _vocabulary(gguf, meta, config):
    """vocab_size (the embedding's rows) and tie_word_embeddings (no separate output matrix)."""
    embedding = gguf.tensors.get("token_embd.weight")
    if embedding is None:
        raise GGUFError(f"{gguf.path}: there is no tensor 'token_embd.weight' (the token embeddings)")
    width = config.get("hidden_size", config.get("n_embd"))
    if len(embedding.shape) != 2 or embedding.shape[1] != width:
        raise GGUFError(f"{gguf.path}: tensor 'token_embd.weight' has shape {list(embedding.shape)}; expected "
                        f"[vocabulary, {width}] ({meta.arch}.embedding_length is {width})")
    vocab_size = embedding.shape[0]
    stated = meta.count("{arch}.vocab_size", vocab_size)
    if stated != vocab_size:
        meta.fail(f"{meta.arch}.vocab_size", stated, f"the rows of 'token_embd.weight' ({vocab_size})")
    return {"vocab_size": vocab_size, "tie_word_embeddings": "output.weight" not in gguf.tensors}


_SPECIAL_TOKENS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
                   "padding_token_id": "pad_token_id", "unknown_token_id": "unk_token_id"}


def _special_tokens(meta):
    """bos / eos / pad / unk token ids, as transformers' GGUF loader puts them in the config."""
    return {name: meta.count(f"tokenizer.ggml.{key}", least=0)
            for key, name in _SPECIAL_TOKENS.items() if f"tokenizer.ggml.{key}" in meta.gguf.metadata}


# --- tensor names -------------------------------------------------------------------------------

# GGUF name -> transformers name, "{i}" standing for the layer. The two-name rows of the rotary
# decoders, shared by the tables below.
_ROTARY_LAYER = {
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
}
_ROTARY_MODEL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_ATTENTION_BIASES = {
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
}

LLAMA_NAMES = {
    **_ROTARY_MODEL, **_ROTARY_LAYER, **_ATTENTION_BIASES,
    "blk.{i}.attn_output.bias": "model.layers.{i}.self_attn.o_proj.bias",
    "blk.{i}.ffn_gate.bias": "model.layers.{i}.mlp.gate_proj.bias",
    "blk.{i}.ffn_up.bias": "model.layers.{i}.mlp.up_proj.bias",
    "blk.{i}.ffn_down.bias": "model.layers.{i}.mlp.down_proj.bias",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
}
QWEN2_NAMES = {
    **_ROTARY_MODEL, **_ROTARY_LAYER, **_ATTENTION_BIASES,
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
}
QWEN3_NAMES = {
    **QWEN2_NAMES,
    "blk.{i}.attn_output.bias": "model.layers.{i}.self_attn.o_proj.bias",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}
GEMMA3_NAMES = {
    **_ROTARY_MODEL, **_ROTARY_LAYER,
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
}
GPT2_NAMES = {
    "token_embd.weight": "transformer.wte.weight",
    "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output_norm.bias": "transformer.ln_f.bias",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "transformer.h.{i}.ln_1.weight",
    "blk.{i}.attn_norm.bias": "transformer.h.{i}.ln_1.bias",
    "blk.{i}.attn_qkv.weight": "transformer.h.{i}.attn.c_attn.weight",
    "blk.{i}.attn_qkv.bias": "transformer.h.{i}.attn.c_attn.bias",
    "blk.{i}.attn_output.weight": "transformer.h.{i}.attn.c_proj.weight",
    "blk.{i}.attn_output.bias": "transformer.h.{i}.attn.c_proj.bias",
    "blk.{i}.ffn_norm.weight": "transformer.h.{i}.ln_2.weight",
    "blk.{i}.ffn_norm.bias": "transformer.h.{i}.ln_2.bias",
    "blk.{i}.ffn_up.weight": "transformer.h.{i}.mlp.c_fc.weight",
    "blk.{i}.ffn_up.bias": "transformer.h.{i}.mlp.c_fc.bias",
    "blk.{i}.ffn_down.weight": "transformer.h.{i}.mlp.c_proj.weight",
    "blk.{i}.ffn_down.bias": "transformer.h.{i}.mlp.c_proj.bias",
}


# --- what the converter changed, undone ---------------------------------------------------------

def unpermute_heads(weight, heads):
    """Undo llama.cpp's reordering of a q or k projection's rows (or bias) for its rotary layout.

    transformers rotates the two halves of each head's vector (element j with j + head_dim/2);
    llama.cpp rotates neighbours (2j with 2j + 1), so its converter interleaves each head's
    halves: GGUF row 2j + t of a head is transformers' row j + t * head_dim/2.
    weight: float32 [heads * head_dim, ...] -> the same shape, rows in transformers' order.
    """
    half = weight.shape[0] // heads // 2
    per_head = weight.reshape(heads, half, 2, *weight.shape[1:])          # [head, j, t, ...]
    return per_head.swapaxes(1, 2).reshape(weight.shape)                   # [head, t, j, ...] -> rows


def _unpermute(weight, heads, config):
    rows = heads * config["head_dim"]
    if weight.shape[0] != rows or config["head_dim"] % 2:
        raise ValueError(f"has {weight.shape[0]} rows; expected {heads} heads x {config['head_dim']} (an even "
                         f"head size)")
    return unpermute_heads(weight, heads)


def _unpermute_q(weight, config):
    return _unpermute(weight, config["num_attention_heads"], config)


def _unpermute_k(weight, config):
    return _unpermute(weight, config["num_key_value_heads"], config)


def _minus_one(weight, config):
    with np.errstate(invalid="ignore"):  # a NaN stays NaN (the loader that uses it refuses it by name)
        return weight - np.float32(1.0)


def _transpose(weight, config):
    return np.ascontiguousarray(weight.T)


class Architecture:
    """One architecture's reading of a GGUF file: `config(meta)` -> config dict; `names`, GGUF
    -> transformers names; `changes`, [(GGUF name pattern, function(array, config) -> array)]
    undoing what the converter changed."""

    def __init__(self, config, names, changes=()):
        self.config, self.names, self.changes = config, names, [(re.compile(p), f) for p, f in changes]


ARCHITECTURES = {
    "llama": Architecture(_llama_config, LLAMA_NAMES,
                          [(r"blk\.\d+\.attn_q\.(weight|bias)", _unpermute_q),
                           (r"blk\.\d+\.attn_k\.(weight|bias)", _unpermute_k)]),
    "qwen2": Architecture(_qwen2_config, QWEN2_NAMES),
    "qwen3": Architecture(_qwen3_config, QWEN3_NAMES),
    "gemma3": Architecture(_gemma3_config, GEMMA3_NAMES, [(r".*norm\.weight", _minus_one)]),
    "gpt2": Architecture(_gpt2_config, GPT2_NAMES,
                         [(r"blk\.\d+\.(attn_qkv|attn_output|ffn_up|ffn_down)\.weight", _transpose)]),
}


def checkpoint_name(arch, gguf_name):
    """The transformers name of a GGUF tensor of architecture `arch`, or None when the table has
    none: "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"."""
    names = ARCHITECTURES[arch].names
    if gguf_name in names:
        return names[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if match and match[1] == str(int(match[1])):  # "blk.01" is not layer 1
        pattern = names.get("blk.{i}." + match[2])
        return pattern.format(i=match[1]) if pattern else None
    return None


class CheckpointArrays(Mapping):
    """{transformers name: float32 array} over a GGUF file: each tensor read, dequantized and
    changed back (see the module docstring) when it is looked up."""

    def __init__(self, gguf, config=None, backend="numba"):
        self.gguf, self.backend = gguf, backend
        self.config = config if config is not None else config_from_gguf(gguf)
        architecture = ARCHITECTURES[gguf.architecture]
        self.changes = architecture.changes
        self.sources = {}  # transformers name -> GGUF name
        for name, info in gguf.tensors.items():
            ours = checkpoint_name(gguf.architecture, name)
            if ours is None:
                raise GGUFError(f"{gguf.path}: tensor {name!r} has no transformers name in the "
                                f"{gguf.architecture} table")
            self.sources[ours] = name

    def source(self, name):
        """The GGUF name of transformers tensor `name`."""
        return self.sources[name]

    def __getitem__(self, name):
        gguf_name = self.sources[name]
        array = self.gguf.dequantize(gguf_name, self.backend)
        for pattern, change in self.changes:
            if pattern.fullmatch(gguf_name):
                try:
                    array = change(array, self.config)
                except ValueError as error:
                    raise GGUFError(f"{self.gguf.path}: tensor {gguf_name!r} {error}") from None
        return array

    def __iter__(self):
        return iter(self.sources)

    def __len__(self):
        return len(self.sources)


def checkpoint_arrays(gguf, config=None, backend="numba"):
    """{transformers name: float32 array}, read on demand (see CheckpointArrays)."""
    return CheckpointArrays(gguf, config, backend)
