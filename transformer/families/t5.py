"""T5's encoder (T5EncoderModel; sentence-t5, GTR) and mT5's: pre-norm, relative positions.

No position table: each attention adds a learned bias per (head, distance bucket) to its
scores, T5's buckets (exact below relative_attention_num_buckets / 4 either side, then
logarithmic up to relative_attention_max_distance). Only the first layer stores the bias
table; every layer reuses it. The scores are not scaled by 1 / sqrt(d_kv) (T5 folds that
into its initialisation). Every norm is T5's LayerNorm, an RMSNorm without bias; no linear
has a bias; the heads are d_kv wide, whatever d_model / num_heads is:

    hidden = shared[ids]                                    no scaling, no norm
    hidden = hidden + Attention(RMSNorm(hidden))            q . k + bias[bucket(i - j)]
    hidden = hidden + MLP(RMSNorm(hidden))                  relu (t5 v1.0, sentence-t5) or
    ...                                                     gelu_new GLU (v1.1, mT5: gated-gelu)
    last_hidden_state = RMSNorm(hidden)                     final_layer_norm

A full T5 checkpoint (T5Model, T5ForConditionalGeneration) loads as its encoder: the decoder
and lm_head tensors are skipped (IGNORED_TENSORS), any other tensor the name table does not
know is refused. T5ForTokenClassification's classifier is a token-classification head;
T5ForSequenceClassification classifies the decoder's output, which is not run here, so it is
refused.
"""

from transformer.recipe import Attention, Block, Embeddings, Layer, Linear, MLP, Norm, Recipe, RelativeBuckets

MODEL_TYPES = ("t5", "mt5")
PREFIX = "transformer."  # T5ForTokenClassification: "transformer.encoder.block.0..."

# T5Config's defaults (transformers 5.24); TYPE_DEFAULTS: MT5Config's that differ.
# n_positions is no limit (T5 has no position table): only what config.json says, for show.
DEFAULTS = dict(
    vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
    feed_forward_proj="relu", pad_token_id=0, n_positions=512,
)
TYPE_DEFAULTS = {"mt5": dict(vocab_size=250112, d_ff=1024, num_layers=8, num_heads=6, feed_forward_proj="gated-gelu")}
OPTIONS = {}
# The heads are d_kv wide, not d_model / num_heads (mT5-small: 512 wide, 6 heads of 64).
HEADS_SPLIT_HIDDEN = False

# Checkpoint tensors a T5 file may hold that its encoder does not read (the decoder, the
# language-model head); loading.check_unexpected_tensors refuses any other unknown tensor.
IGNORED_TENSORS = ("decoder.", "lm_head.")

# Architectures whose head is not on the encoder's output: refused, not loaded as an encoder.
DECODER_HEADS = ("T5ForSequenceClassification", "MT5ForSequenceClassification")

MASKED_LM_ACTIVATION = None
CLASSIFIER_ACTIVATION = None

_KEYS = {"hidden_size": "d_model", "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
         "head_dim": "d_kv", "intermediate_size": "d_ff", "layer_norm_eps": "layer_norm_epsilon",
         "hidden_act": "dense_act_fn", "max_position_embeddings": "n_positions"}

# transformers reads these spellings as aliases of d_model, num_heads, num_layers and d_kv
# (T5Config.attribute_map): where a file gives both, the alias wins.
_ALIASES = ("hidden_size", "num_attention_heads", "num_hidden_layers", "head_dim")


def config_keys(raw):
    """Our field name -> the config.json key T5 reads it from."""
    return {ours: ours if ours in _ALIASES and ours in raw else theirs for ours, theirs in _KEYS.items()}


def feed_forward(read):
    """(activation, gated) from feed_forward_proj, as T5Config reads it: "relu", "gelu", ...
    (DenseReluDense: wi, act, wo) or "gated-" and an activation (DenseGatedActDense: act(wi_0)
    * wi_1, then wo); "gated-gelu" means the tanh GELU (gelu_new), for backward compatibility."""
    from transformer.model import ACTIVATIONS  # the one list of activation names

    spelling = read.values.get("feed_forward_proj")
    parts = spelling.split("-") if isinstance(spelling, str) else []
    if not 1 <= len(parts) <= 2 or (len(parts) == 2 and parts[0] != "gated") or parts[-1] not in ACTIVATIONS:
        read.fail(f"feed_forward_proj {spelling!r:.60} is not supported; expected an activation "
                  f"({', '.join(ACTIVATIONS)}) or 'gated-' and one (e.g. 'relu', 'gated-gelu')")
    activation, gated = parts[-1], len(parts) == 2
    if spelling == "gated-gelu":
        activation = "gelu_new"
    return activation, gated


