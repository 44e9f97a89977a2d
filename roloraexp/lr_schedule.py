"""The trainer's learning-rate schedule: linear warm-up, then linear decay to 0 at the phase's end.

The same function as transformers' ``get_linear_schedule_with_warmup`` (tests/test_lr_schedule.py
checks every step against it), written here because importing ``transformers.optimization`` pulls in
peft and bitsandbytes, whose import logs warnings on every run and costs a second of start-up.
"""
from __future__ import annotations

from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _factor(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


def linear_warmup_decay(optimizer: Optimizer, warmup: int, total: int) -> LambdaLR:
    """``LambdaLR`` that scales each group's lr by step/warmup during warm-up, then decays it linearly
    to 0 at ``total`` steps. A picklable factor (functools.partial), so its state checkpoints."""
    return LambdaLR(optimizer, partial(_factor, warmup=warmup, total=total))
