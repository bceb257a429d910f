"""Training speed: optimizer steps per second on all-MiniLM-L6-v2, ours (NumPy backward, Numba
backward) against sentence-transformers' model and loss in torch, the same batches, one run.

Every step: (anchor, positive) pairs, MultipleNegativesRankingLoss, forward of both columns,
backward, clipping at 1.0, AdamW. Texts are long enough that every one is cut at `--tokens`
(max_seq_length), so each batch is [batch, tokens] exactly. Dropout off on both sides.

    .venv/bin/python benchmarks/bench_train.py --batch 32 --tokens 128 --steps 3
        -> benchmarks/results/train_speed-b32-t128.{json,md}
    .venv/bin/python benchmarks/bench_train.py --profile --batch 8 --tokens 64
        -> where one step's time goes (cProfile, by function), printed

Threads: numba and torch are both given --threads (2 by default); the NumPy path's matrix
products run on NumPy's BLAS, whose threads OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set
(this script sets them to --threads before NumPy loads). Peak memory is the process's
resident peak (ru_maxrss) after each side, which is why each side runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINILM = ROOT / "weights" / "all-MiniLM-L6-v2"
RESULTS = ROOT / "benchmarks" / "results"
SIDES = ("numpy", "numba", "torch")

WORDS = ("the river runs past an old mill where farmers bring grain every autumn and children watch "
         "the wheel turn slowly while their parents talk about weather prices roads and the long winter "
         "ahead of them all in the small town by the hills").split()


def examples(count, words=160, seed=0):
    """`count` (anchor, positive) pairs of `words` common words each (long enough to be cut
    at any --tokens up to 128), the same for a seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(" ".join(rng.choice(WORDS, words)), " ".join(rng.choice(WORDS, words))) for _ in range(count)]


def ours(backend, batch, tokens, steps, warmup=1):
    """Our Trainer with `backend` -> seconds of each of `steps` timed steps (after `warmup`)."""
    from transformer import train
    from transformer.sentence import SentenceEncoder

    model = SentenceEncoder.from_pretrained(MINILM, backend="numpy")
    model.max_seq_length = tokens
    rows = [(a, b, None) for a, b in examples(batch * (steps + warmup))]
    settings = train.Settings(loss="mnrl", batch_size=batch, lr=2e-5, shuffle=False, backend=backend)
    trainer = train.Trainer(model, rows, settings)
    times = []
    for index in range(steps + warmup):
        started = time.perf_counter()
        trainer.step([trainer.batch(range(index * batch, (index + 1) * batch))])
        times.append(time.perf_counter() - started)
    return times[warmup:]


