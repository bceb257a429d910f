"""Small GGUF files for the tests, written by the `gguf` package's own writer (llama.cpp's).

    write_gguf(path, "llama", metadata={"llama.block_count": ("UINT32", 2)},
               tensors=[("token_embd.weight", "Q8_0", (16, 64), rng)])
    decoder_gguf(path, "gemma3", rng)      # a tiny model of that architecture, every tensor named
"""

import struct
import warnings

import numpy as np
import pytest
import gguf.gguf_reader
import gguf.quants
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

@pytest.fixture
def quiet_transformers():
    """transformers' GGUF loader without its log lines and warnings (use with autouse)."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    transformers.logging.set_verbosity(verbosity)


class _NumpyReadingWholeFiles:
    """numpy, but `memmap` reads the file into an ordinary array: the gguf package's reader then
    parses several times faster (slicing a memmap is what costs: a 262,144-token vocabulary
    takes 30 s through it)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def memmap(path, mode="r", **_):
        return np.fromfile(path, dtype=np.uint8)


def gguf_reader(path):
    """The gguf package's GGUFReader of `path` (the file read into memory, not mapped)."""
    original, gguf.gguf_reader.np = gguf.gguf_reader.np, _NumpyReadingWholeFiles()
    try:
        return gguf.gguf_reader.GGUFReader(str(path))
    finally:
        gguf.gguf_reader.np = original


def gguf_weights(tensor):
    """The gguf package's float32 weights of one of its ReaderTensors, flat. Its block types'
    own `dequantize_blocks` on all blocks at once (`gguf.dequantize` calls it on 16 rows at a
    time, slow for many small tensors)."""
    name = tensor.tensor_type.name
    with np.errstate(invalid="ignore"):  # inf * 0 in a block of random bytes
        if name in ("F32", "F16"):
            return np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(-1)
        block_size, type_size = GGML_QUANT_SIZES[tensor.tensor_type]
        blocks = tensor.data.view(np.uint8).reshape(-1, type_size)
        return getattr(gguf.quants, name).dequantize_blocks(blocks).reshape(-1)


# Where each type keeps its float16 scales (byte offsets in a block): tensors made of random bytes
# get real scales there, so their weights are ordinary numbers rather than NaNs and infinities.
SCALE_OFFSETS = {"F16": [0], "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
                 "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
SUPPORTED = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]


