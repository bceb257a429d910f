"""Checkpoint files -> the parameter dict `transformer.model` computes with.

Three steps, each a function:

    read_checkpoint(model_dir)    model.safetensors (or its shards) -> {checkpoint name: array}
    load_params(tensors, config)  checkpoint names -> our nested `params` (see transformer.model)
    find_tensor(tensors, config, name)   one tensor by our name (heads.py loads heads with it)

The safetensors format is simple enough to read directly: 8 bytes of
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw
tensor bytes. Reading it ourselves gives float16 *and* bfloat16 (NumPy has no bfloat16) and
errors that say which tensor of which file is truncated.

The name tables
---------------
Each family's module (`transformer/families/<family>.py`, `NAMES`) maps our flat names to the
checkpoint's. `{i}` is the layer index. A value may be a tuple: the first name is the usual
one, later ones are other spellings found in real files (a tied copy, an older name).
Base-model names are looked up with and without the prefix a task model puts in front (each
family's `PREFIX`: `bert.`, `roberta.`, ...); head names (`masked_lm.*`,
`sequence_classification.*`, ...) sit at the top level. Which parameters a model has, and
their shapes, come from its recipe (`config.recipe`).
Old TensorFlow-converted checkpoints call LayerNorm's weight/bias `gamma`/`beta`; both are
accepted. Buffers such as `embeddings.position_ids` are simply never asked for.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from transformer.families import FAMILY_MODULES
from transformer.files import ModelFileError, open_regular, parse_json, read_json
from transformer.recipe import Disentangled, Linear, Part


def _as_tuple(names):
    """A name table's value (a name or Part, a tuple of them, or None) as a tuple of entries."""
    return () if names is None else (names,) if isinstance(names, (str, Part)) else tuple(names)


def _entry_name(entry):
    return entry.name if isinstance(entry, Part) else entry

# ---------------------------------------------------------------------------------------
# Name tables: our name -> checkpoint name(s), one per family (transformer/families/*.NAMES)
# ---------------------------------------------------------------------------------------
# The prefixes a task model (XForMaskedLM, ...) puts in front of its base model's names.
BASE_PREFIXES = tuple(dict.fromkeys(module.PREFIX for module in FAMILY_MODULES.values()))

# Where the word table may also be found: a checkpoint that stored the tied copy only.
TIED_WORD_TABLE = tuple(dict.fromkeys(
    _entry_name(entry) for module in FAMILY_MODULES.values()
    for entry in _as_tuple(module.NAMES.get("masked_lm.decoder.weight"))))

HEAD_KINDS = ("masked_lm", "sequence_classification", "token_classification", "discriminator")


# Arrays of this many bytes or more get pages of their own from the OS (see below).
MMAP_THRESHOLD_BYTES = 1 << 20
_malloc_tuned = False


def keep_big_arrays_out_of_the_heap():
    """Ask glibc's malloc to give every block of 1 MiB or more its own pages, returned to the
    OS when freed. Once per process; does nothing where malloc is not glibc's.

    Why: by default glibc raises that threshold to the size of the last such block freed (up
    to 32 MiB). Loading frees many weight-sized temporaries (a tensor as read, before it is
    transposed or packed), after which weight-sized arrays come from the heap, and the holes
    the temporaries leave there stay in the process's resident memory: 40-80 MB at BERT-base
    size. With a fixed threshold they go back to the OS at once.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(MMAP_THRESHOLD_BYTES))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc (macOS, Windows, musl without the symbol): nothing to tune


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit its config."""


