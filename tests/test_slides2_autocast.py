"""bf16 autocast (on CPU, where it can run here) through every method of the slides' part 2: the
adapted model's logits stay close to fp32, the adapters' gradients are fp32 and finite, and one
optimizer step of the method's own optimizer runs on them."""
import pytest
import torch

from conftest import smoke
from roloraexp.adapters import find_target_modules
from roloraexp.methods import build_method
from roloraexp.methods.base import TrainContext
from roloraexp.models import head_prefixes, load_model
from roloraexp.tasks import build_task


@pytest.mark.parametrize("method", ["dylora", "hydra", "galore", "hadapter", "padapter"])
def test_bf16_autocast_forward_backward_and_step(method):
    cfg = smoke(f"method={method}")
    torch.manual_seed(0)
    net, _ = load_model(cfg.model, build_task(cfg))
    m = build_method(cfg)
    targets = cfg.method.get("target_modules") or cfg.model.target_modules
    m.prepare(net, find_target_modules(net, targets, exclude=head_prefixes(net, cfg.model.arch)))
    for p in (p for a in m.adapters.values() for p in a.parameters() if p.requires_grad and p.abs().sum() == 0):
        with torch.no_grad():
            p.normal_(std=0.05)  # zero-initialised up-projections: make the adapters count in the forward
    batch = {"input_ids": torch.randint(5, 500, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1, 0])}
    opt = m.build_optimizer(net, cfg.trainer)
    ctx = TrainContext(model=net, optimizer=opt)
    net.train()
    m.on_step_start(ctx)
    net.eval()  # no dropout: compare the two precisions on the same function
    ref = net(**batch).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(**batch)
    assert out.logits.dtype == torch.bfloat16
    torch.testing.assert_close(out.logits.float(), ref, rtol=0.05, atol=0.05)
    out.loss.backward()
    grads = [p.grad for a in m.adapters.values() for p in a.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    m.before_optimizer_step(ctx)
    opt.step()
    m.after_optimizer_step(ctx)
    after = [p.detach() for g in opt.param_groups for p in g["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
