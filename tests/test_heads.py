"""Task heads: picked from `architectures`, tied to the word table, absent heads warned about."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from transformer.config import EncoderConfig
from transformer.encoder import Encoder
from transformer.heads import head_kind, top_predictions
from transformer.loading import CheckpointError

FAMILIES = Path(__file__).parent / "references" / "families"


def copy_case(name, tmp_path, **config_changes):
    target = tmp_path / name
    shutil.copytree(FAMILIES / name, target)
    raw = json.loads((target / "config.json").read_text())
    raw.update(config_changes)
    (target / "config.json").write_text(json.dumps(raw))
    return target


@pytest.mark.parametrize("model_type, architecture, kind", [
    ("bert", "BertForMaskedLM", "masked_lm"),
    ("bert", "BertForPreTraining", "masked_lm"),
    ("roberta", "XLMRobertaForSequenceClassification", "sequence_classification"),
    ("distilbert", "DistilBertForTokenClassification", "token_classification"),
    ("electra", "ElectraForPreTraining", "discriminator"),
    ("mpnet", "MPNetModel", None),
    ("bert", "BertForQuestionAnswering", None),
])
def test_head_kind_comes_from_the_architecture_name(model_type, architecture, kind):
    assert head_kind(EncoderConfig.from_dict({"model_type": model_type}), architecture) == kind


@pytest.mark.parametrize("name, kind, logits_shape", [
    ("bert_masked_lm", "masked_lm", (2, 9, 50)),
    ("electra_masked_lm", "masked_lm", (2, 9, 50)),
    ("roberta_sequence_classification", "sequence_classification", (2, 2)),
    ("distilbert_sequence_classification", "sequence_classification", (2, 3)),
    ("mpnet_token_classification", "token_classification", (2, 8, 3)),
    ("electra_discriminator", "discriminator", (2, 9)),
])
def test_head_is_loaded_from_architectures_with_its_logits_shape(name, kind, logits_shape):
    reference = np.load(FAMILIES / name / "reference.npz")
    model = Encoder.from_pretrained(FAMILIES / name, backend="numpy")
    assert model.head.kind == kind
    logits = model(reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]).logits
    assert logits.shape == logits_shape
    assert logits.dtype == np.float32


def test_masked_lm_decoder_shares_the_word_table():
    model = Encoder.from_pretrained(FAMILIES / "roberta_masked_lm", backend="numpy")
    decoder = model.head.params["decoder"]["weight"]
    word = model.params["embeddings"]["word"]
    assert decoder.shape == word.T.shape
    assert np.shares_memory(decoder, word)


def test_bert_sequence_classifier_reads_the_pooler():
    model = Encoder.from_pretrained(FAMILIES / "bert_sequence_classification", backend="numpy")
    assert model.head.uses_pooler
    assert model.params["pooler"] is not None


def test_architecture_promising_an_absent_head_warns_and_loads_the_base(tmp_path):
    directory = copy_case("bert_gelu", tmp_path, architectures=["BertForMaskedLM"])
    with pytest.warns(UserWarning, match="names BertForMaskedLM but the checkpoint holds no masked_lm head"):
        model = Encoder.from_pretrained(directory, backend="numpy")
    assert model.head is None
    reference = np.load(FAMILIES / "bert_gelu" / "reference.npz")
    out = model(reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    assert out.logits is None
    mask = reference["attention_mask"].astype(bool)
    assert np.abs(out.last_hidden_state - reference["last_hidden_state"])[mask].max() <= 1e-5


def test_unsupported_head_warns_and_loads_the_base(tmp_path):
    directory = copy_case("bert_gelu", tmp_path, architectures=["BertForQuestionAnswering"])
    with pytest.warns(UserWarning, match="BertForQuestionAnswering: this head is not supported"):
        assert Encoder.from_pretrained(directory, backend="numpy").head is None


def test_base_model_architecture_loads_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numpy").head is None


def test_head_with_a_missing_tensor_is_an_error_not_a_warning(tmp_path):
    from safetensors.numpy import save_file

    from transformer.loading import read_checkpoint

    directory = copy_case("bert_masked_lm", tmp_path)
    tensors = {n: np.array(a) for n, a in read_checkpoint(directory).items() if n != "cls.predictions.bias"}
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'cls\.predictions\.bias'"):
        Encoder.from_pretrained(directory, backend="numpy")


def test_top_predictions_ranks_the_mask_positions_by_probability():
    logits = np.zeros((1, 3, 5), dtype=np.float32)
    logits[0, 1] = [0.0, 3.0, 1.0, 2.0, -1.0]
    predictions = top_predictions(logits, [[7, 4, 7]], mask_token_id=4, top_k=2)
    assert [token for token, _ in predictions[0][0]] == [1, 3]
    probabilities = np.exp(logits[0, 1]) / np.exp(logits[0, 1]).sum()
    assert predictions[0][0][0][1] == pytest.approx(probabilities[1], rel=1e-6)


class WordTokenizer:
    """A stand-in tokenizer: one id per whitespace-separated word of a tiny vocabulary."""

    vocab = [f"w{i}" for i in range(50)]
    mask_token_id = 4

    def encode(self, text):
        class Encoding:
            ids = [4 if word == "[MASK]" else self.vocab.index(word) for word in text.split()]
        return Encoding()

    def id_to_token(self, token_id):
        return "[MASK]" if token_id == 4 else self.vocab[token_id]


def test_fill_mask_returns_the_most_likely_words_for_each_mask():
    model = Encoder.from_pretrained(FAMILIES / "bert_masked_lm", backend="numpy")
    tokenizer = WordTokenizer()
    predictions = model.fill_mask("w10 w11 [MASK] w12", tokenizer, top_k=3)
    assert len(predictions) == 1 and len(predictions[0]) == 3
    logits = model([[10, 11, 4, 12]]).logits[0, 2]
    assert predictions[0][0][0] == tokenizer.id_to_token(int(np.argmax(logits)))
    assert predictions[0][0][1] >= predictions[0][1][1] >= predictions[0][2][1]


def test_fill_mask_needs_a_masked_lm_head_and_a_mask():
    with pytest.raises(ValueError, match="fill_mask needs a masked-LM head"):
        Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numpy").fill_mask("w1 [MASK]", WordTokenizer())
    with pytest.raises(ValueError, match="the text has no mask token"):
        Encoder.from_pretrained(FAMILIES / "bert_masked_lm", backend="numpy").fill_mask("w1 w2", WordTokenizer())
