"""AdaLoRA (Zhang et al. 2023): start every adapter above the target rank, score each rank
component by a smoothed sensitivity, mask the least important ones on a cubic budget schedule,
and end at the target budget: ``method=adalora`` (+ ``sparsifier=adalora``, also ROLoRA's SPARSIFY).

The allocator follows HF PEFT's ``tuners/adalora`` (``RankAllocator`` and
``AdaLoraModel.update_and_allocate``) step for step, so the same weights and gradients give the
same budgets and the same masks (tests/test_adalora.py checks this against PEFT itself):

* importance on every entry of A, B and the gate g (AdaLoRA's Λ = E), after each optimizer step:
  ``I = |p ⊙ ∇p|``, ``Ī ← β1 Ī + (1−β1) I``, ``Ū ← β2 Ū + (1−β2) |I − Ī|``, score ``Ī · Ū``;
  component i scores ``s(g_i) + mean_j s(A_ij) + mean_k s(B_ki)``. PEFT keeps updating the
  statistics of masked components too (their gates drift back between mask updates and may win
  their place back), so does this.
* budget at step index t, counted as PEFT's and the original's training loops count it: 0 after
  the first optimizer step of a phase, T − 1 after the last (PEFT's AdaLoRA example calls
  ``update_and_allocate(global_step)`` with ``global_step = 0`` after the first ``optimizer.step()``
  and increments it afterwards; QingruZhang/AdaLoRA's README: ``optimizer.step();
  rankallocator.update_and_mask(model, global_step); global_step += 1``): ``b_0`` while
  ``t <= t_i``; ``int(b_T + (b_0 − b_T)(1 − (t − t_i)/(T − t_f − t_i))³)`` with a mask update when
  ``t % Δ_T == 0``; at ``t == T − t_f`` a final mask at ``b_T`` (statistics stop); after it, the
  final mask is re-applied every step (Adam would revive the zeroed gates).
* a mask update zeroes, in place, every gate whose score is ``<=`` the (b_0 − b)-th smallest
  score over all adapters (``torch.kthvalue``: one global threshold, an adapter may reach 0).

Where this differs from PEFT, deliberately (METHODS.md):

* a step whose gradients overflowed (fp16; the optimizer skipped it) leaves the statistics alone;
* the final ranks are real: ``AdaLoRA`` slices the tensors and the Adam state at ``T − t_f``
  (``LowRankLinear.keep`` + the returned Remaps); PEFT masks until the end;
* ``b_0 == b_T`` masks nothing (PEFT's ``kthvalue(k=0)`` raises);
* the orthogonal regulariser skips rank-0 adapters (PEFT never has them after pruning: it
  never prunes) and is computed in fp32 even under autocast (a bf16 ``AAᵀ`` is too coarse);
* the scaling stays ``alpha / r0`` (PEFT: ``alpha / ranknum``, the same number: neither changes
  it when masking);
* no step waits for the device (``on_device.py``): the statistics of all adapters are updated as
  one flat tensor, a mask update's threshold stays on the device, the orthogonal regulariser is
  one batched product per adapter shape, and the ranks of each mask update enter ``history`` when
  it is read (W&B gets ``adalora/budget`` at each mask update, the ranks at the slice and at every
  evaluation). PEFT reads the threshold with ``.item()`` at every mask update.

``method.allocate: false`` is AdaLoRA as the WeightLoRA authors ran their baseline (PEFT's
``AdaLoraConfig(target_r=r)`` without ever calling ``update_and_allocate``): SVD-form adapters at
``init_rank`` with the orthogonal regulariser, but no importance scores, no masking and no slicing:
the ranks stay at ``init_rank`` (see ``results/published/README.md``).
"""
from __future__ import annotations

import math

import torch

from ..adapters import LowRankLinear, Remap
from ..errors import ConfigError
from .base import Method, TrainContext, resolve_steps
from .on_device import flat, segment_sums, unflat
from .sparsifier import Sparsifier

_FACTORS = ("lora_A", "lora_B", "gate")


