"""T5 and mT5 encoders (T5EncoderModel; sentence-t5, GTR) against transformers, on both backends.

tests/references/families/t5_*/ and mt5_*/ hold tiny random checkpoints written by
transformers and its fp32 eager outputs (tools/make_references.py says how they were
made): ReLU and gated (gelu_new, SiLU) feed-forwards, heads of d_kv whose total is not
d_model, bucket counts and distances other than the defaults (an odd count too), a full
mT5 encoder-decoder checkpoint read as its encoder, the token-classification head, padded
batches, rows of 1, 17, 330 and 1030 tokens (past max_distance). Where torch is installed,
the live tests rebuild every case and compare directly.

Every output is held to a flat 1e-5 (T5's outputs reach 3.5 to 5.6 here). The long cases
are the tightest: fp32 transformers is itself 5.6e-6 (330 tokens) and 5.2e-6 (1030 tokens)
from a float64 run there.
"""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from transformer import model as numpy_model
from transformer.config import ConfigError, EncoderConfig
from transformer.encoder import Encoder
from transformer.loading import CheckpointError, read_checkpoint
from transformer.recipe import RelativeBuckets

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ROOT / "tests" / "references" / "families"
CASES = sorted(p.name for p in FAMILIES.iterdir() if p.name.startswith(("t5_", "mt5_")))
BACKENDS = ("numpy", "numba")
TOLERANCE = 1e-5
FULL = "mt5_gated_silu_full_checkpoint"


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_references", ROOT / "tools" / "make_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_references = _load_maker()


def load(folder, backend):
    if Path(folder).name == FULL:  # its decoder is skipped, and said so
        with pytest.warns(UserWarning, match="MT5ForConditionalGeneration: this head is not supported"):
            return Encoder.from_pretrained(folder, backend=backend)
    return Encoder.from_pretrained(folder, backend=backend)


def assert_matches(model, reference):
    make_references.assert_matches(model, reference, tolerance=TOLERANCE)


def test_the_cases_cover_every_option():
    assert len(CASES) >= 4
    configs = {name: EncoderConfig.from_file(FAMILIES / name) for name in CASES}
    assert {config.options["gated"] for config in configs.values()} == {True, False}
    assert {"relu", "gelu_new", "silu"} <= {config.hidden_act for config in configs.values()}
    assert any(config.head_dim * config.num_attention_heads != config.hidden_size for config in configs.values())
    assert all(config.relative_attention_num_buckets != 32 and config.options["max_distance"] != 128
               for config in configs.values())
    row_lengths = [np.load(FAMILIES / name / "reference.npz")["attention_mask"].sum(axis=1) for name in CASES]
    lengths = {int(n) for rows in row_lengths for n in rows}
    assert {1, 17} <= lengths and max(lengths) > 1024
    assert any(len(set(rows)) > 1 for rows in row_lengths)  # padded batches


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_committed_case_matches_transformers(name, backend):
    reference = dict(np.load(FAMILIES / name / "reference.npz"))
    assert_matches(load(FAMILIES / name, backend), reference)


def test_recipe_is_pre_norm_rms_unscaled_with_one_shared_bias_table():
    config = EncoderConfig.from_file(FAMILIES / "t5_relu_buckets")
    recipe = config.recipe
    assert recipe.embeddings.positions is None and recipe.embeddings.norm is None and recipe.embeddings.scale is None
    assert not recipe.embeddings.token_types
    assert recipe.final_norm.kind == "rms_norm" and not recipe.final_norm.bias
    assert recipe.tables() == ("relative_attention_bias",)
    for layer in recipe.layers:
        attention, mlp = (block.sublayer for block in layer.blocks)
        assert attention.scale == 1.0 and (attention.num_heads, attention.head_dim) == (4, 12)
        assert attention.positions == RelativeBuckets(table="relative_attention_bias", rows=16, num_buckets=16,
                                                      max_distance=20)
        assert mlp.gate is None and mlp.activation == "relu"
        assert not any(linear.bias for linear in layer.linears())
        assert all(block.norm_before.kind == "rms_norm" and block.norm_after_residual is None for block in layer.blocks)
    assert config.max_sequence_length > 100_000  # relative positions only: no length limit


