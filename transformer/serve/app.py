"""The HTTP side of `transformer serve`: an OpenAI-compatible embedding API on FastAPI.

    POST /v1/embeddings   {"input": "text" | ["text", ...] | [ids] | [[ids], ...], "model",
                           "encoding_format": "float" | "base64", "dimensions", "truncate"}
    GET  /v1/models       the one model this process serves
    POST /tokenize        {"input": "text" | ["text", ...], "add_special_tokens"} -> tokens
    POST /similarity      {"source_sentence": "text", "sentences": ["text", ...]} -> cosines
    POST /rerank          (--kind rerank, a cross-encoder) {"query", "texts", "raw_scores",
                          "return_text", "truncate"} -> [{"index", "score", "text"?}], best first,
                          as text-embeddings-inference answers it
    POST /embed_sparse    (--kind sparse, a SPLADE model) {"inputs": "text" | ["text", ...],
                          "truncate"} -> [[{"index", "value"}, ...], ...]: each text's non-zero
                          vocabulary weights, by index, as text-embeddings-inference answers it
    GET  /health          200 {"status": "ok"} once the model is loaded and warm
    GET  /metrics         Prometheus text (transformer.serve.metrics)
    GET  /openapi.json    the schema (and /docs, its page)

Every error is a JSON body as OpenAI writes it, {"error": {"message", "type", "param",
"code"}}, with a 4xx status naming the field that is wrong (`param`): 400 for a malformed
request, 401 for a missing or wrong API key, 404 for another model's name, 413 for a body
over the size limit, 429 (with Retry-After) when the queue is full, 503 while shutting down.
"""

import asyncio
import base64
import hmac
import time
from contextlib import asynccontextmanager
from typing import List, Literal, Optional, Union

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from transformer.serve.batcher import Batcher, Closed, QueueFull
from transformer.serve.engine import InputError, shorten
from transformer.serve.metrics import Metrics

MAX_INPUTS = 2048  # texts in one request, as OpenAI allows
MAX_BODY_BYTES = 16 * 1024 * 1024
INLINE_TOKENIZE_CHARACTERS = 2048  # a request's texts up to this size are tokenized on the event loop
INPUT_KINDS = "a string, a list of strings, a list of token ids (integers), or a list of lists of token ids"


# --- the request bodies (their JSON Schema is the OpenAPI schema) ------------------------------


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Union[StrictStr, List[StrictStr], List[StrictInt], List[List[StrictInt]]] = Field(
        description="The texts to embed, or token ids of the served model's tokenizer (taken as they are: "
                    "no special tokens are added).")
    model: Optional[StrictStr] = Field(None, description="The served model's name (GET /v1/models); optional.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: each vector's little-endian float32 bytes.")
    dimensions: Optional[StrictInt] = Field(
        None, ge=1, description="Keep the first `dimensions` numbers of each vector and scale it back to unit length.")
    truncate: StrictBool = Field(
        True, description="Cut inputs longer than the model's limit (true, as sentence-transformers does) "
                          "or refuse them with a 400 (false).")
    user: Optional[StrictStr] = Field(None, description="Accepted for OpenAI compatibility; unused.")


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Union[StrictStr, List[StrictStr]]
    add_special_tokens: StrictBool = True
    model: Optional[StrictStr] = None


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sentence: StrictStr
    sentences: List[StrictStr]
    model: Optional[StrictStr] = None
    truncate: StrictBool = True


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr = Field(description="The query every text is scored against.")
    texts: List[StrictStr] = Field(description="The texts to score and rank.")
    raw_scores: StrictBool = Field(False, description="The model's logits instead of its activation's scores "
                                                      "(sigmoid for a one-label cross-encoder).")
    return_text: StrictBool = Field(False, description="Put each text in its result.")
    truncate: StrictBool = Field(False, description="Cut a pair longer than the model's limit (true, as "
                                                    "sentence-transformers' CrossEncoder does) or refuse it (false, "
                                                    "text-embeddings-inference's default).")
    truncation_direction: Literal["Right", "right"] = Field(
        "Right", description="Where a pair is cut: the longer text's end (the only direction here).")
    model: Optional[StrictStr] = None


class SparseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Union[StrictStr, List[StrictStr]] = Field(description="A text or a list of texts.")
    truncate: StrictBool = Field(False, description="Cut a text longer than the model's limit (true) or refuse it "
                                                    "(false, text-embeddings-inference's default).")
    truncation_direction: Literal["Right", "right"] = Field("Right", description="Where a text is cut: its end.")
    model: Optional[StrictStr] = None


