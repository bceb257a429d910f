"""The GEMM kernel (`transformer.kernels.gemm`) against its NumPy twin and its naive loop.

The twin is `activation(x @ weight + bias) + residual` in NumPy (`transformer.model`'s
activations); results must agree to float32 rounding of the dot products: the error is
measured relative to sum_p |x[i, p]| |weight[p, j]|, the scale float32 rounding works at.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.kernels import gemm as gemm_module
from transformer.kernels._jit import jit
from transformer.kernels.gemm import PackedWeight, gemm, gemm_naive, pack_weight
from transformer.kernels import microkernel
from transformer.kernels.microkernel import microkernel_6x16, microkernel_12x32
from transformer.model import ACTIVATIONS

# Two float32 sums of the same products in different orders differ by a few units of 2^-24
# times sqrt(length) of the |x| |w| scale: 3e-7 is the worst seen over these tests (K up to
# 3072); 2e-6 leaves room for rounding and none for a wrong product, bias or activation.
RELATIVE_TOLERANCE = 2e-6


def random_problem(m, k, n, seed=0):
    """x [m, k], weight [k, n], bias [n], residual [m, n]: float32, seeded."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k), dtype=np.float32)
    weight = rng.standard_normal((k, n), dtype=np.float32) * np.float32(1 / np.sqrt(max(k, 1)))
    bias = rng.standard_normal(n, dtype=np.float32)
    residual = rng.standard_normal((m, n), dtype=np.float32)
    return x, weight, bias, residual


def numpy_twin(x, weight, bias=None, residual=None, activation=None):
    """The readable NumPy path: activation(x @ weight + bias) + residual, float32."""
    out = x @ weight
    if bias is not None:
        out = out + bias
    if activation is not None:
        out = ACTIVATIONS[activation](out)
    if residual is not None:
        out = out + residual
    return out.astype(np.float32)


def dot_scale(x, weight, bias=None, residual=None):
    """The magnitude float32 rounding works at for each output: |x| @ |w| + |b| + |r| + 1."""
    scale = np.abs(x).astype(np.float64) @ np.abs(weight).astype(np.float64) + 1.0
    if bias is not None:
        scale = scale + np.abs(bias)
    if residual is not None:
        scale = scale + np.abs(residual)
    return scale


def assert_close_to_float32_rounding(actual, expected, scale):
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    worst = float((error / scale).max()) if error.size else 0.0
    assert worst <= RELATIVE_TOLERANCE, f"max error {worst:.2e} of the dot-product scale"


# ---------------------------------------------------------------------------------------
# The micro-kernel on its own (attention calls it with unpacked B, ldb > 16)


# One contract per tile. The wide tile reads its second 16 columns `b_second` floats after the
# first (here 21 further along each row of b: the second panel is b[:, 26:42]); the narrow one
# ignores b_second. prefetch_start >= 0 asks for lines of b on the way (it changes nothing
# computed); the rows pick the register block inside (narrow 6 / 4, wide 12 / 8 / 4 rows).
@jit
def _narrow(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, prefetch_start):
    microkernel_6x16(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, 21,
                     prefetch_start)


@jit
def _wide(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, prefetch_start):
    microkernel_12x32(a, a_start, lda, rows, b, b_start, ldb, depth, c, c_start, ldc, cols, accumulate, 21,
                      prefetch_start)


