"""Mixed precision for the training forward: autocast, or the whole model cast to the compute dtype.

Under ``torch.autocast`` every op pays a dtype decision, and on CUDA its fp32 lists (layer_norm,
softmax, the losses, ...) turn bf16 activations back into fp32 ones, which the next linear casts
down again: on a launch-bound step (a frozen base-size model with small adapters) those extra
kernels made bf16 run at half the speed of fp32 (H200, issue 21). ``cast`` computes instead with
every weight already in the compute dtype: the frozen ones are held in it once
(``hold_frozen_in``), and the fp32 master copies of what trains are cast once per forward, through
``torch.nn.utils.stateless`` (the mechanism behind ``torch.func.functional_call``), so their
gradients still land, in fp32, on the master parameters the optimizer, the methods' hooks and DDP
see. No per-op casting is left; the result equals autocast's within bf16 rounding
(tests/test_precision.py). Modules marked ``amp_fp32_output = True`` (the task heads and the LM
head: models.load_model marks them) hand on fp32 outputs, so the loss is computed in fp32 from
bf16-computed logits, as autocast's fp32 list computes it.

``trainer.amp_mode``: ``auto`` (cast for bf16; autocast for fp16, whose narrow range needs
autocast's fp32 layer norms and losses; autocast for a model with a module that declares
``amp_cast_ok = False``: DoRA's weight norm must see fp32 factors; autocast under gradient
checkpointing) | ``autocast`` | ``cast``.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module

from .config import check_section
from .errors import ConfigError


def hold_frozen_in(model: nn.Module, dtype: torch.dtype) -> None:
    """Under AMP, keep the frozen weights in the compute dtype once, instead of letting autocast
    cast every one of them at every step (a launch-bound step then costs more than fp32). What trains
    (adapters, heads) keeps its fp32 master weights; autocast casts those small tensors down."""
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in own):
            # One dtype per module: a frozen weight beside a trained bias (BitFit) stays fp32, or CPU
            # autocast's layer_norm meets a bf16 weight and an fp32 bias and fails.
            continue
        for p in own:
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)


def cast_refused_by(model: nn.Module) -> str | None:
    """The first module type that must compute with fp32 factors (``amp_cast_ok = False``), or None."""
    for module in model.modules():
        if getattr(module, "amp_cast_ok", True) is False:
            return type(module).__name__
    return None


def resolve_amp_mode(requested: str, mixed_precision: str, model: nn.Module, checkpointing: bool = False) -> str:
    """``none`` (fp32), ``autocast`` or ``cast`` for a run with accelerate's ``mixed_precision``.
    Gradient checkpointing recomputes the forward in the backward pass, after the cast weights are
    gone: such a run keeps autocast."""
    check_section({"amp_mode": requested}, "trainer")  # the schema's rule and message (direct callers)
    if mixed_precision not in ("bf16", "fp16"):
        return "none"
    refused = cast_refused_by(model) or ("gradient checkpointing" if checkpointing else None)
    if requested == "cast":
        if refused is not None:
            raise ConfigError(f"trainer.amp_mode=cast does not work with {refused} (fp32 factors, or a forward "
                              f"recomputed after the cast); use trainer.amp_mode=auto")
        return "cast"
    if requested == "autocast" or mixed_precision == "fp16" or refused is not None:
        return "autocast"
    return "cast"


class CastForward:
    """``with cast():`` runs the model's forward with every floating parameter that is not in
    ``dtype`` replaced by a differentiable copy in ``dtype`` (one cast per tensor and step: a fixed
    number of launches, where autocast adds some per op). Call :meth:`refresh` after anything that
    replaces parameters (a method's resize)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        self.model, self.dtype, self.active = model, dtype, False
        for module in model.modules():
            if getattr(module, "amp_fp32_output", False):
                module.register_forward_hook(self._fp32_output)
        self.refresh()

    def _fp32_output(self, module, args, out):
        if self.active and torch.is_tensor(out) and out.is_floating_point():
            return out.float()
        return None  # outside the cast (evaluation under autocast, fp32 runs): as it was

    def refresh(self) -> None:
        self.masters = [(n, p) for n, p in self.model.named_parameters()
                        if p.is_floating_point() and p.dtype != self.dtype]

    @contextmanager
    def __call__(self):
        copies = {n: p.to(self.dtype) for n, p in self.masters}
        # tie_weights: a tied pair (embeddings and LM head) is one parameter under two names.
        with _reparametrize_module(self.model, copies, tie_weights=True):
            self.active = True
            try:
                yield
            finally:
                self.active = False


def forward_context(mode: str, accelerator, cast: CastForward | None):
    """What the training forward runs under: nothing, accelerate's autocast, or the cast weights."""
    if mode == "autocast":
        return accelerator.autocast()
    if mode == "cast":
        return cast()
    return nullcontext()
