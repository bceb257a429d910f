"""The numba backend: the whole encoder on the kernels, the same answer as `transformer.model`.

    prepared = prepare(params, config)        # once, at load
    last_hidden_state, hidden_states, attentions = encoder_forward(
        prepared, config, input_ids, attention_mask, token_type_ids,
        output_hidden_states=False, output_attentions=False)

Same arguments, same return value as the NumPy twin (`transformer.encoder.Encoder` calls
either); both run the config's recipe (`config.recipe`). What it does differently, and why
it is faster:

- Weights are prepared once (`prepare`): each layer's query, key and value weights become
  one [hidden, 3 * hidden] matrix, its columns head after head (q_h | k_h | v_h), so a layer
  starts with one GEMM instead of three (and a thread's run of its columns holds whole heads), and
  every weight is packed into the 16-column panels the GEMM micro-kernel streams through,
  stacked over the layers (`program.LayerStack`): every layer then runs in one compiled call
  (`kernels.program`, the recipe compiled into its steps by `program.compile_program`), with
  no Python between layers.
- Padding costs nothing. After the embedding lookup only the real tokens are kept, packed
  one sequence after another ([tokens, hidden], `cu_seqlens` marking where each sequence
  starts), and every later step runs on those rows only; attention runs per sequence
  (`attention.attention_varlen`, its plan made once per call: `VarlenPlan`). The outputs
  are unpacked into [batch, seq, hidden] at the end. Position ids are computed on the padded
  layout first, so they are the ones the reference uses (RoBERTa counts positions over
  non-padding tokens, BERT does not).
- Steps are fused: bias (+ activation) (+ residual) in the GEMM epilogue; residual add and
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

import numpy as np

from transformer import model as numpy_model
from transformer.kernels import program as kernel_program
from transformer.kernels._jit import numba
from transformer.kernels.attention import VarlenPlan
from transformer.kernels.disentangled import pack_tables
from transformer.kernels.embeddings import embed_tokens
from transformer.kernels.gemm import gemm, pack_weight
from transformer.kernels.layernorm import layer_norm_bounds, layer_norm_checked, rms_norm_checked

from transformer.recipe import Disentangled, RelativeBuckets

from .program import LayerStack, UnpackedLayers, check_recipe, compile_program, rotary_tables


class PreparedLinear:
    """A linear layer laid out for `gemm`: the packed [in, out] weight and its bias."""

    __slots__ = ("packed", "bias")

    def __init__(self, weight, bias):
        self.packed = pack_weight(np.ascontiguousarray(weight, dtype=np.float32))  # [in, out] -> panels
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)  # [out], or bias-free

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


class PreparedEncoder:
    """Everything `encoder_forward` needs, made once by `prepare`.

    params: the parameters, with "layers" an `UnpackedLayers` view of the packed ones (the
    embedding tables are used as they are, and the NumPy path runs on them for
    output_attentions); stack: the layers' packed weights (`program.LayerStack`, made from
    params["layers"] when not given); program: the steps of every layer (`kernels.program`,
    compiled from the recipe on first use); projection: ELECTRA's embedding projection as a
    PreparedLinear, or None; pooler: BERT's pooler dense layer as a PreparedLinear, or None.
    """

    def __init__(self, params, config, stack=None):
        check_recipe(config.recipe)
        self.config = config
        if stack is None:
            stack = LayerStack.pack(params["layers"], config.recipe, precision_of(params["layers"]))
        self.stack = stack
        params["layers"] = UnpackedLayers(self.stack)
        self.params = params
        projection = config.recipe.embeddings.projection
        self.projection = PreparedLinear(**params["embeddings"][projection.name]) if projection is not None else None
        self.pooler = PreparedLinear(**params["pooler"]) if params.get("pooler") is not None else None
        self.packed_heads = {}  # id(head weight) -> (weight, PreparedLinear), filled by head_linear
        self._weights = None
        self._program = None
        self._shapes = None
        self._rotary = None  # (cos, sin) of the longest sequence so far, or False: no rotary scheme
        self._scratch = threading.local()  # per thread: {name: flat float32 buffer}
        self._plans = {}  # (lengths, threads, ...) -> (VarlenPlan, ProgramPlan or None), see group_plans

    def weights(self):
        """The kernels' Weights: the stack's, and DeBERTa's relative table projected by every
        layer's position linears (`position_tables`)."""
        if self._weights is None:
            self._weights = self.stack.weights()._replace(**position_tables(self.params, self.config.recipe, self.stack))
        return self._weights

    @property
    def program(self):
        """The kernels' Program: the recipe's steps for every layer (compiled on first use)."""
        if self._program is None:
            self._program = compile_program(self.config.recipe, self.stack.layout)
        return self._program

    @property
    def shapes(self):
        """What every call needs to know of the program, worked out once: (the attention spec,
        the width of its context, the widest MLP inner buffer, the widest GLU product (0:
        none), whether a pre-norm block uses NORMED, the position schemes)."""
        if self._shapes is None:
            recipe, program, stack = self.config.recipe, self.program, self.stack
            attention = recipe.layers[0].attention()[0]
            inner = max(stack.out_features[stack.layout.linears[int(m["up"])].name] for m in program.mlps)
            gated = max((stack.layout.linears[int(m["up"])].inner for m in program.mlps), default=0)
            uses_normed = bool((program.norms["target"] == kernel_program.NORMED).any())
            self._shapes = (attention, attention.num_heads * attention.head_dim, inner, gated, uses_normed,
                            recipe.position_schemes())
        return self._shapes

    def rotary(self, seq_len):
        """`program.rotary_tables(recipe, seq_len)`: (cos, sin) float32 [rotary schemes, seq_len,
        half], or None. Cut from the longest tables made so far (each position's angles are
        computed on their own, so a longer table's first rows are the same bits), so a call
        does not redo the float64 cos / sin of every position, nor walk the recipe."""
        if self._rotary is None:
            self._rotary = rotary_tables(self.config.recipe, 1) or False
        if self._rotary is False:
            return None
        cos, sin = self._rotary
        if cos.shape[1] < seq_len:
            cos, sin = self._rotary = rotary_tables(self.config.recipe, seq_len)
        return np.ascontiguousarray(cos[:, :seq_len]), np.ascontiguousarray(sin[:, :seq_len])  # the kernels take C order

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
        """make() -> (attention plan, program plan) for a group of sequences, kept under `key`
        (their lengths and everything else the plans depend on): the same lengths come back
        call after call (batch-1 requests, a corpus in sorted batches), and making the plans
        costs about as much as a few kernel calls. At most PLANS_KEPT are kept."""
        plans = self._plans.get(key)
        if plans is None:
            if len(self._plans) >= PLANS_KEPT:
                self._plans.clear()
            plans = self._plans[key] = make()
        return plans


