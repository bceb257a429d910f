"""ModernBERT-base-sized forward pass: this project (numba) vs transformers eager fp32 vs ONNX Runtime.

    .venv/bin/python benchmarks/bench_modernbert.py            # writes benchmarks/results/modernbert.{json,md}
    .venv/bin/python benchmarks/bench_modernbert.py --quick    # fewer repeats

A random ModernBERT with ModernBERT-base's shapes (22 layers, hidden 768, 12 heads, GeGLU 1152,
global attention every third layer, a 128-token window, vocabulary 50368) written by
`transformers`, run on the same int64 batches by the three systems, each on 2 threads, in the
same process one after the other: batch-1 latency at 16 and 128 tokens, and a batch of 32
texts of 16 to 256 tokens (padded to the longest, as a corpus job's batches are). Every
system's answer is checked against transformers' first (max |diff| over the real tokens). The
median of the repeats is reported; on a host shared with other jobs the numbers move, so
compare systems within one run.
ONNX Runtime runs the graph `torch.onnx.export` writes (opset 18, dynamic batch and length),
with its default graph optimizations.
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BASE = dict(vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
            local_attention=128, global_attn_every_n_layers=3, max_position_embeddings=8192, pad_token_id=50283)


def build(folder):
    import torch
    import transformers

    config = transformers.ModernBertConfig(**BASE)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.ModernBertModel(config).eval()
    with torch.no_grad():  # activations near unit scale: the attention is not uniform
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0.0, parameter.shape[1] ** -0.5)
    model.save_pretrained(folder)
    return model


def batches(rng):
    """{name: (input_ids, attention_mask)} int64 [batch, seq], right-padded."""
    def batch(lengths):
        ids = np.full((len(lengths), max(lengths)), BASE["pad_token_id"], dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, length in enumerate(lengths):
            ids[row, :length] = rng.integers(0, 50000, length)
            mask[row, :length] = 1
        return ids, mask

    return {"batch-1 16 tokens": batch([16]), "batch-1 128 tokens": batch([128]),
            "batch-32 16-256 tokens": batch(sorted(rng.integers(16, 257, 32).tolist(), reverse=True))}


def timed(run, repeats, min_seconds):
    run()  # warm-up (compilation, caches)
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
        if len(times) >= 10 * repeats:
            break
    return statistics.median(times)


def write_results(rows, names, versions):
    """benchmarks/results/modernbert.{json,md}, rewritten after every case (a run cut short
    keeps what it measured)."""
    meta = {"threads": THREADS, "python": sys.version.split()[0], "machine": platform.machine(), **versions,
            "load_average": os.getloadavg()[0], "config": BASE}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "modernbert.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = ["# ModernBERT-base-sized forward pass (random weights), 2 threads",
             "", f"`.venv/bin/python benchmarks/bench_modernbert.py`; load average {meta['load_average']:.1f}"
             f" (a shared host: compare within the run). Median ms; x = transformers eager / this system.", "",
             "| case | tokens | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row in rows:
        eager = row["transformers eager"]["ms"]
        cells = [f"{row[name]['ms']:.1f} ({eager / row[name]['ms']:.2f}x)" for name in names]
        lines.append(f"| {row['case']} | {row['tokens']} | " + " | ".join(cells) + " |")
    worst = max(row[name]["max_abs_diff"] for row in rows for name in names)
    lines += ["", f"Largest max |diff| against transformers over the real tokens: {worst:.1e}."]
    (RESULTS / "modernbert.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    args = parser.parse_args()
    repeats, min_seconds = (3, 0.5) if args.quick else (7, 2.0)

    import onnxruntime
    import torch
    import transformers

    import transformer
    from transformer.encoder import Encoder

    torch.set_num_threads(THREADS)
    transformer.set_num_threads(THREADS)
    folder = Path(tempfile.mkdtemp(prefix="modernbert-bench-"))
    reference = build(folder)
    ours = Encoder.from_pretrained(folder, backend="numba")

    onnx_path = folder / "model.onnx"
    sample = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    torch.onnx.export(reference, sample, str(onnx_path), input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], opset_version=18, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    systems = {
        "transformer (numba)": lambda ids, mask: ours.last_hidden_state(ids, mask),
        "transformers eager": lambda ids, mask: reference(input_ids=torch.from_numpy(ids),
                                                           attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy(),
        "onnxruntime": lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0],
    }
    rows = []
    with torch.no_grad():
        for case, (ids, mask) in batches(np.random.default_rng(0)).items():
            expected = systems["transformers eager"](ids, mask)
            real = mask.astype(bool)
            row = {"case": case, "tokens": int(mask.sum())}
            for name, run in systems.items():
                diff = float(np.abs(run(ids, mask) - expected)[real].max())
                seconds = timed(lambda: run(ids, mask), repeats, min_seconds)
                row[name] = {"ms": round(seconds * 1e3, 2), "max_abs_diff": diff}
                print(f"{case:24s} {name:20s} {seconds * 1e3:9.2f} ms  max|diff| {diff:.1e}", flush=True)
            rows.append(row)
            write_results(rows, list(systems), dict(torch=torch.__version__, transformers=transformers.__version__,
                                                    onnxruntime=onnxruntime.__version__))


if __name__ == "__main__":
    main()
