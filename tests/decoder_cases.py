"""Shared by tests/test_family_<decoder>.py: the committed decoder references and their checks.

tests/references/decoders/<case>/ hold a tiny random checkpoint written by transformers and
its fp32 eager hidden states (tools/make_references.py, which also lists the cases).
"""

import importlib.util
from pathlib import Path

import numpy as np

from transformer.encoder import Encoder

ROOT = Path(__file__).resolve().parent.parent
DECODERS = ROOT / "tests" / "references" / "decoders"
# max |ours - theirs| <= TOLERANCE * max(1, max |theirs|) over the real tokens of each tensor:
# 1e-5 absolute where the values stay near unit scale (most cases: below ~6), relative to the
# tensor's largest value where they grow past 1 (float32 rounding grows with them).
TOLERANCE = 1e-5


def tool():
    """tools/make_references.py as a module."""
    spec = importlib.util.spec_from_file_location("make_references", ROOT / "tools" / "make_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed(prefix):
    """The names of the committed cases starting with `prefix`."""
    return sorted(p.name for p in DECODERS.glob(f"{prefix}*") if (p / "reference.npz").is_file())


def with_hidden_states(names):
    return [name for name in names if "hidden_states" in np.load(DECODERS / name / "reference.npz")]


def worst_difference(ours, theirs, mask):
    """max |ours - theirs| over the real tokens, / the largest |theirs| there when above 1."""
    real = mask.astype(bool)
    return float(np.abs(ours - theirs)[real].max()) / max(1.0, float(np.abs(theirs[real]).max()))


def check_last_hidden_state(name, backend):
    reference = np.load(DECODERS / name / "reference.npz")
    out = Encoder.from_pretrained(DECODERS / name, backend=backend)(reference["input_ids"], reference["attention_mask"])
    assert out.last_hidden_state.dtype == np.float32
    assert out.last_hidden_state.shape == reference["last_hidden_state"].shape
    assert worst_difference(out.last_hidden_state, reference["last_hidden_state"], reference["attention_mask"]) \
        <= TOLERANCE


def check_every_layer(name, backend):
    # Our hidden_states are the embeddings and each layer's output; transformers' last entry
    # is the final-normed last_hidden_state (ours may be either: compared with last_hidden_state).
    reference = np.load(DECODERS / name / "reference.npz")
    model = Encoder.from_pretrained(DECODERS / name, backend=backend)
    out = model(reference["input_ids"], reference["attention_mask"], output_hidden_states=True)
    theirs = reference["hidden_states"]
    assert len(out.hidden_states) == len(theirs)
    for ours, expected in zip(out.hidden_states[:-1], theirs[:-1]):
        assert worst_difference(ours, expected, reference["attention_mask"]) <= TOLERANCE
    assert worst_difference(out.last_hidden_state, theirs[-1], reference["attention_mask"]) <= TOLERANCE


def check_live(name, tmp_path, backends):
    """The case rebuilt with other weights and ids (seed 1), transformers run live, our backends on it."""
    import pytest

    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    module = tool()
    case = next(case for case in module.CASES if case["name"] == name)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = module.write_case(case, tmp_path / name, seed=1)
    finally:
        torch.set_num_threads(previous)
    for backend in backends:
        out = Encoder.from_pretrained(tmp_path / name, backend=backend)(reference["input_ids"],
                                                                         reference["attention_mask"])
        assert worst_difference(out.last_hidden_state, reference["last_hidden_state"], reference["attention_mask"]) \
            <= TOLERANCE, backend


def check_left_context_only(name, backend, position=5):
    """Changing token `position` leaves the vectors before it bit for bit, and changes its own."""
    model = Encoder.from_pretrained(DECODERS / name, backend=backend)
    ids = np.arange(1, 13)[None]
    changed = ids.copy()
    changed[0, position] = 40
    before, after = model(ids).last_hidden_state, model(changed).last_hidden_state
    np.testing.assert_array_equal(before[0, :position], after[0, :position])
    assert np.abs(before[0, position] - after[0, position]).max() > 0


def check_numba_equals_numpy_long(name, tmp_path, lengths=(1100, 37), padding="right"):
    """The committed case's checkpoint with a longer context (max_position_embeddings 2048),
    a padded batch of `lengths` tokens: the numba backend within TOLERANCE of its NumPy twin
    (the backend held to transformers on the committed references) over the real tokens."""
    import json
    import shutil

    folder = shutil.copytree(DECODERS / name, tmp_path / name)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, max_position_embeddings=2048)))
    rng = np.random.default_rng(len(name))
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        span = slice(max(lengths) - length, None) if padding == "left" else slice(0, length)
        ids[row, span] = rng.integers(1, config["vocab_size"], length)
        mask[row, span] = 1
    theirs = Encoder.from_pretrained(folder, backend="numpy")(ids, mask).last_hidden_state
    ours = Encoder.from_pretrained(folder, backend="numba")(ids, mask).last_hidden_state
    assert ours.dtype == np.float32
    assert worst_difference(ours, theirs, mask) <= TOLERANCE


def check_fused_equals_stepwise(name, monkeypatch):
    """The numba backend's layers in one compiled call give the bits of the same kernels called
    one by one from Python (forward.FUSED_LAYERS False)."""
    from transformer.numba_backend import forward

    reference = np.load(DECODERS / name / "reference.npz")
    model = Encoder.from_pretrained(DECODERS / name, backend="numba")
    fused = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    monkeypatch.setattr(forward, "FUSED_LAYERS", False)
    stepwise = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    np.testing.assert_array_equal(fused, stepwise)
