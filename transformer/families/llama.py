"""Llama (and Mistral): the decoder most open LLMs and LLM embedders are built on.

No position table: positions enter as rotary embeddings of the queries and keys. Every
layer is pre-norm with RMSNorm (no mean taken out, no bias), the attention causal and
grouped-query (num_key_value_heads key/value heads, each serving num_attention_heads /
num_key_value_heads query heads), the MLP gated (SwiGLU); a final RMSNorm:

    hidden = hidden + CausalAttention(RMSNorm(hidden))    rotary q, k; GQA
    hidden = hidden + down(silu(gate(x)) * up(x))         x = RMSNorm(hidden)
    ...
    last_hidden_state = RMSNorm(hidden)

Mistral adds a sliding window (each query sees the `sliding_window` most recent keys). The
rotary frequencies may be rescaled for longer contexts (rope_parameters' rope_type: linear,
dynamic, llama3, yarn). `decoder_recipe` and `read_decoder` are shared with qwen.py.
"""

from transformer.recipe import (CAUSAL, Attention, Block, Embeddings, Layer, Linear, Mask, MLP, Norm, Recipe,
                                Rotary)

MODEL_TYPES = ("llama", "mistral")
PREFIX = "model."  # LlamaForCausalLM: "model.layers.0..."

# LlamaConfig's defaults; TYPE_DEFAULTS: MistralConfig's that differ.
DEFAULTS = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
    attention_bias=False, mlp_bias=False, head_dim=None, pretraining_tp=1, tie_word_embeddings=False,
    rope_theta=10000.0, sliding_window=None,
)
TYPE_DEFAULTS = {"mistral": dict(intermediate_size=14336, num_key_value_heads=8, max_position_embeddings=131072,
                                 sliding_window=4096)}
OPTIONS = {"pretraining_tp": (1,)}

MASKED_LM_ACTIVATION = None
CLASSIFIER_ACTIVATION = None

