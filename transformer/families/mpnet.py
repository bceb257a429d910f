"""MPNet: BERT's post-norm layers plus a relative position bias in every attention.

One learned table [relative_attention_num_buckets, heads], shared by all layers, adds a bias
per (head, distance bucket) to the attention scores (T5's buckets: exact for short
distances, logarithmic up to 128). Absolute positions are counted from 2, as RoBERTa's with
padding index 1 (hard-coded in `transformers`' MPNetEmbeddings, whatever pad_token_id says).
No token types.
"""

from transformer.recipe import AbsolutePositions, RelativeBuckets

from . import bert, roberta

MODEL_TYPES = ("mpnet",)
PREFIX = "mpnet."

DEFAULTS = dict(
    vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
    layer_norm_eps=1e-12, pad_token_id=1, relative_attention_num_buckets=32,
)
OPTIONS = bert.OPTIONS  # read as BERT reads it: only absolute positions

MASKED_LM_ACTIVATION = "gelu"
CLASSIFIER_ACTIVATION = "tanh"

# transformers' MPNet always sorts distances into 32 buckets, whatever the table's size.
BUCKETS = 32


def config_fields(read):
    buckets = read.integer("relative_attention_num_buckets")
    if buckets < BUCKETS:
        read.fail(f"relative_attention_num_buckets is {buckets}; MPNet reads {BUCKETS} relative-position buckets, "
                  f"so its bias table needs at least {BUCKETS} rows")
    return dict(position_padding_idx=1, type_vocab_size=0, relative_attention_num_buckets=buckets)


def recipe(config):
    buckets = RelativeBuckets(table="relative_attention_bias", rows=config.relative_attention_num_buckets,
                              num_buckets=BUCKETS, max_distance=128)
    return bert.post_norm_recipe(config, positions=AbsolutePositions(padding_idx=1), token_types=False,
                                 attention_positions=buckets)


NAMES = {
    "embeddings.word": "embeddings.word_embeddings.weight",
    "embeddings.position": "embeddings.position_embeddings.weight",
    "embeddings.layer_norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "embeddings.LayerNorm.bias",
    "relative_attention_bias": "encoder.relative_attention_bias.weight",
    "layers.{i}.query.weight": "encoder.layer.{i}.attention.attn.q.weight",
    "layers.{i}.query.bias": "encoder.layer.{i}.attention.attn.q.bias",
    "layers.{i}.key.weight": "encoder.layer.{i}.attention.attn.k.weight",
    "layers.{i}.key.bias": "encoder.layer.{i}.attention.attn.k.bias",
    "layers.{i}.value.weight": "encoder.layer.{i}.attention.attn.v.weight",
    "layers.{i}.value.bias": "encoder.layer.{i}.attention.attn.v.bias",
    "layers.{i}.attention_output.weight": "encoder.layer.{i}.attention.attn.o.weight",
    "layers.{i}.attention_output.bias": "encoder.layer.{i}.attention.attn.o.bias",
    "layers.{i}.attention_layer_norm.weight": "encoder.layer.{i}.attention.LayerNorm.weight",
    "layers.{i}.attention_layer_norm.bias": "encoder.layer.{i}.attention.LayerNorm.bias",
    "layers.{i}.intermediate.weight": "encoder.layer.{i}.intermediate.dense.weight",
    "layers.{i}.intermediate.bias": "encoder.layer.{i}.intermediate.dense.bias",
    "layers.{i}.output.weight": "encoder.layer.{i}.output.dense.weight",
    "layers.{i}.output.bias": "encoder.layer.{i}.output.dense.bias",
    "layers.{i}.output_layer_norm.weight": "encoder.layer.{i}.output.LayerNorm.weight",
    "layers.{i}.output_layer_norm.bias": "encoder.layer.{i}.output.LayerNorm.bias",
    **roberta.HEAD_NAMES,
}
