"""ModernBERT (2024): a pre-norm encoder with rotary positions, GeGLU and local attention.

No position table and no token types: positions enter as rotary embeddings of the queries
and keys, with one theta for the global layers and another for the local ones. Every layer
is pre-norm (the first layer's attention reads the embeddings' norm instead of its own),
and a final norm follows the last layer; no linear and no norm has a bias by default:

    hidden = hidden + Attention(LayerNorm(hidden))    global every third layer, else a window
    hidden = hidden + Wo(gelu(x Wg) * x Wu)           x = LayerNorm(hidden): GeGLU
    ...
    last_hidden_state = LayerNorm(hidden)

A local layer's query sees the keys at most local_attention // 2 positions away. The
checkpoint fuses query, key and value into one `Wqkv` and the GLU's two halves into one `Wi`
(its first half is activated, the second scales it): the name table cuts them apart.

The task heads put their own dense + activation + LayerNorm (`head`) before the output
layer; sequence classification pools the first token or the mean of the real tokens
(`classifier_pooling`).
"""

from transformer.model import ACTIVATIONS
from transformer.recipe import BIDIRECTIONAL, Attention, Block, Embeddings, Layer, Linear, Mask, MLP, Norm, Part, \
    Recipe, Rotary

MODEL_TYPES = ("modernbert",)
PREFIX = "model."  # before the base model's names in a task model (ModernBertForMaskedLM, ...)

# ModernBertConfig's defaults.
DEFAULTS = dict(
    vocab_size=50368, hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
    intermediate_size=1152, hidden_activation="gelu", max_position_embeddings=8192,
    norm_eps=1e-5, norm_bias=False, pad_token_id=50283, attention_bias=False, mlp_bias=False,
    local_attention=128, global_attn_every_n_layers=3, decoder_bias=True, classifier_pooling="cls",
    classifier_bias=False, classifier_activation="gelu",
)
THETAS = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}  # global / local rope_theta defaults
LAYER_TYPES = ("full_attention", "sliding_attention")

# config.json settings that change the math, and the values the recipe supports (rope_scaling:
# transformers folds it into both layer types' rope_parameters; only none is supported).
OPTIONS = {"classifier_pooling": ("cls", "mean"), "rope_scaling": ({},)}

# ModernBERT's heads are its own (see head_settings); these are unused.
MASKED_LM_ACTIVATION = None
CLASSIFIER_ACTIVATION = None


def config_keys(raw):
    return {"hidden_act": "hidden_activation", "layer_norm_eps": "norm_eps"}


def _flag(read, key):
    value = read.values.get(key)
    if not isinstance(value, bool):
        read.fail(f"{key} must be true or false, found {value!r:.60}")
    return value


def _rope_thetas(read):
    """{layer type: rope theta} from rope_parameters (transformers 5's config.json) or the
    older global_rope_theta / local_rope_theta; a rope_type other than "default" is refused."""
    thetas = dict(THETAS)
    for layer_type, key in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
        if read.values.get(key) is not None:
            thetas[layer_type] = read.values[key]
    parameters = read.values.get("rope_parameters")
    if parameters is not None:
        if not isinstance(parameters, dict) or not set(parameters) <= set(LAYER_TYPES):
            read.fail(f"rope_parameters must map {' and '.join(LAYER_TYPES)} to their settings, found "
                      f"{parameters!r:.80}")
        for layer_type, settings in parameters.items():
            if not isinstance(settings, dict):
                read.fail(f"rope_parameters[{layer_type!r}] must be an object, found {settings!r:.60}")
            kind = settings.get("rope_type", "default")
            if kind != "default":
                read.fail(f"rope_parameters[{layer_type!r}] rope_type {kind!r} is not supported by modernbert; "
                          f"supported: 'default'")
            if "rope_theta" in settings:
                thetas[layer_type] = settings["rope_theta"]
    for layer_type, theta in thetas.items():
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1:
            read.fail(f"the rope theta of {layer_type} layers must be a number above 1, found {theta!r:.60}")
    return {layer_type: float(theta) for layer_type, theta in thetas.items()}


def _layer_types(read, layers):
    """Each layer's attention: layer_types when given, else global every
    global_attn_every_n_layers-th layer (layer 0 global), as ModernBertConfig does."""
    layer_types = read.values.get("layer_types")
    if layer_types is None:
        every = read.integer("global_attn_every_n_layers")
        return tuple("sliding_attention" if i % every else "full_attention" for i in range(layers))
    if not isinstance(layer_types, list) or len(layer_types) != layers or \
            not all(isinstance(kind, str) and kind in LAYER_TYPES for kind in layer_types):
        read.fail(f"layer_types must list {layers} layer types ({' or '.join(LAYER_TYPES)}), found "
                  f"{layer_types!r:.80}")
    return tuple(layer_types)


def config_fields(read):
    """No position table, no token types; the settings only ModernBERT has go to `options`."""
    layers = read.integer("num_hidden_layers")
    options = dict(
        layer_types=_layer_types(read, layers),
        local_attention=read.integer("local_attention"),
        rope_theta=_rope_thetas(read),
        norm_bias=_flag(read, "norm_bias"),
        attention_bias=_flag(read, "attention_bias"),
        mlp_bias=_flag(read, "mlp_bias"),
        decoder_bias=_flag(read, "decoder_bias"),
        classifier_bias=_flag(read, "classifier_bias"),
        classifier_pooling=read.values.get("classifier_pooling"),
        classifier_activation=read.values.get("classifier_activation"),
    )
    if not isinstance(options["classifier_activation"], str) or options["classifier_activation"] not in ACTIVATIONS:
        read.fail(f"classifier_activation {options['classifier_activation']!r:.60} is not supported; supported: "
                  f"{', '.join(ACTIVATIONS)}")
    return dict(position_padding_idx=None, type_vocab_size=0, layer_norm_eps=read.number("layer_norm_eps"),
                options=options)


