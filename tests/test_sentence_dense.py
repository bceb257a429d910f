"""Dense modules after the pooling (sentence-t5, EmbeddingGemma): SentenceEncoder ==
sentence-transformers.

all-MiniLM-L6-v2 + mean pooling + three Dense modules (384 -> 256 Tanh with a bias, 256 -> 96
Identity without, 96 -> 96 GELU with a residual) + Normalize: once written with NumPy
weights (tools/make_retrieval_references.py; tests/references/retrieval_dense.npz holds what
the pinned sentence-transformers gives for it), once built and saved by sentence-transformers
itself (the live test). Vectors within 1e-5.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from transformer.files import ModelFileError
from transformer.model import gelu
from transformer.sentence import SentenceEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_retrieval_references import DENSE_TEXTS, dense_model_folder  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "references" / "retrieval_dense.npz"
MAX_ABS_DIFF = 1e-5


@pytest.fixture(scope="module")
def dense_dir(minilm_dir, tmp_path_factory):
    return dense_model_folder(minilm_dir, tmp_path_factory.mktemp("models") / "dense")


@pytest.fixture(scope="module")
def model(dense_dir):
    return SentenceEncoder.from_pretrained(dense_dir)


def test_the_dense_modules_are_read_in_order(model):
    assert [(layer.in_features, layer.out_features, layer.activation, layer.bias is not None, layer.use_residual)
            for layer in model.dense] == [(384, 256, "Tanh", True, False), (256, 96, "Identity", False, False),
                                          (96, 96, "GELU", True, True)]
    assert model.dimension == 96


def test_dense_vectors_match_the_committed_reference(model):
    found = model.encode(DENSE_TEXTS, batch_size=4)
    with np.load(REFERENCE) as reference:
        assert found.dtype == np.float32 and found.shape == reference["vectors"].shape == (len(DENSE_TEXTS), 96)
        assert np.abs(found - reference["vectors"]).max() <= MAX_ABS_DIFF


def test_a_folder_saved_by_sentence_transformers_gives_its_vectors(minilm_dir, tmp_path):
    pytest.importorskip("sentence_transformers")
    from make_retrieval_references import saved_dense_model

    theirs = saved_dense_model(minilm_dir, tmp_path / "saved")
    assert (tmp_path / "saved" / "2_Dense" / "model.safetensors").is_file()
    expected = theirs.encode(DENSE_TEXTS, batch_size=4)
    found = SentenceEncoder.from_pretrained(tmp_path / "saved").encode(DENSE_TEXTS, batch_size=4)
    assert found.shape == expected.shape == (len(DENSE_TEXTS), 96)
    assert np.abs(found - expected).max() <= MAX_ABS_DIFF


def test_dense_runs_after_pooling_and_before_normalize(model):
    batch = model.tokenizer(DENSE_TEXTS[:2], padding=True)
    hidden = model.encoder.last_hidden_state(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mask = batch["attention_mask"][:, :, None].astype(np.float32)
    vectors = (hidden * mask).sum(axis=1) / mask.sum(axis=1)  # [2, 384]: mean pooling
    first, second, third = model.dense
    vectors = np.tanh(vectors @ first.weight.T + first.bias)  # [2, 256]
    vectors = vectors @ second.weight.T  # [2, 96]
    vectors = gelu(vectors @ third.weight.T + third.bias) + vectors  # [2, 96], the residual added
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(model.encode(DENSE_TEXTS[:2]), vectors, rtol=0, atol=1e-6)


def _copy(dense_dir, target):
    """A copy of the test folder whose Dense folders are real copies (safe to change)."""
    target.mkdir()
    for entry in dense_dir.iterdir():
        if entry.is_dir() and entry.name.endswith("_Dense"):
            (target / entry.name).mkdir()
            for file in entry.iterdir():
                (target / entry.name / file.name).write_bytes(file.read_bytes())
        elif entry.name == "modules.json":
            (target / entry.name).write_bytes(entry.read_bytes())
        else:
            os.symlink(entry.resolve(), target / entry.name)
    return target


def test_a_pickled_dense_weights_file_is_refused_with_how_to_convert(dense_dir, tmp_path):
    folder = _copy(dense_dir, tmp_path / "pickled")
    os.rename(folder / "2_Dense" / "model.safetensors", folder / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match=r"2_Dense/pytorch_model.bin is a pickle.*convert it to model.safetensors"):
        SentenceEncoder.from_pretrained(folder)


@pytest.mark.parametrize("change, message", [
    ({"activation_function": "my_package.Swish"}, r"activation_function \"my_package.Swish\" is not one this package "
                                                  r"runs"),
    ({"activation_function": "torch.nn.modules.activation.Softmax"}, "is not one this package runs"),
    ({"in_features": 0}, "in_features must be a positive integer"),
    ({"bias": "yes"}, "bias must be true or false"),
    ({"out_features": 200}, r"linear.weight is float32 \[256, 384\]; expected float \[200, 384\]"),
    ({"module_input_name": "token_embeddings"}, "module_input_name is \"token_embeddings\""),
])
def test_a_malformed_dense_config_is_refused_naming_the_field(dense_dir, tmp_path, change, message):
    folder = _copy(dense_dir, tmp_path / "bad")
    config = json.loads((folder / "2_Dense" / "config.json").read_text())
    (folder / "2_Dense" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelFileError, match="2_Dense/config.json|2_Dense/model.safetensors"):
        SentenceEncoder.from_pretrained(folder)
    with pytest.raises(ModelFileError, match=message):
        SentenceEncoder.from_pretrained(folder)


def test_dense_modules_that_do_not_chain_are_refused(dense_dir, tmp_path):
    folder = _copy(dense_dir, tmp_path / "unchained")
    modules = json.loads((folder / "modules.json").read_text())
    modules[2], modules[3] = modules[3], modules[2]  # 256 -> 96 before 384 -> 256
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelFileError, match="Dense module 2 takes 384 features, but the Dense before it gives 96"):
        SentenceEncoder.from_pretrained(folder)


def test_a_dense_module_after_normalize_is_refused(dense_dir, tmp_path):
    folder = _copy(dense_dir, tmp_path / "late")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({**modules[2], "idx": len(modules)})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelFileError, match="is a Dense after a Normalize"):
        SentenceEncoder.from_pretrained(folder)
