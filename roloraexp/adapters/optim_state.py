"""Make an optimizer follow a resize: swap parameters and slice / pad their state."""
from __future__ import annotations

import logging

import torch

from .layer import Remap

log = logging.getLogger(__name__)


def _carry(value, remap: Remap):
    # Per-element state (Adam's moments) has the parameter's shape: the surviving components'
    # entries move, new components start at zero.
    if not torch.is_tensor(value) or value.shape != remap.old.shape:
        return value
    fresh = torch.zeros_like(remap.new)
    if remap.src_index is not None and len(remap.src_index):
        fresh.index_copy_(remap.dim, remap.dst_index, value.index_select(remap.dim, remap.src_index))
    return fresh


def _grows(remap: Remap) -> bool:
    """Does the new tensor hold components that carry no state (appended by a grow)?"""
    return remap.dst_index is not None and len(remap.dst_index) < remap.new.shape[remap.dim]


def _carry_step(step: torch.Tensor, remap: Remap, per_component: bool) -> torch.Tensor:
    """Adam's step count. Nothing carried over: bias correction restarts with the moments. A grow
    under an optimizer that keeps a step per component (ComponentAdamW): the carried components
    keep their count, the new ones start at 0. A shrink or reorder keeps one count for all."""
    if remap.src_index is None:
        return torch.zeros((), dtype=step.dtype, device=step.device)
    if step.ndim == 0 and not (per_component and _grows(remap)):
        return step
    shape = [1] * remap.new.ndim
    shape[remap.dim] = remap.new.shape[remap.dim]
    fresh = torch.zeros(shape, dtype=step.dtype, device=step.device)
    old = step if step.ndim else step.expand([remap.old.shape[remap.dim] if d == remap.dim else 1
                                              for d in range(remap.old.ndim)])
    if len(remap.src_index):
        src, dst = remap.src_index.to(step.device), remap.dst_index.to(step.device)
        fresh.index_copy_(remap.dim, dst, old.index_select(remap.dim, src))
    return fresh


def apply_remaps(optimizer, remaps: list[Remap]) -> None:
    """Replace ``remap.old`` by ``remap.new`` in every param group (dropping it when ``new`` is None)
    and carry the surviving components' state. Accepts accelerate's wrapped optimizers too."""
    opt = getattr(optimizer, "optimizer", optimizer)
    by_id = {id(r.old): r for r in remaps}
    if not by_id:
        return
    for group in opt.param_groups:
        params = []
        for p in group["params"]:
            r = by_id.get(id(p))
            if r is None:
                params.append(p)
            elif r.new is not None:
                params.append(r.new)
        group["params"] = params
    per_component = getattr(opt, "per_component_step", False)
    for r in remaps:
        state = opt.state.pop(r.old, None)
        if not state or r.new is None:
            continue
        if not per_component and _grows(r) and r.src_index is not None and len(r.src_index):
            log.warning("%s keeps one Adam step per tensor: the components a grow appended share the tensor's "
                        "step and skip bias correction (first updates several times lr); build the optimizer "
                        "as roloraexp.adapters.ComponentAdamW", type(opt).__name__)
        opt.state[r.new] = {k: _carry_step(v, r, per_component) if k == "step" and torch.is_tensor(v) else _carry(v, r)
                            for k, v in state.items()}
