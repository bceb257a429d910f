"""The `transformer` command line, run as a user runs it: a subprocess, its output checked.

Every bad input must end as exactly one line on stderr and a non-zero status, never a traceback.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from transformer.sentence import SentenceEncoder, cosine_similarity
from transformer.tokenizer import Tokenizer

DEMO = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
]
CORPUS = [
    "The cat sleeps on the sofa all afternoon.",
    "Stock markets fell sharply after the announcement.",
    "",
    "Add two eggs and a cup of flour, then stir.",
    "The football match ended in a draw.",
    "Our flight to Lisbon was cancelled because of the storm.",
]


def run(*args, stdin=None, env=None, timeout=300):
    """`python -m transformer ARGS` -> CompletedProcess (text mode unless stdin is bytes)."""
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "transformer", *args], input=stdin,
                          capture_output=True, timeout=timeout, env=environment,
                          text=not isinstance(stdin, bytes))


def assert_one_line_error(result, command, *fragments):
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"transformer {command}: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cache_env(tmp_path):
    return {"TRANSFORMER_CACHE": str(tmp_path / "cache")}


# --- the program ----------------------------------------------------------------------------------


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("embed", "similarity", "search", "tokenize", "inspect", "download"):
        assert command in result.stdout


def test_help_does_not_import_numpy_or_the_model():
    code = ("import sys, transformer.cli as cli; cli.build_parser(); "
            "print(sorted(m for m in ('numpy', 'numba', 'torch', 'transformer.sentence') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_no_command_prints_usage_and_fails():
    result = run()
    assert result.returncode == 2
    assert "usage: transformer" in result.stderr


def test_a_usage_error_is_one_line_naming_the_bad_flag():
    result = run("similarity", "a", "b", "--batch-size", "0")
    assert_one_line_error(result, "similarity", "argument --batch-size: expected a positive integer, got 0")
    assert result.returncode == 2


def test_an_unknown_command_is_a_one_line_error():
    result = run("summarize", "text")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid choice: 'summarize'" in result.stderr


# --- similarity -----------------------------------------------------------------------------------


def test_similarity_prints_the_cosine_matrix_of_the_demo_sentences(minilm):
    result = run("similarity", *DEMO)
    assert result.returncode == 0, result.stderr
    expected = cosine_similarity(minilm.encode(DEMO))
    lines = result.stdout.splitlines()
    assert lines[0] == "Cosine similarity (all-MiniLM-L6-v2, 5 texts)"
    for i, text in enumerate(DEMO):
        assert f"[{i + 1}] {text}" in result.stdout
        row = next(line for line in lines if line.strip().startswith(f"[{i + 1}]") and "." in line
                   and not line.strip().endswith(text))
        values = [float(v) for v in row.split()[1:]]
        np.testing.assert_allclose(values, expected[i], atol=6e-4)
    assert lines[-1] == "Most similar: [1] and [2] ({:.3f})".format(expected[0, 1])


def test_similarity_json_and_both_backends_agree():
    numba = json.loads(run("similarity", "--json", *DEMO[:3]).stdout)
    numpy = json.loads(run("similarity", "--json", "--backend", "numpy", "--threads", "1", *DEMO[:3]).stdout)
    assert numba["texts"] == DEMO[:3]
    np.testing.assert_allclose(numba["similarity"], numpy["similarity"], atol=1e-5)
    np.testing.assert_allclose(np.diag(numba["similarity"]), 1.0, atol=1e-5)


def test_similarity_of_one_text_is_an_error():
    assert_one_line_error(run("similarity", "alone"), "similarity", "at least two texts, got 1")


def test_an_unknown_model_is_a_one_line_error_saying_where_it_looked():
    result = run("similarity", "--model", "no-such-model", "a", "b", env={"TRANSFORMER_OFFLINE": "1"})
    assert_one_line_error(result, "similarity", "model 'no-such-model' not found", "looked in:",
                          "not a known model")


# --- embed ----------------------------------------------------------------------------------------


def test_embed_writes_json_lines_with_exact_float32_vectors(minilm):
    result = run("embed", "Hello world", "Où est la gare ?")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["Hello world", "Où est la gare ?"]
    vectors = np.array([row["embedding"] for row in rows], dtype=np.float32)
    np.testing.assert_allclose(vectors, minilm.encode(["Hello world", "Où est la gare ?"]), atol=1e-6)


def test_embed_reads_stdin_and_writes_npy_a_row_per_line_blank_ones_too(tmp_path, minilm):
    output = tmp_path / "vectors.npy"
    result = run("embed", "-o", str(output), stdin="first line\n\nsecond line\n")
    assert result.returncode == 0, result.stderr
    vectors = np.load(output)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)  # row i is line i
    np.testing.assert_allclose(vectors, minilm.encode(["first line", "", "second line"]), atol=1e-6)
    assert "note: 1 blank line of stdin (2) embedded as empty texts, so that row i is line i" in result.stderr
    assert f"wrote 3 x 384 float32 vectors to {output}" in result.stderr


def test_embed_reads_a_file_and_writes_jsonl(tmp_path, corpus):
    output = tmp_path / "out.jsonl"
    result = run("embed", "--file", str(corpus), "-o", str(output), "--no-normalize")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == CORPUS  # the blank line too: row i is line i
    assert abs(np.linalg.norm(rows[0]["embedding"]) - 1.0) > 1e-3  # --no-normalize kept the raw mean


def test_embed_of_a_missing_file_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing.txt"
    assert_one_line_error(run("embed", "--file", str(missing)), "embed", f"file {missing} does not exist")


def test_embed_of_empty_input_is_a_one_line_error():
    assert_one_line_error(run("embed", stdin=""), "embed", "no texts: stdin is empty")


@pytest.mark.parametrize("where", ["missing-folder/vectors.npy", "read-only/vectors.jsonl", "a-folder.npy"])
def test_embed_to_an_unwritable_output_fails_before_embedding_anything(tmp_path, where):
    (tmp_path / "read-only").mkdir(mode=0o555)
    (tmp_path / "a-folder.npy").mkdir()
    texts = tmp_path / "texts.txt"
    texts.write_text("hello\n" * 5)
    # Model loading is what would show the work started; a bad --model proves it never did.
    result = run("embed", "--file", str(texts), "-o", str(tmp_path / where), "--model", str(tmp_path / "no-model"))
    if where.startswith("read-only") and os.geteuid() == 0:
        assert_one_line_error(result, "embed", "no-model")  # root may write anywhere: it got to the model
        return
    assert_one_line_error(result, "embed", f"--output {tmp_path / where}")
    assert list((tmp_path / "read-only").iterdir()) == []


def test_embed_writes_its_output_whole_or_not_at_all(tmp_path):
    output = tmp_path / "vectors.npy"
    output.write_bytes(b"the previous run's vectors")
    result = run("embed", "hello", "-o", str(output), "--model", str(tmp_path / "no-model"))
    assert result.returncode == 1
    assert output.read_bytes() == b"the previous run's vectors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.npy"]  # no temporary file left


def test_embed_sigterm_unwinds_and_leaves_no_partial_output(tmp_path):
    import signal
    import time

    output = tmp_path / "vectors.npy"
    process = subprocess.Popen([sys.executable, "-m", "transformer", "embed", "--file", "-", "-o", str(output)],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdin.write("a line to embed\n" * 20_000)
    process.stdin.close()
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".vectors.npy.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the output's temporary file exists: the work has begun
    process.send_signal(signal.SIGTERM)
    stderr = process.stderr.read()
    assert process.wait(60) == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines() == ["transformer embed: terminated"]
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_embed_writes_through_a_symbolic_link_as_the_shell_does(tmp_path, minilm):
    target = tmp_path / "run-1.npy"
    target.write_bytes(b"old")
    target.chmod(0o640)
    (tmp_path / "latest.npy").symlink_to(target)
    result = run("embed", "hello", "-o", str(tmp_path / "latest.npy"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "latest.npy").is_symlink()
    np.testing.assert_allclose(np.load(target), minilm.encode(["hello"]), atol=1e-6)
    assert target.stat().st_mode & 0o777 == 0o640  # the mode the file had


def test_a_read_only_output_file_is_refused_and_kept(tmp_path, monkeypatch):
    from transformer import cli

    output = tmp_path / "vectors.npy"
    output.write_bytes(b"keep me")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a user who may not write it
    with pytest.raises(cli.CommandError, match=f"--output {output} is read-only; it was left as it is"):
        with cli.OutputFile(str(output)):
            pass
    assert output.read_bytes() == b"keep me"


@pytest.mark.parametrize("args, message", [(["embed", "--file", ""], "--file '': expected a file name"),
                                           (["embed", "hi", "-o", ""], "--output '': expected a file name")])
def test_an_empty_file_name_is_refused_not_ignored(args, message):
    assert_one_line_error(run(*args), "embed", message)


def test_a_closed_stdout_is_an_error_not_a_silent_success():
    result = subprocess.run([sys.executable, "-m", "transformer", "embed", "hi"], capture_output=False,
                            stdout=None, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert_one_line_error(result, "embed", "stdout is closed")


def test_a_closed_stdin_without_texts_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "transformer", "embed"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(0))
    assert_one_line_error(result, "embed", "no texts: give them as arguments")


def test_json_output_escapes_what_the_stdout_encoding_cannot_write():
    result = run("embed", "café ☕", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"] == "café ☕"


def test_embed_reads_a_named_pipe_as_the_shell_makes_for_a_process_substitution(tmp_path, minilm):
    import threading

    pipe = tmp_path / "texts"
    os.mkfifo(pipe)

    def feed():
        with open(pipe, "w") as writer:
            writer.write("first\nsecond\n")

    threading.Thread(target=feed, daemon=True).start()
    result = run("embed", "--file", str(pipe), timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["first", "second"]


def test_a_full_stdout_is_one_error_naming_stdout():
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "transformer", "tokenize", "hello"], stdout=full,
                                stderr=subprocess.PIPE, text=True)
    assert_one_line_error(result, "tokenize", "cannot write the results to stdout: No space left on device")


def test_search_of_an_empty_corpus_name_is_refused_not_read():
    assert_one_line_error(run("search", "--corpus", "", "query"), "search", "the corpus is '': expected a file name")


def test_a_text_argument_that_is_not_utf8_is_named():
    result = subprocess.run([sys.executable.encode(), b"-m", b"transformer", b"embed", b"fine", b"caf\xe9"],
                            capture_output=True)
    assert_one_line_error(result, "embed", "text argument 2 is not valid UTF-8 (byte 0xe9 at character 4)")


def test_too_many_threads_are_capped_with_a_note():
    result = run("similarity", "a", "b", "--threads", "64", "--json")
    assert result.returncode == 0, result.stderr
    assert "note: --threads 64: this process can run" in result.stderr


def test_embed_to_an_unknown_file_type_is_a_one_line_error():
    assert_one_line_error(run("embed", "hi", "-o", "vectors.csv"), "embed", "expected a .npy or .jsonl")


# --- search ---------------------------------------------------------------------------------------


def test_search_ranks_the_matching_line_first(corpus, cache_env):
    result = run("search", "--corpus", str(corpus), "-k", "2", "baking", "a", "cake", env=cache_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Top 2 of 5 lines in {corpus} for: baking a cake"
    assert lines[1].split()[0] == "1." and "line 4: Add two eggs and a cup of flour, then stir." in lines[1]
    assert len(lines) == 3
    first, second = float(lines[1].split()[1]), float(lines[2].split()[1])
    assert first > second


def test_search_reuses_cached_corpus_embeddings_until_the_file_changes(corpus, cache_env, tmp_path):
    first = run("search", "--corpus", str(corpus), "markets", env=cache_env)
    assert "embedding 5 corpus lines" in first.stderr
    cached = list((tmp_path / "cache" / "search").glob("*.npz"))
    assert len(cached) == 1
    second = run("search", "--corpus", str(corpus), "markets", env=cache_env)
    assert "using cached corpus embeddings" in second.stderr
    assert second.stdout == first.stdout
    corpus.write_text(corpus.read_text() + "Shares of the bank dropped.\n")
    third = run("search", "--corpus", str(corpus), "markets", env=cache_env)
    assert "changed since it was cached; embedding 6 lines again" in third.stderr
    assert "Top 5 of 6 lines" in third.stdout


def test_search_reports_a_corrupt_cache_in_one_line_and_rebuilds_on_request(corpus, cache_env, tmp_path):
    run("search", "--corpus", str(corpus), "markets", env=cache_env)
    [cached] = (tmp_path / "cache" / "search").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:200])  # cut short, as a crash mid-write would
    result = run("search", "--corpus", str(corpus), "markets", env=cache_env)
    assert_one_line_error(result, "search", f"cached index {cached} is corrupt", "--rebuild")
    rebuilt = run("search", "--corpus", str(corpus), "markets", "--rebuild", env=cache_env)
    assert rebuilt.returncode == 0 and "line 2: Stock markets" in rebuilt.stdout


def test_search_detects_a_cache_whose_embeddings_were_altered(corpus, cache_env, tmp_path):
    run("search", "--corpus", str(corpus), "markets", env=cache_env)
    [cached] = (tmp_path / "cache" / "search").glob("*.npz")
    with np.load(cached) as data:
        contents = dict(data)
    contents["embeddings"] = contents["embeddings"] * np.float32(2)
    np.savez(cached, **contents)
    result = run("search", "--corpus", str(corpus), "markets", env=cache_env)
    assert_one_line_error(result, "search", "is corrupt (the embeddings do not match their checksum)")


def test_search_with_a_cache_folder_it_cannot_write_still_answers(corpus, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("search", "--corpus", str(corpus), "--cache-dir", str(blocker / "cache"), "markets")
    assert result.returncode == 0, result.stderr
    assert "line 2: Stock markets" in result.stdout.splitlines()[1]
    assert f"cannot keep corpus embeddings in {blocker / 'cache'}" in result.stderr


def test_search_cache_notices_new_weights_with_the_old_size_and_time(minilm_dir, tmp_path):
    import shutil

    from transformer.search_cache import corpus_embeddings

    model_dir = tmp_path / "model"
    shutil.copytree(minilm_dir, model_dir, ignore=shutil.ignore_patterns(".*"))
    texts = [text for text in CORPUS if text]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts))
    notes = []
    first = corpus_embeddings(SentenceEncoder.from_pretrained(model_dir), corpus, texts, 8,
                              explicit_dir=tmp_path / "cache", say=notes.append)
    checkpoint = model_dir / "model.safetensors"
    before = checkpoint.stat()
    data = bytearray(checkpoint.read_bytes())
    header_length = int.from_bytes(data[:8], "little")
    begin, end = json.loads(data[8:8 + header_length])["encoder.layer.0.attention.self.query.weight"]["data_offsets"]
    data[8 + header_length + begin:8 + header_length + end] = bytes(end - begin)  # zeroed: same size
    checkpoint.write_bytes(bytes(data))
    os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old time
    changed = SentenceEncoder.from_pretrained(model_dir)
    second = corpus_embeddings(changed, corpus, texts, 8, explicit_dir=tmp_path / "cache", say=notes.append)
    assert "or the model changed since it was cached" in notes[-1]
    assert np.array_equal(second, changed.encode(texts)) and not np.array_equal(first, second)


def test_search_cache_refuses_a_model_whose_files_changed_after_it_was_loaded(minilm_dir, tmp_path):
    import shutil

    from transformer.search_cache import ModelChangedError, corpus_embeddings

    model_dir = tmp_path / "model"
    shutil.copytree(minilm_dir, model_dir, ignore=shutil.ignore_patterns(".*"))
    model = SentenceEncoder.from_pretrained(model_dir)
    (model_dir / "config.json").write_text((model_dir / "config.json").read_text())  # same bytes, rewritten
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one line\n")
    with pytest.raises(ModelChangedError, match="changed since the model was loaded from them"):
        corpus_embeddings(model, corpus, ["one line"], 8, explicit_dir=tmp_path / "cache", say=lambda _: None)
    assert not (tmp_path / "cache").exists()


def test_search_of_invalid_utf8_names_the_line(tmp_path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("fine line\n".encode() + "café crème\n".encode("latin-1"))
    result = run("search", "--corpus", str(corpus), "coffee")
    assert_one_line_error(result, "search", f"{corpus}: line 2 is not valid UTF-8 (byte 0xe9 at column 4)")


def test_search_of_a_missing_corpus_is_a_one_line_error(tmp_path):
    assert_one_line_error(run("search", "--corpus", str(tmp_path / "nope.txt"), "query"), "search",
                          "corpus", "does not exist")


def test_search_of_an_empty_corpus_is_a_one_line_error(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n   \n")
    assert_one_line_error(run("search", "--corpus", str(corpus), "query"), "search", "has no text")


# --- tokenize -------------------------------------------------------------------------------------


def test_tokenize_shows_tokens_ids_and_offsets(minilm_dir):
    text = "Tokenizers split words."
    result = run("tokenize", text)
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    tokenizer.no_padding()  # tokenizer.json stores padding to 128; the command shows the real tokens
    encoding = tokenizer.encode(text)
    lines = result.stdout.splitlines()
    assert lines[0] == f"{len(encoding.ids)} tokens (all-MiniLM-L6-v2)"
    for line, token, token_id, (start, end) in zip(lines[2:], encoding.tokens, encoding.ids, encoding.offsets):
        fields = line.split()
        assert fields[1:4] == [token, str(token_id), f"{start}:{end}"]
    assert "'Token'" in result.stdout and "'izer'" in result.stdout


def test_tokenize_json_without_special_tokens(minilm):
    result = run("tokenize", "--json", "--no-special-tokens", "Hello", "world!")
    data = json.loads(result.stdout)
    assert data["text"] == "Hello world!"
    assert data["tokens"] == ["hello", "world", "!"]
    assert data["ids"] == [minilm.tokenizer.token_to_id(t) for t in data["tokens"]]
    assert data["offsets"] == [[0, 5], [6, 11], [11, 12]]


def test_tokenize_is_not_cut_at_the_stored_truncation():
    result = run("tokenize", "--json", " ".join(["word"] * 300))
    assert len(json.loads(result.stdout)["ids"]) == 302


# --- inspect --------------------------------------------------------------------------------------


def test_inspect_describes_the_model(minilm_dir):
    result = run("inspect", "all-MiniLM-L6-v2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"found       {minilm_dir} (in the weights store)" in out
    assert "family      bert (model_type 'bert', architectures BertModel)" in out
    assert "hidden_size=384 layers=6 heads=12" in out
    assert "parameters  22,713,216 (22.7 M)" in out  # transformers' count for this checkpoint
    assert "F32: 103 tensors" in out
    assert "pooling=mean normalize=yes max_seq_length=256" in out
    assert "model.safetensors" in out and "90.9 MB" in out


def test_inspect_a_tokenizer_only_folder(gpt2_tokenizer_dir):
    result = run("inspect", str(gpt2_tokenizer_dir))
    assert result.returncode == 0, result.stderr
    assert "(given as a path)" in result.stdout
    assert "no config.json" in result.stdout
    assert "byte-level BPE (vocab.json + merges.txt)" in result.stdout


def test_inspect_an_unknown_model_is_a_one_line_error():
    assert_one_line_error(run("inspect", "no-such-model"), "inspect", "model 'no-such-model' not found")


# --- download -------------------------------------------------------------------------------------


def test_download_lists_the_known_models():
    result = run("download", "--list")
    assert result.returncode == 0
    for name in ("all-MiniLM-L6-v2", "all-mpnet-base-v2", "gpt2-tokenizer"):
        assert name in result.stdout


def test_download_of_a_present_model_verifies_it(minilm_dir):
    result = run("download", "all-MiniLM-L6-v2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(minilm_dir)
    assert "present in" in result.stderr and "(verified)" in result.stderr


def test_download_of_an_unknown_model_is_a_one_line_error():
    assert_one_line_error(run("download", "gpt-17"), "download", "unknown model 'gpt-17'; known models:")


def test_download_without_a_name_is_a_one_line_error():
    assert_one_line_error(run("download"), "download", "name at least one model")
