"""WeightLoRA+ (``weightlora.txt`` §3.4): WeightLoRA, then the kept adapters grow into the budget
the disconnected ones freed.

Phase 1 is WeightLoRA for T steps. At T the unneeded adapters are disconnected and the K kept
ones grow so that the trainable adapter parameters equal LoRA's at rank r over all n adapters:
``Σ_kept r_i (d_in,i + d_out,i) ≤ r Σ_all (d_in + d_out)``. Every kept adapter gets the same
target rank ``⌊budget / Σ_kept cost⌋`` (r·n/K when all matrices share a shape); the rounding
leftover goes one component at a time to the adapters with the largest |ω| while it fits, so the
shortfall is under one rank unit per kept adapter. No adapter grows past full rank
min(d_in, d_out) (the paper does not say; beyond it components are redundant, and QR cannot find
new orthogonal directions): its share goes to the others, and only when every kept adapter is at
full rank (tiny K) does the total stay below LoRA's, with a warning.

Extension (both keep ΔW exactly; ``LowRankLinear.grow``): ``gaussian_zero`` (the paper's first
option: Gaussian columns for B, zero rows for A; Adam's moments and step counts of the old
components carry over) or ``qr`` (B = QR, B ← [Q, (I − QQᵀ)N], A ← [RA; 0]; the old components are
re-parametrised, so their Adam state starts afresh). The new components start a fresh Adam: the
trainer's optimizer (``ComponentAdamW``) keeps a step count per component of a grown tensor, so
they get their own bias correction instead of inheriting the tensor's T steps (with torch's one
step per tensor their first updates would be ≈ 3 lr; the authors' ``FatAdamW`` restarts the
whole tensor's state at each extension instead).

``progressive: true`` is the authors' code's variant: K halves (n/2, n/4, ... down to k) at
evenly spaced steps, the last one at T, and each time the survivors grow into the same LoRA budget
(so their ranks roughly double); ω keeps training between the halvings and is fixed at T.
"""
from __future__ import annotations

import logging

import torch

from ..adapters import Remap
from ..errors import ConfigError
from .base import TrainContext
from .weightlora import WeightLoRA

log = logging.getLogger(__name__)


class WeightLoRAPlus(WeightLoRA):
    trains_after_choice = True  # phase 2 trains the grown adapters: T must leave it steps

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.extend_init = cfg.get("extend_init", "gaussian_zero")
        if self.extend_init not in ("gaussian_zero", "qr"):
            raise ConfigError(f"method.extend_init must be gaussian_zero or qr, got {self.extend_init!r}")
        self.progressive = bool(cfg.get("progressive", False))
        self.budget = 0  # LoRA's trainable adapter parameters at rank r over all n adapters
        self._generator = None

    def prepare(self, model, target_names) -> None:
        super().prepare(model, target_names)
        self.budget = int(self.cfg.rank) * sum(a.rank_cost() for a in self.adapters.values())

    def selection_events(self, select_steps: int) -> list[tuple[int, int]]:
        if not self.progressive:
            return super().selection_events(select_steps)
        ks, k = [], len(self.adapters)
        while k > self.k:
            k = max(self.k, k // 2)
            ks.append(k)
        ks = ks or [self.k]  # k = n: one (trivial) choice at T
        if select_steps < len(ks):
            raise ConfigError(f"progressive WeightLoRA+ halves K {len(ks)} times before step T; "
                              f"method.select_steps gives T={select_steps} < {len(ks)}")
        return [(round((j + 1) * select_steps / len(ks)), kj) for j, kj in enumerate(ks)]

    # ---------------------------------------------------------------- growth
    def allocate(self, kept: list[str]) -> dict[str, int]:
        """New ranks for the kept adapters: the LoRA budget shared out at one common rank, water-filled
        so that no adapter goes past full rank min(d_in, d_out) (more components add nothing there:
        what a full-rank adapter cannot take goes to the others). Never shrinks an adapter."""
        cost = {n: self.adapters[n].rank_cost() for n in kept}
        cap = {n: max(self.adapters[n].rank, min(self.adapters[n].in_features, self.adapters[n].out_features))
               for n in kept}
        capped, target = set(), 0
        while len(capped) < len(kept):
            free = [n for n in kept if n not in capped]
            left = self.budget - sum(cap[n] * cost[n] for n in capped)
            target = max(left, 0) // sum(cost[n] for n in free)
            full = [n for n in free if cap[n] <= target]
            if not full:
                break
            capped.update(full)
        ranks = {n: cap[n] if n in capped else max(self.adapters[n].rank, target) for n in kept}
        # The rounding leftover: one more component each, largest |ω| first, while it fits.
        left = self.budget - sum(ranks[n] * cost[n] for n in kept)
        for n in sorted(kept, key=lambda n: -abs(self.adapters[n].omega.item())):  # stable: model order on ties
            if ranks[n] < cap[n] and cost[n] <= left:
                ranks[n] += 1
                left -= cost[n]
        if left >= sum(cost.values()):
            log.warning("weightlora_plus: %d kept adapters at full rank hold only %d of LoRA's %d adapter parameters",
                        len(kept), self.budget - left, self.budget)
        return ranks

    def after_choice(self, ctx: TrainContext, kept: list[str]) -> list[Remap]:
        remaps = []
        for n, r in self.allocate(kept).items():
            a = self.adapters[n]
            if self._generator is None:  # one seeded stream for every extension of the run
                self._generator = torch.Generator(device=a.lora_A.device).manual_seed(self.seed)
            remaps += a.grow(r - a.rank, self.extend_init, generator=self._generator)
        return remaps

    def budget_shortfall(self) -> int:
        """How far the kept adapters' A and B are below the LoRA budget (for checks and reports)."""
        used = sum(a.rank * a.rank_cost() for a in self.adapters.values())
        return self.budget - used

    def state(self) -> dict:
        out = super().state()
        if self.kept is not None:
            out["lora_budget"] = self.budget
        return out

