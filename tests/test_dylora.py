"""DyLoRA: the forward at rank b is W0 x + (α/b) B[:, :b] A[:b] x; a step updates only the components
Algorithm 1 updates (and AdamW's moment decay and weight decay leave the others bit for bit); the
sampled ranks are seeded and resumable; one run scores every rank and writes them to results.json."""
import copy

import pytest
import torch
from torch import nn

from conftest import smoke
from roloraexp.adapters import ComponentAdamW
from roloraexp.adapters.dynamic_rank import DynamicRankLinear
from roloraexp.methods.base import TrainContext
from roloraexp.methods.dylora import RANK_HISTOGRAM, DyLoRA
from roloraexp.run import run
from roloraexp.tracking import Tracker


def make_method(**over):
    cfg = smoke("method=dylora", *[f"method.{k}={v}" for k, v in over.items()]).method
    return DyLoRA(cfg, seed=3)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.v = nn.Linear(12, 10), nn.Linear(10, 6)

    def forward(self, x):
        return self.v(torch.tanh(self.q(x)))


def prepared(r_max=6, frozen=False, weight_decay=0.1):
    torch.manual_seed(0)
    net = Net().requires_grad_(False)
    m = make_method(r_max=r_max, frozen=frozen)
    m.prepare(net, ["q", "v"])
    with torch.no_grad():
        for a in m.adapters.values():
            a.lora_B.normal_()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=weight_decay)
    return net, m, TrainContext(model=net, optimizer=opt)


def train_step(net, m, ctx, b, x):
    m.current_rank = b
    m.set_rank(b, m.frozen)
    net(x).pow(2).sum().backward()
    m.before_optimizer_step(ctx)
    ctx.optimizer.step()
    m.after_optimizer_step(ctx)
    ctx.optimizer.zero_grad()


def test_forward_uses_the_first_b_components_scaled_alpha_over_b():
    torch.manual_seed(0)
    base = nn.Linear(9, 7)
    a = DynamicRankLinear(base, 5, alpha=16)
    with torch.no_grad():
        a.lora_B.normal_()
    x = torch.randn(4, 9)
    for b in (1, 3, 5):
        a.set_active_rank(b)
        want = base(x) + (16 / b) * x @ a.lora_A[:b].T @ a.lora_B[:, :b].T
        torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)
        a.merge()
        torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)
        a.unmerge()


