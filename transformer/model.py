"""The encoder's math in plain NumPy: token ids -> contextual vectors.

Read top to bottom, this file is the whole forward pass of an encoder:

    embed          word + token type + position vectors, LayerNorm (+ ELECTRA's projection)
    attention      each token mixes in the others, weighted by softmax(q . k / sqrt(d)); its
                   positions a relative bias (MPNet, T5) or rotated queries and keys (rotary:
                   ModernBERT), its keys all or a sliding window of them
    feed_forward   a two-layer MLP applied to every token on its own, plain or gated (GLU)
    encoder_layer  the layer's blocks in order, each a sublayer wrapped in a residual and norms
    encoder_forward   embed, then num_hidden_layers encoder layers

What a model computes is its recipe (`config.recipe`, see `transformer.recipe`): for BERT,
every layer is two blocks,

    hidden = LayerNorm(hidden + SelfAttention(hidden))
    hidden = LayerNorm(hidden + FeedForward(hidden))

and `encoder_layer` runs exactly that when given BERT's layer recipe. Every function is pure:
arrays in, arrays out, float32 throughout. The fast Numba path
(`transformer.numba_backend.forward`) computes the same thing on the same parameters.

Parameters (`params`)
---------------------
`transformer.loading.load_params` turns a checkpoint into this nested dict of C-contiguous
float32 arrays. Linear weights are stored [in, out] (transposed once at load from PyTorch's
[out, in]), so a linear layer is `x @ weight + bias`. A BERT checkpoint's:

    params = {
      "embeddings": {                            # these keys always; None where a family has none
        "word":        [vocab_size, embedding_size]
        "position":    [max_position_embeddings, embedding_size]    or None (rotary positions:
                       ModernBERT, NomicBERT, Jina v3)
        "token_type":  [type_vocab_size, embedding_size]    or None (DistilBERT, MPNet, ModernBERT)
        "layer_norm":  {"weight": [embedding_size], "bias": [embedding_size] or None (ModernBERT)}
        "projection":  {"weight": [embedding_size, hidden_size], "bias": [hidden_size]}
                       or None (only ELECTRA with embedding_size != hidden_size has one)
      },
      "layers": [                                # num_hidden_layers dicts, in order; the keys
        {                                        # are the names in the layer's recipe
          "query":                {"weight": [hidden, hidden], "bias": [hidden]},
          "key":                  {"weight": [hidden, hidden], "bias": [hidden]},
          "value":                {"weight": [hidden, hidden], "bias": [hidden]},
          "attention_output":     {"weight": [hidden, hidden], "bias": [hidden]},
          "attention_layer_norm": {"weight": [hidden], "bias": [hidden]},
          "intermediate":         {"weight": [hidden, intermediate], "bias": [intermediate]},
          "output":               {"weight": [intermediate, hidden], "bias": [hidden]},
          "output_layer_norm":    {"weight": [hidden], "bias": [hidden]},
        },
        ...
      ],
      "pooler": {"weight": [hidden, hidden], "bias": [hidden]}   or None (no pooler in the file)
    }

plus one entry per model-level table the recipe names: MPNet's and T5's
"relative_attention_bias" [relative_attention_num_buckets, num_attention_heads], shared by
all layers; DeBERTa's "relative_embeddings" [2 * span, hidden] (and its "relative_layer_norm"), which every
layer projects through its key and query linears (`disentangled_bias`). A bias-free
linear's "bias" is None.

The query/key/value columns are laid out head by head: columns [h*head_dim, (h+1)*head_dim)
belong to head h (that is how `split_heads` reads them).

Inputs and outputs of `encoder_forward`
---------------------------------------
input_ids int64 [batch, seq]; attention_mask int64 [batch, seq] of 1 (token) / 0 (padding);
token_type_ids int64 [batch, seq] (ignored by families without token types). It returns
`(last_hidden_state, hidden_states, attentions)`: float32 [batch, seq, hidden]; a tuple of
num_hidden_layers + 1 arrays [batch, seq, hidden] (the embedding output, then each layer's
output) or None; a tuple of num_hidden_layers arrays [batch, heads, seq, seq] of attention
probabilities or None. `check_inputs` turns user input into those arrays or raises a clear
error; `transformer.encoder.Encoder` calls it before either backend.
"""

from __future__ import annotations

import math

import numpy as np

from transformer.recipe import AbsolutePositions, Attention, Disentangled, MLP, RelativeBuckets, Rotary

# The additive mask value for padding keys. Adding the most negative float32 (not -inf)
# drives a padded key's softmax weight to exactly 0 while keeping every score finite: a row
# whose keys are all padding then gets a uniform softmax instead of NaN (0/0).
MASK_VALUE = np.finfo(np.float32).min


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------
def linear(x, weight, bias):
    """x @ weight + bias. x [..., in], weight [in, out], bias [out] or None -> [..., out].

    A weight of dtype uint16 holds bfloat16 bits (a model loaded with precision="bf16", see
    `to_bf16`): x is then rounded to bfloat16 too, and the products are summed in float32."""
    # One 2-D matrix product over all tokens: NumPy runs a 3-D @ 2-D product as one BLAS call
    # per batch row, about half as fast.
    flat = x.reshape(-1, x.shape[-1])  # [..., in] -> [tokens, in]
    if weight.dtype == np.uint16:
        # A bfloat16 times a bfloat16 fits float32's 24-bit significand: each product is exact.
        flat, weight = round_to_bf16(flat), from_bf16(weight)
    out = flat @ weight if bias is None else flat @ weight + bias
    return out.reshape(*x.shape[:-1], weight.shape[1])  # -> [..., out]


