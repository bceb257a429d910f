"""The backward pass: how a loss's gradient flows back through the encoder, in plain NumPy.

Read beside `transformer/model.py`: every forward function there has its twin here, named
`<forward>_backward`. A twin takes the gradient of the loss with respect to the forward
function's output (`d_out`, the same shape as the output) and what the forward function saw
(its inputs, or a cache of intermediates), and returns the gradient with respect to each
input and each parameter:

    forward    y = linear(x, weight, bias)                 x [tokens, in] -> y [tokens, out]
    backward   d_x, d_params = linear_backward(d_y, x, weight, bias)
               d_x = d_y @ weight.T                         [tokens, out] -> [tokens, in]
               d_weight = x.T @ d_y                         [in, tokens] @ [tokens, out] -> [in, out]
               d_bias = d_y summed over tokens              [tokens, out] -> [out]

The chain rule does the rest: the whole-model backward (`encoder_backward`) walks the layer
recipe in reverse, block by block, each block's residual sending its gradient down both
paths (through the sublayer and straight past it) and adding them where they meet.

Parameter gradients come back as a tree shaped like `params` (see `transformer.model`): the
same keys, an array of the same shape where the parameter is an array, None where it is None.
Everything is float32, as the forward pass.

The forward functions that keep what their backward needs are the `*_with_cache` twins of
`transformer.model`'s (`embed_with_cache`, `encoder_layer_with_cache`, ...): the same math,
plus a dict of the intermediates.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

from transformer import model
from transformer.recipe import Attention


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------
def linear_backward(d_out, x, weight, bias):
    """The backward of `model.linear` (x @ weight + bias).

    d_out [..., out], x [..., in], weight [in, out], bias [out] or None ->
    (d_x [..., in], {"weight": d_weight [in, out], "bias": d_bias [out] or None}).
    """
    flat_x = x.reshape(-1, x.shape[-1])  # [..., in] -> [tokens, in]
    flat_d = d_out.reshape(-1, d_out.shape[-1])  # [..., out] -> [tokens, out]
    d_x = (flat_d @ weight.T).reshape(x.shape)  # [tokens, out] @ [out, in] -> [..., in]
    d_weight = flat_x.T @ flat_d  # [in, tokens] @ [tokens, out] -> [in, out]
    d_bias = None if bias is None else flat_d.sum(axis=0)  # [tokens, out] -> [out]
    return d_x, {"weight": d_weight, "bias": d_bias}


def layer_norm_backward(d_out, x, weight, bias, eps):
    """The backward of `model.layer_norm`.

    d_out and x [..., d], weight and bias [d] -> (d_x [..., d], {"weight": [d], "bias": [d]}).

    With n = (x - mean) / std the normalised x, the output is n * weight + bias, so
    d_weight = sum(d_out * n) and d_n = d_out * weight. Every element of x moves the mean and
    the variance of its row, which moves every n of the row: d_x = (d_n - mean(d_n) -
    n * mean(d_n * n)) / std, the means over the last axis.
    """
    mean = x.mean(axis=-1, keepdims=True)  # [..., d] -> [..., 1]
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)  # [..., d] -> [..., 1]
    inverse_std = np.float32(1.0) / np.sqrt(variance + np.float32(eps))  # [..., 1]
    normalized = centered * inverse_std
    flat_d = d_out.reshape(-1, d_out.shape[-1])  # [..., d] -> [tokens, d]
    d_weight = (flat_d * normalized.reshape(flat_d.shape)).sum(axis=0)  # [tokens, d] -> [d]
    d_bias = None if bias is None else flat_d.sum(axis=0)  # [tokens, d] -> [d]
    d_normalized = d_out * weight
    d_x = inverse_std * (d_normalized - d_normalized.mean(axis=-1, keepdims=True)
                         - normalized * (d_normalized * normalized).mean(axis=-1, keepdims=True))
    return d_x, {"weight": d_weight, "bias": d_bias}


def norm_backward(d_out, spec, params, x, steps=None):
    """The backward of `model.norm`: the Norm `spec` with its parameters params[spec.name]."""
    return (steps or NUMPY_STEPS).layer_norm_backward(d_out, x, **params[spec.name], eps=spec.eps)


def softmax_backward(d_probabilities, probabilities):
    """The backward of `model.softmax` over the last axis.

    d_probabilities and probabilities [..., n] -> d_scores [..., n]. Raising one score raises
    its own probability and lowers all the others in the row:
    d_score_i = p_i * (d_p_i - sum_j d_p_j * p_j).
    """
    weighted = (d_probabilities * probabilities).sum(axis=-1, keepdims=True)  # [..., n] -> [..., 1]
    return probabilities * (d_probabilities - weighted)


# --- activations: d_out and the activation's input x [...] -> d_x [...] -------------------
def gelu_backward(d_out, x):
    """d/dx of x * Phi(x) is Phi(x) + x * phi(x): Phi the normal CDF, phi its density."""
    x64 = x.astype(np.float64)
    cdf = 0.5 * model._erfc(-x64 / math.sqrt(2.0))
    density = np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
    return d_out * (cdf + x64 * density).astype(x.dtype)


def _tanh_gelu_backward(d_out, x, scale):
    """The backward of 0.5 * x * (1 + tanh(scale * (x + 0.044715 * x^3))), both tanh forms.
    The forward's constants are float32; the derivative's are computed from them in x's dtype."""
    number = x.dtype.type
    scale, cubic = number(np.float32(scale)), number(np.float32(0.044715))
    tanh = np.tanh(scale * (x + cubic * x * x * x))
    d_inner = scale * (number(1.0) + number(3.0) * cubic * x * x)
    return d_out * (number(0.5) * (number(1.0) + tanh) + number(0.5) * x * (number(1.0) - tanh * tanh) * d_inner)


