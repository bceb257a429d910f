"""`transformer serve`: one sentence model behind an OpenAI-compatible HTTP API.

    pip install 'transformer[serve]'
    transformer serve --model all-MiniLM-L6-v2 --port 8000

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.embeddings.create(model="all-MiniLM-L6-v2", input=["A man is eating food."])

Four parts, each readable alone:

  engine.py   the model: texts -> token ids -> vectors (the steps of SentenceEncoder.encode)
  batcher.py  dynamic batching: concurrent requests -> length-sorted batches under a token
              budget, run on one thread off the event loop; a bounded queue
  app.py      the HTTP API (FastAPI), its errors, the API key, the metrics
  metrics.py  the Prometheus text of GET /metrics

The web stack (FastAPI, uvicorn) is the `serve` extra; `import transformer` never imports it.
docs/serving.md says why this stack and how each endpoint behaves.
"""


def serve(model, name, host="127.0.0.1", port=8000, threads=None, max_batch_tokens=16384, max_queue=1024,
          api_key=None, log_level="info"):
    """Serve `model` as `name` until SIGTERM or Ctrl-C, which stop taking connections and
    answer the requests already in before the process exits. model: a SentenceEncoder
    (POST /v1/embeddings...), a CrossEncoder with one label (POST /rerank) or a
    SparseEncoder (POST /embed_sparse)."""
    import uvicorn

    from transformer.cross_encoder import CrossEncoder
    from transformer.serve.app import create_app
    from transformer.serve.engine import Engine, RerankEngine, SparseEngine
    from transformer.sparse import SparseEncoder

    kind = RerankEngine if isinstance(model, CrossEncoder) else SparseEngine if isinstance(model, SparseEncoder) \
        else Engine
    app = create_app(kind(model, name), max_batch_tokens=max_batch_tokens, max_queue=max_queue,
                     threads=threads, api_key=api_key)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=60, access_log=False)
    uvicorn.Server(config).run()