def round_to_bf16(x):
    """float32 -> float32 rounded to bfloat16 (8 significant bits, float32's exponent range):
    the nearest bfloat16, ties to even. [...] -> [...].

    bfloat16 is the top 16 bits of a float32, so rounding adds just under half of the dropped
    low 16 bits (0x7FFF, plus 1 when the kept part is odd: ties go to even), then clears them.
    >>> round_to_bf16(np.float32([1.00390625, 1.01171875, 3.14159265]))  # 1 + 2^-8 is a tie
    array([1.      , 1.015625, 3.140625], dtype=float32)
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    odd = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + odd) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), rounded)  # a NaN's low bits could carry into its sign


def to_bf16(x):
    """float32 [...] -> uint16 [...]: the bits of the nearest bfloat16 (`round_to_bf16`)."""
    return (round_to_bf16(x).view(np.uint32) >> 16).astype(np.uint16)


def from_bf16(bits):
    """uint16 [...] of bfloat16 bits -> float32 [...], exactly (the bits become the top half)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def layer_norm(x, weight, bias, eps):
    """Normalise the last axis to mean 0, variance 1, then scale and shift.

    x [..., d] float32, weight [d], bias [d] or None (a bias-free LayerNorm: ModernBERT) ->
    [..., d]. The variance is the biased one (divide by d, not d - 1) and eps sits inside the
    square root, as in torch.nn.LayerNorm; at 1e-5 parity both details matter.
    """
    mean = x.mean(axis=-1, keepdims=True)  # [..., d] -> [..., 1]
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)  # [..., d] -> [..., 1]
    scaled = centered / np.sqrt(variance + np.float32(eps)) * weight
    return scaled if bias is None else scaled + bias


def rms_norm(x, weight, eps, offset=0.0):
    """Scale the last axis to root-mean-square 1, then by (offset + weight): Llama's RMSNorm
    (offset 0), Gemma's (1 + w) (offset 1). No mean is taken out and there is no bias.

    x [..., d] float32, weight [d] -> [..., d]. eps sits inside the square root, as in
    `transformers`' LlamaRMSNorm.
    """
    mean_square = (x * x).mean(axis=-1, keepdims=True)  # [..., d] -> [..., 1]
    return x / np.sqrt(mean_square + np.float32(eps)) * (np.float32(offset) + weight)


def norm(spec, params, x):
    """The normalisation `spec` (a recipe Norm) with its parameters params[spec.name].
    float32 [..., spec.size] -> [..., spec.size]."""
    if spec.kind == "rms_norm":
        return rms_norm(x, params[spec.name]["weight"], spec.eps, spec.offset)
    bias = params[spec.name]["bias"]
    return layer_norm(x, params[spec.name]["weight"], np.float32(0.0) if bias is None else bias, eps=spec.eps)


def softmax(x):
    """Softmax over the last axis, float32. Subtracting the row maximum first keeps exp()
    from overflowing; it does not change the result."""
    shifted = x - x.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=-1, keepdims=True)


# --- activations ------------------------------------------------------------------------
def _erfc(x):
    """The complementary error function, float64 in and out, relative error < 1.2e-7.

    NumPy has no erf. This is the Chebyshev fit from Numerical Recipes (`erfcc`); evaluated
    in float64 it keeps GELU within about two float32 ulps of the exact value everywhere
    (torch's own vectorised erf is a polynomial approximation of the same accuracy).
    """
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc_abs = t * np.exp(poly)
    return np.where(x >= 0, erfc_abs, 2.0 - erfc_abs)


def erf(x):
    """The error function, elementwise, float32 [...] -> float32 [...]."""
    return (1.0 - _erfc(np.asarray(x, dtype=np.float64))).astype(np.float32)


def gelu(x):
    """Exact GELU, x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))): `hidden_act="gelu"`.

    Written as 0.5 * x * erfc(-x / sqrt(2)) (the same number) so that large negative x keeps
    its tiny value instead of cancelling 1 + erf to zero. float32 [...] -> float32 [...].
    """
    x64 = x.astype(np.float64)
    return (0.5 * x64 * _erfc(-x64 / math.sqrt(2.0))).astype(np.float32)


def gelu_tanh(x):
    """The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`, `gelu_python_tanh`):
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))."""
    inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def gelu_fast(x):
    """`gelu_fast`: the tanh approximation with the constants folded differently,
    0.5 * x * (1 + tanh(0.7978845608 * x * (1 + 0.044715 * x^2)))."""
    inner = x * np.float32(0.7978845608) * (np.float32(1.0) + np.float32(0.044715) * x * x)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def sigmoid(x):
    """1 / (1 + exp(-x)), float32; exp overflowing to inf for very negative x gives exactly 0."""
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def quick_gelu(x):
    """`quick_gelu`: x * sigmoid(1.702 * x)."""
    return x * sigmoid(np.float32(1.702) * x)


def relu(x):
    """max(x, 0)."""
    return np.maximum(x, np.float32(0.0))


def silu(x):
    """SiLU / swish: x * sigmoid(x)."""
    return x * sigmoid(x)


# config.hidden_act -> the function: the one list of activation names (`transformers`' ACT2FN
# names). The kernels compute each function under its name here (`gelu`, `gelu_tanh`, ...).
ACTIVATIONS = {
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_python_tanh": gelu_tanh,
    "gelu_fast": gelu_fast,
    "quick_gelu": quick_gelu,
    "relu": relu,
    "silu": silu,
    "swish": silu,
    "tanh": np.tanh,
}


