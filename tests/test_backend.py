"""The numba backend (transformer.numba_backend) against transformers' references and the NumPy path.

Parity is over the real tokens: the numba backend never computes padding positions (they
come out as zeros), where the reference's values mean nothing.
"""

from pathlib import Path

import numpy as np
import pytest

from transformer import model as numpy_model
from transformer.encoder import Encoder

REFERENCES = Path(__file__).parent / "references"
FAMILIES = REFERENCES / "families"
CASES = sorted(p.name for p in FAMILIES.iterdir() if (p / "reference.npz").is_file())
TOLERANCE = 1e-5


def batches(reference):
    b = 0
    while f"input_ids_{b}" in reference:
        yield (reference[f"input_ids_{b}"], reference[f"attention_mask_{b}"], reference[f"token_type_ids_{b}"],
               reference[f"last_hidden_state_{b}"], reference[f"pooler_output_{b}"])
        b += 1


def max_diff(a, b, mask=None):
    difference = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return (difference[mask] if mask is not None else difference).max()


def test_numba_is_the_default_backend():
    assert Encoder.from_pretrained(FAMILIES / "bert_gelu").backend == "numba"


@pytest.mark.parametrize("case", CASES)
def test_every_family_on_numba_matches_transformers_and_the_numpy_path(case):
    reference = dict(np.load(FAMILIES / case / "reference.npz"))
    args = (reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    fast = Encoder.from_pretrained(FAMILIES / case, backend="numba")(*args, output_hidden_states=True)
    slow = Encoder.from_pretrained(FAMILIES / case, backend="numpy")(*args, output_hidden_states=True)
    real = reference["attention_mask"].astype(bool)
    assert fast.last_hidden_state.dtype == np.float32
    assert fast.last_hidden_state.shape == reference["last_hidden_state"].shape
    assert max_diff(fast.last_hidden_state, reference["last_hidden_state"], real) <= TOLERANCE
    assert max_diff(fast.last_hidden_state, slow.last_hidden_state, real) <= TOLERANCE
    assert len(fast.hidden_states) == len(slow.hidden_states)
    for ours, numpy_states in zip(fast.hidden_states, slow.hidden_states):
        assert ours.dtype == np.float32
        assert max_diff(ours, numpy_states, real) <= TOLERANCE
    if "hidden_states" in reference:
        for ours, theirs in zip(fast.hidden_states, reference["hidden_states"]):
            assert max_diff(ours, theirs, real) <= TOLERANCE
    if "pooler_output" in reference and real[:, 0].all():
        assert max_diff(fast.pooler_output, reference["pooler_output"]) <= TOLERANCE
    if "logits" in reference:
        logits, expected = fast.logits, reference["logits"]
        if logits.shape[:2] == real.shape:  # per-token heads: the real tokens
            logits, expected = logits[real], expected[real]
        assert max_diff(logits, expected) <= TOLERANCE


def test_padding_positions_are_zero_and_a_row_without_tokens_is_finite():
    reference = dict(np.load(FAMILIES / "bert_relu_1head_padding_row" / "reference.npz"))
    model = Encoder.from_pretrained(FAMILIES / "bert_relu_1head_padding_row", backend="numba")
    out = model(reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    padding = reference["attention_mask"] == 0
    assert padding[-1].all()
    assert np.isfinite(out.last_hidden_state).all()
    assert (out.last_hidden_state[padding] == 0).all()


def test_a_batch_of_nothing_but_padding_gives_zeros():
    model = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numba")
    out = model([[0, 0, 0]], [[0, 0, 0]], output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, 3, model.config.hidden_size)
    assert (out.last_hidden_state == 0).all()
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_output_attentions_runs_the_numpy_path_and_returns_its_answer():
    reference = dict(np.load(FAMILIES / "mpnet_gelu" / "reference.npz"))
    args = (reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    fast = Encoder.from_pretrained(FAMILIES / "mpnet_gelu", backend="numba")(*args, output_attentions=True)
    slow = Encoder.from_pretrained(FAMILIES / "mpnet_gelu", backend="numpy")(*args, output_attentions=True)
    assert len(fast.attentions) == len(slow.attentions)
    for ours, theirs in zip(fast.attentions, slow.attentions):
        np.testing.assert_array_equal(ours, theirs)


def test_a_sentence_alone_gives_bit_identical_vectors_inside_a_padded_batch():
    # with no work spent on padding, nothing about a sentence's arithmetic depends on its batch
    reference = dict(np.load(FAMILIES / "roberta_gelu" / "reference.npz"))
    model = Encoder.from_pretrained(FAMILIES / "roberta_gelu", backend="numba")
    batch = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
    for row, mask in enumerate(reference["attention_mask"]):
        length = int(mask.sum())
        alone = model(reference["input_ids"][row:row + 1, :length]).last_hidden_state
        np.testing.assert_array_equal(alone[0], batch[row, :length])


def test_left_padding_and_holes_match_the_numpy_path():
    model_dir = FAMILIES / "mpnet_gelu"  # relative position bias over the padded positions
    fast, slow = Encoder.from_pretrained(model_dir, backend="numba"), Encoder.from_pretrained(model_dir, backend="numpy")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, fast.config.vocab_size, (3, 11))
    mask = np.ones((3, 11), np.int64)
    mask[0, :4] = 0
    mask[1, [3, 7]] = 0
    ids[mask == 0] = fast.config.pad_token_id
    real = mask.astype(bool)
    assert max_diff(fast(ids, mask).last_hidden_state, slow(ids, mask).last_hidden_state, real) <= TOLERANCE


def test_numba_forward_is_called_directly_with_the_numpy_signature():
    from transformer.numba_backend import forward

    model = Encoder.from_pretrained(FAMILIES / "electra_projection", backend="numpy")
    prepared = forward.prepare(model.params, model.config)
    ids = np.array([[2, 7, 9, 3]])
    last, states, attentions = forward.encoder_forward(prepared, model.config, ids)  # mask and types default
    expected, _, _ = numpy_model.encoder_forward(model.params, model.config, ids)
    assert states is None and attentions is None
    assert max_diff(last, expected) <= TOLERANCE


# --- real checkpoints ---------------------------------------------------------------------
def test_minilm_on_numba_matches_transformers_and_numpy_on_56_sentences(minilm_dir):
    fast = Encoder.from_pretrained(minilm_dir, backend="numba")
    slow = Encoder.from_pretrained(minilm_dir, backend="numpy")
    assert fast.backend == "numba"
    reference = dict(np.load(REFERENCES / "all-MiniLM-L6-v2.npz"))
    worst_reference = worst_numpy = worst_pooler = 0.0
    for ids, mask, types_, expected, expected_pooler in batches(reference):
        out = fast(ids, mask, types_)
        real = mask.astype(bool)
        worst_reference = max(worst_reference, max_diff(out.last_hidden_state[real], expected))
        worst_numpy = max(worst_numpy, max_diff(out.last_hidden_state, slow(ids, mask, types_).last_hidden_state, real))
        worst_pooler = max(worst_pooler, max_diff(out.pooler_output, expected_pooler))
    assert worst_reference <= TOLERANCE
    assert worst_numpy <= TOLERANCE
    assert worst_pooler <= TOLERANCE


def test_mpnet_on_numba_matches_transformers(mpnet_dir):
    with pytest.warns(UserWarning, match="no masked_lm head"):
        fast = Encoder.from_pretrained(mpnet_dir, backend="numba")
    reference = dict(np.load(REFERENCES / "all-mpnet-base-v2.npz"))
    for ids, mask, types_, expected, _ in batches(reference):
        out = fast(ids, mask, types_)
        assert max_diff(out.last_hidden_state[mask.astype(bool)], expected) <= TOLERANCE


def test_numba_pooler_runs_on_the_kernels_and_equals_the_numpy_pooler():
    from transformer.numba_backend import forward

    model = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numba")
    hidden = np.random.default_rng(0).standard_normal((3, 5, model.config.hidden_size)).astype(np.float32)
    ours = forward.pooler(model._weights, hidden)
    assert ours.dtype == np.float32 and ours.shape == (3, model.config.hidden_size)
    assert max_diff(ours, numpy_model.pooler(model.params["pooler"], hidden)) <= TOLERANCE


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_last_hidden_state_equals_the_call_and_skips_the_pooler(backend, monkeypatch):
    model = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend=backend)
    ids, mask = np.array([[2, 7, 9, 3], [2, 5, 3, 0]]), np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    expected = model(ids, mask).last_hidden_state

    def no_pooler(*args):
        raise AssertionError("the pooler ran")

    monkeypatch.setattr(numpy_model, "pooler", no_pooler)
    if backend == "numba":
        monkeypatch.setattr(model._forward_module, "pooler", no_pooler)
    assert np.array_equal(model.last_hidden_state(ids, mask), expected)


@pytest.mark.parametrize("case", ["bert_gelu", "electra_projection"])
def test_numba_model_holds_packed_layers_only_and_rederives_the_same_weights(case):
    from transformer.numba_backend.forward import UnpackedLayers

    fast = Encoder.from_pretrained(FAMILIES / case, backend="numba")
    slow = Encoder.from_pretrained(FAMILIES / case, backend="numpy")
    assert isinstance(fast.params["layers"], UnpackedLayers)  # no unpacked copy kept beside the packed one
    assert len(fast.params["layers"]) == len(slow.params["layers"])
    for ours, theirs in zip(fast.params["layers"], slow.params["layers"]):
        assert ours.keys() == theirs.keys()
        for part in theirs:
            for name in ("weight", "bias"):
                assert ours[part][name].dtype == np.float32
                assert np.array_equal(ours[part][name], theirs[part][name]), (part, name)


def test_feed_forward_in_row_blocks_gives_the_same_bits(monkeypatch):
    from transformer.numba_backend import forward

    model = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numba")
    rng = np.random.default_rng(3)
    ids = rng.integers(5, model.config.vocab_size, size=(3, 7))
    whole = model(ids).last_hidden_state
    monkeypatch.setattr(forward, "FFN_ROWS", 4)  # 21 tokens in blocks of 4, the last one short
    assert np.array_equal(model(ids).last_hidden_state, whole)


@pytest.mark.parametrize("case", ["bert_gelu", "mpnet_gelu"])
def test_layers_in_groups_of_sequences_give_the_same_bits(case, monkeypatch):
    from transformer.numba_backend import forward

    model = Encoder.from_pretrained(FAMILIES / case, backend="numba")
    rng = np.random.default_rng(4)
    ids = rng.integers(5, model.config.vocab_size, size=(4, 6))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 1:] = 0
    whole = model(ids, mask).last_hidden_state
    monkeypatch.setattr(forward, "GROUP_ROWS", 7)  # groups: [6], [4, 1], [6]
    assert forward.sequence_groups(np.array([0, 6, 10, 11, 17]), 7) == [(0, 1), (1, 3), (3, 4)]
    assert np.array_equal(model(ids, mask).last_hidden_state, whole)


