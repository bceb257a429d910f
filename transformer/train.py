"""Fine-tuning a sentence encoder in NumPy: batches -> loss -> gradients -> AdamW, repeated.

One training step, for pairs (anchor, positive) and MultipleNegativesRankingLoss:

    vectors_a, cache_a = embed_with_cache(model, anchors)      tokenize, encoder, pool, normalize
    vectors_b, cache_b = embed_with_cache(model, positives)
    loss, (d_a, d_b) = losses.multiple_negatives_ranking_loss(vectors_a, vectors_b)
    grads = embed_backward(model, d_a, cache_a) + embed_backward(model, d_b, cache_b)
    clip_by_global_norm(grads, 1.0); optimizer.step(params, grads, lr)

`Trainer` runs that over epochs with a seeded shuffle, gradient accumulation, warm-up and
linear decay, and saves sentence-transformers folders (`save_sentence_model`) that
sentence-transformers, transformers and `SentenceEncoder` load. Dropout is off: training here
is deterministic (the same seed gives the same model).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from transformer import backward, losses, pooling
from transformer.loading import checkpoint_names, recipe_part
from transformer.model import linear
from transformer.optim import AdamW, clip_by_global_norm, leaves, linear_schedule
from transformer.recipe import Linear

BACKENDS = ("numpy", "numba")
LOSSES = ("mnrl", "cosent", "softmax", "cross-encoder", "mlm")
HEAD_LOSSES = {"cross-encoder": "sequence_classification", "mlm": "masked_lm"}  # losses that train a task head
MASKED_FRACTION = 0.15  # BERT's masking: 15% of the tokens, of those 80% [MASK], 10% random, 10% kept


# ---------------------------------------------------------------------------------------
# The model's forward with a cache, and its backward
# ---------------------------------------------------------------------------------------
def tokenize(model, texts):
    """Texts -> int64 arrays [batch, seq] (input_ids, attention_mask, token_type_ids), padded to
    the longest text, cut at the model's max_seq_length (as sentence-transformers batches)."""
    if model.do_lower_case:
        texts = [text.lower() for text in texts]
    batch = model.tokenizer(list(texts), padding=True, truncation=True, max_length=model.max_seq_length)
    return batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]


def embed_with_cache(model, params, texts, steps=None):
    """Sentence vectors of `texts` with `params` (model: a SentenceEncoder: tokenizer, pooling
    modes, normalize) -> (vectors float32 [batch, dim], cache for embed_backward). steps: the
    building blocks (`backward.NUMPY_STEPS`, the default, or `backward.numba_steps()`)."""
    return vectors_with_cache(model, params, *tokenize(model, texts), steps=steps)


def vectors_with_cache(model, params, input_ids, attention_mask, token_type_ids, steps=None):
    """Token ids int64 [batch, seq] -> (sentence vectors float32 [batch, dim], cache): the
    encoder, the model's pooling modes side by side, and its Normalize when it has one."""
    if getattr(model, "dense", None):
        raise NotImplementedError(f"training a model with Dense modules after its pooling ({model.path}) is not "
                                  f"supported: only the encoder, the pooling and Normalize are trained")
    config = model.encoder.config
    hidden, cache = backward.encoder_forward_with_cache(params, config, input_ids, attention_mask,
                                                        token_type_ids, steps)  # -> [batch, seq, hidden]
    pooled = pooling.pool(hidden, attention_mask, model.pooling_modes)  # -> [batch, modes * hidden]
    vectors = pooling.normalize(pooled) if model.normalize else pooled
    return vectors, dict(encoder=cache, hidden=hidden, attention_mask=attention_mask, pooled=pooled)


def embed_backward(model, params, d_vectors, cache, steps=None):
    """The gradient of every encoder parameter from d_vectors [batch, dim] (the loss's
    gradient with respect to the vectors embed_with_cache returned)."""
    d_pooled = backward.normalize_backward(d_vectors, cache["pooled"]) if model.normalize else d_vectors
    hidden, mask = cache["hidden"], cache["attention_mask"]
    width = hidden.shape[-1]
    d_hidden = np.zeros_like(hidden)
    for index, mode in enumerate(model.pooling_modes):  # pooled = the modes' vectors side by side
        if mode not in backward.POOLING_BACKWARDS:
            raise NotImplementedError(f"training through {mode!r} pooling (trainable: "
                                      f"{', '.join(backward.POOLING_BACKWARDS)})")
        d_hidden += backward.POOLING_BACKWARDS[mode](d_pooled[:, index * width:(index + 1) * width], mask, hidden)
    return backward.encoder_backward(d_hidden, params, model.encoder.config, cache["encoder"], steps)


