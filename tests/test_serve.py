"""`transformer serve`, called as its users call it: a server on a loopback port, the real
OpenAI client (and plain HTTP for what the client cannot send), its answers checked against
SentenceEncoder.encode in this process."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import numpy as np
import pytest
from openai import OpenAI

from transformer.sentence import SentenceEncoder

MODEL = "all-MiniLM-L6-v2"
MAX_QUEUE = 64
TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Un homme mange du pain. ¿Dónde está la biblioteca? 東京は日本の首都です。",
    "word " * 400,  # past the model's 256 tokens: truncated, as encode truncates
]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(*options):
    """`transformer serve` on a free loopback port -> (process, base url), once /health says ok."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "transformer", "serve", "--model", MODEL, "--port", str(port),
                                "--log-level", "warning", *options], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not become healthy within 180 s")


def stop_server(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.stderr.close()


@pytest.fixture(scope="module")
def server(minilm_dir):
    process, url = start_server("--max-queue", str(MAX_QUEUE), "--max-batch-tokens", "4096")
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir)


def token_ids(encoder, text):
    """The ids the model embeds for `text` (special tokens in, cut at 256, no padding)."""
    return encoder.tokenizer([text], truncation=True, max_length=encoder.max_seq_length)["input_ids"][0].tolist()


def cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def post(url, path, body, **headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(f"{url}{path}", content=data, headers={"content-type": "application/json", **headers},
                      timeout=60)


# --- the OpenAI client -------------------------------------------------------------------------


def test_openai_client_gets_the_vectors_encode_gives(client, encoder):
    response = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    served = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert [item.index for item in response.data] == list(range(len(TEXTS)))
    assert served.shape == (len(TEXTS), 384)
    assert cosines(served, encoder.encode(TEXTS)).min() >= 0.9999999
    tokens = [len(token_ids(encoder, text)) for text in TEXTS]
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(tokens)
    assert response.model == MODEL


def test_openai_client_default_base64_decodes_to_the_same_vectors(client, encoder):
    # The client asks for base64 unless told otherwise, and decodes it itself.
    response = client.embeddings.create(model=MODEL, input=TEXTS[:3])
    served = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert cosines(served, encoder.encode(TEXTS[:3])).min() >= 0.9999999


def test_base64_is_little_endian_float32_bytes(server, encoder):
    body = post(server, "/v1/embeddings", {"input": TEXTS[0], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    floats = post(server, "/v1/embeddings", {"input": TEXTS[0]}).json()["data"][0]["embedding"]
    np.testing.assert_array_equal(vector, np.array(floats, dtype=np.float32))
    assert cosines([vector], [encoder.encode(TEXTS[0])])[0] >= 0.9999999


def test_dimensions_truncate_and_renormalize(client, encoder):
    response = client.embeddings.create(model=MODEL, input=TEXTS[:3], dimensions=64, encoding_format="float")
    served = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert served.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-6)
    expected = encoder.encode(TEXTS[:3])[:, :64]
    assert cosines(served, expected).min() >= 0.9999999


def test_token_ids_are_embedded_as_given(client, encoder):
    ids = [token_ids(encoder, text) for text in TEXTS[:3]]
    one = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
    many = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    expected = encoder.encode(TEXTS[:3])
    assert cosines([one.data[0].embedding], expected[:1])[0] >= 0.9999999
    assert cosines([item.embedding for item in many.data], expected).min() >= 0.9999999
    assert many.usage.prompt_tokens == sum(map(len, ids))


def test_models_lists_the_one_served_model(client):
    assert [model.id for model in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


# --- the other endpoints -----------------------------------------------------------------------


def test_tokenize_gives_the_tokenizers_ids_and_offsets(server, encoder):
    body = post(server, "/tokenize", {"input": ["Hello world!"]}).json()
    expected = encoder.tokenizer(["Hello world!"], return_offsets_mapping=True)
    assert [token["id"] for token in body["tokens"][0]] == expected["input_ids"][0].tolist()
    assert [token["text"] for token in body["tokens"][0]] == ["[CLS]", "hello", "world", "!", "[SEP]"]
    assert [[token["start"], token["stop"]] for token in body["tokens"][0]] == expected["offset_mapping"][0].tolist()
    assert [token["special"] for token in body["tokens"][0]] == [True, False, False, False, True]


def test_similarity_is_the_cosine_of_encodes_vectors(server, encoder):
    body = post(server, "/similarity", {"source_sentence": TEXTS[0], "sentences": TEXTS[1:4]}).json()
    vectors = encoder.encode(TEXTS[:4])
    np.testing.assert_allclose(body["similarities"], vectors[1:] @ vectors[0], atol=1e-6)


def test_metrics_count_requests_tokens_and_batches(server):
    post(server, "/v1/embeddings", {"input": TEXTS[:2]})
    text = httpx.get(f"{server}/metrics").text
    counted = [line for line in text.splitlines()
               if line.startswith('transformer_requests_total{endpoint="/v1/embeddings",status="200"}')]
    assert counted and int(counted[0].split()[-1]) >= 1
    for name in ("transformer_tokens_total", "transformer_batch_size_count", "transformer_queue_depth",
                 'transformer_request_seconds_bucket{endpoint="/v1/embeddings",le="+Inf"}'):
        assert any(line.startswith(name) for line in text.splitlines()), name


def test_openapi_schema_describes_the_endpoints(server):
    schema = httpx.get(f"{server}/openapi.json").json()
    for path in ("/v1/embeddings", "/v1/models", "/tokenize", "/similarity", "/health", "/metrics"):
        assert path in schema["paths"]


# --- malformed requests ------------------------------------------------------------------------

MALFORMED = [
    # (path, body, status, param, words in the message)
    ("/v1/embeddings", "{not json", 400, None, "not valid JSON"),
    ("/v1/embeddings", [1, 2], 400, None, "JSON object"),
    ("/v1/embeddings", {}, 400, "input", "required"),
    ("/v1/embeddings", {"input": 5}, 400, "input", "a list of strings"),
    ("/v1/embeddings", {"input": ["fine", 5]}, 400, "input", "a list of strings"),
    ("/v1/embeddings", {"input": None}, 400, "input", "a list of strings"),
    ("/v1/embeddings", {"input": []}, 400, "input", "empty"),
    ("/v1/embeddings", {"input": ""}, 400, "input[0]", "empty"),
    ("/v1/embeddings", {"input": ["a", "  "]}, 400, "input[1]", "empty"),
    ("/v1/embeddings", {"input": [[]]}, 400, "input[0]", "empty"),
    ("/v1/embeddings", {"input": [101, 99999999, 102]}, 400, "input[0]", "token ids"),
    ("/v1/embeddings", {"input": [[101, -1, 102]]}, 400, "input[0]", "token ids"),
    ("/v1/embeddings", {"input": ["x"] * (MAX_QUEUE + 1)}, 400, "input", f"at most {MAX_QUEUE}"),
    ("/v1/embeddings", {"input": "word " * 400, "truncate": False}, 400, "input[0]", "256 tokens"),
    ("/v1/embeddings", {"input": [101] * 300, "truncate": False}, 400, "input[0]", "256"),
    ("/v1/embeddings", {"input": "x", "truncate": "yes"}, 400, "truncate", "bool"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 400, "encoding_format", "float"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 400, "dimensions", "greater than or equal to 1"),
    ("/v1/embeddings", {"input": "x", "dimensions": 385}, 400, "dimensions", "1 to 384"),
    ("/v1/embeddings", {"input": "x", "dimensions": "64"}, 400, "dimensions", "integer"),
    ("/v1/embeddings", {"input": "x", "model": "text-embedding-3-small"}, 404, "model", "not served"),
    ("/v1/embeddings", {"input": "x", "colour": "red"}, 400, "colour", "not a field"),
    ("/tokenize", {"input": 3}, 400, "input", "input"),
    ("/tokenize", {"input": []}, 400, "input", "empty"),
    ("/similarity", {"source_sentence": "a"}, 400, "sentences", "required"),
    ("/similarity", {"source_sentence": "a", "sentences": []}, 400, "sentences", "empty"),
    ("/similarity", {"source_sentence": "", "sentences": ["b"]}, 400, "source_sentence[0]", "empty"),
]


@pytest.mark.parametrize("path, body, status, param, words", MALFORMED,
                         ids=[f"{path}:{json.dumps(body)[:40]}" for path, body, *_ in MALFORMED])
def test_malformed_request_gets_a_4xx_naming_the_field(server, path, body, status, param, words):
    response = post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"], error["message"]


def test_a_body_over_the_limit_gets_413(server):
    from transformer.serve.app import MAX_BODY_BYTES

    response = post(server, "/v1/embeddings", b'{"input": "' + b"a" * MAX_BODY_BYTES + b'"}')
    assert response.status_code == 413
    assert "MiB" in response.json()["error"]["message"]


def test_a_chunked_body_over_the_limit_gets_413(server):
    from transformer.serve.app import MAX_BODY_BYTES

    def chunks():  # no Content-Length: the server counts the bytes as they come
        yield b'{"input": "'
        for _ in range(MAX_BODY_BYTES // 2**20 + 1):
            yield b"a" * 2**20
        yield b'"}'

    response = httpx.post(f"{server}/v1/embeddings", content=chunks(), headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code == 413
    assert "MiB" in response.json()["error"]["message"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_an_unknown_endpoint_or_method_gets_an_openai_error_body(server):
    missing = httpx.post(f"{server}/v1/completions", json={})
    assert missing.status_code == 404 and "no such endpoint" in missing.json()["error"]["message"]
    wrong = httpx.get(f"{server}/v1/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["message"] == "Method Not Allowed"


def test_the_openai_client_raises_on_a_bad_request(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=MODEL, input="x", dimensions=1000)


# --- load --------------------------------------------------------------------------------------


def test_a_burst_beyond_the_queue_gets_429s_and_the_server_stays_correct(server, client, encoder):
    texts = [f"{i} " + "a long sentence about the weather and the sea " * 20 for i in range(8)]
    barrier = threading.Barrier(40)
    statuses, headers = [], []

    def one_request():
        with httpx.Client(timeout=120) as http:
            barrier.wait()
            response = http.post(f"{server}/v1/embeddings", json={"input": texts})
            statuses.append(response.status_code)
            headers.append(response.headers.get("retry-after"))
            if response.status_code == 200:
                assert len(response.json()["data"]) == len(texts)

    threads = [threading.Thread(target=one_request) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    assert set(statuses) <= {200, 429}
    assert all(header == "1" for status, header in zip(statuses, headers) if status == 429)
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    response = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert cosines([item.embedding for item in response.data], encoder.encode(TEXTS)).min() >= 0.9999999


def test_sigterm_answers_the_requests_in_flight_then_exits(minilm_dir):
    process, url = start_server("--threads", "1")
    try:
        texts = [f"{i} " + "the requests already in are answered before the process exits " * 20 for i in range(48)]
        result = {}

        def slow_request():
            response = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=120)
            result["status"], result["count"] = response.status_code, len(response.json().get("data", []))

        thread = threading.Thread(target=slow_request)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the server holds the request's texts
            depth = [line for line in httpx.get(f"{url}/metrics").text.splitlines()
                     if line.startswith("transformer_queue_depth")]
            if depth and int(depth[0].split()[-1]) > 0:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=120)
        assert result == {"status": 200, "count": len(texts)}
        assert process.wait(timeout=60) in (0, 128 + signal.SIGTERM)
    finally:
        stop_server(process)


# --- in process ----------------------------------------------------------------------------------


def test_api_key_is_required_when_set(minilm_dir, encoder):
    from transformer.serve.app import create_app
    from transformer.serve.engine import Engine

    app = create_app(Engine(encoder, MODEL), api_key="secret")

    async def calls():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [(await http.get("/v1/models")).status_code,
                    (await http.get("/v1/models", headers={"authorization": "Bearer wrong"})).status_code,
                    (await http.get("/v1/models", headers={"authorization": "Bearer secret"})).status_code]

    import asyncio

    assert asyncio.run(calls()) == [401, 401, 200]


def test_max_batch_tokens_below_one_text_is_refused(encoder):
    from transformer.serve.app import create_app
    from transformer.serve.engine import Engine

    with pytest.raises(ValueError, match="max_batch_tokens is 100.*at least 256"):
        create_app(Engine(encoder, MODEL), max_batch_tokens=100)


def test_the_batcher_cuts_length_sorted_batches_within_the_token_budget():
    from transformer.serve.batcher import Batcher

    batcher = Batcher(lambda sequences: None, max_batch_tokens=100, max_queue=100)
    items = [([0] * length, None) for length in (10, 50, 20, 40, 30)]
    batches = batcher._batches(items)
    assert [[len(ids) for ids, _ in batch] for batch in batches] == [[50, 40], [30, 20, 10]]
    assert all(len(batch) * len(batch[0][0]) <= 100 for batch in batches)


def test_float_vectors_are_written_with_the_exact_values_of_their_float32_numbers():
    from transformer.serve.app import json_response

    rng = np.random.default_rng(0)
    scales = np.float32(10.0) ** rng.integers(-30, 4, size=(16, 384)).astype(np.float32)
    vectors = rng.standard_normal((16, 384)).astype(np.float32) * scales  # [16, 384], tiny to large numbers
    written = json.loads(json_response({"data": list(vectors.astype(np.float64))}).body)["data"]
    assert written == vectors.tolist()  # each number parses to the float32 value, exactly, as json.dumps writes it


def test_the_forward_thread_starts_the_next_batch_while_the_event_loop_is_busy():
    import asyncio

    from transformer.serve.batcher import Batcher

    first_running, release, second_started = threading.Event(), threading.Event(), threading.Event()

    def embed_batch(sequences):  # [token ids] -> [n, 2]: each row (first id, length)
        if second_started.is_set() or first_running.is_set():
            second_started.set()
        else:
            first_running.set()
            release.wait(30)
        return np.array([[ids[0], len(ids)] for ids in sequences], dtype=np.float32)

    async def calls():
        batcher = Batcher(embed_batch, max_batch_tokens=8, max_queue=100)
        batcher.start()
        first = asyncio.ensure_future(batcher.embed([[1, 2, 3, 4, 5, 6]]))
        assert await asyncio.to_thread(first_running.wait, 30)
        second = asyncio.ensure_future(batcher.embed([[7, 8, 9], [10]]))
        await asyncio.sleep(0)  # the second request joins the queue while the first batch runs
        release.set()
        # The event loop blocks here: the forward thread must take the next batch by itself.
        assert second_started.wait(30)
        results = await first, await second
        await batcher.close()
        return results

    first, second = asyncio.run(calls())
    np.testing.assert_array_equal(first, [[1, 6]])
    np.testing.assert_array_equal(second, [[7, 3], [10, 1]])  # in the order sent, though batched longest first
