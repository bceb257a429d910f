"""Tokenizer throughput: ours vs Rust `tokenizers`, measured in the same run, as ratios.

    .venv/bin/python benchmarks/bench_tokenizer.py [--repeats 5]

Corpus: benchmarks/data/tokenizer_corpus.txt (2,003 fixed lines: English Faker text of 80-800
characters, 8 other locales, and tests/tokenizer_data/multilingual.txt). Two tokenizers:
all-MiniLM-L6-v2 (BERT normalizer + BertPreTokenizer + WordPiece) and GPT-2 (ByteLevel + BPE,
from vocab.json + merges.txt).

Measured, per tokenizer (texts/s and tokens/s; ratio = ours / Rust, > 1 means we are faster):
  single  one `encode(text)` call per text, no padding or truncation
  batch   batches of 32 -> padded int64 arrays (input_ids, attention_mask, token_type_ids):
          ours `tok(batch, padding=True, truncation=True, max_length=256)`; Rust
          `encode_batch` with the same padding/truncation + np.array of the three fields.
Rust batches run on a thread pool (rayon): it is measured in subprocesses with
RAYON_NUM_THREADS=1 and =2 (this machine has 2 cores); ours is single-threaded Python.
Each figure is the median of --repeats passes after one warm-up pass (both sides cache words).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "data" / "tokenizer_corpus.txt"
WEIGHTS = ROOT / "weights"
BATCH = 32
MAX_LENGTH = 256


def load_texts():
    return [line for line in CORPUS.read_text(encoding="utf-8").split("\n") if line]


def rust_tokenizer(name):
    import tokenizers

    if name == "all-MiniLM-L6-v2":
        tok = tokenizers.Tokenizer.from_file(str(WEIGHTS / name / "tokenizer.json"))
    else:
        from transformers import GPT2TokenizerFast

        tok = GPT2TokenizerFast.from_pretrained(str(WEIGHTS / "gpt2-tokenizer")).backend_tokenizer
    tok.no_padding()
    tok.no_truncation()
    return tok


def our_tokenizer(name):
    from transformer.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(WEIGHTS / ("gpt2-tokenizer" if name == "gpt2" else name))
    tok.no_padding()
    tok.no_truncation()
    if name == "gpt2":  # GPT-2 has no pad token; pad with <|endoftext|> on both sides
        tok.special_tokens["pad_token"] = "<|endoftext|>"
    return tok


def time_passes(run, repeats):
    run()  # warm-up: fills the word caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rust_runs(name, texts):
    tok = rust_tokenizer(name)
    pad_id = tok.token_to_id("[PAD]") if name != "gpt2" else tok.token_to_id("<|endoftext|>")

    def single():
        for text in texts:
            tok.encode(text)

    def batch():
        tok.enable_padding(pad_id=pad_id)
        tok.enable_truncation(MAX_LENGTH)
        for start in range(0, len(texts), BATCH):
            encodings = tok.encode_batch(texts[start:start + BATCH])
            np.array([e.ids for e in encodings], dtype=np.int64)
            np.array([e.attention_mask for e in encodings], dtype=np.int64)
            np.array([e.type_ids for e in encodings], dtype=np.int64)
        tok.no_padding()
        tok.no_truncation()

    return single, batch


def our_runs(name, texts):
    tok = our_tokenizer(name)

    def single():
        for text in texts:
            tok.encode(text)

    def batch():
        for start in range(0, len(texts), BATCH):
            tok(texts[start:start + BATCH], padding=True, truncation=True, max_length=MAX_LENGTH)

    return single, batch


def worker(name, repeats):
    """Run in a subprocess (RAYON_NUM_THREADS set by the parent): print Rust timings as JSON."""
    texts = load_texts()
    single, batch = rust_runs(name, texts)
    print(json.dumps({"single": time_passes(single, repeats), "batch": time_passes(batch, repeats)}))


def rust_in_subprocess(name, threads, repeats):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--repeats", str(repeats)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return

    texts = load_texts()
    print(f"corpus: {len(texts)} texts, {sum(map(len, texts))} characters; batch {BATCH}, max_length {MAX_LENGTH}; "
          f"median of {args.repeats} passes")
    print(f"{'tokenizer':18} {'mode':7} {'ours texts/s':>13} {'ours tok/s':>11} "
          f"{'rust 1 thread':>14} {'ratio':>6} {'rust 2 threads':>15} {'ratio':>6}")
    for name in ("all-MiniLM-L6-v2", "gpt2"):
        tokens = sum(len(e.ids) for e in our_tokenizer(name).encode_batch(texts))
        single, batch = our_runs(name, texts)
        ours = {"single": time_passes(single, args.repeats), "batch": time_passes(batch, args.repeats)}
        rust = {threads: rust_in_subprocess(name, threads, args.repeats) for threads in (1, 2)}
        for mode in ("single", "batch"):
            rate = len(texts) / ours[mode]
            rust1, rust2 = len(texts) / rust[1][mode], len(texts) / rust[2][mode]
            print(f"{name:18} {mode:7} {rate:13.0f} {tokens / ours[mode]:11.0f} {rust1:14.0f} {rate / rust1:6.2f} "
                  f"{rust2:15.0f} {rate / rust2:6.2f}")


if __name__ == "__main__":
    main()
