"""config.json -> `EncoderConfig`: the numbers every other module reads.

One typed config for every supported family. Each family spells a few fields its own way
(DistilBERT says `dim`, `n_heads`, `n_layers`, `hidden_dim`, `activation`), leaves some out
(MPNet and DistilBERT have no token types), or adds one (ELECTRA's `embedding_size`); the
family's module (`transformer/families/`) says how, and this module folds those differences
into one set of names. What the model computes is the family's recipe (`config.recipe`, a
`transformer.recipe.Recipe`): the model code never asks which family it is running.

    >>> config = EncoderConfig.from_file("weights/all-MiniLM-L6-v2/config.json")
    >>> config.hidden_size, config.num_attention_heads, config.head_dim
    (384, 12, 32)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from transformer.families import MODEL_TYPES, family_module
from transformer.files import ModelFileError, read_json
from transformer.model import ACTIVATIONS
from transformer.recipe import Rotary

# config.json's model_type -> the family whose module (transformer/families/) describes it:
# its recipe, its name table, its config spellings.
FAMILIES = MODEL_TYPES

# The activations a feed-forward block may name: `transformer.model.ACTIVATIONS`, the one list.
SUPPORTED_ACTIVATIONS = tuple(ACTIVATIONS)


# The largest size any field may give: beyond every released encoder's (vocabularies reach
# 262,144 rows, position tables 131,072), small enough that no product of two sizes overflows.
MAX_SIZE = 1 << 24


class ConfigError(ValueError):
    """config.json is missing, unreadable, or describes a model this package cannot run."""


@dataclass(frozen=True)
class EncoderConfig:
    """The shape and settings of an encoder, the same names for every family.

    Sizes: `vocab_size` rows in the word table, `embedding_size` columns in the embedding
    tables (equal to `hidden_size` except ELECTRA checkpoints that project up), `hidden_size`
    wide residual stream, `num_attention_heads` heads of `head_dim = hidden_size // heads`,
    `intermediate_size` wide feed-forward, `num_hidden_layers` layers.

    Family-specific math, as plain data:
      * `type_vocab_size` is 0 when the model has no token-type embeddings (DistilBERT, MPNet).
      * `position_padding_idx` is None when position ids are 0, 1, ..., seq-1 (BERT, DistilBERT,
        ELECTRA); an int p when they are counted fairseq-style from p + 1 over non-padding
        tokens, padding tokens getting p itself (RoBERTa / XLM-R: p = pad_token_id; MPNet: 1).
      * `relative_attention_num_buckets` is the number of rows of MPNet's relative position bias
        table, 0 for families without one.

    `architectures`, `num_labels` and `id2label` say which head the checkpoint carries.
    `options` holds the settings only one family has (rotary thetas, window sizes, ...), as its
    module's `config_fields` read and checked them, for its recipe. `raw` is the config.json
    dict as read, for anything not lifted into a field.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int | None
    embedding_size: int
    position_padding_idx: int | None = None
    relative_attention_num_buckets: int = 0
    architectures: tuple[str, ...] = ()
    num_labels: int = 2
    id2label: dict = field(default_factory=dict)
    tie_word_embeddings: bool = True
    options: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def family(self) -> str:
        """Which family module describes this config: bert, roberta, distilbert, electra, mpnet."""
        return FAMILIES[self.model_type]

    @property
    def family_module(self):
        """The family's module (transformer/families/): its recipe, name table and heads."""
        return family_module(self.family)

    @cached_property
    def recipe(self):
        """What the model computes, step by step: the family's `transformer.recipe.Recipe`."""
        return self.family_module.recipe(self)

    @property
    def head_dim(self) -> int:
        """Width of one attention head: hidden_size // num_attention_heads, or the family's own
        (options["head_dim"]: Llama's head_dim, T5's d_kv)."""
        return self.options.get("head_dim") or self.hidden_size // self.num_attention_heads

    # ----------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path) -> "EncoderConfig":
        """Read a config.json file (or the config.json inside a model folder).

        Read through `transformer.files`: a regular file, bounded, strict JSON (no NaN, no key
        given twice). Raises ConfigError naming the file and the field."""
        path = Path(path)
        if path.is_dir() and path.name != "config.json":  # a folder named config.json is no model folder
            path = path / "config.json"
        try:
            raw = read_json(path, "config file", unique_keys=True)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (every model folder needs a config.json)") from None
        except ModelFileError as error:
            raise ConfigError(str(error)) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a JSON object, found {type(raw).__name__}")
        try:
            return cls.from_dict(raw)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, raw: dict) -> "EncoderConfig":
        """Build from a config.json dict, filling missing keys with `transformers`' defaults.
        Raises ConfigError naming the first field (as config.json spells it) that is not what
        a working encoder needs, or the first setting the family's recipe does not support."""
        model_type = raw.get("model_type")
        if not isinstance(model_type, str) or model_type not in FAMILIES:
            raise ConfigError(
                f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
            )
        module = family_module(FAMILIES[model_type])
        values = {**module.DEFAULTS, **getattr(module, "TYPE_DEFAULTS", {}).get(model_type, {}), **raw}
        read = Reader(raw, values, module.config_keys(raw) if hasattr(module, "config_keys") else {})

        for flag in ("is_decoder", "add_cross_attention"):
            if flag in raw and not isinstance(raw[flag], bool):
                raise ConfigError(f"{flag} must be true or false, found {_show(raw[flag])}")
        if raw.get("is_decoder") or raw.get("add_cross_attention"):
            raise ConfigError("decoder configurations (is_decoder / add_cross_attention) are not supported; "
                              "this package runs bidirectional encoders only")
        for option, supported in module.OPTIONS.items():
            value = raw.get(option)
            if value is not None and value not in supported:
                raise ConfigError(f"{option} {value!r:.60} is not supported by {model_type}; supported: "
                                  f"{', '.join(map(repr, supported))}")

        hidden_size = read.integer("hidden_size")
        pad_token_id = values.get("pad_token_id")
        if pad_token_id is not None:
            pad_token_id = _integer(pad_token_id, "pad_token_id", smallest=None)
        read.pad_token_id = pad_token_id
        fields = module.config_fields(read)  # position_padding_idx, type_vocab_size, ...
        layer_norm_eps = fields.pop("layer_norm_eps", None)
        if layer_norm_eps is None:
            layer_norm_eps = _number(values.get("layer_norm_eps"), "layer_norm_eps")
        fields.setdefault("embedding_size", hidden_size)
        hidden_act = values.get(read.key("hidden_act"))
        if not isinstance(hidden_act, str):
            raise ConfigError(f"{read.key('hidden_act')} must be an activation name, found {_show(hidden_act)}")

        architectures = raw.get("architectures") or []
        if not isinstance(architectures, list) or not all(isinstance(name, str) for name in architectures):
            raise ConfigError(f"architectures must be a list of class names, found {_show(architectures)}")
        id2label = _labels(raw.get("id2label"))
        if "num_labels" in raw:  # transformers makes range(num_labels), beside id2label too
            _integer(raw["num_labels"], "num_labels")
        num_labels = len(id2label) if id2label else _integer(raw.get("num_labels", 2), "num_labels")
        if id2label and raw.get("num_labels") is not None and raw["num_labels"] != num_labels:
            # transformers then keeps num_labels and renames every label LABEL_i: refuse the guess
            raise ConfigError(f"num_labels is {_show(raw['num_labels'])} but id2label names {num_labels} labels")
        tie_word_embeddings = values.get("tie_word_embeddings", True)  # the family's default when absent
        if not isinstance(tie_word_embeddings, bool):
            raise ConfigError(f"tie_word_embeddings must be true or false, found {_show(tie_word_embeddings)}")

        config = cls(
            model_type=model_type,
            vocab_size=read.integer("vocab_size"),
            hidden_size=hidden_size,
            num_hidden_layers=read.integer("num_hidden_layers"),
            num_attention_heads=read.integer("num_attention_heads"),
            intermediate_size=read.integer("intermediate_size"),
            hidden_act=hidden_act,
            max_position_embeddings=read.integer("max_position_embeddings"),
            layer_norm_eps=layer_norm_eps,
            pad_token_id=pad_token_id,
            architectures=tuple(architectures),
            num_labels=num_labels,
            id2label=id2label,
            tie_word_embeddings=tie_word_embeddings,
            raw=dict(raw),
            **fields,
        )
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot describe a working encoder."""
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "embedding_size", "num_labels")
        for name in positive:
            _integer(getattr(self, name), name)
        _integer(self.type_vocab_size, "type_vocab_size", smallest=0)
        # A family whose heads have a width of their own (T5's d_kv: HEADS_SPLIT_HIDDEN False)
        # needs no split of hidden_size: its attention projects to heads * head_dim and back.
        if self.hidden_size % self.num_attention_heads != 0 and \
                getattr(self.family_module, "HEADS_SPLIT_HIDDEN", True):
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}: every head must get the same width"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"unsupported activation {self.hidden_act!r}; supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        _number(self.layer_norm_eps, "layer_norm_eps")
        if self.recipe.embeddings.token_types and self.type_vocab_size == 0:
            raise ConfigError(f"type_vocab_size is 0, but {self.model_type} adds a token-type embedding to "
                              f"every token: its table needs at least 1 row")
        # transformers sizes the rotary frequencies by config.json's head_dim when it has one,
        # whether or not the family reads it: one that disagrees with the heads would rotate
        # other dimensions there than here.
        rotary_widths = {attention.head_dim for layer in self.recipe.layers for attention in layer.attention()
                         if isinstance(attention.positions, Rotary)}
        head_dim = self.raw.get("head_dim")
        if rotary_widths and head_dim is not None and (type(head_dim) is not int or head_dim not in rotary_widths):
            raise ConfigError(f"head_dim {_show(head_dim)} disagrees with the heads' width "
                              f"{', '.join(map(str, sorted(rotary_widths)))} (hidden_size / num_attention_heads)")
        if self.position_padding_idx is not None:
            # Positions run up to padding_idx + seq, so the table must be longer than padding_idx + 1.
            if not 0 <= self.position_padding_idx < self.max_position_embeddings - 1:
                raise ConfigError(
                    f"padding index {self.position_padding_idx} leaves no room for positions in a table of "
                    f"max_position_embeddings={self.max_position_embeddings}"
                )

    @property
    def max_sequence_length(self) -> int:
        """The longest input the position table allows: RoBERTa-style models lose
        padding_idx + 1 rows to their offset (514 rows -> 512 tokens). Without a position
        table and without rotary positions (DeBERTa-v3: relative positions only) no length is
        out of range; rotary models keep max_position_embeddings."""
        recipe = self.recipe
        if recipe.embeddings.positions is None and \
                not any(isinstance(scheme, Rotary) for scheme in recipe.position_schemes()):
            return MAX_SIZE
        if self.position_padding_idx is None:
            return self.max_position_embeddings
        return self.max_position_embeddings - self.position_padding_idx - 1


class Reader:
    """config.json as one family reads it, for its `config_fields(read)`: `values` (the dict
    with the family's defaults filled in), `raw` (as written), `pad_token_id` (checked), and
    the checks below, each raising ConfigError naming the key as config.json spells it."""

    def __init__(self, raw, values, keys):
        self.raw, self.values, self.keys = raw, values, keys
        self.pad_token_id = None

    def key(self, name):
        """The config.json key of our field `name` (DistilBERT: "hidden_size" -> "dim")."""
        return self.keys.get(name, name)

    def integer(self, name, smallest=1):
        """Our field `name` as an int in [smallest, MAX_SIZE]."""
        key = self.key(name)
        return _integer(self.values.get(key), key, smallest)

    def number(self, name):
        """Our field `name` as a LayerNorm-style epsilon (a number in (0, 1))."""
        key = self.key(name)
        return _number(self.values.get(key), key)

    def fail(self, message):
        raise ConfigError(message)


def _integer(value, name, smallest=1):
    """value, when it is an int (not a bool) in [smallest, MAX_SIZE]; else ConfigError naming `name`.
    smallest None: any int of at most MAX_SIZE in magnitude."""
    if type(value) is not int:
        raise ConfigError(f"{name} must be an integer, found {_show(value)}")
    low = -MAX_SIZE if smallest is None else smallest
    if not low <= value <= MAX_SIZE:
        kind = "a positive integer" if smallest == 1 else "an integer" if smallest is None else \
            f"an integer of at least {smallest}"
        raise ConfigError(f"{name} must be {kind} (at most {MAX_SIZE:,}), found {value}")
    return value


def _number(value, name):
    """A LayerNorm epsilon: a number in (0, 1) that float32 does not round to 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, found {_show(value)}")
    if not (math.isfinite(value) and 0 < value < 1):
        raise ConfigError(f"{name} must be a positive number below 1 (a LayerNorm epsilon), found {value!r}")
    if np.float32(value) == 0:
        raise ConfigError(f"{name} is {value!r}, which float32 rounds to 0 (a LayerNorm of a constant row "
                          f"would divide by 0)")
    return float(value)


def _labels(id2label):
    """config.json's id2label {"0": "NEGATIVE", ...} -> {0: "NEGATIVE", ...}; the keys must be
    the label ids 0 .. n-1, written in decimal, the values strings."""
    if id2label is None:
        return {}
    if not isinstance(id2label, dict):
        raise ConfigError(f"id2label must be an object {{\"0\": label, ...}}, found {_show(id2label)}")
    for key, label in id2label.items():
        if not (key.isascii() and key.isdigit()):
            raise ConfigError(f"id2label has the key {key!r}; its keys must be label ids (0, 1, ...)")
        if not isinstance(label, str):
            raise ConfigError(f"id2label[{key!r}] must be a string, found {_show(label)}")
    labels = {int(key): label for key, label in id2label.items()}
    if sorted(labels) != list(range(len(id2label))):
        raise ConfigError(f"id2label's keys must be 0 .. {len(id2label) - 1}, one each, found "
                          f"{_show(list(id2label))}")
    return dict(sorted(labels.items()))


def _show(value, width=60):
    """A config value as config.json writes it, cut at `width` characters, for an error message."""
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()  # a lone surrogate too
    return text if len(text) <= width else text[:width] + "..."