def theirs(batch, tokens, steps, warmup=1):
    """sentence-transformers' SentenceTransformer + MultipleNegativesRankingLoss, torch AdamW
    -> seconds of each timed step."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(str(MINILM), device="cpu")
    model.max_seq_length = tokens
    model.eval()  # dropout off, as ours
    loss_module = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    pairs = examples(batch * (steps + warmup))
    times = []
    for index in range(steps + warmup):
        started = time.perf_counter()
        rows = pairs[index * batch:(index + 1) * batch]
        features = [model.tokenize([row[column] for row in rows]) for column in (0, 1)]
        loss = loss_module(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return times[warmup:]


def one_side(side, batch, tokens, steps, threads):
    """Run one side in this process -> {"side", "seconds": [...], "peak_mib"}."""
    import resource

    if side == "torch":
        import torch

        torch.set_num_threads(threads)
        seconds = theirs(batch, tokens, steps)
    else:
        from transformer.kernels._jit import numba

        numba.set_num_threads(threads)
        seconds = ours(side, batch, tokens, steps)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"side": side, "seconds": seconds, "peak_mib": peak_mib}


def profile(backend, batch, tokens, top=25):
    """cProfile one step after a warm-up one; print the functions by their own time."""
    import cProfile
    import pstats

    from transformer import train
    from transformer.sentence import SentenceEncoder

    model = SentenceEncoder.from_pretrained(MINILM, backend="numpy")
    model.max_seq_length = tokens
    rows = [(a, b, None) for a, b in examples(batch * 2)]
    trainer = train.Trainer(model, rows, train.Settings(loss="mnrl", batch_size=batch, shuffle=False,
                                                        backend=backend))
    trainer.step([trainer.batch(range(batch))])
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    trainer.step([trainer.batch(range(batch, 2 * batch))])
    profiler.disable()
    print(f"one step, {backend}, batch {batch} x 2 columns, {tokens} tokens: {time.perf_counter() - started:.3f} s")
    stats = pstats.Stats(profiler)
    print("The phases (cumulative seconds; forward and backward summed over both columns):")
    stats.sort_stats("cumulative").print_stats(PHASES)
    print("By each function's own time:")
    stats.sort_stats("tottime").print_stats(top)


# The functions whose cumulative time splits a step into its phases (a regular expression).
PHASES = ("(train.py.*(tokenize|embed_backward|loss_and_gradients))|encoder_forward_with_cache|encoder_backward|"
          "self_attention_with_cache|self_attention_backward|feed_forward_with_cache|feed_forward_backward|"
          "linear_backward|attention_backward|attention_forward|clip_by_global_norm|optim.py.*step|"
          "embed_with_cache|table_backward|norm_backward|multiple_negatives")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every side, taking turns")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--profile", action="store_true", help="profile one step of --backend instead")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "numba"))
    parser.add_argument("--side", help=argparse.SUPPRESS)  # run one side, print its JSON (the child process)
    args = parser.parse_args()
    if args.profile:
        return profile(args.backend, args.batch, args.tokens)
    if args.side:
        print(json.dumps(one_side(args.side, args.batch, args.tokens, args.steps, args.threads)))
        return None
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    results = {}
    for _ in range(args.rounds):  # the sides take turns, so that a change in the host's load hits both
        for side in args.sides.split(","):
            load_before = os.getloadavg()[0]
            out = subprocess.run([sys.executable, __file__, "--side", side, "--batch", str(args.batch), "--tokens",
                                  str(args.tokens), "--steps", str(args.steps), "--threads", str(args.threads)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            # the host is shared: the 1-minute load average before and after each run of this side
            run["load_average"] = [[round(load_before, 2), round(os.getloadavg()[0], 2)]]
            if side in results:
                result = results[side]
                result["seconds"] += run["seconds"]
                result["peak_mib"] = max(result["peak_mib"], run["peak_mib"])
                result["load_average"] += run["load_average"]
            else:
                results[side] = result = run
            result["steps_per_second"] = len(result["seconds"]) / sum(result["seconds"])
            print(f"{side:6s} {run['seconds']} s/step  peak {run['peak_mib']:.0f} MiB  load {run['load_average']}")
    results = list(results.values())
    figures = {"batch": args.batch, "tokens": args.tokens, "steps": args.steps, "rounds": args.rounds,
               "threads": args.threads,
               "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"train_speed-b{args.batch}-t{args.tokens}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(figures, indent=1))
    by_side = {r["side"]: r for r in results}
    lines = [f"# Training speed: all-MiniLM-L6-v2, MNRL, batch {args.batch} pairs, {args.tokens} tokens, "
             f"{args.threads} threads", "",
             f"Command: `.venv/bin/python benchmarks/bench_train.py --batch {args.batch} --tokens {args.tokens} "
             f"--steps {args.steps} --rounds {args.rounds} --threads {args.threads} --sides {args.sides}` "
             f"({args.rounds} round(s), the sides taking turns, each with {args.steps} timed step(s) per side "
             f"after one warm-up step; a shared machine: one short run, not a distribution)", "",
             "| side | steps/s | s/step | vs torch | peak RSS MiB | 1-min load average before / after each run |",
             "|---|---:|---:|---:|---:|---:|"]
    for result in results:
        ratio = (f"{result['steps_per_second'] / by_side['torch']['steps_per_second']:.2f}x"
                 if "torch" in by_side else "")
        lines.append(f"| {result['side']} | {result['steps_per_second']:.3f} | {1 / result['steps_per_second']:.2f} | "
                     f"{ratio} | {result['peak_mib']:.0f} | "
                     f"{', '.join(f'{a:.1f} / {b:.1f}' for a, b in result['load_average'])} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return None


if __name__ == "__main__":
    main()
