"""Where precision="bf16"'s error comes from: which linears, which layers, weights or inputs.

    .venv/bin/python benchmarks/bf16_attribution.py --model all-MiniLM-L6-v2 [--corpus N] [--long 100]
        [--policies NAME ...] [--worst 8] [--sample 60] [--only VARIANT ...]

Step 1 (the numba backend): every text of the first --corpus lines of
benchmarks/data/corpus.txt plus --long texts of 8 lines each (the set bench_bf16.py measures),
under each bf16 policy of POLICIES (every linear bf16, then one or two kinds of linear kept in
float32; `transformer.encoder.Bf16Policy`) against fp32: min / median cosine and the mean of 1 -
cosine, and the lowest texts with every linear bf16. Step 2 (skipped with --sample 0; the NumPy
reference, `transformer.model`, on the --worst lowest texts plus --sample others drawn at
random): the bf16 rounding switched on for a part of the linears only -- by kind (qkv: query,
key and value; attention_output; ffn_up, with a GLU's gate; ffn_down), by layer, weights or
inputs alone -- and for each variant the same figures on the sample and on the worst texts
(the mean of 1 - cosine is what adds up: it grows as the squared error).
Writes benchmarks/results/bf16_attribution.json (one entry per model), after every row."""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def texts_of(corpus_lines, long):
    corpus = [line.strip() for line in open(ROOT / "benchmarks" / "data" / "corpus.txt") if line.strip()]
    return corpus[:corpus_lines] + [" ".join(corpus[i:i + 8]) for i in range(0, 8 * long, 8)]


class Rounding:
    """`transformer.model.linear` with bf16 rounding where a variant asks: `choose(layer, kind)`
    -> (round the weight, round the input). The weights stay float32 (rounded ones are
    float32 values of bf16 numbers), so the products and sums are float32 as in the bf16 path."""

    def __init__(self, encoder):
        from transformer import model as numpy_model
        from transformer.encoder import linear_kinds

        self.numpy_model = numpy_model
        self.plain_linear = numpy_model.linear
        self.where = {}  # id(weight) -> (layer, kind, weight, its bf16-rounded copy)
        for i, layer_recipe in enumerate(encoder.config.recipe.layers):
            for name, kind in linear_kinds(layer_recipe).items():
                weight = encoder.params["layers"][i][name]["weight"]
                self.where[id(weight)] = (i, kind, weight, numpy_model.round_to_bf16(weight))
        self.choose = lambda layer, kind: (False, False)

    def linear(self, x, weight, bias):
        entry = self.where.get(id(weight))
        if entry is not None:
            layer, kind, _, rounded = entry
            round_weight, round_input = self.choose(layer, kind)
            if round_weight:
                weight = rounded
            if round_input:
                x = self.numpy_model.round_to_bf16(x)
        return self.plain_linear(x, weight, bias)

    def __enter__(self):
        self.numpy_model.linear = self.linear
        return self

    def __exit__(self, *exc):
        self.numpy_model.linear = self.plain_linear


def variants(layers):
    """{name: choose(layer, kind) -> (round weight, round input)}: what step 2 measures."""
    both = (True, True)
    none = (False, False)
    found = {"bf16 (all)": lambda i, k: both,
             "weights only": lambda i, k: (True, False),
             "inputs only": lambda i, k: (False, True)}
    from transformer.encoder import LINEAR_KINDS

    for kind in LINEAR_KINDS:
        found[f"only {kind}"] = lambda i, k, kind=kind: both if k == kind else none
        found[f"only {kind} weights"] = lambda i, k, kind=kind: (True, False) if k == kind else none
        found[f"only {kind} inputs"] = lambda i, k, kind=kind: (False, True) if k == kind else none
        found[f"keep {kind} fp32"] = lambda i, k, kind=kind: none if k == kind else both
    for layer in range(layers):
        found[f"only layer {layer}"] = lambda i, k, layer=layer: both if i == layer else none
        found[f"keep layer {layer} fp32"] = lambda i, k, layer=layer: none if i == layer else both
    found["keep ffn_down + attention_output fp32"] = \
        lambda i, k: none if k in ("ffn_down", "attention_output") else both
    found["keep ffn_down fp32, last layer fp32"] = lambda i, k: none if k == "ffn_down" or i == layers - 1 else both
    return found