class AdaLoRASparsifier(Sparsifier):
    """AdaLoRA's rank allocator over one phase (see the module docstring for the exact rules).

    Options (``conf/sparsifier/adalora.yaml``): ``t_init``, ``t_final``, ``delta_t`` (optimizer
    steps, or fractions of the phase's steps when below 1), ``orth_reg``, ``beta1``, ``beta2``.
    ``aggressiveness`` is ignored: the budget is a rank count (``target_total``), not a threshold.
    """

    adapter_init = "adalora"
    checkpoint_attrs = ("total_steps", "t_init", "t_final", "delta_t", "init_total", "target_total", "budget",
                        "mask", "final", "updated_at", "_ipt", "_unc", "_final_scores")

    def __init__(self, cfg):
        super().__init__(cfg)
        for key in ("beta1", "beta2"):
            if not 0 < float(cfg.get(key, 0.85)) < 1:
                raise ConfigError(f"sparsifier.{key} must be in (0, 1), got {cfg.get(key)}")
        self.beta1, self.beta2 = float(cfg.get("beta1", 0.85)), float(cfg.get("beta2", 0.85))
        self.orth_reg = float(cfg.get("orth_reg", 0.1))
        if self.orth_reg < 0:
            raise ConfigError(f"sparsifier.orth_reg must be >= 0, got {self.orth_reg}")
        for key in ("t_init", "t_final", "delta_t"):
            if cfg.get(key) is None or float(cfg.get(key)) < 0:
                raise ConfigError(f"sparsifier.{key} must be a number >= 0 (steps, or a fraction below 1), "
                                  f"got {cfg.get(key)}")
        self.total_steps = self.t_init = self.t_final = 0
        self.delta_t = 1
        self.init_total = self.target_total = 0
        self.budget = 0
        self.mask: dict[str, torch.Tensor] = {}  # True = kept by the latest mask decision; {}: none masks
        self.final = False  # the final mask (at b_T) has been decided
        self.updated_at: int | None = None  # loop phase step (1-based) of the latest mask update
        self._ipt: dict[tuple[str, str], torch.Tensor] = {}  # Ī per (adapter, factor)
        self._unc: dict[tuple[str, str], torch.Tensor] = {}  # Ū per (adapter, factor)
        self._final_scores: dict[str, torch.Tensor] = {}
        self._eyes: dict[tuple, torch.Tensor] = {}  # the regulariser's identities, made once per rank
        self._gate_factors: tuple = (None, [])  # (the mask they were made from, 1.0/0.0 per gate entry)

    # ------------------------------------------------------------------ phase
    def start(self, adapters: dict[str, LowRankLinear], phase_steps: int, target_total: int | None,
              aggressiveness: float = 1.0) -> None:
        super().start(adapters, phase_steps, target_total, aggressiveness)
        T = int(phase_steps)
        self.total_steps = T
        self.t_init = resolve_steps(float(self.cfg.t_init), T, "sparsifier.t_init")
        self.t_final = resolve_steps(float(self.cfg.t_final), T, "sparsifier.t_final")
        self.delta_t = resolve_steps(float(self.cfg.delta_t), T, "sparsifier.delta_t")
        if self.delta_t < 1:
            raise ConfigError(f"sparsifier.delta_t must give at least 1 optimizer step, got {self.cfg.delta_t} "
                              f"of {T} steps")
        if self.t_init + self.t_final >= T:
            raise ConfigError(
                f"sparsifier.t_init + sparsifier.t_final ({self.t_init} + {self.t_final} steps) must be below the "
                f"phase's {T} optimizer steps, leaving room to prune: lower them, or raise trainer.epochs / "
                f"trainer.max_steps")
        self.init_total = sum(a.rank for a in adapters.values())
        if target_total is None or target_total < 0:
            raise ConfigError(f"the AdaLoRA sparsifier needs a target total rank >= 0, got {target_total}")
        if target_total > self.init_total:
            raise ConfigError(
                f"target total rank {target_total} is above the current total rank {self.init_total}: AdaLoRA only "
                f"prunes (method.rank must not exceed method.init_rank)")
        self.target_total = int(target_total)
        self.budget = self.init_total
        self.mask = {}
        self.final = False
        self.updated_at = None
        self._ipt, self._unc, self._final_scores = {}, {}, {}

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """(budget, mask now?) at step index ``step`` (0-based, see the module docstring): PEFT's
        ``RankAllocator.budget_schedule``, operation for operation (``int`` truncation included)."""
        tinit, tfinal, total_step = self.t_init, self.t_final, self.total_steps
        if step <= tinit:
            return self.init_total, False
        if step > total_step - tfinal:
            return self.target_total, True
        mul_coeff = 1 - (step - tinit) / (total_step - tfinal - tinit)
        budget = int((self.init_total - self.target_total) * (mul_coeff**3) + self.target_total)
        return budget, step % self.delta_t == 0

    # ------------------------------------------------------------------ loss
    def extra_loss(self) -> torch.Tensor | None:
        """``orth_reg · mean over factors of ‖AAᵀ − I‖_F, ‖BᵀB − I‖_F`` (PEFT's sum / count), for all
        adapters of one shape at once (a batched product: a few kernels per shape, not eight per
        adapter, at every forward)."""
        if self.orth_reg == 0:
            return None
        groups: dict[tuple[int, int, int], list[LowRankLinear]] = {}
        for a in self.adapters.values():
            if a.rank:
                groups.setdefault((a.rank, a.in_features, a.out_features), []).append(a)
        if not groups:
            return None
        norms = []
        for (rank, _, _), group in groups.items():
            A, B = torch.stack([a.lora_A for a in group]), torch.stack([a.lora_B for a in group])
            with torch.autocast(device_type=A.device.type, enabled=False):
                eye = self._eye(rank, A)
                norms += [torch.linalg.matrix_norm(A @ A.mT - eye), torch.linalg.matrix_norm(B.mT @ B - eye)]
        return self.orth_reg * torch.cat(norms).mean()

    def _eye(self, rank: int, like: torch.Tensor) -> torch.Tensor:
        key = (rank, like.device, like.dtype)
        if key not in self._eyes:
            self._eyes[key] = torch.eye(rank, device=like.device, dtype=like.dtype)
        return self._eyes[key]

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def step(self, ctx: TrainContext) -> None:
        """PEFT's ``AdaLoraModel.update_and_allocate(t)`` with t = the step index PEFT's training loop
        passes: the loop's phase step (1 after the first optimizer step) minus one."""
        t, final_step = ctx.phase_step - 1, self.total_steps - self.t_final
        if t < final_step:
            self._update_importance()
            budget, mask_now = self.budget_schedule(t)
            if mask_now:
                self._mask_to_budget(budget, ctx.phase_step)
        elif not self.final:
            self._decide_final(ctx.phase_step)
        else:
            self._apply_mask()

    def _update_importance(self) -> None:
        """Ī and Ū of every entry of every adapter, in one flat tensor: a few kernels per step
        whatever the number of adapters, and no host synchronisation (on_device.py)."""
        keys, params = [], []
        for name, a in self.adapters.items():
            for factor in _FACTORS:
                p = getattr(a, factor)
                if p is not None:
                    keys.append((name, factor))
                    params.append(p)
                    if (name, factor) not in self._ipt:
                        self._ipt[(name, factor)], self._unc[(name, factor)] = torch.zeros_like(p), torch.zeros_like(p)
        if not params:
            return
        # A parameter the step did not reach (a rank-0 adapter) has no sensitivity.
        grad = flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        ipt = (flat(params) * grad).abs()
        old_ipt, old_unc = flat([self._ipt[k] for k in keys]), flat([self._unc[k] for k in keys])
        # The same expressions as PEFT's update_ipt, elementwise, so the scores agree bit for bit.
        new_ipt = self.beta1 * old_ipt + (1 - self.beta1) * ipt
        new_unc = self.beta2 * old_unc + (1 - self.beta2) * (ipt - new_ipt).abs()
        # An fp16 overflow (the optimizer skipped this step) would poison the averages with inf:
        # keep them, decided on the device.
        finite = grad.isfinite().all()
        new_ipt, new_unc = torch.where(finite, new_ipt, old_ipt), torch.where(finite, new_unc, old_unc)
        for key, i, u in zip(keys, unflat(new_ipt, params), unflat(new_unc, params)):
            self._ipt[key], self._unc[key] = i, u

    def _triplet_scores(self) -> dict[str, torch.Tensor]:
        keys = [(n, f) for n, a in self.adapters.items() for f in _FACTORS if getattr(a, f) is not None]
        tracked = [k for k in keys if k in self._ipt]
        products = unflat(flat([self._ipt[k] for k in tracked]) * flat([self._unc[k] for k in tracked]),
                          [self._ipt[k] for k in tracked]) if tracked else []
        element = dict(zip(tracked, products))
        out = {}
        for name, a in self.adapters.items():
            score = {f: element[(name, f)] if (name, f) in element else torch.zeros_like(getattr(a, f))
                     for f in _FACTORS}
            s_a = torch.mean(score["lora_A"], dim=1)
            s_b = torch.mean(score["lora_B"], dim=0)
            out[name] = (score["gate"] + (s_a + s_b)).detach()
        return out

    def _mask_to_budget(self, budget: int, phase_step: int) -> dict[str, torch.Tensor]:
        scores = self._triplet_scores()
        every = torch.cat([s.view(-1) for s in scores.values()])
        k = self.init_total - budget
        if k > 0:  # the threshold stays on the device: a mask update does not wait for it
            keep = every > torch.kthvalue(every, k=k).values
        else:  # nothing to mask (PEFT would raise on kthvalue(k=0))
            keep = torch.ones_like(every, dtype=torch.bool)
        self.mask = dict(zip(scores, keep.split([s.numel() for s in scores.values()])))
        self._apply_mask()
        self.budget, self.updated_at = budget, phase_step
        return scores

    def _decide_final(self, phase_step: int) -> None:
        self._final_scores = self._mask_to_budget(self.target_total, phase_step)
        self.final = True
        self._ipt, self._unc = {}, {}  # PEFT's reset_ipt: the statistics are not used again this phase

    @torch.no_grad()
    def _apply_mask(self) -> None:
        """Zero the gates the mask drops (one multiply over all gates: 1 keeps, 0 drops; after the
        slice nothing is masked and nothing runs)."""
        if not self.mask:
            return
        if self._gate_factors[0] is not self.mask:
            self._gate_factors = (self.mask, [self.mask[n].to(a.gate.dtype) for n, a in self.adapters.items()])
        torch._foreach_mul_([a.gate for a in self.adapters.values()], self._gate_factors[1])

    # ------------------------------------------------------------------ results
    def scores(self) -> dict[str, torch.Tensor]:
        """Triplet scores per adapter; frozen at the final decision (the statistics stop there)."""
        return dict(self._final_scores) if self.final else self._triplet_scores()

    @torch.no_grad()
    def finish(self) -> dict[str, torch.Tensor]:
        """Components above the final threshold, most important first. Decides the final mask now
        if the phase ended before step T − t_f."""
        if not self.final:
            self._decide_final(self.total_steps)
        out = {}
        for name, s in self._final_scores.items():
            kept = torch.nonzero(self.mask[name]).view(-1)
            order = torch.sort(s[kept], descending=True, stable=True).indices
            out[name] = kept[order]
        return out

    def kept_counts(self) -> torch.Tensor:
        """Components each adapter keeps under the latest mask, as one device tensor (no host sync)."""
        masks = [self.mask[n] for n in self.adapters]
        return segment_sums(flat(masks), [m.numel() for m in masks])

    def effective_ranks(self) -> dict[str, int]:
        """Components kept by the latest mask decision (all of them before the first, and after the slice)."""
        if not self.mask:
            return {n: a.rank for n, a in self.adapters.items()}
        return dict(zip(self.adapters, self.kept_counts().tolist()))

    @torch.no_grad()
    def slice(self) -> list[Remap]:
        """Make the final mask real: keep only the surviving components (most important first);
        the returned Remaps let an optimizer keep their Adam state. Masking is a no-op after it."""
        kept = self.finish()
        remaps: list[Remap] = []
        for name, a in self.adapters.items():
            remaps += a.keep(kept[name])
            idx = kept[name].to(self._final_scores[name].device)
            self._final_scores[name] = self._final_scores[name][idx]
        self.mask = {}  # every component that is left is kept
        return remaps