def gelu_tanh_backward(d_out, x):
    """The backward of `model.gelu_tanh`."""
    return _tanh_gelu_backward(d_out, x, math.sqrt(2.0 / math.pi))


def gelu_fast_backward(d_out, x):
    """The backward of `model.gelu_fast` (the same function, its constant rounded)."""
    return _tanh_gelu_backward(d_out, x, 0.7978845608)


def _sigmoid_gate_backward(d_out, x, slope):
    """d/dx of x * sigmoid(slope * x) = s + slope * x * s * (1 - s)."""
    s = model.sigmoid(np.float32(slope) * x)
    return d_out * (s + np.float32(slope) * x * s * (np.float32(1.0) - s))


def quick_gelu_backward(d_out, x):
    """The backward of `model.quick_gelu` (x * sigmoid(1.702 x))."""
    return _sigmoid_gate_backward(d_out, x, 1.702)


def silu_backward(d_out, x):
    """The backward of `model.silu` (x * sigmoid(x))."""
    return _sigmoid_gate_backward(d_out, x, 1.0)


def relu_backward(d_out, x):
    """The gradient passes where x > 0 (torch's choice at x == 0: it does not)."""
    return np.where(x > 0, d_out, np.float32(0.0))


def tanh_backward(d_out, x):
    """d/dx tanh(x) = 1 - tanh(x)^2."""
    tanh = np.tanh(x)
    return d_out * (np.float32(1.0) - tanh * tanh)


# config.hidden_act -> the backward of `model.ACTIVATIONS[name]`.
ACTIVATION_BACKWARDS = {
    "gelu": gelu_backward,
    "gelu_python": gelu_backward,
    "gelu_new": gelu_tanh_backward,
    "gelu_pytorch_tanh": gelu_tanh_backward,
    "gelu_python_tanh": gelu_tanh_backward,
    "gelu_fast": gelu_fast_backward,
    "quick_gelu": quick_gelu_backward,
    "relu": relu_backward,
    "silu": silu_backward,
    "swish": silu_backward,
    "tanh": tanh_backward,
}


def activation_backward(name):
    """The backward of the activation called `name` in config.json (`hidden_act`)."""
    try:
        return ACTIVATION_BACKWARDS[name]
    except KeyError:
        raise ValueError(f"no backward for activation {name!r}; known: {', '.join(ACTIVATION_BACKWARDS)}") from None


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------
def embed_with_cache(embeddings, config, input_ids, token_type_ids, steps=None):
    """`model.embed`, plus what `embed_backward` needs: -> (hidden [batch, seq, hidden], cache)."""
    steps = steps or NUMPY_STEPS
    spec = config.recipe.embeddings
    summed = embeddings["word"][input_ids]  # [batch, seq] -> [batch, seq, embedding_size]
    if spec.token_types:
        summed = summed + embeddings["token_type"][token_type_ids]
    positions = None
    if spec.positions is not None:
        positions = model.position_ids(config, input_ids)  # [batch, seq]
        summed = summed + embeddings["position"][positions]
    normed = summed if spec.norm is None else steps.norm(spec.norm, embeddings, summed)
    hidden = normed
    if spec.projection is not None:
        hidden = model.linear(normed, **embeddings[spec.projection.name])  # -> [b, s, hidden]
    cache = dict(input_ids=input_ids, token_type_ids=token_type_ids, positions=positions, summed=summed,
                 normed=normed)
    return hidden, cache


