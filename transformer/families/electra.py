"""ELECTRA: BERT's layers and names, embeddings of their own (smaller) width projected up.

When config.embedding_size differs from hidden_size (the small generators and
discriminators), a linear layer `embeddings_project` maps the normed embeddings up to the
hidden size. No pooler; its pretraining head is the discriminator (was this token replaced?).
"""

from . import bert

MODEL_TYPES = ("electra",)
PREFIX = "electra."

DEFAULTS = dict(
    vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
    num_attention_heads=4, intermediate_size=1024, hidden_act="gelu",
    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
)
OPTIONS = bert.OPTIONS

MASKED_LM_ACTIVATION = "gelu"  # ElectraGeneratorPredictions
CLASSIFIER_ACTIVATION = "gelu"  # ElectraClassificationHead
PRETRAINING_HEAD = "discriminator"  # ElectraForPreTraining


def config_fields(read):
    return dict(position_padding_idx=None, type_vocab_size=read.integer("type_vocab_size", smallest=0),
                embedding_size=read.integer("embedding_size"))


def recipe(config):
    return bert.post_norm_recipe(config, projection=config.embedding_size != config.hidden_size)


NAMES = {
    **bert.EMBEDDING_NAMES,
    "embeddings.projection.weight": "embeddings_project.weight",
    "embeddings.projection.bias": "embeddings_project.bias",
    **bert.LAYER_NAMES,
    # the generator's masked-LM head (ElectraForMaskedLM)
    "masked_lm.dense.weight": "generator_predictions.dense.weight",
    "masked_lm.dense.bias": "generator_predictions.dense.bias",
    "masked_lm.layer_norm.weight": "generator_predictions.LayerNorm.weight",
    "masked_lm.layer_norm.bias": "generator_predictions.LayerNorm.bias",
    "masked_lm.decoder.weight": "generator_lm_head.weight",
    "masked_lm.decoder.bias": "generator_lm_head.bias",
    # the discriminator's replaced-token head (ElectraForPreTraining)
    "discriminator.dense.weight": "discriminator_predictions.dense.weight",
    "discriminator.dense.bias": "discriminator_predictions.dense.bias",
    "discriminator.out.weight": "discriminator_predictions.dense_prediction.weight",
    "discriminator.out.bias": "discriminator_predictions.dense_prediction.bias",
    "sequence_classification.dense.weight": "classifier.dense.weight",
    "sequence_classification.dense.bias": "classifier.dense.bias",
    "sequence_classification.out.weight": "classifier.out_proj.weight",
    "sequence_classification.out.bias": "classifier.out_proj.bias",
    "token_classification.out.weight": "classifier.weight",
    "token_classification.out.bias": "classifier.bias",
}
