"""Pictures for people who would rather look than read: attention, similarity, a 2-D map.

matplotlib is an optional extra (`pip install 'transformer[plot]'`); nothing here imports it
until a picture is drawn, and without it every function raises ImportError with a one-line
hint (`PLOT_HINT`). The figures are drawn on a bare `matplotlib.figure.Figure`, never through
pyplot, so no window opens and no GUI backend is needed.

    >>> from transformer.plots import plot_similarity
    >>> plot_similarity([[1.0, 0.3], [0.3, 1.0]], ["a cat", "a dog"], "similarity.png")  # doctest: +SKIP
    PosixPath('similarity.png')

Each function takes plain arrays and labels and writes one image (the format follows the file
suffix: .png, .svg, .pdf); it returns the path written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PLOT_HINT = "plotting needs matplotlib, which is not installed: pip install 'transformer[plot]'"
LABEL_CHARS = 48  # longer labels (whole sentences) are cut, so the picture keeps its shape


def require_matplotlib():
    """Raise ImportError(PLOT_HINT) now if matplotlib is missing, before any slow work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(PLOT_HINT) from None


def new_figure(width, height):
    """A matplotlib Figure (width x height inches), or ImportError(PLOT_HINT) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    return Figure(figsize=(width, height), layout="constrained")


def shorten(label, limit=LABEL_CHARS):
    """A label cut to `limit` characters with an ellipsis. shorten("abcdef", 4) -> 'abc…'"""
    label = str(label)
    return label if len(label) <= limit else label[:limit - 1] + "…"


def _save(figure, path):
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write the picture {path}: the folder {path.parent} does not exist")
    figure.savefig(path, dpi=150)
    return path


def _check_square(matrix, labels, what):
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(labels):
        raise ValueError(f"{what}: expected a square matrix [n, n] with n labels; "
                         f"got shape {matrix.shape} and {len(labels)} labels")
    return matrix


def plot_attention(tokens, weights, path, title="attention"):
    """A token-by-token heatmap of attention weights.

    tokens: [seq] str; weights: float [seq, seq], row i = how much token i attends to each
    token (rows sum to 1). Rows are the queries (the token being updated), columns the keys.
    """
    weights = _check_square(weights, tokens, "plot_attention")
    size = 2.5 + 0.38 * len(tokens)
    figure = new_figure(size + 1.2, size)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(weights.max()), 1e-6))
    ticks = np.arange(len(tokens))
    axes.set_xticks(ticks, [shorten(t, 16) for t in tokens], rotation=60, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, [shorten(t, 16) for t in tokens])
    axes.set_xlabel("attends to (key token)")
    axes.set_ylabel("token being updated (query)")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight (each row sums to 1)")
    return _save(figure, path)


def plot_similarity(matrix, labels, path, title="cosine similarity"):
    """A labelled similarity matrix: float [n, n], labels [n] (sentences are shortened).
    Each cell shows its value when n is small enough to read it."""
    matrix = _check_square(matrix, labels, "plot_similarity")
    n = len(labels)
    cell = 0.55 if n <= 12 else 0.3
    longest = max(len(shorten(label)) for label in labels)
    figure = new_figure(2.5 + 0.07 * longest + cell * n + 1.2, 2.0 + 0.07 * longest + cell * n)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="magma", vmin=min(0.0, float(matrix.min())), vmax=1.0)
    ticks = np.arange(n)
    axes.set_xticks(ticks, [shorten(label) for label in labels], rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, [shorten(label) for label in labels])
    if n <= 12:
        for i in range(n):
            for j in range(n):
                value = float(matrix[i, j])
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                          color="black" if value > 0.6 else "white")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8, label="cosine similarity")
    return _save(figure, path)


def plot_map(points, labels, path, title="sentence embeddings", explained=None, notes=None):
    """A 2-D scatter of embeddings, one colour per label (e.g. a topic), with a legend.

    points: float [n, 2] (e.g. from `transformer.corpus.pca`); labels: [n] str;
    explained: optional [2] share of the variance along each axis (printed on the axes);
    notes: optional {index: text} to write beside a few points.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(f"plot_map: expected points [n, 2] and n labels; got shape {points.shape} "
                         f"and {len(labels)} labels")
    figure = new_figure(9, 7)
    axes = figure.add_subplot()
    names = list(dict.fromkeys(labels))
    colours = [f"C{k % 10}" for k in range(len(names))]
    for name, colour in zip(names, colours):
        chosen = np.array([label == name for label in labels])
        axes.scatter(points[chosen, 0], points[chosen, 1], s=18, alpha=0.75, color=colour,
                     label=f"{name} ({int(chosen.sum())})")
        centre = points[chosen].mean(axis=0)
        axes.annotate(name, centre, ha="center", va="center", fontsize=11, weight="bold", color=colour,
                      bbox=dict(boxstyle="round,pad=0.2", facecolor="white", alpha=0.8, edgecolor=colour))
    for index, text in (notes or {}).items():
        axes.annotate(shorten(text, 48), points[index], xytext=(4, 4), textcoords="offset points", fontsize=7)
    for axis, name in enumerate(("first", "second")):
        share = f" ({100 * float(explained[axis]):.1f}% of the variance)" if explained is not None else ""
        (axes.set_xlabel if axis == 0 else axes.set_ylabel)(f"{name} principal component{share}")
    axes.legend(title="label (count)", loc="best", fontsize=8)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_word_similarities(results, path, title="the same word in different sentences"):
    """Line charts of a word's cosine similarity across sentence pairs, stage by stage.

    results: a list of `transformer.context.WordSimilarities`; one panel each, one line per
    sentence pair, x = static table row, embedding output, layer 1 .. layer L.
    """
    results = list(results)
    figure = new_figure(13, 3.4 * len(results) + 0.6)
    panels = figure.subplots(len(results), 1, squeeze=False)[:, 0]
    for axes, result in zip(panels, results):
        num_layers = len(result.layers) - 1
        stages = ["static", "embed"] + [f"layer {k}" for k in range(1, num_layers + 1)]
        for i, j in result.pairs():
            values = [float(result.static[i, j])] + [float(result.layers[k][i, j]) for k in range(num_layers + 1)]
            label = f"{i + 1}-{j + 1}: {shorten(result.sentences[i], 28)} | {shorten(result.sentences[j], 28)}"
            axes.plot(range(len(stages)), values, marker="o", label=label)
        axes.set_xticks(range(len(stages)), stages)
        word = result.word if isinstance(result.word, str) else " / ".join(result.word)
        axes.set_title(f'"{word}": cosine similarity of its vectors in two sentences')
        axes.set_ylabel("cosine similarity")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="sentence pair")
    figure.suptitle(title)
    return _save(figure, path)


