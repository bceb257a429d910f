"""Jina Embeddings v3, as `transformers` ships it (JinaEmbeddingsV3Model): XLM-RoBERTa's
vocabulary and heads on BERT's post-norm layers, with rotary positions (theta 20000 by
default) instead of a position table, biases on every linear, a plain GELU feed-forward:

    hidden = LayerNorm(hidden + Attention(hidden))     queries and keys turned by rotary angles
    hidden = LayerNorm(hidden + fc2(gelu(fc1(hidden))))

The task-specific LoRA adapters of jina's own remote code are not part of this model.
"""

from transformer.recipe import Part

from . import nomic_bert, roberta

MODEL_TYPES = ("jina_embeddings_v3",)
PREFIX = "roberta."  # its task models keep XLM-RoBERTa's attribute name

# JinaEmbeddingsV3Config's defaults.
DEFAULTS = dict(
    vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
    intermediate_size=4096, hidden_act="gelu", max_position_embeddings=8194,
    type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
)
THETA = 20000.0

OPTIONS = {}

MASKED_LM_ACTIVATION = roberta.MASKED_LM_ACTIVATION
CLASSIFIER_ACTIVATION = roberta.CLASSIFIER_ACTIVATION


def config_fields(read):
    """Token types (one row by default), no position table; the rotary theta to `options`."""
    return dict(position_padding_idx=None, type_vocab_size=read.integer("type_vocab_size", smallest=1),
                options=dict(rope_theta=nomic_bert.rope_theta(read, THETA, "jina_embeddings_v3")))


def recipe(config):
    return nomic_bert.rotary_post_norm_recipe(config, bias=True, gated=False)


# Our names -> the checkpoint's: jina's own names (which transformers' save_pretrained writes
# back: a fused Wqkv, emb_ln, norm1 / norm2), then the names of transformers' module.
_LAYER_PARTS = {
    "attention_output": ("encoder.layers.{i}.mixer.out_proj", "layers.{i}.self_attn.o_proj"),
    "attention_layer_norm": ("encoder.layers.{i}.norm1", "layers.{i}.post_attention_layernorm"),
    "intermediate": ("encoder.layers.{i}.mlp.fc1", "layers.{i}.mlp.fc1"),
    "output": ("encoder.layers.{i}.mlp.fc2", "layers.{i}.mlp.fc2"),
    "output_layer_norm": ("encoder.layers.{i}.norm2", "layers.{i}.post_mlp_layernorm"),
}
_QKV = {"query": ("q_proj", 0), "key": ("k_proj", 1), "value": ("v_proj", 2)}

NAMES = {
    "embeddings.word": "embeddings.word_embeddings.weight",
    "embeddings.token_type": "embeddings.token_type_embeddings.weight",
    "embeddings.layer_norm.weight": ("emb_ln.weight", "embeddings.LayerNorm.weight"),
    "embeddings.layer_norm.bias": ("emb_ln.bias", "embeddings.LayerNorm.bias"),
    **{f"layers.{{i}}.{ours}.{part}": tuple(f"{name}.{part}" for name in names)
       for ours, names in _LAYER_PARTS.items() for part in ("weight", "bias")},
    **{f"layers.{{i}}.{ours}.{part}": (Part(f"encoder.layers.{{i}}.mixer.Wqkv.{part}", chunk, 3),
                                       f"layers.{{i}}.self_attn.{name}.{part}")
       for ours, (name, chunk) in _QKV.items() for part in ("weight", "bias")},
    **roberta.HEAD_NAMES,
}
