"""DeBERTa's disentangled attention terms, added to one (sequence, head)'s score rows.

    score[i, j] += (q_i . pk[r(i - j)] + k_j . pq[r(i - j)]) * scale      c2p + p2c

r(d): the row of the relative-embedding table for the distance d = i - j (log-bucketed,
shifted and clipped: `transformer.model.relative_position_rows`); pk, pq: the table projected
by the layer's key and query linears (or its own position ones), one head's columns. The
NumPy twin is `transformer.model.disentangled_bias`; `disentangled_bias_naive` below is the
reference loop.

Layouts (float32 unless said; flat offsets as in microkernel.py):

    table    one head's projected table, transposed: element (c, r) at
             table[table_start + c * ld + r], c < head_dim, r < rows; ld = `table_ld(rows)`
             leaves 32 zero columns past the last row, so a tile may read a whole panel there
    rows_of  int64 [2 * max_len - 1]: r(d) at rows_of[d + max_len - 1]
    c2p      [block rows, width_pad]: q_i . pk[r_lo + t] at c2p[i * width_pad + t]
    p2c      [keys, width_pad]:       k_j . pq[r_lo + t] at p2c[j * width_pad + t]

A sequence of n tokens reads only the table rows r(-(n - 1)) .. r(n - 1) (`window`: r_lo
and width, at most 2 * n - 1 rows, at most the table): c2p and p2c are computed for those
through the micro-kernel, as small GEMMs q [n, head_dim] @ table[:, r_lo:r_lo + width], and
each score then gathers its two terms. The cost is about that of the content scores again,
twice.
"""

import numpy as np

from ._jit import jit
from .microkernel import MR, NR, WIDE_MR, tile

_F0 = np.float32(0.0)


def table_ld(rows):
    """The row length of a transposed projected table of `rows` rows: rows plus 32 zero
    columns (a wide tile reads 32), rounded up to 16."""
    return -(-(rows + 2 * NR) // NR) * NR


def pack_tables(projected, num_heads):
    """Projected relative tables, one per layer ([layers][rows, heads * head_dim]) -> float32
    [layers, heads * head_dim * ld]: each head's table transposed into the `table` layout,
    heads one after another (head h from h * head_dim * ld), zeros in the padding."""
    layers = len(projected)
    rows, width = projected[0].shape
    head_dim = width // num_heads
    ld = table_ld(rows)
    out = np.zeros((layers, num_heads, head_dim, ld), dtype=np.float32)
    for i, table in enumerate(projected):
        out[i, :, :, :rows] = table.reshape(rows, num_heads, head_dim).transpose(1, 2, 0)  # -> [heads, hd, rows]
    return out.reshape(layers, -1)


def scratch_floats(max_len, table_rows, block_rows):
    """Floats one thread needs for c2p and p2c of sequences of up to max_len tokens, a query
    block holding up to block_rows rows."""
    width_pad = -(-min(table_rows, 2 * max_len - 1) // NR) * NR
    return (block_rows + max_len) * width_pad


@jit(inline="always")
def window(rows_of, n):
    """(r_lo, width): the table rows a sequence of n tokens reads."""
    center = (rows_of.shape[0] - 1) // 2
    r_lo = rows_of[center - (n - 1)]
    return r_lo, rows_of[center + n - 1] - r_lo + 1


@jit
def position_scores(x, x_start, stride, n, table, table_start, ld, head_dim, r_lo, width, out, width_pad, wide):
    """out[i * width_pad + t] = x_i . table[:, r_lo + t] for i < n, t < width: x_i is one
    head's query (or key) i, head_dim floats at x[x_start + i * stride]."""
    tile_rows, tile_cols = (WIDE_MR, 2 * NR) if wide else (MR, NR)
    for c0 in range(0, width, tile_cols):
        cols = min(tile_cols, width - c0)
        for s0 in range(0, n, tile_rows):
            tile(x, x_start + s0 * stride, stride, min(tile_rows, n - s0),
                 table, table_start + r_lo + c0, ld, head_dim,
                 out, s0 * width_pad + c0, width_pad, cols, False, wide, NR, -1)


@jit
def add_position_scores(row, i, k_lo, n_keys, rows_of, r_lo, c2p, c2p_start, p2c, width_pad, scale):
    """row[j] += (c2p[i, r(i - key)] + p2c[key, r(i - key)]) * scale for the keys
    key = k_lo + j, j < n_keys, of query i (a term whose array is empty is left out); c2p's
    row i starts at c2p_start."""
    center = (rows_of.shape[0] - 1) // 2
    has_c2p = c2p.shape[0] > 0
    has_p2c = p2c.shape[0] > 0
    for j in range(n_keys):
        key = k_lo + j
        t = rows_of[center + i - key] - r_lo
        term = _F0
        if has_c2p:
            term += c2p[c2p_start + t]
        if has_p2c:
            term += p2c[key * width_pad + t]
        row[j] += term * scale


@jit
def disentangled_bias_naive(query, key, position_key, position_query, rows, scale):
    """The reference loop, one head: query, key float32 [n, head_dim]; position_key,
    position_query [table rows, head_dim] (either may have 0 rows: that term is left out);
    rows int64 [n, n] -> float32 [n, n] of (c2p + p2c) * scale."""
    n, head_dim = query.shape
    out = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(n):
            r = rows[i, j]
            term = _F0
            if position_key.shape[0] > 0:
                dot = _F0
                for c in range(head_dim):
                    dot += query[i, c] * position_key[r, c]
                term += dot
            if position_query.shape[0] > 0:
                dot = _F0
                for c in range(head_dim):
                    dot += key[j, c] * position_query[r, c]
                term += dot
            out[i, j] = term * scale
    return out
