"""The whole encoder on the kernels: the same answer as `transformer.model.encoder_forward`.

    prepared = prepare(params, config)        # once, at load
    last_hidden_state, hidden_states, attentions = encoder_forward(
        prepared, config, input_ids, attention_mask, token_type_ids,
        output_hidden_states=False, output_attentions=False)

Same arguments, same return value as the NumPy twin (`transformer.encoder.Encoder` calls
either). What it does differently, and why it is faster:

- Weights are prepared once (`prepare`): each layer's query, key and value weights become
  one [hidden, 3 * hidden] matrix, so a layer starts with one GEMM instead of three, and
  every weight is packed into the 16-column panels the GEMM micro-kernel streams through.
- Padding costs nothing. After the embedding lookup only the real tokens are kept, packed
  one sequence after another ([tokens, hidden], `cu_seqlens` marking where each sequence
  starts), and every later step runs on those rows only; attention runs per sequence
  (`attention.attention_varlen`). The outputs are unpacked into [batch, seq, hidden] at
  the end. Position ids are computed on the padded layout first, so they are the ones the
  reference uses (RoBERTa counts positions over non-padding tokens, BERT does not).
- Steps are fused: bias (+ GELU) (+ residual) in the GEMM epilogue; residual add and
  LayerNorm in one pass; word + type + position + LayerNorm in one pass.
- Buffers are allocated once per call, not once per layer; the feed-forward block runs on
  FFN_ROWS tokens at a time, so its wide intermediate buffer stays small.

Outputs at padding positions are 0. The reference computes something there (a padding
token's vector still attends to the real tokens), but it means nothing and every consumer
masks it out; parity is over the non-padding positions. A row with no real token at all
is 0 everywhere.

With `output_attentions=True` the NumPy path runs instead (the kernels never form the
[batch, heads, seq, seq] probabilities); its answer is the reference's.
"""

from collections.abc import Sequence

import numpy as np

from transformer import model as numpy_model

from .attention import attention_varlen
from .embeddings import embed_tokens
from .gemm import gemm, pack_weight
from .layernorm import layer_norm


class PreparedLinear:
    """A linear layer laid out for `gemm`: the packed [in, out] weight and its bias."""

    __slots__ = ("packed", "bias")

    def __init__(self, weight, bias):
        self.packed = pack_weight(np.ascontiguousarray(weight, dtype=np.float32))  # [in, out] -> panels
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)  # [out]

    def __call__(self, x, out, residual=None, activation=None):
        """out = activation(x @ weight + bias) + residual; x float32 [tokens, in]."""
        return gemm(x, self.packed, self.bias, residual=residual, activation=activation, out=out)

    def weight(self):
        """The [in, out] weight this was packed from, re-derived from the panels (a new array)."""
        panels = self.packed.panels  # [panels, in, 16]
        k, n = self.packed.in_features, self.packed.out_features
        return panels.transpose(1, 0, 2).reshape(k, -1)[:, :n]  # -> [in, 16 * panels] -> [in, out]


class PreparedLayer:
    """One encoder layer's weights, prepared: fused QKV, packed linears, LayerNorm vectors."""

    __slots__ = ("qkv", "attention_output", "attention_layer_norm", "intermediate", "output", "output_layer_norm")

    def __init__(self, layer):
        parts = [layer["query"], layer["key"], layer["value"]]
        self.qkv = PreparedLinear(
            np.concatenate([p["weight"] for p in parts], axis=1),  # 3 x [hidden, hidden] -> [hidden, 3 * hidden]
            np.concatenate([p["bias"] for p in parts]),  # 3 x [hidden] -> [3 * hidden]
        )
        self.attention_output = PreparedLinear(**layer["attention_output"])
        self.attention_layer_norm = layer["attention_layer_norm"]
        self.intermediate = PreparedLinear(**layer["intermediate"])
        self.output = PreparedLinear(**layer["output"])
        self.output_layer_norm = layer["output_layer_norm"]

    def as_params(self):
        """This layer in the layout of `transformer.model` ({"query": {"weight", "bias"}, ...}),
        re-derived from the packed form: the same values the layer was prepared from."""
        qkv_weight = self.qkv.weight()  # [hidden, 3 * hidden]
        hidden = qkv_weight.shape[1] // 3
        layer = {
            name: {"weight": np.ascontiguousarray(qkv_weight[:, i * hidden:(i + 1) * hidden]),
                   "bias": self.qkv.bias[i * hidden:(i + 1) * hidden]}
            for i, name in enumerate(("query", "key", "value"))
        }
        for name in ("attention_output", "intermediate", "output"):
            linear = getattr(self, name)
            layer[name] = {"weight": linear.weight(), "bias": linear.bias}
        layer["attention_layer_norm"] = self.attention_layer_norm
        layer["output_layer_norm"] = self.output_layer_norm
        return layer