def plot_sense_contrast(contrasts, path, title="the same word in different senses"):
    """Each word's same-sense, other-sense and unrelated-word similarities, stage by stage.

    contrasts: a list of `transformer.context.SenseContrast`; one panel each. A line is the
    mean over the pairs of its kind, the band around it their min..max. The y-axis always
    spans the unrelated baseline and 1.0, so that gaps are seen at their true size.
    """
    contrasts = list(contrasts)
    figure = new_figure(11, 3.6 * len(contrasts) + 0.6)
    panels = figure.subplots(len(contrasts), 1, squeeze=False)[:, 0]
    kinds = [("same", "same sense", "C0"), ("other", "other sense", "C3"), ("unrelated", "unrelated word", "C7")]
    for axes, contrast in zip(panels, contrasts):
        stages = contrast.stages()
        x = np.arange(len(stages))
        lowest = 0.0
        for field, label, colour in kinds:
            values = getattr(contrast, field)
            if values is None:
                continue
            axes.plot(x, values[:, 1], marker="o", color=colour, label=f"{label} (mean)")
            axes.fill_between(x, values[:, 0], values[:, 2], color=colour, alpha=0.15, linewidth=0,
                              label=f"{label} (min..max)")
            lowest = min(lowest, float(values[:, 0].min()))
        axes.axhline(0.0, color="black", linewidth=0.6)
        axes.set_ylim(lowest - 0.05, 1.05)
        axes.set_xticks(x, stages)
        senses = " / ".join(contrast.senses)
        axes.set_title(f'"{contrast.word}" ({senses}): cosine similarity of its vectors')
        axes.set_ylabel("cosine similarity")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(title)
    return _save(figure, path)


# --- a diagram of one layer ----------------------------------------------------------------------


