"""GGML tensor types and their dequantization to float32, in plain NumPy (the readable reference).

A quantized GGUF tensor is a run of blocks along each row (ggml's `ne[0]`, the last NumPy
axis): a block holds `block_size` weights in `type_size` bytes, small integers ("quants")
and the float16 scale(s) that turn them back into weights. Every function here takes the
blocks of one type as bytes and returns their weights:

    blocks  uint8 [n_blocks, type_size]   ->   float32 [n_blocks, block_size]

The layouts are ggml's (ggml-common.h, `dequantize_row_*` in ggml-quants.c); the arithmetic
is done in float32 in the same order as there, so the weights equal llama.cpp's and the
`gguf` package's to the bit. The Numba twins are in `transformer/kernels/quants.py`.

    >>> import numpy as np
    >>> block = np.array([0x00, 0x3C] + [0x98] * 16, dtype=np.uint8)   # Q4_0: d = 1.0 (float16 0x3C00)
    >>> dequantize_q4_0(block[None, :])[0, :3], dequantize_q4_0(block[None, :])[0, 16:19]
    (array([0., 0., 0.], dtype=float32), array([1., 1., 1.], dtype=float32))

(each byte 0x98 holds quant 8 in its low nibble, weight j, and 9 in its high one, weight
j + 16; weight = d * (q - 8)).
"""

from typing import NamedTuple

import numpy as np

QK_K = 256  # weights in a "K-quant" super-block


class GGMLType(NamedTuple):
    """A ggml tensor type: its number in a GGUF file, name, weights per block, bytes per block."""
    number: int
    name: str
    block_size: int
    type_size: int


# Every type ggml defines today (ggml.h `enum ggml_type`, sizes as in ggml.c `type_traits`),
# so that a file's layout can be checked and a tensor of a type not dequantized here refused
# by its name.
GGML_TYPES = {t.number: t for t in [
    GGMLType(0, "F32", 1, 4), GGMLType(1, "F16", 1, 2),
    GGMLType(2, "Q4_0", 32, 18), GGMLType(3, "Q4_1", 32, 20),
    GGMLType(6, "Q5_0", 32, 22), GGMLType(7, "Q5_1", 32, 24),
    GGMLType(8, "Q8_0", 32, 34), GGMLType(9, "Q8_1", 32, 36),
    GGMLType(10, "Q2_K", QK_K, 84), GGMLType(11, "Q3_K", QK_K, 110), GGMLType(12, "Q4_K", QK_K, 144),
    GGMLType(13, "Q5_K", QK_K, 176), GGMLType(14, "Q6_K", QK_K, 210), GGMLType(15, "Q8_K", QK_K, 292),
    GGMLType(16, "IQ2_XXS", QK_K, 66), GGMLType(17, "IQ2_XS", QK_K, 74), GGMLType(18, "IQ3_XXS", QK_K, 98),
    GGMLType(19, "IQ1_S", QK_K, 50), GGMLType(20, "IQ4_NL", 32, 18), GGMLType(21, "IQ3_S", QK_K, 110),
    GGMLType(22, "IQ2_S", QK_K, 82), GGMLType(23, "IQ4_XS", QK_K, 136),
    GGMLType(24, "I8", 1, 1), GGMLType(25, "I16", 1, 2), GGMLType(26, "I32", 1, 4), GGMLType(27, "I64", 1, 8),
    GGMLType(28, "F64", 1, 8), GGMLType(29, "IQ1_M", QK_K, 56), GGMLType(30, "BF16", 1, 2),
    GGMLType(34, "TQ1_0", QK_K, 54), GGMLType(35, "TQ2_0", QK_K, 66),
    GGMLType(39, "MXFP4", 32, 17), GGMLType(40, "NVFP4", 64, 36), GGMLType(41, "Q1_0", 128, 18),
]}

