"""AdaLoRA's rank allocator: the ``Sparsifier`` that scores every rank component by its smoothed
sensitivity, masks the least important on the cubic budget schedule, adds the orthogonal
regulariser, and slices the adapters to the final budget (``sparsifier=adalora``).

The rules it follows, step for step after HF PEFT's ``RankAllocator``, and where it deliberately
differs from PEFT, are in the docstring of ``methods/adalora.py``, which imports it from here. It
lives apart from the ``AdaLoRA`` method because it is a unit of its own: ``method=rolora`` drives
it as its SPARSIFY without the AdaLoRA method (``rolora.SPARSIFIERS``), and the method adds only
the phase wiring, the records and the rank bookkeeping around it. This module must not import
``adalora.py`` (that one imports this).
"""
from __future__ import annotations

import torch

from ..adapters import LowRankLinear, Remap
from ..errors import ConfigError
from .base import TrainContext, resolve_steps
from .on_device import flat, segment_sums, unflat
from .sparsifier import Sparsifier

_FACTORS = ("lora_A", "lora_B", "gate")


class AdaLoRASparsifier(Sparsifier):
    """AdaLoRA's rank allocator over one phase (see adalora.py's module docstring for the exact rules).

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
