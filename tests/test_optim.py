"""ComponentAdamW and apply_remaps: torch's AdamW exactly until a resize appends components, then
each new component gets its own bias correction (fresh-Adam first updates, not several times lr);
plain-SGD groups (WeightLoRA's ω) follow the schedule or a fixed lr."""
import pytest
import torch
from torch import nn

from roloraexp.adapters import ComponentAdamW, LowRankLinear, apply_remaps

LR = 1e-2


def adapter(seed=0, rank=3):
    torch.manual_seed(seed)
    a = LowRankLinear(nn.Linear(8, 6), rank, alpha=8, gate=True)
    with torch.no_grad():
        a.lora_B.normal_()  # a trained-looking adapter: every factor gets a gradient
    return a


def backward(a, gen):
    a.zero_grad(set_to_none=True)
    a(torch.randn(5, 8, generator=gen)).pow(2).sum().backward()


def groups(a):
    return [{"params": [a.lora_A, a.lora_B], "weight_decay": 0.1}, {"params": [a.gate], "weight_decay": 0.0}]


def test_equals_torch_adamw_when_nothing_is_resized():
    ours, ref = adapter(), adapter()
    opt, ref_opt = ComponentAdamW(groups(ours), lr=LR), torch.optim.AdamW(groups(ref), lr=LR)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(25):
        backward(ours, g1)
        backward(ref, g2)
        opt.step()
        ref_opt.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=0)


def test_a_per_component_step_gives_torch_adamw_updates():
    """The per-component path (used after a grow) is torch's AdamW arithmetic, component by component."""
    ours, ref = adapter(), adapter()
    opt, ref_opt = ComponentAdamW(groups(ours), lr=LR), torch.optim.AdamW(groups(ref), lr=LR)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in range(12):
        if t == 4:  # the same counts, held per component: the updates must not change
            opt.state[ours.lora_A]["step"] = opt.state[ours.lora_A]["step"].expand(3, 1).clone()
            opt.state[ours.lora_B]["step"] = opt.state[ours.lora_B]["step"].expand(1, 3).clone()
        backward(ours, g1)
        backward(ref, g2)
        opt.step()
        ref_opt.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)


def first_update_after_grow(optimizer_cls, steps_before=2000):
    """Train an adapter, grow it by 2 components mid-phase (WeightLoRA+'s gaussian_zero: new B columns
    Gaussian, new A rows zero), take one more step: the update of every A entry, in units of lr."""
    a = adapter()
    opt = optimizer_cls(groups(a), lr=LR)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps_before):
        backward(a, gen)
        opt.step()
    apply_remaps(opt, a.grow(2, "gaussian_zero", generator=torch.Generator().manual_seed(0)))
    backward(a, gen)
    before = a.lora_A.detach().clone()
    grad = a.lora_A.grad.clone()
    opt.step()
    return (a.lora_A.detach() - before) / LR, grad


def test_grown_components_start_like_a_fresh_adam():
    # A fresh Adam's first update is lr · g / (|g| + eps'): exactly one lr per entry (decay aside: the
    # new A rows are zero). torch's AdamW, whose one step count t the new rows inherit, gives
    # (1 − β1) / √(1 − β2) · √(1 − β2^t) lr: 2.9 lr at t = 2000 (3.2 for long runs).
    update, grad = first_update_after_grow(ComponentAdamW)
    new = update[3:]
    assert grad[3:].abs().min() > 0
    torch.testing.assert_close(new, -torch.sign(grad[3:]), atol=1e-4, rtol=0)
    stale, _ = first_update_after_grow(torch.optim.AdamW)
    assert stale[3:].abs().min() > 2.5  # the symptom this fixes
    # The carried components continue exactly as torch's AdamW carries them.
    torch.testing.assert_close(update[:3], stale[:3], atol=1e-5, rtol=1e-5)


def test_grown_state_counts_steps_per_component_and_shrinks_with_them():
    a = adapter()
    opt = ComponentAdamW(groups(a), lr=LR)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        backward(a, gen)
        opt.step()
    apply_remaps(opt, a.grow(2, "gaussian_zero"))
    assert opt.state[a.lora_A]["step"].view(-1).tolist() == [5, 5, 5, 0, 0]
    assert opt.state[a.lora_B]["step"].shape == (1, 5) and opt.state[a.gate]["step"].tolist() == [5, 5, 5, 0, 0]
    backward(a, gen)
    opt.step()
    apply_remaps(opt, a.keep([4, 0]))  # a later shrink keeps each survivor's own count
    assert opt.state[a.lora_A]["step"].view(-1).tolist() == [1, 6]
    apply_remaps(opt, a.keep([1]))
    assert opt.state[a.lora_A]["step"].view(-1).tolist() == [6]
    backward(a, gen)
    opt.step()


def test_a_shrink_keeps_one_scalar_step():
    a = adapter()
    opt = ComponentAdamW(groups(a), lr=LR)
    backward(a, torch.Generator().manual_seed(1))
    opt.step()
    apply_remaps(opt, a.keep([2, 0]))
    assert opt.state[a.lora_A]["step"].ndim == 0 and opt.state[a.lora_A]["step"].item() == 1


@pytest.mark.parametrize("fixed", [False, True])
def test_sgd_group_follows_the_schedule_or_a_fixed_lr(fixed):
    w = nn.Parameter(torch.tensor(1.0))
    a = adapter()
    group = {"params": [w], "lr": 5.0, "weight_decay": 0.0, "sgd": True}
    if fixed:
        group["fixed_lr"] = 5.0
    opt = ComponentAdamW([{"params": [a.lora_A]}, group], lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)  # the loop's schedule at half its peak
    w.grad = torch.tensor(0.2)
    a.lora_A.grad = torch.ones_like(a.lora_A)
    opt.step()
    sched.step()
    assert w.item() == pytest.approx(1 - (5.0 if fixed else 2.5) * 0.2, abs=1e-6)  # plain SGD: no moments, no decay
    assert w not in opt.state or not opt.state[w]


def test_loss_scaling_unscales_the_sgd_group_and_an_overflow_skips_it_too():
    """fp16 (here the GradScaler on CPU, the same logic accelerate runs on CUDA): ω in the optimizer
    is unscaled with every other parameter before its SGD step, and an overflow skips it too."""
    w = nn.Parameter(torch.tensor(1.0))
    a = adapter()
    opt = ComponentAdamW([{"params": [a.lora_A, a.lora_B]}, {"params": [w], "lr": 0.5, "sgd": True}], lr=LR)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    gen = torch.Generator().manual_seed(1)
    scaler.scale(a(torch.randn(5, 8, generator=gen)).pow(2).sum() + 0.2 * w).backward()
    scaler.unscale_(opt)  # what the loop does before clipping
    assert w.grad.item() == pytest.approx(0.2)
    scaler.step(opt)
    scaler.update()
    assert w.item() == pytest.approx(1 - 0.5 * 0.2)
    opt.zero_grad()
    scaler.scale(a(torch.full((5, 8), float("inf"))).sum() + 0.2 * w).backward()  # an overflowed step
    scaler.step(opt)
    assert w.item() == pytest.approx(0.9)  # skipped with the rest