class UnpackedLayers(Sequence):
    """params["layers"] of a prepared model: each layer's dict made from the packed weights
    when asked for, so the unpacked weights are not held beside the packed ones."""

    def __init__(self, layers):
        self._layers = layers

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [layer.as_params() for layer in self._layers[index]]
        return self._layers[index].as_params()

    def __len__(self):
        return len(self._layers)


class PreparedEncoder:
    """Everything `encoder_forward` needs, made once by `prepare`.

    params: the parameters, with "layers" an `UnpackedLayers` view of the packed ones (the
    embedding tables are used as they are, and the NumPy path runs on them for
    output_attentions); layers: PreparedLayer per layer; projection: ELECTRA's embedding
    projection as a PreparedLinear, or None; pooler: BERT's pooler dense layer as a
    PreparedLinear, or None.
    """

    def __init__(self, params, config):
        self.config = config
        # Pack layer by layer, dropping each unpacked layer once packed: memory holds one
        # copy of the weights plus one layer, never two copies of them all.
        unpacked = params["layers"]
        self.layers = []
        for i in range(len(unpacked)):
            self.layers.append(PreparedLayer(unpacked[i]))
            if isinstance(unpacked, list):
                unpacked[i] = None
        params["layers"] = UnpackedLayers(self.layers)
        self.params = params
        projection = params["embeddings"]["projection"]
        self.projection = PreparedLinear(**projection) if projection is not None else None
        self.pooler = PreparedLinear(**params["pooler"]) if params.get("pooler") is not None else None


def prepare(params, config):
    """Lay the weights out for the kernels, once: params (see `transformer.model`) -> PreparedEncoder.

    It takes the layers over: afterwards `params["layers"]` is an `UnpackedLayers` view that
    re-derives each layer's dict (same values) from the packed weights when asked for, so one
    copy of every weight is held, not two.
    """
    return PreparedEncoder(params, config)


# QKV and attention run on groups of whole sequences of about this many tokens (a longer
# sequence is a group of its own): the [rows, 3 * hidden] buffer stays near 19 MB at
# BERT-base width instead of 75 MB for 32 x 256 tokens.
ATTENTION_ROWS = 2048


def sequence_groups(cu_seqlens, max_rows):
    """Cut the packed sequences into runs of whole sequences of at most max_rows tokens each
    (a longer sequence alone): cu_seqlens int [batch + 1] -> [(first, stop)] sequence ranges.

    >>> sequence_groups(np.array([0, 3, 5, 9]), 5)
    [(0, 2), (2, 3)]
    """
    groups = []
    first = 0
    batch = len(cu_seqlens) - 1
    for stop in range(1, batch + 1):
        if stop - 1 > first and cu_seqlens[stop] - cu_seqlens[first] > max_rows:
            groups.append((first, stop - 1))
            first = stop - 1
    groups.append((first, batch))
    return groups


# The feed-forward block runs on at most this many tokens at a time: its [rows, intermediate]
# buffer is then 12 MB at BERT-base width however big the batch (32 x 256 tokens would need
# 100 MB), and 1024 rows are still plenty for the GEMM's row blocks.
FFN_ROWS = 1024


def pooler(prepared, last_hidden_state):
    """BERT's pooler on the kernels: tanh(first token @ W + b), float32 [batch, seq, hidden]
    -> [batch, hidden]; the same as `transformer.model.pooler`, with no BLAS call."""
    first_token = np.ascontiguousarray(last_hidden_state[:, 0])  # [batch, seq, hidden] -> [batch, hidden]
    out = np.empty((first_token.shape[0], prepared.pooler.packed.out_features), dtype=np.float32)
    return np.tanh(prepared.pooler(first_token, out=out), out=out)  # [batch, hidden]


