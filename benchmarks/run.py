"""End-to-end benchmark: texts in, unit sentence vectors out, this project against its peers.

    make bench                                  # the full run (~30-45 min on 2 busy cores)
    .venv/bin/python benchmarks/run.py          # the same
    .venv/bin/python benchmarks/run.py --quick  # a small subset, fewer repeats (a few minutes)
    .venv/bin/python benchmarks/run.py --models minilm --systems transformer-numba onnxruntime

Systems (see benchmarks/peers.py): this project on its numba and numpy backends,
sentence-transformers on PyTorch CPU, ONNX Runtime (exported, graph-optimized) + Rust
tokenizers. Every system runs with 2 threads, fp32, batch size 32. Models: all-MiniLM-L6-v2
and a BERT-base-sized checkpoint with random weights (768 wide, 12 layers; written once into
weights/bench/bert-base-random by transformers).

What is measured, each system in its own subprocess (one per system per round):

  corpus      texts/s over benchmarks/data/corpus.txt (3000 public-domain texts, 3-247
              tokens), tokenization and pooling included, after a warm-up on 64 other texts.
              Vectors are checked against this project's numba backend (min cosine).
  memory      peak resident memory (ru_maxrss) of that process after the corpus job:
              import + model + warm-up + corpus.
  latency     batch 1, end to end, a 16-token and a 128-token text. Every system's process
              is alive at once and they take turns in short bursts (see LATENCY_BURSTS), so a
              ratio compares calls made seconds apart, not minutes: the host's speed drifts.
  forward     the model alone on 32 x 128 real tokens: GFLOP/s (GEMMs + attention), and for
              this project, in the same process, np.matmul's GFLOP/s on the same GEMM shapes.
  startup     a new process, from its first `import` to the first vector (the Numba kernel
              cache warm, and empty: NUMBA_CACHE_DIR pointed at a new folder).

The 2 cores are shared, so systems run in interleaved rounds (A B C D, B C D A, ...) and
ratios are taken within a round (for latency: within a burst), then the median over rounds
(bursts) is reported. A system that is
missing or fails is reported as skipped with the reason, never estimated.

Writes benchmarks/results/e2e.json (everything, per round), e2e.md (the tables) and e2e.png.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402  (benchmarks/peers.py, beside this file)

CORPUS = HERE / "data" / "corpus.txt"
RESULTS = HERE / "results"
THREADS = 2
OPENBLAS_SETTLE_S = 0.3  # pause after np.matmul before timing the model (see worker)
MINILM = ROOT / "weights" / "all-MiniLM-L6-v2"
BERT_BASE = ROOT / "weights" / "bench" / "bert-base-random"
SHORT = {"transformer-numba": "ours\nnumba", "transformer-numpy": "ours\nnumpy",
         "sentence-transformers": "sentence-\ntransformers", "onnxruntime": "ONNX Runtime\n+ tokenizers"}
TARGET_PEERS = {"sentence-transformers": 1.3, "onnxruntime": 1.1}  # corpus throughput targets
OURS = "transformer-numba"
LABELS = {"transformer-numba": "this project (numba)", "transformer-numpy": "this project (numpy)",
          "sentence-transformers": "sentence-transformers (PyTorch)", "onnxruntime": "ONNX Runtime + tokenizers"}

# Per model: which corpus lines (every nth) each system embeds, and how many calls each
# measurement makes ("latency": calls of the 16- and 128-token texts per burst). BERT-base does 8x MiniLM's work per token, and the numpy backend is the
# slow readable path: they get evenly spaced subsets (the corpus is shuffled, so a subset has
# the same length mix) to keep the full run well under an hour. A smaller subset pads more
# (fewer texts of similar length share a sorted batch), which favours this project's unpadded
# kernels: the report prints each subset's padding overhead, and the subsets stay large.
PLANS = {
    "full": {
        "rounds": 3, "startup_warm": 5, "startup_cold": 2, "latency_bursts": 9,
        "minilm": {"every": 1, "latency": (20, 10), "forward": 3,
                   "numpy": {"every": 15, "latency": (6, 3), "forward": 1}},
        "bert-base": {"every": 3, "latency": (10, 4), "forward": 1,
                      "numpy": {"every": 150, "latency": (2, 1), "forward": 0}},
    },
    "quick": {
        "rounds": 2, "startup_warm": 2, "startup_cold": 1, "latency_bursts": 3,
        "minilm": {"every": 20, "latency": (10, 5), "forward": 1,
                   "numpy": {"every": 60, "latency": (4, 2), "forward": 1}},
        "bert-base": {"every": 20, "latency": (5, 2), "forward": 1,
                      "numpy": {"every": 300, "latency": (1, 1), "forward": 0}},
    },
}


def system_plan(plan_model, system):
    """The subset and call counts for `system`: the numpy backend has its own, smaller ones."""
    if system == "transformer-numpy":
        return plan_model["numpy"]
    return {key: value for key, value in plan_model.items() if key != "numpy"}


def median(values):
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def rotated(items, turn):
    """items started at position turn % len(items): the interleaving order of round `turn`
    (A B C D, B C D A, ...)."""
    shift = turn % len(items)
    return items[shift:] + items[:shift]


def every_nth(n):
    """Words for the subset corpus[::n]."""
    return "every line" if n == 1 else f"every {n}{'st' if n % 10 == 1 else 'nd' if n % 10 == 2 else 'th'} line"


def read_corpus():
    return CORPUS.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------------------
# FLOP counting for the forward-only measurement.


def gemm_shapes(config, tokens):
    """The (M, K, N) of every GEMM one forward pass makes over `tokens` real tokens."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    layer = [(tokens, hidden, 3 * hidden), (tokens, hidden, hidden), (tokens, hidden, inner), (tokens, inner, hidden)]
    return layer * config["num_hidden_layers"]


def forward_flops(config, batch, seq):
    """(GEMM FLOPs, attention FLOPs) of one forward pass on [batch, seq] real tokens."""
    gemm = sum(2 * m * k * n for m, k, n in gemm_shapes(config, batch * seq))
    attention = 4 * batch * seq * seq * config["hidden_size"] * config["num_hidden_layers"]  # QK^T and PV
    return gemm, attention


