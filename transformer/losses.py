"""Training losses, each with its gradient: sentence vectors (and labels) -> (loss, d_vectors).

A loss here is a pure function of the pooled sentence vectors the model produced; it returns
the loss (a float) and the gradient of the loss with respect to each input array, which
`transformer.train` then sends back through pooling and the encoder (transformer.backward).
The numbers are sentence-transformers' losses of the same names:

    multiple_negatives_ranking_loss   anchors, positives: in-batch negatives, scale 20
    cosent_loss                       pairs with a score: rank the pairs' cosines like the scores
    classification_loss               texts with a class: a linear classifier on the vector
    softmax_loss                      pairs with a class: a linear classifier on (u, v, |u - v|)
    cross_entropy / binary_cross_entropy   a classifier's logits against labels (cross-encoder)
    matryoshka                        any of the above on the first 768, 512, ... dimensions too

    >>> loss, (d_anchors, d_positives) = multiple_negatives_ranking_loss(anchors, positives)
"""

from __future__ import annotations

import numpy as np

from transformer.backward import linear_backward, normalize_backward
from transformer.model import linear
from transformer.pooling import normalize

MNRL_SCALE = 20.0  # sentence-transformers' default: cosines in [-1, 1] become logits in [-20, 20]
COSENT_SCALE = 20.0


# ---------------------------------------------------------------------------------------
# Pieces: cosine similarity and cross-entropy, each with its backward
# ---------------------------------------------------------------------------------------
def cosine_matrix(a, b):
    """Every a against every b: float32 [n, d], [m, d] -> [n, m] of cosines."""
    return normalize(a) @ normalize(b).T  # [n, d] @ [d, m] -> [n, m]


def cosine_matrix_backward(d_scores, a, b):
    """The backward of cosine_matrix: d_scores [n, m] -> (d_a [n, d], d_b [m, d])."""
    unit_a, unit_b = normalize(a), normalize(b)
    d_unit_a = d_scores @ unit_b  # [n, m] @ [m, d] -> [n, d]
    d_unit_b = d_scores.T @ unit_a  # [m, n] @ [n, d] -> [m, d]
    return normalize_backward(d_unit_a, a), normalize_backward(d_unit_b, b)


def pairwise_cosine(a, b):
    """Row i of a against row i of b: [n, d], [n, d] -> [n]."""
    return np.sum(normalize(a) * normalize(b), axis=-1)


def pairwise_cosine_backward(d_scores, a, b):
    """The backward of pairwise_cosine: d_scores [n] -> (d_a [n, d], d_b [n, d])."""
    unit_a, unit_b = normalize(a), normalize(b)
    return (normalize_backward(d_scores[:, None] * unit_b, a),
            normalize_backward(d_scores[:, None] * unit_a, b))


