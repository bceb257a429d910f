"""GPT-2: the 2019 decoder. Each token sees only the tokens before it (a causal mask).

Learned absolute positions added to the word vectors (no norm there); every layer pre-norm
(the norm before the sublayer, the residual added after), then one final LayerNorm `ln_f`:

    hidden = hidden + CausalAttention(LayerNorm(hidden))
    hidden = hidden + MLP(LayerNorm(hidden))          gelu_new (the tanh GELU)
    ...
    hidden = LayerNorm(hidden)                        ln_f, after the last layer

Its linears are `Conv1D`s: weights stored [in, out] (the transpose of PyTorch's nn.Linear),
and the query, key and value in one `c_attn` tensor [hidden, 3 * hidden] (`Part` entries
with in_out=True cut it back into three). config.json says `n_embd`, `n_layer`, `n_head`,
`n_inner` (None: 4 * n_embd), `n_positions`, `activation_function`, `layer_norm_epsilon`.
"""

from transformer.recipe import (CAUSAL, AbsolutePositions, Attention, Block, Embeddings, Layer, Linear, MLP, Norm,
                                Part, Recipe)

MODEL_TYPES = ("gpt2",)
PREFIX = "transformer."  # GPT2LMHeadModel, GPT2ForSequenceClassification: "transformer.h.0..."

DEFAULTS = dict(
    vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_inner=None, activation_function="gelu_new",
    n_positions=1024, layer_norm_epsilon=1e-5, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
)
# Settings that change the math. reorder_and_upcast_attn only changes the dtype of the
# scores under fp16 autocast: in float32 it computes the same.
OPTIONS = {"scale_attn_weights": (True, False), "scale_attn_by_inverse_layer_idx": (True, False)}

MASKED_LM_ACTIVATION = None
CLASSIFIER_ACTIVATION = None

_KEYS = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
         "intermediate_size": "n_inner", "hidden_act": "activation_function",
         "max_position_embeddings": "n_positions", "layer_norm_eps": "layer_norm_epsilon"}


# transformers reads these BERT spellings as aliases of n_embd, n_positions, n_head and n_layer
# (GPT2Config.attribute_map): where a file gives both, the alias wins.
_ALIASES = ("hidden_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers")


def config_keys(raw):
    """Our field name -> the config.json key GPT-2 reads it from."""
    return {ours: ours if ours in _ALIASES and ours in raw else theirs for ours, theirs in _KEYS.items()}


def config_fields(read):
    """No token types, positions 0..seq-1; n_inner None means 4 * n_embd (GPT2MLP)."""
    if read.values.get("n_inner") is None:  # (the Reader's own copy of config.json's values)
        read.values["n_inner"] = 4 * read.integer("hidden_size")
    for flag in OPTIONS:
        if not isinstance(read.values.get(flag), bool):
            read.fail(f"{flag} must be true or false, found {read.values.get(flag)!r:.60}")
    return dict(position_padding_idx=None, type_vocab_size=0, layer_norm_eps=read.number("layer_norm_eps"),
                options=dict(scale_attn_weights=read.values["scale_attn_weights"],
                             scale_attn_by_inverse_layer_idx=read.values["scale_attn_by_inverse_layer_idx"]))


def attention_scale(config, index):
    """The factor on layer `index`'s q . k: 1 / sqrt(head_dim) (scale_attn_weights), and / (index
    + 1) more when scale_attn_by_inverse_layer_idx (GPT2Attention)."""
    scale = config.head_dim ** -0.5 if config.options["scale_attn_weights"] else 1.0
    if config.options["scale_attn_by_inverse_layer_idx"]:
        scale /= index + 1
    return scale


def recipe(config):
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    layers = []
    for index in range(config.num_hidden_layers):
        attention = Attention(
            query=Linear("query", hidden, hidden), key=Linear("key", hidden, hidden),
            value=Linear("value", hidden, hidden), output=Linear("attention_output", hidden, hidden),
            num_heads=config.num_attention_heads, head_dim=config.head_dim, mask=CAUSAL,
            scale=attention_scale(config, index))
        mlp = MLP(up=Linear("up", hidden, inner), down=Linear("down", inner, hidden), activation=config.hidden_act)
        layers.append(Layer((
            Block(attention, norm_before=Norm("attention_norm", hidden, eps=eps)),
            Block(mlp, norm_before=Norm("mlp_norm", hidden, eps=eps)),
        )))
    embeddings = Embeddings(size=hidden, positions=AbsolutePositions(), token_types=False, norm=None)
    return Recipe(embeddings=embeddings, layers=tuple(layers), final_norm=Norm("final_norm", hidden, eps=eps))


def _qkv(i):
    """c_attn [hidden, 3 * hidden] (Conv1D: [in, out]) holds the query, key and value, in order."""
    return Part("h.{i}.attn.c_attn.weight", chunk=i, chunks=3, in_out=True), \
        Part("h.{i}.attn.c_attn.bias", chunk=i, chunks=3)


NAMES = {
    "embeddings.word": "wte.weight",
    "embeddings.position": "wpe.weight",
    "layers.{i}.attention_norm.weight": "h.{i}.ln_1.weight",
    "layers.{i}.attention_norm.bias": "h.{i}.ln_1.bias",
    "layers.{i}.query.weight": _qkv(0)[0],
    "layers.{i}.query.bias": _qkv(0)[1],
    "layers.{i}.key.weight": _qkv(1)[0],
    "layers.{i}.key.bias": _qkv(1)[1],
    "layers.{i}.value.weight": _qkv(2)[0],
    "layers.{i}.value.bias": _qkv(2)[1],
    "layers.{i}.attention_output.weight": Part("h.{i}.attn.c_proj.weight", in_out=True),
    "layers.{i}.attention_output.bias": "h.{i}.attn.c_proj.bias",
    "layers.{i}.mlp_norm.weight": "h.{i}.ln_2.weight",
    "layers.{i}.mlp_norm.bias": "h.{i}.ln_2.bias",
    "layers.{i}.up.weight": Part("h.{i}.mlp.c_fc.weight", in_out=True),
    "layers.{i}.up.bias": "h.{i}.mlp.c_fc.bias",
    "layers.{i}.down.weight": Part("h.{i}.mlp.c_proj.weight", in_out=True),
    "layers.{i}.down.bias": "h.{i}.mlp.c_proj.bias",
    "final_norm.weight": "ln_f.weight",
    "final_norm.bias": "ln_f.bias",
}
