"""Every backward function of transformer/backward.py against torch autograd, on random inputs,
in float64 (the math: agreement to ~1e-10) and float32 (what training runs: ~1e-5)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from transformer import backward, model, pooling  # noqa: E402

DTYPES = [np.float64, np.float32]
# The largest |ours - torch| / |torch| (Frobenius norms) accepted for one gradient.
TOLERANCE = {np.float64: 1e-10, np.float32: 2e-5}


def relative_error(ours, reference):
    reference = reference.detach().numpy() if isinstance(reference, torch.Tensor) else reference
    return float(np.linalg.norm(ours - reference) / max(np.linalg.norm(reference), 1e-30))


def assert_close(ours, reference, dtype, what):
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    error = relative_error(ours, reference)
    assert error <= TOLERANCE[dtype], f"{what}: relative error {error:.2e}"


def random(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def leaf(array):
    return torch.tensor(array, requires_grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_backward_matches_autograd(dtype, with_bias):
    rng = np.random.default_rng(0)
    x, weight, bias = random(rng, (2, 5, 7), dtype), random(rng, (7, 3), dtype), random(rng, (3,), dtype)
    d_out = random(rng, (2, 5, 3), dtype)
    tx, tw, tb = leaf(x), leaf(weight), leaf(bias)
    out = tx @ tw + (tb if with_bias else 0)
    out.backward(torch.tensor(d_out))
    d_x, grads = backward.linear_backward(d_out, x, weight, bias if with_bias else None)
    assert_close(d_x, tx.grad, dtype, "d_x")
    assert_close(grads["weight"], tw.grad, dtype, "d_weight")
    if with_bias:
        assert_close(grads["bias"], tb.grad, dtype, "d_bias")
    else:
        assert grads["bias"] is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_backward_matches_autograd(dtype):
    rng = np.random.default_rng(1)
    x, d_out = random(rng, (3, 4, 16), dtype, 3.0), random(rng, (3, 4, 16), dtype)
    weight, bias = random(rng, (16,), dtype), random(rng, (16,), dtype)
    tx, tw, tb = leaf(x), leaf(weight), leaf(bias)
    torch.nn.functional.layer_norm(tx, (16,), tw, tb, eps=1e-12).backward(torch.tensor(d_out))
    d_x, grads = backward.layer_norm_backward(d_out, x, weight, bias, 1e-12)
    assert_close(d_x, tx.grad, dtype, "d_x")
    assert_close(grads["weight"], tw.grad, dtype, "d_weight")
    assert_close(grads["bias"], tb.grad, dtype, "d_bias")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_backward_matches_autograd(dtype):
    rng = np.random.default_rng(2)
    scores, d_out = random(rng, (2, 3, 5, 5), dtype, 2.0), random(rng, (2, 3, 5, 5), dtype)
    tscores = leaf(scores)
    torch.softmax(tscores, dim=-1).backward(torch.tensor(d_out))
    probabilities = model.softmax(scores)
    assert_close(backward.softmax_backward(d_out, probabilities), tscores.grad, dtype, "d_scores")


def f32(constant):
    """The float32 value of a constant, as model.py's forward functions use it."""
    return float(np.float32(constant))


# The forward functions of model.py written in torch, with model.py's float32 constants (in
# float64 an exactly-rounded sqrt(2 / pi) would differ from them by ~1e-8).
TORCH_ACTIVATIONS = {
    "gelu": lambda x: torch.nn.functional.gelu(x),
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(f32(math.sqrt(2 / math.pi)) * (x + f32(0.044715) * x ** 3))),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * f32(0.7978845608) * (1.0 + f32(0.044715) * x * x))),
    "quick_gelu": lambda x: x * torch.sigmoid(f32(1.702) * x),
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
}


def test_torch_tanh_gelu_is_torchs_own():
    x = torch.linspace(-6, 6, 101, dtype=torch.float32)
    assert torch.allclose(TORCH_ACTIVATIONS["gelu_new"](x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(TORCH_ACTIVATIONS))
def test_activation_backward_matches_autograd(name, dtype):
    rng = np.random.default_rng(3)
    x, d_out = random(rng, (64, 33), dtype, 3.0), random(rng, (64, 33), dtype)
    tx = leaf(x)
    TORCH_ACTIVATIONS[name](tx).backward(torch.tensor(d_out))
    # the exact GELU's erf is a fit good to ~1e-7, so its float64 derivative agrees to that
    tolerance = 1e-6 if (name == "gelu" and dtype == np.float64) else TOLERANCE[dtype]
    ours = backward.activation_backward(name)(d_out, x)
    assert ours.dtype == dtype
    assert relative_error(ours, tx.grad) <= tolerance


def test_every_forward_activation_has_a_backward():
    assert set(backward.ACTIVATION_BACKWARDS) == set(model.ACTIVATIONS)


def test_unknown_activation_backward_names_it():
    with pytest.raises(ValueError, match="'gelu_exotic'"):
        backward.activation_backward("gelu_exotic")


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_backward_with_padding_mask_and_position_bias_matches_autograd(dtype):
    rng = np.random.default_rng(4)
    batch, heads, seq, head_dim = 3, 2, 6, 4
    query, key, value = (random(rng, (batch, heads, seq, head_dim), dtype) for _ in range(3))
    position_bias = random(rng, (1, heads, seq, seq), dtype)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0], [0] * 6])  # a full row, a padded row, all padding
    mask_bias = model.attention_mask_bias(mask).astype(dtype)
    d_context = random(rng, (batch, heads, seq, head_dim), dtype)

    tq, tk, tv, tbias = leaf(query), leaf(key), leaf(value), leaf(position_bias)
    scores = tq @ tk.transpose(-1, -2) / math.sqrt(head_dim) + tbias + torch.tensor(mask_bias)
    (torch.softmax(scores, dim=-1) @ tv).backward(torch.tensor(d_context))

    _, probabilities = model.attention(query, key, value, mask_bias, position_bias)
    d_query, d_key, d_value, d_scores = backward.attention_backward(d_context, query, key, value, probabilities)
    assert_close(d_query, tq.grad, dtype, "d_query")
    assert_close(d_key, tk.grad, dtype, "d_key")
    assert_close(d_value, tv.grad, dtype, "d_value")
    assert_close(d_scores.sum(axis=0, keepdims=True), tbias.grad, dtype, "d_position_bias")
    assert not d_key[1, :, 4:].any() and not d_value[1, :, 4:].any(), "padding keys get no gradient"


