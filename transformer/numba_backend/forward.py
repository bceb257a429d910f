"""The whole encoder on the kernels: the same answer as `transformer.model.encoder_forward`.

    prepared = prepare(params, config)        # once, at load
    last_hidden_state, hidden_states, attentions = encoder_forward(
        prepared, config, input_ids, attention_mask, token_type_ids,
        output_hidden_states=False, output_attentions=False)

Same arguments, same return value as the NumPy twin (`transformer.encoder.Encoder` calls
either). What it does differently, and why it is faster:

- Weights are prepared once (`prepare`): each layer's query, key and value weights become
  one [hidden, 3 * hidden] matrix, its columns head after head (q_h | k_h | v_h), so a layer
  starts with one GEMM instead of three (and a thread's run of its columns holds whole heads), and
  every weight is packed into the 16-column panels the GEMM micro-kernel streams through,
  stacked over the layers (`LayerStack`): every layer then runs in one compiled call
  (`layer.LayerPlan`), with no Python between layers.
- Padding costs nothing. After the embedding lookup only the real tokens are kept, packed
  one sequence after another ([tokens, hidden], `cu_seqlens` marking where each sequence
  starts), and every later step runs on those rows only; attention runs per sequence
  (`attention.attention_varlen`, its plan made once per call: `VarlenPlan`). The outputs
  are unpacked into [batch, seq, hidden] at the end. Position ids are computed on the padded layout first, so they are the ones the
  reference uses (RoBERTa counts positions over non-padding tokens, BERT does not).
- Steps are fused: bias (+ GELU) (+ residual) in the GEMM epilogue; residual add and
  LayerNorm in one pass; word + type + position + LayerNorm in one pass.
- Scratch buffers are allocated once and reused by every layer and call. A big batch runs as groups of
  whole sequences of about GROUP_ROWS tokens, each through all the layers, and the
  feed-forward block on FFN_ROWS tokens at a time: the buffers stay small (memory) and the
  answer is the same bits (rows and sequences are independent).

Outputs at padding positions are 0. The reference computes something there (a padding
token's vector still attends to the real tokens), but it means nothing and every consumer
masks it out; parity is over the non-padding positions. A row with no real token at all
is 0 everywhere.

With `output_attentions=True` the NumPy path runs instead (the kernels never form the
[batch, heads, seq, seq] probabilities); its answer is the reference's.
"""

import threading
from collections.abc import Sequence

import numpy as np

from transformer import model as numpy_model

from .arena import WeightArena
from ._jit import numba
from .attention import VarlenPlan
from .embeddings import embed_tokens
from .gemm import NR, PackedWeight, gemm, pack_weight
from .layer import LayerPlan
from .layernorm import layer_norm_bounds, layer_norm_checked


LINEARS = ("qkv", "attention_output", "intermediate", "output")  # a prepared layer's linears, in order
LAYER_NORMS = ("attention_layer_norm", "output_layer_norm")


class PreparedLinear:
    """A linear layer laid out for `gemm`: the packed [in, out] weight and its bias."""

    __slots__ = ("packed", "bias")

    def __init__(self, weight, bias):
        self.packed = pack_weight(np.ascontiguousarray(weight, dtype=np.float32))  # [in, out] -> panels
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)  # [out]

    @classmethod
    def from_packed(cls, packed, bias):
        """A PreparedLinear around an already packed weight (read back from the packed cache)."""
        linear = cls.__new__(cls)
        linear.packed, linear.bias = packed, bias
        return linear

    def __call__(self, x, out, residual=None, activation=None):
        """out = activation(x @ weight + bias) + residual; x float32 [tokens, in]."""
        return gemm(x, self.packed, self.bias, residual=residual, activation=activation, out=out)

    def weight(self):
        """The [in, out] weight this was packed from, re-derived from the panels (a new array)."""
        panels = self.packed.panels  # [panels, in, 16]
        k, n = self.packed.in_features, self.packed.out_features
        return panels.transpose(1, 0, 2).reshape(k, -1)[:, :n]  # -> [in, 16 * panels] -> [in, out]


