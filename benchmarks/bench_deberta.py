"""A DeBERTa-v3-base-sized random model: this project's numba backend against transformers
eager fp32 and ONNX Runtime fp32, same run, same threads (short; the model alone, no tokenizer).

    .venv/bin/python benchmarks/bench_deberta.py [--threads 2] [--repeats 5]

The model is microsoft/deberta-v3-base's config.json (768 wide, 12 layers, 12 heads, 256
log buckets, c2p and p2c with shared keys, no absolute positions, vocabulary 128100) with
transformers' random initialisation, written to a temporary folder. Workloads:

    batch-1 latency   one text of 16 tokens, one of 128: the median of `repeats` x 10 calls
    corpus job        256 texts of 16..256 tokens (seeded), sorted by length, batches of 32,
                      padded to each batch's longest: tokens per second over the whole job

Writes benchmarks/results/deberta.json and deberta.md. ONNX Runtime runs the model exported
by torch.onnx.export (opset 17, dynamic axes) with all graph optimizations; it is reported as
skipped when onnxruntime or onnx is not installed (the bench extra installs them).
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEMS = ("transformer-numba", "transformers-eager", "onnxruntime")

DEBERTA_V3_BASE = dict(
    model_type="deberta-v2", vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7,
    relative_attention=True, max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm",
    share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False, pad_token_id=0,
)


def corpus(seed=0, texts=256, batch=32):
    """Batches (input_ids, attention_mask) int64 of random ids, lengths 16..256, sorted."""
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(16, 257, size=texts))
    batches = []
    for start in range(0, texts, batch):
        chunk = lengths[start:start + batch]
        ids = np.zeros((len(chunk), chunk.max()), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, length in enumerate(chunk):
            ids[row, :length] = rng.integers(1, DEBERTA_V3_BASE["vocab_size"], size=length)
            mask[row, :length] = 1
        batches.append((ids, mask))
    return batches, int(lengths.sum())


def single(length, seed=1):
    ids = np.random.default_rng(seed).integers(1, DEBERTA_V3_BASE["vocab_size"], size=(1, length))
    return ids.astype(np.int64), np.ones((1, length), dtype=np.int64)


def timed(run, inputs, repeats, calls=10):
    """Median seconds per call of run(*inputs) over `repeats` rounds of `calls` calls."""
    run(*inputs)  # warm-up (compilation, plans)
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run(*inputs)
        rounds.append((time.perf_counter() - start) / calls)
    return float(np.median(rounds))


def job_seconds(run, batches, repeats):
    for ids, mask in batches[:1]:
        run(ids, mask)
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for ids, mask in batches:
            run(ids, mask)
        rounds.append(time.perf_counter() - start)
    return float(np.median(rounds))


def runner(system, model_dir, threads):
    """forward(input_ids, attention_mask) of `system` on the model in model_dir."""
    import torch
    import transformers

    if system == "transformer-numba":
        import transformer

        transformer.set_num_threads(threads)
        ours = transformer.Encoder.from_pretrained(model_dir, backend="numba")
        return lambda ids, mask: ours.last_hidden_state(ids, mask)
    torch.set_num_threads(threads)
    reference = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    if system == "transformers-eager":
        def eager(ids, mask):
            with torch.inference_mode():
                return reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state

        return eager
    import onnx  # noqa: F401
    import onnxruntime as ort

    path = Path(model_dir) / "model.onnx"
    if not path.is_file():
        ids, mask = single(16)
        with torch.inference_mode():
            torch.onnx.export(reference, (torch.from_numpy(ids), torch.from_numpy(mask)), str(path), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"},
                                            "last_hidden_state": {0: "batch", 1: "seq"}}, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def measure(system, model_dir, threads, repeats):
    """One system, in this process: its timings, and its output on the first job batch."""
    run = runner(system, model_dir, threads)
    batches, tokens = corpus()
    row = {f"latency_{n}_ms": 1e3 * timed(run, single(n), repeats) for n in (16, 128)}
    row["job_tokens_per_s"] = tokens / job_seconds(run, batches, max(1, repeats // 2))
    ids, mask = batches[0]
    np.save(Path(model_dir) / f"{system}.npy", np.asarray(run(ids, mask))[mask.astype(bool)])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a 1-layer, 64-wide model; print, write nothing")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child process: one system
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.model_dir, args.threads, args.repeats)))
        return
    import torch
    import transformers

    log = print
    with tempfile.TemporaryDirectory() as tmp:
        sizes = dict(DEBERTA_V3_BASE, **(dict(hidden_size=64, num_attention_heads=2, num_hidden_layers=1,
                                                intermediate_size=128) if args.smoke else {}))
        config = transformers.AutoConfig.for_model(**sizes)
        torch.manual_seed(0)
        transformers.AutoModel.from_config(config).save_pretrained(tmp)
        # Each system in a process of its own: one's spinning worker threads or thread pool
        # never run beside another's timings.
        results = {}
        for system in SYSTEMS:
            if system == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
                log("onnxruntime skipped: not installed")
                continue
            command = [sys.executable, __file__, "--measure", system, "--model-dir", tmp,
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
            threads = str(args.threads)
            env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                       NUMBA_NUM_THREADS=threads)
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            results[system] = json.loads(done.stdout.strip().splitlines()[-1])
            log(f"{system:20s} " + "  ".join(f"{k}={v:.1f}" for k, v in results[system].items()))
        _, tokens = corpus()
        expected = np.load(Path(tmp) / "transformers-eager.npy")
        check = {system: float(np.abs(np.load(Path(tmp) / f"{system}.npy") - expected).max()) for system in results}
    if args.smoke:
        print(check)
        return
    report = dict(model="DeBERTa-v3-base-sized, random weights", config=DEBERTA_V3_BASE, threads=args.threads,
                  repeats=args.repeats, job=f"256 texts of 16..256 tokens ({tokens} tokens), batches of 32",
                  machine=platform.processor() or platform.machine(), results=results,
                  max_abs_diff_vs_transformers=check)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deberta.json").write_text(json.dumps(report, indent=2) + "\n")
    base = results["transformers-eager"]
    lines = [f"# DeBERTa-v3-base-sized random model, {args.threads} threads",
             "", f"`.venv/bin/python benchmarks/bench_deberta.py --threads {args.threads} --repeats {args.repeats}`",
             "", f"Job: {report['job']}; latency: batch 1, median of {args.repeats} x 10 calls.", "",
             "| system | batch-1 16 tokens (ms) | batch-1 128 tokens (ms) | job tokens/s | job vs transformers |"
             " max abs diff vs transformers |", "|---|---|---|---|---|---|"]
    for name, row in results.items():
        lines.append(f"| {name} | {row['latency_16_ms']:.1f} | {row['latency_128_ms']:.1f} | "
                     f"{row['job_tokens_per_s']:.0f} | {row['job_tokens_per_s'] / base['job_tokens_per_s']:.2f}x | "
                     f"{check[name]:.1e} |")
    (RESULTS / "deberta.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
