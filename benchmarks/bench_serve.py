"""Load test of `transformer serve` on loopback, against in-process `encode` and against
sentence-transformers behind a plain FastAPI endpoint (what users hand-roll).

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python benchmarks/bench_serve.py            # ~4 minutes; writes benchmarks/results/serve.{json,md}

For each server and each request size (texts per request): CLIENTS concurrent clients post
texts from benchmarks/data/corpus.txt for SECONDS seconds or until MAX_REQUESTS requests,
whichever comes first; throughput is texts answered per second, latency is per request
(p50, p99). The in-process figure is `SentenceEncoder.encode(texts, batch_size=32)` on the
same texts, in this process, measured right before each run. Traffic goes to 127.0.0.1 only,
and every loop is bounded. The load generator runs on the same two cores as the server, so
it is kept lean (keep-alive connections on asyncio streams, the requests' bytes made before
the clock starts) while still checking every answer (status 200, its count of vectors); its
CPU, the server's and the server's event loop's are reported per text answered.
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
import urllib.request
from pathlib import Path

import numpy as np
import orjson

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


class InProcess:
    """`SentenceEncoder.encode(texts, batch_size=32)` in this process, the figure each server is
    held to. Other jobs on the host change what the cores give from one minute to the next, so
    each server run is cut into segments that alternate with in-process segments, and a ratio
    is taken between the two sums."""

    def __init__(self, texts):
        from transformer.sentence import SentenceEncoder

        self.texts = texts
        self.model = SentenceEncoder.from_pretrained(MODEL)
        self.model.encode(texts[:64], batch_size=32)  # load the kernels

    def measure(self, texts=None):
        """-> (texts per second, CPU milliseconds per text) of encoding `texts` (default: all)"""
        texts = self.texts if texts is None else texts
        cpu, started = time.process_time(), time.perf_counter()
        self.model.encode(texts, batch_size=32)
        return len(texts) / (time.perf_counter() - started), 1000 * (time.process_time() - cpu) / len(texts)


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


def wire_requests(texts, per_request, port):
    """Every request a client may send, as its bytes on the wire (an HTTP/1.1 keep-alive POST
    of /v1/embeddings), made before the clock starts: request k carries the per_request texts
    from (k * per_request) % span on."""
    span = len(texts) - per_request
    wire = []
    for request in range(span):
        first = (request * per_request) % span
        body = json.dumps({"input": texts[first:first + per_request], "model": MODEL,
                           "encoding_format": "float"}).encode()
        wire.append(b"POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (port, len(body), body))
    return wire


def cpu_seconds(pid, thread=None):
    """CPU seconds (user + system) of a process, or of one of its threads, from /proc."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def load(port, texts, per_request, clients, seconds, max_requests):
    """CLIENTS keep-alive connections, each posting one request after another until the deadline
    or max_requests; each answer is checked (status 200, per_request vectors in its JSON).
    -> {"latencies" (seconds, one per answered request), "errors", "seconds", "texts", "client_cpu_seconds"}"""
    wire = wire_requests(texts, per_request, port)
    latencies, counts = [], {"sent": 0, "errors": 0, "answered": 0}
    deadline = time.perf_counter() + seconds

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and counts["sent"] < max_requests:
                request = wire[counts["sent"] % len(wire)]
                counts["sent"] += 1
                began = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), None)
                if length is None:
                    raise SystemExit(f"an answer without content-length: {head!r}")
                body = await reader.readexactly(length)
                if status != 200 or len(orjson.loads(body)["data"]) != per_request:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - began)
                counts["answered"] += per_request
        finally:
            writer.close()

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), seconds + 300)
    elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": counts["errors"], "seconds": elapsed, "texts": counts["answered"],
            "client_cpu_seconds": time.process_time() - cpu}


def merged(segments):
    """Load runs -> one: {"texts_per_second", "p50_ms", "p99_ms", "requests", "errors", "seconds",
    "texts", "client_cpu_seconds"}"""
    latencies = np.concatenate([segment["latencies"] for segment in segments]) * 1000
    run = {key: sum(segment[key] for segment in segments) for key in ("errors", "seconds", "texts",
                                                                       "client_cpu_seconds")}
    run.update(texts_per_second=run["texts"] / run["seconds"], requests=len(latencies),
               p50_ms=float(np.percentile(latencies, 50)), p99_ms=float(np.percentile(latencies, 99)))
    return run


