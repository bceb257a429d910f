"""Reading safetensors (single, sharded, fp16/bf16, broken files) and mapping names to params."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from transformer.config import EncoderConfig
from transformer.encoder import Encoder
from transformer.loading import (
    CheckpointError,
    checkpoint_names,
    load_params,
    read_checkpoint,
    read_safetensors,
)

FAMILIES = Path(__file__).parent / "references" / "families"


def write_safetensors(path, tensors, dtypes=None):
    """A minimal safetensors writer: {name: array} -> file. dtypes overrides the dtype tag
    (used to store bfloat16 words, which NumPy has no type for)."""
    tags = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64",
            np.dtype("int64"): "I64"}
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        tag = (dtypes or {}).get(name) or tags[array.dtype]
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks))


def copy_case(name, tmp_path):
    target = tmp_path / name
    shutil.copytree(FAMILIES / name, target)
    return target


def config_of(directory):
    return EncoderConfig.from_file(directory / "config.json")


def assert_same_params(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_params(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_params(x, y)
    elif a is None:
        assert b is None
    else:
        np.testing.assert_array_equal(a, b)


# --- the file format ----------------------------------------------------------------------
def test_reads_float32_float16_and_bfloat16_as_float32(tmp_path):
    values = np.array([[1.5, -2.25], [3.0, 0.1]], dtype=np.float32)
    bfloat16_words = (values.view(np.uint32) >> 16).astype(np.uint16)  # truncate to bfloat16
    write_safetensors(tmp_path / "m.safetensors",
                      {"f32": values, "f16": values.astype(np.float16), "bf16": bfloat16_words,
                       "ids": np.arange(3, dtype=np.int64)}, dtypes={"bf16": "BF16"})
    tensors = read_safetensors(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(tensors["f32"], values)
    assert tensors["f16"].dtype == np.float32
    np.testing.assert_array_equal(tensors["f16"], values.astype(np.float16).astype(np.float32))
    assert tensors["bf16"].dtype == np.float32
    np.testing.assert_array_equal(tensors["bf16"], (bfloat16_words.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(tensors["bf16"], values, rtol=1e-2)
    assert tensors["ids"].dtype == np.int64


def test_float16_checkpoint_loads_as_its_float32_upcast(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    original = {name: np.array(array) for name, array in read_checkpoint(directory).items()}  # off the mmap
    write_safetensors(directory / "model.safetensors",
                      {name: array.astype(np.float16) for name, array in original.items()})
    config = config_of(directory)
    half = load_params(read_checkpoint(directory), config)
    expected = load_params({n: a.astype(np.float16).astype(np.float32) for n, a in original.items()}, config)
    assert half["layers"][0]["query"]["weight"].dtype == np.float32
    assert_same_params(half, expected)


def test_truncated_file_error_names_the_tensor_and_says_truncated(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor '.+' needs bytes .* truncated"):
        read_checkpoint(directory)


def test_corrupt_header_is_reported(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 16)
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        read_safetensors(path)
    path.write_bytes(struct.pack("<Q", 10 ** 7) + b"{}")
    with pytest.raises(CheckpointError, match="header claims 10000000 bytes but the file has only 2"):
        read_safetensors(path)
    path.write_bytes(struct.pack("<Q", 10 ** 9) + b"{}")
    with pytest.raises(CheckpointError, match="header claims 1,000,000,000 bytes, more than the 100,000,000"):
        read_safetensors(path)
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short to be a safetensors file"):
        read_safetensors(path)


def test_tensor_whose_bytes_do_not_fit_its_shape_is_reported(tmp_path):
    path = tmp_path / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"tensor 'w' of shape \[3\] and dtype F32 needs 12 bytes"):
        read_safetensors(path)


def write_raw_safetensors(path, header_text, data=b""):
    """A file with exactly this header text (duplicate keys, odd types...) and data section."""
    header = header_text.encode("utf-8", "surrogatepass")
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


ONE_FLOAT = struct.pack("<f", 1.5)
TWO_FLOATS = struct.pack("<2f", 1.5, -2.0)


@pytest.mark.parametrize("header, data, message", [
    # finding 4 of issue 17, each as it was found
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}', ONE_FLOAT,
     r"tensor 'w' has data_offsets \[-4, 0\]; expected \[begin, end\], two non-negative integers"),
    ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
     '"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', TWO_FLOATS,
     r"tensor 'b' has data_offsets \[4, 8\], which overlap the bytes of tensor 'a'"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     '"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', TWO_FLOATS,
     r"the safetensors header is not valid JSON: the key 'w' appears twice"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}', ONE_FLOAT,
     r"tensor 'w' has data_offsets \[\"0\", \"4\"\]; expected \[begin, end\]"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}}', ONE_FLOAT,
     r"tensor 'w' has data_offsets \[0.0, 4.0\]; expected"),
    ('{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', ONE_FLOAT,
     r"tensor 'w' has shape \[-1\]; expected a list of non-negative integers"),
    ('{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}', ONE_FLOAT,
     r"tensor 'w' has shape \[4294967296, 4294967296\], whose size in bits overflows 64 bits"),
    ('{"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', ONE_FLOAT,
     r"tensor 'w' has dtype \[\"F32\"\]; expected one of the safetensors dtypes"),
    # the rest of what the format requires
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', TWO_FLOATS,
     r"tensor 'w' has data_offsets \[4, 8\], which leave bytes \[0, 4\) of the data section to no tensor"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', TWO_FLOATS,
     r"the tensors end at byte 4 of the data section, which has 8: 4 bytes at the end belong to no tensor"),
    ('{"w": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}', ONE_FLOAT,
     r"tensor 'w' has data_offsets \[4, 0\], which end before they begin"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 4]}}', ONE_FLOAT,
     r"tensor 'w' has data_offsets \[0, 4, 4\]; expected \[begin, end\]"),
    ('{"w": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', ONE_FLOAT,
     r"tensor 'w' has shape \[true\]; expected"),
    ('{"w": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}}', ONE_FLOAT,
     r"tensor 'w' has dtype \"f32\"; expected one of"),
    ('{"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}', ONE_FLOAT[:2],
     r"tensor 'w' of shape \[3\] and dtype F4 is 12 bits, not a whole number of bytes"),
    ('{"w": {"dtype": "F32", "data_offsets": [0, 4]}}', ONE_FLOAT, r"tensor 'w' has no shape in the header"),
    ('{"w": "F32"}', ONE_FLOAT, r"tensor 'w' is described by a string"),
    ('{"__metadata__": {"format": 1}}', b"", r"__metadata__ is an object .* whose 'format' is an integer"),
    ('[]', b"", r"the header is a list \(\[\]\), not a JSON object"),
    ('{"w\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', ONE_FLOAT, r"a lone surrogate"),
    ('{"__metadata__": {"x": "1"}, "v": ' + "[" * 127 + "]" * 127 + '}', b"", r"more than 127 deep"),
    ('{"__metadata__": {"x": "1"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1e400}}',
     ONE_FLOAT, r"a number too big for a float"),
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": NaN}}', ONE_FLOAT, r"JSON has no NaN"),
])
def test_malformed_safetensors_header_is_refused_naming_file_tensor_and_field(tmp_path, header, data, message):
    path = write_raw_safetensors(tmp_path / "model.safetensors", header, data)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .*" + message):
        read_safetensors(path)
    with pytest.raises(Exception):  # and the `safetensors` package refuses each one too
        with safe_open(path, framework="numpy"):
            pass


@pytest.mark.parametrize("header, message", [
    ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     '"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', r"the key 'w' appears twice"),
    ('{"__metadata__": {"k": "a", "k": "b"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
     r"the key 'k' appears twice"),
    ('{"w": ["F32", [1], [0, 4]]}', r"tensor 'w' is described by a list"),
    ('{"w": {"dtype": {"F32": null}, "shape": [1], "data_offsets": [0, 4]}}', r"tensor 'w' has dtype \{"),
])
def test_stricter_than_the_safetensors_package_on_what_only_a_broken_writer_makes(tmp_path, header, message):
    """Deliberate differences: `safetensors` (serde) takes these, keeping the last of two
    entries of one name, and reading serde's list form of a struct and map form of an enum."""
    path = write_raw_safetensors(tmp_path / "model.safetensors", header, ONE_FLOAT)
    with safe_open(path, framework="numpy") as file:
        assert file.get_tensor("w").tolist() == [1.5]
    with pytest.raises(CheckpointError, match=message):
        read_safetensors(path)


