"""DyLoRA (Valipour et al. 2023, Algorithm 1 in the slides): one LoRA model trained for every rank
at once, then scored at each rank without retraining ("search-free").

* Each optimizer step samples b uniformly from [``method.r_min``, ``method.r_max``] (a generator
  seeded from the run's seed, in ``on_step_start``; its state is checkpointed) and every adapter's
  forward uses its first b components with scaling ``alpha / b``
  (:class:`~roloraexp.adapters.dynamic_rank.DynamicRankLinear`).
* The step updates only what Algorithm 1 updates: the first b components, or with
  ``method.frozen=true`` only component b (the lower ones are detached in the forward, as in the
  reference). AdamW would still move the other components through its moment decay and weight
  decay, so ``before_optimizer_step`` saves them and their optimizer state and
  ``after_optimizer_step`` puts both back: they are untouched, bit for bit. Each component keeps
  its own Adam step count too (``ComponentAdamW``, as for WeightLoRA+'s grown components), so a
  component updated on few of the steps gets the bias correction of its own updates (with one count
  per tensor, a component first updated at step 2000 would move ≈ 3 lr, not lr). (The reference,
  huawei-noah/Efficient-NLP ``DyLoRA/loralib``, only detaches and lets its AdamW move them; its
  ``run_glue.py`` draws b with ``torch.randint(0, r_max)`` in an ``on_step_begin`` callback, always
  with ``frozen=True``, and scores every rank once, after training.)
* Evaluation (``evaluate``) scores the model at every rank of ``method.eval_ranks`` (default
  1..r_max) and returns the metrics at r_max, so ``metrics`` / ``best_metrics`` are the r_max model's.
  results.json gets ``metrics_by_rank`` (the last evaluation, ``{"1": {...}, ...}``) and
  ``best_metrics_by_rank`` (all ranks of the evaluation that was best at r_max, the one
  ``best_metrics`` comes from), and ``histograms["dylora/sampled_rank"]`` (how often each b was drawn),
  which W&B shows as a histogram.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..adapters.adamw import step_per_component
from ..adapters.dynamic_rank import DynamicRankLinear
from ..errors import ConfigError
from .base import Method, TrainContext

RANK_HISTOGRAM = "dylora/sampled_rank"


class DyLoRA(Method):
    varying_graph = True  # components past the sampled rank get no gradient that step
    checkpoint_attrs = Method.checkpoint_attrs + ("sampler", "rank_counts", "current_rank", "metrics_by_rank",
                                                  "best_metrics_by_rank", "best_main")

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.r_min, self.r_max = int(cfg.r_min), int(cfg.r_max)
        if self.r_max != int(cfg.rank):
            raise ConfigError(f"method.rank ({cfg.rank}) must equal method.r_max ({cfg.r_max}): set method.r_max, "
                              f"the adapters' rank follows it")
        if not 1 <= self.r_min <= self.r_max:
            raise ConfigError(f"method.r_min must be in [1, r_max = {self.r_max}], got {self.r_min}")
        ranks = cfg.get("eval_ranks")
        ranks = list(range(1, self.r_max + 1)) if ranks is None else [int(r) for r in ranks]
        bad = [r for r in ranks if not 1 <= r <= self.r_max]
        if bad:
            raise ConfigError(f"method.eval_ranks must lie in [1, r_max = {self.r_max}], got {bad}")
        self.eval_ranks = sorted(set(ranks) | {self.r_max})  # r_max gives the main metric
        self.frozen = bool(cfg.get("frozen", False))
        self.sampler = torch.Generator().manual_seed(int(seed))  # checkpointed: a resumed run draws the same ranks
        self.rank_counts: dict[int, int] = {}
        self.current_rank = self.r_max
        self.metrics_by_rank: dict[str, dict] = {}
        self.best_metrics_by_rank: dict[str, dict] = {}
        self.best_main = float("-inf")
        self._saved: list = []
        self._untouched_idx: dict[tuple, torch.Tensor | None] = {}

    def make_adapter(self, name: str, linear: nn.Linear) -> DynamicRankLinear:
        full = min(linear.in_features, linear.out_features)
        if self.r_max > full:
            raise ConfigError(f"method.r_max={self.r_max} exceeds what the {linear.out_features} x {linear.in_features} "
                              f"matrix {name} allows (at most {full})")
        return DynamicRankLinear(linear, self.r_max, alpha=self.cfg.alpha, dropout=self.cfg.get("dropout", 0.0))

    def set_rank(self, b: int, frozen: bool = False) -> None:
        for a in self.adapters.values():
            a.set_active_rank(b, frozen)

    # ------------------------------------------------------------------ hooks
    def on_step_start(self, ctx: TrainContext) -> None:
        b = int(torch.randint(self.r_min, self.r_max + 1, (1,), generator=self.sampler))
        self.current_rank = b
        self.rank_counts[b] = self.rank_counts.get(b, 0) + 1
        self.set_rank(b, self.frozen)

    def _untouched(self, b: int, device: torch.device) -> torch.Tensor | None:
        """Indices of the components this step must leave alone: all but b (frozen), or those above b.
        Made on the host and copied to the device once per (b, device), not at every step (a copy
        from the host, like ``nonzero`` on the device, makes the host wait for the device)."""
        key = (b, self.frozen, device)
        if key not in self._untouched_idx:
            keep = torch.ones(self.r_max, dtype=torch.bool)
            keep[b - 1 if self.frozen else slice(0, b)] = False
            self._untouched_idx[key] = keep.nonzero().view(-1).to(device) if keep.any() else None
        return self._untouched_idx[key]

    @torch.no_grad()
    def before_optimizer_step(self, ctx: TrainContext) -> None:
        self._saved = []
        opt = getattr(ctx.optimizer, "optimizer", ctx.optimizer)
        for a in self.adapters.values():
            idx = self._untouched(self.current_rank, a.lora_A.device)
            if idx is None:
                return
            for p, dim in ((a.lora_A, 0), (a.lora_B, 1)):
                state = {k: v.clone() for k, v in opt.state.get(p, {}).items() if torch.is_tensor(v) and v.shape == p.shape}
                self._saved.append((p, dim, idx, p.detach().clone(), state))

    @torch.no_grad()
    def after_optimizer_step(self, ctx: TrainContext) -> list:
        opt = getattr(ctx.optimizer, "optimizer", ctx.optimizer)
        own_steps = getattr(opt, "per_component_step", False)
        for p, dim, idx, value, state in self._saved:
            p.index_copy_(dim, idx, value.index_select(dim, idx))
            p_state = opt.state.get(p, {})
            for k, v in p_state.items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    if k in state:
                        v.index_copy_(dim, idx, state[k].index_select(dim, idx))
                    else:  # created by this step: the untouched components keep a zero state
                        v.index_fill_(dim, idx, 0)
            if own_steps and torch.is_tensor(p_state.get("step")):  # the untouched did not take this step
                step = step_per_component(p_state, p, dim)
                step.index_copy_(dim, idx, step.index_select(dim, idx) - 1)
        self._saved = []
        return []

    def evaluate(self, run_eval: Callable[[], dict]) -> dict:
        by_rank = {}
        try:
            for r in self.eval_ranks:
                self.set_rank(r)
                by_rank[str(r)] = run_eval()
        finally:
            self.set_rank(self.current_rank, self.frozen)
        self.metrics_by_rank = by_rank
        main = by_rank[str(self.r_max)]
        if main["main"] > self.best_main:  # the loop's own rule for best_metrics
            self.best_main, self.best_metrics_by_rank = main["main"], by_rank
        return main

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        out = super().state()
        out["metrics_by_rank"] = self.metrics_by_rank
        out["best_metrics_by_rank"] = self.best_metrics_by_rank
        out["histograms"] = {RANK_HISTOGRAM: {str(b): n for b, n in sorted(self.rank_counts.items())}}
        with torch.no_grad():
            out["adapter_stats"] = {n: {"dylora/delta_norm": float(torch.linalg.matrix_norm(
                a.lora_B @ a.lora_A) * a.alpha / a.rank)} for n, a in self.adapters.items()}
        return out
