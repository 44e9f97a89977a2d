"""HAdapter and PAdapter (Houlsby et al. 2019; Pfeiffer et al. 2021), the bottleneck-adapter rows
of the AdaLoRA tables: ``method=hadapter`` inserts an adapter after the attention output and after
the FFN of every block, ``method=padapter`` after the FFN only
(:class:`~roloraexp.adapters.bottleneck.BottleneckAdapter`; placement, activations and
initialisation as AdapterHub's ``DoubleSeqBnConfig`` / ``SeqBnConfig``). The two are one method with
a placement switch, so they share this module.

Size: ``method.bottleneck`` (m) or, when it is null, ``hidden_size // method.reduction_factor``
(AdapterHub's rule; its default factor is 16). Each adapter costs ``2·d·m + m + d`` parameters.
The AdaLoRA paper's budgets on DeBERTa-v3-base (d = 768, 12 blocks) are m = 8 / 16 / 32 for
HAdapter (0.31M / 0.61M / 1.22M) and m = 16 / 32 / 64 for PAdapter (0.30M / 0.60M / 1.18M).

Targets are the sub-layer output blocks, named in ``conf/method/{hadapter,padapter}.yaml`` by their
``dense`` layers (the injection finds linear layers; the adapter wraps the block around it).
BERT, RoBERTa and DeBERTa share the block layout (``dense → dropout → LayerNorm(h + input)``);
other architectures stop with one line.
"""
from __future__ import annotations

from torch import nn

from ..adapters.bottleneck import INITS, BottleneckAdapter
from ..errors import ConfigError
from .base import Method


class Bottleneck(Method):
    pfeiffer = False
    activation = "swish"

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        self.size, self.factor = cfg.get("bottleneck"), cfg.get("reduction_factor")
        if self.size is None and self.factor is None:
            raise ConfigError(f"method={cfg.name} needs method.bottleneck or method.reduction_factor")
        if self.size is not None and int(self.size) < 1:
            raise ConfigError(f"method.bottleneck must be a positive integer, got {self.size}")
        if self.size is None and float(self.factor) <= 0:
            raise ConfigError(f"method.reduction_factor must be > 0, got {self.factor}")
        self.init = cfg.get("init", "bert")
        if self.init not in INITS:
            raise ConfigError(f"method.init must be one of {', '.join(INITS)}, got {self.init!r}")
        self.activation = cfg.get("activation") or self.activation

    def prepare(self, model: nn.Module, target_names: list[str]) -> None:
        self.adapters = {}
        for name in target_names:
            block_name, _, leaf = name.rpartition(".")
            block = model.get_submodule(block_name) if block_name else model
            if leaf != "dense" or not all(hasattr(block, a) for a in ("dropout", "LayerNorm")):
                raise ConfigError(f"method={self.cfg.name} adapts sub-layer output blocks (dense, dropout, LayerNorm: "
                                  f"BERT, RoBERTa, DeBERTa); {name} is not the dense layer of one")
            d = block.dense.out_features
            size = int(self.size) if self.size is not None else max(1, int(d // float(self.factor)))
            adapter = BottleneckAdapter(block, size, pfeiffer=self.pfeiffer, activation=self.activation, init=self.init)
            parent_name, _, child = block_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, adapter)
            self.adapters[block_name] = adapter

    def state(self) -> dict:
        out = super().state()
        out["adapter_stats"] = {n: {"bottleneck/up_norm": float(a.up.weight.detach().norm())}
                                for n, a in self.adapters.items()}
        return out


class HAdapter(Bottleneck):
    """Houlsby: after the attention output and after the FFN, swish."""


class PAdapter(Bottleneck):
    """Pfeiffer: after the FFN only, relu."""

    pfeiffer = True
    activation = "relu"
