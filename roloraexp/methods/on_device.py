"""Helpers for method hooks that run at every optimizer step without a host synchronisation.

A step of a low-rank method is launch-bound on a GPU: the adapters' arithmetic is ~2% of the model's,
so what a hook costs is its kernel launches and, far worse, any point where the host waits for the
device (``.item()``, ``float(t)``, ``bool(t)``, ``if t.any():``, ``.tolist()``, ``.cpu()``, a
host-to-device copy of a Python list). The every-step paths of AdaLoRA's allocator, SoRA's proximal
step and WeightLoRA's ω step therefore keep their decisions on the device (``torch.where`` on a device
boolean instead of a Python ``if``) and treat all adapters at once: one flat tensor or
``torch._foreach_*`` over a list instead of a Python loop of small kernels. Host synchronisations are
left to rare events (a resize, WeightLoRA's choice, an evaluation, a log point).
tests/test_step_sync.py fails when one comes back into a step path.
"""
from __future__ import annotations

import functools

import torch


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One device boolean: no inf or NaN in any of ``tensors`` (the max-norm of a finite tensor is
    finite and exact, of one holding inf or NaN it is inf or NaN). Empty tensors (a rank-0 adapter's)
    are finite: the max-norm has no value for them."""
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    return torch.stack(torch._foreach_norm(tensors, float("inf"))).isfinite().all()


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """All of ``tensors`` in one 1-D tensor (one kernel): elementwise work on it is one launch."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(values: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views of a :func:`flat` result with the shapes of ``like`` (no copy)."""
    return [v.view(t.shape) for v, t in zip(values.split([t.numel() for t in like]), like)]


def segment_sums(values: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Sums of consecutive segments of ``values`` of lengths ``sizes``, as one device tensor in a few
    kernels (a cumulative sum read at the segment ends); exact for integer values."""
    csum = torch.nn.functional.pad(values.cumsum(0), (1, 0))
    at = csum.index_select(0, _segment_ends(tuple(sizes), values.device))
    return at[1:] - at[:-1]


@functools.lru_cache(maxsize=32)
def _segment_ends(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    # Copied to the device once per rank configuration (a resize makes a new one), not per step.
    return torch.tensor([0, *sizes]).cumsum(0).to(device)
