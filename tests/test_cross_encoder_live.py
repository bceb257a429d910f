"""CrossEncoder == sentence-transformers' CrossEncoder, on random sequence-classification
checkpoints of each family (1 and 3 labels) written here by transformers, with real
tokenizers and real text pairs (short, and long enough to be cut at max_length).

Scores within 1e-5; rank gives the same order. Needs torch + transformers +
sentence-transformers (the test extra).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sentence_transformers = pytest.importorskip("sentence_transformers")

from transformer.cross_encoder import CrossEncoder  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import make_references  # noqa: E402  (build_model: random weights of a sensible scale)

TOLERANCE = 1e-5

QUERY = "How do vaccines train the immune system?"
DOCUMENTS = [
    "Vaccines expose the immune system to a harmless piece of a pathogen so it learns to recognise it.",
    "The stock market closed higher on Friday after a week of losses.",
    "Antibodies made after vaccination stay in the blood and memory cells remember the invader for years.",
    "Bake the bread at 220 degrees for thirty minutes.",
    "Immunity: " + "white blood cells, antibodies and memory cells work together against infection. " * 6,
    "",
]
PAIRS = [(QUERY, document) for document in DOCUMENTS] + [
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("Der Himmel ist blau.", "The sky is blue."),
    ("long " * 80, "short"),  # the first text is the one cut
]

_SMALL = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=37)
# (name, model_type, architecture, tokenizer folder fixture, config)
CASES = [
    ("bert_1_label", "bert", "BertForSequenceClassification", "minilm_dir",
     dict(_SMALL, vocab_size=30522, max_position_embeddings=64, num_labels=1)),
    ("bert_3_labels", "bert", "BertForSequenceClassification", "minilm_dir",
     dict(_SMALL, vocab_size=30522, max_position_embeddings=64, num_labels=3)),
    ("electra_1_label", "electra", "ElectraForSequenceClassification", "minilm_dir",
     dict(_SMALL, embedding_size=16, vocab_size=30522, max_position_embeddings=64, num_labels=1)),
    ("electra_3_labels", "electra", "ElectraForSequenceClassification", "minilm_dir",
     dict(_SMALL, vocab_size=30522, max_position_embeddings=64, num_labels=3)),
    ("distilbert_1_label", "distilbert", "DistilBertForSequenceClassification", "minilm_dir",
     dict(dim=32, n_heads=2, n_layers=2, hidden_dim=37, vocab_size=30522, max_position_embeddings=64,
          num_labels=1)),
    ("mpnet_3_labels", "mpnet", "MPNetForSequenceClassification", "mpnet_dir",
     dict(_SMALL, vocab_size=30527, max_position_embeddings=66, num_labels=3)),
    ("roberta_1_label", "roberta", "RobertaForSequenceClassification", "xlmr_tokenizer_dir",
     dict(_SMALL, vocab_size=250002, max_position_embeddings=66, num_labels=1, type_vocab_size=1,
          pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    ("xlm_roberta_3_labels", "xlm-roberta", "XLMRobertaForSequenceClassification", "xlmr_tokenizer_dir",
     dict(_SMALL, vocab_size=250002, max_position_embeddings=66, num_labels=3, type_vocab_size=1,
          pad_token_id=1, bos_token_id=0, eos_token_id=2)),
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# "PreTrainedTokenizerFast": tokenizer.json as it is, as Rust `tokenizers` reads it (and ours). transformers'
# XLMRobertaTokenizer class rebuilds the pipeline from the vocabulary instead, and its rebuilt
# Metaspace drops the "▁" piece a text's trailing space gives ("long long " -> no id 6).
XLMR_TOKENIZER_CONFIG = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                         "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
                         "pad_token": "<pad>", "mask_token": "<mask>"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_checkpoint(folder, model_type, architecture, config, tokenizer_dir, seed=0):
    """A random *ForSequenceClassification checkpoint by transformers, with the tokenizer's files."""
    case = dict(name=folder.name, model_type=model_type, architecture=architecture, config=config, lengths=[1])
    make_references.build_model(case, seed).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, folder / name)
    if model_type in ("roberta", "xlm-roberta"):
        (folder / "tokenizer_config.json").write_text(json.dumps(XLMR_TOKENIZER_CONFIG), encoding="utf-8")
    if model_type in ("roberta", "xlm-roberta", "mpnet"):
        # Positions start after padding_idx: 66 position rows hold 64 tokens, which is what a
        # real checkpoint's tokenizer says (512 of 514); sentence-transformers reads it there.
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        tokenizer_config["model_max_length"] = 64
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module", params=CASES, ids=[case[0] for case in CASES])
def checkpoint(request, tmp_path_factory):
    name, model_type, architecture, tokenizer_fixture, config = request.param
    tokenizer_dir = request.getfixturevalue(tokenizer_fixture)
    folder = write_checkpoint(tmp_path_factory.mktemp("cross") / name, model_type, architecture, config,
                              tokenizer_dir)
    return folder, config["num_labels"]