def precision_of(layers):
    """"bf16" when the layers' params hold bf16 weights (uint16 bits:
    `transformer.encoder.bf16_layers`), else "fp32"."""
    bf16 = any(part["weight"].dtype == np.uint16 for layer in layers
               for part in layer.values() if isinstance(part, dict) and part.get("weight") is not None)
    return "bf16" if bf16 else "fp32"


def position_tables(params, recipe, stack):
    """{"position_keys", "position_queries"}: for DeBERTa's disentangled attention, the
    relative table (LayerNorm-ed when the recipe says) through each layer's key / query linears
    (or its own position ones), packed per head for the kernels (`disentangled.pack_tables`:
    float32 [layers, heads * head_dim * table_ld]); made once, since they do not depend on the
    input. {} for other recipes (the stack's empty ones stand)."""
    schemes = [scheme for scheme in recipe.position_schemes() if isinstance(scheme, Disentangled)]
    if not schemes:
        return {}
    scheme = schemes[0]  # one at most (program.check_recipe)
    table = numpy_model.relative_embeddings(scheme, params)  # [rows, hidden]
    tables = {}
    for field, wanted in (("position_keys", scheme.c2p), ("position_queries", scheme.p2c)):
        if not wanted:
            continue
        projected = []
        for i, layer_recipe in enumerate(recipe.layers):
            attention = layer_recipe.attention()[0]
            if field == "position_keys":
                linear = attention.key if scheme.share_key else scheme.position_key
            else:
                linear = attention.query if scheme.share_key else scheme.position_query
            layer = stack.layer_params(i)
            projected.append(numpy_model.linear(table, **layer[linear.name]))  # [rows, hidden] -> [rows, heads * hd]
        tables[field] = pack_tables(projected, recipe.layers[0].attention()[0].num_heads)
    return tables