class ApiError(Exception):
    """An error answered as OpenAI's JSON error body."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def response(self):
        return error_response(self.status, self.message, self.param, self.code, self.kind, self.headers)


def json_response(content, status=200, headers=None):
    """content -> a JSON response, written by orjson. NumPy arrays in it are written as their
    numbers: pass float64 rows (a float32 vector widened) to get each number's shortest repr as
    a float64, the values `json.dumps(vector.tolist())` writes, some thirty times faster."""
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(status, message, param=None, code=None, kind="invalid_request_error", headers=None):
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json_response(body, status, headers)


def parse_body(model, body):
    """A request's body (bytes) -> the pydantic `model` it must be, or ApiError 400 naming the
    field. pydantic reads the JSON itself, in one pass (no json.loads, then a walk of the dicts)."""
    if not body.strip():
        raise ApiError(400, "the request has no body; send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        # FastAPI's errors for a body start their location with "body": describe them alike.
        message, param = describe_validation_error([{**item, "loc": ("body", *item["loc"])}
                                                    for item in error.errors()])
        raise ApiError(400, message, param) from None


def body_schema(model):
    """The OpenAPI requestBody of an endpoint that reads its body with `parse_body`."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema(
        ref_template="#/components/schemas/{model}")}}}}


def describe_validation_error(errors):
    """pydantic's errors for a request body -> (message, param) naming the first field wrong."""
    error = errors[0]
    location = [str(part) for part in error["loc"][1:]]  # ("body", "input", ...) -> ["input", ...]
    field = location[0] if location else None
    kind = error["type"]
    if kind == "json_invalid":
        return f"the request body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}", None
    if field is None or kind in ("model_attributes_type", "dict_type"):
        if kind == "missing":
            return "the request has no body; send a JSON object", None
        return "the request body must be a JSON object", None
    if kind == "missing":
        return f"{field} is required", field
    if kind == "extra_forbidden":
        return f"{field} is not a field of this request", field
    if field == "input" and len(location) > 1 and location[1] in ("str", "list[str]", "list[int]", "list[list[int]]"):
        return f"input must be {INPUT_KINDS}", "input"
    if field == "inputs" and len(location) > 1 and location[1] in ("str", "list[str]"):
        return "inputs must be a string or a list of strings", "inputs"
    return f"{'.'.join(location)}: {error['msg']}", field


# --- the app ------------------------------------------------------------------------------------


# The endpoints each kind of model adds to /v1/models, /health and /metrics.
KIND_ENDPOINTS = {"embed": ("POST /v1/embeddings", "POST /tokenize", "POST /similarity"),
                  "rerank": ("POST /rerank",), "sparse": ("POST /embed_sparse",)}


