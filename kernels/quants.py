"""GGML block dequantization: quantized blocks -> float32 weights, one block at a time.

Layouts (ggml's, as the NumPy twins in `transformer/gguf/quants.py` spell out byte by byte):
    blocks  uint8 [n_blocks, type_size] C-contiguous, each row one block as stored in the file
    out     float32 [n_blocks, block_size] C-contiguous, each row that block's weights

    type   block  bytes   per block                                weight
    F32      1      4     little-endian float32                    as is
    F16      1      2     IEEE half                                as is
    BF16     1      2     top half of a float32                    as is
    Q8_0    32     34     d f16, qs int8[32]                       d * q
    Q4_0    32     18     d f16, qs 4-bit[32]                      d * (q - 8)
    Q4_1    32     20     d f16, m f16, qs 4-bit[32]               d * q + m
    Q5_0    32     22     d f16, qh u32, qs 4-bit[32]              d * (q - 16)
    Q5_1    32     24     d f16, m f16, qh u32, qs 4-bit[32]       d * q + m
    Q4_K   256    144     d, dmin f16, 6-bit scales/mins, 4-bit    (d * scale) * q - dmin * min
    Q5_K   256    176     as Q4_K plus a fifth bit per quant       (d * scale) * q - dmin * min
    Q6_K   256    210     4+2-bit quants, int8 scales, d f16       (d * scale) * (q - 32)

The float arithmetic is float32 in ggml's order (so every weight equals the twin's, the
`gguf` package's and llama.cpp's exactly); this module knows block layouts, not models.
Blocks are independent: `dequantize_blocks` splits them over the threads.
"""

import numpy as np

from ._jit import even_bounds, jit, parallel_chunks, run_chunks

# The ggml type numbers this module dequantizes (ggml.h `enum ggml_type`).
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30
BLOCK_SIZE = {F32: 1, F16: 1, BF16: 1, Q8_0: 32, Q4_0: 32, Q4_1: 32, Q5_0: 32, Q5_1: 32, Q4_K: 256, Q5_K: 256,
              Q6_K: 256}
TYPE_SIZE = {F32: 4, F16: 2, BF16: 2, Q8_0: 34, Q4_0: 18, Q4_1: 20, Q5_0: 22, Q5_1: 24, Q4_K: 144, Q5_K: 176,
             Q6_K: 210}

# 2^(e - 25) for a float16 exponent field e: a normal half is (1024 + mantissa) * 2^(e - 25).
_HALF_SCALE = np.array([2.0 ** (e - 25) for e in range(32)], dtype=np.float32)
_SUBNORMAL_SCALE = np.float32(2.0 ** -24)  # a subnormal half is mantissa * 2^-24
_ONE, _MINUS_ONE = np.float32(1.0), np.float32(-1.0)
_INF, _NAN = np.float32(np.inf), np.float32(np.nan)

# Below this many weights per thread, handing blocks to another thread costs more than it saves.
_WEIGHTS_PER_CHUNK = 256 * 1024


@jit
def half_to_float(low, high):
    """The float16 whose little-endian bytes are (low, high), as a float32 (exact)."""
    bits = np.int64(low) | (np.int64(high) << 8)
    sign = _MINUS_ONE if bits & 0x8000 else _ONE
    exponent = (bits >> 10) & 0x1F
    mantissa = bits & 0x3FF
    if exponent == 0:  # zero or subnormal
        return sign * (np.float32(mantissa) * _SUBNORMAL_SCALE)
    if exponent == 31:
        return sign * _INF if mantissa == 0 else _NAN
    return sign * (np.float32(1024 + mantissa) * _HALF_SCALE[exponent])


@jit
def _uint32_at(block, i):
    """The little-endian uint32 at bytes i..i+3 of a block (as an int64)."""
    return (np.int64(block[i]) | (np.int64(block[i + 1]) << 8) | (np.int64(block[i + 2]) << 16)
            | (np.int64(block[i + 3]) << 24))