def tensor_bytes(rng, type_name, shape):
    """Stored bytes of a tensor of `type_name` and NumPy `shape` (the last axis a whole number of
    blocks): uint8 [..., bytes per row], random quants with real scales."""
    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    rows, row = int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]
    if type_name == "F32":
        return rng.standard_normal((rows, row)).astype("<f4").view(np.uint8).reshape(*shape[:-1], row * 4)
    if type_name == "BF16":
        words = (rng.standard_normal((rows, row)).astype("<f4").view("<u4") >> 16).astype("<u2")
        return words.view(np.uint8).reshape(*shape[:-1], row * 2)
    blocks = rng.integers(0, 256, size=(rows * row // block_size, type_size), dtype=np.uint8)
    for offset in SCALE_OFFSETS[type_name]:
        scales = (rng.standard_normal(len(blocks)) * 0.01).astype("<f2")
        blocks[:, offset:offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(*shape[:-1], row // block_size * type_size)


def write_gguf(path, arch, metadata=None, tensors=(), alignment=None):
    """A GGUF file written by gguf.GGUFWriter. metadata: {key: (value type name, value)} (for an
    array, ("ARRAY", [values])); tensors: [(name, type name, NumPy shape, rng or uint8 bytes)]."""
    writer = GGUFWriter(str(path), arch)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, (kind, value) in (metadata or {}).items():
        writer.add_key_value(key, value, GGUFValueType[kind])
    for name, type_name, shape, data in tensors:
        if isinstance(data, np.random.Generator):
            data = tensor_bytes(data, type_name, shape)
        writer.add_tensor(name, data, raw_dtype=GGMLQuantizationType[type_name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# The metadata keys of each architecture, as llama.cpp's converter writes them.
def _rotary_metadata(arch, hidden, layers, heads, kv_heads, head_dim, ffn, extra):
    metadata = {
        f"{arch}.context_length": ("UINT32", 128), f"{arch}.embedding_length": ("UINT32", hidden),
        f"{arch}.block_count": ("UINT32", layers), f"{arch}.feed_forward_length": ("UINT32", ffn),
        f"{arch}.attention.head_count": ("UINT32", heads), f"{arch}.attention.head_count_kv": ("UINT32", kv_heads),
        f"{arch}.rope.freq_base": ("FLOAT32", 10000.0), f"{arch}.attention.layer_norm_rms_epsilon": ("FLOAT32", 1e-6),
        "tokenizer.ggml.bos_token_id": ("UINT32", 1), "tokenizer.ggml.eos_token_id": ("UINT32", 2),
    }
    if head_dim != hidden // heads or arch in ("gemma3", "qwen3"):
        metadata[f"{arch}.attention.key_length"] = ("UINT32", head_dim)
        metadata[f"{arch}.attention.value_length"] = ("UINT32", head_dim)
    if arch == "llama":
        metadata["llama.rope.dimension_count"] = ("UINT32", head_dim)
    metadata.update(extra)
    return metadata


def decoder_gguf(path, arch, rng, vocab=64, hidden=64, layers=2, heads=4, kv_heads=2, head_dim=None, ffn=96,
                 tied=True, biases=False, metadata=None, type_name="F32"):
    """A tiny random model of `arch` (llama, qwen2, qwen3, gemma3, gpt2) with every tensor its
    GGUF table names; weights of `type_name` (rows a whole number of its blocks)."""
    head_dim = head_dim or hidden // heads
    tensors = [("token_embd.weight", type_name, (vocab, hidden))]
    if not tied:
        tensors.append(("output.weight", type_name, (vocab, hidden)))
    if arch == "gpt2":
        meta = {"gpt2.context_length": ("UINT32", 128), "gpt2.embedding_length": ("UINT32", hidden),
                "gpt2.block_count": ("UINT32", layers), "gpt2.feed_forward_length": ("UINT32", ffn),
                "gpt2.attention.head_count": ("UINT32", heads), "gpt2.attention.layer_norm_epsilon": ("FLOAT32", 1e-5)}
        tensors += [("position_embd.weight", "F32", (128, hidden)), ("output_norm.weight", "F32", (hidden,)),
                    ("output_norm.bias", "F32", (hidden,))]
        for i in range(layers):
            tensors += [(f"blk.{i}.attn_norm.weight", "F32", (hidden,)), (f"blk.{i}.attn_norm.bias", "F32", (hidden,)),
                        (f"blk.{i}.attn_qkv.weight", type_name, (3 * hidden, hidden)),
                        (f"blk.{i}.attn_qkv.bias", "F32", (3 * hidden,)),
                        (f"blk.{i}.attn_output.weight", type_name, (hidden, hidden)),
                        (f"blk.{i}.attn_output.bias", "F32", (hidden,)),
                        (f"blk.{i}.ffn_norm.weight", "F32", (hidden,)), (f"blk.{i}.ffn_norm.bias", "F32", (hidden,)),
                        (f"blk.{i}.ffn_up.weight", type_name, (ffn, hidden)), (f"blk.{i}.ffn_up.bias", "F32", (ffn,)),
                        (f"blk.{i}.ffn_down.weight", type_name, (hidden, ffn)),
                        (f"blk.{i}.ffn_down.bias", "F32", (hidden,))]
    else:
        extra = {"gemma3.attention.sliding_window": ("UINT32", 16)} if arch == "gemma3" else {}
        meta = _rotary_metadata(arch, hidden, layers, heads, kv_heads, head_dim, ffn, extra)
        tensors.append(("output_norm.weight", "F32", (hidden,)))
        for i in range(layers):
            tensors += [(f"blk.{i}.attn_norm.weight", "F32", (hidden,)),
                        (f"blk.{i}.attn_q.weight", type_name, (heads * head_dim, hidden)),
                        (f"blk.{i}.attn_k.weight", type_name, (kv_heads * head_dim, hidden)),
                        (f"blk.{i}.attn_v.weight", type_name, (kv_heads * head_dim, hidden)),
                        (f"blk.{i}.attn_output.weight", type_name, (hidden, heads * head_dim)),
                        (f"blk.{i}.ffn_norm.weight", "F32", (hidden,)),
                        (f"blk.{i}.ffn_gate.weight", type_name, (ffn, hidden)),
                        (f"blk.{i}.ffn_up.weight", type_name, (ffn, hidden)),
                        (f"blk.{i}.ffn_down.weight", type_name, (hidden, ffn))]
            if biases or arch == "qwen2":
                tensors += [(f"blk.{i}.attn_{p}.bias", "F32", (size,))
                            for p, size in (("q", heads * head_dim), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim))]
            if biases:  # Qwen2's three biases are its own; Llama and Qwen3 have four or none
                tensors.append((f"blk.{i}.attn_output.bias", "F32", (hidden,)))
            if arch in ("qwen3", "gemma3"):
                tensors += [(f"blk.{i}.attn_q_norm.weight", "F32", (head_dim,)),
                            (f"blk.{i}.attn_k_norm.weight", "F32", (head_dim,))]
            if arch == "gemma3":
                tensors += [(f"blk.{i}.post_attention_norm.weight", "F32", (hidden,)),
                            (f"blk.{i}.post_ffw_norm.weight", "F32", (hidden,))]
    meta["tokenizer.ggml.tokens"] = ("ARRAY", [f"t{i}" for i in range(vocab)])
    meta.update(metadata or {})
    return write_gguf(path, arch, meta, [(name, kind, shape, rng) for name, kind, shape in tensors])


# --- a GGUF file field by field, for files no writer would make ----------------------------------

FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


def pack_string(text):
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    return struct.pack("<Q", len(data)) + data


def pack_value(value_type, value):
    """A metadata value's bytes: value_type 8 a str (or bytes), 9 an (item type, [items]) pair."""
    if value_type == STRING:
        return pack_string(value)
    if value_type == ARRAY:
        item_type, items = value
        return struct.pack("<IQ", item_type, len(items)) + b"".join(pack_value(item_type, item) for item in items)
    return struct.pack(FORMATS.get(value_type, "<I"), value)  # an unknown type: 4 bytes of anything


def pack_gguf(metadata=(), tensors=(), data=b"", version=3, alignment=32, magic=b"GGUF"):
    """The bytes of a GGUF file. metadata: [(key, value type, value)]; tensors: [(name, ne (row
    length first, as stored), ggml type number, offset in the data section)]; the data section
    starts at the next multiple of `alignment` after the tensor infos."""
    out = bytearray(magic + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, value_type, value in metadata:
        out += pack_string(key) + struct.pack("<I", value_type) + pack_value(value_type, value)
    for name, ne, type_number, offset in tensors:
        out += pack_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", type_number, offset)
    if tensors:
        out += bytes(-len(out) % alignment)
    return bytes(out + data)