def summary(values):
    return {"min": float(values.min()), "median": float(np.median(values)),
            "mean_deficit": float(np.mean(1.0 - values))}


POLICIES = (("bf16 (all)", ()), ("keep qkv fp32", ("qkv",)), ("keep attention_output fp32", ("attention_output",)),
            ("keep ffn_up fp32", ("ffn_up",)), ("keep ffn_down fp32", ("ffn_down",)),
            ("keep ffn_down + attention_output fp32", ("ffn_down", "attention_output")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--corpus", type=int, default=None, help="the first N corpus lines (default: all)")
    parser.add_argument("--long", type=int, default=100)
    parser.add_argument("--policies", nargs="*", default=None, help="step 1: just these policies (names as printed)")
    parser.add_argument("--worst", type=int, default=8)
    parser.add_argument("--sample", type=int, default=60)
    parser.add_argument("--only", nargs="*", default=None, help="step 2: just these variants (names as printed)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bf16_attribution.json"))
    args = parser.parse_args()
    import transformer
    from transformer import encoder as encoder_module
    from transformer.sentence import SentenceEncoder

    transformer.set_num_threads(2)
    model_dir = ROOT / "weights" / args.model
    texts = texts_of(args.corpus, args.long)
    report = {"texts": len(texts), "corpus_lines": args.corpus, "long": args.long, "policies": {}}

    # Step 1: each bf16 policy against fp32, every text, on the kernels.
    started = time.perf_counter()
    fp32 = SentenceEncoder.from_pretrained(model_dir, backend="numba").encode(texts)
    saved, pure = encoder_module.BF16_POLICY, None
    for name, kept in POLICIES:
        if args.policies is not None and name not in args.policies and kept:
            continue
        encoder_module.BF16_POLICY = encoder_module.Bf16Policy(fp32=kept)
        try:
            bf16 = SentenceEncoder.from_pretrained(model_dir, backend="numba", precision="bf16").encode(texts)
        finally:
            encoder_module.BF16_POLICY = saved
        values = cosines(fp32, bf16)
        report["policies"][name] = summary(values)
        print(f"{args.model}: {len(texts)} texts, {name:40s} min {values.min():.6f} median {np.median(values):.6f} "
              f"mean 1-cos {np.mean(1 - values):.2e} ({time.perf_counter() - started:.0f} s)", flush=True)
        if pure is None:
            pure = values
            order = np.argsort(pure)
            report["worst"] = [{"text": texts[i][:80], "index": int(i), "cosine": float(pure[i])}
                               for i in order[:max(args.worst, 5)]]
            for entry in report["worst"][:5]:
                print(f"  {entry['cosine']:.6f}  {entry['text']!r}", flush=True)
        _save(args.output, args.model, report)
    if not args.sample:
        return 0

    # Step 2: the NumPy reference with the rounding on a part of the linears.
    worst = [int(i) for i in order[:args.worst]]
    rest = np.setdiff1d(np.arange(len(texts)), worst)
    sample = sorted(np.random.default_rng(0).choice(rest, size=min(args.sample, len(rest)), replace=False).tolist())
    chosen = worst + sample
    subset = [texts[i] for i in chosen]
    model = SentenceEncoder.from_pretrained(model_dir, backend="numpy")
    rounding = Rounding(model.encoder)
    report["variants"], report["sample"] = {}, {"worst": len(worst), "random": len(sample)}
    with rounding:
        reference = model.encode(subset)
        for name, choose in variants(model.encoder.config.num_hidden_layers).items():
            if args.only is not None and name not in args.only:
                continue
            rounding.choose = choose
            values = cosines(reference, model.encode(subset))
            report["variants"][name] = {"sample": summary(values[len(worst):]), "worst": summary(values[:len(worst)])}
            print(f"  {name:40s} sample min {values[len(worst):].min():.6f} median "
                  f"{np.median(values[len(worst):]):.6f} mean 1-cos {np.mean(1 - values[len(worst):]):.2e} | "
                  f"worst min {values[:len(worst)].min():.6f} mean 1-cos {np.mean(1 - values[:len(worst)]):.2e}",
                  flush=True)
            _save(args.output, args.model, report)
    return 0


def _save(output, name, report):
    path = Path(output)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved[name] = report
    path.write_text(json.dumps(saved, indent=1) + "\n")
    print(f"wrote {output} ({name})")


if __name__ == "__main__":
    sys.exit(main())
