"""DVoRA's adapter (Liu et al. 2024, the DoRA paper's DoRA + VeRA variant, MT-Bench Table 5): DoRA's
weight decomposition whose direction update is VeRA's ``ΔV = Λ_b B Λ_d A`` (shared frozen random
A, B; trainable d, b), plus DoRA's magnitude m.

``W' = m · (W0 + Λ_b B Λ_d A) / ‖W0 + Λ_b B Λ_d A‖_c``; trainable ``r + 2·d_out`` per adapter
(d, b, m). PEFT has no DVoRA: the tests check it against DoRA's formula with VeRA's ΔV by hand.
"""
from __future__ import annotations

from torch import nn

from .dora import WeightDecomposed
from .vera import SharedProjection, VeRALinear


class DVoRALinear(WeightDecomposed, VeRALinear):
    def __init__(self, base: nn.Linear, projection: SharedProjection, d_initial: float = 0.1, dropout: float = 0.0):
        super().__init__(base, projection, d_initial, dropout)
        self._add_magnitude()

    def extra_repr(self) -> str:
        return super().extra_repr() + ", magnitude=True"
