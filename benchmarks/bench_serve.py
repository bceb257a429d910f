"""Load test of `transformer serve` on loopback, against in-process `encode` and against
sentence-transformers behind a plain FastAPI endpoint (what users hand-roll).

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python benchmarks/bench_serve.py            # ~3 minutes; writes benchmarks/results/serve.{json,md}

For each server and each request size (texts per request): CLIENTS concurrent clients post
texts from benchmarks/data/corpus.txt for SECONDS seconds or until MAX_REQUESTS requests,
whichever comes first; throughput is texts answered per second, latency is per request
(p50, p99). The in-process figure is `SentenceEncoder.encode(texts, batch_size=32)` on the
same texts, in this process, before any server starts. Traffic goes to 127.0.0.1 only, and
every loop is bounded. The load generator runs on the same two cores as the server: its
share of the CPU is part of what the numbers show.
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "all-MiniLM-L6-v2"
RESULTS = HERE / "results"


def corpus_texts(count):
    lines = [line for line in (HERE / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:count]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def in_process_throughput(texts):
    from transformer.sentence import SentenceEncoder

    model = SentenceEncoder.from_pretrained(MODEL)
    model.encode(texts[:64], batch_size=32)  # load the kernels
    started = time.perf_counter()
    model.encode(texts, batch_size=32)
    return len(texts) / (time.perf_counter() - started)


def start(command, port):
    import httpx2 as httpx

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command} exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{command} did not start within 300 s")


async def load(port, texts, per_request, clients, seconds, max_requests):
    """-> {"texts_per_second", "p50_ms", "p99_ms", "requests", "errors"}"""
    import httpx2 as httpx

    latencies, errors, answered = [], 0, 0
    sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as http:
        async def client(number):
            nonlocal sent, errors, answered
            while time.perf_counter() < deadline and sent < max_requests:
                start_at = (sent * per_request) % (len(texts) - per_request)
                sent += 1
                batch = texts[start_at:start_at + per_request]
                began = time.perf_counter()
                response = await http.post("/v1/embeddings", json={"input": batch, "model": MODEL,
                                                                   "encoding_format": "float"})
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - began)
                answered += len(response.json()["data"])

        started = time.perf_counter()
        await asyncio.gather(*(client(number) for number in range(clients)))
        elapsed = time.perf_counter() - started
    latencies = np.array(latencies) * 1000
    return {"texts_per_second": answered / elapsed, "requests": len(latencies), "errors": errors,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "seconds": elapsed}


def peer_server(port):
    """sentence-transformers behind a plain FastAPI endpoint, as users write it."""
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(ROOT / "weights" / MODEL), device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/v1/embeddings")
    def embeddings(body: dict):
        vectors = model.encode(body["input"], batch_size=32)
        return {"object": "list", "model": MODEL,
                "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--texts", type=int, default=1024, help="texts of the corpus used")
    parser.add_argument("--per-request", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--systems", nargs="+", default=["transformer", "sentence-transformers"])
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="the server's token budget per batch")
    parser.add_argument("--peer-port", type=int, help=argparse.SUPPRESS)  # run as the peer server
    args = parser.parse_args()
    if args.peer_port:
        return peer_server(args.peer_port)

    texts = corpus_texts(args.texts)
    results = {"model": MODEL, "clients": args.clients, "seconds": args.seconds, "max_requests": args.max_requests,
               "texts": len(texts), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "load_average_at_start": os.getloadavg()[0],
               "in_process_texts_per_second": in_process_throughput(texts), "runs": []}
    print(f"in-process encode: {results['in_process_texts_per_second']:.1f} texts/s", flush=True)
    for system in args.systems:
        port = free_port()
        if system == "transformer":
            command = [sys.executable, "-m", "transformer", "serve", "--model", MODEL, "--port", str(port),
                       "--max-queue", "4096", "--max-batch-tokens", str(args.max_batch_tokens),
                       "--log-level", "warning"]
        else:
            command = [sys.executable, __file__, "--peer-port", str(port)]
        process = start(command, port)
        try:
            for per_request in args.per_request:
                asyncio.run(load(port, texts, per_request, args.clients, 3, 200))  # warm up
                run = asyncio.run(load(port, texts, per_request, args.clients, args.seconds, args.max_requests))
                run.update(system=system, per_request=per_request,
                           vs_in_process=run["texts_per_second"] / results["in_process_texts_per_second"])
                results["runs"].append(run)
                print(f"{system:>22}  {per_request:>2} texts/request: {run['texts_per_second']:7.1f} texts/s "
                      f"({run['vs_in_process']:.0%} of in-process), p50 {run['p50_ms']:.0f} ms, "
                      f"p99 {run['p99_ms']:.0f} ms, {run['requests']} requests, {run['errors']} errors", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    results["load_average_at_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# `transformer serve` under load ({MODEL})", "",
             f"{args.clients} concurrent clients on loopback, {args.seconds:g} s per run (at most "
             f"{args.max_requests} requests), {len(texts)} texts of benchmarks/data/corpus.txt; "
             f"{results['machine']}, the load generator on the same cores; load average "
             f"{results['load_average_at_start']:.1f} at the start, {results['load_average_at_end']:.1f} at the end. "
             f"In-process `encode(batch_size=32)`: **{results['in_process_texts_per_second']:.1f} texts/s**.", "",
             "| server | texts / request | texts / s | vs in-process | p50 ms | p99 ms | requests | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        lines.append(f"| {run['system']} | {run['per_request']} | {run['texts_per_second']:.1f} | "
                     f"{run['vs_in_process']:.0%} | {run['p50_ms']:.0f} | {run['p99_ms']:.0f} | {run['requests']} | "
                     f"{run['errors']} |")
    lines += ["", "Made by `.venv/bin/python benchmarks/bench_serve.py`."]
    (RESULTS / "serve.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
