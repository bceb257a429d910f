"""GEMM benchmark: `transformer.kernels.gemm` against `np.matmul` (OpenBLAS), same run.

    python benchmarks/bench_gemm.py                  # 2 threads, then 1; every shape
    python benchmarks/bench_gemm.py --threads 2 --tokens 128 512 --repeats 9
    python benchmarks/bench_gemm.py --threads 1 --clock cpu    # steadier on a busy machine

For every token count M (16 / 128 / 512 / 4096) and every linear layer of MiniLM
(384 -> 384, 384 -> 1152 fused QKV, 384 -> 1536, 1536 -> 384) and BERT-base (768 -> 768,
768 -> 2304, 768 -> 3072, 3072 -> 768) it times

    numpy:  np.matmul(x, w, out=o); o += b          (the NumPy path of a linear layer)
    gemm:   gemm(x, pack_weight(w), b, out=o)       (bias fused in the epilogue)

in alternating rounds (so both see the same machine load; with threads, each round after a
0.2 s pause so that OpenBLAS's spinning threads are asleep), and prints GFLOP/s and the
ratio of medians (> 1: gemm is faster). Each thread count runs in its own process with
OPENBLAS_NUM_THREADS and NUMBA_NUM_THREADS set, so both libraries get the same threads.

For the feed-forward's first half (FFN up + exact GELU) it also compares the fused epilogue
with the NumPy path (`transformer.model.gelu(x @ w + b)`) and with gemm followed by a separate
`bias_activation` pass.

With more than one thread it times the hand-off alone: `run_chunks` over empty chunks (the
persistent workers of `_jit`) against a ThreadPoolExecutor doing the same.

It also measures the cost of compilation in fresh processes: the first calls of `gemm`
(a small product, a threaded one, one with the GELU epilogue) with an empty Numba cache,
then the same calls with the cache warm.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TOKENS = [16, 128, 512, 4096]
SHAPES = [  # (name, K, N)
    ("MiniLM attention out", 384, 384),
    ("MiniLM fused QKV", 384, 1152),
    ("MiniLM FFN up", 384, 1536),
    ("MiniLM FFN down", 1536, 384),
    ("BERT attention out", 768, 768),
    ("BERT fused QKV", 768, 2304),
    ("BERT FFN up", 768, 3072),
    ("BERT FFN down", 3072, 768),
]


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


# After a call, OpenBLAS's worker threads spin (yielding) for about 0.1 s before they sleep;
# a round of gemm right after a round of np.matmul would share its cores with them. With
# more than one thread, each round starts after this pause (not timed).
SETTLE_SECONDS = 0.2


def time_rounds(functions, repeats, min_seconds, clock=time.perf_counter, settle=0.0):
    """Median seconds per call of each function, timed in interleaved rounds."""
    for function in functions:
        function()  # warm up (and compile)
    samples = [[] for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            time.sleep(settle)
            calls = 0
            start = clock()
            while True:
                function()
                calls += 1
                elapsed = clock() - start
                if elapsed >= min_seconds:
                    break
            samples[index].append(elapsed / calls)
    return [median(s) for s in samples]


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def cpu_seconds_busy():
    """Seconds all CPUs spent busy since boot (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------
# Child process: one thread count.


def run_throughput(threads, tokens, repeats, min_seconds, clock):
    import numpy as np

    from transformer.kernels.gemm import gemm, pack_weight

    import numba

    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for m in tokens:
        for name, k, n in SHAPES:
            x = rng.standard_normal((m, k), dtype=np.float32)
            weight = rng.standard_normal((k, n), dtype=np.float32)
            bias = rng.standard_normal(n, dtype=np.float32)
            packed = pack_weight(weight)
            out_numpy = np.empty((m, n), dtype=np.float32)
            out_gemm = np.empty((m, n), dtype=np.float32)

            def numpy_linear():
                np.matmul(x, weight, out=out_numpy)
                np.add(out_numpy, bias, out=out_numpy)

            def gemm_linear():
                gemm(x, packed, bias, out=out_gemm)

            clock_function = time.process_time if clock == "cpu" else time.perf_counter
            settle = SETTLE_SECONDS if threads > 1 else 0.0
            seconds_numpy, seconds_gemm = time_rounds([numpy_linear, gemm_linear], repeats, min_seconds, clock_function, settle)
            flops = 2.0 * m * k * n
            row = {
                "threads": threads, "clock": clock, "M": m, "name": name, "K": k, "N": n,
                "numpy_gflops": flops / seconds_numpy / 1e9, "gemm_gflops": flops / seconds_gemm / 1e9,
                "ratio": seconds_numpy / seconds_gemm,
                "max_abs_diff": float(np.abs(out_gemm - out_numpy).max()),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def run_epilogue(threads, tokens, repeats, min_seconds, clock):
    """The feed-forward's first half, x @ w + b then GELU, three ways."""
    import numpy as np

    from transformer.kernels.activations import bias_activation
    from transformer.kernels.gemm import gemm, pack_weight
    from transformer.model import gelu

    import numba

    numba.set_num_threads(threads)
    clock_function = time.process_time if clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(0)
    for m in tokens:
        for name, k, n in SHAPES:
            if "FFN up" not in name:
                continue
            x = rng.standard_normal((m, k), dtype=np.float32)
            weight = rng.standard_normal((k, n), dtype=np.float32) * np.float32(k ** -0.5)
            bias = rng.standard_normal(n, dtype=np.float32)
            packed = pack_weight(weight)
            out = np.empty((m, n), dtype=np.float32)
            seconds = time_rounds([
                lambda: gelu(x @ weight + bias),  # the NumPy path
                lambda: bias_activation(gemm(x, packed, out=out), bias, "gelu", out=out),  # two kernels
                lambda: gemm(x, packed, bias, activation="gelu", out=out),  # fused epilogue
            ], repeats, min_seconds, clock_function, SETTLE_SECONDS if threads > 1 else 0.0)
            row = {"threads": threads, "clock": clock, "M": m, "name": name, "K": k, "N": n,
                   "numpy": seconds[0], "separate": seconds[1], "fused": seconds[2]}
            print(json.dumps(row), flush=True)


def run_compile(threads):
    """Seconds for the first call of each GEMM kernel in this (fresh) process."""
    start = time.perf_counter()
    import numpy as np

    from transformer.kernels.gemm import gemm, pack_weight

    import numba

    numba.set_num_threads(threads)
    timings = {"import": time.perf_counter() - start}
    rng = np.random.default_rng(0)
    small = rng.standard_normal((4, 8), dtype=np.float32), pack_weight(rng.standard_normal((8, 16), dtype=np.float32))
    large = rng.standard_normal((256, 256), dtype=np.float32), pack_weight(rng.standard_normal((256, 256), dtype=np.float32))
    for label, (x, packed), activation in [
        ("first product", small, None),
        ("threaded product", large, None),
        ("+ gelu epilogue", large, "gelu"),
    ]:
        start = time.perf_counter()
        gemm(x, packed, activation=activation)
        timings[label] = time.perf_counter() - start
    print(json.dumps(timings), flush=True)


def run_handoff(threads, repeats, min_seconds):
    """Microseconds per `run_chunks` call over `threads` chunks of no work: the cost of
    handing work to the other threads and waiting for them, against a ThreadPoolExecutor."""
    import numpy as np

    from transformer.kernels import _jit

    import numba

    numba.set_num_threads(threads)

    @_jit.jit
    def nothing(values, first, stop):
        for i in range(first, stop):
            values[i] = 0

    values = np.zeros(threads, dtype=np.float32)
    bounds = list(range(threads + 1))
    workers, pool = time_rounds([lambda: _jit.run_chunks(nothing, bounds, values),
                                 lambda: _jit._run_on_pool(nothing, bounds, (values,))], repeats, min_seconds)
    print(json.dumps({"threads": threads, "run_chunks_us": workers * 1e6, "thread_pool_us": pool * 1e6}), flush=True)


# ---------------------------------------------------------------------------------------
# Parent: spawn the children, print the tables.


def child(arguments, threads, extra_env=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), NUMBA_THREADING_LAYER=os.environ.get("NUMBA_THREADING_LAYER", "workqueue"))
    env.update(extra_env or {})
    command = [sys.executable, __file__, "--child", *arguments, "--threads", str(threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def print_throughput(rows):
    print(f"\n## {rows[0]['threads']} thread(s), {rows[0]['clock']} clock: GFLOP/s of x @ w + b, ratio = numpy time / gemm time")
    print(f"{'M':>5}  {'layer':<22} {'K->N':>11}  {'numpy':>7}  {'gemm':>7}  {'ratio':>5}")
    for row in rows:
        shape = f"{row['K']}->{row['N']}"
        print(f"{row['M']:>5}  {row['name']:<22} {shape:>11}  {row['numpy_gflops']:7.1f}  {row['gemm_gflops']:7.1f}  {row['ratio']:5.2f}")
    for m in sorted({row["M"] for row in rows}):
        ratios = [row["ratio"] for row in rows if row["M"] == m]
        print(f"M = {m:>4}: median ratio {median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    print(f"all shapes: median ratio {median([row['ratio'] for row in rows]):.2f}")


def print_epilogue(rows):
    print(f"\n## {rows[0]['threads']} thread(s): x @ w + b then exact GELU, milliseconds; speed-up of the fused epilogue")
    print(f"{'M':>5}  {'layer':<16} {'K->N':>9}  {'numpy':>8}  {'gemm+pass':>9}  {'fused':>8}  {'vs numpy':>8}  {'vs pass':>7}")
    for row in rows:
        shape = f"{row['K']}->{row['N']}"
        print(f"{row['M']:>5}  {row['name']:<16} {shape:>9}  {row['numpy'] * 1e3:8.3f}  {row['separate'] * 1e3:9.3f}  "
              f"{row['fused'] * 1e3:8.3f}  {row['numpy'] / row['fused']:8.2f}  {row['separate'] / row['fused']:7.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds per shape (median)")
    parser.add_argument("--min-seconds", type=float, default=0.05, help="minimum time per round")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time, steadier on a shared machine (meaningful with 1 thread)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")
    parser.add_argument("--child", choices=["throughput", "epilogue", "compile", "handoff"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "throughput":
        run_throughput(args.threads[0], args.tokens, args.repeats, args.min_seconds, args.clock)
        return
    if args.child == "epilogue":
        run_epilogue(args.threads[0], args.tokens, args.repeats, args.min_seconds, args.clock)
        return
    if args.child == "compile":
        run_compile(args.threads[0])
        return
    if args.child == "handoff":
        run_handoff(args.threads[0], args.repeats, args.min_seconds)
        return

    print(f"# bench_gemm: load average {load_average():.2f} at start, {os.cpu_count()} CPUs")
    started, busy_at_start, ours_at_start = time.perf_counter(), cpu_seconds_busy(), children_cpu_seconds()
    if not args.no_compile:
        with tempfile.TemporaryDirectory() as cache:
            threads = max(args.threads)
            cold = child(["compile"], threads, {"NUMBA_CACHE_DIR": cache})[0]
            warm = child(["compile"], threads, {"NUMBA_CACHE_DIR": cache})[0]
        print("\n## first calls in a new process (seconds): empty cache / warm cache")
        for label in cold:
            print(f"{label:<22} {cold[label]:6.2f} / {warm[label]:5.2f}")
        compiled = [label for label in cold if label != "import"]
        print(f"{'total compile':<22} {sum(cold[k] for k in compiled):6.2f} / {sum(warm[k] for k in compiled):5.2f}")
    for threads in [t for t in args.threads if t > 1]:
        handoff = child(["handoff", "--repeats", str(args.repeats), "--min-seconds", str(args.min_seconds)], threads)[0]
        print(f"\n## hand-off, {threads} threads: run_chunks over {threads} empty chunks {handoff['run_chunks_us']:.1f} us "
              f"(persistent spinning workers), ThreadPoolExecutor {handoff['thread_pool_us']:.1f} us")
    for threads in args.threads:
        arguments = ["throughput", "--tokens", *map(str, args.tokens), "--repeats", str(args.repeats),
                     "--min-seconds", str(args.min_seconds), "--clock", args.clock]
        print_throughput(child(arguments, threads))
        arguments[0] = "epilogue"
        print_epilogue(child(arguments, threads))
    print(f"\n# load average {load_average():.2f} at end")
    busy_at_end = cpu_seconds_busy()
    if busy_at_start is not None and busy_at_end is not None:
        others = (busy_at_end - busy_at_start) - (children_cpu_seconds() - ours_at_start)
        print(f"# other processes kept {max(0.0, others) / (time.perf_counter() - started):.2f} CPUs busy "
              f"on average during the run (of {os.cpu_count()})")


if __name__ == "__main__":
    main()
