"""Hydra (Kim et al. 2023, "Hydra: Multi-head low-rank adaptation"): a parallel and a sequential
low-rank branch on each target linear layer, ``h = W0 x + b0 + A_up A_down x + B_up B_down (W0 x + b0)``
(:class:`~roloraexp.adapters.hydra_linear.HydraLinear`), trained in one phase like LoRA.

(The module is not called ``hydra.py`` so it never shadows the Hydra config package.)

Targets default to the paper's "Hydra-MLP": the FFN's output projection of every block, as the
reference code places it (extremebird/Hydra, ``nlu/src/transformers/models/roberta/modeling_roberta.py``:
``RobertaOutput``, whose dense maps intermediate_size → hidden_size). ``conf/method/hydra.yaml``
names it per architecture; for BERT, RoBERTa and DeBERTa by a full-name pattern, since the suffix
``output.dense`` also ends ``attention.output.dense``. Ranks: ``method.parallel_rank`` (A, default 4)
and ``method.sequential_rank`` (B, default 8), the reference's GLUE scripts' values, which give
the 0.3M parameters of the slides' table on RoBERTa-base (12 × (4·(3072+768) + 8·(768+768)) = 331,776).

(The reference's ``RobertaOutput.__init__`` sets ``self.apply_hyra = True``, a typo that leaves
``apply_hydra`` False, so its forward never calls the branches; we implement the paper's equation.)
"""
from __future__ import annotations

from torch import nn

from ..adapters.hydra_linear import HydraLinear
from ..errors import ConfigError
from .base import Method


class HydraLoRA(Method):
    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.parallel_rank, self.sequential_rank = int(cfg.parallel_rank), int(cfg.sequential_rank)
        if min(self.parallel_rank, self.sequential_rank) < 0 or self.parallel_rank + self.sequential_rank == 0:
            raise ConfigError(f"method.parallel_rank and method.sequential_rank must be >= 0 and not both 0, got "
                              f"{self.parallel_rank} and {self.sequential_rank}")

    def make_adapter(self, name: str, linear: nn.Linear) -> HydraLinear:
        return HydraLinear(linear, self.parallel_rank, self.sequential_rank)

    def state(self) -> dict:
        out = super().state()
        out["adapter_stats"] = {n: a.branch_norms() for n, a in self.adapters.items()}
        return out