def encoder_layer_boxes(config):
    """One post-LayerNorm encoder layer (BERT's, `transformer.model.encoder_layer`) as the boxes
    of a diagram, bottom to top: [(text, kind)], kind "tensor" (what flows), "step" (a
    function of model.py), "add" (a residual sum: its input skips the block below it).
    Sizes come from the config, so the diagram shows the model's own numbers."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim, inner = hidden // heads, config.intermediate_size
    return [
        (f"hidden  [seq, {hidden}]", "tensor"),
        (f"query, key, value = linear(hidden)  3 x [seq, {hidden}]", "step"),
        (f"split_heads: cut each {hidden} into {heads} x {head_dim}\n"
         f"-> q, k, v: {heads} heads x [seq, {head_dim}] each", "step"),
        (f"attention, each head on its own:\n"
         f"softmax(q . k / sqrt({head_dim})) @ v  -> {heads} heads x [seq, {head_dim}]", "step"),
        (f"merge_heads: the {heads} heads side by side\n"
         f"-> [seq, {heads} x {head_dim} = {hidden}]", "step"),
        (f"attention_output: linear {hidden} -> {hidden},\n"
         f"mixes what the heads found", "step"),
        ("+ hidden (residual), then layer_norm", "add"),
        (f"feed_forward: linear {hidden} -> {inner}, {config.hidden_act},\n"
         f"linear {inner} -> {hidden}  (each token on its own)", "step"),
        ("+ its input (residual), then layer_norm", "add"),
        (f"hidden  [seq, {hidden}]  (to the next layer)", "tensor"),
    ]


def plot_layer_diagram(columns, path, title="one encoder layer"):
    """Draw layers as boxes and arrows, one column per layer kind, read bottom to top.

    columns: [(name, boxes)] with boxes as from `encoder_layer_boxes`; a second column (e.g.
    a decoder layer) is drawn beside the first. A residual's arrow skips the step below its
    "add" box, from the tensor that entered that step.
    """
    columns = list(columns)
    tallest = max(len(boxes) for _, boxes in columns)
    figure = new_figure(5.6 * len(columns) + 0.4, 0.8 * tallest + 0.9)
    panels = figure.subplots(1, len(columns), squeeze=False)[0]
    style = {"tensor": dict(facecolor="#f2f2f2", edgecolor="#888888"),
             "step": dict(facecolor="#dbe9f6", edgecolor="#2b6cb0"),
             "add": dict(facecolor="#fde7c8", edgecolor="#c05621")}
    for axes, (name, boxes) in zip(panels, columns):
        axes.set_xlim(0, 1)
        axes.set_ylim(-0.6, len(boxes) - 0.4)
        axes.axis("off")
        axes.set_title(name)
        width = max(len(line) for text, _ in boxes for line in text.split("\n"))
        artists = []
        for level, (text, kind) in enumerate(boxes):
            # Lines padded to one width (the font is monospaced): every box as wide as the widest,
            # so the arrows line up.
            padded = "\n".join(line.center(width) for line in text.split("\n"))
            artists.append(axes.text(0.45, level, padded, ha="center", va="center", fontsize=8,
                                     family="monospace",
                                     bbox=dict(boxstyle="round,pad=0.4", linewidth=1.2, **style[kind])))
            if level:
                axes.annotate("", xy=(0.45, level - 0.28), xytext=(0.45, level - 0.72),
                              arrowprops=dict(arrowstyle="->", color="black"))
        sums = [level for level, (_, kind) in enumerate(boxes) if kind == "add"]
        for order, level in enumerate(sums):
            # The skip connection leaves from the tensor that entered the block below the sum;
            # each one further out than the next, so that the lines do not merge.
            start = next(k for k in range(level - 1, -1, -1) if boxes[k][1] != "step")
            arm = 0.4 * (len(sums) - order) / len(sums)
            # It arrives low on the right edge and leaves high, so that a sum's arriving and
            # departing arrows stay apart.
            axes.annotate("", xy=(1.0, 0.3), xycoords=artists[level], xytext=(1.0, 0.7),
                          textcoords=artists[start],
                          arrowprops=dict(arrowstyle="->", color="#c05621", linewidth=1.4, shrinkA=4, shrinkB=4,
                                          connectionstyle=f"bar,fraction={arm / (level - start):.3f}"))
    figure.suptitle(title)
    return _save(figure, path)
