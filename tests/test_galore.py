"""GaLore: our one optimizer updates the target weights exactly as the PyPI `galore-torch` reference
(GaLoreAdamW, proj_type std) and the other parameters exactly as torch's AdamW, over several steps
and projector refreshes; one step follows Algorithm 2 by hand (left projection when m < n, right
otherwise); the loop builds it through the method's hook and results.json reports its state's
memory beside AdamW's."""
import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import smoke
from roloraexp.methods.galore import GaLore, GaLoreAdamW
from roloraexp.run import run

TRAINER = OmegaConf.create({"lr": 3e-3, "weight_decay": 0.05})


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.wide, self.tall, self.head = nn.Linear(24, 10), nn.Linear(10, 30), nn.Linear(30, 3)  # m<n, m>n, head

    def forward(self, x):
        return self.head(torch.tanh(self.tall(torch.tanh(self.wide(x)))))


def galore_method(**over):
    cfg = smoke("method=galore", "method.train_all=false", *[f"method.{k}={v}" for k, v in over.items()]).method
    return GaLore(cfg)


def test_same_updates_as_galore_torch_over_several_steps():
    galore_torch = pytest.importorskip("galore_torch")  # dev dependency (pyproject [dev])
    torch.manual_seed(0)
    ours = Net().requires_grad_(False)
    ours.head.requires_grad_(True)  # the head trains beside the targets, on AdamW
    ref = copy.deepcopy(ours)
    m = galore_method(rank=3, update_proj_gap=2, scale=0.5)
    m.prepare(ours, ["wide", "tall"])
    opt = m.build_optimizer(ours, TRAINER)
    assert isinstance(opt, GaLoreAdamW) and sum(1 for g in opt.param_groups if g.get("galore_rank")) == 1
    assert {g["eps"] for g in opt.param_groups} == {1e-6}   # galore-torch's default, for every parameter as run_glue.py
    ref.requires_grad_(True)
    targets = [ref.wide.weight, ref.tall.weight]
    decay = [ref.head.weight]
    no_decay = [ref.wide.bias, ref.tall.bias, ref.head.bias]
    ref_galore = galore_torch.GaLoreAdamW([{"params": targets, "rank": 3, "update_proj_gap": 2, "scale": 0.5,
                                            "proj_type": "std", "weight_decay": 0.05}],
                                          lr=3e-3, no_deprecation_warning=True)   # its default eps, 1e-6
    ref_adamw = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=3e-3, eps=1e-6)
    for step in range(7):  # projectors refreshed at steps 0, 2, 4, 6
        x = torch.randn(16, 24)
        for net in (ours, ref):
            net(x).pow(2).mean().backward()
        opt.step()
        ref_galore.step()
        ref_adamw.step()
        for net in (ours, ref):
            net.zero_grad()
        for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"{name} after step {step + 1}")
    assert opt.state[ours.wide.weight]["exp_avg"].shape == (3, 24)   # left: P is 10 x 3, moments 3 x 24
    assert opt.state[ours.tall.weight]["exp_avg"].shape == (30, 3)   # right: Q is 3 x 10, moments 30 x 3


@pytest.mark.parametrize("shape,left", [((6, 20), True), ((20, 6), False)])
def test_one_step_is_algorithm_2(shape, left):
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(*shape))
    G = torch.randn(*shape)
    W0 = W.detach().clone()
    W.grad = G.clone()
    lr, scale, r, eps = 1e-2, 2.0, 2, 1e-8
    GaLoreAdamW([{"params": [W], "galore_rank": r, "update_proj_gap": 10, "galore_scale": scale}], lr=lr,
                weight_decay=0.0, eps=eps).step()
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    P = U[:, :r] if left else Vh[:r].T
    R = P.T @ G if left else G @ P
    M, V = 0.1 * R / (1 - 0.9), 0.001 * R**2 / (1 - 0.999)      # bias-corrected first moments of step 1
    N = M / (V.sqrt() + eps * (1 - 0.999) ** -0.5)                # eps before the bias correction, as galore-torch
    want = W0 - lr * scale * (P @ N if left else N @ P.T)
    torch.testing.assert_close(W.detach(), want, rtol=1e-5, atol=1e-6)


def test_through_the_loop_state_memory_and_exact_counts(tmp_path):
    res = run(smoke("method=galore", "method.train_all=false", "method.rank=2", "method.update_proj_gap=3",
                    "trainer.max_steps=4", "task.max_eval_samples=8"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    layers, d, ff, r = 2, 32, 64, 2
    # per block: q, k, v, attention output (d x d), intermediate (d -> ff), output (ff -> d), weights and biases
    shapes = [(d, d)] * 4 + [(ff, d), (d, ff)]
    assert len(res["ranks"]) == 6 * layers
    weights = layers * sum(m * n for m, n in shapes)
    biases = layers * sum(m for m, _ in shapes)
    assert res["trainable_params"] == res["head_params"] + weights + biases
    mem = res["optimizer_state_bytes"]
    head = res["head_params"] + biases                        # AdamW: two moments each
    projected = layers * sum(2 * (r * max(m, n)) + r * min(m, n) for m, n in shapes)  # moments + projector
    assert mem["galore"] == 4 * (2 * head + projected)
    assert mem["adamw"] == 4 * 2 * (weights + head) and mem["galore"] < mem["adamw"]


def test_train_all_trains_the_whole_backbone(tmp_path):
    res = run(smoke("method=galore", "trainer.max_steps=1", "task.max_eval_samples=8"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    from roloraexp.models import load_model
    from roloraexp.tasks import build_task
    cfg = smoke("method=galore")
    net, _ = load_model(cfg.model, build_task(cfg))
    assert res["trainable_params"] == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("over,message", [
    (["method.rank=32"], "is not below the smaller side"),
    (["method.update_proj_gap=0"], "method.update_proj_gap must be >= 1"),
])
def test_errors_are_one_line(tmp_path, over, message):
    res = run(smoke("method=galore", *over), tmp_path)
    assert res["status"] == "failed" and message in res["error"] and "\n" not in res["error"]
