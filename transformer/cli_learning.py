"""The learning subcommands of the `transformer` command line: context, attention, map, and
the --plot option of `similarity`. `transformer.cli` registers them; the work is done by
`transformer.context`, `transformer.corpus` and `transformer.plots`.

    transformer context                                   # "bank" and "run" in several sentences
    transformer context --word bank "The river bank." "The bank is closed."
    transformer attention "He went to the bank to deposit money." --layer 1 --head 5 --plot attention.png
    transformer similarity "A cat." "A dog." "A car." --plot similarity.png
    transformer map --plot map.png                        # the bundled corpus in 2-D
"""

import sys


def _plot_option(parser, what):
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help=f"also draw {what} into FILE (.png, .svg or .pdf; needs matplotlib)")


def check_plotting(args):
    """Fail at once, with the one-line hint, when --plot was asked for without matplotlib."""
    if getattr(args, "plot", None):
        from transformer.cli_common import CommandError
        from transformer.plots import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as error:
            raise CommandError(str(error)) from None


def _wrote(path):
    print(f"wrote {path}", file=sys.stderr)


# --- context ----------------------------------------------------------------------------------


def add_context(subparsers, common):
    parser = subparsers.add_parser(
        "context", parents=[common], help="one word in several sentences: static vs contextual vectors",
        description="Compare one word's vectors across sentences: the row of the embedding table "
                    "(static, the same in every sentence, as Word2Vec/GloVe) and the output of every "
                    "layer (contextual). Without sentences it shows 'bank' (river vs money) and "
                    "'run' (a run vs running a promotion).")
    parser.add_argument("sentences", nargs="*", help="two or more sentences that contain the word")
    parser.add_argument("--word", "-w", action="append", default=None,
                        help="the word to follow; once for all sentences, or once per sentence "
                             "(e.g. -w run -w running). A word split into pieces is pooled over them.")
    parser.add_argument("--decimals", type=int, default=3, help="digits after the point (default: 3)")
    _plot_option(parser, "the similarities layer by layer")
    return parser


def run_context(args):
    from transformer.cli_common import CommandError, load_sentence_encoder
    from transformer.context import DEMOS, format_word_similarities, word_similarities

    check_plotting(args)
    if args.sentences:
        if len(args.sentences) < 2:
            raise CommandError(f"context needs at least two sentences, got {len(args.sentences)}")
        if not args.word:
            raise CommandError("name the word to follow with --word WORD")
        if len(args.word) not in (1, len(args.sentences)):
            raise CommandError(f"got {len(args.word)} --word for {len(args.sentences)} sentences; "
                               f"give one, or one per sentence")
        groups = [(args.word[0] if len(args.word) == 1 else args.word, args.sentences)]
    elif args.word:
        raise CommandError("--word needs sentences that contain it")
    else:
        groups = [(word, sentences) for word, sentences in DEMOS.items()]
    model = load_sentence_encoder(args)
    results = [word_similarities(sentences, word, model.encoder, model.tokenizer) for word, sentences in groups]
    print(f"model: {args.model}")
    print("\n\n".join(format_word_similarities(result, args.decimals) for result in results))
    if args.plot:
        from transformer.plots import plot_word_similarities

        _wrote(plot_word_similarities(results, args.plot, title=f"{args.model}: static vs contextual vectors"))
    return 0


# --- attention --------------------------------------------------------------------------------


def add_attention(subparsers, common):
    parser = subparsers.add_parser(
        "attention", parents=[common], help="who attends to whom: one layer's attention weights",
        description="Print (and with --plot draw) the attention weights of one layer and head: row i "
                    "says how much token i's new vector draws from each token.")
    parser.add_argument("text", nargs="+", help="the text (several words are joined by spaces)")
    parser.add_argument("--layer", "-l", type=int, default=None,
                        help="layer 1..L (default: the last one)")
    parser.add_argument("--head", type=int, default=None,
                        help="head 1..H (default: the mean over all heads)")
    _plot_option(parser, "a token-by-token heatmap")
    return parser


def run_attention(args):
    from transformer.cli_common import load_sentence_encoder
    from transformer.context import attention_map, format_attention_map

    check_plotting(args)
    text = " ".join(args.text)
    model = load_sentence_encoder(args)
    layer = args.layer if args.layer is not None else model.encoder.config.num_hidden_layers
    tokens, weights = attention_map(text, model.encoder, model.tokenizer, layer, args.head)
    which = f"head {args.head}" if args.head is not None else \
        f"mean of {model.encoder.config.num_attention_heads} heads"
    title = f"{args.model}: attention, layer {layer}, {which}"
    print(title + " (row = token being updated, columns = tokens it attends to)")
    print(format_attention_map(tokens, weights))
    if args.plot:
        from transformer.plots import plot_attention

        _wrote(plot_attention(tokens, weights, args.plot, title=title))
    return 0


# --- map --------------------------------------------------------------------------------------


def add_map(subparsers, common):
    parser = subparsers.add_parser(
        "map", parents=[common], help="sentence embeddings of a labelled corpus in 2-D (PCA)",
        description="Embed a corpus of labelled sentences (the bundled 300 sentences on six topics, "
                    "or --corpus FILE.tsv with a 'topic<TAB>text' header), project the vectors onto "
                    "their first two principal components, print where each topic lies and, with "
                    "--plot, draw the map.")
    parser.add_argument("--corpus", "-c", default=None, metavar="FILE.tsv",
                        help="a TSV file with the header 'topic<TAB>text' (default: the bundled corpus)")
    _plot_option(parser, "the 2-D map")
    return parser


def run_map(args):
    import numpy as np

    from transformer.cli_common import load_sentence_encoder
    from transformer.corpus import load_corpus, pca

    check_plotting(args)
    corpus = load_corpus(args.corpus)
    model = load_sentence_encoder(args)
    vectors = model.encode(corpus.texts, batch_size=args.batch_size, normalize=True)  # [n, dim]
    points, explained = pca(vectors, components=2)  # [n, 2]
    source = args.corpus or "the bundled corpus"
    print(f"{len(corpus.texts)} sentences from {source}, embedded by {args.model} "
          f"({vectors.shape[1]} numbers each), projected to 2-D by PCA")
    print(f"the two axes explain {100 * explained[0]:.1f}% and {100 * explained[1]:.1f}% of the variance")
    print(f"{'topic':<14} {'sentences':>9} {'x':>7} {'y':>7}")
    topics = np.array(corpus.topics)
    for name in corpus.topic_names:
        centre = points[topics == name].mean(axis=0)
        print(f"{name:<14} {int((topics == name).sum()):>9} {centre[0]:>7.3f} {centre[1]:>7.3f}")
    if args.plot:
        from transformer.plots import plot_map

        _wrote(plot_map(points, corpus.topics, args.plot, explained=explained,
                        title=f"{len(corpus.texts)} sentences embedded by {args.model}, PCA to 2-D"))
    return 0


# --- similarity --plot ------------------------------------------------------------------------


def add_similarity_plot(parser):
    """The --plot option of `transformer similarity`."""
    _plot_option(parser, "the labelled similarity matrix")


def plot_similarity_if_asked(args, texts, matrix):
    """Called by `transformer similarity` after it printed the matrix."""
    if getattr(args, "plot", None):
        from transformer.plots import plot_similarity

        _wrote(plot_similarity(matrix, texts, args.plot, title=f"{args.model}: cosine similarity"))