def recipe(config):
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    options = config.options

    def norm(name):
        return Norm(name, hidden, eps=eps, bias=options["norm_bias"])

    def layer(i):
        layer_type = options["layer_types"][i]
        bias = options["attention_bias"]
        attention = Attention(
            query=Linear("query", hidden, hidden, bias), key=Linear("key", hidden, hidden, bias),
            value=Linear("value", hidden, hidden, bias), output=Linear("attention_output", hidden, hidden, bias),
            num_heads=config.num_attention_heads, head_dim=config.head_dim,
            positions=Rotary(theta=options["rope_theta"][layer_type]),
            mask=Mask(window=options["local_attention"]) if layer_type == "sliding_attention" else BIDIRECTIONAL)
        bias = options["mlp_bias"]
        mlp = MLP(gate=Linear("gate", hidden, inner, bias), up=Linear("up", hidden, inner, bias),
                  down=Linear("down", inner, hidden, bias), activation=config.hidden_act)
        return Layer((
            Block(attention, norm_before=None if i == 0 else norm("attention_norm")),  # layer 0: the embeddings' norm
            Block(mlp, norm_before=norm("mlp_norm")),
        ))

    return Recipe(
        embeddings=Embeddings(size=hidden, positions=None, token_types=False, norm=norm("layer_norm")),
        layers=tuple(layer(i) for i in range(config.num_hidden_layers)),
        final_norm=norm("final_norm"),
    )


def head_settings(config):
    """How ModernBERT's task heads differ from BERT's (read by transformer.heads)."""
    options = config.options
    return dict(activation=options["classifier_activation"], dense_bias=options["classifier_bias"],
                norm_bias=options["norm_bias"], decoder_bias=options["decoder_bias"], classifier_norm=True,
                pooling=options["classifier_pooling"])


NAMES = {
    "embeddings.word": "embeddings.tok_embeddings.weight",
    "embeddings.layer_norm.weight": "embeddings.norm.weight",
    "embeddings.layer_norm.bias": "embeddings.norm.bias",
    "layers.{i}.attention_norm.weight": "layers.{i}.attn_norm.weight",
    "layers.{i}.attention_norm.bias": "layers.{i}.attn_norm.bias",
    "layers.{i}.query.weight": Part("layers.{i}.attn.Wqkv.weight", 0, 3),
    "layers.{i}.query.bias": Part("layers.{i}.attn.Wqkv.bias", 0, 3),
    "layers.{i}.key.weight": Part("layers.{i}.attn.Wqkv.weight", 1, 3),
    "layers.{i}.key.bias": Part("layers.{i}.attn.Wqkv.bias", 1, 3),
    "layers.{i}.value.weight": Part("layers.{i}.attn.Wqkv.weight", 2, 3),
    "layers.{i}.value.bias": Part("layers.{i}.attn.Wqkv.bias", 2, 3),
    "layers.{i}.attention_output.weight": "layers.{i}.attn.Wo.weight",
    "layers.{i}.attention_output.bias": "layers.{i}.attn.Wo.bias",
    "layers.{i}.mlp_norm.weight": "layers.{i}.mlp_norm.weight",
    "layers.{i}.mlp_norm.bias": "layers.{i}.mlp_norm.bias",
    "layers.{i}.gate.weight": Part("layers.{i}.mlp.Wi.weight", 0, 2),  # the activated half
    "layers.{i}.gate.bias": Part("layers.{i}.mlp.Wi.bias", 0, 2),
    "layers.{i}.up.weight": Part("layers.{i}.mlp.Wi.weight", 1, 2),
    "layers.{i}.up.bias": Part("layers.{i}.mlp.Wi.bias", 1, 2),
    "layers.{i}.down.weight": "layers.{i}.mlp.Wo.weight",
    "layers.{i}.down.bias": "layers.{i}.mlp.Wo.bias",
    "final_norm.weight": "final_norm.weight",
    "final_norm.bias": "final_norm.bias",
    # heads (ModernBertForMaskedLM, ModernBertFor{Sequence,Token}Classification)
    "masked_lm.dense.weight": "head.dense.weight",
    "masked_lm.dense.bias": "head.dense.bias",
    "masked_lm.layer_norm.weight": "head.norm.weight",
    "masked_lm.layer_norm.bias": "head.norm.bias",
    "masked_lm.decoder.weight": "decoder.weight",  # used only when not tied
    "masked_lm.decoder.bias": "decoder.bias",
    "sequence_classification.dense.weight": "head.dense.weight",
    "sequence_classification.dense.bias": "head.dense.bias",
    "sequence_classification.layer_norm.weight": "head.norm.weight",
    "sequence_classification.layer_norm.bias": "head.norm.bias",
    "sequence_classification.out.weight": "classifier.weight",
    "sequence_classification.out.bias": "classifier.bias",
    "token_classification.dense.weight": "head.dense.weight",
    "token_classification.dense.bias": "head.dense.bias",
    "token_classification.layer_norm.weight": "head.norm.weight",
    "token_classification.layer_norm.bias": "head.norm.bias",
    "token_classification.out.weight": "classifier.weight",
    "token_classification.out.bias": "classifier.bias",
}