# ---------------------------------------------------------------------------------------
# Reading safetensors
# ---------------------------------------------------------------------------------------
# A file is valid when the `safetensors` package would open it (its Rust `read_metadata` and
# `Metadata::validate`):
#   * the header length N is at most 100,000,000 and the file holds 8 + N bytes or more;
#   * the header is UTF-8 JSON as serde_json reads it: an object, nested at most 127 deep, no
#     lone surrogate in a string, no number too big for a float;
#   * `__metadata__`, when present and not null, maps strings to strings;
#   * every other key names a tensor: {"dtype": one of DTYPE_BITS, "shape": [non-negative
#     integers], "data_offsets": [begin, end]}, integers below 2**64, other keys ignored;
#   * elements x bits per element, computed left to right, stays below 2**64, is a whole number
#     of bytes, and equals end - begin;
#   * sorted by offsets, the tensors lie back to back from byte 0 and end exactly where the
#     file does (no gap, no overlap, no trailing byte).
# Stricter than the package in three ways (each a file that only a broken writer makes): a name
# given twice anywhere in the header (the package keeps the last), a tensor entry written as a
# list [dtype, shape, offsets], and a dtype written as {"F32": null} (serde's forms for a
# struct and an enum, not the format's) are refused.
MAX_HEADER_BYTES = 100_000_000
MAX_JSON_DEPTH = 127  # serde_json's recursion limit: 128 nested arrays / objects is an error
_U64_END = 1 << 64

# Every dtype of the format, with its bits per element.
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}

# The dtypes this loader reads -> NumPy dtype of the stored bytes.
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bfloat16: read as raw 16-bit words, widened below
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class StoredTensor(NamedTuple):
    """Where one tensor's bytes are: `path`, from byte `offset` of the file (not of the data
    section), `dtype` (a safetensors name, e.g. "BF16") and `shape`."""

    path: Path
    dtype: str
    shape: tuple
    offset: int


def _bfloat16_to_float32(words):
    """bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret."""
    return (words.astype(np.uint32) << 16).view(np.float32)


class Tensors(MutableMapping):
    """{checkpoint name: array} over one or more safetensors files, read on demand.

    The headers are read and checked when it is made; a tensor's bytes are read from its
    file each time it is looked up, into an array of its own (not a view of a memory map).
    Loading a model then holds one tensor's bytes at a time beside the copies it keeps,
    instead of the whole file's pages on top of them (mapped file pages count in the
    process's resident memory), and the model survives its file being overwritten later.

    entries: {name: StoredTensor}. Like a dict, it takes arrays assigned to it
    (`tensors[name] = array`) and deletions.
    """

    def __init__(self, entries):
        self._entries = entries

    def __setitem__(self, name, array):
        self._entries[name] = array

    def __delitem__(self, name):
        del self._entries[name]

    def __getitem__(self, name):
        entry = self._entries[name]
        if not isinstance(entry, StoredTensor):
            return entry
        path, dtype_name, shape, offset = entry
        if dtype_name not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype_name}, which this loader does not "
                                  f"read (it reads {', '.join(_DTYPES)})")
        dtype = _DTYPES[dtype_name]
        count = math.prod(shape)
        with open_regular(path, "safetensors file") as file:
            array = np.fromfile(file, dtype=dtype, count=count, offset=offset) if count else np.zeros(0, dtype)
        if array.size != count:
            raise CheckpointError(f"{path}: tensor {name!r} could not be read in full; the file changed "
                                  f"since its header was read (re-download it)")
        try:
            array = array.reshape(shape)
        except ValueError:  # an empty tensor whose other dimensions NumPy cannot index
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(shape)}, which NumPy cannot "
                                  f"hold") from None
        if dtype_name == "BF16":
            return _bfloat16_to_float32(array)
        if dtype_name in ("F16", "F64"):
            with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf: _check_finite names it
                return array.astype(np.float32)
        return array

    def source(self, name):
        """The file tensor `name` is read from, or None (an array assigned to it)."""
        entry = self._entries.get(name)
        return entry.path if isinstance(entry, StoredTensor) else None

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)


def read_safetensors(path) -> Tensors:
    """One .safetensors file -> {name: array} (a `Tensors` mapping: each array is read from
    the file when looked up). Floating tensors come back as float32 (float16 and bfloat16
    upcast); integer tensors as stored.

    Raises CheckpointError naming the file, and the tensor and field when there is one, when
    the file is not valid safetensors (see the rules above) or is truncated.
    """
    return Tensors(read_safetensors_header(path))