def test_gated_gelu_is_the_tanh_gelu_of_wi_0_times_wi_1():
    config = EncoderConfig.from_file(FAMILIES / "t5_gated_gelu")
    mlp = config.recipe.layers[0].blocks[1].sublayer
    assert (mlp.gate.name, mlp.up.name, mlp.activation) == ("gate", "up", "gelu_new")
    model = Encoder.from_pretrained(FAMILIES / "t5_gated_gelu", backend="numpy")
    tensors = read_checkpoint(FAMILIES / "t5_gated_gelu")
    np.testing.assert_array_equal(model.params["layers"][2]["gate"]["weight"],
                                  tensors["encoder.block.2.layer.1.DenseReluDense.wi_0.weight"].T)


def test_buckets_split_by_direction_exact_then_logarithmic():
    buckets = numpy_model.relative_position_buckets(40, num_buckets=16, max_distance=20)  # [query, key]
    # keys d before the query: below 16 / 4 exact, then 4 + int(4 * ln(d / 4) / ln(20 / 4))
    assert [buckets[20, 20 - d] for d in (0, 1, 2, 3, 4, 5, 10, 19)] == [0, 1, 2, 3, 4, 4, 6, 7]
    assert [buckets[20, 20 + d] for d in (1, 2, 3, 4, 10)] == [9, 10, 11, 12, 14]  # keys after: the upper half
    assert buckets[39, 0] == 7 and buckets[0, 39] == 15  # past max_distance: the last bucket each way


def test_numba_program_of_a_t5_layer():
    from transformer.kernels.program import describe

    model = Encoder.from_pretrained(FAMILIES / "t5_gated_gelu", backend="numba")
    prepared = model._weights
    names = [linear.name for linear in prepared.stack.layout.linears]
    assert describe(prepared.program, 1, names).splitlines() == [
        "NORM       NORMED = RMSNorm(HIDDEN)",
        "GEMM       QKV = NORMED @ W[qkv] + b",
        "ATTENTION  CONTEXT = attention(QKV)",
        "GEMM       ATTENDED = CONTEXT @ W[attention_output] + b + HIDDEN",
        "NORM       NORMED = RMSNorm(ATTENDED)",
        "MLP        HIDDEN = gelu_tanh(NORMED @ W[gate+up].gate + b) * (NORMED @ W[gate+up].up + b) @ W[down] + b + "
        "ATTENDED",
    ]
    attention = prepared.program.attentions[1]
    assert attention["scale"] == 1.0 and attention["position_bias"] and attention["head_dim"] == 16


def test_numba_attention_sums_a_long_row_in_runs_as_closely_as_numpy():
    """330 keys under T5's bias (many keys share a bucket, so a weight): the numba kernel's
    P V, summed in runs of KEY_RUN keys, stays as close to a float64 result as NumPy's BLAS;
    one float32 running sum over all 330 keys was 2.0e-6 off where NumPy is 7.2e-7."""
    from transformer.kernels.attention import KEY_RUN, VarlenPlan

    model = Encoder.from_pretrained(FAMILIES / "t5_long_330", backend="numpy")
    config, params = model.config, model.params
    layer, spec = params["layers"][0], config.recipe.layers[0].blocks[0].sublayer
    ids = np.load(FAMILIES / "t5_long_330" / "reference.npz")["input_ids"][:1, :330]
    x = numpy_model.norm(config.recipe.layers[0].blocks[0].norm_before, layer,
                         numpy_model.embed(params["embeddings"], config, ids, np.zeros_like(ids)))
    query, key, value = (numpy_model.linear(x, **layer[name]) for name in ("query", "key", "value"))  # [1, 330, 16]
    bias = numpy_model.relative_position_bias(params["relative_attention_bias"], 330, spec.positions.num_buckets,
                                              spec.positions.max_distance)  # [1, heads, 330, 330]
    no_mask = np.zeros((1, 1, 1, 330), np.float32)

    def reference(dtype):
        heads = [numpy_model.split_heads(t.astype(dtype), spec.num_heads) for t in (query, key, value)]
        context, _ = numpy_model.attention(*heads, no_mask.astype(dtype), bias.astype(dtype), 1.0)
        return numpy_model.merge_heads(context)[0]  # -> [330, 16]

    exact = reference(np.float64)
    qkv = np.ascontiguousarray(np.concatenate((query[0], key[0], value[0]), axis=1))
    ours = VarlenPlan(np.array([0, 330]), spec.num_heads, 16, position_bias=bias[0], scale=1.0)(qkv)
    assert 330 > 2 * KEY_RUN
    assert np.abs(ours - exact).max() <= max(1e-6, np.abs(reference(np.float32) - exact).max())


