"""SentenceEncoder: what `encode` promises (shapes, order, batching, truncation, errors) and
that each sentence-transformers module setting it reads gives sentence-transformers' numbers."""

import json
import os

import numpy as np
import pytest

from transformer.sentence import SentenceEncoder, cosine_similarity, read_modules

TEXTS = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun.",
    "Hi",
    "Le chat est assis sur le tapis.",
    "",
    "Stock markets fell sharply on Monday after the announcement.",
]
LONG = " ".join(["The committee met again to discuss the budget, the schedule and the new rules."] * 40)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir)


def test_encode_returns_float32_rows_of_the_model_dimension(minilm):
    vectors = minilm.encode(TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 384)


def test_a_single_string_gives_a_single_vector(minilm):
    vector = minilm.encode("A man is eating food.")
    assert vector.shape == (384,)
    np.testing.assert_allclose(vector, minilm.encode(["A man is eating food."])[0], atol=1e-6)


def test_vectors_are_unit_length_when_the_model_normalizes(minilm):
    np.testing.assert_allclose(np.linalg.norm(minilm.encode(TEXTS), axis=1), 1.0, atol=1e-6)


def test_normalize_false_returns_the_pooled_vectors_before_normalization(minilm):
    raw = minilm.encode(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), minilm.encode(TEXTS), atol=1e-6)


def test_vectors_come_back_in_input_order(minilm):
    forward = minilm.encode(TEXTS, batch_size=2)
    backward = minilm.encode(TEXTS[::-1], batch_size=2)
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-6)


def test_a_texts_vector_does_not_depend_on_its_batch(minilm):
    alone = np.stack([minilm.encode([text])[0] for text in TEXTS])
    together = minilm.encode(TEXTS + [LONG], batch_size=32)[: len(TEXTS)]  # padded to 256 tokens
    in_pairs = minilm.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(in_pairs, alone, rtol=0, atol=1e-6)


def test_max_seq_length_comes_from_sentence_bert_config_not_tokenizer_json(minilm, minilm_dir):
    stored = json.loads((minilm_dir / "tokenizer.json").read_text())["truncation"]["max_length"]
    assert stored == 128
    assert minilm.max_seq_length == 256


def test_long_texts_are_truncated_at_max_seq_length(minilm):
    tokens = minilm.tokenizer([LONG])["input_ids"].shape[1]
    assert tokens > 256
    # Anything after token 256 is cut off, but tokens 129..256 still count.
    np.testing.assert_allclose(minilm.encode(LONG + " Completely different ending!"), minilm.encode(LONG), atol=1e-6)
    words = LONG.split()
    middle = " ".join(words[:150] + ["zebra"] + words[151:])  # word 150 is past token 128
    assert np.abs(minilm.encode(middle) - minilm.encode(LONG)).max() > 1e-3


def test_chunked_long_texts_let_the_tail_count(minilm):
    changed = LONG + " Completely different ending about volcanoes and penguins!"
    chunked = minilm.encode([LONG, changed], long="chunk")
    assert np.abs(chunked[0] - chunked[1]).max() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(chunked, axis=1), 1.0, atol=1e-6)


def test_chunked_short_texts_equal_truncated_ones(minilm):
    np.testing.assert_allclose(minilm.encode(TEXTS, long="chunk"), minilm.encode(TEXTS), atol=1e-6)


def test_chunked_vector_is_the_token_weighted_mean_of_its_windows(minilm):
    stride = 16
    windows = minilm.tokenizer([LONG], truncation=True, max_length=256, stride=stride,
                               return_overflowing_tokens=True, padding=True)
    assert len(windows["input_ids"]) >= 2
    texts = [minilm.tokenizer.decode(row[mask == 1]) for row, mask in
             zip(windows["input_ids"], windows["attention_mask"])]
    # Each window decoded and encoded on its own gives the same tokens back (lower-cased WordPiece).
    per_window = minilm.encode(texts, normalize=False)  # [windows, 384]
    tokens = windows["attention_mask"].sum(axis=1)  # the last window is shorter
    assert tokens[-1] < tokens[0]
    expected = (per_window * tokens[:, None]).sum(axis=0) / tokens.sum()
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(minilm.encode(LONG, long="chunk", stride=stride), expected, atol=1e-5)


