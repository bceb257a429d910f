"""DeBERTa-v2/v3 (model_type "deberta-v2"): both backends against transformers' own outputs,
the disentangled-attention kernel against its NumPy twin, and the config settings refused.

The NumPy backend is held to the committed references by tests/test_families.py (every case
under tests/references/families/); here the numba backend is, on the same files: tiny random
checkpoints written by transformers 5.24 (tools/make_references.py, the deberta* cases) that
cover c2p and p2c alone and together, shared and own position linears, log buckets and
clipped exact distances, the LayerNorm-ed relative table, absolute positions on and off, an
embedding projection, every head, and texts of 1, 17 and 1025 tokens in padded batches.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from transformer import model as numpy_model
from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.kernels import disentangled
from transformer.kernels.attention import VarlenPlan
from transformer.numba_backend import forward
from transformer.recipe import Disentangled

FAMILIES = Path(__file__).parent / "references" / "families"
CASES = sorted(p.name for p in FAMILIES.iterdir() if p.name.startswith("deberta") and (p / "reference.npz").is_file())
TOLERANCE = 1e-5


def load(name, backend):
    return dict(np.load(FAMILIES / name / "reference.npz")), Encoder.from_pretrained(FAMILIES / name, backend=backend)


def test_the_cases_cover_every_option_and_head():
    configs = [json.loads((FAMILIES / name / "config.json").read_text()) for name in CASES]
    attention_types = {tuple(sorted(c.get("pos_att_type") or ())) for c in configs if c["relative_attention"]}
    assert {("c2p",), ("p2c",), ("c2p", "p2c")} <= attention_types
    assert {c.get("share_att_key", False) for c in configs} == {True, False}
    assert {c.get("position_buckets", -1) > 0 for c in configs} == {True, False}
    assert {c.get("norm_rel_ebd", "none") for c in configs} == {"none", "layer_norm"}
    assert {c["position_biased_input"] for c in configs} == {True, False}
    assert {c["relative_attention"] for c in configs} == {True, False}
    assert any(c.get("embedding_size", c["hidden_size"]) != c["hidden_size"] for c in configs)
    heads = {c["architectures"][0] for c in configs}
    assert {"DebertaV2Model", "DebertaV2ForMaskedLM", "DebertaV2ForSequenceClassification",
            "DebertaV2ForTokenClassification"} <= heads
    lengths = set()
    for name in CASES:
        lengths |= set(np.load(FAMILIES / name / "reference.npz")["attention_mask"].sum(axis=1).tolist())
    assert {1, 17} <= lengths and max(lengths) > 1024


@pytest.mark.parametrize("name", CASES)
def test_numba_backend_matches_transformers(name):
    reference, model = load(name, "numba")
    mask = reference["attention_mask"].astype(bool)
    out = model(reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    assert out.last_hidden_state.dtype == np.float32
    assert np.abs(out.last_hidden_state - reference["last_hidden_state"])[mask].max() <= TOLERANCE
    if "logits" in reference:
        logits, expected = out.logits, reference["logits"]
        if logits.shape[:2] == mask.shape:  # per-token heads: compare real tokens
            logits, expected = logits[mask], expected[mask]
        assert np.abs(logits - expected).max() <= TOLERANCE


@pytest.mark.parametrize("name", [n for n in CASES if "hidden_states" in np.load(FAMILIES / n / "reference.npz")])
def test_numba_backend_matches_every_layer(name):
    reference, model = load(name, "numba")
    mask = reference["attention_mask"].astype(bool)
    out = model(reference["input_ids"], reference["attention_mask"], output_hidden_states=True)
    for ours, theirs in zip(out.hidden_states, reference["hidden_states"], strict=True):
        assert np.abs(ours - theirs)[mask].max() <= TOLERANCE


def test_fused_layers_and_kernel_by_kernel_give_the_same_bits(monkeypatch):
    reference, model = load("deberta_v3_buckets", "numba")
    fused = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    monkeypatch.setattr(forward, "FUSED_LAYERS", False)
    stepwise = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    np.testing.assert_array_equal(fused, stepwise)


def test_inputs_longer_than_max_position_embeddings_run_without_a_position_table():
    reference, model = load("deberta_v3_1025_tokens_token_classification", "numba")
    assert model.config.max_position_embeddings < reference["input_ids"].shape[1]
    assert model.config.recipe.embeddings.positions is None


# ---------------------------------------------------------------------------------------
# The kernel and its twins
# ---------------------------------------------------------------------------------------
def _scheme(buckets, span, c2p=True, p2c=True):
    return Disentangled(table="t", rows=2 * span, span=span, buckets=buckets, max_distance=4 * span, c2p=c2p,
                        p2c=p2c)


def test_log_buckets_keep_short_distances_and_are_odd():
    distance = np.arange(-600, 601)
    buckets = numpy_model.log_bucket_positions(distance, 256, 512)
    near = np.abs(distance) <= 128
    np.testing.assert_array_equal(buckets[near], distance[near])
    np.testing.assert_array_equal(buckets, -buckets[::-1])
    assert buckets[600 + 511] == 255 and buckets.max() > 255  # 511 is the last bucket; farther ones pass it
    assert (np.diff(buckets) >= 0).all()


@pytest.mark.parametrize("c2p, p2c", [(True, True), (True, False), (False, True)])
def test_naive_loop_matches_the_numpy_twin(c2p, p2c):
    rng = np.random.default_rng(0)
    n, head_dim, span = 29, 8, 8
    scheme = _scheme(buckets=8, span=span, c2p=c2p, p2c=p2c)
    query, key = rng.standard_normal((2, n, head_dim), dtype=np.float32)
    table_key, table_query = rng.standard_normal((2, 2 * span, head_dim), dtype=np.float32)
    rows = numpy_model.relative_position_rows(scheme, n)
    scale = np.float32(0.2)
    empty = np.zeros((0, head_dim), dtype=np.float32)
    naive = disentangled.disentangled_bias_naive(query, key, table_key if c2p else empty, table_query if p2c else empty,
                                                 rows, scale)
    expected = np.zeros((n, n), dtype=np.float32)
    if c2p:
        expected += (query @ table_key.T)[np.arange(n)[:, None], rows] * scale
    if p2c:
        expected += (key @ table_query.T)[np.arange(n)[None, :], rows] * scale
    np.testing.assert_allclose(naive, expected, atol=2e-6)


@pytest.mark.parametrize("lengths, buckets, span", [([1, 17, 60], 16, 16), ([70, 3], 0, 20), ([25], 8, 30)])
def test_varlen_attention_with_disentangled_terms_matches_the_numpy_twin(lengths, buckets, span):
    rng = np.random.default_rng(1)
    heads, head_dim = 3, 8
    hidden = heads * head_dim
    scheme = Disentangled(table="t", rows=2 * span, span=span, buckets=buckets, max_distance=3 * span)
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    qkv = rng.standard_normal((cu_seqlens[-1], 3 * hidden), dtype=np.float32)
    table_key, table_query = rng.standard_normal((2, 2 * span, hidden), dtype=np.float32) * np.float32(0.3)
    scale = np.float32(1.0 / np.sqrt(3 * head_dim))
    max_len = max(lengths)
    rows_of = numpy_model.relative_rows(scheme, np.arange(1 - max_len, max_len))
    plan = VarlenPlan(cu_seqlens, heads, hidden, scale=scale, rows_of=rows_of, table_rows=scheme.rows)
    ld = disentangled.table_ld(scheme.rows)
    tables = (disentangled.pack_tables([table_key], heads)[0], disentangled.pack_tables([table_query], heads)[0], ld)
    context = plan(qkv, position_tables=tables)
    for b, n in enumerate(lengths):
        rows = slice(cu_seqlens[b], cu_seqlens[b + 1])
        query, key, value = (numpy_model.split_heads(part[None], heads) for part in np.split(qkv[rows], 3, axis=1))
        position_key = numpy_model.split_heads(table_key[None], heads)  # [1, heads, rows, hd]
        position_query = numpy_model.split_heads(table_query[None], heads)
        index = numpy_model.relative_position_rows(scheme, n)
        bias = np.take_along_axis(query @ position_key.transpose(0, 1, 3, 2), np.broadcast_to(index, (1, heads, n, n)),
                                  axis=-1) * scale
        p2c = np.take_along_axis(key @ position_query.transpose(0, 1, 3, 2), np.broadcast_to(index.T, (1, heads, n, n)),
                                 axis=-1)
        bias = bias + p2c.transpose(0, 1, 3, 2) * scale
        expected, _ = numpy_model.attention(query, key, value, np.zeros((1, 1, 1, n), np.float32), bias, scale)
        np.testing.assert_allclose(context[rows], numpy_model.merge_heads(expected)[0], atol=2e-6)


def test_position_tables_hold_each_heads_rows_transposed():
    table = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)  # [rows, heads * head_dim], 2 heads of 3
    packed = disentangled.pack_tables([table], 2)[0]
    ld = disentangled.table_ld(5)
    assert ld >= 5 + 32 and ld % 16 == 0
    head1 = packed[3 * ld:6 * ld].reshape(3, ld)
    np.testing.assert_array_equal(head1[:, :5], table[:, 3:6].T)
    assert not head1[:, 5:].any()


# ---------------------------------------------------------------------------------------
# Config settings the recipe does not run, refused at load
# ---------------------------------------------------------------------------------------
_CONFIG = dict(model_type="deberta-v2", vocab_size=50, hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
               intermediate_size=37, relative_attention=True, pos_att_type="p2c|c2p", position_buckets=16,
               max_relative_positions=64)


@pytest.mark.parametrize("setting, message", [
    (dict(conv_kernel_size=3), "conv_kernel_size 3 is not supported"),
    (dict(pos_att_type="p2p"), "pos_att_type 'p2p' is not supported"),
    (dict(norm_rel_ebd="rms_norm"), "norm_rel_ebd 'rms_norm' is not supported"),
    (dict(attention_head_size=16), "attention_head_size 16 is not supported"),
    (dict(pooler_hidden_size=16), "pooler_hidden_size 16 is not supported"),
    (dict(pooler_hidden_act="bogus"), "pooler_hidden_act 'bogus' is not supported"),
    (dict(position_buckets=128), "position_buckets 128 needs max_relative_positions (64)"),
    (dict(share_att_key="yes"), "share_att_key must be true or false"),
])
def test_unsupported_settings_are_refused_with_one_line(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EncoderConfig.from_dict({**_CONFIG, **setting})


def test_v3_settings_make_the_recipe():
    config = EncoderConfig.from_dict({**_CONFIG, "share_att_key": True, "norm_rel_ebd": "layer_norm",
                                      "position_biased_input": False})
    attention = config.recipe.layers[0].attention()[0]
    scheme = attention.positions
    assert (scheme.rows, scheme.span, scheme.buckets, scheme.max_distance) == (32, 16, 16, 64)
    assert scheme.c2p and scheme.p2c and scheme.share_key and scheme.norm is not None
    assert attention.scale == pytest.approx(1 / np.sqrt(8 * 3))
    assert config.recipe.embeddings.positions is None and not config.recipe.embeddings.token_types


@pytest.mark.parametrize("name", ["deberta_v3_buckets", "deberta_c2p_masked_lm"])
def test_packed_cache_keeps_the_relative_table_its_norm_and_the_position_linears(name, tmp_path, monkeypatch):
    import shutil

    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    directory = tmp_path / name
    shutil.copytree(FAMILIES / name, directory)
    reference = dict(np.load(directory / "reference.npz"))
    args = (reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    packed = Encoder.from_pretrained(directory, backend="numba")  # packs, then writes the cache
    cached = Encoder.from_pretrained(directory, backend="numba")  # maps the cache back
    assert isinstance(cached.params["embeddings"]["word"].base, np.memmap)
    first, second = packed(*args), cached(*args)
    np.testing.assert_array_equal(first.last_hidden_state, second.last_hidden_state)
    assert (first.logits is None and second.logits is None) or np.array_equal(first.logits, second.logits)
