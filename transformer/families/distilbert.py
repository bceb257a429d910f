"""DistilBERT: BERT's layers with its own names and config spelling; no token types, no pooler.

Its config.json says `dim`, `n_heads`, `n_layers`, `hidden_dim`, `activation`, and every
LayerNorm's epsilon is fixed at 1e-12 in its code (no key for it).
"""

from . import bert

MODEL_TYPES = ("distilbert",)
PREFIX = "distilbert."

DEFAULTS = dict(
    vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
    activation="gelu", max_position_embeddings=512, pad_token_id=0,
)
OPTIONS = bert.OPTIONS  # read as BERT reads it: only absolute positions

MASKED_LM_ACTIVATION = None  # config.activation
CLASSIFIER_ACTIVATION = "relu"  # pre_classifier, ReLU, classifier

# DistilBERT's keys for the sizes every other family names like BERT.
_KEYS = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
         "intermediate_size": "hidden_dim", "hidden_act": "activation"}
# transformers reads these BERT spellings as aliases of dim, n_heads and n_layers
# (DistilBertConfig.attribute_map): where a file gives both, the alias wins.
_ALIASES = ("hidden_size", "num_hidden_layers", "num_attention_heads")


def config_keys(raw):
    """Our field name -> the config.json key DistilBERT reads it from."""
    return {ours: ours if ours in _ALIASES and ours in raw else theirs for ours, theirs in _KEYS.items()}


def config_fields(read):
    return dict(position_padding_idx=None, type_vocab_size=0, layer_norm_eps=1e-12)


def recipe(config):
    return bert.post_norm_recipe(config, token_types=False)


NAMES = {
    "embeddings.word": "embeddings.word_embeddings.weight",
    "embeddings.position": "embeddings.position_embeddings.weight",
    "embeddings.layer_norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "embeddings.LayerNorm.bias",
    "layers.{i}.query.weight": "transformer.layer.{i}.attention.q_lin.weight",
    "layers.{i}.query.bias": "transformer.layer.{i}.attention.q_lin.bias",
    "layers.{i}.key.weight": "transformer.layer.{i}.attention.k_lin.weight",
    "layers.{i}.key.bias": "transformer.layer.{i}.attention.k_lin.bias",
    "layers.{i}.value.weight": "transformer.layer.{i}.attention.v_lin.weight",
    "layers.{i}.value.bias": "transformer.layer.{i}.attention.v_lin.bias",
    "layers.{i}.attention_output.weight": "transformer.layer.{i}.attention.out_lin.weight",
    "layers.{i}.attention_output.bias": "transformer.layer.{i}.attention.out_lin.bias",
    "layers.{i}.attention_layer_norm.weight": "transformer.layer.{i}.sa_layer_norm.weight",
    "layers.{i}.attention_layer_norm.bias": "transformer.layer.{i}.sa_layer_norm.bias",
    "layers.{i}.intermediate.weight": "transformer.layer.{i}.ffn.lin1.weight",
    "layers.{i}.intermediate.bias": "transformer.layer.{i}.ffn.lin1.bias",
    "layers.{i}.output.weight": "transformer.layer.{i}.ffn.lin2.weight",
    "layers.{i}.output.bias": "transformer.layer.{i}.ffn.lin2.bias",
    "layers.{i}.output_layer_norm.weight": "transformer.layer.{i}.output_layer_norm.weight",
    "layers.{i}.output_layer_norm.bias": "transformer.layer.{i}.output_layer_norm.bias",
    "masked_lm.dense.weight": "vocab_transform.weight",
    "masked_lm.dense.bias": "vocab_transform.bias",
    "masked_lm.layer_norm.weight": "vocab_layer_norm.weight",
    "masked_lm.layer_norm.bias": "vocab_layer_norm.bias",
    "masked_lm.decoder.weight": "vocab_projector.weight",
    "masked_lm.decoder.bias": "vocab_projector.bias",
    "sequence_classification.dense.weight": "pre_classifier.weight",
    "sequence_classification.dense.bias": "pre_classifier.bias",
    "sequence_classification.out.weight": "classifier.weight",
    "sequence_classification.out.bias": "classifier.bias",
    "token_classification.out.weight": "classifier.weight",
    "token_classification.out.bias": "classifier.bias",
}
