"""`Encoder.from_pretrained("x.gguf")` on small files written by the gguf package: both
backends give the numpy reference's answer, the packed cache keyed on the file, and one clear
error for each bad input (a truncated file, a tensor whose bytes do not match its type and
shape, an unknown architecture, a text longer than the model's context)."""

import os

import numpy as np
import pytest

pytest.importorskip("gguf")
from gguf_files import decoder_gguf, pack_gguf  # noqa: E402

from transformer.encoder import Encoder  # noqa: E402
from transformer.gguf import GGUFError  # noqa: E402
from transformer.numba_backend import packed_cache  # noqa: E402

IDS = np.array([[1, 5, 9, 33, 60, 2], [1, 7, 40, 0, 0, 0]], dtype=np.int64)
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=np.int64)


@pytest.fixture
def tiny(tmp_path):
    """A two-layer Llama of Q8_0 weights (GQA 4/2, context 128), in a folder of its own."""
    return decoder_gguf(tmp_path / "tiny.gguf", "llama", np.random.default_rng(3), type_name="Q8_0")


def test_both_backends_give_the_reference_answer(tiny, monkeypatch):
    monkeypatch.setenv("TRANSFORMER_PACKED_CACHE", "0")
    numpy_model = Encoder.from_pretrained(tiny, backend="numpy")
    numba_model = Encoder.from_pretrained(tiny, backend="numba")
    assert (numpy_model.config.model_type, numpy_model.config.num_hidden_layers) == ("llama", 2)
    reference = numpy_model(IDS, MASK).last_hidden_state
    ours = numba_model(IDS, MASK).last_hidden_state
    assert ours.dtype == np.float32 and ours.shape == (2, 6, 64)
    # Random Q8_0 weights (|w| up to ~1) drive layer 1's values to ~1,600, where the two
    # backends' summation orders differ by a few ulp; the final RMSNorm scales that down with
    # the values: 1e-5 of the output's largest value.
    assert np.abs(ours - reference)[MASK.astype(bool)].max() <= 1e-5 * np.abs(reference).max()


def test_the_packed_cache_is_keyed_on_the_gguf_file(tiny, monkeypatch):
    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    first = Encoder.from_pretrained(tiny, backend="numba")  # dequantizes, packs, writes the cache
    folders = os.listdir(tiny.parent / packed_cache.FOLDER)
    assert len(folders) == 1
    import transformer.gguf

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("the cached model dequantized the file again")

    with monkeypatch.context() as patch:
        patch.setattr(transformer.gguf, "checkpoint_arrays", no_dequantizing)
        cached = Encoder.from_pretrained(tiny, backend="numba")
    assert np.array_equal(first(IDS, MASK).last_hidden_state, cached(IDS, MASK).last_hidden_state)
    # New weights in the same file: the cache of the old ones is not read.
    decoder_gguf(tiny, "llama", np.random.default_rng(4), type_name="Q8_0")
    renewed = Encoder.from_pretrained(tiny, backend="numba")
    expected = Encoder.from_pretrained(tiny, backend="numpy")(IDS, MASK).last_hidden_state
    assert np.abs(renewed(IDS, MASK).last_hidden_state - expected)[MASK.astype(bool)].max() <= \
        1e-5 * np.abs(expected).max()
    assert os.listdir(tiny.parent / packed_cache.FOLDER) != folders


def test_two_gguf_files_in_one_folder_keep_a_packed_cache_each(tiny, monkeypatch):
    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    other = decoder_gguf(tiny.parent / "other.gguf", "llama", np.random.default_rng(5), type_name="Q8_0")
    first = {path: Encoder.from_pretrained(path, backend="numba")(IDS, MASK).last_hidden_state
             for path in (tiny, other)}  # each dequantized, packed and cached in turn
    assert len(os.listdir(tiny.parent / packed_cache.FOLDER)) == 2
    import transformer.gguf

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("a cached model dequantized its file again")

    monkeypatch.setattr(transformer.gguf, "checkpoint_arrays", no_dequantizing)
    for path in (tiny, other, tiny):  # the second load of each, and again after the other's
        cached = Encoder.from_pretrained(path, backend="numba")(IDS, MASK).last_hidden_state
        assert np.array_equal(cached, first[path])
    assert not np.array_equal(first[tiny], first[other])


def test_a_truncated_file_is_refused(tiny, tmp_path):
    cut = tmp_path / "cut.gguf"
    data = tiny.read_bytes()
    cut.write_bytes(data[:len(data) - 100])
    with pytest.raises(GGUFError, match=r"cut\.gguf: .*past the end of the file .*truncated"):
        Encoder.from_pretrained(cut, backend="numpy")


def test_a_tensor_whose_bytes_do_not_match_its_type_and_shape_is_refused(tmp_path):
    """Tensor 'a' is F32 [64] (256 bytes), but 'b' starts 128 bytes after it."""
    path = tmp_path / "overlap.gguf"
    path.write_bytes(pack_gguf(metadata=[("general.architecture", 8, "llama")],
                               tensors=[("a", (64,), 0, 0), ("b", (64,), 0, 128)], data=bytes(512)))
    with pytest.raises(GGUFError, match=r"tensor 'b' is at data offset 128; expected 256"):
        Encoder.from_pretrained(path, backend="numpy")


def test_an_unknown_architecture_is_refused_naming_it(tmp_path):
    path = decoder_gguf(tmp_path / "mamba.gguf", "llama", np.random.default_rng(0),
                        metadata={"general.architecture": ("STRING", "mamba")})
    with pytest.raises(GGUFError, match=r"architecture 'mamba' \(metadata 'general.architecture'\) is not one"):
        Encoder.from_pretrained(path, backend="numpy")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_text_longer_than_the_context_is_refused(tiny, backend, monkeypatch):
    monkeypatch.setenv("TRANSFORMER_PACKED_CACHE", "0")
    model = Encoder.from_pretrained(tiny, backend=backend)
    assert model.config.max_sequence_length == 128  # llama.context_length
    model(np.ones((1, 128), dtype=np.int64))
    with pytest.raises(ValueError, match=r"sequence length 129 is longer than this model accepts \(128"):
        model(np.ones((1, 129), dtype=np.int64))
