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
from .schema import Fields, check_uint, objects, show, type_of
from .unicode import code_point_set


# The two input sequences in a template (special tokens are named by strings, so a special
# token called "A" stays a special token).
A, B = 0, 1


class TemplateProcessing:
    """single / pair: lists of (A | B | special token name, type_id).

    special_tokens: name -> (ids, tokens), as in tokenizer.json.
    """

    def __init__(self, single, pair, special_tokens):
        self.single = single
        self.pair = pair
        self.special_tokens = special_tokens

    def added_tokens(self, is_pair):
        template = self.pair if is_pair else self.single
        return sum(len(self.special_tokens[name][0]) for name, _ in template if not isinstance(name, int))

    def process(self, encoding, pair=None, add_special_tokens=True):
        encodings = [encoding] if pair is None else [encoding, pair]
        template = self.single if pair is None else self.pair
        pieces = []
        for name, type_id in template:
            if isinstance(name, int):
                sequence = encodings[name]
                _set_sequence(sequence, type_id, name)
                pieces.append(sequence)
            elif add_special_tokens:
                ids, tokens = self.special_tokens[name]
                pieces.append(_special(ids, tokens, type_id))
        # Merging carries the truncated-off windows along: each gets the same special tokens.
        return Encoding.merge(pieces)


def _set_sequence(encoding, type_id, sequence_id, windows=False):
    """Give a sequence its type id and sequence id. As in the reference, a template sets the
    type ids of the sequence itself only: its truncated-off windows keep the ones they were
    made with (0 for the first text, 1 for the pair), whatever the template says."""
    encoding.type_ids = [type_id] * len(encoding.ids)
    encoding.sequence_ids = [sequence_id] * len(encoding.ids)
    for window in encoding.overflowing:
        if windows:
            _set_sequence(window, type_id, sequence_id, windows)
        else:
            window.sequence_ids = [sequence_id] * len(window.ids)


def _special(ids, tokens, type_id):
    n = len(ids)
    return Encoding(ids=list(ids), tokens=list(tokens), type_ids=[type_id] * n, attention_mask=[1] * n,
                    offsets=[(0, 0)] * n, word_ids=[None] * n, special_tokens_mask=[1] * n)


def BertProcessing(sep, cls):
    """[CLS] $A [SEP] / [CLS] $A [SEP] $B:1 [SEP]:1 (sep, cls are (token, id) pairs)."""
    return TemplateProcessing(
        single=[(cls[0], 0), (A, 0), (sep[0], 0)],
        pair=[(cls[0], 0), (A, 0), (sep[0], 0), (B, 1), (sep[0], 1)],
        special_tokens={cls[0]: ([cls[1]], [cls[0]]), sep[0]: ([sep[1]], [sep[0]])},
    )


class RobertaProcessing(TemplateProcessing):
    """<s> $A </s> / <s> $A </s> </s> $B </s>, every type id 0; optionally trims offsets."""

    def __init__(self, sep, cls, trim_offsets=True, add_prefix_space=True):
        super().__init__(
            single=[(cls[0], 0), (A, 0), (sep[0], 0)],
            pair=[(cls[0], 0), (A, 0), (sep[0], 0), (sep[0], 0), (B, 0), (sep[0], 0)],
            special_tokens={cls[0]: ([cls[1]], [cls[0]]), sep[0]: ([sep[1]], [sep[0]])},
        )
        self.trim_offsets = trim_offsets
        self.add_prefix_space = add_prefix_space

    def process(self, encoding, pair=None, add_special_tokens=True):
        for item in [encoding] if pair is None else [encoding, pair]:
            if self.trim_offsets:
                trim_offsets(item, self.add_prefix_space)
                for window in item.overflowing:
                    trim_offsets(window, self.add_prefix_space)
            _set_sequence(item, 0, 0, windows=True)  # RoBERTa: every type id is 0, windows too
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
    """A tokenizer.json "post_processor" object -> a post-processor (None for null), fields
    read with the reference's types (see schema.py)."""
    if config is None:
        return None
    fields, kind = type_of(config, where, _KINDS)
    if kind == "TemplateProcessing":
        special = {}
        for name, item in fields.object("special_tokens").items():
            token = Fields(item, f"{where}.special_tokens[{name!r}]")
            token.string("id")
            ids = [check_uint(v, f"{token.where}.ids[{i}]") for i, v in enumerate(token.array("ids"))]
            tokens = token.array("tokens")
            for i, text in enumerate(tokens):
                if not isinstance(text, str):
                    raise ValueError(f"{token.where}.tokens[{i}] is {show(text)}; expected a string")
            if len(ids) != len(tokens):
                raise ValueError(f"{token.where} has {len(ids)} ids but {len(tokens)} tokens; expected one id per token")
            special[name] = (ids, tokens)
        single = _template(fields, "single", special)
        pair = _template(fields, "pair", special)
        return TemplateProcessing(single, pair, special)
    if kind == "BertProcessing":
        return BertProcessing(_token_and_id(fields, "sep"), _token_and_id(fields, "cls"))
    if kind == "RobertaProcessing":
        return RobertaProcessing(_token_and_id(fields, "sep"), _token_and_id(fields, "cls"),
                                 fields.boolean("trim_offsets"), fields.boolean("add_prefix_space"))
    if kind == "ByteLevel":
        fields.boolean("use_regex", True)
        return ByteLevel(fields.boolean("trim_offsets"), fields.boolean("add_prefix_space"))
    if kind == "Sequence":
        return Sequence(from_config(p, f"{where}.processors[{i}]") for i, p in enumerate(objects(fields, "processors")))


_KINDS = ("TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel", "Sequence")


def _token_and_id(fields, name):
    """A ["token", id] pair."""
    value = fields.array(name)
    if len(value) != 2 or not isinstance(value[0], str):
        raise ValueError(f"{fields.path(name)} is {show(value)}; expected [token, id]")
    return value[0], check_uint(value[1], f"{fields.path(name)}[1]")


def _template(fields, name, special):
    """A template: a list of {"Sequence": {"id": "A" | "B", "type_id": n}} and
    {"SpecialToken": {"id": name, "type_id": n}} -> [(name, type_id), ...]."""
    pieces = []
    for index, piece in enumerate(fields.array(name)):
        where = f"{fields.path(name)}[{index}]"
        if not isinstance(piece, dict) or len(piece) != 1 or next(iter(piece)) not in ("Sequence", "SpecialToken"):
            raise ValueError(f"{where} is {show(piece)}; expected {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}")
        kind, body = next(iter(piece.items()))
        body = Fields(body, f"{where}.{kind}")
        type_id = body.uint("type_id")
        if kind == "Sequence":
            pieces.append((body.choice("id", {"A": A, "B": B}), type_id))
        else:
            token = body.string("id")
            if token not in special:
                raise ValueError(f"{body.where}.id is {token!r}, which is not in {fields.where}.special_tokens")
            pieces.append((token, type_id))
    return pieces
