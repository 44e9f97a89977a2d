"""Hydra's adapter (Kim et al. 2023, multi-head low-rank adaptation): two low-rank branches on one
frozen linear layer,

    h = W0 x + b0  +  A_up A_down x  +  B_up B_down (W0 x + b0)

a parallel branch on the layer's input (LoRA's) and a sequential branch on its output. As in the
reference (extremebird/Hydra, ``nlu/src/transformers/models/adapter.py``: ``Hydra``) each branch is a
pair of bias-free linear maps, the down-projection kaiming-uniform (a = √5) and the up-projection
zero, so the model is unchanged at the start; there is no α scaling. The ranks of the branches are
separate (the reference's GLUE scripts: parallel 4, sequential 8).

Merging is exact: ``W' = W0 + A_up A_down + B_up B_down W0`` and ``b' = b0 + B_up B_down b0``.
Unmerging inverts ``I + B_up B_down`` with the Woodbury identity (an r × r solve), so no copy of
W0 is kept.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layer import adapter_input


class HydraLinear(nn.Module):
    gate = omega = None  # what Method's defaults look for on LoRA adapters: neither here

    def __init__(self, base: nn.Linear, parallel_rank: int, sequential_rank: int):
        super().__init__()
        if parallel_rank < 0 or sequential_rank < 0 or parallel_rank + sequential_rank == 0:
            raise ValueError(f"Hydra ranks must be >= 0 and not both 0, got {parallel_rank}, {sequential_rank}")
        self.base = base
        base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.merged = False
        kw = dict(device=base.weight.device, dtype=torch.float32)  # fp32 over a half-precision backbone (AMP casts)
        self.par_down = nn.Parameter(torch.empty(parallel_rank, self.in_features, **kw))
        self.par_up = nn.Parameter(torch.zeros(self.out_features, parallel_rank, **kw))
        self.seq_down = nn.Parameter(torch.empty(sequential_rank, self.out_features, **kw))
        self.seq_up = nn.Parameter(torch.zeros(self.out_features, sequential_rank, **kw))
        with torch.no_grad():
            for down in (self.par_down, self.seq_down):
                if down.numel():
                    nn.init.kaiming_uniform_(down, a=math.sqrt(5))

    @property
    def rank(self) -> int:
        """Both branches' ranks together (what ``ranks`` in results.json shows)."""
        return self.par_down.shape[0] + self.seq_down.shape[0]

    def adapter_parameters(self):
        return iter((self.par_down, self.par_up, self.seq_down, self.seq_up))

    def num_adapter_params(self) -> int:
        return sum(p.numel() for p in self.adapter_parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        dt = self.par_down.dtype
        par = F.linear(F.linear(adapter_input(x, dt), self.par_down), self.par_up)
        seq = F.linear(F.linear(adapter_input(out, dt), self.seq_down), self.seq_up)
        return out + (par + seq).to(out.dtype)

    # ------------------------------------------------------------------ merge
    def branch_norms(self) -> dict[str, float]:
        """‖A_up A_down‖_F and ‖B_up B_down‖_F from r × r Gram matrices (no d_out × d product)."""
        def norm(up, down):
            return float(((up.T @ up) * (down @ down.T)).sum().clamp_min(0).sqrt())
        with torch.no_grad():
            return {"hydra/parallel_norm": norm(self.par_up, self.par_down),
                    "hydra/sequential_norm": norm(self.seq_up, self.seq_down)}

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        W, b = self.base.weight, self.base.bias
        W0 = W.float()
        W.copy_(W0 + self.par_up @ self.par_down + self.seq_up @ (self.seq_down @ W0))
        if b is not None:
            b.copy_(b.float() + self.seq_up @ (self.seq_down @ b.float()))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        W, b = self.base.weight, self.base.bias
        r = self.seq_down.shape[0]
        # (I + U D)^-1 = I - U (I_r + D U)^-1 D  (Woodbury), applied to W' - A_up A_down and to b'.
        core = torch.linalg.inv(torch.eye(r, device=W.device) + self.seq_down @ self.seq_up)

        def solve(M: torch.Tensor) -> torch.Tensor:
            return M - self.seq_up @ (core @ (self.seq_down @ M))

        W.copy_(solve(W.float() - self.par_up @ self.par_down))
        if b is not None:
            b.copy_(solve(b.float().unsqueeze(1)).squeeze(1))
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, parallel_rank={self.par_down.shape[0]}, "
                f"sequential_rank={self.seq_down.shape[0]}")
