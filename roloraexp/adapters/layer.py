"""The one low-rank adapter every method uses: ``ΔW = s · ω · B diag(g) A`` around a frozen nn.Linear.

Shapes follow the papers: ``A (r × d_in)``, ``B (d_out × r)``, ``g (r,)``, ``ω`` a scalar.
``g`` (a trainable diagonal: ROLoRA's generic form, AdaLoRA's Λ, SoRA's gate) and ``ω``
(WeightLoRA's adapter weight) are optional; absent means "identically one".

Resizing replaces the parameters (a budget is only honoured when tensors really shrink) and
returns :class:`Remap` records so the optimizer state can follow (see ``optim_state.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .merge import MergeByDelta


@dataclass
class Remap:
    """How one parameter was replaced by a resize, so its optimizer state can be carried over.

    Entries ``src_index`` (along ``dim``) of the old state move to ``dst_index`` of the new one;
    the rest of the new state starts at zero. ``src_index=None`` means "nothing carries over";
    ``new=None`` means the parameter is gone.
    """

    old: nn.Parameter
    new: nn.Parameter | None
    dim: int = 0
    src_index: torch.Tensor | None = None
    dst_index: torch.Tensor | None = None


def adapter_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The input an adapter's fp32 factors see. Without AMP a half-precision backbone meets fp32
    adapters: compute the adapter in fp32. Under AMP, autocast casts the small factors down instead:
    no full-precision copy of the activations is ever made."""
    return x if torch.is_autocast_enabled(x.device.type) else x.to(dtype)


