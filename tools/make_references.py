"""Regenerate the encoder references committed under tests/references/ (needs torch + transformers).

The core tests compare our NumPy encoder with these files, so they run without torch. Every
expected number in them was computed by Hugging Face `transformers` (fp32, eager attention);
every input id by the Rust `tokenizers` (never by this package's tokenizer).

Run from the repository root, in the venv that has the test extras (`make setup-test`):

    .venv/bin/python tools/make_references.py            # rewrite everything below
    .venv/bin/python tools/make_references.py families   # only the random family checkpoints
    .venv/bin/python tools/make_references.py families deberta   # only the cases named deberta*
    .venv/bin/python tools/make_references.py real       # only all-MiniLM-L6-v2 / all-mpnet-base-v2
    .venv/bin/python tools/make_references.py report     # write nothing; print our worst max |diff|
                                                         # per family against live transformers

What it writes:

    tests/references/families/<case>/config.json, model.safetensors
        a tiny randomly initialised checkpoint written by transformers' save_pretrained
    tests/references/families/<case>/reference.npz
        input_ids, attention_mask, token_type_ids [batch, seq] (int64) and transformers' outputs:
        last_hidden_state; for base models (XModel) pooler_output (where there is a pooler),
        hidden_states [layers + 1, batch, seq, hidden], attentions [layers, batch, heads, seq, seq];
        for head models logits
    tests/references/<model>.npz  (all-MiniLM-L6-v2, all-mpnet-base-v2; the real weights come
        from weights/, fetched by `make test`)
        sentences, and per padded batch b (all of them for MiniLM, the first 3 for MPNet;
        see REAL_MODELS): input_ids_b, attention_mask_b, token_type_ids_b,
        last_hidden_state_b (only the non-padding tokens, [tokens, hidden], to keep the file
        small) and pooler_output_b

Versions: the references were made with torch 2.13.0, transformers 5.24.0, tokenizers 0.23.3
(the test extra pins them). The live tests (tests/test_families_live.py) reuse FAMILY_CASES,
LIVE_CASES and SENTENCES from here to compare against transformers directly.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "tests" / "references"

# ---------------------------------------------------------------------------------------
# The cases. `config` is passed to transformers' config class for `model_type`; `lengths` are
# the real token counts of the batch (padded to the longest; 0 = an all-padding row).
# Committed cases stay tiny (tens of KB); LIVE_CASES add the larger shapes and run only
# where transformers is importable.
# ---------------------------------------------------------------------------------------
_SMALL = dict(vocab_size=50, max_position_embeddings=40)
# DeBERTa-v3's attention settings (microsoft/deberta-v3-base's config.json)
_DEBERTA_V3 = dict(relative_attention=True, pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
                   position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)

FAMILY_CASES = [
    # BERT family (MiniLM, bge, e5, gte are BERT checkpoints)
    dict(name="bert_gelu", model_type="bert", architecture="BertModel", lengths=[13, 9, 4, 1],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                     intermediate_size=37, hidden_act="gelu")),
    dict(name="bert_gelu_new_4heads", model_type="bert", architecture="BertModel", lengths=[11, 11, 6],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                     intermediate_size=40, hidden_act="gelu_new", layer_norm_eps=1e-5)),
    dict(name="bert_relu_1head_padding_row", model_type="bert", architecture="BertModel", lengths=[7, 3, 0],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=1, num_hidden_layers=1,
                     intermediate_size=24, hidden_act="relu", type_vocab_size=3)),
    dict(name="bert_silu_8heads", model_type="bert", architecture="BertModel", lengths=[9, 5],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=8, num_hidden_layers=1,
                     intermediate_size=33, hidden_act="silu")),
    dict(name="bert_masked_lm", model_type="bert", architecture="BertForMaskedLM", lengths=[9, 6],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                     intermediate_size=37, hidden_act="gelu_fast")),
    dict(name="bert_sequence_classification", model_type="bert", architecture="BertForSequenceClassification",
         lengths=[7, 5, 2], config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                                        intermediate_size=37, num_labels=3)),
    dict(name="bert_token_classification", model_type="bert", architecture="BertForTokenClassification",
         lengths=[7, 4], config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                                     intermediate_size=37, num_labels=5)),
    # RoBERTa / XLM-RoBERTa: positions counted from pad_token_id + 1
    dict(name="roberta_gelu", model_type="roberta", architecture="RobertaModel", lengths=[15, 8, 3],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                     intermediate_size=37, max_position_embeddings=42, layer_norm_eps=1e-5)),
    dict(name="roberta_masked_lm", model_type="roberta", architecture="RobertaForMaskedLM", lengths=[9, 6],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                     intermediate_size=37, max_position_embeddings=42, hidden_act="gelu_pytorch_tanh")),
    dict(name="roberta_sequence_classification", model_type="roberta",
         architecture="RobertaForSequenceClassification", lengths=[7, 3],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                     intermediate_size=37, max_position_embeddings=42, num_labels=2)),
    dict(name="xlm_roberta_silu", model_type="xlm-roberta", architecture="XLMRobertaModel", lengths=[11, 5],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                     intermediate_size=37, max_position_embeddings=42, type_vocab_size=1, hidden_act="silu")),
    dict(name="xlm_roberta_token_classification", model_type="xlm-roberta",
         architecture="XLMRobertaForTokenClassification", lengths=[7, 6],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                     intermediate_size=37, max_position_embeddings=42, type_vocab_size=1, num_labels=4)),
    # DistilBERT: its own names, no token types, LayerNorm eps fixed at 1e-12
    dict(name="distilbert_gelu", model_type="distilbert", architecture="DistilBertModel", lengths=[13, 6, 1],
         config=dict(_SMALL, dim=32, n_heads=2, n_layers=2, hidden_dim=37, activation="gelu")),
    dict(name="distilbert_masked_lm", model_type="distilbert", architecture="DistilBertForMaskedLM",
         lengths=[9, 4], config=dict(_SMALL, dim=32, n_heads=2, n_layers=1, hidden_dim=37, activation="relu")),
    dict(name="distilbert_sequence_classification", model_type="distilbert",
         architecture="DistilBertForSequenceClassification", lengths=[7, 5],
         config=dict(_SMALL, dim=32, n_heads=4, n_layers=1, hidden_dim=37, num_labels=3)),
    # ELECTRA: embedding_size != hidden_size -> a projection after the embeddings
    dict(name="electra_projection", model_type="electra", architecture="ElectraModel", lengths=[11, 7],
         config=dict(_SMALL, embedding_size=16, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                     intermediate_size=40, hidden_act="gelu_fast")),
    dict(name="electra_masked_lm", model_type="electra", architecture="ElectraForMaskedLM", lengths=[9, 3],
         config=dict(_SMALL, embedding_size=16, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                     intermediate_size=37)),
    dict(name="electra_discriminator", model_type="electra", architecture="ElectraForPreTraining",
         lengths=[9, 5], config=dict(_SMALL, embedding_size=32, hidden_size=32, num_attention_heads=2,
                                     num_hidden_layers=1, intermediate_size=37)),
    dict(name="electra_sequence_classification", model_type="electra",
         architecture="ElectraForSequenceClassification", lengths=[7, 4],
         config=dict(_SMALL, embedding_size=16, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                     intermediate_size=37, num_labels=3)),
    # MPNet: relative position bias; sequences past 16 tokens reach the logarithmic buckets
    dict(name="mpnet_gelu", model_type="mpnet", architecture="MPNetModel", lengths=[37, 19, 6],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                     intermediate_size=37, max_position_embeddings=42, layer_norm_eps=1e-5)),
    dict(name="mpnet_masked_lm", model_type="mpnet", architecture="MPNetForMaskedLM", lengths=[9, 5],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                     intermediate_size=37, max_position_embeddings=42, hidden_act="gelu_new")),
    dict(name="mpnet_sequence_classification", model_type="mpnet",
         architecture="MPNetForSequenceClassification", lengths=[7, 6],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                     intermediate_size=37, max_position_embeddings=42, num_labels=2)),
    dict(name="mpnet_token_classification", model_type="mpnet", architecture="MPNetForTokenClassification",
         lengths=[8, 3], config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                                     intermediate_size=37, max_position_embeddings=42, num_labels=3)),
    # DeBERTa-v2/v3: disentangled attention. v3's settings (log buckets past 8 either way,
    # shared keys, c2p and p2c, LayerNorm-ed relative table, no absolute positions) ...
    dict(name="deberta_v3_buckets", model_type="deberta-v2", architecture="DebertaV2Model",
         lengths=[37, 17, 6, 1], config=dict(_SMALL, **_DEBERTA_V3, hidden_size=32, num_attention_heads=4,
                                             num_hidden_layers=2, intermediate_size=37, position_buckets=16,
                                             max_relative_positions=64)),
    # ... own position key linear, c2p only, exact distances clipped at 12, absolute positions,
    # token types and an embedding projection (embedding_size 16), legacy masked-LM head ...
    dict(name="deberta_c2p_masked_lm", model_type="deberta-v2", architecture="DebertaV2ForMaskedLM",
         lengths=[21, 9], config=dict(_SMALL, hidden_size=32, embedding_size=16, num_attention_heads=2,
                                      num_hidden_layers=1, intermediate_size=37, relative_attention=True,
                                      max_relative_positions=12, pos_att_type="c2p", type_vocab_size=2,
                                      hidden_act="gelu_new")),
    # ... own position query linear, p2c only, ContextPooler with tanh ...
    dict(name="deberta_p2c_sequence_classification", model_type="deberta-v2",
         architecture="DebertaV2ForSequenceClassification", lengths=[23, 17, 1],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=37,
                     relative_attention=True, position_buckets=8, max_relative_positions=20, pos_att_type="p2c",
                     position_biased_input=False, pooler_hidden_act="tanh", num_labels=3)),
    # ... no relative attention (pos_att_type still scales the scores), mDeBERTa's head names ...
    dict(name="deberta_no_relative_token_classification", model_type="deberta-v2",
         architecture="DebertaV2ForTokenClassification", lengths=[13, 5],
         config=dict(_SMALL, hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=37,
                     relative_attention=False, pos_att_type="p2c|c2p", type_vocab_size=0, num_labels=4)),
    dict(name="deberta_v3_masked_lm", model_type="deberta-v2", architecture="DebertaV2ForMaskedLM",
         lengths=[17, 1], config=dict(_SMALL, **_DEBERTA_V3, hidden_size=32, num_attention_heads=2,
                                      num_hidden_layers=1, intermediate_size=37, position_buckets=8,
                                      max_relative_positions=24, legacy=False)),
    # ... and a text of 1025 tokens beside one of 17 and one of 1 (v3 settings, no position table).
    dict(name="deberta_v3_1025_tokens_token_classification", model_type="deberta-v2",
         architecture="DebertaV2ForTokenClassification", lengths=[1025, 17, 1],
         config=dict(_SMALL, **_DEBERTA_V3, hidden_size=16, num_attention_heads=2, num_hidden_layers=2,
                     intermediate_size=20, position_buckets=32, max_relative_positions=128, num_labels=2)),
]

# Larger shapes (hidden up to 256, 8 heads, 4 layers), generated by the live tests only.
_LIVE = dict(vocab_size=120, max_position_embeddings=130)
LIVE_CASES = [
    dict(name="bert_256_8heads_4layers", model_type="bert", architecture="BertModel", lengths=[61, 33, 7],
         config=dict(_LIVE, hidden_size=256, num_attention_heads=8, num_hidden_layers=4,
                     intermediate_size=512, hidden_act="gelu")),
    dict(name="bert_128_gelu_pytorch_tanh", model_type="bert", architecture="BertForMaskedLM",
         lengths=[45, 17], config=dict(_LIVE, hidden_size=128, num_attention_heads=4, num_hidden_layers=3,
                                       intermediate_size=300, hidden_act="gelu_pytorch_tanh")),
    dict(name="roberta_192_6heads", model_type="roberta", architecture="RobertaForSequenceClassification",
         lengths=[51, 29, 2], config=dict(_LIVE, hidden_size=192, num_attention_heads=6, num_hidden_layers=3,
                                          intermediate_size=384, num_labels=4, hidden_act="relu")),
    dict(name="xlm_roberta_96_silu", model_type="xlm-roberta", architecture="XLMRobertaModel",
         lengths=[39, 21], config=dict(_LIVE, hidden_size=96, num_attention_heads=3, num_hidden_layers=2,
                                       intermediate_size=200, type_vocab_size=1, hidden_act="silu")),
    dict(name="distilbert_256_8heads", model_type="distilbert", architecture="DistilBertForMaskedLM",
         lengths=[57, 31], config=dict(_LIVE, dim=256, n_heads=8, n_layers=4, hidden_dim=512, activation="gelu")),
    dict(name="electra_64_to_256", model_type="electra", architecture="ElectraForPreTraining",
         lengths=[49, 13, 5], config=dict(_LIVE, embedding_size=64, hidden_size=256, num_attention_heads=8,
                                          num_hidden_layers=3, intermediate_size=512, hidden_act="gelu_new")),
    dict(name="mpnet_256_8heads", model_type="mpnet", architecture="MPNetForTokenClassification",
         lengths=[127, 70, 9], config=dict(_LIVE, hidden_size=256, num_attention_heads=8, num_hidden_layers=4,
                                           intermediate_size=512, num_labels=5, hidden_act="gelu")),
    dict(name="mpnet_64_gelu_fast", model_type="mpnet", architecture="MPNetForMaskedLM",
         lengths=[33, 8], config=dict(_LIVE, hidden_size=64, num_attention_heads=1, num_hidden_layers=2,
                                      intermediate_size=99, hidden_act="gelu_fast")),
    dict(name="deberta_v3_256_buckets", model_type="deberta-v2", architecture="DebertaV2ForSequenceClassification",
         lengths=[1100, 129, 17, 1], config=dict(_LIVE, **_DEBERTA_V3, hidden_size=256, num_attention_heads=4,
                                                 num_hidden_layers=2, intermediate_size=512, position_buckets=256,
                                                 max_relative_positions=512, num_labels=3)),
    dict(name="deberta_128_own_keys", model_type="deberta-v2", architecture="DebertaV2ForMaskedLM",
         lengths=[127, 70, 9], config=dict(_LIVE, hidden_size=128, num_attention_heads=4, num_hidden_layers=3,
                                           intermediate_size=300, relative_attention=True, share_att_key=False,
                                           pos_att_type="c2p|p2c", position_buckets=64, max_relative_positions=100,
                                           norm_rel_ebd="layer_norm", type_vocab_size=2)),
]

# Varied sentences for the real checkpoints: lengths from one word to a paragraph, case,
# punctuation, digits, accents, other scripts, emoji, code, URLs.
SENTENCES = [
    "Hello world",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Yes.",
    "No!",
    "Why?",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "It costs $3.50 for 2 items, or 12.99 EUR for 10.",
    "Call me at 555-0123 before 9:30 a.m. on 2024-02-29.",
    "Café au lait, naïve résumé, and a piñata at the fiancée's soirée.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "¿Dónde está la biblioteca? Está al lado del museo.",
    "Москва — столица России.",
    "東京は日本の首都です。",
    "I love pizza 🍕 and coffee ☕!",
    "def add(a, b): return a + b  # simple function",
    "See https://example.com/path?query=1&lang=en for details.",
    "e-mail: first.last@example.org",
    "state-of-the-art, well-known, twenty-one",
    "don't, won't, can't, it's, they're, we'd've",
    "Machine learning models learn patterns from data.",
    "Neural networks are loosely inspired by the brain.",
    "Attention lets every token look at every other token in the sequence.",
    "The encoder turns a sentence into a list of contextual vectors, one per token.",
    "Mean pooling averages those vectors into a single sentence embedding.",
    "A cat sat on the mat.",
    "The cat sat on the mat.",
    "Dogs are loyal companions.",
    "The stock market fell sharply on Tuesday after the announcement.",
    "Heavy rain is expected across the region this weekend.",
    "She finished the marathon in under three hours.",
    "He forgot his umbrella, so he got soaked on the way home.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Photosynthesis converts light energy into chemical energy.",
    "The mitochondria is the powerhouse of the cell.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "The Great Wall of China is visible from many places, though not from space.",
    "buffalo buffalo buffalo buffalo buffalo buffalo buffalo buffalo",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "1 2 3 4 5 6 7 8 9 10",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "   leading and trailing spaces   ",
    "Tabs\tand\nnewlines\nin the text.",
    "In the beginning the Universe was created. This has made a lot of people very angry and been widely "
    "regarded as a bad move. Many were increasingly of the opinion that they'd all made a big mistake in "
    "coming down from the trees in the first place.",
    "When the sun rose over the hills, the villagers gathered their tools, walked to the fields along the "
    "river, and began the long day of harvesting wheat, barley and oats before the autumn storms arrived.",
]

# How many padded batches of SENTENCES each committed real reference keeps (None: all). MPNet's
# 768-wide states are big, so its committed file keeps 3 batches (24 sentences); the live test
# (tests/test_families_live.py) compares all of them against transformers directly.
REAL_MODELS = {"all-MiniLM-L6-v2": None, "all-mpnet-base-v2": 3}
BATCH_SIZE = 8


# ---------------------------------------------------------------------------------------
# Random family checkpoints
# ---------------------------------------------------------------------------------------
def build_model(case, seed=0):
    """A transformers model for `case`, eager attention, with every parameter drawn at random.

    transformers' own init (std 0.02, LayerNorm weight 1, bias 0) makes activations tiny and
    attention nearly uniform, which would test little. Instead, like a trained model, every
    linear layer keeps its activations near unit scale (std 1/sqrt(fan_in)), so attention
    scores are O(1) and every path matters. The embedding tables follow the same rule with
    fan_in = their width: a LayerNorm follows them, so their scale does not change the hidden
    states, but a masked-LM decoder is tied to the word embeddings, and a table of std 0.5
    made logits of ~30, where float32 rounding alone puts transformers' own output 2e-5 away
    from its float64 result. (Likewise a fixed std such as 0.2 at width 256 makes attention
    scores of ~50 and torch's float32 output 1e-4 away from float64: no float32
    implementation can agree with it to 1e-5.)
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

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                fill = (1.0 if name.endswith("weight") else 0.0) + normal(parameter.shape, 0.2)
            elif name.endswith("bias"):
                fill = normal(parameter.shape, 0.1)
            elif "relative_attention_bias" in name:
                fill = normal(parameter.shape, 0.5)  # added straight to the attention scores
            elif "embeddings." in name and "project" not in name:
                fill = normal(parameter.shape, parameter.shape[1] ** -0.5)  # lookup tables [rows, width]
            else:
                fill = normal(parameter.shape, parameter.shape[1] ** -0.5)  # linear [out, in]
            parameter.copy_(fill)
    return model


