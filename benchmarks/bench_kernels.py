"""Kernel benchmark: each Numba kernel against its NumPy twin, measured in the same run.

    python benchmarks/bench_kernels.py                 # 2 threads, then 1; everything
    python benchmarks/bench_kernels.py --threads 2 --repeats 9 --no-gemm
    python benchmarks/bench_kernels.py --only startup   # just compile time and cold start

Sections (ratio = NumPy time / kernel time, medians of alternating rounds, so both sides
see the same machine load; > 1 means the kernel is faster):

  attention     `transformer.model.attention` (batched matmul + softmax + matmul, padded)
                vs `attention_varlen` on the fused QKV rows (what the numba backend runs) and
                vs the padded kernel `attention`; MiniLM (12 heads x 32) and BERT-base
                (12 x 64) at seq 128 / 256 / 512, plus a mixed-length batch where the
                varlen kernel skips the padding NumPy computes.
  layer norm    `model.layer_norm(x + residual)` vs `residual_layer_norm`
  gelu          `model.gelu(x + bias)` vs `bias_activation(x, bias, "gelu")`
  softmax       `model.softmax` vs `softmax` on attention-score rows
  embeddings    gather + add + `model.layer_norm` vs `embed_tokens`
  gemm          `benchmarks/bench_gemm.py`'s table (gemm vs np.matmul), when that file exists
  startup       first call of every kernel in a fresh process with an empty Numba cache
                (the compile cost), the same with the cache warm, and a new process's time
                from `import transformer` to the first sentence vector of all-MiniLM-L6-v2
                with the cache warm and cold.

Token counts M are 16 / 128 / 512 / 4096; widths are MiniLM's (384, FFN 1536) and
BERT-base's (768, FFN 3072). Every thread count runs in its own process with
NUMBA_NUM_THREADS and OPENBLAS_NUM_THREADS set, so both libraries get the same threads.
The machine is shared: check the load averages printed at the start and the end.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKENS = [16, 128, 512, 4096]
WIDTHS = [("MiniLM", 384, 1536, 12), ("BERT-base", 768, 3072, 12)]  # name, hidden, intermediate, heads
ATTENTION = [(8, 128), (4, 256), (2, 512)]  # (batch, seq): 1024 tokens each


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def time_rounds(functions, repeats, min_seconds):
    """Median seconds per call of each function, timed in interleaved rounds."""
    for function in functions:
        function()  # warm up (and compile)
    samples = [[] for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            calls, start = 0, time.perf_counter()
            while True:
                function()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            samples[index].append(elapsed / calls)
    return [median(s) for s in samples]


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ---------------------------------------------------------------------------------------
# Child: per-kernel throughput at one thread count.


def bench_attention(rng, repeats, min_seconds):
    import numpy as np

    from transformer import model
    from transformer.kernels.attention import attention, attention_varlen

    rows = []
    for name, hidden, _, heads in WIDTHS:
        head_dim = hidden // heads
        cases = [(batch, seq, None) for batch, seq in ATTENTION]
        cases.append((8, 128, "mixed"))  # lengths 16..128: padding the varlen kernel skips
        for batch, seq, kind in cases:
            q, k, v = (rng.standard_normal((batch, heads, seq, head_dim), dtype=np.float32) for _ in range(3))
            mask = np.ones((batch, seq), np.int64)
            if kind == "mixed":
                for row, length in enumerate(np.linspace(16, 128, batch).astype(int)):
                    mask[row, length:] = 0
            mask_bias = model.attention_mask_bias(mask)
            real = np.flatnonzero(mask)

            def rows_of(x):  # [batch, heads, seq, head_dim] -> the real tokens' [tokens, hidden]
                return x.transpose(0, 2, 1, 3).reshape(batch * seq, hidden)[real]

            qkv = np.ascontiguousarray(np.concatenate([rows_of(x) for x in (q, k, v)], axis=1))
            cu_seqlens = np.concatenate(([0], np.cumsum(mask.sum(axis=1))))
            context = np.empty((len(real), hidden), np.float32)
            numpy_s, varlen_s, padded_s = time_rounds([
                lambda: model.attention(q, k, v, mask_bias),
                lambda: attention_varlen(qkv, cu_seqlens, heads, out=context),
                lambda: attention(q, k, v, mask_bias),
            ], repeats, min_seconds)
            expected = rows_of(model.attention(q, k, v, mask_bias)[0])
            rows.append({
                "kernel": "attention", "shape": f"{name} b{batch} s{seq}" + (" mixed" if kind else ""),
                "numpy_ms": numpy_s * 1e3, "numba_ms": varlen_s * 1e3, "ratio": numpy_s / varlen_s,
                "padded_ratio": numpy_s / padded_s, "max_abs_diff": float(np.abs(context - expected).max()),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_rows(rng, repeats, min_seconds, tokens):
    """layer norm, gelu, softmax, embeddings: NumPy twin vs kernel."""
    import numpy as np

    from transformer import model
    from transformer.kernels.activations import bias_activation
    from transformer.kernels.embeddings import embed_tokens
    from transformer.kernels.layernorm import residual_layer_norm
    from transformer.kernels.softmax import softmax

    rows = []

    def record(kernel, shape, numpy_function, numba_function, numba_out):
        numpy_s, numba_s = time_rounds([numpy_function, numba_function], repeats, min_seconds)
        expected = numpy_function()
        rows.append({"kernel": kernel, "shape": shape, "numpy_ms": numpy_s * 1e3, "numba_ms": numba_s * 1e3,
                     "ratio": numpy_s / numba_s, "max_abs_diff": float(np.abs(numba_out - expected).max())})
        print(json.dumps(rows[-1]), flush=True)

    tables = {hidden: [rng.standard_normal((rows, hidden), dtype=np.float32) for rows in (30522, 512, 2)]
              for _, hidden, _, _ in WIDTHS}  # word, position, token type
    for m in tokens:
        for name, hidden, intermediate, heads in WIDTHS:
            x = rng.standard_normal((m, hidden), dtype=np.float32)
            residual = rng.standard_normal((m, hidden), dtype=np.float32)
            weight, bias = rng.standard_normal(hidden, dtype=np.float32), rng.standard_normal(hidden, dtype=np.float32)
            out = np.empty_like(x)
            record("layer norm", f"M={m} {name} {hidden}",
                   lambda: model.layer_norm(x + residual, weight, bias, 1e-12),
                   lambda: residual_layer_norm(x, residual, weight, bias, 1e-12, out=out), out)

            inner = rng.standard_normal((m, intermediate), dtype=np.float32)
            inner_bias = rng.standard_normal(intermediate, dtype=np.float32)
            inner_out = np.empty_like(inner)
            record("gelu", f"M={m} {name} {intermediate}",
                   lambda: model.gelu(inner + inner_bias),
                   lambda: bias_activation(inner, inner_bias, "gelu", out=inner_out), inner_out)

            word, position, token_type = tables[hidden]
            ids, types, positions = rng.integers(0, 30522, m), rng.integers(0, 2, m), np.arange(m) % 512
            embedded = np.empty((m, hidden), np.float32)
            record("embeddings", f"M={m} {name} {hidden}",
                   lambda: model.layer_norm(word[ids] + token_type[types] + position[positions], weight, bias, 1e-12),
                   lambda: embed_tokens(word, token_type, position, weight, bias, 1e-12, ids, types, positions,
                                        out=embedded), embedded)
    for heads, seq, batch in [(12, 128, 8), (12, 512, 2)]:
        scores = rng.standard_normal((batch * heads * seq, seq), dtype=np.float32)
        probabilities = np.empty_like(scores)
        record("softmax", f"{batch}x{heads}x{seq} rows of {seq}",
               lambda: model.softmax(scores), lambda: softmax(scores, out=probabilities), probabilities)
    return rows


def run_throughput(threads, tokens, repeats, min_seconds, sections):
    import numpy as np

    import transformer

    transformer.set_num_threads(threads)
    rng = np.random.default_rng(0)
    if "attention" in sections:
        bench_attention(rng, repeats, min_seconds)
    if "rows" in sections:
        bench_rows(rng, repeats, min_seconds, tokens)


# ---------------------------------------------------------------------------------------
# Child: first calls of every kernel (compile or cache load) in a fresh process.


def run_compile():
    start = time.perf_counter()
    import numpy as np

    from transformer.kernels import activations, attention, embeddings, gemm, layernorm, softmax

    timings = {"import numba + kernels": time.perf_counter() - start}
    rng = np.random.default_rng(0)
    small, large = rng.standard_normal((8, 64), dtype=np.float32), rng.standard_normal((4096, 64), dtype=np.float32)
    ones, zeros = np.ones(64, np.float32), np.zeros(64, np.float32)
    q = rng.standard_normal((1, 2, 5, 32), dtype=np.float32)
    qkv = rng.standard_normal((10, 192), dtype=np.float32)
    packed = gemm.pack_weight(rng.standard_normal((64, 64), dtype=np.float32))
    big_x = rng.standard_normal((256, 256), dtype=np.float32)
    big_packed = gemm.pack_weight(rng.standard_normal((256, 256), dtype=np.float32))
    calls = [
        ("layer_norm", lambda: layernorm.layer_norm(small, ones, zeros, 1e-12)),
        ("residual_layer_norm", lambda: layernorm.residual_layer_norm(small, small, ones, zeros, 1e-12)),
        ("bias + gelu", lambda: activations.bias_activation(small, zeros, "gelu")),
        ("softmax", lambda: softmax.softmax(small)),
        ("attention (varlen)", lambda: attention.attention_varlen(qkv, [0, 4, 10], 2)),
        ("attention (padded)", lambda: attention.attention(q, q, q)),
        ("embeddings", lambda: embeddings.embed_tokens(large, large[:2], large, ones, zeros, 1e-12,
                                                        np.arange(5), np.zeros(5, np.int64), np.arange(5))),
        ("gemm single-thread", lambda: gemm.gemm(small, packed)),
        ("gemm threaded", lambda: gemm.gemm(big_x, big_packed)),
        ("gemm + gelu epilogue", lambda: gemm.gemm(big_x, big_packed, activation="gelu")),
    ]
    for label, call in calls:
        start = time.perf_counter()
        call()
        timings[label] = time.perf_counter() - start
    print(json.dumps(timings), flush=True)


FIRST_VECTOR = """
import sys, time
if "--no-scipy" in sys.argv:  # as in a run-time-only install: numba then skips `import scipy.linalg`
    sys.modules["scipy"] = None
