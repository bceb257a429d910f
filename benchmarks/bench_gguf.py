"""GGUF dequantization: the Numba kernels, their NumPy twins and the `gguf` package's own, per
ggml type, on every tensor of the real GGUF files (SmolLM2-135M Q4_1, Gemma 3 270M Q4_K_M).

    python benchmarks/bench_gguf.py                  # 2 threads; writes benchmarks/results/gguf_dequant.{json,md}
    python benchmarks/bench_gguf.py --threads 1 --repeats 5

The tensors' bytes are read once; each timing is dequantization alone (bytes in memory ->
float32), the three sides timed in interleaved rounds (median of `--repeats`) so they see the
same machine load. Also: reading a whole file's header (`read_gguf`) against the gguf
package's `GGUFReader`. The machine is shared: the load averages are printed and recorded.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = [("SmolLM2-135M-Instruct-Q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf"),
         ("gemma-3-270m-Q4_K_M", "gemma-3-270m-q4_k_m.gguf")]


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    os.environ["NUMBA_NUM_THREADS"] = str(arguments.threads)
    sys.path.insert(0, str(HERE.parent))

    import gguf
    import numpy as np

    from transformer.gguf import quants, read_gguf
    from transformer.kernels.quants import dequantize_blocks
    from transformer.store import weights_dir

    types = {t.name: t for t in quants.GGML_TYPES.values()}
    sides = {
        "numba": lambda name, raw, shape: dequantize_blocks(types[name].number, raw.reshape(-1, types[name].type_size)),
        "numpy": lambda name, raw, shape: quants.dequantize(name, raw, shape),
        "gguf": lambda name, raw, shape: gguf.dequantize(raw.reshape(*shape[:-1], -1), gguf.GGMLQuantizationType[name]),
    }
    results = {"threads": arguments.threads, "load_before": os.getloadavg(), "files": {}}
    for folder, file_name in FILES:
        path = weights_dir() / folder / file_name
        start = time.perf_counter()
        file = read_gguf(path)
        ours_header = time.perf_counter() - start
        start = time.perf_counter()
        gguf.GGUFReader(str(path))
        their_header = time.perf_counter() - start
        by_type = {}
        for name, info in file.tensors.items():
            by_type.setdefault(info.type_name, []).append((info.type_name, file.read_bytes(name), info.shape))
        rows = {}
        for type_name, tensors in by_type.items():
            weights = sum(int(np.prod(shape)) for _, _, shape in tensors)
            samples = {side: [] for side in sides}
            for side, function in sides.items():  # warm up (compile)
                function(*tensors[0])
            for _ in range(arguments.repeats):
                for side, function in sides.items():
                    start = time.perf_counter()
                    for tensor in tensors:
                        function(*tensor)
                    samples[side].append(time.perf_counter() - start)
            rows[type_name] = {"tensors": len(tensors), "weights": weights,
                               **{side: median(values) for side, values in samples.items()}}
        results["files"][file_name] = {"header_seconds": {"read_gguf": ours_header, "gguf.GGUFReader": their_header},
                                       "types": rows}
    results["load_after"] = os.getloadavg()
    (HERE / "results" / "gguf_dequant.json").write_text(json.dumps(results, indent=1) + "\n")
    (HERE / "results" / "gguf_dequant.md").write_text(report(results))
    print(report(results))


def report(results):
    lines = [f"# GGUF dequantization, {results['threads']} threads",
             "", "Median seconds per pass over all tensors of a type (bytes in memory -> float32) and weights per "
             "second; load averages "
             f"{', '.join(f'{x:.1f}' for x in results['load_before'])} before, "
             f"{', '.join(f'{x:.1f}' for x in results['load_after'])} after "
             "(`python benchmarks/bench_gguf.py`).", ""]
    for file_name, entry in results["files"].items():
        header = entry["header_seconds"]
        lines += [f"## {file_name}", "",
                  f"Header: read_gguf {header['read_gguf']:.2f} s, gguf.GGUFReader {header['gguf.GGUFReader']:.2f} s.", "",
                  "| type | tensors | weights | numba | numpy | gguf | numba vs numpy | numba vs gguf |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        totals = {"numba": 0.0, "numpy": 0.0, "gguf": 0.0}
        for type_name, row in entry["types"].items():
            for side in totals:
                totals[side] += row[side]
            lines.append(f"| {type_name} | {row['tensors']} | {row['weights'] / 1e6:.1f}M | "
                         + " | ".join(f"{row[side] * 1e3:.1f} ms ({row['weights'] / row[side] / 1e6:.0f}M/s)"
                                      for side in ("numba", "numpy", "gguf"))
                         + f" | {row['numpy'] / row['numba']:.1f}x | {row['gguf'] / row['numba']:.1f}x |")
        weights = sum(row["weights"] for row in entry["types"].values())
        lines.append(f"| all | {sum(r['tensors'] for r in entry['types'].values())} | {weights / 1e6:.1f}M | "
                     + " | ".join(f"{totals[side]:.2f} s" for side in ("numba", "numpy", "gguf"))
                     + f" | {totals['numpy'] / totals['numba']:.1f}x | {totals['gguf'] / totals['numba']:.1f}x |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
