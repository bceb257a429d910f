"""Whole-model gradients: encoder_backward against torch autograd through `transformers`' own
model, on the tiny random checkpoints of every family (tests/references/families), fp32,
padded batches. Every parameter's gradient must agree to relative error <= 1e-4."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformer import backward  # noqa: E402
from transformer.encoder import Encoder  # noqa: E402
from transformer.loading import checkpoint_names  # noqa: E402

FAMILIES = Path(__file__).parent / "references" / "families"
# base-model checkpoints of each family and activation (the head cases reuse the same encoders)
CASES = ["bert_gelu", "bert_gelu_new_4heads", "bert_relu_1head_padding_row", "bert_silu_8heads",
         "distilbert_gelu", "electra_projection", "mpnet_gelu", "roberta_gelu", "xlm_roberta_silu"]
TOLERANCE = 1e-4


def flatten(tree, prefix=""):
    """A params / gradient tree -> {"layers.0.query.weight": array}, None leaves left out."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = ((str(i), part) for i, part in enumerate(tree))
    else:
        return {} if tree is None else {prefix: tree}
    flat = {}
    for name, part in items:
        flat.update(flatten(part, f"{prefix}.{name}" if prefix else name))
    return flat


def torch_gradient(config, torch_grads, ours):
    """The autograd gradient of the torch parameter our name `ours` is stored as, in our
    orientation (linear weights [in, out])."""
    for name in checkpoint_names(config, ours):
        if name in torch_grads:
            grad = torch_grads[name].numpy()
            return grad.T if ours.endswith("weight") and grad.ndim == 2 else grad  # tables end in their own names
    raise KeyError(f"no torch parameter for {ours}")


def gradient_errors(case, loss_of_hidden):
    """{our parameter name: relative error of our gradient against autograd's} for the loss
    `loss_of_hidden(last_hidden_state, attention_mask, xp)` (xp: numpy-like ops) on `case`."""
    reference = dict(np.load(FAMILIES / case / "reference.npz"))
    ids, mask, types = reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]
    encoder = Encoder.from_pretrained(FAMILIES / case, backend="numpy")

    torch_model = transformers.AutoModel.from_pretrained(FAMILIES / case, attn_implementation="eager").eval()
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if encoder.config.recipe.embeddings.token_types:
        kwargs["token_type_ids"] = torch.tensor(types)
    torch_hidden = torch_model(**kwargs).last_hidden_state
    torch_hidden.retain_grad()
    loss_of_hidden(torch_hidden, torch.tensor(mask)).backward()
    torch_grads = {name: p.grad for name, p in torch_model.named_parameters() if p.grad is not None}

    hidden, cache = backward.encoder_forward_with_cache(encoder.params, encoder.config, ids, mask, types)
    d_hidden = torch_hidden.grad.numpy()  # the loss's own gradient: the same array for both
    grads = flatten(backward.encoder_backward(d_hidden, encoder.params, encoder.config, cache))
    errors = {}
    for name, grad in grads.items():
        assert grad.dtype == np.float32, name
        expected = torch_gradient(encoder.config, torch_grads, name)
        scale = np.linalg.norm(expected)
        if name.endswith(".key.bias"):
            # Exactly 0 in exact arithmetic (adding the same q . b_k to a whole row of scores
            # leaves the softmax unchanged): both sides hold rounding noise only. Measured
            # against the key weights' gradient instead, the scale the noise comes from.
            scale = np.linalg.norm(grads[name.replace(".bias", ".weight")])
        errors[name] = float(np.linalg.norm(grad - expected) / max(scale, 1e-30))
    assert set(grads) == set(flatten(encoder.params)) - {"pooler.weight", "pooler.bias"}
    return errors


def weighted_sum_loss(hidden, mask):
    """A loss that reaches every token and every feature: sum(hidden * fixed random weights)."""
    weights = torch.tensor(np.random.default_rng(0).standard_normal(tuple(hidden.shape)).astype(np.float32))
    return (hidden * weights).sum()


def mean_pooled_cosine_loss(hidden, mask):
    """A sentence-embedding loss: mean pooling, normalize, the pairs' cosine similarities."""
    m = mask[..., None].to(hidden.dtype)
    pooled = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
    return (pooled @ pooled.T).triu(1).sum()