def activation(name):
    """The activation function called `name` in config.json (`hidden_act`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------
def position_ids(config, input_ids):
    """The row of the position table each token reads. int64 [batch, seq] -> [batch, seq].

    The recipe's AbsolutePositions says which: padding_idx None (BERT), 0, 1, ..., seq-1 for
    every sequence; an int p (RoBERTa, MPNet), fairseq counts real tokens from p + 1 and gives padding
    tokens p itself, so with p = 1 the ids [0, 5, 7, 1, 1] get positions [2, 3, 4, 1, 1].
    Padding is recognised by the token id, not by the attention mask, as `transformers` does.
    """
    batch, seq = input_ids.shape
    padding_idx = config.recipe.embeddings.positions.padding_idx
    if padding_idx is None:
        return np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq))  # [seq] -> [batch, seq]
    is_token = (input_ids != padding_idx).astype(np.int64)  # [batch, seq] of 0/1
    return np.cumsum(is_token, axis=1) * is_token + padding_idx  # [batch, seq]


def embed(embeddings, config, input_ids, token_type_ids, attention_mask=None):
    """Token ids -> the first hidden states. int64 [batch, seq] -> float32 [batch, seq, hidden].

    word vector + token-type vector (when the model has them) + position vector, LayerNorm,
    then ELECTRA's projection from embedding_size up to hidden_size when there is one: the
    steps of the recipe's `Embeddings`. DeBERTa projects before the norm (`project_first`)
    and zeroes the padding tokens' vectors (`zero_padding`, by attention_mask [batch, seq]).
    """
    spec = config.recipe.embeddings
    hidden = embeddings["word"][input_ids]  # [batch, seq] -> [batch, seq, embedding_size]
    if spec.token_types:
        hidden = hidden + embeddings["token_type"][token_type_ids]
    if spec.positions is not None:
        hidden = hidden + embeddings["position"][position_ids(config, input_ids)]
    if spec.scale is not None:  # Gemma: word vectors * sqrt(hidden_size)
        hidden = hidden * np.float32(spec.scale)
    if spec.projection is not None and spec.project_first:
        hidden = linear(hidden, **embeddings[spec.projection.name])  # [b, s, embedding_size] -> [b, s, hidden]
    if spec.norm is not None:
        hidden = norm(spec.norm, embeddings, hidden)
    if spec.projection is not None and not spec.project_first:
        hidden = linear(hidden, **embeddings[spec.projection.name])  # [b, s, embedding_size] -> [b, s, hidden]
    if spec.zero_padding and attention_mask is not None:
        hidden = hidden * attention_mask[:, :, None].astype(np.float32)  # [batch, seq] -> [batch, seq, 1]
    return hidden


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------
def attention_mask_bias(attention_mask, queries=False):
    """1/0 mask -> what is added to attention scores: 0 for tokens, MASK_VALUE for padding.

    int [batch, seq] -> float32 [batch, 1, 1, seq], broadcasting over heads and queries:
    a padding token is never attended *to*; its own row is still computed (and ignored).
    queries (DeBERTa's mask of query and key): [batch, 1, seq, seq], a padding token's row
    masked too, so every score in it is MASK_VALUE (float32 absorbs the score added to it)
    and it attends uniformly.
    """
    keep = attention_mask[:, None, None, :] != 0  # [batch, seq] -> [batch, 1, 1, seq]
    if queries:
        keep = keep & (attention_mask[:, None, :, None] != 0)  # -> [batch, 1, seq, seq]
    return np.where(keep, np.float32(0.0), MASK_VALUE).astype(np.float32)


def relative_position_buckets(seq_len, num_buckets=32, max_distance=128):
    """MPNet's and T5's bucket for each (query, key) pair. -> int64 [seq, seq].

    Half the buckets are for keys before the query, half for keys after. Within a half,
    distances below num_buckets/4 get a bucket each; longer ones share logarithmically wider
    buckets up to max_distance. The float32 arithmetic mirrors `transformers` so that bucket
    boundaries fall on the same distances.
    """
    query = np.arange(seq_len, dtype=np.int64)[:, None]  # [seq, 1]
    key = np.arange(seq_len, dtype=np.int64)[None, :]  # [1, seq]
    distance = query - key  # [seq, seq]: positive when the key comes before the query
    half = num_buckets // 2
    buckets = (distance < 0).astype(np.int64) * half  # keys after the query use the upper half
    distance = np.abs(distance)
    max_exact = half // 2
    # max(distance, 1) only avoids log(0); those entries take the exact branch below.
    log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
    scaled = log_ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    far = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return buckets + np.where(distance < max_exact, distance, far)  # [seq, seq]


def relative_position_bias(table, seq_len, num_buckets=32, max_distance=128):
    """MPNet's and T5's learned bias added to every layer's attention scores (T5 stores the
    table in its first layer only; every layer reads it).

    table float32 [rows, heads] (rows >= num_buckets) -> float32 [1, heads, seq, seq].
    """
    buckets = relative_position_buckets(seq_len, num_buckets, max_distance)  # [seq, seq]
    bias = table[buckets]  # [seq, seq] -> [seq, seq, heads]
    return np.ascontiguousarray(bias.transpose(2, 0, 1))[None]  # -> [1, heads, seq, seq]


def rotary_inverse_frequencies(rotary, head_dim):
    """How fast each rotating pair of a head's dimensions turns: float32 [dims // 2], pair i
    by theta^(-2i / dims) radians per position (dims: rotary.dims, else head_dim), then
    rescaled by rotary.scaling's rope_type (`rope_scaling`).

    Rounded as `transformers` rounds it (theta ** (2i / dims) to float32, then 1 / that in
    float32; torch's pow is within one ulp of this correctly rounded one): at position 8192
    one float32 ulp of a frequency can move an angle by ~5e-4 radians, so each rounding step
    has to be the reference's."""
    dims = head_dim if rotary.dims is None else rotary.dims
    exponents = np.arange(0, dims, 2).astype(np.float32) / np.float32(dims)  # [dims // 2]
    powers = (np.float64(rotary.theta) ** exponents.astype(np.float64)).astype(np.float32)
    return rope_scaling(dict(rotary.scaling), rotary.theta, dims, powers)  # [dims // 2]


# The rope_type values `rope_scaling` computes.
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")


def rope_scaling(scaling, theta, dims, powers):
    """Rotary frequencies stretched for contexts longer than the model was trained on, by
    `transformers`' rope_type (float32 throughout, as there):

      linear   every frequency / factor (positions interpolated: position p turns as p / factor)
      dynamic  unchanged up to max_position_embeddings (longer inputs are refused here)
      llama3   long wavelengths (> original context / low_freq_factor) / factor, short ones
               (< original context / high_freq_factor) kept, a smooth blend between
      yarn     per pair a blend of interpolated (/ factor) and original frequencies by a
               linear ramp over the pairs between the beta_fast and beta_slow rotation
               counts; the angles' cos and sin are then scaled (`rope_attention_factor`)

    scaling: dict(Rotary.scaling) ({} or with "rope_type"); theta, dims: the Rotary's; powers:
    theta ** (2i / dims), float32 [dims // 2] -> the inverse frequencies, float32 [dims // 2]."""
    inverse_frequencies = np.float32(1.0) / powers
    kind = scaling.get("rope_type", "default")
    if kind in ("default", "dynamic"):
        return inverse_frequencies
    if kind == "linear":
        return inverse_frequencies / np.float32(scaling["factor"])
    if kind == "llama3":
        factor, low, high = (np.float32(scaling[key]) for key in ("factor", "low_freq_factor", "high_freq_factor"))
        context = scaling["original_max_position_embeddings"]
        low_wavelength, high_wavelength = context / scaling["low_freq_factor"], context / scaling["high_freq_factor"]
        wavelength = np.float32(2 * math.pi) / inverse_frequencies  # [dims // 2]
        scaled = np.where(wavelength > np.float32(low_wavelength), inverse_frequencies / factor, inverse_frequencies)
        smooth = (np.float32(context) / wavelength - low) / (high - low)
        smoothed = (np.float32(1.0) - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelength < np.float32(high_wavelength)) & ~(wavelength > np.float32(low_wavelength))
        return np.where(medium, smoothed, scaled).astype(np.float32)
    if kind == "yarn":
        factor = scaling["factor"]
        context = scaling["original_max_position_embeddings"]
        fast, slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

        def correction(rotations):  # the pair whose wavelength turns `rotations` times over the context
            return dims * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low, high = correction(fast), correction(slow)
        if scaling.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dims - 1)
        if low == high:
            high += 0.001  # as transformers: no division by zero
        ramp = np.clip((np.arange(dims // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
        extrapolation = np.float32(1.0) - ramp.astype(np.float32)  # [dims // 2]: 1 keeps the original frequency
        interpolated = np.float32(1.0) / (np.float32(factor) * powers)
        return (interpolated * (np.float32(1.0) - extrapolation) + inverse_frequencies * extrapolation).astype(np.float32)
    raise ValueError(f"unknown rope_type {kind!r}")


def rope_attention_factor(scaling):
    """What yarn multiplies the rotary cos and sin by (1 for the other kinds):
    0.1 ln(factor) + 1, or attention_factor, or the mscale / mscale_all_dim ratio."""
    if scaling.get("rope_type") != "yarn":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return scaling["attention_factor"]

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    factor = scaling["factor"]
    if scaling.get("mscale") and scaling.get("mscale_all_dim"):
        return mscale(factor, scaling["mscale"]) / mscale(factor, scaling["mscale_all_dim"])
    return mscale(factor)


def rotary_angles(rotary, head_dim, positions):
    """cos and sin of each position's rotation angles (position * frequency, in float32).
    int [...] positions -> (cos, sin), each float32 [..., dims // 2]."""
    angles = positions[..., None].astype(np.float32) * rotary_inverse_frequencies(rotary, head_dim)  # [..., dims // 2]
    # float64 cos / sin rounded once: the correctly rounded float32 value
    cos = np.cos(angles.astype(np.float64)).astype(np.float32)
    sin = np.sin(angles.astype(np.float64)).astype(np.float32)
    factor = rope_attention_factor(dict(rotary.scaling))
    if factor != 1.0:
        cos, sin = cos * np.float32(factor), sin * np.float32(factor)
    return cos, sin


def apply_rotary(x, cos, sin):
    """Rotary position embedding: rotate each pair (x_i, x_{i + half}) of a head's first
    2 * half dimensions by its position's angle i (the halves layout of GPT-NeoX, Llama,
    ModernBERT); dimensions past them pass through (partial rotary). After this, q . k
    depends on the positions only through their difference.

    x float32 [batch, heads, seq, head_dim]; cos, sin [seq, half] -> [batch, heads, seq, head_dim].
    """
    half = cos.shape[-1]
    first, second, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]  # [..., half] each, rest
    return np.concatenate((first * cos - second * sin, second * cos + first * sin, rest), axis=-1)


def sliding_window_bias(seq_len, window):
    """The local attention of ModernBERT: a query sees the keys at most window // 2 positions
    away on either side. -> float32 [seq, seq]: 0 inside the window, MASK_VALUE outside."""
    position = np.arange(seq_len)
    distance = np.abs(position[:, None] - position[None, :])  # [seq, seq]
    return np.where(distance <= window // 2, np.float32(0.0), MASK_VALUE).astype(np.float32)


def log_bucket_positions(distance, buckets, max_distance):
    """DeBERTa's bucket for each relative distance: int64 [...] -> int64 [...].

    Distances up to buckets / 2 either way keep their value; longer ones share
    logarithmically wider buckets, sign kept, the last (+-(buckets / 2 + ...)) reached at
    max_distance - 1. float32 arithmetic as `transformers`' make_log_bucket_position, so
    that bucket edges fall on the same distances: e.g. buckets 256, max_distance 512 gives
    128 -> 128, 129 -> 129, 200 -> 173, 511 -> 255.
    """
    mid = buckets // 2
    sign = np.sign(distance)
    near = (distance < mid) & (distance > -mid)
    size = np.where(near, mid - 1, np.abs(distance))  # the near ones take the exact branch below
    # Both logarithms through one np.log call: its vector and scalar paths may differ in the
    # last bit, and at size = max_distance - 1 the ratio must be exactly 1.
    logs = np.log(np.append(size.reshape(-1).astype(np.float32) / np.float32(mid),
                            np.float32((max_distance - 1) / mid)))
    ratio = (logs[:-1] / logs[-1]).reshape(size.shape)
    far = np.ceil(ratio * np.float32(mid - 1)) + np.float32(mid)  # float32 [...]
    return np.where(size <= mid, distance, (far * sign).astype(np.int64))


def relative_rows(scheme, distance):
    """The row of DeBERTa's relative-embedding table (a Disentangled scheme) for each distance:
    int64 [...] -> int64 [...]. The distance, log-bucketed when scheme.buckets > 0, shifted
    by scheme.span and clipped into the table's 2 * span rows."""
    if scheme.buckets > 0:
        distance = log_bucket_positions(distance, scheme.buckets, scheme.max_distance)
    return np.clip(distance + scheme.span, 0, 2 * scheme.span - 1)


def relative_position_rows(scheme, seq_len):
    """The row of DeBERTa's relative-embedding table for each (query i, key j): int64 [seq, seq]."""
    query = np.arange(seq_len, dtype=np.int64)[:, None]  # [seq, 1]
    key = np.arange(seq_len, dtype=np.int64)[None, :]  # [1, seq]
    return relative_rows(scheme, query - key)  # distance i - j [seq, seq] -> rows [seq, seq]


def relative_embeddings(scheme, params):
    """DeBERTa's relative-embedding table as every layer reads it: float32 [2 * span, hidden],
    LayerNorm-ed when the scheme has a norm (norm_rel_ebd "layer_norm")."""
    table = params[scheme.table]  # [rows, hidden]
    return table if scheme.norm is None else norm(scheme.norm, params, table)


def disentangled_bias(layer, spec, query, key, table, rows):
    """DeBERTa's position terms of the attention scores: content-to-position (c2p) and
    position-to-content (p2c), each times spec.scale.

    query, key float32 [batch, heads, seq, head_dim]; table [2 * span, hidden] (relative_embeddings);
    rows int64 [seq, seq] (relative_position_rows). -> float32 [batch, heads, seq, seq]:
        c2p[i, j] = q_i . pk[rows[i, j]],   pk = the table through the key linear (or position_key)
        p2c[i, j] = k_j . pq[rows[i, j]],   pq = the table through the query linear (or position_query)
    (p2c reads row rows[i, j] for key j: DeBERTa's bucket is odd, so -bucket(j - i) = bucket(i - j)).
    """
    scheme = spec.positions
    scale = np.float32(spec.scale)
    heads = spec.num_heads
    batch, _, seq, _ = query.shape
    bias = np.zeros((batch, heads, seq, seq), dtype=np.float32)
    if scheme.c2p:
        projection = spec.key if scheme.share_key else scheme.position_key
        position_key = split_heads(linear(table[None], **layer[projection.name]), heads)  # -> [1, heads, rows, hd]
        c2p = query @ position_key.transpose(0, 1, 3, 2)  # -> [batch, heads, seq, 2 * span]
        c2p = np.take_along_axis(c2p, np.broadcast_to(rows, (batch, heads, seq, seq)), axis=-1)  # -> [b, h, seq, seq]
        bias = bias + c2p * scale
    if scheme.p2c:
        projection = spec.query if scheme.share_key else scheme.position_query
        position_query = split_heads(linear(table[None], **layer[projection.name]), heads)  # -> [1, heads, rows, hd]
        p2c = key @ position_query.transpose(0, 1, 3, 2)  # -> [batch, heads, seq_k, 2 * span]
        p2c = np.take_along_axis(p2c, np.broadcast_to(rows.T, (batch, heads, seq, seq)), axis=-1)  # [b, h, k, q]
        bias = bias + p2c.transpose(0, 1, 3, 2) * scale  # -> [batch, heads, seq_q, seq_k]
    return bias


def causal_bias(seq_len, window=None):
    """A decoder's mask: query i sees keys 0..i, its left context only, so a token's vector is
    the same whatever comes after it (the model was trained to predict the next token, which
    it must not see). A window keeps only the `window` most recent of those, i - window + 1
    .. i (Mistral, Gemma 3's local layers). -> float32 [seq, seq]: 0 where seen, MASK_VALUE not.

        causal, seq 4:   0 M M M      causal, window 2:   0 M M M
                         0 0 M M                          0 0 M M
                         0 0 0 M                          M 0 0 M
                         0 0 0 0                          M M 0 0
    """
    query = np.arange(seq_len)[:, None]  # [seq, 1]
    key = np.arange(seq_len)[None, :]  # [1, seq]
    seen = key <= query  # [seq, seq]: the lower triangle
    if window is not None:
        seen &= query - key < window
    return np.where(seen, np.float32(0.0), MASK_VALUE).astype(np.float32)


def split_heads(x, num_heads):
    """[batch, seq, hidden] -> [batch, heads, seq, head_dim]; head h owns columns
    h*head_dim ... (h+1)*head_dim - 1."""
    batch, seq, hidden = x.shape
    x = x.reshape(batch, seq, num_heads, hidden // num_heads)  # -> [batch, seq, heads, head_dim]
    return x.transpose(0, 2, 1, 3)  # -> [batch, heads, seq, head_dim]


def merge_heads(x):
    """[batch, heads, seq, head_dim] -> [batch, seq, hidden], the inverse of split_heads."""
    batch, heads, seq, head_dim = x.shape
    x = x.transpose(0, 2, 1, 3)  # -> [batch, seq, heads, head_dim]
    return x.reshape(batch, seq, heads * head_dim)  # -> [batch, seq, hidden]


def attention(query, key, value, mask_bias, position_bias=None, scale=None):
    """Scaled dot-product attention, every head at once.

    query, key, value float32 [batch, heads, seq, head_dim]; mask_bias [batch, 1, 1, seq]
    (from attention_mask_bias) or [batch, 1, seq, seq] (a causal mask, a sliding window, or
    DeBERTa's mask of queries); position_bias None or [1, heads, seq, seq] (MPNet) or
    [batch, heads, seq, seq] (DeBERTa); scale: the factor on q . k (None: 1 / sqrt(head_dim)).
    Returns (context [batch, heads, seq, head_dim], probabilities [batch, heads, seq, seq]).
    The bias and mask are added before the softmax, in float32, as the reference does.
    """
    head_dim = query.shape[-1]
    scores = query @ key.transpose(0, 1, 3, 2)  # -> [batch, heads, seq_q, seq_k]
    # Dividing by sqrt(head_dim) keeps the scores' variance near 1 whatever the head width,
    # so the softmax does not saturate.
    scores = scores * np.float32(1.0 / math.sqrt(head_dim) if scale is None else scale)
    if position_bias is not None:
        scores = scores + position_bias
    scores = scores + mask_bias
    probabilities = softmax(scores)  # [batch, heads, seq_q, seq_k], rows sum to 1
    context = probabilities @ value  # -> [batch, heads, seq_q, head_dim]
    return context, probabilities


def self_attention(layer, spec, hidden, mask_bias, position_input=None):
    """Multi-head self-attention with its output projection (no residual yet).

    layer: the layer's params; spec: its recipe's Attention (which params, how many heads,
    its positions and mask). hidden float32 [batch, seq, hidden]; mask_bias [batch, 1, 1, seq];
    position_input: what spec.positions needs (`position_inputs`): a bias [1, heads, seq, seq]
    (RelativeBuckets), (cos, sin) [seq, dims // 2] (Rotary), or the pair
    (relative_embeddings, relative_position_rows) (DeBERTa's Disentangled).
    -> (output [batch, seq, hidden], probabilities [batch, heads, seq, seq]).
    """
    heads, kv_heads = spec.num_heads, spec.kv_heads
    query = split_heads(linear(hidden, **layer[spec.query.name]), heads)  # -> [batch, heads, seq, head_dim]
    key = split_heads(linear(hidden, **layer[spec.key.name]), kv_heads)  # -> [batch, kv_heads, seq, head_dim]
    value = split_heads(linear(hidden, **layer[spec.value.name]), kv_heads)  # -> [batch, kv_heads, seq, head_dim]
    if spec.query_norm is not None:  # Qwen3, Gemma 3: each head's query and key normalised on its own
        query = norm(spec.query_norm, layer, query)
        key = norm(spec.key_norm, layer, key)
    position_bias = None
    if isinstance(spec.positions, Rotary):
        cos, sin = position_input
        query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
    elif isinstance(spec.positions, Disentangled):
        position_bias = disentangled_bias(layer, spec, query, key, *position_input)  # -> [b, h, seq, seq]
    elif spec.positions is not None:
        position_bias = position_input
    # min, not +: a padded key outside the pattern stays MASK_VALUE (a sum would be -inf)
    if spec.mask.causal:
        mask_bias = np.minimum(mask_bias, causal_bias(hidden.shape[1], spec.mask.window))  # -> [b, 1, s, s]
    elif spec.mask.window is not None:
        mask_bias = np.minimum(mask_bias, sliding_window_bias(hidden.shape[1], spec.mask.window))  # -> [b, 1, s, s]
    if kv_heads != heads:
        # Grouped-query attention: query heads g * group .. (g + 1) * group - 1 share key/value
        # head g (the kernels read it in place; here it is repeated to read plainly).
        group = heads // kv_heads
        key = np.repeat(key, group, axis=1)  # [batch, kv_heads, seq, head_dim] -> [batch, heads, seq, head_dim]
        value = np.repeat(value, group, axis=1)  # [batch, kv_heads, seq, head_dim] -> [batch, heads, seq, head_dim]
    context, probabilities = attention(query, key, value, mask_bias, position_bias, spec.scale)
    output = linear(merge_heads(context), **layer[spec.output.name])  # -> [batch, seq, hidden]
    return output, probabilities


def feed_forward(layer, spec, hidden):
    """The per-token MLP (no residual yet). float32 [batch, seq, hidden] -> [batch, seq, hidden].

    Plain (BERT): down(act(up(hidden))). Gated, a GLU (spec.gate; ModernBERT's GeGLU,
    Llama's SwiGLU): down(act(gate(hidden)) * up(hidden)), the activated half scaling the
    other element by element. layer: the layer's params; spec: its recipe's MLP.
    """
    inner = linear(hidden, **layer[spec.up.name])  # [b, s, hidden] -> [b, s, intermediate]
    if spec.gate is None:
        inner = activation(spec.activation)(inner)
    else:
        gate = linear(hidden, **layer[spec.gate.name])  # [b, s, hidden] -> [b, s, intermediate]
        inner = activation(spec.activation)(gate) * inner
    return linear(inner, **layer[spec.down.name])  # [b, s, intermediate] -> [b, s, hidden]


def encoder_layer(layer, layer_recipe, hidden, mask_bias, position_inputs=None):
    """One transformer layer: the blocks of `layer_recipe` (a recipe Layer) in order, each

        x = norm_before(hidden)               (when the block has one: pre-norm)
        x = sublayer(x)                       self_attention or feed_forward
        x = norm_after(x)                     (when the block has one: Gemma 3)
        hidden = hidden + x                   the residual
        hidden = norm_after_residual(hidden)  (when the block has one: BERT's post-norm)

    For BERT that is hidden = LayerNorm(hidden + SelfAttention(hidden)), then
    hidden = LayerNorm(hidden + FeedForward(hidden)).

    layer: the layer's params; hidden float32 [batch, seq, hidden]; mask_bias [batch, 1, 1, seq]
    (attention_mask_bias); position_inputs: {position scheme: what it adds} (`position_inputs`),
    or None. Returns (hidden [batch, seq, hidden], the attention's probabilities
    [batch, heads, seq, seq]).
    """
    probabilities = None
    for block in layer_recipe.blocks:
        x = hidden if block.norm_before is None else norm(block.norm_before, layer, hidden)
        if isinstance(block.sublayer, Attention):
            scheme = block.sublayer.positions
            x, probabilities = self_attention(layer, block.sublayer, x, mask_bias,
                                              None if scheme is None else position_inputs[scheme])
        else:
            x = feed_forward(layer, block.sublayer, x)
        if block.norm_after is not None:  # Gemma 3 normalises the sublayer's output too
            x = norm(block.norm_after, layer, x)
        hidden = x + hidden
        if block.norm_after_residual is not None:
            hidden = norm(block.norm_after_residual, layer, hidden)
    return hidden, probabilities


def position_inputs(params, recipe, seq_len):
    """What each attention position scheme of `recipe` needs, once for all layers: {scheme:
    MPNet's bias [1, heads, seq, seq] (RelativeBuckets), the (cos, sin) [seq, dims // 2]
    of positions 0 .. seq-1 (Rotary: one per theta, ModernBERT has two), or DeBERTa's
    (relative_embeddings [rows, hidden], relative_position_rows [seq, seq]) (Disentangled)}."""
    inputs = {}
    for layer_recipe in recipe.layers:
        for spec in layer_recipe.attention():
            scheme = spec.positions
            if scheme is None or scheme in inputs:
                continue
            if isinstance(scheme, Rotary):
                inputs[scheme] = rotary_angles(scheme, spec.head_dim, np.arange(seq_len))
            elif isinstance(scheme, Disentangled):  # DeBERTa: the table and each (query, key)'s row of it
                inputs[scheme] = (relative_embeddings(scheme, params), relative_position_rows(scheme, seq_len))
            else:
                inputs[scheme] = relative_position_bias(params[scheme.table], seq_len, scheme.num_buckets,
                                                        scheme.max_distance)
    return inputs


# ---------------------------------------------------------------------------------------
# The whole encoder
# ---------------------------------------------------------------------------------------
def encoder_forward(params, config, input_ids, attention_mask=None, token_type_ids=None,
                    output_hidden_states=False, output_attentions=False):
    """Token ids -> contextual vectors, the NumPy reference forward pass.

    params: the nested dict described in this module's docstring; config: EncoderConfig
    (its recipe says what to compute). input_ids int64 [batch, seq]; attention_mask
    [batch, seq] of 1/0 (None: all 1); token_type_ids [batch, seq] (None: all 0). Returns
    (last_hidden_state float32 [batch, seq, hidden], hidden_states tuple of num_layers + 1
    arrays or None, attentions tuple of num_layers arrays [batch, heads, seq, seq] or None).
    With a final norm (ModernBERT), last_hidden_state and the last of hidden_states are the
    last layer's output after it, as in `transformers`.

        >>> last, _, _ = encoder_forward(params, config, np.array([[101, 7592, 102]]))
        >>> last.shape
        (1, 3, 384)
    """
    recipe = config.recipe
    check_recipe(recipe)
    input_ids = np.asarray(input_ids, dtype=np.int64)
    batch, seq = input_ids.shape
    if attention_mask is None:
        attention_mask = np.ones((batch, seq), dtype=np.int64)
    if token_type_ids is None:
        token_type_ids = np.zeros((batch, seq), dtype=np.int64)

    attention_mask = np.asarray(attention_mask)
    hidden = embed(params["embeddings"], config, input_ids, token_type_ids, attention_mask)  # -> [b, seq, hidden]
    queries = any(spec.mask.queries for layer in recipe.layers for spec in layer.attention())
    mask_bias = attention_mask_bias(attention_mask, queries)  # -> [batch, 1, 1, seq] ([b, 1, seq, seq]: queries)
    positions = position_inputs(params, recipe, seq)  # relative bias, rotary angles..., once for all layers

    hidden_states = [hidden] if output_hidden_states else None
    attentions = [] if output_attentions else None
    for layer_recipe, layer in zip(recipe.layers, params["layers"]):
        hidden, probabilities = encoder_layer(layer, layer_recipe, hidden, mask_bias, positions)
        if output_hidden_states:
            hidden_states.append(hidden)
        if output_attentions:
            attentions.append(probabilities)
    if recipe.final_norm is not None:
        hidden = norm(recipe.final_norm, params, hidden)
        if output_hidden_states:  # the last entry is the normed output, as in transformers
            hidden_states[-1] = hidden
    return (
        hidden,
        tuple(hidden_states) if output_hidden_states else None,
        tuple(attentions) if output_attentions else None,
    )


def check_recipe(recipe):
    """Raise NotImplementedError naming the first step of `recipe` this file cannot compute yet
    (each is one new case in `norm`, `embed`, `self_attention` or `feed_forward`)."""
    def refuse(what):
        raise NotImplementedError(f"the numpy backend does not implement {what} yet")

    norms = [norm for layer in recipe.layers for norm in layer.norms()]
    norms += [n for n in (recipe.embeddings.norm, recipe.final_norm) if n is not None]
    for spec in norms:
        if spec.kind not in ("layer_norm", "rms_norm") or (spec.kind == "layer_norm" and spec.offset):
            refuse(f"the {spec.kind} {spec.name!r} with offset={spec.offset} (a layer_norm, or an rms_norm "
                   f"with an offset)")
    positions = recipe.embeddings.positions
    if positions is not None and not isinstance(positions, AbsolutePositions):
        refuse(f"embedding positions {positions}")
    for layer in recipe.layers:
        for block in layer.blocks:
            sublayer = block.sublayer
            if isinstance(sublayer, MLP):
                continue
            if not isinstance(sublayer, Attention):
                refuse(f"the sublayer {type(sublayer).__name__}")
            scheme = sublayer.positions
            if scheme is not None and not isinstance(scheme, (RelativeBuckets, Rotary, Disentangled)):
                refuse(f"{type(scheme).__name__} attention positions")
            if isinstance(scheme, Rotary) and scheme.interleaved:
                refuse("interleaved rotary positions (only the halves layout)")
            if isinstance(scheme, Rotary) and dict(scheme.scaling).get("rope_type", "default") not in ROPE_TYPES:
                refuse(f"the rope_type {dict(scheme.scaling)['rope_type']!r} (only {', '.join(ROPE_TYPES)})")
            if isinstance(scheme, Disentangled) and sublayer.kv_heads != sublayer.num_heads:
                refuse("DeBERTa's disentangled positions with grouped-query heads")


def pooler(pooler_params, last_hidden_state):
    """BERT's pooler: tanh(dense(first token)). float32 [batch, seq, hidden] -> [batch, hidden]."""
    first_token = last_hidden_state[:, 0]  # [batch, seq, hidden] -> [batch, hidden]
    return np.tanh(linear(first_token, **pooler_params))


# ---------------------------------------------------------------------------------------
# Inputs: what the user passes -> what the forward pass expects, or a clear error
# ---------------------------------------------------------------------------------------
def _as_2d_integer_array(values, name):
    """Lists / arrays of integers -> int64 [batch, seq], or an error naming `name`."""
    if values is None or isinstance(values, (str, bytes, bytearray)):
        kind = "None" if values is None else type(values).__name__
        raise TypeError(f"{name} is {kind}; expected token ids, integers [batch, seq] "
                        f"(a list of lists of int, or the tokenizer's {name})")
    try:
        array = np.asarray(values)
    except ValueError:
        raise ValueError(
            f"{name} rows have different lengths; pad them to one length (tokenizer padding=True) "
            f"and pass attention_mask"
        ) from None
    if array.dtype == object:
        raise ValueError(
            f"{name} rows have different lengths or hold non-numbers; pad them to one length "
            f"(tokenizer padding=True) and pass attention_mask"
        )
    if array.ndim != 2:
        hint = " (wrap a single sequence in a list: [ids])" if array.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D [batch, seq]; found shape {array.shape}{hint}")
    if array.size == 0:
        return array.astype(np.int64)  # [[]] arrives as float64; check_inputs names the empty side
    if array.dtype == bool:
        array = array.astype(np.int64)
    if array.dtype.kind in "US":  # ids written as text: '101', b'101'
        kind = "str" if array.dtype.kind == "U" else "bytes"
        raise TypeError(f"{name} holds {kind} values ({array.flat[0].item()!r:.20}); expected integer token ids")
    if not np.issubdtype(array.dtype, np.integer):
        if array.size and np.issubdtype(array.dtype, np.floating) and name == "attention_mask" \
                and np.isin(array, (0.0, 1.0)).all():
            return array.astype(np.int64)  # a float 0/1 mask is unambiguous
        raise TypeError(f"{name} must hold integers; found dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def check_inputs(config, input_ids, attention_mask=None, token_type_ids=None):
    """Validate and normalise what a user passes to the encoder.

    Returns (input_ids, attention_mask, token_type_ids), each int64 [batch, seq], with the
    defaults filled in (mask all 1, token types all 0). Raises ValueError / TypeError naming
    the argument and what was expected: not 2-D, not integers, empty, ids outside the
    vocabulary, sequence longer than the position table, mask values other than 0/1,
    token types outside type_vocab_size.
    """
    input_ids = _as_2d_integer_array(input_ids, "input_ids")
    batch, seq = input_ids.shape
    if batch == 0:
        raise ValueError("input_ids is an empty batch (0 sequences); pass at least one sequence")
    if seq == 0:
        raise ValueError("input_ids has sequences of length 0; every sequence needs at least one token")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= config.vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"input_ids holds token id {bad}, outside the vocabulary [0, {config.vocab_size - 1}] "
            f"(vocab_size={config.vocab_size}); was it made by this model's tokenizer?"
        )
    if seq > config.max_sequence_length:
        raise ValueError(
            f"sequence length {seq} is longer than this model accepts ({config.max_sequence_length}, "
            f"from max_position_embeddings={config.max_position_embeddings}); truncate the input "
            f"(tokenizer truncation=True, max_length={config.max_sequence_length})"
        )

    if attention_mask is None:
        attention_mask = np.ones((batch, seq), dtype=np.int64)
    else:
        attention_mask = _as_2d_integer_array(attention_mask, "attention_mask")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {attention_mask.shape}, expected the shape of input_ids {input_ids.shape}"
            )
        if attention_mask.min() < 0 or attention_mask.max() > 1:  # integers: only 0 and 1 pass
            raise ValueError("attention_mask must hold only 1 (token) and 0 (padding)")

    if token_type_ids is None:
        token_type_ids = np.zeros((batch, seq), dtype=np.int64)
    else:
        token_type_ids = _as_2d_integer_array(token_type_ids, "token_type_ids")
        if token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"token_type_ids has shape {token_type_ids.shape}, expected the shape of input_ids {input_ids.shape}"
            )
        if config.type_vocab_size == 0:
            if token_type_ids.any():
                raise ValueError(
                    f"token_type_ids holds non-zero types but {config.model_type} models have no "
                    f"token-type embeddings; pass zeros or leave token_type_ids out"
                )
        elif token_type_ids.min() < 0 or token_type_ids.max() >= config.type_vocab_size:
            raise ValueError(
                f"token_type_ids holds values outside [0, {config.type_vocab_size - 1}] "
                f"(type_vocab_size={config.type_vocab_size})"
            )
    return input_ids, attention_mask, token_type_ids
