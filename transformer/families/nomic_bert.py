"""NomicBERT (nomic-embed-text v1 / v1.5): BERT's post-norm layers with rotary positions and
a SwiGLU feed-forward, as `transformers` ships it (NomicBertModel).

Word and token-type vectors summed, then a LayerNorm (no position table: the queries and keys
are turned by rotary angles, theta 1000 by default); no linear has a bias, the LayerNorms do:

    hidden = LayerNorm(hidden + Attention(hidden))
    hidden = LayerNorm(hidden + down(silu(gate(hidden)) * up(hidden)))

The name table also reads nomic's own checkpoint names (a fused `Wqkv`, `fc11` / `fc12` /
`fc2`), the renaming `transformers` applies when it loads one.
"""

from transformer.recipe import Attention, Block, Embeddings, Layer, Linear, MLP, Norm, Part, Recipe, Rotary

from . import bert

MODEL_TYPES = ("nomic_bert",)
PREFIX = "nomic_bert."

# NomicBertConfig's defaults.
DEFAULTS = dict(
    vocab_size=30528, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="silu", max_position_embeddings=2048,
    type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
)
THETA = 1000.0

OPTIONS = {}

MASKED_LM_ACTIVATION = None  # config.hidden_act, as BERT's
CLASSIFIER_ACTIVATION = None  # the pooler output, classified directly

# nomic's remote-code config.json spells the sizes its own way; transformers' NomicBertConfig
# does not read them, so neither do we (a silently default-sized model would follow).
REMOTE_CODE_KEYS = ("n_embd", "n_head", "n_layer", "rotary_emb_base", "rotary_emb_fraction")


def rope_theta(read, default, model_type):
    """The rotary theta from rope_parameters (transformers 5) or rope_theta; a rope_type other
    than "default" is refused, naming it."""
    parameters = read.values.get("rope_parameters")
    theta = read.values.get("rope_theta", default)
    if parameters is not None:
        if not isinstance(parameters, dict):
            read.fail(f"rope_parameters must be an object, found {parameters!r:.60}")
        kind = parameters.get("rope_type", "default")
        if kind != "default":
            read.fail(f"rope_parameters rope_type {kind!r} is not supported by {model_type}; supported: 'default'")
        theta = parameters.get("rope_theta", theta)
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1:
        read.fail(f"rope_theta must be a number above 1, found {theta!r:.60}")
    return float(theta)


def config_fields(read):
    """Token types as BERT's, no position table; the rotary theta goes to `options`."""
    found = [key for key in REMOTE_CODE_KEYS if key in read.raw]
    if found:
        read.fail(f"{found[0]} is nomic's remote-code config format, which transformers' NomicBertConfig does not "
                  f"read; convert it to transformers' spelling (hidden_size, num_attention_heads, ...)")
    if read.pad_token_id is None:  # NomicBertConfig's pad_token_id is an int, never null
        read.fail("pad_token_id must be an integer for nomic_bert, found null")
    hidden, heads = read.integer("hidden_size"), read.integer("num_attention_heads")
    head_dim = read.values.get("head_dim")
    if head_dim is not None and head_dim != hidden // heads:
        read.fail(f"head_dim {head_dim!r:.20} is not supported by nomic_bert; supported: hidden_size // "
                  f"num_attention_heads ({hidden // heads})")
    return dict(position_padding_idx=None, type_vocab_size=read.integer("type_vocab_size", smallest=1),
                options=dict(rope_theta=rope_theta(read, THETA, "nomic_bert")))


def rotary_post_norm_recipe(config, bias, gated):
    """BERT's post-norm layers with rotary positions (config.options["rope_theta"]) instead of
    a position table: NomicBERT's (no biases, a gated MLP) and Jina v3's (biases, a plain one)."""
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    attention = Attention(
        query=Linear("query", hidden, hidden, bias), key=Linear("key", hidden, hidden, bias),
        value=Linear("value", hidden, hidden, bias), output=Linear("attention_output", hidden, hidden, bias),
        num_heads=config.num_attention_heads, head_dim=config.head_dim,
        positions=Rotary(theta=config.options["rope_theta"]))
    if gated:
        mlp = MLP(gate=Linear("gate", hidden, inner, bias), up=Linear("up", hidden, inner, bias),
                  down=Linear("down", inner, hidden, bias), activation=config.hidden_act)
    else:
        mlp = MLP(up=Linear("intermediate", hidden, inner, bias), down=Linear("output", inner, hidden, bias),
                  activation=config.hidden_act)
    layer = Layer((
        Block(attention, norm_after_residual=Norm("attention_layer_norm", hidden, eps=eps)),
        Block(mlp, norm_after_residual=Norm("output_layer_norm", hidden, eps=eps)),
    ))
    embeddings = Embeddings(size=hidden, positions=None, token_types=True, norm=Norm("layer_norm", hidden, eps=eps))
    return Recipe(embeddings=embeddings, layers=(layer,) * config.num_hidden_layers)


def recipe(config):
    return rotary_post_norm_recipe(config, bias=False, gated=True)


NAMES = {
    "embeddings.word": "embeddings.word_embeddings.weight",
    "embeddings.token_type": "embeddings.token_type_embeddings.weight",
    "embeddings.layer_norm.weight": ("embeddings.LayerNorm.weight", "emb_ln.weight"),
    "embeddings.layer_norm.bias": ("embeddings.LayerNorm.bias", "emb_ln.bias"),
    "layers.{i}.query.weight": ("layers.{i}.self_attn.q_proj.weight", Part("encoder.layers.{i}.attn.Wqkv.weight", 0, 3)),
    "layers.{i}.key.weight": ("layers.{i}.self_attn.k_proj.weight", Part("encoder.layers.{i}.attn.Wqkv.weight", 1, 3)),
    "layers.{i}.value.weight": ("layers.{i}.self_attn.v_proj.weight", Part("encoder.layers.{i}.attn.Wqkv.weight", 2, 3)),
    "layers.{i}.attention_output.weight": ("layers.{i}.self_attn.o_proj.weight", "encoder.layers.{i}.attn.out_proj.weight"),
    "layers.{i}.attention_layer_norm.weight": ("layers.{i}.post_attention_layernorm.weight",
                                               "encoder.layers.{i}.norm1.weight"),
    "layers.{i}.attention_layer_norm.bias": ("layers.{i}.post_attention_layernorm.bias", "encoder.layers.{i}.norm1.bias"),
    "layers.{i}.gate.weight": ("layers.{i}.mlp.gate_proj.weight", "encoder.layers.{i}.mlp.fc12.weight"),
    "layers.{i}.up.weight": ("layers.{i}.mlp.up_proj.weight", "encoder.layers.{i}.mlp.fc11.weight"),
    "layers.{i}.down.weight": ("layers.{i}.mlp.down_proj.weight", "encoder.layers.{i}.mlp.fc2.weight"),
    "layers.{i}.output_layer_norm.weight": ("layers.{i}.post_mlp_layernorm.weight", "encoder.layers.{i}.norm2.weight"),
    "layers.{i}.output_layer_norm.bias": ("layers.{i}.post_mlp_layernorm.bias", "encoder.layers.{i}.norm2.bias"),
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
    # heads (NomicBertForMaskedLM, NomicBertFor{Sequence,Token}Classification): BERT's
    **{name: entry for name, entry in bert.NAMES.items() if name.split(".")[0] in (
        "masked_lm", "sequence_classification", "token_classification")},
    "masked_lm.layer_norm.weight": "cls.predictions.transform.layer_norm.weight",
    "masked_lm.layer_norm.bias": "cls.predictions.transform.layer_norm.bias",
}