def table_backward(d_rows, table, ids):
    """The backward of a table lookup table[ids]: each row's gradient is the sum of the
    gradients of every place that read it. d_rows [..., d], table [rows, d], ids int [...]
    -> d_table [rows, d] (zero for rows nobody read)."""
    d_table = np.zeros_like(table)
    np.add.at(d_table, ids.reshape(-1), d_rows.reshape(-1, table.shape[1]))  # repeated ids add up
    return d_table


def embed_backward(d_hidden, embeddings, config, cache, steps=None):
    """The backward of `model.embed`: d_hidden [batch, seq, hidden] -> the gradient tree of
    params["embeddings"] (the token ids themselves have no gradient)."""
    spec = config.recipe.embeddings
    grads = {name: None for name in embeddings}
    d_normed = d_hidden
    if spec.projection is not None:
        d_normed, grads[spec.projection.name] = linear_backward(
            d_hidden, cache["normed"], **embeddings[spec.projection.name])  # -> [b, s, embedding_size]
    d_summed = d_normed
    if spec.norm is not None:
        d_summed, grads[spec.norm.name] = norm_backward(d_normed, spec.norm, embeddings, cache["summed"], steps)
    grads["word"] = table_backward(d_summed, embeddings["word"], cache["input_ids"])
    if spec.token_types:
        grads["token_type"] = table_backward(d_summed, embeddings["token_type"], cache["token_type_ids"])
    if spec.positions is not None:
        grads["position"] = table_backward(d_summed, embeddings["position"], cache["positions"])
    # The padding token's rows are held fixed, as torch's nn.Embedding(padding_idx=...) in every
    # family holds them: the word row of the padding token, and (fairseq positions) the
    # position row that padding reads. Their gradient is 0.
    padding_idx = None if spec.positions is None else spec.positions.padding_idx
    word_padding = config.pad_token_id if padding_idx is None else padding_idx
    if word_padding is not None and 0 <= word_padding < len(grads["word"]):
        grads["word"][word_padding] = 0
    if padding_idx is not None:
        grads["position"][padding_idx] = 0
    return grads


def relative_position_bias_backward(d_bias, table, seq_len, num_buckets=32, max_distance=128):
    """The backward of `model.relative_position_bias`: d_bias [1, heads, seq, seq] (summed
    over every layer that added it) -> d_table [rows, heads]."""
    buckets = model.relative_position_buckets(seq_len, num_buckets, max_distance)  # [seq, seq]
    return table_backward(d_bias[0].transpose(1, 2, 0), table, buckets)  # [seq, seq, heads] -> [rows, heads]


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------
def attention_backward(d_context, query, key, value, probabilities):
    """The backward of `model.attention`.

    d_context [batch, heads, seq, head_dim]; query, key, value as the forward got them;
    probabilities [batch, heads, seq_q, seq_k] from the forward. Returns (d_query, d_key,
    d_value, each [batch, heads, seq, head_dim], d_scores [batch, heads, seq_q, seq_k]: the
    gradient of what the position bias was added to). A padding key's probability is exactly 0,
    so no gradient reaches it through the softmax: the mask has no gradient of its own.
    """
    head_dim = query.shape[-1]
    d_probabilities = d_context @ value.transpose(0, 1, 3, 2)  # [b, h, q, d] @ [b, h, d, k] -> [b, h, q, k]
    d_value = probabilities.transpose(0, 1, 3, 2) @ d_context  # [b, h, k, q] @ [b, h, q, d] -> [b, h, k, d]
    d_scores = softmax_backward(d_probabilities, probabilities)  # [b, h, q, k]
    d_scaled = d_scores * np.float32(1.0 / math.sqrt(head_dim))
    d_query = d_scaled @ key  # [b, h, q, k] @ [b, h, k, d] -> [b, h, q, d]
    d_key = d_scaled.transpose(0, 1, 3, 2) @ query  # [b, h, k, q] @ [b, h, q, d] -> [b, h, k, d]
    return d_query, d_key, d_value, d_scores


def self_attention_with_cache(layer, spec, hidden, mask_bias, position_bias=None, steps=None):
    """`model.self_attention`, plus its cache: -> (output [batch, seq, hidden], probabilities,
    cache). steps: the building blocks (`NUMPY_STEPS`, the default, or `numba_steps()`)."""
    steps = steps or NUMPY_STEPS
    heads = spec.num_heads
    query = model.split_heads(steps.linear(hidden, **layer[spec.query.name]), heads)  # -> [b, h, s, d]
    key = model.split_heads(steps.linear(hidden, **layer[spec.key.name]), heads)  # -> [b, h, s, d]
    value = model.split_heads(steps.linear(hidden, **layer[spec.value.name]), heads)  # -> [b, h, s, d]
    context, probabilities = steps.attention(query, key, value, mask_bias, position_bias)
    merged = model.merge_heads(context)  # -> [batch, seq, hidden]
    output = steps.linear(merged, **layer[spec.output.name])  # -> [batch, seq, hidden]
    cache = dict(hidden=hidden, query=query, key=key, value=value, probabilities=probabilities, merged=merged)
    return output, probabilities, cache


