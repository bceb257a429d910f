"""The two real GGUF files (SmolLM2-135M-Instruct Q4_1, Gemma 3 270M Q4_K_M) read as llama.cpp's
`gguf` package and transformers' GGUF loader read them: metadata, every tensor's weights,
the config, the names."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from gguf_files import gguf_reader, quiet_transformers  # noqa: E402, F401 (a fixture)
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor  # noqa: E402

from transformer.gguf import (  # noqa: E402
    checkpoint_arrays, checkpoint_name, config_from_gguf, quants, read_gguf, tokenizer_metadata)

pytestmark = pytest.mark.usefixtures("quiet_transformers")

FILES = ["smollm2_gguf", "gemma3_gguf"]


@pytest.fixture(scope="module")
def references():
    """{path: the gguf package's GGUFReader of it}, each file read once."""
    return {}


def reference(references, path):
    if path not in references:
        references[path] = gguf_reader(path)
    return references[path]


@pytest.fixture(params=FILES)
def path(request):
    return request.getfixturevalue(request.param)


def test_metadata_and_tensor_infos_are_the_gguf_packages(path, references):
    ours, theirs = read_gguf(path), reference(references, path)
    fields = {key: field for key, field in theirs.fields.items() if not key.startswith("GGUF.")}
    assert list(ours.metadata) == list(fields)
    for key, field in fields.items():
        value, expected = ours.metadata[key], field.contents()
        assert (value.tolist() if isinstance(value, np.ndarray) else value) == expected, key
    assert ours.data_offset == theirs.data_offset
    assert [(t.name, t.tensor_type.name, t.data_offset, t.n_bytes, tuple(reversed(t.shape.tolist())))
            for t in theirs.tensors] == [tuple(info[:2]) + (info.offset, info.nbytes, info.shape)
                                         for info in ours.tensors.values()]


def test_every_tensor_dequantizes_to_the_gguf_packages_weights(path, references):
    """Numba kernels (through the reader) and NumPy reference, every weight of every tensor, to the
    bit; compared a few million weights at a time (Gemma's embedding alone is 671 MB of float32)."""
    ours, theirs = read_gguf(path), reference(references, path)
    for tensor in theirs.tensors:
        info = ours.tensors[tensor.name]
        stored = ours.read_bytes(tensor.name).reshape(*info.shape[:-1], -1)   # [..., bytes per row]
        assert np.array_equal(stored, tensor.data.view(np.uint8).reshape(stored.shape)), tensor.name
        fast = ours.dequantize(tensor.name, "numba")
        assert fast.dtype == np.float32 and fast.shape == info.shape
        rows, step = stored.reshape(-1, stored.shape[-1]), max(1, (1 << 22) // info.shape[-1])
        fast_rows = fast.reshape(len(rows), -1)
        for first in range(0, len(rows), step):
            chunk = rows[first:first + step]
            expected = gguf.dequantize(chunk, tensor.tensor_type)
            assert np.array_equal(fast_rows[first:first + step], expected), tensor.name
            reference_rows = quants.dequantize(info.type_name, chunk, expected.shape)
            assert reference_rows.dtype == np.float32 and np.array_equal(reference_rows, expected), tensor.name


def transformers_config(path, references, monkeypatch):
    """AutoConfig.from_pretrained(folder, gguf_file=...), its reader the one already made."""
    monkeypatch.setattr(gguf, "GGUFReader", lambda *args, **kwargs: reference(references, path))
    return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)


def test_the_config_is_the_one_transformers_derives(path, references, monkeypatch):
    ours = config_from_gguf(read_gguf(path))
    theirs = transformers_config(path, references, monkeypatch).to_dict()
    mine = AutoConfig.for_model(**ours).to_dict()
    differing = {key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key)}
    assert differing == {"_name_or_path", "_model_name_or_path"}  # where it was read from, general.name


def test_the_configs_say_what_the_models_are(smollm2_gguf, gemma3_gguf):
    smollm2 = config_from_gguf(read_gguf(smollm2_gguf))
    assert (smollm2["model_type"], smollm2["num_hidden_layers"], smollm2["hidden_size"]) == ("llama", 30, 576)
    assert (smollm2["num_attention_heads"], smollm2["num_key_value_heads"], smollm2["head_dim"]) == (9, 3, 64)
    assert smollm2["tie_word_embeddings"] and smollm2["vocab_size"] == 49152
    gemma = config_from_gguf(read_gguf(gemma3_gguf))
    assert (gemma["model_type"], gemma["num_hidden_layers"], gemma["head_dim"]) == ("gemma3_text", 18, 256)
    assert gemma["layer_types"][4:6] == ["sliding_attention", "full_attention"] and gemma["sliding_window"] == 512
    assert gemma["rope_parameters"]["sliding_attention"]["rope_theta"] == 10000.0
    assert gemma["rope_parameters"]["full_attention"]["rope_theta"] == 1000000.0


def test_every_tensor_has_the_name_transformers_gives_it(path, references, monkeypatch):
    """The names of the model transformers builds from the file, mapped to GGUF names by llama.cpp's
    own table (gguf's TensorNameMap, which transformers' GGUF loader uses too)."""
    file = read_gguf(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(transformers_config(path, references, monkeypatch))
    arch = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == file.architecture)
    name_map = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    theirs = {}
    for name in model.state_dict():
        stem, suffix = name.rsplit(".", 1)
        theirs[name_map.get_name(stem) + "." + suffix] = name
    assert {name: checkpoint_name(file.architecture, name) for name in file.tensors} == \
        {name: theirs[name] for name in file.tensors}
    assert set(theirs.values()) - set(checkpoint_arrays(file)) == {"lm_head.weight"}  # tied to the embeddings


def test_changed_tensors_come_back_as_transformers_brings_them_back(path, references, monkeypatch):
    """Layer 0's and the last layer's tensors (SmolLM2: q/k rows unpermuted; Gemma: norms - 1)."""
    file = read_gguf(path)
    config = transformers_config(path, references, monkeypatch).to_dict()
    processor = TENSOR_PROCESSORS.get(file.architecture, TensorProcessor)(config=config)
    ours = checkpoint_arrays(file)
    last = config["num_hidden_layers"] - 1
    for tensor in reference(references, path).tensors:
        if not tensor.name.startswith(("blk.0.", f"blk.{last}.", "output_norm")):
            continue
        weights = gguf.dequantize(tensor.data, tensor.tensor_type)
        expected = processor.process(weights=weights, name=tensor.name).weights
        np.testing.assert_array_equal(ours[checkpoint_name(file.architecture, tensor.name)], expected,
                                      err_msg=tensor.name)


def test_the_tokenizer_metadata_is_whole(smollm2_gguf, gemma3_gguf):
    smollm2 = tokenizer_metadata(read_gguf(smollm2_gguf))
    assert (smollm2.model, smollm2.pre, len(smollm2.tokens), len(smollm2.merges)) == ("gpt2", "smollm", 49152, 48900)
    assert smollm2.merges[0] == "Ġ t" and smollm2.special_ids == {"bos": 1, "eos": 2, "unknown": 0, "padding": 2}
    assert smollm2.add_bos_token is False and smollm2.scores is None and len(smollm2.token_types) == 49152
    gemma = tokenizer_metadata(read_gguf(gemma3_gguf))
    assert (gemma.model, gemma.pre, len(gemma.tokens)) == ("llama", "default", 262144)
    assert gemma.tokens[:3] == ["<pad>", "<eos>", "<bos>"] and gemma.add_bos_token is True
    assert gemma.scores.dtype == np.float32 and gemma.token_types.dtype == np.int32 and gemma.merges is None