start = time.perf_counter()
import transformer
model = transformer.SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
vector = model.encode(["A man is eating food."])
print(time.perf_counter() - start, vector.shape, model)
"""


def first_vector_seconds(env, no_scipy=False):
    command = [sys.executable, "-c", FIRST_VECTOR] + (["--no-scipy"] if no_scipy else [])
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"first-vector run failed:\n{result.stderr}")
    return float(result.stdout.split()[0])


# ---------------------------------------------------------------------------------------
# Parent.


def child(arguments, threads, extra_env=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), NUMBA_THREADING_LAYER=os.environ.get("NUMBA_THREADING_LAYER", "workqueue"))
    env.update(extra_env or {})
    result = subprocess.run([sys.executable, __file__, "--child", *arguments, "--threads", str(threads)],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def print_rows(rows, threads):
    print(f"\n## {threads} thread(s): ratio = NumPy time / kernel time (median of alternating rounds)")
    print(f"{'kernel':<11} {'shape':<30} {'numpy ms':>9} {'numba ms':>9} {'ratio':>6}  {'max|diff|':>9}")
    for row in rows:
        extra = f"  (padded kernel {row['padded_ratio']:.1f}x)" if "padded_ratio" in row else ""
        print(f"{row['kernel']:<11} {row['shape']:<30} {row['numpy_ms']:9.3f} {row['numba_ms']:9.3f} "
              f"{row['ratio']:6.1f}  {row['max_abs_diff']:9.1e}{extra}")
    print()
    for kernel in dict.fromkeys(row["kernel"] for row in rows):
        ratios = [row["ratio"] for row in rows if row["kernel"] == kernel]
        print(f"{kernel:<11} median {median(ratios):5.1f}x  (min {min(ratios):.1f}, max {max(ratios):.1f})")


def gemm_benchmark():
    """benchmarks/bench_gemm.py as a module, or None when it is not there."""
    path = HERE / "bench_gemm.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("bench_gemm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_startup(repeats):
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = child(["compile"], max(1, os.cpu_count() or 1), {"NUMBA_CACHE_DIR": cache})[0]
        warm = child(["compile"], max(1, os.cpu_count() or 1), {"NUMBA_CACHE_DIR": cache})[0]
        print("\n## first call of each kernel in a new process (seconds): empty cache / warm cache")
        for label in cold:
            print(f"{label:<24} {cold[label]:6.2f} / {warm[label]:5.2f}")
        kernels = [label for label in cold if not label.startswith("import")]
        total_cold, total_warm = sum(cold[k] for k in kernels), sum(warm[k] for k in kernels)
        print(f"{'all kernels':<24} {total_cold:6.2f} / {total_warm:5.2f}")
        results.update(compile_cold=total_cold, compile_warm=total_warm)
        warm_starts = [first_vector_seconds(env) for _ in range(repeats)]
        warm_no_scipy = [first_vector_seconds(env, no_scipy=True) for _ in range(repeats)]
    with tempfile.TemporaryDirectory() as cache:
        cold_start = first_vector_seconds(dict(os.environ, NUMBA_CACHE_DIR=cache))
    print("\n## a new process: `import transformer` -> first vector of all-MiniLM-L6-v2 (seconds)")
    print(f"warm kernel cache: median {median(warm_starts):.2f} of {repeats} (min {min(warm_starts):.2f}, "
          f"max {max(warm_starts):.2f});  empty cache: {cold_start:.2f}")
    print(f"warm cache, scipy hidden (a run-time-only install; Numba's first use imports scipy.linalg "
          f"when scipy is installed): median {median(warm_no_scipy):.2f} (min {min(warm_no_scipy):.2f})")
    results.update(first_vector_warm=median(warm_starts), first_vector_cold=cold_start,
                   first_vector_warm_no_scipy=median(warm_no_scipy))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds per shape (median)")
    parser.add_argument("--min-seconds", type=float, default=0.05, help="minimum time per round")
    parser.add_argument("--only", nargs="+", choices=["attention", "rows", "gemm", "startup"],
                        default=["attention", "rows", "gemm", "startup"])
    parser.add_argument("--no-gemm", action="store_true", help="skip bench_gemm.py's table")
    parser.add_argument("--json", type=Path, help="also write every row to this JSON file")
    parser.add_argument("--child", choices=["throughput", "compile"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "throughput":
        run_throughput(args.threads[0], args.tokens, args.repeats, args.min_seconds, args.only)
        return
    if args.child == "compile":
        run_compile()
        return

    print(f"# bench_kernels: load average {load_average():.2f} at start, {os.cpu_count()} CPUs")
    report = {"threads": {}, "gemm": {}}
    sections = [s for s in args.only if s in ("attention", "rows")]
    for threads in args.threads:
        if sections:
            arguments = ["throughput", "--tokens", *map(str, args.tokens), "--repeats", str(args.repeats),
                         "--min-seconds", str(args.min_seconds), "--only", *sections]
            rows = child(arguments, threads)
            print_rows(rows, threads)
            report["threads"][threads] = rows
        bench_gemm = gemm_benchmark() if "gemm" in args.only and not args.no_gemm else None
        if bench_gemm is not None:
            arguments = ["throughput", "--tokens", *map(str, args.tokens), "--repeats", str(args.repeats),
                         "--min-seconds", str(args.min_seconds)]
            gemm_rows = bench_gemm.child(arguments, threads)
            bench_gemm.print_throughput(gemm_rows)
            report["gemm"][threads] = gemm_rows
    if "startup" in args.only:
        report["startup"] = run_startup(args.repeats)
    print(f"\n# load average {load_average():.2f} at end")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
