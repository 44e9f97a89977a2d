"""The papers' figures, drawn from results.json contents (matplotlib, Agg: no display needed).

- ``rank_distribution``: final rank per layer and matrix type (ROLoRA Fig. 2)
- ``omega_per_adapter``: ω per adapter, active ones starred (WeightLoRA Fig. 2)
- ``memory_vs_active``: peak GPU memory against the number of active adapters (WeightLoRA Fig. 3)
- ``grad_norm_per_layer``: gradient norm per layer and matrix type (ROLoRA Fig. 3)

and one run's summary, next to its results.json (``summary``): ``training_curve.png`` (loss, eval
metric and trainable parameters against the step), ``ranks.png``, ``omega.png`` and, for ROLoRA,
``rank_iterations.png`` (every adapter's rank after each iteration).

CLI: ``python -m roloraexp.figures ranks RESULTS.json [RESULTS.json ...] OUT.png``
(also ``omega``, ``memory``, and ``gradnorm NORMS.json OUT.png`` with NORMS = {name: norm});
``python -m roloraexp.figures summary RUN_DIR [RUN_DIR ...]``.

Adapter names are read, and layers and matrix types ordered, as the core's W&B heatmaps read them
(``roloraexp/heatmaps.py``), so a report's bars and a run's heatmaps agree.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..heatmaps import layer_labels, layer_order, parse_adapter_name, plt, type_order
from ..results import RESULTS_FILE, ResultError, read_file


def _as_list(results) -> list[dict]:
    return [results] if isinstance(results, dict) else list(results)


def _mean_per_adapter(results, key: str) -> tuple[dict[str, float], int]:
    """Mean of ``result[key][name]`` over the runs that have it (several seeds → one bar each)."""
    acc = defaultdict(list)
    runs = [r for r in _as_list(results) if r.get(key)]
    for r in runs:
        for name, v in r[key].items():
            if v is not None:
                acc[name].append(float(v))
    return {name: float(np.mean(vs)) for name, vs in acc.items()}, len(runs)


def _describe(results, n: int) -> str:
    r = _as_list(results)[0] if _as_list(results) else {}
    what = " ".join(str(r.get(k)) for k in ("method", "task", "model") if r.get(k))
    return f"{what} (mean of {n} run{'s' if n != 1 else ''})" if n > 1 else what


def _per_layer_bars(values: dict[str, float], out_png, ylabel: str, title: str, starred=None) -> Path:
    """Grouped bars: x = layer, one bar per matrix type; stars above the bars of `starred` names."""
    if not values:
        raise ValueError(f"nothing to plot for {out_png}")
    parsed = {name: parse_adapter_name(name) for name in values}
    layers = sorted({(s, layer) for s, layer, _ in parsed.values()}, key=layer_order)
    types = sorted({t for _, _, t in parsed.values()}, key=type_order)
    xpos = {sl: i for i, sl in enumerate(layers)}
    width = 0.8 / len(types)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(layers) * max(1, len(types)) ** 0.5 + 2), 3.6))
    for j, t in enumerate(types):
        xs, ys, stars = [], [], []
        for name, (s, layer, tt) in parsed.items():
            if tt == t:
                x = xpos[(s, layer)] - 0.4 + (j + 0.5) * width
                xs.append(x), ys.append(values[name])
                if starred and name in starred:
                    stars.append((x, values[name]))
        ax.bar(xs, ys, width=width, label=t)
        if stars:
            ax.scatter([x for x, _ in stars], [max(y, 0) for _, y in stars], marker="*", color="k", s=30, zorder=3)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layer_labels(layers))
    ax.set_xlabel("layer"), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    ax.legend(title="matrix", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out_png)


def _save(fig, out_png) -> Path:
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def rank_distribution(results, out_png, title: str | None = None) -> Path:
    """Final rank per layer and matrix type; `results` = one results dict or a list (seeds are averaged)."""
    ranks, n = _mean_per_adapter(results, "ranks")
    return _per_layer_bars(ranks, out_png, "final rank", title or f"Rank distribution: {_describe(results, n)}")


def omega_per_adapter(results, out_png, title: str | None = None) -> Path:
    """ω per adapter; the adapters kept (ω ≠ 0 in every run given) are starred, as in WeightLoRA Fig. 2."""
    omega, n = _mean_per_adapter(results, "omega")
    kept = {name for name in omega if all((r.get("omega") or {}).get(name, 0) for r in _as_list(results) if r.get("omega"))}
    return _per_layer_bars(omega, out_png, "ω", title or f"ω per adapter: {_describe(results, n)}", starred=kept)


def memory_vs_active(results_list, out_png, title: str | None = None) -> Path:
    """Peak GPU memory (GiB) against the number of active adapters: one line per method and task
    (memory depends on the task's batch and sequence length), through the mean over seeds."""
    pts = defaultdict(lambda: defaultdict(list))
    for r in _as_list(results_list):
        mem, active = r.get("peak_memory_bytes"), r.get("active_adapters")
        if isinstance(mem, (int, float)) and isinstance(active, (int, float)):
            pts[f"{r.get('method', '?')} {r.get('task', '')}".strip()][active].append(mem / 2**30)
    if not pts:
        raise ValueError("no run has both peak_memory_bytes and active_adapters (memory is measured on CUDA only)")
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for label, by_x in sorted(pts.items()):
        xs = sorted(by_x)
        line, = ax.plot(xs, [np.mean(by_x[x]) for x in xs], "-", label=label)
        ax.scatter([x for x in xs for _ in by_x[x]], [y for x in xs for y in by_x[x]], color=line.get_color(), s=12)
    ax.set_xlabel("active adapters"), ax.set_ylabel("peak GPU memory (GiB)")
    ax.set_title(title or "Peak memory vs active adapters", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out_png)


def grad_norm_per_layer(norms: dict[str, float], out_png, title: str | None = None) -> Path:
    """Gradient norm of each pretrained matrix (one backward pass), per layer and matrix type."""
    return _per_layer_bars({k: float(v) for k, v in norms.items()}, out_png, "gradient norm",
                           title or "Gradient norm per layer")


def _sort_adapters(names) -> list[str]:
    """Adapters in model order: stack, layer, matrix type."""
    def key(name):
        stack, layer, t = parse_adapter_name(name)
        return *layer_order((stack, layer)), *type_order(t)
    return sorted(names, key=key)


def _adapter_label(name: str, both_stacks: bool) -> str:
    stack, layer, t = parse_adapter_name(name)
    where = f"{stack[0]}{layer}" if both_stacks and stack else (str(layer) if layer >= 0 else "")
    return f"{where} {t}".strip()


def main_metric_name(metrics: dict) -> str:
    """The name the task gives its main metric (``main`` repeats one of the others)."""
    return next((k for k, v in metrics.items() if k != "main" and v == metrics.get("main")), "main")


def training_curve(result: dict, out_png, title: str | None = None) -> Path:
    """The run's :func:`training_figure`, saved."""
    return _save(training_figure(result, title), out_png)


def training_figure(result: dict, title: str | None = None):
    """One run against the optimizer step: the training loss (``train_curve``), the main evaluation
    metric (``history``, the best one starred) and the trainable parameters (``history``: ROLoRA's
    budget, WeightLoRA's disconnect, AdaLoRA's slice); dashed lines at phase ends (ROLoRA iterations,
    LoRA* / AdaLoRA* restarts)."""
    curve = result.get("train_curve") or []
    history = result.get("history") or []
    evals = [h for h in history if isinstance(h.get("metrics"), dict) and "main" in h["metrics"]]
    if not curve and not evals:
        raise ValueError("the run has no train_curve and no evaluation")
    fig, (loss_ax, metric_ax, params_ax) = plt.subplots(1, 3, figsize=(12.5, 3.4))
    if curve:
        loss_ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], ".-", color="C0")
    loss_ax.set_ylabel("training loss (mean since the last log)")
    if evals:
        xs, ys = [h["step"] for h in evals], [h["metrics"]["main"] for h in evals]
        metric_ax.plot(xs, ys, "o-", color="C1", ms=3)
        best = int(np.argmax(ys))
        metric_ax.scatter([xs[best]], [ys[best]], marker="*", s=120, color="k", zorder=3, label=f"best {ys[best]:.4f}")
        metric_ax.legend(fontsize=8, loc="best")
        metric_ax.set_ylabel(f"eval {main_metric_name(evals[-1]['metrics'])}")
    counted = [h for h in history if isinstance(h.get("trainable_params"), (int, float))]
    if counted:
        params_ax.step([h["step"] for h in counted], [h["trainable_params"] for h in counted], "o-", where="post",
                       color="C2", ms=3)
    params_ax.set_ylabel("trainable parameters")
    for ax in (loss_ax, metric_ax, params_ax):
        for h in history:
            if "phase_end" in h and h["step"] < result.get("steps", h["step"] + 1):
                ax.axvline(h["step"], color="0.6", ls="--", lw=0.8)
        ax.set_xlabel("optimizer step")
    fig.suptitle(title or f"Training: {_describe(result, 1)}", fontsize=10)
    return fig


