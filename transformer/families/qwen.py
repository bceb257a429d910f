"""Qwen2 and Qwen3: Llama's decoder with their own bias and norm choices.

    Qwen2   biases on the query, key and value linears (not on the output, not in the MLP)
    Qwen3   no biases (attention_bias), and an RMSNorm over each head's query and key before
            the rotation (q_norm, k_norm): Qwen3-Embedding is this model, last-token pooled

Layers may use a sliding window (use_sliding_window: layers from max_window_layers on), as
layer_types says. Everything else is llama.py's recipe, name table and config reading.
"""

from . import llama

MODEL_TYPES = ("qwen2", "qwen3")
PREFIX = "model."

# Qwen2Config's defaults; TYPE_DEFAULTS: Qwen3Config's that differ.
DEFAULTS = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
    tie_word_embeddings=False, rope_theta=10000.0, use_sliding_window=False, sliding_window=4096,
    max_window_layers=28, attention_bias=False, head_dim=None,
)
TYPE_DEFAULTS = {"qwen3": dict(head_dim=128)}
OPTIONS = {}

MASKED_LM_ACTIVATION = None
CLASSIFIER_ACTIVATION = None

config_keys = llama.config_keys


def config_fields(read):
    """llama.read_decoder, after Qwen's window settings: no window unless use_sliding_window,
    and then (without layer_types) on the layers from max_window_layers on."""
    values = read.values  # the Reader's own copy of config.json's values
    if not isinstance(values.get("use_sliding_window"), bool):
        read.fail(f"use_sliding_window must be true or false, found {values.get('use_sliding_window')!r:.60}")
    if values.get("sliding_window") is not None:
        read.integer("sliding_window")  # checked even when unused, as transformers checks it
    if not values["use_sliding_window"]:
        values["sliding_window"] = None
    if values.get("layer_types") is None:
        layers = read.integer("num_hidden_layers")
        first = read.integer("max_window_layers", smallest=0) if values["sliding_window"] is not None else layers
        values["layer_types"] = ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
    return llama.read_decoder(read)


def recipe(config):
    if config.model_type == "qwen2":
        return llama.decoder_recipe(config, qkv_bias=True, output_bias=False)
    return llama.decoder_recipe(config, query_key_norm=True)


NAMES = llama.NAMES