def read_safetensors_header(path) -> dict:
    """A .safetensors file's header, checked -> {name: StoredTensor}, in the header's order.
    Reads the header only (at most MAX_HEADER_BYTES); CheckpointError as `read_safetensors`."""
    path = Path(path)
    try:
        with open_regular(path, "safetensors file") as file:
            size = os.fstat(file.fileno()).st_size
            if size < 8:
                raise CheckpointError(f"{path} is {size} bytes long: too short to be a safetensors file (truncated?)")
            header_length = int.from_bytes(file.read(8), "little")
            if header_length > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: the header claims {header_length:,} bytes, more than the "
                                      f"{MAX_HEADER_BYTES:,} safetensors allows; the file is corrupt or not "
                                      f"safetensors")
            if header_length > size - 8:
                raise CheckpointError(
                    f"{path}: the header claims {header_length} bytes but the file has only {size - 8} "
                    f"after the length field; the file is truncated or not safetensors"
                )
            header_bytes = file.read(header_length)
    except ModelFileError as error:
        raise CheckpointError(str(error)) from None
    except FileNotFoundError:
        dangling = " (a dangling symbolic link)" if path.is_symlink() else ""
        raise CheckpointError(f"{path} does not exist{dangling}") from None
    try:
        header = parse_json(header_bytes, f"{path}: the safetensors header", unique_keys=True)
    except ModelFileError as error:
        raise CheckpointError(f"{error}; the file is corrupt") from None
    _check_json_as_serde_reads_it(header, path)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header is {_json_kind(header)}, not a JSON object; the file is corrupt")

    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: the header's __metadata__ is {_json_kind(metadata)}"
                              f"{_first_non_string(metadata)}; expected an object of strings")
    data_start = 8 + header_length
    spans = {name: _tensor_span(path, name, entry) for name, entry in header.items() if name != "__metadata__"}
    _check_layout(path, spans, size - data_start)
    return {name: StoredTensor(path, dtype, tuple(shape), data_start + begin)
            for name, (dtype, shape, begin, _) in spans.items()}