class PreparedLayer:
    """One encoder layer's weights, prepared: fused QKV, packed linears, LayerNorm vectors
    (views of the model's `LayerStack`)."""

    __slots__ = ("qkv", "attention_output", "attention_layer_norm", "intermediate", "output", "output_layer_norm",
                 "num_heads")

    @classmethod
    def from_parts(cls, **parts):
        """A PreparedLayer from its already prepared parts (the names of __slots__)."""
        layer = cls.__new__(cls)
        for name in cls.__slots__:
            setattr(layer, name, parts[name])
        return layer

    def as_params(self):
        """This layer in the layout of `transformer.model` ({"query": {"weight", "bias"}, ...}),
        re-derived from the packed form: the same values the layer was prepared from."""
        weight, bias = _query_key_value(self.qkv.weight(), self.qkv.bias, self.num_heads)
        layer = {name: {"weight": np.ascontiguousarray(weight[i]), "bias": bias[i]}
                 for i, name in enumerate(("query", "key", "value"))}
        for name in ("attention_output", "intermediate", "output"):
            linear = getattr(self, name)
            layer[name] = {"weight": linear.weight(), "bias": linear.bias}
        layer["attention_layer_norm"] = self.attention_layer_norm
        layer["output_layer_norm"] = self.output_layer_norm
        return layer


def _head_major(weights, biases, num_heads):
    """The query, key and value weights (3 x [in, hidden]) and biases (3 x [hidden]) as one
    [in, 3 * hidden] weight and [3 * hidden] bias whose columns go head after head: q_h | k_h
    | v_h for h = 0, 1, ... (each head_dim wide). A thread that computes a run of the QKV
    GEMM's columns then holds whole heads for attention (kernels/layer.py)."""
    weight = np.stack(weights, axis=1)  # 3 x [in, hidden] -> [in, 3, hidden]
    size = weight.shape[0]
    weight = weight.reshape(size, 3, num_heads, -1).transpose(0, 2, 1, 3).reshape(size, -1)  # -> [in, heads, 3, hd] -> [in, 3 * hidden]
    bias = np.stack(biases).reshape(3, num_heads, -1).transpose(1, 0, 2).reshape(-1)  # [3, hidden] -> [heads, 3, hd] -> [3 * hidden]
    return np.ascontiguousarray(weight), np.ascontiguousarray(bias)


def _query_key_value(weight, bias, num_heads):
    """`_head_major` undone: ([3, in, hidden] weights, [3, hidden] biases) of query, key, value."""
    size = weight.shape[0]
    weights = weight.reshape(size, num_heads, 3, -1).transpose(2, 0, 1, 3).reshape(3, size, -1)  # [in, heads, 3, hd] -> [3, in, hidden]
    biases = bias.reshape(num_heads, 3, -1).transpose(1, 0, 2).reshape(3, -1)  # [heads, 3, hd] -> [3, hidden]
    return weights, biases


def _layer_linears(layer, num_heads):
    """{name: ([in, out] weight, [out] bias)} for one layer's params (transformer.model's
    layout), the query, key and value weights fused into one [hidden, 3 * hidden] QKV, its
    columns head-major (`_head_major`)."""
    parts = [layer["query"], layer["key"], layer["value"]]
    linears = {"qkv": _head_major([p["weight"] for p in parts], [p["bias"] for p in parts], num_heads)}
    for name in LINEARS[1:]:
        linears[name] = (layer[name]["weight"], layer[name]["bias"])
    return linears


