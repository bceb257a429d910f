"""Task heads on top of the encoder's hidden states.

    masked LM                 every token -> a score for every vocabulary word (fill-mask)
    sequence classification   the first token (or BERT's pooler output) -> num_labels scores
    token classification      every token -> num_labels scores (NER, POS tagging)
    discriminator             ELECTRA's pretraining head: every token -> "was it replaced?" score

`load_head` picks the head from config.json's `architectures` (e.g. "BertForMaskedLM") and
loads its tensors. When the architecture names a head whose tensors the file does not hold
(sentence-transformers' all-mpnet-base-v2 says MPNetForMaskedLM but ships only the base
model), it warns and returns None: the encoder still works, it just has no `logits`.

Head parameters use the layout of `transformer.model`: {"weight": [in, out], "bias": [out]}.
The masked-LM decoder shares the word embedding table (tied weights): its weight is a
transposed view of `params["embeddings"]["word"]`, no copy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from transformer.loading import CheckpointError, find_tensor, linear_params
from transformer.model import activation, layer_norm, linear, softmax

# Architecture name endings -> the head they carry. Anything else (XModel, question answering,
# multiple choice) loads the base model only.
_HEAD_OF_SUFFIX = {
    "ForMaskedLM": "masked_lm",
    "ForSequenceClassification": "sequence_classification",
    "ForTokenClassification": "token_classification",
}

# The activation between a head's dense layer and its output is the family's
# (transformer/families/<family>.py: MASKED_LM_ACTIVATION, None meaning config.hidden_act, and
# CLASSIFIER_ACTIVATION, None meaning the pooler output is classified directly): fixed in
# `transformers`' code, not read from hidden_act.


def head_settings(config):
    """How the family's task heads differ from BERT's: its module's `head_settings(config)`
    (ModernBERT), else {}. Keys: activation (of every head's dense layer), dense_bias,
    norm_bias, decoder_bias (False: that part has no bias), classifier_norm (True: the
    classification heads are dense -> activation -> LayerNorm before their output layer),
    pooling ("cls" or "mean": what sequence classification reads)."""
    settings = getattr(config.family_module, "head_settings", None)
    return settings(config) if settings is not None else {}


@dataclass
class Head:
    """A loaded task head.

    kind: "masked_lm", "sequence_classification", "token_classification" or "discriminator".
    architecture: the config.json name it came from. params: {part: {"weight", "bias"} or None}
    with parts "dense", "layer_norm", "out" (the masked LM calls its output "decoder").
    activation: the hidden_act-style name applied after "dense", or None when there is no dense.
    uses_pooler: BERT's sequence classifier reads the pooler output instead of the first token.
    pooling: what sequence classification reads when not the pooler: "cls" (the first token)
    or "mean" (the mean of the real tokens: ModernBERT's classifier_pooling).
    """

    kind: str
    architecture: str
    params: dict
    activation: str | None = None
    uses_pooler: bool = False
    pooling: str = "cls"


def head_kind(config, architecture: str):
    """"BertForMaskedLM" -> "masked_lm"; a base-model or unsupported architecture -> None."""
    if architecture.endswith("ForPreTraining"):
        # BERT pretrains with the masked LM (+ next-sentence prediction, not loaded here);
        # ELECTRA's pretraining model is its discriminator.
        return getattr(config.family_module, "PRETRAINING_HEAD", "masked_lm")
    for suffix, kind in _HEAD_OF_SUFFIX.items():
        if architecture.endswith(suffix):
            return kind
    return None


def load_head(tensors, config, params):
    """The head named by config.architectures, or None (with a warning when the architecture
    promises a head that is unsupported or whose tensors are absent from the checkpoint)."""
    if not config.architectures:
        return None
    architecture = config.architectures[0]
    kind = head_kind(config, architecture)
    if kind is None:
        # A decoder's language-model head predicts the next token; its hidden states are what
        # an embedder reads, so XForCausalLM loads as its base model, quietly.
        if not architecture.endswith(("Model", "ForCausalLM")):
            warnings.warn(
                f"{architecture}: this head is not supported (masked LM, sequence and token "
                f"classification are); loading the base model only", stacklevel=3)
        return None
    loader = {"masked_lm": _load_masked_lm, "sequence_classification": _load_sequence_classifier,
              "token_classification": _load_token_classifier, "discriminator": _load_discriminator}[kind]
    head = loader(tensors, config, params, architecture)
    if head is None:
        warnings.warn(
            f"config.json names {architecture} but the checkpoint holds no {kind} head tensors; "
            f"loading the base model only (outputs have no logits)", stacklevel=3)
    return head


def _first_present(tensors, config, ours):
    """Whether the head's first tensor is in the file: decides 'head absent' vs 'head broken'."""
    return find_tensor(tensors, config, ours, required=False) is not None


def _load_masked_lm(tensors, config, params, architecture):
    if not _first_present(tensors, config, "masked_lm.dense.weight"):
        return None
    settings = head_settings(config)
    if config.tie_word_embeddings:
        decoder_weight = params["embeddings"]["word"].T  # [vocab, emb] -> [emb, vocab], a view
    else:
        decoder_weight = find_tensor(tensors, config, "masked_lm.decoder.weight")
    decoder_bias = find_tensor(tensors, config, "masked_lm.decoder.bias") if settings.get("decoder_bias", True) \
        else None
    head_params = {
        "dense": linear_params(tensors, config, "masked_lm.dense", bias=settings.get("dense_bias", True)),
        "layer_norm": linear_params(tensors, config, "masked_lm.layer_norm", bias=settings.get("norm_bias", True)),
        "decoder": {"weight": decoder_weight, "bias": decoder_bias},
    }
    act = settings.get("activation") or config.family_module.MASKED_LM_ACTIVATION or config.hidden_act
    return Head("masked_lm", architecture, head_params, activation=act)


def _classifier_transform(tensors, config, kind):
    """The dense (+ LayerNorm, with classifier_norm) before a classifier's output layer, for
    families whose heads have one (head_settings): ({"dense", "layer_norm"}, activation)."""
    settings = head_settings(config)
    dense = linear_params(tensors, config, f"{kind}.dense", bias=settings.get("dense_bias", True))
    norm = linear_params(tensors, config, f"{kind}.layer_norm", bias=settings.get("norm_bias", True)) \
        if settings.get("classifier_norm") else None
    return {"dense": dense, "layer_norm": norm}, settings["activation"]


def _load_sequence_classifier(tensors, config, params, architecture):
    if not _first_present(tensors, config, "sequence_classification.out.weight"):
        return None
    settings = head_settings(config)
    if settings:
        head_params, act = _classifier_transform(tensors, config, "sequence_classification")
        head_params["out"] = linear_params(tensors, config, "sequence_classification.out")
        return Head("sequence_classification", architecture, head_params, activation=act,
                    pooling=settings.get("pooling", "cls"))
    module = config.family_module
    # DeBERTa's ContextPooler reads its activation from config.json (pooler_hidden_act)
    act = module.classifier_activation(config) if hasattr(module, "classifier_activation") else \
        module.CLASSIFIER_ACTIVATION
    if act is None and params["pooler"] is None:
        raise CheckpointError(f"{architecture} classifies the pooler output but the checkpoint has no "
                              f"pooler tensors (pooler.dense.weight)")
    head_params = {
        "dense": linear_params(tensors, config, "sequence_classification.dense") if act else None,
        "out": linear_params(tensors, config, "sequence_classification.out"),
    }
    return Head("sequence_classification", architecture, head_params, activation=act, uses_pooler=act is None)


def _load_token_classifier(tensors, config, params, architecture):
    if not _first_present(tensors, config, "token_classification.out.weight"):
        return None
    if head_settings(config):
        head_params, act = _classifier_transform(tensors, config, "token_classification")
        head_params["out"] = linear_params(tensors, config, "token_classification.out")
        return Head("token_classification", architecture, head_params, activation=act)
    return Head("token_classification", architecture,
                {"out": linear_params(tensors, config, "token_classification.out")})


def _load_discriminator(tensors, config, params, architecture):
    if not _first_present(tensors, config, "discriminator.dense.weight"):
        return None
    head_params = {"dense": linear_params(tensors, config, "discriminator.dense"),
                   "out": linear_params(tensors, config, "discriminator.out")}
    return Head("discriminator", architecture, head_params, activation=config.hidden_act)


# ---------------------------------------------------------------------------------------
# The math
# ---------------------------------------------------------------------------------------
def _numpy_linear():
    return linear  # looked up when called: the module's `linear`, i.e. transformer.model.linear


def masked_lm_logits(head_params, activation_name, eps, hidden, linear=None):
    """dense -> activation -> LayerNorm -> decoder (tied to the word table) + bias.

    hidden float32 [batch, seq, hidden] -> logits float32 [batch, seq, vocab_size].
    linear: (x, weight, bias) -> x @ weight + bias; None for `transformer.model.linear`
    (the numba backend passes its GEMM, so no BLAS call).
    """
    linear = linear or _numpy_linear()
    x = linear(hidden, **head_params["dense"])  # [b, s, hidden] -> [b, s, embedding_size]
    x = activation(activation_name)(x)
    x = layer_norm(x, **head_params["layer_norm"], eps=eps)
    return linear(x, **head_params["decoder"])  # [b, s, embedding_size] -> [b, s, vocab]


def _transform(head_params, activation_name, eps, x, linear):
    """A classifier's dense -> activation (-> LayerNorm: ModernBERT), where the family has
    them; x as it is otherwise. float32 [..., hidden] -> [..., hidden]."""
    if head_params.get("dense") is not None:
        x = activation(activation_name)(linear(x, **head_params["dense"]))  # [..., hidden] -> [..., hidden]
    if head_params.get("layer_norm") is not None:
        x = layer_norm(x, **head_params["layer_norm"], eps=eps)
    return x


def sequence_classification_logits(head_params, activation_name, features, linear=None, eps=None):
    """features float32 [batch, hidden] (first token, mean of the tokens, or BERT's pooler
    output) -> (dense -> activation (-> LayerNorm), when the family has them) -> out ->
    [batch, num_labels]."""
    linear = linear or _numpy_linear()
    x = _transform(head_params, activation_name, eps, features, linear)
    return linear(x, **head_params["out"])  # [b, hidden] -> [b, num_labels]


def token_classification_logits(head_params, hidden, linear=None, activation_name=None, eps=None):
    """A linear layer on every token (after ModernBERT's dense -> activation -> LayerNorm):
    [batch, seq, hidden] -> [batch, seq, num_labels]."""
    linear = linear or _numpy_linear()
    return linear(_transform(head_params, activation_name, eps, hidden, linear), **head_params["out"])


def mean_of_tokens(last_hidden_state, attention_mask):
    """The mean of each sequence's real-token vectors: [batch, seq, hidden], [batch, seq] of
    1/0 -> [batch, hidden] (ModernBERT's classifier_pooling "mean", summed as it sums)."""
    mask = np.asarray(attention_mask).astype(np.float32)  # [batch, seq]
    total = (last_hidden_state * mask[:, :, None]).sum(axis=1)  # -> [batch, hidden]
    return total / mask.sum(axis=1, keepdims=True)  # -> [batch, hidden]


def discriminator_logits(head_params, activation_name, hidden, linear=None):
    """ELECTRA's replaced-token detector: [batch, seq, hidden] -> [batch, seq] scores
    (positive: the token looks replaced)."""
    linear = linear or _numpy_linear()
    x = activation(activation_name)(linear(hidden, **head_params["dense"]))  # -> [b, s, hidden]
    return linear(x, **head_params["out"])[..., 0]  # [b, s, 1] -> [b, s]


def head_logits(head, config, last_hidden_state, pooler_output, linear=None, attention_mask=None):
    """Run `head` on the encoder's outputs; the shape depends on the kind (see above).
    linear: the matrix product to use (see `masked_lm_logits`); attention_mask [batch, seq]
    (None: all 1), for a head that pools the mean of the real tokens."""
    eps = config.layer_norm_eps
    if head.kind == "masked_lm":
        return masked_lm_logits(head.params, head.activation, eps, last_hidden_state, linear)
    if head.kind == "sequence_classification":
        if head.uses_pooler:
            features = pooler_output
        elif head.pooling == "mean":
            if attention_mask is None:
                attention_mask = np.ones(last_hidden_state.shape[:2], dtype=np.int64)
            features = mean_of_tokens(last_hidden_state, attention_mask)  # -> [batch, hidden]
        else:
            features = last_hidden_state[:, 0]  # -> [batch, hidden]
        return sequence_classification_logits(head.params, head.activation, features, linear, eps)
    if head.kind == "token_classification":
        return token_classification_logits(head.params, last_hidden_state, linear, head.activation, eps)
    if head.kind == "discriminator":
        return discriminator_logits(head.params, head.activation, last_hidden_state, linear)
    raise ValueError(f"unknown head kind {head.kind!r}")


def top_predictions(logits, input_ids, mask_token_id, top_k=5):
    """For every mask token, the top_k most likely vocabulary ids and their probabilities.

    logits float32 [batch, seq, vocab] (masked LM), input_ids int [batch, seq] ->
    a list (one per sequence) of lists (one per mask token, in order) of (token_id, probability).

        >>> top_predictions(logits, [[101, 1996, 103, 102]], mask_token_id=103, top_k=2)
        [[[(3007, 0.41), (2103, 0.12)]]]
    """
    input_ids = np.asarray(input_ids)
    results = []
    for row_logits, row_ids in zip(logits, input_ids):
        row = []
        for position in np.flatnonzero(row_ids == mask_token_id):
            probabilities = softmax(row_logits[position])  # [vocab]
            best = np.argsort(-probabilities, kind="stable")[:top_k]
            row.append([(int(i), float(probabilities[i])) for i in best])
        results.append(row)
    return results
