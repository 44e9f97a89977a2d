"""Merging an additive adapter into its frozen base layer: ``W ← W + ΔW`` and back.

Shared by every adapter whose output is ``base(x) + ΔW x`` (LowRankLinear, VeRALinear); DoRA's
rescaled weight merges differently (``adapters/dora.py``).
"""
from __future__ import annotations

import torch


class MergeByDelta:
    """Needs ``self.base`` (an nn.Linear), ``self.merged`` and ``self.delta_weight()``."""

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False