def _tensor_span(path, name, entry):
    """One header entry -> (dtype, shape, begin, end), its fields' types checked."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: tensor {name!r} is described by {_json_kind(entry)}; expected an object "
                              f"with dtype, shape and data_offsets")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in entry:
            raise CheckpointError(f"{path}: tensor {name!r} has no {field} in the header")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {_short(dtype)}; expected one of the safetensors "
                              f"dtypes ({', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(_is_u64(dim) for dim in shape):
        raise CheckpointError(f"{path}: tensor {name!r} has shape {_short(shape)}; expected a list of non-negative "
                              f"integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_u64(o) for o in offsets)):
        raise CheckpointError(f"{path}: tensor {name!r} has data_offsets {_short(offsets)}; expected [begin, end], two "
                              f"non-negative integers")
    return dtype, shape, offsets[0], offsets[1]


def _check_layout(path, spans, data_size):
    """The tensors, sorted by offsets, fill the data section back to back, each with the
    bytes its dtype and shape need (as `safetensors` checks them)."""
    position, previous = 0, None
    for name, (dtype, shape, begin, end) in sorted(spans.items(), key=lambda item: item[1][2:]):
        if end < begin:
            raise CheckpointError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}], which end before "
                                  f"they begin")
        if begin < position:
            raise CheckpointError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}], which overlap the "
                                  f"bytes of tensor {previous!r} (up to {position}); the file is corrupt")
        if begin > position:
            raise CheckpointError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}], which leave bytes "
                                  f"[{position}, {begin}) of the data section to no tensor; the file is corrupt")
        bits = _bit_count(shape, DTYPE_BITS[dtype])
        if bits is None:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {shape}, whose size in bits overflows 64 bits")
        if bits % 8:
            raise CheckpointError(f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} is {bits} bits, "
                                  f"not a whole number of bytes")
        if end > data_size:
            raise CheckpointError(
                f"{path}: tensor {name!r} needs bytes [{begin}, {end}) of the data section, which has only "
                f"{data_size} bytes; the file is truncated (re-download it)"
            )
        if end - begin != bits // 8:
            raise CheckpointError(
                f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs {bits // 8} "
                f"bytes but its data_offsets span {end - begin}; the file is corrupt"
            )
        position, previous = end, name
    if position != data_size:
        raise CheckpointError(f"{path}: the tensors end at byte {position} of the data section, which has "
                              f"{data_size}: {data_size - position} bytes at the end belong to no tensor")


def _bit_count(shape, bits_per_element):
    """elements x bits, or None where safetensors' unsigned 64-bit product overflows (it
    multiplies left to right, so [2**40, 2**40, 0] overflows and [0, 2**40, 2**40] does not)."""
    count = 1
    for dim in shape:
        count *= dim
        if count >= _U64_END:
            return None
    count *= bits_per_element
    return count if count < _U64_END else None


def _is_u64(value):
    return type(value) is int and 0 <= value < _U64_END  # type(...) is int: a bool is not a size


def _check_json_as_serde_reads_it(value, path):
    """What serde_json (safetensors' parser) refuses and Python's json takes: nesting deeper
    than MAX_JSON_DEPTH, a lone surrogate (\\ud800) in a string, a number beyond the float
    range (1e400, which Python reads as infinity)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise CheckpointError(f"{path}: the header nests arrays / objects more than {MAX_JSON_DEPTH} deep; "
                                      f"the file is corrupt")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
        elif isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise CheckpointError(f"{path}: the header has a string with a lone surrogate ({item!r:.60}); "
                                          f"the file is corrupt") from None
        elif isinstance(item, float) and math.isinf(item):
            raise CheckpointError(f"{path}: the header has a number too big for a float; the file is corrupt")


def _json_kind(value):
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return f"{kinds.get(type(value), type(value).__name__)} ({_short(value)})"


def _short(value, width=60):
    """A JSON value as text for an error message, cut at `width` characters."""
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()  # a lone surrogate too
    return text if len(text) <= width else text[:width] + "..."


def _first_non_string(metadata):
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            if not isinstance(value, str):
                return f" whose {key!r} is {_json_kind(value)}"
    return ""


def read_checkpoint(model_dir) -> Tensors:
    """A model folder (or a .safetensors file) -> {checkpoint name: array} (read on demand).

    Reads `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return read_safetensors(model_dir)
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if os.path.lexists(single):  # lexists: a link to a device or a dangling link is named, not skipped
        return read_safetensors(single)
    if os.path.lexists(index):
        return read_sharded_checkpoint(index)
    found = sorted(p.name for p in model_dir.iterdir())
    hint = ""
    if any(name.endswith((".bin", ".pt", ".h5", ".msgpack")) for name in found):
        hint = " (only PyTorch/TF weights are present; convert them to safetensors)"
    raise CheckpointError(
        f"no model.safetensors or model.safetensors.index.json in {model_dir}{hint}; found: {', '.join(found) or 'nothing'}"
    )


def read_sharded_checkpoint(index_path) -> Tensors:
    """model.safetensors.index.json -> {checkpoint name: array} over the shards it lists.

    The index is {"weight_map": {tensor name: shard file name}, ...}. Each shard must be a
    plain file name in the index's folder (no directory, no "..", not absolute, no control
    character), and every tensor must be in the shard the index names and in no other;
    CheckpointError otherwise.
    """
    index_path = Path(index_path)
    try:
        index = read_json(index_path, "shard index", unique_keys=True)
    except ModelFileError as error:
        raise CheckpointError(str(error)) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        found = (f"weight_map is {_json_kind(weight_map)}" if isinstance(index, dict)
                 else f"it holds {_json_kind(index)}")
        raise CheckpointError(f"{index_path}: {found}; expected a non-empty object "
                              f'{{"weight_map": {{tensor name: shard file name}}}}')
    for name, shard in weight_map.items():
        if not _is_plain_file_name(shard):
            raise CheckpointError(f"{index_path}: weight_map gives tensor {name!r} the shard {_short(shard)}; "
                                  f"expected the name of a file beside the index (no directory, no '..')")
    entries = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not os.path.lexists(shard_path):
            raise CheckpointError(f"{index_path} lists shard {shard}, which is missing from {index_path.parent}")
        for name, stored in read_safetensors_header(shard_path).items():
            if name in entries:
                raise CheckpointError(f"{shard_path}: tensor {name!r} is stored in {entries[name].path.name} too; "
                                      f"a tensor must be stored once")
            if name not in weight_map:
                raise CheckpointError(f"{shard_path} holds tensor {name!r}, which {index_path.name} does not list")
            if weight_map[name] != shard:
                raise CheckpointError(f"{index_path}: weight_map puts tensor {name!r} in {weight_map[name]}, but "
                                      f"{shard} holds it")
            entries[name] = stored
    missing = [name for name in weight_map if name not in entries]
    if missing:
        raise CheckpointError(f"{index_path} promises {len(missing)} tensors its shards do not hold, e.g. "
                              f"{missing[0]!r} in {weight_map[missing[0]]}")
    return Tensors(entries)


def _is_plain_file_name(name):
    if not (isinstance(name, str) and name not in ("", ".", "..") and name.isprintable()
            and not any(separator in name for separator in ("/", "\\"))):
        return False
    try:
        os.fsencode(name)  # a lone surrogate ("\ud800") is no file name the OS takes
        return True
    except UnicodeEncodeError:
        return False


# ---------------------------------------------------------------------------------------
# Expected shapes (PyTorch's orientation, as stored: linear weights [out, in])
# ---------------------------------------------------------------------------------------
def expected_shape(config, ours: str) -> tuple:
    """The shape the checkpoint must store for our name `ours`, from the config and its recipe.

    >>> expected_shape(config, "layers.3.intermediate.weight")   # [out, in] as stored
    (1536, 384)
    """
    hidden, emb = config.hidden_size, config.embedding_size
    table = recipe_part(config, ours)  # a model-level table: the whole name
    if isinstance(table, Disentangled):  # DeBERTa's relative embeddings, projected by each layer
        return (table.rows, hidden)
    if table is not None:
        return (table.rows, config.num_attention_heads)
    owner, _, part = ours.rpartition(".")
    spec = recipe_part(config, owner) if owner else None
    if spec is not None:
        if isinstance(spec, Linear):
            return (spec.out_features, spec.in_features) if part == "weight" else (spec.out_features,)
        return (spec.size,)  # a Norm
    shapes = {
        "embeddings.word": (config.vocab_size, emb),
        "embeddings.position": (config.max_position_embeddings, emb),
        "embeddings.token_type": (config.type_vocab_size, emb),
        "pooler.weight": (hidden, hidden),
        "pooler.bias": (hidden,),
        # the masked-LM transform ends at embedding_size (only ELECTRA's generator differs from hidden)
        "masked_lm.dense.weight": (emb, hidden),
        "masked_lm.dense.bias": (emb,),
        "masked_lm.layer_norm.weight": (emb,),
        "masked_lm.layer_norm.bias": (emb,),
        "masked_lm.decoder.weight": (config.vocab_size, emb),
        "masked_lm.decoder.bias": (config.vocab_size,),
        "sequence_classification.dense.weight": (hidden, hidden),
        "sequence_classification.dense.bias": (hidden,),
        "sequence_classification.layer_norm.weight": (hidden,),  # ModernBERT's head norm
        "sequence_classification.layer_norm.bias": (hidden,),
        "token_classification.dense.weight": (hidden, hidden),  # ModernBERT's head transform
        "token_classification.dense.bias": (hidden,),
        "token_classification.layer_norm.weight": (hidden,),
        "token_classification.layer_norm.bias": (hidden,),
        "sequence_classification.out.weight": (config.num_labels, hidden),
        "sequence_classification.out.bias": (config.num_labels,),
        "token_classification.out.weight": (config.num_labels, hidden),
        "token_classification.out.bias": (config.num_labels,),
        "discriminator.dense.weight": (hidden, hidden),
        "discriminator.dense.bias": (hidden,),
        "discriminator.out.weight": (1, hidden),
        "discriminator.out.bias": (1,),
    }
    return shapes[ours]


def recipe_part(config, name):
    """The recipe's Linear, Norm or position scheme that our parameter `name` belongs to
    ("layers.3.intermediate", "embeddings.layer_norm", "relative_attention_bias"), or None."""
    recipe = config.recipe
    if name.startswith("layers."):
        _, index, own = name.split(".", 2)
        layer = recipe.layers[int(index)]
        return next((part for part in layer.linears() + layer.norms() if part.name == own), None)
    if name.startswith("embeddings."):
        own = name.split(".", 1)[1]
        spec = recipe.embeddings
        return next((part for part in (spec.norm, spec.projection) if part is not None and part.name == own), None)
    if recipe.final_norm is not None and recipe.final_norm.name == name:
        return recipe.final_norm
    for scheme in recipe.position_schemes():  # a norm of a position table (DeBERTa's norm_rel_ebd)
        if getattr(scheme, "norm", None) is not None and scheme.norm.name == name:
            return scheme.norm
    return next((scheme for scheme in recipe.position_schemes() if getattr(scheme, "table", "") == name), None)


def _describe_config(config) -> str:
    return (f"{config.model_type}: vocab_size={config.vocab_size}, hidden_size={config.hidden_size}, "
            f"embedding_size={config.embedding_size}, intermediate_size={config.intermediate_size}, "
            f"num_attention_heads={config.num_attention_heads}, max_position_embeddings="
            f"{config.max_position_embeddings}, type_vocab_size={config.type_vocab_size}, "
            f"num_labels={config.num_labels}")


# ---------------------------------------------------------------------------------------
# Looking names up
# ---------------------------------------------------------------------------------------
def _spellings(checkpoint_name: str):
    """The name itself, then its legacy TensorFlow spelling (LayerNorm gamma/beta)."""
    yield checkpoint_name
    if checkpoint_name.endswith("LayerNorm.weight"):
        yield checkpoint_name[: -len("weight")] + "gamma"
    elif checkpoint_name.endswith("LayerNorm.bias"):
        yield checkpoint_name[: -len("bias")] + "beta"


def checkpoint_entries(config, ours: str) -> list:
    """Every name-table entry (a checkpoint name, or a Part of one) our name `ours` may be
    stored under, most usual first, with the layer index filled in and each spelling and
    task-model prefix spelt out."""
    table = config.family_module.NAMES
    key = ours
    layer = None
    if ours.startswith("layers."):
        _, layer, rest = ours.split(".", 2)
        key = "layers.{i}." + rest
    is_head = ours.split(".", 1)[0] in HEAD_KINDS
    candidates = []
    for entry in _as_tuple(table[key]):
        name = _entry_name(entry).format(i=layer)
        for spelling in _spellings(name):
            # a base model saved alone has no prefix; inside a task model it has one
            names = [spelling] if is_head else [spelling, *(prefix + spelling for prefix in BASE_PREFIXES)]
            candidates.extend(replace(entry, name=n) if isinstance(entry, Part) else n for n in names)
    if ours == "embeddings.word":
        candidates.extend(TIED_WORD_TABLE)
    return candidates


def checkpoint_names(config, ours: str) -> list:
    """Every checkpoint name our name `ours` may be stored under, most usual first."""
    return [_entry_name(entry) for entry in checkpoint_entries(config, ours)]


def find_tensor(tensors, config, ours: str, required: bool = True):
    """The float32 array stored for our name `ours`, shape-checked, linear weights turned to
    [in, out]. None when absent and not required; CheckpointError when required and absent
    or when the shape does not fit the config."""
    candidates = checkpoint_entries(config, ours)
    for entry in candidates:
        if _entry_name(entry) in tensors:
            break
    else:
        if not required:
            return None
        names = [_entry_name(entry) for entry in candidates]
        raise CheckpointError(
            f"missing tensor {names[0]!r} (our {ours!r}); looked for: {', '.join(names[:4])}"
            + (" ..." if len(names) > 4 else "")
        )
    name = _entry_name(entry)
    array = tensors[name]
    if isinstance(entry, Part):
        array = _part_of(array, entry, ours)
    expected = expected_shape(config, ours)
    if tuple(array.shape) != expected:
        raise CheckpointError(
            f"tensor {name!r} has shape {tuple(array.shape)} but the config expects {expected} "
            f"({_describe_config(config)})"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise CheckpointError(f"tensor {name!r} has dtype {array.dtype}; parameters must be floating point")
    if array.ndim == 2 and ours.endswith(".weight"):
        # PyTorch stores nn.Linear weights [out, in]; we compute x @ weight, so turn them once here.
        array = array.T
    # A copy of our own, never a view of the caller's array (which may be a memory map): a
    # loaded model must not crash (SIGBUS) when its file is later overwritten in place.
    array = np.array(array, dtype=np.float32, order="C", copy=True)
    _check_finite(array, name, tensors)
    return array


def _part_of(array, part, ours):
    """The piece of a stored tensor that a Part names, as PyTorch would store it alone ([out, in])."""
    if part.in_out and array.ndim == 2:
        array = array.T  # [in, out] -> [out, in]
    rows = array.shape[0] if array.ndim else 0
    if part.chunks < 1 or not 0 <= part.chunk < part.chunks or rows % part.chunks:
        raise CheckpointError(f"tensor {part.name!r} of shape {tuple(array.shape)} cannot be cut into "
                              f"{part.chunks} equal parts along its first axis (for our {ours!r})")
    size = rows // part.chunks
    return array[part.chunk * size:(part.chunk + 1) * size]


def _check_finite(array, name, tensors):
    """CheckpointError when a parameter holds NaN or infinity: every output it touches would.
    min and max carry a NaN through and meet any infinity, in two passes without a temporary."""
    if array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        bad = ~np.isfinite(array)
        source = tensors.source(name) if isinstance(tensors, Tensors) else None
        raise CheckpointError(
            f"{f'{source}: ' if source else ''}tensor {name!r} holds {int(bad.sum())} NaN or infinite values "
            f"(the first at index {tuple(int(i) for i in np.argwhere(bad)[0])}); a model's parameters must be finite"
        )


def linear_params(tensors, config, ours, required=True, bias=True):
    """{"weight": [in, out], "bias": [out]} for our name `ours` (a linear or LayerNorm), or
    None when absent and not required. bias False: a bias-free linear or norm ("bias": None)."""
    weight = find_tensor(tensors, config, ours + ".weight", required)
    if weight is None:
        return None
    return {"weight": weight, "bias": find_tensor(tensors, config, ours + ".bias") if bias else None}


def load_params(tensors, config) -> dict:
    """Checkpoint tensors -> the nested `params` dict documented in `transformer.model`, with
    the parameters the config's recipe names.

    tensors: {checkpoint name: array} from `read_checkpoint`; config: EncoderConfig.
    Raises CheckpointError naming any missing tensor or shape that does not fit the config.
    """
    keep_big_arrays_out_of_the_heap()
    recipe = config.recipe
    spec = recipe.embeddings
    embeddings = {
        "word": find_tensor(tensors, config, "embeddings.word"),
        "position": find_tensor(tensors, config, "embeddings.position") if spec.positions is not None else None,
        "token_type": find_tensor(tensors, config, "embeddings.token_type") if spec.token_types else None,
        "layer_norm": None,
        "projection": None,
    }
    for part in (spec.norm, spec.projection):
        if part is not None:
            embeddings[part.name] = linear_params(tensors, config, f"embeddings.{part.name}", bias=part.bias)
    layers = []
    for i, layer_recipe in enumerate(recipe.layers):
        layer = {}
        for block in layer_recipe.blocks:
            # block order: the norm before, the sublayer's linears and norms, the norms after
            parts = [block.norm_before, *block.sublayer.linears(), *block.sublayer.norms(), block.norm_after,
                     block.norm_after_residual]
            for part in parts:
                if part is not None:
                    layer[part.name] = linear_params(tensors, config, f"layers.{i}.{part.name}", bias=part.bias)
        layers.append(layer)
    warn_unused_layers(tensors, config)
    check_unexpected_tensors(tensors, config)
    params = {"embeddings": embeddings, "layers": layers}
    for table in recipe.tables():
        params[table] = find_tensor(tensors, config, table)
    for scheme in recipe.position_schemes():
        if getattr(scheme, "norm", None) is not None:
            params[scheme.norm.name] = linear_params(tensors, config, scheme.norm.name, bias=scheme.norm.bias)
    if recipe.final_norm is not None:
        final = recipe.final_norm
        params[final.name] = linear_params(tensors, config, final.name, bias=final.bias)
    has_pooler = "pooler.weight" in config.family_module.NAMES
    # Task models other than sequence classification drop the pooler: absent is fine.
    params["pooler"] = linear_params(tensors, config, "pooler", required=False) if has_pooler else None
    return params


def checkpoint_layers(tensors, config) -> dict:
    """{layer index: number of tensors} for the encoder layers the checkpoint holds, found by
    the family's layer names (`encoder.layer.{i}.`, `transformer.layer.{i}.`, with or without
    a task model's prefix)."""
    stems = {_entry_name(value).split("{i}")[0] for key, values in config.family_module.NAMES.items() if "{i}" in key
             for value in _as_tuple(values)}
    pattern = re.compile(r"(?:%s)?(?:%s)(\d+)\." % ("|".join(map(re.escape, BASE_PREFIXES)),
                                                   "|".join(map(re.escape, sorted(stems)))))
    layers = {}
    for name in tensors:
        match = pattern.match(name)
        if match:
            layers[int(match.group(1))] = layers.get(int(match.group(1)), 0) + 1
    return layers