# --- the packed cache ------------------------------------------------------------------------
def _cache_folders(directory):
    """The cache folders under directory/.transformer-packed, by name."""
    root = directory / ".transformer-packed"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


@pytest.fixture
def small_checkpoints_cached(monkeypatch):
    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    return packed_cache


@pytest.mark.parametrize("case", ["bert_sequence_classification", "electra_projection", "mpnet_gelu"])
def test_packed_cache_is_written_once_and_read_back_to_the_same_bits(case, tmp_path, small_checkpoints_cached):
    import shutil

    from transformer.numba_backend import forward

    directory = tmp_path / case
    shutil.copytree(FAMILIES / case, directory)
    reference = dict(np.load(directory / "reference.npz"))
    args = (reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    packed = Encoder.from_pretrained(directory, backend="numba")  # packs, then writes the cache
    [name] = _cache_folders(directory)
    assert (directory / ".transformer-packed" / name / "packed.meta").is_file()
    cached = Encoder.from_pretrained(directory, backend="numba")  # maps the cache back
    assert isinstance(cached.params["embeddings"]["word"].base, np.memmap)  # mapped, not read
    first, second = packed(*args, output_hidden_states=True), cached(*args, output_hidden_states=True)
    assert np.array_equal(first.last_hidden_state, second.last_hidden_state)
    for name in ("pooler_output", "logits"):
        a, b = getattr(first, name), getattr(second, name)
        assert (a is None and b is None) or np.array_equal(a, b), name
    slow = Encoder.from_pretrained(directory, backend="numpy")
    for ours, theirs in zip(cached.params["layers"], slow.params["layers"]):
        for part in theirs:
            assert np.array_equal(ours[part]["weight"], theirs[part]["weight"])
    # Both ways, every packed panel lives in one arena (read, not mapped: see kernels/arena.py).
    for model in (packed, cached):
        panels = list(model._weights.stack.panels.values())
        assert len({id(array.base) for array in panels}) == 1 and not isinstance(panels[0].base, np.memmap)


def test_big_packed_cache_is_mapped_instead_of_read_and_gives_the_same_bits(tmp_path, small_checkpoints_cached,
                                                                             monkeypatch):
    import shutil

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    ids = dict(np.load(directory / "reference.npz"))["input_ids"]
    expected = Encoder.from_pretrained(directory, backend="numba")(ids).last_hidden_state  # writes the cache
    monkeypatch.setattr(small_checkpoints_cached, "ARENA_FROM_CACHE_MAX_BYTES", 0)  # every cache counts as big
    mapped = Encoder.from_pretrained(directory, backend="numba")
    assert isinstance(mapped._weights.stack.panels["qkv"].base, np.memmap)
    assert np.array_equal(mapped(ids).last_hidden_state, expected)


def test_truncated_packed_cache_is_not_read_and_is_written_again(tmp_path, small_checkpoints_cached):
    import shutil

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    reference = dict(np.load(directory / "reference.npz"))
    expected = Encoder.from_pretrained(directory, backend="numba")(reference["input_ids"]).last_hidden_state
    [name] = _cache_folders(directory)
    data_file = directory / ".transformer-packed" / name / "packed.bin"
    data_file.write_bytes(data_file.read_bytes()[:-100])  # cut short, as by a full disk
    config = Encoder.from_pretrained(directory, backend="numpy").config
    assert small_checkpoints_cached.PackedCache.find(directory).load(config) is None
    model = Encoder.from_pretrained(directory, backend="numba")  # packs again, rewrites the cache
    assert np.array_equal(model(reference["input_ids"]).last_hidden_state, expected)
    assert small_checkpoints_cached.PackedCache.find(directory).load(config) is not None


def test_packed_cache_written_to_in_place_is_rebuilt_not_read(tmp_path, small_checkpoints_cached):
    import shutil

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    ids = dict(np.load(directory / "reference.npz"))["input_ids"]
    expected = Encoder.from_pretrained(directory, backend="numba")(ids).last_hidden_state  # writes the cache
    [name] = _cache_folders(directory)
    data_file = directory / ".transformer-packed" / name / "packed.bin"
    with open(data_file, "r+b") as file:  # the same size, other bytes: a stray write
        file.write(bytes(data_file.stat().st_size))
    config = Encoder.from_pretrained(directory, backend="numpy").config
    assert small_checkpoints_cached.PackedCache.find(directory).load(config) is None
    assert np.array_equal(Encoder.from_pretrained(directory, backend="numba")(ids).last_hidden_state, expected)


def test_a_named_pipe_in_place_of_packed_bin_is_passed_over_not_waited_on(tmp_path, small_checkpoints_cached):
    import os
    import shutil
    import threading

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    Encoder.from_pretrained(directory, backend="numba")  # writes the cache
    [name] = _cache_folders(directory)
    for file in ("packed.bin", "packed.meta"):
        moved = directory / ".transformer-packed" / name / file
        os.replace(moved, tmp_path / file)
        os.mkfifo(moved)  # opening it for reading would wait for a writer forever
        config = Encoder.from_pretrained(directory, backend="numpy").config
        cache = small_checkpoints_cached.PackedCache.find(directory)
        loaded = []
        reader = threading.Thread(target=lambda: loaded.append(cache.load(config)), daemon=True)
        reader.start()
        reader.join(timeout=10)
        assert loaded == [None], f"load() of a cache with a named pipe for {file} did not return"
        os.unlink(moved)
        os.replace(tmp_path / file, moved)


def test_packed_cache_can_be_switched_off_and_skips_small_checkpoints(tmp_path, small_checkpoints_cached,
                                                                       monkeypatch):
    monkeypatch.setenv("TRANSFORMER_PACKED_CACHE", "0")
    assert small_checkpoints_cached.PackedCache.find(FAMILIES / "bert_gelu") is None
    monkeypatch.delenv("TRANSFORMER_PACKED_CACHE")
    assert small_checkpoints_cached.PackedCache.find(FAMILIES / "bert_gelu") is not None
    monkeypatch.setattr(small_checkpoints_cached, "CACHE_MIN_BYTES", 1 << 40)  # a small checkpoint is not cached
    assert small_checkpoints_cached.PackedCache.find(FAMILIES / "bert_gelu") is None


def _rewrite_with_other_weights_keeping_size_and_time(checkpoint):
    """Change every float32 value of a safetensors file in place (same header, same size)
    and set its modification time back, as `touch -r` or an archive would."""
    import json
    import os

    stat = checkpoint.stat()
    data = bytearray(checkpoint.read_bytes())
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_length])
    rng = np.random.default_rng(0)
    for name, entry in header.items():
        if name != "__metadata__" and entry["dtype"] == "F32":
            begin, end = (8 + header_length + offset for offset in entry["data_offsets"])
            values = np.frombuffer(bytes(data[begin:end]), dtype="<f4")
            data[begin:end] = (values + rng.normal(0, 0.05, values.shape)).astype("<f4").tobytes()
    checkpoint.write_bytes(bytes(data))
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert checkpoint.stat().st_mtime_ns == stat.st_mtime_ns and checkpoint.stat().st_size == stat.st_size


