"""The command line's serving, index and Ray parts (registered in transformer/cli.py):

    transformer serve --model all-MiniLM-L6-v2 --port 8000
    transformer index build notes.index --corpus notes.txt
    transformer index add notes.index "one more note"
    transformer index search notes.index where did I put the keys
    transformer embed --engine ray --input texts.parquet --output vectors.parquet
"""

import argparse
import os
import sys

from transformer.cli_common import DEFAULT_MODEL, CommandError, add_precision_option, load_sentence_encoder

SERVE_KINDS = ("embed", "rerank", "sparse")


def _count(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def _missing_extra(error, extra, what):
    return CommandError(f"{what} needs the '{extra}' extra ({error.name} is not installed): "
                        f"pip install 'transformer[{extra}]'")


# --- serve ------------------------------------------------------------------------------------


def add_serve(subparsers, common):
    parser = subparsers.add_parser(
        "serve", help="an OpenAI-compatible embedding server (POST /v1/embeddings)",
        description="Serve one model over HTTP: a sentence model's POST /v1/embeddings (OpenAI's API), "
                    "POST /tokenize, POST /similarity; a cross-encoder's POST /rerank; a SPLADE model's "
                    "POST /embed_sparse; and GET /v1/models, GET /health, GET /metrics, GET /openapi.json. "
                    "Concurrent requests are batched together. Needs the 'serve' extra. See docs/serving.md.")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"a model name or folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--kind", choices=SERVE_KINDS, default=None,
                        help="embed: a sentence model (POST /v1/embeddings); rerank: a cross-encoder with one label "
                             "(POST /rerank); sparse: a SPLADE masked-LM model (POST /embed_sparse). Default: read "
                             "from the folder (a *ForSequenceClassification config: rerank; a SpladePooling module: "
                             "sparse; else embed)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1, this "
                                                              "machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=_count(0), default=8000, help="the port (default: 8000; 0 picks a free one)")
    add_precision_option(parser)
    parser.add_argument("--backend", choices=["numpy", "numba"], default=None,
                        help="numpy (the readable reference) or numba (fast; the default when available)")
    parser.add_argument("--threads", type=_count(1), default=None, metavar="N",
                        help="threads for the forward pass (default: all cores)")
    parser.add_argument("--max-batch-tokens", type=_count(1), default=16384, metavar="N",
                        help="padded tokens (rows x longest row) in one forward pass (default: 16384)")
    parser.add_argument("--max-queue", type=_count(1), default=1024, metavar="N",
                        help="texts waiting at once; beyond it requests get 429 (default: 1024)")
    parser.add_argument("--api-key", default=os.environ.get("TRANSFORMER_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (default: $TRANSFORMER_API_KEY; none when unset)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="info")
    return parser


def run_serve(args):
    try:
        import fastapi  # noqa: F401
        import orjson  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise _missing_extra(error, "serve", "transformer serve") from None
    from transformer.serve import serve

    kind = args.kind or served_kind(args.model)
    model = load_served_model(args, kind)
    limit = model.max_length if kind == "rerank" else model.max_seq_length
    if args.max_batch_tokens < limit:
        raise CommandError(f"--max-batch-tokens {args.max_batch_tokens} is less than one text of "
                           f"{limit} tokens (the model's limit); give at least {limit}")
    serve(model, args.model, host=args.host, port=args.port, threads=args.threads,
          max_batch_tokens=args.max_batch_tokens, max_queue=args.max_queue, api_key=args.api_key or None,
          log_level=args.log_level)
    return 0


def served_kind(name_or_path):
    """What `--model` is when --kind is not given: "sparse" when its modules.json lists a
    SpladePooling, "rerank" when its config.json names a *ForSequenceClassification
    architecture, else "embed"."""
    import json

    from transformer.encoder import model_folder
    from transformer.store import resolve

    folder = model_folder(resolve(name_or_path), name_or_path)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        if any(isinstance(m, dict) and str(m.get("type", "")).endswith("SpladePooling") for m in modules):
            return "sparse"
    except (OSError, ValueError, TypeError):
        pass  # no modules.json, or one the loader will report
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if any(str(name).endswith("ForSequenceClassification") for name in config.get("architectures") or []):
            return "rerank"
    except (OSError, ValueError, AttributeError):
        pass
    return "embed"


def load_served_model(args, kind):
    """The model `transformer serve` runs for --kind: a SentenceEncoder, a CrossEncoder with one
    label, or a SparseEncoder."""
    if kind == "embed":
        return load_sentence_encoder(argparse.Namespace(model=args.model, backend=args.backend, threads=args.threads,
                                                        precision=args.precision))
    if args.threads is not None:
        from transformer.threads import set_num_threads

        set_num_threads(args.threads)
    if kind == "rerank":
        from transformer.cross_encoder import CrossEncoder

        model = CrossEncoder.from_pretrained(args.model, backend=args.backend, precision=args.precision)
        if model.num_labels != 1:
            raise CommandError(f"--kind rerank needs a cross-encoder with one label (a relevance score); {args.model} "
                               f"has {model.num_labels}")
        return model
    from transformer.sparse import SparseEncoder

    return SparseEncoder.from_pretrained(args.model, backend=args.backend, precision=args.precision)


# --- index ------------------------------------------------------------------------------------


def add_index(subparsers, common):
    parser = subparsers.add_parser(
        "index", help="a vector index on disk: build, add, search",
        description="A folder holding a corpus's texts, their embeddings and an approximate-nearest-neighbour "
                    "graph (usearch HNSW; the exact scan below 20,000 texts). Needs the 'index' extra.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", parents=[common], help="embed a corpus file into a new index")
    build.add_argument("index", help="the index folder (made or replaced)")
    build.add_argument("--corpus", "-c", required=True, help="a UTF-8 text file, one document per line")
    add = actions.add_parser("add", parents=[common], help="embed more texts into an index")
    add.add_argument("index", help="the index folder")
    add.add_argument("texts", nargs="*", help="texts to add")
    add.add_argument("--file", "-f", help="read one text per line from FILE ('-' for stdin)")
    search = actions.add_parser("search", parents=[common], help="the documents closest to a query")
    search.add_argument("index", help="the index folder")
    search.add_argument("query", nargs="+", help="the query (several words are joined by spaces)")
    search.add_argument("--top-k", "-k", type=_count(1), default=5, metavar="K", help="how many results (default: 5)")
    search.add_argument("--exact", action="store_true", help="scan every vector instead of the graph")
    return parser


def run_index(args):
    try:
        import usearch  # noqa: F401
    except ImportError as error:
        raise _missing_extra(error, "index", "transformer index") from None
    from transformer.cli import gather_texts, read_lines
    from transformer.index import IndexDamagedError, SemanticIndex

    if args.action == "build":
        texts = [text for _, text in read_lines(args.corpus, what="corpus")]
        if not texts:
            raise CommandError(f"corpus {args.corpus} has no text (every line is empty)")
        model = load_sentence_encoder(args)
        index = SemanticIndex.build(args.index, model, texts, batch_size=args.batch_size)
        print(f"indexed {len(index)} texts of {args.corpus} in {args.index}", file=sys.stderr)
        return 0
    model = load_sentence_encoder(args)
    try:
        index = SemanticIndex.open(args.index, model, batch_size=args.batch_size)
    except IndexDamagedError as error:
        raise CommandError(str(error)) from None
    if args.action == "add":
        texts = gather_texts(args)
        index.add(texts, batch_size=args.batch_size)
        print(f"added {len(texts)} texts; {args.index} holds {len(index)}", file=sys.stderr)
        return 0
    query = " ".join(args.query)
    hits = index.search(query, k=args.top_k, exact=args.exact or None)
    print(f"Top {len(hits)} of {len(index)} documents in {args.index} for: {query}")
    for rank, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        print(f"{rank:>3}. {hit.score:.4f}  #{hit.row + 1}: {text if len(text) <= 120 else text[:119] + '…'}")
    return 0


# --- embed --engine ray -----------------------------------------------------------------------

RAY_INPUTS = (".parquet", ".jsonl", ".txt")


def add_embed_engine(parser):
    """`transformer embed`'s options for embedding a corpus file on Ray."""
    group = parser.add_argument_group("on a Ray cluster (the 'ray' extra)")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="ray: embed --input on Ray actors ($RAY_ADDRESS, else a local cluster of this "
                            "machine's cores) and write a .parquet --output")
    group.add_argument("--input", "-i", help="with --engine ray: a .parquet or .jsonl file with a text column, "
                                             "or a .txt file, one text per line")
    group.add_argument("--column", default="text", help="the column of texts (default: text)")
    group.add_argument("--actors", type=_count(1), default=None, metavar="N",
                       help="actors (default: the cluster's CPUs // --threads)")


def run_embed_ray(args):
    if args.input is None or not args.input.endswith(RAY_INPUTS):
        raise CommandError(f"--engine ray reads --input FILE ({', '.join(RAY_INPUTS)}), got "
                           f"{'no --input' if args.input is None else repr(args.input)}")
    if args.texts or args.file is not None:
        raise CommandError("--engine ray reads the texts from --input, not from arguments or --file")
    if args.output is None or not args.output.endswith(".parquet"):
        raise CommandError("--engine ray writes a .parquet file: give --output FILE.parquet")
    if not os.path.isfile(args.input):
        raise CommandError(f"--input {args.input} does not exist")
    if args.long != "truncate":
        raise CommandError("--engine ray truncates long texts; --long chunk runs with the local engine only")
    if args.precision != "fp32":
        raise CommandError("--engine ray runs --precision fp32 only; --precision bf16 runs with the local engine")
    try:
        import pyarrow.parquet as parquet
        import ray
    except ImportError as error:
        raise _missing_extra(error, "ray", "--engine ray") from None
    from transformer.cli import OutputFile
    from transformer.distributed import embed_dataset

    with OutputFile(args.output) as out:  # checked before Ray starts
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            if args.input.endswith(".parquet"):
                ds = ray.data.read_parquet(args.input)
            elif args.input.endswith(".jsonl"):
                ds = ray.data.read_json(args.input, lines=True)
            else:
                ds = ray.data.read_text(args.input, drop_empty_lines=True)
            # Read before the actor pool starts: read tasks need CPUs that the actors would hold.
            ds = ds.materialize()
            threads = args.threads or 1
            ds = embed_dataset(ds, model=args.model, column=args.column, batch_size=max(args.batch_size, 256),
                               actors=args.actors, threads_per_actor=threads, backend=args.backend,
                               encode_batch_size=args.batch_size, normalize=args.normalize)
            writer, rows = None, 0
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=4096):
                if writer is None:
                    writer = parquet.ParquetWriter(out.file, table.schema)
                writer.write_table(table)
                rows += table.num_rows
            if writer is None:
                raise CommandError(f"--input {args.input} holds no rows")
            writer.close()
        finally:
            ray.shutdown()
    print(f"wrote {rows} rows with an embedding column to {args.output}", file=sys.stderr)
    return 0
