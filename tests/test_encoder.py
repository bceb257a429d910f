"""Encoder: real checkpoints against transformers' committed outputs, the API, backend choice."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from transformer import encoder as encoder_module
from transformer.encoder import Encoder, EncoderOutput

REFERENCES = Path(__file__).parent / "references"
FAMILIES = REFERENCES / "families"


def batches(reference):
    """(input_ids, attention_mask, token_type_ids, last_hidden_state of real tokens, pooler_output)."""
    b = 0
    while f"input_ids_{b}" in reference:
        yield (reference[f"input_ids_{b}"], reference[f"attention_mask_{b}"], reference[f"token_type_ids_{b}"],
               reference[f"last_hidden_state_{b}"], reference[f"pooler_output_{b}"])
        b += 1


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return Encoder.from_pretrained(minilm_dir, backend="numpy")


@pytest.fixture(scope="module")
def minilm_reference():
    return dict(np.load(REFERENCES / "all-MiniLM-L6-v2.npz"))


@pytest.fixture(scope="module")
def minilm_batches(minilm, minilm_reference):
    """Each committed batch with our output on it (computed once for the module)."""
    return [(batch, minilm(*batch[:3])) for batch in batches(minilm_reference)]


def test_minilm_matches_transformers_on_56_sentences_in_padded_batches(minilm_reference, minilm_batches):
    assert len(minilm_reference["sentences"]) >= 50
    worst_hidden = worst_pooler = 0.0
    for (ids, mask, types_, expected, expected_pooler), out in minilm_batches:
        assert (mask == 0).any()  # real padding in every batch
        worst_hidden = max(worst_hidden, np.abs(out.last_hidden_state[mask.astype(bool)] - expected).max())
        worst_pooler = max(worst_pooler, np.abs(out.pooler_output - expected_pooler).max())
    assert worst_hidden <= 1e-5
    assert worst_pooler <= 1e-5


@pytest.fixture(scope="module")
def mpnet(mpnet_dir):
    with pytest.warns(UserWarning, match="MPNetForMaskedLM"):
        return Encoder.from_pretrained(mpnet_dir, backend="numpy")


def test_mpnet_matches_transformers_in_padded_batches(mpnet):
    reference = dict(np.load(REFERENCES / "all-mpnet-base-v2.npz"))
    for ids, mask, types_, expected, expected_pooler in batches(reference):
        out = mpnet(ids, mask, types_)
        assert np.abs(out.last_hidden_state[mask.astype(bool)] - expected).max() <= 5e-5
        assert np.abs(out.pooler_output - expected_pooler).max() <= 5e-5


def test_mpnet_sentence_alone_agrees_with_it_inside_a_padded_batch(mpnet):
    # MPNet counts positions over non-padding ids, so padding must not shift them
    ids, mask, types_, _, _ = next(batches(dict(np.load(REFERENCES / "all-mpnet-base-v2.npz"))))
    batch_out = mpnet(ids, mask, types_).last_hidden_state
    for row in range(ids.shape[0]):
        length = int(mask[row].sum())
        alone = mpnet(ids[row:row + 1, :length]).last_hidden_state
        assert np.abs(alone[0] - batch_out[row, :length]).max() <= 1e-5


def test_sentence_alone_agrees_with_it_inside_a_padded_batch(minilm, minilm_batches):
    # two batches (16 sentences, the longest among them) keep the test quick
    longest = max(range(len(minilm_batches)), key=lambda b: minilm_batches[b][0][0].shape[1])
    for b in sorted({0, longest}):
        (ids, mask, _, _, _), out = minilm_batches[b]
        for row in range(ids.shape[0]):
            length = int(mask[row].sum())
            alone = minilm(ids[row:row + 1, :length]).last_hidden_state
            assert np.abs(alone[0] - out.last_hidden_state[row, :length]).max() <= 1e-5


def test_output_fields_shapes_and_dtypes(minilm):
    out = minilm([[101, 7592, 2088, 102]], output_hidden_states=True, output_attentions=True)
    assert isinstance(out, EncoderOutput)
    assert out.last_hidden_state.shape == (1, 4, 384) and out.last_hidden_state.dtype == np.float32
    assert out.pooler_output.shape == (1, 384) and out.pooler_output.dtype == np.float32
    assert len(out.hidden_states) == 7 and all(h.dtype == np.float32 for h in out.hidden_states)
    assert len(out.attentions) == 6 and out.attentions[0].shape == (1, 12, 4, 4)
    assert out.logits is None
    plain = minilm([[101, 7592, 2088, 102]])
    assert plain.hidden_states is None and plain.attentions is None


def test_from_pretrained_resolves_a_model_name_through_the_store(minilm_dir):
    model = Encoder.from_pretrained("all-MiniLM-L6-v2", backend="numpy")
    assert model.config.hidden_size == 384
    assert model.path == Path(minilm_dir)


def test_mpnet_checkpoint_without_its_named_head_warns_and_loads_the_base_model(mpnet_dir):
    with pytest.warns(UserWarning, match="MPNetForMaskedLM but the checkpoint holds no masked_lm head"):
        model = Encoder.from_pretrained(mpnet_dir, backend="numpy")
    assert model.head is None
    out = model([[0, 2000, 2]])
    assert out.logits is None and out.pooler_output.shape == (1, 768)


def test_bad_input_is_refused_before_the_forward_pass(minilm):
    with pytest.raises(ValueError, match="token id 40000, outside the vocabulary"):
        minilm([[101, 40000, 102]])
    with pytest.raises(ValueError, match="sequence length 513 is longer than this model accepts"):
        minilm([[101] * 513])
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        minilm(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="empty batch"):
        minilm(np.zeros((0, 4), dtype=np.int64))


# --- backends ------------------------------------------------------------------------------
def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; choose one of 'numpy', 'numba'"):
        Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="cuda")


def fake_kernels_forward(calls):
    """A stand-in for transformer.numba_backend.forward that records how Encoder uses it."""
    from transformer import model as numpy_model

    module = types.ModuleType("transformer.numba_backend.forward")

    def prepare(params, config):
        calls.append("prepare")
        return {"prepared": params}

    def encoder_forward(prepared, config, input_ids, attention_mask, token_type_ids,
                        output_hidden_states, output_attentions):
        calls.append((input_ids.dtype, attention_mask.dtype, token_type_ids.dtype))
        return numpy_model.encoder_forward(prepared["prepared"], config, input_ids, attention_mask,
                                           token_type_ids, output_hidden_states, output_attentions)

    def pooler(prepared, last_hidden_state):
        return numpy_model.pooler(prepared["prepared"]["pooler"], last_hidden_state)

    module.prepare, module.encoder_forward, module.pooler = prepare, encoder_forward, pooler
    return module


def test_backend_none_picks_numba_when_kernels_forward_imports(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "transformer.numba_backend.forward", fake_kernels_forward(calls))
    model = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend=None)
    assert model.backend == "numba"
    model([[3, 4, 5]])
    model([[3, 4]], [[1, 1]], [[0, 1]])
    # weights prepared once at load; every call gets checked int64 arrays, never None
    assert calls == ["prepare"] + [(np.dtype(np.int64),) * 3] * 2


def test_backend_none_falls_back_to_numpy_without_kernels(monkeypatch):
    def missing():
        raise ImportError("No module named 'transformer.numba_backend.forward'")

    monkeypatch.setattr(encoder_module, "_kernels_forward", missing)
    assert Encoder.from_pretrained(FAMILIES / "bert_gelu", backend=None).backend == "numpy"
    with pytest.raises(ImportError, match="backend='numba' needs transformer.numba_backend.forward"):
        Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numba")


def test_numba_backend_gives_the_numpy_answer_through_the_same_interface(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer.numba_backend.forward", fake_kernels_forward([]))
    reference = np.load(FAMILIES / "bert_masked_lm" / "reference.npz")
    fast = Encoder.from_pretrained(FAMILIES / "bert_masked_lm", backend="numba")
    slow = Encoder.from_pretrained(FAMILIES / "bert_masked_lm", backend="numpy")
    args = (reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    # pooler and heads run in NumPy for both backends
    np.testing.assert_array_equal(fast(*args).logits, slow(*args).logits)


def test_repr_names_family_size_and_backend():
    model = Encoder.from_pretrained(FAMILIES / "bert_masked_lm", backend="numpy")
    assert repr(model) == "Encoder(bert, layers=1, hidden=32, backend='numpy', head=masked_lm)"


def _with_first_weight_negated(source, target, pad=0):
    """Write `source` (a safetensors file) to `target` with its first float tensor negated:
    other weights of the same size. pad: spaces added to the header (the tensors then start
    that many bytes later in the file)."""
    import json

    data = bytearray(source.read_bytes())
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    name = next(n for n, e in header.items() if n != "__metadata__" and e["dtype"] == "F32")
    begin, end = (8 + length + offset for offset in header[name]["data_offsets"])
    data[begin:end] = (-np.frombuffer(bytes(data[begin:end]), "<f4")).tobytes()
    padded = (length + pad).to_bytes(8, "little") + bytes(data[8:8 + length]) + b" " * pad + bytes(data[8 + length:])
    target.write_bytes(padded)


def test_a_checkpoint_replaced_while_it_loads_gives_the_new_weights_not_a_mix(tmp_path, monkeypatch):
    import os
    import shutil

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    _with_first_weight_negated(directory / "model.safetensors", tmp_path / "new.safetensors")
    expected = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numpy")
    real_load_params = encoder_module.load_params
    calls = []

    def load_params_then_replace(tensors, config):
        params = real_load_params(tensors, config)  # every tensor read from the old file
        if not calls:  # then the file is replaced, as `mv new model.safetensors` does
            os.replace(tmp_path / "new.safetensors", directory / "model.safetensors")
        calls.append(1)
        return params

    monkeypatch.setattr(encoder_module, "load_params", load_params_then_replace)
    model = Encoder.from_pretrained(directory, backend="numpy")
    monkeypatch.undo()
    new = Encoder.from_pretrained(directory, backend="numpy")
    assert len(calls) == 2  # loaded again once the file had changed under the first load
    ids = [[5, 6, 7, 8]]
    assert np.array_equal(model(ids).last_hidden_state, new(ids).last_hidden_state)
    assert not np.allclose(model(ids).last_hidden_state, expected(ids).last_hidden_state)


def test_a_checkpoint_replaced_after_its_header_is_read_never_enters_the_packed_cache(tmp_path, monkeypatch):
    import os
    import shutil

    from transformer.numba_backend import packed_cache

    monkeypatch.setattr(packed_cache, "CACHE_MIN_BYTES", 0)  # cache this small checkpoint too
    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    _with_first_weight_negated(directory / "model.safetensors", tmp_path / "new.safetensors", pad=64)
    real_read_checkpoint = encoder_module.read_checkpoint
    calls = []

    def read_header_then_replace(path):
        tensors = real_read_checkpoint(path)  # the old file's header: offsets into the old file
        if not calls:
            os.replace(tmp_path / "new.safetensors", directory / "model.safetensors")
        calls.append(1)
        return tensors

    monkeypatch.setattr(encoder_module, "read_checkpoint", read_header_then_replace)
    first = Encoder.from_pretrained(directory, backend="numba")
    monkeypatch.setattr(encoder_module, "read_checkpoint", real_read_checkpoint)
    again = Encoder.from_pretrained(directory, backend="numba")  # from the packed cache, if one was kept
    expected = Encoder.from_pretrained(directory, backend="numpy")
    ids = [[5, 6, 7, 8]]
    for model in (first, again):
        assert np.abs(model(ids).last_hidden_state - expected(ids).last_hidden_state).max() < 1e-5


def test_a_text_file_given_as_the_model_is_refused_naming_it(tmp_path):
    from transformer.files import ModelFileError
    from transformer.sentence import SentenceEncoder

    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    for load in (Encoder.from_pretrained, SentenceEncoder.from_pretrained):
        with pytest.raises(ModelFileError, match=r"model path '.*notes\.txt' is a file, not a model"):
            load(notes)


def test_the_config_json_of_a_folder_loads_that_folder():
    by_folder = Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numpy")
    by_config = Encoder.from_pretrained(FAMILIES / "bert_gelu" / "config.json", backend="numpy")
    ids = [[5, 6, 7]]
    assert np.array_equal(by_config(ids).last_hidden_state, by_folder(ids).last_hidden_state)


def test_more_layers_in_config_json_than_in_the_checkpoint_is_named_as_such(tmp_path):
    import json
    import shutil

    from transformer.loading import CheckpointError

    directory = tmp_path / "bert_gelu"
    shutil.copytree(FAMILIES / "bert_gelu", directory)
    config = json.loads((directory / "config.json").read_text())
    layers = config["num_hidden_layers"]
    config["num_hidden_layers"] = layers + 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"config.json says num_hidden_layers={layers + 1}, but .* holds {layers} "
                                              f"layers"):
        Encoder.from_pretrained(directory, backend="numpy")
