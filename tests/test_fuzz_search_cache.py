"""Fuzzing the search cache reader: any file in the cache folder gives embeddings that are
exactly the ones stored with their checksum, or a SearchCacheError naming the file; never
another exception, never an unpickled object."""

import hashlib
import io
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import BATCH, fuzz_settings, ran
from transformer.search_cache import SearchCacheError, load


def _npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


EMBEDDINGS = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
RECORD = {"version": 2, "corpus": "/c.txt", "corpus_sha256": "0" * 64, "lines": 3, "model": {"files": {}}}


def _valid_arrays(embeddings=EMBEDDINGS, record=RECORD):
    return {"embeddings": embeddings,
            "made_from": np.frombuffer(json.dumps(record).encode(), dtype=np.uint8),
            "embeddings_sha256": np.frombuffer(hashlib.sha256(embeddings.tobytes()).hexdigest().encode(),
                                               dtype=np.uint8)}


VALID = _npz(**_valid_arrays())


def _check(path, data):
    """The property: load() -> the stored embeddings with a matching checksum, or SearchCacheError."""
    path.write_bytes(data)
    try:
        record, embeddings = load(path)
    except SearchCacheError as error:
        assert str(error).startswith(f"cached index {path} is corrupt (") and "\n" not in str(error)
        return None
    assert isinstance(record, dict) and embeddings.dtype == np.float32 and embeddings.ndim == 2
    assert embeddings.shape[0] == record["lines"]
    return record, embeddings


def test_a_valid_cache_file_reads_back():
    record, embeddings = load_bytes(VALID)
    assert record == RECORD and np.array_equal(embeddings, EMBEDDINGS)


def load_bytes(data, tmp=None):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        return _check(Path(folder) / "x.npz", data)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "cache.npz"


_damage = st.tuples(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
                   st.one_of(st.none(), st.integers(0, len(VALID))))


@fuzz_settings()
@given(cases=st.lists(_damage, min_size=BATCH, max_size=BATCH))
def test_damaged_bytes_are_reported_never_trusted(scratch, cases):
    for edits, cut in cases:
        ran("search cache (bytes)")
        data = bytearray(VALID)
        for position, value in edits:
            data[position] = value
        data = bytes(data[:cut] if cut is not None else data)
        result = _check(scratch, data)
        if result is not None:  # the zip's CRC and our checksum both passed: the stored numbers
            assert np.array_equal(result[1], EMBEDDINGS)


# Records a damaged or foreign cache file may hold instead of ours.
_RECORDS = [None, 3, "text", [RECORD], {}, {"lines": "3"}, {"lines": None}, {"lines": -1}, {"lines": 2.0},
            dict(RECORD, model=None), {"lines": 10**30}]


@st.composite
def _arrays(draw):
    """A dict of arrays such as a cache file may hold: the right ones, some changed, some missing."""
    rows = draw(st.integers(0, 4))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.int32, np.uint8]))
    shape = draw(st.sampled_from([(rows, 4), (rows,), (rows, 2, 2), ()]))
    embeddings = (np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) / 3).astype(dtype)
    record = draw(st.one_of(st.just(dict(RECORD, lines=rows)), st.sampled_from(_RECORDS)))
    arrays = _valid_arrays(embeddings, record)
    if draw(st.booleans()):
        arrays["made_from"] = np.frombuffer(draw(st.binary(max_size=40)), dtype=np.uint8)
    if draw(st.booleans()):
        arrays["embeddings_sha256"] = np.frombuffer(draw(st.binary(max_size=70)), dtype=np.uint8)
    for name in draw(st.sets(st.sampled_from(sorted(arrays)), max_size=2)):
        del arrays[name]
    if draw(st.integers(0, 9)) == 0:
        arrays[draw(st.sampled_from(["embeddings", "made_from", "extra"]))] = np.array([{"a": 1}], dtype=object)
    return arrays


@fuzz_settings()
@given(cases=st.lists(_arrays(), min_size=BATCH, max_size=BATCH))
def test_wrong_contents_are_reported_and_nothing_is_unpickled(scratch, cases):
    for arrays in cases:
        ran("search cache (contents)")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # an object array is stored pickled: load must refuse it
        result = _check(scratch, buffer.getvalue())
        if result is not None:
            stored = arrays["embeddings"]
            assert stored.dtype == np.float32 and np.array_equal(result[1], stored)
