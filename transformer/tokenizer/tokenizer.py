"""`Tokenizer`: text -> token ids, through the four stages, with the reference's exact results.

    raw text --added tokens--> pieces --normalizer--> clean text --pre-tokenizer--> words
             --model--> tokens --truncate--> --post-processor--> [CLS] ... [SEP] --pad--> Encoding

    >>> tok = Tokenizer.from_pretrained("all-MiniLM-L6-v2")        # doctest: +SKIP
    >>> tok.encode("Hello world!").tokens                           # doctest: +SKIP
    ['[CLS]', 'hello', 'world', '!', '[SEP]']
    >>> batch = tok(["Hello", "Hi there"], padding=True)            # doctest: +SKIP
    >>> batch["input_ids"]                                          # doctest: +SKIP
    array([[ 101, 7592,  102,    0],
           [ 101, 7632, 2045,  102]])

`encode` / `encode_batch` behave like Rust `tokenizers.Tokenizer` on the same tokenizer.json,
including the truncation and padding stored in it (see `enable_truncation`, `no_padding`, ...).
`tok(texts, ...)` behaves like a Hugging Face `transformers` fast tokenizer call: only the
arguments you pass decide truncation and padding, and you get int64 NumPy arrays.
"""

import os

import numpy as np

from transformer.files import ModelFileError

from . import loaders
from .added_tokens import AddedVocabulary
from .encoding import Encoding, truncate_pair
from .models import MissingUnkError
from .unicode import LazyRegex, char_class

VERY_LARGE_INTEGER = int(1e30)  # what transformers reports when a checkpoint sets no limit
# Rows longer than this are refused rather than allocated (the reference aborts the process
# when it cannot allocate a padded row).
MAX_PADDED_LENGTH = 1 << 24
_LETTER_SPACE = LazyRegex(lambda: f"[{char_class('ONIG_LETTER')}] ")  # a safe place to cut a text