def rank_iteration_table(result: dict) -> tuple[list[str], list[str], np.ndarray]:
    """ROLoRA's rank configurations from ``method_history``, in Algorithm 1's order: the start, then
    per iteration what SPARSIFY left (line 5) and the allocation the next iteration starts from
    (lines 6-8); the last iteration's sparsified ranks are the final ones. Returns (column labels,
    adapters in model order, ranks[adapter, column])."""
    records = sorted((h for h in result.get("method_history") or [] if "iteration" in h and "ranks" in h),
                     key=lambda h: h["iteration"])
    if len(records) < 2:
        raise ValueError("no per-iteration rank records (ROLoRA writes them)")
    columns = []
    for h in records:
        t = h["iteration"]
        if t == 0:
            columns.append(("start", h["ranks"]))
            continue
        columns.append((f"{t}: sparsified", h.get("sparsified", h["ranks"])))
        if t < records[-1]["iteration"]:
            columns.append((f"{t}: next", h["ranks"]))
    names = _sort_adapters(columns[0][1])
    grid = np.array([[col.get(n, 0) for _, col in columns] for n in names], dtype=float)
    return [label for label, _ in columns], names, grid


def rank_iterations(result: dict, out_png, title: str | None = None) -> Path:
    """ROLoRA: every adapter's rank at the start and after each iteration (:func:`rank_iteration_table`),
    one row per adapter, the mean rank under each column."""
    labels, names, grid = rank_iteration_table(result)
    both = len({parse_adapter_name(n)[0] for n in names}) > 1
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2.5, 0.28 * len(names) + 1.6))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    for i, j in np.ndindex(grid.shape):
        ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                color="w" if grid[i, j] < grid.max() * 0.6 else "k")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{label}\nmean {grid[:, j].mean():.2f}" for j, label in enumerate(labels)], fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([_adapter_label(n, both) for n in names], fontsize=7)
    ax.set_ylabel("adapter (layer, matrix)")
    fig.colorbar(image, ax=ax, label="rank")
    ax.set_title(title or f"Rank configuration per iteration: {_describe(result, 1)}", fontsize=10)
    return _save(fig, out_png)