@jit
def _f32(block, out):
    bits = np.int64(_uint32_at(block, 0))
    out.view(np.uint32)[0] = np.uint32(bits)


@jit
def _f16(block, out):
    out[0] = half_to_float(block[0], block[1])


@jit
def _bf16(block, out):
    out.view(np.uint32)[0] = (np.uint32(block[0]) << 16) | (np.uint32(block[1]) << 24)


@jit
def _q8_0(block, out):
    d = half_to_float(block[0], block[1])
    for j in range(32):
        q = np.int64(block[2 + j])
        out[j] = np.float32(q - 256 if q > 127 else q) * d  # the byte is an int8


@jit
def _q4_0(block, out):
    d = half_to_float(block[0], block[1])
    for j in range(16):
        byte = block[2 + j]
        out[j] = d * np.float32(np.int64(byte & 0x0F) - 8)
        out[j + 16] = d * np.float32(np.int64(byte >> 4) - 8)


@jit
def _q4_1(block, out):
    d = half_to_float(block[0], block[1])
    m = half_to_float(block[2], block[3])
    for j in range(16):
        byte = block[4 + j]
        out[j] = d * np.float32(byte & 0x0F) + m
        out[j + 16] = d * np.float32(byte >> 4) + m


@jit
def _q5_0(block, out):
    d = half_to_float(block[0], block[1])
    qh = _uint32_at(block, 2)
    for j in range(16):
        byte = block[6 + j]
        low = np.int64(byte & 0x0F) | (((qh >> j) & 1) << 4)
        high = np.int64(byte >> 4) | (((qh >> (j + 16)) & 1) << 4)
        out[j] = d * np.float32(low - 16)
        out[j + 16] = d * np.float32(high - 16)


@jit
def _q5_1(block, out):
    d = half_to_float(block[0], block[1])
    m = half_to_float(block[2], block[3])
    qh = _uint32_at(block, 4)
    for j in range(16):
        byte = block[8 + j]
        low = np.int64(byte & 0x0F) | (((qh >> j) & 1) << 4)
        high = np.int64(byte >> 4) | (((qh >> (j + 16)) & 1) << 4)
        out[j] = d * np.float32(low) + m
        out[j + 16] = d * np.float32(high) + m


@jit
def _scale_and_min_k4(scales, j):
    """Six-bit scale j and min j (j < 8) of a Q4_K / Q5_K super-block's 12 scale bytes."""
    if j < 4:
        return np.int64(scales[j] & 63), np.int64(scales[j + 4] & 63)
    scale = np.int64(scales[j + 4] & 0x0F) | (np.int64(scales[j - 4] >> 6) << 4)
    minimum = np.int64(scales[j + 4] >> 4) | (np.int64(scales[j] >> 6) << 4)
    return scale, minimum


@jit
def _q4_k(block, out):
    d = half_to_float(block[0], block[1])
    dmin = half_to_float(block[2], block[3])
    scales = block[4:16]
    for chunk in range(4):  # 32 bytes each: sub-block 2 * chunk in the low nibbles, 2 * chunk + 1 in the high
        scale, minimum = _scale_and_min_k4(scales, 2 * chunk)
        d1, m1 = d * np.float32(scale), dmin * np.float32(minimum)
        scale, minimum = _scale_and_min_k4(scales, 2 * chunk + 1)
        d2, m2 = d * np.float32(scale), dmin * np.float32(minimum)
        for l in range(32):
            byte = block[16 + 32 * chunk + l]
            out[64 * chunk + l] = d1 * np.float32(byte & 0x0F) - m1
            out[64 * chunk + 32 + l] = d2 * np.float32(byte >> 4) - m2