class Tokenizer:
    def __init__(self, model, normalizer=None, pre_tokenizer=None, post_processor=None, decoder=None,
                 added_tokens=(), truncation=None, padding=None, model_max_length=None,
                 special_tokens=None, special_contents=None):
        self.model = model
        self.normalizer = normalizer
        self.pre_tokenizer = pre_tokenizer
        self.post_processor = post_processor
        self.decoder = decoder
        self.added_vocabulary = AddedVocabulary(added_tokens, normalizer, special_contents)
        # Stored settings, applied by encode/encode_batch (as the reference does). Call
        # arguments of tok(...) override them.
        self.truncation = truncation   # dict(max_length, stride, strategy, direction) or None
        self.padding = padding         # dict(length or None, pad_id, pad_type_id, pad_token, direction, pad_to_multiple_of) or None
        self.model_max_length = model_max_length if model_max_length is not None else VERY_LARGE_INTEGER
        self.special_tokens = dict(special_tokens or {})  # role ("pad_token", ...) -> token string
        self.source = None  # the file it was read from, named in errors that only encoding finds

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path):
        """A model name ("all-MiniLM-L6-v2"), a model directory, or a tokenizer file (a
        tokenizer.json, or a .gguf file: the tokenizer its metadata describes).

        In a directory: tokenizer.json, else vocab.txt (BERT WordPiece), else vocab.json +
        merges.txt (GPT-2 / RoBERTa byte-level BPE); tokenizer_config.json and
        special_tokens_map.json are read when present.
        """
        from transformer.store import resolve

        if not isinstance(name_or_path, (str, os.PathLike)):
            raise TypeError(f"name_or_path is {type(name_or_path).__name__}; expected a model name or a path")
        return loaders.load(resolve(name_or_path), cls)

    @classmethod
    def from_file(cls, path):
        """A tokenizer.json file, like `tokenizers.Tokenizer.from_file`."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path is {type(path).__name__}; expected the path of a tokenizer.json")
        return loaders.load(path, cls)

    @classmethod
    def from_str(cls, json_text):
        """The text of a tokenizer.json, like `tokenizers.Tokenizer.from_str`."""
        return loaders.from_json_text(json_text, cls)

    # --- vocabulary -----------------------------------------------------------------------
    def token_to_id(self, token):
        if not isinstance(token, str):
            raise TypeError(f"token is {type(token).__name__}; expected a str")
        added = self.added_vocabulary.by_content.get(token)
        return added.id if added is not None else self.model.token_to_id(token)

    def id_to_token(self, token_id):
        token_id = _check_id(token_id, "token_id")
        added = self.added_vocabulary.by_id.get(token_id)
        return added.content if added is not None else self.model.id_to_token(token_id)

    def get_vocab(self, with_added_tokens=True):
        vocab = dict(self.model.vocab)
        if with_added_tokens:
            vocab.update({t.content: t.id for t in self.added_vocabulary.tokens})
        return vocab

    def get_vocab_size(self, with_added_tokens=True):
        return len(self.get_vocab(with_added_tokens))

    @property
    def vocab_size(self):
        return self.get_vocab_size(True)

    def __len__(self):
        return self.vocab_size

    def _role_id(self, role):
        token = self.special_tokens.get(role)
        return None if token is None else self.token_to_id(token)

    pad_token_id = property(lambda self: self._pad_id())
    mask_token_id = property(lambda self: self._role_id("mask_token"))
    cls_token_id = property(lambda self: self._role_id("cls_token"))
    sep_token_id = property(lambda self: self._role_id("sep_token"))
    unk_token_id = property(lambda self: self._role_id("unk_token"))
    bos_token_id = property(lambda self: self._role_id("bos_token"))
    eos_token_id = property(lambda self: self._role_id("eos_token"))

    def _pad_id(self):
        if self.padding is not None and self.padding.get("pad_id") is not None:
            return self.padding["pad_id"]
        return self._role_id("pad_token")

    # --- stored truncation / padding, as in the reference ----------------------------------
    def enable_truncation(self, max_length, stride=0, strategy="longest_first", direction="right"):
        self.truncation = dict(max_length=_check_count(max_length, "max_length"), stride=_check_count(stride, "stride"),
                               strategy=_check_choice(strategy, "strategy", ("longest_first", "only_first", "only_second")),
                               direction=_check_choice(direction, "direction", ("right", "left")))

    def no_truncation(self):
        self.truncation = None

    def enable_padding(self, direction="right", pad_id=None, pad_type_id=0, pad_token=None, length=None,
                       pad_to_multiple_of=None):
        _check_choice(direction, "direction", ("right", "left"))
        pad_type_id = _check_id(pad_type_id, "pad_type_id")
        if pad_id is not None:
            pad_id = _check_id(pad_id, "pad_id")
        if pad_token is not None and not isinstance(pad_token, str):
            raise TypeError(f"pad_token is {type(pad_token).__name__}; expected a str")
        if length is not None:
            length = _check_count(length, "length")
        if pad_to_multiple_of is not None:
            pad_to_multiple_of = _check_count(pad_to_multiple_of, "pad_to_multiple_of")
        if pad_id is None:
            pad_id = self._pad_id() if self._pad_id() is not None else 0
        if pad_token is None:
            pad_token = self.special_tokens.get("pad_token") or self.id_to_token(pad_id) or "[PAD]"
        self.padding = dict(direction=direction, pad_id=pad_id, pad_type_id=pad_type_id, pad_token=pad_token,
                            length=length, pad_to_multiple_of=pad_to_multiple_of)

    def no_padding(self):
        self.padding = None

    # --- the pipeline ---------------------------------------------------------------------
    def _words(self, text):
        """Raw text -> [(word, origin, added_token_id or None), ...] (stages 1-2)."""
        added = self.added_vocabulary
        normalizer, pre_tokenizer = self.normalizer, self.pre_tokenizer
        words = []
        for start, end, token_id in added.split_raw(text):
            if token_id is not None:
                words.append((text[start:end], start, token_id))
                continue
            piece, origin = text[start:end], start
            if normalizer is not None:
                piece, origin = normalizer.normalize(piece, origin)
            for n_start, n_end, n_token_id in added.split_normalized(piece):
                sub = piece[n_start:n_end]
                sub_origin = origin + n_start if isinstance(origin, int) else origin[n_start:n_end]
                if not sub:
                    continue
                if n_token_id is not None:
                    words.append((sub, sub_origin, n_token_id))
                elif pre_tokenizer is None:
                    words.append((sub, sub_origin, None))
                else:
                    words.extend((w, o, None) for w, o in pre_tokenizer.split(sub, sub_origin) if w)
        return words

    def _encode_sequence(self, text):
        """One text -> an Encoding without special tokens (stages 1-3)."""
        if not isinstance(text, str):
            raise TypeError(f"expected a str to tokenize, got {type(text).__name__}")
        try:
            return self._encode_words(text)
        except MissingUnkError as error:
            if self.source is None:
                raise
            raise ModelFileError(f"{self.source}: {error}") from None

    def _encode_words(self, text):
        ids, tokens, offsets, word_ids = [], [], [], []
        tokenize = self.model.tokenize
        for index, (word, origin, token_id) in enumerate(self._words(text)):
            if token_id is not None:
                ids.append(token_id)
                tokens.append(word)  # the matched text, with any lstrip/rstrip spaces
                offsets.append(_span(origin, 0, len(word)))
                word_ids.append(index)
                continue
            word_tokens = tokenize(word)
            if isinstance(origin, int):
                for token_id_, token, start, end in word_tokens:
                    ids.append(token_id_)
                    tokens.append(token)
                    offsets.append((origin + start, origin + end))
            else:
                for token_id_, token, start, end in word_tokens:
                    ids.append(token_id_)
                    tokens.append(token)
                    offsets.append(_span(origin, start, end))
            word_ids.extend([index] * len(word_tokens))
        return Encoding(ids=ids, tokens=tokens, offsets=offsets, word_ids=word_ids)

    def num_special_tokens_to_add(self, is_pair):
        if self.post_processor is None:
            return 0
        return self.post_processor.added_tokens(is_pair)

    def _post_process(self, encoding, pair, add_special_tokens, truncation, padding_length=None):
        if truncation is not None:
            added = self.num_special_tokens_to_add(pair is not None) if add_special_tokens else 0
            if truncation["max_length"] < added:
                raise ValueError(f"max_length={truncation['max_length']} leaves no room: the post-processor "
                                 f"adds {added} special tokens")
            truncate_pair(encoding, pair, truncation["max_length"] - added, truncation.get("strategy", "longest_first"),
                          truncation.get("stride", 0), truncation.get("direction", "right"))
        if self.post_processor is not None:
            encoding = self.post_processor.process(encoding, pair, add_special_tokens)
        else:
            for index, item in enumerate([encoding] if pair is None else [encoding, pair]):
                item.type_ids = [index] * len(item.ids)
            encoding = Encoding.merge([encoding] if pair is None else [encoding, pair])
        return encoding

    def encode(self, text, pair=None, add_special_tokens=True):
        """One text (and optional pair) -> Encoding, applying the stored truncation/padding."""
        _check_text(text, "text", "encode_batch")
        if pair is not None:
            _check_text(pair, "pair", "encode_batch")
        return self.encode_batch([text], None if pair is None else [pair], add_special_tokens)[0]

    def encode_batch(self, texts, pairs=None, add_special_tokens=True):
        """Texts (and optional pairs) -> [Encoding], applying the stored truncation/padding.

        As in the reference, an item of `texts` may also be a (text, pair) tuple."""
        if pairs is None and not isinstance(texts, str) and isinstance(texts, (list, tuple)) and \
                any(isinstance(item, (tuple, list)) for item in texts):
            texts, pairs = _split_pairs(texts)
        encodings = self._encode_many(texts, pairs, add_special_tokens, self.truncation)
        if self.padding is not None:
            self._pad(encodings, self.padding.get("length"), self.padding)
        return encodings

    def _encode_many(self, texts, pairs, add_special_tokens, truncation, overflow=True):
        """Texts (and pairs) -> [Encoding] after truncation and post-processing. With
        overflow=False the truncated-off windows are not wanted: a single text truncated on
        the right is then tokenized only as far as its kept tokens reach (_encode_prefix)."""
        texts = _check_texts(texts, "texts")
        _check_flag(add_special_tokens, "add_special_tokens")
        if pairs is not None:
            pairs = _check_texts(pairs, "pairs", allow_none=True)
            if len(pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs; they must match one to one")
            if all(pair is None for pair in pairs):
                pairs = None
        limit = None
        if (truncation is not None and not overflow and pairs is None and truncation.get("direction") == "right"
                and truncation.get("strategy") in ("longest_first", "only_first")):
            added = self.num_special_tokens_to_add(False) if add_special_tokens else 0
            limit = truncation["max_length"] - added if truncation["max_length"] >= added else None
        encodings = []
        for i, text in enumerate(texts):
            first = self._encode_sequence(text) if limit is None else self._encode_prefix(text, limit)
            second = self._encode_sequence(pairs[i]) if pairs is not None and pairs[i] is not None else None
            if second is not None:
                second.type_ids = [1] * len(second.ids)  # the reference encodes a pair with type id 1
            encodings.append(self._post_process(first, second, add_special_tokens, truncation))
        return encodings

    # The first prefix tried holds this many characters per kept token (then 4x as many, ...).
    PREFIX_CHARS_PER_TOKEN = 16

    def _encode_prefix(self, text, limit):
        """An Encoding whose first `limit` tokens (every field) are those of the whole text's,
        made from as short a prefix of `text` as gives them.

        The prefix ends at a safe cut: just before a space that follows a letter. When every
        stage is local there (prefix_safe: the normalizer's output up to the cut does not
        depend on what follows it, and the pre-tokenizer always ends a word at such a space),
        the words before the cut, hence their tokens, offsets and word ids, are those of the
        whole text. Otherwise the whole text is tokenized.
        """
        if len(text) <= (limit + 1) * self.PREFIX_CHARS_PER_TOKEN or not self._prefix_safe():
            return self._encode_sequence(text)
        size = (limit + 1) * self.PREFIX_CHARS_PER_TOKEN
        while size < len(text):
            match = _LETTER_SPACE.search(text, size - 1)
            if match is None:
                break
            cut = match.end() - 1  # the index of the space
            encoding = self._encode_sequence(text[:cut])
            if len(encoding.ids) >= limit:
                return encoding
            size = max(4 * size, cut + 1)
        return self._encode_sequence(text)

    def _prefix_safe(self):
        """Whether tokenizing a prefix cut just before a space that follows a letter gives the
        first words of the whole text (see _encode_prefix)."""
        pre = self.pre_tokenizer
        if pre is None or not (pre.local and pre.splits_at_space):
            return False
        if self.normalizer is not None and not self.normalizer.prefix_safe:
            return False
        return self.added_vocabulary.prefix_safe

    def _pad(self, encodings, length, padding):
        if not encodings:
            return
        if length is None:
            length = max(len(e.ids) for e in encodings)
        multiple = padding.get("pad_to_multiple_of")
        if multiple and length % multiple:
            length += multiple - length % multiple
        if length > MAX_PADDED_LENGTH:
            raise ValueError(f"padding would make rows of {length:,} tokens; at most {MAX_PADDED_LENGTH:,} are "
                             "allowed (check the padding length and pad_to_multiple_of)")
        for encoding in encodings:
            encoding.pad(length, padding["pad_id"], padding.get("pad_type_id", 0), padding["pad_token"],
                         padding.get("direction", "right"))

    # --- the transformers-style call ------------------------------------------------------
    def __call__(self, texts, pairs=None, padding=False, truncation=False, max_length=None, stride=0,
                 return_overflowing_tokens=False, pad_to_multiple_of=None, padding_side=None,
                 add_special_tokens=True, return_offsets_mapping=False, return_special_tokens_mask=False):
        """Texts -> dict of int64 arrays [rows, seq]: input_ids, attention_mask, token_type_ids.

        padding: False | True / "longest" (to the longest row) | "max_length".
        truncation: False | True / "longest_first" | "only_first" | "only_second"; with
        max_length (default: model_max_length). stride + return_overflowing_tokens=True also
        return the cut-off windows as extra rows, and "overflow_to_sample_mapping" [rows] says
        which input each row came from. A single str is a batch of one.
        """
        if isinstance(texts, str):
            if pairs is not None and not isinstance(pairs, str):
                raise TypeError(f"pairs is {type(pairs).__name__} but texts is a single str; "
                                "give both as str or both as lists of str")
            texts = [texts]
            pairs = None if pairs is None else [pairs]
        texts = _check_texts(texts, "texts")
        if not texts:
            raise ValueError("texts is empty: give at least one text to tokenize")
        if max_length is not None:
            max_length = _check_count(max_length, "max_length")
        stride = _check_count(stride, "stride")
        if pad_to_multiple_of is not None:
            pad_to_multiple_of = _check_count(pad_to_multiple_of, "pad_to_multiple_of")
        for flag in ("return_overflowing_tokens", "return_offsets_mapping", "return_special_tokens_mask"):
            _check_flag(locals()[flag], flag)
        truncation_params = None
        if truncation not in (False, None):
            strategy = "longest_first" if truncation is True else truncation
            if strategy not in ("longest_first", "only_first", "only_second"):
                raise ValueError(f"truncation={truncation!r}; expected True, False, 'longest_first', "
                                 "'only_first' or 'only_second'")
            limit = max_length if max_length is not None else self.model_max_length
            truncation_params = dict(max_length=limit, stride=stride, strategy=strategy, direction="right")
        encodings = self._encode_many(texts, pairs, add_special_tokens, truncation_params,
                                      overflow=return_overflowing_tokens)

        if padding not in (False, None, "do_not_pad"):
            if padding is True or padding == "longest":
                length = None
            elif padding == "max_length":
                length = max_length if max_length is not None else self.model_max_length
            else:
                raise ValueError(f"padding={padding!r}; expected True, False, 'longest' or 'max_length'")
            pad_id = self._pad_id()
            if pad_id is None:
                raise ValueError("padding was requested but this tokenizer has no pad token "
                                 "(set tok.special_tokens['pad_token'] or call tok.enable_padding(pad_id=...))")
            stored = self.padding or {}
            side = padding_side or stored.get("direction", "right")
            if side not in ("right", "left"):
                raise ValueError(f"padding_side={padding_side!r}; expected 'right' or 'left'")
            pad_token = stored.get("pad_token") or self.special_tokens.get("pad_token") or self.id_to_token(pad_id)
            self._pad(encodings, length, dict(pad_id=pad_id, pad_type_id=stored.get("pad_type_id", 0),
                                              pad_token=pad_token, direction=side,
                                              pad_to_multiple_of=pad_to_multiple_of))

        rows, sample = [], []
        for index, encoding in enumerate(encodings):
            rows.append(encoding)
            sample.append(index)
            if return_overflowing_tokens:
                rows.extend(encoding.overflowing)
                sample.extend([index] * len(encoding.overflowing))
        lengths = {len(row.ids) for row in rows}
        if len(lengths) > 1:
            raise ValueError(f"the rows have different lengths ({min(lengths)}..{max(lengths)} tokens) and "
                             "cannot form one array: pass padding=True (or 'max_length')")
        batch = {
            "input_ids": np.array([row.ids for row in rows], dtype=np.int64).reshape(len(rows), -1),
            "attention_mask": np.array([row.attention_mask for row in rows], dtype=np.int64).reshape(len(rows), -1),
            "token_type_ids": np.array([row.type_ids for row in rows], dtype=np.int64).reshape(len(rows), -1),
        }
        if return_overflowing_tokens:
            batch["overflow_to_sample_mapping"] = np.array(sample, dtype=np.int64)
        if return_offsets_mapping:
            batch["offset_mapping"] = np.array([row.offsets for row in rows], dtype=np.int64).reshape(len(rows), -1, 2)
        if return_special_tokens_mask:
            batch["special_tokens_mask"] = np.array([row.special_tokens_mask for row in rows],
                                                    dtype=np.int64).reshape(len(rows), -1)
        return batch

    # --- decoding -------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens=True):
        """Token ids -> text. Round-trips encode for byte-level BPE; for BERT gives the
        normalized text with the reference's spacing rules."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple, range)):
            raise TypeError(f"ids is {_kind(ids)}; expected a list of int token ids")
        _check_flag(skip_special_tokens, "skip_special_tokens")
        tokens = []
        decoded, model_token = self.added_vocabulary.decoded, self.model.id_to_token
        for position, token_id in enumerate(ids):
            token_id = _check_id(token_id, f"ids[{position}]")
            token = decoded.get(token_id)
            if token is None:
                token = model_token(token_id)
            if token is None:
                continue
            # As in the reference, a special token is skipped by the text decode writes for it
            # (a normalized one is written, and so checked, in its normalized form).
            if skip_special_tokens and token in self.added_vocabulary.special:
                continue
            tokens.append(token)
        if self.decoder is None:
            return " ".join(tokens)
        return self.decoder.decode(tokens)

    def decode_batch(self, sequences, skip_special_tokens=True):
        if isinstance(sequences, np.ndarray):
            sequences = sequences.tolist()
        if isinstance(sequences, (str, bytes)) or not isinstance(sequences, (list, tuple)):
            raise TypeError(f"sequences is {type(sequences).__name__}; expected a list of lists of token ids")
        for index, ids in enumerate(sequences):
            if not isinstance(ids, (list, tuple, np.ndarray, range)):
                raise TypeError(f"sequences[{index}] is {_kind(ids)}; expected a list of token ids")
        return [self.decode(ids, skip_special_tokens) for ids in sequences]

    def __repr__(self):
        return (f"Tokenizer(model={type(self.model).__name__}, vocab_size={self.vocab_size}, "
                f"normalizer={self.normalizer!r}, pre_tokenizer={self.pre_tokenizer!r})")


