"""docs/architecture.md's recipes cannot rot, and the backends refuse what they cannot run.

The page shows BERT's recipe beside ModernBERT's and Llama's, as code. The code runs here:
BERT's and ModernBERT's must be the recipes their family modules make (and both backends run
them); Llama's must build (from its real config's numbers) and be refused by both backends,
by name.
"""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from transformer import model, recipe
from transformer.config import EncoderConfig

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def recipes():
    """The page's recipe functions: {"bert_recipe": ..., "modernbert_recipe": ..., "llama_recipe": ...}."""
    namespace = {name: getattr(recipe, name) for name in dir(recipe) if not name.startswith("_")}
    for code in FENCE.findall(ARCHITECTURE.read_text()):
        if "_recipe(config)" in code:
            exec(code, namespace)
    return namespace


def modernbert_base():
    """ModernBERT-base's numbers (answerdotai/ModernBERT-base config.json, as transformers reads it)."""
    return SimpleNamespace(
        hidden_size=768, intermediate_size=1152, layer_norm_eps=1e-5, num_attention_heads=12, head_dim=64,
        num_hidden_layers=22, hidden_act="gelu",
        options=dict(layer_types=["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(22)],
                     local_attention=128, rope_theta={"full_attention": 160000.0, "sliding_attention": 10000.0},
                     norm_bias=False, attention_bias=False, mlp_bias=False))


def llama_32_1b():
    """Llama-3.2-1B's numbers."""
    scaling = (("factor", 32.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
               ("original_max_position_embeddings", 8192), ("rope_type", "llama3"))
    return SimpleNamespace(
        hidden_size=2048, intermediate_size=8192, layer_norm_eps=1e-5, num_attention_heads=32, num_hidden_layers=16,
        hidden_act="silu",
        options=dict(num_key_value_heads=8, head_dim=64, rope_theta=500000.0, rope_scaling=scaling,
                     sliding_window=None))


def test_the_pages_bert_recipe_is_the_bert_familys(recipes):
    config = EncoderConfig.from_dict(dict(model_type="bert", hidden_size=768, num_attention_heads=12,
                                          num_hidden_layers=12, intermediate_size=3072))
    assert recipes["bert_recipe"](config) == config.recipe


def test_modernbert_recipe_alternates_global_and_windowed_rotary_attention(recipes):
    built = recipes["modernbert_recipe"](modernbert_base())
    assert len(built.layers) == 22 and built.final_norm.name == "final_norm"
    attention = [layer.attention()[0] for layer in built.layers]
    assert [a.mask.window for a in attention[:4]] == [None, 128, 128, None]
    assert [a.positions.theta for a in attention[:4]] == [160000.0, 10000.0, 10000.0, 160000.0]
    assert built.layers[0].blocks[0].norm_before is None  # the embeddings' norm serves the first layer
    assert built.layers[1].blocks[0].norm_before.name == "attention_norm"
    mlp = built.layers[0].blocks[1].sublayer
    assert mlp.gate is not None and not mlp.gate.bias and mlp.activation == "gelu"


def test_llama_recipe_is_causal_grouped_query_pre_rms_norm(recipes):
    built = recipes["llama_recipe"](llama_32_1b())
    attention = built.layers[0].attention()[0]
    assert (attention.num_heads, attention.kv_heads, attention.key.out_features) == (32, 8, 512)
    assert attention.mask == recipe.Mask(causal=True) and isinstance(attention.positions, recipe.Rotary)
    assert all(block.norm_before.kind == "rms_norm" for block in built.layers[0].blocks)
    assert built.embeddings.positions is None and built.final_norm.kind == "rms_norm"


def test_the_pages_modernbert_recipe_is_the_modernbert_familys_and_both_backends_run_it(recipes):
    from transformer.numba_backend import program

    config = EncoderConfig.from_dict(dict(model_type="modernbert", vocab_size=50368, pad_token_id=50283))
    built = recipes["modernbert_recipe"](config)
    assert built == config.recipe == recipes["modernbert_recipe"](modernbert_base())
    model.check_recipe(built)
    program.check_recipe(built)


def test_the_pages_llama_recipe_runs_on_both_backends(recipes):
    from transformer.numba_backend import program

    built = recipes["llama_recipe"](llama_32_1b())
    model.check_recipe(built)
    program.check_recipe(built)


def test_both_backends_refuse_a_recipe_step_they_do_not_run_by_name(recipes):
    from dataclasses import replace

    from transformer.numba_backend import program

    built = recipes["llama_recipe"](llama_32_1b())
    attention = built.layers[0].blocks[0].sublayer
    interleaved = replace(attention, positions=replace(attention.positions, interleaved=True))
    layer = replace(built.layers[0], blocks=(replace(built.layers[0].blocks[0], sublayer=interleaved),
                                             *built.layers[0].blocks[1:]))
    with pytest.raises(NotImplementedError, match="the numpy backend does not implement interleaved rotary"):
        model.check_recipe(replace(built, layers=(layer,)))
    normed = replace(attention, query_norm=recipe.Norm("q", 64), key_norm=recipe.Norm("k", 64))  # LayerNorms
    layer = replace(built.layers[0], blocks=(replace(built.layers[0].blocks[0], sublayer=normed),
                                             *built.layers[0].blocks[1:]))
    with pytest.raises(NotImplementedError, match="the numba backend does not implement query/key norms other than"):
        program.check_recipe(replace(built, layers=(layer,)))


def test_the_pages_bert_program_is_what_the_numba_backend_compiles():
    from transformer.encoder import Encoder
    from transformer.kernels.program import describe

    prepared = Encoder.from_pretrained(Path(__file__).parent / "references" / "families" / "bert_gelu",
                                       backend="numba")._weights
    listing = describe(prepared.program, linear_names=[linear.name for linear in prepared.stack.layout.linears])
    page = ARCHITECTURE.read_text()
    assert "\n".join("    " + line for line in listing.splitlines()) in page
