"""The embedding step: gather word + token type + position vectors, add, LayerNorm. One pass.

    out[t, :] = LayerNorm(word[ids[t]] + token_type[types[t]] + position[positions[t]])

Layouts (the token axis may be a padded batch flattened, or packed tokens with no padding):
    word        float32 [vocab_size, embedding_size]
    token_type  float32 [type_vocab_size, embedding_size]  (a [1, E] dummy when has_types
                is False: DistilBERT and MPNet have no token types)
    position    float32 [max_positions, embedding_size]
    ids, types, positions   int64 [tokens]
    out         float32 [tokens, embedding_size]
The sum is taken in the NumPy twin's order, (word + token_type) + position, so the two
agree to the last bit before the LayerNorm. The twin is `transformer.model.embed` (which also
applies ELECTRA's projection; the numba backend does that with the GEMM).
"""

import numpy as np

from ._jit import even_bounds, jit, parallel_chunks, run_chunks
from .layernorm import normalize_row_inplace

_ELEMENTS_PER_CHUNK = 64 * 1024


@jit
def _gather_add(word_row, type_row, position_row, has_types, out_row):
    if has_types:
        for j in range(out_row.shape[0]):
            out_row[j] = (word_row[j] + type_row[j]) + position_row[j]
    else:
        for j in range(out_row.shape[0]):
            out_row[j] = word_row[j] + position_row[j]


@jit
def _embed_range(word, token_type, position, has_types, ln_weight, ln_bias, eps,
                 ids, types, positions, out, first, stop):
    """Tokens first..stop-1: each sum written into its row of `out`, then normalized there."""
    for t in range(first, stop):
        _gather_add(word[ids[t]], token_type[types[t]], position[positions[t]], has_types, out[t])
        normalize_row_inplace(out[t], ln_weight, ln_bias, eps)


def embed_tokens(word, token_type, position, ln_weight, ln_bias, eps, ids, types, positions, out=None):
    """LayerNorm(word[ids] + token_type[types] + position[positions]) for a flat run of tokens.

    token_type may be None (no token types: `types` is then ignored); position None (no
    position table: ModernBERT, whose positions are rotary; `positions` is then ignored);
    ln_bias None (a bias-free LayerNorm). ids, types, positions: int [tokens]. Returns float32
    [tokens, embedding_size] (written into `out` when given). The caller guarantees the ids
    are in range (`transformer.model.check_inputs` does).
    """
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if position is None:  # a row of zeros for every token: w + 0 is w (a -0 turns +0, which no norm sees)
        position, positions = np.zeros((1, word.shape[1]), dtype=np.float32), np.zeros(len(ids), dtype=np.int64)
    if ln_bias is None:
        ln_bias = np.zeros(0, dtype=np.float32)
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    has_types = token_type is not None
    if has_types:
        types = np.ascontiguousarray(types, dtype=np.int64)
    else:
        token_type, types = word[:1], np.zeros(len(ids), dtype=np.int64)  # unused dummies
    if out is None:
        out = np.empty((len(ids), word.shape[1]), dtype=np.float32)
    bounds = even_bounds(len(ids), parallel_chunks(out.size, _ELEMENTS_PER_CHUNK))
    run_chunks(_embed_range, bounds, word, token_type, position, has_types, ln_weight, ln_bias, np.float32(eps),
               ids, types, positions, out)
    return out


@jit
def embed_naive(word, token_type, position, ln_weight, ln_bias, eps, ids, types, positions):
    """The reference loop: one token, one element at a time (token_type always present)."""
    tokens, width = ids.shape[0], word.shape[1]
    out = np.empty((tokens, width), dtype=np.float32)
    for t in range(tokens):
        mean = np.float32(0.0)
        for j in range(width):
            out[t, j] = (word[ids[t], j] + token_type[types[t], j]) + position[positions[t], j]
            mean += out[t, j]
        mean /= np.float32(width)
        variance = np.float32(0.0)
        for j in range(width):
            variance += (out[t, j] - mean) * (out[t, j] - mean)
        variance /= np.float32(width)
        std = np.sqrt(variance + eps)
        for j in range(width):
            out[t, j] = (out[t, j] - mean) / std * ln_weight[j] + ln_bias[j]
    return out
