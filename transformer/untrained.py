"""An encoder before training: the same shapes, fresh random numbers.

Every encoder starts like this, and pretraining turns it into a model. BERT's initialisation
draws each weight matrix and table from a normal distribution with standard deviation 0.02,
sets every bias to 0 and every LayerNorm scale to 1. `random_params` does that to a parameter
tree; `untrained_copy` does it to a whole model, masked-LM head included. The walkthrough
(step 8) and the exercises use it as the control for "what did training learn?".

    >>> splade = Encoder.from_pretrained("splade-tiny")                    # doctest: +SKIP
    >>> random_model = untrained_copy(splade, seed=0)                      # doctest: +SKIP
    >>> random_model.fill_mask("He went to the [MASK].", tokenizer)        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

# BERT's config.json calls this initializer_range: the standard deviation of the initial weights.
INITIAL_STD = 0.02


def random_params(tree, rng, where=""):
    """A parameter tree (nested dicts and lists of float32 arrays, as `transformer.model`
    describes) -> the same tree with BERT's initial numbers: biases 0, LayerNorm scales 1,
    everything else normal(0, 0.02), float32. None stays None. `where` is the path so far
    ("/layers/query/bias"): the name says what a leaf is."""
    if isinstance(tree, dict):
        return {name: random_params(part, rng, f"{where}/{name}") for name, part in tree.items()}
    if isinstance(tree, list):
        return [random_params(part, rng, where) for part in tree]
    if tree is None:
        return None
    if where.endswith("/bias"):
        return np.zeros_like(tree)
    if "layer_norm" in where:
        return np.ones_like(tree)
    return (rng.standard_normal(tree.shape) * INITIAL_STD).astype(np.float32)


def untrained_copy(model, seed=0):
    """An `Encoder` with `model`'s config, shapes and backend and random numbers (see
    `random_params`); its head, if any, is random too. The same seed gives the same model."""
    from transformer.encoder import Encoder

    params = random_params(model.params, np.random.default_rng(seed))
    head = model.head
    if head is not None:
        head_params = random_params(head.params, np.random.default_rng(seed + 1))
        if head.kind == "masked_lm" and model.config.tie_word_embeddings:
            # Tied weights: the masked LM scores a word by the dot product of a token's vector with
            # that word's row of the word table. Its decoder is the table, transposed
            # [hidden, vocab], not a matrix of its own; a random model ties it to its own random table.
            head_params["decoder"]["weight"] = params["embeddings"]["word"].T
        head = replace(head, params=head_params)
    return Encoder(model.config, params, head=head, backend=model.backend)