def add_trees(a, b):
    """Two gradient trees -> their sum (None + None = None)."""
    if isinstance(a, dict):
        return {name: add_trees(a[name], b[name]) for name in a}
    if isinstance(a, list):
        return [add_trees(x, y) for x, y in zip(a, b)]
    if a is None:
        return b
    return a if b is None else a + b


def add_into(total, more):
    """total += more for two gradient trees, in place where total has an array (the word
    table's gradient alone is tens of MB: no new tree per addition) -> total."""
    if isinstance(total, dict):
        for name in total:
            total[name] = add_into(total[name], more[name])
        return total
    if isinstance(total, list):
        total[:] = [add_into(x, y) for x, y in zip(total, more)]
        return total
    if total is None:
        return more
    if more is not None:
        total += more
    return total


def scale_tree(tree, factor):
    if isinstance(tree, dict):
        return {name: scale_tree(part, factor) for name, part in tree.items()}
    if isinstance(tree, list):
        return [scale_tree(part, factor) for part in tree]
    return None if tree is None else tree * np.float32(factor)


def sentence_loss(settings, labels, classifier):
    """The loss `settings.loss` as a function of the batch's vectors alone:
    (*vectors) -> (loss, (d_vectors, ...), [d_classifier])."""
    if settings.loss == "mnrl":
        loss = lambda *vectors: losses.multiple_negatives_ranking_loss(  # noqa: E731
            *vectors, symmetric=settings.symmetric)
    elif settings.loss == "cosent":
        loss = lambda a, b: losses.cosent_loss(a, b, labels)  # noqa: E731
    elif settings.loss == "softmax":
        loss = lambda *vectors: (losses.classification_loss(vectors[0], labels, classifier) if len(vectors) == 1
                                 else losses.softmax_loss(*vectors, labels, classifier))  # noqa: E731
    else:
        raise ValueError(f"{settings.loss!r} is not a loss of sentence vectors; expected mnrl, cosent or softmax")
    if settings.matryoshka_dims:
        if settings.loss == "softmax":
            raise ValueError("MatryoshkaLoss wraps losses of the vectors alone (mnrl, cosent), not softmax")
        loss = losses.matryoshka(loss, settings.matryoshka_dims)
    return loss


def loss_and_gradients(model, params, settings, batch, classifier=None, steps=None):
    """One batch -> (loss, gradient tree {"encoder": ..., "classifier": ... or None}).

    batch: (texts_a, texts_b or None, labels or None): each text column is embedded on its
    own (padded to its own longest text), as sentence-transformers does; classifier: the
    softmax loss's head; steps: the building blocks (None: NumPy's)."""
    texts_a, texts_b, labels = batch
    columns = [texts_a] if texts_b is None else [texts_a, texts_b]
    embedded = [embed_with_cache(model, params, texts, steps) for texts in columns]
    value, d_vectors, *rest = sentence_loss(settings, labels, classifier)(*(vectors for vectors, _ in embedded))
    grads = None
    for d, (_, cache) in zip(d_vectors, embedded):
        column_grads = embed_backward(model, params, d, cache, steps)
        grads = column_grads if grads is None else add_into(grads, column_grads)  # both fresh arrays
    return value, {"encoder": grads, "classifier": rest[0] if rest else None, "head": None}


