"""Tokens' vectors -> one vector per text: the pooling step of a sentence encoder.

Every function takes the encoder's last hidden state and the attention mask that says which
positions are real tokens (1) and which are padding (0):

    token_embeddings  float32 [batch, seq, hidden]
    attention_mask    int     [batch, seq]   (padding on the right, as our tokenizer pads)

and returns float32 [batch, hidden]. Padding never changes the answer: a text pooled alone or
beside longer texts gets the same vector. These are the pooling modes of sentence-transformers'
`Pooling` module, with the same numbers.

    >>> hidden = np.array([[[1., 2.], [3., 4.], [9., 9.]]], dtype=np.float32)
    >>> mask = np.array([[1, 1, 0]])
    >>> mean_pooling(hidden, mask)           # the padded [9, 9] is ignored
    array([[2., 3.]], dtype=float32)
"""

import numpy as np

# The denominator floor sentence-transformers uses, so an all-padding row divides by 1e-9
# instead of 0.
MIN_TOKEN_COUNT = np.float32(1e-9)
# F.normalize's floor: a zero vector stays zero instead of becoming NaN.
NORMALIZE_EPS = np.float32(1e-12)


def cls_pooling(token_embeddings, attention_mask):
    """The vector of the first real token ([CLS] / <s>) of each text."""
    first = np.argmax(attention_mask != 0, axis=1)  # [batch]: first real position (0 with right padding)
    return token_embeddings[np.arange(len(first)), first].astype(np.float32)  # [batch, hidden]


def mean_pooling(token_embeddings, attention_mask):
    """The average of each text's real token vectors (the usual sentence embedding)."""
    summed, count = _masked_sum_and_count(token_embeddings, attention_mask)
    return summed / count  # [batch, hidden] / [batch, 1]


def mean_sqrt_len_pooling(token_embeddings, attention_mask):
    """The sum of the real token vectors divided by sqrt(number of tokens)."""
    summed, count = _masked_sum_and_count(token_embeddings, attention_mask)
    return summed / np.sqrt(count)  # [batch, hidden] / [batch, 1]


def max_pooling(token_embeddings, attention_mask):
    """The element-wise maximum over each text's real token vectors."""
    is_token = (attention_mask != 0)[:, :, None]  # [batch, seq, 1]
    masked = np.where(is_token, token_embeddings, np.float32(-np.inf))  # padding never wins the max
    return masked.max(axis=1).astype(np.float32)  # [batch, seq, hidden] -> [batch, hidden]


def weighted_mean_pooling(token_embeddings, attention_mask):
    """A mean weighting token i by its position i+1 (later tokens count more; for causal models)."""
    mask = (attention_mask != 0).astype(np.float32)  # [batch, seq]
    weights = mask * np.arange(1, mask.shape[1] + 1, dtype=np.float32)  # [batch, seq]
    summed = np.einsum("bsh,bs->bh", token_embeddings, weights)  # [batch, hidden]
    return (summed / np.maximum(weights.sum(axis=1, keepdims=True), MIN_TOKEN_COUNT)).astype(np.float32)


def last_token_pooling(token_embeddings, attention_mask):
    """The vector of each text's last real token (for causal models); a zero vector for a row
    with no real token (as sentence-transformers gives it)."""
    is_token = attention_mask != 0  # [batch, seq]
    seq = is_token.shape[1]
    # The last position whose mask is set, whatever the padding side and whatever was masked
    # before it (a prompt left out of the pooling).
    last = seq - 1 - np.argmax(is_token[:, ::-1], axis=1)  # [batch]
    found = is_token[np.arange(len(last)), last]  # [batch]: False for an all-zero row
    vectors = token_embeddings[np.arange(len(last)), last].astype(np.float32)  # [batch, hidden]
    return np.where(found[:, None], vectors, np.float32(0))


