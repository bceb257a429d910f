"""The bf16 GEMM tiers (kernels/bf16.py) against the exact emulation, the bf16 packed layout,
the fused layers in bf16, and the packed cache per precision.

The bound. Inputs and weights are rounded to bf16 the same way in the kernels and the
emulation; a product of two bf16 numbers is exact in float32, so the only difference is
in how the K products are summed. A float32 sum of K terms in any order is within
K u sum_k |a_k b_k| of the exact sum (u = 2^-24, the unit roundoff; vdpbf16ps adds a pair of
products to the accumulator, at most two roundings per pair: still K for K products). Each
of the tier and the emulation is that close to the exact sum, so

    |tier - emulation| <= 2 K u sum_k |a_k| |b_k|        (elementwise, before the epilogue)

The epilogue (bias, activation, residual) runs in float32 on the same sum and only adds its
own float32 roundings, covered by adding |bias| + |residual| to the magnitude.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from transformer import model as numpy_model
from transformer import encoder as encoder_module
from transformer.encoder import BF16_POLICY, Bf16Policy, Encoder
from transformer.kernels import bf16, gemm as gemm_module, microkernel
from transformer.model import round_to_bf16, to_bf16

FAMILIES = Path(__file__).parent / "references" / "families"
DECODERS = Path(__file__).parent / "references" / "decoders"
UNIT_ROUNDOFF = 2.0 ** -24

# (tier, wide tiles): every tier this CPU runs, on each tile width it has.
TIERS = [("storage", False), ("storage", True), ("avx512_bf16", True)]


def _use_tier(monkeypatch, tier, wide):
    """Run gemm with `tier` on tiles of `wide`; skip what the CPU lacks, naming the flag."""
    reason = bf16.tiers()[tier]
    if reason is not None:
        pytest.skip(f"the {tier} tier: {reason}")
    if wide and not microkernel.host_has_avx512():
        pytest.skip("wide tiles: this CPU lacks the flag avx512f")
    monkeypatch.setattr(bf16, "TIER", tier)
    monkeypatch.setattr(microkernel, "WIDE_TILES", wide)


def _bound(x, weight, extra=0.0):
    """2 K u sum_k |bf16(x)| |bf16(w)| (+ extra magnitudes): the module docstring's bound."""
    magnitude = np.abs(round_to_bf16(x)).astype(np.float64) @ np.abs(round_to_bf16(weight)).astype(np.float64)
    return 2 * x.shape[1] * UNIT_ROUNDOFF * (magnitude + extra)


def test_packed_layout_interleaves_pairs_of_k_per_column():
    weight = np.arange(5 * 20, dtype=np.float32).reshape(5, 20)  # odd K, N past one panel
    panels = bf16.pack_weight_bf16(weight)
    assert panels.dtype == np.uint16 and panels.shape == (2, 3, 32)  # [P, ceil(K / 2), 16 * 2]
    bits = to_bf16(weight)
    for p, q, j, h in [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 7, 1), (1, 2, 3, 0), (1, 1, 3, 1)]:
        assert panels[p, q, 2 * j + h] == bits[2 * q + h, 16 * p + j]
    assert not panels[:, 2, 1::2].any()  # the pad row of k (K = 5 is odd) is 0
    assert not panels[1, :, 8:].any()  # columns 20..31 are 0
    assert np.array_equal(bf16.unpack_weight_bf16(panels, 5, 20), bits)


def test_packing_takes_float32_or_bf16_bits_and_refuses_other_types():
    weight = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    assert np.array_equal(bf16.pack_weight_bf16(weight), bf16.pack_weight_bf16(to_bf16(weight)))
    with pytest.raises(TypeError, match="pack_weight_bf16: weight must be float32 or uint16 bf16 bits, got float64"):
        bf16.pack_weight_bf16(weight.astype(np.float64))
    packed = gemm_module.pack_weight(weight, "bf16")
    assert packed.shape == (6, 16) and packed.panels.dtype == np.uint16


