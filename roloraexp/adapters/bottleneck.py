"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): ``x + W_up σ(W_down x)`` inserted
into a transformer sub-layer's output block (``dense → dropout → LayerNorm(h + input)``: BERT's,
RoBERTa's and DeBERTa's ``attention.output`` and ``output``).

Placement follows AdapterHub (PyPI ``adapters``, ``methods/bottleneck.py`` and the configs
``DoubleSeqBnConfig`` / ``SeqBnConfig``), with h the sub-layer's output after its dropout:

* Houlsby (``original_ln_before=False``): ``LN(h + W_up σ(W_down h) + input)``, σ = swish, in both
  the attention and the FFN output blocks;
* Pfeiffer (``original_ln_before=True``, ``residual_before_ln=True``): ``x = LN(h + input)``, then
  ``LN(h + W_up σ(W_down x) + input)`` (the block's own LayerNorm is applied twice, as AdapterHub
  does), σ = relu, in the FFN output block only.

``W_down`` and ``W_up`` carry biases. Initialisation: ``bert`` (AdapterHub's default: weights
N(0, 0.02), biases 0) or ``houlsby`` (the paper's near-identity: weights truncated N(0, 0.01²) within
±0.02, biases 0), so ``W_up`` is near zero and the model starts near the pretrained one.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.activations import get_activation

from .layer import adapter_input

INITS = ("bert", "houlsby")


class BottleneckAdapter(nn.Module):
    """Wraps a sub-layer output block (``dense``, ``dropout``, ``LayerNorm``; called as
    ``block(hidden_states, input_tensor)``) and inserts one bottleneck adapter into it."""

    gate = omega = None  # what Method's defaults look for on LoRA adapters: neither here

    def __init__(self, block: nn.Module, bottleneck: int, *, pfeiffer: bool, activation: str, init: str = "bert"):
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f"bottleneck size must be >= 1, got {bottleneck}")
        if init not in INITS:
            raise ValueError(f"unknown bottleneck init {init!r} ({' | '.join(INITS)})")
        self.block, self.pfeiffer = block, pfeiffer
        d = block.dense.out_features
        self.in_features = self.out_features = d
        kw = dict(device=block.dense.weight.device, dtype=torch.float32)  # fp32 over a half-precision backbone
        self.down = nn.Linear(d, bottleneck, **kw)
        self.up = nn.Linear(bottleneck, d, **kw)
        self.act = get_activation(activation)
        with torch.no_grad():
            for lin in (self.down, self.up):
                if init == "bert":
                    nn.init.normal_(lin.weight, std=0.02)
                else:
                    nn.init.trunc_normal_(lin.weight, std=1e-2, a=-2e-2, b=2e-2)
                nn.init.zeros_(lin.bias)

    @property
    def rank(self) -> int:
        """The bottleneck size (what ``ranks`` in results.json shows)."""
        return self.down.out_features

    def adapter_parameters(self):
        return iter((self.down.weight, self.down.bias, self.up.weight, self.up.bias))

    def num_adapter_params(self) -> int:
        return sum(p.numel() for p in self.adapter_parameters() if p.requires_grad)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """``W_up σ(W_down x)`` (without the residual)."""
        return self.up(self.act(self.down(adapter_input(x, self.down.weight.dtype)))).to(x.dtype)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        block = self.block
        h = block.dropout(block.dense(hidden_states))
        x = block.LayerNorm(h + input_tensor) if self.pfeiffer else h
        return block.LayerNorm(h + self.delta(x) + input_tensor)

    def extra_repr(self) -> str:
        return f"d={self.in_features}, bottleneck={self.rank}, {'pfeiffer' if self.pfeiffer else 'houlsby'}"
