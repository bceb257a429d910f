"""The activation kernels against their NumPy twins (transformer.model.ACTIVATIONS) and math."""

import math

import numpy as np
import pytest

from transformer import model
from transformer.kernels import activations
from transformer.kernels._jit import jit

NAMES = sorted(name for name in model.ACTIVATIONS)
SHAPES = [(1, 1), (3, 7), (17, 129), (64, 1536)]


@jit
def _elementwise(function_code, x):
    """Apply one scalar device function to every element (0 exp, 1 erf, 2 tanh, 3 GELU,
    4 exp of x <= 0)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        if function_code == 0:
            out[i] = activations.exp_f32(x[i])
        elif function_code == 1:
            out[i] = activations.erf_f32(x[i])
        elif function_code == 2:
            out[i] = activations.tanh_f32(x[i])
        elif function_code == 4:
            out[i] = activations.exp_nonpositive_f32(x[i])
        else:
            out[i] = activations.gelu_erf(x[i])
    return out


def ulp_error(got, exact):
    """|got - exact| in units of the float32 spacing at exact."""
    spacing = np.spacing(np.maximum(np.abs(exact), np.finfo(np.float32).tiny).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_activation_matches_the_numpy_twin(name, shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    twin = model.ACTIVATIONS[name]  # the kernel of the same name computes the same function
    got = activations.bias_activation(x, bias, twin.__name__)
    expected = twin(x + bias)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.abs(got - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "quick_gelu", "relu", "silu", "tanh"])
def test_bias_activation_equals_its_naive_loop(name):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 33)) * 3).astype(np.float32)
    bias = rng.standard_normal(33).astype(np.float32)
    fast = activations.bias_activation(x, bias, name)
    naive = activations.bias_activation_naive(x, bias, name)
    assert naive.dtype == np.float32
    np.testing.assert_allclose(fast, naive, rtol=0, atol=2e-7)


def test_bias_activation_in_place_and_large_inputs_run_in_parallel_to_the_same_answer():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 512)).astype(np.float32)  # over the parallel threshold
    bias = rng.standard_normal(512).astype(np.float32)
    expected = model.gelu(x + bias)
    out = activations.bias_activation(x, bias, "gelu", out=x)
    assert out is x
    assert np.abs(x - expected).max() <= 1e-6 * np.abs(expected).max()


def test_exp_is_within_two_ulp_and_handles_the_edges():
    x = np.concatenate([np.linspace(-86.6, 88.72, 400_001), [0.0, -1e-30, 1e-30]]).astype(np.float32)
    got = _elementwise(0, x)
    assert got.dtype == np.float32
    assert ulp_error(got, np.exp(x.astype(np.float64))).max() <= 2
    # below -86.6 (results under 2.4e-38) exp flushes to 0 rather than make subnormals
    edges = np.array([-np.inf, np.inf, np.nan, -3.4e38, 89.0, -86.7, -104.0], dtype=np.float32)
    got = _elementwise(0, edges)
    assert got[0] == 0 and got[1] == np.inf and np.isnan(got[2])
    assert got[3] == 0 and got[4] == np.inf and got[5] == 0 and got[6] == 0


def test_exp_of_nonpositive_inputs_is_within_two_ulp_and_handles_the_edges():
    # softmax's exp (inputs x - max <= 0): exp_f32's numbers without its overflow branch
    x = np.concatenate([np.linspace(-86.6, 0.0, 400_001), [-1e-30, -0.0]]).astype(np.float32)
    got = _elementwise(4, x)
    assert got.dtype == np.float32
    assert ulp_error(got, np.exp(x.astype(np.float64))).max() <= 2
    np.testing.assert_array_equal(got, _elementwise(0, x))
    edges = np.array([-np.inf, np.nan, -3.4e38, -86.7, -104.0], dtype=np.float32)
    got = _elementwise(4, edges)
    assert got[0] == 0 and np.isnan(got[1]) and got[2] == 0 and got[3] == 0 and got[4] == 0


def test_erf_is_within_two_ulp_of_math_erf():
    x = np.linspace(-6, 6, 200_001).astype(np.float32)
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert ulp_error(_elementwise(1, x), exact).max() <= 2


def test_gelu_is_within_two_ulp_plus_what_rounding_1_plus_erf_would_cost():
    # torch computes 0.5 x (1 + erf(x / sqrt 2)) in float32: rounding 1 + erf alone costs up
    # to 2**-25 |x| there. The kernel: at most 2 ulp of the exact GELU plus 2**-24 |x|.
    x = np.concatenate([np.linspace(-14, 14, 400_001), np.geomspace(1e-30, 1, 20_001), -np.geomspace(1e-30, 1, 20_001)])
    x = x.astype(np.float32)
    x64 = x.astype(np.float64)
    exact = 0.5 * x64 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x64])
    got = _elementwise(3, x)
    assert got.dtype == np.float32
    spacing = np.spacing(np.maximum(np.abs(exact), np.finfo(np.float32).tiny).astype(np.float32)).astype(np.float64)
    excess = np.abs(got.astype(np.float64) - exact) - (2 * spacing + 2.0**-24 * np.abs(x64))
    assert excess.max() <= 0, x[np.argmax(excess)]
    # the tails: x for large x, (-)0 for very negative x, whatever |x|; NaN and -inf give NaN like torch
    edges = np.array([1e30, np.inf, -1e30, -40.0, np.nan, -np.inf], dtype=np.float32)
    got = _elementwise(3, edges)
    assert got[0] == 1e30 and got[1] == np.inf and got[2] == 0 and got[3] == 0
    assert np.isnan(got[4]) and np.isnan(got[5])


def test_tanh_is_within_two_ulp():
    x = np.linspace(-12, 12, 200_001).astype(np.float32)
    assert ulp_error(_elementwise(2, x), np.tanh(x.astype(np.float64))).max() <= 2


def test_gelu_tails_stay_finite_and_tiny():
    x = np.array([[-1e4, -40, -10, 0, 10, 40, 1e4]], dtype=np.float32)
    got = activations.bias_activation(x, np.zeros(7, np.float32), "gelu")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, model.gelu(x), rtol=1e-6, atol=1e-6)


def test_every_config_activation_name_has_a_kernel():
    from transformer.config import SUPPORTED_ACTIVATIONS

    assert SUPPORTED_ACTIVATIONS == tuple(model.ACTIVATIONS)  # one list of names
    for name in SUPPORTED_ACTIVATIONS:
        assert model.ACTIVATIONS[name].__name__ in activations.ACTIVATION_CODES


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="activation 'gelu_fancy' has no kernel"):
        activations.bias_activation(np.zeros((2, 2), np.float32), np.zeros(2, np.float32), "gelu_fancy")


def test_bias_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        activations.bias_activation(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), "relu")


def test_non_float32_input_is_refused():
    with pytest.raises(ValueError, match="float32"):
        activations.bias_activation(np.zeros((2, 4)), np.zeros(4, np.float32), "relu")
