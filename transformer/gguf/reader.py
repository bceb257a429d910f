"""Reading a GGUF file (llama.cpp's model format) strictly, as an untrusted input.

    gguf = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf.metadata["llama.block_count"]            -> 30
    gguf.tensors["blk.0.attn_q.weight"]           -> TensorInfo(name, type_name="Q4_1", shape=(576, 576), ...)
    gguf.dequantize("blk.0.attn_q.weight")        -> float32 [576, 576]
    gguf.arrays()                                 -> {name: float32 array}, each read when looked up

A GGUF file is little-endian throughout (ggml's docs/gguf.md):

    magic         4 bytes "GGUF"
    version       uint32      2 or 3 (they differ in nothing read here; 1 had 32-bit counts)
    tensor_count  uint64
    kv_count      uint64
    kv_count metadata entries     key: string, value type: uint32, value
    tensor_count tensor infos     name: string, n_dims: uint32, dims: uint64[n_dims] (ne[0], the
                                  row length, first), ggml type: uint32, offset: uint64 (from the
                                  start of the data section)
    padding to the alignment (metadata `general.alignment`, a uint32; 32 when absent)
    data section                  the tensors' bytes, each at its offset, each padded to the alignment

    string = uint64 byte length + UTF-8 bytes
    value types: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32, 6 float32, 7 bool,
                 8 string, 9 array (item type: uint32, count: uint64, items), 10 uint64,
                 11 int64, 12 float64

Checked before anything is allocated or read: every count and length against the bytes left
in the file, every type against the types above (and a tensor's against ggml's), every
shape against its type's block size, every tensor's place in the data section. A file is
accepted when llama.cpp's `gguf_init_from_file` would accept it and its tensors lie inside
the file: keys and tensor names unique and non-empty, names shorter than 64 bytes, at most
4 dimensions, the alignment a power of two, the tensors back to back in the order listed,
each padded to the alignment. Stricter than llama.cpp: strings must be UTF-8 (transformers
decodes them so), a bool is the byte 0 or 1, arrays hold at most `MAX_ARRAY_ITEMS` items, and
a tensor's nonzero dimensions multiply to less than 2^61 (an empty tensor too: NumPy must hold
its shape).
Anything else is one `GGUFError` naming the file and the field or tensor.

Tensors are read from the file each time they are looked up, never the whole file at once.
"""

import math
import os
import struct
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from transformer.files import open_regular
from transformer.gguf import quants

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4          # GGML_MAX_DIMS
MAX_NAME_BYTES = 63   # GGML_MAX_NAME is 64, with the terminating NUL
# Far more items than any real array holds (a vocabulary of 262,144 tokens, ~500,000 merges),
# few enough that an array of empty strings cannot take gigabytes of Python objects.
MAX_ARRAY_ITEMS = 1 << 24

# value type -> (name, struct format or None, NumPy dtype or None)
VALUE_TYPES = {
    0: ("uint8", "<B", "<u1"), 1: ("int8", "<b", "<i1"), 2: ("uint16", "<H", "<u2"), 3: ("int16", "<h", "<i2"),
    4: ("uint32", "<I", "<u4"), 5: ("int32", "<i", "<i4"), 6: ("float32", "<f", "<f4"), 7: ("bool", "<B", "<u1"),
    8: ("string", None, None), 9: ("array", None, None), 10: ("uint64", "<Q", "<u8"), 11: ("int64", "<q", "<i8"),
    12: ("float64", "<d", "<f8"),
}
STRING, ARRAY, BOOL = 8, 9, 7


_U64 = struct.Struct("<Q")
_WINDOW = 1 << 20  # bytes read at a time for a string array


class GGUFError(ValueError):
    """A GGUF file that is malformed, truncated or not readable here (the message names the
    file and the field or tensor)."""


class TensorInfo(NamedTuple):
    """Where a tensor is and what it holds. shape: NumPy order (ggml's ne reversed: the row,
    along which the blocks run, is the last axis). offset: absolute, from the start of the file."""
    name: str
    type_name: str
    shape: tuple
    offset: int
    nbytes: int


def _short(text, width=60):
    text = repr(text)
    return text if len(text) <= width else text[:width - 4] + "...'"