@pytest.mark.parametrize("case", CASES)
def test_every_parameter_gradient_matches_autograd(case):
    errors = gradient_errors(case, weighted_sum_loss)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{case}: {worst} relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("case", ["bert_gelu", "mpnet_gelu", "roberta_gelu"])
def test_sentence_loss_gradient_matches_autograd(case):
    errors = gradient_errors(case, mean_pooled_cosine_loss)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{case}: {worst} relative error {errors[worst]:.2e}"


# --- the task heads: cross-encoder classification and masked-LM losses ---------------------
def head_gradient_errors(case):
    """Our loss gradients through the encoder and its head (cross-entropy on the sequence
    classifier's logits, or the masked LM's on a few positions) against transformers' own
    task model + autograd: {our parameter name: relative error}."""
    from transformer import losses

    reference = dict(np.load(FAMILIES / case / "reference.npz"))
    ids, mask, types = reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]
    encoder = Encoder.from_pretrained(FAMILIES / case, backend="numpy")
    config, head, params = encoder.config, encoder.head, encoder.params
    masked = head.kind == "masked_lm"
    task = transformers.AutoModelForMaskedLM if masked else transformers.AutoModelForSequenceClassification
    torch_model = task.from_pretrained(FAMILIES / case, attn_implementation="eager").eval()
    if masked:  # every third real token is predicted, the rest ignored (-100)
        labels = np.where((mask == 1) & (np.arange(ids.shape[1]) % 3 == 1), ids, -100)
    else:
        labels = np.arange(len(ids)) % config.num_labels
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    if config.recipe.embeddings.token_types:
        kwargs["token_type_ids"] = torch.tensor(types)
    expected_loss = torch_model(**kwargs).loss
    expected_loss.backward()
    torch_grads = {name: p.grad for name, p in torch_model.named_parameters() if p.grad is not None}

    hidden, cache = backward.encoder_forward_with_cache(params, config, ids, mask, types)
    if masked:
        logits, head_cache = backward.masked_lm_with_cache(head, config.layer_norm_eps, hidden)
        loss, d_logits = losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        d_hidden, head_grads = backward.masked_lm_backward(d_logits.reshape(logits.shape), head, head_cache)
        pooler_grads = None
    else:
        logits, head_cache = backward.sequence_classification_with_cache(head, params, hidden)
        loss, d_logits = losses.cross_entropy(logits, labels)
        d_hidden, head_grads, pooler_grads = backward.sequence_classification_backward(d_logits, head, params, head_cache)
    assert loss == pytest.approx(float(expected_loss.detach()), rel=1e-5)
    grads = backward.encoder_backward(d_hidden, params, config, cache)
    grads["pooler"] = pooler_grads
    if masked and config.tie_word_embeddings:  # the decoder is the word table, transposed
        decoder = head_grads["decoder"]
        grads["embeddings"]["word"] = grads["embeddings"]["word"] + decoder["weight"].T
        head_grads["decoder"] = {"weight": None, "bias": decoder["bias"]}
    flat = flatten(grads)
    flat.update(flatten(head_grads, head.kind))
    errors = {}
    for name, grad in flat.items():
        expected = torch_gradient(config, torch_grads, name)
        scale = np.linalg.norm(expected)
        if name.endswith(".key.bias"):  # see gradient_errors
            scale = np.linalg.norm(flat[name.replace(".bias", ".weight")])
        errors[name] = float(np.linalg.norm(grad - expected) / max(scale, 1e-30))
    return errors


HEAD_CASES = ["bert_sequence_classification", "distilbert_sequence_classification", "electra_sequence_classification",
              "mpnet_sequence_classification", "roberta_sequence_classification", "bert_masked_lm",
              "distilbert_masked_lm", "electra_masked_lm", "mpnet_masked_lm", "roberta_masked_lm"]


@pytest.mark.parametrize("case", HEAD_CASES)
def test_cross_encoder_and_masked_lm_gradients_match_autograd(case):
    errors = head_gradient_errors(case)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{case}: {worst} relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("case", CASES)
def test_forward_with_cache_computes_what_the_forward_computes(case):
    from transformer.model import encoder_forward

    reference = dict(np.load(FAMILIES / case / "reference.npz"))
    inputs = reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]
    encoder = Encoder.from_pretrained(FAMILIES / case, backend="numpy")
    hidden, _ = backward.encoder_forward_with_cache(encoder.params, encoder.config, *inputs)
    assert np.array_equal(hidden, encoder_forward(encoder.params, encoder.config, *inputs)[0])
