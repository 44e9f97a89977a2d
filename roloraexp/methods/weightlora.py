"""WeightLoRA (Veprikov et al., ``weightlora.txt`` §3.3): keep only the K most useful adapters.

Every adapter gets a trainable scalar ω (``h = W x + ω · ΔW x``, ω starts at 1 as in the authors'
code). For the first T optimizer steps ω takes a StoIHT step after each optimizer step: a plain
gradient step, then a hard threshold that keeps the top-K coordinates and zeroes the rest (a
zeroed adapter may come back before T, as StoIHT allows). At step T, ω is fixed and every adapter
outside the top K is **disconnected**: its A and B leave the model's trainable parameters and the
optimizer, so their gradients and Adam state are freed (the paper's memory argument, Fig. 3).
The paper's case split (``ω_i > 0`` or nothing) is that disconnect; a kept ω multiplies ΔW as is
(with ``topk_by: magnitude`` it may be negative).

How ω is stepped (``omega_clip`` / ``omega_schedule``; which one ran is in ``state()["omega_update"]``):

* always plain SGD without momentum, ``ω ← ω − omega_lr · ∇ω``, and no weight decay, as the authors'
  optimizer does (``WeightAdamW``, github.com/Vepricov/WLoRA ``src/optimizers.py``: its
  ``weight_params`` group takes ``p.add_(p.grad, alpha=-lr)``): momentum would carry a zeroed
  coordinate's history across the threshold (StoIHT has none) and decay would pull every ω to 0;
* ``omega_clip: true``, the authors' code: ω is a param group of the trainer's optimizer
  (``sgd: True`` in :class:`~roloraexp.adapters.ComponentAdamW`), so the loop unscales its gradient
  under fp16, clips it with every other gradient (HF's Trainer clips ``model.parameters()`` at
  ``max_grad_norm``) and skips it with the rest on an fp16 overflow; with ``omega_schedule:
  trainer`` its lr follows the warm-up / decay (HF's LambdaLR scales every group), ``constant``
  keeps ``omega_lr``. The paper's experiment files use this;
* ``omega_clip: false`` (the method default): this class steps ω itself after the optimizer step,
  from the raw gradient divided by the loss scale the loop reports (``ctx.grad_scale``), unclipped,
  at ``omega_lr`` (``omega_schedule: constant``: T is short and a warm-up would freeze ω during the
  very steps that choose the adapters) or scaled like the trainer's lr (``trainer``).

T (``select_steps``) defaults to ``epoch``: the paper keeps T within one epoch (§3.3, "the
parameter T does not exceed the duration of a single epoch"), so a T beyond one epoch is a warning
naming both numbers. In a run shorter than an epoch, ``epoch`` means the whole run. The authors'
code never disconnects: ω trains for the whole run (top-K every step), which in the one-epoch runs
of Tables 1 and 6 is exactly T = one epoch.

The ω step of the first T steps treats all ω at once and decides on the device (no host sync,
``on_device.py``); ω is read on the host only at its log points (``omega_log_every``) and at the choice.

What is recorded: ω for every adapter (``omega/<name>`` while selecting and at the choice;
``state()["omega"]`` at each evaluation and in results.json), the kept adapters (``kept``), per-
adapter ranks, and ``selection``: the step and the trainable parameters before / after the
disconnect, plus on CUDA the peak GPU memory before it and with K adapters after it.

Options (``conf/method/weightlora.yaml``): ``k`` (K), ``select_steps`` (T: ``epoch``, optimizer
steps, or a fraction of the run's steps when below 1), ``omega_lr``, ``topk_by`` (``value``: the K
largest ω, the authors' code; ``magnitude``: the K largest |ω|), ``omega_clip``, ``omega_schedule``
and ``omega_log_every``.
"""
from __future__ import annotations

import logging

import torch

from ..adapters import ComponentAdamW, Remap
from ..errors import ConfigError, is_int
from .base import Method, TrainContext, count_trainable, resolve_steps

log = logging.getLogger(__name__)


def top_k(values: torch.Tensor, k: int, by: str = "value") -> torch.Tensor:
    """Indices (ascending) of the k coordinates StoIHT keeps. Ties go to the adapter that comes first
    in the model (a stable sort), so a run is reproducible even when many ω are equal."""
    score = values.abs() if by == "magnitude" else values
    order = torch.sort(score, descending=True, stable=True).indices
    return order[:k].sort().values


