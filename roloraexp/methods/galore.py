"""GaLore (Zhao et al. 2024, Algorithm 2 in the slides): full-parameter training of the target 2-D
weights with Adam run in a low-rank projection of their gradients; every other trainable parameter
on plain AdamW, all in ONE optimizer (:class:`GaLoreAdamW`) that the loop builds through
``build_optimizer`` like any other.

For a target weight W (m × n) with gradient G, every ``method.update_proj_gap`` (T) steps the
projector is recomputed from the SVD of G: the top-r left singular vectors P (m × r) when m < n,
else the top-r right ones Q (r × n). Adam's moments live in the projected space (R = Pᵀ G, r × n,
or R = G Qᵀ, m × r), and the update is projected back and scaled: ``W ← W − η α P N`` with
``N = M̂ / (√V̂ + ε)``. This is ``galore_torch.GaLoreAdamW`` (PyPI ``galore-torch`` 1.0,
``galore_projector.py`` proj_type ``std`` and ``adamw.py``), which the tests check update for update:
like it, a square W is projected on the right (the paper's rule "left if m ≤ n" would take the
left), ε is added to √V before the bias correction is folded into the step size (Adam's
"efficient" form, Kingma & Ba §2) and the decoupled weight decay follows the update. The other
parameters step with ``torch.optim.AdamW`` (what every other method here uses).

Which parameters train: ``method.train_all: true`` (default) trains the whole backbone, as the
GaLore paper's GLUE fine-tuning does (its ``run_glue.py``: GaLore on the targets, AdamW on
``regular_params`` = everything else); ``false`` trains only the target layers (weight and bias)
beside the heads. Targets default to every linear layer of every block (``run_glue.py
--lora_all_modules``: query, key, value, intermediate.dense, output.dense, by substring, which also
takes attention.output.dense).

results.json: ``optimizer_state_bytes`` = ``{"galore": bytes of this optimizer's state (moments +
projectors), "adamw": bytes AdamW's two full-size moments would take for the same parameters,
"ratio"}``, measured at the end of each phase; W&B: per target, ``galore/captured`` = ‖R‖ / ‖G‖ of
the last step (how much of the gradient the subspace keeps).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .base import Method, TrainContext


class GaLoreAdamW(torch.optim.AdamW):
    """AdamW in which every param group with a ``galore_rank`` runs GaLore's projected Adam
    (group keys ``galore_rank``, ``update_proj_gap``, ``galore_scale``); the other groups are plain AdamW."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        projected = [(g, p) for g in self.param_groups if g.get("galore_rank") for p in g["params"] if p.grad is not None]
        for group, p in projected:
            self._projected_step(group, p)
        # AdamW skips parameters without a gradient: hide the projected ones from it for this step.
        held = [(p, p.grad) for _, p in projected]
        for p, _ in held:
            p.grad = None
        try:
            super().step()
        finally:
            for p, grad in held:
                p.grad = grad
        return loss

    def _projected_step(self, group: dict, p: nn.Parameter) -> None:
        if p.ndim != 2:
            raise ValueError(f"GaLore projects 2-D weights only, got a tensor of shape {tuple(p.shape)}")
        state, G = self.state[p], p.grad.float()
        step = int(state.get("step", 0))
        right = G.shape[0] >= G.shape[1]  # galore_torch 'std': project the longer side away
        if "proj" not in state or step % group["update_proj_gap"] == 0:
            U, _, Vh = torch.linalg.svd(G, full_matrices=False)
            r = group["galore_rank"]
            state["proj"] = Vh[:r].contiguous() if right else U[:, :r].contiguous()
        P = state["proj"]
        R = G @ P.T if right else P.T @ G
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(R), torch.zeros_like(R)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = group["betas"]
        step += 1
        state["step"] = torch.tensor(float(step))
        m.mul_(beta1).add_(R, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(R, R, value=1 - beta2)
        N = m / (v.sqrt() + group["eps"])
        update = (N @ P if right else P @ N) * group["galore_scale"]
        step_size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        p.add_(update.to(p.dtype), alpha=-step_size)
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        state["captured"] = R.norm() / G.norm().clamp_min(1e-30)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every per-parameter tensor an optimizer holds (moments, projectors; not step counters)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v) and v.ndim > 0)


class GaLore(Method):
    checkpoint_attrs = Method.checkpoint_attrs + ("optimizer_state_bytes",)

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.rank, self.gap, self.scale = int(cfg.rank), int(cfg.update_proj_gap), float(cfg.scale)
        if self.gap < 1:
            raise ConfigError(f"method.update_proj_gap must be >= 1, got {self.gap}")
        if self.scale <= 0:
            raise ConfigError(f"method.scale must be > 0, got {self.scale}")
        self.train_all = bool(cfg.get("train_all", True))
        self.eps = float(cfg.get("eps", 1e-6))
        self.optimizer_state_bytes: dict = {}
        self._optimizer: GaLoreAdamW | None = None

    def prepare(self, model: nn.Module, target_names: list[str]) -> None:
        if self.train_all:
            model.requires_grad_(True)
        self.adapters = {name: model.get_submodule(name) for name in target_names}
        small = [n for n, lin in self.adapters.items() if min(lin.weight.shape) <= self.rank]
        if small:
            raise ConfigError(f"method.rank={self.rank} is not below the smaller side of {small[0]} "
                              f"{tuple(self.adapters[small[0]].weight.shape)}: nothing to project")
        for lin in self.adapters.values():
            lin.requires_grad_(True)

    def build_optimizer(self, model: nn.Module, trainer_cfg) -> torch.optim.Optimizer:
        targets = {id(lin.weight) for lin in self.adapters.values()}
        groups = []
        for group in self.param_groups(model, trainer_cfg.weight_decay):
            projected = [p for p in group["params"] if id(p) in targets]
            rest = [p for p in group["params"] if id(p) not in targets]
            if rest:
                groups.append(dict(group, params=rest))
            if projected:
                groups.append(dict(group, params=projected, galore_rank=self.rank, update_proj_gap=self.gap,
                                   galore_scale=self.scale))
        self._optimizer = GaLoreAdamW(groups, lr=trainer_cfg.lr, eps=self.eps)
        return self._optimizer

    def on_phase_end(self, ctx: TrainContext) -> None:
        opt = self._optimizer
        params = [p for g in opt.param_groups for p in g["params"]]
        adamw = sum(2 * p.numel() * p.element_size() for p in params)
        galore = state_bytes(opt)
        self.optimizer_state_bytes = {"galore": galore, "adamw": adamw, "ratio": round(galore / adamw, 4)}
        ctx.log({f"galore/optimizer_state_{k}": v for k, v in self.optimizer_state_bytes.items()})

    def ranks(self) -> dict[str, int]:
        return {n: self.rank for n in self.adapters}

    def state(self) -> dict:
        out: dict = {"ranks": self.ranks()}
        if self.optimizer_state_bytes:
            out["optimizer_state_bytes"] = self.optimizer_state_bytes
        if self._optimizer is not None:
            out["adapter_stats"] = {n: {"galore/captured": float(self._optimizer.state[lin.weight]["captured"])}
                                    for n, lin in self.adapters.items() if "captured" in self._optimizer.state.get(lin.weight, {})}
        return out
