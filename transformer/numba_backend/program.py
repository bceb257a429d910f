"""A recipe -> what the fused layers run: the weights stacked over the layers, and the program.

    stack = LayerStack.pack(params["layers"], recipe)     # once, at load (or from the packed cache)
    program = compile_program(recipe, stack.layout)       # the steps of every layer (kernels/program.py)

For BERT's layer (two post-norm blocks) the program is, per layer:

    GEMM       QKV = HIDDEN @ W[qkv] + b
    ATTENTION  CONTEXT = attention(QKV)
    GEMM       ATTENDED = CONTEXT @ W[attention_output] + b + HIDDEN
    NORM       ATTENDED = LayerNorm(ATTENDED)
    MLP        HIDDEN = gelu(ATTENDED @ W[intermediate] + b) @ W[output] + b + ATTENDED
    NORM       HIDDEN = LayerNorm(HIDDEN)

A block's sublayer writes `stream + sublayer(x)` into the other stream buffer (a GEMM's output
may not overlap its residual input), so the residual add is the last GEMM's epilogue; a
pre-norm block first normalises the stream into NORMED; a block with a norm on its sublayer's
output (Gemma 3) writes the sublayer alone, then a NORM step adds RMSNorm of it to the
stream. A gated MLP's gate and up weights are
one stacked slot ("gate+up", in pairs of panels: gemm.pack_gated_weight) whose GEMM writes
act(gate) * up into GATED; an attention step names its row of the rotary tables
(`rotary_tables`, one per theta), its window, and its per-head query / key RMSNorms (Qwen3,
Gemma 3: vector slots, run inside the attention kernel before the rotation). What the kernels do not run yet is
refused by name (`check_recipe`): a new operation is a new step kind in kernels/program.py
and a case in `compile_program`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from transformer import model as numpy_model
from transformer.kernels.activations import activation_code, activation_row_address
from transformer.kernels.arena import WeightArena
from transformer.kernels.disentangled import table_ld
from transformer.kernels.bf16 import unpack_weight_bf16
from transformer.kernels.gemm import NR, pack_gated_weight, pack_weight, unpack_gated_weight
from transformer.kernels.program import (ATTENDED, ATTENTION, ATTENTION_STEP, CONTEXT, EMPTY, GATED, GEMM, GEMM_STEP,
                                         HIDDEN, INNER, MLP, MLP_STEP, NORM, NORM_STEP, NORMED, QKV, STEP, Program,
                                         Weights)
from transformer.recipe import AbsolutePositions, Attention, Disentangled, RelativeBuckets, Rotary
from transformer.recipe import MLP as MLPSpec


def check_recipe(recipe):
    """Raise NotImplementedError naming the first step of `recipe` the numba backend does not run yet."""
    def refuse(what):
        raise NotImplementedError(f"the numba backend does not implement {what} yet")

    embeddings = recipe.embeddings
    if embeddings.scale is not None and (embeddings.norm is not None or embeddings.projection is not None):
        refuse("scaled embeddings with an embedding norm or projection (only Gemma's: scaled, then the layers)")
    if embeddings.positions is not None and not isinstance(embeddings.positions, AbsolutePositions):
        refuse(f"embedding positions {embeddings.positions}")
    norms = [norm for layer in recipe.layers for norm in layer.norms()]
    if embeddings.norm is not None:
        norms.append(embeddings.norm)
    if recipe.final_norm is not None:
        norms.append(recipe.final_norm)
    for norm in norms:
        if norm.kind not in ("layer_norm", "rms_norm") or (norm.kind == "layer_norm" and norm.offset):
            refuse(f"the {norm.kind} {norm.name!r} with offset={norm.offset} (a layer_norm, or an rms_norm with "
                   f"an offset)")
    if embeddings.norm is not None and embeddings.norm.kind != "layer_norm":
        refuse(f"an embedding {embeddings.norm.kind} (the embedding kernel fuses a layer_norm)")
    schemes = recipe.position_schemes()
    buckets = [scheme for scheme in schemes if isinstance(scheme, RelativeBuckets)]
    rotary = [scheme for scheme in schemes if isinstance(scheme, Rotary)]
    disentangled = [scheme for scheme in schemes if isinstance(scheme, Disentangled)]
    if len(buckets) + len(disentangled) > 1 or ((buckets or disentangled) and rotary) \
            or len(buckets) + len(rotary) + len(disentangled) < len(schemes):
        refuse(f"the attention positions {', '.join(type(scheme).__name__ for scheme in schemes)} (it runs one "
               f"relative position table, DeBERTa's disentangled positions, or rotary positions)")
    for scheme in rotary:  # (the tables come from transformer.model.rotary_angles, scaled there)
        if scheme.interleaved:
            refuse("interleaved rotary positions (only the halves layout)")
        if dict(scheme.scaling).get("rope_type", "default") not in numpy_model.ROPE_TYPES:
            refuse(f"the rope_type {dict(scheme.scaling)['rope_type']!r} (only {', '.join(numpy_model.ROPE_TYPES)})")
    if len({scheme.dims for scheme in rotary}) > 1:
        refuse("rotary positions that turn different numbers of dimensions in different layers")
    for scheme in disentangled:
        if scheme.norm is not None and not scheme.norm.bias:
            refuse(f"a bias-free norm of the relative table ({scheme.norm.name!r})")
    shapes = None
    for layer in recipe.layers:
        if len(layer.blocks) % 2:
            refuse("a layer of an odd number of blocks (its output would end in the other stream buffer)")
        attention = layer.attention()
        if len(attention) != 1:
            refuse(f"a layer with {len(attention)} attention blocks")
        for block in layer.blocks:
            if block.norm_after is not None and (block.norm_after.kind != "rms_norm" or
                                                 block.norm_after_residual is not None):
                refuse(f"a {block.norm_after.kind} on a sublayer's output ({block.norm_after.name!r}; only an "
                       f"rms_norm, with no norm after the residual)")
            sublayer = block.sublayer
            if isinstance(sublayer, MLPSpec):
                if sublayer.gate is not None and sublayer.gate.bias != sublayer.up.bias:
                    refuse(f"a gated MLP with a bias on one of {sublayer.gate.name!r} and {sublayer.up.name!r} only")
            elif isinstance(sublayer, Attention):
                if sublayer.mask.causal and sublayer.positions is not None and \
                        not isinstance(sublayer.positions, Rotary):
                    refuse("a causal mask with a relative position bias")
                head_norms = sublayer.norms()
                if any(norm.kind != "rms_norm" or norm.size != sublayer.head_dim for norm in head_norms) or \
                        len({(norm.eps, norm.offset) for norm in head_norms}) > 1:
                    refuse("query/key norms other than head_dim-wide rms_norms of one eps and offset")
                if not (sublayer.query.bias == sublayer.key.bias == sublayer.value.bias):
                    refuse("biases on some of the query, key and value linears only")
                shape = (sublayer.num_heads, sublayer.head_dim)
                if shapes not in (None, shape):
                    refuse("layers whose attention differs in heads")
                shapes = shape
            else:
                refuse(f"the sublayer {type(sublayer).__name__}")


# ---------------------------------------------------------------------------------------
# The weights, stacked over the layers
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackedLinear:
    """One linear slot of the stack: `name`, the params it is made of (`parts`: one name, the
    query, key and value names fused head-major into one QKV linear of `heads` heads, or a
    GLU's gate and up names fused in pairs of panels when `gated`: gemm.pack_gated_weight),
    and whether it has a bias; `inner`: a gated slot's GLU width (the gate's out_features)."""

    name: str
    parts: tuple
    heads: int = 0
    bias: bool = True
    gated: bool = False
    inner: int = 0
    kv_heads: int = 0  # a QKV slot's key/value heads (grouped-query attention: fewer than heads)


@dataclass(frozen=True)
class StackLayout:
    """The slots of a layer's prepared weights: linears (packed panels and biases) and vectors
    (the norms' weights and biases, named "<norm>.weight", "<norm>.bias"), in slot order."""

    linears: tuple[StackedLinear, ...]
    vectors: tuple[str, ...]

    def linear_slot(self, name):
        return next(i for i, linear in enumerate(self.linears) if linear.name == name)

    def vector_slot(self, name):
        """The slot of vector `name` in `LayerStack.weights().vectors` (0 is an empty vector)."""
        return 1 + self.vectors.index(name)


def stack_layout(layers):
    """The StackLayout of some layer recipes: a fused head-major QKV linear ("qkv") per
    attention block, every other linear by its name, every norm's weight and bias; the union
    over the layers, in first-use order (a layer without a slot, such as ModernBERT's first
    layer without an attention norm, leaves its rows unused)."""
    linears, vectors = {}, {}
    for layer_recipe in layers:
        for block in layer_recipe.blocks:
            sublayer = block.sublayer
            if isinstance(sublayer, Attention):
                parts = (sublayer.query.name, sublayer.key.name, sublayer.value.name)
                found = [StackedLinear("qkv", parts, sublayer.num_heads, sublayer.query.bias, kv_heads=sublayer.kv_heads),
                         StackedLinear(sublayer.output.name, (sublayer.output.name,), bias=sublayer.output.bias)]
                # DeBERTa's own position linears: kept here (layer_params re-derives them), but
                # run once at load on the relative table (forward.PreparedEncoder), not per call
                positions = sublayer.positions.linears() if isinstance(sublayer.positions, Disentangled) else ()
                found += [StackedLinear(linear.name, (linear.name,), bias=linear.bias) for linear in positions]
            elif sublayer.gate is not None:  # a GLU: gate and up as one paired linear, then down
                found = [StackedLinear(f"{sublayer.gate.name}+{sublayer.up.name}", (sublayer.gate.name, sublayer.up.name),
                                       bias=sublayer.up.bias, gated=True, inner=sublayer.gate.out_features),
                         StackedLinear(sublayer.down.name, (sublayer.down.name,), bias=sublayer.down.bias)]
            else:
                found = [StackedLinear(linear.name, (linear.name,), bias=linear.bias) for linear in sublayer.linears()]
            for linear in found:
                if linears.setdefault(linear.name, linear) != linear:
                    raise NotImplementedError(f"the numba backend stacks each linear once for all layers; "
                                              f"{linear.name!r} is made differently in different layers")
            for norm in block.norms():
                vectors.setdefault(f"{norm.name}.weight")
                if norm.bias:
                    vectors.setdefault(f"{norm.name}.bias")
    return StackLayout(tuple(linears.values()), tuple(vectors))


def head_major(weights, biases, num_heads, kv_heads=None):
    """The query, key and value weights ([in, heads * hd], [in, kv_heads * hd] twice) and
    biases (or None) as one [in, (heads + 2 * kv_heads) * hd] weight and bias whose columns go
    key/value head after key/value head: its group of query heads, then its key, then its
    value (G = heads / kv_heads query heads a group):

        q_0 .. q_{G-1} | k_0 | v_0 | q_G .. q_{2G-1} | k_1 | v_1 | ...      (each hd wide)

    Without grouped-query attention (G = 1) that is q_h | k_h | v_h head after head. A
    thread that computes a run of the QKV GEMM's columns then holds whole groups for
    attention (kernels/program.py), and a key/value head is stored once, not per query head."""
    kv_heads = num_heads if kv_heads is None else kv_heads
    group = num_heads // kv_heads
    size = weights[0].shape[0]
    query = weights[0].reshape(size, kv_heads, group, -1)  # [in, heads * hd] -> [in, kv_heads, G, hd]
    key, value = (w.reshape(size, kv_heads, 1, -1) for w in weights[1:])  # -> [in, kv_heads, 1, hd]
    weight = np.concatenate((query, key, value), axis=2).reshape(size, -1)  # -> [in, kv_heads, G + 2, hd] -> [in, out]
    if biases[0] is None:
        return np.ascontiguousarray(weight), None
    query = biases[0].reshape(kv_heads, group, -1)  # [heads * hd] -> [kv_heads, G, hd]
    key, value = (b.reshape(kv_heads, 1, -1) for b in biases[1:])  # -> [kv_heads, 1, hd]
    bias = np.concatenate((query, key, value), axis=1).reshape(-1)  # -> [kv_heads, G + 2, hd] -> [out]
    return np.ascontiguousarray(weight), np.ascontiguousarray(bias)


def query_key_value(weight, bias, num_heads, kv_heads=None):
    """`head_major` undone: ([in, heads * hd], [in, kv_heads * hd] twice) weights and the
    biases (or None) of query, key and value."""
    kv_heads = num_heads if kv_heads is None else kv_heads
    group = num_heads // kv_heads
    size = weight.shape[0]
    grouped = weight.reshape(size, kv_heads, group + 2, -1)  # [in, out] -> [in, kv_heads, G + 2, hd]
    weights = (grouped[:, :, :group].reshape(size, -1), grouped[:, :, group].reshape(size, -1),
               grouped[:, :, group + 1].reshape(size, -1))
    if bias is None:
        return weights, None
    grouped = bias.reshape(kv_heads, group + 2, -1)  # [out] -> [kv_heads, G + 2, hd]
    return weights, (grouped[:, :group].reshape(-1), grouped[:, group].reshape(-1), grouped[:, group + 1].reshape(-1))


def _prepared_linears(layout, layer):
    """{slot name: ([in, out] weight, [out] bias or None)} for one layer's params (the slots of
    `layout` it has)."""
    linears = {}
    for linear in layout.linears:
        if linear.parts[0] not in layer:
            continue
        # bf16 weights (uint16 bits) widened exactly, so fusing them pads with float zeros
        parts = [dict(layer[name], weight=numpy_model.from_bf16(layer[name]["weight"]))
                 if layer[name]["weight"].dtype == np.uint16 else layer[name] for name in linear.parts]
        if linear.gated:
            linears[linear.name] = pack_gated_weight(parts[0]["weight"], parts[1]["weight"], parts[0]["bias"],
                                                     parts[1]["bias"])
        elif len(parts) == 3:
            linears[linear.name] = head_major([p["weight"] for p in parts], [p["bias"] for p in parts], linear.heads,
                                              linear.kv_heads or None)
        else:
            linears[linear.name] = (parts[0]["weight"], parts[0]["bias"])
    return linears


def _vectors(layout, layer):
    """{vector name: [d] array} for one layer's params ("attention_layer_norm.weight": ...), the
    vectors of `layout` it has."""
    vectors = {}
    for name in layout.vectors:
        norm, part = name.rsplit(".", 1)
        if norm in layer:
            vectors[name] = layer[norm][part]
    return vectors


class LayerStack:
    """Every layer's prepared weights, one array per slot with the layer first: the fused
    layers (`kernels.program`) run all the layers in one call on these.

        panels[name]        float32 [layers, panels, in, 16]  the packed weight (gemm.pack_weight);
                            precision "bf16": uint16 [layers, panels, in / 2, 32] (bf16.pack_weight_bf16),
                            but float32 for a linear the bf16 policy keeps in float32
        bias[name]          float32 [layers, out], or [layers, 0] for a bias-free linear
        vectors[name]       float32 [layers, d]: "<norm>.weight" and "<norm>.bias"
        out_features[name]  the linear's width (the panels pad it to a multiple of 16)
        in_features[name]   the linear's depth (bf16 panels pad it to even)
        layout              the StackLayout (which params each slot is made of)
        layer_layouts       each layer's own StackLayout (the slots it uses)

    The panels live in one huge-page arena (see kernels/arena.py) or in a mapping of the
    packed cache; `layer_params(i)` re-derives layer i's params from them.
    """

    def __init__(self, layout, layer_layouts, panels, bias, vectors, out_features, in_features=None):
        self.layout, self.layer_layouts = layout, layer_layouts
        self.panels, self.bias, self.vectors, self.out_features = panels, bias, vectors, out_features
        # {name: the linear's in_features}: bf16 panels pad an odd one to even (None: read
        # from the panels, [layers, panels, in, 16])
        self.in_features = in_features or {name: array.shape[2] * (2 if array.dtype == np.uint16 else 1)
                                           for name, array in panels.items()}
        self._weights = None

    def __len__(self):
        return len(next(iter(self.bias.values())))

    @property
    def precision(self):
        """"bf16" when some slots' panels are bf16 ones (the others: linears the bf16 policy
        keeps in float32), else "fp32"."""
        return "bf16" if any(array.dtype == np.uint16 for array in self.panels.values()) else "fp32"

    @classmethod
    def pack(cls, layers, recipe, precision="fp32"):
        """Pack a list of layer params (transformer.model's layout) layer by layer into one
        arena, setting each list entry to None once packed: memory holds one copy of the
        weights plus one layer, never two copies of them all. A slot's weights have one shape
        in every layer that has it. precision "bf16": bf16 panels (the weights float32 or
        already bf16 bits)."""
        layout, layer_layouts = stack_layout(recipe.layers), tuple(stack_layout([layer]) for layer in recipe.layers)
        count = len(layers)
        shapes, bias_sizes, vector_sizes = {}, {}, {}
        for i, layer_layout in enumerate(layer_layouts):  # every slot's shape, from the recipe
            for linear in layer_layout.linears:
                if linear.name not in shapes:
                    shapes[linear.name], bias_sizes[linear.name] = _slot_shape(recipe.layers[i], linear)
            for name in layer_layout.vectors:
                vector_sizes.setdefault(name, _norm_size(recipe.layers[i], name))
        precisions = _slot_precisions(layer_layouts, layers, precision)
        panel_shapes = {}
        for name, (k, n) in shapes.items():
            if precisions.get(name) == "bf16":
                # [layers, panels, ceil(in / 2), 32] uint16: the bytes of a float32 [..., ceil(in / 2), 16]
                panel_shapes[name] = (count, -(-n // NR), -(-k // 2), NR)
            else:
                panel_shapes[name] = (count, -(-n // NR), k, NR)  # [layers, panels, in, 16]
        arena = WeightArena(WeightArena.bytes_for(panel_shapes[linear.name] for linear in layout.linears))
        panels = {linear.name: arena.take(panel_shapes[linear.name]) for linear in layout.linears}
        panels = {name: array.view(np.uint16) if precisions.get(name) == "bf16" else array
                  for name, array in panels.items()}
        bias = {name: np.zeros((count, size), dtype=np.float32) for name, size in bias_sizes.items()}
        vectors = {name: np.zeros((count, size), dtype=np.float32) for name, size in vector_sizes.items()}
        for i in range(count):
            for name, (weight, b) in _prepared_linears(layer_layouts[i], layers[i]).items():
                if weight.shape != shapes[name]:
                    raise ValueError(f"layer {i}'s {name} weight has shape {weight.shape}, expected {shapes[name]}")
                panels[name][i] = pack_weight(np.ascontiguousarray(weight, dtype=np.float32), precisions[name]).panels
                if b is not None:
                    bias[name][i] = b
            for name, vector in _vectors(layer_layouts[i], layers[i]).items():
                vectors[name][i] = vector
            if isinstance(layers, list):
                layers[i] = None
        out_features = {name: n for name, (_, n) in shapes.items()}
        return cls(layout, layer_layouts, panels, bias, vectors, out_features,
                   {name: k for name, (k, _) in shapes.items()})

    def weights(self):
        """The stack as the kernels' `Weights` tuple, in slot order (vectors: an empty [layers,
        0] first, for "no vector"). A bf16 stack's float32 slots (the linears its policy keeps
        in float32) go in fp32_panels, an empty uint16 placeholder in panels: each tuple holds
        one dtype."""
        if self._weights is None:
            names = [linear.name for linear in self.layout.linears]
            empty = np.zeros((len(self), 0), dtype=np.float32)
            panels, fp32_panels = tuple(self.panels[name] for name in names), ()
            if self.precision == "bf16" and any(array.dtype == np.float32 for array in panels):
                no_bf16 = np.zeros((len(self), 0, 0, 2 * NR), dtype=np.uint16)
                no_fp32 = np.zeros((len(self), 0, 0, NR), dtype=np.float32)
                fp32_panels = tuple(array if array.dtype == np.float32 else no_fp32 for array in panels)
                panels = tuple(no_bf16 if array.dtype == np.float32 else array for array in panels)
            self._weights = Weights(panels=panels, biases=tuple(self.bias[name] for name in names),
                                    vectors=(empty, *(self.vectors[name] for name in self.layout.vectors)),
                                    position_keys=empty, position_queries=empty,  # forward.py adds DeBERTa's
                                    fp32_panels=fp32_panels)
        return self._weights

    def unpacked_weight(self, name, i):
        """Layer i's [in, out] weight of slot `name`, re-derived from the panels (a new array;
        bf16 panels: uint16 bf16 bits)."""
        panels = self.panels[name][i]  # [panels, in, 16]
        if panels.dtype == np.uint16:  # [panels, ceil(in / 2), 32]
            return unpack_weight_bf16(panels, self.in_features[name], self.out_features[name])
        k = panels.shape[1]
        return panels.transpose(1, 0, 2).reshape(k, -1)[:, :self.out_features[name]]  # -> [in, 16 * panels] -> [in, out]

    def layer_params(self, i):
        """Layer i in the layout of `transformer.model` ({"query": {"weight", "bias"}, ...}),
        re-derived from the packed form: the same values the layer was prepared from."""
        layer = {}
        for linear in self.layer_layouts[i].linears:
            weight = self.unpacked_weight(linear.name, i)
            bias = self.bias[linear.name][i] if linear.bias else None
            if linear.gated:
                inner = linear.inner
                halves = unpack_gated_weight(weight, inner)
                bias_halves = unpack_gated_weight(bias, inner) if bias is not None else (None, None)
                for j, part in enumerate(linear.parts):
                    layer[part] = {"weight": halves[j], "bias": bias_halves[j]}
            elif len(linear.parts) == 3:
                weights, biases = query_key_value(weight, bias, linear.heads, linear.kv_heads or None)
                for j, part in enumerate(linear.parts):
                    layer[part] = {"weight": np.ascontiguousarray(weights[j]),
                                   "bias": None if biases is None else biases[j]}
            else:
                layer[linear.parts[0]] = {"weight": weight, "bias": bias}
        for name in self.layer_layouts[i].vectors:
            norm, part = name.rsplit(".", 1)
            layer.setdefault(norm, {})[part] = self.vectors[name][i]
        return layer


def _slot_precisions(layer_layouts, layers, precision):
    """{slot name: "fp32" or "bf16"}: precision "bf16" packs a slot in bf16 when its weights are
    bf16 bits (uint16: `transformer.encoder.bf16_layers`), in float32 when they are float32 (a
    linear the bf16 policy keeps in float32); "fp32" packs every slot in float32."""
    precisions = {}
    for layer_layout, layer in zip(layer_layouts, layers):
        for linear in layer_layout.linears:
            part = layer.get(linear.parts[0])
            if part is None:
                continue
            slot = "bf16" if precision == "bf16" and part["weight"].dtype == np.uint16 else "fp32"
            if precisions.setdefault(linear.name, slot) != slot:
                raise ValueError(f"the {linear.name!r} weights are bf16 in some layers and float32 in others: "
                                 f"a stacked slot has one precision")
    return precisions


def _slot_shape(layer_recipe, linear):
    """((in, out) of the packed weight, bias size) of a StackedLinear, from the layer's recipe."""
    specs = {spec.name: spec for spec in layer_recipe.linears()}
    parts = [specs[name] for name in linear.parts]
    out = sum(part.out_features for part in parts)
    if linear.gated:  # gate and up in pairs of 16 columns, each padded to a multiple of 16
        out = 2 * NR * -(-linear.inner // NR)
    return (parts[0].in_features, out), out if linear.bias else 0


def _norm_size(layer_recipe, vector):
    """The width of a norm's vector ("attention_layer_norm.weight"), from the layer's recipe."""
    norm = vector.rsplit(".", 1)[0]
    return next(spec.size for spec in layer_recipe.norms() if spec.name == norm)


class UnpackedLayers(Sequence):
    """params["layers"] of a prepared model: each layer's dict made from the packed weights
    when asked for, so the unpacked weights are not held beside the packed ones."""

    def __init__(self, stack):
        self._stack = stack

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._stack.layer_params(i) for i in range(len(self._stack))[index]]
        return self._stack.layer_params(range(len(self._stack))[index])

    def __len__(self):
        return len(self._stack)


# ---------------------------------------------------------------------------------------
# The program
# ---------------------------------------------------------------------------------------
def kernel_activation(name):
    """config.json's activation name -> the kernels' code for the same function."""
    return activation_code(numpy_model.ACTIVATIONS[name].__name__)


def rotary_schemes(recipe):
    """The recipe's Rotary schemes in first-use order: the rows of the rotary tables an
    attention step's `rotary` field indexes (ModernBERT: its global theta, then its local)."""
    return [scheme for scheme in recipe.position_schemes() if isinstance(scheme, Rotary)]


def rotary_tables(recipe, seq_len):
    """(cos, sin) float32 [rotary schemes, seq_len, half] for positions 0 .. seq_len-1 (the
    NumPy twin's own `rotary_angles`, so both backends turn by the same bits), or None."""
    schemes = rotary_schemes(recipe)
    if not schemes:
        return None
    head_dim = next(attention.head_dim for layer in recipe.layers for attention in layer.attention()
                    if attention.positions in schemes)
    angles = [numpy_model.rotary_angles(scheme, head_dim, np.arange(seq_len)) for scheme in schemes]
    return np.stack([cos for cos, _ in angles]), np.stack([sin for _, sin in angles])


def compile_program(recipe, layout):
    """The kernels' Program for `recipe`, its weights in the slots of `layout`: every layer's
    blocks as steps over the buffers (see the module docstring). The activations' row loops
    are compiled (or loaded from the disk cache) here."""
    steps, layer_steps = [], [0]
    tables = {GEMM: [], ATTENTION: [], NORM: [], MLP: []}

    def add(kind, record):
        steps.append((kind, len(tables[kind])))
        tables[kind].append(record)

    def norm_step(norm, source, target, residual=EMPTY):
        bias = layout.vector_slot(f"{norm.name}.bias") if norm.bias else 0  # 0: the empty vector, no bias
        add(NORM, (layout.vector_slot(f"{norm.name}.weight"), bias, source, target, np.float32(norm.eps),
                   int(norm.kind == "rms_norm"), np.float32(norm.offset), residual))

    rotary = rotary_schemes(recipe)

    for layer_recipe in recipe.layers:
        stream, other = HIDDEN, ATTENDED  # the residual stream's buffer, and the one the next block writes
        for block in layer_recipe.blocks:
            source = stream
            if block.norm_before is not None:
                norm_step(block.norm_before, stream, NORMED)
                source = NORMED
            sublayer = block.sublayer
            # A norm on the sublayer's output (Gemma 3): the sublayer writes `other` alone, then
            # other = stream + RMSNorm(other); else the residual add is its last GEMM's epilogue.
            residual = stream if block.norm_after is None else EMPTY
            if isinstance(sublayer, Attention):
                add(GEMM, (layout.linear_slot("qkv"), source, QKV, EMPTY, activation_code(None), 0))
                scale = sublayer.scale if sublayer.scale is not None else 1.0 / np.sqrt(sublayer.head_dim)
                # How far a query sees either side: a causal window's `window` most recent keys are
                # window - 1 back (and none ahead: causal); a bidirectional one window // 2 each way.
                window = sublayer.mask.window
                window_half = -1 if window is None else window - 1 if sublayer.mask.causal else window // 2
                positions = sublayer.positions
                head_norms = sublayer.norms()  # (check_recipe: one eps and offset)
                norm_slots = [layout.vector_slot(f"{norm.name}.weight") if norm is not None else 0
                              for norm in (sublayer.query_norm, sublayer.key_norm)]
                ld = table_ld(positions.rows) if isinstance(positions, Disentangled) else 0
                add(ATTENTION, (QKV, CONTEXT, sublayer.num_heads, sublayer.kv_heads, sublayer.head_dim, np.float32(scale),
                                isinstance(positions, RelativeBuckets), window_half,
                                rotary.index(positions) if isinstance(positions, Rotary) else -1,
                                int(sublayer.mask.causal), ld, *norm_slots,
                                np.float32(head_norms[0].eps if head_norms else 0.0),
                                np.float32(head_norms[0].offset if head_norms else 0.0)))
                add(GEMM, (layout.linear_slot(sublayer.output.name), CONTEXT, other, residual, activation_code(None), 0))
            else:
                code = kernel_activation(sublayer.activation)
                up, gated = sublayer.up.name, EMPTY
                if sublayer.gate is not None:  # a GLU: the paired gate + up slot, its product in GATED
                    up, gated = f"{sublayer.gate.name}+{sublayer.up.name}", GATED
                add(MLP, (layout.linear_slot(up), layout.linear_slot(sublayer.down.name), source, INNER,
                          other, residual, code, activation_row_address(code), gated))
            if block.norm_after is not None:
                norm_step(block.norm_after, other, other, residual=stream)
            stream, other = other, stream
            if block.norm_after_residual is not None:
                norm_step(block.norm_after_residual, stream, stream)
        layer_steps.append(len(steps))
    dtypes = {GEMM: GEMM_STEP, ATTENTION: ATTENTION_STEP, NORM: NORM_STEP, MLP: MLP_STEP}
    records = {kind: np.array(rows, dtype=dtypes[kind]) for kind, rows in tables.items()}
    return Program(layer_steps=np.array(layer_steps, dtype=np.int64), steps=np.array(steps, dtype=STEP),
                   gemms=records[GEMM], attentions=records[ATTENTION], norms=records[NORM], mlps=records[MLP])