def _has_token_types(model_type):
    return model_type not in ("distilbert", "mpnet")


def make_inputs(case, config, seed=0):
    """Random ids for the case's `lengths`, padded with pad_token_id; int64 arrays."""
    rng = np.random.default_rng(seed)
    lengths = case["lengths"]
    seq = max(lengths)
    pad = config.pad_token_id
    real_ids = np.array([i for i in range(config.vocab_size) if i != pad])
    input_ids = np.full((len(lengths), seq), pad, dtype=np.int64)
    attention_mask = np.zeros((len(lengths), seq), dtype=np.int64)
    token_type_ids = np.zeros((len(lengths), seq), dtype=np.int64)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = rng.choice(real_ids, size=length)
        attention_mask[row, :length] = 1
        if _has_token_types(case["model_type"]) and config.type_vocab_size > 1:
            # a sentence pair: the second half gets type 1 (or higher when there are more types)
            token_type_ids[row, length // 2:length] = rng.integers(1, config.type_vocab_size, endpoint=False)
    return input_ids, attention_mask, token_type_ids


def run_transformers(model, model_type, input_ids, attention_mask, token_type_ids):
    """transformers' outputs for one batch, as float32 NumPy arrays."""
    import torch

    kwargs = dict(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                  output_hidden_states=True, output_attentions=True)
    if _has_token_types(model_type):
        kwargs["token_type_ids"] = torch.from_numpy(token_type_ids)
    with torch.no_grad():
        out = model(**kwargs)
    result = {
        "last_hidden_state": out.hidden_states[-1].numpy(),
        "hidden_states": np.stack([h.numpy() for h in out.hidden_states]),
        "attentions": np.stack([a.numpy() for a in out.attentions]),
    }
    if getattr(out, "pooler_output", None) is not None:
        result["pooler_output"] = out.pooler_output.numpy()
    if getattr(out, "logits", None) is not None:
        result["logits"] = out.logits.numpy()
    return result


def float64_logits(case, reference, seed=0):
    """The case's logits computed by transformers in float64: the exact-math yardstick that
    shows how far transformers' own float32 logits are from the truth."""
    import torch

    model = build_model(case, seed).double()
    kwargs = dict(input_ids=torch.from_numpy(reference["input_ids"]),
                  attention_mask=torch.from_numpy(reference["attention_mask"]))
    if _has_token_types(case["model_type"]):
        kwargs["token_type_ids"] = torch.from_numpy(reference["token_type_ids"])
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


def transformers_logit_error(case, reference):
    """How far transformers' own float32 logits are from its float64 ones (max |diff|).

    Printed by `report` beside our difference: it shows what float32 rounding alone costs at
    the case's logit magnitude. The tests hold our logits to a flat 1e-5 regardless.
    """
    exact = float64_logits(case, reference)
    return float(np.abs(reference["logits"] - exact).max())


def write_case(case, directory, seed=0):
    """Build, save (config.json + model.safetensors) and run one case; returns its reference dict."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    model = build_model(case, seed)
    model.save_pretrained(directory)
    input_ids, attention_mask, token_type_ids = make_inputs(case, model.config, seed)
    reference = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    reference.update(run_transformers(model, case["model_type"], input_ids, attention_mask, token_type_ids))
    return reference


def write_family_references(prefix=""):
    root = REFERENCES / "families"
    root.mkdir(parents=True, exist_ok=True)
    for case in FAMILY_CASES:
        if not case["name"].startswith(prefix):
            continue
        reference = write_case(case, root / case["name"])
        if not case["architecture"].endswith("Model"):
            # head cases check the logits; the base models' cases hold the per-layer outputs
            del reference["hidden_states"], reference["attentions"]
        np.savez_compressed(root / case["name"] / "reference.npz", **reference)
        print(f"wrote {case['name']}")


# ---------------------------------------------------------------------------------------
# Real checkpoints
# ---------------------------------------------------------------------------------------
def tokenize_batches(model_dir, sentences=SENTENCES, batch_size=BATCH_SIZE, seed=0):
    """Sentences -> padded batches of ids with the Rust `tokenizers` (the reference tokenizer).

    The sentence order is shuffled (seeded) so every batch mixes short and long sentences.
    Returns a list of (sentences, input_ids, attention_mask, token_type_ids).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    padding = tokenizer.padding
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=padding["pad_id"], pad_token=padding["pad_token"])  # pad to the longest
    order = np.random.default_rng(seed).permutation(len(sentences))
    batches = []
    for start in range(0, len(order), batch_size):
        texts = [sentences[i] for i in order[start:start + batch_size]]
        encodings = tokenizer.encode_batch(texts)
        batches.append((texts,
                        np.array([e.ids for e in encodings], dtype=np.int64),
                        np.array([e.attention_mask for e in encodings], dtype=np.int64),
                        np.array([e.type_ids for e in encodings], dtype=np.int64)))
    return batches


