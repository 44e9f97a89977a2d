"""How a run's adapters become PEFT adapters: one form per adapter class.

``LowRankLinear`` (LoRA, LoRA*, AdaLoRA, AdaLoRA*, SoRA, ROLoRA, WeightLoRA, WeightLoRA+, RLoRA) is
``ΔW = s · ω · B diag(g) A`` with ``s = alpha / r0`` fixed at creation. PEFT's LoRA layer is
``ΔW = (lora_alpha / r) · B A`` per module, with its own ``r`` and ``lora_alpha`` through
``rank_pattern`` / ``alpha_pattern``. So each adapter exports as

    A' = A[live],   B' = sign(ω) · B[:, live] · g[live],   lora_alpha = s · |ω| · r'

where ``live`` are the components whose gate is not zero (AdaLoRA's masked Λ entries before the
slice, SoRA's pruned gates contribute nothing) and ``r' = |live|``: the product, and so every output,
is the run's. Adapters with nothing left (rank 0: WeightLoRA's disconnected adapters, or ω = 0) are
left out of ``target_modules``. DyLoRA's ``DynamicRankLinear`` is that adapter at its full rank
r_max, the model its metrics are reported at (scaling α / r_max); its rank-b model is the first b
components with the same ``lora_alpha``.

Hydra's adapter (``HydraLinear``: ``h = W0 x + b0 + A_up A_down x + B_up B_down (W0 x + b0)``) has a
LoRA product too: ``ΔW = [A_up, B_up] [A_down; B_down W0]`` at rank p + s, scaling 1, plus a change
of the bias ``B_up B_down b0``, which PEFT holds as ``lora_bias`` (a bias on lora_B).

DoRA's adapter (``DoRALinear``: ``W' = m · (W0 + s·B A) / ‖W0 + s·B A‖_c``) is PEFT's
``LoraConfig(use_dora=True)``: the LoRA factors as above and m as ``lora_magnitude_vector``, which
PEFT's DoRA layer applies to the same column norm (``tests/test_dora.py`` holds the two equal).

VeRA's adapter (``VeRALinear``: ``Λ_b B Λ_d A`` over one frozen pair for the model) is PEFT's
``VeraConfig``: the pair is drawn as PEFT draws it (``adapters/vera.py``), so ``r`` = the pair's
rank, ``projection_prng_key`` = ``method.projection_seed`` and the same ``target_modules`` give
the same pair and slices; d and b are ``vera_lambda_d`` / ``vera_lambda_b``. The export draws the
run's pair again and compares it with PEFT's: ``save_projection`` (the run's setting) writes it into
the folder, and without it a pair PEFT would draw differently is one line. No VeRA adapter is left
out, even one with b = 0: the pair's shape depends on every target's.

A method whose adapters are another class stops with one line instead of writing a PEFT adapter
that would silently drop part of it: DVoRA (DoRA's magnitude over VeRA's projections; PEFT has no
such layer) merges with its own ``merge()`` under ``--merged`` (as VeRA does: ``Form.peft_merges``);
bottleneck adapters are not linear in x, so neither a PEFT form nor a merge holds them.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..adapters import LowRankLinear
from ..adapters.dora import DoRALinear
from ..adapters.dynamic_rank import DynamicRankLinear
from ..adapters.hydra_linear import HydraLinear
from ..adapters.vera import SharedProjection, VeRALinear
from ..errors import ConfigError, DataError

# PEFT's task types, by the head the task builds (models.HEADS): the PeftModel subclass a load picks.
TASK_TYPES = {"seq_cls": "SEQ_CLS", "qa": "QUESTION_ANS", "seq2seq": "SEQ_2_SEQ_LM"}


@dataclass
class LoraFactors:
    A: torch.Tensor      # (r, d_in): PEFT's lora_A.weight
    B: torch.Tensor      # (d_out, r): PEFT's lora_B.weight, gate and the sign of ω folded in
    alpha: float         # PEFT's lora_alpha for this module: its scaling is alpha / r (alpha / √r with rsLoRA)
    bias: torch.Tensor | None = None  # (d_out,): lora_B's bias (PEFT's lora_bias), before the scaling
    magnitude: torch.Tensor | None = None  # (d_out,): DoRA's m, PEFT's lora_magnitude_vector (use_dora)

    @property
    def rank(self) -> int:
        return self.A.shape[0]


def _tensor(state: dict, name: str, key: str, required: bool = True) -> torch.Tensor | None:
    t = state.get(f"{name}.{key}")
    if t is None and required:
        raise DataError(f"the saved weights have no {name}.{key}: they were written under another config "
                        f"than the results.json beside them")
    return t


def lora_factors(name: str, adapter: LowRankLinear, state: dict, method_cfg,
                 base: torch.nn.Linear) -> LoraFactors | str:
    """The adapter as one PEFT LoRA module with the same product, or why it is left out."""
    A, B = _tensor(state, name, "lora_A").float(), _tensor(state, name, "lora_B").float()
    gate, omega = _tensor(state, name, "gate", False), _tensor(state, name, "omega", False)
    if gate is not None:
        live = gate != 0
        A, B = A[live], B[:, live] * gate[live].float()
    factor = adapter.scaling * (float(omega) if omega is not None else 1.0)
    if A.shape[0] == 0:
        return "rank 0" if gate is None or len(gate) == 0 else "every gate is zero"
    if factor == 0:
        return "ω = 0"
    if factor < 0:  # a negative ω (topk_by: magnitude) goes into B: PEFT's alpha stays positive
        B = -B
    per_rank = math.sqrt(A.shape[0]) if method_cfg.get("rslora", False) else A.shape[0]
    # 12 significant digits: α·r/r0 products differ from the run's scaling by float rounding only, and
    # equal values then share one alpha (fewer alpha_pattern entries).
    return LoraFactors(A.contiguous(), B.contiguous(), float(f"{abs(factor) * per_rank:.12g}"))


@torch.no_grad()
def hydra_factors(name: str, adapter: HydraLinear, state: dict, method_cfg, base: torch.nn.Linear) -> LoraFactors | str:
    """Both Hydra branches as one LoRA module: the sequential one reads the base layer's output, so
    its down-projection takes W0 in (and its bias change goes to lora_B's bias); scaling 1."""
    par_down, par_up = _tensor(state, name, "par_down").float(), _tensor(state, name, "par_up").float()
    seq_down, seq_up = _tensor(state, name, "seq_down").float(), _tensor(state, name, "seq_up").float()
    A = torch.cat([par_down, seq_down @ base.weight.float()])
    B = torch.cat([par_up, seq_up], 1)
    if A.shape[0] == 0:
        return "rank 0"
    bias = seq_up @ (seq_down @ base.bias.float()) if base.bias is not None else None
    return LoraFactors(A.contiguous(), B.contiguous(), float(A.shape[0]), bias)


def dora_factors(name: str, adapter: DoRALinear, state: dict, method_cfg, base: torch.nn.Linear) -> LoraFactors:
    """LoRA's factors (DoRA has neither gate nor ω, and a fixed rank) and the magnitude m."""
    f = lora_factors(name, adapter, state, method_cfg, base)
    if isinstance(f, str):  # left out, PEFT's layer would lose m as well: never quietly
        raise DataError(f"the saved DoRA adapter {name} is empty ({f}): the weights do not fit the config")
    return replace(f, magnitude=_tensor(state, name, "magnitude").float().contiguous())


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
        bias="none", lora_bias=any(f.bias is not None for f in factors.values()),
        use_dora=any(f.magnitude is not None for f in factors.values()),
        modules_to_save=list(modules_to_save) or None, task_type=TASK_TYPES.get(head), inference_mode=True)


