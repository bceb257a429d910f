"""Fuzzing the GGUF reader (and what reads its metadata) against the `gguf` package itself.

Each input is a small GGUF file grown from a seed, field by field. Seeds: tiny models of every
architecture written by the gguf package's writer (weights of several types), and the real
headers of SmolLM2 Q4_1 and Gemma 3 Q4_K_M (their metadata with arrays cut to a few items,
their tensors' names and types on one-block shapes). A seed is laid out as a list of fields
(magic, version, counts, each key, value type, value, array item type and count, each tensor's
name, dimension count, dimensions, type and offset, the padding, the data); an input changes
1-3 fields (a count, a length, a type, a value, a dimension, an offset: to edge values), or
changes the seed's metadata, types or shapes and lays it out again validly, or edits its
bytes (one flipped, one inserted, one deleted, the file cut short).

Property: `read_gguf` refuses the file with one GGUFError naming it, or reads it as the gguf
package's reader reads it (metadata, every tensor's name, type, place and size) and then every
tensor either dequantizes (the first and last two to the gguf package's weights) or is refused
naming its type; `config_from_gguf`,
`tokenizer_metadata` and `checkpoint_arrays` answer or refuse with one GGUFError naming the
file. Never another exception, a hang (5 s), a write, or an array larger than the file allows.
"""

import collections
import struct

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
gguf = pytest.importorskip("gguf")
from gguf_files import SUPPORTED, decoder_gguf, gguf_reader, gguf_weights, tensor_bytes  # noqa: E402
from hypothesis import given  # noqa: E402

from fuzz_model_files import PER_EXAMPLE, inputs_of, parse_guarded, plans, scratch_folder  # noqa: E402
from fuzzing import FUZZ_EXAMPLES, fuzz_settings, ran  # noqa: E402
from transformer.gguf import (  # noqa: E402
    GGUFError, checkpoint_arrays, config_from_gguf, read_gguf, tokenizer_metadata)
from transformer.gguf.quants import GGML_TYPES  # noqa: E402
from transformer.gguf.reader import VALUE_TYPES  # noqa: E402
from transformer.kernels.quants import TYPE_SIZE, dequantize_blocks  # noqa: E402

TYPE_NUMBER = {t.name: t.number for t in GGML_TYPES.values()}
VALUE_TYPE_NUMBER = {name: number for number, (name, _, _) in VALUE_TYPES.items()}
FORMAT = {number: form for number, (_, form, _) in VALUE_TYPES.items() if form}
ALIGNMENT = 32


# --- seeds: (metadata [(key, value type, value)], tensors [(name, ne, type number)], alignment) -------

def _seed_of_file(file, max_items=None, shrink=False):
    """A GGUFFile as a seed: arrays cut to `max_items`, shapes cut to one or two rows of one
    block each when `shrink`."""
    metadata = []
    for key, value in file.metadata.items():
        kind = file.metadata_types[key]
        if kind.startswith("array["):
            item_type = VALUE_TYPE_NUMBER[kind[6:-1]]
            items = value[:max_items] if max_items else value
            items = items if isinstance(items, list) else items.tolist()
            metadata.append((key, 9, (item_type, items)))
        else:
            metadata.append((key, VALUE_TYPE_NUMBER[kind], value))
    tensors = []
    for name, info in file.tensors.items():
        ne = list(reversed(info.shape))
        if shrink:
            block = GGML_TYPES[TYPE_NUMBER[info.type_name]].block_size
            ne = [block if block > 1 else min(ne[0], 8)] + [min(d, 2) for d in ne[1:]]
        tensors.append((name, ne, TYPE_NUMBER[info.type_name]))
    return metadata, tensors, file.alignment


