"""Make the references committed under tests/references/ (needs torch + transformers: the test extra).

The torch-free tests compare both our backends with these files. Every expected number in them
was computed by Hugging Face `transformers` (fp32, eager attention); every input id of the real
checkpoints by the Rust `tokenizers` (never by this package's tokenizer). One generator for every
family: the cases are data (FAMILIES below), drawn, run, saved and checked by the same code.

Run from the repository root, in the venv that has the test extras (`make setup-test`):

    .venv/bin/python tools/make_references.py                      # re-make every reference
    .venv/bin/python tools/make_references.py --family t5 deberta  # the cases of these families
    .venv/bin/python tools/make_references.py --family real        # all-MiniLM-L6-v2 / all-mpnet-base-v2
    .venv/bin/python tools/make_references.py --case t5_long       # the cases whose names start so
    .venv/bin/python tools/make_references.py --check              # write nothing: re-make in memory and
                                                                   # print max |diff| per committed file
    .venv/bin/python tools/make_references.py --report             # write nothing: our worst max |diff|
                                                                   # against live transformers, per case
    .venv/bin/python tools/make_references.py --report --family llama --backend numba
    .venv/bin/python tools/make_references.py --list               # the families and their cases

It refuses to run unless torch, transformers and tokenizers are the versions the test extra
pins in pyproject.toml (the references record them; another version may compute otherwise).

What it writes:

    tests/references/<folder>/<case>/config.json, model.safetensors   (folder: families or decoders)
        a tiny randomly initialised checkpoint written by transformers' save_pretrained
    tests/references/<folder>/<case>/reference.npz
        input_ids, attention_mask [batch, seq] (int64), token_type_ids (encoders) and
        transformers' outputs on that padded batch: last_hidden_state [batch, seq, hidden] (after
        a final norm where the family has one); pooler_output where the model has a pooler;
        logits for head models; and, for inputs of at most LAYERS_UP_TO tokens without a head,
        hidden_states [layers + 1, batch, seq, hidden] and (encoders) attentions
        [layers, batch, heads, seq, seq]
    tests/references/<model>.npz  (all-MiniLM-L6-v2, all-mpnet-base-v2; the real weights come
        from weights/, fetched by `make test`)
        sentences, and per padded batch b (all of them for MiniLM, the first 3 for MPNet;
        see REAL_MODELS): input_ids_b, attention_mask_b, token_type_ids_b,
        last_hidden_state_b (only the non-padding tokens, [tokens, hidden], to keep the file
        small) and pooler_output_b

tests/test_families.py reads every encoder case's files; tests/test_family_<family>.py and
tests/decoder_cases.py import this file for its cases too: their live tests rebuild the cases
(LIVE_CASES adds larger shapes) and compare with transformers directly.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "tests" / "references"
PINNED = ("torch", "transformers", "tokenizers")  # the test extra's pins these references need


class Family(NamedTuple):
    """One family's cases, and the few ways its references are drawn, run and kept.

    A case is a dict: `name` (its folder), `model_type` and `architecture` (transformers' config
    and model class), `config` (keyword arguments of the config class), `lengths` (each row's
    real tokens, padded to the longest; 0 = an all-padding row) and, for decoders, `padding`
    ("right" or "left": decoders are often batched left-padded).
    """

    cases: tuple = ()  # committed under tests/references/<folder>/<name>/
    live: tuple = ()  # larger shapes, made by the live tests only
    folder: str = "families"
    causal: bool = False  # a decoder: ids padded with 0, its base model's hidden states, no token types
    # std of a relative_attention_bias table (added straight to the attention scores); None: the
    # rule of every table, 1/sqrt(its width = heads)
    bias_table_std: float | None = 0.5
    norm_weight_centre: float = 1.0  # Gemma's norms scale by (1 + w): centred on 0


# Inputs of at most this many tokens (without a head) keep every layer's outputs in the file.
LAYERS_UP_TO = 40

# ---------------------------------------------------------------------------------------
# The 2019 families (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, MPNet) and DeBERTa-v2/v3.
# Committed cases stay tiny (tens of KB); the live cases add hidden up to 256, 8 heads, 4 layers.
# ---------------------------------------------------------------------------------------
_SMALL = dict(vocab_size=50, max_position_embeddings=40)
_LIVE = dict(vocab_size=120, max_position_embeddings=130)
# DeBERTa-v3's attention settings (microsoft/deberta-v3-base's config.json)
_DEBERTA_V3 = dict(relative_attention=True, pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
                   position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7)

FAMILIES = {
    # MiniLM, bge, e5, gte are BERT checkpoints
    "bert": Family(cases=(
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
    ), live=(
        dict(name="bert_256_8heads_4layers", model_type="bert", architecture="BertModel", lengths=[61, 33, 7],
             config=dict(_LIVE, hidden_size=256, num_attention_heads=8, num_hidden_layers=4,
                         intermediate_size=512, hidden_act="gelu")),
        dict(name="bert_128_gelu_pytorch_tanh", model_type="bert", architecture="BertForMaskedLM",
             lengths=[45, 17], config=dict(_LIVE, hidden_size=128, num_attention_heads=4, num_hidden_layers=3,
                                           intermediate_size=300, hidden_act="gelu_pytorch_tanh")),
    )),
    # RoBERTa / XLM-RoBERTa: positions counted from pad_token_id + 1
    "roberta": Family(cases=(
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
    ), live=(
        dict(name="roberta_192_6heads", model_type="roberta", architecture="RobertaForSequenceClassification",
             lengths=[51, 29, 2], config=dict(_LIVE, hidden_size=192, num_attention_heads=6, num_hidden_layers=3,
                                              intermediate_size=384, num_labels=4, hidden_act="relu")),
    )),
    "xlm_roberta": Family(cases=(
        dict(name="xlm_roberta_silu", model_type="xlm-roberta", architecture="XLMRobertaModel", lengths=[11, 5],
             config=dict(_SMALL, hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                         intermediate_size=37, max_position_embeddings=42, type_vocab_size=1, hidden_act="silu")),
        dict(name="xlm_roberta_token_classification", model_type="xlm-roberta",
             architecture="XLMRobertaForTokenClassification", lengths=[7, 6],
             config=dict(_SMALL, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                         intermediate_size=37, max_position_embeddings=42, type_vocab_size=1, num_labels=4)),
    ), live=(
        dict(name="xlm_roberta_96_silu", model_type="xlm-roberta", architecture="XLMRobertaModel",
             lengths=[39, 21], config=dict(_LIVE, hidden_size=96, num_attention_heads=3, num_hidden_layers=2,
                                           intermediate_size=200, type_vocab_size=1, hidden_act="silu")),
    )),
    # DistilBERT: its own names, no token types, LayerNorm eps fixed at 1e-12
    "distilbert": Family(cases=(
        dict(name="distilbert_gelu", model_type="distilbert", architecture="DistilBertModel", lengths=[13, 6, 1],
             config=dict(_SMALL, dim=32, n_heads=2, n_layers=2, hidden_dim=37, activation="gelu")),
        dict(name="distilbert_masked_lm", model_type="distilbert", architecture="DistilBertForMaskedLM",
             lengths=[9, 4], config=dict(_SMALL, dim=32, n_heads=2, n_layers=1, hidden_dim=37, activation="relu")),
        dict(name="distilbert_sequence_classification", model_type="distilbert",
             architecture="DistilBertForSequenceClassification", lengths=[7, 5],
             config=dict(_SMALL, dim=32, n_heads=4, n_layers=1, hidden_dim=37, num_labels=3)),
    ), live=(
        dict(name="distilbert_256_8heads", model_type="distilbert", architecture="DistilBertForMaskedLM",
             lengths=[57, 31], config=dict(_LIVE, dim=256, n_heads=8, n_layers=4, hidden_dim=512,
                                           activation="gelu")),
    )),
    # ELECTRA: embedding_size != hidden_size -> a projection after the embeddings
    "electra": Family(cases=(
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
    ), live=(
        dict(name="electra_64_to_256", model_type="electra", architecture="ElectraForPreTraining",
             lengths=[49, 13, 5], config=dict(_LIVE, embedding_size=64, hidden_size=256, num_attention_heads=8,
                                              num_hidden_layers=3, intermediate_size=512, hidden_act="gelu_new")),
    )),
    # MPNet: relative position bias; sequences past 16 tokens reach the logarithmic buckets
    "mpnet": Family(cases=(
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
    ), live=(
        dict(name="mpnet_256_8heads", model_type="mpnet", architecture="MPNetForTokenClassification",
             lengths=[127, 70, 9], config=dict(_LIVE, hidden_size=256, num_attention_heads=8, num_hidden_layers=4,
                                               intermediate_size=512, num_labels=5, hidden_act="gelu")),
        dict(name="mpnet_64_gelu_fast", model_type="mpnet", architecture="MPNetForMaskedLM",
             lengths=[33, 8], config=dict(_LIVE, hidden_size=64, num_attention_heads=1, num_hidden_layers=2,
                                          intermediate_size=99, hidden_act="gelu_fast")),
    )),
    # DeBERTa-v2/v3: disentangled attention. v3's settings (log buckets past 8 either way,
    # shared keys, c2p and p2c, LayerNorm-ed relative table, no absolute positions) ...
    "deberta": Family(cases=(
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
    ), live=(
        dict(name="deberta_v3_256_buckets", model_type="deberta-v2", architecture="DebertaV2ForSequenceClassification",
             lengths=[1100, 129, 17, 1], config=dict(_LIVE, **_DEBERTA_V3, hidden_size=256, num_attention_heads=4,
                                                     num_hidden_layers=2, intermediate_size=512, position_buckets=256,
                                                     max_relative_positions=512, num_labels=3)),
        dict(name="deberta_128_own_keys", model_type="deberta-v2", architecture="DebertaV2ForMaskedLM",
             lengths=[127, 70, 9], config=dict(_LIVE, hidden_size=128, num_attention_heads=4, num_hidden_layers=3,
                                               intermediate_size=300, relative_attention=True, share_att_key=False,
                                               pos_att_type="c2p|p2c", position_buckets=64, max_relative_positions=100,
                                               norm_rel_ebd="layer_norm", type_vocab_size=2)),
    )),
}

# ---------------------------------------------------------------------------------------
# ModernBERT, NomicBERT, Jina v3 and T5 encoders: each with a case of 1 and 17 tokens and one
# past 1024 on a narrow, shallow model (hidden 16, 2 layers) that keeps the file small.
# ---------------------------------------------------------------------------------------
# Small ids for the special tokens: ModernBertConfig's defaults (50281...) are outside a
# 50-word vocabulary.
_TINY = dict(vocab_size=50, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
             max_position_embeddings=64)
_NOMIC = dict(vocab_size=50, pad_token_id=0, max_position_embeddings=64)
_JINA = dict(vocab_size=50, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=64)
_T5 = dict(vocab_size=50, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)

FAMILIES.update({
    "modernbert": Family(cases=(
        # global, local, local: a window of 8 (4 either side) on rows of 17, 9 and 1 tokens; the
        # default thetas (160000 global, 10000 local), GeGLU, no biases
        dict(name="modernbert_gelu_window", model_type="modernbert", architecture="ModernBertModel",
             lengths=[17, 9, 1],
             config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=3, intermediate_size=48,
                         hidden_activation="gelu", local_attention=8, global_attn_every_n_layers=3)),
        # every bias on, layer_types given, both thetas set, SwiGLU, the masked-LM head (tied decoder)
        dict(name="modernbert_biases_masked_lm", model_type="modernbert", architecture="ModernBertForMaskedLM",
             lengths=[13, 6],
             config=dict(_TINY, hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=40,
                         hidden_activation="silu", norm_bias=True, attention_bias=True, mlp_bias=True,
                         classifier_bias=True, decoder_bias=True, classifier_activation="gelu",
                         layer_types=["sliding_attention", "full_attention"], local_attention=6,
                         rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5000.0},
                                          "sliding_attention": {"rope_type": "default", "rope_theta": 300.0}})),
        # sequence classification pooling the mean of the real tokens
        dict(name="modernbert_sequence_classification_mean", model_type="modernbert",
             architecture="ModernBertForSequenceClassification", lengths=[17, 5, 1],
             config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48,
                         local_attention=4, global_attn_every_n_layers=2, classifier_pooling="mean", num_labels=3,
                         classifier_activation="silu")),
        # sequence classification of the first token, gelu_pytorch_tanh GLU
        dict(name="modernbert_sequence_classification_cls", model_type="modernbert",
             architecture="ModernBertForSequenceClassification", lengths=[11, 8],
             config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48,
                         hidden_activation="gelu_pytorch_tanh", local_attention=4, classifier_pooling="cls",
                         num_labels=2)),
        dict(name="modernbert_token_classification", model_type="modernbert",
             architecture="ModernBertForTokenClassification", lengths=[15, 7],
             config=dict(_TINY, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                         local_attention=6, num_labels=4, classifier_bias=True)),
        # a long input on a tiny model: 1030 tokens, a 64-token window, positions past 1024
        dict(name="modernbert_long_1030", model_type="modernbert", architecture="ModernBertModel",
             lengths=[1030, 17],
             config=dict(_TINY, max_position_embeddings=2048, hidden_size=16, num_attention_heads=2,
                         num_hidden_layers=2, intermediate_size=32, local_attention=64,
                         global_attn_every_n_layers=2)),
    )),
    # NomicBERT: post-norm BERT layers, rotary (theta 1000 by default), SwiGLU, bias-free linears
    "nomic_bert": Family(cases=(
        dict(name="nomic_bert_swiglu", model_type="nomic_bert", architecture="NomicBertModel", lengths=[17, 9, 1],
             config=dict(_NOMIC, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                         hidden_act="silu")),
        dict(name="nomic_bert_masked_lm", model_type="nomic_bert", architecture="NomicBertForMaskedLM",
             lengths=[13, 6],
             config=dict(_NOMIC, hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=48,
                         hidden_act="gelu", rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
        dict(name="nomic_bert_sequence_classification", model_type="nomic_bert",
             architecture="NomicBertForSequenceClassification", lengths=[11, 4],
             config=dict(_NOMIC, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                         num_labels=3)),
        dict(name="nomic_bert_token_classification", model_type="nomic_bert",
             architecture="NomicBertForTokenClassification", lengths=[15, 7],
             config=dict(_NOMIC, hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=40,
                         num_labels=4)),
        dict(name="nomic_bert_long_1030", model_type="nomic_bert", architecture="NomicBertModel",
             lengths=[1030, 17],
             config=dict(_NOMIC, max_position_embeddings=2048, hidden_size=16, num_attention_heads=2,
                         num_hidden_layers=2, intermediate_size=32)),
    )),
    # Jina v3 (transformers' port): post-norm, rotary (theta 20000 by default), biases, plain GELU MLP
    "jina_v3": Family(cases=(
        dict(name="jina_v3_gelu", model_type="jina_embeddings_v3", architecture="JinaEmbeddingsV3Model",
             lengths=[17, 9, 1],
             config=dict(_JINA, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40)),
        dict(name="jina_v3_masked_lm", model_type="jina_embeddings_v3", architecture="JinaEmbeddingsV3ForMaskedLM",
             lengths=[13, 6],
             config=dict(_JINA, hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=48,
                         hidden_act="gelu_new", rope_parameters={"rope_type": "default", "rope_theta": 5000.0})),
        dict(name="jina_v3_sequence_classification", model_type="jina_embeddings_v3",
             architecture="JinaEmbeddingsV3ForSequenceClassification", lengths=[11, 4],
             config=dict(_JINA, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=40,
                         num_labels=3)),
        dict(name="jina_v3_token_classification", model_type="jina_embeddings_v3",
             architecture="JinaEmbeddingsV3ForTokenClassification", lengths=[15, 7],
             config=dict(_JINA, hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=40,
                         num_labels=4, type_vocab_size=2)),
        dict(name="jina_v3_long_1030", model_type="jina_embeddings_v3", architecture="JinaEmbeddingsV3Model",
             lengths=[1030, 17],
             config=dict(_JINA, max_position_embeddings=2048, hidden_size=16, num_attention_heads=2,
                         num_hidden_layers=2, intermediate_size=32)),
    )),
    # T5's encoder (and mT5's): its relative_attention_bias tables keep the rule of every table,
    # std 1/sqrt(heads)
    "t5": Family(bias_table_std=None, cases=(
        # heads of d_kv 12 (4 * 12 != d_model 32), 16 buckets reaching distance 20 (rows of 17
        # see past it), ReLU (t5 v1.0, sentence-t5)
        dict(name="t5_relu_buckets", model_type="t5", architecture="T5EncoderModel", lengths=[17, 9, 1],
             config=dict(_T5, d_model=32, num_heads=4, d_kv=12, num_layers=2, d_ff=48, feed_forward_proj="relu",
                         relative_attention_num_buckets=16, relative_attention_max_distance=20)),
        # gated-gelu (t5 v1.1, flan, GTR): gelu_new(wi_0) * wi_1; an odd bucket count, 10 buckets to 12
        dict(name="t5_gated_gelu", model_type="t5", architecture="T5EncoderModel", lengths=[13, 6, 17],
             config=dict(_T5, d_model=24, num_heads=2, d_kv=16, num_layers=3, d_ff=40,
                         feed_forward_proj="gated-gelu", relative_attention_num_buckets=11,
                         relative_attention_max_distance=12, layer_norm_epsilon=1e-5)),
        # mT5 with a gated SiLU, loaded from a full encoder-decoder checkpoint (its decoder skipped)
        dict(name="mt5_gated_silu_full_checkpoint", model_type="mt5", architecture="MT5ForConditionalGeneration",
             lengths=[11, 4],
             config=dict(_T5, d_model=32, num_heads=2, d_kv=8, num_layers=2, num_decoder_layers=1, d_ff=40,
                         feed_forward_proj="gated-silu", relative_attention_num_buckets=8,
                         relative_attention_max_distance=16)),
        dict(name="t5_token_classification", model_type="t5", architecture="T5ForTokenClassification",
             lengths=[15, 7],
             config=dict(_T5, d_model=32, num_heads=2, d_kv=16, num_layers=2, d_ff=48, num_labels=4,
                         relative_attention_num_buckets=16, relative_attention_max_distance=32)),
        # 330 tokens, far beyond max_distance 64: the last buckets shared by every long distance
        dict(name="t5_long_330", model_type="t5", architecture="T5EncoderModel", lengths=[330, 17],
             config=dict(_T5, d_model=16, num_heads=2, d_kv=8, num_layers=2, d_ff=32,
                         feed_forward_proj="gated-gelu", relative_attention_num_buckets=24,
                         relative_attention_max_distance=64)),
        # 1030 tokens, far beyond max_distance 256 and past 1024, beside rows of 17 and 1
        dict(name="t5_long_1030", model_type="t5", architecture="T5EncoderModel", lengths=[1030, 17, 1],
             config=dict(_T5, d_model=16, num_heads=2, d_kv=8, num_layers=2, d_ff=32, feed_forward_proj="relu",
                         relative_attention_num_buckets=20, relative_attention_max_distance=256)),
    )),
})

# ---------------------------------------------------------------------------------------
# Decoders (GPT-2, Llama / Mistral, Qwen2 / Qwen3, Gemma 3), run as encoders: both paddings
# (right, and left as decoders are often batched), lengths from 1 token to 300+.
# ---------------------------------------------------------------------------------------
_GPT2 = dict(vocab_size=60, n_positions=320, n_embd=32, n_head=4, n_layer=2, bos_token_id=1, eos_token_id=1)
_LLAMA = dict(vocab_size=60, max_position_embeddings=320, hidden_size=32, intermediate_size=48,
              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=1,
              rms_norm_eps=1e-5)
_GEMMA = dict(vocab_size=60, max_position_embeddings=320, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12, sliding_window=6,
              layer_types=["sliding_attention", "full_attention", "sliding_attention"], bos_token_id=2, eos_token_id=1,
              pad_token_id=0, rms_norm_eps=1e-6)


def _rope(kind="default", theta=10000.0, **settings):
    return dict(rope_type=kind, rope_theta=theta, **settings)


_DECODER = dict(folder="decoders", causal=True)
FAMILIES.update({
    "gpt2": Family(**_DECODER, cases=(
        dict(name="gpt2_gelu_new", model_type="gpt2", architecture="GPT2Model", lengths=[17, 9, 1], padding="right",
             config=dict(_GPT2)),
        dict(name="gpt2_left_padding_relu", model_type="gpt2", architecture="GPT2Model", lengths=[13, 4, 17],
             padding="left", config=dict(_GPT2, n_head=2, n_inner=40, activation_function="relu",
                                         layer_norm_epsilon=1e-6)),
        dict(name="gpt2_long_inverse_layer_scale", model_type="gpt2", architecture="GPT2LMHeadModel",
             lengths=[307, 60], padding="right",
             config=dict(_GPT2, n_head=8, n_layer=3, scale_attn_by_inverse_layer_idx=True)),
        dict(name="gpt2_one_token_unscaled", model_type="gpt2", architecture="GPT2Model", lengths=[1],
             padding="right", config=dict(_GPT2, n_head=1, n_layer=1, scale_attn_weights=False,
                                          activation_function="gelu")),
    )),
    "llama": Family(**_DECODER, cases=(
        dict(name="llama_gqa_llama3_rope", model_type="llama", architecture="LlamaModel", lengths=[17, 9, 1],
             padding="right", config=dict(_LLAMA, rope_parameters=_rope(
                 "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                 original_max_position_embeddings=64))),
        dict(name="llama_mha_biases_linear_rope_left", model_type="llama", architecture="LlamaForCausalLM",
             lengths=[13, 4, 17], padding="left",
             config=dict(_LLAMA, num_key_value_heads=4, head_dim=16, attention_bias=True, mlp_bias=True,
                         tie_word_embeddings=True, rope_parameters=_rope("linear", theta=500.0, factor=2.0))),
        dict(name="llama_yarn_long", model_type="llama", architecture="LlamaModel", lengths=[309, 40],
             padding="right", config=dict(_LLAMA, num_key_value_heads=1, rope_parameters=_rope(
                 "yarn", factor=4.0, original_max_position_embeddings=80))),
        dict(name="llama_dynamic_rope_gelu", model_type="llama", architecture="LlamaModel", lengths=[1, 17],
             padding="right", config=dict(_LLAMA, hidden_act="gelu", rope_parameters=_rope("dynamic", factor=2.0))),
        dict(name="mistral_window_5", model_type="mistral", architecture="MistralModel", lengths=[37, 17, 1],
             padding="right", config=dict(_LLAMA, num_key_value_heads=1, sliding_window=5)),
        dict(name="mistral_window_64_long", model_type="mistral", architecture="MistralModel", lengths=[301, 20],
             padding="left", config=dict(_LLAMA, sliding_window=64, rope_parameters=_rope(theta=1e6))),
    )),
    "qwen": Family(**_DECODER, cases=(
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
    )),
    "gemma3": Family(**_DECODER, norm_weight_centre=0.0, cases=(
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
    )),
})

CASES = [case for family in FAMILIES.values() for case in family.cases]
LIVE_CASES = [case for family in FAMILIES.values() for case in family.live]
_FAMILY_OF = {case["model_type"]: family for family in FAMILIES.values() for case in family.cases + family.live}


def family_of(model_type):
    """The Family of a model_type (config.json's) that one of FAMILIES' cases has."""
    try:
        return _FAMILY_OF[model_type]
    except KeyError:
        raise ValueError(f"model_type {model_type!r} belongs to no family here; known: "
                         f"{', '.join(sorted(_FAMILY_OF))}") from None


def cases(*families, live=False):
    """The committed cases of the named families (all: none named), and their live cases too."""
    chosen = [FAMILIES[name] for name in families] if families else list(FAMILIES.values())
    return [case for family in chosen for case in family.cases + (family.live if live else ())]


# ---------------------------------------------------------------------------------------
# The real checkpoints (weights/, fetched by `make test`)
# ---------------------------------------------------------------------------------------
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
# One case: the seeded weight draw, the inputs, transformers' outputs, what the file keeps
# ---------------------------------------------------------------------------------------
def build_model(case, seed=0):
    """A transformers model for `case`, eager attention, with every parameter drawn at random.

    transformers' own init (std 0.02, norms' weights 1, biases 0) makes activations tiny and
    attention nearly uniform, which would test little. Instead, like a trained model, every
    linear keeps its activations near unit scale (std 1/sqrt(fan_in)), so attention scores are
    O(1) and every path matters. The embedding tables follow the same rule with fan_in = their
    width: where a norm follows them their scale does not change the hidden states, but a
    masked-LM decoder is tied to the word table, and a table of std 0.5 made logits of ~30,
    where float32 rounding alone puts transformers' own output 2e-5 from its float64 result.
    (Likewise a fixed std such as 0.2 at width 256 makes attention scores of ~50 and torch's
    float32 output 1e-4 from float64: no float32 implementation can agree with it to 1e-5.)
    So that every parameter matters, norms' weights are the family's centre (1; Gemma's 0, as
    its norms scale by 1 + w) + N(0, 0.2), biases N(0, 0.1) but N(0, 0.2) where the name says
    norm (the encoders' LayerNorms; GPT-2's ln_* biases count as other biases), and
    relative_attention_bias tables (added straight to the scores) N(0, family.bias_table_std).

    One torch.Generator seeded with `seed` draws every parameter in named_parameters() order.
    """
    import torch
    import transformers

    family = family_of(case["model_type"])
    config = transformers.AutoConfig.for_model(case["model_type"], **case["config"])
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, case["architecture"])(config).eval()
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return std * torch.randn(shape, generator=generator)

    # GPT-2's Conv1D stores its weight [in, out]: its fan-in is the first axis
    in_out = {f"{name}.weight" for name, module in model.named_modules()
              if isinstance(module, transformers.pytorch_utils.Conv1D)}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = parameter.shape
            if parameter.ndim == 1 and name.endswith("weight"):  # a norm's scale
                fill = family.norm_weight_centre + normal(shape, 0.2)
            elif parameter.ndim == 1:  # a bias
                fill = normal(shape, 0.2 if "norm" in name.lower() else 0.1)
            elif "relative_attention_bias" in name and family.bias_table_std is not None:
                fill = normal(shape, family.bias_table_std)
            elif name in in_out:
                fill = normal(shape, shape[0] ** -0.5)
            else:  # linears [out, in], tables [rows, width]
                fill = normal(shape, shape[1] ** -0.5)
                if name.endswith("Attention.q.weight"):
                    # T5 does not scale q . k by 1 / sqrt(d_kv): its init puts that factor into the
                    # query weights. Without it the scores' spread grows as sqrt(d_kv) and the
                    # softmax so amplifies rounding that fp32 transformers itself strays 1.6e-5
                    # from a float64 run.
                    fill = fill * model.config.d_kv ** -0.5
            parameter.copy_(fill)
    return model


def takes_token_types(model, model_type):
    """Whether transformers' forward of this (encoder) model reads token_type_ids."""
    return not family_of(model_type).causal and "token_type_ids" in inspect.signature(model.forward).parameters


