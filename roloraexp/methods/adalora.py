"""AdaLoRA (Zhang et al. 2023): start every adapter above the target rank, score each rank
component by a smoothed sensitivity, mask the least important ones on a cubic budget schedule,
and end at the target budget: ``method=adalora`` (+ ``sparsifier=adalora``, also ROLoRA's SPARSIFY).

The allocator (``AdaLoRASparsifier``, in ``adalora_allocator.py``) follows HF PEFT's
``tuners/adalora`` (``RankAllocator`` and ``AdaLoraModel.update_and_allocate``) step for step, so
the same weights and gradients give the same budgets and the same masks (tests/test_adalora.py
checks this against PEFT itself):

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

from ..adapters import Remap
from ..errors import ConfigError
from .adalora_allocator import AdaLoRASparsifier
from .base import Method, TrainContext


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