def self_attention_backward(d_output, layer, spec, cache, steps=None):
    """The backward of `model.self_attention`: d_output [batch, seq, hidden] -> (d_hidden
    [batch, seq, hidden], {linear name: its gradients}, d_scores [batch, heads, seq, seq])."""
    steps = steps or NUMPY_STEPS
    grads = {}
    d_merged, grads[spec.output.name] = steps.linear_backward(d_output, cache["merged"], **layer[spec.output.name])
    d_context = model.split_heads(d_merged, spec.num_heads)  # [b, s, hidden] -> [b, h, s, d]
    d_query, d_key, d_value, d_scores = steps.attention_backward(
        d_context, cache["query"], cache["key"], cache["value"], cache["probabilities"])
    d_hidden = np.zeros_like(cache["hidden"])
    # query, key and value all read the same hidden states: their gradients add up
    for linear_spec, d_heads in ((spec.query, d_query), (spec.key, d_key), (spec.value, d_value)):
        d_x, grads[linear_spec.name] = steps.linear_backward(
            model.merge_heads(d_heads), cache["hidden"], **layer[linear_spec.name])  # [b, h, s, d] -> [b, s, hidden]
        d_hidden += d_x
    return d_hidden, grads, d_scores


# ---------------------------------------------------------------------------------------
# Feed-forward
# ---------------------------------------------------------------------------------------
def feed_forward_with_cache(layer, spec, hidden, steps=None):
    """`model.feed_forward`, plus its cache: -> (output [batch, seq, hidden], cache)."""
    steps = steps or NUMPY_STEPS
    before = steps.linear(hidden, **layer[spec.up.name])  # [b, s, hidden] -> [b, s, intermediate]
    after = steps.activation(spec.activation)(before)
    output = steps.linear(after, **layer[spec.down.name])  # [b, s, intermediate] -> [b, s, hidden]
    return output, dict(hidden=hidden, before=before, after=after)


def feed_forward_backward(d_output, layer, spec, cache, steps=None):
    """The backward of `model.feed_forward`: d_output [batch, seq, hidden] -> (d_hidden
    [batch, seq, hidden], {linear name: its gradients})."""
    steps = steps or NUMPY_STEPS
    grads = {}
    down, up = layer[spec.down.name], layer[spec.up.name]
    d_after, grads[spec.down.name] = steps.linear_backward(d_output, cache["after"], **down)  # -> [b, s, intermediate]
    d_before = steps.activation_backward(spec.activation)(d_after, cache["before"])
    d_hidden, grads[spec.up.name] = steps.linear_backward(d_before, cache["hidden"], **up)  # -> [b, s, hidden]
    return d_hidden, grads


# ---------------------------------------------------------------------------------------
# The building blocks the whole-model walk calls, and their fast twins
# ---------------------------------------------------------------------------------------
class Steps(NamedTuple):
    """The functions the walk below calls for the heavy steps: this module's and model.py's
    (NUMPY_STEPS), or the Numba kernels' twins of the same signatures (`numba_steps()`)."""

    linear: Callable  # model.linear: x [..., in], weight, bias -> [..., out]
    linear_backward: Callable  # linear_backward
    layer_norm_backward: Callable  # layer_norm_backward
    activation: Callable  # name -> the activation (model.activation)
    activation_backward: Callable  # name -> its backward (activation_backward)
    attention: Callable  # model.attention -> (context, probabilities)
    attention_backward: Callable  # attention_backward
    norm: Callable  # model.norm: a recipe Norm, params, x [..., d] -> [..., d]


NUMPY_STEPS = Steps(model.linear, linear_backward, layer_norm_backward, model.activation, activation_backward,
                    model.attention, attention_backward, model.norm)