class _Cursor:
    """Reads the header front to back, never past the end of the file."""

    def __init__(self, file, path, size):
        self.file, self.path, self.size, self.position = file, path, size, 0

    @property
    def left(self):
        return self.size - self.position

    def fail(self, message):
        raise GGUFError(f"{self.path}: {message}")

    def take(self, count, field):
        if count > self.left:
            self.fail(f"truncated: {field} needs {count:,} bytes at offset {self.position:,}, "
                      f"but the file ends at {self.size:,}")
        data = self.file.read(count)
        if len(data) != count:
            self.fail(f"{field} could not be read in full; the file changed while it was read")
        self.position += count
        return data

    def scalar(self, value_type, field):
        _, form, _ = VALUE_TYPES[value_type]
        return struct.unpack(form, self.take(struct.calcsize(form), field))[0]

    def u32(self, field):
        return self.scalar(4, field)

    def u64(self, field):
        return self.scalar(10, field)

    def string(self, field):
        length = self.u64(f"the length of {field}")
        if length > self.left:
            self.fail(f"{field} is {length:,} bytes long, more than the {self.left:,} left in the file")
        data = self.take(length, field)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            self.fail(f"{field} is not UTF-8 text (byte {error.start}: {data[error.start:error.start + 1]!r})")

    def strings(self, count, field):
        """`count` strings back to back (a vocabulary): what `string` reads, parsed from large
        reads of the file rather than two small reads per string."""
        items, window, start, at = [], b"", self.position, 0  # window: the file's bytes from `start`
        for index in range(count):
            if at + 8 > len(window):
                window, start, at = self._refill(window, start, at, 8, f"the length of {field}[{index}]")
            length = _U64.unpack_from(window, at)[0]
            if length > self.size - (start + at + 8):
                self.fail(f"{field}[{index}] is {length:,} bytes long, more than the "
                          f"{self.size - (start + at + 8):,} left in the file")
            at += 8
            if at + length > len(window):
                window, start, at = self._refill(window, start, at, length, f"{field}[{index}]")
            try:
                items.append(window[at:at + length].decode("utf-8"))
            except UnicodeDecodeError as error:
                self.fail(f"{field}[{index}] is not UTF-8 text (byte {error.start})")
            at += length
        self.position = start + at
        self.file.seek(self.position)
        return items

    def _refill(self, window, start, at, needed, field):
        """The window moved to begin at byte `at` of it and hold at least `needed` bytes."""
        if start + at + needed > self.size:
            self.fail(f"truncated: {field} needs {needed:,} bytes at offset {start + at:,}, "
                      f"but the file ends at {self.size:,}")
        self.file.seek(start + len(window))
        window = window[at:] + self.file.read(max(needed - (len(window) - at), _WINDOW))
        if len(window) < needed:
            self.fail(f"{field} could not be read in full; the file changed while it was read")
        return window, start + at, 0

    def value(self, value_type, field):
        """One metadata value and its type's name: (int, "uint32"), (str, "string"),
        (list of str, "array[string]"), (NumPy array, "array[float32]"), ..."""
        if value_type == STRING:
            return self.string(field), "string"
        if value_type == ARRAY:
            return self.array(field)
        value = self.scalar(value_type, field)
        if value_type == BOOL:
            if value not in (0, 1):
                self.fail(f"{field} is a bool holding the byte {value}; expected 0 or 1")
            value = bool(value)
        return value, VALUE_TYPES[value_type][0]

    def array(self, field):
        item_type = self.u32(f"the item type of {field}")
        if item_type == ARRAY:
            self.fail(f"{field} is an array of arrays, which GGUF readers (llama.cpp's) do not take")
        if item_type not in VALUE_TYPES:
            self.fail(f"{field} is an array of value type {item_type}; expected one of 0-12")
        count = self.u64(f"the item count of {field}")
        name, _, dtype = VALUE_TYPES[item_type]
        least = 8 if item_type == STRING else np.dtype(dtype).itemsize  # a string has at least its length
        if count > MAX_ARRAY_ITEMS or count * least > self.left:
            self.fail(f"{field} claims {count:,} {name} items, more than "
                      + (f"the {MAX_ARRAY_ITEMS:,} an array may have" if count > MAX_ARRAY_ITEMS
                         else f"the {self.left:,} bytes left in the file can hold"))
        if item_type == STRING:
            return self.strings(count, field), "array[string]"
        items = np.frombuffer(self.take(count * least, field), dtype=dtype)
        if item_type == BOOL:
            if np.any(items > 1):
                self.fail(f"{field} is a bool array holding the byte {items[items > 1][0]}; expected 0 or 1")
            return items.astype(bool), "array[bool]"
        return items.astype(np.dtype(dtype).newbyteorder("=")), f"array[{name}]"


