"""Smaller sentence vectors: int8 / uint8 scalars and binary bits, as sentence-transformers makes them.

    >>> vectors = model.encode(texts)                         # float32 [n, 384], 1536 bytes each
    >>> quantize_embeddings(vectors, "int8").shape            # int8 [n, 384], 384 bytes each
    >>> quantize_embeddings(vectors, "ubinary").shape         # uint8 [n, 48], 48 bytes each

Scalar (int8, uint8): every dimension gets its own range [min, max], taken from calibration
vectors (ideally many, from the same kind of text), cut into 255 equal steps; a value becomes
the index of its step, clipped to 0..255 (int8 shifts it by -128).

Binary: one bit per dimension, 1 where the value is > 0, packed eight to a byte
(np.packbits: the first dimension is the high bit). "ubinary" keeps the bytes as uint8;
"binary" stores them as int8 (byte - 128). Two binary vectors are compared by Hamming
distance, the number of bits that differ; `search_binary` finds candidates that way and
re-scores them with the float query against the candidates' bits, as sentence-transformers'
`semantic_search_faiss(..., corpus_precision="ubinary", rescore=True)` does.
"""

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
STEPS = 255  # a uint8 holds 256 values: 255 steps between a dimension's min and max


def quantize_embeddings(embeddings, precision, ranges=None, calibration_embeddings=None):
    """float vectors [n, dim] (or one [dim]) -> the same vectors at `precision`.

    precision: "float32" (float32 [n, dim]), "int8" / "uint8" ([n, dim]), "binary" (int8
        [n, ceil(dim / 8)]) or "ubinary" (uint8 [n, ceil(dim / 8)]).
    ranges: float [2, dim], each dimension's min (row 0) and max (row 1), for int8 / uint8.
    calibration_embeddings: float [m, dim] to take the ranges from when `ranges` is None;
        when both are None the ranges come from `embeddings` themselves (then at least two).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {', '.join(map(repr, PRECISIONS))}")
    embeddings = _float_matrix(embeddings, "embeddings", allow_vector=True)
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision in ("binary", "ubinary"):
        bits = np.packbits(embeddings > 0, axis=-1)  # [n, dim] -> [n, ceil(dim / 8)] uint8
        return bits if precision == "ubinary" else (bits - 128).astype(np.int8)  # uint8 wraps: bits ^ 0x80
    if ranges is None:
        ranges = calibration_ranges(embeddings if calibration_embeddings is None else calibration_embeddings,
                                    "calibration_embeddings" if calibration_embeddings is not None else "embeddings")
    ranges = _check_ranges(ranges, embeddings.shape[-1])
    starts = ranges[0]  # [dim]
    steps = (ranges[1] - starts) / STEPS  # [dim]
    steps = np.where(steps == 0, np.float32(1), steps)  # a constant dimension: every value is step 0
    levels = np.clip(np.floor((embeddings - starts) / steps), 0, STEPS)  # [n, dim], 0..255 as float32
    return levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)


def calibration_ranges(embeddings, name="calibration_embeddings"):
    """float [m, dim] -> float32 [2, dim]: each dimension's min and max over the m vectors."""
    embeddings = _float_matrix(embeddings, name)
    if len(embeddings) < 2:
        raise ValueError(f"{name} holds {len(embeddings)} vector{'s' * (len(embeddings) != 1)}: int8 / uint8 ranges "
                         f"need several (ideally hundreds); pass calibration_embeddings= or ranges=")
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0))).astype(np.float32)  # [2, dim]


def dequantize_embeddings(quantized, precision, ranges):
    """int8 / uint8 [n, dim] -> float64 [n, dim]: each value at the bottom of its step."""
    if precision not in ("int8", "uint8"):
        raise ValueError(f"precision={precision!r}; only 'int8' and 'uint8' vectors are dequantized")
    quantized = np.asarray(quantized)
    ranges = _check_ranges(ranges, quantized.shape[-1])
    steps = (ranges[1] - ranges[0]) / STEPS
    steps = np.where(steps == 0, np.float32(1), steps)
    levels = quantized.astype(np.float64) + (128 if precision == "int8" else 0)  # back to 0..255
    return levels * steps + ranges[0]


