"""config.json -> `EncoderConfig`: the numbers every other module reads.

One typed config for every supported family. Each family spells a few fields its own way
(DistilBERT says `dim`, `n_heads`, `n_layers`, `hidden_dim`, `activation`), leaves some out
(MPNet and DistilBERT have no token types), or adds one (ELECTRA's `embedding_size`); this
module folds those differences into one set of names so the model code never asks which
family it is running, except for the few places where the math itself differs
(`position_padding_idx`, `relative_attention_num_buckets`).

    >>> config = EncoderConfig.from_file("weights/all-MiniLM-L6-v2/config.json")
    >>> config.hidden_size, config.num_attention_heads, config.head_dim
    (384, 12, 32)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# model_type (as written in config.json) -> the family whose name table and math it uses.
# XLM-RoBERTa is RoBERTa with a bigger vocabulary: same names, same math.
FAMILIES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "distilbert": "distilbert",
    "electra": "electra",
    "mpnet": "mpnet",
}

# The activations the feed-forward block knows (see `transformer.model.ACTIVATIONS`).
SUPPORTED_ACTIVATIONS = (
    "gelu",
    "gelu_python",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_python_tanh",
    "gelu_fast",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
    "tanh",
)

# What `transformers` assumes when a key is missing from config.json (its config classes'
# defaults), per family. Files written by recent `transformers` carry every key; old or
# hand-written ones may not.
_DEFAULTS = {
    "bert": dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
        type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
    ),
    "roberta": dict(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
        type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=1,
    ),
    "electra": dict(
        vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
        num_attention_heads=4, intermediate_size=1024, hidden_act="gelu",
        max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
    ),
    "mpnet": dict(
        vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
        layer_norm_eps=1e-12, pad_token_id=1, relative_attention_num_buckets=32,
    ),
    "distilbert": dict(
        vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
        activation="gelu", max_position_embeddings=512, pad_token_id=0,
    ),
}


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
    `raw` is the config.json dict as read, for anything not lifted into a field.
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
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def family(self) -> str:
        """Which name table and math this config uses: bert, roberta, distilbert, electra, mpnet."""
        return FAMILIES[self.model_type]

    @property
    def head_dim(self) -> int:
        """Width of one attention head: hidden_size // num_attention_heads."""
        return self.hidden_size // self.num_attention_heads

    # ----------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path) -> "EncoderConfig":
        """Read a config.json file (or the config.json inside a model folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (every model folder needs a config.json)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} is not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a JSON object, found {type(raw).__name__}")
        try:
            return cls.from_dict(raw)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, raw: dict) -> "EncoderConfig":
        """Build from a config.json dict, filling missing keys with `transformers`' defaults."""
        model_type = raw.get("model_type")
        if model_type not in FAMILIES:
            raise ConfigError(
                f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
            )
        family = FAMILIES[model_type]
        values = {**_DEFAULTS[family], **{k: v for k, v in raw.items() if v is not None}}
        # Keys whose None means something (pad_token_id may really be null) come from raw.
        if "pad_token_id" in raw:
            values["pad_token_id"] = raw["pad_token_id"]

        if family == "distilbert":
            # DistilBERT's own spelling of the same sizes.
            values.update(
                hidden_size=values["dim"], num_hidden_layers=values["n_layers"],
                num_attention_heads=values["n_heads"], intermediate_size=values["hidden_dim"],
                hidden_act=values["activation"],
                # DistilBERT hard-codes eps=1e-12 in every LayerNorm; its config has no key for it.
                layer_norm_eps=1e-12,
            )

        position_embedding_type = raw.get("position_embedding_type", "absolute")
        if position_embedding_type not in (None, "absolute"):
            raise ConfigError(
                f"position_embedding_type {position_embedding_type!r} is not supported; "
                f"only 'absolute' position embeddings are implemented"
            )
        if raw.get("is_decoder") or raw.get("add_cross_attention"):
            raise ConfigError("decoder configurations (is_decoder / add_cross_attention) are not supported; "
                              "this package runs bidirectional encoders only")

        pad_token_id = values.get("pad_token_id")
        if family == "roberta":
            # fairseq's convention: position p+1 is the first real token, p = padding_idx.
            position_padding_idx = pad_token_id
            if position_padding_idx is None:
                raise ConfigError("RoBERTa-style configs need pad_token_id (positions are counted from it)")
        elif family == "mpnet":
            # transformers' MPNetEmbeddings hard-codes padding_idx = 1, whatever pad_token_id says.
            position_padding_idx = 1
        else:
            position_padding_idx = None

        if family in ("mpnet", "distilbert"):
            type_vocab_size = 0
        else:
            type_vocab_size = values["type_vocab_size"]

        embedding_size = values.get("embedding_size", values["hidden_size"]) if family == "electra" \
            else values["hidden_size"]

        id2label = raw.get("id2label") or {}
        if id2label:
            id2label = {int(k): v for k, v in id2label.items()}
            num_labels = len(id2label)
        else:
            num_labels = int(raw.get("num_labels", 2))

        config = cls(
            model_type=model_type,
            vocab_size=values["vocab_size"],
            hidden_size=values["hidden_size"],
            num_hidden_layers=values["num_hidden_layers"],
            num_attention_heads=values["num_attention_heads"],
            intermediate_size=values["intermediate_size"],
            hidden_act=values["hidden_act"],
            max_position_embeddings=values["max_position_embeddings"],
            type_vocab_size=type_vocab_size,
            layer_norm_eps=float(values["layer_norm_eps"]),
            pad_token_id=pad_token_id,
            embedding_size=embedding_size,
            position_padding_idx=position_padding_idx,
            relative_attention_num_buckets=values.get("relative_attention_num_buckets", 0) if family == "mpnet" else 0,
            architectures=tuple(raw.get("architectures") or ()),
            num_labels=num_labels,
            id2label=id2label,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
            raw=dict(raw),
        )
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot describe a working encoder."""
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "embedding_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, found {value!r}")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size must be a non-negative integer, found {self.type_vocab_size!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}: every head must get the same width"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"unsupported activation {self.hidden_act!r}; supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        if not (isinstance(self.layer_norm_eps, float) and self.layer_norm_eps > 0):
            raise ConfigError(f"layer_norm_eps must be a positive number, found {self.layer_norm_eps!r}")
        if self.model_type == "mpnet" and self.relative_attention_num_buckets < 32:
            # transformers' MPNet always sorts distances into 32 buckets, whatever the table says
            raise ConfigError(
                f"relative_attention_num_buckets is {self.relative_attention_num_buckets}; MPNet reads 32 "
                f"relative-position buckets, so its bias table needs at least 32 rows"
            )
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
        padding_idx + 1 rows to their offset (514 rows -> 512 tokens)."""
        if self.position_padding_idx is None:
            return self.max_position_embeddings
        return self.max_position_embeddings - self.position_padding_idx - 1