def numba_steps():
    """Steps on the Numba kernels (`kernels/backward.py`): the linear layers' matrix products,
    forward and backward, on the packed GEMM (each weight packed once, and its transpose
    once: make new steps after the weights change, as `train.Trainer.step` does every step);
    LayerNorm forward and backward, the activations and the GELUs' backward fused; attention
    forward and backward per (sequence, head) on the micro-kernel (`kernels/attention_backward.py`),
    skipping the padding keys, for a key mask (a mask per query, causal or DeBERTa's, stays
    NumPy's); its probabilities are not kept but computed again in the backward (`Recomputed`)."""
    from transformer.kernels import attention_backward as attention_kernels
    from transformer.kernels import backward as fast
    from transformer.kernels import layernorm as layer_norm_kernels

    packs = fast.WeightPacks()

    def fast_activation(name):
        forward = model.activation(name)
        return fast.activation(forward.__name__) or forward  # the kernels name it as model.py's function

    def fast_activation_backward(name):
        return fast.ACTIVATION_BACKWARDS.get(name) or activation_backward(name)

    def fast_attention(query, key, value, mask_bias, position_bias=None):
        batch, _, seq, _ = query.shape
        if attention_kernels.supports(mask_bias, position_bias, batch, seq):
            context = attention_kernels.attention_forward(query, key, value, mask_bias, position_bias)
            return context, Recomputed(mask_bias, position_bias)  # the backward computes P again
        return model.attention(query, key, value, mask_bias, position_bias)

    def fast_attention_backward(d_context, query, key, value, probabilities):
        if not isinstance(probabilities, Recomputed):
            return attention_backward(d_context, query, key, value, probabilities)
        # d_scores only for a position bias (the walker reads it for nothing else): else None
        return attention_kernels.attention_backward(d_context, query, key, value, probabilities.mask_bias,
                                                    probabilities.position_bias,
                                                    d_scores=probabilities.position_bias is not None)

    def fast_norm(spec, params, x):
        if spec.kind != "layer_norm":
            return model.norm(spec, params, x)
        rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])  # [..., d] -> [tokens, d]
        return layer_norm_kernels.layer_norm(rows, **params[spec.name], eps=spec.eps).reshape(x.shape)

    return Steps(functools.partial(fast.linear, packs=packs), functools.partial(fast.linear_backward, packs=packs),
                 fast.layer_norm_backward, fast_activation, fast_activation_backward, fast_attention,
                 fast_attention_backward, fast_norm)


class Recomputed(NamedTuple):
    """What the fast attention step keeps in place of the probabilities: what its backward
    computes them again from (with the query and key)."""

    mask_bias: np.ndarray  # [batch, 1, 1, seq]
    position_bias: np.ndarray | None  # [1 | batch, heads, seq, seq]


def steps_of(backend):
    """"numpy" -> NUMPY_STEPS, "numba" -> numba_steps()."""
    if backend == "numpy":
        return NUMPY_STEPS
    if backend == "numba":
        return numba_steps()
    raise ValueError(f"backend {backend!r} is not one of numpy, numba")


# ---------------------------------------------------------------------------------------
# One layer
# ---------------------------------------------------------------------------------------
def encoder_layer_with_cache(layer, layer_recipe, hidden, mask_bias, position_biases=None, steps=None):
    """`model.encoder_layer`, plus one cache per block: -> (hidden [batch, seq, hidden], caches)."""
    steps = steps or NUMPY_STEPS
    caches = []
    for block in layer_recipe.blocks:
        block_input = hidden
        x = hidden if block.norm_before is None else steps.norm(block.norm_before, layer, hidden)
        if isinstance(block.sublayer, Attention):
            position_bias = None if block.sublayer.positions is None else position_biases[block.sublayer.positions]
            x, _, sublayer_cache = self_attention_with_cache(layer, block.sublayer, x, mask_bias, position_bias,
                                                             steps)
        else:
            x, sublayer_cache = feed_forward_with_cache(layer, block.sublayer, x, steps)
        hidden = x + hidden
        caches.append(dict(input=block_input, residual=hidden, sublayer=sublayer_cache))
        if block.norm_after_residual is not None:
            hidden = steps.norm(block.norm_after_residual, layer, hidden)
    return hidden, caches


def _add(grads, name, more):
    """grads[name] += more, for parameter gradients (dicts of arrays) met more than once."""
    if grads.get(name) is None:
        grads[name] = more
        return
    for key, value in more.items():
        if value is not None:
            grads[name][key] = grads[name][key] + value


