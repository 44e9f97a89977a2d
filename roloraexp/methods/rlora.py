"""RLoRA (``weightlora.txt`` §4.4, Table 6): WeightLoRA's ablation with the K adapters chosen at random.

"Exactly the same method as WeightLoRA, except that we do not disable the adapters by an optimized
weights ω, but randomly." The paper does not say when; the authors' code (``apply_rand_weight_lora``)
draws the K adapters before training, freezes ω and zeroes it for the others, so the random
adapters train from the first step. We follow the code: ``select_steps: 0`` (the default) chooses
and disconnects before the first step, so memory is low from the start. ``select_steps: T > 0``
instead trains all n adapters (ω fixed at 1) for T steps and disconnects the random n − K at T,
WeightLoRA's schedule with a random choice.

ω is never trained: it stays 1 for the kept adapters and becomes 0 for the disconnected ones. The
choice is ``randperm(n)`` from a generator seeded with the run's seed alone, so it depends only on
the seed (and on the adapters, listed in model order).
"""
from __future__ import annotations

import torch

from .base import TrainContext
from .weightlora import WeightLoRA


class RLoRA(WeightLoRA):
    min_select_steps = 0
    trains_omega = False

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.random_choice: list[str] = []

    def prepare(self, model, target_names) -> None:
        super().prepare(model, target_names)
        for a in self.adapters.values():
            a.omega.requires_grad_(False)  # ω = 1: the choice is random, not learned
        names = list(self.adapters)
        picks = torch.randperm(len(names), generator=torch.Generator().manual_seed(self.seed))[: self.k]
        self.random_choice = [names[i] for i in sorted(picks.tolist())]

    def omega_step(self, ctx: TrainContext, k: int, final: bool) -> None:
        """No ω training: the choice is random and ω stays 1."""

    def choose(self, names: list[str], k: int) -> list[str]:
        return [n for n in self.random_choice if n in names]
