"""How a run's adapters become PEFT adapters: one form per adapter class.

``LowRankLinear`` (LoRA, LoRA*, AdaLoRA, AdaLoRA*, SoRA, ROLoRA, WeightLoRA, WeightLoRA+, RLoRA) is
``ΔW = s · ω · B diag(g) A`` with ``s = alpha / r0`` fixed at creation. PEFT's LoRA layer is
``ΔW = (lora_alpha / r) · B A`` per module, with its own ``r`` and ``lora_alpha`` through
``rank_pattern`` / ``alpha_pattern``. So each adapter exports as

    A' = A[live],   B' = sign(ω) · B[:, live] · g[live],   lora_alpha = s · |ω| · r'

where ``live`` are the components whose gate is not zero (AdaLoRA's masked Λ entries before the
slice, SoRA's pruned gates contribute nothing) and ``r' = |live|``: the product, and so every output,
is the run's. Adapters with nothing left (rank 0: WeightLoRA's disconnected adapters, or ω = 0) are
left out of ``target_modules``. A method whose adapters are another class (DoRA's magnitude, VeRA's
shared projections) needs its own form here; until then its export stops with one line instead of
writing a LoRA that would silently drop part of the adapter.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from ..adapters import LowRankLinear
from ..errors import ConfigError, DataError

# PEFT's task types, by the head the task builds (models.HEADS): the PeftModel subclass a load picks.
TASK_TYPES = {"seq_cls": "SEQ_CLS", "qa": "QUESTION_ANS", "seq2seq": "SEQ_2_SEQ_LM"}


@dataclass
class LoraFactors:
    A: torch.Tensor      # (r, d_in): PEFT's lora_A.weight
    B: torch.Tensor      # (d_out, r): PEFT's lora_B.weight, gate and the sign of ω folded in
    alpha: float         # PEFT's lora_alpha for this module: its scaling is alpha / r (alpha / √r with rsLoRA)

    @property
    def rank(self) -> int:
        return self.A.shape[0]


def _tensor(state: dict, name: str, key: str, required: bool = True) -> torch.Tensor | None:
    t = state.get(f"{name}.{key}")
    if t is None and required:
        raise DataError(f"the saved weights have no {name}.{key}: they were written under another config "
                        f"than the results.json beside them")
    return t


def lora_factors(name: str, adapter: LowRankLinear, state: dict, method_cfg) -> LoraFactors | str:
    """The adapter as one PEFT LoRA module with the same product, or why it is left out."""
    A, B = _tensor(state, name, "lora_A").float(), _tensor(state, name, "lora_B").float()
    gate, omega = _tensor(state, name, "gate", False), _tensor(state, name, "omega", False)
    if gate is not None:
        live = gate != 0
        A, B = A[live], B[:, live] * gate[live].float()
    factor = adapter.scaling * (float(omega) if omega is not None else 1.0)
    if A.shape[0] == 0:
        return "rank 0 (disconnected)" if gate is None or len(gate) == 0 else "every gate is zero"
    if factor == 0:
        return "ω = 0"
    if factor < 0:  # a negative ω (topk_by: magnitude) goes into B: PEFT's alpha stays positive
        B = -B
    per_rank = math.sqrt(A.shape[0]) if method_cfg.get("rslora", False) else A.shape[0]
    # 12 significant digits: α·r/r0 products differ from the run's scaling by float rounding only, and
    # equal values then share one alpha (fewer alpha_pattern entries).
    return LoraFactors(A.contiguous(), B.contiguous(), float(f"{abs(factor) * per_rank:.12g}"))


def lora_config(factors: dict[str, LoraFactors], modules_to_save: list[str], head: str, method_cfg):
    """A ``LoraConfig`` whose per-module ranks and alphas are the factors'. The most common rank and
    alpha are the defaults; the others go to ``rank_pattern`` / ``alpha_pattern`` under their full
    module names (PEFT matches a pattern key at the end of a module's name: a full name is exact)."""
    from peft import LoraConfig

    r = Counter(f.rank for f in factors.values()).most_common(1)[0][0]
    alpha = Counter(f.alpha for f in factors.values()).most_common(1)[0][0]
    return LoraConfig(
        r=r, lora_alpha=alpha, target_modules=sorted(factors),
        rank_pattern={n: f.rank for n, f in sorted(factors.items()) if f.rank != r},
        alpha_pattern={n: f.alpha for n, f in sorted(factors.items()) if f.alpha != alpha},
        use_rslora=bool(method_cfg.get("rslora", False)), lora_dropout=float(method_cfg.get("dropout", 0.0)),
        bias="none", modules_to_save=list(modules_to_save) or None, task_type=TASK_TYPES.get(head),
        inference_mode=True)


@torch.no_grad()
def load_lora(peft_model, factors: dict[str, LoraFactors], adapter_name: str = "default") -> None:
    """Put the factors into a PEFT model built from :func:`lora_config`."""
    inner = peft_model.get_base_model()
    for name, f in factors.items():
        layer = inner.get_submodule(name)
        layer.lora_A[adapter_name].weight.copy_(f.A)
        layer.lora_B[adapter_name].weight.copy_(f.B)


@dataclass
class Form:
    """One PEFT form: the adapters a run ends with → the per-module weights, the PEFT config, the load."""
    name: str
    factors: object
    config: object
    load: object


# Exact classes, not isinstance: a subclass of LowRankLinear (DoRA adds a magnitude) is another form.
FORMS = {LowRankLinear: Form("LoRA", lora_factors, lora_config, load_lora)}


def form_of(adapters: dict, method: str) -> Form:
    kinds = {type(a) for a in adapters.values()}
    if not kinds:
        raise ConfigError(f"method={method} trains no adapters: there is no PEFT adapter to export (use --merged)")
    unknown = sorted(k.__name__ for k in kinds if k not in FORMS)
    if unknown or len(kinds) > 1:
        raise ConfigError(f"method={method}: no PEFT export for adapters of class {', '.join(unknown or sorted(k.__name__ for k in kinds))} "
                          f"(exported: {', '.join(sorted(k.__name__ for k in FORMS))})")
    return FORMS[kinds.pop()]
