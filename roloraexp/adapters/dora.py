"""DoRA's weight decomposition (Liu et al. 2024): ``W' = m · (W0 + ΔV) / ‖W0 + ΔV‖_c``.

``‖·‖_c`` is the norm of each output unit's weight row (PEFT: ``weight.norm(dim=1)`` of an
``(out, in)`` Linear weight); the magnitude ``m ∈ R^d_out`` starts at ``‖W0‖_c`` (ΔV = 0 at start,
so W' = W0) and trains with the direction update ΔV. The norm is computed without a graph and
treated as a constant in back-propagation (paper §4.3), as PEFT's ``DoraLinearLayer`` does.

The output is computed as PEFT computes it, so that dropout acts identically::

    h = base(x) + (m/‖V‖ − 1) · W0 x̃ + (m/‖V‖) · ΔV x̃

with ``x̃ = x`` and ``W0 x̃ = base(x) − bias`` when dropout is off (or in eval mode), and ``x̃ =
dropout(x)`` with ``W0 x̃`` recomputed on the dropped-out input when it is on (PEFT's
``DoraLinearVariant.forward`` passes ``base_result=None`` then). The bias is never rescaled.

:class:`WeightDecomposed` adds this to any adapter that provides ``delta_weight()`` (ΔV) and
``delta_output(x)`` (ΔV x): :class:`DoRALinear` is LoRA + a magnitude (ΔV = s·B A), DVoRA's
adapter is VeRA + a magnitude (``adapters/dvora.py``).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .layer import LowRankLinear


class WeightDecomposed:
    """Mixin: put it before the additive adapter class; call ``_add_magnitude()`` at the end of ``__init__``."""

    # The weight norm is computed from the fp32 factors: a run with DoRA keeps autocast under AMP
    # (trainer.amp_mode=cast would hand it bf16 copies; roloraexp/precision.py).
    amp_cast_ok = False

    def _add_magnitude(self) -> None:
        self.magnitude = nn.Parameter(self.weight_norm())
        self._merged_norm: torch.Tensor | None = None  # ‖W0 + ΔV‖_c at merge time, to undo it exactly

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """``‖W0 + ΔV‖_c`` in fp32 (autocast off: a half-precision ΔV would blur small updates), with
        no graph: the constant of paper §4.3."""
        device = self.base.weight.device.type  # "meta" while run() checks a weightless skeleton
        with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
            return (self.base.weight.float() + self.delta_weight().float()).norm(dim=1)

    def adapter_parameters(self):
        yield from super().adapter_parameters()
        yield self.magnitude

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        if isinstance(self.dropout, nn.Identity) or not self.training:
            x_drop = x
            base_term = out - self.base.bias if self.base.bias is not None else out
        else:
            x_drop = self.dropout(x)
            base_term = F.linear(x_drop, self.base.weight)
        scale = self.magnitude / self.weight_norm()
        return out + ((scale - 1) * base_term + scale * self.delta_output(x_drop)).to(out.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            norm = self.weight_norm()
            w = self.base.weight
            w.copy_(((self.magnitude / norm)[:, None] * (w.float() + self.delta_weight().float())).to(w.dtype))
            self._merged_norm, self.merged = norm, True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            w = self.base.weight
            w.copy_((w.float() / (self.magnitude / self._merged_norm)[:, None] - self.delta_weight().float()).to(w.dtype))
            self._merged_norm, self.merged = None, False


class DoRALinear(WeightDecomposed, LowRankLinear):
    """LoRA + a magnitude: ΔV = s·B A (``alpha / r``, or ``alpha / √r`` with rslora); trainable
    ``r (d_in + d_out) + d_out`` per adapter."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, *, rslora: bool = False):
        super().__init__(base, rank, alpha, dropout, rslora=rslora)
        self._add_magnitude()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scaling={self.scaling:g}, magnitude=True"
