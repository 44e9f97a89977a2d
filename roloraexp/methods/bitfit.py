"""BitFit (Ben Zaken et al. 2022): only the bias terms of the backbone train, with the task head.

Every ``*.bias`` parameter of the pretrained backbone is unfrozen: query/key/value, attention
output, intermediate and output dense layers, and the LayerNorms' β (the paper's b^q, b^k, b^v,
b^m1..m3, b^LN1, b^LN2). Learning-rate roles: ``bias`` and ``head`` (``method.group_lr``); the
paper searches lr in {1e-4, 4e-4, 7e-4, 1e-3} over many epochs, ``conf/method/bitfit.yaml`` takes
1e-2 (short runs learn nothing at 1e-3; the yaml says what was measured).

Backbones without biases (Llama: bias-free linears and RMSNorm) leave only the head training; the
run says so in its log. Per bias tensor the run logs ``bitfit/delta_norm/<parameter>`` = ‖b − b₀‖
(b₀ is read from the pretrained model at ``prepare``, so a resumed run recomputes it). Nothing
merges: the biases themselves change.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .full import FullFineTuning

log = logging.getLogger(__name__)


class BitFit(FullFineTuning):
    roles = ("bias", "head")
    backbone_role = "bias"

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.initial: dict[str, torch.Tensor] = {}  # b₀ per unfrozen bias, read at prepare

    def unfreezes(self, name: str, param: nn.Parameter) -> bool:
        return name.endswith("bias")

    def prepare(self, model: nn.Module, target_names: list[str]) -> None:
        super().prepare(model, target_names)
        skeleton = any(p.is_meta for p in model.parameters())  # run()'s weightless check: nothing is frozen there
        if not self.unfrozen and not skeleton:
            log.warning("method=bitfit: %s has no bias terms outside its head; only the head trains",
                        type(model).__name__)
        self.initial = {} if skeleton else {n: p.detach().to("cpu", copy=True) for n, p in self.unfrozen.items()}

    @torch.no_grad()
    def state(self) -> dict:
        stats = {n: {"bitfit/delta_norm": (p.detach().cpu() - self.initial[n]).norm().item()}
                 for n, p in self.unfrozen.items()}
        return {**super().state(), "adapter_stats": stats}
