"""GGML dequantization: the NumPy reference, its Numba twin and the `gguf` package's own, on
random blocks of every supported type (any bit pattern, and blocks the `gguf` package quantized)."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from transformer.gguf import quants  # noqa: E402
from transformer.kernels import quants as kernels  # noqa: E402

SUPPORTED = list(quants.DEQUANTIZE)
TYPES = {t.name: t for t in quants.GGML_TYPES.values()}


def theirs(type_name, blocks):
    """The `gguf` package's weights for blocks uint8 [n, type_size] -> float32 [n, block_size]."""
    data = blocks.reshape(-1)
    if type_name == "F32":  # gguf returns F32 as a view of the bytes
        return data.view("<f4").astype(np.float32).reshape(len(blocks), 1)
    with np.errstate(invalid="ignore"):  # inf * 0 in a block of random bytes
        weights = gguf.quants.dequantize(data, GGMLQuantizationType[type_name])
    return np.asarray(weights, dtype=np.float32).reshape(len(blocks), TYPES[type_name].block_size)


def ours(type_name, blocks):
    with np.errstate(invalid="ignore"):
        return quants.DEQUANTIZE[type_name](blocks)


def kernel(type_name, blocks):
    return kernels.dequantize_blocks(TYPES[type_name].number, blocks)


def test_the_type_table_is_ggmls():
    """Numbers, block sizes and block bytes as the gguf package (llama.cpp's) has them, but for
    Q8_1: ggml's block_q8_1 is two halves and 32 int8 (36 bytes, static_assert'ed in ggml-common.h);
    the gguf package still counts two float32 (40). No file stores Q8_1 (it only carries
    activations inside ggml), and a reader must follow ggml's layout."""
    assert {t.name for t in quants.GGML_TYPES.values()} == {t.name for t in GGMLQuantizationType}
    for number, ggml_type in quants.GGML_TYPES.items():
        assert GGMLQuantizationType[ggml_type.name].value == number
        sizes = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type.name]]
        assert sizes == ((32, 40) if ggml_type.name == "Q8_1" else (ggml_type.block_size, ggml_type.type_size))
    assert TYPES["Q8_1"].type_size == 2 + 2 + 32
    assert not set(quants.REMOVED_TYPES) & set(quants.GGML_TYPES)


def test_the_kernel_table_agrees_with_the_type_table():
    for name in SUPPORTED:
        number = TYPES[name].number
        assert (kernels.BLOCK_SIZE[number], kernels.TYPE_SIZE[number]) == (TYPES[name].block_size, TYPES[name].type_size)
    assert len(kernels.TYPE_SIZE) == len(SUPPORTED)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(SUPPORTED), st.integers(1, 40), st.randoms(use_true_random=False))
def test_random_blocks_dequantize_alike_in_numpy_numba_and_gguf(type_name, n_blocks, random):
    """Any bytes at all, NaN and infinite scales included: the three agree to the bit (NaN where NaN)."""
    blocks = np.frombuffer(random.randbytes(n_blocks * TYPES[type_name].type_size), np.uint8)
    blocks = blocks.reshape(n_blocks, -1)
    reference = theirs(type_name, blocks)
    for got in (ours(type_name, blocks), kernel(type_name, blocks)):
        assert got.dtype == np.float32 and got.shape == reference.shape
        np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16", "F16"])
def test_blocks_the_gguf_package_quantized_come_back_alike(type_name):
    weights = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    stored = np.asarray(gguf.quants.quantize(weights, GGMLQuantizationType[type_name])).view(np.uint8)
    blocks = stored.reshape(-1, TYPES[type_name].type_size)
    reference = theirs(type_name, blocks)
    np.testing.assert_array_equal(ours(type_name, blocks), reference)
    np.testing.assert_array_equal(kernel(type_name, blocks), reference)
    assert np.abs(reference.reshape(64, 256) - weights).mean() < 0.1  # they really are these weights


def test_half_to_float_is_numpys_conversion_for_every_half():
    bits = np.arange(1 << 16, dtype=np.uint32).astype("<u2")
    expected = bits.view("<f2").astype(np.float32)
    got = kernels.dequantize_blocks(kernels.F16, bits.view(np.uint8).reshape(-1, 2)).reshape(-1)
    np.testing.assert_array_equal(got, expected)
    numbers = ~np.isnan(expected)  # (a NaN's sign means nothing)
    assert np.array_equal(np.signbit(got[numbers]), np.signbit(expected[numbers]))  # -0.0 stays -0.0


def test_the_docstring_example():
    block = np.array([0x00, 0x3C] + [0x98] * 16, dtype=np.uint8)[None, :]
    np.testing.assert_array_equal(quants.dequantize_q4_0(block)[0], [0.0] * 16 + [1.0] * 16)


def test_dequantize_reshapes_to_the_tensor_shape():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=3 * 2 * 34, dtype=np.uint8)
    data[0::34], data[1::34] = 0, 0x3C  # every scale 1.0
    weights = quants.dequantize("Q8_0", data, (3, 64))
    assert weights.shape == (3, 64) and weights.dtype == np.float32
    np.testing.assert_array_equal(weights.reshape(-1, 32)[:, :], data.reshape(-1, 34)[:, 2:].view(np.int8))


def test_many_blocks_split_over_threads_match_one_thread():
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, size=(4096, 144), dtype=np.uint8)  # 1M weights: several chunks
    blocks[:, 0:4] = np.frombuffer(np.full(2 * 4096, 0.01, "<f2").tobytes(), np.uint8).reshape(4096, 4)
    np.testing.assert_array_equal(kernel("Q4_K", blocks), ours("Q4_K", blocks))


def test_dequantize_blocks_refuses_wrong_arguments_by_name():
    with pytest.raises(ValueError, match="ggml type 17"):
        kernels.dequantize_blocks(17, np.zeros((1, 74), np.uint8))
    with pytest.raises(ValueError, match=r"blocks must be uint8 \[n, 18\]"):
        kernels.dequantize_blocks(kernels.Q4_0, np.zeros((1, 20), np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        kernels.dequantize_blocks(kernels.Q4_0, np.zeros((2, 18), np.uint8), out=np.zeros((2, 32), np.float64))
