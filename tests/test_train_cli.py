"""`transformer train`: reading the data files, refusing bad input with one clear line, and
a short run end to end that writes a folder sentence-transformers' format describes."""

import json
from pathlib import Path

import numpy as np
import pytest

from transformer import cli, cli_train, train
from transformer.sentence import SentenceEncoder

MINILM = Path(__file__).parent.parent / "weights" / "all-MiniLM-L6-v2"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(capsys, *args):
    status = cli.main(["train", *map(str, args)])
    return status, capsys.readouterr().err


def test_cli_loss_names_are_the_trainers():
    assert cli_train.LOSSES == train.LOSSES


def test_reads_pairs_scored_pairs_and_labelled_texts(tmp_path):
    pairs = write(tmp_path / "pairs.tsv", "a cat\ta kitten\n\nthe sun\tthe star\n")
    scored = write(tmp_path / "scored.jsonl", '{"sentence1": "x", "sentence2": "y", "score": 0.5}\n')
    labelled = write(tmp_path / "labelled.tsv", "great film\tpos\nawful\tneg\n")
    assert train.read_examples(pairs, "mnrl") == [("a cat", "a kitten", None), ("the sun", "the star", None)]
    assert train.read_examples(scored, "cosent") == [("x", "y", 0.5)]
    examples, names = train.label_ids(train.read_examples(labelled, "softmax"))
    assert examples == [("great film", None, 1), ("awful", None, 0)] and names == ["neg", "pos"]


def test_malformed_row_is_named_with_its_line_number(tmp_path, capsys):
    data = write(tmp_path / "pairs.tsv", "a\tb\nc\td\nonly one field\n")
    status, err = run_cli(capsys, "--data", data, "--loss", "mnrl", "--output", tmp_path / "out")
    assert status == 1
    assert f"{data} line 3: expected 2 tab-separated fields (anchor<TAB>positive)" in err and "found 1" in err


def test_malformed_json_row_is_named_with_its_line_number(tmp_path):
    data = write(tmp_path / "pairs.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "a"}\n')
    with pytest.raises(train.DataError, match=r"pairs.jsonl line 2: no 'positive' field"):
        train.read_examples(data, "mnrl")


def test_a_score_that_is_not_a_number_is_named(tmp_path):
    data = write(tmp_path / "scored.tsv", "a\tb\t0.3\nc\td\thigh\n")
    with pytest.raises(train.DataError, match=r"line 2: the score 'high' is not a number"):
        train.read_examples(data, "cosent")


def test_loss_that_needs_labels_given_pairs_says_so(tmp_path, capsys):
    data = write(tmp_path / "pairs.tsv", "a\tb\nc\td\n")
    status, err = run_cli(capsys, "--data", data, "--loss", "cosent", "--output", tmp_path / "out")
    assert status == 1
    assert "line 1: expected 3 tab-separated fields (a<TAB>b<TAB>score)" in err
    assert "pairs without a score: --loss cosent needs a label" in err


@pytest.mark.parametrize("lr", ["0", "-1e-5"])
def test_learning_rate_not_above_zero_is_refused(tmp_path, capsys, lr):
    data = write(tmp_path / "pairs.tsv", "a\tb\n")
    status, err = run_cli(capsys, "--data", data, f"--lr={lr}", "--output", tmp_path / "out")
    assert status == 1 and f"--lr must be > 0, got {float(lr)}" in err


def test_existing_output_is_refused_without_overwrite(tmp_path, capsys):
    data = write(tmp_path / "pairs.tsv", "a\tb\n")
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    status, err = run_cli(capsys, "--data", data, "--output", output)
    assert status == 1 and f"the output folder {output} exists; pass --overwrite" in err
    assert (output / "keep.txt").read_text() == "mine"


@pytest.mark.skipif(not (MINILM / "model.safetensors").is_file(), reason="weights/all-MiniLM-L6-v2 not fetched")
def test_train_writes_a_sentence_transformers_folder_and_logs_the_loss(tmp_path, capsys):
    rows = ["The cat is eating an apple.\tA kitten devours a piece of fruit.",
            "The pilot is reading a newspaper.\tAn aviator looks through the daily paper.",
            "The farmer is building a fence.\tA grower puts together some railings.",
            "The doctor is washing the car.\tA physician cleans an automobile."]
    data = write(tmp_path / "pairs.tsv", "\n".join(rows) + "\n")
    held_out = write(tmp_path / "eval.tsv", "\n".join(rows[:2]) + "\n")
    output = tmp_path / "out"
    status, err = run_cli(capsys, "--model", MINILM, "--data", data, "--eval", held_out, "--loss", "mnrl",
                          "--epochs", 1, "--batch-size", 2, "--lr", "1e-4", "--output", output)
    assert status == 0, err
    assert "step 2/2 loss" in err and "epoch 1: held-out loss" in err
    for name in ("model.safetensors", "config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        assert (output / name).is_file(), name
    state = json.loads((output / "training_state" / "state.json").read_text())
    assert state["state"]["step"] == 2 and state["settings"]["lr"] == 1e-4
    trained = SentenceEncoder.from_pretrained(output, backend="numpy").encode(["a cat"])
    before = SentenceEncoder.from_pretrained(MINILM, backend="numpy").encode(["a cat"])
    assert not np.allclose(trained, before)


@pytest.mark.skipif(not (MINILM / "model.safetensors").is_file(), reason="weights/all-MiniLM-L6-v2 not fetched")
def test_cross_encoder_run_resumes_from_its_saved_folder(tmp_path, capsys):
    rows = ["a cat sits\ta kitten rests\tsimilar", "a cat sits\tthe stock fell\tunrelated",
            "rain falls\tit is raining\tsimilar", "rain falls\ta dog barks\tunrelated"]
    data = write(tmp_path / "labelled.tsv", "\n".join(rows) + "\n")
    output = tmp_path / "out"
    status, err = run_cli(capsys, "--model", MINILM, "--data", data, "--loss", "cross-encoder", "--batch-size", 2,
                          "--lr", "1e-4", "--output", output)
    assert status == 0, err
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "similar", "1": "unrelated"}
    status, err = run_cli(capsys, "--data", data, "--epochs", 2, "--output", output, "--resume")
    assert status == 0, err
    assert json.loads((output / "training_state" / "state.json").read_text())["state"]["step"] == 4
