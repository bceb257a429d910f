"""Recipes beyond the six families': every step both backends run, arranged differently.

No checkpoint family uses these arrangements yet (pre-norm blocks, a final norm, bias-free
linears, a layer without one of its norms); they are what the families to come combine. On
random weights, the numba backend must give the NumPy path's answer for each, and the
program it compiles must route the buffers as the recipe says.
"""

import dataclasses

import numpy as np
import pytest

from transformer import model as numpy_model
from transformer.config import EncoderConfig
from transformer.recipe import Attention, Block, Embeddings, Layer, Linear, MLP, Norm, Recipe

HIDDEN, INNER, HEADS, LAYERS = 32, 40, 4, 3
RNG = np.random.default_rng(11)


def config_with(recipe):
    """A BERT-shaped EncoderConfig that runs `recipe` instead of BERT's."""
    config = EncoderConfig.from_dict(dict(model_type="bert", vocab_size=60, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                          num_attention_heads=HEADS, intermediate_size=INNER, hidden_act="gelu_new",
                                          max_position_embeddings=24, type_vocab_size=2))
    config.__dict__["recipe"] = recipe  # what the cached property would hold
    return config


def layer_recipe(pre_norm=True, bias=True, first=False):
    def linear(name, size_in, size_out):
        return Linear(name, size_in, size_out, bias=bias)

    attention = Attention(query=linear("query", HIDDEN, HIDDEN), key=linear("key", HIDDEN, HIDDEN),
                          value=linear("value", HIDDEN, HIDDEN), output=linear("attention_output", HIDDEN, HIDDEN),
                          num_heads=HEADS, head_dim=HIDDEN // HEADS)
    mlp = MLP(up=linear("up", HIDDEN, INNER), down=linear("down", INNER, HIDDEN), activation="gelu_new")
    if not pre_norm:
        return Layer((Block(attention, norm_after_residual=Norm("attention_norm", HIDDEN, eps=1e-5)),
                      Block(mlp, norm_after_residual=Norm("mlp_norm", HIDDEN, eps=1e-5))))
    return Layer((Block(attention, norm_before=None if first else Norm("attention_norm", HIDDEN, eps=1e-5)),
                  Block(mlp, norm_before=Norm("mlp_norm", HIDDEN, eps=1e-5))))


def recipe_of(pre_norm=True, bias=True, skip_first_norm=False):
    layers = tuple(layer_recipe(pre_norm, bias, first=skip_first_norm and i == 0) for i in range(LAYERS))
    return Recipe(embeddings=Embeddings(size=HIDDEN, token_types=True, norm=Norm("layer_norm", HIDDEN, eps=1e-5)),
                  layers=layers, final_norm=Norm("final_norm", HIDDEN, eps=1e-5) if pre_norm else None)


def random_params(recipe, zero_biases=False):
    def vector(size, scale=0.1, offset=0.0):
        return (offset + scale * RNG.standard_normal(size)).astype(np.float32)

    def part(spec):
        if isinstance(spec, Norm):
            return {"weight": vector(spec.size, offset=1.0), "bias": vector(spec.size)}
        weight = (RNG.standard_normal((spec.in_features, spec.out_features)) / np.sqrt(spec.in_features)).astype(np.float32)
        bias = (np.zeros(spec.out_features, np.float32) if zero_biases else vector(spec.out_features)) if spec.bias else None
        return {"weight": weight, "bias": bias}

    layers = [{spec.name: part(spec) for spec in layer.linears() + layer.norms()} for layer in recipe.layers]
    params = {"embeddings": {"word": vector((60, HIDDEN), 1.0), "position": vector((24, HIDDEN), 1.0),
                             "token_type": vector((2, HIDDEN), 1.0), "layer_norm": part(recipe.embeddings.norm),
                             "projection": None},
              "layers": layers, "pooler": None}
    if recipe.final_norm is not None:
        params["final_norm"] = part(recipe.final_norm)
    return params


def copy(params):
    return {key: (copy(value) if isinstance(value, dict) else [copy(layer) for layer in value]
                  if isinstance(value, list) else value) for key, value in params.items()}


def both_backends(recipe, params, output_hidden_states=False):
    from transformer.numba_backend import forward

    config = config_with(recipe)
    ids = np.random.default_rng(5).integers(1, 60, size=(3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    slow = numpy_model.encoder_forward(params, config, ids, mask, None, output_hidden_states)
    prepared = forward.prepare(copy(params), config)
    fast = forward.encoder_forward(prepared, config, ids, mask, None, output_hidden_states)
    return slow, fast, mask.astype(bool), prepared


@pytest.mark.parametrize("skip_first_norm", [False, True], ids=["every layer normed", "first layer without one"])
@pytest.mark.parametrize("bias", [True, False], ids=["biases", "bias-free"])
def test_pre_norm_layers_and_a_final_norm_match_the_numpy_path(bias, skip_first_norm):
    recipe = recipe_of(pre_norm=True, bias=bias, skip_first_norm=skip_first_norm)
    (slow, slow_states, _), (fast, fast_states, _), real, _ = both_backends(recipe, random_params(recipe), True)
    assert fast.dtype == np.float32
    assert np.abs(fast - slow)[real].max() <= 1e-5 * max(1.0, np.abs(slow[real]).max())
    for ours, theirs in zip(fast_states, slow_states):  # each layer's output, the last one normed
        assert np.abs(ours - theirs)[real].max() <= 1e-5 * max(1.0, np.abs(theirs[real]).max())


def test_a_pre_norm_block_normalises_into_its_own_buffer_and_keeps_the_residual():
    from transformer.kernels.program import describe

    recipe = recipe_of(pre_norm=True, skip_first_norm=True)
    *_, prepared = both_backends(recipe, random_params(recipe))
    names = [linear.name for linear in prepared.stack.layout.linears]
    assert describe(prepared.program, 0, names).splitlines() == [
        "GEMM       QKV = HIDDEN @ W[qkv] + b",
        "ATTENTION  CONTEXT = attention(QKV)",
        "GEMM       ATTENDED = CONTEXT @ W[attention_output] + b + HIDDEN",
        "NORM       NORMED = LayerNorm(ATTENDED)",
        "MLP        HIDDEN = gelu_tanh(NORMED @ W[up] + b) @ W[down] + b + ATTENDED",
    ]
    assert describe(prepared.program, 1, names).splitlines()[0] == "NORM       NORMED = LayerNorm(HIDDEN)"


def test_bias_free_linears_give_the_bits_of_zero_biases():
    with_biases = recipe_of(pre_norm=False, bias=True)
    params = random_params(with_biases, zero_biases=True)
    without = dataclasses.replace(with_biases, layers=tuple(layer_recipe(pre_norm=False, bias=False)
                                                            for _ in range(LAYERS)))
    bias_free = copy(params)
    for layer in bias_free["layers"]:
        for name in ("query", "key", "value", "attention_output", "up", "down"):
            layer[name]["bias"] = None
    _, (zeros, _, _), _, _ = both_backends(with_biases, params)
    _, (none, _, _), _, prepared = both_backends(without, bias_free)
    assert all(bias.shape[1] == 0 for bias in prepared.stack.bias.values())  # nothing stored, nothing added
    np.testing.assert_array_equal(zeros, none)
