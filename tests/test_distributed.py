"""transformer.distributed on a local Ray cluster (2 CPUs): the vectors of 5,000 texts equal
single-process encode's."""

import numpy as np
import pytest
import ray

from transformer.distributed import embed_dataset
from transformer.sentence import SentenceEncoder

WORDS = "the a man woman child eats plays reads carries bread violin horse book baby quickly today".split()


def texts(count):
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) + f" {i}." for i in range(count)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_embed_dataset_gives_encodes_vectors_for_5000_texts(cluster, minilm_dir):
    corpus = texts(5000)
    ds = ray.data.from_items([{"id": i, "text": text} for i, text in enumerate(corpus)])
    rows = embed_dataset(ds, model=str(minilm_dir), column="text", actors=2, threads_per_actor=1).take_all()
    assert len(rows) == len(corpus)
    by_id = {row["id"]: row for row in rows}
    assert all(by_id[i]["text"] == corpus[i] for i in range(len(corpus)))  # each row kept its own text
    served = np.stack([by_id[i]["embedding"] for i in range(len(corpus))])
    expected = SentenceEncoder.from_pretrained(minilm_dir).encode(corpus)
    assert served.dtype == np.float32 and served.shape == expected.shape
    np.testing.assert_array_equal(served, expected)  # a vector does not depend on its batch


def test_a_missing_column_is_named(cluster, minilm_dir):
    ds = ray.data.from_items([{"body": "some text"}])
    with pytest.raises(Exception, match="no column 'text'.*'body'"):
        embed_dataset(ds, model=str(minilm_dir), actors=1).take_all()


def test_bad_arguments_are_refused_before_any_work(minilm_dir):
    ds = None  # refused before the dataset is touched
    with pytest.raises(ValueError, match="threads_per_actor must be a positive integer"):
        embed_dataset(ds, model=str(minilm_dir), threads_per_actor=0)
    with pytest.raises(ValueError, match="precision='bfloat16'"):
        embed_dataset(ds, model=str(minilm_dir), precision="bfloat16")


def test_embed_command_on_ray_writes_parquet_with_an_embedding_column(tmp_path, minilm_dir):
    import json
    import subprocess
    import sys

    import pyarrow.parquet as parquet

    corpus = texts(20)
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(corpus)))
    output = tmp_path / "vectors.parquet"
    result = subprocess.run([sys.executable, "-m", "transformer", "embed", "--engine", "ray", "--input", str(source),
                             "--output", str(output), "--model", str(minilm_dir)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    table = parquet.read_table(output).to_pydict()
    order = np.argsort(table["id"])
    assert [table["text"][i] for i in order] == corpus
    vectors = np.array([table["embedding"][i] for i in order], dtype=np.float32)
    np.testing.assert_array_equal(vectors, SentenceEncoder.from_pretrained(minilm_dir).encode(corpus))


def test_embed_command_on_ray_names_what_is_missing(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "transformer", "embed", "--engine", "ray", *args],
                              capture_output=True, text=True, timeout=120)

    assert "reads --input FILE" in run("--output", str(tmp_path / "v.parquet")).stderr
    (tmp_path / "t.txt").write_text("a text\n")
    assert "writes a .parquet file" in run("--input", str(tmp_path / "t.txt"), "--output", "v.npy").stderr
