"""Gemma 3 (text) and EmbeddingGemma: a decoder with norms on both sides of each sublayer.

    hidden = word[ids] * sqrt(hidden_size)                      scaled embeddings
    hidden = hidden + RMSNorm(Attention(RMSNorm(hidden)))       pre- and post-norm
    hidden = hidden + RMSNorm(MLP(RMSNorm(hidden)))             GeGLU (gelu_pytorch_tanh)
    ...
    last_hidden_state = RMSNorm(hidden)

Every RMSNorm scales by (1 + w), not w. Attention: grouped-query, an RMSNorm over each head's
query and key, scores scaled by query_pre_attn_scalar^-0.5 (not head_dim^-0.5); most layers
local (a sliding window, rotary theta 10,000), every sixth global (theta 1,000,000), as
layer_types says. EmbeddingGemma (use_bidirectional_attention) is the same model with the
causal mask lifted: global layers see every token, local ones those at most
sliding_window // 2 positions away on either side (Gemma3TextConfig turns config.json's
sliding_window W into an exclusive bound W // 2 + 1 when bidirectional).
"""

import math

from transformer.recipe import (BIDIRECTIONAL, CAUSAL, Attention, Block, Embeddings, Layer, Linear, Mask, MLP,
                                Norm, Recipe, Rotary)

from . import llama

MODEL_TYPES = ("gemma3_text",)
PREFIX = "model."

# Gemma3TextConfig's defaults.
DEFAULTS = dict(
    vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=131072,
    rms_norm_eps=1e-6, pad_token_id=0, tie_word_embeddings=True, attention_bias=False, query_pre_attn_scalar=256,
    sliding_window=4096, attn_logit_softcapping=None, use_bidirectional_attention=False,
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                     "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
)
OPTIONS = {"attn_logit_softcapping": (None,)}
LAYER_TYPES = ("full_attention", "sliding_attention")
SLIDING_WINDOW_PATTERN = 6  # without layer_types: every sixth layer global

MASKED_LM_ACTIVATION = None
CLASSIFIER_ACTIVATION = None


def config_keys(raw):
    return {"hidden_act": "hidden_activation", "layer_norm_eps": "rms_norm_eps"}


def config_fields(read):
    values = read.values  # the Reader's own copy of config.json's values
    if values.get("layer_types") is None:
        layers = read.integer("num_hidden_layers")
        values["layer_types"] = ["full_attention" if (i + 1) % SLIDING_WINDOW_PATTERN == 0 else "sliding_attention"
                                 for i in range(layers)]
    parameters = values["rope_parameters"]
    if not isinstance(parameters, dict) or set(parameters) != set(LAYER_TYPES):
        read.fail(f"rope_parameters must map {' and '.join(LAYER_TYPES)} to their settings, found "
                  f"{parameters!r:.80}")
    rope = {kind: llama.read_rope(read, parameters[kind], f"rope_parameters[{kind!r}]") for kind in LAYER_TYPES}
    bidirectional = values.get("use_bidirectional_attention")
    if not isinstance(bidirectional, bool):
        read.fail(f"use_bidirectional_attention must be true or false, found {bidirectional!r:.60}")
    scalar = values.get("query_pre_attn_scalar")
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)) or not scalar > 0:
        read.fail(f"query_pre_attn_scalar must be a positive number, found {scalar!r:.60}")
    fields = llama.read_decoder(read, rope=rope, bidirectional=bidirectional, query_pre_attn_scalar=float(scalar))
    fields["options"]["mlp_bias"] = False
    return fields


def recipe(config):
    options = config.options
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    heads, kv_heads, head_dim = config.num_attention_heads, options["num_key_value_heads"], options["head_dim"]
    bias = options["attention_bias"]
    window = options["sliding_window"]

    def rms_norm(name, size=hidden):
        return Norm(name, size, kind="rms_norm", eps=eps, bias=False, offset=1.0)

    def mask(layer_type):
        if layer_type == "full_attention":
            return BIDIRECTIONAL if options["bidirectional"] else CAUSAL
        if options["bidirectional"]:  # keys at most window // 2 positions away, either side
            return Mask(window=window)
        return Mask(causal=True, window=window)

    def layer(i):
        layer_type = options["layer_types"][i]
        theta, scaling = options["rope"][layer_type]
        attention = Attention(
            query=Linear("query", hidden, heads * head_dim, bias), key=Linear("key", hidden, kv_heads * head_dim, bias),
            value=Linear("value", hidden, kv_heads * head_dim, bias),
            output=Linear("attention_output", heads * head_dim, hidden, bias),
            num_heads=heads, head_dim=head_dim, num_kv_heads=kv_heads, scale=options["query_pre_attn_scalar"] ** -0.5,
            positions=Rotary(theta=theta, scaling=scaling), mask=mask(layer_type),
            query_norm=rms_norm("query_norm", head_dim), key_norm=rms_norm("key_norm", head_dim))
        mlp = MLP(gate=Linear("gate", hidden, inner, False), up=Linear("up", hidden, inner, False),
                  down=Linear("down", inner, hidden, False), activation=config.hidden_act)
        return Layer((
            Block(attention, norm_before=rms_norm("attention_norm"), norm_after=rms_norm("attention_output_norm")),
            Block(mlp, norm_before=rms_norm("mlp_norm"), norm_after=rms_norm("mlp_output_norm")),
        ))

    return Recipe(
        embeddings=Embeddings(size=hidden, positions=None, token_types=False, norm=None, scale=math.sqrt(hidden)),
        layers=tuple(layer(i) for i in range(config.num_hidden_layers)),
        final_norm=rms_norm("final_norm"),
    )


NAMES = {
    **llama.NAMES,
    "layers.{i}.attention_output_norm.weight": "layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.mlp_norm.weight": "layers.{i}.pre_feedforward_layernorm.weight",
    "layers.{i}.mlp_output_norm.weight": "layers.{i}.post_feedforward_layernorm.weight",
}
