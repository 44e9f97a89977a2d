"""AdamW that gives each rank component of a grown tensor its own step count.

torch's AdamW keeps one ``step`` per tensor. When a resize appends components to a tensor in the
middle of a phase (WeightLoRA+ growing its kept adapters at step T), the new components start
with zero moments but share the tensor's step t, so their bias correction is skipped: the first
update is ``(1 − β1)/√(1 − β2) · √(1 − β2^t) lr`` (2.9 lr at t = 2000, 3.2 lr for t ≫ 1000), about
6 lr after 10 more steps, and still ≈ 1.3 lr after 1000 (m settles in ~1/(1 − β1) steps, v in
~1/(1 − β2)). A fresh AdamW would give them ``lr`` from the first step.

:func:`~roloraexp.adapters.optim_state.apply_remaps` therefore gives a grown tensor a step of the
component axis' shape (``(r, 1)`` for A, ``(1, r)`` for B, ``(r,)`` for a gate): the carried
components keep their count, the new ones start at 0, and this class applies each component's own
bias correction. Tensors whose step is a scalar (everything that never grew) go through torch's
AdamW step itself, so nothing changes for them (the tests check equality with ``torch.optim.AdamW``).

A param group with ``sgd: True`` takes a plain SGD step, ``p ← p − lr · ∇p`` (no moments, no weight
decay): WeightLoRA's ω as the authors' optimizer steps it (``WeightAdamW`` in
github.com/Vepricov/WLoRA ``src/optimizers.py``, its ``weight_params`` group). Being in the
optimizer, ω's gradient is unscaled (fp16), clipped with the rest and scheduled by the loop, as HF's
Trainer does for the authors. ``fixed_lr`` in such a group ignores the schedule.

Under fp16 the loss scaler decides whether a step happens (overflowing gradients skip it). torch's
GradScaler makes that decision on the host, one wait for the device per step, unless the optimizer
takes it itself (``_step_supports_amp_scaling``): it then sets ``found_inf``, a device tensor, and
this class applies every update through ``torch.where`` on it (weights, moments and step counts
stay as they were on an overflow), so the host never waits. Without ``found_inf`` (fp32, bf16)
nothing changes.
"""
from __future__ import annotations

import torch


class ComponentAdamW(torch.optim.AdamW):
    per_component_step = True  # apply_remaps may give a grown tensor one step per component
    _step_supports_amp_scaling = True  # fp16: GradScaler hands over found_inf instead of waiting on the host

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"]:
                raise ValueError("ComponentAdamW supports neither amsgrad nor maximize")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None:  # set by GradScaler for this step (fp16): decide on the device
            scale = getattr(self, "grad_scale", None)  # set when the grads were not unscaled before step()
            if scale is not None:
                torch._foreach_div_([p.grad for g in self.param_groups for p in g["params"] if p.grad is not None], scale)
            self._step_on_device(found_inf.to(torch.bool))
            return loss
        own = [(group, p) for group in self.param_groups for p in group["params"]
               if p.grad is not None and (group.get("sgd") or _per_component(self.state.get(p)))]
        # torch's step skips parameters without a gradient: hide ours from it, step them below.
        grads = [p.grad for _, p in own]
        for _, p in own:
            p.grad = None
        try:
            super().step()
        finally:
            for (_, p), g in zip(own, grads):
                p.grad = g
        for group, p in own:
            if group.get("sgd"):
                p.add_(p.grad, alpha=-group.get("fixed_lr", group["lr"]))
            else:
                _adamw_per_component(p, self.state[p], group)
        return loss


    def _step_on_device(self, skip: torch.Tensor) -> None:
        """Every update of this step, kept only where ``skip`` (an overflow) is false."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group.get("sgd"):
                    p.copy_(torch.where(skip, p, p - group.get("fixed_lr", group["lr"]) * p.grad))
                    continue
                state = self.state[p]
                if not state:  # torch's lazy init, with the count on the device
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif state["step"].device != p.device:
                    state["step"] = state["step"].to(p.device)
                _adamw_per_component(p, state, group, skip)


def step_per_component(state: dict, p: torch.Tensor, dim: int) -> torch.Tensor:
    """``state["step"]`` as one count per component along ``dim`` (shape ``(r, 1)`` for dim 0 of a
    2-D tensor), on the parameter's device; a scalar count is spread over every component. Under
    ComponentAdamW each component then gets its own bias correction (see the module docstring)."""
    step = state["step"]
    if step.ndim == 0:
        shape = [p.shape[d] if d == dim else 1 for d in range(p.ndim)]
        step = state["step"] = step.reshape([1] * p.ndim).expand(shape).to(p.device, copy=True)
    elif step.device != p.device:  # loaded from a checkpoint onto the host, say
        step = state["step"] = step.to(p.device)
    return step


def _per_component(state: dict | None) -> bool:
    return bool(state) and torch.is_tensor(state.get("step")) and state["step"].ndim > 0


def _adamw_per_component(p: torch.Tensor, state: dict, group: dict, skip: torch.Tensor | None = None) -> None:
    """torch's single-tensor AdamW step (``torch/optim/adam.py::_single_tensor_adam``, decoupled
    decay), with the step count a tensor that broadcasts over the parameter. ``skip`` (a device
    bool, fp16): where true, nothing changes (computed out of place, then selected)."""
    grad, m, v, step = p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"]
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    if skip is not None:
        new_p, new_m, new_v, new_step = p.clone(), m.lerp(grad, 1 - beta1), v * beta2 + (1 - beta2) * grad * grad, step + 1
        _adamw_update(new_p, new_m, new_v, new_step, lr, beta1, beta2, eps, weight_decay)
        for old, new in ((p, new_p), (m, new_m), (v, new_v), (step, new_step)):
            old.copy_(torch.where(skip, old, new))
        return
    step += 1
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    _adamw_update(p, m, v, step, lr, beta1, beta2, eps, weight_decay)


def _adamw_update(p, m, v, step, lr, beta1, beta2, eps, weight_decay) -> None:
    """p ← p(1 − lr·λ) − lr · m̂ / (√v̂ + ε), with the moments already updated."""
    if weight_decay:
        p.mul_(1 - lr * weight_decay)
    # torch computes the corrections in Python floats (double): so do we, per component, on the
    # parameter's device (torch keeps a scalar step on the host; a grown tensor's may be there too).
    t = step.to(p.device, torch.float64)
    step_size = (lr / (1 - beta1**t)).to(p.dtype)
    bias_correction2_sqrt = (1 - beta2**t).sqrt().to(p.dtype)
    denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
    p.sub_(m / denom * step_size)