def find_packed_cache(model_dir, precision="fp32", files=None):
    """The packed cache of the checkpoint in model_dir for `precision` ("fp32" / "bf16")
    (`packed_cache.PackedCache`), or None when it is not to be cached; files: the checkpoint's
    file names, when not the folder's config.json and .safetensors files (a GGUF file)."""
    from .packed_cache import PackedCache  # it builds on this module

    return PackedCache.find(model_dir, precision, files)


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


# The EMPTY buffer ([0, 0]: no residual; NORMED where no block is pre-norm). Writeable, as
# every buffer: the kernel's buffer tuple must hold one array type.
_EMPTY = np.zeros((0, 0), dtype=np.float32)

# Run the layers in one compiled call (kernels/program.py); False: step by step from Python,
# the same kernels one call each (`kernels.program.run_program_steps`), the same bits.
FUSED_LAYERS = True


def positions_of(config, input_ids, slots):
    """Each real token's row of the position table: int64 [tokens], from the padded layout
    (without a table, the position its rotary angles are of: its slot in the row; the
    embeddings then add no position row)."""
    positions = config.recipe.embeddings.positions
    padding_idx = None if positions is None else positions.padding_idx
    if padding_idx is None:  # BERT: a token's position is its slot in the row
        return slots % input_ids.shape[1]
    return numpy_model.position_ids(config, input_ids).reshape(-1)[slots]  # RoBERTa / MPNet count real tokens


def embed(embeddings, config, input_ids, token_type_ids):
    """The embedding kernel behind the NumPy twin's signature (`transformer.model.embed`):
    int64 [batch, seq] -> float32 [batch, seq, hidden] (every slot, padding included)."""
    batch, seq = input_ids.shape
    spec = config.recipe.embeddings
    if spec.project_first:  # DeBERTa: the sum, projected, normed
        return numpy_model.embed(embeddings, config, input_ids, token_type_ids)
    out = _embed_tokens(embeddings, config, input_ids.reshape(-1), token_type_ids.reshape(-1),
                        positions_of(config, input_ids, np.arange(batch * seq)))
    if embeddings["projection"] is not None:
        out = out @ embeddings["projection"]["weight"] + embeddings["projection"]["bias"]
    return out.reshape(batch, seq, -1)  # [batch * seq, E] -> [batch, seq, E]


def _embed_tokens(embeddings, config, ids, types, positions):
    """LayerNorm(word + token type + position) for a flat run of tokens -> [tokens, embedding_size]
    (without the LayerNorm where the recipe has none: GPT-2's pre-norm layers normalise first;
    Gemma's word vectors scaled instead)."""
    spec = config.recipe.embeddings
    if spec.norm is None:  # two gathers and an add: nothing to fuse
        hidden = embeddings["word"][ids]  # [tokens] -> [tokens, embedding_size]
        if spec.token_types:
            hidden += embeddings["token_type"][types]
        if spec.positions is not None:
            hidden += embeddings["position"][positions]
        if spec.scale is not None:  # Gemma: sqrt(hidden_size), rounded to float32 as the model's dtype
            hidden *= np.float32(spec.scale)
        return hidden
    norm = embeddings[spec.norm.name]
    return embed_tokens(embeddings["word"], embeddings["token_type"] if spec.token_types else None,
                        embeddings["position"] if spec.positions is not None else None, norm["weight"], norm["bias"],
                        spec.norm.eps, ids, types, positions)