def load_real_model(model_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()


def real_reference(model_dir, max_batches=None):
    """transformers' outputs for SENTENCES on a real checkpoint, as the .npz dict."""
    model = load_real_model(model_dir)
    model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    reference = {}
    all_texts = []
    for b, (texts, input_ids, attention_mask, token_type_ids) in enumerate(tokenize_batches(model_dir)[:max_batches]):
        out = run_transformers(model, model_type, input_ids, attention_mask, token_type_ids)
        reference[f"input_ids_{b}"] = input_ids
        reference[f"attention_mask_{b}"] = attention_mask
        reference[f"token_type_ids_{b}"] = token_type_ids
        reference[f"last_hidden_state_{b}"] = out["last_hidden_state"][attention_mask.astype(bool)]
        reference[f"pooler_output_{b}"] = out["pooler_output"]
        all_texts.extend(texts)
    reference["sentences"] = np.array(all_texts)
    return reference


def write_real_references():
    for name, max_batches in REAL_MODELS.items():
        model_dir = ROOT / "weights" / name
        if not model_dir.is_dir():
            raise SystemExit(f"{model_dir} is missing: run `make test` or `transformer download {name}` first")
        np.savez_compressed(REFERENCES / f"{name}.npz", **real_reference(model_dir, max_batches))
        print(f"wrote {name}.npz")


# ---------------------------------------------------------------------------------------
# The parity report (README's table)
# ---------------------------------------------------------------------------------------
def compare_case(model_dir, reference, backend="numpy"):
    """Our encoder on a reference's inputs -> {output name: max |diff|} (non-padding tokens)."""
    from transformer.encoder import Encoder

    model = Encoder.from_pretrained(model_dir, backend=backend)
    out = model(reference["input_ids"], reference["attention_mask"], reference["token_type_ids"],
                output_hidden_states=True, output_attentions=True)
    mask = reference["attention_mask"].astype(bool)
    diffs = {"last_hidden_state": float(np.abs(out.last_hidden_state - reference["last_hidden_state"])[mask].max(initial=0))}
    if "hidden_states" in reference:
        diffs["hidden_states"] = max(float(np.abs(ours - theirs)[mask].max(initial=0))
                                     for ours, theirs in zip(out.hidden_states, reference["hidden_states"]))
    if "attentions" in reference:
        diffs["attentions"] = max(float(np.abs(ours - theirs).max())
                                  for ours, theirs in zip(out.attentions, reference["attentions"]))
    if "pooler_output" in reference:
        diffs["pooler_output"] = float(np.abs(out.pooler_output - reference["pooler_output"]).max())
    if "logits" in reference:
        logits_mask = mask if out.logits.ndim >= 2 and out.logits.shape[:2] == mask.shape else slice(None)
        diffs["logits"] = float(np.abs(out.logits - reference["logits"])[logits_mask].max())
    return diffs


def compare_real(model_dir, reference, backend="numpy"):
    """Our encoder on a real-model reference -> (worst last_hidden_state diff, worst pooler diff)."""
    from transformer.encoder import Encoder

    model = Encoder.from_pretrained(model_dir, backend=backend)
    worst_hidden = worst_pooler = 0.0
    b = 0
    while f"input_ids_{b}" in reference:
        mask = reference[f"attention_mask_{b}"]
        out = model(reference[f"input_ids_{b}"], mask, reference[f"token_type_ids_{b}"])
        ours = out.last_hidden_state[mask.astype(bool)]
        worst_hidden = max(worst_hidden, float(np.abs(ours - reference[f"last_hidden_state_{b}"]).max()))
        worst_pooler = max(worst_pooler, float(np.abs(out.pooler_output - reference[f"pooler_output_{b}"]).max()))
        b += 1
    return worst_hidden, worst_pooler


def report():
    """Run every case live against transformers; print the worst max |diff| per family."""
    import tempfile

    worst_states, worst_logits, worst_own = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in FAMILY_CASES + LIVE_CASES:
            reference = write_case(case, Path(tmp) / case["name"])
            diffs = compare_case(Path(tmp) / case["name"], reference)
            family = case["model_type"]
            states = max(v for k, v in diffs.items() if k != "logits")
            worst_states[family] = max(worst_states.get(family, 0.0), states)
            line = f"{case['name']:36s} " + "  ".join(f"{k}={v:.1e}" for k, v in diffs.items())
            if "logits" in diffs:
                worst_logits[family] = max(worst_logits.get(family, 0.0), diffs["logits"])
                own_error = transformers_logit_error(case, reference)
                worst_own[family] = max(worst_own.get(family, 0.0), own_error)
                line += f"  (transformers fp32 logits vs fp64: {own_error:.1e})"
            print(line)
    real = {}
    for name in REAL_MODELS:
        hidden, pooled = compare_real(ROOT / "weights" / name, real_reference(ROOT / "weights" / name))
        real[name] = (hidden, pooled)
        print(f"{name:36s} last_hidden_state={hidden:.1e}  pooler_output={pooled:.1e}  "
              f"({len(SENTENCES)} sentences, padded batches of {BATCH_SIZE})")
    print("\n| family | hidden states, pooler, attentions | head logits | transformers' own fp32 logit error |")
    print("|---|---|---|---|")
    for family, value in worst_states.items():
        logits = f"{worst_logits[family]:.1e}" if family in worst_logits else "-"
        own = f"{worst_own[family]:.1e}" if family in worst_own else "-"
        print(f"| {family} | {value:.1e} | {logits} | {own} |")
    for name, (hidden, pooled) in real.items():
        print(f"| {name} (real weights) | {max(hidden, pooled):.1e} | - | - |")


def main(argv):
    what = argv[1] if len(argv) > 1 else "all"
    if what not in ("all", "families", "real", "report"):
        raise SystemExit(__doc__)
    if what == "report":
        report()
        return
    if what in ("all", "families"):
        write_family_references(argv[2] if what == "families" and len(argv) > 2 else "")
    if what in ("all", "real"):
        write_real_references()


if __name__ == "__main__":
    main(sys.argv)