def default_init_rank(rank: int) -> int:
    """1.5 R rounded half up (the AdaLoRA paper's and ROLoRA's choice: 12 for R = 8, 6 for R = 4)."""
    return int(math.floor(1.5 * rank + 0.5))


class AdaLoRA(Method):
    """AdaLoRA as a method: every adapter starts at ``method.init_rank`` (null: 1.5 R) and ends
    with ranks summing to ``method.rank`` × adapters, sliced for real at step T − t_f
    (``method.allocate: false``: no allocation, the ranks stay at ``init_rank``)."""

    uses_gate = True
    adapter_init = "adalora"
    sparsifiers = ("adalora",)
    checkpoint_attrs = Method.checkpoint_attrs + ("sparsifier", "_masking")

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        init_rank = cfg.get("init_rank")
        self.init_rank = default_init_rank(int(cfg.rank)) if init_rank is None else int(init_rank)
        if self.init_rank < int(cfg.rank):
            raise ConfigError(f"method.init_rank ({self.init_rank}) must be >= method.rank ({cfg.rank}): "
                              f"AdaLoRA prunes from the initial to the target average rank")
        self.allocate = cfg.get("allocate", True)
        if not isinstance(self.allocate, bool):
            raise ConfigError(f"method.allocate must be true or false, got {self.allocate!r}")
        self.sparsifier = AdaLoRASparsifier(sparsifier)
        self.target_total = 0
        self._masking = False  # between the phase start and the slice: ranks() counts the mask

    def initial_rank(self, name, linear) -> int:
        return self.init_rank

    def prepare(self, model, target_names) -> None:
        super().prepare(model, target_names)
        self.target_total = int(self.cfg.rank) * len(self.adapters)

    # ------------------------------------------------------------------ hooks
    def extra_loss(self):
        return self.sparsifier.extra_loss()

    def on_phase_start(self, ctx: TrainContext) -> None:
        if not self.allocate:  # the regulariser only: it reads the adapters, nothing is scheduled
            self.sparsifier.adapters = self.adapters
            return
        target = self.target_total
        if ctx.phase > 0:
            # A restart (AdaLoRA*) from a checkpoint already at (or, with tied scores, below) the
            # target has nothing to prune: aim at what is there instead of failing.
            target = min(target, sum(a.rank for a in self.adapters.values()))
        self.sparsifier.start(self.adapters, ctx.phase_steps, target)
        self._masking = True

    def after_optimizer_step(self, ctx: TrainContext) -> list[Remap]:
        if not self.allocate:
            return []
        sp = self.sparsifier
        sp.step(ctx)
        if sp.updated_at != ctx.phase_step:
            return []
        remaps = self._slice() if sp.final and self._masking else []
        self._record(ctx, sp.budget)
        return remaps

    def on_phase_end(self, ctx: TrainContext) -> None:
        if self._masking:  # the final decision never came (t_final = 0: step index T − t_f is past the phase)
            self._slice()
            self._record(ctx, self.sparsifier.budget)

    def _slice(self) -> list[Remap]:
        self._masking = False
        return self.sparsifier.slice()

    def _record(self, ctx: TrainContext, budget: int) -> None:
        """A mask update: its budget and the ranks it leaves. While masking (Δ_T = 1: every step of
        the budget's decay) the ranks are the mask's counts, left on the device and read when
        ``history`` is read, so a mask update does not wait for the device; W&B gets the budget
        then, and the ranks at the slice and at every evaluation (``log_state``)."""
        entry = {"step": ctx.step, "phase": ctx.phase, "ranks": None, "budget": budget}
        self._history.append(entry)
        if self._masking:
            self._unread.append((entry, self.sparsifier.kept_counts()))
            ctx.log({"adalora/budget": budget})
            return
        entry["ranks"] = ranks = self.ranks()
        ctx.log({"adalora/budget": budget, "adalora/mean_rank": sum(ranks.values()) / max(1, len(ranks)),
                 **{f"ranks/{n}": r for n, r in ranks.items()}})  # per adapter at the slice

    @property
    def history(self) -> list[dict]:
        """Records of the run (base.py); the ranks of the mask updates are read from the device here,
        all at once (one host sync however many updates)."""
        if self._unread:
            counts = torch.stack([c for _, c in self._unread]).tolist()
            for (entry, _), row in zip(self._unread, counts):
                entry["ranks"] = dict(zip(self.adapters, row))
            self._unread = []
        return self._history

    @history.setter
    def history(self, value: list[dict]) -> None:
        self._history, self._unread = value, []

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {**super().state(), "allocate": self.allocate}

    def ranks(self) -> dict[str, int]:
        """While masking: the components the latest mask keeps (the tensors are still at init_rank);
        after the slice: the tensors' rank."""
        if self._masking:
            return self.sparsifier.effective_ranks()
        return super().ranks()
