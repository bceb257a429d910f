"""RoBERTa and XLM-RoBERTa: BERT's layers and names; positions counted fairseq-style.

A real token's position is counted from pad_token_id + 1 over the real tokens (padding tokens
get pad_token_id itself), so the first 2 rows of the position table are never read by a
real token (514 rows -> 512 tokens). XLM-RoBERTa is RoBERTa with a bigger vocabulary.
"""

from transformer.recipe import AbsolutePositions

from . import bert

MODEL_TYPES = ("roberta", "xlm-roberta")
PREFIX = "roberta."

DEFAULTS = dict(bert.DEFAULTS, vocab_size=50265, pad_token_id=1)
# A model type whose defaults differ from its family's: only these keys.
TYPE_DEFAULTS = {"xlm-roberta": dict(vocab_size=30522)}
OPTIONS = bert.OPTIONS

# RobertaLMHead's dense is followed by a GELU, RobertaClassificationHead's by a tanh.
MASKED_LM_ACTIVATION = "gelu"
CLASSIFIER_ACTIVATION = "tanh"


def config_fields(read):
    pad_token_id = read.pad_token_id
    if pad_token_id is None:
        read.fail("RoBERTa-style configs need pad_token_id (positions are counted from it)")
    return dict(position_padding_idx=pad_token_id, type_vocab_size=read.integer("type_vocab_size", smallest=0))


def recipe(config):
    return bert.post_norm_recipe(config, positions=AbsolutePositions(padding_idx=config.position_padding_idx))


# The pooler and heads of RoBERTa, XLM-RoBERTa and MPNet (lm_head, classifier.out_proj).
HEAD_NAMES = {
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
    "masked_lm.dense.weight": "lm_head.dense.weight",
    "masked_lm.dense.bias": "lm_head.dense.bias",
    "masked_lm.layer_norm.weight": "lm_head.layer_norm.weight",
    "masked_lm.layer_norm.bias": "lm_head.layer_norm.bias",
    "masked_lm.decoder.weight": "lm_head.decoder.weight",
    "masked_lm.decoder.bias": ("lm_head.bias", "lm_head.decoder.bias"),
    "sequence_classification.dense.weight": "classifier.dense.weight",
    "sequence_classification.dense.bias": "classifier.dense.bias",
    "sequence_classification.out.weight": "classifier.out_proj.weight",
    "sequence_classification.out.bias": "classifier.out_proj.bias",
    "token_classification.out.weight": "classifier.weight",
    "token_classification.out.bias": "classifier.bias",
}

NAMES = {**bert.EMBEDDING_NAMES, **bert.LAYER_NAMES, **HEAD_NAMES}
