"""precision="bf16": the exact emulation (NumPy) and its plumbing through the loaders and the CLI.

bf16 here means: every linear of the layers but the kinds the bf16 policy keeps in float32
(`transformer.encoder.BF16_POLICY`) gets bfloat16 weights and bfloat16 inputs (each rounded to
the nearest bfloat16, ties to even), and sums their products in float32; everything else
(biases, activations, residuals, norms, softmax, embeddings) stays float32. The NumPy backend
is that definition written out (`transformer.model.linear` on uint16 weights); every kernel
tier is tested against it (tests/test_bf16_kernels.py).
"""

import numpy as np
import pytest

from transformer import model as numpy_model
from transformer.encoder import BF16_POLICY, LINEAR_KINDS, PRECISIONS, Bf16Policy, Encoder, bf16_layers, linear_kinds
from transformer.model import from_bf16, round_to_bf16, to_bf16

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "bfloat16 keeps float32's exponent."]


def test_round_to_bf16_ties_go_to_even():
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: the even one (1) wins; 1 + 3 * 2^-8 is
    # halfway between 1 + 2^-7 and 1 + 2^-6: the even one (1 + 2^-6) wins.
    ties = np.float32([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)])
    assert round_to_bf16(ties).tolist() == [1.0, 1 + 2 ** -6, -1.0]


def test_round_to_bf16_keeps_specials_and_overflows_to_infinity():
    values = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(np.float32).max, 1e-40])
    rounded = round_to_bf16(values)
    assert rounded.dtype == np.float32
    assert rounded[:4].tolist() == [0.0, 0.0, np.inf, -np.inf] and np.signbit(rounded[1])
    assert np.isnan(rounded[4])
    assert rounded[5] == np.inf  # float32's largest is past bfloat16's largest + half a step
    assert rounded[6] == from_bf16(np.uint16(to_bf16(np.float32(1e-40))))  # subnormals round as any number


def test_round_to_bf16_equals_torch():
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * np.float32(1000)
    values[:4] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.0e38, 1e-39]
    expected = torch.from_numpy(values).to(torch.bfloat16)
    assert np.array_equal(round_to_bf16(values), expected.float().numpy())
    assert np.array_equal(to_bf16(values), expected.view(torch.int16).numpy().view(np.uint16))


def test_bf16_bits_widen_exactly():
    bits = np.arange(0, 1 << 16, 7, dtype=np.uint32).astype(np.uint16)
    bits = bits[(bits & 0x7F80) != 0x7F80]  # no inf / NaN: they do not compare equal to themselves
    assert from_bf16(bits).dtype == np.float32
    assert np.array_equal(to_bf16(from_bf16(bits)), bits)


def test_linear_on_bf16_weights_rounds_its_input_and_sums_in_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    weight = rng.standard_normal((64, 48)).astype(np.float32)
    bias = rng.standard_normal(48).astype(np.float32)
    out = numpy_model.linear(x, to_bf16(weight), bias)
    assert out.dtype == np.float32 and out.shape == (3, 5, 48)
    exact = round_to_bf16(x).astype(np.float64) @ round_to_bf16(weight).astype(np.float64) + bias
    # Exact products, float32 sums: at most K unit roundoffs of the sum of |products|.
    magnitude = np.abs(round_to_bf16(x)).astype(np.float64) @ np.abs(round_to_bf16(weight)) + np.abs(bias)
    assert np.all(np.abs(out - exact) <= 64 * 2.0 ** -24 * magnitude)
    # ... and it is not the float32 product: the rounding is really there.
    assert not np.allclose(out, numpy_model.linear(x, weight, bias), rtol=1e-5, atol=1e-6)


def test_bf16_layers_converts_only_the_linear_weights(minilm_dir):
    encoder = Encoder.from_pretrained(minilm_dir, backend="numpy")
    layers = bf16_layers(encoder.params["layers"], encoder.config.recipe, Bf16Policy())
    first = layers[0]
    for linear in encoder.config.recipe.layers[0].linears():
        assert first[linear.name]["weight"].dtype == np.uint16
        assert first[linear.name]["bias"].dtype == np.float32
    norm = encoder.config.recipe.layers[0].norms()[0]
    assert first[norm.name]["weight"].dtype == np.float32
    assert encoder.params["layers"][0][linear.name]["weight"].dtype == np.float32  # the input is left alone