def create_app(engine, max_batch_tokens=16384, max_queue=1024, threads=None, api_key=None):
    """The FastAPI app serving `engine`: transformer.serve.engine's Engine (sentence vectors),
    RerankEngine (a cross-encoder) or SparseEngine (SPLADE); its `kind` says which endpoints
    the app has."""
    if max_batch_tokens < engine.max_tokens:
        raise ValueError(f"max_batch_tokens is {max_batch_tokens}, less than one text of {engine.max_tokens} tokens "
                         f"(the model's limit); give at least {engine.max_tokens}")

    def thread_setup():
        if threads is not None:  # Numba's thread count is per thread: set it where the model runs
            from transformer.threads import set_num_threads

            set_num_threads(threads)

    metrics = Metrics(queue_depth=lambda: batcher.admitted)
    batcher = Batcher(engine.run, max_batch_tokens, max_queue, thread_setup=thread_setup, on_batch=metrics.batch)
    created = int(time.time())
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        # One forward pass before the first request: loads (or compiles) the kernels.
        await batcher.embed(engine.warm_up_input())
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.close()  # uvicorn has stopped taking requests and waited for the open ones

    served = {"embed": "OpenAI-compatible sentence embeddings", "rerank": "Reranking with the cross-encoder",
              "sparse": "Sparse (SPLADE) vectors"}[engine.kind]
    app = FastAPI(title="transformer embeddings", version="1", lifespan=lifespan,
                  description=f"{served} {engine.name}." if engine.kind != "embed" else f"{served} from {engine.name}.")

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request, error):
        message, param = describe_validation_error(error.errors())
        return error_response(400, message, param)

    @app.exception_handler(ApiError)
    async def on_api_error(request, error):
        return error.response()

    @app.exception_handler(BodyTooLarge)  # raised while an endpoint reads its body (parse_body's callers)
    async def on_body_too_large(request, error):
        return body_too_large()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, error):
        # FastAPI reports a failure while reading the body as 400 "error parsing the body": a
        # chunked body (no Content-Length) cut off at the size limit is a 413.
        if isinstance(error.__cause__, BodyTooLarge):
            return body_too_large()
        message = (f"no such endpoint: {request.method} {request.url.path} (this server runs a {engine.kind} model: "
                   f"{', '.join(KIND_ENDPOINTS[engine.kind])})") if error.status_code == 404 else str(error.detail)
        return error_response(error.status_code, message, headers=getattr(error, "headers", None))

    def check_model(name):
        if name is not None and name != engine.name:
            raise ApiError(404, f"the model {name!r} is not served here; this server serves {engine.name!r}",
                           "model", "model_not_found")

    def check_texts(texts, param="input"):
        if not texts:
            raise ApiError(400, f"{param} is empty; give at least one text", param)
        if len(texts) > min(MAX_INPUTS, max_queue):
            raise ApiError(400, f"{param} holds {len(texts)} items; at most {min(MAX_INPUTS, max_queue)} per request",
                           param)
        for index, text in enumerate(texts):
            if isinstance(text, str) and not text.strip():
                raise ApiError(400, f"{param}[{index}] is an empty text", f"{param}[{index}]")
            if isinstance(text, list) and not text:
                raise ApiError(400, f"{param}[{index}] is an empty list of token ids", f"{param}[{index}]")

    async def token_ids(inputs, truncate, param="input"):
        """A request's input -> [token ids]. Short texts are tokenized on the event loop, in
        less time than a hand-off to a thread costs; longer ones on a thread, so that the loop
        goes on answering meanwhile."""
        check_texts(inputs, param)
        try:
            if isinstance(inputs[0], str):
                if sum(map(len, inputs)) <= INLINE_TOKENIZE_CHARACTERS:
                    return engine.tokenize(inputs, truncate, param)
                return await asyncio.to_thread(engine.tokenize, inputs, truncate, param)
            return engine.check_ids(inputs, truncate, param)
        except InputError as error:
            raise ApiError(400, str(error), error.param, "context_length_exceeded"
                           if "limit" in str(error) else "invalid_token_id") from None

    async def embed(sequences):
        try:
            vectors = await batcher.embed(sequences)
        except QueueFull as error:
            raise ApiError(429, f"{error}; at most {max_queue} texts wait at once", None, "queue_full",
                           "rate_limit_error", headers={"Retry-After": str(error.retry_after)}) from None
        except Closed:
            raise ApiError(503, "the server is shutting down", None, "shutting_down", "server_error",
                           headers={"Retry-After": "1"}) from None
        metrics.embedded(len(sequences), sum(map(len, sequences)))
        return vectors

    def model_card():
        card = {"id": engine.name, "object": "model", "created": created, "owned_by": "transformer",
                "kind": engine.kind, "max_input_tokens": engine.max_tokens}
        if engine.kind == "embed":
            card["dimension"] = engine.dimension
        return card

    @app.get("/v1/models", summary="The model this server serves")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}", summary="One model, by name")
    async def model(name: str):
        check_model(name)
        return model_card()

    @app.get("/health", summary="200 once the model is loaded and warm; 503 while starting or stopping")
    async def health():
        if not state["ready"]:
            return error_response(503, "not ready", code="not_ready", kind="server_error")
        return {"status": "ok", "model": engine.name, "kind": engine.kind, "queue": batcher.admitted}

    @app.get("/metrics", summary="Counters and histograms in the Prometheus text format",
             response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    if engine.kind == "embed":
        add_embedding_routes(app, engine, check_model, check_texts, token_ids, embed)
    elif engine.kind == "rerank":
        add_rerank_route(app, engine, check_model, check_texts, embed)
    else:
        add_sparse_route(app, engine, check_model, check_texts, embed)

    known = {route.path for route in app.routes}
    return Guard(app, metrics, known, api_key)


def add_rerank_route(app, engine, check_model, check_texts, run):
    """POST /rerank (text-embeddings-inference's request and answer)."""

    @app.post("/rerank", summary="Score texts against a query with the cross-encoder; best first")
    async def rerank(body: RerankRequest):
        check_model(body.model)
        if not body.query.strip():
            raise ApiError(400, "query is an empty text", "query")
        check_texts(body.texts, "texts")
        try:
            pairs = await asyncio.to_thread(engine.pairs, body.query, body.texts, body.truncate)
        except InputError as error:
            raise ApiError(400, str(error), error.param, "context_length_exceeded") from None
        scores = engine.scores(await run(pairs), body.raw_scores)  # [n]
        order = np.argsort(-scores, kind="stable")  # best first; ties keep the order sent
        return json_response([{"index": int(i), "score": float(scores[i]),
                               **({"text": body.texts[i]} if body.return_text else {})} for i in order])


def add_sparse_route(app, engine, check_model, check_texts, run):
    """POST /embed_sparse (text-embeddings-inference's request and answer)."""

    @app.post("/embed_sparse", summary="SPLADE weights of texts: each text's non-zero vocabulary entries")
    async def embed_sparse(body: SparseRequest):
        check_model(body.model)
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        check_texts(texts, "inputs")
        try:
            items = await asyncio.to_thread(engine.texts, texts, body.truncate)
        except InputError as error:
            raise ApiError(400, str(error), error.param, "context_length_exceeded") from None
        weights = await run(items)  # [n, vocab]
        return json_response([[{"index": int(i), "value": float(row[i])} for i in np.flatnonzero(row)]
                              for row in weights])


def add_embedding_routes(app, engine, check_model, check_texts, token_ids, embed):
    """POST /v1/embeddings, /tokenize and /similarity, for a sentence model."""

    # The body is read by parse_body rather than FastAPI's own parameter: the one busy endpoint
    # skips FastAPI's json.loads and dependency machinery; the schema is the same class's.
    @app.post("/v1/embeddings", summary="Embed texts or token ids (OpenAI's embeddings API)",
              openapi_extra=body_schema(EmbeddingsRequest))
    async def embeddings(request: Request):
        body = parse_body(EmbeddingsRequest, await request.body())
        check_model(body.model)
        if body.dimensions is not None and body.dimensions > engine.dimension:
            raise ApiError(400, f"dimensions is {body.dimensions}; {engine.name} makes vectors of "
                                f"{engine.dimension}, so give 1 to {engine.dimension}", "dimensions")
        inputs = body.input
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]  # one text, or one list of token ids
        sequences = await token_ids(inputs, body.truncate)
        vectors = await embed(sequences)  # [n, dim]
        if body.dimensions is not None:
            vectors = shorten(vectors, body.dimensions)  # [n, dimensions]
        if body.encoding_format == "base64":
            encoded = [base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii") for vector in vectors]
        else:
            encoded = vectors.astype(np.float64)  # [n, dim]: rows written as float64 numbers, each exact
        tokens = sum(map(len, sequences))
        return json_response({
            "object": "list",
            "data": [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(encoded)],
            "model": engine.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    @app.post("/tokenize", summary="Texts -> the model's tokens, ids and character offsets")
    async def tokenize(body: TokenizeRequest):
        check_model(body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        check_texts(texts)

        def split(text):
            batch = engine.model.tokenizer([text], truncation=True, max_length=engine.max_tokens,
                                           add_special_tokens=body.add_special_tokens, return_offsets_mapping=True,
                                           return_special_tokens_mask=True)
            return [{"id": int(token), "text": engine.model.tokenizer.id_to_token(int(token)), "start": int(start),
                     "stop": int(stop), "special": bool(special)}
                    for token, (start, stop), special in zip(batch["input_ids"][0], batch["offset_mapping"][0],
                                                             batch["special_tokens_mask"][0])]

        tokens = await asyncio.to_thread(lambda: [split(text.lower() if engine.model.do_lower_case else text)
                                                  for text in texts])
        return {"model": engine.name, "tokens": tokens}

    @app.post("/similarity", summary="Cosine similarity of a source sentence to each of several sentences")
    async def similarity(body: SimilarityRequest):
        check_model(body.model)
        check_texts([body.source_sentence], "source_sentence")
        check_texts(body.sentences, "sentences")
        sequences = (await token_ids([body.source_sentence], body.truncate, "source_sentence")
                     + await token_ids(body.sentences, body.truncate, "sentences"))
        vectors = shorten(await embed(sequences), engine.dimension)  # unit length: a dot product is the cosine
        tokens = sum(map(len, sequences))
        return {"model": engine.name, "similarities": (vectors[1:] @ vectors[0]).tolist(),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class BodyTooLarge(Exception):
    """The request body went past MAX_BODY_BYTES while it was being read."""


def body_too_large():
    return error_response(413, f"the request body is over {MAX_BODY_BYTES // 2**20} MiB", None, "body_too_large")


class Guard:
    """ASGI middleware around the app: the API key, the body size limit, and the request
    metrics (count by endpoint and status, latency)."""

    def __init__(self, app, metrics, known_paths, api_key=None):
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in self.known_paths else ("/v1/models/{name}" if path.startswith("/v1/models/")
                                                          else "other")
        status = {}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        response = self._refusal(scope, path)
        if response is not None:
            await response(scope, receive, send_counted)
        else:
            received = 0

            async def receive_bounded():
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise BodyTooLarge()
                return message

            await self.app(scope, receive_bounded, send_counted)  # the app answers BodyTooLarge with 413
        self.metrics.request(endpoint, status.get("code", 500), time.perf_counter() - started)

    def _refusal(self, scope, path):
        """The response refusing a request before the app sees it, or None."""
        headers = dict(scope["headers"])
        if self.api_key is not None and path != "/health":
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.api_key):
                return error_response(401, "a missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                                      None, "invalid_api_key")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return body_too_large()
        return None
