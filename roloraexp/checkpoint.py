"""The trainable state of a model (adapters + heads): small, so kept in memory for the best
evaluation and written next to results.json. Adapters load at any rank (checkpoints of another
rank configuration, e.g. LoRA* / AdaLoRA* restarting from the best checkpoint so far)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .adapters import adapters_of


FACTORS = ("lora_A", "lora_B", "gate", "omega")  # what LowRankLinear.set_weights loads, at any rank


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of every trainable tensor plus every adapter's factors (even frozen ones)."""
    state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
    for name, a in adapters_of(model).items():
        for pname in FACTORS:
            p = getattr(a, pname)
            if p is not None:
                state[f"{name}.{pname}"] = p.detach().to("cpu", copy=True)
    return state


@torch.no_grad()
def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    adapters = adapters_of(model)
    for name, a in adapters.items():
        if f"{name}.lora_A" in state:
            a.set_weights(state[f"{name}.lora_A"], state[f"{name}.lora_B"], state.get(f"{name}.gate"))
            if a.omega is not None and f"{name}.omega" in state:
                a.omega.copy_(state[f"{name}.omega"])
    params = dict(model.named_parameters())
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        if owner in adapters and leaf in FACTORS:
            continue  # set above, at the saved rank; an adapter's other tensors (DoRA's magnitude) load below
        params[key].copy_(value.to(params[key]))


def save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = write_tmp(state, path)
    os.replace(tmp, path)


def write_tmp(obj, path: Path) -> Path:
    """``obj`` saved to ``<path>.tmp`` (renamed into place by the caller). Through a Python file, so a
    full or read-only disk raises an OSError naming the file with its errno (torch.save given a path
    raises a RuntimeError with neither); the partial file is removed."""
    tmp = Path(f"{path}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(tmp)) from e
    return tmp