def test_new_weights_with_the_old_size_and_time_are_never_answered_from_the_old_cache(tmp_path,
                                                                                       small_checkpoints_cached):
    import shutil

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    ids = dict(np.load(directory / "reference.npz"))["input_ids"]
    Encoder.from_pretrained(directory, backend="numba")  # caches the old weights
    [old] = _cache_folders(directory)
    _rewrite_with_other_weights_keeping_size_and_time(directory / "model.safetensors")
    expected = Encoder.from_pretrained(directory, backend="numpy")(ids).last_hidden_state
    fast = Encoder.from_pretrained(directory, backend="numba")(ids).last_hidden_state
    old_answer = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numpy")(ids).last_hidden_state
    assert max_diff(old_answer, expected) > 1e-2  # the weights did change
    assert max_diff(fast, expected) <= TOLERANCE  # the new weights' answer, not the cached one
    assert _cache_folders(directory) != [old] and len(_cache_folders(directory)) == 1  # replaced


def test_a_packed_cache_that_came_with_the_folder_is_rebuilt_not_read(tmp_path, small_checkpoints_cached):
    import shutil

    original = tmp_path / "original"
    shutil.copytree(FAMILIES / "bert_gelu", original)
    ids = dict(np.load(original / "reference.npz"))["input_ids"]
    Encoder.from_pretrained(original, backend="numba")
    [name] = _cache_folders(original)
    # A folder shipped with a cache whose name matches its weights, but whose panels are
    # someone else's: copied files have new identities, so the cache is not trusted.
    shipped = tmp_path / "shipped"
    shutil.copytree(original, shipped)
    data_file = shipped / ".transformer-packed" / name / "packed.bin"
    data_file.write_bytes(bytes(data_file.stat().st_size))
    expected = Encoder.from_pretrained(shipped, backend="numpy")(ids).last_hidden_state
    assert max_diff(Encoder.from_pretrained(shipped, backend="numba")(ids).last_hidden_state, expected) <= TOLERANCE


