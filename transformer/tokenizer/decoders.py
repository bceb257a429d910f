"""Decoders: token strings -> text, undoing what the model and pre-tokenizer added.

    >>> WordPiece().decode(["hello", "##s", ",", "world"])
    'hellos, world'
    >>> ByteLevel().decode(["Hello", "Ġw", "Ã©"])
    'Hello wé'
"""

import re

from . import onig
from .pre_tokenizers import CHARS_TO_BYTES, metaspace_fields
from .schema import USIZE, objects, type_of


def _cleanup(text):
    """Undo the spaces BERT's tokenization puts before punctuation and contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                          (" n't", "n't"), (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"),
                          (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class Decoder:
    def decode(self, tokens):
        return "".join(self.decode_chain(list(tokens)))


class WordPiece(Decoder):
    """Glue '##' pieces to the previous token, put a space before the others."""

    def __init__(self, prefix="##", cleanup=True):
        self.prefix = prefix
        self.cleanup = cleanup

    def decode_chain(self, tokens):
        out = []
        for i, token in enumerate(tokens):
            if i != 0:
                token = token[len(self.prefix):] if token.startswith(self.prefix) else " " + token
            out.append(_cleanup(token) if self.cleanup else token)
        return out


class ByteLevel(Decoder):
    """GPT-2 characters -> bytes -> UTF-8 text (invalid sequences become U+FFFD)."""

    def decode_chain(self, tokens):
        data = bytearray()
        for token in tokens:
            # As the reference: a token with any character outside the GPT-2 alphabet is kept
            # whole, as its own UTF-8 bytes (a second ByteLevel decoder leaves text alone).
            token_bytes = [CHARS_TO_BYTES.get(char) for char in token]
            if None in token_bytes:
                data.extend(token.encode("utf-8"))
            else:
                data.extend(token_bytes)
        return [data.decode("utf-8", errors="replace")]


class Metaspace(Decoder):
    """'▁' -> ' ', dropping the first one when it was prepended."""

    def __init__(self, replacement="▁", prepend_scheme="always", split=True):
        self.replacement = replacement
        self.prepend_scheme = prepend_scheme

    def decode_chain(self, tokens):
        # As the reference: in the first token every replacement character goes (not just a
        # leading one) unless nothing was prepended.
        return [token.replace(self.replacement, "" if i == 0 and self.prepend_scheme != "never" else " ")
                for i, token in enumerate(tokens)]


class BPEDecoder(Decoder):
    """Replace the end-of-word suffix by a space (none after the last token)."""

    def __init__(self, suffix="</w>"):
        self.suffix = suffix

    def decode_chain(self, tokens):
        last = len(tokens) - 1
        return [t.replace(self.suffix, "" if i == last else " ") for i, t in enumerate(tokens)]


class Replace(Decoder):
    """Replace every match of a string (or regex) in each token, e.g. '▁' -> ' '."""

    def __init__(self, pattern, content, is_regex=False, where="Replace.pattern"):
        self.pattern = pattern
        self.content = content
        self._regex = onig.compile(pattern, where) if is_regex else onig.literal(pattern)

    def decode_chain(self, tokens):
        return [self._regex.sub(self.content, t) if t else t for t in tokens]


class CTC(Decoder):
    """Speech models' CTC output: merge repeats, drop the pad token, word delimiter -> space."""

    def __init__(self, pad_token="<pad>", word_delimiter_token="|", cleanup=True):
        self.pad_token, self.word_delimiter_token, self.cleanup = pad_token, word_delimiter_token, cleanup

    def decode_chain(self, tokens):
        out, previous = [], object()
        for token in tokens:
            if token == previous:
                continue
            previous = token
            text = token.replace(self.pad_token, "") if self.pad_token else token
            if self.cleanup:
                text = _cleanup(text).replace(self.word_delimiter_token, " ")
            if text:
                out.append(text)
        return out


class Strip(Decoder):
    def __init__(self, content=" ", start=0, stop=0):
        self.content, self.start, self.stop = content, start, stop

    def decode_chain(self, tokens):
        out = []
        for token in tokens:
            chars = list(token)
            start = 0
            while start < min(self.start, len(chars)) and chars[start] == self.content:
                start += 1
            stop = len(chars)
            while stop > start and len(chars) - stop < self.stop and chars[stop - 1] == self.content:
                stop -= 1
            out.append("".join(chars[start:stop]))
        return out


class Fuse(Decoder):
    def decode_chain(self, tokens):
        return ["".join(tokens)]


class ByteFallback(Decoder):
    """'<0xE2>' '<0x82>' '<0xAC>' -> '€' (invalid byte runs become U+FFFD, one per byte)."""

    def decode_chain(self, tokens):
        out, pending = [], bytearray()

        def flush():
            if pending:
                try:
                    out.append(pending.decode("utf-8"))
                except UnicodeDecodeError:
                    out.extend(["\ufffd"] * len(pending))
                pending.clear()

        for token in tokens:
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                try:
                    pending.append(int(token[3:5], 16))
                    continue
                except ValueError:
                    pass
            flush()
            out.append(token)
        flush()
        return out


class Sequence(Decoder):
    def __init__(self, decoders):
        self.decoders = list(decoders)

    def decode_chain(self, tokens):
        for decoder in self.decoders:
            tokens = decoder.decode_chain(tokens)
        return tokens


def from_config(config, where="decoder"):
    """A tokenizer.json "decoder" object -> a Decoder (None for null), fields read with the
    reference's types (see schema.py)."""
    if config is None:
        return None
    fields, kind = type_of(config, where, _KINDS)
    if kind == "WordPiece":
        return WordPiece(fields.string("prefix"), fields.boolean("cleanup"))
    if kind == "ByteLevel":
        fields.boolean("add_prefix_space"), fields.boolean("trim_offsets"), fields.boolean("use_regex", True)
        return ByteLevel()
    if kind == "Metaspace":
        replacement, scheme, split = metaspace_fields(fields)
        return Metaspace(replacement, scheme, split)
    if kind == "BPEDecoder":
        return BPEDecoder(fields.string("suffix"))
    if kind == "CTC":
        return CTC(fields.string("pad_token"), fields.string("word_delimiter_token"), fields.boolean("cleanup"))
    if kind == "Replace":
        pattern, is_regex = fields.pattern("pattern")
        return Replace(pattern, fields.string("content"), is_regex, where=fields.path("pattern"))
    if kind == "Strip":
        return Strip(fields.char("content"), fields.uint("start", limit=USIZE), fields.uint("stop", limit=USIZE))
    if kind == "Fuse":
        return Fuse()
    if kind == "ByteFallback":
        return ByteFallback()
    if kind == "Sequence":
        return Sequence(from_config(d, f"{where}.decoders[{i}]") for i, d in enumerate(objects(fields, "decoders")))


_KINDS = ("WordPiece", "ByteLevel", "Metaspace", "BPEDecoder", "CTC", "Replace", "Strip", "Fuse", "ByteFallback",
          "Sequence")
