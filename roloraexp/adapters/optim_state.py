"""Make an optimizer follow a resize: swap parameters and slice / pad their state."""
from __future__ import annotations

import torch

from .layer import Remap


def _carry(value, remap: Remap):
    # Per-element state (Adam's moments) has the parameter's shape. Adam's scalar step carries as
    # is, unless nothing carries over: then its bias correction must restart with the moments.
    # (Adam keeps one step per tensor, so components appended by a grow share the old step and
    # start without bias correction: their first updates are a few times lr, then settle.)
    if not torch.is_tensor(value) or value.shape != remap.old.shape:
        if remap.src_index is None and torch.is_tensor(value) and value.ndim == 0:
            return torch.zeros_like(value)
        return value
    fresh = torch.zeros_like(remap.new)
    if remap.src_index is not None and len(remap.src_index):
        fresh.index_copy_(remap.dim, remap.dst_index, value.index_select(remap.dim, remap.src_index))
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
    for r in remaps:
        state = opt.state.pop(r.old, None)
        if state and r.new is not None:
            opt.state[r.new] = {k: _carry(v, r) for k, v in state.items()}