def log_softmax(logits):
    """log(softmax(logits)) over the last axis, without overflow. [..., k] -> [..., k]."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits, labels, ignore_index=-100):
    """The mean over rows of -log softmax(logits)[label], torch's F.cross_entropy.

    logits float32 [n, k], labels int [n] (rows labelled ignore_index do not count) ->
    (loss, d_logits [n, k]). d_logits = (softmax - one_hot) / rows counted.
    """
    labels = np.asarray(labels)
    counted = labels != ignore_index  # [n]
    count = max(int(counted.sum()), 1)
    safe = np.where(counted, labels, 0)
    log_probabilities = log_softmax(logits)  # [n, k]
    picked = log_probabilities[np.arange(len(labels)), safe]  # [n]
    loss = -float(np.sum(picked[counted], dtype=np.float64)) / count
    d_logits = np.exp(log_probabilities)  # softmax
    d_logits[np.arange(len(labels)), safe] -= np.float32(1.0)
    d_logits *= (counted / np.float32(count)).astype(np.float32)[:, None]
    return loss, d_logits.astype(np.float32)


def binary_cross_entropy(logits, labels):
    """torch's BCEWithLogitsLoss, the mean over elements: logits float32 [n], labels in [0, 1]
    [n] -> (loss, d_logits [n]). d_logits = (sigmoid(logits) - labels) / n."""
    labels = np.asarray(labels, dtype=np.float32)
    # log(1 + exp(-|x|)) + max(x, 0) - x * y: the stable form of -y log s - (1 - y) log(1 - s)
    losses = np.log1p(np.exp(-np.abs(logits))) + np.maximum(logits, 0) - logits * labels
    probabilities = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits))
    return float(losses.mean()), ((probabilities - labels) / np.float32(len(logits))).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Sentence losses
# ---------------------------------------------------------------------------------------
def multiple_negatives_ranking_loss(anchors, positives, *negatives, scale=MNRL_SCALE, symmetric=False):
    """In-batch negatives: anchor i should be closer to positive i than to every other
    positive (and every hard negative) in the batch.

    anchors, positives, each of negatives float32 [n, d]. scores = cos(anchor, candidate) *
    scale [n, n * (1 + len(negatives))], loss = cross-entropy with the right candidate of row i
    at column i. symmetric: also each positive against every anchor (sentence-transformers'
    MultipleNegativesSymmetricRankingLoss), the two losses averaged.
    Returns (loss, (d_anchors, d_positives, *d_negatives)).
    """
    candidates = np.concatenate([positives, *negatives])  # [n * (1 + negatives), d]
    n = len(anchors)
    labels = np.arange(n)
    scores = cosine_matrix(anchors, candidates) * np.float32(scale)  # [n, n * (1 + negatives)]
    loss, d_scores = cross_entropy(scores, labels)
    if symmetric:
        backward_loss, d_backward = cross_entropy(scores[:, :n].T, labels)  # positives -> anchors
        loss = (loss + backward_loss) / 2
        d_scores = d_scores / np.float32(2.0)
        d_scores[:, :n] += d_backward.T / np.float32(2.0)
    d_anchors, d_candidates = cosine_matrix_backward(d_scores * np.float32(scale), anchors, candidates)
    return loss, (d_anchors, *np.split(d_candidates, 1 + len(negatives)))


def cosent_loss(a, b, scores, scale=COSENT_SCALE):
    """CoSENT: for every two pairs where pair i's gold score is below pair j's, a penalty when
    cos_i is not below cos_j: loss = log(1 + sum over such (i, j) of exp(scale * (cos_i - cos_j))).

    a, b float32 [n, d] (pair i is a[i], b[i]); scores [n] the gold similarities.
    Returns (loss, (d_a, d_b)).
    """
    gold = np.asarray(scores, dtype=np.float32)
    cosines = pairwise_cosine(a, b) * np.float32(scale)  # [n]
    differences = cosines[:, None] - cosines[None, :]  # [n, n]: cos_i - cos_j
    counted = gold[:, None] < gold[None, :]  # [n, n]: pairs (i, j) with gold_i < gold_j
    # logsumexp over [0, the counted differences]: the 0 is the "1 +" of the formula
    terms = np.where(counted, differences, -np.inf)
    top = max(float(terms.max()), 0.0)
    weights = np.exp(terms - top)  # [n, n], 0 where not counted
    total = float(weights.sum(dtype=np.float64)) + np.exp(-top)
    loss = top + float(np.log(total))
    d_differences = (weights / total).astype(np.float32)  # the softmax over the terms
    d_cosines = d_differences.sum(axis=1) - d_differences.sum(axis=0)  # [n]
    d_a, d_b = pairwise_cosine_backward(d_cosines * np.float32(scale), a, b)
    return loss, (d_a, d_b)


def softmax_loss(a, b, labels, classifier):
    """sentence-transformers' SoftmaxLoss: a linear classifier on (u, v, |u - v|).

    a, b float32 [n, d]; labels int [n]; classifier {"weight": [3 d, num_labels], "bias":
    [num_labels]} (trained with the model). Returns (loss, (d_a, d_b), d_classifier).
    """
    features = np.concatenate([a, b, np.abs(a - b)], axis=-1)  # [n, 3 d]
    logits = linear(features, **classifier)  # [n, 3 d] -> [n, num_labels]
    loss, d_logits = cross_entropy(logits, labels)
    d_features, d_classifier = linear_backward(d_logits, features, **classifier)  # -> [n, 3 d]
    d_u, d_v, d_difference = np.split(d_features, 3, axis=-1)  # [n, d] each
    d_difference = d_difference * np.sign(a - b)  # d|x|/dx = sign(x), 0 at 0 as torch
    return loss, (d_u + d_difference, d_v - d_difference), d_classifier


def classification_loss(vectors, labels, classifier):
    """Softmax classification on the pooled vector: a linear head [dim -> classes], then
    cross-entropy. vectors float32 [n, dim]; labels int [n]; classifier {"weight": [dim,
    classes], "bias": [classes]}. Returns (loss, (d_vectors,), d_classifier)."""
    logits = linear(vectors, **classifier)  # [n, dim] -> [n, classes]
    loss, d_logits = cross_entropy(logits, labels)
    d_vectors, d_classifier = linear_backward(d_logits, vectors, **classifier)  # -> [n, dim]
    return loss, (d_vectors,), d_classifier


def matryoshka(loss_function, dims, weights=None):
    """MatryoshkaLoss: `loss_function` on the vectors cut to each of `dims` (768, 512, 256,
    ...), the losses summed with `weights` (default 1 each), so the first dimensions alone
    make a usable, smaller embedding. Returns a loss with loss_function's signature."""
    weights = [1.0] * len(dims) if weights is None else list(weights)

    def loss(*vectors, **kwargs):
        total, grads = 0.0, [np.zeros_like(v) for v in vectors]
        for dim, weight in zip(dims, weights):
            part_loss, part_grads, *rest = loss_function(*(v[:, :dim] for v in vectors), **kwargs)
            total += weight * part_loss
            for grad, part in zip(grads, part_grads):
                grad[:, :dim] += np.float32(weight) * part
        return (total, tuple(grads), *rest)

    return loss