@pytest.mark.parametrize("frozen,b,updated", [(True, 3, [2]), (False, 3, [0, 1, 2]), (True, 1, [0])])
def test_a_step_moves_only_the_components_algorithm_1_updates(frozen, b, updated):
    net, m, ctx = prepared(frozen=frozen, weight_decay=0.1)
    x = torch.randn(8, 12)
    train_step(net, m, ctx, 6, x)           # a full-rank step first: every component has momentum now
    m.frozen = frozen
    opt = ctx.optimizer
    before = {id(p): (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
              for a in m.adapters.values() for p in (a.lora_A, a.lora_B)}
    train_step(net, m, ctx, b, x)
    others = [i for i in range(6) if i not in updated]
    for a in m.adapters.values():
        for p, dim in ((a.lora_A, 0), (a.lora_B, 1)):
            old, old_state = before[id(p)]
            same = lambda t: t.index_select(dim, torch.tensor(others))  # noqa: E731
            moved = lambda t: t.index_select(dim, torch.tensor(updated))  # noqa: E731
            assert torch.equal(same(p.detach()), same(old))            # bit for bit: no momentum, no decay
            for k in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(same(opt.state[p][k]), same(old_state[k]))
            assert not torch.equal(moved(p.detach()), moved(old))
            assert not torch.equal(moved(opt.state[p]["exp_avg"]), moved(old_state["exp_avg"]))


def test_first_step_leaves_a_zero_state_on_untouched_components():
    net, m, ctx = prepared(frozen=True)
    train_step(net, m, ctx, 4, torch.randn(8, 12))
    for a in m.adapters.values():
        st = ctx.optimizer.state[a.lora_A]
        assert st["exp_avg"][[0, 1, 2, 4, 5]].abs().sum() == 0 and st["exp_avg"][3].abs().sum() > 0


def test_each_component_counts_its_own_adam_steps():
    """Under the loop's ComponentAdamW, a component's step count is the number of steps that updated
    it, so the first update of a component trained late is a fresh Adam's (lr per entry), not one
    with the tensor's count (≈ 0.55 lr here: the bias correction of 5 steps on one step's moments;
    ≈ 3.2 lr after thousands of steps)."""
    net, m, ctx = prepared(frozen=True, weight_decay=0.0)
    ctx.optimizer = ComponentAdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x = torch.randn(8, 12)
    for b in (2, 2, 5, 2):
        train_step(net, m, ctx, b, x)
    A, B = m.adapters["q"].lora_A, m.adapters["q"].lora_B
    st = ctx.optimizer.state
    assert st[A]["step"].view(-1).tolist() == st[B]["step"].view(-1).tolist() == [0, 3, 0, 0, 1, 0]
    assert st[A]["step"].shape == (6, 1) and st[B]["step"].shape == (1, 6)
    before = A.detach().clone()
    train_step(net, m, ctx, 6, x)    # component 5's first update, at the run's 5th step
    moved = (A.detach() - before)[5]
    torch.testing.assert_close(moved.abs(), torch.full_like(moved, 1e-2), rtol=1e-3, atol=0)
    assert st[A]["step"].view(-1).tolist() == [0, 3, 0, 0, 1, 1]


def test_sampling_is_seeded_uniform_and_resumes_from_a_checkpoint():
    m = make_method(r_max=4, r_min=2)
    ctx = TrainContext(model=nn.Identity())
    draws = []
    for _ in range(400):
        m.on_step_start(ctx)
        draws.append(m.current_rank)
    assert set(draws) == {2, 3, 4} and all(abs(draws.count(b) / 400 - 1 / 3) < 0.08 for b in (2, 3, 4))
    saved = copy.deepcopy(m.state_dict())
    later = []
    for _ in range(20):
        m.on_step_start(ctx)
        later.append(m.current_rank)
    again = make_method(r_max=4, r_min=2)
    again.load_state_dict(saved)
    resumed = []
    for _ in range(20):
        again.on_step_start(ctx)
        resumed.append(again.current_rank)
    assert resumed == later and again.rank_counts == m.rank_counts
    other = make_method(r_max=4, r_min=2)
    assert [other.on_step_start(ctx) or other.current_rank for _ in range(400)] == draws  # same seed, same ranks


def test_one_run_scores_every_rank_and_keeps_the_best_evaluations_ranks(tmp_path):
    res = run(smoke("method=dylora", "method.r_max=4", "trainer.max_steps=6", "trainer.eval_every=2"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    assert set(res["metrics_by_rank"]) == {"1", "2", "3", "4"} and set(res["ranks"].values()) == {4}
    assert res["metrics"] == res["metrics_by_rank"]["4"]
    best = max((h for h in res["history"] if "metrics" in h), key=lambda h: h["metrics"]["main"])
    assert res["best_metrics_by_rank"] == best["metrics_by_rank"]
    assert res["best_metrics"]["main"] == res["best_metrics_by_rank"]["4"]["main"]
    assert sum(res["histograms"][RANK_HISTOGRAM].values()) == 6
    n = len(res["ranks"])
    assert res["trainable_params"] == res["head_params"] + n * 4 * (32 + 32)  # LoRA at r_max on q, v


@pytest.mark.parametrize("over,message", [
    (["method.rank=4"], "must equal method.r_max"),
    (["method.r_min=9"], "method.r_min must be in [1, r_max = 8]"),
    (["method.eval_ranks=[0,3]"], "method.eval_ranks must lie in [1, r_max = 8]"),
    (["method.r_max=40"], "method.r_max=40 exceeds what the 32 x 32 matrix"),
])
def test_config_errors_are_one_line(tmp_path, over, message):
    res = run(smoke("method=dylora", *over), tmp_path)
    assert res["status"] == "failed" and message in res["error"] and "\n" not in res["error"]


def test_sampled_ranks_become_a_wandb_histogram():
    import wandb

    class Recorder(Tracker):
        def __init__(self):
            super().__init__({"mode": "disabled"}, None, None, "")
            self.logged, self.run = [], object()

        def log(self, metrics, step):
            self.logged.append(metrics)

    t = Recorder()
    t.log_state({"ranks": {"a": 8}, "histograms": {RANK_HISTOGRAM: {"1": 3, "4": 5}}}, 2)
    hist = t.logged[0][RANK_HISTOGRAM]
    assert isinstance(hist, wandb.Histogram)
    assert list(hist.histogram) == [3, 0, 0, 5] and list(hist.bins) == [0.5, 1.5, 2.5, 3.5, 4.5]