def test_valid_layouts_the_format_allows_are_read(tmp_path):
    """Tensors listed out of offset order, an empty tensor sharing an offset, a scalar,
    __metadata__ null, keys the format does not know: all valid, as in `safetensors`."""
    header = ('{"__metadata__": null, "b": {"dtype": "F32", "shape": [], "data_offsets": [4, 8], "note": [1, {}]}, '
              '"empty": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]}, '
              '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    tensors = read_safetensors(write_raw_safetensors(tmp_path / "m.safetensors", header, TWO_FLOATS))
    assert list(tensors) == ["b", "empty", "a"]
    np.testing.assert_array_equal(tensors["a"], [1.5])
    assert tensors["b"].shape == () and tensors["b"] == -2.0
    assert tensors["empty"].shape == (0, 3)


def test_a_symlink_to_a_device_is_refused_as_a_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is a device; expected a regular file"):
        read_checkpoint(tmp_path)


def test_a_dtype_the_loader_does_not_convert_is_named_when_looked_up(tmp_path):
    header = '{"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}'
    tensors = read_safetensors(write_raw_safetensors(tmp_path / "m.safetensors", header, ONE_FLOAT))
    assert "w" in tensors  # a valid file: the header is accepted
    with pytest.raises(CheckpointError, match=r"tensor 'w' has dtype F8_E4M3, which this loader does not read"):
        tensors["w"]


def test_sharded_checkpoint_loads_the_same_params(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    tensors = {name: np.array(array) for name, array in read_checkpoint(directory).items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        write_safetensors(directory / shard, {n: np.array(tensors[n]) for n in shard_names})
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = config_of(directory)
    single = load_params(tensors, config)
    (directory / "model.safetensors").unlink()
    assert_same_params(load_params(read_checkpoint(directory), config), single)

    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lists shard model-00002-of-00002.safetensors, which is missing"):
        read_checkpoint(directory)


def make_sharded(tmp_path):
    """bert_gelu split into two shards with an index; returns (folder, weight_map)."""
    directory = copy_case("bert_gelu", tmp_path)
    tensors = read_checkpoint(directory)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        write_safetensors(directory / shard, {n: tensors[n] for n in shard_names})
    (directory / "model.safetensors").unlink()
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    write_index(directory, weight_map)
    return directory, weight_map


def write_index(directory, weight_map):
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("shard", ["/etc/passwd", "../model-00001-of-00002.safetensors", "sub/x.safetensors",
                                   "..", "", 7, None])
def test_shard_index_names_only_plain_files_beside_it(tmp_path, shard):
    directory, weight_map = make_sharded(tmp_path)
    first = next(iter(weight_map))
    write_index(directory, {**weight_map, first: shard})
    with pytest.raises(CheckpointError, match=rf"index\.json: weight_map gives tensor '{first}' the shard .*"
                                              rf"expected the name of a file beside the index"):
        read_checkpoint(directory)


def test_shard_index_naming_a_directory_is_refused(tmp_path):
    directory, weight_map = make_sharded(tmp_path)
    (directory / "folder.safetensors").mkdir()
    write_index(directory, {**weight_map, "extra": "folder.safetensors"})
    with pytest.raises(CheckpointError, match=r"folder\.safetensors is a directory; expected a regular file"):
        read_checkpoint(directory)


def test_tensor_must_be_in_the_shard_the_index_names(tmp_path):
    directory, weight_map = make_sharded(tmp_path)
    name, shard = next(iter(weight_map.items()))
    other = next(s for s in weight_map.values() if s != shard)
    write_index(directory, {**weight_map, name: other})
    with pytest.raises(CheckpointError, match=rf"weight_map puts tensor '{name}' in {other}, but {shard} holds it"):
        read_checkpoint(directory)


def test_tensor_stored_in_two_shards_is_refused(tmp_path):
    directory, weight_map = make_sharded(tmp_path)
    tensors = read_checkpoint(directory)
    name, shard = next(iter(weight_map.items()))
    other = next(s for s in weight_map.values() if s != shard)
    moved = {n: tensors[n] for n, s in weight_map.items() if s == other}
    write_safetensors(directory / other, {**moved, name: tensors[name]})
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' is stored in {shard} too"):
        read_checkpoint(directory)


def test_shard_holding_a_tensor_the_index_does_not_list_is_refused(tmp_path):
    directory, weight_map = make_sharded(tmp_path)
    name = next(iter(weight_map))
    write_index(directory, {n: s for n, s in weight_map.items() if n != name})
    with pytest.raises(CheckpointError, match=rf"holds tensor '{name}', which model\.safetensors\.index\.json "
                                              rf"does not list"):
        read_checkpoint(directory)


@pytest.mark.parametrize("text, message", [
    ("[]", r"it holds a list"),
    ('{"metadata": {}}', r"weight_map is null"),
    ('{"weight_map": {}}', r"weight_map is an object \(\{\}\); expected a non-empty object"),
    ('{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}', r"the key 'a' appears twice"),
    ('{"weight_map": {"a": "x.safetensors"}, "n": NaN}', r"JSON has no NaN"),
])
def test_malformed_shard_index_is_refused_naming_the_file(tmp_path, text, message):
    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json.*" + message):
        read_checkpoint(tmp_path)


def test_shard_index_linked_to_a_device_is_refused(tmp_path):
    (tmp_path / "model.safetensors.index.json").symlink_to("/dev/urandom")
    with pytest.raises(CheckpointError, match=r"index\.json is a device; expected a regular file"):
        read_checkpoint(tmp_path)


def test_folder_without_safetensors_says_what_it_found(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no model\.safetensors.*convert them to safetensors"):
        read_checkpoint(tmp_path)


# --- names and shapes ---------------------------------------------------------------------
def test_loaded_model_survives_its_file_being_overwritten_in_place(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    model = Encoder.from_pretrained(directory, backend="numpy")
    before = model([[3, 4, 5]]).last_hidden_state
    (directory / "model.safetensors").write_bytes(b"")  # truncate in place: a mapped view would SIGBUS
    np.testing.assert_array_equal(model([[3, 4, 5]]).last_hidden_state, before)


def test_linear_weights_are_transposed_to_in_out(minilm_dir):
    config = config_of(minilm_dir)
    tensors = read_checkpoint(minilm_dir)
    params = load_params(tensors, config)
    stored = tensors["encoder.layer.0.intermediate.dense.weight"]  # [out, in] as PyTorch stores it
    assert stored.shape == (1536, 384)
    intermediate = params["layers"][0]["intermediate"]["weight"]
    assert intermediate.shape == (384, 1536) and intermediate.flags.c_contiguous
    np.testing.assert_array_equal(intermediate, stored.T)
    assert params["embeddings"]["word"].shape == (30522, 384)  # tables are not transposed
    assert "embeddings.position_ids" in tensors  # a buffer in the file, simply never asked for


def test_every_param_is_float32(mpnet_dir):
    config = config_of(mpnet_dir)
    params = load_params(read_checkpoint(mpnet_dir), config)
    arrays = [params["relative_attention_bias"], params["embeddings"]["word"], params["pooler"]["weight"]]
    arrays += [p for layer in params["layers"] for part in layer.values() for p in part.values()]
    assert len(params["layers"]) == 12
    assert all(a.dtype == np.float32 for a in arrays)
    assert params["embeddings"]["token_type"] is None and params["embeddings"]["projection"] is None


def test_missing_tensor_is_named(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    tensors = read_checkpoint(directory)
    del tensors["encoder.layer.1.attention.self.key.weight"]
    with pytest.raises(CheckpointError, match=r"missing tensor 'encoder\.layer\.1\.attention\.self\.key\.weight'"):
        load_params(tensors, config_of(directory))


def test_shape_that_does_not_fit_the_config_says_expected_and_found(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    raw = json.loads((directory / "config.json").read_text())
    raw["intermediate_size"] = 64
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has shape "
                                              r"\(37, 32\) but the config expects \(64, 32\)"):
        Encoder.from_pretrained(directory, backend="numpy")


def test_task_model_prefix_and_plain_base_names_load_alike(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    config = config_of(directory)
    tensors = read_checkpoint(directory)
    prefixed = {"bert." + name: array for name, array in tensors.items()}
    assert_same_params(load_params(prefixed, config), load_params(tensors, config))


def test_legacy_layernorm_gamma_beta_names_load(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    config = config_of(directory)
    tensors = read_checkpoint(directory)
    legacy = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): a
              for name, a in tensors.items()}
    assert "embeddings.LayerNorm.gamma" in legacy
    assert_same_params(load_params(legacy, config), load_params(tensors, config))


def test_word_table_stored_only_as_the_tied_decoder_is_found(tmp_path):
    directory = copy_case("bert_masked_lm", tmp_path)
    config = config_of(directory)
    tensors = read_checkpoint(directory)
    tied = dict(tensors)
    tied["cls.predictions.decoder.weight"] = tied.pop("bert.embeddings.word_embeddings.weight")
    np.testing.assert_array_equal(load_params(tied, config)["embeddings"]["word"],
                                  load_params(tensors, config)["embeddings"]["word"])


def test_each_family_table_maps_a_query_weight():
    names = {
        "bert": "encoder.layer.2.attention.self.query.weight",
        "distilbert": "transformer.layer.2.attention.q_lin.weight",
        "mpnet": "encoder.layer.2.attention.attn.q.weight",
    }
    for model_type, expected in names.items():
        raw = {"model_type": model_type}
        assert checkpoint_names(EncoderConfig.from_dict(raw), "layers.2.query.weight")[0] == expected


def test_electra_projection_is_loaded_only_when_sizes_differ():
    projected = load_params(read_checkpoint(FAMILIES / "electra_projection"), config_of(FAMILIES / "electra_projection"))
    assert projected["embeddings"]["projection"]["weight"].shape == (16, 32)
    assert projected["pooler"] is None
    same = load_params(read_checkpoint(FAMILIES / "electra_discriminator"), config_of(FAMILIES / "electra_discriminator"))
    assert same["embeddings"]["projection"] is None


# --- values and layers --------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_parameter_holding_nan_or_infinity_is_refused_at_load_naming_it(tmp_path, bad):
    directory = copy_case("bert_gelu", tmp_path)
    tensors = dict(read_checkpoint(directory).items())
    tensors["encoder.layer.1.output.dense.bias"][3] = bad
    write_safetensors(directory / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'encoder\.layer\.1\.output\.dense\.bias' "
                                              r"holds 1 NaN or infinite values \(the first at index \(3,\)\)"):
        Encoder.from_pretrained(directory, backend="numpy")


def test_a_head_parameter_holding_nan_is_refused_too(tmp_path):
    directory = copy_case("bert_sequence_classification", tmp_path)
    tensors = dict(read_checkpoint(directory).items())
    tensors["classifier.weight"][0, 0] = np.nan
    write_safetensors(directory / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=r"tensor 'classifier\.weight' holds 1 NaN"):
        Encoder.from_pretrained(directory, backend="numpy")


def test_fewer_layers_in_config_than_in_checkpoint_warns_naming_the_unused_ones(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    raw = json.loads((directory / "config.json").read_text())
    raw["num_hidden_layers"] = 1
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.warns(UserWarning, match=r"the checkpoint has 2 layers, config\.json 1: layer 1 \(16 tensors\) "
                                         r"is not used") as caught:
        load_params(read_checkpoint(directory), config_of(directory))
    assert len(caught) == 1


def test_more_layers_in_config_than_in_checkpoint_stays_an_error(tmp_path):
    directory = copy_case("bert_gelu", tmp_path)
    raw = json.loads((directory / "config.json").read_text())
    raw["num_hidden_layers"] = 3
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"missing tensor 'encoder\.layer\.2\.attention\.self\.query\.weight'"):
        load_params(read_checkpoint(directory), config_of(directory))


def test_a_checkpoint_with_as_many_layers_as_its_config_loads_without_warning(minilm_dir, recwarn):
    load_params(read_checkpoint(minilm_dir), config_of(minilm_dir))
    assert not [w for w in recwarn if "not used" in str(w.message)]


# --- inspect reads the same files the same way ------------------------------------------------
def test_inspect_reports_a_malformed_checkpoint_and_sentence_config_by_name(tmp_path):
    from transformer.cli import describe_model

    directory = copy_case("bert_gelu", tmp_path)
    write_raw_safetensors(directory / "extra.safetensors",
                          '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}', ONE_FLOAT)
    (directory / "modules.json").write_text('[{"type": "sentence_transformers.models.Transformer", "path": "/etc"}]')
    (directory / "tokenizer.json").symlink_to("/dev/urandom")
    text = describe_model(directory, "path", "broken")
    assert "parameters  unreadable (" in text and "tensor 'w' has data_offsets [-4, 0]" in text
    assert "modules.json not usable here" in text and 'has path "/etc"' in text
    assert "tokenizer.json (unreadable:" in text and "is a device" in text
    assert "family      bert" in text


@pytest.mark.parametrize("shard", ["a\nb.safetensors", "\u202emodel.safetensors", "\ud800.safetensors"])
def test_shard_names_with_control_characters_or_no_encoding_are_refused(tmp_path, shard):
    directory, weight_map = make_sharded(tmp_path)
    first = next(iter(weight_map))
    write_index(directory, {**weight_map, first: shard})
    with pytest.raises(CheckpointError, match=r"weight_map gives tensor .* the shard .*expected the name of a file"):
        read_checkpoint(directory)


def test_a_name_table_part_reads_a_fused_or_turned_tensor_as_its_own(tmp_path, monkeypatch):
    # ModernBERT stores query, key and value as one Wqkv, GPT-2 its linears [in, out]: a name
    # table says so with Part, and the loader hands out the same params as from separate tensors.
    from transformer.families import bert
    from transformer.recipe import Part

    directory = copy_case("bert_gelu", tmp_path)
    config = config_of(directory)
    expected = load_params(read_checkpoint(directory), config)
    tensors = {name: np.array(array) for name, array in read_checkpoint(directory).items()}
    for i in range(config.num_hidden_layers):
        stem = f"encoder.layer.{i}.attention."
        for part in ("weight", "bias"):
            tensors[f"{stem}self.qkv.{part}"] = np.concatenate(
                [tensors.pop(f"{stem}self.{name}.{part}") for name in ("query", "key", "value")])
        tensors[f"{stem}conv1d.weight"] = np.ascontiguousarray(tensors.pop(f"{stem}output.dense.weight").T)
    write_safetensors(directory / "model.safetensors", tensors)
    names = dict(bert.NAMES)
    for chunk, name in enumerate(("query", "key", "value")):
        for part in ("weight", "bias"):
            names[f"layers.{{i}}.{name}.{part}"] = Part(f"encoder.layer.{{i}}.attention.self.qkv.{part}", chunk, 3)
    names["layers.{i}.attention_output.weight"] = Part("encoder.layer.{i}.attention.conv1d.weight", in_out=True)
    monkeypatch.setattr(bert, "NAMES", names)
    params = load_params(read_checkpoint(directory), config)
    for ours, theirs in zip(params["layers"], expected["layers"]):
        for name in theirs:
            for part in ("weight", "bias"):
                np.testing.assert_array_equal(ours[name][part], theirs[name][part])
    names["layers.{i}.query.weight"] = Part("encoder.layer.{i}.attention.self.qkv.weight", 0, 5)  # 96 rows / 5
    with pytest.raises(CheckpointError, match=r"qkv\.weight' of shape \(96, 32\) cannot be cut into 5 equal parts"):
        load_params(read_checkpoint(directory), config)
