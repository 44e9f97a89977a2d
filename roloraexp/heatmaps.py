"""A run's rank configuration as one picture: a layer × matrix-type heatmap of per-adapter values
(ranks, WeightLoRA's ω), for the W&B dashboards (``Tracker.log_state`` logs one per evaluation
and per phase end).

Why an image and not a W&B table with a heatmap chart: W&B has no built-in heatmap chart for
tables (a custom Vega preset would have to exist in every entity that opens the dashboard), an
image renders the same offline, in ``wandb sync``-ed runs and in the media browser's step slider,
and the numbers stay logged beside it as the per-adapter scalars ``ranks/<adapter>``,
``omega/<adapter>``.

This module also owns how an adapter's name reads as (stack, layer, matrix type) and the order
they are drawn in (``parse_adapter_name``, ``layer_order``, ``type_order``, ``layer_labels``):
training draws heatmaps with them, and the report's bar figures (``reporting/figures.py``) read
names the same way. They live here, in the core, because the core must never import reporting.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are written to files, on machines with no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# "<...>.layer.3.<rest>", "<...>.layers.3.<rest>", GPT-style "h.3", "blocks.3"
_LAYER = re.compile(r"(?:^|\.)(?:(encoder|decoder)\.(?:\w+\.)?)?(?:layer|layers|h|block|blocks)\.(\d+)\.(.+)$")
# Leaf module name → matrix type, across RoBERTa/BERT, DeBERTa, BART and Llama names.
_LEAF = {"query": "q", "q_proj": "q", "query_proj": "q", "key": "k", "k_proj": "k", "key_proj": "k",
         "value": "v", "v_proj": "v", "value_proj": "v", "o_proj": "o", "out_proj": "o",
         "gate_proj": "gate", "up_proj": "up", "down_proj": "down", "fc1": "fc1", "fc2": "fc2"}
_DENSE = {"attention.output.dense": "o", "intermediate.dense": "ffn_in", "output.dense": "ffn_out"}
_TYPE_ORDER = ["q", "k", "v", "o", "xq", "xk", "xv", "xo", "gate", "up", "down", "ffn_in", "ffn_out", "fc1", "fc2"]
_STACK_ORDER = {"encoder": 0, "": 1, "decoder": 2}


def parse_adapter_name(name: str) -> tuple[str, int, str]:
    """(stack, layer, matrix type) of an adapter: ``...layer.3.attention.self.value`` → ("encoder", 3, "v").

    Cross-attention (BART ``encoder_attn``) types get an ``x`` prefix; names with no layer
    index give layer -1 and their last component as type.
    """
    m = _LAYER.search(name)
    if not m:
        return "", -1, name.rsplit(".", 1)[-1]
    stack, layer, rest = m.group(1) or "", int(m.group(2)), m.group(3)
    leaf = rest.rsplit(".", 1)[-1]
    mtype = _DENSE.get(rest, rest) if leaf == "dense" else _LEAF.get(leaf, leaf)
    if "encoder_attn" in rest or "crossattention" in rest:
        mtype = "x" + mtype
    return stack, layer, mtype


def layer_order(stack_layer: tuple[str, int]) -> tuple[int, int]:
    """Sort key of a (stack, layer): encoder layers, then a decoder-only model's, then the decoder's."""
    stack, layer = stack_layer
    return _STACK_ORDER.get(stack, 3), layer


def type_order(mtype: str) -> tuple[int, str]:
    """Sort key of a matrix type: attention (q, k, v, o, then cross-attention), then the feed-forward ones."""
    return (_TYPE_ORDER.index(mtype) if mtype in _TYPE_ORDER else len(_TYPE_ORDER)), mtype


def layer_labels(layers: list[tuple[str, int]]) -> list[str]:
    """Axis labels of (stack, layer)s: "3", or "e3" / "d3" when both stacks appear."""
    # Say encoder/decoder only when both appear (BART); RoBERTa's "encoder" is its only stack.
    prefix = {"encoder": "e", "decoder": "d"} if len({s for s, _ in layers}) > 1 else {}
    return [f"{prefix.get(s, '')}{layer}" if layer >= 0 else "-" for s, layer in layers]


@dataclass
class Grid:
    """``values[i, j]``: the adapter of layer ``rows[i]`` and matrix type ``cols[j]`` (NaN: none there)."""
    values: np.ndarray
    rows: list[str]      # "3", or "e3" / "d3" when a model has an encoder and a decoder (BART)
    cols: list[str]      # matrix types in type_order: q, k, v, o, ...

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def layer_grid(per_adapter: dict[str, float]) -> Grid:
    """Per-adapter values (keys: module paths) laid out as layers × matrix types."""
    parsed = {name: parse_adapter_name(name) for name in per_adapter}
    layers = sorted({(s, layer) for s, layer, _ in parsed.values()}, key=layer_order)
    types = sorted({t for _, _, t in parsed.values()}, key=type_order)
    values = np.full((len(layers), len(types)), np.nan)
    row, col = {sl: i for i, sl in enumerate(layers)}, {t: j for j, t in enumerate(types)}
    for name, (s, layer, t) in parsed.items():
        v = per_adapter[name]
        values[row[(s, layer)], col[t]] = np.nan if v is None else float(v)
    return Grid(values, layer_labels(layers), types)


DPI = 100


def figure_size(n_rows: int, n_cols: int) -> tuple[float, float]:
    """Inches: a fixed frame (title, labels, colour bar) plus a fixed size per cell."""
    return 2.0 + 0.75 * n_cols, 1.3 + 0.3 * n_rows


def draw(grid: Grid, title: str, integer: bool):
    """The heatmap as a matplotlib figure (the caller closes it). Layers run down, matrix types across;
    each cell is annotated with its value while the grid stays readable (Llama-8B: 32 × 7)."""
    n_rows, n_cols = grid.shape
    fig, ax = plt.subplots(figsize=figure_size(n_rows, n_cols))
    finite = grid.values[np.isfinite(grid.values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if integer:       # ranks: 0 (pruned / disconnected) is the bottom of the scale
        lo = min(lo, 0.0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")  # grey: no adapter on this matrix
    im = ax.imshow(np.ma.masked_invalid(grid.values), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1,
                   aspect="auto", interpolation="nearest")
    if n_rows * n_cols <= 400:
        for (i, j), v in np.ndenumerate(grid.values):
            if math.isfinite(v):
                text = f"{v:.0f}" if integer else f"{v:.2g}"
                dark = (v - lo) / ((hi - lo) or 1) < 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(n_cols), grid.cols)
    ax.set_yticks(range(n_rows), grid.rows, fontsize=7 if n_rows > 24 else 9)
    ax.set_xlabel("matrix"), ax.set_ylabel("layer"), ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.08, pad=0.03)
    fig.tight_layout()
    return fig


def heatmap_png(per_adapter: dict[str, float], title: str, integer: bool) -> tuple[bytes, Grid]:
    """The heatmap as PNG bytes, with the grid it shows."""
    grid = layer_grid(per_adapter)
    fig = draw(grid, title, integer)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue(), grid
