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
Blocks are independent: `dequantize_blocks` splits them over the threads. Each type's kernel
is the plain loop over its block's bytes (the naive loop is the kernel: there is no tiled
variant to hold it equal to).
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
def _signed(byte):
    """A byte read as an int8 (two's complement): 0..127 as is, 128..255 as -128..-1."""
    q = np.int32(byte)
    return q - ((q >> 7) << 8)


# One range kernel per type: blocks first..stop-1, indexed as blocks[b, byte] and out[b, weight]
# (2-D indexing, no per-block views, lets LLVM vectorize the inner loops).

@jit
def _f32_range(blocks, out_bits, first, stop):
    for b in range(first, stop):
        out_bits[b, 0] = (np.uint32(blocks[b, 0]) | (np.uint32(blocks[b, 1]) << 8) | (np.uint32(blocks[b, 2]) << 16)
                          | (np.uint32(blocks[b, 3]) << 24))


@jit
def _bf16_range(blocks, out_bits, first, stop):
    for b in range(first, stop):
        out_bits[b, 0] = (np.uint32(blocks[b, 0]) << 16) | (np.uint32(blocks[b, 1]) << 24)


@jit
def _f16_range(blocks, out, first, stop):
    for b in range(first, stop):
        out[b, 0] = half_to_float(blocks[b, 0], blocks[b, 1])


@jit
def _q8_0_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 0], blocks[b, 1])
        for j in range(32):
            out[b, j] = np.float32(_signed(blocks[b, 2 + j])) * d


@jit
def _q4_0_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 0], blocks[b, 1])
        for j in range(16):
            byte = np.int32(blocks[b, 2 + j])
            out[b, j] = d * np.float32((byte & 0x0F) - 8)
            out[b, j + 16] = d * np.float32((byte >> 4) - 8)


@jit
def _q4_1_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 0], blocks[b, 1])
        m = half_to_float(blocks[b, 2], blocks[b, 3])
        for j in range(16):
            byte = np.int32(blocks[b, 4 + j])
            out[b, j] = d * np.float32(byte & 0x0F) + m
            out[b, j + 16] = d * np.float32(byte >> 4) + m


@jit
def _fifth_bits(blocks, b, first_byte):
    """The little-endian uint32 at bytes first_byte..+3 of block b: bit j is weight j's fifth bit."""
    return (np.int64(blocks[b, first_byte]) | (np.int64(blocks[b, first_byte + 1]) << 8)
            | (np.int64(blocks[b, first_byte + 2]) << 16) | (np.int64(blocks[b, first_byte + 3]) << 24))


@jit
def _q5_0_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 0], blocks[b, 1])
        qh = _fifth_bits(blocks, b, 2)
        for j in range(16):
            byte = np.int64(blocks[b, 6 + j])
            low = (byte & 0x0F) | (((qh >> j) & 1) << 4)
            high = (byte >> 4) | (((qh >> (j + 16)) & 1) << 4)
            out[b, j] = d * np.float32(low - 16)
            out[b, j + 16] = d * np.float32(high - 16)


@jit
def _q5_1_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 0], blocks[b, 1])
        m = half_to_float(blocks[b, 2], blocks[b, 3])
        qh = _fifth_bits(blocks, b, 4)
        for j in range(16):
            byte = np.int64(blocks[b, 8 + j])
            low = (byte & 0x0F) | (((qh >> j) & 1) << 4)
            high = (byte >> 4) | (((qh >> (j + 16)) & 1) << 4)
            out[b, j] = d * np.float32(low) + m
            out[b, j + 16] = d * np.float32(high) + m


@jit
def _scale_and_min_k4(blocks, b, j):
    """Six-bit scale j and min j (j < 8) of the Q4_K / Q5_K super-block b (its bytes 4-15)."""
    if j < 4:
        return np.int32(blocks[b, 4 + j] & 63), np.int32(blocks[b, 8 + j] & 63)
    scale = np.int32(blocks[b, 8 + j] & 0x0F) | (np.int32(blocks[b, j] >> 6) << 4)
    minimum = np.int32(blocks[b, 8 + j] >> 4) | (np.int32(blocks[b, 4 + j] >> 6) << 4)
    return scale, minimum