def test_cosine_similarity_of_a_set_with_itself_has_ones_on_the_diagonal(minilm):
    matrix = cosine_similarity(minilm.encode(TEXTS[:3]))
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-7)


@pytest.mark.parametrize("bad, error, message", [
    (["fine", 3, "also fine"], TypeError, r"texts\[1\] is int; expected str"),
    (None, TypeError, "texts must be a str or a list of str, got None$"),
    (3.5, TypeError, "texts must be a str or a list of str, got the float 3.5"),
    (b"hi", TypeError, r"texts is bytes; expected a str or a list of str \(decode bytes first"),
    (["ok", b"hi"], TypeError, r"texts\[1\] is bytes; expected str \(decode bytes first"),
    (["ok", None], TypeError, r"texts\[1\] is None; expected str"),
    ({"a": 1}, TypeError, "texts is a dict; expected a str or a list of str"),
    (["ok", "ab\udc80cd"], ValueError, r"texts\[1\] holds a lone surrogate \('\\udc80' at character 2\)"),
])
def test_encode_rejects_bad_texts_naming_the_problem(minilm, bad, error, message):
    with pytest.raises(error, match=message):
        minilm.encode(bad)


def test_encode_of_no_texts_is_an_empty_float32_array(minilm):
    vectors = minilm.encode([])
    assert vectors.shape == (0, minilm.dimension) and vectors.dtype == np.float32
    assert minilm.encode([], convert_to_numpy=False) == []


def test_encode_takes_sentence_transformers_argument_names(minilm):
    expected = minilm.encode(TEXTS[:3])
    assert np.array_equal(minilm.encode(TEXTS[:3], show_progress_bar=False, normalize_embeddings=True), expected)
    assert np.array_equal(minilm.encode(TEXTS[:3], device="cpu", convert_to_numpy=True), expected)
    as_list = minilm.encode(TEXTS[:3], convert_to_numpy=False)
    assert isinstance(as_list, list) and all(np.array_equal(a, b) for a, b in zip(as_list, expected))
    with pytest.raises(ValueError, match="show_progress=True and show_progress_bar=False say different things"):
        minilm.encode(TEXTS[:3], show_progress=True, show_progress_bar=False)
    with pytest.raises(ValueError, match="convert_to_tensor=True: this package computes with NumPy"):
        minilm.encode(TEXTS[:3], convert_to_tensor=True)
    with pytest.raises(ValueError, match="device='cuda': this package runs on the CPU only"):
        minilm.encode(TEXTS[:3], device="cuda")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_sentence_encoder_pickles_and_gives_the_same_vectors(minilm_dir, backend):
    import pickle

    model = SentenceEncoder.from_pretrained(minilm_dir, backend=backend)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.backend == backend
    assert np.array_equal(copy.encode(TEXTS), model.encode(TEXTS))


def test_a_model_that_overflows_raises_instead_of_answering_nan(minilm_dir):
    model = SentenceEncoder.from_pretrained(minilm_dir, backend="numpy")
    model.encoder.params["embeddings"]["word"][:] = np.float32(3e38)  # finite weights, infinite sums
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(ValueError, match=r"the vectors of 2 texts \(texts\[0\], texts\[1\]\) are not finite"):
        model.encode(["hello", "world"])


def test_encode_rejects_a_bad_batch_size(minilm):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        minilm.encode(TEXTS, batch_size=0)


def test_encode_rejects_an_unknown_long_mode(minilm):
    with pytest.raises(ValueError, match="long='split'; expected one of 'truncate', 'chunk'"):
        minilm.encode(TEXTS, long="split")