# ---------------------------------------------------------------------------------------
# Worker: one system, one model, in its own process.


def cpu_snapshot():
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall seconds), Linux.

    The difference of two snapshots says how much of the cores other processes took meanwhile.
    """
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as file:
            values = [int(v) for v in file.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()  # fields from the 3rd on
        busy = sum(values) - values[3] - values[4]
        own = int(fields[11]) + int(fields[12])  # utime + stime, all threads
        return busy / ticks, own / ticks, time.perf_counter()
    except (OSError, ValueError, IndexError):
        return None


def others_cores(before, after):
    """Cores' worth of CPU that other processes (and the hypervisor) used between two snapshots."""
    if before is None or after is None:
        return None
    wall = after[2] - before[2]
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall) if wall > 0 else None


def latency_calls(runner, texts, calls):
    """Batch-1 calls of the 16- and 128-token texts, alternating so both see the same load.

    -> {"16": [seconds, ...], "128": [...], "others_cores": ...}
    """
    samples = {"16": [], "128": []}
    snapshot = cpu_snapshot()
    for i in range(max(calls)):
        for key, text, count in zip(("16", "128"), texts, calls):
            if i < count:
                t = time.perf_counter()
                runner.encode([text])
                samples[key].append(time.perf_counter() - t)
    samples["others_cores"] = others_cores(snapshot, cpu_snapshot())
    return samples


def latency_server(spec):
    """One system's side of the latency bursts: load, warm up, print {"ready": ...}; then for
    each line {"calls": [n16, n128]} on stdin make those calls and print their times."""
    runner = peers.load(spec["system"], spec["model_dir"], THREADS, spec.get("onnx_path"))
    corpus = read_corpus()
    runner.encode(corpus[1::7][:64])  # compile / cache load, first-call allocations
    texts = spec["latency_texts"]
    latency_calls(runner, texts, (3, 3))
    print(json.dumps({"ready": runner.description}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(latency_calls(runner, texts, request["calls"])), flush=True)


def worker(spec):
    """Run the measurements in `spec` for one system; return a dict (printed as JSON)."""
    import numpy as np

    result = {"system": spec["system"], "model": spec["model"]}
    start = time.perf_counter()
    runner = peers.load(spec["system"], spec["model_dir"], THREADS, spec.get("onnx_path"))
    result["load_s"] = time.perf_counter() - start
    result["description"] = runner.description
    corpus = read_corpus()
    texts = corpus[::spec["every"]]
    warm = [t for i, t in enumerate(corpus) if i % spec["every"]][:64] or corpus[:64]

    runner.encode(warm)  # compile / cache load, first-call allocations
    snapshot = cpu_snapshot()
    start = time.perf_counter()
    vectors = runner.encode(texts)
    seconds = time.perf_counter() - start
    result.update(corpus_texts=len(texts), corpus_s=seconds, texts_per_s=len(texts) / seconds,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  others_cores=others_cores(snapshot, cpu_snapshot()))
    if vectors.dtype != np.float32 or vectors.shape[0] != len(texts):
        raise RuntimeError(f"{spec['system']} returned {vectors.dtype} {vectors.shape}; expected float32 [{len(texts)}, dim]")
    result["norm_max_error"] = float(np.abs(np.linalg.norm(vectors, axis=1) - 1).max())
    if spec.get("vectors_path"):
        np.save(spec["vectors_path"], vectors)

    # The model alone at 32 x 128, and np.matmul on the same GEMM shapes (project only).
    if spec["forward_calls"] == 0:
        return result
    input_ids = np.load(spec["forward_ids"])
    attention_mask = np.ones_like(input_ids)
    config = json.loads((Path(spec["model_dir"]) / "config.json").read_text())
    gemm_flops, attention_flops = forward_flops(config, *input_ids.shape)
    runner.forward(input_ids[:4], attention_mask[:4])  # warm-up
    matmul = None
    if spec["system"].startswith("transformer-"):
        shapes = gemm_shapes(config, input_ids.size)
        rng = np.random.default_rng(0)
        operands = {(m, k, n): (rng.standard_normal((m, k), dtype=np.float32),
                                rng.standard_normal((k, n), dtype=np.float32),
                                np.empty((m, n), dtype=np.float32)) for m, k, n in set(shapes)}

        def matmul():
            for shape in shapes:
                a, b, out = operands[shape]
                np.matmul(a, b, out=out)

        matmul()
    forward_s, matmul_s = [], []
    snapshot = cpu_snapshot()
    for _ in range(spec["forward_calls"]):
        if matmul is not None:
            # OpenBLAS's threads busy-wait for a while after np.matmul returns; they would
            # share the 2 cores with the model's own threads if it ran straight after.
            time.sleep(OPENBLAS_SETTLE_S)
        t = time.perf_counter()
        runner.forward(input_ids, attention_mask)
        forward_s.append(time.perf_counter() - t)
        if matmul is not None:
            t = time.perf_counter()
            matmul()
            matmul_s.append(time.perf_counter() - t)
    result["forward"] = {"batch": int(input_ids.shape[0]), "seq": int(input_ids.shape[1]),
                         "gemm_gflop": gemm_flops / 1e9, "attention_gflop": attention_flops / 1e9,
                         "ms": 1e3 * median(forward_s),
                         "gflops": (gemm_flops + attention_flops) / median(forward_s) / 1e9,
                         "others_cores": others_cores(snapshot, cpu_snapshot())}
    if matmul_s:
        result["forward"]["matmul_ms"] = 1e3 * median(matmul_s)
        result["forward"]["matmul_gflops"] = gemm_flops / median(matmul_s) / 1e9
        result["forward"]["fraction_of_matmul"] = result["forward"]["gflops"] / result["forward"]["matmul_gflops"]
    return result


FIRST_VECTOR = """
import time
start = time.perf_counter()
import json, sys
sys.path.insert(0, {here!r})
import peers
runner = peers.load({system!r}, {model_dir!r}, {threads}, {onnx_path!r})
vector = runner.encode(["A man is eating food."])
assert vector.shape[0] == 1
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


# ---------------------------------------------------------------------------------------
# Parent.


def worker_env(extra=None):
    threads = str(THREADS)
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               NUMBA_NUM_THREADS=threads, RAYON_NUM_THREADS=threads, RAYON_RS_NUM_CPUS=threads,
               TOKENIZERS_PARALLELISM="true", NUMBA_THREADING_LAYER="workqueue",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.update(extra or {})
    return env


def run_child(arguments, env=None, timeout=3600):
    """Run a python child; return (parsed last JSON line or None, error text or None, wall seconds)."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *arguments], env=env or worker_env(), capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s", time.perf_counter() - start
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return None, " / ".join(tail) or f"exit code {done.returncode}", wall
    return json.loads(lines[-1]), None, wall


def run_worker(spec):
    result, error, wall = run_child([__file__, "--worker", json.dumps(spec)])
    if result is None:
        return {"skipped": f"failed: {error}"}
    return result


LATENCY_SETTLE_S = 0.3  # pause before each burst: the previous system's spinning threads go idle


def run_latency_bursts(entry, systems, plan, plan_model, texts, log):
    """Batch-1 latency with every system's process alive at once, taking turns.

    Each system's server (`latency_server`) loads its model and warms up; then, burst after
    burst (the order rotating), each in turn makes its calls while the others wait on a pipe.
    A 16 ms call measured now and one measured ten minutes later on a shared host can differ
    by 20%; within a burst they are seconds apart. -> {system: {"bursts": [{"16": ms, "128":
    ms, "others_cores": ...}, ...]} or {"skipped": reason}}
    """
    servers, results = {}, {}
    errors = {system: tempfile.TemporaryFile(mode="w+") for system in systems}  # not a pipe: it could fill up
    for system in systems:
        if system == "onnxruntime" and entry["onnx"] is None:
            results[system] = {"skipped": entry["onnx_note"] or "no ONNX model"}
            continue
        spec = {"system": system, "model_dir": entry["dir"], "onnx_path": entry["onnx"], "latency_texts": texts}
        servers[system] = subprocess.Popen([sys.executable, __file__, "--latency-server", json.dumps(spec)],
                                           env=worker_env(), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=errors[system], text=True)

    def reply(system):
        """The server's next JSON line, or None (then it is stopped and marked skipped)."""
        server = servers[system]
        while True:
            line = server.stdout.readline()
            if not line:
                server.kill()
                server.wait()
                errors[system].seek(0)
                tail = errors[system].read().strip().splitlines()[-3:]
                results[system] = {"skipped": "failed: " + (" / ".join(tail) or f"exit code {server.wait()}")}
                del servers[system]
                return None
            if line.startswith("{"):
                return json.loads(line)

    for system in list(servers):  # one at a time: loading while another warms up is fine
        if reply(system) is not None:
            results[system] = {"bursts": []}
    for burst in range(plan["latency_bursts"]):
        order = [s for s in rotated(systems, burst) if s in servers]
        for system in order:
            time.sleep(LATENCY_SETTLE_S)
            servers[system].stdin.write(json.dumps({"calls": system_plan(plan_model, system)["latency"]}) + "\n")
            servers[system].stdin.flush()
            samples = reply(system)
            if samples is None:
                continue
            results[system]["bursts"].append({"16": 1e3 * median(samples["16"]), "128": 1e3 * median(samples["128"]),
                                              "others_cores": samples["others_cores"]})
        log(f"  latency burst {burst + 1}/{plan['latency_bursts']}: " + ", ".join(
            f"{s} {r['bursts'][-1]['16']:.1f}/{r['bursts'][-1]['128']:.1f} ms" for s, r in results.items()
            if r.get("bursts")))
    for server in servers.values():
        server.stdin.close()
        server.wait(timeout=60)
    for file in errors.values():
        file.close()
    return results


def machine_description():
    import numpy

    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = float("nan")
    blas = numpy.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    versions = {}
    for package in ("numpy", "numba", "safetensors", "torch", "transformers", "tokenizers", "sentence-transformers",
                    "onnxruntime", "onnx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    flags = ""
    try:
        cpu_flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in cpu_flags)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cpu_flags": flags, "logical_cpus": os.cpu_count(), "memory_gib": round(memory_gib, 1),
        "os": platform.platform(), "python": platform.python_version(), "threads": THREADS,
        "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(), "versions": versions,
    }