# ---------------------------------------------------------------------------------------
# Losses through a task head: cross-encoder classification, masked LM
# ---------------------------------------------------------------------------------------
def task_head(encoder, kind, num_labels, seed):
    """The encoder's own head of `kind` when the checkpoint has one, else a new one with BERT's
    initialisation (normal(0, 0.02) weights, zero biases, LayerNorm scale 1), the decoder of
    a masked LM tied to the word table. A copy of the weights (training updates them)."""
    from transformer.heads import Head
    from transformer.untrained import random_params

    config, params = encoder.config, encoder.params
    family = config.family_module
    head = encoder.head if encoder.head is not None and encoder.head.kind == kind else None
    if kind == "sequence_classification":
        if head is not None and (num_labels in (0, head.params["out"]["weight"].shape[1])):
            return Head(kind, head.architecture, writable(head.params), head.activation, head.uses_pooler)
        hidden, activation = config.hidden_size, family.CLASSIFIER_ACTIVATION
        if activation is None and params["pooler"] is None:
            raise ValueError(f"a {config.model_type} classifier reads the pooler output, and this checkpoint has "
                             f"no pooler")
        shapes = {"dense": {"weight": np.zeros((hidden, hidden), np.float32), "bias": np.zeros(hidden, np.float32)}
                  if activation else None,
                  "out": {"weight": np.zeros((hidden, max(num_labels, 1)), np.float32),
                          "bias": np.zeros(max(num_labels, 1), np.float32)}}
        return Head(kind, _task_architecture(config, "ForSequenceClassification"),
                    random_params(shapes, np.random.default_rng(seed)), activation, activation is None)
    if head is not None:
        head_params = writable(head.params)
        activation, architecture = head.activation, head.architecture
    else:
        hidden, size = config.hidden_size, config.embedding_size
        shapes = {"dense": {"weight": np.zeros((hidden, size), np.float32), "bias": np.zeros(size, np.float32)},
                  "layer_norm": {"weight": np.zeros(size, np.float32), "bias": np.zeros(size, np.float32)},
                  "decoder": {"weight": np.zeros((size, config.vocab_size), np.float32),
                              "bias": np.zeros(config.vocab_size, np.float32)}}
        head_params = random_params(shapes, np.random.default_rng(seed))
        activation = family.MASKED_LM_ACTIVATION or config.hidden_act
        architecture = _task_architecture(config, "ForMaskedLM")
    if config.tie_word_embeddings:
        head_params["decoder"]["weight"] = params["embeddings"]["word"].T  # a view: the word table itself
    return Head(kind, architecture, head_params, activation)


# config.json model_type -> the `transformers` class name's stem (BertForMaskedLM, ...)
TASK_CLASS_STEMS = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert",
                    "electra": "Electra", "mpnet": "MPNet"}


def _task_architecture(config, suffix):
    return TASK_CLASS_STEMS[config.model_type] + suffix


def mask_tokens(input_ids, special, mask_token_id, vocab_size, rng):
    """BERT's masking: MASKED_FRACTION of the tokens that are not special become prediction
    targets; of those 80% are replaced by [MASK], 10% by a random word, 10% kept.
    input_ids int64 [batch, seq]; special bool [batch, seq] (special tokens and padding) ->
    (masked ids [batch, seq], labels [batch, seq]: the original id at targets, -100 elsewhere)."""
    chosen = (rng.random(input_ids.shape) < MASKED_FRACTION) & ~special
    if not chosen.any():  # a batch with no target has no loss: predict one token at least
        candidates = np.argwhere(~special)
        chosen[tuple(candidates[rng.integers(len(candidates))])] = True
    labels = np.where(chosen, input_ids, -100)
    draw = rng.random(input_ids.shape)
    masked = np.where(chosen & (draw < 0.8), mask_token_id, input_ids)
    random_words = rng.integers(0, vocab_size, input_ids.shape)
    masked = np.where(chosen & (draw >= 0.8) & (draw < 0.9), random_words, masked)
    return masked, labels


def head_loss_and_gradients(model, params, head, settings, batch, rng, steps=None):
    """One batch through the encoder and a task head -> (loss, {"encoder", "classifier": None,
    "head"} gradients).

    cross-encoder: batch (texts_a, texts_b, labels) is tokenized as pairs ([CLS] a [SEP] b
    [SEP]); one output logit trains with binary cross-entropy on labels in [0, 1]
    (sentence-transformers' CrossEncoder with num_labels=1), more with cross-entropy on class ids.
    mlm: batch (texts, None, None); `rng` draws the masking (mask_tokens)."""
    texts_a, texts_b, labels = batch
    config = model.encoder.config
    if settings.loss == "cross-encoder":
        texts = [text.lower() for text in texts_a] if model.do_lower_case else list(texts_a)
        pairs = [text.lower() for text in texts_b] if model.do_lower_case else list(texts_b)
        tokens = model.tokenizer(texts, pairs, padding=True, truncation=True, max_length=model.max_seq_length)
        input_ids, attention_mask, token_type_ids = (
            tokens[k] for k in ("input_ids", "attention_mask", "token_type_ids"))
    else:
        input_ids, attention_mask, token_type_ids = tokenize(model, texts_a)
        special = model.tokenizer(list(texts_a), padding=True, truncation=True, max_length=model.max_seq_length,
                                  return_special_tokens_mask=True)["special_tokens_mask"].astype(bool)
        input_ids, labels = mask_tokens(input_ids, special | (attention_mask == 0), model.tokenizer.mask_token_id,
                                        config.vocab_size, rng)
    hidden, cache = backward.encoder_forward_with_cache(params, config, input_ids, attention_mask, token_type_ids,
                                                        steps)
    if settings.loss == "cross-encoder":
        logits, head_cache = backward.sequence_classification_with_cache(head, params, hidden)  # [batch, labels]
        if logits.shape[1] == 1:
            loss, d_scores = losses.binary_cross_entropy(logits[:, 0], labels)
            d_logits = d_scores[:, None]
        else:
            loss, d_logits = losses.cross_entropy(logits, np.asarray(labels, dtype=np.int64))
        d_hidden, head_grads, pooler_grads = backward.sequence_classification_backward(
            d_logits, head, params, head_cache)
    else:
        logits, head_cache = backward.masked_lm_with_cache(head, config.layer_norm_eps, hidden)  # [b, s, vocab]
        loss, d_logits = losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        d_hidden, head_grads = backward.masked_lm_backward(d_logits.reshape(logits.shape), head, head_cache)
        pooler_grads = None
    grads = backward.encoder_backward(d_hidden, params, config, cache, steps)
    grads["pooler"] = pooler_grads
    if head.kind == "masked_lm" and config.tie_word_embeddings:
        # the decoder is the word table: its gradient goes there, and the optimizer skips the view
        grads["embeddings"]["word"] = grads["embeddings"]["word"] + head_grads["decoder"]["weight"].T
        head_grads["decoder"]["weight"] = None
    return loss, {"encoder": grads, "classifier": None, "head": head_grads}