@pytest.mark.parametrize("dtype", DTYPES)
def test_table_backward_adds_repeated_ids_like_autograd(dtype):
    rng = np.random.default_rng(5)
    table = random(rng, (10, 4), dtype)
    ids = np.array([[1, 3, 3, 0], [9, 1, 1, 1]])
    d_rows = random(rng, (2, 4, 4), dtype)
    ttable = leaf(table)
    ttable[torch.tensor(ids)].backward(torch.tensor(d_rows))
    assert_close(backward.table_backward(d_rows, table, ids), ttable.grad, dtype, "d_table")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relative_position_bias_backward_matches_autograd(dtype):
    rng = np.random.default_rng(6)
    table, seq = random(rng, (32, 3), dtype), 40  # long enough for the logarithmic buckets
    d_bias = random(rng, (1, 3, seq, seq), dtype)
    ttable = leaf(table)
    buckets = torch.tensor(model.relative_position_buckets(seq))
    ttable[buckets].permute(2, 0, 1)[None].backward(torch.tensor(d_bias))
    ours = backward.relative_position_bias_backward(d_bias, table, seq)
    assert_close(ours, ttable.grad, dtype, "d_table")


TORCH_POOLING = {
    "mean": lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9),
    "mean_sqrt_len_tokens": lambda h, m: (h * m[..., None]).sum(1) / torch.sqrt(m.sum(1, keepdim=True)),
    "cls": lambda h, m: h[:, 0],
    "max": lambda h, m: torch.where(m[..., None] > 0, h, torch.tensor(-1e9, dtype=h.dtype)).max(1)[0],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", sorted(TORCH_POOLING))
def test_pooling_backward_matches_autograd(mode, dtype):
    rng = np.random.default_rng(7)
    hidden, d_pooled = random(rng, (3, 5, 8), dtype), random(rng, (3, 8), dtype)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    thidden = leaf(hidden)
    TORCH_POOLING[mode](thidden, torch.tensor(mask, dtype=thidden.dtype)).backward(torch.tensor(d_pooled))
    ours = backward.POOLING_BACKWARDS[mode](d_pooled, mask, hidden)
    assert_close(ours, thidden.grad, dtype, f"{mode} pooling")
    assert not ours[1, 3:].any(), "padding gets no gradient"


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_backward_matches_autograd(dtype):
    rng = np.random.default_rng(8)
    vectors, d_out = random(rng, (4, 6), dtype, 2.0), random(rng, (4, 6), dtype)
    tvectors = leaf(vectors)
    torch.nn.functional.normalize(tvectors, p=2, dim=-1).backward(torch.tensor(d_out))
    assert_close(backward.normalize_backward(d_out, vectors), tvectors.grad, dtype, "d_vectors")


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooler_backward_matches_autograd(dtype):
    rng = np.random.default_rng(9)
    hidden, d_pooled = random(rng, (2, 4, 6), dtype), random(rng, (2, 6), dtype)
    params = {"weight": random(rng, (6, 6), dtype, 0.5), "bias": random(rng, (6,), dtype)}
    thidden, tw, tb = leaf(hidden), leaf(params["weight"]), leaf(params["bias"])
    torch.tanh(thidden[:, 0] @ tw + tb).backward(torch.tensor(d_pooled))
    d_hidden, grads = backward.pooler_backward(d_pooled, params, hidden)
    assert_close(d_hidden, thidden.grad, dtype, "d_hidden")
    assert_close(grads["weight"], tw.grad, dtype, "d_weight")
    assert_close(grads["bias"], tb.grad, dtype, "d_bias")


def test_pooling_backwards_cover_the_encoder_pooling_modes():
    assert {"mean", "cls", "max", "mean_sqrt_len_tokens"} <= set(pooling.POOLING_FUNCTIONS)
    assert set(backward.POOLING_BACKWARDS) == {"mean", "cls", "max", "mean_sqrt_len_tokens"}