def source_state():
    """The commit and a digest of uncommitted changes under kernels/ and transformer/ (what was measured)."""
    import hashlib

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "kernels", "transformer"], cwd=ROOT, capture_output=True,
                              text=True).stdout
    except OSError:
        return None
    return head + (f"+uncommitted:{hashlib.sha1(diff.encode()).hexdigest()[:8]}" if diff else "")


def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def prepare_models(models, systems, workdir, log):
    """{model: {"dir": path, "onnx": path or None, "onnx_note": str, "skipped": reason or None}}."""
    prepared = {}
    for model in models:
        entry = {"dir": None, "onnx": None, "onnx_note": None, "skipped": None}
        if model == "minilm":
            if (MINILM / "model.safetensors").is_file():
                entry["dir"] = str(MINILM)
            else:
                entry["skipped"] = f"{MINILM} missing: run `make weights`"
        else:
            code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import peers, json; "
                    f"print(json.dumps({{'dir': str(peers.make_bert_base({str(BERT_BASE)!r}, {str(MINILM)!r}))}}))")
            result, error, wall = run_child(["-c", code])
            if result is None:
                entry["skipped"] = f"could not write the BERT-base checkpoint: {error}"
            else:
                entry["dir"] = result["dir"]
        if entry["dir"] and "onnxruntime" in systems:
            out = Path(workdir) / f"onnx-{model}"
            code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import peers, json; "
                    f"path, counts, seconds = peers.export_onnx({entry['dir']!r}, {str(out)!r}); "
                    f"print(json.dumps({{'path': str(path), 'fused': counts, 'seconds': seconds}}))")
            result, error, wall = run_child(["-c", code])
            if result is None:
                entry["onnx_note"] = f"export failed: {error}"
            else:
                entry["onnx"] = result["path"]
                entry["onnx_note"] = (f"exported + optimized in {result['seconds']:.1f} s; fused ops: "
                                      + ", ".join(f"{op} x{n}" for op, n in result["fused"].items()))
        log(f"  {model}: {entry['dir'] or entry['skipped']}" + (f"; onnx: {entry['onnx_note']}" if entry["onnx_note"] else ""))
        prepared[model] = entry
    return prepared


