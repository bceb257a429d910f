"""Write the committed ModernBERT references under tests/references/families/ (needs torch +
transformers: the test extra).

Run from the repository root, in the venv with the test extras (`make setup-test`):

    .venv/bin/python tests/make_modern_references.py

Each case is a tiny randomly initialised checkpoint written by `transformers`' own
save_pretrained (config.json, model.safetensors) and reference.npz: input_ids,
attention_mask, token_type_ids [batch, seq] (int64) and transformers' fp32 eager outputs on
that padded batch: last_hidden_state; for base models hidden_states [layers + 1, batch, seq,
hidden] and attentions [layers, batch, heads, seq, seq]; for head models logits.
tests/test_families.py compares the NumPy backend with them, tests/test_family_modernbert.py
both backends; tests/test_family_modernbert.py's live tests rebuild every case and compare
against transformers directly. Made with torch 2.13.0, transformers 5.24.0.
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

# `lengths`: each row's real tokens (padded to the longest); `hidden_states`: whether the
# committed file keeps every layer's output and attention map (base models).
CASES = [
    # global, local, local: a window of 8 (4 either side) on rows of 17, 9 and 1 tokens; the
    # default thetas (160000 global, 10000 local), GeGLU, no biases
    dict(name="modernbert_gelu_window", architecture="ModernBertModel", lengths=[17, 9, 1], hidden_states=True,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=3, intermediate_size=48,
                     hidden_activation="gelu", local_attention=8, global_attn_every_n_layers=3)),
    # every bias on, layer_types given, both thetas set, SwiGLU, the masked-LM head (tied decoder)
    dict(name="modernbert_biases_masked_lm", architecture="ModernBertForMaskedLM", lengths=[13, 6],
         hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=40,
                     hidden_activation="silu", norm_bias=True, attention_bias=True, mlp_bias=True,
                     classifier_bias=True, decoder_bias=True, classifier_activation="gelu",
                     layer_types=["sliding_attention", "full_attention"], local_attention=6,
                     rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5000.0},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 300.0}})),
    # sequence classification pooling the mean of the real tokens
    dict(name="modernbert_sequence_classification_mean", architecture="ModernBertForSequenceClassification",
         lengths=[17, 5, 1], hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48,
                     local_attention=4, global_attn_every_n_layers=2, classifier_pooling="mean", num_labels=3,
                     classifier_activation="silu")),
    # sequence classification of the first token, gelu_pytorch_tanh GLU
    dict(name="modernbert_sequence_classification_cls", architecture="ModernBertForSequenceClassification",
         lengths=[11, 8], hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48,
                     hidden_activation="gelu_pytorch_tanh", local_attention=4, classifier_pooling="cls",
                     num_labels=2)),
    dict(name="modernbert_token_classification", architecture="ModernBertForTokenClassification",
         lengths=[15, 7], hidden_states=False,
         config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                     local_attention=6, num_labels=4, classifier_bias=True)),
    # a long input on a tiny model: 1030 tokens, a 64-token window, positions past 1024
    dict(name="modernbert_long_1030", architecture="ModernBertModel", lengths=[1030, 17], hidden_states=False,
         config=dict(_TINY, max_position_embeddings=2048, hidden_size=16, num_attention_heads=2,
                     num_hidden_layers=2, intermediate_size=32, local_attention=64,
                     global_attn_every_n_layers=2)),
]


def build_model(case, seed=0):
    """The transformers model of `case`, eager attention, every parameter drawn at random with
    activations near unit scale (std 1 / sqrt(fan_in)), norms' weights near 1: transformers'
    own init (std 0.02) would leave attention nearly uniform and test little."""
    import torch
    import transformers

    config = transformers.ModernBertConfig(**case["config"])
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, case["architecture"])(config).eval()
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return std * torch.randn(shape, generator=generator)

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                fill = (1.0 if name.endswith("weight") else 0.0) + normal(parameter.shape, 0.2)
            elif name.endswith("bias"):
                fill = normal(parameter.shape, 0.1)
            else:  # linears [out, in] and the word table [rows, width]
                fill = normal(parameter.shape, parameter.shape[1] ** -0.5)
            parameter.copy_(fill)
    return model


def make_inputs(case, config, seed=0):
    """Random non-padding ids for the case's `lengths`, right-padded with pad_token_id."""
    rng = np.random.default_rng(seed)
    lengths = case["lengths"]
    input_ids = np.full((len(lengths), max(lengths)), config.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    real_ids = np.array([i for i in range(config.vocab_size) if i != config.pad_token_id])
    for row, length in enumerate(lengths):
        input_ids[row, :length] = rng.choice(real_ids, size=length)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask, np.zeros_like(input_ids)


def run_transformers(model, input_ids, attention_mask):
    """transformers' outputs as float32 arrays (last_hidden_state after the final norm)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                    output_hidden_states=True, output_attentions=True)
        base = model if isinstance(model, type(model.base_model)) else model.base_model
        last = base(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
    result = {
        "last_hidden_state": last.last_hidden_state.numpy(),
        "hidden_states": np.stack([h.numpy() for h in out.hidden_states]),
        "attentions": np.stack([a.numpy() for a in out.attentions]),
    }
    if getattr(out, "logits", None) is not None:
        result["logits"] = out.logits.numpy()
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
    reference.update(run_transformers(model, input_ids, attention_mask))
    return reference


def main(names=()):
    for case in CASES:
        if names and case["name"] not in names:
            continue
        reference = write_case(case, FAMILIES / case["name"])
        if not case["hidden_states"]:
            del reference["hidden_states"], reference["attentions"]
        np.savez_compressed(FAMILIES / case["name"] / "reference.npz", **reference)
        print(f"wrote {case['name']}")


if __name__ == "__main__":
    main(sys.argv[1:])