def test_numba_layers_step_by_step_give_the_same_bits(monkeypatch):
    from transformer.numba_backend import forward

    reference = dict(np.load(FAMILIES / "t5_relu_buckets" / "reference.npz"))
    model = Encoder.from_pretrained(FAMILIES / "t5_relu_buckets", backend="numba")
    fused = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    monkeypatch.setattr(forward, "FUSED_LAYERS", False)
    stepped = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    np.testing.assert_array_equal(fused, stepped)


# --- checkpoints ---------------------------------------------------------------------------
def _copy_with(tmp_path, name, add=(), drop=()):
    """A copy of case `name` whose model.safetensors gains the tensors `add` ({name: array})
    and loses those named in `drop`."""
    from safetensors.numpy import save_file

    folder = tmp_path / name
    shutil.copytree(FAMILIES / name, folder)
    tensors = read_checkpoint(folder)
    arrays = {key: np.array(tensors[key]) for key in tensors if key not in drop}
    arrays.update(add)
    save_file(arrays, str(folder / "model.safetensors"))
    return folder


def test_full_checkpoint_reads_the_encoder_and_skips_the_decoder():
    tensors = read_checkpoint(FAMILIES / FULL)
    assert any(name.startswith("decoder.block.") for name in tensors)
    reference = dict(np.load(FAMILIES / FULL / "reference.npz"))
    assert_matches(load(FAMILIES / FULL, "numpy"), reference)


@pytest.mark.parametrize("extra", ["encoder.block.0.layer.2.DenseReluDense.wi.weight", "encoder.adapter.weight"])
def test_an_unexpected_tensor_is_refused_naming_it(tmp_path, extra):
    folder = _copy_with(tmp_path, "t5_relu_buckets", add={extra: np.zeros((4, 4), np.float32)})
    with pytest.raises(CheckpointError, match=rf"tensor a t5 encoder does not have: '{extra}'.*'decoder\.\*' and "
                                              r"'lm_head\.\*' tensors are skipped"):
        Encoder.from_pretrained(folder, backend="numpy")


def test_decoder_and_lm_head_tensors_are_skipped(tmp_path):
    folder = _copy_with(tmp_path, "t5_relu_buckets", add={"lm_head.weight": np.zeros((50, 32), np.float32),
                                                          "decoder.final_layer_norm.weight": np.ones(32, np.float32)})
    reference = dict(np.load(FAMILIES / "t5_relu_buckets" / "reference.npz"))
    assert_matches(Encoder.from_pretrained(folder, backend="numpy"), reference)


def test_encoder_copy_of_the_word_table_is_read_when_shared_is_absent(tmp_path):
    tensors = read_checkpoint(FAMILIES / "t5_relu_buckets")
    folder = _copy_with(tmp_path, "t5_relu_buckets", drop=("shared.weight",),
                        add={"encoder.embed_tokens.weight": np.array(tensors["shared.weight"])})
    reference = dict(np.load(FAMILIES / "t5_relu_buckets" / "reference.npz"))
    assert_matches(Encoder.from_pretrained(folder, backend="numpy"), reference)


def test_a_missing_bias_table_is_named(tmp_path):
    table = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    folder = _copy_with(tmp_path, "t5_relu_buckets", drop=(table,))
    with pytest.raises(CheckpointError, match=f"missing tensor '{table}'"):
        Encoder.from_pretrained(folder, backend="numpy")


# --- config.json ---------------------------------------------------------------------------
def t5_dict(**changes):
    return dict(dict(model_type="t5", vocab_size=50, d_model=32, num_heads=4, d_kv=8, num_layers=2, d_ff=48),
                **changes)