def test_scores_match_sentence_transformers(checkpoint):
    folder, num_labels = checkpoint
    ours = CrossEncoder.from_pretrained(folder)
    theirs = sentence_transformers.CrossEncoder(str(folder), device="cpu")
    assert ours.max_length == theirs.max_seq_length
    expected = theirs.predict(PAIRS, batch_size=4)
    found = ours.predict(PAIRS, batch_size=4)
    assert found.dtype == np.float32 and found.shape == expected.shape
    assert found.shape == ((len(PAIRS),) if num_labels == 1 else (len(PAIRS), num_labels))
    assert np.abs(found - expected).max() <= TOLERANCE
    # the long pair really was cut at max_length
    assert len(ours.tokenizer.encode(*PAIRS[-1]).ids) > ours.max_length


def test_softmax_and_another_activation_match_sentence_transformers(checkpoint):
    folder, num_labels = checkpoint
    ours = CrossEncoder.from_pretrained(folder)
    theirs = sentence_transformers.CrossEncoder(str(folder), device="cpu")
    expected = theirs.predict(PAIRS, activation_fn=torch.nn.Tanh(), apply_softmax=True)
    assert np.abs(ours.predict(PAIRS, activation="tanh", apply_softmax=True) - expected).max() <= TOLERANCE


def test_rank_matches_sentence_transformers(checkpoint):
    folder, num_labels = checkpoint
    if num_labels != 1:  # no single relevance score to sort by: refused, naming the label count
        with pytest.raises(ValueError, match=f"rank needs a model with one label .* has {num_labels}"):
            CrossEncoder.from_pretrained(folder).rank(QUERY, DOCUMENTS, top_k=4)
        return
    ours = CrossEncoder.from_pretrained(folder).rank(QUERY, DOCUMENTS, top_k=4, return_documents=True)
    theirs = sentence_transformers.CrossEncoder(str(folder), device="cpu").rank(
        QUERY, DOCUMENTS, top_k=4, return_documents=True)
    assert [hit["corpus_id"] for hit in ours] == [hit["corpus_id"] for hit in theirs]
    assert [hit["text"] for hit in ours] == [hit["text"] for hit in theirs]
    np.testing.assert_allclose([hit["score"] for hit in ours], [hit["score"] for hit in theirs],
                               rtol=0, atol=TOLERANCE)


def test_the_activation_saved_in_config_json_is_used(minilm_dir, tmp_path):
    folder = write_checkpoint(tmp_path / "identity", "bert", "BertForSequenceClassification",
                              CASES[0][4], minilm_dir)
    theirs = sentence_transformers.CrossEncoder(str(folder), device="cpu", activation_fn=torch.nn.Identity())
    theirs.save_pretrained(str(folder))  # writes "sentence_transformers": {"activation_fn": ...Identity}
    ours = CrossEncoder.from_pretrained(folder)
    assert ours.activation == "identity"
    reloaded = sentence_transformers.CrossEncoder(str(folder), device="cpu")
    assert np.abs(ours.predict(PAIRS) - reloaded.predict(PAIRS)).max() <= TOLERANCE
