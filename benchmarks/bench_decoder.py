"""Decoder forward passes: this project (numba) vs transformers eager fp32, 2 threads, taking turns.

    .venv/bin/python benchmarks/bench_decoder.py            # writes benchmarks/results/decoder.{json,md}
    .venv/bin/python benchmarks/bench_decoder.py --rounds 2 # fewer rounds

Two models, each loaded by both systems from one safetensors folder (the same float32 weights):

- SmolLM2-135M-Instruct: weights/SmolLM2-135M-Instruct-Q4_1/*.gguf dequantized to float32
  (transformer.gguf: checkpoint_arrays + config_from_gguf), written as a transformers
  checkpoint. Llama architecture, 30 layers, hidden 576, GQA 9/3, SwiGLU 1536.
- A Qwen3-0.6B-sized model with random weights written by transformers (28 layers, hidden
  1024, 16 query / 8 key-value heads of 128, per-head q/k RMSNorm, SwiGLU 3072, vocabulary
  151,936).

Cases: batch-1 latency at 16 and 128 tokens, and corpus throughput: CORPUS_TEXTS texts of 16
to 256 tokens, sorted by length and run in batches of CORPUS_BATCH (right-padded to the
batch's longest, as a corpus job runs them); tokens/s over the real tokens. Each round runs
every case on every system, one system after the other, so both see the same load; the
median over the rounds is reported (a shared host's load moves: compare within one run).
Every system's answer is checked against transformers' first (max |diff| over real tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("NUMBA_NUM_THREADS", str(THREADS))
# OpenMP threads that spin while they wait (torch's default) lose their core to the host's
# other jobs and then wait for it: on a loaded 2-core host transformers' batch-1 call took
# over 10x longer with them spinning. Passive waiting is transformers' better setting here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SMOLLM2 = ROOT / "weights" / "SmolLM2-135M-Instruct-Q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN3_06B = dict(model_type="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                 num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                 max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True)
CORPUS_TEXTS, CORPUS_BATCH = 16, 8
SYSTEMS = ("transformer (numba)", "transformers eager")


def smollm2_folder(folder):
    """SmolLM2's GGUF as a float32 transformers checkpoint in `folder` (config.json, model.safetensors)."""
    from safetensors.numpy import save_file

    from transformer.gguf import checkpoint_arrays, config_from_gguf, read_gguf

    gguf = read_gguf(SMOLLM2)
    config = config_from_gguf(gguf)
    arrays = checkpoint_arrays(gguf, config)
    save_file({name: np.ascontiguousarray(arrays[name], dtype=np.float32) for name in arrays},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["LlamaForCausalLM"],
                                                        torch_dtype="float32")))
    return folder


def qwen3_folder(folder):
    """A random Qwen3-0.6B-sized model written by transformers into `folder`."""
    import torch
    import transformers

    config = transformers.Qwen3Config(**{k: v for k, v in QWEN3_06B.items() if k != "model_type"})
    torch.manual_seed(0)
    transformers.Qwen3Model(config).save_pretrained(folder)
    return folder


def load_reference(folder):
    import transformers

    model = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager", dtype="float32")
    return model.eval()


def cases(rng, vocab):
    """{name: [(input_ids, attention_mask), ...]}: int64 [batch, seq] batches, right-padded."""
    def batch(lengths):
        ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, length in enumerate(lengths):
            ids[row, :length] = rng.integers(0, vocab, length)
            mask[row, :length] = 1
        return ids, mask

    corpus = sorted(rng.integers(16, 257, CORPUS_TEXTS).tolist(), reverse=True)
    return {"batch-1 16 tokens": [batch([16])], "batch-1 128 tokens": [batch([128])],
            f"corpus {CORPUS_TEXTS} texts 16-256 tokens": [batch(corpus[i:i + CORPUS_BATCH])
                                                           for i in range(0, CORPUS_TEXTS, CORPUS_BATCH)]}