def test_a_symlinked_cache_folder_is_never_followed_and_nothing_outside_is_deleted(tmp_path,
                                                                                   small_checkpoints_cached):
    import shutil

    important = tmp_path / "important"
    (important / "photos").mkdir(parents=True)
    (important / "photos" / "a.jpg").write_bytes(b"keep me")
    (important / "0123456789abcdef01234567").mkdir()  # named like a cache folder
    (important / "0123456789abcdef01234567" / "packed.bin").write_bytes(b"keep me too")
    directory = tmp_path / "evil"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    (directory / ".transformer-packed").symlink_to(important)
    ids = dict(np.load(directory / "reference.npz"))["input_ids"]
    expected = Encoder.from_pretrained(directory, backend="numpy")(ids).last_hidden_state
    assert max_diff(Encoder.from_pretrained(directory, backend="numba")(ids).last_hidden_state, expected) <= TOLERANCE
    assert (important / "photos" / "a.jpg").read_bytes() == b"keep me"
    assert (important / "0123456789abcdef01234567" / "packed.bin").read_bytes() == b"keep me too"
    assert sorted(p.name for p in important.iterdir()) == ["0123456789abcdef01234567", "photos"]


def test_stale_cache_cleanup_deletes_only_its_own_files_and_follows_no_link(tmp_path, small_checkpoints_cached):
    import shutil

    important = tmp_path / "important"
    important.mkdir()
    (important / "packed.bin").write_bytes(b"keep me")
    directory = tmp_path / "model"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    root = directory / ".transformer-packed"
    root.mkdir()
    (root / "aaaaaaaaaaaaaaaaaaaaaaaa").symlink_to(important)  # a link named like a stale cache
    stale = root / "bbbbbbbbbbbbbbbbbbbbbbbb"
    stale.mkdir()
    (stale / "packed.bin").write_bytes(b"old")
    (stale / "notes.txt").write_text("not ours")  # a file this code never wrote
    Encoder.from_pretrained(directory, backend="numba")
    assert (important / "packed.bin").read_bytes() == b"keep me"
    assert sorted(p.name for p in stale.iterdir()) == ["notes.txt"]  # its own file went, the folder stays
    assert len([p for p in root.iterdir() if p.name not in ("aaaaaaaaaaaaaaaaaaaaaaaa", stale.name)]) == 1


