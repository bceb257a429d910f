"""GPT-2 (a decoder: causal attention, pre-norm, Conv1D weights) against transformers.

tests/references/decoders/gpt2_*/ hold tiny random checkpoints written by transformers and
its fp32 eager hidden states (tools/make_decoder_references.py): right and left padding,
1 to 307 tokens, both attention scalings. Both backends must agree with them to 1e-5 (the
hidden values stay below 5 in magnitude, so 1e-5 is absolute and relative alike), and with
transformers live where it is installed.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.recipe import CAUSAL

ROOT = Path(__file__).resolve().parent.parent
DECODERS = ROOT / "tests" / "references" / "decoders"
CASES = sorted(p.name for p in DECODERS.glob("gpt2_*") if (p / "reference.npz").is_file())
TOLERANCE = 1e-5


def _load_tool():
    spec = importlib.util.spec_from_file_location("make_decoder_references", ROOT / "tools" / "make_decoder_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worst_difference(ours, theirs, mask):
    return float(np.abs(ours - theirs)[mask.astype(bool)].max())


def test_committed_gpt2_cases_cover_padding_sides_lengths_and_scalings():
    tool = _load_tool()
    cases = {case["name"]: case for case in tool.CASES if case["model_type"] == "gpt2"}
    assert sorted(cases) == CASES
    lengths = [length for case in cases.values() for length in case["lengths"]]
    assert 1 in lengths and 17 in lengths and max(lengths) >= 300
    assert {case["padding"] for case in cases.values()} == {"left", "right"}
    assert any(case["config"].get("scale_attn_by_inverse_layer_idx") for case in cases.values())
    assert any(case["config"].get("scale_attn_weights") is False for case in cases.values())


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", CASES)
def test_gpt2_last_hidden_state_matches_transformers(name, backend):
    reference = np.load(DECODERS / name / "reference.npz")
    model = Encoder.from_pretrained(DECODERS / name, backend=backend)
    out = model(reference["input_ids"], reference["attention_mask"])
    assert out.last_hidden_state.dtype == np.float32
    assert out.last_hidden_state.shape == reference["last_hidden_state"].shape
    assert worst_difference(out.last_hidden_state, reference["last_hidden_state"], reference["attention_mask"]) \
        <= TOLERANCE


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", [n for n in CASES if "hidden_states" in np.load(DECODERS / n / "reference.npz")])
def test_gpt2_every_layer_matches_transformers(name, backend):
    # Our hidden_states are the embeddings and each layer's output; transformers' last entry
    # is the final-normed last_hidden_state instead of the last layer's raw output.
    reference = np.load(DECODERS / name / "reference.npz")
    model = Encoder.from_pretrained(DECODERS / name, backend=backend)
    out = model(reference["input_ids"], reference["attention_mask"], output_hidden_states=True)
    theirs = reference["hidden_states"]
    assert len(out.hidden_states) == len(theirs)
    for ours, expected in zip(out.hidden_states[:-1], theirs[:-1]):
        assert worst_difference(ours, expected, reference["attention_mask"]) <= TOLERANCE
    assert worst_difference(out.last_hidden_state, theirs[-1], reference["attention_mask"]) <= TOLERANCE


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_gpt2_token_sees_only_its_left_context(backend):
    # Changing token 5 changes the vectors of tokens 5.. and leaves tokens 0..4 bit for bit.
    model = Encoder.from_pretrained(DECODERS / "gpt2_gelu_new", backend=backend)
    ids = np.arange(1, 13)[None]
    changed = ids.copy()
    changed[0, 5] = 40
    before, after = model(ids).last_hidden_state, model(changed).last_hidden_state
    np.testing.assert_array_equal(before[0, :5], after[0, :5])
    assert np.abs(before[0, 5:] - after[0, 5:]).min(axis=-1).max() > 0


def test_gpt2_recipe_is_pre_norm_causal_with_a_final_norm():
    config = EncoderConfig.from_file(DECODERS / "gpt2_gelu_new")
    recipe = config.recipe
    assert recipe.embeddings.norm is None and not recipe.embeddings.token_types
    assert recipe.final_norm.name == "final_norm"
    attention, mlp = (block for block in recipe.layers[0].blocks)
    assert attention.sublayer.mask == CAUSAL and attention.norm_before is not None
    assert mlp.sublayer.activation == "gelu_new" and mlp.norm_before is not None
    assert config.intermediate_size == 4 * config.hidden_size  # n_inner null


def test_gpt2_layer_program_says_causal_attention():
    model = Encoder.from_pretrained(DECODERS / "gpt2_gelu_new", backend="numba")
    from transformer.kernels.program import describe

    text = describe(model._weights.program, linear_names=[s.name for s in model._weights.stack.layout.linears])
    assert "causal_attention(QKV)" in text
    assert text.splitlines()[0].startswith("NORM")  # pre-norm: the layer starts with its norm


def test_gpt2_config_refuses_a_flag_that_is_not_a_boolean():
    raw = dict(model_type="gpt2", n_embd=32, n_head=4, n_layer=1, vocab_size=60, scale_attn_weights="yes")
    with pytest.raises(ConfigError, match="scale_attn_weights"):
        EncoderConfig.from_dict(raw)


def test_gpt2_input_longer_than_its_positions_is_refused():
    model = Encoder.from_pretrained(DECODERS / "gpt2_gelu_new", backend="numpy")
    with pytest.raises(ValueError, match="n_positions|320"):
        model(np.ones((1, 321), dtype=np.int64))


# --- live: transformers itself, where installed -----------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_gpt2_matches_transformers_live(name, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    tool = _load_tool()
    case = next(case for case in tool.CASES if case["name"] == name)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = tool.write_case(case, tmp_path / name, seed=1)  # other weights and ids than committed
    finally:
        torch.set_num_threads(previous)
    for backend in ("numpy", "numba"):
        out = Encoder.from_pretrained(tmp_path / name, backend=backend)(reference["input_ids"],
                                                                         reference["attention_mask"])
        assert worst_difference(out.last_hidden_state, reference["last_hidden_state"], reference["attention_mask"]) \
            <= TOLERANCE
