"""Decoders: token strings -> text, undoing what the model and pre-tokenizer added.

    >>> WordPiece().decode(["hello", "##s", ",", "world"])
    'hellos, world'
    >>> ByteLevel().decode(["Hello", "Ġw", "Ã©"])
    'Hello wé'
"""

from .pre_tokenizers import CHARS_TO_BYTES


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
            for char in token:
                byte = CHARS_TO_BYTES.get(char)
                if byte is None:
                    data.extend(char.encode("utf-8"))
                else:
                    data.append(byte)
        return [data.decode("utf-8", errors="replace")]


class Metaspace(Decoder):
    """'▁' -> ' ', dropping the first one when it was prepended."""

    def __init__(self, replacement="▁", prepend_scheme="always", split=True):
        self.replacement = replacement
        self.prepend_scheme = prepend_scheme

    def decode_chain(self, tokens):
        out = []
        for i, token in enumerate(tokens):
            text = token.replace(self.replacement, " ")
            if i == 0 and self.prepend_scheme != "never" and text.startswith(" "):
                text = text[1:]
            out.append(text)
        return out


class BPEDecoder(Decoder):
    """Replace the end-of-word suffix by a space (none after the last token)."""

    def __init__(self, suffix="</w>"):
        self.suffix = suffix

    def decode_chain(self, tokens):
        last = len(tokens) - 1
        return [t.replace(self.suffix, "" if i == last else " ") for i, t in enumerate(tokens)]


class Replace(Decoder):
    def __init__(self, pattern, content):
        self.pattern = pattern
        self.content = content

    def decode_chain(self, tokens):
        return [t.replace(self.pattern, self.content) for t in tokens]


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
    """A tokenizer.json "decoder" object -> a Decoder (None for null)."""
    if config is None:
        return None
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"malformed tokenizer.json: {where} has no field 'type' (got {config!r:.200})")
    kind = config["type"]
    if kind == "WordPiece":
        return WordPiece(config.get("prefix", "##"), config.get("cleanup", True))
    if kind == "ByteLevel":
        return ByteLevel()
    if kind == "Metaspace":
        scheme = config.get("prepend_scheme") or ("always" if config.get("add_prefix_space", True) else "never")
        return Metaspace(config.get("replacement", "▁"), scheme)
    if kind == "BPEDecoder":
        return BPEDecoder(config.get("suffix", "</w>"))
    if kind == "Replace":
        pattern = config.get("pattern", {})
        if "String" not in pattern:
            raise ValueError(f"unsupported: {where} Replace decoder needs a String pattern, got {pattern!r}")
        return Replace(pattern["String"], config.get("content", ""))
    if kind == "Strip":
        return Strip(config.get("content", " "), config.get("start", 0), config.get("stop", 0))
    if kind == "Fuse":
        return Fuse()
    if kind == "ByteFallback":
        return ByteFallback()
    if kind == "Sequence":
        return Sequence(from_config(d, f"{where}.decoders[{i}]") for i, d in enumerate(config.get("decoders", [])))
    raise ValueError(f"unsupported decoder type {kind!r} in {where}; supported: WordPiece, ByteLevel, "
                     "Metaspace, BPEDecoder, Replace, Strip, Fuse, ByteFallback, Sequence")
