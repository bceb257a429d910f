"""precision="bf16": speed and accuracy against our fp32, torch bf16 and OpenVINO bf16.

    .venv/bin/python benchmarks/bench_bf16.py [--short 1000] [--long 100] [--rounds 2] [--accuracy-only]
                                              [--no-peers] [--pure] [--models NAME ...]

Every system is loaded in this one process and they take turns on the same texts (round after
round; the best round counts), on 2 threads each:

    ours fp32               SentenceEncoder.from_pretrained(dir)
    ours bf16 <tier>        ... precision="bf16", for each bf16 tier this CPU runs
                            (kernels/bf16.py: avx512_bf16, storage), under the bf16 policy
                            (transformer.encoder.BF16_POLICY: the linears kept in float32);
                            --pure adds the fastest tier with every linear in bf16
    torch bf16              sentence-transformers, model.to(torch.bfloat16) (oneDNN)
    openvino bf16           the PyTorch model converted by openvino.convert_model, compiled with
                            INFERENCE_PRECISION_HINT=bf16, Rust tokenizers, NumPy mean pooling
                            (skipped when `openvino` does not import: the bench extra)

Texts: the first --short lines of benchmarks/data/corpus.txt, and --long texts made of 8
consecutive lines each (128-300 tokens). Accuracy: every system's sentence vectors against our
fp32 ones on the whole corpus plus the long texts (cosine min / median). Batch-1 latency at 16
and 128 tokens. It prints the CPU, the tiers, the load average; writes benchmarks/results/bf16.json.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
BATCH_SIZE = 32
MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


TORCH_TEXTS = 64  # texts per set that torch bf16 runs (see TorchBf16)


class Ours:
    """Ours; a bf16 tier is set before each of its turns (each encoder's plans, made on first
    use per batch shape, keep the tier they were made with)."""

    def __init__(self, model_dir, precision, tier=None, policy=None):
        from transformer import SentenceEncoder
        from transformer import encoder as encoder_module

        saved = encoder_module.BF16_POLICY
        if policy is not None:  # another bf16 policy than the default, for a comparison
            encoder_module.BF16_POLICY = policy
        try:
            self.model = SentenceEncoder.from_pretrained(model_dir, precision=precision)
        finally:
            encoder_module.BF16_POLICY = saved
        self.tier = tier
        self.name = f"ours {precision}" + (f" {tier}" if tier else "") + (f" [{policy.label}]" if policy else "")

    def encode(self, texts, batch_size=BATCH_SIZE):
        from transformer.kernels import bf16

        if self.tier is not None:
            bf16.TIER = self.tier  # the plans made from here on run this tier
        return self.model.encode(texts, batch_size=batch_size)


class TorchBf16:
    def __init__(self, model_dir):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        self.model = SentenceTransformer(str(model_dir), device="cpu").to(torch.bfloat16)
        self.name = f"torch {torch.__version__} bf16"
        # Without AMX its bf16 matmuls take a slow path (a few texts a second): a slice of
        # every text set is enough to say so.
        self.limit = TORCH_TEXTS

    def encode(self, texts, batch_size=BATCH_SIZE):
        return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=False,
                                 convert_to_tensor=True).float().numpy()


class OpenVinoBf16:
    def __init__(self, model_dir):
        import openvino as ov
        import tokenizers
        import torch
        from transformers import AutoModel

        transformer_dir = Path(model_dir)
        module = AutoModel.from_pretrained(transformer_dir).eval()
        example = {"input_ids": torch.ones((2, 8), dtype=torch.long),
                   "attention_mask": torch.ones((2, 8), dtype=torch.long)}
        converted = ov.convert_model(module, example_input=example)
        core = ov.Core()
        self.compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                              "INFERENCE_NUM_THREADS": THREADS})
        self.tokenizer = tokenizers.Tokenizer.from_file(str(transformer_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=256 if "MiniLM" in str(model_dir) else 384)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("<pad>") or 0)
        self.name = f"openvino {ov.__version__} bf16"

    def encode(self, texts, batch_size=BATCH_SIZE):
        texts = list(texts)
        order = np.argsort([-len(text) for text in texts], kind="stable")  # longest first, as s-t
        vectors = None
        for start in range(0, len(texts), batch_size):
            indices = order[start:start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in indices])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)  # [batch, seq]
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)  # [batch, seq]
            hidden = self.compiled({"input_ids": ids, "attention_mask": mask})[0]  # [batch, seq, hidden]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if vectors is None:
                vectors = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            vectors[indices] = pooled
        return vectors


def limit(system, texts):
    """How many of `texts` the system runs (all but torch's, see TorchBf16)."""
    return min(len(texts), getattr(system, "limit", len(texts)))


def cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=1000)
    parser.add_argument("--long", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--corpus", type=int, default=None, help="accuracy on the first N lines (default: all)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--no-peers", action="store_true", help="ours only: no torch, no OpenVINO")
    parser.add_argument("--pure", action="store_true",
                        help="also ours bf16 with every linear in bf16 (no linear kept in float32: Bf16Policy())")
    parser.add_argument("--accuracy-only", action="store_true",
                        help="ours fp32 and bf16 (this CPU's tier) on the accuracy set only: no peers, no timing")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bf16.json"))
    args = parser.parse_args()
    import transformer
    from transformer.kernels import bf16

    transformer.set_num_threads(THREADS)
    corpus = [line.strip() for line in open(ROOT / "benchmarks" / "data" / "corpus.txt") if line.strip()]
    long_texts = [" ".join(corpus[i:i + 8]) for i in range(0, 8 * args.long, 8)]
    short_texts = corpus[:args.short]
    report = {"cpu": cpu_name(), "threads": THREADS, "batch_size": BATCH_SIZE, "tier": bf16.TIER,
              "tiers": bf16.tiers(), "load_average_before": os.getloadavg(), "models": {}}
    print(f"CPU: {report['cpu']}; bf16 tier: {bf16.TIER}; tiers: {report['tiers']}")
    print(f"load average: {report['load_average_before']}")
    runnable = [tier for tier in ("avx512_bf16", "storage") if bf16.tiers()[tier] is None]
    for name in args.models:
        model_dir = ROOT / "weights" / name
        systems = [Ours(model_dir, "fp32")] + [Ours(model_dir, "bf16", tier) for tier in runnable]
        if args.accuracy_only:
            systems = systems[:2]
        if args.pure:
            from transformer.encoder import Bf16Policy

            systems.append(Ours(model_dir, "bf16", runnable[0], Bf16Policy()))
        for peer in () if args.accuracy_only or args.no_peers else (TorchBf16, OpenVinoBf16):
            try:
                systems.append(peer(model_dir))
            except Exception as error:  # a missing package: reported, not fatal
                print(f"  {peer.__name__}: skipped ({type(error).__name__}: {error})")
                report.setdefault("skipped", {})[peer.__name__] = f"{type(error).__name__}: {error}"
        entry = report["models"][name] = {"systems": [s.name for s in systems], "throughput": {}, "latency_ms": {},
                                          "accuracy": {}}
        # Accuracy: the whole corpus plus the long texts, against our fp32.
        everything = corpus[:args.corpus] + long_texts
        reference = systems[0].encode(everything)
        for system in systems[1:]:
            values = cosines(reference[:limit(system, everything)], system.encode(everything[:limit(system, everything)]))
            entry["accuracy"][system.name] = {"min": float(values.min()), "median": float(np.median(values)),
                                              "texts": limit(system, everything)}
            print(f"  {name} {system.name}: cosine to ours fp32 min {values.min():.6f} median "
                  f"{np.median(values):.6f}", flush=True)
        if args.accuracy_only:
            entry.update(texts={"accuracy": len(everything)}, bf16_policy=bf16_policy_label())
            _save(args.output, report, name, keep=True)
            continue
        # Speed: the systems take turns, round after round; the best round counts.
        for label, texts in (("short", short_texts), ("long", long_texts)):
            best = {}
            for _ in range(args.rounds):
                for system in systems:
                    system.encode(texts[:BATCH_SIZE])  # warm: plans, caches
                    start = time.perf_counter()
                    system.encode(texts[:limit(system, texts)])
                    rate = limit(system, texts) / (time.perf_counter() - start)
                    best[system.name] = max(best.get(system.name, 0.0), rate)
            entry["throughput"][label] = best
            base = entry["throughput"][label][systems[0].name]
            for system, rate in entry["throughput"][label].items():
                print(f"  {name} {label} ({len(texts)} texts) {system}: {rate:.1f} texts/s ({rate / base:.2f}x ours fp32)",
                      flush=True)
        # Batch-1 latency: one text of 16 tokens and one of 128.
        tokenizer = systems[0].model.tokenizer
        lengths = [len(tokenizer.encode(t).ids) for t in corpus[:500]]  # [CLS] ... [SEP], no padding
        one = {16: corpus[int(np.argmin(np.abs(np.array(lengths) - 16)))]}
        words = " ".join(corpus[:40]).split()
        one[128] = " ".join(words[:96])
        for tokens, text in one.items():
            for system in systems:
                for _ in range(5):
                    system.encode([text], batch_size=1)
                times = []
                for _ in range(30):
                    start = time.perf_counter()
                    system.encode([text], batch_size=1)
                    times.append(time.perf_counter() - start)
                entry["latency_ms"].setdefault(str(tokens), {})[system.name] = 1000 * float(np.median(times))
            print(f"  {name} batch-1 ~{tokens} tokens (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in entry["latency_ms"][str(tokens)].items()), flush=True)
        entry.update(load_average_after=os.getloadavg(), texts={"short": len(short_texts), "long": len(long_texts),
                                                                "accuracy": len(everything)},
                     bf16_policy=bf16_policy_label())
        print(f"load average after {name}: {entry['load_average_after']}")
        _save(args.output, report, name)
    return 0


def bf16_policy_label():
    from transformer.encoder import BF16_POLICY

    return BF16_POLICY.label


def _save(output, report, name, keep=False):
    """Write report's entry for model `name` into `output`, keeping the other models' entries
    (each model may be measured by its own run); keep: only our bf16 accuracy (and the
    policy) are replaced, the timings and the peers' accuracy from an earlier run stay."""
    path = Path(output)
    saved = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    if keep and name in saved["models"]:
        accuracy = saved["models"][name].setdefault("accuracy", {})
        for system in [system for system in accuracy if system.startswith("ours bf16")]:
            del accuracy[system]  # measured under another policy, or not this run
        accuracy.update(report["models"][name]["accuracy"])
        saved["models"][name]["bf16_policy"] = report["models"][name]["bf16_policy"]
        saved["models"][name].setdefault("texts", {})["accuracy"] = report["models"][name]["texts"]["accuracy"]
        path.write_text(json.dumps(saved, indent=1) + "\n")
        print(f"wrote {output} ({name}: accuracy)")
        return
    saved.update({key: value for key, value in report.items() if key != "models"})
    saved["models"][name] = report["models"][name]
    path.write_text(json.dumps(saved, indent=1) + "\n")
    print(f"wrote {output} ({name})")


if __name__ == "__main__":
    sys.exit(main())
