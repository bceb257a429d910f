"""The GGUF reader: what llama.cpp's writer writes reads as the `gguf` package reads it; what is
broken is refused with one line naming the file and the field or tensor."""

import os
import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf_files import SUPPORTED, pack_gguf, write_gguf  # noqa: E402

from transformer.gguf import GGUFError, read_gguf  # noqa: E402
from transformer.gguf.quants import GGML_TYPES  # noqa: E402

NUMBER = {t.name: t.number for t in GGML_TYPES.values()}

METADATA = {
    "general.name": ("STRING", "tiny ünïcode"),
    "test.u8": ("UINT8", 200), "test.i8": ("INT8", -100), "test.u16": ("UINT16", 60000),
    "test.i16": ("INT16", -30000), "test.u32": ("UINT32", 4_000_000_000), "test.i32": ("INT32", -2_000_000_000),
    "test.u64": ("UINT64", 2 ** 63 + 5), "test.i64": ("INT64", -(2 ** 62)), "test.f32": ("FLOAT32", 0.1),
    "test.f64": ("FLOAT64", 1e-300), "test.bool": ("BOOL", True),
    "test.strings": ("ARRAY", ["a", "", "Ġthe", "<0x0A>"]), "test.ints": ("ARRAY", [3, -1, 7]),
    "test.floats": ("ARRAY", [0.5, -1000.0]), "test.bools": ("ARRAY", [True, False]),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A file of every supported tensor type and every metadata value type, written by gguf's writer."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "every-type.gguf"
    tensors = [(f"t.{name}", name, (3, 256), rng) for name in SUPPORTED]
    tensors += [("t.vector", "F32", (5,), rng), ("t.cube", "Q8_0", (2, 3, 64), rng)]
    return write_gguf(path, "llama", METADATA, tensors)


def plain_reader(path):
    return gguf.GGUFReader(str(path))


def test_metadata_reads_as_the_gguf_package_reads_it(written):
    ours, theirs = read_gguf(written), plain_reader(written)
    assert ours.version == 3 and ours.alignment == 32 and ours.data_offset == theirs.data_offset
    fields = {key: field for key, field in theirs.fields.items() if not key.startswith("GGUF.")}
    assert list(ours.metadata) == list(fields)
    for key, field in fields.items():
        kinds = [kind.name.lower() for kind in field.types]
        assert ours.metadata_types[key] == (f"array[{kinds[1]}]" if kinds[0] == "array" else kinds[0])
        value, expected = ours.metadata[key], field.contents()
        if isinstance(value, np.ndarray):
            assert value.dtype.byteorder in "=|" and value.tolist() == pytest.approx(expected)
        else:
            assert value == pytest.approx(expected) and type(value) is type(expected)


def test_tensors_read_and_dequantize_as_the_gguf_package_does(written):
    ours, theirs = read_gguf(written), plain_reader(written)
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for tensor in theirs.tensors:
        info = ours.tensors[tensor.name]
        assert info.type_name == tensor.tensor_type.name and info.offset == tensor.data_offset
        assert info.nbytes == tensor.n_bytes and info.shape == tuple(reversed(tensor.shape.tolist()))
        reference = gguf.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        for backend in ("numba", "numpy"):
            weights = ours.dequantize(tensor.name, backend)
            assert weights.dtype == np.float32 and weights.shape == info.shape
            np.testing.assert_array_equal(weights, reference.reshape(info.shape))


def test_arrays_is_a_lazy_mapping_of_every_tensor(written):
    ours = read_gguf(written)
    arrays = ours.arrays()
    assert len(arrays) == len(ours.tensors) and list(arrays) == list(ours.tensors)
    assert "t.Q4_K" in arrays and "nope" not in arrays
    np.testing.assert_array_equal(arrays["t.Q4_K"], ours.dequantize("t.Q4_K", "numpy"))
    with pytest.raises(KeyError, match="has no tensor 'nope'"):
        arrays["nope"]


def test_a_custom_alignment_is_honoured(tmp_path):
    rng = np.random.default_rng(1)
    path = write_gguf(tmp_path / "aligned.gguf", "llama", {},
                      [("a", "F32", (3,), rng), ("b", "Q4_0", (32,), rng)], alignment=256)
    ours, theirs = read_gguf(path), plain_reader(path)
    assert ours.alignment == 256 and ours.data_offset % 256 == 0
    assert [info.offset for info in ours.tensors.values()] == [t.data_offset for t in theirs.tensors]


# --- refusals -------------------------------------------------------------------------------------

def refused(tmp_path, data, *fragments, name="bad.gguf"):
    """read_gguf on `data` raises one line naming the file and each fragment; returns the message."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(GGUFError) as caught:
        read_gguf(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


F32 = NUMBER["F32"]


def test_every_truncation_of_a_file_is_refused_naming_what_is_cut(tmp_path, written):
    data = written.read_bytes()
    file = read_gguf(written)
    last = list(file.tensors.values())[-1]
    start, end_of_tensors = file.data_offset, last.offset + last.nbytes  # (the padding after it may go)
    for end in list(range(0, start + 1, 7)) + [start + 1, start + 100, end_of_tensors - 1]:
        message = refused(tmp_path, data[:end])
        assert any(words in message for words in ("truncated", "past the end of the file", "left in the file"))


def test_not_a_gguf_file(tmp_path):
    refused(tmp_path, b"PK\x03\x04" + bytes(40), "not a GGUF file", "b'PK\\x03\\x04'")


@pytest.mark.parametrize("version, fragment", [(1, "GGUF version 1"), (4, "GGUF version 4"), (0, "version 0"),
                                               (0x03000000, "big-endian")])
def test_versions_other_than_2_and_3_are_refused(tmp_path, version, fragment):
    refused(tmp_path, pack_gguf(version=version), fragment)


def test_version_2_reads(tmp_path):
    path = tmp_path / "v2.gguf"
    path.write_bytes(pack_gguf([("general.architecture", 8, "llama")], version=2))
    assert read_gguf(path).metadata == {"general.architecture": "llama"}


def test_absurd_counts_are_refused_before_anything_is_allocated(tmp_path):
    header = b"GGUF" + struct.pack("<I", 3)
    refused(tmp_path, header + struct.pack("<QQ", 2 ** 60, 0), "tensor count 1,152,921,504,606,846,976")
    refused(tmp_path, header + struct.pack("<QQ", 0, 2 ** 63), "metadata count")
    key = struct.pack("<Q", 2 ** 64 - 1)
    refused(tmp_path, header + struct.pack("<QQ", 0, 1) + key + bytes(20), "the key of metadata entry 0",
            "18,446,744,073,709,551,615 bytes long")
    array = pack_gguf([("a", 9, (4, []))])[:-8] + struct.pack("<Q", 2 ** 40)
    refused(tmp_path, array, "metadata 'a'", "1,099,511,627,776 uint32 items")
    many = pack_gguf([("a", 9, (0, []))])[:-8] + struct.pack("<Q", 2 ** 25) + bytes(2 ** 25)
    refused(tmp_path, many, "33,554,432 uint8 items", "the 16,777,216 an array may have")


@pytest.mark.parametrize("metadata, fragments", [
    ([("k", 13, 0)], ["metadata 'k' has value type 13"]),
    ([("k", 9, (9, []))], ["metadata 'k' is an array of arrays"]),
    ([("k", 9, (20, []))], ["metadata 'k' is an array of value type 20"]),
    ([("k", 7, 2)], ["metadata 'k' is a bool holding the byte 2"]),
    ([("k", 9, (7, [1, 3]))], ["metadata 'k' is a bool array holding the byte 3"]),
    ([("k", 4, 1), ("k", 4, 2)], ["metadata key 'k' appears twice"]),
    ([("", 4, 1)], ["metadata entry 0 has an empty key"]),
    ([(b"\xff\xfe", 4, 1)], ["the key of metadata entry 0 is not UTF-8"]),
    ([("k", 8, b"ok \xc3")], ["metadata 'k' is not UTF-8 text"]),
    ([("k", 9, (8, ["fine", b"\x80"]))], ["metadata 'k'[1] is not UTF-8 text"]),
    ([("general.alignment", 10, 64)], ["'general.alignment' is a uint64; expected a uint32"]),
    ([("general.alignment", 4, 48)], ["'general.alignment' is 48; expected a power of two"]),
    ([("general.alignment", 4, 0)], ["'general.alignment' is 0"]),
])
def test_malformed_metadata_is_refused_by_key(tmp_path, metadata, fragments):
    refused(tmp_path, pack_gguf(metadata), *fragments)


def one_tensor(ne, type_number=F32, name="w", offset=0, data=None):
    size = 4 * int(np.prod(ne)) if data is None else len(data)
    return pack_gguf([], [(name, ne, type_number, offset)], bytes(size) if data is None else data)


@pytest.mark.parametrize("data, fragments", [
    (one_tensor([2], name=""), ["tensor 0 has an empty name"]),
    (one_tensor([2], name="x" * 64), ["longer than 63 bytes"]),
    (one_tensor([1, 1, 1, 1, 1]), ["tensor 'w' has 5 dimensions; at most 4"]),
    (one_tensor([2 ** 32, 2 ** 31], data=b""), ["tensor 'w' has dimensions", "below 2^61"]),
    (one_tensor([2 ** 63], data=b""), ["below 2^61"]),
    (one_tensor([0, 2 ** 62], data=b""), ["the product of the nonzero ones must be below 2^61"]),
    (one_tensor([64], 99, data=bytes(64)), ["tensor 'w' has ggml type 99, which is not a ggml tensor type"]),
    (one_tensor([64], 31, data=bytes(64)), ["ggml type 31 (Q4_0_4_4), which ggml no longer has"]),
    (one_tensor([33], NUMBER["Q4_0"], data=bytes(36)), ["tensor 'w' is Q4_0 with rows of 33 weights",
                                                        "32-weight blocks"]),
    (one_tensor([8], offset=32), ["tensor 'w' is at data offset 32; expected 0"]),
    (one_tensor([8], data=bytes(31)), ["tensor 'w' (F32, shape [8], 32 bytes) ends at offset", "past the end"]),
    (pack_gguf([], [("w", [8], F32, 0), ("w", [8], F32, 32)], bytes(64)), ["tensor name 'w' appears twice"]),
    (pack_gguf([], [("a", [8], F32, 0), ("b", [8], F32, 64)], bytes(128)),
     ["tensor 'b' is at data offset 64; expected 32"]),
    (pack_gguf([], [("a", [8], F32, 32), ("b", [8], F32, 0)], bytes(64)), ["tensor 'a' is at data offset 32"]),
])
def test_malformed_tensor_infos_are_refused_by_tensor(tmp_path, data, fragments):
    refused(tmp_path, data, *fragments)


def test_a_tensor_of_a_type_not_dequantized_is_refused_by_its_type_name(tmp_path):
    path = tmp_path / "iq.gguf"
    path.write_bytes(one_tensor([256, 2], NUMBER["IQ2_XS"], data=bytes(2 * 74)))
    file = read_gguf(path)  # the header is sound: its metadata (a tokenizer, say) can be used
    assert file.tensors["w"].type_name == "IQ2_XS" and file.tensors["w"].nbytes == 148
    with pytest.raises(GGUFError, match=r"tensor 'w' is IQ2_XS, which this reader does not dequantize \(it reads F32"):
        file.dequantize("w")


def test_a_file_cut_after_its_header_was_read_is_refused_on_reading_the_tensor(tmp_path):
    path = tmp_path / "shrinks.gguf"
    path.write_bytes(one_tensor([64]))
    file = read_gguf(path)
    os.truncate(path, file.data_offset + 10)
    with pytest.raises(GGUFError, match="tensor 'w' could not be read in full; the file changed"):
        file.dequantize("w")


def test_not_a_regular_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a directory; expected a regular file"):
        read_gguf(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "missing.gguf")


def test_an_unknown_backend_is_refused(written):
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        read_gguf(written).dequantize("t.F32", backend="torch")