def make_inputs(case, config, token_types, seed=0):
    """Random ids for the case's `lengths`, never the pad id, padded on the case's side (right
    unless it says left); int64 arrays input_ids, attention_mask, token_type_ids [batch, seq].

    Encoders pad with their pad_token_id; decoders with 0 (many have none). With `token_types`
    and more than one type, each row is a sentence pair: its second half gets type 1 (or a
    random higher one when there are more types)."""
    rng = np.random.default_rng(seed)
    lengths = case["lengths"]
    seq = max(lengths)
    pad = 0 if family_of(case["model_type"]).causal else config.pad_token_id
    real_ids = np.array([i for i in range(config.vocab_size) if i != pad])
    input_ids = np.full((len(lengths), seq), pad, dtype=np.int64)
    attention_mask = np.zeros((len(lengths), seq), dtype=np.int64)
    token_type_ids = np.zeros((len(lengths), seq), dtype=np.int64)
    type_vocab_size = getattr(config, "type_vocab_size", 1) if token_types else 1
    for row, length in enumerate(lengths):
        real = slice(seq - length, seq) if case.get("padding") == "left" else slice(0, length)
        input_ids[row, real] = rng.choice(real_ids, size=length)
        attention_mask[row, real] = 1
        if type_vocab_size > 1:
            token_type_ids[row, length // 2:length] = rng.integers(1, type_vocab_size, endpoint=False)
    return input_ids, attention_mask, token_type_ids


def run_transformers(model, model_type, input_ids, attention_mask, token_type_ids):
    """transformers' outputs for one batch, as float32 NumPy arrays.

    Encoders: last_hidden_state (after the final norm where there is one) and pooler_output
    (where there is a pooler) of the base model, also under a head; hidden_states, attentions
    and the head's logits. An encoder-decoder checkpoint (MT5ForConditionalGeneration) runs its encoder: that is
    what this package runs. Decoders: their base model's last_hidden_state and hidden_states."""
    import torch

    inputs = dict(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
    if takes_token_types(model, model_type):
        inputs["token_type_ids"] = torch.from_numpy(token_type_ids)
    causal = family_of(model_type).causal
    if causal:
        model = getattr(model, model.base_model_prefix, model)
    forward = model.get_encoder() if getattr(model, "decoder", None) is not None else model
    with torch.no_grad():
        out = forward(**inputs, output_hidden_states=True, output_attentions=not causal)
        last = out if getattr(out, "last_hidden_state", None) is not None else model.base_model(**inputs)
    result = {"last_hidden_state": last.last_hidden_state.numpy(),
              "hidden_states": np.stack([h.numpy() for h in out.hidden_states])}
    if not causal:
        result["attentions"] = np.stack([a.numpy() for a in out.attentions])
    if getattr(last, "pooler_output", None) is not None:
        result["pooler_output"] = last.pooler_output.numpy()
    if getattr(out, "logits", None) is not None:
        result["logits"] = out.logits.numpy()
    return result


def write_case(case, directory, seed=0):
    """Build, save (config.json + model.safetensors) into `directory` and run one case; returns
    its reference dict (every output: `kept` says what the committed file holds)."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    model = build_model(case, seed)
    model.save_pretrained(directory)
    token_types = takes_token_types(model, case["model_type"])
    input_ids, attention_mask, token_type_ids = make_inputs(case, model.config, token_types, seed)
    reference = dict(input_ids=input_ids, attention_mask=attention_mask)
    if not family_of(case["model_type"]).causal:
        reference["token_type_ids"] = token_type_ids
    reference.update(run_transformers(model, case["model_type"], input_ids, attention_mask, token_type_ids))
    return reference


def kept(case, reference):
    """What the committed reference.npz holds of `reference`: every layer's outputs only for
    inputs of at most LAYERS_UP_TO tokens without a head (a head is checked by its logits, a
    long input by its last layer: the files stay small)."""
    if "logits" in reference or max(case["lengths"]) > LAYERS_UP_TO:
        return {key: value for key, value in reference.items() if key not in ("hidden_states", "attentions")}
    return dict(reference)


def case_directory(case):
    return REFERENCES / family_of(case["model_type"]).folder / case["name"]


def write_reference(case, directory=None):
    """Write one case's committed files (config.json, model.safetensors, reference.npz)."""
    directory = Path(directory or case_directory(case))
    reference = write_case(case, directory)
    np.savez_compressed(directory / "reference.npz", **kept(case, reference))


# ---------------------------------------------------------------------------------------
# The real checkpoints
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
    reference = {}
    all_texts = []
    for b, (texts, input_ids, attention_mask, token_type_ids) in enumerate(tokenize_batches(model_dir)[:max_batches]):
        out = run_transformers(model, model.config.model_type, input_ids, attention_mask, token_type_ids)
        reference[f"input_ids_{b}"] = input_ids
        reference[f"attention_mask_{b}"] = attention_mask
        reference[f"token_type_ids_{b}"] = token_type_ids
        reference[f"last_hidden_state_{b}"] = out["last_hidden_state"][attention_mask.astype(bool)]
        reference[f"pooler_output_{b}"] = out["pooler_output"]
        all_texts.extend(texts)
    reference["sentences"] = np.array(all_texts)
    return reference


def real_model_dir(name):
    model_dir = ROOT / "weights" / name
    if not model_dir.is_dir():
        raise SystemExit(f"{model_dir} is missing: run `make test` or `transformer download {name}` first")
    return model_dir


def write_real_reference(name):
    np.savez_compressed(REFERENCES / f"{name}.npz", **real_reference(real_model_dir(name), REAL_MODELS[name]))


# ---------------------------------------------------------------------------------------
# --check: the committed files against what this script makes now
# ---------------------------------------------------------------------------------------
def _largest_difference(ours, theirs):
    """{name: max |ours - theirs|} over two dicts of arrays; inf where a name, shape or dtype differs."""
    differences = {}
    for name in sorted(set(ours) | set(theirs)):
        a, b = ours.get(name), theirs.get(name)
        if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
            differences[name] = float("inf")
        elif a.dtype.kind in "USO":
            differences[name] = 0.0 if np.array_equal(a, b) else float("inf")
        else:
            differences[name] = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))
    return differences