@jit
def _q5_k(block, out):
    d = half_to_float(block[0], block[1])
    dmin = half_to_float(block[2], block[3])
    scales = block[4:16]
    for chunk in range(4):
        scale, minimum = _scale_and_min_k4(scales, 2 * chunk)
        d1, m1 = d * np.float32(scale), dmin * np.float32(minimum)
        scale, minimum = _scale_and_min_k4(scales, 2 * chunk + 1)
        d2, m2 = d * np.float32(scale), dmin * np.float32(minimum)
        for l in range(32):
            byte, fifth_bits = block[48 + 32 * chunk + l], np.int64(block[16 + l])  # bit s: sub-block s
            low = np.int64(byte & 0x0F) | (((fifth_bits >> (2 * chunk)) & 1) << 4)
            high = np.int64(byte >> 4) | (((fifth_bits >> (2 * chunk + 1)) & 1) << 4)
            out[64 * chunk + l] = d1 * np.float32(low) - m1
            out[64 * chunk + 32 + l] = d2 * np.float32(high) - m2


@jit
def _q6_k(block, out):
    d = half_to_float(block[208], block[209])
    for half in range(2):  # 128 weights each, from ql[64 * half:], qh[32 * half:], scales[8 * half:]
        for l in range(32):
            low_a, low_b = np.int64(block[64 * half + l]), np.int64(block[64 * half + 32 + l])
            high = np.int64(block[128 + 32 * half + l])
            quants = ((low_a & 0x0F) | ((high & 3) << 4),          # weight l
                      (low_b & 0x0F) | (((high >> 2) & 3) << 4),   # weight l + 32
                      (low_a >> 4) | (((high >> 4) & 3) << 4),     # weight l + 64
                      (low_b >> 4) | (((high >> 6) & 3) << 4))     # weight l + 96
            for k in range(4):
                scale = np.int64(block[192 + 8 * half + 2 * k + l // 16])
                scale = scale - 256 if scale > 127 else scale  # the byte is an int8
                out[128 * half + 32 * k + l] = (d * np.float32(scale)) * np.float32(quants[k] - 32)


@jit
def _dequantize_range(type_number, blocks, out, first, stop):
    """Blocks first..stop-1 (one thread's share)."""
    for b in range(first, stop):
        block, weights = blocks[b], out[b]
        if type_number == Q4_K:
            _q4_k(block, weights)
        elif type_number == Q6_K:
            _q6_k(block, weights)
        elif type_number == Q8_0:
            _q8_0(block, weights)
        elif type_number == Q4_0:
            _q4_0(block, weights)
        elif type_number == Q4_1:
            _q4_1(block, weights)
        elif type_number == Q5_0:
            _q5_0(block, weights)
        elif type_number == Q5_1:
            _q5_1(block, weights)
        elif type_number == Q5_K:
            _q5_k(block, weights)
        elif type_number == F16:
            _f16(block, weights)
        elif type_number == BF16:
            _bf16(block, weights)
        else:
            _f32(block, weights)


def dequantize_blocks(type_number, blocks, out=None):
    """The weights of quantized blocks: uint8 [n_blocks, TYPE_SIZE[type_number]] ->
    float32 [n_blocks, BLOCK_SIZE[type_number]] (written into `out` when given)."""
    if type_number not in TYPE_SIZE:
        raise ValueError(f"dequantize_blocks: ggml type {type_number} is not one of {sorted(TYPE_SIZE)}")
    blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
    if blocks.ndim != 2 or blocks.shape[1] != TYPE_SIZE[type_number]:
        raise ValueError(f"dequantize_blocks: blocks must be uint8 [n, {TYPE_SIZE[type_number]}], got {blocks.shape}")
    shape = (blocks.shape[0], BLOCK_SIZE[type_number])
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"dequantize_blocks: out must be a C-contiguous float32 array of shape {shape}")
    bounds = even_bounds(len(blocks), parallel_chunks(out.size, _WEIGHTS_PER_CHUNK))
    run_chunks(_dequantize_range, bounds, type_number, blocks, out)
    return out