def run_loop(coroutine):
    """asyncio.run, on uvloop when it is installed (the bench extra has it): the load generator's
    event loop costs less CPU there, and that CPU is taken from the server's cores."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def step_costs(texts):
    """CPU microseconds of each step the server takes outside the model, in this process:
    per vector written as JSON (json.dumps of Python floats, as before; orjson, as now), per
    request body read (json.loads then pydantic, as FastAPI does; pydantic's
    model_validate_json, as now), per text tokenized, and per request through the whole ASGI
    app (routing, middleware, body, tokenizing, the batcher's hand-offs, the answer) with a
    stand-in for the model that returns fixed vectors: what is left of the event loop's
    CPU in a run is uvicorn's (HTTP, the sockets)."""
    from transformer.sentence import SentenceEncoder
    from transformer.serve.app import EmbeddingsRequest, create_app, json_response
    from transformer.serve.engine import Engine

    def cpu_us(function, repeat):
        started = time.process_time()
        for _ in range(repeat):
            function()
        return 1e6 * (time.process_time() - started) / repeat

    class NoModel(Engine):
        def run(self, sequences):  # [token ids] -> float32 [n, dim], the same rows each time
            return np.full((len(sequences), self.dimension), 0.05, dtype=np.float32)

    engine = NoModel(SentenceEncoder.from_pretrained(MODEL), MODEL)
    vectors = np.random.default_rng(0).standard_normal((8, engine.dimension)).astype(np.float32)  # [8, dim]
    one = json.dumps({"input": texts[:1], "model": MODEL}).encode()
    costs = {
        "json.dumps, per vector": cpu_us(lambda: json.dumps({"data": vectors.tolist()}), 200) / 8,
        "orjson, per vector": cpu_us(lambda: json_response({"data": list(vectors.astype(np.float64))}), 2000) / 8,
        "json.loads + pydantic, per request": cpu_us(lambda: EmbeddingsRequest.model_validate(json.loads(one)), 5000),
        "model_validate_json, per request": cpu_us(lambda: EmbeddingsRequest.model_validate_json(one), 5000),
        "tokenize, per text": cpu_us(lambda: [engine.tokenize([text], truncate=True) for text in texts[:200]], 3) / 200,
    }
    app = create_app(engine, max_batch_tokens=8192, max_queue=4096)
    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "raw_path": b"/v1/embeddings",
             "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": "",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(one)).encode())]}

    async def requests(count, concurrent=32):
        async def receive():
            return {"type": "http.request", "body": one, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start" and message["status"] != 200:
                raise SystemExit(f"the app answered {message['status']}")

        async def client(calls):
            for _ in range(calls):
                await app(dict(scope), receive, send)

        async with app.app.router.lifespan_context(app.app):
            started = time.process_time()
            await asyncio.gather(*(client(count // concurrent) for _ in range(concurrent)))
            return 1e6 * (time.process_time() - started) / (count // concurrent * concurrent)

    costs["the app with no model, per 1-text request"] = run_loop(requests(3200))
    return costs


def server_usage(pid, port, system):
    """The server's CPU seconds so far: the whole process and its main thread (the event loop:
    HTTP, JSON, validation); and for ours, the forward passes' count and seconds (GET /metrics)."""
    usage = {"cpu": cpu_seconds(pid), "loop_cpu": cpu_seconds(pid, pid), "forward_seconds": 0.0, "batches": 0}
    if system == "transformer":
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("transformer_forward_seconds_sum "):
                    usage["forward_seconds"] = float(line.split()[1])
                elif line.startswith("transformer_forward_seconds_count "):
                    usage["batches"] = int(line.split()[1])
    return usage


def account(run, before, after):
    """Where the CPU went in a run, per text answered: the server's (its event loop's part of it),
    the load generator's; the share of the run the model was busy, texts per forward pass."""
    texts = max(run["texts"], 1)
    run.update(server_cpu_ms_per_text=1000 * (after["cpu"] - before["cpu"]) / texts,
               loop_cpu_ms_per_text=1000 * (after["loop_cpu"] - before["loop_cpu"]) / texts,
               client_cpu_ms_per_text=1000 * run["client_cpu_seconds"] / texts,
               client_cpu_share=run["client_cpu_seconds"] / (run["seconds"] * os.cpu_count()))
    batches = after["batches"] - before["batches"]
    if batches:
        run.update(model_busy=(after["forward_seconds"] - before["forward_seconds"]) / run["seconds"],
                   texts_per_batch=texts / batches)


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
    parser.add_argument("--segments", type=int, default=4,
                        help="each run is cut into this many segments, alternating with in-process ones")
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
               "load_average_at_start": os.getloadavg()[0], "runs": []}
    in_process = InProcess(texts)
    results["in_process_texts_per_second"], results["in_process_cpu_ms_per_text"] = in_process.measure()
    print(f"in-process encode: {results['in_process_texts_per_second']:.1f} texts/s, "
          f"{results['in_process_cpu_ms_per_text']:.2f} CPU ms/text", flush=True)
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
                run_loop(load(port, texts, per_request, args.clients, 3, 200))  # warm up
                before = server_usage(process.pid, port, system)
                segments, beside_seconds = [], 0.0
                for part in np.array_split(np.arange(len(texts)), args.segments):
                    rate, _ = in_process.measure([texts[i] for i in part])  # the server idle meanwhile
                    beside_seconds += len(part) / rate
                    segments.append(run_loop(load(port, texts, per_request, args.clients, args.seconds / args.segments,
                                                  args.max_requests // args.segments)))
                beside = len(texts) / beside_seconds  # in-process texts/s over the segments between the server's
                run = merged(segments)
                account(run, before, server_usage(process.pid, port, system))
                run.update(system=system, per_request=per_request, in_process_texts_per_second=beside,
                           vs_in_process=run["texts_per_second"] / beside)
                results["runs"].append(run)
                print(f"{system:>22}  {per_request:>2} texts/request: {run['texts_per_second']:7.1f} texts/s "
                      f"({run['vs_in_process']:.0%} of in-process's {beside:.1f} between), p50 {run['p50_ms']:.0f} ms, "
                      f"p99 {run['p99_ms']:.0f} ms, {run['requests']} requests, {run['errors']} errors; CPU ms/text: "
                      f"server {run['server_cpu_ms_per_text']:.2f} (event loop {run['loop_cpu_ms_per_text']:.2f}), "
                      f"load generator {run['client_cpu_ms_per_text']:.2f}"
                      + (f"; model busy {run['model_busy']:.0%}, {run['texts_per_batch']:.1f} texts/batch"
                         if "model_busy" in run else ""), flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    results["step_cpu_us"] = step_costs(texts)
    for step, microseconds in results["step_cpu_us"].items():
        print(f"{step}: {microseconds:.1f} CPU us", flush=True)
    results["load_average_at_end"] = os.getloadavg()[0]
    write_results(results, args)


def write_results(results, args):
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# `transformer serve` under load ({MODEL})", "",
             f"{args.clients} concurrent clients on loopback (keep-alive connections, each answer checked: status "
             f"200 and its count of vectors), {args.seconds:g} s per run (at most {args.max_requests} requests), "
             f"{results['texts']} texts of benchmarks/data/corpus.txt; {results['machine']}, the load generator on "
             f"the same cores; load average {results['load_average_at_start']:.1f} at the start, "
             f"{results['load_average_at_end']:.1f} at the end. In-process `encode(batch_size=32)` on the same "
             f"texts: **{results['in_process_texts_per_second']:.1f} texts/s** at the start, "
             f"{results['in_process_cpu_ms_per_text']:.2f} CPU ms per text. Other jobs share the cores and what "
             f"they leave changes by the minute, so each run is cut into {args.segments} segments that alternate "
             f"with in-process `encode` of 1/{args.segments} of the texts each, and is held to that in-process "
             f"figure.", "",
             "| server | texts / request | texts / s | in-process between | vs in-process | p50 ms | p99 ms | "
             "requests | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        lines.append(f"| {run['system']} | {run['per_request']} | {run['texts_per_second']:.1f} | "
                     f"{run['in_process_texts_per_second']:.1f} | {run['vs_in_process']:.0%} | {run['p50_ms']:.0f} | "
                     f"{run['p99_ms']:.0f} | {run['requests']} | {run['errors']} |")
    lines += ["", "Where the CPU went, in CPU milliseconds per text answered (in-process `encode`: "
              f"{results['in_process_cpu_ms_per_text']:.2f}). The server's event loop (its main thread) does HTTP, "
              "JSON and validation; the rest of the server is the forward pass and tokenization. Model busy: the "
              "share of the run a forward pass was running.", "",
              "| server | texts / request | server | of it, event loop | load generator | load generator's share "
              "of the cores | model busy | texts / forward pass |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        busy = (f"{run['model_busy']:.0%} | {run['texts_per_batch']:.1f}" if "model_busy" in run else "- | -")
        lines.append(f"| {run['system']} | {run['per_request']} | {run['server_cpu_ms_per_text']:.2f} | "
                     f"{run['loop_cpu_ms_per_text']:.2f} | {run['client_cpu_ms_per_text']:.2f} | "
                     f"{run['client_cpu_share']:.1%} | {busy} |")
    lines += ["", "The steps outside the model, in CPU microseconds, measured in the benchmark's process after the "
              "runs (`step_costs`; the app's figure is through the whole ASGI app, with a stand-in for the model: "
              "what else the event loop spends in a run is uvicorn's HTTP and the sockets'):", "",
              "| step | CPU us |", "|---|---:|"]
    lines += [f"| {step} | {microseconds:.1f} |" for step, microseconds in results["step_cpu_us"].items()]
    lines += ["", "Made by `.venv/bin/python benchmarks/bench_serve.py`."]
    (RESULTS / "serve.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
