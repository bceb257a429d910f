"""Every family against transformers' own outputs, without torch.

tests/references/families/<case>/ holds a tiny random checkpoint written by transformers'
save_pretrained and reference.npz with transformers' outputs (fp32, eager attention) on
padded batches; tools/make_references.py made them. Our NumPy encoder must agree to 1e-5.
"""

from pathlib import Path

import numpy as np
import pytest

from transformer.encoder import Encoder

FAMILIES = Path(__file__).parent / "references" / "families"
CASES = sorted(p.name for p in FAMILIES.iterdir() if (p / "reference.npz").is_file())
TOLERANCE = 1e-5


def load_case(name):
    reference = dict(np.load(FAMILIES / name / "reference.npz"))
    model = Encoder.from_pretrained(FAMILIES / name, backend="numpy")
    out = model(reference["input_ids"], reference["attention_mask"], reference["token_type_ids"],
                output_hidden_states=True, output_attentions=True)
    return model, reference, out


def test_every_family_and_head_has_a_committed_reference():
    families = {name.split("_")[0] for name in CASES}
    assert {"bert", "roberta", "xlm", "distilbert", "electra", "mpnet"} <= families
    for kind in ("masked_lm", "sequence_classification", "token_classification", "discriminator"):
        assert any(kind in name for name in CASES), kind


@pytest.mark.parametrize("name", CASES)
def test_last_hidden_state_matches_transformers(name):
    _, reference, out = load_case(name)
    mask = reference["attention_mask"].astype(bool)
    assert out.last_hidden_state.dtype == np.float32
    assert out.last_hidden_state.shape == reference["last_hidden_state"].shape
    assert np.abs(out.last_hidden_state - reference["last_hidden_state"])[mask].max() <= TOLERANCE


@pytest.mark.parametrize("name", [n for n in CASES if "hidden_states" in np.load(FAMILIES / n / "reference.npz")])
def test_every_layer_and_attention_map_matches_transformers(name):
    _, reference, out = load_case(name)
    mask = reference["attention_mask"].astype(bool)
    assert len(out.hidden_states) == len(reference["hidden_states"])
    for ours, theirs in zip(out.hidden_states, reference["hidden_states"]):
        assert np.abs(ours - theirs)[mask].max() <= TOLERANCE
    assert len(out.attentions) == len(reference["attentions"])
    for ours, theirs in zip(out.attentions, reference["attentions"]):
        assert ours.dtype == np.float32
        assert np.abs(ours - theirs).max() <= TOLERANCE


@pytest.mark.parametrize("name", [n for n in CASES if "pooler_output" in np.load(FAMILIES / n / "reference.npz")])
def test_pooler_output_matches_transformers(name):
    _, reference, out = load_case(name)
    assert out.pooler_output.dtype == np.float32
    assert np.abs(out.pooler_output - reference["pooler_output"]).max() <= TOLERANCE


@pytest.mark.parametrize("name", [n for n in CASES if "logits" in np.load(FAMILIES / n / "reference.npz")])
def test_head_logits_match_transformers(name):
    model, reference, out = load_case(name)
    assert model.head is not None
    assert out.logits.dtype == np.float32
    assert out.logits.shape == reference["logits"].shape
    logits, expected = out.logits, reference["logits"]
    if logits.shape[:2] == reference["attention_mask"].shape:  # per-token heads: compare real tokens
        mask = reference["attention_mask"].astype(bool)
        logits, expected = logits[mask], expected[mask]
    assert np.abs(logits - expected).max() <= TOLERANCE


def test_all_padding_row_matches_transformers_and_is_finite():
    _, reference, out = load_case("bert_relu_1head_padding_row")
    assert reference["attention_mask"][-1].sum() == 0
    assert np.isfinite(out.last_hidden_state).all()
    # even the row with no real token agrees: both attend uniformly over its padding
    assert np.abs(out.last_hidden_state[-1] - reference["last_hidden_state"][-1]).max() <= TOLERANCE


def test_roberta_padding_positions_agree_too():
    # padding tokens read position padding_idx, exactly as transformers does
    _, reference, out = load_case("roberta_gelu")
    assert np.abs(out.last_hidden_state - reference["last_hidden_state"]).max() <= TOLERANCE