def encoder_layer_backward(d_hidden, layer, layer_recipe, caches, steps=None):
    """The backward of `model.encoder_layer`: the blocks in reverse order, each

        d_residual = norm_after_residual_backward(d_hidden)    (post-norm: BERT)
        d_hidden   = d_residual                                 the residual's straight path
                   + norm_before_backward(sublayer_backward(d_residual))

    d_hidden [batch, seq, hidden] -> (d_hidden [batch, seq, hidden], {param name: gradients},
    {position scheme: d_scores [batch, heads, seq, seq]} for the relative position bias).
    """
    steps = steps or NUMPY_STEPS
    grads = {}
    d_scores_by_scheme = {}
    for block, cache in zip(reversed(layer_recipe.blocks), reversed(caches)):
        d_residual = d_hidden
        if block.norm_after_residual is not None:
            d_residual, norm_grads = norm_backward(d_hidden, block.norm_after_residual, layer, cache["residual"],
                                                   steps)
            _add(grads, block.norm_after_residual.name, norm_grads)
        if isinstance(block.sublayer, Attention):
            d_x, sublayer_grads, d_scores = self_attention_backward(
                d_residual, layer, block.sublayer, cache["sublayer"], steps)
            if block.sublayer.positions is not None:
                d_scores_by_scheme[block.sublayer.positions] = d_scores
        else:
            d_x, sublayer_grads = feed_forward_backward(d_residual, layer, block.sublayer, cache["sublayer"], steps)
        for name, linear_grads in sublayer_grads.items():
            _add(grads, name, linear_grads)
        if block.norm_before is not None:
            d_x, norm_grads = norm_backward(d_x, block.norm_before, layer, cache["input"], steps)
            _add(grads, block.norm_before.name, norm_grads)
        d_hidden = d_residual + d_x
    return d_hidden, grads, d_scores_by_scheme


# ---------------------------------------------------------------------------------------
# The whole encoder
# ---------------------------------------------------------------------------------------
def encoder_forward_with_cache(params, config, input_ids, attention_mask=None, token_type_ids=None, steps=None):
    """`model.encoder_forward`'s last hidden state, plus the cache `encoder_backward` reads.

    input_ids int64 [batch, seq]; attention_mask [batch, seq] of 1/0 (None: all 1);
    token_type_ids (None: all 0); steps: the building blocks, NUMPY_STEPS (None) or
    `numba_steps()`. -> (last_hidden_state float32 [batch, seq, hidden], cache).
    """
    recipe = config.recipe
    check_recipe(recipe)
    input_ids = np.asarray(input_ids, dtype=np.int64)
    batch, seq = input_ids.shape
    if attention_mask is None:
        attention_mask = np.ones((batch, seq), dtype=np.int64)
    if token_type_ids is None:
        token_type_ids = np.zeros((batch, seq), dtype=np.int64)
    hidden, embed_cache = embed_with_cache(params["embeddings"], config, input_ids,
                                           np.asarray(token_type_ids, dtype=np.int64), steps)  # -> [b, s, hidden]
    mask_bias = model.attention_mask_bias(np.asarray(attention_mask))  # -> [batch, 1, 1, seq]
    position_biases = {
        scheme: model.relative_position_bias(params[scheme.table], seq, scheme.num_buckets, scheme.max_distance)
        for scheme in recipe.position_schemes()}
    layer_caches = []
    for layer_recipe, layer in zip(recipe.layers, params["layers"]):
        hidden, caches = encoder_layer_with_cache(layer, layer_recipe, hidden, mask_bias, position_biases, steps)
        layer_caches.append(caches)
    before_final_norm = hidden
    if recipe.final_norm is not None:
        hidden = (steps or NUMPY_STEPS).norm(recipe.final_norm, params, hidden)
    cache = dict(embeddings=embed_cache, layers=layer_caches, before_final_norm=before_final_norm, seq=seq)
    return hidden, cache


def encoder_backward(d_last_hidden_state, params, config, cache, steps=None):
    """The backward of `model.encoder_forward`: the gradient of the loss with respect to the
    last hidden state, float32 [batch, seq, hidden] -> the gradient of every parameter, a tree
    shaped like `params` (the pooler's entry None: the encoder's output does not use it)."""
    steps = steps or NUMPY_STEPS
    recipe = config.recipe
    grads = {name: None for name in params}
    d_hidden = d_last_hidden_state
    if recipe.final_norm is not None:
        d_hidden, grads[recipe.final_norm.name] = norm_backward(
            d_hidden, recipe.final_norm, params, cache["before_final_norm"], steps)
    d_scores_total = {}
    layer_grads = []
    for layer_recipe, layer, caches in reversed(list(zip(recipe.layers, params["layers"], cache["layers"]))):
        d_hidden, grads_of_layer, d_scores_by_scheme = encoder_layer_backward(d_hidden, layer, layer_recipe, caches,
                                                                              steps)
        layer_grads.append(grads_of_layer)
        for scheme, d_scores in d_scores_by_scheme.items():
            # every layer adds the same position bias: its gradient is the sum over layers and batch
            summed = d_scores.sum(axis=0, keepdims=True)  # [b, h, q, k] -> [1, h, q, k]
            d_scores_total[scheme] = summed if scheme not in d_scores_total else d_scores_total[scheme] + summed
    grads["layers"] = layer_grads[::-1]
    for scheme, d_bias in d_scores_total.items():
        grads[scheme.table] = relative_position_bias_backward(
            d_bias, params[scheme.table], cache["seq"], scheme.num_buckets, scheme.max_distance)
    grads["embeddings"] = embed_backward(d_hidden, params["embeddings"], config, cache["embeddings"], steps)
    return grads


