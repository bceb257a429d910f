"""An architecture as data: what a model does to token ids, step by step.

A family module (`transformer/families/bert.py`, ...) turns a config into a `Recipe`; both
backends run it: `transformer.model` with small NumPy functions, the numba backend by
compiling it into the step program of its fused layers. The whole BERT-base recipe:

    Recipe(
        embeddings=Embeddings(positions=AbsolutePositions(), token_types=True,
                              norm=Norm("layer_norm", 768, eps=1e-12)),
        layers=(Layer((
            Block(Attention(query=Linear("query", 768, 768), key=Linear("key", 768, 768),
                            value=Linear("value", 768, 768), output=Linear("attention_output", 768, 768),
                            num_heads=12, head_dim=64),
                  norm_after_residual=Norm("attention_layer_norm", 768, eps=1e-12)),
            Block(MLP(up=Linear("intermediate", 768, 3072), down=Linear("output", 3072, 768),
                      activation="gelu"),
                  norm_after_residual=Norm("output_layer_norm", 768, eps=1e-12)),
        )),) * 12,
    )

A layer is a tuple of blocks, run in order. A block is one residual step:

    x = norm_before(hidden)              pre-norm (GPT-2, Llama, ModernBERT); BERT: none
    x = sublayer(x)                      Attention(...) or MLP(...)
    x = norm_after(x)                    Gemma 3's post-norms; BERT: none
    hidden = hidden + x                  the residual
    hidden = norm_after_residual(hidden) post-norm (BERT); pre-norm models: none

Names: every `Linear` and `Norm` names its parameters in the layer's params dict
(`params["layers"][i][name]` = {"weight": [in, out], "bias": [out] or None}); the embeddings'
in `params["embeddings"]`; model-level tables (a relative position table shared by all
layers, a final norm) in `params` itself. The family's name table maps these names to the
checkpoint's. Sizes are in the recipe too, so the loader checks every tensor's shape
against it.

Per-layer variation (ModernBERT's global attention every third layer, Gemma 3's pattern) is
data: the family builds `layers` with one `Layer` per layer index. A name table maps our
names to the checkpoint's, each entry a name or a `Part` of a stored tensor (a fused QKV
weight split back into query, key and value; a weight stored [in, out]).

Every field below is something some checkpoint family needs. A backend runs what it
implements and refuses the rest by name (`transformer.model.check_recipe`,
`transformer.numba_backend.program.check_recipe`): adding an operation is one new case in
each backend, never a new family-specific code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Linear:
    """x @ weight + bias: params[name]["weight"] float32 [in_features, out_features] (stored
    [out, in] in the checkpoint), params[name]["bias"] [out_features], or None when `bias` is
    False (ModernBERT, Llama and T5 have bias-free linears)."""

    name: str
    in_features: int
    out_features: int
    bias: bool = True


@dataclass(frozen=True)
class Norm:
    """A normalisation of the last axis, `size` wide, with a learned scale params[name]["weight"].

    kind "layer_norm": (x - mean) / sqrt(var + eps) * weight + bias (bias None when `bias` is
    False: ModernBERT). kind "rms_norm": x / sqrt(mean(x^2) + eps) * (offset + weight), no
    bias (Llama: offset 0; Gemma's `(1 + w)`: offset 1)."""

    name: str
    size: int
    kind: str = "layer_norm"
    eps: float = 1e-12
    bias: bool = True
    offset: float = 0.0


# --- where positions come from -----------------------------------------------------------
@dataclass(frozen=True)
class AbsolutePositions:
    """A learned position table added at the embeddings (params["embeddings"]["position"]).

    padding_idx None: positions 0, 1, ..., seq-1 (BERT). An int p: fairseq's count over the
    real tokens from p + 1, padding tokens getting p itself (RoBERTa: p = pad_token_id; MPNet: 1)."""

    padding_idx: int | None = None


@dataclass(frozen=True)
class RelativeBuckets:
    """A learned bias per (head, distance bucket) added to the attention scores: MPNet, T5.

    table: the model-level parameter [rows, num_heads] (params[table]), shared by every layer;
    distances are sorted into num_buckets buckets (half for keys before the query, half after),
    exact below num_buckets / 4, logarithmic up to max_distance."""

    table: str
    rows: int
    num_buckets: int = 32
    max_distance: int = 128


@dataclass(frozen=True)
class Rotary:
    """Rotary position embeddings applied to the queries and keys (RoFormer; Llama, ModernBERT).

    theta: the base of the frequencies; dims: how many of each head's dimensions rotate (None:
    all of them; NomicBERT / GPT-NeoX style partial rotary gives fewer); interleaved: pairs
    (x0, x1), (x2, x3) (GPT-J) instead of halves (x_i, x_{i + d/2}) (GPT-NeoX, Llama);
    scaling: `transformers`' rope_scaling dict (kind "linear", "dynamic", "llama3", "yarn" with
    its numbers) or None."""

    theta: float = 10000.0
    dims: int | None = None
    interleaved: bool = False
    scaling: tuple = ()  # sorted (key, value) pairs of rope_scaling: hashable, comparable


@dataclass(frozen=True)
class Disentangled:
    """DeBERTa's disentangled attention: besides content-to-content q_i . k_j, the scores add
    content-to-position q_i . pk[r] ("c2p") and position-to-content k_j . pq[r] ("p2c"), where r
    is the (log-bucketed) distance i - j shifted into the rows of a learned table, and pk, pq
    are that table projected by each layer's own key / query linears (`share_key`) or by
    separate ones (`position_key`, `position_query`). The scale is 1 / sqrt(head_dim * (1 +
    c2p + p2c)), on every term.

    table: the model-level parameter [rows, hidden] (params[table]), rows = 2 * span; span:
    the distances one side can tell apart (position_buckets, else max_relative_positions);
    buckets: position_buckets (0: distances are exact, clipped at +-span), max_distance:
    max_relative_positions (where the log buckets end); norm: a LayerNorm of the table
    (norm_rel_ebd "layer_norm") or None."""

    table: str
    rows: int
    span: int
    buckets: int
    max_distance: int
    c2p: bool = True
    p2c: bool = True
    share_key: bool = True
    position_key: Linear | None = None
    position_query: Linear | None = None
    norm: Norm | None = None

    def linears(self):
        return tuple(linear for linear in (self.position_key, self.position_query) if linear is not None)


@dataclass(frozen=True)
class Mask:
    """Which keys a query may see, besides padding: all of them (an encoder), those at or
    before it (`causal`, a decoder), and only those within `window` positions (sliding-window
    attention: ModernBERT's local layers see window // 2 either side; Mistral's causal window).
    queries: a padding token's own row sees no key either, so it attends uniformly over all
    of them (DeBERTa masks query and key); it changes nothing at the real tokens."""

    causal: bool = False
    window: int | None = None
    queries: bool = False


BIDIRECTIONAL = Mask()
CAUSAL = Mask(causal=True)


# --- the sublayers -----------------------------------------------------------------------
@dataclass(frozen=True)
class Attention:
    """Multi-head self-attention: softmax(q k^T * scale + position bias + mask) v, then `output`.

    query [hidden -> num_heads * head_dim]; key, value [hidden -> num_kv_heads * head_dim]
    (grouped-query attention when num_kv_heads < num_heads: each key/value head serves
    num_heads / num_kv_heads query heads); output [num_heads * head_dim -> hidden].
    scale None: 1 / sqrt(head_dim). positions: None (positions were added at the
    embeddings, or there are none), RelativeBuckets or Rotary. query_norm / key_norm: a Norm
    of head_dim applied to each head's query / key (Qwen3, Gemma 3)."""

    query: Linear
    key: Linear
    value: Linear
    output: Linear
    num_heads: int
    head_dim: int
    num_kv_heads: int | None = None
    scale: float | None = None
    positions: RelativeBuckets | Rotary | Disentangled | None = None
    mask: Mask = BIDIRECTIONAL
    query_norm: Norm | None = None
    key_norm: Norm | None = None

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    def linears(self):
        own = (self.query, self.key, self.value, self.output)
        return own + self.positions.linears() if isinstance(self.positions, Disentangled) else own

    def norms(self):
        return tuple(norm for norm in (self.query_norm, self.key_norm) if norm is not None)


@dataclass(frozen=True)
class MLP:
    """The per-token feed-forward network.

    Plain (gate None): down(activation(up(x))) (BERT). Gated (GLU): down(activation(gate(x)) *
    up(x)): SwiGLU with "silu" (Llama), GeGLU with "gelu" (ModernBERT, T5 v1.1 "gelu_new").
    `activation` is a name of `transformer.model.ACTIVATIONS` (config.json's hidden_act)."""

    up: Linear
    down: Linear
    activation: str
    gate: Linear | None = None

    def linears(self):
        return tuple(linear for linear in (self.gate, self.up, self.down) if linear is not None)

    def norms(self):
        return ()


@dataclass(frozen=True)
class Block:
    """One residual step of a layer; see the module docstring for its order."""

    sublayer: Attention | MLP
    norm_before: Norm | None = None
    norm_after: Norm | None = None
    norm_after_residual: Norm | None = None

    def norms(self):
        """Every Norm the block reads, the sublayer's own (q/k norms) included."""
        own = tuple(norm for norm in (self.norm_before, self.norm_after, self.norm_after_residual) if norm)
        return own + self.sublayer.norms()


@dataclass(frozen=True)
class Layer:
    """One transformer layer: its blocks, in order (BERT: attention, then MLP)."""

    blocks: tuple[Block, ...]

    def linears(self):
        return tuple(linear for block in self.blocks for linear in block.sublayer.linears())

    def norms(self):
        return tuple(norm for block in self.blocks for norm in block.norms())

    def attention(self):
        """The layer's attention sublayers, in order."""
        return tuple(block.sublayer for block in self.blocks if isinstance(block.sublayer, Attention))


@dataclass(frozen=True)
class Embeddings:
    """Token ids -> the first hidden states (params["embeddings"]):

        word[ids] (+ token_type[types]) (+ position[positions]), * scale, norm, projection

    word: [vocab_size, size]; token_types: add a token-type table (BERT, RoBERTa, ELECTRA);
    positions: AbsolutePositions, or None (rotary or relative positions, given to attention);
    scale: multiply by it before the norm (Gemma: sqrt(hidden_size)); norm: a Norm named
    "layer_norm", or None (pre-norm decoders normalise inside the first block instead);
    projection: a Linear from `size` up to the hidden size (ELECTRA's small embeddings), after
    the norm, or before it when `project_first` (DeBERTa, whose norm is hidden_size wide);
    zero_padding: padding tokens' vectors are multiplied by their mask, 0 (DeBERTa)."""

    size: int
    positions: AbsolutePositions | None = field(default_factory=AbsolutePositions)
    token_types: bool = True
    scale: float | None = None
    norm: Norm | None = None
    projection: Linear | None = None
    project_first: bool = False
    zero_padding: bool = False


@dataclass(frozen=True)
class Recipe:
    """A whole model: embeddings, one Layer per layer, and a final norm after the last layer
    (params[final_norm.name]; pre-norm models need one, BERT's post-norm layers end normed)."""

    embeddings: Embeddings
    layers: tuple[Layer, ...]
    final_norm: Norm | None = None

    def position_schemes(self):
        """The distinct attention position schemes (RelativeBuckets, Rotary, Disentangled), in first-use order."""
        schemes = {}
        for layer in self.layers:
            for attention in layer.attention():
                if attention.positions is not None:
                    schemes.setdefault(attention.positions, None)
        return tuple(schemes)

    def tables(self):
        """The names of the model-level tables the layers share (params[name])."""
        return tuple(scheme.table for scheme in self.position_schemes()
                     if isinstance(scheme, (RelativeBuckets, Disentangled)))


# --- the name table's entries -------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """A name table entry for a parameter the checkpoint stores inside a bigger tensor, or
    turned: chunk `chunk` of `chunks` equal parts of tensor `name` along its output axis
    (ModernBERT's fused Wqkv holds query, key and value; its Wi the gate and up halves), and
    `in_out` when the file stores a linear weight [in, out] (GPT-2's Conv1D) instead of
    PyTorch's [out, in]. `{i}` in the name is the layer index, as in a plain entry."""

    name: str
    chunk: int = 0
    chunks: int = 1
    in_out: bool = False