def encoder_forward(prepared, config, input_ids, attention_mask=None, token_type_ids=None,
                    output_hidden_states=False, output_attentions=False):
    """Token ids -> contextual vectors on the kernels; see the module docstring.

    input_ids int64 [batch, seq]; attention_mask [batch, seq] of 1/0 (None: all 1);
    token_type_ids [batch, seq] (None: all 0). Returns (last_hidden_state float32
    [batch, seq, hidden] with zeros at padding positions, hidden_states tuple of
    num_layers + 1 such arrays or None, attentions tuple or None).
    """
    params = prepared.params
    input_ids = np.asarray(input_ids, dtype=np.int64)
    batch, seq = input_ids.shape
    if attention_mask is None:
        attention_mask = np.ones((batch, seq), dtype=np.int64)
    if token_type_ids is None:
        token_type_ids = np.zeros((batch, seq), dtype=np.int64)
    if output_attentions:
        return numpy_model.encoder_forward(params, config, input_ids, attention_mask, token_type_ids,
                                           output_hidden_states, output_attentions)

    # Which padded slots hold real tokens, and where each sequence starts once packed.
    is_token = np.asarray(attention_mask) != 0  # [batch, seq]
    slots = np.flatnonzero(is_token)  # [tokens]: index into the flattened [batch * seq]
    lengths = is_token.sum(axis=1)  # [batch]
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)  # [batch + 1]
    tokens = len(slots)
    hidden_size = config.hidden_size

    def unpack(packed):
        """[tokens, hidden] -> [batch, seq, hidden], zeros at padding positions."""
        full = np.zeros((batch * seq, hidden_size), dtype=np.float32)
        full[slots] = packed
        return full.reshape(batch, seq, hidden_size)

    if tokens == 0:  # nothing but padding
        empty = unpack(np.zeros((0, hidden_size), dtype=np.float32))
        states = tuple(empty.copy() for _ in range(config.num_hidden_layers + 1)) if output_hidden_states else None
        return empty, states, None

    # Embeddings, for the real tokens only; positions come from the padded layout.
    embeddings = params["embeddings"]
    positions = numpy_model.position_ids(config, input_ids).reshape(-1)[slots]  # [tokens]
    hidden = embed_tokens(
        embeddings["word"], embeddings["token_type"], embeddings["position"],
        embeddings["layer_norm"]["weight"], embeddings["layer_norm"]["bias"], config.layer_norm_eps,
        input_ids.reshape(-1)[slots], token_type_ids.reshape(-1)[slots], positions,
    )  # -> [tokens, embedding_size]
    if prepared.projection is not None:  # ELECTRA: embedding_size -> hidden_size
        hidden = prepared.projection(hidden, out=np.empty((tokens, hidden_size), dtype=np.float32))

    # MPNet's relative position bias, over the padded positions (what the reference sees).
    position_bias = None
    slot_in_row = None
    if params["relative_attention_bias"] is not None:
        position_bias = numpy_model.relative_position_bias(params["relative_attention_bias"], seq)[0]  # [heads, seq, seq]
        slot_in_row = slots % seq  # [tokens]: each token's index in its padded row

    # Attention runs on groups of whole sequences of about ATTENTION_ROWS tokens, so the
    # [rows, 3 * hidden] QKV buffer holds one group, not the whole batch.
    groups = sequence_groups(cu_seqlens, ATTENTION_ROWS)  # [(first sequence, stop sequence)]
    group_rows = max(int(cu_seqlens[stop] - cu_seqlens[first]) for first, stop in groups)

    # Buffers for the whole call; the layers reuse them.
    qkv = np.empty((group_rows, 3 * hidden_size), dtype=np.float32)
    context = np.empty((tokens, hidden_size), dtype=np.float32)
    attended = np.empty((tokens, hidden_size), dtype=np.float32)
    ffn_rows = min(tokens, FFN_ROWS)
    inner = np.empty((ffn_rows, config.intermediate_size), dtype=np.float32)  # one row block's worth
    eps = config.layer_norm_eps

    hidden_states = [unpack(hidden)] if output_hidden_states else None
    for layer in prepared.layers:
        for first, stop in groups:
            row0, row1 = int(cu_seqlens[first]), int(cu_seqlens[stop])
            group_qkv = qkv[:row1 - row0]
            layer.qkv(hidden[row0:row1], out=group_qkv)  # [rows, hidden] -> [rows, 3 * hidden]
            attention_varlen(group_qkv, cu_seqlens[first:stop + 1] - row0, config.num_attention_heads,
                             position_bias, None if slot_in_row is None else slot_in_row[row0:row1],
                             out=context[row0:row1])  # -> [rows, hidden]
        layer.attention_output(context, out=attended, residual=hidden)  # context @ W + b + hidden
        layer_norm(attended, **layer.attention_layer_norm, eps=eps, out=attended)
        # The feed-forward block, FFN_ROWS tokens at a time (each row is independent).
        for start in range(0, tokens, ffn_rows):
            rows = slice(start, min(tokens, start + ffn_rows))
            block = inner[:rows.stop - rows.start]
            layer.intermediate(attended[rows], out=block, activation=config.hidden_act)  # -> [rows, intermediate]
            layer.output(block, out=hidden[rows], residual=attended[rows])  # -> [rows, hidden]
        layer_norm(hidden, **layer.output_layer_norm, eps=eps, out=hidden)
        if output_hidden_states:
            hidden_states.append(unpack(hidden))

    last_hidden_state = hidden_states[-1] if output_hidden_states else unpack(hidden)
    return last_hidden_state, tuple(hidden_states) if output_hidden_states else None, None
