"""Stage 4, post-processors: add the special tokens a model expects around its input(s).

    BERT     [CLS] A [SEP]            pair: [CLS] A [SEP] B [SEP]   (B has type id 1)
    RoBERTa  <s> A </s>               pair: <s> A </s> </s> B </s>  (all type id 0)

`process(encoding, pair, add_special_tokens) -> Encoding`. TemplateProcessing is the general
form that tokenizer.json files use; BertProcessing and RobertaProcessing are written as
templates here. ByteLevel (and RoBERTa with trim_offsets) also shrink offsets so they do not
cover the spaces a byte-level token starts with.

    >>> from .encoding import Encoding
    >>> post = BertProcessing(("[SEP]", 102), ("[CLS]", 101))
    >>> post.process(Encoding(ids=[7592], tokens=["hello"], offsets=[(0, 5)]), None).tokens
    ['[CLS]', 'hello', '[SEP]']
"""

from .encoding import Encoding
from .unicode import code_point_set


class TemplateProcessing:
    """single / pair: lists of ("A" | "B" | special token name, type_id).

    special_tokens: name -> (ids, tokens), as in tokenizer.json.
    """

    def __init__(self, single, pair, special_tokens):
        self.single = single
        self.pair = pair
        self.special_tokens = special_tokens

    def added_tokens(self, is_pair):
        template = self.pair if is_pair else self.single
        return sum(len(self.special_tokens[name][0]) for name, _ in template if name not in ("A", "B"))

    def process(self, encoding, pair=None, add_special_tokens=True):
        encodings = [encoding] if pair is None else [encoding, pair]
        template = self.single if pair is None else self.pair
        pieces = []
        for name, type_id in template:
            if name in ("A", "B"):
                sequence = encodings[0 if name == "A" else 1]
                _set_sequence(sequence, type_id, 0 if name == "A" else 1)
                pieces.append(sequence)
            elif add_special_tokens:
                ids, tokens = self.special_tokens[name]
                pieces.append(_special(ids, tokens, type_id))
        # Merging carries the truncated-off windows along: each gets the same special tokens.
        return Encoding.merge(pieces)


def _set_sequence(encoding, type_id, sequence_id):
    encoding.type_ids = [type_id] * len(encoding.ids)
    encoding.sequence_ids = [sequence_id] * len(encoding.ids)
    for window in encoding.overflowing:
        _set_sequence(window, type_id, sequence_id)


def _special(ids, tokens, type_id):
    n = len(ids)
    return Encoding(ids=list(ids), tokens=list(tokens), type_ids=[type_id] * n, attention_mask=[1] * n,
                    offsets=[(0, 0)] * n, word_ids=[None] * n, special_tokens_mask=[1] * n)


def BertProcessing(sep, cls):
    """[CLS] $A [SEP] / [CLS] $A [SEP] $B:1 [SEP]:1 (sep, cls are (token, id) pairs)."""
    return TemplateProcessing(
        single=[(cls[0], 0), ("A", 0), (sep[0], 0)],
        pair=[(cls[0], 0), ("A", 0), (sep[0], 0), ("B", 1), (sep[0], 1)],
        special_tokens={cls[0]: ([cls[1]], [cls[0]]), sep[0]: ([sep[1]], [sep[0]])},
    )


class RobertaProcessing(TemplateProcessing):
    """<s> $A </s> / <s> $A </s> </s> $B </s>, every type id 0; optionally trims offsets."""

    def __init__(self, sep, cls, trim_offsets=True, add_prefix_space=True):
        super().__init__(
            single=[(cls[0], 0), ("A", 0), (sep[0], 0)],
            pair=[(cls[0], 0), ("A", 0), (sep[0], 0), (sep[0], 0), ("B", 0), (sep[0], 0)],
            special_tokens={cls[0]: ([cls[1]], [cls[0]]), sep[0]: ([sep[1]], [sep[0]])},
        )
        self.trim_offsets = trim_offsets
        self.add_prefix_space = add_prefix_space

    def process(self, encoding, pair=None, add_special_tokens=True):
        if self.trim_offsets:
            for item in [encoding] if pair is None else [encoding, pair]:
                trim_offsets(item, self.add_prefix_space)
                for window in item.overflowing:
                    trim_offsets(window, self.add_prefix_space)
        return super().process(encoding, pair, add_special_tokens)


