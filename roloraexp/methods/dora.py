"""DoRA (Liu et al. 2024, "Weight-Decomposed Low-Rank Adaptation"): ``W' = m · (W0 + s·B A) / ‖W0 + s·B A‖_c``.

LoRA's factors (rank ``method.rank``, scaling ``alpha / r``, or ``alpha / √r`` with
``method.rslora``) give the direction update; a magnitude vector m (one entry per output unit,
starting at ``‖W0‖_c``) trains with them. The column norm is detached from the graph (paper §4.3),
and dropout is applied as PEFT's ``LoraConfig(use_dora=True)`` applies it (``adapters/dora.py``).
Trainable: LoRA's ``r (d_in + d_out)`` + ``d_out`` per adapter.

Learning rate: the DoRA paper compares DoRA with LoRA under LoRA's configuration, so
DoRA trains at ``trainer.lr`` like LoRA, and ``method.group_lr`` works as for every method.
"""
from __future__ import annotations

from torch import nn

from ..adapters.dora import DoRALinear
from .base import Method


def magnitude_stats(adapter) -> dict[str, float]:
    """DoRA's per-adapter scalars: ‖m‖ and the norm of the direction update ‖ΔV‖_F."""
    return {"dora/magnitude_norm": adapter.magnitude.detach().norm().item(),
            "dora/delta_norm": adapter.delta_weight().detach().norm().item()}


class DoRA(Method):
    def make_adapter(self, name: str, linear: nn.Linear) -> DoRALinear:
        return DoRALinear(linear, self.initial_rank(name, linear), alpha=self.cfg.alpha,
                          dropout=self.cfg.get("dropout", 0.0), rslora=self.cfg.get("rslora", False))

    def state(self) -> dict:
        return {**super().state(), "adapter_stats": {n: magnitude_stats(a) for n, a in self.adapters.items()}}
