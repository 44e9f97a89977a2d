"""ROLoRA (Algorithm 1): iterative Frank-Wolfe rank allocation under a strict parameter budget.

Iteration t = one training phase in which SPARSIFY (AdaLoRA or SoRA, ``sparsifier=``) prunes
rank components, then at the phase end:

    s  ← sparsified ranks (tensors really sliced)                       line 5
    s  ← round(s · R / mean(s))        spend the whole LoRA-R budget    line 6
    r  ← (1 − γ) r + γ s,  γ = 1/t     Frank-Wolfe step, still in budget line 7
    EXTEND to r: grow with zero-product components (ΔW unchanged), or keep the most important
    μ  ← SCHEDULE(μ, t)                                                 line 9

The budget is R everywhere with its gates, exactly: Algorithm 1 line 2 starts every adapter at
r_i = R and counts the budget in ranks (Σ r_i ≤ K·R); in parameters a component of adapter i costs
``d_in + d_out + 1`` (its gate entry), so the budget is ``Σ_i R (d_in,i + d_out,i + 1)``, LoRA-R
plus K·R gate entries. At no step do the trainable parameters exceed it: the tensors only ever
shrink inside a phase and are only grown to an allocation inside the budget.

The last iteration returns the sparsified adapters. ``ranks()`` counts what is alive: during a
phase the sparsifier's surviving components (a masked or thresholded component counts as
removed before its tensors are sliced at the phase end), so every evaluation in ``history`` and
``best_ranks`` in results.json (the ranks at the best evaluation, the run the tables report) are
honest; the paper's Table 4 reports the output adapters' mean rank.
"""
from __future__ import annotations

import torch
from hydra.utils import get_class
from torch import nn

from ..errors import ConfigError
from .base import Method, TrainContext
from .budget import gated_budget, interpolate, rescale, round_to_budget
from .iterated import check_iterations
from .schedules import relief

SPARSIFIERS = {"adalora": "roloraexp.methods.adalora.AdaLoRASparsifier",
               "sora": "roloraexp.methods.sora.SoRASparsifier"}


class ROLoRA(Method):
    uses_gate = True  # the generic form B diag(g) A: AdaLoRA's Λ or SoRA's gate
    sparsifiers = tuple(SPARSIFIERS)
    checkpoint_attrs = Method.checkpoint_attrs + ("sparsifier", "sparsifying")

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        check_iterations(cfg)
        name = sparsifier.name
        if not 0 < cfg.get("sparsify_to", 0.5) <= 1:
            raise ConfigError(f"method.sparsify_to must be in (0, 1], got {cfg.get('sparsify_to')}")
        relief(schedule, 1, 1)  # validates the schedule name now, not after an epoch
        self.sparsifier = get_class(SPARSIFIERS[name])(sparsifier)
        # Adapters (and the components EXTEND adds) start like LoRA's by default: B = 0, g = 1,
        # so ΔW = 0 and the gradient reaches B at once (the paper: g ≡ 1 *is* LoRA; METHODS.md:
        # added components initialised like LoRA). `init: sparsifier` uses the sparsifier's own
        # (AdaLoRA: A, B ~ N(0, 0.02), Λ = 0), which learns far more slowly in short runs.
        init = cfg.get("init", "lora")
        if init not in ("lora", "sparsifier"):
            raise ConfigError(f"method.init must be lora or sparsifier, got {init!r}")
        self.init = init
        self.adapter_init = self.sparsifier.adapter_init if init == "sparsifier" else "lora"
        self.budget = 0
        self.sparsifying = False  # inside a phase: ranks() counts the sparsifier's survivors

    @property
    def num_phases(self) -> int:
        return int(self.cfg.get("iterations", 3))

    # ------------------------------------------------------------------ setup
    def prepare(self, model: nn.Module, target_names: list[str]) -> None:
        linears = [model.get_submodule(n) for n in target_names]
        self.budget = gated_budget([(m.in_features, m.out_features) for m in linears], int(self.cfg.rank))
        super().prepare(model, target_names)  # line 2: r_i = R for every adapter, exactly the budget
        if self.init == "sparsifier":
            self.sparsifier.init_adapters(self.adapters, torch.Generator().manual_seed(self.seed))
        self.history.append({"iteration": 0, "ranks": self.ranks(), "budget": self.budget,
                             "spent": self.spent()})

    def spent(self) -> int:
        return sum(a.rank * a.rank_cost() for a in self.adapters.values())

    # ------------------------------------------------------------------ hooks
    def on_phase_start(self, ctx: TrainContext) -> None:
        t, T = ctx.phase + 1, self.num_phases
        f = relief(self.schedule_cfg, t, T)
        current = sum(a.rank for a in self.adapters.values())
        target = min(current, round(self.cfg.rank * self.cfg.get("sparsify_to", 0.5) * f * len(self.adapters)))
        self.sparsifier.start(self.adapters, ctx.phase_steps, target, aggressiveness=1 / f)
        self.sparsifying = True
        ctx.log({"rolora/iteration": t, "rolora/sparsify_target": target, "rolora/relief": f})

    def extra_loss(self):
        return self.sparsifier.extra_loss()

    def after_optimizer_step(self, ctx: TrainContext):
        self.sparsifier.step(ctx)
        return []  # masks only: tensors change at phase ends, when the loop builds a new optimizer

    def on_phase_end(self, ctx: TrainContext) -> None:
        t, names = ctx.phase + 1, list(self.adapters)
        start_ranks = [self.adapters[n].rank for n in names]
        kept = self.sparsifier.finish()  # most important first
        for n in names:
            self.adapters[n].keep(kept[n])
        self.sparsifying = False
        s = [self.adapters[n].rank for n in names]
        record = {"iteration": t, "step": ctx.step, "start_ranks": dict(zip(names, start_ranks)),
                  "sparsified": dict(zip(names, s))}
        if t < self.num_phases:
            costs = [self.adapters[n].rank_cost() for n in names]
            s_scaled = round_to_budget(rescale(s, costs, self.budget), costs, self.budget)
            r = round_to_budget(interpolate(start_ranks, s_scaled, 1 / t), costs, self.budget)
            for n, target in zip(names, r):
                self._extend(self.adapters[n], target)
            record.update(rescaled=dict(zip(names, s_scaled)))
        record.update(ranks=self.ranks(), spent=self.spent(), budget=self.budget)
        self.history.append(record)
        mean = sum(record["ranks"].values()) / max(1, len(names))
        ctx.log({"rolora/mean_rank": mean, "rolora/spent_fraction": record["spent"] / self.budget,
                 **{f"ranks/{n}": r for n, r in record["ranks"].items()}})  # per adapter after every iteration

    def _extend(self, adapter, target: int) -> None:
        """EXTEND: keep ΔW; new components start like the sparsifier's own (zero product)."""
        if target > adapter.rank:
            adapter.grow(target - adapter.rank, init=self.adapter_init)
        elif target < adapter.rank:
            adapter.keep(range(target))  # components are in importance order after the slice

    def ranks(self) -> dict[str, int]:
        """Alive components: during a phase the sparsifier's survivors (masked = removed), after
        the phase end's slice the tensors' ranks."""
        return self.sparsifier.effective_ranks() if self.sparsifying else super().ranks()

    def state(self) -> dict:
        out = super().state()
        out["budget"] = {"params": self.budget, "spent": self.spent()}
        return out
