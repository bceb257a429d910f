"""The Numba backward (kernels/backward.py, `backward.numba_steps()`) against the NumPy backward:
each fused kernel against its naive float64 loop and its NumPy twin, and whole-model gradients
and training steps with backend="numba" against backend="numpy".

Bounds (relative error, Frobenius norms): a fused kernel within 1e-6 of the float64 loop (the
NumPy twin is held to the same bound); whole-model gradients within 1e-5 of the NumPy path's
(the two add their float32 sums in different orders, through six layers)."""

from pathlib import Path

import numpy as np
import pytest

from transformer import backward, model, optim, train
from transformer.encoder import Encoder
from transformer.kernels import backward as fast
from transformer.sentence import SentenceEncoder

FAMILIES = Path(__file__).parent / "references" / "families"
MINILM = Path(__file__).parent.parent / "weights" / "all-MiniLM-L6-v2"
KERNEL_TOLERANCE = 1e-6
MODEL_TOLERANCE = 1e-5


def relative_error(ours, reference):
    return float(np.linalg.norm(np.asarray(ours, np.float64) - reference) / max(np.linalg.norm(reference), 1e-30))


def random(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# --- the fused kernels --------------------------------------------------------------------
@pytest.mark.parametrize("rows", [3, 700])  # one thread, and rows split over the threads
def test_layer_norm_backward_kernel_equals_the_loop_and_the_numpy_twin(rows):
    rng = np.random.default_rng(0)
    x, d_out = random(rng, (rows, 96), 3.0) + np.float32(2.0), random(rng, (rows, 96))
    weight, bias = random(rng, (96,)), random(rng, (96,))
    d_x, grads = fast.layer_norm_backward(d_out, x, weight, bias, 1e-12)
    assert d_x.dtype == grads["weight"].dtype == grads["bias"].dtype == np.float32
    loop_x, loop_weight, loop_bias = fast.layer_norm_backward_naive(d_out, x, weight, 1e-12)
    numpy_x, numpy_grads = backward.layer_norm_backward(d_out, x, weight, bias, 1e-12)
    for ours, loop, twin, what in ((d_x, loop_x, numpy_x, "d_x"), (grads["weight"], loop_weight, numpy_grads["weight"],
                                   "d_weight"), (grads["bias"], loop_bias, numpy_grads["bias"], "d_bias")):
        assert relative_error(ours, loop) <= KERNEL_TOLERANCE, what
        assert relative_error(twin, loop) <= KERNEL_TOLERANCE, what


def test_layer_norm_backward_kernel_keeps_the_shape_and_no_bias():
    rng = np.random.default_rng(1)
    x, d_out, weight = random(rng, (2, 5, 16)), random(rng, (2, 5, 16)), random(rng, (16,))
    d_x, grads = fast.layer_norm_backward(d_out, x, weight, None, 1e-5)
    assert d_x.shape == x.shape and grads["bias"] is None
    assert relative_error(d_x, backward.layer_norm_backward(d_out, x, weight, None, 1e-5)[0]) <= KERNEL_TOLERANCE


@pytest.mark.parametrize("size", [37, 300_000])
def test_gelu_backward_kernel_equals_the_loop_and_the_numpy_twin(size):
    rng = np.random.default_rng(2)
    x, d_out = random(rng, (size,), 3.0), random(rng, (size,))
    x[:4] = [0.0, -10.0, 10.0, 0.5]  # the tails, where the CDF saturates
    d_x = fast.gelu_backward(d_out, x)
    assert d_x.dtype == np.float32
    sample = slice(0, 5000)  # the float64 loop is slow: a prefix holds every kind of value
    loop = fast.gelu_backward_naive(d_out[sample], x[sample])
    assert relative_error(d_x[sample], loop) <= KERNEL_TOLERANCE
    assert relative_error(d_x, backward.gelu_backward(d_out, x)) <= KERNEL_TOLERANCE


@pytest.mark.parametrize("name", ["gelu_new", "gelu_fast"])
def test_tanh_gelu_backward_kernels_equal_the_numpy_twins(name):
    rng = np.random.default_rng(3)
    x, d_out = random(rng, (2, 50, 64), 3.0), random(rng, (2, 50, 64))
    d_x = fast.ACTIVATION_BACKWARDS[name](d_out, x)
    twin = backward.activation_backward(name)(d_out.astype(np.float64), x.astype(np.float64))
    assert d_x.shape == x.shape and d_x.dtype == np.float32
    assert relative_error(d_x, twin) <= KERNEL_TOLERANCE


@pytest.mark.parametrize("rows", [4, 3000])
def test_softmax_backward_kernel_equals_the_loop_and_the_numpy_twin(rows):
    rng = np.random.default_rng(4)
    probabilities = model.softmax(random(rng, (rows, 33), 2.0))
    probabilities[0, :5] = 0.0  # padding keys: probability exactly 0, gradient exactly 0
    d_probabilities = random(rng, (rows, 33))
    ours = fast.softmax_backward(d_probabilities, probabilities, scale=0.125)
    assert ours.dtype == np.float32 and np.all(ours[0, :5] == 0)
    head = slice(0, 50)
    loop = fast.softmax_backward_naive(d_probabilities[head], probabilities[head], scale=0.125)
    assert relative_error(ours[head], loop) <= KERNEL_TOLERANCE
    twin = backward.softmax_backward(d_probabilities, probabilities) * np.float32(0.125)
    assert relative_error(ours, twin) <= KERNEL_TOLERANCE


def test_linear_backward_on_the_gemm_equals_the_numpy_twin():
    rng = np.random.default_rng(5)
    x, weight, bias = random(rng, (3, 70, 48)), random(rng, (48, 40)), random(rng, (40,))
    d_out = random(rng, (3, 70, 40))
    d_x, grads = fast.linear_backward(d_out, x, weight, bias, packs=fast.WeightPacks())
    numpy_x, numpy_grads = backward.linear_backward(d_out, x, weight, bias)
    exact_x = d_out.astype(np.float64).reshape(-1, 40) @ weight.astype(np.float64).T
    exact_weight = x.astype(np.float64).reshape(-1, 48).T @ d_out.astype(np.float64).reshape(-1, 40)
    assert d_x.shape == x.shape and d_x.dtype == grads["weight"].dtype == np.float32
    assert relative_error(d_x.reshape(-1, 48), exact_x) <= KERNEL_TOLERANCE
    assert relative_error(grads["weight"], exact_weight) <= KERNEL_TOLERANCE
    assert relative_error(numpy_x.reshape(-1, 48), exact_x) <= KERNEL_TOLERANCE
    assert np.array_equal(grads["bias"], numpy_grads["bias"])


@pytest.mark.parametrize("shape", [(70, 40), (3000, 100)])  # one thread, and columns split over the threads
def test_transpose_kernel_equals_numpy_transpose(shape):
    x = random(np.random.default_rng(8), shape)
    out = fast.transpose(x)
    assert out.flags.c_contiguous and out.dtype == np.float32 and np.array_equal(out, x.T)


@pytest.mark.parametrize("shape, transposed", [((70, 40), False), ((3000, 100), False), ((40, 70), True)])
def test_pack_panels_equals_pack_weight(shape, transposed):
    from transformer.kernels.gemm import pack_weight

    x = random(np.random.default_rng(12), shape)
    x = x.T if transposed else x
    ours, theirs = fast.pack_panels(x), pack_weight(x)
    assert ours.shape == theirs.shape and np.array_equal(ours.panels, theirs.panels)


@pytest.mark.parametrize("inputs, outputs", [(48, 40), (40, 48)])  # either operand the narrower
def test_weight_gradient_equals_the_float64_product(inputs, outputs):
    rng = np.random.default_rng(9)
    x, d_out = random(rng, (210, inputs)), random(rng, (210, outputs))
    d_weight = fast.weight_gradient(x, d_out)
    assert d_weight.shape == (inputs, outputs) and d_weight.dtype == np.float32
    exact = x.astype(np.float64).T @ d_out.astype(np.float64)
    assert relative_error(d_weight, exact) <= KERNEL_TOLERANCE
    fast.weight_gradient(x[::-1].copy(), d_out)  # the same shapes again: its reused buffers overwritten
    assert relative_error(d_weight, exact) <= KERNEL_TOLERANCE, "a result is never a reused buffer"


@pytest.mark.parametrize("size", [13, 700_000])  # one thread, and elements split over the threads
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_adamw_equals_the_loop_and_the_numpy_twin(size, weight_decay):
    from transformer.kernels import optimizer

    rng = np.random.default_rng(10)
    param, grad = random(rng, (size,)), random(rng, (size,), 1e-3)
    m, v = random(rng, (size,), 1e-3), np.abs(random(rng, (size,), 1e-6))
    numbers = dict(lr=1e-3, weight_decay=weight_decay, beta1=0.9, beta2=0.999, eps=1e-8,
                   bias_correction1=1 - 0.9 ** 3, bias_correction2_sqrt=np.sqrt(1 - 0.999 ** 3))
    fused = [a.copy() for a in (param, m, v)]
    optimizer.adamw_update(fused[0], grad, fused[1], fused[2], **numbers)
    head = slice(0, 2000)  # the float64 loop is slow: a prefix
    loop = optimizer.adamw_naive(param[head], grad[head], m[head], v[head], **numbers)
    for ours, looped in zip(fused, loop):
        assert ours.dtype == np.float32
        assert relative_error(ours[head], looped) <= KERNEL_TOLERANCE
    twin_params = {"w": param.copy()}
    twin = optim.AdamW(weight_decay=weight_decay, step_count=2, moments={"w": (m.copy(), v.copy())})
    twin.step(twin_params, {"w": grad}, 1e-3)
    assert relative_error(fused[0], twin_params["w"]) <= 1e-7


def test_fused_sum_of_squares_equals_numpy():
    from transformer.kernels import optimizer

    x = random(np.random.default_rng(11), (1000, 700))
    assert optimizer.sum_of_squares(x) == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)), rel=1e-12)


