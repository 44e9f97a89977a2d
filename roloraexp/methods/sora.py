"""SoRA (Ding et al. 2023): a gate g between A and B (``ΔW = s · B diag(g) A``, A and B as in
LoRA), driven to exact zeros by an L1 term and a proximal step, and the components whose gate is 0
pruned: ``method=sora`` (+ ``sparsifier=sora``, also ROLoRA's SPARSIFY).

``sparsifier=sora`` (the default) does what the SoRA reference does (github.com/TsinghuaC3I/SoRA,
the GLUE entry point ``run_glue.py`` with ``--train_sparse``):

* gates start from ``randn`` (``src/lora.py``: ``self.gate = nn.Parameter(torch.randn(1, r))``; A
  kaiming-uniform, B zero, so ΔW = 0): ``gate_init: randn``, drawn from a generator seeded with the
  run's seed;
* the loss gets ``sparse_lambda · Σ|g| / n_gates`` (``src/trainer.py``, ``compute_loss``: the sum of
  |g| over every ``lora.gate`` divided by their number of entries): ``l1_weight`` (10 in
  ``scripts/run_glue_sora_*.sh``, ``--sparse_lambda 10``);
* after every optimizer step, ``g ← sign(g) · max(|g| − ξ, 0)`` with a constant ξ
  (``src/sparse_optimizer.py``, the ``SparseAdamW`` that ``run_glue.py`` imports: ξ is not
  multiplied by the lr): ``threshold`` = 3e-4 (``--sparse_lambda_2 3e-4``), ``threshold_times_lr:
  false``;
* the gates train with the same lr and warm-up/decay as the rest (``run_glue.py``: ``sparse_lr``
  defaults to the learning rate, and the gates' scheduler has the same warm-up ratio and length),
  without weight decay (``SparseAdamW`` gets none; here ``Method.param_groups`` puts gates in the
  no-decay group), and their gradient is clipped with everything else (HF's Trainer clips
  ``model.parameters()``; here the gate is in the loop's optimizer).

``sparsifier=sora_proximal`` keeps the earlier variant, the SoRA paper's proximal-gradient step of
``L + ξ‖g‖₁`` with step size lr: gates start at 1, no L1 term in the loss, ``λ = ξ · lr`` with lr the
learning rate the optimizer step just used for the gate's param group (read from
``ctx.optimizer.param_groups``; the loop steps its scheduler after the hooks, so the groups hold
exactly that lr), as the reference's ``src/sparse_optimizer_multiply_lr.py`` does.

Where this differs from the reference, deliberately:

* the soft threshold is exact. The reference applies three in-place masks in turn
  (``p[p > ξ] -= ξ; p[p < -ξ] += ξ; p[|p| < ξ] = 0``): the third reads the already-shrunk values,
  so gates with |g| in (ξ, 2ξ) are zeroed too; this only matters within 2ξ of zero;
* the gates share the loop's AdamW (eps 1e-8); the reference's ``SparseAdamW`` is transformers'
  AdamW with its default eps 1e-6;
* the reference never removes a zero-gate component (it only counts them, ``src/util.py``); here
  the tensors are really sliced, at the phase end, and every ``sparsifier.prune_every`` steps when
  > 0 (an early prune is final: a zero gate could otherwise be revived by the next Adam step).

ROLoRA's SCHEDULE scales both sparsity strengths, ξ and the L1 weight, by its aggressiveness.

The L1 term and the proximal step treat all gates at once and never wait for the device
(``on_device.py``); only a prune reads which gates are zero.
"""
from __future__ import annotations

import torch

from ..adapters import LowRankLinear, Remap
from ..errors import ConfigError
from .base import Method, TrainContext
from .on_device import all_finite
from .sparsifier import Sparsifier


