"""fp16 without a host wait per step: the loss scaler's skip decision stays on the device.

GradScaler waits for the device at every step to decide whether to call ``optimizer.step()``,
unless the optimizer takes ``found_inf`` itself (``_step_supports_amp_scaling``). ComponentAdamW
does: these tests drive torch's GradScaler on the CPU (fp16 AMP itself needs CUDA) and check that it
never reads a tensor back, that a finite step equals torch's AdamW, and that an overflowing one
leaves weights, moments and step counts exactly as they were."""
import pytest
import torch

from roloraexp.adapters.adamw import ComponentAdamW


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 3, generator=g)), torch.nn.Parameter(torch.randn(3, generator=g))]


def scaled_step(opt, ps, grads, scaler):
    for p in ps:
        p.grad = None
    scaler.scale(sum((p * grad).sum() for p, grad in zip(ps, grads))).backward()  # .grad = scale · grad
    scaler.unscale_(opt)
    item = torch.Tensor.item
    try:  # any read-back during the step itself is a host wait
        torch.Tensor.item = lambda t: (_ for _ in ()).throw(AssertionError("the scaler waited on the host"))
        scaler.step(opt)
    finally:
        torch.Tensor.item = item
    scaler.update()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_finite_steps_equal_torch_adamw_and_an_overflow_changes_nothing(weight_decay):
    ours, ref = params(), params()
    opt = ComponentAdamW([{"params": ours, "weight_decay": weight_decay}], lr=1e-2)
    ref_opt = torch.optim.AdamW([{"params": ref, "weight_decay": weight_decay}], lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        if step == 2:  # an overflow: nothing may move
            before = [p.detach().clone() for p in ours], {k: v.clone() for k, v in opt.state[ours[0]].items()}
            scaled_step(opt, ours, [grads[0] * float("inf"), grads[1]], scaler)
            assert all(torch.equal(a, b) for a, b in zip(before[0], ours))
            assert all(torch.equal(before[1][k], opt.state[ours[0]][k].to(before[1][k].device)) for k in before[1])
            continue
        scaled_step(opt, ours, grads, scaler)
        for p, grad in zip(ref, grads):
            p.grad = grad.clone()
        ref_opt.step()
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert float(opt.state[ours[0]]["step"]) == 4  # the skipped step is not counted


def test_without_a_scaler_the_step_is_torch_adamw_bit_for_bit():
    ours, ref = params(), params()
    opt, ref_opt = ComponentAdamW(ours, lr=1e-2, weight_decay=0.01), torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.01)
    for _ in range(3):
        for a, b in zip(ours, ref):
            a.grad = b.grad = torch.randn(a.shape)
        opt.step()
        ref_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_weightlora_omega_step_takes_a_device_skip_flag():
    """ω's StoIHT step under a skipped fp16 step (a device bool): every ω stays as it is, as the
    host-bool path did; a finite step moves them."""
    from types import SimpleNamespace

    from roloraexp.methods.weightlora import WeightLoRA

    method = WeightLoRA.__new__(WeightLoRA)
    omegas = [torch.nn.Parameter(torch.tensor(v)) for v in (1.0, 0.5, 2.0)]
    for o, g in zip(omegas, (0.3, -0.2, 0.1)):
        o.grad = torch.tensor(g)
    method.adapters = {f"a{i}": SimpleNamespace(omega=o, rank=4) for i, o in enumerate(omegas)}
    method.trains_omega, method.omega_clip, method.topk_by, method.omega_log_every = True, False, "value", 0
    method._lr = lambda ctx: 0.1
    before = [float(o.detach()) for o in omegas]
    ctx = SimpleNamespace(step_skipped=torch.tensor(True), grad_scale=torch.tensor(1.0), step=3)
    method.omega_step(ctx, k=2, final=False)
    assert [float(o.detach()) for o in omegas] == before
    ctx.step_skipped = torch.tensor(False)
    method.omega_step(ctx, k=2, final=False)
    assert [float(o.detach()) for o in omegas] != before


def test_grads_left_scaled_are_unscaled_by_the_optimizer():
    """GradScaler.step without a prior unscale_ hands the scale to the optimizer (grad_scale)."""
    ours, ref = params(), params()
    opt, ref_opt = ComponentAdamW(ours, lr=1e-2), torch.optim.AdamW(ref, lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    grads = [torch.randn(p.shape) for p in ours]
    scaler.scale(sum((p * g).sum() for p, g in zip(ours, grads))).backward()
    scaler.step(opt)
    for p, g in zip(ref, grads):
        p.grad = g.clone()
    ref_opt.step()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_loop_trains_fp16_without_reading_back_in_the_optimizer_step(tmp_path, monkeypatch):
    """The real loop under fp16 AMP on the CPU (accelerate keeps a loss scaler only on CUDA: one is
    handed to it here). A scale of 2^24 overflows the first steps: they are skipped and counted,
    the run completes, and no optimizer step (the scaler, the optimizer, WeightLoRA's ω step, the
    skip bookkeeping) reads a tensor back to the host."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from conftest import smoke
    from roloraexp import distributed, train
    from roloraexp.run import run

    def fp16_accelerator(cfg):
        AcceleratorState._reset_state(reset_partial_state=True)  # an earlier test's precision would stick
        acc = Accelerator(mixed_precision="fp16", cpu=True)
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
        acc.autocast = lambda *args, **kwargs: torch.autocast("cpu", dtype=torch.float16)  # accelerate: CUDA only
        return acc

    monkeypatch.setattr(distributed, "make_accelerator", fp16_accelerator)
    reads, inside = [], [0]  # inside: the step being taken (0: outside an optimizer step)
    item, step = torch.Tensor.item, train.Trainer._optimizer_step

    def counting_item(t):
        if inside[0]:
            reads.append(inside[0])
        return item(t)

    def watched_step(self, *args):
        inside[0] = self.record.steps + 1
        try:
            return step(self, *args)
        finally:
            inside[0] = 0

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    monkeypatch.setattr(train.Trainer, "_optimizer_step", watched_step)
    result = run(smoke("method=weightlora", "method.k=2", "trainer.max_steps=8", "trainer.log_every=4",
                       "method.omega_log_every=0"), tmp_path)
    assert result["status"] == "completed", result.get("error")
    assert result["amp_mode"] == "autocast" and result["skipped_steps"] >= 1
    assert result["skipped_steps"] < 8  # the scale came down and later steps trained
    # The only reads: WeightLoRA's choice of the K adapters (a resize, at T = one epoch = 6 steps).
    assert set(reads) <= {6}, f"host reads in the optimizer steps {sorted(set(reads))}"
