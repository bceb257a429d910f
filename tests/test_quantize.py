"""quantize_embeddings == sentence-transformers' quantize_embeddings, bit for bit, and binary
search with float rescoring.

tests/references/retrieval_quantize.npz (tools/make_retrieval_references.py) holds 100 vectors
of all-MiniLM-L6-v2 (the bundled corpus) and the library's quantized forms of them: ranges from
the vectors themselves, and from a calibration set (the first two thirds) applied to the rest.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from transformer.quantize import (PRECISIONS, calibration_ranges, dequantize_embeddings, hamming_distances,
                                  quantize_embeddings, search_binary)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_retrieval_references import QUANTIZE_PRECISIONS, calibration_split  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "references" / "retrieval_quantize.npz"


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as file:
        return dict(file)


def ours(vectors):
    calibration, rest = calibration_split(vectors)
    found = {"vectors": vectors}
    for precision in QUANTIZE_PRECISIONS:
        found[f"{precision}_self"] = quantize_embeddings(vectors, precision)
        found[f"{precision}_calibrated"] = quantize_embeddings(rest, precision, calibration_embeddings=calibration)
    return found


def assert_identical(found, expected):
    assert sorted(found) == sorted(expected)
    for name in expected:
        assert found[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)


def test_every_precision_matches_the_committed_reference_bit_for_bit(reference):
    assert_identical(ours(reference["vectors"]), reference)


def test_every_precision_matches_live_sentence_transformers(reference):
    pytest.importorskip("sentence_transformers")
    from make_retrieval_references import quantize_references

    assert_identical(ours(reference["vectors"]), quantize_references(reference["vectors"]))


def test_shapes_and_dtypes_of_each_precision(reference):
    vectors = reference["vectors"][:5]  # [5, 384]
    assert quantize_embeddings(vectors, "float32").dtype == np.float32
    assert quantize_embeddings(vectors, "int8").shape == (5, 384)
    assert quantize_embeddings(vectors, "ubinary").shape == (5, 48)
    assert quantize_embeddings(vectors[0], "binary").shape == (48,)  # one vector in, one out


def test_binary_is_ubinary_with_the_top_bit_flipped(reference):
    vectors = reference["vectors"]
    binary, ubinary = quantize_embeddings(vectors, "binary"), quantize_embeddings(vectors, "ubinary")
    np.testing.assert_array_equal(binary.view(np.uint8) ^ 0x80, ubinary)


def test_dequantized_values_fall_in_their_step(reference):
    vectors = reference["vectors"]
    ranges = calibration_ranges(vectors)
    back = dequantize_embeddings(quantize_embeddings(vectors, "int8", ranges=ranges), "int8", ranges)
    steps = (ranges[1] - ranges[0]) / 255
    assert np.all(back <= vectors + 1e-6) and np.all(vectors - back <= steps * (1 + 1e-5))


def test_hamming_distance_counts_differing_bits():
    a = np.packbits(np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1]], dtype=bool), axis=-1)
    b = np.packbits(np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0, 0, 0, 1]], dtype=bool), axis=-1)
    np.testing.assert_array_equal(hamming_distances(a, b), [[3, 0]])


def test_search_binary_rescores_hamming_candidates_with_the_float_query(reference):
    vectors = reference["vectors"]
    queries, corpus = vectors[:4], vectors[4:]
    corpus_bits = quantize_embeddings(corpus, "ubinary")
    results = search_binary(queries, corpus_bits, top_k=3, rescore_multiplier=4)
    # By hand: the 12 nearest by Hamming distance, then query . bits, best 3.
    distances = (np.unpackbits(np.packbits(queries > 0, axis=-1), axis=-1)[:, None, :384]
                 != np.unpackbits(corpus_bits, axis=-1)[None, :, :384]).sum(axis=-1)  # [4, 96]
    for query, found in zip(range(4), results):
        candidates = np.argsort(distances[query], kind="stable")[:12]
        scores = (corpus[candidates] > 0).astype(np.float64) @ queries[query].astype(np.float64)
        best = candidates[np.argsort(-scores, kind="stable")[:3]]
        assert [hit["corpus_id"] for hit in found] == best.tolist()
        np.testing.assert_allclose([hit["score"] for hit in found], np.sort(scores)[::-1][:3], rtol=1e-6)


def test_search_binary_finds_a_query_in_the_corpus_first(reference):
    vectors = reference["vectors"]
    results = search_binary(vectors[10:13], quantize_embeddings(vectors, "binary"), top_k=1)
    assert [hits[0]["corpus_id"] for hits in results] == [10, 11, 12]
    without = search_binary(vectors[10], quantize_embeddings(vectors, "ubinary"), top_k=2, rescore=False)
    assert without[0][0] == {"corpus_id": 10, "score": 0.0}  # a Hamming distance of 0


def test_an_unknown_precision_is_refused_naming_the_choices(reference):
    with pytest.raises(ValueError, match=r"precision='int4'; expected one of 'float32', 'int8'"):
        quantize_embeddings(reference["vectors"], "int4")
    assert PRECISIONS == ("float32", "int8", "uint8", "binary", "ubinary")


def test_scalar_ranges_from_one_vector_are_refused(reference):
    with pytest.raises(ValueError, match="embeddings holds 1 vector: int8 / uint8 ranges need several"):
        quantize_embeddings(reference["vectors"][:1], "uint8")


def test_quantized_input_and_bad_ranges_are_refused(reference):
    with pytest.raises(TypeError, match="embeddings must be float vectors, got dtype int8"):
        quantize_embeddings(quantize_embeddings(reference["vectors"], "int8"), "int8")
    with pytest.raises(ValueError, match=r"ranges must be a float \[2, 384\] array"):
        quantize_embeddings(reference["vectors"], "int8", ranges=np.zeros((2, 10)))


def test_search_binary_refuses_a_corpus_of_another_width(reference):
    with pytest.raises(ValueError, match="corpus_bits holds 4 bytes per vector; 384-dimensional queries pack into 48"):
        search_binary(reference["vectors"][:1], np.zeros((3, 4), dtype=np.uint8))