def test_tiers_say_what_this_cpu_runs_and_amx_is_not_built():
    tiers = bf16.tiers()
    assert set(tiers) == set(bf16.TIER_NAMES)
    assert tiers["storage"] is None and tiers["amx"] == "not built"
    flags = bf16.cpu_flags()
    if flags and not os.environ.get("NUMBA_CPU_NAME") and not os.environ.get("NUMBA_CPU_FEATURES"):
        assert (tiers["avx512_bf16"] is None) == ("avx512_bf16" in flags)
    assert bf16.TIER == ("avx512_bf16" if tiers["avx512_bf16"] is None else "storage") or \
        os.environ.get("TRANSFORMER_BF16_TIER")


def test_tier_override_refuses_a_tier_the_cpu_lacks(monkeypatch):
    monkeypatch.setenv("TRANSFORMER_BF16_TIER", "amx")
    with pytest.raises(ValueError, match="TRANSFORMER_BF16_TIER='amx': not built"):
        bf16.select_tier()
    monkeypatch.setenv("TRANSFORMER_BF16_TIER", "storage")
    assert bf16.select_tier() == "storage"
    monkeypatch.setenv("TRANSFORMER_BF16_TIER", "int8")
    with pytest.raises(ValueError, match="expected one of avx512_bf16, storage, amx"):
        bf16.select_tier()


# M, K, N: edges of every kind: one row, odd K, N off the panels, several K blocks, odd K
# with several K blocks, a short last strip.
SHAPES = [(1, 5, 20), (13, 37, 45), (16, 384, 1536), (7, 1537, 33), (130, 800, 70)]