@pytest.mark.parametrize("prefetch_start", [-1, 0, 3], ids=["no prefetch", "prefetch at 0", "prefetch at 3"])
@pytest.mark.parametrize("tile, tile_rows, tile_cols", [(_narrow, 6, 16), (_wide, 12, 32)], ids=["narrow", "wide"])
def test_microkernel_computes_a_tile_with_edges_strides_and_accumulation(tile, tile_rows, tile_cols, prefetch_start):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((15, 40), dtype=np.float32)  # A = a[2:2+rows, 3:3+depth]
    b = rng.standard_normal((50, 48), dtype=np.float32)  # B = b[1:1+depth, 5:21] (| b[1:1+depth, 26:42]), ldb = 48
    columns = np.r_[5:21, 26:42][:tile_cols]
    depth = 33
    # every register block: rows 12, 9 (12-row block), 8, 5 (8-row), 6 (narrow 6-row), 4 .. 1 (4-row)
    for rows, cols in [(tile_rows, tile_cols), (4, 16), (tile_rows, 11), (3, 7), (1, 1), (tile_rows, 16),
                       (tile_rows - 1, tile_cols - 3), (2, 17), (8, 32), (5, 20), (9, 31), (6, 16)]:
        rows, cols = min(rows, tile_rows), min(cols, tile_cols)
        expected = a[2:2 + rows, 3:3 + depth].astype(np.float64) @ b[1:1 + depth, columns[:cols]]
        c = np.full((14, 36), 7.0, dtype=np.float32)  # C = c[1:1+rows, 2:2+cols], ldc = 36
        tile(a, 2 * 40 + 3, 40, rows, b, 1 * 48 + 5, 48, depth, c, 1 * 36 + 2, 36, cols, False, prefetch_start)
        np.testing.assert_allclose(c[1:1 + rows, 2:2 + cols], expected, rtol=1e-5, atol=1e-5)
        untouched = np.ones(c.shape, dtype=bool)
        untouched[1:1 + rows, 2:2 + cols] = False
        assert (c[untouched] == 7.0).all(), "wrote outside the tile"
        tile(a, 2 * 40 + 3, 40, rows, b, 1 * 48 + 5, 48, depth, c, 1 * 36 + 2, 36, cols, True, prefetch_start)
        np.testing.assert_allclose(c[1:1 + rows, 2:2 + cols], 2 * expected, rtol=1e-5, atol=1e-5)
        assert (c[untouched] == 7.0).all()


def fma_float32(a, b, acc):
    """float32 fma(a, b, acc), rounded once: a * b is exact in float64 (24 + 24 bits), and the
    float64 sum rounds to a float32 tie where the exact one is not only in ~2^-29 of cases."""
    return (a.astype(np.float64) * b + acc).astype(np.float32)


def summed_in_chains(a, b, chain):
    """A [rows, depth] @ B [depth, cols] in the micro-kernel's order (its docstring): chains of
    `chain` products, each a run of float32 multiply-adds from 0, added into C one after another."""
    c = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for first in range(0, a.shape[1], chain):
        acc = np.zeros_like(c)
        for k in range(first, min(first + chain, a.shape[1])):
            acc = fma_float32(a[:, k:k + 1], b[k:k + 1, :], acc)  # [rows, 1] * [1, cols] + [rows, cols]
        c = c + acc if first else acc
    return c


@pytest.mark.parametrize("tile, tile_rows, tile_cols", [(_narrow, 6, 16), (_wide, 12, 32)], ids=["narrow", "wide"])
def test_microkernel_sums_in_chains_of_chain_products(tile, tile_rows, tile_cols):
    # Large positive sums, where the order shows: one chain over all 300 products rounds
    # differently from chains of 128 added together.
    rng = np.random.default_rng(12)
    depth = 2 * microkernel.CHAIN + 44
    a = rng.uniform(0, 100, (tile_rows, depth)).astype(np.float32)
    b = rng.uniform(0, 100, (depth, 48)).astype(np.float32)  # the second panel at b_second = 21
    columns = np.r_[0:16, 21:37][:tile_cols]
    c = np.empty((tile_rows, tile_cols), dtype=np.float32)
    tile(a, 0, depth, tile_rows, b, 0, 48, depth, c, 0, tile_cols, tile_cols, False, -1)
    expected = summed_in_chains(a, b[:, columns], microkernel.CHAIN)
    np.testing.assert_array_equal(c, expected)
    assert not np.array_equal(c, summed_in_chains(a, b[:, columns], depth))  # the order is what was tested
    # accumulating: C + s_0 + s_1 + s_2, in that order
    tile(a, 0, depth, tile_rows, b, 0, 48, depth, c, 0, tile_cols, tile_cols, True, -1)
    accumulated = expected
    for first in range(0, depth, microkernel.CHAIN):
        accumulated = accumulated + summed_in_chains(a[:, first:first + microkernel.CHAIN],
                                                     b[first:first + microkernel.CHAIN, columns], depth)
    np.testing.assert_array_equal(c, accumulated)