def _seeds(folder, real_files):
    rng = np.random.default_rng(0)
    seeds = []
    for arch, options in [("llama", {"type_name": "Q4_0", "biases": True}), ("qwen2", {"tied": False}),
                          ("qwen3", {"type_name": "Q8_0", "head_dim": 32}), ("gemma3", {"type_name": "Q5_0"}),
                          ("gpt2", {"type_name": "F16"}), ("llama", {"type_name": "Q4_K", "hidden": 256, "ffn": 256}),
                          ("gemma3", {"type_name": "Q6_K", "hidden": 256, "ffn": 256})]:
        options = {"hidden": 32, "heads": 2, "kv_heads": 1, "ffn": 32, **options}
        path = decoder_gguf(folder / "seed.gguf", arch, rng, vocab=4, layers=1, **options)
        seeds.append(_seed_of_file(read_gguf(path)))
    for path in real_files:
        file = read_gguf(path)
        seed = _seed_of_file(file, max_items=6, shrink=True)
        keep = [t for t in seed[1] if not t[0].startswith("blk.") or t[0].startswith("blk.0.")]
        seeds.append((seed[0], keep, seed[2]))
    return seeds


# --- a seed as fields, and fields as bytes --------------------------------------------------------

def _value_fields(value_type, value):
    if value_type == 8:
        return [["value", "str", value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value]]
    if value_type == 9:
        item_type, items = value
        return [["item_type", "u32", item_type], ["array_count", "u64", len(items)]] + \
            [field for item in items for field in _value_fields(item_type, item)]
    return [["value", FORMAT[value_type], value]]


def fields_of(metadata, tensors, data, alignment=ALIGNMENT, offsets=None):
    """A GGUF file as a list of groups of mutable fields [label, kind, value]."""
    groups = [[["magic", "raw", b"GGUF"], ["version", "u32", 3], ["tensor_count", "u64", len(tensors)],
               ["kv_count", "u64", len(metadata)]]]
    for key, value_type, value in metadata:
        groups.append([["key", "str", key.encode("utf-8", "surrogatepass")], ["value_type", "u32", value_type]]
                      + _value_fields(value_type, value))
    for index, (name, ne, type_number) in enumerate(tensors):
        groups.append([["tensor_name", "str", name.encode("utf-8", "surrogatepass")], ["n_dims", "u32", len(ne)]]
                      + [["dim", "u64", d] for d in ne] + [["tensor_type", "u32", type_number],
                                                           ["offset", "u64", offsets[index]]])
    groups.append([["padding", "pad", alignment if tensors else 1]])
    groups.append([["data", "raw", data]])
    return groups