# Numbers ggml used once and dropped: files holding them cannot be read by llama.cpp either.
REMOVED_TYPES = {4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
                 36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8"}


def _half(two_bytes):
    """uint8 [n, 2] (a float16, little-endian) -> float32 [n, 1]."""
    return np.ascontiguousarray(two_bytes).view("<f2").astype(np.float32)


def _low_high_nibbles(packed):
    """uint8 [n, k] -> uint8 [n, 2k]: the low nibbles of the k bytes, then their high nibbles."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=1)


# --- plain types: one weight per "block" -------------------------------------------------------

def dequantize_f32(blocks):
    """F32: 4 bytes per weight, little-endian. uint8 [n, 4] -> float32 [n, 1]."""
    return np.ascontiguousarray(blocks).view("<f4").astype(np.float32)


def dequantize_f16(blocks):
    """F16: IEEE half precision, 2 bytes per weight. uint8 [n, 2] -> float32 [n, 1]."""
    return _half(blocks)


def dequantize_bf16(blocks):
    """BF16: the top 16 bits of a float32, 2 bytes per weight. uint8 [n, 2] -> float32 [n, 1]."""
    words = np.ascontiguousarray(blocks).view("<u2").astype(np.uint32)
    return (words << 16).view(np.float32)


# --- 32-weight blocks ---------------------------------------------------------------------------

def dequantize_q8_0(blocks):
    """Q8_0: 32 weights in 34 bytes.

        d   float16     bytes 0-1    the block's scale
        qs  int8[32]    bytes 2-33   one quant per weight

    weight[j] = d * qs[j]. uint8 [n, 34] -> float32 [n, 32].
    """
    d = _half(blocks[:, 0:2])                            # [n, 1]
    qs = blocks[:, 2:34].view(np.int8)                   # [n, 32]
    return qs.astype(np.float32) * d                     # [n, 32]


def dequantize_q4_0(blocks):
    """Q4_0: 32 weights in 18 bytes.

        d   float16     bytes 0-1    the block's scale
        qs  uint8[16]   bytes 2-17   weight j (< 16) in the low nibble of qs[j], weight j + 16 in its high nibble

    weight = d * (q - 8). uint8 [n, 18] -> float32 [n, 32].
    """
    d = _half(blocks[:, 0:2])                            # [n, 1]
    q = _low_high_nibbles(blocks[:, 2:18])               # [n, 32], 0..15
    return d * (q.astype(np.int8) - 8).astype(np.float32)


def dequantize_q4_1(blocks):
    """Q4_1: 32 weights in 20 bytes.

        d   float16     bytes 0-1    the block's scale
        m   float16     bytes 2-3    the block's minimum
        qs  uint8[16]   bytes 4-19   as Q4_0: low nibbles are weights 0-15, high nibbles 16-31

    weight = d * q + m. uint8 [n, 20] -> float32 [n, 32].
    """
    d = _half(blocks[:, 0:2])                            # [n, 1]
    m = _half(blocks[:, 2:4])                            # [n, 1]
    q = _low_high_nibbles(blocks[:, 4:20])               # [n, 32]
    return d * q.astype(np.float32) + m


def _fifth_bits(qh):
    """uint8 [n, 4] (a little-endian uint32) -> uint8 [n, 32]: bit j of it, as 0 or 16."""
    bits = np.unpackbits(np.ascontiguousarray(qh), axis=1, bitorder="little")   # [n, 32]: bit j at j
    return bits << 4


def dequantize_q5_0(blocks):
    """Q5_0: 32 weights in 22 bytes.

        d   float16     bytes 0-1    the block's scale
        qh  uint32      bytes 2-5    bit j is the fifth (top) bit of weight j's quant
        qs  uint8[16]   bytes 6-21   the low four bits, as Q4_0 (weights 0-15 low nibbles, 16-31 high)

    weight = d * (q - 16). uint8 [n, 22] -> float32 [n, 32].
    """
    d = _half(blocks[:, 0:2])                            # [n, 1]
    q = _low_high_nibbles(blocks[:, 6:22]) | _fifth_bits(blocks[:, 2:6])   # [n, 32], 0..31
    return d * (q.astype(np.int8) - 16).astype(np.float32)


def dequantize_q5_1(blocks):
    """Q5_1: 32 weights in 24 bytes.

        d   float16     bytes 0-1    the block's scale
        m   float16     bytes 2-3    the block's minimum
        qh  uint32      bytes 4-7    bit j is the fifth bit of weight j's quant
        qs  uint8[16]   bytes 8-23   the low four bits, as Q4_0

    weight = d * q + m. uint8 [n, 24] -> float32 [n, 32].
    """
    d = _half(blocks[:, 0:2])                            # [n, 1]
    m = _half(blocks[:, 2:4])                            # [n, 1]
    q = _low_high_nibbles(blocks[:, 8:24]) | _fifth_bits(blocks[:, 4:8])   # [n, 32]
    return d * q.astype(np.float32) + m


# --- 256-weight super-blocks ("K-quants") -------------------------------------------------------

def scales_and_mins_k4(packed):
    """The 8 six-bit scales and 8 six-bit mins of a Q4_K / Q5_K super-block, from its 12 bytes:

        bytes 0-3    scale j (j < 4) in the low 6 bits; the top 2 bits of scale j + 4
        bytes 4-7    min j (j < 4) in the low 6 bits; the top 2 bits of min j + 4
        bytes 8-11   scale j + 4 in the low nibble, min j + 4 in the high nibble (their low 4 bits)

    uint8 [n, 12] -> (uint8 [n, 8], uint8 [n, 8]).
    """
    low_scales, low_mins, rest = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([low_scales & 63, (rest & 0x0F) | ((low_scales >> 6) << 4)], axis=1)
    mins = np.concatenate([low_mins & 63, (rest >> 4) | ((low_mins >> 6) << 4)], axis=1)
    return scales, mins


def dequantize_q4_k(blocks):
    """Q4_K: 256 weights in 144 bytes, 8 sub-blocks of 32 with their own scale and min.

        d       float16     bytes 0-1      scale of the sub-block scales
        dmin    float16     bytes 2-3      scale of the sub-block mins
        scales  uint8[12]   bytes 4-15     8 six-bit scales and 8 six-bit mins (`scales_and_mins_k4`)
        qs      uint8[128]  bytes 16-143   4 chunks of 32 bytes: chunk c holds sub-block 2c in its low
                                           nibbles and sub-block 2c + 1 in its high nibbles

    weight = (d * scale) * q - (dmin * min), per sub-block. uint8 [n, 144] -> float32 [n, 256].
    """
    n = len(blocks)
    d, dmin = _half(blocks[:, 0:2]), _half(blocks[:, 2:4])          # [n, 1] each
    scales, mins = scales_and_mins_k4(blocks[:, 4:16])              # [n, 8] each
    chunks = blocks[:, 16:144].reshape(n, 4, 1, 32)
    q = np.concatenate([chunks & 0x0F, chunks >> 4], axis=2)        # [n, 4, 2, 32]
    q = q.reshape(n, 8, 32).astype(np.float32)                      # [n, sub-block, 32]
    scale = (d * scales.astype(np.float32))[:, :, None]             # [n, 8, 1]
    offset = (dmin * mins.astype(np.float32))[:, :, None]           # [n, 8, 1]
    return (scale * q - offset).reshape(n, QK_K)


def dequantize_q5_k(blocks):
    """Q5_K: 256 weights in 176 bytes; Q4_K with a fifth bit per quant.

        d       float16     bytes 0-1      scale of the sub-block scales
        dmin    float16     bytes 2-3      scale of the sub-block mins
        scales  uint8[12]   bytes 4-15     as Q4_K
        qh      uint8[32]   bytes 16-47    bit s of qh[l] is the fifth bit of weight l of sub-block s
        qs      uint8[128]  bytes 48-175   the low four bits, as Q4_K's qs

    weight = (d * scale) * q - (dmin * min). uint8 [n, 176] -> float32 [n, 256].
    """
    n = len(blocks)
    d, dmin = _half(blocks[:, 0:2]), _half(blocks[:, 2:4])          # [n, 1] each
    scales, mins = scales_and_mins_k4(blocks[:, 4:16])              # [n, 8] each
    qh = blocks[:, 16:48].reshape(n, 1, 32)
    fifth = (qh >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1   # [n, 8, 32]: sub-block s, weight l
    chunks = blocks[:, 48:176].reshape(n, 4, 1, 32)
    low = np.concatenate([chunks & 0x0F, chunks >> 4], axis=2).reshape(n, 8, 32)
    q = (low | (fifth << 4)).astype(np.float32)                     # [n, 8, 32], 0..31
    scale = (d * scales.astype(np.float32))[:, :, None]             # [n, 8, 1]
    offset = (dmin * mins.astype(np.float32))[:, :, None]           # [n, 8, 1]
    return (scale * q - offset).reshape(n, QK_K)


def dequantize_q6_k(blocks):
    """Q6_K: 256 weights in 210 bytes, 16 sub-blocks of 16 with a signed 8-bit scale each.

        ql      uint8[128]  bytes 0-127     low four bits of the quants
        qh      uint8[64]   bytes 128-191   top two bits of the quants
        scales  int8[16]    bytes 192-207   one scale per 16 weights
        d       float16     bytes 208-209   scale of the scales

    Each half of the block (weights 128h .. 128h + 127) uses 64 bytes of ql and 32 of qh; its
    weight 32k + l (k < 4, l < 32) takes the low nibble of ql[l] (k = 0), of ql[l + 32] (k = 1),
    the high nibble of ql[l] (k = 2), of ql[l + 32] (k = 3), and bits 2k, 2k + 1 of qh[l] on top.
    weight = (d * scale) * (q - 32). uint8 [n, 210] -> float32 [n, 256].
    """
    n = len(blocks)
    ql = blocks[:, 0:128].reshape(n, 2, 1, 64)                      # [n, half, 1, 64]
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)                    # [n, half, 1, 32]
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)    # [n, 16]
    d = _half(blocks[:, 208:210])                                   # [n, 1]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, 2, 4, 32)   # k = 0..3 as above
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]) & 3   # [n, 2, 4, 32]
    q = (low | (high << 4)).astype(np.int8) - 32                    # [n, 2, 4, 32], -32..31
    q = q.reshape(n, 16, 16).astype(np.float32)                     # [n, sub-block, 16]
    return ((d * scales)[:, :, None] * q).reshape(n, QK_K)


DEQUANTIZE = {
    "F32": dequantize_f32, "F16": dequantize_f16, "BF16": dequantize_bf16,
    "Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_1": dequantize_q4_1,
    "Q5_0": dequantize_q5_0, "Q5_1": dequantize_q5_1,
    "Q4_K": dequantize_q4_k, "Q5_K": dequantize_q5_k, "Q6_K": dequantize_q6_k,
}


def dequantize(type_name, data, shape):
    """The weights of a tensor: `data` (uint8, the tensor's bytes) of ggml type `type_name`
    -> float32 `shape` (NumPy order: the row, ggml's ne[0], last)."""
    ggml_type = next(t for t in GGML_TYPES.values() if t.name == type_name)
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, ggml_type.type_size)   # [n_blocks, type_size]
    return DEQUANTIZE[type_name](blocks).reshape(shape)
