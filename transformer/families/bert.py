"""BERT, and BERT-architecture checkpoints (MiniLM, bge, e5, gte): the 2018 encoder layer.

Learned absolute positions and token types summed with the word vectors, then a LayerNorm;
every layer post-norm (the norm after the residual add), biases on every linear:

    hidden = LayerNorm(hidden + Attention(hidden))
    hidden = LayerNorm(hidden + MLP(hidden))

RoBERTa, DistilBERT, ELECTRA and MPNet reuse this recipe (`post_norm_recipe`) with their
own positions, token types and names.
"""

from transformer.recipe import (AbsolutePositions, Attention, Block, Embeddings, Layer, Linear, MLP, Norm,
                                Recipe)

MODEL_TYPES = ("bert",)
PREFIX = "bert."  # before the base model's names in a task model (BertForMaskedLM, ...)

# What `transformers` assumes when a key is missing from config.json (BertConfig's defaults).
DEFAULTS = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
    type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
)

# config.json settings that change the math, and the values the recipe supports.
OPTIONS = {"position_embedding_type": ("absolute",)}

# The activation after a task head's dense layer (None: config.hidden_act); BERT classifies
# its pooler output directly (no dense, no activation: `uses_pooler`).
MASKED_LM_ACTIVATION = None
CLASSIFIER_ACTIVATION = None


def config_fields(read):
    """The fields of EncoderConfig that BERT reads its own way: positions 0..seq-1, a token-type
    table of type_vocab_size rows (at least 1: every token adds row 0)."""
    return dict(position_padding_idx=None, type_vocab_size=read.integer("type_vocab_size", smallest=0))


def post_norm_recipe(config, positions=AbsolutePositions(), token_types=True, attention_positions=None,
                     projection=False):
    """BERT's recipe for `config`, with the variations of the families built on it.

    positions: how the position table is read (BERT: 0..seq-1; RoBERTa, MPNet: counted from a
    padding index); token_types: whether a token-type table is added; attention_positions:
    MPNet's relative position bias; projection: ELECTRA's linear from embedding_size up to
    hidden_size."""
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    heads, head_dim = config.num_attention_heads, config.head_dim
    attention = Attention(
        query=Linear("query", hidden, hidden), key=Linear("key", hidden, hidden),
        value=Linear("value", hidden, hidden), output=Linear("attention_output", hidden, hidden),
        num_heads=heads, head_dim=head_dim,
        positions=attention_positions)
    mlp = MLP(up=Linear("intermediate", hidden, inner), down=Linear("output", inner, hidden),
              activation=config.hidden_act)
    layer = Layer((
        Block(attention, norm_after_residual=Norm("attention_layer_norm", hidden, eps=eps)),
        Block(mlp, norm_after_residual=Norm("output_layer_norm", hidden, eps=eps)),
    ))
    embedding_size = config.embedding_size
    embeddings = Embeddings(
        size=embedding_size,
        positions=positions,
        token_types=token_types,
        norm=Norm("layer_norm", embedding_size, eps=eps),
        projection=Linear("projection", embedding_size, hidden) if projection else None,
    )
    return Recipe(embeddings=embeddings, layers=(layer,) * config.num_hidden_layers)


def recipe(config):
    return post_norm_recipe(config)


# Our parameter names -> the checkpoint's. `{i}` is the layer index.
LAYER_NAMES = {
    "layers.{i}.query.weight": "encoder.layer.{i}.attention.self.query.weight",
    "layers.{i}.query.bias": "encoder.layer.{i}.attention.self.query.bias",
    "layers.{i}.key.weight": "encoder.layer.{i}.attention.self.key.weight",
    "layers.{i}.key.bias": "encoder.layer.{i}.attention.self.key.bias",
    "layers.{i}.value.weight": "encoder.layer.{i}.attention.self.value.weight",
    "layers.{i}.value.bias": "encoder.layer.{i}.attention.self.value.bias",
    "layers.{i}.attention_output.weight": "encoder.layer.{i}.attention.output.dense.weight",
    "layers.{i}.attention_output.bias": "encoder.layer.{i}.attention.output.dense.bias",
    "layers.{i}.attention_layer_norm.weight": "encoder.layer.{i}.attention.output.LayerNorm.weight",
    "layers.{i}.attention_layer_norm.bias": "encoder.layer.{i}.attention.output.LayerNorm.bias",
    "layers.{i}.intermediate.weight": "encoder.layer.{i}.intermediate.dense.weight",
    "layers.{i}.intermediate.bias": "encoder.layer.{i}.intermediate.dense.bias",
    "layers.{i}.output.weight": "encoder.layer.{i}.output.dense.weight",
    "layers.{i}.output.bias": "encoder.layer.{i}.output.dense.bias",
    "layers.{i}.output_layer_norm.weight": "encoder.layer.{i}.output.LayerNorm.weight",
    "layers.{i}.output_layer_norm.bias": "encoder.layer.{i}.output.LayerNorm.bias",
}

EMBEDDING_NAMES = {
    "embeddings.word": "embeddings.word_embeddings.weight",
    "embeddings.position": "embeddings.position_embeddings.weight",
    "embeddings.token_type": "embeddings.token_type_embeddings.weight",
    "embeddings.layer_norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "embeddings.LayerNorm.bias",
}

NAMES = {
    **EMBEDDING_NAMES,
    **LAYER_NAMES,
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
    # heads (BertForMaskedLM / BertForPreTraining, BertFor{Sequence,Token}Classification)
    "masked_lm.dense.weight": "cls.predictions.transform.dense.weight",
    "masked_lm.dense.bias": "cls.predictions.transform.dense.bias",
    "masked_lm.layer_norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "masked_lm.layer_norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "masked_lm.decoder.weight": "cls.predictions.decoder.weight",  # used only when not tied
    "masked_lm.decoder.bias": ("cls.predictions.bias", "cls.predictions.decoder.bias"),
    "sequence_classification.out.weight": "classifier.weight",
    "sequence_classification.out.bias": "classifier.bias",
    "token_classification.out.weight": "classifier.weight",
    "token_classification.out.bias": "classifier.bias",
}