def layout(rng, metadata, tensors, alignment=ALIGNMENT):
    """Fields of a valid file: tensors back to back, each padded, random bytes of real scales."""
    offsets, chunks, offset = [], [], 0
    for name, ne, type_number in tensors:
        ggml_type = GGML_TYPES.get(type_number)
        shape = tuple(reversed(ne)) or (1,)
        try:
            stored = tensor_bytes(rng, ggml_type.name, shape).tobytes() if ggml_type.name in SUPPORTED else \
                bytes(np.prod(ne, dtype=np.int64) // ggml_type.block_size * ggml_type.type_size)
        except (ValueError, AttributeError, KeyError):  # a shape or type no file can hold: the bytes are whatever
            stored = bytes(rng.integers(0, 64))
        offsets.append(offset)
        chunks.append(stored + bytes(-len(stored) % alignment))
        offset += len(chunks[-1])
    return fields_of(metadata, tensors, b"".join(chunks), alignment, offsets)


def serialize(groups):
    out = bytearray()
    for group in groups:
        for label, kind, value in group:
            if kind == "raw":
                out += value
            elif kind == "pad":
                out += bytes(-len(out) % value)
            elif kind == "str":
                data, length = (value, len(value)) if isinstance(value, bytes) else value  # (bytes, stated length)
                out += struct.pack("<Q", length % (1 << 64)) + data
            elif kind == "u32":
                out += struct.pack("<I", value % (1 << 32))
            elif kind == "u64":
                out += struct.pack("<Q", value % (1 << 64))
            else:  # a metadata scalar of this struct format
                out += _pack_scalar(kind, value)
    return bytes(out)


def _pack_scalar(form, value):
    if form in ("<f", "<d"):
        with np.errstate(over="ignore"):  # a float64 beyond float32: inf, as a writer would store it
            return np.array(value, dtype={"<f": "<f4", "<d": "<f8"}[form]).tobytes()
    bits = struct.calcsize(form) * 8
    value = int(value) % (1 << bits)
    if form[1].islower() and value >= 1 << (bits - 1):  # a signed format: back into its range
        value -= 1 << bits
    return struct.pack(form, value)


# --- mutations ------------------------------------------------------------------------------------

EDGE_COUNTS = [0, 1, 2, 3, 7, 8, 31, 32, 33, 63, 64, 255, 256, 257, (1 << 31) - 1, 1 << 31, (1 << 32) - 1,
               1 << 32, 1 << 40, (1 << 61) - 1, 1 << 61, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-6, 1e-45, 3.4e38, 1e300, float("inf"), float("-inf"), float("nan")]
EDGE_STRINGS = [b"", b"x", b"\xff", b"\xc3", b"\xed\xa0\x80", b"general.alignment", b"general.architecture",
                b"llama", b"gemma3", b"gpt2", b"qwen3", b"falcon", b"tokenizer.ggml.tokens", b"token_embd.weight",
                b"output.weight", b"rope_freqs.weight", b"blk.0.attn_q.weight", b"blk.01.attn_q.weight",
                b"x" * 63, b"x" * 64, "é".encode(), b"\x00"]


def mutate_field(rng, field, groups):
    label, kind, value = field
    if kind == "raw" and label == "magic":
        field[2] = rng.choice([b"GGUF"[::-1], b"GGUG", b"GGU", b"ggml", b"\0\0\0\0"])
    elif kind == "raw":  # the data section
        field[2] = rng.choice([value[:rng.randint(0, len(value))], value + bytes(rng.randint(1, 64)), value[1:]])
    elif kind == "pad":
        field[2] = rng.choice([1, 8, 16, 64, 4096])
    elif kind == "str":
        data = value if isinstance(value, bytes) else value[0]
        pick = rng.random()
        if pick < 0.3:  # the stated length wrong
            field[2] = (data, rng.choice([len(data) + 1, len(data) - 1, len(data) + 8, 1 << 31, 1 << 63, (1 << 64) - 1]))
        elif pick < 0.6:
            field[2] = rng.choice(EDGE_STRINGS)
        elif pick < 0.8:  # another key's or tensor's name: a duplicate
            others = [f[2] for g in groups for f in g if f[0] == label and isinstance(f[2], bytes)]
            field[2] = rng.choice(others)
        else:
            position = rng.randint(0, len(data))
            field[2] = data[:position] + bytes([rng.randint(0, 255)]) + data[position + 1:]
    elif kind in ("u32", "u64"):
        if label in ("value_type", "item_type"):
            choices = list(range(14)) + [9, 8, 8, (1 << 32) - 1]
        elif label == "tensor_type":
            choices = list(range(42)) + [TYPE_NUMBER[name] for name in SUPPORTED] + [99, (1 << 32) - 1]
        elif label == "version":
            choices = [0, 1, 2, 4, 0x03000000, (1 << 32) - 1]
        elif label == "n_dims":
            choices = [0, 1, 2, 3, 4, 5, value + 1, value - 1, (1 << 32) - 1]
        else:
            choices = EDGE_COUNTS + [value + 1, value - 1, value * 2, value + ALIGNMENT, value - ALIGNMENT]
        field[2] = rng.choice(choices)
    elif kind in ("<f", "<d"):
        field[2] = rng.choice(EDGE_FLOATS)
    else:
        field[2] = rng.choice([0, 1, 2, -1, 255, 65535, (1 << 31) - 1, 1 << 31, (1 << 63) - 1, value + 1, value - 1])


def laid_out(seed):
    """A fresh copy of the seed's valid layout (made once per seed)."""
    if id(seed) not in _LAYOUTS:
        _LAYOUTS[id(seed)] = (seed, layout(np.random.default_rng(len(_LAYOUTS)), *seed[:2], seed[2]))
    return [[list(field) for field in group] for group in _LAYOUTS[id(seed)][1]]


_LAYOUTS = {}


def field_mutation(rng, seed):
    """1-3 fields of the seed's layout changed (no re-layout: counts, lengths, offsets may now lie)."""
    groups = laid_out(seed)
    for _ in range(rng.randint(1, 3)):
        pick = rng.random()
        if pick < 0.1 and len(groups) > 3:  # a whole entry deleted or repeated
            index = rng.randrange(1, len(groups) - 2)
            if rng.random() < 0.5:
                del groups[index]
            else:
                groups.insert(index, [list(field) for field in groups[index]])
            continue
        group = rng.choice(groups)
        mutate_field(rng, rng.choice(group), groups)
    return serialize(groups)


def seed_mutation(rng, seed):
    """The seed's metadata values, tensor types or shapes changed, then laid out validly."""
    metadata, tensors, alignment = list(seed[0]), [list(t) for t in seed[1]], seed[2]
    for _ in range(rng.randint(1, 3)):
        pick = rng.random()
        if pick < 0.4 and metadata:
            index = rng.randrange(len(metadata))
            key, value_type, value = metadata[index]
            field = _value_fields(value_type, value)[0]
            if value_type == 9:
                items = value[1][:rng.choice([0, 1, 3])]
                metadata[index] = (key, 9, (value[0], items))
            elif field[1] == "str":
                metadata[index] = (key, 8, rng.choice(EDGE_STRINGS).decode("utf-8", "surrogateescape"))
            else:
                mutate_field(rng, field, [])
                metadata[index] = (key, value_type, _unpack_scalar(field[1], field[2]))
        elif pick < 0.5 and metadata:
            del metadata[rng.randrange(len(metadata))]
        elif pick < 0.6:
            metadata.append((rng.choice(["general.alignment", "llama.rope.scaling.type", "gemma3.rope.freq_base_swa",
                                         "llama.vocab_size", "tokenizer.ggml.padding_token_id"]),
                             rng.choice([4, 8, 10, 6]), rng.choice([0, 1, 16, 64, 1000])))
            if metadata[-1][1] == 8:
                metadata[-1] = (metadata[-1][0], 8, rng.choice(["linear", "yarn", "none", "longrope", ""]))
        elif tensors:
            tensor = rng.choice(tensors)
            if rng.random() < 0.5:
                tensor[2] = TYPE_NUMBER[rng.choice(SUPPORTED + ["IQ2_XS", "Q2_K", "F64"])]
            else:
                ne = list(tensor[1])
                ne[rng.randrange(len(ne))] = rng.choice([0, 1, 2, 3])
                tensor[1] = [rng.choice([32, 64, 256, 512])] + ne[1:] if rng.random() < 0.5 else ne
    metadata = [m for m in metadata if not (m[0] == "general.alignment" and (m[1] != 4 or m[2] not in (16, 64)))]
    alignment = next((m[2] for m in metadata if m[0] == "general.alignment"), ALIGNMENT)
    return serialize(layout(rng_numpy(rng), metadata, [tuple(t) for t in tensors], alignment))


def _unpack_scalar(form, value):
    return struct.unpack(form, _pack_scalar(form, value))[0]


def byte_mutation(rng, seed):
    """One byte of a valid file flipped, inserted or deleted, or the file cut short."""
    data = bytearray(serialize(laid_out(seed)))
    position = rng.randrange(len(data))
    edit = rng.choice(["flip", "insert", "delete", "cut"])
    if edit == "flip":
        data[position] ^= 1 << rng.randrange(8)
    elif edit == "insert":
        data.insert(position, rng.randrange(256))
    elif edit == "delete":
        del data[position]
    else:
        del data[position:]
    return bytes(data)


def rng_numpy(rng):
    return np.random.default_rng(rng.getrandbits(32))


def gguf_file(rng, seeds):
    seed = rng.choice(seeds)
    pick = rng.random()
    if pick < 0.45:
        return field_mutation(rng, seed)
    if pick < 0.8:
        return seed_mutation(rng, seed)
    if pick < 0.95:
        return byte_mutation(rng, seed)
    return serialize(laid_out(seed))


# --- the property -------------------------------------------------------------------------------------

def _dequantize_all(file):
    """{name: float32 array, or the GGUFError refusing it} for every tensor of the file."""
    weights = {}
    for name in file.tensors:
        try:
            weights[name] = file.dequantize(name)
        except GGUFError as error:
            weights[name] = error
    return weights


def check(path, data, outcomes):
    path.write_bytes(data)
    ours, error = parse_guarded(lambda: read_gguf(path), GGUFError, path.name)
    if ours is None:
        outcomes["refused"] += 1
        return
    theirs = gguf_reader(path)
    fields = {key: field for key, field in theirs.fields.items() if not key.startswith("GGUF.")}
    assert list(ours.metadata) == list(fields), data[:200]
    for key, field in fields.items():
        value, expected = ours.metadata[key], field.contents()
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, np.asarray(expected, dtype=value.dtype), equal_nan=value.dtype.kind == "f")
        elif isinstance(value, float) and value != value:
            assert expected != expected
        else:
            assert value == expected and type(value) is type(expected), (key, value, expected)
    assert [(t.name, t.tensor_type.value, t.data_offset, t.n_bytes) for t in theirs.tensors] == \
        [(i.name, TYPE_NUMBER[i.type_name], i.offset, i.nbytes) for i in ours.tensors.values()]

    weights, _ = parse_guarded(lambda: _dequantize_all(ours), (), path.name)
    for index, tensor in enumerate(theirs.tensors):
        info, array = ours.tensors[tensor.name], weights[tensor.name]
        if isinstance(array, GGUFError):
            message = str(array)
            assert message.startswith(f"{path}: ") and "\n" not in message, message
            assert f"is {info.type_name}, which this reader does not dequantize" in message, message
            outcomes["tensor of a type not read, refused"] += 1
            continue
        assert array.shape == info.shape and array.dtype == np.float32
        assert array.nbytes <= 8 * max(info.nbytes, 4)  # never more float32 than the stored bytes hold
        if array.size == 0:  # (the gguf package cannot dequantize an empty tensor)
            outcomes["empty tensor read"] += 1
            continue
        # Every tensor's place and type were compared above; the weights of the first and last
        # two (the dequantization itself is held to the gguf package's in test_gguf_quants).
        if index < 2 or index >= len(theirs.tensors) - 2:
            assert np.array_equal(array.reshape(-1), gguf_weights(tensor), equal_nan=True), tensor.name
            outcomes["tensor read, equal"] += 1

    config, error = parse_guarded(lambda: config_from_gguf(ours), GGUFError, path.name)
    outcomes["config read" if config is not None else "config refused"] += 1
    _, error = parse_guarded(lambda: tokenizer_metadata(ours), GGUFError, path.name)
    if config is not None:  # the tensors the architecture changes back (the rest are the ones read above)
        arrays, error = parse_guarded(lambda: _changed_arrays(checkpoint_arrays(ours, config)), GGUFError, path.name)
        outcomes["checkpoint read" if arrays is not None else "checkpoint refused"] += 1
    outcomes["read by both, equal"] += 1