def summary(run_dir) -> list[Path]:
    """Every figure one run can give, next to its results.json."""
    path = Path(run_dir)
    results_path = path if path.suffix == ".json" else path / RESULTS_FILE
    result = read_file(results_path)
    out = results_path.parent
    drawn = []
    for name, fn in (("training_curve", training_curve), ("ranks", rank_distribution), ("omega", omega_per_adapter),
                     ("rank_iterations", rank_iterations)):
        try:
            drawn.append(fn(result, out / f"{name}.png"))
        except ValueError:  # this run has nothing of that kind (no ω, one iteration, ...)
            continue
    return drawn


def _read_json(path: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"figures: cannot read {path}: {e}")


def _read_result(path: str) -> dict:
    try:
        return read_file(Path(path))
    except ResultError as e:
        sys.exit(f"figures: cannot read {e}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m roloraexp.figures", description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["ranks", "omega", "memory", "gradnorm", "summary"])
    p.add_argument("inputs", nargs="+", help="results.json file(s) (gradnorm: one JSON {name: norm}), then OUT.png; "
                                             "summary: run folders (figures go next to their results.json)")
    a = p.parse_args(argv)
    if a.kind == "summary":
        return _summaries(a.inputs)
    if len(a.inputs) < 2:
        p.error("give at least one input file and the output PNG")
    *inputs, out = a.inputs
    data = [_read_json(f) if a.kind == "gradnorm" else _read_result(f) for f in inputs]
    try:
        if a.kind == "gradnorm":
            path = grad_norm_per_layer(data[0], out)
        else:
            path = {"ranks": rank_distribution, "omega": omega_per_adapter, "memory": memory_vs_active}[a.kind](data, out)
    except ValueError as e:
        print(f"figures: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _summaries(run_dirs) -> int:
    status = 0
    for run_dir in run_dirs:
        try:
            drawn = summary(run_dir)
        except (OSError, ValueError) as e:
            print(f"figures: cannot read the run in {run_dir}: {e}", file=sys.stderr)
            status = 1
            continue
        print("\n".join(map(str, drawn)) if drawn else f"figures: {run_dir}: nothing to draw")
    return status


if __name__ == "__main__":
    sys.exit(main())
