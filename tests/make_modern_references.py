"""Write the committed ModernBERT, NomicBERT, Jina v3 and T5 references under tests/references/families/
(needs torch + transformers: the test extra).

Run from the repository root, in the venv with the test extras (`make setup-test`):

    .venv/bin/python tests/make_modern_references.py                # every case
    .venv/bin/python tests/make_modern_references.py nomic_bert_long  # the cases named

Each case is a tiny randomly initialised checkpoint written by `transformers`' own
save_pretrained (config.json, model.safetensors) and reference.npz: input_ids,
attention_mask, token_type_ids [batch, seq] (int64) and transformers' fp32 eager outputs on
that padded batch: last_hidden_state; for base models hidden_states [layers + 1, batch, seq,
hidden] and attentions [layers, batch, heads, seq, seq]; for head models logits.
tests/test_families.py compares the NumPy backend with them, tests/test_family_modernbert.py
(and test_family_nomic_bert.py) both backends; their live tests rebuild every case and
compare against transformers directly. Made with torch 2.13.0, transformers 5.24.0.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ROOT / "tests" / "references" / "families"

# Small ids for the special tokens: ModernBertConfig's defaults (50281...) are outside a
# 50-word vocabulary.
_TINY = dict(vocab_size=50, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
             max_position_embeddings=64)
_NOMIC = dict(vocab_size=50, pad_token_id=0, max_position_embeddings=64)
_JINA = dict(vocab_size=50, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=64)
_T5 = dict(vocab_size=50, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)

# `lengths`: each row's real tokens (padded to the longest); `hidden_states`: whether the
# committed file keeps every layer's output and attention map (base models).
CASES = [
    # global, local, local: a window of 8 (4 either side) on rows of 17, 9 and 1 tokens; the
    # default thetas (160000 global, 10000 local), GeGLU, no biases
    dict(model_type="modernbert", name="modernbert_gelu_window", architecture="ModernBertModel", lengths=[17, 9, 1], hidden_states=True,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=3, intermediate_size=48,
                     hidden_activation="gelu", local_attention=8, global_attn_every_n_layers=3)),
    # every bias on, layer_types given, both thetas set, SwiGLU, the masked-LM head (tied decoder)
    dict(model_type="modernbert", name="modernbert_biases_masked_lm", architecture="ModernBertForMaskedLM", lengths=[13, 6],
         hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=40,
                     hidden_activation="silu", norm_bias=True, attention_bias=True, mlp_bias=True,
                     classifier_bias=True, decoder_bias=True, classifier_activation="gelu",
                     layer_types=["sliding_attention", "full_attention"], local_attention=6,
                     rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5000.0},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 300.0}})),
    # sequence classification pooling the mean of the real tokens
    dict(model_type="modernbert", name="modernbert_sequence_classification_mean", architecture="ModernBertForSequenceClassification",
         lengths=[17, 5, 1], hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48,
                     local_attention=4, global_attn_every_n_layers=2, classifier_pooling="mean", num_labels=3,
                     classifier_activation="silu")),
    # sequence classification of the first token, gelu_pytorch_tanh GLU
    dict(model_type="modernbert", name="modernbert_sequence_classification_cls", architecture="ModernBertForSequenceClassification",
         lengths=[11, 8], hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48,
                     hidden_activation="gelu_pytorch_tanh", local_attention=4, classifier_pooling="cls",
                     num_labels=2)),
    dict(model_type="modernbert", name="modernbert_token_classification", architecture="ModernBertForTokenClassification",
         lengths=[15, 7], hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                     local_attention=6, num_labels=4, classifier_bias=True)),
    # a long input on a tiny model: 1030 tokens, a 64-token window, positions past 1024
    dict(model_type="modernbert", name="modernbert_long_1030", architecture="ModernBertModel", lengths=[1030, 17],
         hidden_states=False,
         config=dict(_TINY, max_position_embeddings=2048, hidden_size=16, num_attention_heads=2,
                     num_hidden_layers=2, intermediate_size=32, local_attention=64,
                     global_attn_every_n_layers=2)),
    # NomicBERT: post-norm BERT layers, rotary (theta 1000 by default), SwiGLU, bias-free linears
    dict(model_type="nomic_bert", name="nomic_bert_swiglu", architecture="NomicBertModel", lengths=[17, 9, 1],
         hidden_states=True,
         config=dict(_NOMIC, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                     hidden_act="silu")),
    dict(model_type="nomic_bert", name="nomic_bert_masked_lm", architecture="NomicBertForMaskedLM", lengths=[13, 6],
         hidden_states=False,
         config=dict(_NOMIC, hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=48,
                     hidden_act="gelu", rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    dict(model_type="nomic_bert", name="nomic_bert_sequence_classification",
         architecture="NomicBertForSequenceClassification", lengths=[11, 4], hidden_states=False,
         config=dict(_NOMIC, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                     num_labels=3)),
    dict(model_type="nomic_bert", name="nomic_bert_token_classification", architecture="NomicBertForTokenClassification",
         lengths=[15, 7], hidden_states=False,
         config=dict(_NOMIC, hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=40,
                     num_labels=4)),
    dict(model_type="nomic_bert", name="nomic_bert_long_1030", architecture="NomicBertModel", lengths=[1030, 17],
         hidden_states=False,
         config=dict(_NOMIC, max_position_embeddings=2048, hidden_size=16, num_attention_heads=2,
                     num_hidden_layers=2, intermediate_size=32)),
    # Jina v3 (transformers' port): post-norm, rotary (theta 20000 by default), biases, plain GELU MLP
    dict(model_type="jina_embeddings_v3", name="jina_v3_gelu", architecture="JinaEmbeddingsV3Model",
         lengths=[17, 9, 1], hidden_states=True,
         config=dict(_JINA, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40)),
    dict(model_type="jina_embeddings_v3", name="jina_v3_masked_lm", architecture="JinaEmbeddingsV3ForMaskedLM",
         lengths=[13, 6], hidden_states=False,
         config=dict(_JINA, hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=48,
                     hidden_act="gelu_new", rope_parameters={"rope_type": "default", "rope_theta": 5000.0})),
    dict(model_type="jina_embeddings_v3", name="jina_v3_sequence_classification",
         architecture="JinaEmbeddingsV3ForSequenceClassification", lengths=[11, 4], hidden_states=False,
         config=dict(_JINA, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                     num_labels=3)),
    dict(model_type="jina_embeddings_v3", name="jina_v3_token_classification",
         architecture="JinaEmbeddingsV3ForTokenClassification", lengths=[15, 7], hidden_states=False,
         config=dict(_JINA, hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=40,
                     num_labels=4, type_vocab_size=2)),
    dict(model_type="jina_embeddings_v3", name="jina_v3_long_1030", architecture="JinaEmbeddingsV3Model",
         lengths=[1030, 17], hidden_states=False,
         config=dict(_JINA, max_position_embeddings=2048, hidden_size=16, num_attention_heads=2,
                     num_hidden_layers=2, intermediate_size=32)),
    # T5's encoder: heads of d_kv 12 (4 * 12 != d_model 32), 16 buckets reaching distance 20
    # (rows of 17 see past it), ReLU (t5 v1.0, sentence-t5)
    dict(model_type="t5", name="t5_relu_buckets", architecture="T5EncoderModel", lengths=[17, 9, 1],
         hidden_states=True,
         config=dict(_T5, d_model=32, num_heads=4, d_kv=12, num_layers=2, d_ff=48, feed_forward_proj="relu",
                     relative_attention_num_buckets=16, relative_attention_max_distance=20)),
    # gated-gelu (t5 v1.1, flan, GTR): gelu_new(wi_0) * wi_1; an odd bucket count, 10 buckets to 12
    dict(model_type="t5", name="t5_gated_gelu", architecture="T5EncoderModel", lengths=[13, 6, 17],
         hidden_states=True,
         config=dict(_T5, d_model=24, num_heads=2, d_kv=16, num_layers=3, d_ff=40, feed_forward_proj="gated-gelu",
                     relative_attention_num_buckets=11, relative_attention_max_distance=12, layer_norm_epsilon=1e-5)),
    # mT5 with a gated SiLU, loaded from a full encoder-decoder checkpoint (its decoder skipped)
    dict(model_type="mt5", name="mt5_gated_silu_full_checkpoint", architecture="MT5ForConditionalGeneration",
         lengths=[11, 4], hidden_states=True,
         config=dict(_T5, d_model=32, num_heads=2, d_kv=8, num_layers=2, num_decoder_layers=1, d_ff=40,
                     feed_forward_proj="gated-silu", relative_attention_num_buckets=8,
                     relative_attention_max_distance=16)),
    dict(model_type="t5", name="t5_token_classification", architecture="T5ForTokenClassification", lengths=[15, 7],
         hidden_states=False,
         config=dict(_T5, d_model=32, num_heads=2, d_kv=16, num_layers=2, d_ff=48, num_labels=4,
                     relative_attention_num_buckets=16, relative_attention_max_distance=32)),
    # 330 tokens, far beyond max_distance 64: the last buckets shared by every long distance
    dict(model_type="t5", name="t5_long_330", architecture="T5EncoderModel", lengths=[330, 17], hidden_states=False,
         config=dict(_T5, d_model=16, num_heads=2, d_kv=8, num_layers=2, d_ff=32, feed_forward_proj="gated-gelu",
                     relative_attention_num_buckets=24, relative_attention_max_distance=64)),
    # 1030 tokens, far beyond max_distance 256 and past 1024, beside rows of 17 and 1
    dict(model_type="t5", name="t5_long_1030", architecture="T5EncoderModel", lengths=[1030, 17, 1],
         hidden_states=False,
         config=dict(_T5, d_model=16, num_heads=2, d_kv=8, num_layers=2, d_ff=32, feed_forward_proj="relu",
                     relative_attention_num_buckets=20, relative_attention_max_distance=256)),
]


def build_model(case, seed=0):
    """The transformers model of `case`, eager attention, every parameter drawn at random with
    activations near unit scale (std 1 / sqrt(fan_in)), norms' weights near 1: transformers'
    own init (std 0.02) would leave attention nearly uniform and test little."""
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(case["model_type"], **case["config"])
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, case["architecture"])(config).eval()
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return std * torch.randn(shape, generator=generator)

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name.lower():
                fill = (1.0 if name.endswith("weight") else 0.0) + normal(parameter.shape, 0.2)
            elif name.endswith("bias"):
                fill = normal(parameter.shape, 0.1)
            else:  # linears [out, in] and the word table [rows, width]
                fill = normal(parameter.shape, parameter.shape[1] ** -0.5)
                if name.endswith("Attention.q.weight"):
                    # T5 does not scale q . k by 1 / sqrt(d_kv): its init puts that factor into the
                    # query weights. Without it the scores' spread grows as sqrt(d_kv) and the
                    # softmax so amplifies rounding that fp32 transformers itself strays 1.6e-5
                    # from a float64 run.
                    fill = fill * model.config.d_kv ** -0.5
            parameter.copy_(fill)
    return model


def make_inputs(case, config, seed=0):
    """Random non-padding ids for the case's `lengths`, right-padded with pad_token_id."""
    rng = np.random.default_rng(seed)
    lengths = case["lengths"]
    input_ids = np.full((len(lengths), max(lengths)), config.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    real_ids = np.array([i for i in range(config.vocab_size) if i != config.pad_token_id])
    token_type_ids = np.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = rng.choice(real_ids, size=length)
        attention_mask[row, :length] = 1
        if getattr(config, "type_vocab_size", 1) > 1:  # a sentence pair: the second half is type 1
            token_type_ids[row, length // 2:length] = 1
    return input_ids, attention_mask, token_type_ids


def run_transformers(model, input_ids, attention_mask, token_type_ids):
    """transformers' outputs as float32 arrays (last_hidden_state after ModernBERT's final norm)."""
    import torch

    inputs = dict(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
    if model.config.model_type in ("nomic_bert", "jina_embeddings_v3"):
        inputs["token_type_ids"] = torch.from_numpy(token_type_ids)
    # an encoder-decoder checkpoint (T5ForConditionalGeneration): what this package runs is its encoder
    forward = model.get_encoder() if getattr(model, "decoder", None) is not None else model
    with torch.no_grad():
        out = forward(**inputs, output_hidden_states=True, output_attentions=True)
        last = forward(**inputs) if forward is not model else model.base_model(**inputs)
    result = {
        "last_hidden_state": last.last_hidden_state.numpy(),
        "hidden_states": np.stack([h.numpy() for h in out.hidden_states]),
        "attentions": np.stack([a.numpy() for a in out.attentions]),
    }
    if getattr(out, "logits", None) is not None:
        result["logits"] = out.logits.numpy()
    if getattr(last, "pooler_output", None) is not None:
        result["pooler_output"] = last.pooler_output.numpy()
    return result


def write_case(case, directory, seed=0):
    """Build, save (config.json + model.safetensors) and run one case; returns its reference dict."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    model = build_model(case, seed)
    model.save_pretrained(directory)
    input_ids, attention_mask, token_type_ids = make_inputs(case, model.config, seed)
    reference = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    reference.update(run_transformers(model, input_ids, attention_mask, token_type_ids))
    return reference


def assert_matches(model, reference, tolerance=1e-5):
    """Our `model` (a transformer.encoder.Encoder) gives every output of `reference` within
    `tolerance` over the real tokens; the numba backend runs every layer in one call, and
    layer by layer for the hidden states, so both ways are checked."""
    real = reference["attention_mask"].astype(bool)
    inputs = reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]
    alone = model(*inputs)
    assert np.abs(alone.last_hidden_state - reference["last_hidden_state"])[real].max() <= tolerance
    out = model(*inputs, output_hidden_states=True)
    assert out.last_hidden_state.dtype == np.float32
    assert np.abs(out.last_hidden_state - reference["last_hidden_state"])[real].max() <= tolerance
    if "hidden_states" in reference:
        assert len(out.hidden_states) == len(reference["hidden_states"])
        for ours, theirs in zip(out.hidden_states, reference["hidden_states"]):
            assert np.abs(ours - theirs)[real].max() <= tolerance
    if "pooler_output" in reference:
        assert np.abs(out.pooler_output - reference["pooler_output"]).max() <= tolerance
    if "logits" in reference:
        logits, expected = out.logits, reference["logits"]
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        if logits.shape[:2] == real.shape:  # per-token heads: the real tokens
            logits, expected = logits[real], expected[real]
        assert np.abs(logits - expected).max() <= tolerance


def main(names=()):
    for case in CASES:
        if names and not any(case["name"].startswith(name) for name in names):
            continue
        reference = write_case(case, FAMILIES / case["name"])
        if not case["hidden_states"]:
            del reference["hidden_states"], reference["attentions"]
        np.savez_compressed(FAMILIES / case["name"] / "reference.npz", **reference)
        print(f"wrote {case['name']}")


if __name__ == "__main__":
    main(sys.argv[1:])