@pytest.fixture(params=[False, True], ids=["narrow", "wide"])
def tiles(request, monkeypatch):
    """Run the test with the micro-kernel's narrow (6 x 16) and its wide (12 x 32) tiles."""
    monkeypatch.setattr(microkernel, "WIDE_TILES", request.param)
    return request.param


def gemm_with_tiles(wide, *args, **kwargs):
    """gemm(*args, **kwargs) with the narrow or the wide tiles."""
    previous = microkernel.WIDE_TILES
    microkernel.WIDE_TILES = wide
    try:
        return gemm(*args, **kwargs)
    finally:
        microkernel.WIDE_TILES = previous


# ---------------------------------------------------------------------------------------
# pack_weight


def test_pack_weight_cuts_16_column_panels_and_pads_the_last_with_zeros():
    weight = np.arange(5 * 37, dtype=np.float32).reshape(5, 37)
    packed = pack_weight(weight)
    assert isinstance(packed, PackedWeight)
    assert packed.shape == (5, 37)
    assert packed.panels.shape == (3, 5, 16)  # ceil(37 / 16) panels of [K, 16]
    assert packed.panels.dtype == np.float32 and packed.panels.flags.c_contiguous
    np.testing.assert_array_equal(packed.panels[1], weight[:, 16:32])
    np.testing.assert_array_equal(packed.panels[2, :, :5], weight[:, 32:37])
    assert not packed.panels[2, :, 5:].any()


def test_pack_weight_rejects_float64_and_1d_weights():
    with pytest.raises(TypeError, match="weight must be float32"):
        pack_weight(np.ones((4, 4)))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        pack_weight(np.ones(4, dtype=np.float32))


# ---------------------------------------------------------------------------------------
# gemm = x @ weight on every kind of shape


SHAPES = [
    (1, 1, 1),
    (1, 384, 384),  # one token
    (2, 3, 5),
    (5, 17, 33),  # M < 6 rows, N just past two panels
    (7, 8, 15),  # N < 16: one padded panel
    (13, 100, 16),  # N exactly one panel
    (6, 769, 40),  # K just past one K block of 768
    (37, 1000, 50),  # K in two blocks of 500
    (150, 64, 100),  # one row block; on 2 threads its columns are cut into blocks
    (301, 129, 257),  # odd everything, a 1-column last panel
    (577, 64, 40),  # M just past one row block of gemm.MAX_BLOCK_ROWS = 576
    (1201, 129, 257),  # several row blocks, the last one short
]


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_gemm_matches_numpy_matmul(m, k, n, tiles):
    x, weight, _, _ = random_problem(m, k, n)
    out = gemm(x, pack_weight(weight))
    assert_close_to_float32_rounding(out, numpy_twin(x, weight), dot_scale(x, weight))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m, k, n", SHAPES + [(16, 384, 1152), (128, 384, 1536), (24, 769, 100), (25, 1536, 40)])