def warn_unused_layers(tensors, config):
    """Warn (once per call) when the checkpoint holds layers past config.num_hidden_layers: they
    are not used, as `transformers` loads such a checkpoint and warns about unused weights."""
    layers = checkpoint_layers(tensors, config)
    unused = sorted(index for index in layers if index >= config.num_hidden_layers)
    if unused:
        count = sum(layers[index] for index in unused)
        span = f"layer {unused[0]}" if len(unused) == 1 else f"layers {unused[0]}-{unused[-1]}"
        warnings.warn(f"the checkpoint has {max(layers) + 1} layers, config.json {config.num_hidden_layers}: "
                      f"{span} ({count} tensors) {'is' if len(unused) == 1 else 'are'} not used",
                      UserWarning, stacklevel=3)


def check_unexpected_tensors(tensors, config):
    """For a family whose module lists IGNORED_TENSORS (name prefixes it may skip: T5's decoder
    and language-model head), CheckpointError naming the tensors that are neither skipped nor
    named by its name table (any layer's, any spelling, any head's): such a file holds a part
    of the model this package would silently leave out. Other families skip unknown tensors."""
    ignored = getattr(config.family_module, "IGNORED_TENSORS", None)
    if ignored is None:
        return
    layers = sorted(set(range(config.num_hidden_layers)) | set(checkpoint_layers(tensors, config)))
    known = set(TIED_WORD_TABLE)
    for key in config.family_module.NAMES:
        for ours in ([key.replace("{i}", str(i)) for i in layers] if "{i}" in key else [key]):
            known.update(checkpoint_names(config, ours))
    unexpected = sorted(name for name in tensors if name not in known and not name.startswith(ignored))
    if unexpected:
        raise CheckpointError(
            f"the checkpoint holds {len(unexpected)} tensor{'s' if len(unexpected) > 1 else ''} a {config.model_type} "
            f"encoder does not have: {', '.join(map(repr, unexpected[:3]))}{' ...' if len(unexpected) > 3 else ''} "
            f"(only {' and '.join(repr(prefix + '*') for prefix in ignored)} tensors are skipped)")