class SoRASparsifier(Sparsifier):
    """Options (``conf/sparsifier/sora.yaml``, ``sora_proximal.yaml``): ``gate_init`` (``randn`` |
    ``ones``), ``threshold`` (ξ), ``threshold_times_lr``, ``l1_weight``, ``prune_every`` (used by
    the SoRA method). ``target_total`` is ignored: the resulting rank is whatever the threshold
    leaves (ROLoRA paper §6.1)."""

    adapter_init = "lora"
    checkpoint_attrs = ("xi", "l1")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.threshold = float(cfg.get("threshold", 0.0))
        if self.threshold < 0:
            raise ConfigError(f"sparsifier.threshold (ξ) must be >= 0, got {self.threshold}")
        self.l1_weight = float(cfg.get("l1_weight", 0.0))
        if self.l1_weight < 0:
            raise ConfigError(f"sparsifier.l1_weight must be >= 0, got {self.l1_weight}")
        self.gate_init = cfg.get("gate_init", "ones")
        if self.gate_init not in ("randn", "ones"):
            raise ConfigError(f"sparsifier.gate_init must be randn or ones, got {self.gate_init!r}")
        self.times_lr = bool(cfg.get("threshold_times_lr", True))
        self.xi, self.l1 = self.threshold, self.l1_weight

    @torch.no_grad()
    def init_adapters(self, adapters, generator: torch.Generator) -> None:
        """The reference's gates ``torch.randn(r)`` (B is zero, so ΔW stays 0); ``ones``: LoRA's g = 1."""
        if self.gate_init == "randn":
            for a in adapters.values():
                a.gate.copy_(torch.randn(a.gate.shape, generator=generator).to(a.gate))

    def start(self, adapters: dict[str, LowRankLinear], phase_steps: int, target_total: int | None = None,
              aggressiveness: float = 1.0) -> None:
        super().start(adapters, phase_steps, target_total, aggressiveness)
        if aggressiveness < 0:
            raise ConfigError(f"the sparsifier's aggressiveness must be >= 0, got {aggressiveness}")
        missing = [n for n, a in adapters.items() if a.gate is None]
        if missing:
            raise ConfigError(f"the SoRA sparsifier needs gated adapters; {missing[:3]} have no gate")
        self.xi, self.l1 = self.threshold * aggressiveness, self.l1_weight * aggressiveness

    def extra_loss(self) -> torch.Tensor | None:
        """``l1 · Σ|g| / n_gates`` over the gates still present (the reference's compute_loss), over
        all gates concatenated: three kernels, not two per adapter."""
        gates = [a.gate for a in self.adapters.values() if a.gate is not None and a.gate.numel()]
        if not self.l1 or not gates:
            return None
        every = torch.cat(gates)
        return self.l1 * every.abs().sum() / every.numel()

    @staticmethod
    def _used_lrs(ctx: TrainContext) -> list[float]:
        """Per param group, the lr of the optimizer step that just ran (the loop steps its
        scheduler only after the hooks)."""
        if ctx.optimizer is None:
            raise RuntimeError("sparsifier.threshold_times_lr needs the optimizer in the context (ctx.optimizer)")
        return [group["lr"] for group in ctx.optimizer.param_groups]

    @torch.no_grad()
    def step(self, ctx: TrainContext) -> None:
        """The proximal step on every gate at once (``torch._foreach_*``), with no host sync: an
        overflowed fp16 step (the optimizer skipped it) is skipped by a threshold of 0 chosen on the
        device (``sign(g)·max(|g| − 0, 0) = g``)."""
        names = [n for n, a in self.adapters.items() if a.rank]
        if not names:
            return
        gates = [self.adapters[n].gate for n in names]
        lams = [self.xi] * len(gates)
        if self.times_lr:
            lrs = self._used_lrs(ctx)
            group_of = {id(p): i for i, group in enumerate(ctx.optimizer.param_groups) for p in group["params"]}
            for i, (name, g) in enumerate(zip(names, gates)):
                if id(g) not in group_of:
                    raise RuntimeError(f"the gate of {name} is not in the optimizer: cannot read its learning rate")
                lams[i] = self.xi * lrs[group_of[id(g)]]
        grads = [g.grad for g in gates if g.grad is not None]
        go = all_finite(grads).to(gates[0].dtype) if grads else None
        for lam in sorted(set(lams)):  # one λ for all gates but with per-group learning rates
            some = [g for g, x in zip(gates, lams) if x == lam]
            soft_threshold_all_(some, lam if go is None else go * lam)

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


def soft_threshold_all_(gates: list[torch.Tensor], lam: float | torch.Tensor) -> None:
    """:func:`soft_threshold_` on every tensor of ``gates``, each elementwise op one launch for all."""
    shrunk = torch._foreach_abs(gates)
    torch._foreach_sub_(shrunk, lam)
    torch._foreach_clamp_min_(shrunk, 0)
    torch._foreach_mul_(shrunk, torch._foreach_sign(gates))
    torch._foreach_copy_(gates, shrunk)


class SoRA(Method):
    """SoRA as a method: rank ``method.rank`` (r_max) everywhere, gates shrunk by the proximal step,
    zero-gate components pruned at the end (and every ``sparsifier.prune_every`` steps)."""

    sparsifiers = ("sora",)
    uses_gate = True
    adapter_init = "lora"
    checkpoint_attrs = Method.checkpoint_attrs + ("sparsifier",)

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.sparsifier = SoRASparsifier(sparsifier)
        self.prune_every = int(sparsifier.get("prune_every", 0) or 0)
        if self.prune_every < 0:
            raise ConfigError(f"sparsifier.prune_every must be >= 0 (0 = only at the end), got {self.prune_every}")

    def prepare(self, model, target_names) -> None:
        super().prepare(model, target_names)
        self.sparsifier.init_adapters(self.adapters, torch.Generator().manual_seed(self.seed))

    # ------------------------------------------------------------------ hooks
    def on_phase_start(self, ctx: TrainContext) -> None:
        self.sparsifier.start(self.adapters, ctx.phase_steps, None)

    def extra_loss(self):
        return self.sparsifier.extra_loss()

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