def test_wide_and_narrow_tiles_give_the_same_bits(m, k, n, threads, monkeypatch):
    # Every element is the same sum in the same order in either tile shape (the same K
    # blocks, the same chains), so the results are equal bit for bit: the AVX-512 kernels
    # change no number the AVX2 ones give (and the parity figures hold on both).
    import transformer

    x, weight, bias, residual = random_problem(m, k, n, seed=11)
    packed = pack_weight(weight)
    previous = transformer.get_num_threads()
    monkeypatch.setattr(gemm_module, "SERIAL_BELOW_FLOPS", 0.0)
    try:
        transformer.set_num_threads(threads)
        narrow = gemm_with_tiles(False, x, packed, bias, residual, "gelu")
        wide = gemm_with_tiles(True, x, packed, bias, residual, "gelu")
    finally:
        transformer.set_num_threads(previous)
    np.testing.assert_array_equal(wide, narrow)
    assert_close_to_float32_rounding(wide, numpy_twin(x, weight, bias, residual, "gelu"),
                                     dot_scale(x, weight, bias, residual))


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (5, 17, 33), (37, 1000, 50), (150, 64, 100)])
def test_gemm_matches_the_naive_loop(m, k, n):
    x, weight, bias, residual = random_problem(m, k, n, seed=1)
    fast = gemm(x, pack_weight(weight), bias, residual, activation="gelu")
    naive = gemm_naive(x, weight, bias, residual, activation="gelu")
    assert_close_to_float32_rounding(fast, naive, dot_scale(x, weight, bias, residual))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_gemm_matches_numpy_on_random_shapes(m, k, n, seed):
    x, weight, bias, residual = random_problem(m, k, n, seed)
    out = gemm(x, pack_weight(weight), bias, residual)
    expected = numpy_twin(x, weight, bias, residual)
    assert_close_to_float32_rounding(out, expected, dot_scale(x, weight, bias, residual))


@pytest.mark.parametrize("m, k, n, activation", [(128, 384, 1536, "gelu"), (64, 3072, 768, None)])
def test_gemm_matches_numpy_at_bert_shapes(m, k, n, activation):
    x, weight, bias, residual = random_problem(m, k, n, seed=2)
    residual = None if activation else residual  # the FFN's two halves: up + GELU, down + skip
    out = gemm(x, pack_weight(weight), bias, residual, activation)
    expected = numpy_twin(x, weight, bias, residual, activation)
    assert_close_to_float32_rounding(out, expected, dot_scale(x, weight, bias, residual))


@pytest.mark.parametrize("m", [10, 16, 20, 130])  # narrow: 6 + 4, 6 + 6 + 4, ..., 21 * 6 + 4 rows; wide: 10, 12 + 4, 12 + 8, ...
def test_a_short_last_tile_gives_the_same_bits_as_a_full_tile(m, tiles):
    # The 4-row micro-kernel adds the same products in the same order as the 6-row one (the
    # 8- and 4-row wide ones as the 12-row one).
    x, weight, bias, _ = random_problem(m + 2, 800, 40, seed=4)  # K = 800: two K blocks
    packed = pack_weight(weight)
    short = gemm(np.ascontiguousarray(x[:m]), packed, bias, activation="gelu")  # last tile: 4 rows
    full = gemm(x, packed, bias, activation="gelu")  # last tile: 6 rows
    np.testing.assert_array_equal(short, full[:m])
    assert_close_to_float32_rounding(short, numpy_twin(x[:m], weight, bias, None, "gelu"), dot_scale(x[:m], weight, bias))


def test_gemm_threaded_and_single_thread_paths_agree(monkeypatch):
    x, weight, bias, residual = random_problem(200, 300, 100, seed=3)
    packed = pack_weight(weight)
    monkeypatch.setattr(gemm_module, "SERIAL_BELOW_FLOPS", float("inf"))
    single = gemm(x, packed, bias, residual, "gelu")
    monkeypatch.setattr(gemm_module, "SERIAL_BELOW_FLOPS", 0.0)
    threaded = gemm(x, packed, bias, residual, "gelu")
    np.testing.assert_array_equal(single, threaded)  # same blocks of K: same sums, bit for bit


@pytest.mark.parametrize("m, n", [(128, 1152), (25, 1500), (150, 1000), (40, 3072), (16, 8)])
def test_column_plans_give_each_thread_a_run_of_whole_tiles(m, n, tiles):
    packed = pack_weight(random_problem(m, 64, n)[1])
    n_panels = packed.panels.shape[0]
    plan = gemm_module.plan_blocks(m, n_panels, 64, 2, tiles)
    units, rows, unit_panels, ranges, wide, batch = (plan.units, plan.block_rows, plan.unit_panels, plan.ranges,
                                                     plan.wide, plan.owner_batch)
    assert len(plan.bounds) == ranges + 1 and wide == tiles
    assert rows >= m and ranges == 2 and unit_panels == (2 if tiles else 1)
    assert units * unit_panels >= n_panels > (units - 1) * unit_panels  # tile columns cover every panel once
    bounds = plan.bounds
    assert bounds[0] == 0 and bounds[2] == units and abs((bounds[2] - bounds[1]) - bounds[1]) <= 1  # halves
    assert batch * unit_panels == (gemm_module.WIDE_PANELS_PER_SWEEP if tiles else gemm_module.PANELS_PER_SWEEP)