def config_fields(read):
    """T5's own fields: the feed-forward kind, head width, relative buckets; what disagrees is
    refused naming the key."""
    from transformer.config import ConfigError  # (config.py imports the families)

    architectures = read.raw.get("architectures")
    if isinstance(architectures, list) and architectures and architectures[0] in DECODER_HEADS:
        read.fail(f"{architectures[0]} classifies the output of T5's decoder; this package runs the encoder "
                  f"only (T5EncoderModel, T5ForTokenClassification, or a full T5 checkpoint as its encoder)")
    activation, gated = feed_forward(read)
    values = read.values  # the Reader's own copy of config.json's values
    for key, implied in (("is_gated_act", gated), ("dense_act_fn", activation)):
        given = read.raw.get(key)
        if given is not None and given != implied:
            read.fail(f"{key} is {given!r:.40} but feed_forward_proj {values['feed_forward_proj']!r} means "
                      f"{implied!r}; transformers' T5Config derives {key} from feed_forward_proj")
    values["dense_act_fn"] = activation  # hidden_act, read after this
    # T5Config and MT5Config force it true, T5Config whatever config.json says (MT5Config first
    # checks it is a boolean: config.py refuses other values, as there)
    if values.get("model_type") == "t5" or isinstance(values.get("tie_word_embeddings"), bool):
        values["tie_word_embeddings"] = True
    try:  # transformers reads no n_positions: an odd one is not refused, only not shown
        read.integer("max_position_embeddings")
    except ConfigError:
        values[read.key("max_position_embeddings")] = DEFAULTS["n_positions"]
    head_dim = read.integer("head_dim")  # d_kv
    buckets = read.integer("relative_attention_num_buckets", smallest=4)
    max_distance = read.integer("relative_attention_max_distance")
    max_exact = buckets // 4  # distances below it get a bucket each, either side
    if max_distance <= max_exact:
        read.fail(f"relative_attention_max_distance {max_distance} must exceed relative_attention_num_buckets // 4 "
                  f"= {max_exact} (the distances below it have exact buckets; the logarithmic ones reach it)")
    return dict(position_padding_idx=None, type_vocab_size=0, relative_attention_num_buckets=buckets,
                layer_norm_eps=read.number("layer_norm_eps"),
                options=dict(head_dim=head_dim, gated=gated, max_distance=max_distance))


def recipe(config):
    options = config.options
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    heads, head_dim = config.num_attention_heads, options["head_dim"]
    buckets = config.relative_attention_num_buckets
    positions = RelativeBuckets(table="relative_attention_bias", rows=buckets, num_buckets=buckets,
                                max_distance=options["max_distance"])

    def rms_norm(name):
        return Norm(name, hidden, kind="rms_norm", eps=eps, bias=False)

    attention = Attention(
        query=Linear("query", hidden, heads * head_dim, False), key=Linear("key", hidden, heads * head_dim, False),
        value=Linear("value", hidden, heads * head_dim, False),
        output=Linear("attention_output", heads * head_dim, hidden, False),
        num_heads=heads, head_dim=head_dim, scale=1.0, positions=positions)
    if options["gated"]:
        mlp = MLP(gate=Linear("gate", hidden, inner, False), up=Linear("up", hidden, inner, False),
                  down=Linear("down", inner, hidden, False), activation=config.hidden_act)
    else:
        mlp = MLP(up=Linear("intermediate", hidden, inner, False), down=Linear("down", inner, hidden, False),
                  activation=config.hidden_act)
    layer = Layer((Block(attention, norm_before=rms_norm("attention_norm")),
                   Block(mlp, norm_before=rms_norm("mlp_norm"))))
    return Recipe(
        embeddings=Embeddings(size=hidden, positions=None, token_types=False, norm=None),
        layers=(layer,) * config.num_hidden_layers,
        final_norm=rms_norm("final_norm"),
    )


_BLOCK = "encoder.block.{i}.layer"

NAMES = {
    # the shared table; a T5EncoderModel's file may keep the encoder's tied copy only
    "embeddings.word": ("shared.weight", "encoder.embed_tokens.weight"),
    "relative_attention_bias": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    "layers.{i}.attention_norm.weight": f"{_BLOCK}.0.layer_norm.weight",
    "layers.{i}.query.weight": f"{_BLOCK}.0.SelfAttention.q.weight",
    "layers.{i}.key.weight": f"{_BLOCK}.0.SelfAttention.k.weight",
    "layers.{i}.value.weight": f"{_BLOCK}.0.SelfAttention.v.weight",
    "layers.{i}.attention_output.weight": f"{_BLOCK}.0.SelfAttention.o.weight",
    "layers.{i}.mlp_norm.weight": f"{_BLOCK}.1.layer_norm.weight",
    "layers.{i}.intermediate.weight": f"{_BLOCK}.1.DenseReluDense.wi.weight",  # relu, gelu, ...
    "layers.{i}.gate.weight": f"{_BLOCK}.1.DenseReluDense.wi_0.weight",  # gated-: act(wi_0) * wi_1
    "layers.{i}.up.weight": f"{_BLOCK}.1.DenseReluDense.wi_1.weight",
    "layers.{i}.down.weight": f"{_BLOCK}.1.DenseReluDense.wo.weight",
    "final_norm.weight": "encoder.final_layer_norm.weight",
    # T5ForTokenClassification
    "token_classification.out.weight": "classifier.weight",
    "token_classification.out.bias": "classifier.bias",
}