@torch.no_grad()
def load_lora(peft_model, factors: dict[str, LoraFactors], adapter_name: str = "default") -> None:
    """Put the factors into a PEFT model built from :func:`lora_config`."""
    inner = peft_model.get_base_model()
    for name, f in factors.items():
        layer = inner.get_submodule(name)
        layer.lora_A[adapter_name].weight.copy_(f.A)
        layer.lora_B[adapter_name].weight.copy_(f.B)
        if layer.lora_B[adapter_name].bias is not None:  # lora_bias: PEFT scales it with the product
            bias = f.bias if f.bias is not None else torch.zeros(f.B.shape[0])
            layer.lora_B[adapter_name].bias.copy_(bias / layer.scaling[adapter_name])
        if f.magnitude is not None:
            layer.lora_magnitude_vector[adapter_name].weight.copy_(f.magnitude)


@dataclass
class VeraFactors:
    lambda_d: torch.Tensor  # (r,): PEFT's vera_lambda_d
    lambda_b: torch.Tensor  # (d_out,): PEFT's vera_lambda_b

    @property
    def rank(self) -> int:
        return self.lambda_d.shape[0]


def vera_factors(name: str, adapter: VeRALinear, state: dict, method_cfg, base: torch.nn.Linear) -> VeraFactors:
    return VeraFactors(_tensor(state, name, "lambda_d").float().contiguous(),
                       _tensor(state, name, "lambda_b").float().contiguous())


def vera_config(factors: dict[str, VeraFactors], modules_to_save: list[str], head: str, method_cfg):
    """A ``VeraConfig`` that draws the run's pair: PEFT sizes it to the largest d_in / d_out among
    ``target_modules`` and draws it from ``projection_prng_key``, as the run did."""
    from peft import VeraConfig

    ranks = sorted({f.rank for f in factors.values()})
    if len(ranks) > 1:  # one shared pair: our VeRA cannot make this, PEFT's cannot hold it
        raise DataError(f"PEFT's VeRA has one rank for every layer; the saved adapters have ranks {ranks}")
    return VeraConfig(
        r=ranks[0], target_modules=sorted(factors), projection_prng_key=int(method_cfg.get("projection_seed", 0)),
        save_projection=bool(method_cfg.get("save_projection", True)),
        vera_dropout=float(method_cfg.get("dropout", 0.0)), d_initial=float(method_cfg.get("d_initial", 0.1)), bias="none",
        modules_to_save=list(modules_to_save) or None, task_type=TASK_TYPES.get(head), inference_mode=True)