def padding_overhead(token_counts, texts, batch_size=32):
    """Extra token positions that padded batches compute, sorted by length as the systems sort:
    sum over batches of (batch rows x longest row) / real tokens - 1."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    padded = 0
    for start in range(0, len(order), batch_size):
        batch = [token_counts[i] for i in order[start:start + batch_size]]
        padded += max(batch) * len(batch)
    return padded / sum(token_counts) - 1


def token_counts(corpus):
    """all-MiniLM-L6-v2 tokens of each text ([CLS] and [SEP] included), untruncated."""
    from transformer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(MINILM)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return [len(e.ids) for e in tokenizer.encode_batch(corpus)]


def pick_texts(corpus):
    """(a 16-token text, a 128-token text, int64 ids [32, 128] of real tokens) from the corpus."""
    import numpy as np

    from transformer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(MINILM)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    counts = [len(e.ids) for e in tokenizer.encode_batch(corpus)]
    short = next(t for t, n in zip(corpus, counts) if n == 16)
    long = next((t for t, n in zip(corpus, counts) if n == 128), None)
    if long is None:  # cut a longer text at its 126th token (+ [CLS] and [SEP])
        text = next(t for t, n in zip(corpus, counts) if n > 128)
        end = tokenizer.encode(text).offsets[126][1]
        long = text[:end]
    longest = [t for t, n in zip(corpus, counts) if n >= 128][:32]
    batch = tokenizer(longest, padding=True, truncation=True, max_length=128)
    ids = batch["input_ids"].astype(np.int64)
    assert ids.shape == (32, 128) and batch["attention_mask"].all()
    return short, long, ids


def run_startup(models, prepared, systems, plan, log):
    """A new process's import -> first vector, interleaved over systems; the Numba cache warm and empty."""
    rows = {}
    for model in models:
        entry = prepared[model]
        if entry["skipped"]:
            continue
        variants = [(s, "warm") for s in systems]
        if OURS in systems:
            variants.append((OURS, "cold"))
        samples = {variant: [] for variant in variants}
        errors = {}
        with tempfile.TemporaryDirectory() as warm_cache:
            # A cache of our own for the "warm" runs, filled first, so neither run depends on
            # what the checkout's __pycache__ holds.
            fill = FIRST_VECTOR.format(here=str(HERE), system=OURS, model_dir=entry["dir"], threads=THREADS,
                                       onnx_path=None)
            if OURS in systems:
                run_child(["-c", fill], env=worker_env({"NUMBA_CACHE_DIR": warm_cache}))
            for round_index in range(max(plan["startup_warm"], plan["startup_cold"])):
                for system, cache in rotated(variants, round_index):
                    if (system, cache) in errors:
                        continue
                    if round_index >= (plan["startup_warm"] if cache == "warm" else plan["startup_cold"]):
                        continue
                    code = FIRST_VECTOR.format(here=str(HERE), system=system, model_dir=entry["dir"],
                                               threads=THREADS, onnx_path=entry["onnx"])
                    with tempfile.TemporaryDirectory() as cold_cache:
                        env = worker_env({"NUMBA_CACHE_DIR": warm_cache if cache == "warm" else cold_cache})
                        result, error, wall = run_child(["-c", code], env=env, timeout=600)
                    if result is None:
                        errors[(system, cache)] = error
                    else:
                        samples[(system, cache)].append({"first_vector_s": result["seconds"], "process_s": wall})
        for system, cache in variants:
            key = f"{system}/{cache}"
            if (system, cache) in errors:
                rows.setdefault(model, {})[key] = {"skipped": f"failed: {errors[(system, cache)]}"}
                continue
            values = samples[(system, cache)]
            rows.setdefault(model, {})[key] = {
                "first_vector_s": median([v["first_vector_s"] for v in values]),
                "process_s": median([v["process_s"] for v in values]), "runs": len(values),
                "all_first_vector_s": [round(v["first_vector_s"], 3) for v in values]}
            log(f"  startup {model} {key}: {rows[model][key]}")
    return rows


def cosine_check(paths, log):
    """{system: min cosine of its vectors against this project's numba backend's} (same texts)."""
    import numpy as np

    if OURS not in paths:
        return {}
    reference = np.load(paths[OURS])
    checks = {}
    for system, path in paths.items():
        vectors = np.load(path)
        if vectors.shape != reference.shape:
            continue  # a different subset (the numpy backend on fewer texts)
        cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        checks[system] = {"min_cosine": float(cosine.min()), "max_abs_diff": float(np.abs(vectors - reference).max())}
    return checks