def check_recipe(recipe):
    """Raise NotImplementedError for what the backward cannot follow: what the NumPy forward
    refuses (`model.check_recipe`)."""
    try:
        model.check_recipe(recipe)
    except NotImplementedError as error:
        raise NotImplementedError(f"{error} (so training cannot run it either)") from None


def pooler_backward(d_pooled, pooler_params, last_hidden_state):
    """The backward of `model.pooler` (tanh(dense(first token))): d_pooled [batch, hidden] ->
    (d_last_hidden_state [batch, seq, hidden], {"weight", "bias"} gradients)."""
    first_token = last_hidden_state[:, 0]  # [batch, seq, hidden] -> [batch, hidden]
    pooled = np.tanh(model.linear(first_token, **pooler_params))  # [batch, hidden]
    d_dense = d_pooled * (np.float32(1.0) - pooled * pooled)
    d_first, grads = linear_backward(d_dense, first_token, **pooler_params)  # -> [batch, hidden]
    d_hidden = np.zeros_like(last_hidden_state)
    d_hidden[:, 0] = d_first
    return d_hidden, grads


# ---------------------------------------------------------------------------------------
# Pooling (transformer.pooling): one vector per text, and back to the tokens
# ---------------------------------------------------------------------------------------
def mean_pooling_backward(d_pooled, attention_mask, seq):
    """The backward of `pooling.mean_pooling`: each real token gets d_pooled / count; padding
    gets 0. d_pooled [batch, hidden], attention_mask [batch, seq] -> [batch, seq, hidden]."""
    is_token = (np.asarray(attention_mask) != 0).astype(d_pooled.dtype)[:, :seq]  # [batch, seq]
    count = np.maximum(is_token.sum(axis=1, keepdims=True), np.float32(1e-9))  # [batch, 1]
    return is_token[:, :, None] * (d_pooled / count)[:, None, :]  # -> [batch, seq, hidden]


def mean_sqrt_len_pooling_backward(d_pooled, attention_mask, seq):
    """The backward of `pooling.mean_sqrt_len_pooling` (sum / sqrt(count))."""
    is_token = (np.asarray(attention_mask) != 0).astype(d_pooled.dtype)[:, :seq]  # [batch, seq]
    count = np.maximum(is_token.sum(axis=1, keepdims=True), np.float32(1e-9))  # [batch, 1]
    return is_token[:, :, None] * (d_pooled / np.sqrt(count))[:, None, :]  # -> [batch, seq, hidden]


def cls_pooling_backward(d_pooled, attention_mask, seq):
    """The backward of `pooling.cls_pooling`: everything to each text's first real token."""
    first = np.argmax(np.asarray(attention_mask) != 0, axis=1)  # [batch]
    d_tokens = np.zeros((d_pooled.shape[0], seq, d_pooled.shape[1]), dtype=d_pooled.dtype)  # [batch, seq, hidden]
    d_tokens[np.arange(len(first)), first] = d_pooled
    return d_tokens


def max_pooling_backward(d_pooled, attention_mask, token_embeddings):
    """The backward of `pooling.max_pooling`: each feature's gradient goes to the real token
    that held the maximum (the first one on a tie, as torch.max). -> [batch, seq, hidden]."""
    is_token = (np.asarray(attention_mask) != 0)[:, :, None]  # [batch, seq, 1]
    masked = np.where(is_token, token_embeddings, np.float32(-np.inf))
    winner = masked.argmax(axis=1)  # [batch, hidden]: the seq index of each maximum
    d_tokens = np.zeros_like(token_embeddings)
    batch_index, feature_index = np.indices(winner.shape)  # [batch, hidden] each
    d_tokens[batch_index, winner, feature_index] = d_pooled
    return d_tokens


