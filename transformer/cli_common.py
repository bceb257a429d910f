"""What the command line's modules share: `transformer.cli` (the parser and the everyday
subcommands) and `transformer.cli_learning` (the learning subcommands) both import from here,
and neither from the other's functions, so the two have no import cycle."""

import sys

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# transformer.encoder.PRECISIONS, spelled out here: building the parser imports no numpy.
PRECISIONS = ("fp32", "bf16")


class CommandError(Exception):
    """A problem with what the user asked for, reported as one line."""


def load_sentence_encoder(args):
    """The SentenceEncoder named by --model, with --threads, --backend and --precision applied."""
    if args.threads is not None:
        from transformer.threads import set_num_threads, thread_limit

        threads = args.threads
        if threads > thread_limit():
            threads = thread_limit()
            print(f"note: --threads {args.threads}: this process can run {threads} (NUMBA_NUM_THREADS, by "
                  f"default the CPU count); using {threads}", file=sys.stderr)
        set_num_threads(threads)
    from transformer.sentence import SentenceEncoder

    return SentenceEncoder.from_pretrained(args.model, backend=args.backend, precision=precision_of(args))


def precision_of(args):
    """--precision ("fp32" when the command has no such flag)."""
    return getattr(args, "precision", None) or "fp32"


def add_precision_option(group):
    """--precision fp32|bf16 on a parser (or argument group) of a model-running command."""
    group.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="the linears' arithmetic: fp32 (default: the reference's numbers) or bf16 "
                            "(bfloat16 weights and inputs, float32 sums; faster where the CPU has bf16 "
                            "instructions, cosine >= 0.9999 to fp32)")