class GGUFFile:
    """A GGUF file's header, read and checked (see the module docstring); tensors on demand.

    path; version; alignment; data_offset (where the data section starts);
    metadata: {key: value} in file order (int, float, bool, str; arrays as a list of str or a
    NumPy array); metadata_types: {key: "uint32", "string", "array[int32]", ...};
    tensors: {name: TensorInfo} in file order.
    """

    def __init__(self, path, version, alignment, data_offset, metadata, metadata_types, tensors):
        self.path, self.version, self.alignment, self.data_offset = path, version, alignment, data_offset
        self.metadata, self.metadata_types, self.tensors = metadata, metadata_types, tensors

    def __repr__(self):
        return (f"GGUFFile({os.fspath(self.path)!r}, version={self.version}, {len(self.metadata)} metadata keys, "
                f"{len(self.tensors)} tensors)")

    @property
    def architecture(self):
        """`general.architecture` ("llama", "gemma3", ...), or None."""
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def read_bytes(self, name):
        """The stored bytes of tensor `name`: uint8 [nbytes], read from the file now."""
        info = self._info(name)
        with open_regular(self.path, "GGUF file") as file:
            data = np.fromfile(file, dtype=np.uint8, count=info.nbytes, offset=info.offset) if info.nbytes else \
                np.zeros(0, np.uint8)
        if data.size != info.nbytes:
            raise GGUFError(f"{self.path}: tensor {_short(name)} could not be read in full; "
                            f"the file changed since its header was read")
        return data

    def dequantize(self, name, backend="numba"):
        """Tensor `name` as float32, in its NumPy shape. backend: "numba" (the kernels) or
        "numpy" (the reference in transformer/gguf/quants.py); both give the same bits."""
        info = self._info(name)
        if info.type_name not in quants.DEQUANTIZE:
            raise GGUFError(f"{self.path}: tensor {_short(name)} is {info.type_name}, which this reader does not "
                            f"dequantize (it reads {', '.join(quants.DEQUANTIZE)})")
        data = self.read_bytes(name)
        if backend == "numpy":
            with np.errstate(invalid="ignore"):  # inf * 0 in a damaged block: NaN, as in ggml
                return quants.dequantize(info.type_name, data, info.shape)
        if backend != "numba":
            raise ValueError(f"unknown backend {backend!r}; choose 'numba' or 'numpy'")
        from transformer.kernels.quants import dequantize_blocks

        ggml_type = _TYPE_BY_NAME[info.type_name]
        blocks = data.reshape(-1, ggml_type.type_size)  # [n_blocks, type_size]
        return dequantize_blocks(ggml_type.number, blocks).reshape(info.shape)

    def arrays(self, backend="numba"):
        """{tensor name: float32 array}, each read and dequantized when it is looked up."""
        return GGUFArrays(self, backend)

    def _info(self, name):
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path} has no tensor {name!r}") from None


_TYPE_BY_NAME = {t.name: t for t in quants.GGML_TYPES.values()}


class GGUFArrays(Mapping):
    """A read-only mapping {tensor name: float32 array} over a GGUFFile, read on demand."""

    def __init__(self, gguf, backend="numba"):
        self.gguf, self.backend = gguf, backend

    def __getitem__(self, name):
        return self.gguf.dequantize(name, self.backend)

    def __iter__(self):
        return iter(self.gguf.tensors)

    def __len__(self):
        return len(self.gguf.tensors)


def read_gguf(path) -> GGUFFile:
    """Read and check a GGUF file's header (see the module docstring). Raises GGUFError naming
    the file and the field or tensor; FileNotFoundError when there is no such file."""
    with open_regular(path, "GGUF file") as raw:
        size = os.fstat(raw.fileno()).st_size
        cursor = _Cursor(raw, path, size)
        return _read_header(cursor)