class WeightLoRA(Method):
    uses_omega = True
    trains_omega = True  # RLoRA: ω stays 1
    min_select_steps = 1  # RLoRA may choose at step 0
    trains_after_choice = False  # WeightLoRA+: the grown adapters need steps after T
    checkpoint_attrs = Method.checkpoint_attrs + ("events", "kept", "selection", "select_steps",
                                                  "_memory_mark_pending", "_memory_marked")

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.k = cfg.get("k")
        if not is_int(self.k) or self.k < 1:
            raise ConfigError(f"method.k (adapters to keep) must be an integer >= 1, got {self.k!r}")
        self.omega_lr = float(cfg.get("omega_lr", 5.0))
        if not self.omega_lr > 0:
            raise ConfigError(f"method.omega_lr must be > 0, got {self.omega_lr}")
        self.topk_by = cfg.get("topk_by", "value")
        if self.topk_by not in ("value", "magnitude"):
            raise ConfigError(f"method.topk_by must be value or magnitude, got {self.topk_by!r}")
        self.omega_schedule = cfg.get("omega_schedule", "constant")
        if self.omega_schedule not in ("constant", "trainer"):
            raise ConfigError(f"method.omega_schedule must be constant or trainer, got {self.omega_schedule!r}")
        self.omega_clip = cfg.get("omega_clip", False)
        if not isinstance(self.omega_clip, bool):
            raise ConfigError(f"method.omega_clip must be true or false, got {self.omega_clip!r}")
        self.omega_log_every = int(cfg.get("omega_log_every", 1))
        T = cfg.get("select_steps")
        if T is None or (isinstance(T, str) and T != "epoch"):
            raise ConfigError(f"method.select_steps (T) must be epoch, a number of optimizer steps, or a fraction "
                              f"of the run below 1; got {T!r}")
        self.select_steps: int | None = None  # T in optimizer steps, resolved in on_phase_start
        self.events: list[tuple[int, int]] = []  # (step, adapters to keep after it); resolved in on_phase_start
        self.kept: list[str] | None = None  # the final choice, once made
        self.selection: dict | None = None  # when it was made and what it freed
        self._memory_mark_pending = self._memory_marked = False

    # ---------------------------------------------------------------- setup
    def prepare(self, model, target_names) -> None:
        super().prepare(model, target_names)
        n = len(self.adapters)
        if self.k > n:
            raise ConfigError(f"method.k={self.k} is more than the n={n} adapters of this model "
                              f"(targets {sorted({x.rsplit('.', 1)[-1] for x in self.adapters})}); use k <= {n}")

    def selection_events(self, select_steps: int) -> list[tuple[int, int]]:
        """When the adapters are chosen and how many survive: one choice of K at step T."""
        return [(select_steps, self.k)]

    def resolve_select_steps(self, ctx: TrainContext) -> int:
        """T in optimizer steps: ``epoch`` (one epoch, or the whole run when shorter), a number of
        steps, or a fraction of the run. The paper keeps T within one epoch: beyond it, a warning."""
        value, epoch = self.cfg.select_steps, ctx.epoch_steps
        if value == "epoch":
            return min(epoch, ctx.total_steps) if epoch > 0 else ctx.total_steps
        T = resolve_steps(value, ctx.total_steps, "method.select_steps")
        if 0 < value < 1:  # a fraction of a short (smoke) run still selects after one step
            T = max(T, 1)
        if epoch > 0 and T > epoch:
            log.warning("method.select_steps=%s gives T = %d optimizer steps, more than one epoch (%d steps); the "
                        "WeightLoRA paper keeps T within one epoch (§3.3)", value, T, epoch)
        return T

    def on_phase_start(self, ctx: TrainContext) -> None:
        if ctx.phase > 0 or self.events or self.kept is not None:  # one choice per run
            return
        T = self.select_steps = self.resolve_select_steps(ctx)
        if T < self.min_select_steps:
            raise ConfigError(f"method.select_steps={self.cfg.select_steps} gives T={T} steps; T must be >= "
                              f"{self.min_select_steps} (a fraction below 1 is taken of the run's {ctx.total_steps} steps)")
        self.events = self.selection_events(T)
        last = self.events[-1][0]
        if last > ctx.total_steps:
            raise ConfigError(f"the adapters would be chosen at step {last}, after the run's last step "
                              f"({ctx.total_steps}); lower method.select_steps or train longer")
        if self.trains_after_choice and last >= ctx.total_steps:
            shorter = " (the run is shorter than one epoch)" if self.cfg.select_steps == "epoch" else ""
            raise ConfigError(f"method.select_steps={self.cfg.select_steps} grows the kept adapters at step {last}, the "
                              f"run's last{shorter}: method={self.cfg.name} would never train them; set "
                              f"method.select_steps to fewer steps (a number, or a fraction below 1 of the run)")
        if self.events[0][0] == 0:  # chosen before any training (RLoRA): the loop builds its optimizer after this
            self._select(ctx)

    def build_optimizer(self, model, trainer_cfg):
        """The trainer's AdamW; with ``omega_clip`` ω joins it as a plain-SGD group (the authors'
        WeightAdamW), so the loop unscales, clips and schedules it like every other parameter."""
        groups = self.param_groups(model, trainer_cfg.weight_decay)
        omegas = [a.omega for a in self.adapters.values() if a.omega.requires_grad]
        if self.omega_in_optimizer and omegas:
            group = {"params": omegas, "lr": self.omega_lr, "weight_decay": 0.0, "role": "omega", "sgd": True}
            if self.omega_schedule == "constant":
                group["fixed_lr"] = self.omega_lr
            groups.append(group)
        return ComponentAdamW(groups, lr=trainer_cfg.lr)

    @property
    def omega_in_optimizer(self) -> bool:
        return self.trains_omega and self.omega_clip

    # ---------------------------------------------------------------- hooks
    def after_optimizer_step(self, ctx: TrainContext) -> list[Remap]:
        if self._memory_mark_pending:
            self._mark_memory()
        if not self.events:
            return []
        step, k = self.events[0]
        if ctx.step > step:  # cannot happen with the loop's one call per step; guards hand-driven use
            raise RuntimeError(f"missed the selection at step {step} (now {ctx.step})")
        self.omega_step(ctx, k, final=ctx.step == step)
        return self._select(ctx) if ctx.step == step else []

    # ---------------------------------------------------------------- ω
    def active(self) -> list[str]:
        return [n for n, a in self.adapters.items() if a.rank > 0]

    @torch.no_grad()
    def omega_step(self, ctx: TrainContext, k: int, final: bool) -> None:
        """One StoIHT step on the ω of the adapters still connected: gradient step (taken by the
        optimizer already when ω is in it), then top-k. All ω at once, and every decision on the
        device (no host sync): this runs at every step until T."""
        names = self.active()
        omegas = [self.adapters[n].omega for n in names]
        # fp16 overflow (a device bool: the loop decides it without a host wait): the optimizer skipped
        # this step, so does ω (every ω kept as it is, below); if the choice is due now, it is made
        # from ω as it stands.
        skipped = torch.as_tensor(ctx.step_skipped, device=omegas[0].device)
        # In the optimizer, ω's grad was unscaled by the loop; outside it, it still carries the loss scale.
        scale = 1.0 if self.omega_in_optimizer else ctx.grad_scale
        grads = torch.stack([o.grad if o.grad is not None else torch.zeros_like(o) for o in omegas]) / scale
        grads = torch.where(skipped, torch.zeros_like(grads), grads)
        # A non-finite ω grad the optimizer did not see (ω outside it): no step, as for a skipped one.
        grads = torch.where(grads.isfinite().all(), grads, torch.zeros_like(grads))
        values = torch.stack([o.detach() for o in omegas])
        if not self.omega_in_optimizer:
            values = values - self._lr(ctx) * grads
        # With B = 0 (the first step) every ω has a zero gradient: thresholding then would choose by
        # position alone and, with ω all 1, never revise it. The reference skips that step; so do we,
        # unless this is the last chance to choose.
        mask = torch.zeros_like(values, dtype=torch.bool).scatter_(0, top_k(values, k, self.topk_by), True)
        if not final:
            mask |= ~grads.any() | skipped
        values = torch.where(mask, values, torch.zeros_like(values))
        torch._foreach_copy_(omegas, list(values.unbind()))
        if self.omega_log_every > 0 and (ctx.step % self.omega_log_every == 0 or final):  # a log point: one read
            logged = values.tolist()
            ctx.log({**{f"omega/{n}": v for n, v in zip(names, logged)},
                     "weightlora/nonzero_omega": sum(v != 0 for v in logged)})

    def _lr(self, ctx: TrainContext) -> float:
        if self.omega_schedule == "constant" or ctx.optimizer is None:
            return self.omega_lr
        group = ctx.optimizer.param_groups[0]  # LambdaLR keeps the unscheduled lr as initial_lr
        return self.omega_lr * group["lr"] / group.get("initial_lr", group["lr"])

    # ---------------------------------------------------------------- the choice
    def choose(self, names: list[str], k: int) -> list[str]:
        """The adapters that stay: those StoIHT left non-zero (the top-k of the last step)."""
        values = torch.stack([self.adapters[n].omega.detach() for n in names])
        return [names[i] for i in top_k(values, k, self.topk_by).tolist()]

    @torch.no_grad()
    def _select(self, ctx: TrainContext) -> list[Remap]:
        step, k = self.events.pop(0)
        final = not self.events
        names = self.active()
        kept = self.choose(names, k)
        before = count_trainable(ctx.model)
        remaps = []
        for n in names:
            a = self.adapters[n]
            if n not in kept:
                a.omega.zero_()
                remaps += a.disconnect()
            if final:  # ω is fixed from now on: no gradient, no memory for it
                a.omega.requires_grad_(False)
            a.omega.grad = None
        if any(self.adapters[n].omega.item() == 0 for n in kept):
            log.warning("weightlora: some kept adapters have ω = 0 (no gradient reached ω before the choice); "
                        "they stay connected but contribute nothing until ω is trained: raise select_steps")
        remaps += self.after_choice(ctx, kept)
        after = count_trainable(ctx.model)
        record = {"step": ctx.step, "k": k, "kept": kept, "trainable_params_before": before,
                  "trainable_params_after": after, "ranks": self.ranks()}
        self.history.append(record)
        if final:
            self.kept = kept
            self.selection = {key: record[key] for key in ("step", "trainable_params_before", "trainable_params_after")}
            self._memory_mark_pending = self._cuda_device() is not None
        log.info("%s: step %d keeps %d of %d adapters; trainable params %d -> %d", type(self).__name__, ctx.step,
                 len(kept), len(names), before, after)
        ctx.log({**{f"omega/{n}": a.omega.item() for n, a in self.adapters.items()},
                 "weightlora/active_adapters": len(kept), "weightlora/trainable_params_before": before,
                 "weightlora/trainable_params_after": after})
        return remaps

    def after_choice(self, ctx: TrainContext, kept: list[str]) -> list[Remap]:
        """What happens to the kept adapters once the others are gone (WeightLoRA+ grows them)."""
        return []

    # ---------------------------------------------------------------- memory (CUDA)
    def _cuda_device(self):
        dev = next(iter(self.adapters.values())).base.weight.device if self.adapters else None
        return dev if dev is not None and dev.type == "cuda" else None

    def _mark_memory(self) -> None:
        """Split the run's peak GPU memory at the disconnect (the paper's Fig. 3 is memory against the
        number of connected adapters). Done one step after the choice, once the loop has freed the
        disconnected tensors and their Adam state; from here on CUDA's peak counter (and so the
        loop's ``peak_memory_bytes``) is the peak with K adapters."""
        dev = self._cuda_device()
        self.selection["peak_memory_bytes_before"] = torch.cuda.max_memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        self._memory_mark_pending, self._memory_marked = False, True

    # ---------------------------------------------------------------- state
    def state(self) -> dict:
        out = super().state()
        if self.trains_omega:
            out["omega_update"] = {"in_optimizer": self.omega_in_optimizer, "clipped": self.omega_in_optimizer,
                                   "schedule": self.omega_schedule, "lr": self.omega_lr,
                                   "select_steps": self.select_steps}
        if self.kept is not None:
            out["kept"] = list(self.kept)
            out["selection"] = dict(self.selection)
            if self._memory_marked:
                out["selection"]["peak_memory_bytes_after"] = torch.cuda.max_memory_allocated(self._cuda_device())
        return out