def test_the_bf16_policy_keeps_its_kinds_of_linear_in_float32(minilm_dir):
    encoder = Encoder.from_pretrained(minilm_dir, backend="numpy")
    recipe = encoder.config.recipe
    assert linear_kinds(recipe.layers[0]) == {"query": "qkv", "key": "qkv", "value": "qkv",
                                              "attention_output": "attention_output", "intermediate": "ffn_up",
                                              "output": "ffn_down"}
    policy = Bf16Policy(fp32=("ffn_down", "attention_output"))
    for layer, params in zip(recipe.layers, bf16_layers(encoder.params["layers"], recipe, policy)):
        for name, kind in linear_kinds(layer).items():
            assert params[name]["weight"].dtype == (np.float32 if kind in policy.fp32 else np.uint16), name
    # The default: what Encoder(precision="bf16") converts.
    model = Encoder.from_pretrained(minilm_dir, backend="numpy", precision="bf16")
    for name, kind in linear_kinds(recipe.layers[0]).items():
        assert model.params["layers"][0][name]["weight"].dtype == \
            (np.float32 if kind in BF16_POLICY.fp32 else np.uint16), name


def test_a_bf16_policy_names_known_kinds_and_labels_what_it_packs():
    assert Bf16Policy().label == "bf16"
    assert Bf16Policy(fp32=("ffn_down",)).label == "bf16-fp32-ffn_down"
    assert set(BF16_POLICY.fp32) <= set(LINEAR_KINDS)
    with pytest.raises(ValueError, match=r"unknown linear kind\(s\) \['ffn'\]; choose among qkv, attention_output"):
        Bf16Policy(fp32=("ffn",))


def test_unknown_precision_is_refused_by_name(minilm_dir):
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; choose one of 'fp32', 'bf16'"):
        Encoder.from_pretrained(minilm_dir, backend="numpy", precision="fp16")
    assert PRECISIONS == ("fp32", "bf16")


def test_fp32_is_the_default_and_unchanged(minilm_dir):
    ids = [[101, 7592, 2088, 102]]
    default = Encoder.from_pretrained(minilm_dir, backend="numpy")
    explicit = Encoder.from_pretrained(minilm_dir, backend="numpy", precision="fp32")
    assert default.precision == "fp32"
    assert np.array_equal(default(ids).last_hidden_state, explicit(ids).last_hidden_state)


def test_numpy_bf16_encoder_stays_near_fp32(minilm_dir):
    from transformer.sentence import SentenceEncoder

    fp32 = SentenceEncoder.from_pretrained(minilm_dir, backend="numpy")
    bf16 = SentenceEncoder.from_pretrained(minilm_dir, backend="numpy", precision="bf16")
    assert bf16.encoder.precision == "bf16" and "precision='bf16'" in repr(bf16.encoder)
    a, b = fp32.encode(SENTENCES), bf16.encode(SENTENCES)
    assert b.dtype == np.float32
    cosines = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() >= 0.9999
    assert not np.array_equal(a, b)  # the bf16 path really ran


def test_bf16_encoder_pickles_as_bf16(minilm_dir):
    import pickle

    encoder = Encoder.from_pretrained(minilm_dir, backend="numpy", precision="bf16")
    again = pickle.loads(pickle.dumps(encoder))
    assert again.precision == "bf16"
    ids = [[101, 7592, 2088, 102]]
    assert np.array_equal(again(ids).last_hidden_state, encoder(ids).last_hidden_state)


def test_cli_takes_precision(minilm_dir, capsys):
    from transformer import cli_common
    from transformer.cli import main

    assert cli_common.PRECISIONS == PRECISIONS

    assert main(["similarity", "a cat", "a dog", "--model", str(minilm_dir), "--backend", "numpy",
                 "--precision", "bf16"]) == 0
    assert "0." in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["similarity", "a cat", "a dog", "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