class ByteLevel:
    """The byte-level post-processor: no special tokens; trims offsets when asked."""

    def __init__(self, trim_offsets=True, add_prefix_space=True):
        self.trim_offsets = trim_offsets
        self.add_prefix_space = add_prefix_space

    def added_tokens(self, is_pair):
        return 0

    def process(self, encoding, pair=None, add_special_tokens=True):
        encodings = [encoding] if pair is None else [encoding, pair]
        for index, item in enumerate(encodings):
            if self.trim_offsets:
                trim_offsets(item, self.add_prefix_space)
                for window in item.overflowing:
                    trim_offsets(window, self.add_prefix_space)
            _set_sequence(item, index, index)
        return Encoding.merge(encodings)


class Sequence:
    """Apply post-processors one after another (each sees the previous one's output)."""

    def __init__(self, processors):
        self.processors = list(processors)

    def added_tokens(self, is_pair):
        return sum(p.added_tokens(is_pair) for p in self.processors)

    def process(self, encoding, pair=None, add_special_tokens=True):
        for processor in self.processors:
            encoding = processor.process(encoding, pair, add_special_tokens)
            pair = None
        return encoding


_SPACE_CHARS = None  # whitespace characters + 'Ġ' (a byte-level space), built on first use


def trim_offsets(encoding, add_prefix_space):
    """Shrink each token's offsets past its leading/trailing spaces ('Ġ' or whitespace chars).

    The space that add_prefix_space put in front of the first token is not in the original
    text, so it is not trimmed there.
    """
    global _SPACE_CHARS
    if _SPACE_CHARS is None:
        _SPACE_CHARS = "".join(sorted(code_point_set("WHITESPACE"))) + "Ġ"
    offsets = encoding.offsets
    for i, token in enumerate(encoding.tokens):
        if not token or (token[0] not in _SPACE_CHARS and token[-1] not in _SPACE_CHARS):
            continue
        start, end = offsets[i]
        leading = len(token) - len(token.lstrip(_SPACE_CHARS))
        trailing = len(token) - len(token.rstrip(_SPACE_CHARS))
        if leading > 0:
            if (i == 0 or start == 0) and add_prefix_space and leading == 1:
                leading = 0
            start = min(start + leading, end)
        if trailing > 0 and end >= trailing:
            end = max(end - trailing, start)
        offsets[i] = (start, end)


def from_config(config, where="post_processor"):
    """A tokenizer.json "post_processor" object -> a post-processor (None for null)."""
    if config is None:
        return None
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"malformed tokenizer.json: {where} has no field 'type' (got {config!r:.200})")
    kind = config["type"]
    try:
        if kind == "TemplateProcessing":
            special = {name: (item["ids"], item["tokens"]) for name, item in config["special_tokens"].items()}
            single = [_piece(p, where) for p in config["single"]]
            pair = [_piece(p, where) for p in config["pair"]]
            for name, _ in single + pair:
                if name not in ("A", "B") and name not in special:
                    raise ValueError(f"malformed tokenizer.json: {where} uses special token {name!r} "
                                     "missing from its special_tokens")
            return TemplateProcessing(single, pair, special)
        if kind == "BertProcessing":
            return BertProcessing(tuple(config["sep"]), tuple(config["cls"]))
        if kind == "RobertaProcessing":
            return RobertaProcessing(tuple(config["sep"]), tuple(config["cls"]),
                                     config.get("trim_offsets", True), config.get("add_prefix_space", True))
        if kind == "ByteLevel":
            return ByteLevel(config.get("trim_offsets", True), config.get("add_prefix_space", True))
        if kind == "Sequence":
            return Sequence(from_config(p, f"{where}.processors[{i}]")
                            for i, p in enumerate(config["processors"]))
    except KeyError as missing:
        raise ValueError(f"malformed tokenizer.json: {where} ({kind}) has no field {missing}") from None
    raise ValueError(f"unsupported post-processor type {kind!r} in {where}; supported: "
                     "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence")


def _piece(piece, where):
    if "Sequence" in piece:
        return piece["Sequence"]["id"], piece["Sequence"].get("type_id", 0)
    if "SpecialToken" in piece:
        return piece["SpecialToken"]["id"], piece["SpecialToken"].get("type_id", 0)
    raise ValueError(f"malformed tokenizer.json: {where} template piece {piece!r} is neither "
                     "Sequence nor SpecialToken")