@jit
def _chunk_scales_k4(blocks, b, chunk, d, dmin):
    """(scale, offset) of sub-blocks 2 * chunk and 2 * chunk + 1 of super-block b: d * scale and
    dmin * min, as ggml multiplies them before the weights."""
    scale, minimum = _scale_and_min_k4(blocks, b, 2 * chunk)
    scale_next, minimum_next = _scale_and_min_k4(blocks, b, 2 * chunk + 1)
    return (d * np.float32(scale), dmin * np.float32(minimum),
            d * np.float32(scale_next), dmin * np.float32(minimum_next))


@jit
def _q4_k_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 0], blocks[b, 1])
        dmin = half_to_float(blocks[b, 2], blocks[b, 3])
        for chunk in range(4):  # 32 bytes each: sub-block 2 * chunk in the low nibbles, 2 * chunk + 1 in the high
            d1, m1, d2, m2 = _chunk_scales_k4(blocks, b, chunk, d, dmin)
            for l in range(32):
                byte = np.int32(blocks[b, 16 + 32 * chunk + l])
                out[b, 64 * chunk + l] = d1 * np.float32(byte & 0x0F) - m1
                out[b, 64 * chunk + 32 + l] = d2 * np.float32(byte >> 4) - m2


@jit
def _q5_k_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 0], blocks[b, 1])
        dmin = half_to_float(blocks[b, 2], blocks[b, 3])
        for chunk in range(4):
            d1, m1, d2, m2 = _chunk_scales_k4(blocks, b, chunk, d, dmin)
            for l in range(32):
                byte = np.int32(blocks[b, 48 + 32 * chunk + l])
                fifth_bits = np.int32(blocks[b, 16 + l])  # bit s: the fifth bit of weight l of sub-block s
                low = (byte & 0x0F) | (((fifth_bits >> (2 * chunk)) & 1) << 4)
                high = (byte >> 4) | (((fifth_bits >> (2 * chunk + 1)) & 1) << 4)
                out[b, 64 * chunk + l] = d1 * np.float32(low) - m1
                out[b, 64 * chunk + 32 + l] = d2 * np.float32(high) - m2


@jit
def _q6_k_range(blocks, out, first, stop):
    for b in range(first, stop):
        d = half_to_float(blocks[b, 208], blocks[b, 209])
        for half in range(2):  # 128 weights each, from ql[64 * half:], qh[32 * half:], scales[8 * half:]
            for k in range(4):  # weights 32k + l of the half: nibble k // 2 of ql[l + 32 * (k % 2)], bits 2k of qh[l]
                scale = d * np.float32(_signed(blocks[b, 192 + 8 * half + 2 * k]))
                scale_after_16 = d * np.float32(_signed(blocks[b, 192 + 8 * half + 2 * k + 1]))
                for l in range(32):
                    low = np.int32(blocks[b, 64 * half + 32 * (k % 2) + l]) >> (4 * (k // 2)) & 0x0F
                    high = (np.int32(blocks[b, 128 + 32 * half + l]) >> (2 * k)) & 3
                    q = np.float32((low | (high << 4)) - 32)
                    out[b, 128 * half + 32 * k + l] = (scale if l < 16 else scale_after_16) * q


_RANGE_KERNELS = {F32: _f32_range, F16: _f16_range, BF16: _bf16_range, Q8_0: _q8_0_range, Q4_0: _q4_0_range,
                  Q4_1: _q4_1_range, Q5_0: _q5_0_range, Q5_1: _q5_1_range, Q4_K: _q4_k_range, Q5_K: _q5_k_range,
                  Q6_K: _q6_k_range}


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
    # F32 and BF16 are bit copies: their kernels write the float32 bits.
    target = out.view(np.uint32) if type_number in (F32, BF16) else out
    run_chunks(_RANGE_KERNELS[type_number], bounds, blocks, target)
    return out
