"""The learning subcommands of the `transformer` command line: context, attention, map,
fill-mask, diagram, and the --plot option of `similarity`. `transformer.cli` registers them;
the work is done by `transformer.context`, `transformer.corpus` and `transformer.plots`.

    transformer context                                   # "bank" and "run", two senses each
    transformer context --word bank "The river bank." "The bank is closed."
    transformer attention "He went to the bank to deposit money." --layer 1 --head 5 --plot attention.png
    transformer similarity "A cat." "A dog." "A car." --plot similarity.png
    transformer map --plot map.png                        # the bundled corpus in 2-D
    transformer fill-mask "He went to the [MASK] to deposit money."   # a masked LM's guesses
    transformer diagram --plot layer.png                  # one encoder layer, with its sizes
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
                    "layer (contextual). Without sentences it shows 'bank' (river / money) and 'run' "
                    "(exercise / manage), each sense in two sentences: same-sense pairs against "
                    "other-sense pairs, and unrelated words as the baseline.")
    parser.add_argument("sentences", nargs="*", help="two or more sentences that contain the word")
    parser.add_argument("--word", "-w", action="append", default=None,
                        help="the word to follow; once for all sentences, or once per sentence "
                             "(e.g. -w run -w running). A word split into pieces is pooled over them.")
    parser.add_argument("--decimals", type=int, default=3, help="digits after the point (default: 3)")
    _plot_option(parser, "the similarities stage by stage")
    return parser


def run_context(args):
    from transformer.cli_common import CommandError, load_sentence_encoder
    from transformer.context import (SENSES, format_sense_contrast, format_word_similarities, sense_contrast,
                                     unrelated_baseline, word_similarities)

    check_plotting(args)
    if args.sentences:
        if len(args.sentences) < 2:
            raise CommandError(f"context needs at least two sentences, got {len(args.sentences)}")
        if not args.word:
            raise CommandError("name the word to follow with --word WORD")
        if len(args.word) not in (1, len(args.sentences)):
            raise CommandError(f"got {len(args.word)} --word for {len(args.sentences)} sentences; "
                               f"give one, or one per sentence")
    elif args.word:
        raise CommandError("--word needs sentences that contain it")
    model = load_sentence_encoder(args)
    encoder, tokenizer = model.encoder, model.tokenizer
    print(f"model: {args.model}")
    if args.sentences:
        word = args.word[0] if len(args.word) == 1 else args.word
        result = word_similarities(args.sentences, word, encoder, tokenizer)
        baseline = unrelated_baseline(args.sentences, word, encoder, tokenizer)
        print(format_word_similarities(result, args.decimals, baseline=baseline))
        if args.plot:
            from transformer.plots import plot_word_similarities

            _wrote(plot_word_similarities([result], args.plot, title=f"{args.model}: static vs contextual vectors"))
        return 0
    contrasts = [sense_contrast(senses, word, encoder, tokenizer) for word, senses in SENSES.items()]
    print("\n\n".join(format_sense_contrast(contrast, args.decimals) for contrast in contrasts))
    if args.plot:
        from transformer.plots import plot_sense_contrast

        _wrote(plot_sense_contrast(contrasts, args.plot, title=f"{args.model}: one word, two senses"))
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


# --- fill-mask --------------------------------------------------------------------------------

FILL_MASK_MODEL = "splade-tiny"


def add_fill_mask(subparsers, common):
    # Its own --model (a masked-LM checkpoint by default), so the shared default stays the
    # sentence encoder for every other command.
    parser = subparsers.add_parser(
        "fill-mask", help="a masked-LM checkpoint guesses the hidden word (how encoders are pretrained)",
        description="Print a masked language model's top guesses for each [MASK] in the text: the task "
                    "BERT-family encoders are pretrained on. The default model, splade-tiny (2 layers, "
                    "128 wide), is tiny and its head was trained further for search, so it guesses "
                    "words of the right topic more than the right word.")
    parser.add_argument("text", nargs="+", help="the text, with [MASK] where a word is hidden")
    parser.add_argument("--model", "-m", default=FILL_MASK_MODEL,
                        help=f"a masked-LM model name or folder (default: {FILL_MASK_MODEL})")
    parser.add_argument("--backend", choices=["numpy", "numba"], default=None,
                        help="numpy (the readable reference) or numba (fast; the default when available)")
    parser.add_argument("--top-k", "-k", type=int, default=5, help="guesses per mask (default: 5)")
    from transformer.cli_common import add_precision_option

    add_precision_option(parser)
    return parser


def run_fill_mask(args):
    from transformer import Encoder, Tokenizer
    from transformer.cli_common import CommandError, precision_of

    if args.top_k < 1:
        raise CommandError(f"--top-k must be at least 1, got {args.top_k}")
    text = " ".join(args.text)
    model = Encoder.from_pretrained(args.model, backend=args.backend, precision=precision_of(args))
    if model.head is None or model.head.kind != "masked_lm":
        raise CommandError(f"{args.model} has no masked-LM head (architectures: "
                           f"{list(model.config.architectures)}); try --model {FILL_MASK_MODEL}")
    tokenizer = Tokenizer.from_pretrained(model.path or args.model)
    tokenizer.no_padding()
    guesses = model.fill_mask(text, tokenizer, top_k=args.top_k)
    print(f"model: {args.model} ({model.config.num_hidden_layers} layers, {model.config.hidden_size} wide)")
    print(text)
    for number, predictions in enumerate(guesses, start=1):
        print(f"  mask {number}: " + "  ".join(f"{token} {probability:.3f}" for token, probability in predictions))
    return 0


# --- diagram ----------------------------------------------------------------------------------


def add_diagram(subparsers, common):
    from transformer.cli_common import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "diagram", help="draw one encoder layer, with the model's own sizes",
        description="Draw one layer of the model as boxes and arrows (attention, feed-forward, the "
                    "residual sums and LayerNorms), labelled with the sizes from its config.json.")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"a model name or folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--plot", metavar="FILE.png", required=True,
                        help="the picture to write (.png, .svg or .pdf; needs matplotlib)")
    return parser


def run_diagram(args):
    from transformer import store
    from transformer.config import EncoderConfig
    from transformer.plots import encoder_layer_boxes, plot_layer_diagram

    check_plotting(args)
    config = EncoderConfig.from_file(store.resolve(args.model) / "config.json")
    name = f"{config.model_type} encoder layer ({args.model}: {config.num_hidden_layers} of them)"
    print(f"{name}, from its input (bottom) to its output (top):")
    for text, _ in encoder_layer_boxes(config):
        print("  " + " ".join(text.split()))
    _wrote(plot_layer_diagram([(name, encoder_layer_boxes(config))], args.plot, title="one layer, read bottom to top"))
    return 0