def run_model(name, folder, rounds, rows, meta):
    import torch

    from transformer.encoder import Encoder

    reference = load_reference(folder)
    ours = Encoder.from_pretrained(folder, backend="numba")
    vocab = reference.config.vocab_size
    systems = {
        "transformer (numba)": lambda ids, mask: ours.last_hidden_state(ids, mask),
        "transformers eager": lambda ids, mask: reference(input_ids=torch.from_numpy(ids),
                                                           attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy(),
    }
    with torch.no_grad():
        for case, batches in cases(np.random.default_rng(0), vocab).items():
            row = {"model": name, "case": case, "tokens": int(sum(mask.sum() for _, mask in batches))}
            expected = [systems["transformers eager"](ids, mask) for ids, mask in batches]  # and its warm-up
            for system, run in systems.items():  # the answers, and a warm-up (compilation, caches)
                diffs = [float(np.abs(run(ids, mask) - theirs)[mask.astype(bool)].max())
                         for (ids, mask), theirs in zip(batches, expected)]
                row[system] = {"max_abs_diff": max(diffs), "seconds": []}
            row["max_abs_reference"] = max(float(np.abs(theirs)[mask.astype(bool)].max())
                                           for (_, mask), theirs in zip(batches, expected))
            for _ in range(rounds):  # taking turns: the load moves, both systems see it
                for system, run in systems.items():
                    begin = time.perf_counter()
                    for ids, mask in batches:
                        run(ids, mask)
                    row[system]["seconds"].append(time.perf_counter() - begin)
            for system in systems:
                seconds = statistics.median(row[system]["seconds"])
                row[system].update(ms=round(seconds * 1e3, 2), tokens_per_s=round(row["tokens"] / seconds, 1))
                print(f"{name:14s} {case:34s} {system:20s} {seconds * 1e3:10.1f} ms  "
                      f"{row['tokens'] / seconds:8.1f} tok/s  max|diff| {row[system]['max_abs_diff']:.1e}", flush=True)
            rows.append(row)
            write_results(rows, meta)


def write_results(rows, meta):
    """benchmarks/results/decoder.{json,md}, rewritten after every case (a run cut short keeps what it measured)."""
    meta = dict(meta, load_average_end=round(os.getloadavg()[0], 1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decoder.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = ["# Decoder forward passes, 2 threads: this project (numba) vs transformers eager fp32", "",
             f"`.venv/bin/python benchmarks/bench_decoder.py --rounds {meta['rounds']}`; load average "
             f"{meta['load_average_start']} at the start, {meta['load_average_end']} at the end (a shared host: "
             f"compare within the run). Median of the rounds, the systems taking turns; speed-up = transformers "
             f"eager's time / ours.", "",
             "| model | case | tokens | transformer (numba) | transformers eager | speed-up |", "|---|---|---|---|---|---|"]
    for row in rows:
        ours, eager = row["transformer (numba)"], row["transformers eager"]
        if row["case"].startswith("corpus"):
            cells = [f"{ours['tokens_per_s']:.0f} tok/s", f"{eager['tokens_per_s']:.0f} tok/s"]
        else:
            cells = [f"{ours['ms']:.1f} ms", f"{eager['ms']:.1f} ms"]
        lines.append(f"| {row['model']} | {row['case']} | {row['tokens']} | {cells[0]} | {cells[1]} | "
                     f"{eager['ms'] / ours['ms']:.2f}x |")
    worst = max(rows, key=lambda row: row["transformer (numba)"]["max_abs_diff"])
    lines += ["", f"Largest max |diff| of ours against transformers over the real tokens: "
                  f"{worst['transformer (numba)']['max_abs_diff']:.1e} ({worst['model']}, {worst['case']}, where "
                  f"transformers' values reach {worst['max_abs_reference']:.1f})."]
    (RESULTS / "decoder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case on every system (default 3)")
    parser.add_argument("--models", default="smollm2,qwen3", help="comma-separated: smollm2, qwen3")
    args = parser.parse_args()

    import torch
    import transformers

    import transformer

    torch.set_num_threads(THREADS)
    transformer.set_num_threads(THREADS)
    meta = {"threads": THREADS, "rounds": args.rounds, "python": sys.version.split()[0],
            "machine": platform.machine(), "torch": torch.__version__, "transformers": transformers.__version__,
            "load_average_start": round(os.getloadavg()[0], 1), "corpus": [CORPUS_TEXTS, CORPUS_BATCH],
            "qwen3_config": QWEN3_06B}
    rows = []
    makers = {"smollm2": ("SmolLM2-135M", smollm2_folder), "qwen3": ("Qwen3-0.6B-sized", qwen3_folder)}
    for key in args.models.split(","):
        name, make = makers[key]
        with tempfile.TemporaryDirectory(prefix=f"decoder-bench-{key}-") as folder:
            run_model(name, make(Path(folder)), args.rounds, rows, meta)


if __name__ == "__main__":
    main()
