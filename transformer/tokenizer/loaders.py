"""Build a Tokenizer from the files a checkpoint ships.

* tokenizer.json: the full pipeline, as Rust `tokenizers` saves it;
* vocab.txt (+ tokenizer_config.json): BERT WordPiece, built like transformers' BertTokenizer;
* vocab.json + merges.txt (+ tokenizer_config.json): GPT-2 byte-level BPE, built like
  transformers' GPT2Tokenizer;
* a .gguf file: the tokenizer its metadata describes, built as transformers' GGUF converter
  builds it (gguf.py).

Every file is read through transformer.files (regular files only, bounded, strict JSON) and
every field with the type the reference gives it (schema.py). Errors are ModelFileError (a
ValueError): one line naming the file and the field that is wrong.
"""

from pathlib import Path

from transformer.files import ModelFileError, parse_json, read_bytes, read_json

from . import decoders, models, normalizers, post_processors, pre_tokenizers
from .added_tokens import AddedToken
from .schema import USIZE, Fields, show

REQUIRED_IF_PRESENT = object()  # a default that is never returned: the field is only checked when present
from .unicode import code_point_set

_ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")
# Rust's char::is_whitespace: what the reference's vocab.txt reader trims from each line's end
_RUST_WHITESPACE = "".join(sorted(code_point_set("WHITESPACE")))


def load(path, cls):
    path = Path(path)
    if path.is_file():
        if path.suffix == ".gguf":
            from .gguf import from_gguf

            return from_gguf(path, cls)
        if path.name == "vocab.txt" or path.suffix == ".txt" and path.name != "merges.txt":
            return from_bert_vocab(path, {}, cls)
        if path.name == "vocab.json" or path.name == "merges.txt":
            return from_gpt2_files(path.parent / "vocab.json", path.parent / "merges.txt", {}, cls)
        return from_tokenizer_json(_read_json(path, "tokenizer file"), cls, source=path)
    if not path.is_dir():
        raise FileNotFoundError(f"no tokenizer at {path}: expected a directory or a tokenizer file")
    config = read_config(path)
    if (path / "tokenizer.json").exists():
        data = _read_json(path / "tokenizer.json", "tokenizer file")
        return from_tokenizer_json(data, cls, config, source=path / "tokenizer.json")
    if (path / "vocab.txt").exists():
        return from_bert_vocab(path / "vocab.txt", config, cls)
    if (path / "vocab.json").exists() and (path / "merges.txt").exists():
        return from_gpt2_files(path / "vocab.json", path / "merges.txt", config, cls)
    raise FileNotFoundError(
        f"no tokenizer files in {path}: expected tokenizer.json, or vocab.txt, or vocab.json + merges.txt")


def _read_json(path, what):
    return read_json(path, what, unique_keys=True)


def read_config(folder):
    """tokenizer_config.json, updated with special_tokens_map.json (whose entries take
    precedence, as in transformers) -> a dict (empty when neither file exists). Errors name
    the file and the field."""
    config = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = Path(folder) / name
        if not path.exists():
            continue
        data = _read_json(path, "tokenizer config")
        try:
            check_config(data, roles_as_objects=name == "special_tokens_map.json")
        except ValueError as error:
            raise ModelFileError(f"{path}: {error}") from None
        config.update(data)
    return config