def _scale(arrays):
    return max([1.0] + [float(np.abs(a).max(initial=0.0)) for a in arrays.values() if a.dtype.kind == "f"])


def _describe(differences):
    worst = max(differences, key=differences.get)
    if differences[worst] == 0.0:
        return f"max |diff| 0 over {len(differences)} arrays"
    return f"max |diff| {differences[worst]:.1e} ({worst}, of {len(differences)} arrays)"


def _verdict(differences, scale, rounding=True):
    """'bit-identical'; 'rounding' where the worst difference is within 1e-5 of the arrays'
    scale (torch's float32 kernels round differently from one CPU to another: on another host
    the random cases move by up to ~2e-6 and the 12-layer real checkpoints by ~1.5e-6 on values
    below 1, see tests/test_families_live.py); else 'DIFFERENT' (another draw, config or
    transformers moves them by orders of magnitude more). Weights (`rounding` False) are drawn
    the same on every host: bit-identical or DIFFERENT."""
    worst = max(differences.values(), default=0.0)
    if worst == 0.0:
        return "bit-identical"
    return "rounding" if rounding and worst <= 1e-5 * scale else "DIFFERENT"


def check_case(case, scratch):
    """Re-make `case` under `scratch` and compare with its committed files; prints one line per
    file and returns whether every file is bit-identical or within rounding."""
    from safetensors.numpy import load_file

    committed = case_directory(case)
    label = f"{family_of(case['model_type']).folder}/{case['name']}"
    if not (committed / "reference.npz").is_file():
        print(f"{label}: not committed")
        return False
    fresh = scratch / case["name"]
    reference = kept(case, write_case(case, fresh))
    ok = True
    theirs, ours = (json.loads((d / "config.json").read_text()) for d in (committed, fresh))
    changed = sorted(key for key in set(theirs) | set(ours) if theirs.get(key) != ours.get(key))
    ok &= not changed
    print(f"{label}/config.json: " + ("same" if not changed else f"DIFFERENT in {', '.join(changed)}"))
    for name, ours, theirs in (
            ("model.safetensors", load_file(fresh / "model.safetensors"), load_file(committed / "model.safetensors")),
            ("reference.npz", reference, dict(np.load(committed / "reference.npz")))):
        differences = _largest_difference(ours, theirs)
        verdict = _verdict(differences, _scale(theirs), rounding=name == "reference.npz")
        print(f"{label}/{name}: {_describe(differences)}: {verdict}")
        ok &= verdict != "DIFFERENT"
    return ok