@torch.no_grad()
def load_vera(peft_model, factors: dict[str, VeraFactors], adapter_name: str = "default") -> None:
    """Put d and b into a PEFT model built from :func:`vera_config`, and the run's pair into PEFT's."""
    inner, config = peft_model.get_base_model(), peft_model.peft_config[adapter_name]
    for name, f in factors.items():
        layer = inner.get_submodule(name)
        layer.vera_lambda_d[adapter_name].copy_(f.lambda_d)
        layer.vera_lambda_b[adapter_name].copy_(f.lambda_b)
    ours = SharedProjection.for_layers([inner.get_submodule(n).get_base_layer() for n in factors],
                                       config.r, config.projection_prng_key)
    A, B = peft_model.base_model.vera_A[adapter_name], peft_model.base_model.vera_B[adapter_name]
    if A.shape != ours.A.shape or B.shape != ours.B.shape:
        raise ConfigError(f"PEFT's VeRA sizes the shared projection {tuple(A.shape)} / {tuple(B.shape)} for these "
                          f"targets, the run's is {tuple(ours.A.shape)} / {tuple(ours.B.shape)}: no PEFT VeRA holds it")
    if not (torch.equal(A, ours.A) and torch.equal(B, ours.B)) and not config.save_projection:
        raise ConfigError(f"this peft draws another VeRA projection from projection_prng_key="
                          f"{config.projection_prng_key} than the run did, and with method.save_projection=false "
                          f"(the run's setting) its folder would not store the run's")
    A.copy_(ours.A)  # what the folder stores with save_projection: the run's pair, whoever drew it
    B.copy_(ours.B)


@dataclass
class Form:
    """One PEFT form: an adapter → its PEFT module weights (or why it is left out), those → the PEFT
    config, and the weights into the PEFT model built from it."""
    name: str
    factors: Callable[..., "LoraFactors | VeraFactors | str"]
    config: Callable
    load: Callable
    # --merged through PEFT's merge_and_unload. Not VeRA's: peft 0.21's VeraModel unwraps each
    # modules_to_save head with BaseTuner._replace_module, which reads the head's .weight and fails on
    # one without (RobertaClassificationHead; huggingface/peft#3114). Its adapters merge themselves
    # instead (export.merge_own_adapters).
    peft_merges: bool = True


# Exact classes, not isinstance: a subclass (DoRA adds a magnitude to LoRA, DVoRA to VeRA) is another form.
FORMS = {LowRankLinear: Form("LoRA", lora_factors, lora_config, load_lora),
         DynamicRankLinear: Form("LoRA", lora_factors, lora_config, load_lora),
         HydraLinear: Form("LoRA", hydra_factors, lora_config, load_lora),
         DoRALinear: Form("DoRA", dora_factors, lora_config, load_lora),
         VeRALinear: Form("VeRA", vera_factors, vera_config, load_vera, peft_merges=False)}


def trains_weights_in_place(adapters: dict) -> bool:
    """Methods that train the model's own weights (GaLore's projected full-rank updates; full
    fine-tuning and BitFit have no adapters at all): their export is the trained model (--merged)."""
    return all(type(a) is torch.nn.Linear for a in adapters.values())


def form_of(adapters: dict, method: str, merged: bool = False) -> Form | None:
    """The run's PEFT form; ``None`` where a merged export needs none: the model's own weights trained
    (GaLore, BitFit, full fine-tuning), or the adapters merge themselves (DVoRA: no PEFT form; VeRA:
    PEFT's merge loses the head, see ``Form.peft_merges``)."""
    kinds = {type(a) for a in adapters.values()}
    if trains_weights_in_place(adapters):
        if merged:
            return None
        raise ConfigError(f"method={method} trains the model's own weights, not adapters: there is no PEFT adapter "
                          f"to export; export the trained model with --merged")
    if len(kinds) == 1 and next(iter(kinds)) in FORMS:
        form = FORMS[kinds.pop()]
        return None if merged and not form.peft_merges else form
    names = ", ".join(sorted(k.__name__ for k in kinds if k not in FORMS) or sorted(k.__name__ for k in kinds))
    if all(callable(getattr(k, "merge", None)) for k in kinds):
        if merged:
            return None
        raise ConfigError(f"method={method}: PEFT has no form for adapters of class {names}; export the model with "
                          f"them merged (--merged)")
    raise ConfigError(f"method={method}: no PEFT export for adapters of class {names} "
                      f"(exported: {', '.join(sorted(k.__name__ for k in FORMS))})")