def check_config(data, roles_as_objects=False):
    """The fields of tokenizer_config.json / special_tokens_map.json that we use, type-checked
    (the rest is not read): the role tokens, do_lower_case & co., model_max_length.

    As transformers reads them, a role token is a string, or an object with 'content' in
    special_tokens_map.json (in tokenizer_config.json only one marked "__type": "AddedToken").
    """
    fields = Fields(data, "")
    for role in _ROLES:
        if role not in fields.value:
            continue
        value = fields.value[role]
        if isinstance(value, dict) and not roles_as_objects and value.get("__type") != "AddedToken":
            raise ValueError(f"{role} is {show(value)}; expected a token string (or an object with "
                             "\"__type\": \"AddedToken\")")
        token = Fields(value, role).string("content") if isinstance(value, dict) else value
        if not isinstance(token, str) or not token:
            raise ValueError(f"{role} is {show(value)}; expected a token (a non-empty string, or an object "
                             "with 'content')")
    for flag in ("do_lower_case", "tokenize_chinese_chars", "add_prefix_space"):
        fields.boolean(flag, REQUIRED_IF_PRESENT)
    fields.boolean("strip_accents", None)
    length = fields.value.get("model_max_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, (int, float)) or length < 0):
        raise ValueError(f"model_max_length is {show(length)}; expected a non-negative number")


def _role_tokens(config):
    """tokenizer_config / special_tokens_map entries -> role -> token string."""
    roles = {}
    for role in _ROLES:
        value = config.get(role)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            roles[role] = value
    return roles


def _model_max_length(config):
    value = config.get("model_max_length")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1e29 else None


# --- tokenizer.json ------------------------------------------------------------------------------

def from_tokenizer_json(data, cls, config=None, source="tokenizer.json"):
    """A parsed tokenizer.json -> Tokenizer. Every field is read with the type the reference
    gives it (schema.py): a file Rust `tokenizers` refuses is refused here, with one line
    naming `source` and the field."""
    try:
        tokenizer = _from_tokenizer_json(data, cls, config or {})
    except ValueError as error:
        raise ModelFileError(f"{source}: {error}") from None
    tokenizer.source = str(source)
    return tokenizer


def from_json_text(text, cls):
    """tokenizer.json's text -> Tokenizer (like `tokenizers.Tokenizer.from_str`)."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"json_text is {type(text).__name__}; expected the text of a tokenizer.json (str)")
    return from_tokenizer_json(parse_json(text, "tokenizer.json text", unique_keys=True), cls,
                               source="tokenizer.json text")


def _from_tokenizer_json(data, cls, config):
    fields = Fields(data, "")
    version = fields.string("version", "1.0")
    if version != "1.0":
        raise ValueError(f"version is {version!r}; expected '1.0'")
    if fields.value.get("model") is None:
        raise ValueError("there is no model (field 'model'); expected an object with the vocabulary")
    model = models.from_config(fields.value["model"])
    normalizer = normalizers.from_config(fields.value.get("normalizer"))
    pre_tokenizer = pre_tokenizers.from_config(fields.value.get("pre_tokenizer"))
    post_processor = post_processors.from_config(fields.value.get("post_processor"))
    decoder = decoders.from_config(fields.value.get("decoder"))
    added, special = _added_tokens(fields.array("added_tokens", []), model, normalizer)
    truncation = _truncation(fields.value.get("truncation"))
    padding = _padding(fields.value.get("padding"))
    roles = _role_tokens(config)
    if "pad_token" not in roles and padding is not None:
        roles["pad_token"] = padding["pad_token"]
    added_contents = {t.content for t in added}
    _guess_roles(roles, lambda spelling: spelling in added_contents or spelling in model.vocab)
    return cls(model, normalizer, pre_tokenizer, post_processor, decoder, added, truncation, padding,
               _model_max_length(config), roles, special_contents=special)


def _added_tokens(items, model, normalizer):
    """The added_tokens list -> ([AddedToken with the id the reference gives it], special contents).

    The reference ignores the ids written in the file: a token gets its id in the model's
    vocabulary, else the next id after it (len(vocab), len(vocab) + 1, ...), in file order;
    a repeated content keeps its first id and takes its last options. Two tokens matched by
    the same text would be picked at random by the reference, and a normalized form that is
    empty matches everywhere: both are refused.
    """
    by_content, by_id, special = {}, {}, set()
    next_id = len(model.vocab)
    for index, item in enumerate(items):
        item = Fields(item, f"added_tokens[{index}]")
        item.uint("id")
        token = AddedToken(item.string("content"), 0, item.boolean("special"), item.boolean("single_word"),
                           item.boolean("lstrip"), item.boolean("rstrip"), item.boolean("normalized"))
        if not token.content:
            continue
        token_id = by_content.get(token.content)
        if token_id is None:
            token_id = model.token_to_id(token.content)
        if token_id is None:
            token_id, next_id = next_id, next_id + 1
        token.id = token_id
        by_content[token.content] = token_id
        by_id[token_id] = (token, index)
        if token.special:
            special.add(token.content)
    matched = {}  # (normalized?, the text that matches the token) -> its index in the file
    for token, index in by_id.values():
        text = token.content
        if token.normalized and normalizer is not None:
            text = normalizer.normalize_str(text)
            if not text:
                raise ValueError(f"added_tokens[{index}] ({token.content!r}) normalizes to the empty string; "
                                 "expected a token that keeps some text (or normalized: false)")
        key = (token.normalized, text)
        if key in matched:
            raise ValueError(f"added_tokens[{matched[key]}] and added_tokens[{index}] ({token.content!r}) are both "
                             f"matched by the {'normalized ' if token.normalized else ''}text {text!r}; "
                             "expected one added token per text")
        matched[key] = index
    return [token for token, _ in by_id.values()], special


def _truncation(value):
    """tokenizer.json "truncation" -> dict(max_length, stride, strategy, direction) or None."""
    if value is None:
        return None
    fields = Fields(value, "truncation")
    return dict(direction=fields.choice("direction", {"Left": "left", "Right": "right"}, "right"),
                max_length=fields.uint("max_length", limit=USIZE),
                strategy=fields.choice("strategy", {"LongestFirst": "longest_first", "OnlyFirst": "only_first",
                                                    "OnlySecond": "only_second"}),
                stride=fields.uint("stride", limit=USIZE))


def _padding(value):
    """tokenizer.json "padding" -> dict(length (None: the longest row), direction, pad_id,
    pad_type_id, pad_token, pad_to_multiple_of) or None."""
    if value is None:
        return None
    fields = Fields(value, "padding")
    strategy = fields.value.get("strategy")
    if strategy == "BatchLongest":
        length = None
    elif isinstance(strategy, dict) and list(strategy) == ["Fixed"]:
        length = Fields(strategy, "padding.strategy").uint("Fixed", limit=USIZE)
    else:
        expected = '"BatchLongest" or {"Fixed": length}'
        if not fields.has("strategy"):
            raise ValueError(f"padding.strategy is missing; expected {expected}")
        raise ValueError(f"padding.strategy is {show(strategy)}; expected {expected}")
    return dict(length=length, direction=fields.choice("direction", {"Left": "left", "Right": "right"}),
                pad_to_multiple_of=fields.uint("pad_to_multiple_of", None, limit=USIZE),
                pad_id=fields.uint("pad_id"), pad_type_id=fields.uint("pad_type_id"),
                pad_token=fields.string("pad_token"))


def _guess_roles(roles, is_known):
    """Fill roles a config did not name from the usual spellings present in the vocabulary
    (is_known(spelling) -> bool)."""
    usual = {"pad_token": ("[PAD]", "<pad>"), "unk_token": ("[UNK]", "<unk>"), "cls_token": ("[CLS]", "<s>"),
             "sep_token": ("[SEP]", "</s>"), "mask_token": ("[MASK]", "<mask>"), "bos_token": ("<s>",),
             "eos_token": ("</s>",)}
    for role, spellings in usual.items():
        if role not in roles:
            for spelling in spellings:
                if is_known(spelling):
                    roles[role] = spelling
                    break


# --- vocab.txt (BERT) ---------------------------------------------------------------------------

def _text_lines(path, what):
    """A UTF-8 text file of a model folder -> its lines (without line ends)."""
    data = read_bytes(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ModelFileError(f"{what} {path} is not UTF-8 text (byte {error.start})") from None
    return text.split("\n")


def from_bert_vocab(vocab_path, config, cls):
    """vocab.txt (one token per line, id = line number) -> a BERT WordPiece Tokenizer, built as
    transformers' BertTokenizer builds it: each line without its trailing whitespace, a
    repeated token keeping its last line's id, and the five special tokens (unk, sep, pad,
    cls, mask) added in that order, with the reference's ids (a token missing from the
    vocabulary gets the next id)."""
    lines = _text_lines(vocab_path, "vocabulary")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise ModelFileError(f"vocabulary {vocab_path} is empty; expected one token per line")
    vocab = {}
    for index, line in enumerate(lines):
        vocab[line.rstrip(_RUST_WHITESPACE)] = index
    roles = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
             "mask_token": "[MASK]"}
    roles.update(_role_tokens(config))
    lowercase = config.get("do_lower_case", True)
    normalizer = normalizers.BertNormalizer(True, config.get("tokenize_chinese_chars", True),
                                            config.get("strip_accents"), lowercase)
    model = models.WordPiece(vocab, roles["unk_token"], "##", 100)
    specials = [{"content": roles[role], "id": 0, "special": True, "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False}
                for role in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")]
    added, special = _added_tokens(specials, model, normalizer)
    ids = {token.content: token.id for token in added}
    cls_token, sep_token = roles["cls_token"], roles["sep_token"]
    cls_id = ids.get(cls_token, vocab.get(cls_token))
    sep_id = ids.get(sep_token, vocab.get(sep_token))
    post = post_processors.BertProcessing((sep_token, sep_id), (cls_token, cls_id))
    tokenizer = cls(model, normalizer, pre_tokenizers.BertPreTokenizer(), post, decoders.WordPiece("##", True),
                    added, None, None, _model_max_length(config), roles, special_contents=special)
    tokenizer.source = str(vocab_path)
    return tokenizer


# --- vocab.json + merges.txt (GPT-2) ------------------------------------------------------------

def from_gpt2_files(vocab_path, merges_path, config, cls):
    """vocab.json + merges.txt -> a GPT-2 byte-level BPE Tokenizer."""
    vocab = _read_json(vocab_path, "vocabulary")
    try:
        vocab = models.vocab_of(Fields({"vocab": vocab}, "the file"))
    except ValueError as error:
        raise ModelFileError(f"{vocab_path}: {str(error).replace('the file.vocab', 'the vocabulary')}") from None
    merges = []
    lines = _text_lines(merges_path, "merges file")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for number, line in enumerate(lines, 1):
        # as the reference reads it: one CR before the newline goes, "#version" lines are skipped
        line = line[:-1] if line.endswith("\r") else line
        if line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ModelFileError(f"{merges_path}:{number}: expected two tokens separated by one space, "
                                 f"got {line!r:.80}")
        merges.append((parts[0], parts[1]))
    try:
        model = models.BPE(vocab, merges)
    except ValueError as error:
        raise ModelFileError(f"{merges_path}: {error}") from None
    add_prefix_space = config.get("add_prefix_space", False)
    roles = {"unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    roles.update(_role_tokens(config))
    added = []
    seen = set()
    for role in ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token", "mask_token"):
        token = roles.get(role)
        if token in vocab and token not in seen:
            seen.add(token)
            added.append(AddedToken(token, vocab[token], special=True))
    single, pair = [(post_processors.A, 0)], [(post_processors.A, 0), (post_processors.B, 1)]
    tokenizer = cls(model, None, pre_tokenizers.ByteLevel(add_prefix_space, True, True),
                    post_processors.TemplateProcessing(single, pair, {}), decoders.ByteLevel(),
                    sorted(added, key=lambda t: t.id), None, None, _model_max_length(config), roles)
    tokenizer.source = str(vocab_path)
    return tokenizer
