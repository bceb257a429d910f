"""Regenerate the decoder references committed under tests/references/decoders/ (needs torch +
transformers): tiny random GPT-2 (and later Llama, Qwen, Gemma 3) checkpoints written by
transformers' save_pretrained, and transformers' fp32 eager hidden states on padded batches.

    .venv/bin/python tools/make_decoder_references.py              # rewrite every case
    .venv/bin/python tools/make_decoder_references.py llama        # the cases named llama*
    .venv/bin/python tools/make_decoder_references.py report       # write nothing; our worst max |diff|
    .venv/bin/python tools/make_decoder_references.py report llama numpy   # one family, one backend

What it writes, per case: tests/references/decoders/<case>/config.json, model.safetensors, and
reference.npz holding input_ids, attention_mask [batch, seq] (int64) and transformers'
last_hidden_state [batch, seq, hidden] (after the final norm), and for short cases
hidden_states [layers + 1, batch, seq, hidden] (transformers' last entry is the final-normed
one, as last_hidden_state).

The cases cover both paddings (right, and left as decoders are often batched), lengths from
1 token to 300+, and each family's options. tests/test_family_<family>.py compares both our
backends with these files, and with transformers live where it is installed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "tests" / "references" / "decoders"

_GPT2 = dict(vocab_size=60, n_positions=320, n_embd=32, n_head=4, n_layer=2, bos_token_id=1, eos_token_id=1)

# `lengths`: the real tokens of each row; `padding`: "right" or "left".
CASES = [
    dict(name="gpt2_gelu_new", model_type="gpt2", architecture="GPT2Model", lengths=[17, 9, 1], padding="right",
         config=dict(_GPT2)),
    dict(name="gpt2_left_padding_relu", model_type="gpt2", architecture="GPT2Model", lengths=[13, 4, 17],
         padding="left", config=dict(_GPT2, n_head=2, n_inner=40, activation_function="relu",
                                     layer_norm_epsilon=1e-6)),
    dict(name="gpt2_long_inverse_layer_scale", model_type="gpt2", architecture="GPT2LMHeadModel",
         lengths=[307, 60], padding="right",
         config=dict(_GPT2, n_head=8, n_layer=3, scale_attn_by_inverse_layer_idx=True)),
    dict(name="gpt2_one_token_unscaled", model_type="gpt2", architecture="GPT2Model", lengths=[1], padding="right",
         config=dict(_GPT2, n_head=1, n_layer=1, scale_attn_weights=False, activation_function="gelu")),
]

_LLAMA = dict(vocab_size=60, max_position_embeddings=320, hidden_size=32, intermediate_size=48,
              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=1,
              rms_norm_eps=1e-5)


def _rope(kind="default", theta=10000.0, **settings):
    return dict(rope_type=kind, rope_theta=theta, **settings)


CASES += [
    dict(name="llama_gqa_llama3_rope", model_type="llama", architecture="LlamaModel", lengths=[17, 9, 1],
         padding="right", config=dict(_LLAMA, rope_parameters=_rope(
             "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64))),
    dict(name="llama_mha_biases_linear_rope_left", model_type="llama", architecture="LlamaForCausalLM",
         lengths=[13, 4, 17], padding="left",
         config=dict(_LLAMA, num_key_value_heads=4, head_dim=16, attention_bias=True, mlp_bias=True,
                     tie_word_embeddings=True, rope_parameters=_rope("linear", theta=500.0, factor=2.0))),
    dict(name="llama_yarn_long", model_type="llama", architecture="LlamaModel", lengths=[309, 40], padding="right",
         config=dict(_LLAMA, num_key_value_heads=1, rope_parameters=_rope(
             "yarn", factor=4.0, original_max_position_embeddings=80))),
    dict(name="llama_dynamic_rope_gelu", model_type="llama", architecture="LlamaModel", lengths=[1, 17],
         padding="right", config=dict(_LLAMA, hidden_act="gelu", rope_parameters=_rope("dynamic", factor=2.0))),
    dict(name="mistral_window_5", model_type="mistral", architecture="MistralModel", lengths=[37, 17, 1],
         padding="right", config=dict(_LLAMA, num_key_value_heads=1, sliding_window=5)),
    dict(name="mistral_window_64_long", model_type="mistral", architecture="MistralModel", lengths=[301, 20],
         padding="left", config=dict(_LLAMA, sliding_window=64, rope_parameters=_rope(theta=1e6))),
]

_GEMMA = dict(vocab_size=60, max_position_embeddings=320, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12, sliding_window=6,
              layer_types=["sliding_attention", "full_attention", "sliding_attention"], bos_token_id=2, eos_token_id=1,
              pad_token_id=0, rms_norm_eps=1e-6)

CASES += [
    dict(name="qwen2_biases_window_layers", model_type="qwen2", architecture="Qwen2Model", lengths=[37, 17, 1],
         padding="right", config=dict(_LLAMA, use_sliding_window=True, sliding_window=6, max_window_layers=1)),
    dict(name="qwen2_long_left", model_type="qwen2", architecture="Qwen2ForCausalLM", lengths=[303, 9],
         padding="left", config=dict(_LLAMA, num_key_value_heads=1, rope_parameters=_rope(theta=1e6))),
    dict(name="qwen3_qk_norm_gqa", model_type="qwen3", architecture="Qwen3Model", lengths=[17, 9, 1],
         padding="right", config=dict(_LLAMA, head_dim=16)),
    dict(name="qwen3_long_left_tied", model_type="qwen3", architecture="Qwen3ForCausalLM", lengths=[300, 17],
         padding="left", config=dict(_LLAMA, head_dim=8, num_key_value_heads=1, tie_word_embeddings=True,
                                     attention_bias=True)),
    dict(name="qwen3_yarn_relu", model_type="qwen3", architecture="Qwen3Model", lengths=[40, 3],
         padding="right", config=dict(_LLAMA, hidden_act="relu", rope_parameters=_rope(
             "yarn", factor=2.0, original_max_position_embeddings=16, beta_fast=8.0, beta_slow=2.0))),
    dict(name="gemma3_text_local_global", model_type="gemma3_text", architecture="Gemma3TextModel",
         lengths=[17, 9, 1], padding="right", config=dict(_GEMMA)),
    dict(name="gemma3_text_long_left", model_type="gemma3_text", architecture="Gemma3ForCausalLM",
         lengths=[301, 30], padding="left", config=dict(_GEMMA, sliding_window=32)),
    dict(name="gemma3_text_bidirectional", model_type="gemma3_text", architecture="Gemma3TextModel",
         lengths=[23, 12, 1], padding="right", config=dict(_GEMMA, use_bidirectional_attention=True)),
    dict(name="gemma3_text_bidirectional_long", model_type="gemma3_text", architecture="Gemma3TextModel",
         lengths=[305, 64], padding="right",
         config=dict(_GEMMA, use_bidirectional_attention=True, sliding_window=40, query_pre_attn_scalar=8,
                     rope_parameters={"sliding_attention": _rope(theta=10000.0),
                                      "full_attention": _rope("linear", theta=1e6, factor=8.0)})),
]

# Cases whose per-layer hidden states are committed too (the long ones keep the last only).
HIDDEN_STATES_UP_TO = 40


def only(prefix):
    """The cases of one family (their names start with `prefix`)."""
    return [case for case in CASES if case["name"].startswith(prefix)]


def build_model(case, seed=0):
    """A transformers model for `case`, eager attention, every parameter drawn at random.

    As tools/make_references.py explains: linear weights std 1/sqrt(fan_in) so activations
    stay near unit scale and attention is far from uniform; norm weights 1 + N(0, 0.2)
    (Gemma's, which scale by 1 + w: N(0, 0.2)) and biases N(0, 0.1), so that every parameter
    matters; embedding tables std 1/sqrt(width).
    GPT-2's Conv1D weights are stored [in, out]: their fan-in is the first axis.
    """
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(case["model_type"], **case["config"])
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, case["architecture"])(config).eval()
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return std * torch.randn(shape, generator=generator)

    conv1d = (transformers.pytorch_utils.Conv1D,)
    in_out = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, conv1d)}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                is_norm_weight = name.endswith("weight")
                # Gemma's norms scale by (1 + w): its weights are centred on 0, not 1
                one = 1.0 if is_norm_weight and not case["model_type"].startswith("gemma") else 0.0
                fill = one + normal(parameter.shape, 0.2 if is_norm_weight else 0.1)
            elif name in in_out:
                fill = normal(parameter.shape, parameter.shape[0] ** -0.5)  # Conv1D [in, out]
            else:
                fill = normal(parameter.shape, parameter.shape[1] ** -0.5)  # linear [out, in], tables [rows, width]
            parameter.copy_(fill)
    return model


def make_inputs(case, seed=0):
    """Random ids (never the pad id 0) for the case's lengths, padded with 0 on its side."""
    rng = np.random.default_rng(seed)
    lengths = case["lengths"]
    seq = max(lengths)
    vocab = case["config"]["vocab_size"]
    input_ids = np.zeros((len(lengths), seq), dtype=np.int64)
    attention_mask = np.zeros((len(lengths), seq), dtype=np.int64)
    for row, length in enumerate(lengths):
        real = slice(seq - length, seq) if case["padding"] == "left" else slice(0, length)
        input_ids[row, real] = rng.integers(1, vocab, size=length)
        attention_mask[row, real] = 1
    return input_ids, attention_mask


def run_transformers(model, input_ids, attention_mask):
    """transformers' hidden states for one batch (the base model's, under a task model)."""
    import torch

    base = getattr(model, model.base_model_prefix, model)
    with torch.no_grad():
        out = base(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                   output_hidden_states=True)
    return {"last_hidden_state": out.last_hidden_state.numpy(),
            "hidden_states": np.stack([h.numpy() for h in out.hidden_states])}


def write_case(case, directory, seed=0):
    """Build, save (config.json + model.safetensors) and run one case; returns its reference dict."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    model = build_model(case, seed)
    model.save_pretrained(directory)
    input_ids, attention_mask = make_inputs(case, seed)
    reference = dict(input_ids=input_ids, attention_mask=attention_mask)
    reference.update(run_transformers(model, input_ids, attention_mask))
    return reference


def write_references(cases=CASES):
    REFERENCES.mkdir(parents=True, exist_ok=True)
    for case in cases:
        reference = write_case(case, REFERENCES / case["name"])
        if max(case["lengths"]) > HIDDEN_STATES_UP_TO:
            del reference["hidden_states"]
        np.savez_compressed(REFERENCES / case["name"] / "reference.npz", **reference)
        print(f"wrote {case['name']}")


def report(cases=CASES, backends=("numpy", "numba")):
    """Every case live against transformers, both backends: the worst max |diff| over the real
    tokens, divided by the largest |value| when above 1 (tests/decoder_cases.py's measure)."""
    import tempfile

    from transformer.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            reference = write_case(case, Path(tmp) / case["name"])
            mask = reference["attention_mask"].astype(bool)
            diffs = []
            for backend in backends:
                out = Encoder.from_pretrained(Path(tmp) / case["name"], backend=backend)(
                    reference["input_ids"], reference["attention_mask"])
                scale = max(1.0, float(np.abs(reference["last_hidden_state"][mask]).max()))
                diffs.append(float(np.abs(out.last_hidden_state - reference["last_hidden_state"])[mask].max()) / scale)
            print(f"{case['name']:36s} " + "  ".join(f"{b} {d:.1e}" for b, d in zip(backends, diffs)) +
                  f"  (|hidden| up to {np.abs(reference['last_hidden_state'][mask]).max():.1f})")


if __name__ == "__main__":
    # [report] [family name prefix] [backend ...]
    arguments = sys.argv[1:]
    reporting = arguments[:1] == ["report"]
    arguments = arguments[1:] if reporting else arguments
    cases = only(arguments[0]) if arguments else CASES
    if not cases:
        raise SystemExit(__doc__)
    if reporting:
        report(cases, tuple(arguments[1:]) or ("numpy", "numba"))
    else:
        write_references(cases)
