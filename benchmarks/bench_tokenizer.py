"""Tokenizer throughput: ours vs Rust `tokenizers`, measured in the same run, as ratios.

    .venv/bin/python benchmarks/bench_tokenizer.py [--repeats 5]

Corpus: benchmarks/data/tokenizer_corpus.txt (2,003 fixed lines: English Faker text of 80-800
characters, 8 other locales, and tests/tokenizer_data/multilingual.txt). Five tokenizers:
all-MiniLM-L6-v2 (BERT normalizer + BertPreTokenizer + WordPiece), GPT-2 (ByteLevel + BPE,
from vocab.json + merges.txt), XLM-R (multilingual-e5-small: Precompiled + Metaspace + Unigram),
Qwen3 (NFC + regex Split + byte-level BPE) and Gemma 3 (SentencePiece-style BPE with byte
fallback; a whole text is one word).

Also (--long): one 100,000-character text without spaces per tokenizer, ours and Rust's time,
and the same text at 50,000 characters (twice the length should take about twice the time).

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


FILES = {"all-MiniLM-L6-v2": WEIGHTS / "all-MiniLM-L6-v2" / "tokenizer.json",
         "xlm-r": WEIGHTS / "multilingual-e5-small-tokenizer" / "tokenizer.json",
         "qwen3": WEIGHTS / "qwen3-tokenizer" / "tokenizer.json",
         "gemma3": WEIGHTS / "gemma3-tokenizer" / "tokenizer.json"}
NAMES = ["all-MiniLM-L6-v2", "gpt2", "xlm-r", "qwen3", "gemma3"]


def rust_tokenizer(name):
    import tokenizers

    if name in FILES:
        tok = tokenizers.Tokenizer.from_file(str(FILES[name]))
    else:
        from transformers import GPT2TokenizerFast

        tok = GPT2TokenizerFast.from_pretrained(str(WEIGHTS / "gpt2-tokenizer")).backend_tokenizer
    tok.no_padding()
    tok.no_truncation()
    return tok


def our_tokenizer(name):
    from transformer.tokenizer import Tokenizer

    tok = Tokenizer.from_file(FILES[name]) if name in FILES else Tokenizer.from_pretrained(WEIGHTS / "gpt2-tokenizer")
    tok.no_padding()
    tok.no_truncation()
    tok.special_tokens["pad_token"] = tok.id_to_token(pad_id(name, tok))
    return tok


def pad_id(name, tok):
    """The id both sides pad with (GPT-2 and Qwen3 have no pad token: their end of text)."""
    spelling = {"all-MiniLM-L6-v2": "[PAD]", "gpt2": "<|endoftext|>", "xlm-r": "<pad>", "qwen3": "<|endoftext|>",
                "gemma3": "<pad>"}[name]
    return tok.token_to_id(spelling)


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
    pad = pad_id(name, tok)

    def single():
        for text in texts:
            tok.encode(text)

    def batch():
        tok.enable_padding(pad_id=pad, pad_token=tok.id_to_token(pad))
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
    parser.add_argument("--long", action="store_true", help="also time one 100,000-character text without spaces")
    parser.add_argument("--only", nargs="*", default=NAMES, help="tokenizers to run (default: all)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return

    texts = load_texts()
    print(f"corpus: {len(texts)} texts, {sum(map(len, texts))} characters; batch {BATCH}, max_length {MAX_LENGTH}; "
          f"median of {args.repeats} passes")
    print(f"{'tokenizer':18} {'mode':7} {'ours texts/s':>13} {'ours tok/s':>11} "
          f"{'rust 1 thread':>14} {'ratio':>6} {'rust 2 threads':>15} {'ratio':>6}")
    for name in args.only:
        tokens = sum(len(e.ids) for e in our_tokenizer(name).encode_batch(texts))
        single, batch = our_runs(name, texts)
        ours = {"single": time_passes(single, args.repeats), "batch": time_passes(batch, args.repeats)}
        rust = {threads: rust_in_subprocess(name, threads, args.repeats) for threads in (1, 2)}
        for mode in ("single", "batch"):
            rate = len(texts) / ours[mode]
            rust1, rust2 = len(texts) / rust[1][mode], len(texts) / rust[2][mode]
            print(f"{name:18} {mode:7} {rate:13.0f} {tokens / ours[mode]:11.0f} {rust1:14.0f} {rate / rust1:6.2f} "
                  f"{rust2:15.0f} {rate / rust2:6.2f}")
    if args.long:
        long_texts(args.only)


def long_texts(names):
    """One text of 100,000 characters without a space (letters, digits, CJK, accents), and its
    first 50,000: the seconds each takes here and in Rust (first call, no cache)."""
    import random

    rng = random.Random(0)
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789éü中文語") for _ in range(100_000))
    print(f"{'tokenizer':18} {'50k chars s':>12} {'100k chars s':>13} {'rust 100k s':>12}")
    for name in names:
        ours, rust = our_tokenizer(name), rust_tokenizer(name)
        timings = []
        for size in (50_000, 100_000):
            start = time.perf_counter()
            ours.encode(text[:size] + str(size))  # a text not seen before: no cache
            timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        rust.encode(text + "r")
        print(f"{name:18} {timings[0]:12.2f} {timings[1]:13.2f} {time.perf_counter() - start:12.2f}")


if __name__ == "__main__":
    main()
