"""VeRA (Kopiczko et al. 2024, "Vector-based Random Matrix Adaptation"): ``h = W0 x + Λ_b B Λ_d A x``.

One frozen random pair A (r × max d_in), B (max d_out × r) for the whole model, sliced per layer
and drawn from ``method.projection_seed`` exactly as PEFT's ``VeraConfig(projection_prng_key=...)``
draws it (``adapters/vera.py``); per adapter only ``d`` (r values, start ``method.d_initial`` = 0.1)
and ``b`` (d_out values, start 0) train. No α scaling.

Learning rates: the paper tunes the VeRA vectors' and the classification head's apart (App. Table 8,
e.g. RoBERTa-base MRPC: head 4e-3, VeRA 1e-2); ``method.group_lr: {adapter: ..., head: ...}`` carries
both (base.py's per-role groups), so ``trainer.lr`` only applies to a role left out of it. The YAML's
defaults (3e-2 / 1e-2) are the top of the paper's ranges: short runs learn nothing below them.

``method.save_projection`` (PEFT's ``save_projection``): the pair is part of the method's
``state_dict()`` (so a checkpoint carries it, bit for bit); otherwise a resume regenerates it from
the seed. Targets of different shapes share the one pair through its slices, as in PEFT 0.21.
"""
from __future__ import annotations

from torch import nn

from ..adapters import inject_adapters
from ..adapters.vera import SharedProjection, VeRALinear
from ..errors import ConfigError
from .base import Method


def vera_stats(adapter) -> dict[str, float]:
    """What a VeRA adapter logs per evaluation: mean |d| and mean |b| (b = 0 means ΔW = 0)."""
    return {"vera/mean_abs_d": adapter.lambda_d.detach().abs().mean().item(),
            "vera/mean_abs_b": adapter.lambda_b.detach().abs().mean().item()}


class VeRA(Method):
    adapter_class = VeRALinear

    def __init__(self, cfg, sparsifier=None, schedule=None, seed: int = 0):
        super().__init__(cfg, sparsifier, schedule, seed)
        if not isinstance(cfg.get("projection_seed", 0), int):
            raise ConfigError(f"method.projection_seed must be an integer, got {cfg.get('projection_seed')!r}")
        self.projection: SharedProjection | None = None

    def prepare(self, model: nn.Module, target_names: list[str]) -> None:
        # The shared pair must be sized before any layer is wrapped: the largest d_in and d_out.
        linears = [model.get_submodule(n) for n in target_names]
        self.projection = SharedProjection.for_layers(linears, int(self.cfg.rank), int(self.cfg.get("projection_seed", 0)))
        self.adapters = inject_adapters(model, target_names, self.make_adapter)

    def make_adapter(self, name: str, linear: nn.Linear) -> VeRALinear:
        return self.adapter_class(linear, self.projection, d_initial=float(self.cfg.get("d_initial", 0.1)),
                                  dropout=self.cfg.get("dropout", 0.0))

    def adapter_stats(self, adapter) -> dict[str, float]:
        return vera_stats(adapter)

    def state(self) -> dict:
        return {**super().state(), "adapter_stats": {n: self.adapter_stats(a) for n, a in self.adapters.items()}}

    # The projection is saved (save_projection) or regenerated from the seed; the vectors are
    # trainable tensors, which the loop's checkpoint saves.
    def state_dict(self) -> dict:
        out = super().state_dict()
        if self.cfg.get("save_projection", True) and self.projection is not None:
            out["projection"] = self.projection.tensors()
        return out

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "projection" in state:
            try:
                self.projection.load_tensors(state["projection"])
            except ValueError as e:
                raise ConfigError(f"cannot resume VeRA: {e}") from e