def check_real(name):
    theirs = dict(np.load(REFERENCES / f"{name}.npz"))
    differences = _largest_difference(real_reference(real_model_dir(name), REAL_MODELS[name]), theirs)
    verdict = _verdict(differences, _scale(theirs))
    print(f"{name}.npz: {_describe(differences)}: {verdict}")
    return verdict != "DIFFERENT"


# ---------------------------------------------------------------------------------------
# --report, and the tests' check: our encoder against transformers' outputs
# ---------------------------------------------------------------------------------------
def compare_case(case, model_dir, reference, backend="numpy"):
    """Our encoder on a reference's inputs -> {output name: max |diff| over the real tokens}.

    A decoder's last hidden state in transformers' hidden_states is the final-normed one (ours
    is the last layer's output): it is compared as last_hidden_state. Attention maps are
    compared on the NumPy backend (the numba backend hands them to it)."""
    from transformer.encoder import Encoder

    model = Encoder.from_pretrained(model_dir, backend=backend)
    attentions = "attentions" in reference and backend == "numpy"
    out = model(reference["input_ids"], reference["attention_mask"], reference.get("token_type_ids"),
                output_hidden_states="hidden_states" in reference, output_attentions=attentions)
    real = reference["attention_mask"].astype(bool)
    diffs = {"last_hidden_state": float(np.abs(out.last_hidden_state - reference["last_hidden_state"])[real].max())}
    if "hidden_states" in reference:
        layers = slice(None, -1) if family_of(case["model_type"]).causal else slice(None)
        pairs = zip(out.hidden_states[layers], reference["hidden_states"][layers])
        diffs["hidden_states"] = max(float(np.abs(ours - theirs)[real].max()) for ours, theirs in pairs)
    if attentions:
        diffs["attentions"] = max(float(np.abs(ours - theirs).max())
                                  for ours, theirs in zip(out.attentions, reference["attentions"]))
    if "pooler_output" in reference:
        diffs["pooler_output"] = float(np.abs(out.pooler_output - reference["pooler_output"]).max())
    if "logits" in reference:
        per_token = out.logits.ndim >= 2 and out.logits.shape[:2] == real.shape
        diffs["logits"] = float(np.abs(out.logits - reference["logits"])[real if per_token else slice(None)].max())
    return diffs


