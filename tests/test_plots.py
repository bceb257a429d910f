"""Pictures: the plot functions and the --plot options of the CLI write real PNG files, and
without matplotlib they fail with a one-line hint."""

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from transformer.plots import (
    PLOT_HINT,
    encoder_layer_boxes,
    plot_layer_diagram,
    plot_attention,
    plot_map,
    plot_sense_contrast,
    plot_similarity,
    plot_word_similarities,
    shorten,
)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG file's header, after checking its signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file (starts with {data[:8]!r})"
    assert data[12:16] == b"IHDR", f"{path}: the first chunk is {data[12:16]!r}, not IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\0")[-8:-4] == b"IEND", f"{path} is cut short (no IEND chunk)"
    return width, height


def assert_sane_png(path):
    width, height = png_size(path)
    assert 300 <= width <= 4000 and 300 <= height <= 4000, (width, height)
    assert path.stat().st_size > 10_000  # a picture, not an empty canvas


# --- the plot functions -----------------------------------------------------------------------


def test_plot_attention_writes_a_png(tmp_path):
    tokens = ["[CLS]", "she", "sat", "by", "the", "river", "bank", ".", "[SEP]"]
    weights = np.random.default_rng(0).dirichlet(np.ones(9), size=9).astype(np.float32)
    path = plot_attention(tokens, weights, tmp_path / "attention.png", title="layer 1, head 1")
    assert path == tmp_path / "attention.png"
    assert_sane_png(path)


def test_plot_similarity_writes_a_png_with_long_labels(tmp_path):
    labels = ["A man is eating food.", "A man is eating a piece of bread and some cheese on a bench.", "A cat."]
    matrix = np.array([[1, 0.7, 0.1], [0.7, 1, 0.05], [0.1, 0.05, 1]], dtype=np.float32)
    assert_sane_png(plot_similarity(matrix, labels, tmp_path / "similarity.png"))


def test_plot_map_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(60, 2)).astype(np.float32)
    labels = ["food", "sport", "money"] * 20
    path = plot_map(points, labels, tmp_path / "map.png", explained=[0.05, 0.04], notes={0: "a note"})
    assert_sane_png(path)


def test_plot_word_similarities_writes_a_png(tmp_path):
    from transformer.context import WordSimilarities

    layers = np.stack([np.array([[1, v], [v, 1]], dtype=np.float32) for v in (1.0, 0.9, 0.8, 0.7)])
    result = WordSimilarities("bank", ["river bank", "bank loan"], [(6, 10), (0, 4)], [["bank"], ["bank"]],
                              np.ones((2, 2), dtype=np.float32), layers)
    assert_sane_png(plot_word_similarities([result, result], tmp_path / "context.png"))


def test_plot_sense_contrast_writes_a_png_whose_axis_reaches_the_baseline(tmp_path):
    from transformer.context import SenseContrast, WordSimilarities

    stages = 4
    summary = lambda low, high: np.stack([np.linspace(low, high, stages)] * 3, axis=1).astype(np.float32)
    layers = np.ones((stages - 1, 2, 2), dtype=np.float32)
    result = WordSimilarities("bank", ["a bank", "the bank"], [(2, 6), (4, 8)], [["bank"], ["bank"]],
                              np.ones((2, 2), dtype=np.float32), layers)
    contrast = SenseContrast("bank", {"river": ["a bank"], "money": ["the bank"]}, result, ["river", "money"],
                             summary(1.0, 0.9), summary(1.0, 0.8), summary(0.0, -0.1))
    assert_sane_png(plot_sense_contrast([contrast], tmp_path / "context.png"))


def test_encoder_layer_boxes_carry_the_models_own_sizes():
    from transformer.config import EncoderConfig

    config = EncoderConfig.from_dict({"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4,
                                      "intermediate_size": 256, "num_hidden_layers": 2, "vocab_size": 10,
                                      "hidden_act": "gelu"})
    boxes = encoder_layer_boxes(config)
    text = " ".join(text for text, _ in boxes)
    assert "4 heads x [seq, 16]" in text and "sqrt(16)" in text and "linear 64 -> 256, gelu" in text
    assert [kind for _, kind in boxes].count("add") == 2  # two residual sums per layer


def test_plot_layer_diagram_writes_a_png(tmp_path):
    boxes = [("x [seq, 8]", "tensor"), ("attention", "step"), ("+ x, layer_norm", "add"), ("out", "tensor")]
    assert_sane_png(plot_layer_diagram([("a layer", boxes)], tmp_path / "layer.png"))