def _changed_arrays(arrays):
    return {name: arrays[name] for name in arrays
            if any(pattern.fullmatch(arrays.source(name)) for pattern, _ in arrays.changes)}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, smollm2_gguf, gemma3_gguf):
    return _seeds(tmp_path_factory.mktemp("seeds"), [smollm2_gguf, gemma3_gguf])


def test_gguf_reader_refuses_clearly_or_reads_as_gguf_does(seeds, tmp_path):
    for type_number, size in TYPE_SIZE.items():  # compile (or load) the kernels before writes are refused
        dequantize_blocks(type_number, np.zeros((1, size), np.uint8))
    outcomes = collections.Counter()
    with scratch_folder(tmp_path) as folder:
        @fuzz_settings(batch=PER_EXAMPLE)
        @given(plans())
        def run(plan):
            for rng, _ in inputs_of(plan):
                ran("GGUF file")
                check(folder / "model.gguf", gguf_file(rng, seeds), outcomes)

        run()
    total = outcomes["refused"] + outcomes["read by both, equal"]
    assert total >= FUZZ_EXAMPLES, outcomes
    # both sides reached: files refused, files read and their tensors and configs read
    assert outcomes["refused"] >= total // 5 and outcomes["read by both, equal"] >= total // 5, outcomes
    assert outcomes["tensor read, equal"] >= total and outcomes["config read"] >= total // 20, outcomes
    assert outcomes["checkpoint read"] >= total // 20, outcomes


def test_every_seed_is_a_file_both_readers_read(seeds, tmp_path):
    outcomes = collections.Counter()
    for seed in seeds:
        check(tmp_path / "seed.gguf", serialize(layout(np.random.default_rng(0), *seed[:2], seed[2])), outcomes)
    assert outcomes["read by both, equal"] == len(seeds) == 9 and outcomes["config read"] >= 7, outcomes
