"""The server's counters, in the Prometheus text format (`GET /metrics`).

    transformer_requests_total{endpoint="/v1/embeddings",status="200"} 12
    transformer_request_seconds_bucket{endpoint="/v1/embeddings",le="0.05"} 9
    transformer_batch_size_bucket{le="8"} 3
    transformer_queue_depth 0

Written out by hand (a few counters and histograms need no client library); the format is
https://prometheus.io/docs/instrumenting/exposition_formats/.
"""

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768)


class Histogram:
    """Counts of observations at or below each bucket's upper bound, their sum and count."""

    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.sum += value
        self.count += 1

    def lines(self, name, labels=""):
        inner = labels + "," if labels else ""
        for bound, count in zip(self.buckets, self.counts):
            yield f'{name}_bucket{{{inner}le="{bound}"}} {count}'
        yield f'{name}_bucket{{{inner}le="+Inf"}} {self.count}'
        yield f"{name}_sum{{{labels}}} {self.sum:.6f}" if labels else f"{name}_sum {self.sum:.6f}"
        yield f"{name}_count{{{labels}}} {self.count}" if labels else f"{name}_count {self.count}"


class Metrics:
    """What `GET /metrics` reports. `queue_depth` is read from the batcher when rendered."""

    def __init__(self, queue_depth=lambda: 0):
        self.queue_depth = queue_depth
        self._lock = threading.Lock()
        self.requests = defaultdict(int)  # (endpoint, status) -> count
        self.latency = defaultdict(lambda: Histogram(LATENCY_BUCKETS))  # endpoint -> seconds
        self.tokens = 0  # tokens embedded (prompt tokens of /v1/embeddings and /similarity)
        self.texts = 0
        self.batch_size = Histogram(SIZE_BUCKETS)
        self.batch_tokens = Histogram(TOKEN_BUCKETS)
        self.forward = Histogram(LATENCY_BUCKETS)

    def request(self, endpoint, status, seconds):
        with self._lock:
            self.requests[endpoint, status] += 1
            self.latency[endpoint].observe(seconds)

    def embedded(self, texts, tokens):
        with self._lock:
            self.texts += texts
            self.tokens += tokens

    def batch(self, rows, padded_tokens, seconds):
        with self._lock:
            self.batch_size.observe(rows)
            self.batch_tokens.observe(padded_tokens)
            self.forward.observe(seconds)

    def render(self):
        with self._lock:
            lines = ["# HELP transformer_requests_total HTTP requests answered, by endpoint and status.",
                     "# TYPE transformer_requests_total counter"]
            lines += [f'transformer_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}'
                      for (endpoint, status), count in sorted(self.requests.items())]
            lines += ["# HELP transformer_request_seconds Time from request to response, by endpoint.",
                      "# TYPE transformer_request_seconds histogram"]
            for endpoint, histogram in sorted(self.latency.items()):
                lines += histogram.lines("transformer_request_seconds", f'endpoint="{endpoint}"')
            lines += ["# HELP transformer_texts_total Texts embedded.", "# TYPE transformer_texts_total counter",
                      f"transformer_texts_total {self.texts}",
                      "# HELP transformer_tokens_total Tokens embedded (special tokens included).",
                      "# TYPE transformer_tokens_total counter", f"transformer_tokens_total {self.tokens}",
                      "# HELP transformer_batch_size Texts per forward pass.", "# TYPE transformer_batch_size histogram"]
            lines += self.batch_size.lines("transformer_batch_size")
            lines += ["# HELP transformer_batch_tokens Padded tokens per forward pass (rows x longest row).",
                      "# TYPE transformer_batch_tokens histogram"]
            lines += self.batch_tokens.lines("transformer_batch_tokens")
            lines += ["# HELP transformer_forward_seconds Time of one forward pass.",
                      "# TYPE transformer_forward_seconds histogram"]
            lines += self.forward.lines("transformer_forward_seconds")
            lines += ["# HELP transformer_queue_depth Texts admitted and not yet answered.",
                      "# TYPE transformer_queue_depth gauge", f"transformer_queue_depth {self.queue_depth()}"]
        return "\n".join(lines) + "\n"