def _span(origin, start, end):
    if isinstance(origin, int):
        return origin + start, origin + end
    first, last = origin[start], origin[end - 1]
    return (0 if first < 0 else first), (0 if last < 0 else last + 1)


def _kind(value):
    """What a message calls a value of the wrong type: 'None', or its type's name."""
    return "None" if value is None else type(value).__name__


def _check_texts(texts, name, allow_none=False):
    """texts: a list (or other iterable) of str -> a list; TypeError naming the bad item."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of str, got a single str (wrap it in a list)")
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError(f"{name} is {type(texts).__name__}; expected a str or a list of str "
                        "(decode bytes first, e.g. data.decode('utf-8'))")
    if isinstance(texts, dict) or texts is None:
        raise TypeError(f"{name} is {_kind(texts)}; expected a list of str")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name} is {type(texts).__name__}; expected a list of str") from None
    for index, text in enumerate(texts):
        if not (isinstance(text, str) or (allow_none and text is None)):
            _check_text(text, f"{name}[{index}]")
    return texts


def _check_text(text, name, plural=None):
    """TypeError unless `text` is a str (with a hint for the usual mistakes)."""
    if isinstance(text, str):
        return
    kind = _kind(text)
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(f"{name} is {kind}; expected a str (decode bytes first, e.g. data.decode('utf-8'))")
    if isinstance(text, (list, tuple)) and plural:
        raise TypeError(f"{name} is {kind}; expected a str (use {plural} for several texts)")
    raise TypeError(f"{name} is {kind}; expected a str")


def _split_pairs(items):
    """[text or (text, pair), ...] (the reference's encode_batch input) -> (texts, pairs)."""
    texts, pairs = [], []
    for index, item in enumerate(items):
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise ValueError(f"texts[{index}] has {len(item)} items; expected a str or a (text, pair) "
                                 "of two str")
            _check_text(item[0], f"texts[{index}][0]")
            _check_text(item[1], f"texts[{index}][1]")
            texts.append(item[0])
            pairs.append(item[1])
        else:
            texts.append(item)
            pairs.append(None)
    return texts, pairs


def _check_count(value, name):
    """A non-negative int (numpy ints too) -> int; else TypeError / ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} is {value!r:.40} ({type(value).__name__}); expected a non-negative integer")
    if value < 0:
        raise ValueError(f"{name} is {value}; expected a non-negative integer")
    return int(value)


def _check_id(value, name):
    """A token id: an int from 0 to 2**32 - 1, as in the reference."""
    value = _check_count(value, name)
    if value >= 2 ** 32:
        raise ValueError(f"{name} is {value}; expected a token id below 2**32")
    return value


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} is {value!r:.40}; expected True or False")


def _check_choice(value, name, options):
    if value not in options:
        raise ValueError(f"{name} is {value!r:.40}; expected one of {', '.join(repr(o) for o in options)}")
    return value
