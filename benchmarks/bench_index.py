"""The vector index at scale: recall@10 of the HNSW graph against the exact scan, build time,
query latency and memory, on random unit vectors.

    .venv/bin/pip install -e ".[index]"
    .venv/bin/python benchmarks/bench_index.py      # ~2-4 minutes; writes benchmarks/results/index.{json,md}

Two seeded sets of unit vectors, each queried with new vectors drawn the same way:
  * uniform: standard normal, normalized. The worst case for any graph index: 384 independent
    directions, so a nearest neighbour is barely nearer than the rest.
  * clustered: 1,000 random centres, each vector a centre plus noise, normalized. Closer to
    real sentence embeddings, which fill far fewer directions than their width.

Per set: the graph itself at each ef (searched directly), then the index as it serves
searches: the ef its calibration chose at build (or the exact scan when no ef reached the
target recall on the probes: transformer/index.py), with that choice's recall@10 and latency.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from transformer import index as index_module
from transformer.index import VectorIndex, exact_search

RESULTS = Path(__file__).resolve().parent / "results"


def random_unit(count, dimension, rng):
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def recall(found, exact):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def rss_mb():
    """This process's resident memory now (not its peak: a second set would hide under the first's)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--expansions", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--sets", nargs="+", default=["uniform", "clustered"])
    args = parser.parse_args()
    rng = np.random.default_rng(20261207)
    results = {"count": args.count, "dimension": args.dimension, "queries": args.queries,
               "connectivity": index_module.CONNECTIVITY, "expansion_add": index_module.EXPANSION_ADD, "sets": []}
    for name in args.sets:
        results["sets"].append(measure(name, args, rng))
        write(results, args)  # after each set: a long run stopped half-way keeps what it measured


def draw(name, count, dimension, rng, centres):
    if name == "uniform":
        return random_unit(count, dimension, rng)
    vectors = centres[rng.integers(len(centres), size=count)] + 0.5 * random_unit(count, dimension, rng)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def measure(name, args, rng):
    centres = random_unit(1000, args.dimension, rng)
    vectors = draw(name, args.count, args.dimension, rng, centres)
    queries = draw(name, args.queries, args.dimension, rng, centres)
    rss_before = rss_mb()
    started = time.perf_counter()
    index = VectorIndex(vectors, exact_limit=0)
    build_seconds = time.perf_counter() - started
    graph_bytes = len(index.graph.save())
    results = {"set": name, "build_seconds": build_seconds, "graph_mb": graph_bytes / 2**20,
               "vectors_mb": vectors.nbytes / 2**20, "rss_growth_mb": rss_mb() - rss_before, "runs": []}
    print(f"{name}: built {args.count} x {args.dimension} in {build_seconds:.1f} s; graph file "
          f"{graph_bytes / 2**20:.0f} MiB", flush=True)
    started = time.perf_counter()
    exact, _ = exact_search(index.vectors, queries, 10)
    exact_ms = (time.perf_counter() - started) * 1000 / len(queries)
    single = []
    for query in queries[:200]:
        began = time.perf_counter()
        exact_search(index.vectors, query[None], 10)
        single.append(time.perf_counter() - began)
    exact_one_ms = float(np.median(single) * 1000)
    calibration = index.calibration
    results["calibration"] = {"expansion_search": calibration.expansion_search, "probe_recall": calibration.recall}
    print(f"{name}: calibration chose {calibration.expansion_search or 'the exact scan'} "
          f"(probe recall@10 {calibration.recall:.4f})", flush=True)

    def graph_search(batch, expansion):
        index.graph.expansion_search = expansion
        matches = index.graph.search(batch, 10, threads=0)
        return np.asarray(matches.keys, dtype=np.int64).reshape(len(batch), -1)

    def served_search(batch, expansion):
        index.calibration = calibration
        if calibration.expansion_search is not None:
            index.graph.expansion_search = calibration.expansion_search
        return index.search(batch, 10)[0]

    runs = [(expansion, graph_search) for expansion in args.expansions] + [("served", served_search)]
    for expansion, search in runs:
        started = time.perf_counter()
        found = search(queries, expansion)
        batch_ms = (time.perf_counter() - started) * 1000 / len(queries)
        single = []
        for query in queries[:200]:
            began = time.perf_counter()
            search(query[None], expansion)
            single.append(time.perf_counter() - began)
        if expansion == "served":
            expansion = f"served ({calibration.expansion_search or 'exact'})"
        run = {"expansion_search": expansion, "recall_at_10": recall(found, exact),
               "graph_query_ms_p50": float(np.median(single) * 1000),
               "graph_query_ms_p99": float(np.percentile(single, 99) * 1000),
               "graph_batch_ms_per_query": batch_ms, "exact_query_ms_p50": exact_one_ms,
               "exact_batch_ms_per_query": exact_ms}
        results["runs"].append(run)
        print(f"{name:>10} ef={expansion!s:<4} recall@10 {run['recall_at_10']:.4f}  graph p50 "
              f"{run['graph_query_ms_p50']:.2f} ms (p99 {run['graph_query_ms_p99']:.2f})  exact p50 "
              f"{exact_one_ms:.2f} ms", flush=True)
    return results


def write(results, args):
    results["load_average"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Vector index: usearch HNSW vs the exact scan ({args.count:,} random unit vectors, {args.dimension}-d)", "",
             f"Graph: connectivity (M) {results['connectivity']}, expansion_add {results['expansion_add']}, float32. "
             f"One query at a time for latency; {args.queries} queries for recall and the batch figure. "
             f"See the docstring of benchmarks/bench_index.py for the two sets.", ""]
    for entry in results["sets"]:
        chosen = entry["calibration"]["expansion_search"]
        lines.append(f"- {entry['set']}: build {entry['build_seconds']:.1f} s (calibration included); graph file "
                     f"{entry['graph_mb']:.0f} MiB beside {entry['vectors_mb']:.0f} MiB of vectors; resident memory "
                     f"grew {entry['rss_growth_mb']:.0f} MiB with the graph built; the calibration chose "
                     f"{'ef ' + str(chosen) if chosen else 'the exact scan'} (recall@10 on its probes "
                     f"{entry['calibration']['probe_recall']:.4f})")
    lines += ["", "Rows `served` are `VectorIndex.search` as it answers by default, after the calibration.",
              "", "| set | expansion_search | recall@10 | graph p50 ms | graph p99 ms | graph batch ms/query | "
             "exact p50 ms | exact batch ms/query |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in [dict(run, set=entry["set"]) for entry in results["sets"] for run in entry["runs"]]:
        lines.append(f"| {run['set']} | {run['expansion_search']} | {run['recall_at_10']:.4f} | "
                     f"{run['graph_query_ms_p50']:.2f} | {run['graph_query_ms_p99']:.2f} | "
                     f"{run['graph_batch_ms_per_query']:.3f} | {run['exact_query_ms_p50']:.2f} | "
                     f"{run['exact_batch_ms_per_query']:.3f} |")
    lines += ["", f"Made by `.venv/bin/python benchmarks/bench_index.py` on a 2-core machine shared with other jobs "
                  f"(load average {results['load_average']:.1f} when written)."]
    (RESULTS / "index.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