def normalize_backward(d_out, vectors):
    """The backward of `pooling.normalize` (v / max(|v|, eps)): the part of d_out along the
    vector itself is removed (a unit vector cannot grow), the rest divided by |v|.
    d_out and vectors [..., d] -> [..., d]."""
    from transformer.pooling import NORMALIZE_EPS

    norms = np.sqrt(np.sum(vectors * vectors, axis=-1, keepdims=True))  # [..., 1]
    clamped = np.maximum(norms, NORMALIZE_EPS)
    unit = vectors / clamped
    along = np.sum(d_out * unit, axis=-1, keepdims=True)  # [..., 1]
    # below eps the forward divides by the constant eps: the radial part stays
    return np.where(norms > NORMALIZE_EPS, (d_out - unit * along) / clamped, d_out / clamped)


POOLING_BACKWARDS = {
    "mean": lambda d, mask, hidden: mean_pooling_backward(d, mask, hidden.shape[1]),
    "cls": lambda d, mask, hidden: cls_pooling_backward(d, mask, hidden.shape[1]),
    "max": lambda d, mask, hidden: max_pooling_backward(d, mask, hidden),
    "mean_sqrt_len_tokens": lambda d, mask, hidden: mean_sqrt_len_pooling_backward(d, mask, hidden.shape[1]),
}


# ---------------------------------------------------------------------------------------
# Task heads (transformer.heads): cross-encoder classification and the masked LM
# ---------------------------------------------------------------------------------------
def sequence_classification_with_cache(head, params, last_hidden_state):
    """`heads.sequence_classification_logits` on the encoder's output (BERT: through its
    pooler) -> (logits float32 [batch, num_labels], cache)."""
    if head.uses_pooler:
        features = model.pooler(params["pooler"], last_hidden_state)  # [batch, seq, hidden] -> [batch, hidden]
    else:
        features = last_hidden_state[:, 0]  # the first token: [batch, seq, hidden] -> [batch, hidden]
    before = after = features
    if head.params.get("dense") is not None:
        before = model.linear(features, **head.params["dense"])  # [batch, hidden] -> [batch, hidden]
        after = model.activation(head.activation)(before)
    logits = model.linear(after, **head.params["out"])  # [batch, hidden] -> [batch, num_labels]
    return logits, dict(hidden=last_hidden_state, features=features, before=before, after=after)


def sequence_classification_backward(d_logits, head, params, cache):
    """The backward of sequence_classification_with_cache: d_logits [batch, num_labels] ->
    (d_last_hidden_state [batch, seq, hidden], head gradients {"dense", "out"}, pooler
    gradients or None)."""
    grads = {"dense": None}
    d_after, grads["out"] = linear_backward(d_logits, cache["after"], **head.params["out"])  # -> [batch, hidden]
    d_features = d_after
    if head.params.get("dense") is not None:
        d_before = activation_backward(head.activation)(d_after, cache["before"])
        d_features, grads["dense"] = linear_backward(d_before, cache["features"], **head.params["dense"])
    if head.uses_pooler:
        d_hidden, pooler_grads = pooler_backward(d_features, params["pooler"], cache["hidden"])
        return d_hidden, grads, pooler_grads
    d_hidden = np.zeros_like(cache["hidden"])
    d_hidden[:, 0] = d_features
    return d_hidden, grads, None


def masked_lm_with_cache(head, eps, hidden):
    """`heads.masked_lm_logits` -> (logits float32 [batch, seq, vocab_size], cache)."""
    before = model.linear(hidden, **head.params["dense"])  # [b, s, hidden] -> [b, s, embedding_size]
    after = model.activation(head.activation)(before)
    normed = model.layer_norm(after, **head.params["layer_norm"], eps=eps)
    logits = model.linear(normed, **head.params["decoder"])  # [b, s, embedding_size] -> [b, s, vocab]
    return logits, dict(hidden=hidden, before=before, after=after, normed=normed, eps=eps)


def masked_lm_backward(d_logits, head, cache):
    """The backward of masked_lm_with_cache: d_logits [batch, seq, vocab] -> (d_hidden
    [batch, seq, hidden], head gradients {"dense", "layer_norm", "decoder"}). A tied decoder's
    weight gradient [embedding_size, vocab] belongs to the word table (its transpose): the
    caller adds it there."""
    grads = {}
    d_normed, grads["decoder"] = linear_backward(d_logits, cache["normed"], **head.params["decoder"])
    d_after, grads["layer_norm"] = layer_norm_backward(d_normed, cache["after"], **head.params["layer_norm"],
                                                       eps=cache["eps"])
    d_before = activation_backward(head.activation)(d_after, cache["before"])
    d_hidden, grads["dense"] = linear_backward(d_before, cache["hidden"], **head.params["dense"])  # -> [b, s, hidden]
    return d_hidden, grads
