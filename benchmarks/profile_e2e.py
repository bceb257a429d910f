"""Where this project's end-to-end time goes: tokenization, forward (per operation), pooling.

    .venv/bin/python benchmarks/profile_e2e.py                      # MiniLM, both backends
    .venv/bin/python benchmarks/profile_e2e.py --model bert-base --parts numba epilogues
    .venv/bin/python benchmarks/profile_e2e.py --quick              # fewer texts and calls

Four workloads, each through `SentenceEncoder.encode` (2 threads, fp32), as `run.py` runs them:

  corpus      batch 32 over (a subset of) benchmarks/data/corpus.txt, sorted by length
  1 x 16      batch 1, a 16-token text (repeated calls)
  1 x 128     batch 1, a 128-token text
  32 x 128    the forward pass alone on 32 texts of 128 real tokens (run.py's FLOP/s shape)

The functions each step calls are wrapped with timers (exclusive time: a wrapped call inside
another is not counted twice), without editing the package:

  encode:   tokenize (`Tokenizer.__call__`), forward (`Encoder.__call__`), pool + normalize
            (`pooling.pool`, `pooling.normalize`), and "encode glue" (sorting, slicing, Python)
  numba:    `transformer.numba_backend.forward`'s gemm (split by role: QKV, attention out + residual,
            FFN up + GELU, FFN down + residual), attention (`VarlenPlan`), layer_norm_checked,
            embed_tokens, position ids, and "forward glue" (packing real tokens, unpacking to
            [batch, seq, hidden], input checks, Python between kernels). The layers normally
            run as one compiled call, which no timer can split: the instrumented run takes
            the step-by-step path (`FUSED_LAYERS = False`: the same kernels, the same bits), so
            its glue includes the Python between steps that the default path does not pay
  numpy:    `transformer.model`'s linear (by weight shape), attention (its two matmuls, scale,
            mask), softmax, gelu, layer_norm, embed, and "forward glue" (residual adds,
            head split/merge copies, Python)

Then, for the numba backend, what the fused GEMM epilogues cost (the same GEMM with and without
bias + GELU / residual), and for comparison the ONNX Runtime runner split into tokenize / model
/ pool on the same workloads. The timers add about a microsecond per wrapped call; the
uninstrumented wall time (the default path) is printed beside the instrumented one.

Writes benchmarks/results/profile_e2e.md (and .json) unless --no-write.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

THREADS = 2
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(variable, str(THREADS))
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

import numpy as np  # noqa: E402

MODELS = {"minilm": ROOT / "weights" / "all-MiniLM-L6-v2", "bert-base": ROOT / "weights" / "bench" / "bert-base-random"}


class Timers:
    """Exclusive wall time per label: a timed call nested in another is subtracted from it."""

    def __init__(self):
        self.seconds, self.calls, self.flops = {}, {}, {}
        self.stack = []  # [time spent in children] per open call

    def wrap(self, label, function, flops=None):
        """`function` timed under `label` (a str, or a callable(args, kwargs) -> str)."""

        def timed(*args, **kwargs):
            name = label(args, kwargs) if callable(label) else label
            self.stack.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                children = self.stack.pop()
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - children
                self.calls[name] = self.calls.get(name, 0) + 1
                if flops is not None:
                    self.flops[name] = self.flops.get(name, 0) + flops(args, kwargs)
                if self.stack:
                    self.stack[-1] += elapsed

        return timed

    def reset(self):
        self.seconds, self.calls, self.flops = {}, {}, {}


class Proxy:
    """Delegates everything to `target`, but calls go through `call`."""

    def __init__(self, target, call):
        self._target, self._call = target, call

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._target, name)


def instrument(model, timers):
    """Wrap the steps of `model` (a SentenceEncoder) and its backend's functions with timers.

    Returns a function that undoes every wrapping.
    """
    from transformer import model as numpy_model
    from transformer import pooling, sentence
    from transformer.kernels import program as kernel_program
    from transformer.numba_backend import forward as kernels_forward

    saved_numpy = {name: getattr(numpy_model, name) for name in
                   ("linear", "attention", "softmax", "layer_norm", "embed", "pooler")}
    saved_activations = dict(numpy_model.ACTIVATIONS)
    saved_kernels = {name: getattr(kernels_forward, name) for name in
                     ("embed_tokens", "numpy_model", "FUSED_LAYERS")}
    saved_steps = {name: getattr(kernel_program, name) for name in ("gemm", "layer_norm_checked")}
    saved_attention_call = kernels_forward.VarlenPlan.__call__
    saved_model = (model.tokenizer, model.encoder)

    def undo():
        for name, value in saved_numpy.items():
            setattr(numpy_model, name, value)
        numpy_model.ACTIVATIONS.clear()
        numpy_model.ACTIVATIONS.update(saved_activations)
        for name, value in saved_kernels.items():
            setattr(kernels_forward, name, value)
        for name, value in saved_steps.items():
            setattr(kernel_program, name, value)
        kernels_forward.VarlenPlan.__call__ = saved_attention_call
        sentence.pooling = pooling
        model.tokenizer, model.encoder = saved_model

    config = model.encoder.config
    hidden, inner = config.hidden_size, config.intermediate_size
    model.tokenizer = Proxy(model.tokenizer, timers.wrap("tokenize", model.tokenizer.__call__))
    model.encoder = Proxy(model.encoder, timers.wrap("forward glue (checks, packing, Python)", model.encoder.__call__))
    # SentenceEncoder asks for the last hidden state alone (no pooler): time that door too.
    model.encoder.last_hidden_state = timers.wrap("forward glue (checks, packing, Python)",
                                                  saved_model[1].last_hidden_state)
    sentence.pooling = Proxy(pooling, None)
    sentence.pooling.pool = timers.wrap("pool + normalize", pooling.pool)
    sentence.pooling.normalize = timers.wrap("pool + normalize", pooling.normalize)
    # The checkpoint's pooler (a dense + tanh on [CLS]) runs on every call; mean pooling ignores it.
    numpy_model.pooler = timers.wrap("BERT pooler (dense + tanh on [CLS], unused)", numpy_model.pooler)

    if model.backend == "numba":
        def gemm_role(args, kwargs):
            x, out = args[0], kwargs.get("out")
            k, n = x.shape[1], (out.shape[1] if out is not None else args[1].shape[-1])
            if n == 3 * hidden:
                return "GEMM QKV (+bias)"
            if kwargs.get("activation"):
                return "GEMM FFN up (+bias+GELU)"
            if k == inner:
                return "GEMM FFN down (+bias+residual)"
            return "GEMM attention out (+bias+residual)"

        def gemm_flops(args, kwargs):
            x, out = args[0], kwargs["out"]
            return 2 * x.shape[0] * x.shape[1] * out.shape[1]

        # The layers normally run as one compiled call (kernels/program.py), which no timer can
        # split: the instrumented run takes the step-by-step path instead, the same kernels and
        # bits (program.run_program_steps); the uninstrumented time is the default path's.
        kernels_forward.FUSED_LAYERS = False
        kernel_program.gemm = timers.wrap(gemm_role, kernel_program.gemm, gemm_flops)
        kernels_forward.VarlenPlan.__call__ = timers.wrap("attention (varlen kernel)", saved_attention_call,
                                                          attention_flops_varlen)
        kernel_program.layer_norm_checked = timers.wrap("layer norm", kernel_program.layer_norm_checked)
        kernels_forward.embed_tokens = timers.wrap("embeddings (gather + layer norm)", kernels_forward.embed_tokens)
        kernels_forward.numpy_model = Proxy(numpy_model, None)
        kernels_forward.numpy_model.position_ids = timers.wrap("forward glue (checks, packing, Python)",
                                                               numpy_model.position_ids)
    else:
        def linear_role(args, kwargs):
            weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
            k, n = weight.shape
            if args[0].ndim == 2:  # only the pooler's [batch, hidden] input is 2-D
                return "BERT pooler (dense + tanh on [CLS], unused)"
            if k == inner:
                return "GEMM FFN down (+bias)"
            if n == inner:
                return "GEMM FFN up (+bias)"
            return "GEMM Q, K, V, attention out (+bias)"

        def linear_flops(args, kwargs):
            x, weight = args[0], kwargs.get("weight", args[1] if len(args) > 1 else None)
            return 2 * (x.size // x.shape[-1]) * weight.shape[0] * weight.shape[1]

        def attention_flops(args, kwargs):
            query = args[0]
            batch, heads, seq, head_dim = query.shape
            return 4 * batch * heads * seq * seq * head_dim

        numpy_model.linear = timers.wrap(linear_role, numpy_model.linear, linear_flops)
        numpy_model.attention = timers.wrap("attention (matmuls, scale, mask; padded)", numpy_model.attention,
                                            attention_flops)
        numpy_model.softmax = timers.wrap("softmax", numpy_model.softmax)
        numpy_model.layer_norm = timers.wrap("layer norm", numpy_model.layer_norm)
        numpy_model.embed = timers.wrap("embeddings (gather + layer norm)", numpy_model.embed)
        for name, function in list(numpy_model.ACTIVATIONS.items()):
            numpy_model.ACTIVATIONS[name] = timers.wrap("GELU (separate pass)", function)
    return undo


def attention_flops_varlen(args, kwargs):
    plan = args[0]  # a kernels.attention.VarlenPlan, called on (qkv, out=...)
    lengths = np.diff(plan.cu_seqlens)
    hidden = plan.hidden
    return int(4 * hidden * (lengths.astype(np.int64) ** 2).sum())


def mean_seconds(call, repeats, timers=None):
    """Seconds per call of `call` over `repeats` calls, after one warm-up call (timers reset after it)."""
    call()
    if timers is not None:
        timers.reset()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def breakdown_rows(timers, total, repeats, kind):
    """[(label, ms per repeat, share of total, calls per repeat, GFLOP/s or None)], biggest first."""
    rows = []
    for label, seconds in sorted(timers.seconds.items(), key=lambda item: -item[1]):
        flops = timers.flops.get(label)
        rows.append((label, 1e3 * seconds / repeats, seconds / repeats / total, timers.calls[label] / repeats,
                     flops / seconds / 1e9 if flops else None))
    accounted = sum(timers.seconds.values()) / repeats
    rest = "encode glue (sort, slices, Python)" if kind == "encode" else "call glue (ones_like, Python)"
    rows.append((rest, 1e3 * (total - accounted), (total - accounted) / total, None, None))
    return rows


def profile_backend(model_dir, backend, workloads, log):
    """{workload: {"plain_ms", "instrumented_ms", "repeats", "rows"}} for one backend."""
    import transformer

    model = transformer.SentenceEncoder.from_pretrained(model_dir, backend=backend)
    transformer.set_num_threads(THREADS)
    results = {}
    for name, kind, payload, repeats in workloads:
        if kind == "encode":
            call = lambda: model.encode(payload, batch_size=32, show_progress=False)  # noqa: E731
        else:
            call = lambda: model.encoder(payload, np.ones_like(payload), np.zeros_like(payload))  # noqa: E731
        import run

        snapshot = run.cpu_snapshot()
        plain = mean_seconds(call, repeats)
        timers = Timers()
        undo = instrument(model, timers)
        try:
            instrumented = mean_seconds(call, repeats, timers)
        finally:
            undo()
        results[name] = {"plain_ms": 1e3 * plain, "instrumented_ms": 1e3 * instrumented, "repeats": repeats,
                         "rows": breakdown_rows(timers, instrumented, repeats, kind),
                         "others_cores": run.others_cores(snapshot, run.cpu_snapshot())}
        log(format_table(f"{backend} backend, {name}", results[name]))
    return results


def format_table(title, result):
    others = result.get("others_cores")
    lines = [f"\n### {title}: {result['plain_ms']:.1f} ms per call uninstrumented, {result['instrumented_ms']:.1f} ms "
             f"instrumented (mean of {result['repeats']}; other processes took "
             f"{'?' if others is None else f'{others:.2f}'} cores meanwhile)", "",
             "| step | ms | share | calls | GFLOP/s |", "|---|---|---|---|---|"]
    for label, ms, share, calls, gflops in result["rows"]:
        lines.append(f"| {label} | {ms:.2f} | {share:.1%} | {'' if calls is None else f'{calls:g}'} | "
                     f"{'' if gflops is None else f'{gflops:.0f}'} |")
    return "\n".join(lines)


def epilogue_costs(model_dir, tokens_list, log):
    """ms of the numba GEMM with and without its fused epilogues, at the FFN-up and FFN-down shapes."""
    from transformer.kernels.gemm import gemm, pack_weight

    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    rng = np.random.default_rng(0)
    rows = []
    for tokens in tokens_list:
        for k, n, variants in ((hidden, inner, [None, "gelu"]), (inner, hidden, [None, "residual"])):
            x = rng.standard_normal((tokens, k), dtype=np.float32)
            packed = pack_weight(rng.standard_normal((k, n), dtype=np.float32))
            bias = rng.standard_normal(n, dtype=np.float32)
            residual = rng.standard_normal((tokens, n), dtype=np.float32)
            out = np.empty((tokens, n), dtype=np.float32)
            calls = {
                "plain (no bias)": lambda: gemm(x, packed, out=out),
                "+bias": lambda: gemm(x, packed, bias, out=out),
            }
            if "gelu" in variants:
                calls["+bias+GELU"] = lambda: gemm(x, packed, bias, activation="gelu", out=out)
            else:
                calls["+bias+residual"] = lambda: gemm(x, packed, bias, residual=residual, out=out)
            weights = rng.standard_normal((k, n), dtype=np.float32)
            calls["np.matmul"] = lambda: np.matmul(x, weights, out=out)
            repeats = max(3, int(2e8 / (2 * tokens * k * n)))
            times = {name: [] for name in calls}
            import run

            snapshot = run.cpu_snapshot()
            for name, call in calls.items():
                call()
            for _ in range(5):
                for name, call in calls.items():
                    start = time.perf_counter()
                    for _ in range(repeats):
                        call()
                    times[name].append((time.perf_counter() - start) / repeats)
            medians = {name: 1e3 * float(np.median(values)) for name, values in times.items()}
            flops = 2 * tokens * k * n
            others = run.others_cores(snapshot, run.cpu_snapshot())
            rows.append({"tokens": tokens, "shape": f"[{tokens}, {k}] @ [{k}, {n}]", "others_cores": others,
                         "ms": medians, "gflops": {name: flops / ms / 1e6 for name, ms in medians.items()}})
            log(f"  epilogue {rows[-1]['shape']}: " + ", ".join(
                f"{name} {ms:.3f} ms ({flops / ms / 1e6:.0f} GFLOP/s)" for name, ms in medians.items())
                + f" (others: {others:.2f} cores)")
    return rows


def onnx_split(model_dir, workloads, log):
    """ONNX Runtime runner: tokenize / model / pool ms per workload (the peer to beat)."""
    import subprocess

    import peers

    with tempfile.TemporaryDirectory() as workdir:
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import peers, json; "
                f"path, counts, seconds = peers.export_onnx({str(model_dir)!r}, {workdir!r}); print(json.dumps(str(path)))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            log(f"  ONNX Runtime split skipped: export failed: {done.stderr.strip().splitlines()[-1:]}")
            return None
        runner = peers.load("onnxruntime", model_dir, THREADS, json.loads(done.stdout.strip().splitlines()[-1]))
        results = {}
        import run

        for name, kind, payload, repeats in workloads:
            snapshot = run.cpu_snapshot()
            timers = {"tokenize": 0.0, "model": 0.0, "pool + normalize + glue": 0.0}
            if kind == "forward":
                ids = payload
                runner.forward(ids, np.ones_like(ids))
                start = time.perf_counter()
                for _ in range(repeats):
                    runner.forward(ids, np.ones_like(ids))
                timers["model"] = time.perf_counter() - start
                total = timers["model"]
            else:
                tokenize, forward = runner.tokenize, runner.forward

                def timed(key, function):
                    def call(*args):
                        start = time.perf_counter()
                        try:
                            return function(*args)
                        finally:
                            timers[key] += time.perf_counter() - start
                    return call

                runner.encode(payload)
                runner.tokenize, runner.forward = timed("tokenize", tokenize), timed("model", forward)
                start = time.perf_counter()
                for _ in range(repeats):
                    runner.encode(payload)
                total = time.perf_counter() - start
                runner.tokenize, runner.forward = tokenize, forward
                timers["pool + normalize + glue"] = total - timers["tokenize"] - timers["model"]
            results[name] = {"total_ms": 1e3 * total / repeats,
                             "split_ms": {key: 1e3 * value / repeats for key, value in timers.items()},
                             "others_cores": run.others_cores(snapshot, run.cpu_snapshot())}
            log(f"  ONNX Runtime {name}: {results[name]['total_ms']:.2f} ms = " + ", ".join(
                f"{key} {ms:.2f}" for key, ms in results[name]["split_ms"].items())
                + f" (other processes took {results[name]['others_cores']:.2f} cores meanwhile)")
    return results


def workloads_for(part, corpus, short, long, forward_ids, model, quick):
    """[(name, "encode" | "forward", texts or ids, repeats)] for one part of the profile."""
    scale = 4 if quick else 1
    big = model == "bert-base"
    slow = part == "numpy"
    every = ((150 if big else 30) if slow else (30 if big else 5)) * scale
    texts = corpus[::every]
    return [
        (f"corpus, batch 32 ({len(texts)} texts)", "encode", texts, 1),
        ("batch 1 x 16 tokens", "encode", [short], max(1, (10 if slow else 100) // scale)),
        ("batch 1 x 128 tokens", "encode", [long], max(1, (3 if slow else 30) // scale)),
        ("forward only, 32 x 128 tokens", "forward", forward_ids, 1),
    ]


def run_part(part, model, quick):
    """One part of the profile, in this process: (lines of Markdown, data)."""
    import run  # benchmarks/run.py: the corpus and the 16 / 128-token texts it times

    model_dir = MODELS[model]
    corpus = run.read_corpus()
    short, long, forward_ids = run.pick_texts(corpus)
    workloads = workloads_for(part, corpus, short, long, forward_ids, model, quick)
    lines = []

    def log(text):
        print(text, flush=True)
        lines.append(text)

    if part in ("numba", "numpy"):
        data = profile_backend(model_dir, part, workloads, log)
    elif part == "epilogues":
        log("\n### numba GEMM epilogues: the same GEMM plain, with bias, with bias + GELU / residual; np.matmul")
        data = epilogue_costs(model_dir, [16, 128, 4096], log)
    else:
        log("\n### ONNX Runtime + tokenizers on the same workloads (tokenize / model / the rest)")
        data = onnx_split(model_dir, workloads, log)
    return lines, data


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="minilm")
    parser.add_argument("--parts", nargs="+", choices=["numba", "epilogues", "numpy", "onnxruntime"],
                        default=["numba", "epilogues", "numpy", "onnxruntime"],
                        help="each runs in its own process, one after another")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if not (MODELS[args.model] / "model.safetensors").is_file():
        raise SystemExit(f"{MODELS[args.model]} not found (benchmarks/run.py writes the BERT-base checkpoint)")
    if args.part:
        lines, data = run_part(args.part, args.model, args.quick)
        print("RESULT " + json.dumps({"lines": lines, "data": data}, default=str), flush=True)
        return

    import subprocess

    lines = [f"# End-to-end profile: {args.model}, {THREADS} threads "
             f"({time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.2f} at the start)", "",
             f"Command: `python benchmarks/profile_e2e.py {' '.join(sys.argv[1:])}`".replace(" `", "`"), "",
             "Exclusive time per step (a step's wrapped sub-steps are listed on their own lines). "
             "GFLOP/s: GEMM FLOPs 2*M*K*N, attention 4*seq^2*hidden per sequence and layer. "
             "Each part runs in its own process."]
    print("\n".join(lines), flush=True)
    report = {"model": args.model}
    for part in args.parts:
        command = [sys.executable, __file__, "--model", args.model, "--part", part] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, capture_output=True, text=True)
        results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not results:
            message = f"\n### {part}: failed ({(done.stderr.strip().splitlines() or ['?'])[-1]})"
            print(message, flush=True)
            lines.append(message)
            continue
        result = json.loads(results[-1][len("RESULT "):])
        print("\n".join(result["lines"]), flush=True)
        lines += result["lines"]
        report[part] = result["data"]
    lines.append(f"\nLoad average at the end: {os.getloadavg()[0]:.2f}.")
    if not args.no_write:
        suffix = "" if args.model == "minilm" else f"-{args.model}"
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / f"profile_e2e{suffix}.md").write_text("\n".join(lines) + "\n")
        (out / f"profile_e2e{suffix}.json").write_text(json.dumps(report, indent=1, default=str))
        print(f"\nwrote {out / f'profile_e2e{suffix}.md'}")


if __name__ == "__main__":
    main()
