"""Experiment tracking: W&B (online / offline / disabled). A run never needs a W&B account:
offline runs write under the run's folder and sync later with ``wandb sync``.

What a run logs is what the dashboards (``python -m roloraexp.dashboard``) read; the key names
below are theirs too:

- every evaluation and phase end (``log_state``): ``ranks/<adapter>``, ``omega/<adapter>``,
  ``<stat>/<adapter>``, ``ranks/mean``, ``adapters/active``, ``budget/<what>`` (ROLoRA's parameter
  budget and what the ranks spend of it), and the layer × matrix-type heatmaps
  ``heatmaps/ranks`` / ``heatmaps/omega`` (``heatmaps.py``);
- at the start: config ``dashboard.<table>.{row,cell}``, the paper-table cells the run fills
  (``tables/query.py``); at the end (``summarize``): ``final/*``, ``best/*``, the cells' values
  ``table/<table>/<column>``, trainable parameters and peak GPU memory.

(Named tracking.py, not logging.py as DESIGN.md sketched, so it never shadows the stdlib module.)"""
from __future__ import annotations

import io
import os
from pathlib import Path

from omegaconf import OmegaConf

from .tables.query import CONFIG_KEY, cell_values, cells_of, config_entry, run_identity

HEATMAPS = {"ranks": "heatmaps/ranks", "omega": "heatmaps/omega"}   # state key -> W&B image key
LOGGER_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "logger" / "offline.yaml"


def default_project() -> str:
    """The W&B project runs log to unless ``logger.project`` says otherwise: the dashboards and the
    report's upload default to it, so all three meet in one project."""
    return OmegaConf.load(LOGGER_DEFAULTS).get("project") or "roloraexp"


def default_entity(online: bool) -> str | None:
    """``logger.entity``, else ``WANDB_ENTITY``, else (``online``: asks the server) the logged-in
    user's default entity, the one ``wandb.init(entity=None)`` logs to; None when none is known."""
    entity = OmegaConf.load(LOGGER_DEFAULTS).get("entity") or os.environ.get("WANDB_ENTITY")
    if entity or not online:
        return entity
    import wandb

    try:
        return wandb.Api().default_entity
    except wandb.errors.Error:  # not logged in, or no server
        return None