@pytest.mark.parametrize("tier, wide", TIERS)
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_gemm_tier_matches_the_emulation(tier, wide, m, k, n, monkeypatch):
    _use_tier(monkeypatch, tier, wide)
    rng = np.random.default_rng(m * k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    weight = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    residual = rng.standard_normal((m, n)).astype(np.float32)
    out = gemm_module.gemm(x, gemm_module.pack_weight(weight, "bf16"), bias, residual=residual, activation="relu")
    expected = np.maximum(numpy_model.linear(x, to_bf16(weight), bias), 0) + residual
    assert out.dtype == np.float32 and out.shape == (m, n)
    bound = _bound(x, weight, np.abs(bias) + np.abs(residual))
    assert np.all(np.abs(out - expected) <= bound), np.max(np.abs(out - expected) / bound)
    # ... and really in bf16: the float32 product differs by more than the bound somewhere.
    assert np.any(np.abs(out - (np.maximum(x @ weight + bias, 0) + residual)) > bound)


@pytest.mark.parametrize("tier, wide", TIERS)
def test_gated_gemm_tier_matches_the_emulation(tier, wide, monkeypatch):
    _use_tier(monkeypatch, tier, wide)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((21, 96)).astype(np.float32)
    gate, up = (rng.standard_normal((96, 40)).astype(np.float32) for _ in range(2))
    weight, _ = gemm_module.pack_gated_weight(gate, up)
    out = gemm_module.gemm_gated(x, gemm_module.pack_weight(weight, "bf16"), activation="silu", inner=40)
    gate_sum = numpy_model.linear(x, to_bf16(gate), None)
    up_sum = numpy_model.linear(x, to_bf16(up), None)
    expected = numpy_model.silu(gate_sum) * up_sum
    # silu's slope is at most 1.1 and the product adds |up| d(gate) + |silu(gate)| d(up)
    bound = 1.1 * _bound(x, gate) * np.abs(up_sum) + _bound(x, up) * np.abs(numpy_model.silu(gate_sum)) + 1e-6
    assert out.dtype == np.float32
    assert np.all(np.abs(out - expected) <= bound)


@pytest.mark.parametrize("tier, wide", TIERS)
def test_bf16_strip_keeps_nan_and_infinity(tier, wide, monkeypatch):
    _use_tier(monkeypatch, tier, wide)
    x = np.ones((2, 4), dtype=np.float32)
    x[0, 1], x[1, 2] = np.nan, np.inf
    out = gemm_module.gemm(x, gemm_module.pack_weight(np.ones((4, 16), np.float32), "bf16"))
    assert np.isnan(out[0]).all() and np.isposinf(out[1]).all()


# --- the fused layers in bf16 -----------------------------------------------------------------
# Whole models: the kernels and the emulation round the same sums to bf16 at each linear's
# input, and a sum a few float32 units apart can round to neighbouring bf16 numbers (2^-8
# apart, relative). Such flips are rare and do not grow through a layer norm, so a token's
# vector stays within a few bf16 steps: cosine >= 0.9999 to the emulation's. The fp32 kernels
# are compared to the reference at 1e-5; bf16 is not that.
CASES = ["bert_gelu", "mpnet_gelu", "electra_projection", "modernbert_gelu_window", "nomic_bert_swiglu",
         "deberta_v3_buckets", "xlm_roberta_silu"]


def _token_cosines(a, b, mask):
    a, b = a[mask != 0].astype(np.float64), b[mask != 0].astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("case", CASES + ["decoders/llama_gqa_llama3_rope"])
def test_fused_layers_in_bf16_match_the_emulation(case, monkeypatch):
    _fused_layers_match_the_emulation(case, monkeypatch)


@pytest.mark.parametrize("policy", [Bf16Policy(), Bf16Policy(fp32=("qkv", "ffn_up")),
                                    Bf16Policy(fp32=("attention_output", "ffn_down"))], ids=lambda p: p.label)
@pytest.mark.parametrize("case", ["bert_gelu", "nomic_bert_swiglu"])
def test_fused_layers_match_the_emulation_under_every_bf16_policy(case, policy, monkeypatch):
    """Any kinds of linear kept in float32 (a bf16 stack with float32 slots: Weights.fp32_panels),
    or none (every slot bf16), plain and gated MLPs."""
    monkeypatch.setattr(encoder_module, "BF16_POLICY", policy)
    _fused_layers_match_the_emulation(case, monkeypatch)


def _fused_layers_match_the_emulation(case, monkeypatch):
    monkeypatch.setenv("TRANSFORMER_PACKED_CACHE", "0")
    directory = DECODERS / case.split("/")[1] if case.startswith("decoders/") else FAMILIES / case
    reference = dict(np.load(directory / "reference.npz"))
    mask = reference["attention_mask"]
    args = (reference["input_ids"], mask, reference.get("token_type_ids"))
    fast = Encoder.from_pretrained(directory, backend="numba", precision="bf16")
    slow = Encoder.from_pretrained(directory, backend="numpy", precision="bf16")
    fp32 = Encoder.from_pretrained(directory, backend="numba")
    assert fast._weights.stack.precision == "bf16"
    ours, emulated = fast(*args).last_hidden_state, slow(*args).last_hidden_state
    assert ours.dtype == np.float32
    assert _token_cosines(ours, emulated, mask).min() >= 0.9999
    assert not np.array_equal(ours, fp32(*args).last_hidden_state)
    # The layers' params re-derived from the panels are the emulation's weights themselves:
    # bf16 bits, and float32 for the kinds the policy keeps in float32.
    kept = 0
    for ours_layer, slow_layer in zip(fast.params["layers"], slow.params["layers"]):
        for name, part in slow_layer.items():
            if part.get("weight") is not None and part["weight"].ndim == 2:
                assert ours_layer[name]["weight"].dtype == part["weight"].dtype, name
                assert np.array_equal(ours_layer[name]["weight"], part["weight"]), name
                kept += part["weight"].dtype == np.float32
    assert (kept > 0) == bool(encoder_module.BF16_POLICY.fp32)


def test_storage_tier_runs_the_fused_layers_too(monkeypatch):
    monkeypatch.setenv("TRANSFORMER_PACKED_CACHE", "0")
    monkeypatch.setattr(bf16, "TIER", "storage")
    directory = FAMILIES / "bert_gelu"
    reference = dict(np.load(directory / "reference.npz"))
    mask = reference["attention_mask"]
    fast = Encoder.from_pretrained(directory, backend="numba", precision="bf16")
    slow = Encoder.from_pretrained(directory, backend="numpy", precision="bf16")
    assert _token_cosines(fast(reference["input_ids"], mask).last_hidden_state,
                          slow(reference["input_ids"], mask).last_hidden_state, mask).min() >= 0.9999


# --- the packed cache, per precision -------------------------------------------------------------
def _cache_folders(directory):
    root = directory / ".transformer-packed"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_packed_cache_is_kept_per_precision_and_never_read_as_the_other(tmp_path, monkeypatch):
    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    ids = dict(np.load(directory / "reference.npz"))["input_ids"]
    fp32 = Encoder.from_pretrained(directory, backend="numba")  # writes the fp32 cache
    [fp32_folder] = _cache_folders(directory)
    bf16_model = Encoder.from_pretrained(directory, backend="numba", precision="bf16")  # writes its own
    folders = _cache_folders(directory)
    assert len(folders) == 2 and fp32_folder in folders  # the fp32 one is kept
    config = fp32.config
    read_bf16 = packed_cache.PackedCache.find(directory, BF16_POLICY.label).load(config)
    read_fp32 = packed_cache.PackedCache.find(directory).load(config)
    assert read_bf16.stack.precision == "bf16" and read_fp32.stack.precision == "fp32"
    # Loaded again, each precision reads its own cache back, to the same bits.
    again_bf16 = Encoder.from_pretrained(directory, backend="numba", precision="bf16")
    again_fp32 = Encoder.from_pretrained(directory, backend="numba")
    assert again_bf16._weights.stack.precision == "bf16"
    assert np.array_equal(again_bf16(ids).last_hidden_state, bf16_model(ids).last_hidden_state)
    assert np.array_equal(again_fp32(ids).last_hidden_state, fp32(ids).last_hidden_state)
    assert sorted(_cache_folders(directory)) == sorted(folders)  # read, not rewritten


def test_a_bf16_cache_record_is_not_read_for_fp32(tmp_path, monkeypatch):
    import json

    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    model = Encoder.from_pretrained(directory, backend="numba", precision="bf16")
    [name] = _cache_folders(directory)
    meta = json.loads((directory / ".transformer-packed" / name / "packed.meta").read_text())
    assert meta["made_from"]["precision"] == BF16_POLICY.label
    assert packed_cache.PackedCache.find(directory).load(model.config) is None  # fp32 asks: not this one


def test_a_bf16_cache_is_not_read_under_another_bf16_policy(tmp_path, monkeypatch):
    """The policy decides which panels are bf16: a cache packed under one is rebuilt (and
    replaced) under another, never read."""
    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    ids = dict(np.load(directory / "reference.npz"))["input_ids"]
    monkeypatch.setattr(encoder_module, "BF16_POLICY", Bf16Policy())
    pure = Encoder.from_pretrained(directory, backend="numba", precision="bf16")
    [pure_folder] = _cache_folders(directory)
    monkeypatch.setattr(encoder_module, "BF16_POLICY", Bf16Policy(fp32=("ffn_down",)))
    assert packed_cache.PackedCache.find(directory, "bf16-fp32-ffn_down").load(pure.config) is None
    mixed = Encoder.from_pretrained(directory, backend="numba", precision="bf16")
    [mixed_folder] = _cache_folders(directory)  # the other policy's cache replaced
    assert mixed_folder != pure_folder
    assert mixed._weights.stack.panels["output"].dtype == np.float32
    assert mixed._weights.stack.panels["intermediate"].dtype == np.uint16
    again = Encoder.from_pretrained(directory, backend="numba", precision="bf16")  # read back
    assert again._weights.stack.panels["output"].dtype == np.float32
    assert np.array_equal(again(ids).last_hidden_state, mixed(ids).last_hidden_state)
    assert not np.array_equal(mixed(ids).last_hidden_state, pure(ids).last_hidden_state)


def test_a_strip_scratch_holds_the_deepest_k_block():
    assert 2 * bf16.STRIP_PAIRS >= gemm_module.K_BLOCK


def test_the_kernels_rounding_is_the_numpy_twins_bit_for_bit():
    """kernels/bf16.py packs weights with its own to_bf16 (a kernel imports nothing from the
    package); it must round as transformer.model.to_bf16 does: every float32 bit pattern class
    (normal, subnormal, ties, infinities, NaNs of either sign, the largest finite)."""
    rng = np.random.default_rng(7)
    patterns = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.float32([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.00390625, 1.01171875, 3.4028235e38,
                          -3.4028235e38, 1e-45, -1e-40, 65504.0])
    for values in (patterns, special):
        np.testing.assert_array_equal(bf16.to_bf16(values), to_bf16(values))
