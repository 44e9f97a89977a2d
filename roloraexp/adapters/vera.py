"""VeRA's adapter (Kopiczko et al. 2024): ``h = W0 x + Λ_b B Λ_d A x`` around a frozen nn.Linear.

``A (r × d_in)`` and ``B (d_out × r)`` are frozen random matrices shared by every adapted layer of
the model: ONE pair sized to the largest ``d_in`` / ``d_out`` among the targets, each layer using
the slices ``A[:, :d_in]`` and ``B[:d_out, :]`` (as PEFT's ``VeraModel`` does). The pair is drawn
from ``torch.Generator().manual_seed(seed)``, A first, then B, each Kaiming-uniform with fan-in =
its second dimension (bound ``√(6 / fan_in)``): PEFT's ``_kaiming_init``, so the same seed gives
PEFT's ``vera_A`` / ``vera_B`` bit for bit. Only ``Λ_d = diag(d)`` (``d ∈ R^r``, starting at
``d_initial`` = 0.1) and ``Λ_b = diag(b)`` (``b ∈ R^d_out``, starting at 0, so ΔW = 0 at start)
train: ``r + d_out`` parameters per adapter. No α scaling (the paper has none; PEFT neither).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layer import adapter_input
from .merge import MergeByDelta


class SharedProjection(nn.Module):
    """The frozen random pair all VeRA adapters of one model slice. One module object, held by every
    adapter, so ``model.to(device)`` moves it once and the adapters keep sharing it. Its buffers are
    not part of ``model.state_dict()`` (they would appear once per adapter): they are regenerated from
    the seed, and saved through the method's ``state_dict()`` when ``method.save_projection`` is set."""

    def __init__(self, rank: int, max_in: int, max_out: int, seed: int):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"VeRA rank must be positive, got {rank}")
        self.seed = seed
        gen = torch.Generator(device="cpu").manual_seed(seed)
        A, B = torch.empty(rank, max_in), torch.empty(max_out, rank)
        # kaiming_uniform_(a=0): gain √2, bound √3·√2/√fan_in, fan_in = size(1): PEFT's _kaiming_init.
        nn.init.kaiming_uniform_(A, a=0.0, generator=gen)
        nn.init.kaiming_uniform_(B, a=0.0, generator=gen)
        self.register_buffer("A", A, persistent=False)
        self.register_buffer("B", B, persistent=False)

    @classmethod
    def for_layers(cls, linears, rank: int, seed: int) -> "SharedProjection":
        """The pair sized to the largest input and output dimensions among ``linears``."""
        linears = list(linears)
        proj = cls(rank, max(m.in_features for m in linears), max(m.out_features for m in linears), seed)
        return proj.to(linears[0].weight.device)

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def slices(self, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A[:, :d_in], self.B[:d_out, :]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"A": self.A.detach().cpu().clone(), "B": self.B.detach().cpu().clone()}

    @torch.no_grad()
    def load_tensors(self, saved: dict[str, torch.Tensor]) -> None:
        if saved["A"].shape != self.A.shape or saved["B"].shape != self.B.shape:
            raise ValueError(f"saved VeRA projection has shapes {tuple(saved['A'].shape)} / {tuple(saved['B'].shape)}, "
                             f"this model needs {tuple(self.A.shape)} / {tuple(self.B.shape)}")
        self.A.copy_(saved["A"])
        self.B.copy_(saved["B"])

    def extra_repr(self) -> str:
        return f"rank={self.rank}, max_in={self.A.shape[1]}, max_out={self.B.shape[0]}, seed={self.seed}"


class VeRALinear(MergeByDelta, nn.Module):
    # Neither WeightLoRA's ω nor a rank gate: the methods' shared code reads these from every adapter.
    omega = None
    gate = None

    def __init__(self, base: nn.Linear, projection: SharedProjection, d_initial: float = 0.1, dropout: float = 0.0):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        if projection.A.shape[1] < self.in_features or projection.B.shape[0] < self.out_features:
            raise ValueError(f"the shared VeRA projection ({tuple(projection.A.shape)}, {tuple(projection.B.shape)}) is "
                             f"smaller than this layer ({self.in_features} -> {self.out_features})")
        self.projection = projection
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        # The vectors stay in fp32 over a half-precision backbone, like LowRankLinear's factors.
        kw = dict(device=base.weight.device, dtype=torch.float32)
        self.lambda_d = nn.Parameter(torch.full((projection.rank,), float(d_initial), **kw))
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, **kw))

    @property
    def rank(self) -> int:
        return self.projection.rank

    def adapter_parameters(self):
        yield self.lambda_d
        yield self.lambda_b

    def num_adapter_params(self) -> int:
        return sum(p.numel() for p in self.adapter_parameters() if p.requires_grad)

    def delta_weight(self) -> torch.Tensor:
        A, B = self.projection.slices(self.in_features, self.out_features)
        return (self.lambda_b[:, None] * B.to(self.lambda_b)) @ (self.lambda_d[:, None] * A.to(self.lambda_d))

    def delta_output(self, x: torch.Tensor) -> torch.Tensor:
        """Λ_b B Λ_d A x for an ``x`` that has been through dropout already (PEFT's order of operations)."""
        A, B = self.projection.slices(self.in_features, self.out_features)
        x = adapter_input(x, self.lambda_d.dtype)
        # The shared matrices are fp32 buffers: cast to the compute dtype here (autocast would, per op;
        # under trainer.amp_mode=cast nothing else does).
        return self.lambda_b * F.linear(self.lambda_d * F.linear(x, A.to(x.dtype)), B.to(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.delta_output(self.dropout(x)).to(out.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}"