class Tracker:
    def __init__(self, logger_cfg, cfg, output_dir: Path, name: str, resume_id: str | None = None, enabled: bool = True):
        """``resume_id``: the W&B run a resumed run continues (``resume="allow"``); ``enabled=False``:
        log nothing (the other processes of a data-parallel run: only the main one writes)."""
        self.mode = logger_cfg.get("mode", "offline") if enabled else "disabled"
        if self.mode not in ("online", "offline", "disabled"):
            from .errors import ConfigError

            raise ConfigError(f"logger.mode must be online, offline or disabled, got {self.mode!r}")
        self.run, self.cells, self._drawn = None, {}, {}
        if self.mode == "disabled":
            return
        import wandb  # imported only when used: it is slow to import

        os.environ.setdefault("WANDB_SILENT", "true")
        resolved = OmegaConf.to_container(cfg, resolve=True)
        self.cells = cells_of(run_identity(resolved))
        config = {**resolved, CONFIG_KEY: config_entry(self.cells)}
        try:
            self.run = wandb.init(
                project=logger_cfg.get("project", "roloraexp"), entity=logger_cfg.get("entity"), mode=self.mode,
                dir=str(output_dir), name=name, group=logger_cfg.get("group"), tags=list(logger_cfg.get("tags") or []),
                job_type=cfg.method.name, config=config, reinit="finish_previous",
                id=resume_id, resume="allow" if resume_id else None,
            )
        except (wandb.errors.UsageError, wandb.errors.CommError, wandb.errors.AuthenticationError) as e:
            from .errors import ConfigError

            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"logger={self.mode}: W&B did not start ({first}); run `wandb login` or set "
                              f"WANDB_API_KEY, or use logger=offline (wandb sync uploads it later)") from e

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_state(self, state: dict, step: int) -> None:
        """A method's ``state()``: per-adapter scalars (the exact numbers), their summary, the
        parameter budget, and the heatmaps that show all adapters at once."""
        flat = {}
        ranks = state.get("ranks", {})
        for name, r in ranks.items():
            flat[f"ranks/{name}"] = r
        if ranks:
            flat["ranks/mean"] = sum(ranks.values()) / len(ranks)
            flat["adapters/active"] = sum(1 for r in ranks.values() if r > 0)
        for name, w in state.get("omega", {}).items():
            flat[f"omega/{name}"] = w
        # Other per-adapter scalars a method reports (VeRA's mean |d|, DoRA's ‖m‖, ...):
        # state["adapter_stats"] = {adapter: {stat: value}} -> "<stat>/<adapter>".
        for name, stats in state.get("adapter_stats", {}).items():
            for stat, value in stats.items():
                flat[f"{stat}/{name}"] = value
        # Counts a method keeps of integer outcomes (DyLoRA's sampled ranks):
        # state["histograms"] = {name: {value: count}} -> one W&B histogram each, a bin per value.
        for name, counts in state.get("histograms", {}).items():
            if counts and self.run is not None:
                flat[name] = self._histogram(counts)
        # ROLoRA: {"params": LoRA-R budget, "spent": what the current ranks use}: the budget line.
        budget = state.get("budget")
        if isinstance(budget, dict):
            flat.update({f"budget/{k}": v for k, v in budget.items() if isinstance(v, (int, float))})
        if self.run is not None:
            flat.update(self._heatmaps(state, step))
        self.log(flat, step)

    @staticmethod
    def _histogram(counts: dict):
        import numpy as np
        import wandb

        values = sorted(int(v) for v in counts)
        lo, hi = values[0], values[-1]
        bins = np.zeros(hi - lo + 1)
        for v, n in counts.items():
            bins[int(v) - lo] = n
        return wandb.Histogram(np_histogram=(bins, np.arange(lo - 0.5, hi + 1.0)))

    def _heatmaps(self, state: dict, step: int) -> dict:
        """One picture per kind; not drawn again for the same values at the same step (a
        single-phase run's last evaluation is also its phase end). Different values at the same
        step (ROLoRA's ranks after a phase end's EXTEND) replace the evaluation's picture in W&B,
        as they replace its ``ranks/<adapter>`` scalars."""
        import wandb
        from PIL import Image

        from .heatmaps import heatmap_png

        images = {}
        for what, key in HEATMAPS.items():
            values = dict(state.get(what) or {})
            if not values or self._drawn.get(key) == (step, values):
                continue
            self._drawn[key] = (step, values)
            png, grid = heatmap_png(values, f"{what} at step {step}", integer=what == "ranks")
            caption = f"{what} at step {step}: {grid.shape[0]} layers × {grid.shape[1]} matrix types ({', '.join(grid.cols)})"
            images[key] = wandb.Image(Image.open(io.BytesIO(png)), caption=caption)
        return images

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def summarize(self, result: dict) -> None:
        """The run's end, as the dashboards read it: final and best metrics, the paper-table cells
        it fills, trainable parameters, peak GPU memory (CUDA only; WeightLoRA's peak before the
        disconnect beside it)."""
        if self.run is None:
            return
        values = {"final/" + k: v for k, v in (result.get("metrics") or {}).items()}
        values.update({"best/" + k: v for k, v in (result.get("best_metrics") or {}).items()})
        values.update(cell_values(self.cells, result))
        for key in ("trainable_params", "trainable_params_peak", "active_adapters", "wall_time_s"):
            if isinstance(result.get(key), (int, float)):
                values[key] = result[key]
        peaks = {"peak_memory_gib": result.get("peak_memory_bytes"),
                 "peak_memory_gib_before_disconnect": (result.get("selection") or {}).get("peak_memory_bytes_before")}
        values.update({k: v / 2**30 for k, v in peaks.items() if isinstance(v, (int, float))})
        self.summary(values)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