@pytest.mark.parametrize("case", ["bert_masked_lm", "bert_sequence_classification", "electra_discriminator",
                                  "roberta_sequence_classification", "xlm_roberta_token_classification"])
def test_numba_heads_run_on_the_packed_gemm_and_match_the_numpy_heads(case, monkeypatch):
    from transformer import heads

    fast = Encoder.from_pretrained(FAMILIES / case, backend="numba")
    slow = Encoder.from_pretrained(FAMILIES / case, backend="numpy")
    reference = dict(np.load(FAMILIES / case / "reference.npz"))
    args = (reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    expected = slow(*args).logits

    def no_blas(*args):
        raise AssertionError("a head ran NumPy's matmul on the numba backend")

    monkeypatch.setattr(numpy_model, "linear", no_blas)
    monkeypatch.setattr(heads, "linear", no_blas)
    logits = fast(*args).logits
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    real = reference["attention_mask"].astype(bool)
    if logits.shape[:2] == real.shape:
        logits, expected = logits[real], expected[real]
    assert max_diff(logits, expected) <= TOLERANCE


def test_scratch_buffers_reused_across_calls_and_threads_never_change_an_answer():
    from concurrent.futures import ThreadPoolExecutor

    model = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numba")
    rng = np.random.default_rng(5)
    batches = [rng.integers(5, model.config.vocab_size, size=shape) for shape in [(2, 3), (5, 11), (1, 2), (4, 7)]]
    fresh = [Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numba")(ids).last_hidden_state
             for ids in batches]
    for ids, expected in zip(batches * 2, fresh * 2):  # small after big and big after small
        assert np.array_equal(model(ids).last_hidden_state, expected)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two threads at once: a buffer set each
        results = list(pool.map(lambda ids: model(ids).last_hidden_state, batches * 4))
    for result, expected in zip(results, fresh * 4):
        assert np.array_equal(result, expected)


def test_loading_from_the_packed_cache_also_keeps_big_arrays_out_of_the_heap(tmp_path, monkeypatch):
    # glibc's malloc otherwise serves later batch-sized arrays from the heap and keeps their
    # holes resident (BERT-base corpus job: 655 MB peak instead of 610 MB).
    import shutil

    from transformer import encoder as encoder_module
    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)
    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    Encoder.from_pretrained(directory, backend="numba")  # writes the cache
    calls = []
    monkeypatch.setattr(encoder_module, "keep_big_arrays_out_of_the_heap", lambda: calls.append("malloc"))
    monkeypatch.setattr(encoder_module, "load_params", lambda *args: calls.append("load_params"))
    Encoder.from_pretrained(directory, backend="numba")  # from the cache: load_params never runs
    assert calls == ["malloc"]