def _read_header(cursor):
    magic = cursor.take(4, "the magic number")
    if magic != MAGIC:
        cursor.fail(f"not a GGUF file: it starts with {magic!r}, expected {MAGIC!r}")
    version = cursor.u32("the version")
    if version not in VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in VERSIONS:
            cursor.fail(f"version {version:#x}: a big-endian GGUF file, which this reader does not read")
        cursor.fail(f"GGUF version {version}; this reader reads versions {' and '.join(map(str, VERSIONS))}")
    tensor_count = cursor.u64("the tensor count")
    kv_count = cursor.u64("the metadata count")
    # The least a metadata entry takes: a key of 1 byte (8 + 1), a type (4), a 1-byte value.
    if kv_count * 14 > cursor.left:
        cursor.fail(f"the metadata count {kv_count:,} is more than the {cursor.left:,} bytes left in the file can hold")

    metadata, metadata_types = {}, {}
    for index in range(kv_count):
        key = cursor.string(f"the key of metadata entry {index}")
        if not key:
            cursor.fail(f"metadata entry {index} has an empty key")
        if key in metadata:
            cursor.fail(f"metadata key {_short(key)} appears twice")
        field = f"metadata {_short(key)}"
        value_type = cursor.u32(f"the value type of {field}")
        if value_type not in VALUE_TYPES:
            cursor.fail(f"{field} has value type {value_type}; expected one of 0-12")
        metadata[key], metadata_types[key] = cursor.value(value_type, field)

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        alignment = metadata["general.alignment"]
        if metadata_types["general.alignment"] != "uint32":
            cursor.fail(f"metadata 'general.alignment' is a {metadata_types['general.alignment']}; expected a uint32")
        if alignment == 0 or alignment & (alignment - 1):
            cursor.fail(f"metadata 'general.alignment' is {alignment}; expected a power of two")

    # The least a tensor info takes: a name of 1 byte (8 + 1), n_dims (4), a type (4), an offset (8).
    if tensor_count * 25 > cursor.left:
        cursor.fail(f"the tensor count {tensor_count:,} is more than the {cursor.left:,} bytes left in the file can hold")
    infos, names = [], set()
    for index in range(tensor_count):
        infos.append(_read_tensor_info(cursor, index, names))

    data_offset = cursor.position
    if tensor_count:
        data_offset += -data_offset % alignment
    tensors, expected = {}, 0
    for name, type_name, shape, relative, nbytes in infos:
        if relative != expected:
            cursor.fail(f"tensor {_short(name)} is at data offset {relative:,}; expected {expected:,} (the tensors "
                        f"lie back to back in the order listed, each padded to {alignment} bytes)")
        end = data_offset + relative + nbytes
        if end > cursor.size:
            cursor.fail(f"tensor {_short(name)} ({type_name}, shape {list(shape)}, {nbytes:,} bytes) ends at "
                        f"offset {end:,}, past the end of the file ({cursor.size:,} bytes): truncated?")
        tensors[name] = TensorInfo(name, type_name, shape, data_offset + relative, nbytes)
        expected = relative + nbytes + (-nbytes % alignment)
    return GGUFFile(cursor.path, version, alignment, data_offset, metadata, metadata_types, tensors)


def _read_tensor_info(cursor, index, names):
    """(name, type name, NumPy shape, offset in the data section, byte size) of tensor `index`;
    `names` (the names read so far) gets its name."""
    name = cursor.string(f"the name of tensor {index}")
    if not name:
        cursor.fail(f"tensor {index} has an empty name")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        cursor.fail(f"tensor {index}'s name {_short(name)} is longer than {MAX_NAME_BYTES} bytes")
    if name in names:
        cursor.fail(f"tensor name {_short(name)} appears twice")
    names.add(name)
    what = f"tensor {_short(name)}"
    n_dims = cursor.u32(f"the dimension count of {what}")
    if n_dims > MAX_DIMS:
        cursor.fail(f"{what} has {n_dims} dimensions; at most {MAX_DIMS}")
    if n_dims * 8 > cursor.left:
        cursor.fail(f"truncated: the dimensions of {what} run past the end of the file")
    dims = [cursor.u64(f"dimension {i} of {what}") for i in range(n_dims)]
    # Below 2^61 weights, the float32 array NumPy makes of them is below its 2^63-byte limit
    # (which NumPy applies to the nonzero dimensions even of an empty array).
    if math.prod(dim for dim in dims if dim) >= 1 << 61:
        cursor.fail(f"{what} has dimensions {dims}; the product of the nonzero ones must be below 2^61")
    type_number = cursor.u32(f"the type of {what}")
    ggml_type = quants.GGML_TYPES.get(type_number)
    if ggml_type is None:
        removed = quants.REMOVED_TYPES.get(type_number)
        cursor.fail(f"{what} has ggml type {type_number}"
                    + (f" ({removed}), which ggml no longer has: convert the model again with a current llama.cpp"
                       if removed else ", which is not a ggml tensor type"))
    row = dims[0] if dims else 1
    if row % ggml_type.block_size:
        cursor.fail(f"{what} is {ggml_type.name} with rows of {row} weights, not a multiple of its "
                    f"{ggml_type.block_size}-weight blocks")
    offset = cursor.u64(f"the data offset of {what}")
    nbytes = math.prod(dims) // ggml_type.block_size * ggml_type.type_size
    shape = tuple(reversed(dims))
    return name, ggml_type.name, shape, offset, nbytes
