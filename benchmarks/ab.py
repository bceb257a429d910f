"""Same-run A/B of this project at two commits: corpus throughput and batch-1 latency.

    .venv/bin/python benchmarks/ab.py OLD NEW                  # e.g. 139b547 HEAD
    .venv/bin/python benchmarks/ab.py OLD NEW --rounds 5 --models minilm mpnet --work /tmp/ab

For a change that must not cost speed (a refactoring): is NEW as fast as OLD, measured in the
same hour on the same host? Each commit is exported (`git archive`) into a folder laid out as
installed (transformer/, with kernels/ inside as transformer/kernels), and every measurement
runs in a new process importing from it (PYTHONPATH): old and new alternate, ABBA, so the
host's drift over minutes falls on both. The Numba kernels of each commit compile into that
folder's cache once before the rounds. 2 threads; the packed cache is off (the commits may
write different formats, and a load is not what is measured).

Per process (one model): the sentence-transformers job on the corpus (benchmarks/data/corpus.txt,
every `every`-th text, batch 32, tokenization and pooling included) after a warm-up on 64 other
texts, then batch-1 latency, end to end, of a 16-token and a 128-token text in alternating
bursts (medians). Per round, new / old; reported: the median of the rounds' ratios and their
range, and the load average. Writes benchmarks/results/ab.json and prints a Markdown table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "data" / "corpus.txt"
RESULTS = HERE / "results"
THREADS = 2
MODELS = {  # name -> (folder, every n-th corpus text, latency calls per burst at 16 / 128 tokens)
    "minilm": (ROOT / "weights" / "all-MiniLM-L6-v2", 1, (20, 8)),
    "mpnet": (ROOT / "weights" / "all-mpnet-base-v2", 3, (8, 3)),
}
BURSTS = 5


def commit_id(commit):
    """The full hash of `commit` (a name such as HEAD resolved now)."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], check=True, capture_output=True,
                          text=True).stdout.strip()


def export(commit, folder):
    """`commit` as an installed package under folder/pkg (transformer/ with kernels/ inside)."""
    archive = folder / "source.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), commit, "transformer", "kernels"], check=True)
    source = folder / "source"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    package = folder / "pkg" / "transformer"
    package.parent.mkdir(parents=True)
    (source / "transformer").rename(package)
    (source / "kernels").rename(package / "kernels")
    return folder / "pkg"


def worker(model_name):
    """One measurement in this process: prints {"texts_per_s", "latency_16_ms", "latency_128_ms"}."""
    import numpy as np

    import transformer
    from transformer import Tokenizer
    from transformer.sentence import SentenceEncoder

    package = os.environ["PYTHONPATH"]
    if not transformer.__file__.startswith(package):  # not the export (a checkout on sys.path first?)
        raise RuntimeError(f"imported {transformer.__file__}, not the package in {package}")
    transformer.set_num_threads(THREADS)
    folder, every, (calls_16, calls_128) = MODELS[model_name]
    corpus = CORPUS.read_text(encoding="utf-8").splitlines()
    model = SentenceEncoder.from_pretrained(folder)
    counter = Tokenizer.from_pretrained(folder)  # counts real tokens: no padding, no truncation
    counter.no_padding()
    counter.no_truncation()
    short, long = texts_of_lengths(counter, corpus, (16, 128))
    model.encode(corpus[-64:], batch_size=32)  # warm-up: every kernel loaded, buffers grown
    texts = corpus[::every]
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=32)
    seconds = time.perf_counter() - start
    assert vectors.shape[0] == len(texts) and np.isfinite(vectors).all()
    timings = {16: [], 128: []}
    for text in (short, long):
        for _ in range(3):
            model.encode([text])
    for _ in range(BURSTS):
        for length, text, calls in ((16, short, calls_16), (128, long, calls_128)):
            for _ in range(calls):
                begin = time.perf_counter()
                model.encode([text])
                timings[length].append(time.perf_counter() - begin)
    print(json.dumps({"texts_per_s": len(texts) / seconds,
                      "latency_16_ms": 1000 * statistics.median(timings[16]),
                      "latency_128_ms": 1000 * statistics.median(timings[128])}))