# ---------------------------------------------------------------------------------------
# Settings, state, the loop
# ---------------------------------------------------------------------------------------
@dataclass
class Settings:
    """A training run's hyperparameters (sentence-transformers' fit defaults where it has them)."""

    loss: str = "mnrl"
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-5
    warmup_steps: int = 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    accumulation_steps: int = 1
    seed: int = 0
    shuffle: bool = True
    symmetric: bool = False
    matryoshka_dims: tuple = ()
    num_labels: int = 0
    label_names: tuple = ()  # the class names of softmax / cross-encoder labels, in id order
    backend: str = "numpy"  # "numba": the matrix products and the heaviest element-wise steps on Numba kernels

    def check(self):
        """Raise ValueError naming the first setting out of its range."""
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be > 0, got {self.lr}")
        for name in ("epochs", "batch_size", "accumulation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("warmup_steps and weight_decay must be >= 0 and max_grad_norm > 0")


@dataclass
class State:
    """Where a run is: optimizer steps done, the batches of the current epoch done."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    losses: list = field(default_factory=list)


class Trainer:
    """Trains `model` (a SentenceEncoder) on `examples` with `settings`.

    examples: a list of (text_a, text_b or None, label or None). model.encoder becomes a
    numpy-backend encoder over a copy of the weights, trained in place; `save(folder)`
    writes the model's folder and the state to resume from (`Trainer.resume(folder, examples)`).
    """

    def __init__(self, model, examples, settings, classifier=None):
        settings.check()
        from transformer.encoder import Encoder

        # Training updates the weights in place: a numpy-backend encoder over a copy of them
        # (loaded weights may be read-only maps; the numba backend keeps its own layout).
        encoder = model.encoder
        model.encoder = Encoder(encoder.config, writable(encoder.params), head=encoder.head, backend="numpy",
                                path=encoder.path)
        self.model, self.examples, self.settings = model, list(examples), settings
        self.params = {"encoder": model.encoder.params, "classifier": classifier, "head": None}
        self.head = None
        if settings.loss in HEAD_LOSSES:
            self.head = task_head(model.encoder, HEAD_LOSSES[settings.loss], settings.num_labels, settings.seed)
            self.params["head"] = self.head.params
        if settings.loss == "softmax" and classifier is None:
            features = model.dimension * (3 if self.examples[0][1] is not None else 1)
            self.params["classifier"] = new_classifier(features, settings.num_labels, settings.seed)
        self.optimizer = AdamW(weight_decay=settings.weight_decay, fused=settings.backend == "numba")
        self.state = State()
        self.no_decay = no_decay_paths(model.encoder.config, self.params)

    @property
    def batches_per_epoch(self):
        return -(-len(self.examples) // self.settings.batch_size)

    @property
    def total_steps(self):
        return self.batches_per_epoch // self.settings.accumulation_steps * self.settings.epochs

    def epoch_order(self, epoch):
        """The example indices of `epoch`, shuffled by (seed, epoch): a resumed run sees the
        same order as an uninterrupted one."""
        if not self.settings.shuffle:
            return np.arange(len(self.examples))
        return np.random.default_rng([self.settings.seed, epoch]).permutation(len(self.examples))

    def batch(self, indices):
        rows = [self.examples[i] for i in indices]
        labels = None if rows[0][2] is None else np.array([row[2] for row in rows])
        texts_b = None if rows[0][1] is None else [row[1] for row in rows]
        return [row[0] for row in rows], texts_b, labels

    def run(self, on_step=None, on_epoch=None, stop_after=None):
        """Train to the end (or `stop_after` more optimizer steps). on_step(state, loss, lr)
        is called after each optimizer step, on_epoch(epoch) after each epoch (0 first).
        Returns the list of every step's loss."""
        settings = self.settings
        done_now = 0
        while self.state.epoch < settings.epochs:
            order = self.epoch_order(self.state.epoch)
            batches = [order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
            usable = len(batches) // settings.accumulation_steps * settings.accumulation_steps
            while self.state.batch_in_epoch < usable:
                if stop_after is not None and done_now >= stop_after:
                    return self.state.losses
                start = self.state.batch_in_epoch
                loss, lr = self.step([self.batch(b) for b in batches[start:start + settings.accumulation_steps]])
                self.state.batch_in_epoch += settings.accumulation_steps
                done_now += 1
                if on_step is not None:
                    on_step(self.state, loss, lr)
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            if on_epoch is not None:
                on_epoch(self.state.epoch - 1)
        return self.state.losses

    def step(self, batches):
        """One optimizer step from one or more batches (gradient accumulation: their gradients
        averaged). Returns (the mean loss, the learning rate used)."""
        settings = self.settings
        total_loss, grads = 0.0, None
        steps = backward.steps_of(settings.backend)
        for index, batch in enumerate(batches):
            if self.head is not None:
                rng = np.random.default_rng([settings.seed, self.state.step, index])  # the masking's draw
                loss, batch_grads = head_loss_and_gradients(self.model, self.params["encoder"], self.head, settings,
                                                            batch, rng, steps)
            else:
                loss, batch_grads = loss_and_gradients(
                    self.model, self.params["encoder"], settings, batch, self.params["classifier"], steps)
            total_loss += loss
            grads = batch_grads if grads is None else add_into(grads, batch_grads)
        if len(batches) > 1:
            grads = scale_tree(grads, 1.0 / len(batches))
        clip_by_global_norm(grads, settings.max_grad_norm, fused=settings.backend == "numba")
        lr = linear_schedule(self.state.step, settings.lr, settings.warmup_steps, self.total_steps)
        self.optimizer.step(self.params, grads, lr, self.no_decay)
        self.state.step += 1
        mean_loss = total_loss / len(batches)
        self.state.losses.append(mean_loss)
        return mean_loss, lr

    # --- checkpoints --------------------------------------------------------------------
    def save(self, folder, overwrite=True):
        """A sentence-transformers folder of the model now (a `transformers` task-model folder
        for cross-encoder and mlm: XForSequenceClassification, XForMaskedLM), plus
        training_state/ to resume."""
        folder = Path(folder)
        if self.head is not None:
            save_task_model(self.model, self.params["encoder"], self.head, folder, overwrite=overwrite,
                            label_names=self.settings.label_names)
        else:
            save_sentence_model(self.model, self.params["encoder"], folder, overwrite=overwrite)
        if self.params["classifier"] is not None:
            save_classifier(self.params["classifier"], folder / CLASSIFIER_DIR, self.settings.label_names)
        state_dir = folder / "training_state"
        state_dir.mkdir(exist_ok=True)
        numbers, arrays = self.optimizer.state()
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, state_dir / "optimizer.safetensors.tmp")
        os.replace(state_dir / "optimizer.safetensors.tmp", state_dir / "optimizer.safetensors")
        (state_dir / "state.json.tmp").write_text(json.dumps(
            {"settings": {**asdict(self.settings), "matryoshka_dims": list(self.settings.matryoshka_dims),
                          "label_names": list(self.settings.label_names)},
             "state": asdict(self.state), "optimizer": numbers}, indent=1))
        os.replace(state_dir / "state.json.tmp", state_dir / "state.json")

    @classmethod
    def resume(cls, folder, examples):
        """The Trainer saved in `folder`, ready to `run` on from where it stopped."""
        from safetensors.numpy import load_file

        from transformer.sentence import SentenceEncoder

        folder = Path(folder)
        saved = json.loads((folder / "training_state" / "state.json").read_text())
        settings = Settings(**{**saved["settings"], "matryoshka_dims": tuple(saved["settings"]["matryoshka_dims"]),
                               "label_names": tuple(saved["settings"]["label_names"])})
        arrays = load_file(folder / "training_state" / "optimizer.safetensors")
        classifier = load_classifier(folder / CLASSIFIER_DIR) if (folder / CLASSIFIER_DIR).is_dir() else None
        model = SentenceEncoder.from_pretrained(folder, backend="numpy")
        trainer = cls(model, examples, settings, classifier=classifier)
        trainer.state = State(**saved["state"])
        # the optimizer's paths are those of trainer.params: "encoder/...", "classifier/..."
        trainer.optimizer.load_state(saved["optimizer"], arrays)
        return trainer


def writable(tree):
    """A copy of a params tree whose arrays can be updated in place (loaded weights may be
    read-only memory maps)."""
    if isinstance(tree, dict):
        return {name: writable(part) for name, part in tree.items()}
    if tree is None or isinstance(tree, np.ndarray):
        return None if tree is None else np.array(tree, dtype=np.float32, copy=True)
    return [writable(part) for part in tree]  # a list, or the numba backend's sequence of layers


def new_classifier(features, num_labels, seed):
    """A fresh linear classifier [features -> num_labels], torch.nn.Linear's initialisation
    (uniform in +-1/sqrt(features))."""
    if num_labels < 2:
        raise ValueError(f"the softmax loss needs at least 2 classes, got num_labels={num_labels}")
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(features)
    return {"weight": rng.uniform(-bound, bound, (features, num_labels)).astype(np.float32),
            "bias": rng.uniform(-bound, bound, num_labels).astype(np.float32)}


# The softmax loss's classifier: sentence-transformers keeps SoftmaxLoss's nn.Linear in the loss
# and saves none of it. Ours is written beside the model, in the layout of sentence-transformers'
# Dense module (config.json + model.safetensors with linear.weight [out, in], linear.bias), so
# `sentence_transformers.sentence_transformer.modules.Dense.load(folder + "/classifier")` reads it. It is not in
# modules.json: the folder still encodes sentence vectors, not logits.
CLASSIFIER_DIR = "classifier"
IDENTITY = "torch.nn.modules.linear.Identity"


def save_classifier(classifier, folder, label_names=()):
    """Write {"weight": [features, labels], "bias": [labels]} to `folder` as a
    sentence-transformers Dense module (logits = features @ weight + bias, no activation),
    with labels.json naming the classes in id order when label_names are given."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    features, labels = classifier["weight"].shape
    config = {"in_features": features, "out_features": labels, "bias": True, "activation_function": IDENTITY}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tensors = {"linear.weight": np.ascontiguousarray(classifier["weight"].T, dtype=np.float32),  # torch's [out, in]
               "linear.bias": np.ascontiguousarray(classifier["bias"], dtype=np.float32)}
    save_file(tensors, folder / "model.safetensors.tmp", metadata={"format": "pt"})
    os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")
    if len(label_names) == labels:
        (folder / "labels.json").write_text(json.dumps(list(label_names)) + "\n", encoding="utf-8")


def load_classifier(folder):
    """The classifier save_classifier wrote -> {"weight": [features, labels], "bias": [labels]}."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("activation_function", IDENTITY) != IDENTITY:
        raise ValueError(f"{folder / 'config.json'}: activation_function {config['activation_function']!r}; a "
                         f"classifier of the softmax loss has none ({IDENTITY})")
    tensors = load_file(folder / "model.safetensors")
    expected = {"linear.weight": (config["out_features"], config["in_features"]),
                "linear.bias": (config["out_features"],)}
    for name, shape in expected.items():
        if name not in tensors or tensors[name].shape != shape:
            found = tensors[name].shape if name in tensors else "missing"
            raise ValueError(f"{folder / 'model.safetensors'}: {name} is {found}, expected {shape}")
    return {"weight": np.array(tensors["linear.weight"].T, dtype=np.float32),
            "bias": np.array(tensors["linear.bias"], dtype=np.float32)}


def no_decay_paths(config, params):
    """The paths of `params` that get no weight decay: every bias and every norm's parameters
    (sentence-transformers' and transformers' Trainer's rule)."""
    recipe = config.recipe
    norm_names = {norm.name for layer in recipe.layers for norm in layer.norms()}
    norm_names |= {norm.name for norm in (recipe.embeddings.norm, recipe.final_norm) if norm is not None}
    return frozenset(path for path, _ in leaves(params)
                     if path.endswith("/bias") or any(f"/{name}/" in path for name in norm_names))


# ---------------------------------------------------------------------------------------
# Saving a sentence-transformers folder
# ---------------------------------------------------------------------------------------
MODEL_FILES = (".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".gguf")


def checkpoint_tensors(config, params):
    """Our params tree -> {checkpoint name: array} in PyTorch's layout (linear weights [out,
    in]), the names a base model of the family is saved under."""
    tensors = {}
    for path, array in leaves(params):
        ours = path.replace("/", ".")
        name = checkpoint_names(config, ours)[0]
        owner, _, part = ours.rpartition(".")
        spec = recipe_part(config, owner) if owner else None
        is_linear_weight = part == "weight" and (isinstance(spec, Linear) or owner == "pooler")
        tensors[name] = np.ascontiguousarray(array.T if is_linear_weight else array, dtype=np.float32)
    return tensors


def save_sentence_model(model, params, folder, overwrite=False):
    """Write `model` with `params` as a sentence-transformers folder: the source folder's
    configuration and tokenizer files, and model.safetensors with the new weights.

    model: a SentenceEncoder loaded from a folder (model.path). Raises FileExistsError when
    `folder` exists and is not empty, unless overwrite.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"the output folder {folder} exists and is not empty; pass overwrite=True "
                              f"(--overwrite) to replace it")
    source = model.path
    if source is None:
        raise ValueError("the model has no source folder (model.path) to copy its configuration from")
    folder.mkdir(parents=True, exist_ok=True)
    if source.resolve() != folder.resolve():
        for item in source.rglob("*"):
            relative = item.relative_to(source)
            if any(part.startswith(".") for part in relative.parts) or relative.parts[0] in ("training_state",
                                                                                               CLASSIFIER_DIR):
                continue  # caches and download records of the source, its training state and classifier
            if item.is_dir():
                (folder / relative).mkdir(parents=True, exist_ok=True)
            elif not item.name.endswith(MODEL_FILES + (".tmp",)):
                shutil.copyfile(item, folder / relative)
    from transformer.sentence import read_modules

    transformer_dir = folder / read_modules(folder)["transformer"]
    tensors = checkpoint_tensors(model.encoder.config, params)
    # written aside, then renamed: an interrupted save leaves the previous file whole
    save_file(tensors, transformer_dir / "model.safetensors.tmp", metadata={"format": "pt"})
    os.replace(transformer_dir / "model.safetensors.tmp", transformer_dir / "model.safetensors")


# sentence-transformers' own files: a task-model folder is a plain `transformers` folder
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def save_task_model(model, params, head, folder, overwrite=False, label_names=()):
    """Write the encoder with its task head as a `transformers` folder (config.json naming
    the architecture, model.safetensors with the task model's names, the tokenizer files),
    which AutoModelForSequenceClassification / AutoModelForMaskedLM and sentence-transformers'
    CrossEncoder load."""
    from safetensors.numpy import save_file

    from transformer.sentence import read_modules

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"the output folder {folder} exists and is not empty; pass overwrite=True "
                              f"(--overwrite) to replace it")
    config = model.encoder.config
    source = model.path / read_modules(model.path)["transformer"]
    folder.mkdir(parents=True, exist_ok=True)
    if source.resolve() != folder.resolve():
        for item in source.iterdir():
            if item.is_file() and not item.name.startswith(".") and item.name not in SENTENCE_FILES \
                    and not item.name.endswith(MODEL_FILES + (".tmp",)):
                shutil.copyfile(item, folder / item.name)
    raw = json.loads((source / "config.json").read_text(encoding="utf-8"))
    raw["architectures"] = [head.architecture]
    if head.kind == "sequence_classification":
        count = head.params["out"]["weight"].shape[1]
        names = list(label_names) if len(label_names) == count else [f"LABEL_{i}" for i in range(count)]
        raw["num_labels"] = count
        raw["id2label"] = {str(i): name for i, name in enumerate(names)}
        raw["label2id"] = {name: i for i, name in enumerate(names)}
    (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    prefix = config.family_module.PREFIX
    tensors = {prefix + name: array for name, array in checkpoint_tensors(config, params).items()}
    tied = head.kind == "masked_lm" and config.tie_word_embeddings
    for part, values in head.params.items():
        for key, array in (values or {}).items():
            if array is None or (tied and part == "decoder" and key == "weight"):
                continue  # transformers ties the decoder to the word table itself
            name = checkpoint_names(config, f"{head.kind}.{part}.{key}")[0]
            tensors[name] = np.ascontiguousarray(array.T if array.ndim == 2 else array, dtype=np.float32)
    save_file(tensors, folder / "model.safetensors.tmp", metadata={"format": "pt"})
    os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")


# ---------------------------------------------------------------------------------------
# Reading training data: TSV or JSONL
# ---------------------------------------------------------------------------------------
# What each loss reads from a row: (field names in TSV order, the label's kind or None).
ROW_FORMATS = {
    "mnrl": (("anchor", "positive"), None),
    "cosent": (("a", "b", "score"), "score"),
    "softmax": (("text", "label"), "class"),
    "cross-encoder": (("a", "b", "label"), "class"),
    "mlm": (("text",), None),
}
# JSONL keys accepted for each field, first match wins.
JSON_KEYS = {
    "anchor": ("anchor", "sentence1", "text1", "query", "a"),
    "positive": ("positive", "sentence2", "text2", "document", "b"),
    "a": ("a", "sentence1", "text1", "anchor"),
    "b": ("b", "sentence2", "text2", "positive"),
    "text": ("text", "sentence"),
    "score": ("score", "label"),
    "label": ("label", "score"),
}


class DataError(ValueError):
    """A training file that cannot be read as the loss needs, naming the file and line."""


def read_examples(path, loss):
    """A TSV or JSONL file (by its suffix: .jsonl / .json for JSON lines, anything else TSV)
    -> a list of (text_a, text_b or None, label or None) for `loss`:

        mnrl      anchor<TAB>positive                    {"anchor": ..., "positive": ...}
        cosent    a<TAB>b<TAB>score (a number)           {"a": ..., "b": ..., "score": 0.8}
        softmax   text<TAB>label (any string or number)  {"text": ..., "label": ...}
        cross-encoder  a<TAB>b<TAB>label                 {"a": ..., "b": ..., "label": ...}
        mlm       text                                   {"text": ...}

    Empty lines are skipped. Class labels stay as written; `label_ids` numbers them.
    Raises DataError naming the file, the line and what was expected.
    """
    path = Path(path)
    if loss not in ROW_FORMATS:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(ROW_FORMATS)}")
    fields, label_kind = ROW_FORMATS[loss]
    layout = "<TAB>".join(fields)
    is_json = path.suffix in (".jsonl", ".json")
    examples = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            where = f"{path} line {number}"
            if is_json:
                values = _json_row(line, fields, where)
            else:  # a text alone is the whole line, tabs and all
                values = [line] if len(fields) == 1 else _tsv_row(line, fields, loss, layout, where)
            if label_kind == "score":
                try:
                    values[-1] = float(values[-1])
                except (TypeError, ValueError):
                    raise DataError(f"{where}: the score {values[-1]!r} is not a number "
                                    f"(expected {layout} for --loss {loss})") from None
            if any(not isinstance(text, str) or not text for text in values[:len(fields) - (label_kind is not None)]):
                raise DataError(f"{where}: an empty or non-text field (expected {layout} for --loss {loss})")
            texts = values[:-1] if label_kind is not None else values
            label = values[-1] if label_kind is not None else None
            examples.append((texts[0], texts[1] if len(texts) > 1 else None, label))
    if not examples:
        raise DataError(f"{path}: no examples (expected lines of {layout} for --loss {loss})")
    return examples


def _tsv_row(line, fields, loss, layout, where):
    values = line.split("\t")
    if len(values) != len(fields):
        hint = ""
        if len(values) == 2 and len(fields) == 3:
            hint = f"; these look like pairs without a score: --loss {loss} needs a label (mnrl trains on pairs)"
        raise DataError(f"{where}: expected {len(fields)} tab-separated fields ({layout}) for --loss {loss}, "
                        f"found {len(values)}{hint}")
    return values


def _json_row(line, fields, where):
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(row).__name__}")
    values = []
    for name in fields:
        key = next((key for key in JSON_KEYS[name] if key in row), None)
        if key is None:
            raise DataError(f"{where}: no {name!r} field (expected keys {', '.join(fields)}; found "
                            f"{', '.join(row) or 'none'})")
        values.append(row[key])
    return values


def cross_encoder_labels(examples):
    """Cross-encoder labels -> (examples, num_labels, label names). Numbers in [0, 1] are
    one score each (one logit, binary cross-entropy: sentence-transformers' CrossEncoder with
    num_labels=1); anything else is a class name (one logit per class, cross-entropy)."""
    try:
        scores = [float(label) for _, _, label in examples]
    except (TypeError, ValueError):
        scores = None
    if scores is not None and all(0.0 <= score <= 1.0 for score in scores):
        return [(a, b, score) for (a, b, _), score in zip(examples, scores)], 1, ()
    examples, names = label_ids(examples)
    return examples, len(names), tuple(names)


def label_ids(examples):
    """Class labels -> (examples with int labels 0..k-1, the label names in id order)."""
    names = sorted({str(label) for _, _, label in examples})
    index = {name: i for i, name in enumerate(names)}
    return [(a, b, index[str(label)]) for a, b, label in examples], names