@pytest.mark.parametrize("changes, message", [
    (dict(feed_forward_proj="gated-mish"), "feed_forward_proj 'gated-mish' is not supported"),
    (dict(feed_forward_proj="relu-gated"), "feed_forward_proj 'relu-gated' is not supported"),
    (dict(feed_forward_proj="gated-gelu-new"), "feed_forward_proj 'gated-gelu-new' is not supported"),
    (dict(feed_forward_proj=None), "feed_forward_proj None is not supported"),
    (dict(d_kv=0), "d_kv must be a positive integer"),
    (dict(d_kv=-8), "d_kv must be a positive integer"),
    (dict(d_kv=8.0), "d_kv must be an integer"),
    (dict(feed_forward_proj="gated-gelu", is_gated_act=False), "is_gated_act is False but feed_forward_proj "
                                                               "'gated-gelu' means True"),
    (dict(feed_forward_proj="relu", dense_act_fn="gelu"), "dense_act_fn is 'gelu' but feed_forward_proj 'relu' "
                                                          "means 'relu'"),
    (dict(relative_attention_num_buckets=2), "relative_attention_num_buckets must be an integer of at least 4"),
    (dict(relative_attention_num_buckets=32, relative_attention_max_distance=8),
     "relative_attention_max_distance 8 must exceed relative_attention_num_buckets // 4 = 8"),
    (dict(architectures=["T5ForSequenceClassification"]), "T5ForSequenceClassification classifies the output of "
                                                          "T5's decoder"),
    (dict(is_decoder=True), "decoder configurations"),
])
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        EncoderConfig.from_dict(t5_dict(**changes))


def test_consistent_act_fields_and_aliases_are_read_as_transformers_reads_them():
    config = EncoderConfig.from_dict(t5_dict(feed_forward_proj="gated-gelu", is_gated_act=True,
                                             dense_act_fn="gelu_new", head_dim=16, hidden_size=64))
    assert (config.hidden_act, config.options["gated"], config.head_dim, config.hidden_size) == ("gelu_new", True,
                                                                                                 16, 64)


def test_mt5_small_shapes_need_no_even_split_of_d_model():
    config = EncoderConfig.from_dict(dict(model_type="mt5", n_positions=512))  # mT5-small: 512 / 6 heads of 64
    attention = config.recipe.layers[0].attention()[0]
    assert (attention.num_heads, attention.head_dim, attention.query.out_features) == (6, 64, 384)
    assert (config.hidden_act, config.options["gated"], config.num_hidden_layers) == ("gelu_new", True, 8)


# --- live: transformers itself, where the test extra installed it ------------------------------
def _live():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in make_references.CASES
                                  if c["model_type"] in ("t5", "mt5") and "long" not in c["name"]],
                         ids=lambda case: case["name"])
def test_live_case_matches_transformers(case, backend, tmp_path):
    _live()
    reference = make_references.write_case(case, tmp_path / case["name"])
    assert_matches(load(tmp_path / case["name"], backend), reference)


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (16, 20), (11, 12), (8, 3), (64, 500)])
def test_buckets_agree_with_transformers(num_buckets, max_distance):
    _live()
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    seq = 600
    relative = torch.arange(seq)[None, :] - torch.arange(seq)[:, None]  # key - query, as compute_bias
    theirs = T5Attention._relative_position_bucket(relative, bidirectional=True, num_buckets=num_buckets,
                                                   max_distance=max_distance)
    ours = numpy_model.relative_position_buckets(seq, num_buckets, max_distance)
    np.testing.assert_array_equal(ours, theirs.numpy())



def test_a_sentence_t5_folder_encodes_as_sentence_transformers_live(minilm_dir, tmp_path):
    """sentence-t5's shape, saved by sentence-transformers itself: a T5 encoder, mean pooling,
    a Dense projection without bias or activation, Normalize (with all-MiniLM-L6-v2's
    tokenizer: T5's SentencePiece file is not in the store)."""
    _live()
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    case = next(c for c in make_references.CASES if c["name"] == "t5_relu_buckets")
    case = dict(case, config=dict(case["config"], vocab_size=30522, pad_token_id=0))
    encoder_dir = tmp_path / "t5"
    make_references.build_model(case).save_pretrained(encoder_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(Path(minilm_dir) / name, encoder_dir / name)
    width = case["config"]["d_model"]
    torch.manual_seed(0)
    dense = Dense(width, width, bias=False, activation_function=torch.nn.Identity())
    modules = [Transformer(str(encoder_dir), max_seq_length=128), Pooling(width, "mean"), dense, Normalize()]
    theirs_model = sentence_transformers.SentenceTransformer(modules=modules, device="cpu")
    theirs_model.save(str(tmp_path / "sentence-t5"))
    sentences = ["A man is eating food.", "sentence-t5 projects the mean " * 12, "x"]
    theirs = theirs_model.encode(sentences)
    from transformer.sentence import SentenceEncoder

    for backend in BACKENDS:
        ours = SentenceEncoder.from_pretrained(tmp_path / "sentence-t5", backend=backend)
        assert ours.normalize and ours.pooling_modes == ["mean"]
        assert np.abs(ours.encode(sentences) - theirs).max() <= TOLERANCE, backend
