"""The checkpoint families, one short module each: a recipe, a name table, config spellings.

    bert        BERT and BERT-architecture checkpoints (MiniLM, bge, e5, gte)
    roberta     RoBERTa, XLM-RoBERTa
    distilbert  DistilBERT
    electra     ELECTRA
    mpnet       MPNet
    modernbert  ModernBERT (gte-modernbert, modernbert-embed)
    nomic_bert  NomicBERT (nomic-embed-text v1, v1.5)
    jina_embeddings_v3  Jina Embeddings v3 (transformers' own port, no LoRA adapters)
    deberta_v2  DeBERTa-v2 / v3, mDeBERTa
    gpt2        GPT-2 (a decoder: causal attention)
    llama       Llama, Mistral (rotary, grouped-query attention, RMSNorm, SwiGLU)
    qwen        Qwen2, Qwen3 (Llama's decoder; Qwen3's per-head q/k norms)
    gemma3      Gemma 3 text, EmbeddingGemma (scaled embeddings, (1 + w) norms both sides)
    t5          T5 and mT5 encoders (sentence-t5, GTR): relative position buckets, no score scaling

A family module defines (see bert.py, the model for the others):

    MODEL_TYPES             the config.json `model_type` values it reads
    DEFAULTS                what `transformers` assumes for a missing config.json key
    TYPE_DEFAULTS           (optional) {model_type: the defaults that differ from DEFAULTS}
    config_keys(raw)        (optional) {our field: the config.json key it is spelled as}
    OPTIONS                 config.json settings that change the math: {key: supported values};
                            any other value is refused at load, naming the key
    config_fields(read)     the EncoderConfig fields the family reads its own way (a dict), and
                            its own checks (`read.fail(message)`); see transformer.config.Reader
    recipe(config)          the `transformer.recipe.Recipe` both backends run
    NAMES                   our parameter names -> the checkpoint's (a tuple: other spellings)
    PREFIX                  what a task model puts before the base model's names ("bert.")
    MASKED_LM_ACTIVATION, CLASSIFIER_ACTIVATION   the task heads' activations (transformer.heads)
    PRETRAINING_HEAD        (optional) the head of XForPreTraining (default "masked_lm")
    HEADS_SPLIT_HIDDEN      (optional) False: the heads' width is the family's own, so hidden_size
                            need not divide by num_attention_heads (T5's d_kv; default True)
    IGNORED_TENSORS         (optional) name prefixes of checkpoint tensors to skip (T5's decoder);
                            with it, any other tensor the name table does not know is refused

Adding a family: write its module, add it to FAMILY_MODULES below, and add what its recipe
needs that a backend does not run yet (a new step kind in each backend); docs/architecture.md
walks through it.
"""

from . import (bert, deberta_v2, distilbert, electra, gemma3, gpt2, jina_embeddings_v3, llama, modernbert, mpnet,
               nomic_bert, qwen, roberta, t5)

# The family name -> its module, in the order the loader tries their task-model prefixes.
FAMILY_MODULES = {"bert": bert, "roberta": roberta, "distilbert": distilbert, "electra": electra, "mpnet": mpnet,
                  "modernbert": modernbert, "nomic_bert": nomic_bert,
                  "jina_embeddings_v3": jina_embeddings_v3, "deberta_v2": deberta_v2,
                  "gpt2": gpt2, "llama": llama, "qwen": qwen, "gemma3": gemma3, "t5": t5}

# config.json's model_type -> the family name.
MODEL_TYPES = {model_type: name for name, module in FAMILY_MODULES.items() for model_type in module.MODEL_TYPES}


def family_module(name):
    """The module of the family called `name` ("bert", "roberta", ...)."""
    return FAMILY_MODULES[name]
