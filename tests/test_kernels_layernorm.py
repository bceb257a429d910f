"""LayerNorm (fused with the residual add) and softmax kernels against their NumPy twins."""

import numpy as np
import pytest

from transformer import model
from transformer.kernels import layernorm, softmax

SHAPES = [(1, 1), (1, 384), (3, 7), (17, 383), (128, 768), (200, 1024)]  # the last runs in parallel


def random_rows(shape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    residual = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal(shape[1]).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    return x, residual, weight, bias


def close(got, expected, tolerance=1e-6):
    return np.abs(got - expected).max() <= tolerance * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_residual_layer_norm_matches_numpy_layer_norm_of_the_sum(shape, eps):
    x, residual, weight, bias = random_rows(shape, sum(shape))
    got = layernorm.residual_layer_norm(x, residual, weight, bias, eps)
    assert got.dtype == np.float32
    assert close(got, model.layer_norm(x + residual, weight, bias, eps))


@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm_matches_numpy(shape):
    x, _, weight, bias = random_rows(shape, 7)
    got = layernorm.layer_norm(x, weight, bias, 1e-12)
    assert got.dtype == np.float32
    assert close(got, model.layer_norm(x, weight, bias, 1e-12))


def test_layer_norm_equals_its_naive_loop():
    x, residual, weight, bias = random_rows((9, 65), 1)
    fast = layernorm.residual_layer_norm(x, residual, weight, bias, 1e-12)
    naive = layernorm.layer_norm_naive(x, residual, weight, bias, np.float32(1e-12))
    assert naive.dtype == np.float32
    assert close(fast, naive)


def test_layer_norm_may_write_over_its_input():
    x, residual, weight, bias = random_rows((5, 32), 2)
    expected = model.layer_norm(x + residual, weight, bias, 1e-12)
    assert layernorm.residual_layer_norm(x, residual, weight, bias, 1e-12, out=residual) is residual
    assert close(residual, expected)
    assert layernorm.layer_norm(x, weight, bias, 1e-12, out=x) is x


def test_layer_norm_of_a_constant_row_is_its_bias():
    weight, bias = np.ones(8, np.float32), np.arange(8, dtype=np.float32)
    got = layernorm.layer_norm(np.full((2, 8), 3.5, np.float32), weight, bias, 1e-12)
    np.testing.assert_array_equal(got, np.broadcast_to(bias, (2, 8)))


def test_layer_norm_refuses_mismatched_weight():
    with pytest.raises(ValueError, match=r"weight must be float32 \[8\]"):
        layernorm.layer_norm(np.zeros((2, 8), np.float32), np.ones(7, np.float32), np.zeros(8, np.float32), 1e-12)


def test_residual_layer_norm_refuses_a_residual_of_another_shape():
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="residual must be a C-contiguous float32 array of shape"):
        layernorm.residual_layer_norm(x, np.zeros((3, 8), np.float32), np.ones(8, np.float32), np.zeros(8, np.float32), 1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 129), (64, 512), (300, 300)])
def test_softmax_matches_numpy(shape):
    x = (np.random.default_rng(sum(shape)).standard_normal(shape) * 5).astype(np.float32)
    got = softmax.softmax(x)
    assert got.dtype == np.float32 and got.shape == shape
    assert close(got, model.softmax(x), 5e-7)


def test_softmax_equals_its_naive_loop():
    x = (np.random.default_rng(0).standard_normal((7, 100)) * 5).astype(np.float32)
    assert close(softmax.softmax(x), softmax.softmax_naive(x), 5e-7)


def test_softmax_of_a_fully_masked_row_is_uniform_not_nan():
    x = np.full((2, 5), model.MASK_VALUE, np.float32)
    x[0, 1] = 0.0
    got = softmax.softmax(x)
    np.testing.assert_array_equal(got[0], [0, 1, 0, 0, 0])
    np.testing.assert_allclose(got[1], 0.2, rtol=1e-6)
    np.testing.assert_array_equal(got, model.softmax(x))


def test_softmax_refuses_float64():
    with pytest.raises(ValueError, match="softmax: x must be a float32 array"):
        softmax.softmax(np.zeros((2, 2)))


def test_layer_norm_checked_equals_layer_norm_in_place():
    from transformer.kernels.layernorm import layer_norm, layer_norm_bounds, layer_norm_checked

    rng = np.random.default_rng(11)
    x = rng.standard_normal((37, 96)).astype(np.float32)
    weight, bias = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    expected = layer_norm(x, weight, bias, 1e-12)
    out = x.copy()
    assert layer_norm_checked(out, weight, bias, np.float32(1e-12), out, layer_norm_bounds(37, 96)) is out
    assert out.dtype == np.float32 and np.array_equal(out, expected)
