"""ROLoRA's SPARSIFY operator: shrinks the ranks of gated adapters (``B diag(g) A``) over one
training phase. AdaLoRA (methods/adalora.py) and SoRA (methods/sora.py) implement it; the
stand-alone ``method=adalora`` / ``method=sora`` and ``method=rolora`` all drive it the same way:

    sparsifier.start(adapters, phase_steps, target_total)   at the phase start (after any resize)
    loss += sparsifier.extra_loss()                         every forward (AdaLoRA's orthogonality)
    sparsifier.step(ctx)                                    after every optimizer step (grads present)
    kept = sparsifier.finish()                              at the phase end: which components survive

It only masks / thresholds during the phase; the caller slices the tensors with the indices
``finish`` returns (``LowRankLinear.keep``), which is what makes a budget real.
"""
from __future__ import annotations

import torch

from ..adapters import LowRankLinear
from .base import TrainContext, _attrs_state, _load_attrs_state


class Sparsifier:
    adapter_init = "lora"  # how its adapters (and the components ROLoRA's EXTEND adds) start
    checkpoint_attrs: tuple[str, ...] = ()  # what a checkpoint saves (see Method.checkpoint_attrs)

    def __init__(self, cfg):
        self.cfg = cfg
        self.adapters: dict[str, LowRankLinear] = {}

    def start(self, adapters: dict[str, LowRankLinear], phase_steps: int, target_total: int | None,
              aggressiveness: float = 1.0) -> None:
        """Begin a phase. ``target_total``: rank components to keep over all adapters at the end
        (rank-budget sparsifiers: AdaLoRA's b_T); ``aggressiveness`` scales a threshold-based
        sparsifier (SoRA's ξ) instead. Importance statistics restart here."""
        self.adapters = adapters

    def init_adapters(self, adapters: dict[str, LowRankLinear], generator: torch.Generator) -> None:
        """After the adapters are created: a sparsifier whose start differs from ``adapter_init``
        (SoRA's random gates) sets it here; the rest start as ``adapter_init`` made them."""

    def extra_loss(self) -> torch.Tensor | None:
        return None

    def effective_ranks(self) -> dict[str, int]:
        """Rank components still alive during a phase: the nonzero gates (a masked or thresholded
        component counts as removed before its tensors are sliced at the phase end)."""
        return {n: int(torch.count_nonzero(a.gate)) for n, a in self.adapters.items()}

    def state_dict(self) -> dict:
        return _attrs_state(self, self.checkpoint_attrs)

    def load_state_dict(self, state: dict) -> None:
        _load_attrs_state(self, self.checkpoint_attrs, state)

    def step(self, ctx: TrainContext) -> None:
        """After each optimizer step: update importance, mask or threshold."""

    def scores(self) -> dict[str, torch.Tensor]:
        """Importance of each rank component, per adapter (higher = keep first)."""
        raise TypeError(f"{type(self).__name__} must define scores()")

    def finish(self) -> dict[str, torch.Tensor]:
        """Indices of the components that survive, per adapter, most important first."""
        raise TypeError(f"{type(self).__name__} must define finish()")
