"""Build a Tokenizer from the files a checkpoint ships.

* tokenizer.json: the full pipeline, as Rust `tokenizers` saves it;
* vocab.txt (+ tokenizer_config.json): BERT WordPiece, built like transformers' BertTokenizer;
* vocab.json + merges.txt (+ tokenizer_config.json): GPT-2 byte-level BPE, built like
  transformers' GPT2Tokenizer.

Errors name the file and the field that is wrong.
"""

import json
from pathlib import Path

from . import decoders, models, normalizers, post_processors, pre_tokenizers
from .added_tokens import AddedToken

_ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


def load(path, cls):
    path = Path(path)
    if path.is_file():
        if path.name == "vocab.txt" or path.suffix == ".txt" and path.name != "merges.txt":
            return from_bert_vocab(path, {}, cls)
        if path.name == "vocab.json" or path.name == "merges.txt":
            return from_gpt2_files(path.parent / "vocab.json", path.parent / "merges.txt", {}, cls)
        return from_tokenizer_json(_read_json(path), cls, source=path)
    if not path.is_dir():
        raise FileNotFoundError(f"no tokenizer at {path}: expected a directory or a tokenizer file")
    config = _read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    if (path / "special_tokens_map.json").is_file():
        for role, value in _read_json(path / "special_tokens_map.json").items():
            config.setdefault(role, value)
    if (path / "tokenizer.json").is_file():
        return from_tokenizer_json(_read_json(path / "tokenizer.json"), cls, config, source=path / "tokenizer.json")
    if (path / "vocab.txt").is_file():
        return from_bert_vocab(path / "vocab.txt", config, cls)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return from_gpt2_files(path / "vocab.json", path / "merges.txt", config, cls)
    raise FileNotFoundError(
        f"no tokenizer files in {path}: expected tokenizer.json, or vocab.txt, or vocab.json + merges.txt")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


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
    return int(value) if isinstance(value, (int, float)) and value < 1e29 else None


def from_tokenizer_json(data, cls, config=None, source="tokenizer.json"):
    """A parsed tokenizer.json -> Tokenizer."""
    config = config or {}
    if not isinstance(data, dict):
        raise ValueError(f"malformed {source}: expected a JSON object at the top level")
    if "model" not in data:
        raise ValueError(f"malformed {source}: no field 'model'")
    try:
        model = models.from_config(data["model"])
        normalizer = normalizers.from_config(data.get("normalizer"))
        pre_tokenizer = pre_tokenizers.from_config(data.get("pre_tokenizer"))
        post_processor = post_processors.from_config(data.get("post_processor"))
        decoder = decoders.from_config(data.get("decoder"))
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    added = []
    for index, item in enumerate(data.get("added_tokens") or []):
        if not isinstance(item, dict) or "content" not in item or "id" not in item:
            raise ValueError(f"malformed {source}: added_tokens[{index}] needs fields 'content' and 'id'")
        added.append(AddedToken(item["content"], item["id"], item.get("special", False),
                                item.get("single_word", False), item.get("lstrip", False),
                                item.get("rstrip", False), item.get("normalized", not item.get("special", False))))
    truncation = _truncation(data.get("truncation"), source)
    padding = _padding(data.get("padding"), source)
    roles = _role_tokens(config)
    if "pad_token" not in roles and padding is not None:
        roles["pad_token"] = padding["pad_token"]
    added_contents = {t.content for t in added}
    _guess_roles(roles, lambda spelling: spelling in added_contents or spelling in model.vocab)
    return cls(model, normalizer, pre_tokenizer, post_processor, decoder, added, truncation, padding,
               _model_max_length(config), roles)


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


def _truncation(value, source):
    if value is None:
        return None
    try:
        return dict(max_length=value["max_length"], stride=value.get("stride", 0),
                    strategy={"LongestFirst": "longest_first", "OnlyFirst": "only_first",
                              "OnlySecond": "only_second"}[value.get("strategy", "LongestFirst")],
                    direction=value.get("direction", "Right").lower())
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"malformed {source}: field 'truncation' = {value!r:.200}") from None


def _padding(value, source):
    if value is None:
        return None
    try:
        strategy = value.get("strategy", "BatchLongest")
        length = strategy["Fixed"] if isinstance(strategy, dict) else None
        return dict(length=length, direction=value.get("direction", "Right").lower(),
                    pad_id=value.get("pad_id", 0), pad_type_id=value.get("pad_type_id", 0),
                    pad_token=value.get("pad_token", "[PAD]"), pad_to_multiple_of=value.get("pad_to_multiple_of"))
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"malformed {source}: field 'padding' = {value!r:.200}") from None


def from_bert_vocab(vocab_path, config, cls):
    """vocab.txt (one token per line, id = line number) -> a BERT WordPiece Tokenizer."""
    vocab = {}
    with open(vocab_path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            token = line.rstrip("\n")
            vocab.setdefault(token, index)  # a repeated line keeps its first id... and loses one
    if not vocab:
        raise ValueError(f"{vocab_path} is empty: expected one token per line")
    roles = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
             "mask_token": "[MASK]"}
    roles.update(_role_tokens(config))
    for role in ("cls_token", "sep_token"):
        if roles[role] not in vocab:
            raise ValueError(f"{vocab_path}: the {role} {roles[role]!r} is not in the vocabulary")
    lowercase = config.get("do_lower_case", True)
    normalizer = normalizers.BertNormalizer(True, config.get("tokenize_chinese_chars", True),
                                            config.get("strip_accents"), lowercase)
    model = models.WordPiece(vocab, roles["unk_token"], "##", 100)
    cls_token, sep_token = roles["cls_token"], roles["sep_token"]
    post = post_processors.BertProcessing((sep_token, vocab[sep_token]), (cls_token, vocab[cls_token]))
    added = sorted((AddedToken(roles[r], vocab[roles[r]], special=True) for r in
                    ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token") if roles.get(r) in vocab),
                   key=lambda t: t.id)
    return cls(model, normalizer, pre_tokenizers.BertPreTokenizer(), post, decoders.WordPiece("##", True),
               added, None, None, _model_max_length(config), roles)


def from_gpt2_files(vocab_path, merges_path, config, cls):
    """vocab.json + merges.txt -> a GPT-2 byte-level BPE Tokenizer."""
    vocab = _read_json(vocab_path)
    if not isinstance(vocab, dict):
        raise ValueError(f"{vocab_path}: expected a JSON object token -> id")
    merges = []
    with open(merges_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line or (number == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{merges_path}:{number}: expected two tokens separated by a space, got {line!r}")
            merges.append((parts[0], parts[1]))
    model = models.BPE(vocab, merges)
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
    post = post_processors.TemplateProcessing([("A", 0)], [("A", 0), ("B", 1)], {})
    return cls(model, None, pre_tokenizers.ByteLevel(add_prefix_space, True, True), post, decoders.ByteLevel(),
               sorted(added, key=lambda t: t.id), None, None, _model_max_length(config), roles)