@pytest.mark.parametrize("threads_running", [[0], [1], [0, 1], [1, 0, 2]])
@pytest.mark.parametrize("m, n", [(128, 1152), (20, 300), (150, 40)])
def test_every_block_is_computed_once_whoever_runs(m, n, threads_running, tiles):
    # A plan made for 2 threads, run by only one of them (the other never came: it must
    # take the whole other range from its back), by both one after another, or by a third
    # that owns no range: the same bits as one thread alone.
    x, weight, bias, residual = random_problem(m, 384, n, seed=5)
    packed = pack_weight(weight)
    plan = gemm_module.plan_blocks(m, packed.panels.shape[0], 384, 2, tiles)
    assert plan.ranges == 2
    out = np.full((m, n), np.nan, dtype=np.float32)
    counters = np.zeros(gemm_module.FINISHED + 1, dtype=np.int64)
    for thread in threads_running:
        gemm_module._gemm_tasks(x, packed.panels, bias, residual, 0, out, gemm_module._NO_RESIDUAL,
                                gemm_module.plan_record(plan), counters,
                                thread, thread + 1)
    assert counters[gemm_module.FINISHED] == plan.units  # every unit counted finished once
    alone = gemm_with_tiles(tiles, x, packed, bias, residual)
    np.testing.assert_array_equal(out, alone)


def test_two_threads_split_the_work_and_get_the_same_bits(monkeypatch, tiles):
    import transformer

    x, weight, bias, _ = random_problem(128, 64, 1152, seed=9)
    packed = pack_weight(weight)
    previous = transformer.get_num_threads()
    try:
        transformer.set_num_threads(2)
        monkeypatch.setattr(gemm_module, "SERIAL_BELOW_FLOPS", 0.0)
        threaded = gemm(x, packed, bias, activation="gelu")
    finally:
        transformer.set_num_threads(previous)
    monkeypatch.setattr(gemm_module, "SERIAL_BELOW_FLOPS", float("inf"))
    np.testing.assert_array_equal(threaded, gemm(x, packed, bias, activation="gelu"))  # one block, one thread


def test_gemm_reads_read_only_inputs_on_both_paths(monkeypatch):
    x, weight, bias, residual = random_problem(100, 64, 40, seed=8)
    for array in (x, bias, residual):
        array.flags.writeable = False  # e.g. arrays over a memory-mapped file
    packed = pack_weight(weight)
    expected = numpy_twin(x, weight, bias, residual, "relu")
    for serial_below_flops in (float("inf"), 0.0):
        monkeypatch.setattr(gemm_module, "SERIAL_BELOW_FLOPS", serial_below_flops)
        out = gemm(x, packed, bias, residual, "relu")
        assert_close_to_float32_rounding(out, expected, dot_scale(x, weight, bias, residual))


def test_gemm_with_empty_depth_gives_the_epilogue_of_zero():
    x = np.zeros((3, 0), dtype=np.float32)
    bias = np.arange(4, dtype=np.float32)
    out = gemm(x, pack_weight(np.zeros((0, 4), dtype=np.float32)), bias)
    np.testing.assert_array_equal(out, np.broadcast_to(bias, (3, 4)))


def test_gemm_with_no_rows_returns_an_empty_result():
    out = gemm(np.zeros((0, 8), dtype=np.float32), pack_weight(np.ones((8, 3), dtype=np.float32)))
    assert out.shape == (0, 3) and out.dtype == np.float32


# ---------------------------------------------------------------------------------------
# Epilogues: + bias, activation, + residual