def assert_matches(model, reference, tolerance=1e-5):
    """Our `model` (a transformer.encoder.Encoder) gives every output of `reference` within
    `tolerance` over the real tokens; the numba backend runs every layer in one call, and
    layer by layer for the hidden states, so both ways are checked."""
    real = reference["attention_mask"].astype(bool)
    inputs = reference["input_ids"], reference["attention_mask"], reference.get("token_type_ids")
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


def transformers_logit_error(case, reference, seed=0):
    """How far transformers' own float32 logits are from its float64 ones (max |diff|): what
    float32 rounding alone costs at the case's logit magnitude (the tests hold ours to 1e-5)."""
    import torch

    model = build_model(case, seed).double()
    inputs = dict(input_ids=torch.from_numpy(reference["input_ids"]),
                  attention_mask=torch.from_numpy(reference["attention_mask"]))
    if takes_token_types(model, case["model_type"]):
        inputs["token_type_ids"] = torch.from_numpy(reference["token_type_ids"])
    with torch.no_grad():
        exact = model(**inputs).logits.numpy()
    return float(np.abs(reference["logits"] - exact).max())


def report(chosen, real_models, backends):
    """Every chosen case (and its family's live cases) built and run live; prints our max |diff|
    per output and backend, and the worst per family: absolute, and divided by the output's
    largest |value| where that exceeds 1 (float32 rounding grows with the values)."""
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in chosen:
            reference = write_case(case, Path(tmp) / case["name"])
            real = reference["attention_mask"].astype(bool)
            scale = max(1.0, float(np.abs(reference["last_hidden_state"][real]).max()))
            line = f"{case['name']:44s}"
            for backend in backends:
                diffs = compare_case(case, Path(tmp) / case["name"], reference, backend)
                line += f"  {backend}: " + " ".join(f"{k}={v:.1e}" for k, v in diffs.items())
                family = next(name for name, f in FAMILIES.items() if f is family_of(case["model_type"]))
                states = max(v for k, v in diffs.items() if k != "logits")
                previous = worst.get((family, backend), (0.0, 0.0, None))
                logits = diffs.get("logits", previous[2])
                worst[family, backend] = (max(previous[0], states), max(previous[1], states / scale),
                                          logits if previous[2] is None else max(previous[2], logits))
            if scale > 1.0:
                line += f"  (|hidden| up to {scale:.1f})"
            if "logits" in reference and not family_of(case["model_type"]).causal:
                line += f"  (transformers fp32 logits vs fp64: {transformers_logit_error(case, reference):.1e})"
            print(line, flush=True)
    print("\n| family | backend | hidden states, pooler, attentions | the same / max(1, max |hidden|) | logits |")
    print("|---|---|---|---|---|")
    for (family, backend), (states, scaled, logits) in worst.items():
        print(f"| {family} | {backend} | {states:.1e} | {scaled:.1e} | {'-' if logits is None else f'{logits:.1e}'} |")
    from transformer.encoder import Encoder

    for name in real_models:
        model_dir = real_model_dir(name)
        reference = real_reference(model_dir)
        for backend in backends:
            model = Encoder.from_pretrained(model_dir, backend=backend)
            hidden = pooled = 0.0
            b = 0
            while f"input_ids_{b}" in reference:
                mask = reference[f"attention_mask_{b}"]
                out = model(reference[f"input_ids_{b}"], mask, reference[f"token_type_ids_{b}"])
                ours = out.last_hidden_state[mask.astype(bool)]
                hidden = max(hidden, float(np.abs(ours - reference[f"last_hidden_state_{b}"]).max()))
                pooled = max(pooled, float(np.abs(out.pooler_output - reference[f"pooler_output_{b}"]).max()))
                b += 1
            print(f"| {name} (real weights, {len(SENTENCES)} sentences in batches of {BATCH_SIZE}) | {backend} | "
                  f"{hidden:.1e} (pooler {pooled:.1e}) | - | - |")


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------
def check_versions():
    """Refuse unless torch, transformers and tokenizers are the test extra's pins: the committed
    config.json files record transformers' version, and another version may draw or compute
    otherwise."""
    import tomllib

    import tokenizers
    import torch
    import transformers

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    pins = dict(requirement.split("==") for requirement in extra if requirement.split("==")[0] in PINNED)
    installed = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
                 "tokenizers": tokenizers.__version__}
    wrong = [f"{name} {installed[name]} (pyproject.toml pins {pins[name]})" for name in PINNED
             if installed[name] != pins[name]]
    if wrong:
        raise SystemExit(f"tools/make_references.py: {', '.join(wrong)}: the references are made with the test "
                         "extra's pins; run `make setup-test` and use its .venv/bin/python")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See the top of tools/make_references.py for what is written.")
    parser.add_argument("--family", nargs="+", choices=sorted(FAMILIES) + ["real"], default=[], metavar="FAMILY",
                        help=f"only these families' cases: {', '.join(FAMILIES)}, or real (the two real checkpoints)")
    parser.add_argument("--case", nargs="+", default=[], metavar="PREFIX",
                        help="only the cases whose names start with PREFIX")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="write nothing: compare the committed files with "
                                                            "what this script makes now, max |diff| per file")
    mode.add_argument("--report", action="store_true", help="write nothing: our encoder against live "
                                                             "transformers, every case and its live cases")
    mode.add_argument("--list", action="store_true", help="print the families and their cases")
    parser.add_argument("--backend", nargs="+", choices=("numpy", "numba"), default=["numpy", "numba"],
                        help="the backends --report runs")
    args = parser.parse_args(argv)

    families = [name for name in args.family if name != "real"]
    chosen = cases(*families, live=args.report) if families or not args.family else []
    if args.case:
        chosen = [case for case in cases(live=args.report) if case["name"].startswith(tuple(args.case))]
        if not chosen:
            parser.error(f"no case starts with {' or '.join(args.case)}")
    real_models = list(REAL_MODELS) if "real" in args.family or not (args.family or args.case) else []
    if args.list:
        for name, family in FAMILIES.items():
            print(f"{name} (tests/references/{family.folder}/): " + ", ".join(case["name"] for case in family.cases)
                  + (f"; live only: {', '.join(case['name'] for case in family.live)}" if family.live else ""))
        print(f"real: {', '.join(REAL_MODELS)}")
        return 0
    check_versions()
    if args.report:
        report(chosen, real_models, args.backend)
        return 0
    if args.check:
        ok = True
        with tempfile.TemporaryDirectory() as tmp:
            for case in chosen:
                ok &= check_case(case, Path(tmp))
        for name in real_models:
            ok &= check_real(name)
        print("every file is what this script makes" if ok else "some files differ (DIFFERENT above)")
        return 0 if ok else 1
    for case in chosen:
        write_reference(case)
        print(f"wrote {family_of(case['model_type']).folder}/{case['name']}", flush=True)
    for name in real_models:
        write_real_reference(name)
        print(f"wrote {name}.npz", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