class LowRankLinear(MergeByDelta, nn.Module):  # merge() / unmerge(): W ← W ± ΔW
    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        *,
        gate: bool = False,
        omega: bool = False,
        init: str = "lora",
        rslora: bool = False,
    ):
        super().__init__()
        if rank < 0:
            raise ValueError(f"adapter rank must be >= 0, got {rank}")
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r0 = rank
        # Scaling is fixed at creation (alpha / r0): AdaLoRA's authors found rescaling after
        # pruning hurts, and a fixed s keeps ΔW unchanged across resizes.
        self.scaling = alpha / (math.sqrt(rank) if rslora else rank) if rank > 0 else 0.0
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        # Adapter weights stay in fp32 even over a half-precision backbone (AMP handles the casts).
        kw = dict(device=base.weight.device, dtype=torch.float32)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kw))
        self.gate = nn.Parameter(torch.ones(rank, **kw)) if gate else None
        self.omega = nn.Parameter(torch.ones((), **kw)) if omega else None
        self.reset_parameters(init)

    # ------------------------------------------------------------------ init
    def reset_parameters(self, init: str = "lora") -> None:
        with torch.no_grad():
            if init == "lora":  # Hu et al.: A kaiming-uniform, B zero, gate one
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
                self.lora_B.zero_()
                if self.gate is not None:
                    self.gate.fill_(1.0)
            elif init == "adalora":  # Zhang et al.: A, B ~ N(0, 0.02), Λ = 0
                nn.init.normal_(self.lora_A, std=0.02)
                nn.init.normal_(self.lora_B, std=0.02)
                if self.gate is not None:
                    self.gate.zero_()
            else:
                raise ValueError(f"unknown adapter init {init!r} (lora | adalora)")

    # ------------------------------------------------------------- accessors
    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    def rank_cost(self) -> int:
        """Trainable parameters one rank component costs: a column of B, a row of A (+ a gate)."""
        return self.in_features + self.out_features + (1 if self.gate is not None else 0)

    def num_adapter_params(self) -> int:
        return sum(p.numel() for p in self.adapter_parameters() if p.requires_grad)

    def adapter_parameters(self):
        for p in (self.lora_A, self.lora_B, self.gate, self.omega):
            if p is not None:
                yield p

    def _factor(self) -> torch.Tensor | float:
        return self.scaling * self.omega if self.omega is not None else self.scaling

    def delta_weight(self) -> torch.Tensor:
        B = self.lora_B * self.gate if self.gate is not None else self.lora_B
        return (B @ self.lora_A) * self._factor()

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged or self.rank == 0:
            return out
        # ΔW x added into the base output by one addmm, with g and s·ω folded into B (a d_out × r
        # tensor): two fewer passes over the activations than scaling h and the delta, one rounding.
        h = F.linear(adapter_input(self.dropout(x), self.lora_A.dtype), self.lora_A)
        B = self.lora_B * (self.gate * self._factor()) if self.gate is not None else self.lora_B * self._factor()
        flat = torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]).to(out.dtype), B.t().to(out.dtype))
        return flat.view(out.shape)

    def delta_output(self, x: torch.Tensor) -> torch.Tensor:
        """ΔW x for an ``x`` that has been through dropout already (DoRA reuses the dropped-out input
        for its magnitude term); in fp32, or in the autocast dtype under AMP."""
        h = F.linear(adapter_input(x, self.lora_A.dtype), self.lora_A)
        if self.gate is not None:
            h = h * self.gate
        return F.linear(h, self.lora_B) * self._factor()

    # ------------------------------------------------------------ resize
    def _replace(self, name: str, value: torch.Tensor, dim: int, src, dst) -> Remap:
        old = getattr(self, name)
        new = nn.Parameter(value.contiguous(), requires_grad=old.requires_grad)
        setattr(self, name, new)
        return Remap(old, new, dim, src, dst)

    @torch.no_grad()
    def keep(self, indices) -> list[Remap]:
        """Shrink to the rank components ``indices`` (columns of B, rows of A, entries of g)."""
        if self.merged:
            raise RuntimeError("unmerge an adapter before resizing it")
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.lora_A.device).flatten()
        pos = torch.arange(len(idx), device=idx.device)
        remaps = [
            self._replace("lora_A", self.lora_A[idx], 0, idx, pos),
            self._replace("lora_B", self.lora_B[:, idx], 1, idx, pos),
        ]
        if self.gate is not None:
            remaps.append(self._replace("gate", self.gate[idx], 0, idx, pos))
        return remaps

    @torch.no_grad()
    def grow(self, n_new: int, init: str = "lora", generator: torch.Generator | None = None) -> list[Remap]:
        """Append ``n_new`` components whose product is zero, so ΔW is unchanged.

        ``lora``: new A rows kaiming-uniform, new B columns zero (LoRA's own convention);
        ``adalora``: new A rows and B columns ~ N(0, 0.02), new gates zero (AdaLoRA's init);
        ``gaussian_zero``: new B columns Gaussian, new A rows zero (WeightLoRA+ paper);
        ``qr``: B = QR, then B ← [Q, (I − QQᵀ)N], A ← [R A; 0]: old directions orthonormal,
        new ones orthogonal to them (WeightLoRA+ paper). New gates start at one (zero for adalora).
        """
        if self.merged:
            raise RuntimeError("unmerge an adapter before resizing it")
        if n_new <= 0:
            return []
        r, dev = self.rank, self.lora_A.device
        A, B = self.lora_A.detach(), self.lora_B.detach()
        carried = torch.arange(r, device=dev)
        gen = dict(generator=generator) if generator is not None else {}
        if init == "lora":
            A_new = torch.empty(n_new, self.in_features, device=dev)
            bound = 1.0 / math.sqrt(self.in_features)  # kaiming_uniform(a=√5) on a fan_in of d_in
            A_new.uniform_(-bound, bound, **gen)
            A2, B2 = torch.cat([A, A_new]), torch.cat([B, B.new_zeros(self.out_features, n_new)], 1)
        elif init == "adalora":
            if self.gate is None:
                raise ValueError("adalora extension needs a gate (its zero gate is what keeps ΔW unchanged)")
            A2 = torch.cat([A, torch.randn(n_new, self.in_features, device=dev, **gen) * 0.02])
            B2 = torch.cat([B, torch.randn(self.out_features, n_new, device=dev, **gen) * 0.02], 1)
        elif init == "gaussian_zero":
            # The paper's "random Gaussian"; scaled by 1/√d_out (our choice: unit-norm columns in
            # expectation, like the orthonormal ones qr appends), which ΔW does not see (A's rows are 0).
            N = torch.randn(self.out_features, n_new, device=dev, **gen) / math.sqrt(self.out_features)
            A2, B2 = torch.cat([A, A.new_zeros(n_new, self.in_features)]), torch.cat([B, N], 1)
        elif init == "qr":
            G = self.gate.detach() if self.gate is not None else None
            Bg = B * G if G is not None else B  # fold the gate into B so B diag(g) A = Q R A
            Q, R = torch.linalg.qr(Bg, mode="reduced")
            N = torch.randn(self.out_features, n_new, device=dev, **gen)
            N = N - Q @ (Q.T @ N)
            N = N / N.norm(dim=0, keepdim=True).clamp_min(1e-12)  # unit columns (the paper leaves them unnormalised)
            A2 = torch.cat([R @ A, A.new_zeros(n_new, self.in_features)])
            B2 = torch.cat([Q, N], 1)
            if G is not None:
                self.gate.fill_(1.0)
            carried = None  # the old components were re-parametrised: their Adam moments no longer apply
        else:
            raise ValueError(f"unknown extension init {init!r} (lora | adalora | gaussian_zero | qr)")
        remaps = [
            self._replace("lora_A", A2, 0, carried, carried),
            self._replace("lora_B", B2, 1, carried, carried),
        ]
        if self.gate is not None:
            new_gate = self.gate.new_zeros(n_new) if init == "adalora" else self.gate.new_ones(n_new)
            g2 = torch.cat([self.gate.detach(), new_gate])
            remaps.append(self._replace("gate", g2, 0, carried, carried))
        return remaps

    @torch.no_grad()
    def disconnect(self) -> list[Remap]:
        """Remove the adapter's trainable tensors: no parameters, gradients or optimizer state remain."""
        remaps = self.keep([])
        for r in remaps:
            r.new.requires_grad_(False)
            r.new = None  # gone from the optimizer, not just empty
        if self.omega is not None:
            self.omega.requires_grad_(False)
        return remaps

    @torch.no_grad()
    def set_weights(self, A: torch.Tensor, B: torch.Tensor, gate: torch.Tensor | None = None) -> list[Remap]:
        """Replace the factors with given tensors (any rank): loading a checkpoint of another shape."""
        remaps = [self._replace("lora_A", A.to(self.lora_A), 0, None, None),
                  self._replace("lora_B", B.to(self.lora_B), 1, None, None)]
        if self.gate is not None:
            remaps.append(self._replace("gate", gate.to(self.gate), 0, None, None))
        return remaps

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scaling={self.scaling:g}, "
                f"gate={self.gate is not None}, omega={self.omega is not None}")
