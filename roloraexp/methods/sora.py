"""SoRA (Ding et al. 2023): a gate g between A and B (``ΔW = s · B diag(g) A``, g starts at 1,
A and B as in LoRA), sparsified by a proximal L1 step after every optimizer step, and the
components whose gate reaches exactly 0 pruned: ``method=sora`` (+ ``sparsifier=sora``, also
ROLoRA's SPARSIFY).

The proximal step is the soft threshold ``g ← sign(g) · max(|g| − λ, 0)`` with

* ``λ = ξ · lr`` (default, ``sparsifier.threshold_times_lr: true``): the proximal-gradient step of
  ``L + ξ‖g‖₁`` with step size lr, as the SoRA paper writes it (and the reference's
  ``sparse_optimizer_multiply_lr.py``); lr is the learning rate the optimizer step just used for the
  gate's param group (read from ``ctx.optimizer.param_groups``, so warm-up and decay scale the
  shrinkage too). The loop steps its scheduler after the hooks, so the groups hold exactly that lr
  (a schedule decaying to 0 would otherwise skip the last threshold and let Adam revive zeroed
  gates just before the final prune);
* ``λ = ξ`` (``threshold_times_lr: false``): the reference's ``sparse_optimizer.py``.

``ξ = sparsifier.threshold × aggressiveness`` (ROLoRA's SCHEDULE scales it). The gate is out of
weight decay (``Method.param_groups`` puts gates in the no-decay group): decay would be a second,
L2 shrinkage on top of the L1 one. The reference never removes a zero-gate component; here the
tensors are really sliced, at the phase end, and every ``sparsifier.prune_every`` steps when > 0
(an early prune is final: a zero gate could otherwise be revived by the next Adam step).
"""
from __future__ import annotations

import torch

from ..adapters import LowRankLinear, Remap
from ..errors import ConfigError
from .base import Method, TrainContext
from .sparsifier import Sparsifier


class SoRASparsifier(Sparsifier):
    """Options (``conf/sparsifier/sora.yaml``): ``threshold`` (ξ), ``threshold_times_lr``,
    ``prune_every`` (used by the SoRA method). ``target_total`` is ignored: the resulting rank is
    whatever the threshold leaves (ROLoRA paper §6.1)."""

    adapter_init = "lora"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.threshold = float(cfg.get("threshold", 0.0))
        if self.threshold < 0:
            raise ConfigError(f"sparsifier.threshold (ξ) must be >= 0, got {self.threshold}")
        self.times_lr = bool(cfg.get("threshold_times_lr", True))
        self.xi = self.threshold

    def start(self, adapters: dict[str, LowRankLinear], phase_steps: int, target_total: int | None = None,
              aggressiveness: float = 1.0) -> None:
        super().start(adapters, phase_steps, target_total, aggressiveness)
        if aggressiveness < 0:
            raise ConfigError(f"the sparsifier's aggressiveness must be >= 0, got {aggressiveness}")
        missing = [n for n, a in adapters.items() if a.gate is None]
        if missing:
            raise ConfigError(f"the SoRA sparsifier needs gated adapters; {missing[:3]} have no gate")
        self.xi = self.threshold * aggressiveness

    @staticmethod
    def _used_lrs(ctx: TrainContext) -> list[float]:
        """Per param group, the lr of the optimizer step that just ran (the loop steps its
        scheduler only after the hooks)."""
        if ctx.optimizer is None:
            raise RuntimeError("sparsifier.threshold_times_lr needs the optimizer in the context (ctx.optimizer)")
        return [group["lr"] for group in ctx.optimizer.param_groups]

    @torch.no_grad()
    def step(self, ctx: TrainContext) -> None:
        if self.times_lr:
            lrs = self._used_lrs(ctx)
        grads = [a.gate.grad for a in self.adapters.values() if a.rank and a.gate.grad is not None]
        if grads and not torch.stack([torch.isfinite(g).all() for g in grads]).all():
            return  # an fp16 overflow: the optimizer skipped this step, so does the proximal step
        if self.times_lr:
            group_of = {id(p): i for i, group in enumerate(ctx.optimizer.param_groups) for p in group["params"]}
        for name, a in self.adapters.items():
            if a.rank == 0:
                continue
            lam = self.xi
            if self.times_lr:
                if id(a.gate) not in group_of:
                    raise RuntimeError(f"the gate of {name} is not in the optimizer: cannot read its learning rate")
                lam = self.xi * lrs[group_of[id(a.gate)]]
            soft_threshold_(a.gate, lam)

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: a.gate.detach().abs() for n, a in self.adapters.items()}

    def finish(self) -> dict[str, torch.Tensor]:
        """Nonzero gates, largest |g| first."""
        out = {}
        for name, s in self.scores().items():
            alive = torch.nonzero(s).view(-1)
            out[name] = alive[torch.sort(s[alive], descending=True, stable=True).indices]
        return out


@torch.no_grad()
def soft_threshold_(g: torch.Tensor, lam: float) -> torch.Tensor:
    """In place: ``g ← sign(g) · max(|g| − lam, 0)`` (the proximal operator of lam·‖g‖₁)."""
    return g.copy_(torch.sign(g) * (g.abs() - lam).clamp_min(0))


class SoRA(Method):
    """SoRA as a method: rank ``method.rank`` (r_max) everywhere, gates shrunk by the proximal step,
    zero-gate components pruned at the end (and every ``sparsifier.prune_every`` steps)."""

    sparsifiers = ("sora",)
    uses_gate = True
    adapter_init = "lora"

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.sparsifier = SoRASparsifier(sparsifier)
        self.prune_every = int(sparsifier.get("prune_every", 0) or 0)
        if self.prune_every < 0:
            raise ConfigError(f"sparsifier.prune_every must be >= 0 (0 = only at the end), got {self.prune_every}")

    # ------------------------------------------------------------------ hooks
    def on_phase_start(self, ctx: TrainContext) -> None:
        self.sparsifier.start(self.adapters, ctx.phase_steps, None)

    def after_optimizer_step(self, ctx: TrainContext) -> list[Remap]:
        self.sparsifier.step(ctx)
        if self.prune_every and ctx.phase_step % self.prune_every == 0:
            return self.prune(ctx)
        return []

    def on_phase_end(self, ctx: TrainContext) -> None:
        # The loop builds a fresh optimizer for any next phase, so the remaps are not needed here.
        self.prune(ctx, final=True)

    @torch.no_grad()
    def prune(self, ctx: TrainContext | None = None, final: bool = False) -> list[Remap]:
        """Slice away every zero-gate component (ΔW is unchanged: they contributed nothing)."""
        kept = self.sparsifier.finish()
        remaps: list[Remap] = []
        for name, a in self.adapters.items():
            if len(kept[name]) < a.rank:  # nothing to prune: leave the tensors (and their order) alone
                remaps += a.keep(kept[name])
        if ctx is not None and (remaps or final):  # history: every real prune, and the end
            ranks = self.ranks()
            self.history.append({"step": ctx.step, "phase": ctx.phase, "ranks": ranks, "pruned": bool(remaps)})
            ctx.log({"sora/mean_rank": sum(ranks.values()) / max(1, len(ranks))})
        return remaps

    # ------------------------------------------------------------------ state
    def ranks(self) -> dict[str, int]:
        """Effective rank: the nonzero gates (equal to the tensor rank after a prune)."""
        return {n: int(torch.count_nonzero(a.gate)) for n, a in self.adapters.items()}