def normalize(vectors, axis=-1):
    """Scale each vector to unit length (L2); a zero vector stays zero.

    >>> normalize(np.array([[3., 4.]], dtype=np.float32))
    array([[0.6, 0.8]], dtype=float32)
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.sum(vectors * vectors, axis=axis, keepdims=True))  # [..., 1]
    return vectors / np.maximum(norms, NORMALIZE_EPS)


# The pooling modes by the names sentence-transformers writes in 1_Pooling/config.json.
POOLING_FUNCTIONS = {
    "cls": cls_pooling,
    "max": max_pooling,
    "mean": mean_pooling,
    "mean_sqrt_len_tokens": mean_sqrt_len_pooling,
    "weightedmean": weighted_mean_pooling,
    "lasttoken": last_token_pooling,
}


def pool(token_embeddings, attention_mask, modes=("mean",)):
    """Apply each pooling mode and concatenate the results: [batch, len(modes) * hidden].

    >>> pool(hidden, mask, ["cls", "mean"]).shape     # hidden [1, 3, 2]
    (1, 4)
    """
    unknown = [mode for mode in modes if mode not in POOLING_FUNCTIONS]
    if unknown:
        raise ValueError(
            f"unknown pooling mode {unknown[0]!r}; expected one of {', '.join(POOLING_FUNCTIONS)}"
        )
    token_embeddings = np.asarray(token_embeddings, dtype=np.float32)
    attention_mask = np.asarray(attention_mask)
    if token_embeddings.ndim != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(
            f"expected token_embeddings [batch, seq, hidden] and attention_mask [batch, seq], "
            f"got {token_embeddings.shape} and {attention_mask.shape}"
        )
    pooled = [POOLING_FUNCTIONS[mode](token_embeddings, attention_mask) for mode in modes]
    return np.concatenate(pooled, axis=-1)  # [batch, len(modes) * hidden]


def pooling_modes_from_config(config):
    """sentence-transformers' 1_Pooling/config.json -> the list of mode names, in its order.

    Reads both the current form {"pooling_mode": "mean"} (or a list) and the older one with one
    boolean per mode ({"pooling_mode_mean_tokens": true, ...}). Raises ValueError naming the
    field that is not one of those forms (a mode name not known, "true" as a string...).
    """
    if not isinstance(config, dict):
        raise ValueError(f"the pooling config must be a JSON object, found {type(config).__name__}")
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else modes
        if not isinstance(modes, list) or not modes or not all(isinstance(mode, str) for mode in modes):
            raise ValueError(f"pooling_mode must be a mode name or a non-empty list of them, found "
                             f"{config['pooling_mode']!r:.60}")
        unknown = [mode for mode in modes if mode not in POOLING_FUNCTIONS]
        if unknown:
            raise ValueError(f"pooling_mode {unknown[0]!r:.60} is not a pooling mode; expected one of "
                             f"{', '.join(POOLING_FUNCTIONS)}")
        return list(modes)
    legacy = {
        "pooling_mode_cls_token": "cls",
        "pooling_mode_max_tokens": "max",
        "pooling_mode_mean_tokens": "mean",
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens": "weightedmean",
        "pooling_mode_lasttoken": "lasttoken",
    }
    for key in legacy:
        if key in config and not isinstance(config[key], bool):
            raise ValueError(f"{key} must be true or false, found {config[key]!r:.60}")
    modes = [mode for key, mode in legacy.items() if config.get(key)]
    if not modes:
        raise ValueError("the pooling config names no pooling mode (no pooling_mode, and no "
                         "pooling_mode_* key is true)")
    return modes


def _masked_sum_and_count(token_embeddings, attention_mask):
    """Sum of the real token vectors [batch, hidden] and their count [batch, 1], in float32."""
    mask = (attention_mask != 0).astype(np.float32)  # [batch, seq]
    summed = np.einsum("bsh,bs->bh", token_embeddings, mask)  # [batch, seq, hidden] -> [batch, hidden]
    count = np.maximum(mask.sum(axis=1, keepdims=True), MIN_TOKEN_COUNT)  # [batch, 1]
    return summed.astype(np.float32), count
