"""The retrieval subcommands of the `transformer` command line: rerank and eval.
`transformer.cli` registers them; the work is done by `transformer.cross_encoder` and
`transformer.eval`.

    transformer rerank "How do vaccines work?" --file docs.txt --model path/to/cross-encoder
    transformer eval --model all-MiniLM-L6-v2 --task lee-similarity
"""

import sys


# --- rerank -----------------------------------------------------------------------------------


def add_rerank(subparsers, common):
    parser = subparsers.add_parser(
        "rerank", parents=[common], help="score documents against a query with a cross-encoder",
        description="Read the query with each line of a file through a cross-encoder (a "
                    "sequence-classification checkpoint) and print the lines by relevance, best first.")
    parser.add_argument("query", nargs="+", help="the query (several words are joined by spaces)")
    parser.add_argument("--file", "-f", required=True, help="a UTF-8 text file, one document per line ('-': stdin)")
    parser.add_argument("--top-k", "-k", type=int, default=None, metavar="K",
                        help="how many results (default: every line)")
    return parser


def run_rerank(args):
    from transformer.cli import read_lines
    from transformer.cli_common import DEFAULT_MODEL, CommandError
    from transformer.cli_common import precision_of
    from transformer.cross_encoder import CrossEncoder

    if args.model == DEFAULT_MODEL:  # the default model is a sentence encoder, never a cross-encoder
        raise CommandError("rerank needs --model: a cross-encoder folder (a *ForSequenceClassification "
                           "checkpoint with its tokenizer)")
    if args.top_k is not None and args.top_k < 1:
        raise CommandError(f"--top-k must be a positive integer, got {args.top_k}")
    lines = read_lines(args.file, what="file")
    if not lines:
        raise CommandError(f"{args.file} has no text (every line is empty)")
    _set_threads(args)
    model = CrossEncoder.from_pretrained(args.model, backend=args.backend, precision=precision_of(args))
    query = " ".join(args.query)
    ranked = model.rank(query, [text for _, text in lines], top_k=args.top_k, batch_size=args.batch_size)
    print(f"Top {len(ranked)} of {len(lines)} lines in {args.file} for: {query}")
    for rank, hit in enumerate(ranked, start=1):
        number, text = lines[hit["corpus_id"]]
        shown = text if len(text) <= 120 else text[:119] + "…"
        print(f"{rank:>3}. {hit['score']:.4f}  line {number}: {shown}")
    return 0


def _set_threads(args):
    if args.threads is not None:
        from transformer.threads import set_num_threads, thread_limit

        if args.threads > thread_limit():
            print(f"note: --threads {args.threads}: this process can run {thread_limit()}; using that",
                  file=sys.stderr)
        set_num_threads(min(args.threads, thread_limit()))


# --- eval -------------------------------------------------------------------------------------


def add_eval(subparsers, common):
    # transformer.eval (and NumPy) is not imported here: `transformer --help` stays fast.
    parser = subparsers.add_parser(
        "eval", parents=[common], help="measure a sentence model on public evaluation tasks",
        description="Run the model on evaluation tasks over public data (fetched into the store on "
                    "first use) and print each task's scores; transformer/eval.py describes the tasks.")
    parser.add_argument("--task", "-t", action="append", default=None,
                        help="a task to run, e.g. lee-similarity (repeatable; default: every task; an "
                             "unknown name is refused with the list)")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    return parser


def run_eval(args):
    import json

    from transformer.cli_common import load_sentence_encoder
    from transformer.eval import evaluate

    model = load_sentence_encoder(args)
    scores = evaluate(model, args.task, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"model": args.model, "scores": scores}, indent=2))
        return 0
    print(f"{args.model}")
    for task, metrics in scores.items():
        for metric, value in metrics.items():
            print(f"  {task:<16} {metric:<18} {value:.4f}")
    return 0
