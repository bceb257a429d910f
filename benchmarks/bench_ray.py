"""transformer.distributed on this machine: 1 actor of 2 threads vs 2 actors of 1 thread, and
single-process encode, on the same texts.

    .venv/bin/pip install -e ".[ray]"
    .venv/bin/python benchmarks/bench_ray.py --texts 2000    # writes benchmarks/results/ray.{json,md}

On one 2-core machine Ray can only add overhead (actor start, model load per actor, batches
through the object store): this measures how much. The gain Ray is for comes with more machines.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = "all-MiniLM-L6-v2"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    args = parser.parse_args()
    lines = [line for line in (HERE / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = (lines * (args.texts // len(lines) + 1))[: args.texts]

    import ray

    from transformer.distributed import embed_dataset
    from transformer.sentence import SentenceEncoder

    results = {"model": MODEL, "texts": len(texts), "cores": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
               "runs": []}
    model = SentenceEncoder.from_pretrained(MODEL)
    model.encode(texts[:32])
    started = time.perf_counter()
    expected = model.encode(texts, batch_size=32)
    results["runs"].append({"how": "single process, 2 threads", "seconds": time.perf_counter() - started})
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    for actors, threads in ((1, 2), (2, 1)):
        ds = ray.data.from_items([{"id": i, "text": text} for i, text in enumerate(texts)])
        started = time.perf_counter()  # includes starting the actors and loading the model in each
        rows = embed_dataset(ds, model=MODEL, actors=actors, threads_per_actor=threads).take_all()
        seconds = time.perf_counter() - started
        vectors = np.stack([row["embedding"] for row in sorted(rows, key=lambda row: row["id"])])
        results["runs"].append({"how": f"Ray, {actors} actor{'s' if actors > 1 else ''} x {threads} thread"
                                       f"{'s' if threads > 1 else ''}", "seconds": seconds,
                                "max_abs_difference": float(np.abs(vectors - expected).max())})
    ray.shutdown()
    results["load_average_at_end"] = os.getloadavg()[0]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ray.json").write_text(json.dumps(results, indent=2) + "\n")
    table = [f"# Ray on one 2-core machine ({len(texts)} texts of benchmarks/data/corpus.txt, {MODEL})", "",
             f"Load average {results['load_average_at_start']:.1f} at the start, {results['load_average_at_end']:.1f} "
             "at the end (other jobs shared the cores). Ray's times include starting the actors and loading the "
             "model in each.", "", "| how | seconds | texts / s | max abs difference from encode |", "|---|---:|---:|---:|"]
    for run in results["runs"]:
        difference = f"{run['max_abs_difference']:.1e}" if "max_abs_difference" in run else "(the reference)"
        table.append(f"| {run['how']} | {run['seconds']:.1f} | {len(texts) / run['seconds']:.1f} | {difference} |")
        print(table[-1], flush=True)
    table += ["", "Made by `.venv/bin/python benchmarks/bench_ray.py`."]
    (HERE / "results" / "ray.md").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