# The rope_type values transformers defines for Llama: (the keys each needs, the keys it may have).
ROPE_KINDS = {
    "default": ((), ()),
    "linear": (("factor",), ()),
    "dynamic": (("factor",), ()),
    "llama3": (("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"), ()),
    "yarn": (("factor", "original_max_position_embeddings"),
             ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate")),
}


def config_keys(raw):
    return {"layer_norm_eps": "rms_norm_eps"}


def _number(read, value, what, positive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        read.fail(f"{what} must be a {'positive ' if positive else ''}number, found {value!r:.60}")
    return float(value)


def read_rope(read, parameters=None, where="rope_parameters"):
    """(theta, scaling) from rope_parameters (transformers 5's config.json) or the older
    rope_theta / rope_scaling keys: scaling is Rotary's sorted (key, value) pairs, () for
    rope_type "default". A rope_type other than ROPE_KINDS is refused, naming it."""
    values = read.values
    if parameters is None:
        parameters = values.get("rope_parameters")
        if parameters is None:  # the older spelling
            parameters = dict(values.get("rope_scaling") or {}, rope_theta=values.get("rope_theta", 10000.0))
            where = "rope_scaling"
    if not isinstance(parameters, dict) or any(isinstance(value, dict) for value in parameters.values()):
        read.fail(f"{where} must be an object of rope settings (one for every layer), found {parameters!r:.60}")
    theta = _number(read, parameters.get("rope_theta", values.get("rope_theta", 10000.0)), f"{where} rope_theta")
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if not isinstance(kind, str) or kind not in ROPE_KINDS:
        read.fail(f"{where} rope_type {kind!r:.40} is not supported; supported: {', '.join(ROPE_KINDS)}")
    if kind == "default":
        return theta, ()
    required, optional = ROPE_KINDS[kind]
    scaling = {"rope_type": kind}
    for key in required + optional:
        value = parameters.get(key)
        if value is None:
            if key in required:
                read.fail(f"{where} rope_type {kind!r} needs {key}")
        elif key == "truncate":
            if not isinstance(value, bool):
                read.fail(f"{where} truncate must be true or false, found {value!r:.60}")
            scaling[key] = value
        else:
            scaling[key] = _number(read, value, f"{where} {key}")
    if scaling["factor"] < 1:
        read.fail(f"{where} factor must be at least 1, found {scaling['factor']}")
    return theta, tuple(sorted(scaling.items()))


def read_layer_types(read, layers, sliding_window):
    """Each layer's attention, "full_attention" or "sliding_attention": layer_types when given,
    else every layer sliding when there is a window (Mistral), full when not."""
    layer_types = read.values.get("layer_types")
    if layer_types is None:
        return ("sliding_attention" if sliding_window else "full_attention",) * layers
    kinds = ("full_attention", "sliding_attention")
    if not isinstance(layer_types, list) or len(layer_types) != layers or \
            not all(isinstance(kind, str) and kind in kinds for kind in layer_types):
        read.fail(f"layer_types must list {layers} layer types ({' or '.join(kinds)}), found {layer_types!r:.80}")
    return tuple(layer_types)


def _flag(read, key):
    value = read.values.get(key)
    if not isinstance(value, bool):
        read.fail(f"{key} must be true or false, found {value!r:.60}")
    return value


def read_decoder(read, **more):
    """The options every Llama-style decoder reads: key/value heads, head width, rope, window,
    biases; `more` adds a family's own."""
    heads = read.integer("num_attention_heads")
    kv_heads = read.values.get("num_key_value_heads")
    if kv_heads is None and read.values.get("model_type") == "mistral" and "num_key_value_heads" in read.values:
        read.fail("num_key_value_heads is null; mistral needs a number (transformers refuses null there)")
    kv_heads = heads if kv_heads is None else read.integer("num_key_value_heads")
    if heads % kv_heads:
        read.fail(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    head_dim = read.values.get("head_dim")
    if head_dim is None:
        hidden = read.integer("hidden_size")
        if hidden % heads:
            read.fail(f"hidden_size {hidden} is not divisible by num_attention_heads {heads} (and no head_dim)")
        head_dim = hidden // heads
    else:
        head_dim = read.integer("head_dim")
    if head_dim % 2:  # rotary embeddings turn pairs of dimensions
        read.fail(f"head_dim {head_dim} is odd; rotary embeddings need an even head size")
    window = read.values.get("sliding_window")
    if window is not None:
        window = read.integer("sliding_window")
    # one rope for every layer; a family reading its own per layer type (Gemma 3) passes `rope`
    theta, scaling = (None, ()) if "rope" in more else read_rope(read)
    options = dict(num_key_value_heads=kv_heads, head_dim=head_dim, rope_theta=theta, rope_scaling=scaling,
                   sliding_window=window,
                   layer_types=read_layer_types(read, read.integer("num_hidden_layers"), window),
                   attention_bias=_flag(read, "attention_bias") if "attention_bias" in read.values else False,
                   mlp_bias=_flag(read, "mlp_bias") if "mlp_bias" in read.values else False, **more)
    return dict(position_padding_idx=None, type_vocab_size=0, layer_norm_eps=read.number("layer_norm_eps"),
                options=options)


def config_fields(read):
    return read_decoder(read)


def decoder_recipe(config, qkv_bias=None, output_bias=None, query_key_norm=False):
    """The Llama-style recipe for `config` (its options from read_decoder): qkv_bias /
    output_bias override attention_bias for the query/key/value and output linears (Qwen2:
    biases on q, k, v only); query_key_norm: an RMSNorm over each head's query and key
    before the rotation (Qwen3)."""
    options = config.options
    hidden, inner, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
    heads, kv_heads, head_dim = config.num_attention_heads, options["num_key_value_heads"], options["head_dim"]
    qkv_bias = options["attention_bias"] if qkv_bias is None else qkv_bias
    output_bias = options["attention_bias"] if output_bias is None else output_bias
    rotary = Rotary(theta=options["rope_theta"], scaling=options["rope_scaling"])

    def rms_norm(name, size=hidden):
        return Norm(name, size, kind="rms_norm", eps=eps, bias=False)

    def layer(i):
        window = options["sliding_window"] if options["layer_types"][i] == "sliding_attention" else None
        attention = Attention(
            query=Linear("query", hidden, heads * head_dim, qkv_bias),
            key=Linear("key", hidden, kv_heads * head_dim, qkv_bias),
            value=Linear("value", hidden, kv_heads * head_dim, qkv_bias),
            output=Linear("attention_output", heads * head_dim, hidden, output_bias),
            num_heads=heads, head_dim=head_dim, num_kv_heads=kv_heads, positions=rotary,
            mask=CAUSAL if window is None else Mask(causal=True, window=window),
            query_norm=rms_norm("query_norm", head_dim) if query_key_norm else None,
            key_norm=rms_norm("key_norm", head_dim) if query_key_norm else None)
        bias = options["mlp_bias"]
        mlp = MLP(gate=Linear("gate", hidden, inner, bias), up=Linear("up", hidden, inner, bias),
                  down=Linear("down", inner, hidden, bias), activation=config.hidden_act)
        return Layer((Block(attention, norm_before=rms_norm("attention_norm")),
                      Block(mlp, norm_before=rms_norm("mlp_norm"))))

    return Recipe(
        embeddings=Embeddings(size=hidden, positions=None, token_types=False, norm=None),
        layers=tuple(layer(i) for i in range(config.num_hidden_layers)),
        final_norm=rms_norm("final_norm"),
    )


def recipe(config):
    return decoder_recipe(config)


NAMES = {
    "embeddings.word": "embed_tokens.weight",
    "layers.{i}.attention_norm.weight": "layers.{i}.input_layernorm.weight",
    "layers.{i}.query.weight": "layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.query.bias": "layers.{i}.self_attn.q_proj.bias",
    "layers.{i}.key.weight": "layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.key.bias": "layers.{i}.self_attn.k_proj.bias",
    "layers.{i}.value.weight": "layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.value.bias": "layers.{i}.self_attn.v_proj.bias",
    "layers.{i}.query_norm.weight": "layers.{i}.self_attn.q_norm.weight",
    "layers.{i}.key_norm.weight": "layers.{i}.self_attn.k_norm.weight",
    "layers.{i}.attention_output.weight": "layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.attention_output.bias": "layers.{i}.self_attn.o_proj.bias",
    "layers.{i}.mlp_norm.weight": "layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.gate.weight": "layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.gate.bias": "layers.{i}.mlp.gate_proj.bias",
    "layers.{i}.up.weight": "layers.{i}.mlp.up_proj.weight",
    "layers.{i}.up.bias": "layers.{i}.mlp.up_proj.bias",
    "layers.{i}.down.weight": "layers.{i}.mlp.down_proj.weight",
    "layers.{i}.down.bias": "layers.{i}.mlp.down_proj.bias",
    "final_norm.weight": "norm.weight",
}
