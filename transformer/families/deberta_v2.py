"""DeBERTa-v2 / v3 and mDeBERTa (config.json model_type "deberta-v2"): disentangled attention.

BERT's post-norm layers, with attention scores that add two position terms to the content
term: content-to-position q_i . pk[r] and position-to-content k_j . pq[r], where r is the
row of a learned relative-embedding table for the distance i - j (log-bucketed past
position_buckets / 2), and pk, pq that table projected by the layer's own key and query
linears (share_att_key) or by separate ones:

    score[i, j] = (q_i . k_j + q_i . pk[r(i - j)] + k_j . pq[r(i - j)]) / sqrt(head_dim * 3)

DeBERTa-v3 adds no absolute positions at the embeddings (position_biased_input false): the
relative terms are the only positions, so inputs may be longer than max_position_embeddings.
Its embeddings are word (+ token type) (+ position), then a bias-free projection up to
hidden_size when embedding_size differs, LayerNorm, and padding tokens zeroed.

Heads as `transformers` has them: masked LM (the legacy `cls.predictions` head or
`lm_predictions.lm_head`), sequence classification (ContextPooler: dense + pooler_hidden_act
on the first token, then the classifier), token classification.
"""

import numpy as np

from transformer.recipe import (AbsolutePositions, Attention, Block, Disentangled, Embeddings, Layer, Linear, Mask,
                                MLP, Norm, Recipe)

MODEL_TYPES = ("deberta-v2",)
PREFIX = "deberta."

# DebertaV2Config's defaults (transformers 5.24), and the attributes its modules read with
# getattr(config, name, default).
DEFAULTS = dict(
    vocab_size=128100, hidden_size=1536, num_hidden_layers=24, num_attention_heads=24,
    intermediate_size=6144, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0,
    layer_norm_eps=1e-7, pad_token_id=0, relative_attention=False, max_relative_positions=-1,
    position_buckets=-1, position_biased_input=True, pos_att_type=None, share_att_key=False,
    norm_rel_ebd="none", pooler_hidden_act="gelu", legacy=True,
)

# Settings that change the math and that the recipe does not run: the convolution after the
# first layer (DeBERTa-v2-xlarge's conv_kernel_size), attention heads wider than hidden / heads.
OPTIONS = {"conv_kernel_size": (0,)}

MASKED_LM_ACTIVATION = None  # config.hidden_act


def classifier_activation(config):
    """ContextPooler's activation, read from config.json (not fixed in the code, as other families')."""
    return config.options["pooler_hidden_act"]


CLASSIFIER_ACTIVATION = "gelu"  # DebertaV2Config's pooler_hidden_act; see classifier_activation


def _flag(read, key):
    value = read.values.get(key)
    if not isinstance(value, bool):
        read.fail(f"{key} must be true or false, found {value!r:.60}")
    return value


def _attention_types(read):
    """pos_att_type ("p2c|c2p", ["c2p", "p2c"], null) -> the set of its terms, each c2p or p2c."""
    value = read.values.get("pos_att_type")
    if value is None:
        return set()
    items = [item.strip() for item in value.lower().split("|")] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items) or \
            not set(items) <= {"c2p", "p2c"}:
        read.fail(f"pos_att_type {value!r:.60} is not supported by deberta-v2; supported: a combination of "
                  f"'c2p' and 'p2c'")
    return set(items)


