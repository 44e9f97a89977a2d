"""The papers' "*" baselines (LoRA*, AdaLoRA*): T runs, each starting from the best checkpoint so far.

A mixin: ``class LoRAIter(Iterated, LoRA)``. Each phase is a full run (same epochs / steps,
fresh optimizer and learning-rate schedule); phases after the first load the trainable weights
of the best evaluation seen so far, whatever its rank configuration.
"""
from __future__ import annotations

from ..checkpoint import load_trainable_state
from ..errors import ConfigError, is_int
from .base import TrainContext


def check_iterations(cfg) -> int:
    """``method.iterations`` (T, default 3), an integer >= 1, or one line saying what it got."""
    t = cfg.get("iterations", 3)
    if not is_int(t) or t < 1:
        raise ConfigError(f"method.iterations (T) must be an integer >= 1, got {t!r}")
    return t


class Iterated:
    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        check_iterations(cfg)

    @property
    def num_phases(self) -> int:
        return int(self.cfg.get("iterations", 3))

    def on_phase_start(self, ctx: TrainContext) -> None:
        if ctx.phase > 0 and ctx.best_state is not None:
            load_trainable_state(ctx.model, ctx.best_state)
            self.history.append({"phase": ctx.phase, "restarted_from_best": True, "ranks": self.ranks()})
        super().on_phase_start(ctx)
