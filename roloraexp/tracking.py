"""Experiment tracking: W&B (online / offline / disabled). A run never needs a W&B account:
offline runs write under the run's folder and sync later with ``wandb sync``.

(Named tracking.py, not logging.py as DESIGN.md sketched, so it never shadows the stdlib module.)"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


class Tracker:
    def __init__(self, logger_cfg, cfg, output_dir: Path, name: str, resume_id: str | None = None, enabled: bool = True):
        """``resume_id``: the W&B run a resumed run continues (``resume="allow"``); ``enabled=False``:
        log nothing (the other processes of a data-parallel run: only the main one writes)."""
        self.mode = logger_cfg.get("mode", "offline") if enabled else "disabled"
        if self.mode not in ("online", "offline", "disabled"):
            from .errors import ConfigError

            raise ConfigError(f"logger.mode must be online, offline or disabled, got {self.mode!r}")
        self.run = None
        if self.mode == "disabled":
            return
        import wandb  # imported only when used: it is slow to import

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=logger_cfg.get("project", "roloraexp"), entity=logger_cfg.get("entity"), mode=self.mode,
            dir=str(output_dir), name=name, group=logger_cfg.get("group"), tags=list(logger_cfg.get("tags") or []),
            job_type=cfg.method.name, config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous",
            id=resume_id, resume="allow" if resume_id else None,
        )

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_state(self, state: dict, step: int) -> None:
        """Per-adapter ranks and ω as scalars (one chart each in the dashboard) plus their summary."""
        flat = {}
        ranks = state.get("ranks", {})
        for name, r in ranks.items():
            flat[f"ranks/{name}"] = r
        if ranks:
            flat["ranks/mean"] = sum(ranks.values()) / len(ranks)
        for name, w in state.get("omega", {}).items():
            flat[f"omega/{name}"] = w
        # Other per-adapter scalars a method reports (VeRA's mean |d|, DoRA's ‖m‖, ...):
        # state["adapter_stats"] = {adapter: {stat: value}} -> "<stat>/<adapter>".
        for name, stats in state.get("adapter_stats", {}).items():
            for stat, value in stats.items():
                flat[f"{stat}/{name}"] = value
        self.log(flat, step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