def texts_of_lengths(tokenizer, corpus, lengths):
    """A text of exactly each token length (a longer text cut at a token boundary if none is);
    tokenizer: one that neither pads nor truncates."""
    counts = [(text, len(encoding.ids)) for text, encoding in zip(corpus, tokenizer.encode_batch(corpus))]
    found = []
    for length in lengths:
        text = next((text for text, n in counts if n == length), None)
        if text is None:
            text = next(text for text, n in counts if n > length)
            text = text[:tokenizer.encode(text).offsets[length - 2][1]]  # + the two special tokens
        if len(tokenizer.encode(text).ids) != length:
            raise RuntimeError(f"no text of {length} tokens in {CORPUS}")
        found.append(text)
    return found


def run(package, model, python):
    env = dict(os.environ, PYTHONPATH=str(package), TRANSFORMER_PACKED_CACHE="0", NUMBA_NUM_THREADS=str(THREADS))
    result = subprocess.run([python, str(Path(__file__).resolve()), "--worker", model], env=env, capture_output=True,
                            text=True, timeout=1800, cwd=str(package))
    if result.returncode != 0:
        raise RuntimeError(f"{package}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", nargs="?", help="the commit to compare against (e.g. the one a change started from)")
    parser.add_argument("new", nargs="?", help="the commit measured against it (e.g. HEAD)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the exported commits and their kernel caches in this folder (reused when "
                             "there; default: a temporary folder)")
    parser.add_argument("--compile-only", action="store_true", help="export and compile, measure nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if not (args.old and args.new):
        parser.error("name the two commits: OLD NEW")
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="transformer-ab-") as temporary:
        work = args.work or Path(temporary)
        packages = {}
        for label, commit in (("old", args.old), ("new", args.new)):
            folder = work / commit_id(commit)
            packages[label] = folder / "pkg"
            if not packages[label].is_dir():
                folder.mkdir(parents=True)
                export(commit, folder)
        for label, package in packages.items():  # compile each commit's kernels into its cache, untimed
            for model in args.models:
                run(package, model, python)
        if args.compile_only:
            return
        rounds = []
        for index in range(args.rounds):
            order = ("old", "new") if index % 2 == 0 else ("new", "old")
            entry = {"load_before": os.getloadavg()[0]}
            for model in args.models:
                entry[model] = {label: run(packages[label], model, python) for label in order}
                print(f"round {index + 1} {model}: " + json.dumps(entry[model]), file=sys.stderr, flush=True)
            entry["load_after"] = os.getloadavg()[0]
            rounds.append(entry)
    report(args, rounds)


def report(args, rounds):
    lines = [f"A/B, {args.new} (new) against {args.old} (old): {len(rounds)} rounds, old and new alternating; "
             f"load average {min(r['load_before'] for r in rounds):.2f}-{max(r['load_after'] for r in rounds):.2f}",
             "", "| model | measure | old (median) | new (median) | new / old, median of rounds | range |",
             "|---|---|---|---|---|---|"]
    summary = {}
    for model in args.models:
        for measure, better in (("texts_per_s", "higher"), ("latency_16_ms", "lower"), ("latency_128_ms", "lower")):
            old = [r[model]["old"][measure] for r in rounds]
            new = [r[model]["new"][measure] for r in rounds]
            ratios = [n / o for n, o in zip(new, old)]
            summary[f"{model}.{measure}"] = {"old": old, "new": new, "ratios": ratios}
            lines.append(f"| {model} | {measure} ({better} is better) | {statistics.median(old):.2f} | "
                         f"{statistics.median(new):.2f} | {statistics.median(ratios):.3f} | "
                         f"{min(ratios):.3f}-{max(ratios):.3f} |")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ab.json").write_text(json.dumps({"old": args.old, "new": args.new, "rounds": rounds,
                                                 "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
