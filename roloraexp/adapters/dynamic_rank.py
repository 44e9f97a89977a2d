"""DyLoRA's adapter: a LoRA adapter of rank r_max whose forward uses only its first b components,
``W0 x + (α / b) · B[:, :b] A[:b] x`` (Valipour et al. 2023, Algorithm 1).

The method sets ``active_rank`` (b) before every optimizer step and at every evaluation. With
``frozen`` (DyLoRA "Frozen") the components below b are detached in training, so only component b
gets a gradient, as in the reference's ``dynamic.forward`` (huawei-noah/Efficient-NLP,
``DyLoRA/loralib/DyLoRA.py``: ``inputs[:, :rank].detach()``). Its scaling is the same: the
reference multiplies A and B by √(r_max / b) each on top of ``alpha / r_max``, i.e. ``alpha / b``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layer import LowRankLinear, adapter_input


class DynamicRankLinear(LowRankLinear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__(base, rank, alpha, dropout, init="lora")
        self.alpha = float(alpha)
        self.active_rank = rank  # b: components 0..b-1 take part in the forward
        self.frozen = False      # training only: components below b get no gradient

    def set_active_rank(self, b: int, frozen: bool = False) -> None:
        if not 1 <= b <= self.rank:
            raise ValueError(f"active rank must be in [1, {self.rank}], got {b}")
        if self.merged:
            raise RuntimeError("unmerge the adapter before changing its active rank")
        self.active_rank, self.frozen = int(b), bool(frozen)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.active_rank
        A, B = self.lora_A[:b], self.lora_B[:, :b]
        if self.frozen and self.training:
            A = torch.cat([A[:b - 1].detach(), A[b - 1:]])
            B = torch.cat([B[:, :b - 1].detach(), B[:, b - 1:]], 1)
        return A, B

    def delta_weight(self) -> torch.Tensor:
        A, B = self._factors()
        return (B @ A) * (self.alpha / self.active_rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged or self.rank == 0:
            return out
        A, B = self._factors()
        h = F.linear(F.linear(adapter_input(self.dropout(x), A.dtype), A), B)
        return out + (h * (self.alpha / self.active_rank)).to(out.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active_rank={self.active_rank}, frozen={self.frozen}"