class LayerStack:
    """Every layer's prepared weights, one array per kind with the layer first: the fused
    layer kernel (`layer.LayerPlan.run`) runs all the layers in one call on these.

        panels[name]  float32 [layers, panels, in, 16]  the packed weight (gemm.pack_weight)
        bias[name]    float32 [layers, out]             for name in "qkv", "attention_output",
                                                        "intermediate", "output"
        norms[name]   {"weight", "bias"}: float32 [layers, hidden], for "attention_layer_norm"
                      and "output_layer_norm"
        out_features[name]  the linear's width (the panels pad it to a multiple of 16)
        num_heads           attention heads (the QKV columns go head after head: `_head_major`)

    The panels live in one huge-page arena (see arena.py) or in a mapping of the packed
    cache; `layer(i)` gives layer i's PreparedLayer as views of these arrays.
    """

    __slots__ = ("panels", "bias", "norms", "out_features", "num_heads")

    def __init__(self, panels, bias, norms, out_features, num_heads):
        self.panels, self.bias, self.norms, self.out_features = panels, bias, norms, out_features
        self.num_heads = num_heads

    def __len__(self):
        return len(self.bias["qkv"])

    @classmethod
    def pack(cls, layers, num_heads):
        """Pack a list of layer params (transformer.model's layout) layer by layer into one
        arena, setting each list entry to None once packed: memory holds one copy of the
        weights plus one layer, never two copies of them all."""
        first = _layer_linears(layers[0], num_heads)
        count = len(layers)
        shapes = {name: (count, -(-weight.shape[1] // NR), weight.shape[0], NR)  # [layers, panels, in, 16]
                  for name, (weight, _) in first.items()}
        arena = WeightArena(WeightArena.bytes_for(shapes.values()))
        panels = {name: arena.take(shape) for name, shape in shapes.items()}
        bias = {name: np.empty((count, len(b)), dtype=np.float32) for name, (_, b) in first.items()}
        norms = {name: {part: np.empty((count, len(layers[0][name][part])), dtype=np.float32)
                        for part in ("weight", "bias")} for name in LAYER_NORMS}
        for i in range(count):
            linears = first if i == 0 else _layer_linears(layers[i], num_heads)
            for name, (weight, b) in linears.items():
                panels[name][i] = pack_weight(np.ascontiguousarray(weight, dtype=np.float32)).panels
                bias[name][i] = b
            for name in LAYER_NORMS:
                for part in ("weight", "bias"):
                    norms[name][part][i] = layers[i][name][part]
            if isinstance(layers, list):
                layers[i] = None
        out_features = {name: weight.shape[1] for name, (weight, _) in first.items()}
        return cls(panels, bias, norms, out_features, num_heads)

    def layer(self, i):
        """Layer i's PreparedLayer: views of the stacked arrays."""
        parts = {}
        for name in LINEARS:
            panels = self.panels[name][i]  # [panels, in, 16]
            parts[name] = PreparedLinear.from_packed(PackedWeight(panels, panels.shape[1], self.out_features[name]),
                                                     self.bias[name][i])
        for name in LAYER_NORMS:
            parts[name] = {part: self.norms[name][part][i] for part in ("weight", "bias")}
        return PreparedLayer.from_parts(**parts, num_heads=self.num_heads)


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
    output_attentions); stack: the layers' packed weights (`LayerStack`, made from
    params["layers"] when not given); layers: PreparedLayer per layer (views of the stack);
    projection: ELECTRA's embedding projection as a PreparedLinear, or None; pooler: BERT's
    pooler dense layer as a PreparedLinear, or None.
    """

    def __init__(self, params, config, stack=None):
        self.config = config
        self.stack = stack if stack is not None else LayerStack.pack(params["layers"], config.num_attention_heads)
        self.layers = [self.stack.layer(i) for i in range(len(self.stack))]
        params["layers"] = UnpackedLayers(self.layers)
        self.params = params
        projection = params["embeddings"]["projection"]
        self.projection = PreparedLinear(**projection) if projection is not None else None
        self.pooler = PreparedLinear(**params["pooler"]) if params.get("pooler") is not None else None
        self.packed_heads = {}  # id(head weight) -> (weight, PreparedLinear), filled by head_linear
        self._scratch = threading.local()  # per thread: {name: flat float32 buffer}
        self._plans = {}  # (lengths, threads, ...) -> (VarlenPlan, LayerPlan or None), see group_plans

    def scratch(self, name, rows, cols):
        """A float32 [rows, cols] scratch buffer kept between calls (one set per thread, grown
        when a bigger batch comes): the forward pass then allocates, and the OS zeroes, no
        fresh pages for its buffers on every call."""
        buffers = self._scratch.__dict__
        flat = buffers.get(name)
        if flat is None or flat.size < rows * cols:
            flat = buffers[name] = np.empty(rows * cols, dtype=np.float32)
        return flat[:rows * cols].reshape(rows, cols)

    def group_plans(self, key, make):
        """make() -> (attention plan, layer plan) for a group of sequences, kept under `key`
        (their lengths and everything else the plans depend on): the same lengths come back
        call after call (batch-1 requests, a corpus in sorted batches), and making the plans
        costs ~0.1 ms, 3% of a 16-token MiniLM forward pass. At most PLANS_KEPT are kept."""
        plans = self._plans.get(key)
        if plans is None:
            if len(self._plans) >= PLANS_KEPT:
                self._plans.clear()
            plans = self._plans[key] = make()
        return plans


def prepare(params, config):
    """Lay the weights out for the kernels, once: params (see `transformer.model`) -> PreparedEncoder.

    It takes the layers over: afterwards `params["layers"]` is an `UnpackedLayers` view that
    re-derives each layer's dict (same values) from the packed weights when asked for, so one
    copy of every weight is held, not two.
    """
    return PreparedEncoder(params, config)


# The layers run on groups of whole sequences of about this many tokens (a longer sequence
# is a group of its own): the per-layer buffers (QKV, attention context, the attention
# block's output) stay near 19 + 6 + 6 MB at BERT-base width instead of 75 + 25 + 25 MB for
# 32 x 256 tokens, and 2048 rows still fill the GEMM's row blocks.
GROUP_ROWS = 2048
PLANS_KEPT = 256  # group plans kept by PreparedEncoder.group_plans


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


def head_linear(prepared):
    """A `linear(x, weight, bias)` for the task heads (`transformer.heads`) that runs on the
    packed GEMM: each head weight is packed on its first use and kept with `prepared`.
    x float32 [..., in], weight [in, out], bias [out] -> [..., out], as `transformer.model.linear`."""
    packed_heads = prepared.packed_heads

    def linear(x, weight, bias):
        entry = packed_heads.get(id(weight))
        if entry is None or entry[0] is not weight:
            entry = packed_heads[id(weight)] = (weight, PreparedLinear(weight, bias))
        prepared_linear = entry[1]
        if prepared_linear.bias is not bias and not np.array_equal(prepared_linear.bias, bias):
            prepared_linear = PreparedLinear.from_packed(prepared_linear.packed, bias)
        flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)  # [..., in] -> [tokens, in]
        out = np.empty((flat.shape[0], weight.shape[1]), dtype=np.float32)
        return prepared_linear(flat, out=out).reshape(*x.shape[:-1], weight.shape[1])  # -> [..., out]

    return linear


def pooler(prepared, last_hidden_state):
    """BERT's pooler on the kernels: tanh(first token @ W + b), float32 [batch, seq, hidden]
    -> [batch, hidden]; the same as `transformer.model.pooler`, with no BLAS call."""
    first_token = np.ascontiguousarray(last_hidden_state[:, 0])  # [batch, seq, hidden] -> [batch, hidden]
    out = np.empty((first_token.shape[0], prepared.pooler.packed.out_features), dtype=np.float32)
    return np.tanh(prepared.pooler(first_token, out=out), out=out)  # [batch, hidden]


# Run the layers in one compiled call (kernels/layer.py); False: step by step, as below.
FUSED_LAYERS = True


def encoder_layer_steps(layer, config, plan, hidden, qkv, context, attended, inner):
    """One encoder layer, kernel by kernel: hidden float32 [rows, hidden] updated in place.

    The same steps (and bits) as `layer.LayerPlan.run`, which runs them inside one compiled
    call. plan = (attend: the group's VarlenPlan, norm_bounds: LayerNorm's thread split,
    ffn_rows: feed-forward block rows, eps: np.float32); qkv [rows, 3 * hidden], context and
    attended [rows, hidden], inner [ffn_rows, intermediate]: scratch buffers.
    """
    attend, norm_bounds, ffn_rows, eps = plan
    rows = hidden.shape[0]
    layer.qkv(hidden, out=qkv)  # [rows, hidden] -> [rows, 3 * hidden]
    attend(qkv, out=context)  # attention_varlen -> [rows, hidden]
    layer.attention_output(context, out=attended, residual=hidden)  # @ W + b + hidden
    norm = layer.attention_layer_norm
    layer_norm_checked(attended, norm["weight"], norm["bias"], eps, attended, norm_bounds)
    # The feed-forward block, FFN_ROWS tokens at a time (each row is independent).
    for block0 in range(0, rows, ffn_rows):
        block = slice(block0, min(rows, block0 + ffn_rows))
        block_inner = inner[:block.stop - block.start]
        layer.intermediate(attended[block], out=block_inner, activation=config.hidden_act)  # -> [block, intermediate]
        layer.output(block_inner, out=hidden[block], residual=attended[block])  # -> [block, hidden]
    norm = layer.output_layer_norm
    layer_norm_checked(hidden, norm["weight"], norm["bias"], eps, hidden, norm_bounds)


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
    if config.position_padding_idx is None:  # BERT: a token's position is its slot in the row
        positions = slots % seq  # [tokens]
    else:  # RoBERTa / MPNet count real tokens (numpy_model.position_ids)
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

    # The layers run on groups of whole sequences of about GROUP_ROWS tokens, one group after
    # another (sequences do not see each other), so the per-layer buffers hold one group, not
    # the whole batch. With output_hidden_states every layer's output is unpacked for the
    # whole batch: one group then.
    if output_hidden_states:
        groups = [(0, batch)]
    else:
        groups = sequence_groups(cu_seqlens, GROUP_ROWS)  # [(first sequence, stop sequence)]
    group_rows = max(int(cu_seqlens[stop] - cu_seqlens[first]) for first, stop in groups)

    # Scratch buffers: every group and layer reuses them, and so does the next call (they
    # never leave this function; the returned arrays are fresh).
    qkv = prepared.scratch("qkv", group_rows, 3 * hidden_size)
    context = prepared.scratch("context", group_rows, hidden_size)
    attended = prepared.scratch("attended", group_rows, hidden_size)
    ffn_rows = min(group_rows, FFN_ROWS)
    inner = prepared.scratch("inner", ffn_rows, config.intermediate_size)  # one row block's worth
    eps = np.float32(config.layer_norm_eps)

    hidden_states = [unpack(hidden)] if output_hidden_states else None
    for first, stop in groups:
        row0, row1 = int(cu_seqlens[first]), int(cu_seqlens[stop])
        rows = row1 - row0
        # The group's attention plan (checks, thread split) and layer plan (blocking, work
        # items), made once for all its layers, and kept for the next call with these lengths.
        group_seqlens = cu_seqlens[first:stop + 1] - row0
        group_slots = None if slot_in_row is None else slot_in_row[row0:row1]

        def make_plans():
            attend = VarlenPlan(group_seqlens, config.num_attention_heads, hidden_size, position_bias, group_slots,
                                head_major=True)
            return attend, (LayerPlan(attend, rows, config, ffn_rows, prepared.stack) if FUSED_LAYERS else None)

        key = (group_seqlens.tobytes(), numba.get_num_threads(), ffn_rows, FUSED_LAYERS,
               None if group_slots is None else (seq, group_slots.tobytes()))
        attend, plan = prepared.group_plans(key, make_plans)
        group_hidden = hidden[row0:row1]  # [rows, hidden], updated in place layer by layer
        buffers = (qkv[:rows], context[:rows], attended[:rows], inner)
        if not FUSED_LAYERS:  # each step its own kernel call
            plan = (attend, layer_norm_bounds(rows, hidden_size), ffn_rows, eps)  # LayerNorm's thread split, once
        if FUSED_LAYERS:
            # Every layer in one compiled call; with output_hidden_states, one layer per call.
            attention_scratch = prepared.scratch("attention", *plan.attention_scratch_shape)
            layer_runs = ([(i, i + 1) for i in range(len(prepared.stack))] if output_hidden_states
                          else [(0, len(prepared.stack))])
            for first_layer, stop_layer in layer_runs:
                plan.run(prepared.stack, first_layer, stop_layer, group_hidden, *buffers, attention_scratch)
                if output_hidden_states:
                    hidden_states.append(unpack(hidden))
        else:
            for layer in prepared.layers:
                encoder_layer_steps(layer, config, plan, group_hidden, *buffers)
                if output_hidden_states:
                    hidden_states.append(unpack(hidden))

    if output_hidden_states:
        last_hidden_state = hidden_states[-1]
    elif tokens == batch * seq:  # no padding at all: the packed rows are the answer (a fresh array)
        last_hidden_state = hidden.reshape(batch, seq, hidden_size)
    else:
        last_hidden_state = unpack(hidden)
    return last_hidden_state, tuple(hidden_states) if output_hidden_states else None, None