def numpy_cosine_check(ours_path, numpy_path, every_ours, every_numpy):
    """The numpy backend's vectors (a coarser subset) against the numba backend's on the same texts."""
    import numpy as np

    if every_numpy % every_ours:
        return None
    reference = np.load(ours_path)[:: every_numpy // every_ours]
    vectors = np.load(numpy_path)
    if reference.shape != vectors.shape:
        return None
    cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    return {"min_cosine": float(cosine.min()), "max_abs_diff": float(np.abs(vectors - reference).max())}


NOISY_CORES = 0.25  # a measurement during which other processes took more than this is set aside


def others_during(run, metric):
    """Cores' worth of CPU other processes took during one measurement ("corpus", "latency", "forward")."""
    if metric == "corpus":
        return run.get("others_cores")
    if metric == "latency":
        return run.get("latency_others_cores")
    return run.get("forward", {}).get("others_cores")


def clean(items, metric):
    """(the items measured while others took <= NOISY_CORES, or all items when none was; clean count).

    items: worker results, or (ours, peer) pairs of them (a pair is clean when both are).
    """
    kept = [item for item in items
            if all((others_during(run, metric) or 0.0) <= NOISY_CORES for run in (item if isinstance(item, tuple) else (item,)))]
    return (kept or items), len(kept)


def latency_summary(latency, systems):
    """From the latency bursts: {system: (ms 16, ms 128, clean bursts)} and {peer: (ratio 16,
    ratio 128, clean bursts, bursts)}, medians over the bursts in which others took at most
    NOISY_CORES (all bursts when there is none); a ratio is ours / the peer's within a burst."""
    def clean_bursts(*runs):
        bursts = list(zip(*[run["bursts"] for run in runs]))
        kept = [b for b in bursts if all((x["others_cores"] or 0.0) <= NOISY_CORES for x in b)]
        return (kept or bursts), len(kept), len(bursts)

    usable = {s: run for s, run in latency.items() if run.get("bursts")}
    per_system, per_peer = {}, {}
    for system, run in usable.items():
        bursts, kept, _ = clean_bursts(run)
        per_system[system] = (median([b[0]["16"] for b in bursts]), median([b[0]["128"] for b in bursts]), kept)
    for peer in systems:
        if peer != OURS and peer in usable and OURS in usable:
            bursts, kept, total = clean_bursts(usable[OURS], usable[peer])
            per_peer[peer] = (median([o["16"] / p["16"] for o, p in bursts]),
                              median([o["128"] / p["128"] for o, p in bursts]), kept, total)
    return per_system, per_peer


def summarize(model, rounds, systems, latency=None):
    """Medians over rounds, and medians of within-round ratios against this project's numba backend.

    Each measurement uses the rounds in which other processes took at most NOISY_CORES of the
    machine while it ran (all rounds when there is none); the counts are kept beside it.
    Latency comes from the bursts of `run_latency_bursts` (`latency`); reports written before
    those existed measured it inside the rounds.
    """
    latency_systems, latency_peers = latency_summary(latency, systems) if latency else ({}, {})
    summary = {}
    for system in systems:
        runs = [r[system] for r in rounds if system in r and "skipped" not in r[system]]
        if not runs:
            reasons = [r[system]["skipped"] for r in rounds if system in r]
            summary[system] = {"skipped": reasons[0] if reasons else "not run"}
            continue
        corpus_runs, corpus_clean = clean(runs, "corpus")
        latency_runs, latency_clean = clean(runs, "latency") if not latency else (None, None)
        forward_runs, forward_clean = clean([r for r in runs if "forward" in r], "forward")
        if latency:
            latency_16, latency_128, latency_clean = latency_systems.get(system, (None, None, 0))
        else:
            latency_16 = median([r["latency_ms"]["16"] for r in latency_runs])
            latency_128 = median([r["latency_ms"]["128"] for r in latency_runs])
        summary[system] = {
            "rounds": len(runs), "corpus_texts": runs[0]["corpus_texts"],
            "clean_rounds": {"corpus": corpus_clean, "latency": latency_clean, "forward": forward_clean},
            "texts_per_s": median([r["texts_per_s"] for r in corpus_runs]),
            "latency_16_ms": latency_16, "latency_128_ms": latency_128,
            "forward_ms": median([r["forward"]["ms"] for r in forward_runs]),
            "forward_gflops": median([r["forward"]["gflops"] for r in forward_runs]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
            "load_s": median([r["load_s"] for r in runs]),
            "others_cores": median([r["others_cores"] for r in runs if r.get("others_cores") is not None]),
            "description": runs[0]["description"],
        }
        if forward_runs and "matmul_gflops" in forward_runs[0]["forward"]:
            summary[system]["matmul_gflops"] = median([r["forward"]["matmul_gflops"] for r in forward_runs])
            summary[system]["fraction_of_matmul"] = median([r["forward"]["fraction_of_matmul"] for r in forward_runs])
    ratios = {}
    for peer in systems:
        if peer == OURS:
            continue
        pairs = [(r[OURS], r[peer]) for r in rounds if OURS in r and peer in r
                 and "skipped" not in r[OURS] and "skipped" not in r[peer]]
        if not pairs:
            continue
        same_texts = pairs[0][0]["corpus_texts"] == pairs[0][1]["corpus_texts"]
        corpus_pairs, corpus_clean = clean(pairs, "corpus")
        if latency:
            latency_16, latency_128, latency_clean, latency_of = latency_peers.get(peer, (None, None, 0, 0))
        else:
            latency_pairs, latency_clean = clean(pairs, "latency")
            latency_16 = median([o["latency_ms"]["16"] / p["latency_ms"]["16"] for o, p in latency_pairs])
            latency_128 = median([o["latency_ms"]["128"] / p["latency_ms"]["128"] for o, p in latency_pairs])
            latency_of = len(pairs)
        forward_pairs, forward_clean = clean([(o, p) for o, p in pairs if "forward" in o and "forward" in p], "forward")
        ratios[peer] = {
            "throughput": median([o["texts_per_s"] / p["texts_per_s"] for o, p in corpus_pairs]) if same_texts else None,
            "latency_16": latency_16, "latency_128": latency_128,
            "forward": median([p["forward"]["ms"] / o["forward"]["ms"] for o, p in forward_pairs]),
            "memory": median([o["peak_rss_mb"] / p["peak_rss_mb"] for o, p in pairs]),
            "all_throughput": [round(o["texts_per_s"] / p["texts_per_s"], 3) for o, p in pairs] if same_texts else None,
            "clean_rounds": {"corpus": corpus_clean, "latency": latency_clean, "latency_of": latency_of,
                             "forward": forward_clean, "of": len(pairs)},
        }
    return summary, ratios


# ---------------------------------------------------------------------------------------
# Report: Markdown and the chart.


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def targets(report):
    """[(target, measured, met)] for the issue's acceptance points."""
    rows = []
    for model in report["models"]:
        ratios = report["ratios"].get(model, {})
        for peer, wanted in TARGET_PEERS.items():
            ratio = ratios.get(peer, {}).get("throughput")
            rows.append((f"{model}: corpus throughput >= {wanted}x {peer}",
                         fmt(ratio, ".2f", "skipped") + ("x" if ratio else ""), None if ratio is None else ratio >= wanted))
        for length in ("16", "128"):
            ratio = ratios.get("onnxruntime", {}).get(f"latency_{length}")
            rows.append((f"{model}: batch-1 latency at {length} tokens <= ONNX Runtime's",
                         fmt(ratio, ".2f", "skipped") + ("x ORT's" if ratio else ""), None if ratio is None else ratio <= 1.0))
        fraction = report["summary"].get(model, {}).get(OURS, {}).get("fraction_of_matmul")
        rows.append((f"{model}: forward 32x128 FLOP/s >= 80% of np.matmul's", fmt(fraction, ".0%", "skipped"),
                     None if fraction is None else fraction >= 0.8))
        warm = report["startup"].get(model, {}).get(f"{OURS}/warm", {}).get("first_vector_s")
        rows.append((f"{model}: import -> first vector, warm kernel cache <= 1.0 s", fmt(warm, ".2f", "skipped") +
                     (" s" if warm else ""), None if warm is None else warm <= 1.0))
        memory = ratios.get("sentence-transformers", {}).get("memory")
        rows.append((f"{model}: peak memory <= 0.5x sentence-transformers'", fmt(memory, ".2f", "skipped") +
                     ("x" if memory else ""), None if memory is None else memory <= 0.5))
    return rows


def markdown(report):
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        f"# End-to-end benchmark ({report['mode']} run, {report['date']})",
        "",
        f"Command: `{report['command']}` (source {report.get('source', {}).get('start')})",
        "",
        f"Machine: {machine['cpu']} ({machine['cpu_flags']}), {machine['logical_cpus']} logical CPUs, "
        f"{machine['memory_gib']} GiB, {machine['os']}; Python {machine['python']}; BLAS {machine['blas']}; "
        f"{versions}. Every system: {machine['threads']} threads, fp32, batch size 32. Load average "
        f"{report['load_average']['start']} at the start, {report['load_average']['end']} at the end "
        f"(the cores are shared; ratios are medians of within-round ratios over {report['plan']['rounds']} interleaved "
        f"rounds" + (f", for latency of within-burst ratios over {report['plan']['latency_bursts']} bursts"
                     if "latency_bursts" in report["plan"] else "") + "; the last column says how many cores' worth of CPU other processes took during each corpus job, "
        f"median over rounds; every figure uses the rounds in which others took at most {NOISY_CORES} cores during "
        f"that measurement, all rounds when none was that clean).",
        "",
        "## Targets (issue 5)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {'-' if ok is None else 'yes' if ok else '**no**'} |" for t, m, ok in targets(report)]
    for model in report["models"]:
        summary = report["summary"].get(model)
        if not summary:
            lines += ["", f"## {model}: skipped ({report['prepared'][model]['skipped']})"]
            continue
        ratios = report["ratios"].get(model, {})
        startup = report["startup"].get(model, {})
        ours = summary.get(OURS, {})
        lines += ["", f"## {report['prepared'][model]['title']}", "",
                  "| system | corpus texts/s | ours (numba) vs it | batch 1, 16 tok (ms) | batch 1, 128 tok (ms) | "
                  "forward 32x128 (ms) | GFLOP/s | first vector, new process (s) | peak RSS (MB) | min cosine vs ours | "
                  "others' load during corpus (cores) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for system in report["systems"]:
            row = summary.get(system, {"skipped": "not run"})
            if "skipped" in row:
                lines.append(f"| {LABELS[system]} | skipped: {row['skipped']} |  |  |  |  |  |  |  |  |  |")
                continue
            texts = f"{row['texts_per_s']:.1f}"
            if row["corpus_texts"] != ours.get("corpus_texts", row["corpus_texts"]):
                texts += f" (on {row['corpus_texts']} texts)"
            ratio = ratios.get(system, {})
            versus = "-" if system == OURS else ("n/a (other texts)" if ratio.get("throughput") is None
                                                 else f"{ratio['throughput']:.2f}x")
            first = startup.get(f"{system}/warm", {}).get("first_vector_s")
            first_text = fmt(first, ".2f")
            if system == OURS and "first_vector_s" in startup.get(f"{OURS}/cold", {}):
                first_text += f" (empty kernel cache: {startup[f'{OURS}/cold']['first_vector_s']:.1f})"
            check = report["agreement"].get(model, {}).get(system)
            cosine = "reference" if system == OURS else (f"{check['min_cosine']:.7f}" if check else "-")
            gflops = fmt(row["forward_gflops"], ".0f")
            if "matmul_gflops" in row:
                gflops += f" ({row['fraction_of_matmul']:.0%} of np.matmul's {row['matmul_gflops']:.0f})"
            lines.append(f"| {LABELS[system]} | {texts} | {versus} | {fmt(row['latency_16_ms'], '.1f')} | "
                         f"{fmt(row['latency_128_ms'], '.1f')} | {fmt(row['forward_ms'], '.0f')} | {gflops} | {first_text} | "
                         f"{row['peak_rss_mb']:.0f} | {cosine} | {fmt(row.get('others_cores'), '.2f')} "
                         f"({row.get('clean_rounds', {}).get('corpus', '?')}/{row['rounds']} rounds clean) |")
        lines += ["", report["prepared"][model]["note"]]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def chart(report, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    models = [m for m in report["models"] if report["summary"].get(m)]
    panels = [("corpus throughput (texts/s, higher better)", lambda r: [r["texts_per_s"]], None),
              ("batch-1 latency (ms, log scale, lower better)", lambda r: [r["latency_16_ms"] or 0, r["latency_128_ms"] or 0],
               ["16 tok", "128 tok"]),
              ("peak resident memory (MB, lower better)", lambda r: [r["peak_rss_mb"]], None),
              ("new process to first vector (s, lower better)", None, None)]
    colors = {"transformer-numba": "#1b7837", "transformer-numpy": "#7fbf7b", "sentence-transformers": "#c2a5cf",
              "onnxruntime": "#762a83"}
    figure, axes = plt.subplots(len(models), len(panels), figsize=(18, 4.2 * len(models)), squeeze=False)
    for row_index, model in enumerate(models):
        summary = report["summary"][model]
        systems = [s for s in report["systems"] if "skipped" not in summary.get(s, {"skipped": 1})]
        for column, (title, values, groups) in enumerate(panels):
            axis = axes[row_index][column]
            axis.set_title(f"{report['prepared'][model]['short']}: {title}", fontsize=9)
            if values is None:  # startup
                startup = report["startup"].get(model, {})
                names = [s for s in systems if "first_vector_s" in startup.get(f"{s}/warm", {})]
                heights = [startup[f"{s}/warm"]["first_vector_s"] for s in names]
                bars = axis.bar(range(len(names)), heights, color=[colors[s] for s in names])
                if "first_vector_s" in startup.get(f"{OURS}/cold", {}):
                    cold = startup[f"{OURS}/cold"]["first_vector_s"]
                    axis.bar([len(names)], [cold], color=colors[OURS], hatch="//", alpha=0.5)
                    names = names + ["ours numba\nempty cache"]
                axis.set_xticks(range(len(names)), [SHORT.get(n, n) for n in names], fontsize=7)
                axis.bar_label(bars, fmt="%.2f", fontsize=7)
                continue
            series = [values(summary[s]) for s in systems]
            count = len(series[0])
            width = 0.8 / count
            for k in range(count):
                positions = [i + (k - (count - 1) / 2) * width for i in range(len(systems))]
                bars = axis.bar(positions, [v[k] for v in series], width, color=[colors[s] for s in systems],
                                alpha=1.0 if k == 0 else 0.6, hatch=None if k == 0 else "..",
                                label=groups[k] if groups else None)
                axis.bar_label(bars, fmt="%.1f" if column == 1 else "%.0f", fontsize=7)
            axis.set_xticks(range(len(systems)), [SHORT[s] for s in systems], fontsize=7)
            if groups:
                axis.set_yscale("log")
                axis.legend(fontsize=7)
    figure.suptitle(f"End to end: texts in, unit vectors out; {report['machine']['cpu']}, {THREADS} threads, fp32, "
                    f"batch 32 ({report['mode']} run, {report['date']})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


# ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small subset of the corpus, fewer repeats")
    parser.add_argument("--models", nargs="+", choices=["minilm", "bert-base"], default=["minilm", "bert-base"])
    parser.add_argument("--systems", nargs="+", choices=peers.SYSTEMS, default=list(peers.SYSTEMS))
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 3, quick: 2)")
    parser.add_argument("--no-startup", action="store_true", help="skip the new-process startup runs")
    parser.add_argument("--out", type=Path, help="folder for e2e.json/.md/.png (default benchmarks/results; "
                                                 "quick runs: a temporary folder)")
    parser.add_argument("--report-only", type=Path, metavar="E2E_JSON",
                        help="only rewrite the .md and .png beside an existing e2e.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--latency-server", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.report_only:
        report = json.loads(args.report_only.read_text())
        for model, rounds in report["rounds"].items():
            report["summary"][model], report["ratios"][model] = summarize(model, rounds, report["systems"],
                                                                          report.get("latency", {}).get(model))
        args.report_only.write_text(json.dumps(report, indent=1, default=str))
        (args.report_only.parent / "e2e.md").write_text(markdown(report))
        chart(report, args.report_only.parent / "e2e.png")
        print(markdown(report))
        return

    if args.latency_server:
        latency_server(json.loads(args.latency_server))  # a failure ends the process: the parent reports it
        return

    if args.worker:
        spec = json.loads(args.worker)
        try:
            result = worker(spec)
        except peers.Unavailable as error:
            result = {"skipped": str(error)}
        except Exception as error:  # reported as skipped with the reason, never estimated
            result = {"skipped": f"failed: {type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()[-2000:]}
        print(json.dumps(result), flush=True)
        return

    mode = "quick" if args.quick else "full"
    plan = dict(PLANS[mode])
    if args.rounds:
        plan["rounds"] = args.rounds
    out = args.out or (RESULTS if mode == "full" else Path(tempfile.mkdtemp(prefix="e2e-quick-")))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    report = {
        "mode": mode, "date": datetime.date.today().isoformat(),
        "command": "make bench" if mode == "full" and len(sys.argv) == 1 else
                   "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "machine": machine_description(), "load_average": {"start": load_average()},
        "source": {"start": source_state()},
        "systems": args.systems, "models": args.models, "plan": plan,
        "summary": {}, "ratios": {}, "agreement": {}, "startup": {}, "rounds": {}, "latency": {}, "notes": [],
    }
    log(f"machine: {json.dumps(report['machine'])}")
    corpus = read_corpus()
    counts = token_counts(corpus)
    short, long, forward_ids = pick_texts(corpus)
    report["latency_texts"] = {"16": short, "128": long}
    report["corpus"] = {"texts": len(corpus), "tokens": sum(counts), "padding_overhead_full": padding_overhead(counts, corpus)}

    with tempfile.TemporaryDirectory() as workdir:
        ids_path = Path(workdir) / "forward_ids.npy"
        import numpy as np

        np.save(ids_path, forward_ids)
        log("preparing models (BERT-base checkpoint, ONNX exports)")
        prepared = prepare_models(args.models, args.systems, workdir, log)
        for model, entry in prepared.items():
            entry["short"] = "all-MiniLM-L6-v2" if model == "minilm" else "BERT-base (random)"
            entry["title"] = ("all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7M parameters)" if model == "minilm" else
                              "BERT-base-sized, random weights (12 layers, 768 wide, 12 heads, FFN 3072; MiniLM's tokenizer)")
            plan_model = plan[model]
            numpy_plan = plan_model["numpy"]
            subset = lambda n: (corpus[::n], counts[::n])  # noqa: E731
            entry["padding_overhead"] = {every: padding_overhead(c, t) for every in
                                         (plan_model["every"], numpy_plan["every"]) for t, c in [subset(every)]}
            entry["note"] = (f"Corpus: {len(corpus[::plan_model['every']])} texts ({every_nth(plan_model['every'])} "
                             f"of benchmarks/data/corpus.txt); the numpy backend: "
                             f"{len(corpus[::numpy_plan['every']])} texts ({every_nth(numpy_plan['every'])}). "
                             f"Latency: every system's process alive at once, taking turns in {plan['latency_bursts']} "
                             f"bursts of {plan_model['latency'][0]} (16 tokens) / {plan_model['latency'][1]} "
                             f"(128 tokens) calls (numpy backend {numpy_plan['latency'][0]} / "
                             f"{numpy_plan['latency'][1]}), {LATENCY_SETTLE_S} s apart; medians of the bursts' medians, "
                             f"ratios within bursts. Forward: {plan_model['forward']} call(s) per round after "
                             f"a warm-up (numpy backend: {numpy_plan['forward'] or 'not run, too slow for the time budget'})."
                             + f" Padding: length-sorted batches of 32 over this subset hold "
                             f"{entry['padding_overhead'][plan_model['every']]:.0%} more token positions than real "
                             f"tokens (the numpy backend's subset: {entry['padding_overhead'][numpy_plan['every']]:.0%}); "
                             f"padded systems compute them, this project's numba backend does not."
                             + (f" ONNX model: {entry['onnx_note']}." if entry["onnx_note"] else ""))
        report["prepared"] = prepared
        if "transformer-numba" in args.systems:  # compile into the kernel cache once, as a user's first run does
            for model, entry in prepared.items():
                if entry["dir"]:
                    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import peers, run, json, time; "
                            f"t = time.perf_counter(); r = peers.load('transformer-numba', {entry['dir']!r}, run.THREADS); "
                            f"corpus = run.read_corpus(); r.encode(corpus[:64]); r.encode(corpus[:1]); "
                            f"print(json.dumps({{'seconds': time.perf_counter() - t}}))")
                    result, error, _ = run_child(["-c", code])
                    log(f"  {model}: kernel cache warmed ({result['seconds']:.1f} s)" if result else
                        f"  {model}: warming the kernel cache failed: {error}")

        for model in args.models:
            entry = prepared[model]
            if entry["skipped"]:
                log(f"{model}: skipped ({entry['skipped']})")
                continue
            plan_model = plan[model]
            rounds, vector_paths = [], {}
            for round_index in range(plan["rounds"]):
                order = rotated(args.systems, round_index)
                results = {}
                for system in order:
                    counts = system_plan(plan_model, system)
                    vectors_path = str(Path(workdir) / f"{model}-{system}.npy") if round_index == 0 else None
                    spec = {"system": system, "model": model, "model_dir": entry["dir"], "onnx_path": entry["onnx"],
                            "every": counts["every"], "forward_ids": str(ids_path),
                            "forward_calls": counts["forward"], "vectors_path": vectors_path}
                    if system == "onnxruntime" and entry["onnx"] is None:
                        results[system] = {"skipped": entry["onnx_note"] or "no ONNX model"}
                    else:
                        results[system] = run_worker(spec)
                    if "skipped" not in results[system] and vectors_path:
                        vector_paths[system] = vectors_path
                    brief = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in results[system].items()
                             if k in ("texts_per_s", "peak_rss_mb", "skipped", "corpus_texts", "others_cores")}
                    if "forward" in results[system]:
                        brief["forward"] = {k: round(v, 2) for k, v in results[system]["forward"].items()}
                    log(f"{model} round {round_index + 1}/{plan['rounds']} {system}: {json.dumps(brief)}")
                rounds.append(results)
            report["rounds"][model] = rounds
            log(f"{model}: batch-1 latency, every system's process alive, taking turns")
            report["latency"][model] = run_latency_bursts(entry, args.systems, plan, plan_model, [short, long], log)
            report["summary"][model], report["ratios"][model] = summarize(model, rounds, args.systems,
                                                                          report["latency"][model])
            agreement = cosine_check({s: p for s, p in vector_paths.items() if s != "transformer-numpy"}, log)
            if OURS in vector_paths and "transformer-numpy" in vector_paths:
                check = numpy_cosine_check(vector_paths[OURS], vector_paths["transformer-numpy"],
                                           plan_model["every"], plan_model["numpy"]["every"])
                if check:
                    agreement["transformer-numpy"] = check
            report["agreement"][model] = agreement
            for system, check in agreement.items():
                if system != OURS and check["min_cosine"] < 0.99999:
                    report["notes"].append(f"{model}: {system}'s vectors differ from ours: min cosine "
                                           f"{check['min_cosine']:.6f} < 0.99999")
            log(f"{model}: summary {json.dumps(report['summary'][model])}")
            log(f"{model}: ratios (ours numba / peer; forward: peer ms / ours ms) {json.dumps(report['ratios'][model])}")
            log(f"{model}: agreement {json.dumps(agreement)}")

        if not args.no_startup:
            log("startup: new process -> first vector")
            report["startup"] = run_startup([m for m in args.models], prepared, args.systems, plan, log)

    report["load_average"]["end"] = load_average()
    report["source"]["end"] = source_state()
    if report["source"]["start"] != report["source"]["end"]:
        report["notes"].append(f"The code under kernels/ and transformer/ changed during this run "
                               f"({report['source']['start']} -> {report['source']['end']}): rounds may have "
                               f"measured different versions.")
    report["wall_s"] = time.perf_counter() - started
    report["notes"] += [
        "Texts/s counts whole jobs: tokenization, the model, pooling and normalization; texts are sorted "
        "by length into batches of 32 by every system (sentence-transformers and this project do it "
        "inside encode; the ONNX Runtime runner does the same).",
        "min cosine: each system's vectors against this project's numba backend on the same texts "
        "(the numpy backend on its subset); all are float32 unit vectors.",
        "Peak RSS: ru_maxrss of the system's own process after loading, a 64-text warm-up and the corpus job.",
        "First vector: a new process from its first import to one vector of one sentence, median of "
        f"{plan['startup_warm']} interleaved runs (the OS file cache warm); this project's 'empty kernel "
        f"cache' runs point NUMBA_CACHE_DIR at a new folder (median of {plan['startup_cold']}). The ONNX "
        "Runtime process loads an already exported and optimized model (the export is a one-off, timed "
        "in the model note).",
        "Forward 32x128: the model alone on 32 texts of 128 real tokens (no padding); GFLOP/s counts "
        "the GEMMs (2*M*K*N) and attention's two batched products (4*batch*seq^2*hidden per layer). "
        "np.matmul runs the same GEMM shapes in the same process, alternating with the model (a "
        f"{OPENBLAS_SETTLE_S} s pause before each model call lets OpenBLAS's busy-waiting threads go idle).",
        f"Wall time of this run: {report['wall_s'] / 60:.1f} min.",
    ]
    (out / "e2e.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "e2e.md").write_text(markdown(report))
    problem = chart(report, out / "e2e.png")
    if problem:
        report["notes"].append(problem)
    log(f"wrote {out / 'e2e.json'}, {out / 'e2e.md'}, {out / 'e2e.png'}")
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
