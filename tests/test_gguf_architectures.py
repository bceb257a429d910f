"""A GGUF file as a transformers checkpoint: its config, its tensor names and values, held to what
transformers' own GGUF loader makes of the same files (tiny models written by the gguf package)."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from gguf_files import decoder_gguf, pack_gguf, quiet_transformers  # noqa: E402, F401 (a fixture)
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.modeling_gguf_pytorch_utils import (  # noqa: E402
    TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map)

from transformer.gguf import GGUFError, checkpoint_arrays, checkpoint_name, config_from_gguf, read_gguf  # noqa: E402
from transformer.gguf.architectures import unpermute_heads  # noqa: E402

pytestmark = pytest.mark.usefixtures("quiet_transformers")

ARCHES = ["llama", "qwen2", "qwen3", "gemma3", "gpt2"]
# What transformers' GGUF loader gets wrong or leaves at its default for these tiny models,
# and what llama.cpp (so this reader) does instead:
#   llama   leaves attention_bias False, so the file's q/k/v/o biases are dropped
#   qwen3   ignores attention.key_length: head_dim stays 128 (the file says 32)
#   gemma3  leaves query_pre_attn_scalar at 256; llama.cpp scales by head_dim (16)
#   gpt2    puts context_length in n_ctx (unused; n_positions stays 1024) and
#           feed_forward_length under its own name (n_inner stays None: 4 x n_embd)
KNOWN_DIFFERENCES = {"llama": {"attention_bias"}, "qwen2": set(), "qwen3": {"head_dim"}, "gemma3": {"query_pre_attn_scalar"},
                     "gpt2": {"n_ctx", "n_positions", "n_inner", "feed_forward_length"}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{arch: path} of tiny random models, untied (an output matrix of their own) for qwen2,
    with q/k/v biases for llama, quantized weights for gemma3."""
    folder = tmp_path_factory.mktemp("tiny-gguf")
    rng = np.random.default_rng(0)
    options = {"llama": {"biases": True, "heads": 4, "kv_heads": 2}, "qwen2": {"tied": False},
               "qwen3": {"head_dim": 32}, "gemma3": {"type_name": "Q8_0", "kv_heads": 1}, "gpt2": {}}
    return {arch: decoder_gguf(folder / f"{arch}.gguf", arch, rng, **options[arch]) for arch in ARCHES}


def transformers_config(path):
    return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_config_is_the_one_transformers_derives_from_the_file(tiny, arch):
    ours = AutoConfig.for_model(**config_from_gguf(read_gguf(tiny[arch]))).to_dict()
    theirs = transformers_config(tiny[arch]).to_dict()
    differing = {key for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key)} - {"_name_or_path"}
    assert differing == KNOWN_DIFFERENCES[arch], {key: (ours.get(key), theirs.get(key)) for key in differing}


def test_the_documented_differences_follow_llama_cpp(tiny):
    assert config_from_gguf(read_gguf(tiny["llama"]))["attention_bias"] is True
    assert config_from_gguf(read_gguf(tiny["qwen3"]))["head_dim"] == 32
    assert config_from_gguf(read_gguf(tiny["gemma3"]))["query_pre_attn_scalar"] == 16
    gpt2 = config_from_gguf(read_gguf(tiny["gpt2"]))
    assert (gpt2["n_positions"], gpt2["n_inner"]) == (128, 96)


@pytest.mark.parametrize("arch", ARCHES)
def test_every_tensor_gets_the_name_transformers_gives_it(tiny, arch):
    file = read_gguf(tiny[arch])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config_from_gguf(file)))
    theirs = get_gguf_hf_weights_map(model, TensorProcessor())
    assert {name: checkpoint_name(arch, name) for name in file.tensors} == {name: theirs[name] for name in file.tensors}
    unnamed = set(model.state_dict()) - {checkpoint_name(arch, name) for name in file.tensors}
    assert unnamed <= {"lm_head.weight"}  # tied to the embeddings
    assert len(set(checkpoint_name(arch, name) for name in file.tensors)) == len(file.tensors)