def test_weight_packs_pack_each_weight_once_and_a_new_array_anew():
    rng = np.random.default_rng(6)
    weight = random(rng, (8, 20))
    packs = fast.WeightPacks()
    assert packs.packed(weight) is packs.packed(weight)
    assert packs.packed(weight, transposed=True).shape == (20, 8)
    other = weight.copy()
    assert packs.packed(other) is not packs.packed(weight)


@pytest.mark.parametrize("kernel", [fast.gelu_backward, fast.softmax_backward])
def test_kernels_refuse_float64_naming_the_argument(kernel):
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="must be a float32 array, got float64"):
        kernel(x.astype(np.float32), x)


def test_layer_norm_backward_kernel_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="layer_norm_backward: x has shape"):
        fast.layer_norm_backward(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32), np.ones(4, np.float32),
                                 None, 1e-5)


# --- the whole model -------------------------------------------------------------------------
def flatten(tree):
    return dict(optim.leaves(tree))


@pytest.mark.parametrize("case", ["bert_gelu", "bert_gelu_new_4heads", "bert_relu_1head_padding_row", "mpnet_gelu",
                                  "electra_projection"])
def test_whole_model_gradients_on_numba_equal_numpy(case):
    reference = dict(np.load(FAMILIES / case / "reference.npz"))
    ids, mask, types = reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]
    encoder = Encoder.from_pretrained(FAMILIES / case, backend="numpy")
    results = {}
    for name, steps in (("numpy", backward.NUMPY_STEPS), ("numba", backward.numba_steps())):
        hidden, cache = backward.encoder_forward_with_cache(encoder.params, encoder.config, ids, mask, types, steps)
        d_hidden = np.random.default_rng(7).standard_normal(hidden.shape).astype(np.float32)
        results[name] = hidden, flatten(backward.encoder_backward(d_hidden, encoder.params, encoder.config, cache,
                                                                  steps))
    (numpy_hidden, numpy_grads), (numba_hidden, numba_grads) = results["numpy"], results["numba"]
    assert relative_error(numba_hidden, numpy_hidden) <= MODEL_TOLERANCE
    assert numba_grads.keys() == numpy_grads.keys()
    for path, grad in numba_grads.items():
        assert grad.dtype == np.float32, path
        scale = numpy_grads[path]
        if path.endswith("key/bias"):  # 0 in exact arithmetic (see test_backward_model): noise on both sides
            scale = numpy_grads[path.replace("/bias", "/weight")]
        error = np.linalg.norm(grad - numpy_grads[path]) / max(np.linalg.norm(scale), 1e-30)
        assert error <= MODEL_TOLERANCE, f"{case} {path}: relative error {error:.2e}"


@pytest.mark.skipif(not (MINILM / "model.safetensors").is_file(), reason="weights/all-MiniLM-L6-v2 not fetched")
def test_training_steps_on_numba_follow_the_numpy_losses():
    pairs = [("A man is eating food.", "A man eats something."), ("A plane is taking off.", "An aircraft departs."),
             ("A woman plays the violin.", "Someone is playing music."), ("The cat sleeps.", "A kitten naps."),
             ("Children run in a park.", "Kids are playing outside."), ("It is raining.", "The weather is wet.")]
    losses = {}
    for backend in ("numpy", "numba"):
        model = SentenceEncoder.from_pretrained(MINILM, backend="numpy")
        settings = train.Settings(loss="mnrl", batch_size=3, lr=1e-4, shuffle=False, backend=backend)
        trainer = train.Trainer(model, [(a, b, None) for a, b in pairs], settings)
        losses[backend] = trainer.run(stop_after=2)
    assert len(losses["numba"]) == 2
    assert losses["numba"] == pytest.approx(losses["numpy"], rel=MODEL_TOLERANCE)


def test_settings_refuse_an_unknown_backend():
    with pytest.raises(ValueError, match="backend 'cuda' is not one of numpy, numba"):
        train.Settings(backend="cuda").check()