@pytest.mark.parametrize("case", ["bert_gelu", "mpnet_gelu", "electra_projection", "roberta_sequence_classification"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_layers_and_both_tile_widths_give_the_same_bits_as_the_kernels_called_one_by_one(case, threads, monkeypatch):
    import transformer
    from transformer.numba_backend import forward
    from transformer.kernels import gemm as gemm_module
    from transformer.kernels import microkernel

    model = Encoder.from_pretrained(FAMILIES / case, backend="numba")
    rng = np.random.default_rng(5)
    ids = rng.integers(5, model.config.vocab_size, size=(4, 9))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 1:] = 0
    previous = transformer.get_num_threads()
    transformer.set_num_threads(threads)
    try:
        outputs = {}
        # ffn_rows 4: the feed-forward in blocks; block rows 12: every GEMM in row blocks of
        # one tile (several tasks per GEMM, as big batches get), not one block with its columns
        # cut; wide: the micro-kernel's 12 x 32 (AVX-512) tiles, else 6 x 16 (AVX2).
        rows = gemm_module.MAX_BLOCK_ROWS
        for fused, ffn_rows, block_rows, wide in ((True, 1024, rows, False), (False, 1024, rows, False),
                                                  (True, 4, rows, False), (False, 4, rows, False),
                                                  (True, 1024, 6, False), (False, 1024, 6, False),
                                                  (True, 1024, rows, True), (False, 1024, rows, True),
                                                  (True, 4, 12, True), (False, 4, 12, True)):
            monkeypatch.setattr(forward, "FUSED_LAYERS", fused)
            monkeypatch.setattr(forward, "FFN_ROWS", ffn_rows)
            monkeypatch.setattr(gemm_module, "MAX_BLOCK_ROWS", block_rows)
            monkeypatch.setattr(microkernel, "WIDE_TILES", wide)
            gemm_module.plan_blocks.cache_clear()
            model._weights._plans.clear()  # the plans keep their GEMM blocks
            # With hidden states the fused path runs one layer per call, without all in one.
            outputs[fused, ffn_rows, block_rows, wide] = (model(ids, mask, output_hidden_states=True),
                                                          model(ids, mask).last_hidden_state)
    finally:
        transformer.set_num_threads(previous)
        gemm_module.plan_blocks.cache_clear()
        model._weights._plans.clear()
    reference = outputs[False, 1024, rows, False][0]
    assert reference.last_hidden_state.dtype == np.float32
    for key, (output, last_hidden_state) in outputs.items():
        assert np.array_equal(output.last_hidden_state, reference.last_hidden_state), key
        assert np.array_equal(last_hidden_state, reference.last_hidden_state), key
        for ours, theirs in zip(output.hidden_states, reference.hidden_states):
            assert np.array_equal(ours, theirs), key


def test_qkv_is_packed_head_major_and_unpacks_to_the_same_weights():
    from transformer.numba_backend import program

    rng = np.random.default_rng(3)
    weights = [rng.standard_normal((8, 12), dtype=np.float32) for _ in range(3)]  # query, key, value: 3 heads of 4
    biases = [rng.standard_normal(12, dtype=np.float32) for _ in range(3)]
    weight, bias = program.head_major(weights, biases, 3)
    assert weight.shape == (8, 36) and bias.shape == (36,)
    for head in range(3):  # columns q_h | k_h | v_h, head after head
        for part in range(3):
            columns = slice(head * 12 + part * 4, head * 12 + part * 4 + 4)
            np.testing.assert_array_equal(weight[:, columns], weights[part][:, head * 4:head * 4 + 4])
            np.testing.assert_array_equal(bias[columns], biases[part][head * 4:head * 4 + 4])
    unpacked_weights, unpacked_biases = program.query_key_value(weight, bias, 3)
    np.testing.assert_array_equal(unpacked_weights, np.stack(weights))
    np.testing.assert_array_equal(unpacked_biases, np.stack(biases))


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("rows, heads, head_dim", [(16, 12, 32), (128, 12, 64), (40, 4, 16), (7, 1, 16), (128, 16, 24)])
def test_each_thread_attends_the_heads_its_qkv_columns_hold(rows, heads, head_dim, wide):
    from transformer.kernels import gemm as gemm_module
    from transformer.kernels import program

    n_panels = -(-3 * heads * head_dim // 16)
    plan = gemm_module.plan_blocks(rows, n_panels, heads * head_dim, 2, wide)
    ranges = program.head_ranges(plan, heads, head_dim)
    assert ranges[0] == 0 and ranges[-1] == heads and (np.diff(ranges) >= 0).all()
    unit_columns = plan.unit_panels * 16
    for thread in range(2):
        first, stop = np.array(plan.bounds[thread:thread + 2]) * unit_columns
        for head in range(ranges[thread], ranges[thread + 1]):  # the head's middle column is the thread's
            assert first <= (3 * head + 1.5) * head_dim < stop
    if 3 * head_dim % unit_columns == 0 and heads % 2 == 0:  # heads end on unit bounds: an even split
        assert list(ranges) == [0, heads // 2, heads]


def test_fused_forward_runs_all_layers_in_one_call_per_group(monkeypatch):
    # No Python between layers: the layer kernel is entered once per group of sequences (once
    # per layer only when every layer's hidden states are asked for).
    from transformer.kernels import program as program_module
    from transformer.numba_backend import forward

    model = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numba")
    layers = model.config.num_hidden_layers
    assert layers > 1
    calls = []
    run_chunks = program_module.run_chunks

    def counting_run_chunks(kernel, bounds, *args):
        calls.append(tuple(args[-2:]))  # (first_layer, stop_layer)
        return run_chunks(kernel, bounds, *args)

    monkeypatch.setattr(program_module, "run_chunks", counting_run_chunks)
    ids = np.random.default_rng(2).integers(5, model.config.vocab_size, size=(3, 7))
    model(ids)
    assert calls == [(0, layers)]
    calls.clear()
    monkeypatch.setattr(forward, "GROUP_ROWS", 7)  # a group per sequence
    model(ids)
    assert calls == [(0, layers)] * 3
    calls.clear()
    model(ids, output_hidden_states=True)
    assert calls == [(i, i + 1) for i in range(layers)]


@pytest.mark.parametrize("case", ["bert_gelu", "mpnet_gelu"])
def test_plans_kept_per_lengths_give_each_batch_its_own_answer(case, monkeypatch):
    # The attention and layer plans are kept under the sequences' lengths (and, for MPNet's
    # position bias, the padded layout): batches that differ only there must not share one.
    import transformer
    from transformer.numba_backend import forward

    monkeypatch.setattr(forward, "PLANS_KEPT", 3)  # the store is cleared along the way too
    model = Encoder.from_pretrained(FAMILIES / case, backend="numba")
    rng = np.random.default_rng(7)
    ids = rng.integers(5, model.config.vocab_size, size=(3, 8))
    masks = [np.ones_like(ids) for _ in range(4)]
    masks[1][0, 6:] = 0  # other lengths
    masks[2][0, 3] = 0  # the lengths of masks[1] on another layout: a hole (MPNet's bias differs)
    masks[2][0, 7] = 0
    masks[3][2, 3:] = 0
    fresh = [Encoder.from_pretrained(FAMILIES / case, backend="numba")(ids, mask).last_hidden_state for mask in masks]
    previous = transformer.get_num_threads()
    try:
        for threads in (2, 1):
            transformer.set_num_threads(threads)
            for mask, expected in zip(masks * 2, fresh * 2):
                assert np.array_equal(model(ids, mask).last_hidden_state, expected)
    finally:
        transformer.set_num_threads(previous)
    assert 0 < len(model._weights._plans) <= 3


def test_unused_checkpoint_layers_are_warned_about_also_when_loading_from_the_packed_cache(tmp_path,
                                                                                         small_checkpoints_cached):
    import json
    import shutil

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    config = json.loads((directory / "config.json").read_text())
    config["num_hidden_layers"] = 1  # the checkpoint holds 2
    (directory / "config.json").write_text(json.dumps(config))
    for _ in range(2):  # packs and caches, then reads the cache
        with pytest.warns(UserWarning, match="the checkpoint has 2 layers, config.json 1: layer 1"):
            Encoder.from_pretrained(directory, backend="numba")
    assert len(_cache_folders(directory)) == 1