@pytest.mark.parametrize("activation", [None, "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "swish", "tanh"])
def test_gemm_epilogue_applies_bias_activation_then_residual(activation):
    x, weight, bias, residual = random_problem(23, 40, 45, seed=4)
    kernel = None if activation is None else ACTIVATIONS[activation].__name__  # the kernel's name for it
    out = gemm(x, pack_weight(weight), bias, residual, kernel)
    expected = numpy_twin(x, weight, bias, residual, activation)
    assert_close_to_float32_rounding(out, expected, dot_scale(x, weight, bias, residual))


def test_gemm_epilogue_bias_alone_and_residual_alone():
    x, weight, bias, residual = random_problem(9, 20, 18, seed=5)
    packed = pack_weight(weight)
    scale = dot_scale(x, weight, bias, residual)
    assert_close_to_float32_rounding(gemm(x, packed, bias=bias), numpy_twin(x, weight, bias), scale)
    assert_close_to_float32_rounding(gemm(x, packed, residual=residual), numpy_twin(x, weight, None, residual), scale)
    assert_close_to_float32_rounding(gemm(x, packed, activation="relu"), numpy_twin(x, weight, None, None, "relu"), scale)


# ---------------------------------------------------------------------------------------
# out=


def test_gemm_writes_into_out_and_ignores_what_was_there():
    x, weight, bias, residual = random_problem(20, 1600, 30, seed=6)  # 3 K blocks: C is re-read
    packed = pack_weight(weight)
    out = np.full((20, 30), np.nan, dtype=np.float32)
    result = gemm(x, packed, bias, residual, "gelu", out=out)
    assert result is out
    again = gemm(x, packed, bias, residual, "gelu", out=out)  # a second call into the same out
    expected = numpy_twin(x, weight, bias, residual, "gelu")
    assert_close_to_float32_rounding(again, expected, dot_scale(x, weight, bias, residual))


def test_gemm_rejects_out_overlapping_an_input():
    x = np.ones((4, 4), dtype=np.float32)
    packed = pack_weight(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="out must not overlap x"):
        gemm(x, packed, out=x)
    residual = np.ones((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="out must not overlap residual"):
        gemm(x, packed, residual=residual, out=residual)


# ---------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument


@pytest.fixture
def problem():
    x, weight, bias, residual = random_problem(4, 8, 5)
    return x, pack_weight(weight), bias, residual


def test_gemm_rejects_float64_x(problem):
    x, packed, _, _ = problem
    with pytest.raises(TypeError, match="x must be float32, got float64"):
        gemm(x.astype(np.float64), packed)


def test_gemm_rejects_x_with_the_wrong_inner_dimension(problem):
    x, packed, _, _ = problem
    with pytest.raises(ValueError, match=r"x must have shape \(4, 8\), got \(4, 7\)"):
        gemm(x[:, :7].copy(), packed)
    with pytest.raises(ValueError, match=r"x must be a float32 \[M, K\] array"):
        gemm(x.reshape(-1), packed)


def test_gemm_rejects_non_contiguous_x(problem):
    x, packed, _, _ = problem
    wide = np.zeros((4, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        gemm(wide[:, ::2], packed)


def test_gemm_rejects_bad_bias_residual_and_out(problem):
    x, packed, bias, residual = problem
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        gemm(x, packed, bias=bias[:4].copy())
    with pytest.raises(TypeError, match="bias must be float32"):
        gemm(x, packed, bias=bias.astype(np.float64))
    with pytest.raises(ValueError, match=r"residual must have shape \(4, 5\)"):
        gemm(x, packed, residual=residual.T.copy())
    with pytest.raises(TypeError, match="out must be a numpy float32 array"):
        gemm(x, packed, out=[[0.0] * 5] * 4)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        gemm(x, packed, out=np.zeros((5, 4), dtype=np.float32).T)


def test_gemm_rejects_an_unpacked_weight_and_unknown_activation(problem):
    x, packed, _, _ = problem
    with pytest.raises(TypeError, match="packed must be a PackedWeight from pack_weight"):
        gemm(x, np.ones((8, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="activation 'gelu_typo' has no kernel"):
        gemm(x, packed, activation="gelu_typo")