def test_plot_functions_reject_a_matrix_that_does_not_fit_the_labels(tmp_path):
    with pytest.raises(ValueError, match=r"plot_similarity: expected a square matrix \[n, n\] with n labels"):
        plot_similarity(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_map: expected points \[n, 2\]"):
        plot_map(np.ones((3, 3)), ["a"] * 3, tmp_path / "x.png")


def test_plot_into_a_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere does not exist"):
        plot_similarity(np.eye(2), ["a", "b"], tmp_path / "nowhere" / "x.png")


def test_shorten_cuts_long_labels_with_an_ellipsis():
    assert shorten("abcdef", 4) == "abc…"
    assert shorten("abc", 4) == "abc"


# --- without matplotlib ---------------------------------------------------------------------

# Runs Python with `import matplotlib` failing, as on an install without the plot extra.
WITHOUT_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; "


def run_without_matplotlib(code, cwd):
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    return subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB + code], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_plot_functions_without_matplotlib_raise_the_hint(tmp_path):
    result = run_without_matplotlib(
        "from transformer.plots import plot_similarity\n"
        "try:\n    plot_similarity([[1.0]], ['a'], 'x.png')\n"
        "except ImportError as error:\n    print(error)\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == PLOT_HINT
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", [
    ["attention", "She sat by the river bank.", "--layer", "1", "--head", "1", "--plot", "out.png"],
    ["similarity", "A cat.", "A dog.", "--plot", "out.png"],
    ["map", "--plot", "out.png"],
    ["context", "--plot", "out.png"],
    ["diagram", "--plot", "out.png"],
])
def test_plot_commands_without_matplotlib_fail_with_a_one_line_hint(tmp_path, command):
    result = run_without_matplotlib(f"from transformer.cli import main; raise SystemExit(main({command!r}))", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"transformer {command[0]}: error: {PLOT_HINT}"]
    assert not (tmp_path / "out.png").exists()


# --- the commands -----------------------------------------------------------------------------


def run_cli(capsys, *argv):
    from transformer.cli import main

    status = main(list(argv))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out, captured.err


def test_attention_command_prints_the_map_and_draws_a_heatmap(tmp_path, capsys, minilm_dir):
    out, err = run_cli(capsys, "attention", "She sat by the river bank.", "--layer", "2", "--head", "3",
                       "--plot", str(tmp_path / "attention.png"))
    assert "layer 2, head 3" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["[CLS]", "she", "sat", "by", "the", "river", "bank", ".", "[SEP]"]
    assert all(abs(sum(float(v) for v in row[1:]) - 1) < 0.05 for row in rows)  # 2-decimal rows sum to ~1
    assert f"wrote {tmp_path / 'attention.png'}" in err
    assert_sane_png(tmp_path / "attention.png")


def test_similarity_command_draws_the_matrix(tmp_path, capsys, minilm_dir):
    out, _ = run_cli(capsys, "similarity", "A man is eating food.", "A man is eating bread.", "A girl plays violin.",
                     "--plot", str(tmp_path / "similarity.png"))
    assert "Most similar: [1] and [2]" in out
    assert_sane_png(tmp_path / "similarity.png")


def test_map_command_draws_a_labelled_corpus(tmp_path, capsys, minilm_dir):
    corpus = tmp_path / "small.tsv"
    corpus.write_text("topic\ttext\n" + "".join(
        f"{topic}\t{text}\n" for topic, text in [
            ("pets", "The cat sleeps on the sofa."), ("pets", "My dog loves long walks."),
            ("pets", "The kitten chased a ball."), ("money", "The bank raised interest rates."),
            ("money", "She saved money every month."), ("money", "Stock prices fell today.")]), encoding="utf-8")
    out, _ = run_cli(capsys, "map", "--corpus", str(corpus), "--plot", str(tmp_path / "map.png"))
    assert "6 sentences" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("pets", "money"))}
    assert lines["pets"][1] == "3" and lines["money"][1] == "3"
    assert float(lines["pets"][2]) * float(lines["money"][2]) < 0  # the two topics on opposite sides of x
    assert_sane_png(tmp_path / "map.png")


def test_context_command_contrasts_both_demo_words_and_draws_them(tmp_path, capsys, minilm_dir):
    out, _ = run_cli(capsys, "context", "--plot", str(tmp_path / "context.png"))
    assert '"bank" in 2 senses' in out and '"run" in 2 senses' in out
    static = [line.split() for line in out.splitlines() if line.startswith("  static")]
    assert [row[1] for row in static] == ["1.000", "1.000"]  # same-sense: one table row
    last = [line.split() for line in out.splitlines() if line.startswith("  layer6")]
    assert [row[-1] for row in last] == ["yes", "yes"]  # the senses apart at the last layer
    assert_sane_png(tmp_path / "context.png")


def test_context_command_follows_a_word_through_sentences_of_your_own(capsys, minilm_dir):
    out, _ = run_cli(capsys, "context", "--word", "run", "--word", "running",
                     "He went for a run.", "The company is running a promotion.")
    assert "[run]" in out and "[running]" in out
    baseline = next(line.split() for line in out.splitlines() if line.startswith("  unrel"))
    assert len(baseline) == 1 + 8 and abs(float(baseline[-1])) < 0.1  # unrelated words, last layer


def test_context_command_without_the_word_says_what_is_missing(capsys, minilm_dir):
    from transformer.cli import main

    assert main(["context", "A bank.", "Another bank."]) == 1
    assert capsys.readouterr().err.strip() == "transformer context: error: name the word to follow with --word WORD"


def test_diagram_command_prints_the_layer_and_draws_it(tmp_path, capsys, minilm_dir):
    out, err = run_cli(capsys, "diagram", "--plot", str(tmp_path / "layer.png"))
    assert "bert encoder layer (all-MiniLM-L6-v2: 6 of them)" in out
    assert "12 heads x [seq, 32]" in out and "linear 384 -> 1536, gelu" in out
    assert_sane_png(tmp_path / "layer.png")