def config_fields(read):
    """DeBERTa's own fields: token types (often none), embedding_size, and its attention
    settings in `options`; refuses the ones the recipe does not run, naming them."""
    from transformer.model import ACTIVATIONS  # the one list of activation names

    hidden = read.integer("hidden_size")
    heads = read.integer("num_attention_heads")
    head_size = read.raw.get("attention_head_size")
    if head_size is not None and (type(head_size) is not int or head_size * heads != hidden):
        read.fail(f"attention_head_size {head_size!r:.20} is not supported by deberta-v2; "
                  f"supported: hidden_size / num_attention_heads ({hidden // heads})")
    norm_rel_ebd = read.values.get("norm_rel_ebd")
    terms = [item.strip() for item in norm_rel_ebd.lower().split("|")] if isinstance(norm_rel_ebd, str) else None
    if terms is None or not set(terms) <= {"none", "layer_norm"}:
        read.fail(f"norm_rel_ebd {norm_rel_ebd!r:.60} is not supported by deberta-v2; supported: 'none', 'layer_norm'")
    pooler_act = read.values.get("pooler_hidden_act")
    if not isinstance(pooler_act, str) or pooler_act not in ACTIVATIONS:
        read.fail(f"pooler_hidden_act {pooler_act!r:.60} is not supported; supported: {', '.join(ACTIVATIONS)}")
    if read.values.get("pooler_hidden_size", hidden) != hidden:
        read.fail(f"pooler_hidden_size {read.values['pooler_hidden_size']!r:.20} is not supported by deberta-v2; "
                  f"supported: hidden_size ({hidden})")
    max_relative = read.values.get("max_relative_positions")
    buckets = read.values.get("position_buckets")
    for key, value in (("max_relative_positions", max_relative), ("position_buckets", buckets)):
        if type(value) is not int:
            read.fail(f"{key} must be an integer, found {value!r:.60}")
    if max_relative < 1:  # transformers: "use max_position_embeddings"
        max_relative = read.integer("max_position_embeddings")
    if 0 < buckets and (buckets < 2 or max_relative <= buckets // 2 + 1):
        read.fail(f"position_buckets {buckets} needs max_relative_positions ({max_relative}) above "
                  f"position_buckets / 2 + 1: the log buckets span the distances between them")
    fields = dict(position_padding_idx=None, type_vocab_size=read.integer("type_vocab_size", smallest=0),
                  options=dict(relative_attention=_flag(read, "relative_attention"),
                               position_biased_input=_flag(read, "position_biased_input"),
                               share_att_key=_flag(read, "share_att_key"),
                               attention_types=frozenset(_attention_types(read)),
                               max_relative_positions=max_relative, position_buckets=max(buckets, 0),
                               relative_layer_norm="layer_norm" in terms, pooler_hidden_act=pooler_act))
    if "embedding_size" in read.raw:
        fields["embedding_size"] = read.integer("embedding_size")
    return fields


def attention_scale(head_dim, terms):
    """1 / sqrt(head_dim * (1 + number of position terms)), as transformers rounds it: the
    square root taken in float32 (`scaled_size_sqrt`). It counts pos_att_type's terms even
    when relative_attention is off."""
    return float(np.float32(1.0) / np.sqrt(np.float32(head_dim * (1 + len(terms)))))


def recipe(config):
    options = config.options
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    heads, head_dim = config.num_attention_heads, config.head_dim
    terms = options["attention_types"]
    positions = None
    if options["relative_attention"] and terms:
        buckets = options["position_buckets"]
        span = buckets if buckets > 0 else options["max_relative_positions"]
        own = not options["share_att_key"]
        positions = Disentangled(
            table="relative_embeddings", rows=2 * span, span=span, buckets=buckets,
            max_distance=options["max_relative_positions"], c2p="c2p" in terms, p2c="p2c" in terms,
            share_key=not own,
            position_key=Linear("position_key", hidden, hidden) if own and "c2p" in terms else None,
            position_query=Linear("position_query", hidden, hidden) if own and "p2c" in terms else None,
            norm=Norm("relative_layer_norm", hidden, eps=eps) if options["relative_layer_norm"] else None)
    attention = Attention(
        query=Linear("query", hidden, hidden), key=Linear("key", hidden, hidden),
        value=Linear("value", hidden, hidden), output=Linear("attention_output", hidden, hidden),
        num_heads=heads, head_dim=head_dim, scale=attention_scale(head_dim, terms), positions=positions,
        mask=Mask(queries=True))
    mlp = MLP(up=Linear("intermediate", hidden, inner), down=Linear("output", inner, hidden),
              activation=config.hidden_act)
    layer = Layer((
        Block(attention, norm_after_residual=Norm("attention_layer_norm", hidden, eps=eps)),
        Block(mlp, norm_after_residual=Norm("output_layer_norm", hidden, eps=eps)),
    ))
    size = config.embedding_size
    embeddings = Embeddings(
        size=size,
        positions=AbsolutePositions() if options["position_biased_input"] else None,
        token_types=config.type_vocab_size > 0,
        norm=Norm("layer_norm", hidden, eps=eps),
        projection=Linear("projection", size, hidden, bias=False) if size != hidden else None,
        project_first=True, zero_padding=True)
    return Recipe(embeddings=embeddings, layers=(layer,) * config.num_hidden_layers)


_LAYER = "encoder.layer.{i}."
NAMES = {
    "embeddings.word": "embeddings.word_embeddings.weight",
    "embeddings.position": "embeddings.position_embeddings.weight",
    "embeddings.token_type": "embeddings.token_type_embeddings.weight",
    "embeddings.projection.weight": "embeddings.embed_proj.weight",
    "embeddings.layer_norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "embeddings.LayerNorm.bias",
    "relative_embeddings": "encoder.rel_embeddings.weight",
    "relative_layer_norm.weight": "encoder.LayerNorm.weight",
    "relative_layer_norm.bias": "encoder.LayerNorm.bias",
    "layers.{i}.query.weight": _LAYER + "attention.self.query_proj.weight",
    "layers.{i}.query.bias": _LAYER + "attention.self.query_proj.bias",
    "layers.{i}.key.weight": _LAYER + "attention.self.key_proj.weight",
    "layers.{i}.key.bias": _LAYER + "attention.self.key_proj.bias",
    "layers.{i}.value.weight": _LAYER + "attention.self.value_proj.weight",
    "layers.{i}.value.bias": _LAYER + "attention.self.value_proj.bias",
    "layers.{i}.position_key.weight": _LAYER + "attention.self.pos_key_proj.weight",
    "layers.{i}.position_key.bias": _LAYER + "attention.self.pos_key_proj.bias",
    "layers.{i}.position_query.weight": _LAYER + "attention.self.pos_query_proj.weight",
    "layers.{i}.position_query.bias": _LAYER + "attention.self.pos_query_proj.bias",
    "layers.{i}.attention_output.weight": _LAYER + "attention.output.dense.weight",
    "layers.{i}.attention_output.bias": _LAYER + "attention.output.dense.bias",
    "layers.{i}.attention_layer_norm.weight": _LAYER + "attention.output.LayerNorm.weight",
    "layers.{i}.attention_layer_norm.bias": _LAYER + "attention.output.LayerNorm.bias",
    "layers.{i}.intermediate.weight": _LAYER + "intermediate.dense.weight",
    "layers.{i}.intermediate.bias": _LAYER + "intermediate.dense.bias",
    "layers.{i}.output.weight": _LAYER + "output.dense.weight",
    "layers.{i}.output.bias": _LAYER + "output.dense.bias",
    "layers.{i}.output_layer_norm.weight": _LAYER + "output.LayerNorm.weight",
    "layers.{i}.output_layer_norm.bias": _LAYER + "output.LayerNorm.bias",
    # heads: DebertaV2ForMaskedLM (legacy `cls.predictions`, or `lm_predictions.lm_head`, whose
    # decoder is always the word table), ...ForSequenceClassification (ContextPooler + classifier),
    # ...ForTokenClassification
    "masked_lm.dense.weight": ("cls.predictions.transform.dense.weight", "lm_predictions.lm_head.dense.weight"),
    "masked_lm.dense.bias": ("cls.predictions.transform.dense.bias", "lm_predictions.lm_head.dense.bias"),
    "masked_lm.layer_norm.weight": ("cls.predictions.transform.LayerNorm.weight",
                                    "lm_predictions.lm_head.LayerNorm.weight"),
    "masked_lm.layer_norm.bias": ("cls.predictions.transform.LayerNorm.bias", "lm_predictions.lm_head.LayerNorm.bias"),
    "masked_lm.decoder.weight": "cls.predictions.decoder.weight",  # used only when not tied
    "masked_lm.decoder.bias": ("cls.predictions.bias", "cls.predictions.decoder.bias", "lm_predictions.lm_head.bias"),
    "sequence_classification.dense.weight": "pooler.dense.weight",
    "sequence_classification.dense.bias": "pooler.dense.bias",
    "sequence_classification.out.weight": "classifier.weight",
    "sequence_classification.out.bias": "classifier.bias",
    "token_classification.out.weight": "classifier.weight",
    "token_classification.out.bias": "classifier.bias",
}