def _projected_embeddings(prepared, config, ids, types, positions):
    """DeBERTa's embeddings for a flat run of tokens: LayerNorm((word + token type + position)
    @ projection), the projection bias-free, on the GEMM -> float32 [tokens, hidden]."""
    spec = config.recipe.embeddings
    embeddings = prepared.params["embeddings"]
    summed = embeddings["word"][ids]  # [tokens] -> [tokens, embedding_size]
    if spec.token_types:
        summed = summed + embeddings["token_type"][types]
    if spec.positions is not None:
        summed = summed + embeddings["position"][positions]
    hidden = prepared.projection(np.ascontiguousarray(summed),
                                 out=np.empty((len(ids), config.hidden_size), dtype=np.float32))
    norm = embeddings[spec.norm.name]
    layer_norm_checked(hidden, norm["weight"], norm["bias"], np.float32(spec.norm.eps), hidden,
                       layer_norm_bounds(*hidden.shape))
    return hidden


def encoder_forward(prepared, config, input_ids, attention_mask=None, token_type_ids=None,
                    output_hidden_states=False, output_attentions=False):
    """Token ids -> contextual vectors on the kernels; see the module docstring.

    input_ids int64 [batch, seq]; attention_mask [batch, seq] of 1/0 (None: all 1);
    token_type_ids [batch, seq] (None: all 0). Returns (last_hidden_state float32
    [batch, seq, hidden] with zeros at padding positions, hidden_states tuple of
    num_layers + 1 such arrays or None, attentions tuple or None).
    """
    params = prepared.params
    recipe = config.recipe
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
    token_ids, token_types = input_ids.reshape(-1)[slots], token_type_ids.reshape(-1)[slots]
    if recipe.embeddings.project_first and prepared.projection is not None:  # DeBERTa: project, then norm
        hidden = _projected_embeddings(prepared, config, token_ids, token_types, positions_of(config, input_ids, slots))
    else:
        hidden = _embed_tokens(embeddings, config, token_ids, token_types,
                               positions_of(config, input_ids, slots))  # -> [tokens, embedding_size]
    if prepared.projection is not None and not recipe.embeddings.project_first:  # ELECTRA: embedding_size -> hidden_size
        hidden = prepared.projection(hidden, out=np.empty((tokens, hidden_size), dtype=np.float32))

    attention, context_width, inner_width, gated_width, uses_normed, schemes = prepared.shapes
    # A relative position bias (MPNet), over the padded positions (what the reference sees),
    # or rotary angles (ModernBERT) for the padded positions 0 .. seq-1.
    position_bias = None
    slot_in_row = None
    disentangled = None  # DeBERTa's scheme: its table rows per distance go to each group's plan
    rotary = prepared.rotary(seq)  # None, or (cos, sin) [rotary schemes, seq, half]
    if rotary is not None:
        slot_in_row = slots % seq  # [tokens]: each token's index in its padded row: its position
    for scheme in schemes:
        if isinstance(scheme, Disentangled):  # one at most (program.check_recipe)
            disentangled = scheme
        elif isinstance(scheme, RelativeBuckets):  # one at most (program.check_recipe)
            position_bias = numpy_model.relative_position_bias(params[scheme.table], seq, scheme.num_buckets,
                                                               scheme.max_distance)[0]  # [heads, seq, seq]
            slot_in_row = slots % seq

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
    # never leave this function; the returned arrays are fresh). By kernels.program's slots.
    program, stack = prepared.program, prepared.stack
    ffn_rows = min(group_rows, FFN_ROWS)
    attended = prepared.scratch("attended", group_rows, hidden_size)
    normed = prepared.scratch("normed", group_rows, hidden_size) if uses_normed else _EMPTY
    qkv = prepared.scratch("qkv", group_rows, stack.out_features["qkv"])
    context = prepared.scratch("context", group_rows, context_width)
    inner = prepared.scratch("inner", ffn_rows, inner_width)  # one row block's worth
    gated = prepared.scratch("gated", ffn_rows, gated_width) if gated_width else _EMPTY
    weights = prepared.weights()
    layers = len(program.layer_steps) - 1

    hidden_states = [unpack(hidden)] if output_hidden_states else None
    for first, stop in groups:
        row0, row1 = int(cu_seqlens[first]), int(cu_seqlens[stop])
        rows = row1 - row0
        # The group's attention plan (checks, thread split) and program plan (blocking, work
        # items), made once for all its layers, and kept for the next call with these lengths.
        group_seqlens = cu_seqlens[first:stop + 1] - row0
        group_slots = None if slot_in_row is None else slot_in_row[row0:row1]

        def make_plans():
            rows_of = None
            if disentangled is not None:  # the table row of every distance -(max_len - 1) .. max_len - 1
                max_len = int(np.diff(group_seqlens).max())
                rows_of = numpy_model.relative_rows(disentangled, np.arange(1 - max_len, max_len, dtype=np.int64))
            attend = VarlenPlan(group_seqlens, attention.num_heads, context_width, position_bias,
                                group_slots if position_bias is not None else None, head_major=True,
                                scale=attention.scale, rotary_positions=group_slots if rotary is not None else None,
                                kv_heads=attention.kv_heads, rows_of=rows_of,
                                table_rows=0 if disentangled is None else disentangled.rows)
            return attend, (kernel_program.ProgramPlan(program, weights, attend, rows, ffn_rows, rotary)
                            if FUSED_LAYERS else None)

        key = (group_seqlens.tobytes(), numba.get_num_threads(), ffn_rows, FUSED_LAYERS,
               None if group_slots is None else (seq, group_slots.tobytes()))
        attend, plan = prepared.group_plans(key, make_plans)
        attention_scratch = prepared.scratch("attention", *plan.attention_scratch_shape) if FUSED_LAYERS else _EMPTY
        buffers = (_EMPTY, hidden[row0:row1], attended[:rows], normed[:rows], qkv[:rows], context[:rows], inner,
                   attention_scratch, gated)  # EMPTY, HIDDEN, ATTENDED, NORMED, QKV, CONTEXT, INNER, SCRATCH, GATED
        layer_runs = [(i, i + 1) for i in range(layers)] if output_hidden_states else [(0, layers)]
        for first_layer, stop_layer in layer_runs:
            if FUSED_LAYERS:  # every layer in one compiled call; with output_hidden_states, one layer per call
                plan.run(program, weights, buffers, first_layer, stop_layer)
            else:  # each step its own kernel call
                kernel_program.run_program_steps(program, weights, buffers, attend, ffn_rows, first_layer, stop_layer,
                                                 rotary)
            if output_hidden_states:
                hidden_states.append(unpack(hidden))

    if recipe.final_norm is not None:
        spec, final = recipe.final_norm, params[recipe.final_norm.name]
        if spec.kind == "rms_norm":
            rms_norm_checked(hidden, final["weight"], np.float32(spec.eps), np.float32(spec.offset), hidden,
                             layer_norm_bounds(*hidden.shape))
        else:
            layer_norm_checked(hidden, final["weight"], final["bias"], np.float32(spec.eps), hidden,
                               layer_norm_bounds(*hidden.shape))
        if output_hidden_states:  # the last entry is the normed output, as in transformers
            hidden_states[-1] = unpack(hidden)
    if output_hidden_states:
        last_hidden_state = hidden_states[-1]
    elif tokens == batch * seq:  # no padding at all: the packed rows are the answer (a fresh array)
        last_hidden_state = hidden.reshape(batch, seq, hidden_size)
    else:
        last_hidden_state = unpack(hidden)
    return last_hidden_state, tuple(hidden_states) if output_hidden_states else None, None