def hamming_distances(query_bits, corpus_bits):
    """Packed bits uint8 [q, bytes] and [n, bytes] -> int64 [q, n]: how many bits differ."""
    differing = np.bitwise_xor(query_bits[:, None, :], corpus_bits[None, :, :])  # [q, n, bytes]
    return np.unpackbits(differing, axis=-1).sum(axis=-1, dtype=np.int64)  # [q, n]


def search_binary(query_embeddings, corpus_bits, top_k=10, rescore=True, rescore_multiplier=2):
    """Nearest corpus vectors to each float query, over a binary ("ubinary" or "binary") corpus.

    query_embeddings: float [q, dim] (or one [dim]); corpus_bits: quantize_embeddings(corpus,
    "ubinary") uint8 [n, ceil(dim / 8)] (int8 "binary" works too).
    The queries are binarized and the top_k * rescore_multiplier corpus vectors nearest by
    Hamming distance are taken (ties: the lower corpus index first). With rescore=True their
    scores are then the float query's dot product with their bits (0 or 1 per dimension) and
    the best top_k kept; without, the score is the Hamming distance (smaller is nearer).

    Returns one list per query of {"corpus_id": int, "score": float}, best first.
    """
    queries = _float_matrix(query_embeddings, "query_embeddings", allow_vector=True)
    queries = queries[None] if queries.ndim == 1 else queries
    corpus_bits = np.asarray(corpus_bits)
    if corpus_bits.dtype == np.int8:  # "binary": byte - 128, i.e. the top bit flipped
        corpus_bits = corpus_bits.view(np.uint8) ^ np.uint8(0x80)
    if corpus_bits.dtype != np.uint8 or corpus_bits.ndim != 2:
        raise ValueError(f"corpus_bits must be packed bits, uint8 [n, bytes] (quantize_embeddings(corpus, "
                         f"'ubinary')), got {corpus_bits.dtype} {list(corpus_bits.shape)}")
    dim = queries.shape[1]
    if corpus_bits.shape[1] != (dim + 7) // 8:
        raise ValueError(f"corpus_bits holds {corpus_bits.shape[1]} bytes per vector; {dim}-dimensional queries "
                         f"pack into {(dim + 7) // 8}")
    for name, value in (("top_k", top_k), ("rescore_multiplier", rescore_multiplier)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    distances = hamming_distances(np.packbits(queries > 0, axis=-1), corpus_bits)  # [q, n]
    k = min(top_k * rescore_multiplier if rescore else top_k, len(corpus_bits))
    candidates = np.argsort(distances, axis=1, kind="stable")[:, :k]  # [q, k], nearest first
    if not rescore:
        scores = np.take_along_axis(distances, candidates, axis=1).astype(np.float64)
        return _results(candidates, scores)
    candidate_bits = np.unpackbits(corpus_bits[candidates], axis=-1)[..., :dim].astype(np.int64)  # [q, k, dim]
    scores = np.einsum("ij,ikj->ik", queries, candidate_bits).astype(np.float64)  # [q, k]
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]  # [q, top_k]
    return _results(np.take_along_axis(candidates, best, axis=1), np.take_along_axis(scores, best, axis=1))


def _results(indices, scores):
    return [[{"corpus_id": int(i), "score": float(s)} for i, s in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(indices, scores)]


def _float_matrix(values, name, allow_vector=False):
    """A float array [n, dim] (or [dim] when allowed), or a clear error naming `name`."""
    array = np.asarray(values)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be float vectors, got dtype {array.dtype} (already quantized? quantize "
                        f"the float vectors)")
    if array.ndim != 2 and not (allow_vector and array.ndim == 1):
        raise ValueError(f"{name} must be a [n, dim] array{' or one [dim] vector' if allow_vector else ''}, got "
                         f"shape {list(array.shape)}")
    return array


def _check_ranges(ranges, dim):
    ranges = np.asarray(ranges)
    if ranges.shape != (2, dim) or ranges.dtype.kind not in "fiu":
        raise ValueError(f"ranges must be a float [2, {dim}] array (each dimension's min, then max), got "
                         f"{ranges.dtype} {list(ranges.shape)}")
    return ranges.astype(np.float32, copy=False)
