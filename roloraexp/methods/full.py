"""Full fine-tuning: every parameter of the model trains; no adapters.

The baseline row of the papers' tables ("FT", "Full Fine-Tuning"; the VeRA and LoRA papers take it
from RoBERTa's own GLUE runs, Liu et al. 2019: AdamW, lr in {1e-5, 2e-5, 3e-5}). Parameters get
one of two learning-rate roles: ``backbone`` (what the pretrained checkpoint provided) and ``head``
(what the task head and newly initialised modules hold), so ``method.group_lr`` can set both;
``conf/method/full.yaml`` gives both 5e-5. ``method=full_ft`` is the same method under the row key
the WeightLoRA table uses.

Nothing merges (the weights themselves change) and nothing is logged per adapter: there are none.
``results.json``'s ``head_params`` counts every trainable parameter here (no adapter parameters).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Method


class FullFineTuning(Method):
    roles = ("backbone", "head")
    backbone_role = "backbone"
    uses_rank = False

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.unfrozen: dict[str, nn.Parameter] = {}
        self._unfrozen_ids: set[int] = set()

    def unfreezes(self, name: str, param: nn.Parameter) -> bool:
        """Which frozen backbone parameters this method trains: all of them."""
        return True

    def prepare(self, model: nn.Module, target_names: list[str]) -> None:
        # target_names (the adapter targets) play no part: the method trains backbone parameters, not adapters.
        self.unfrozen = {n: p for n, p in model.named_parameters() if not p.requires_grad and self.unfreezes(n, p)}
        for p in self.unfrozen.values():
            p.requires_grad_(True)
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()  # fp32 master weights over a half-precision backbone, as the heads get
        self._unfrozen_ids = {id(p) for p in self.unfrozen.values()}

    def param_role(self, name: str, param: nn.Parameter) -> str:
        return self.backbone_role if id(param) in self._unfrozen_ids else "head"