@pytest.mark.parametrize("arch", ARCHES)
def test_every_tensor_is_changed_back_as_transformers_changes_it(tiny, arch):
    """Llama's q/k rows, Gemma's 1 + w norms, GPT-2's transposed Conv1D weights."""
    file = read_gguf(tiny[arch])
    config = transformers_config(tiny[arch]).to_dict()
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config)
    ours = checkpoint_arrays(file)
    for tensor in gguf.GGUFReader(tiny[arch]).tensors:
        name, parsed = tensor.name, {"tensors": {}}
        weights = gguf.dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(weights=weights, name=name, parsed_parameters=parsed)
        expected = result.weights if result.name is not None else parsed["tensors"]["lm_head.weight"].numpy()
        got = ours[checkpoint_name(arch, name)]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_unpermute_heads_undoes_llama_cpps_permute():
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`, written out here as it is there."""
    def permute(weights, heads):
        return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2) \
            .reshape(weights.shape)

    weights = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6 * 8, 5)
    np.testing.assert_array_equal(unpermute_heads(permute(weights, 6), 6), weights)
    bias = np.arange(16, dtype=np.float32)
    np.testing.assert_array_equal(unpermute_heads(permute(bias, 2), 2), bias)


def test_names_outside_the_table_have_none():
    assert checkpoint_name("llama", "blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert checkpoint_name("llama", "blk.01.attn_q.weight") is None
    assert checkpoint_name("llama", "blk.1.attn_qkv.weight") is None
    assert checkpoint_name("gemma3", "blk.0.attn_q.bias") is None
    assert checkpoint_name("gpt2", "output.weight") == "lm_head.weight"


# --- refusals -------------------------------------------------------------------------------------

def llama_file(tmp_path, rng, name="llama.gguf", **options):
    return read_gguf(decoder_gguf(tmp_path / name, "llama", rng, **options))


def refused(file, *fragments):
    with pytest.raises(GGUFError) as caught:
        config_from_gguf(file)
    message = str(caught.value)
    assert message.startswith(f"{file.path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_an_unknown_architecture_is_refused_naming_it(tmp_path):
    path = tmp_path / "falcon.gguf"
    path.write_bytes(pack_gguf([("general.architecture", 8, "falcon")]))
    refused(read_gguf(path), "architecture 'falcon' (metadata 'general.architecture')", "llama, qwen2")
    path.write_bytes(pack_gguf([("general.architecture", 4, 7)]))
    refused(read_gguf(path), "no 'general.architecture' string (it is a uint32)")


@pytest.mark.parametrize("metadata, fragments", [
    ({"llama.attention.head_count_kv": ("UINT32", 3)}, ["'llama.attention.head_count_kv' is 3",
                                                        "a divisor of llama.attention.head_count (4)"]),
    ({"llama.attention.head_count": ("UINT32", 0)}, ["'llama.attention.head_count' is 0; expected an integer >= 1"]),
    ({"llama.block_count": ("STRING", "two")}, ["'llama.block_count' is a string; expected one integer"]),
    ({"llama.feed_forward_length": ("ARRAY", [96, 96])}, ["a array[int32] (one value per layer)"]),
    ({"llama.attention.layer_norm_rms_epsilon": ("FLOAT32", float("nan"))}, ["is nan; expected a finite number > 0"]),
    ({"llama.rope.dimension_count": ("UINT32", 8)}, ["'llama.rope.dimension_count' is 8",
                                                     "transformers' llama rotates whole heads"]),
    ({"llama.rope.scaling.type": ("STRING", "longrope")}, ["'llama.rope.scaling.type' is 'longrope'"]),
    ({"llama.rope.scaling.yarn_log_multiplier": ("FLOAT32", 0.1)},
     ["'llama.rope.scaling.yarn_log_multiplier' sets a rotary scaling this reader does not carry over"]),
    ({"llama.vocab_size": ("UINT32", 65)}, ["'llama.vocab_size' is 65; expected the rows of 'token_embd.weight' (64)"]),
    ({"tokenizer.ggml.bos_token_id": ("INT32", -1)}, ["'tokenizer.ggml.bos_token_id' is -1"]),
])
def test_nonsense_metadata_is_refused_by_key(tmp_path, metadata, fragments):
    refused(llama_file(tmp_path, np.random.default_rng(0), metadata=metadata), *fragments)


@pytest.mark.parametrize("layers, held", [(3, "blk.0 to blk.1"), (2 ** 31, "blk.0 to blk.1"), (1, "blk.0 to blk.1")])
def test_the_layer_count_must_be_the_layers_the_tensors_hold(tmp_path, layers, held):
    file = llama_file(tmp_path, np.random.default_rng(0), metadata={"llama.block_count": ("UINT32", layers)})
    refused(file, f"'llama.block_count' is {layers}; the tensors hold {held}")


def test_a_missing_key_is_named(tmp_path):
    file = llama_file(tmp_path, np.random.default_rng(0))
    del file.metadata["llama.block_count"]
    refused(file, "the metadata has no 'llama.block_count', which a llama model needs")


def test_llama3_rotary_factors_stored_as_a_tensor_are_refused(tmp_path):
    file = llama_file(tmp_path, np.random.default_rng(0))
    file.tensors["rope_freqs.weight"] = file.tensors["output_norm.weight"]
    refused(file, "tensor 'rope_freqs.weight'", "llama3")


@pytest.mark.parametrize("scaling, expected", [
    ({"llama.rope.scaling.type": ("STRING", "none")}, {"rope_type": "default"}),
    ({"llama.rope.scaling.type": ("STRING", "linear"), "llama.rope.scaling.factor": ("FLOAT32", 4.0)},
     {"rope_type": "linear", "factor": 4.0}),
    ({"llama.rope.scale_linear": ("FLOAT32", 2.0)}, {"rope_type": "linear", "factor": 2.0}),
    ({"llama.rope.scaling.type": ("STRING", "yarn"), "llama.rope.scaling.factor": ("FLOAT32", 4.0),
      "llama.rope.scaling.original_context_length": ("UINT32", 32), "llama.rope.scaling.yarn_beta_fast": ("FLOAT32", 16.0)},
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 16.0}),
])
def test_rotary_scaling_becomes_rope_parameters(tmp_path, scaling, expected):
    config = config_from_gguf(llama_file(tmp_path, np.random.default_rng(0), metadata=scaling))
    assert config["rope_parameters"] == {**expected, "rope_theta": 10000.0}


def test_a_tensor_outside_the_table_is_refused_by_name(tmp_path):
    file = llama_file(tmp_path, np.random.default_rng(0))
    file.tensors["blk.0.ffn_gate_exps.weight"] = file.tensors["output_norm.weight"]
    with pytest.raises(GGUFError, match="tensor 'blk.0.ffn_gate_exps.weight' has no transformers name in the llama"):
        checkpoint_arrays(file)


def test_a_q_projection_that_does_not_fit_the_heads_is_refused_by_name(tmp_path):
    file = llama_file(tmp_path, np.random.default_rng(0))
    config = dict(config_from_gguf(file), num_attention_heads=3)
    with pytest.raises(GGUFError, match=r"tensor 'blk.0.attn_q.weight' has 64 rows; expected 3 heads x 16"):
        checkpoint_arrays(file, config)["model.layers.0.self_attn.q_proj.weight"]


def test_biases_on_some_projections_only_are_refused(tmp_path):
    file = llama_file(tmp_path, np.random.default_rng(0), biases=True)
    del file.tensors["blk.0.attn_output.bias"]
    refused(file, "the attention projections of layer 0 have biases for attn_q, attn_k, attn_v only")