def test_encode_rejects_a_stride_that_leaves_no_new_tokens(minilm):
    with pytest.raises(ValueError, match=r"stride must be an integer in \[0, 253\]"):
        minilm.encode(LONG, long="chunk", stride=254)


def test_numpy_backend_gives_the_same_vectors(minilm, minilm_dir):
    reference = SentenceEncoder.from_pretrained(minilm_dir, backend="numpy")
    assert reference.backend == "numpy"
    np.testing.assert_allclose(reference.encode(TEXTS), minilm.encode(TEXTS), rtol=0, atol=1e-6)


def test_from_pretrained_accepts_a_model_name(minilm):
    by_name = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    assert by_name.dimension == 384 and by_name.pooling_modes == ["mean"] and by_name.normalize


# --- model folders with other sentence-transformers settings ------------------------------------


def _variant(source, destination, pooling=None, normalize=True, modules=True, extra_module=None):
    """A copy of a model folder (big files linked, not copied) with other module settings."""
    destination.mkdir()
    for path in source.iterdir():
        if path.is_file() and path.name not in ("modules.json",):
            os.symlink(path, destination / path.name)
    (destination / "1_Pooling").mkdir()
    pooling_config = {"word_embedding_dimension": 384, "pooling_mode_cls_token": False,
                      "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                      "pooling_mode_mean_sqrt_len_tokens": False}
    for mode in pooling or ["mean"]:
        key = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
               "max": "pooling_mode_max_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens"}[mode]
        pooling_config[key] = True
    (destination / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    listed = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        listed.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    if extra_module:
        listed.append({"idx": 3, "name": "3", "path": "3_Dense", "type": extra_module})
    if modules:
        (destination / "modules.json").write_text(json.dumps(listed))
    return destination


def _sentence_transformers_vectors(folder, texts):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    return model.encode(texts, convert_to_numpy=True)


@pytest.mark.parametrize("modes, normalize", [
    (["cls"], True),
    (["max"], True),
    (["mean_sqrt_len_tokens"], False),
    (["cls", "mean"], True),
])
def test_pooling_settings_give_sentence_transformers_numbers(minilm_dir, tmp_path, modes, normalize):
    folder = _variant(minilm_dir, tmp_path / "variant", pooling=modes, normalize=normalize)
    ours = SentenceEncoder.from_pretrained(folder)
    assert ours.pooling_modes == modes and ours.normalize == normalize
    expected = _sentence_transformers_vectors(folder, TEXTS)
    np.testing.assert_allclose(ours.encode(TEXTS), expected, rtol=0, atol=1e-5)


def test_a_plain_hugging_face_folder_gets_mean_pooling(minilm_dir, tmp_path):
    folder = _variant(minilm_dir, tmp_path / "plain", modules=False)
    os.remove(folder / "sentence_bert_config.json")
    assert read_modules(folder) == {"transformer": "", "pooling": ["mean"], "include_prompt": True, "dense": [],
                                    "normalize": False, "max_seq_length": None, "do_lower_case": False}
    ours = SentenceEncoder.from_pretrained(folder)
    assert ours.max_seq_length == 512  # tokenizer_config.json's model_max_length
    expected = _sentence_transformers_vectors(folder, TEXTS)
    np.testing.assert_allclose(ours.encode(TEXTS), expected, rtol=0, atol=1e-5)


def test_an_unsupported_module_is_named(minilm_dir, tmp_path):
    folder = _variant(minilm_dir, tmp_path / "lstm", extra_module="sentence_transformers.models.LSTM")
    with pytest.raises(ValueError, match="lists a 'sentence_transformers.models.LSTM' module"):
        SentenceEncoder.from_pretrained(folder)


def test_encode_never_runs_the_pooler_it_would_throw_away(minilm, monkeypatch):
    from transformer import model as numpy_model

    expected = minilm.encode(TEXTS)

    def no_pooler(*args):
        raise AssertionError("the pooler ran")

    monkeypatch.setattr(numpy_model, "pooler", no_pooler)
    if minilm.backend == "numba":
        monkeypatch.setattr(minilm.encoder._forward_module, "pooler", no_pooler)
    assert np.array_equal(minilm.encode(TEXTS), expected)


# --- issue 17, finding 8: the sentence-transformers files are read strictly ---------------------
from transformer.files import ModelFileError  # noqa: E402
from transformer.sentence import _tokenizer_limit  # noqa: E402

MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def _sentence_folder(folder, modules=MODULES, pooling_config=None, settings=None):
    """A folder holding only the sentence-transformers files (read_modules reads nothing else)."""
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(modules if isinstance(modules, str) else json.dumps(modules))
    pooling_config = {"pooling_mode_mean_tokens": True} if pooling_config is None else pooling_config
    (folder / "1_Pooling" / "config.json").write_text(
        pooling_config if isinstance(pooling_config, str) else json.dumps(pooling_config))
    settings = {"max_seq_length": 256, "do_lower_case": False} if settings is None else settings
    (folder / "sentence_bert_config.json").write_text(settings if isinstance(settings, str) else json.dumps(settings))
    return folder


def test_read_modules_reads_the_three_files(tmp_path):
    assert read_modules(_sentence_folder(tmp_path)) == {
        "transformer": "", "pooling": ["mean"], "include_prompt": True, "dense": [], "normalize": True,
        "max_seq_length": 256, "do_lower_case": False}


@pytest.mark.parametrize("modules, message", [
    ({"0": MODULES[0]}, r"modules\.json must hold a list of modules"),
    ([MODULES[0], "Pooling"], r"modules\.json: module 1 is \"Pooling\"; expected an object"),
    ([{**MODULES[0], "type": None}], r"modules\.json: module 0 has type null"),
    ([{**MODULES[0], "path": "/etc"}], r"modules\.json: module 0 has path \"/etc\"; expected a folder inside"),
    ([{**MODULES[0], "path": "../other"}], r"module 0 has path \"\.\./other\""),
    ([{**MODULES[0], "path": "a\\..\\..\\b"}], r"module 0 has path"),
    ([{**MODULES[0], "path": "C:x"}], r"module 0 has path \"C:x\""),
    ([{**MODULES[0], "path": 3}], r"module 0 has path 3"),
    ([MODULES[1], MODULES[0]], r"module 1 is a Transformer after a Pooling"),
    ([MODULES[0], MODULES[0]], r"module 1 is a Transformer after a Transformer"),
    ([MODULES[1]], r"lists no Transformer module"),
    ('[{"type": "sentence_transformers.models.Transformer", "type": "x"}]', r"the key 'type' appears twice"),
])
def test_malformed_modules_json_is_refused_naming_the_entry_and_field(tmp_path, modules, message):
    with pytest.raises(ModelFileError, match=message):
        read_modules(_sentence_folder(tmp_path, modules=modules))


@pytest.mark.parametrize("config, message", [
    ({"pooling_mode_mean_tokens": "false"}, r"pooling_mode_mean_tokens must be true or false, found 'false'"),
    ({"pooling_mode_cls_token": 1}, r"pooling_mode_cls_token must be true or false"),
    ({"pooling_mode": "median"}, r"pooling_mode 'median' is not a pooling mode"),
    ({"pooling_mode": []}, r"pooling_mode must be a mode name or a non-empty list"),
    ({"pooling_mode": [["mean"]]}, r"pooling_mode must be a mode name"),
    ([], r"the pooling config must be a JSON object, found list"),
    ('{"pooling_mode": NaN}', r"JSON has no NaN"),
])
def test_malformed_pooling_config_is_refused_naming_the_file_and_field(tmp_path, config, message):
    with pytest.raises(ModelFileError, match=r"1_Pooling/config\.json.*" + message):
        read_modules(_sentence_folder(tmp_path, pooling_config=config))


@pytest.mark.parametrize("settings, message", [
    ({"max_seq_length": 0}, r"max_seq_length must be a positive integer or null, found 0"),
    ({"max_seq_length": -5}, r"max_seq_length must be a positive integer or null, found -5"),
    ({"max_seq_length": 128.0}, r"max_seq_length must be a positive integer or null, found 128\.0"),
    ({"max_seq_length": True}, r"max_seq_length must be a positive integer or null, found true"),
    ({"do_lower_case": "yes"}, r"do_lower_case must be true or false, found \"yes\""),
    ([256], r"must hold a JSON object"),
])
def test_malformed_sentence_bert_config_is_refused_naming_the_field(tmp_path, settings, message):
    with pytest.raises(ModelFileError, match=r"sentence_bert_config\.json.*" + message):
        read_modules(_sentence_folder(tmp_path, settings=settings))


@pytest.mark.parametrize("name", ["modules.json", "1_Pooling/config.json", "sentence_bert_config.json"])
def test_a_sentence_file_linked_to_a_device_is_refused_not_read(tmp_path, name):
    folder = _sentence_folder(tmp_path)
    (folder / name).unlink()
    (folder / name).symlink_to("/dev/urandom")
    with pytest.raises(ModelFileError, match=rf"{name} is a device; expected a regular file"):
        read_modules(folder)


@pytest.mark.parametrize("value, limit", [(512, 512), (True, None), (0, None), (-5, None), (512.0, None),
                                          (1000000000000000019884624838656, None)])
def test_tokenizer_limit_takes_only_a_real_positive_model_max_length(tmp_path, value, limit):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": value}))
    assert _tokenizer_limit(tmp_path) == limit


# --- found by tests/test_fuzz_sentence_configs.py ------------------------------------------------
def test_a_modules_json_holding_null_is_not_taken_for_a_missing_one(tmp_path):
    with pytest.raises(ModelFileError, match=r"modules\.json must hold a list of modules, found null"):
        read_modules(_sentence_folder(tmp_path, modules="null"))


@pytest.mark.parametrize("module, message", [
    ({"type": "sentence_transformers.models.Transformer"}, r"module 0 has no path"),
    ({**MODULES[0], "path": "\ud800"}, r"module 0 has path \"\\ud800\""),
    ({**MODULES[0], "path": "a\x00b"}, r"module 0 has path"),
])
def test_a_module_path_sentence_transformers_or_the_os_cannot_take_is_refused(tmp_path, module, message):
    with pytest.raises(ModelFileError, match=message):
        read_modules(_sentence_folder(tmp_path, modules=[module]))


def test_module_paths_the_os_cannot_open_are_named_in_modules_json(tmp_path):
    long_name = "x" * 300  # longer than a file name may be
    with pytest.raises(ModelFileError, match=r"modules\.json: the Transformer module's path \"x+\.\.\. "
                                             r"cannot be read: File name too long"):
        read_modules(_sentence_folder(tmp_path, modules=[{**MODULES[0], "path": long_name}]))
    with pytest.raises(ModelFileError, match=r"modules\.json: module 1 is a Pooling module in \"x+\.\.\., whose "
                                             r"config\.json cannot be read: File name too long"):
        read_modules(_sentence_folder(tmp_path, modules=[MODULES[0], {**MODULES[1], "path": long_name}]))


def test_a_pooling_module_without_its_config_is_named(tmp_path):
    with pytest.raises(ModelFileError, match=r"module 1 is a Pooling module in \"2_Pooling\", but "
                                             r".*2_Pooling/config\.json does not exist"):
        read_modules(_sentence_folder(tmp_path, modules=[MODULES[0], {**MODULES[1], "path": "2_Pooling"}]))
