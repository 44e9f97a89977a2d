"""AdaLoRA / AdaLoRA*: agreement with HF PEFT's AdaLoRA (budgets, masks, orthogonal regulariser),
the real final slice (tensors + Adam state), config errors, restarts, and runs through the loop."""
import json
import math
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from conftest import DATA
from roloraexp.adapters import LowRankLinear, apply_remaps
from roloraexp.checkpoint import trainable_state
from roloraexp.errors import ConfigError
from roloraexp.methods.adalora import AdaLoRA, AdaLoRASparsifier, default_init_rank
from roloraexp.methods.adalora_iter import AdaLoRAIter
from roloraexp.methods.base import TrainContext

REPO = Path(__file__).resolve().parents[1]


def sp_cfg(**over):
    base = dict(name="adalora", t_init=2, t_final=3, delta_t=1, orth_reg=0.1, beta1=0.85, beta2=0.85)
    return OmegaConf.create({**base, **over})


def method_cfg(name="adalora", **over):
    return OmegaConf.create({"name": name, "rank": 2, "init_rank": 4, "alpha": 8, "dropout": 0.0, **over})


class Toy(nn.Module):
    """Three adapted linears and a head; ``forward(x, y).loss`` like a transformers model."""

    def __init__(self, d=12, out=3):
        super().__init__()
        self.q, self.k, self.v, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 10), nn.Linear(10, out)

    def forward(self, x, y=None):
        h = self.v(torch.tanh(self.q(x)) + torch.tanh(self.k(x)))
        out = self.head(torch.tanh(h))
        return types.SimpleNamespace(loss=F.mse_loss(out, y) if y is not None else out.sum() * 0)


# ------------------------------------------------------------------ PEFT side by side
def peft_and_ours(init_r, target_r, tinit, tfinal, deltaT, total_step, orth=0.1, seed=0):
    """The same Toy adapted by PEFT's AdaLoRA and by ours, with identical A, B, E."""
    import peft  # a dev dependency: the reference implementation
    torch.manual_seed(seed)
    base = Toy()
    cfg = peft.AdaLoraConfig(init_r=init_r, target_r=target_r, tinit=tinit, tfinal=tfinal, deltaT=deltaT,
                             total_step=total_step, orth_reg_weight=orth, target_modules=["q", "k", "v"])
    ours = {n: LowRankLinear(nn.Linear(getattr(base, n).in_features, getattr(base, n).out_features), init_r,
                             alpha=8, gate=True, init="adalora") for n in ("q", "k", "v")}
    pm = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for n, a in ours.items():
            layer = pm.base_model.model.get_submodule(n)
            # Non-trivial E (PEFT starts it at 0) so the orthogonality and the masks see real values.
            layer.lora_E["default"].normal_()
            a.lora_A.copy_(layer.lora_A["default"])
            a.lora_B.copy_(layer.lora_B["default"])
            a.gate.copy_(layer.lora_E["default"].view(-1))
    sp = AdaLoRASparsifier(sp_cfg(t_init=tinit, t_final=tfinal, delta_t=deltaT, orth_reg=orth))
    sp.start(ours, total_step, target_r * len(ours))
    return pm, ours, sp


def peft_factors(pm, n):
    layer = pm.base_model.model.get_submodule(n)
    return layer.lora_A["default"], layer.lora_B["default"], layer.lora_E["default"]


@pytest.mark.parametrize("init_r,target_r,tinit,tfinal,deltaT,total", [
    (12, 8, 5, 10, 3, 50), (6, 1, 0, 0, 1, 17), (4, 4, 2, 3, 2, 11), (9, 2, 7, 1, 4, 23)])
def test_budget_schedule_matches_peft(init_r, target_r, tinit, tfinal, deltaT, total):
    pm, _, sp = peft_and_ours(init_r, target_r, tinit, tfinal, deltaT, total)
    ra = pm.base_model.rankallocator
    assert (ra.init_bgt, ra.target_bgt) == (sp.init_total, sp.target_total)
    for step in range(total + 2):
        assert sp.budget_schedule(step) == ra.budget_schedule(step), step


def test_fractional_steps_resolve_against_the_phase():
    pm, ours, _ = peft_and_ours(8, 3, 5, 10, 2, 50)
    sp = AdaLoRASparsifier(sp_cfg(t_init=0.1, t_final=0.2, delta_t=2))
    sp.start(ours, 50, 9)
    assert (sp.t_init, sp.t_final, sp.delta_t) == (5, 10, 2)
    ra = pm.base_model.rankallocator
    assert all(sp.budget_schedule(s) == ra.budget_schedule(s) for s in range(52))


def side_by_side_steps(pm, ours, sp, total, seed=1):
    """Drive both allocators as a training loop does: after each "optimizer step" (the same random
    update on both, which also revives masked gates) and with the same gradients, PEFT gets
    ``update_and_allocate(global_step)`` with the 0-based global_step of PEFT's own AdaLoRA example
    (examples/conditional_generation/peft_adalora_seq2seq.py), ours the loop's 1-based phase_step.
    Yields the loop step after both have run."""
    g = torch.Generator().manual_seed(seed)
    # Adapter-specific gradient scales make the global threshold uneven across adapters.
    scale = {"q": 3.0, "k": 1.0, "v": 0.3}
    for t in range(1, total + 1):
        with torch.no_grad():
            for n, a in ours.items():
                for ours_p, peft_p in zip((a.lora_A, a.lora_B, a.gate), peft_factors(pm, n)):
                    step = 0.05 * torch.randn(ours_p.shape, generator=g)
                    grad = scale[n] * torch.randn(ours_p.shape, generator=g)
                    ours_p.add_(step)
                    peft_p.add_(step.view_as(peft_p))
                    ours_p.grad = grad.clone()
                    peft_p.grad = grad.clone().view_as(peft_p)
        pm.base_model.update_and_allocate(t - 1)
        sp.step(TrainContext(model=None, step=t, phase_step=t, phase_steps=total))
        yield t


def test_masks_and_kept_components_match_peft():
    """Same weights, same optimizer-like updates, same gradients → PEFT's lora_E zeros are our zero
    gates at every step (so the masks fall on the same steps: PEFT's 0-based index), and its final
    rank pattern is what finish() keeps."""
    total, tfinal = 14, 3
    pm, ours, sp = peft_and_ours(init_r=6, target_r=2, tinit=2, tfinal=tfinal, deltaT=2, total_step=total)
    masked_sometime, mask_steps = False, []
    for t in side_by_side_steps(pm, ours, sp, total):
        for n, a in ours.items():
            peft_zero = peft_factors(pm, n)[2].view(-1) == 0
            assert torch.equal(a.gate == 0, peft_zero), (t, n)
            masked_sometime |= bool(peft_zero.any())
        if sp.updated_at == t:
            mask_steps.append(t - 1)
    assert masked_sometime
    # PEFT masks at global steps t_i < t < T − t_f with t % Δ_T == 0, and decides at T − t_f = 11.
    assert mask_steps == [4, 6, 8, 10, 11]
    pattern = pm.peft_config["default"].rank_pattern
    kept = sp.finish()
    assert sum(len(k) for k in kept.values()) == 2 * 3
    for n in ours:
        key = next(k for k in pattern if k.startswith(f"{n}.lora_E"))
        assert sorted(kept[n].tolist()) == [i for i, keep in enumerate(pattern[key]) if keep]


def peft_triplet_scores(ra, n):
    """PEFT's RankAllocator.mask_to_budget score of each triplet of module ``n``, with its own methods."""
    key = next(k for k in ra.exp_avg_ipt if k.endswith(f"{n}.lora_A.default"))
    ipt_A = torch.mean(ra._element_score(key), dim=1, keepdim=True)
    ipt_B = torch.mean(ra._element_score(key.replace("lora_A", "lora_B")), dim=0, keepdim=False).view(-1, 1)
    ipt_E = ra._element_score(key.replace("lora_A", "lora_E"))
    return ra._combine_ipt(ipt_E, torch.cat([ipt_A, ipt_B], dim=1))


def test_importance_scores_equal_peft_rank_allocator():
    """Ī, Ū per entry and the triplet scores agree with PEFT's RankAllocator numerically at every step
    up to the final decision (binary masks alone would not see, e.g., Ū taken from the previous Ī)."""
    total, tfinal = 12, 3
    pm, ours, sp = peft_and_ours(init_r=5, target_r=2, tinit=1, tfinal=tfinal, deltaT=3, total_step=total)
    ra = pm.base_model.rankallocator
    compared = 0
    for t in side_by_side_steps(pm, ours, sp, total, seed=3):
        if t - 1 >= total - tfinal:  # both stop updating the statistics at the final decision
            break
        for n, a in ours.items():
            for factor, peft_factor in (("lora_A", "lora_A"), ("lora_B", "lora_B"), ("gate", "lora_E")):
                key = next(k for k in ra.exp_avg_ipt if k.endswith(f"{n}.{peft_factor}.default"))
                for ours_ema, peft_ema in ((sp._ipt, ra.exp_avg_ipt), (sp._unc, ra.exp_avg_unc)):
                    torch.testing.assert_close(ours_ema[(n, factor)].view(-1), peft_ema[key].view(-1), atol=1e-6, rtol=0)
            ours_score, peft_score = sp.scores()[n], peft_triplet_scores(ra, n)
            assert ours_score.abs().max() > 0
            torch.testing.assert_close(ours_score, peft_score, atol=1e-6, rtol=1e-6)
            compared += 1
    assert compared == 3 * (total - tfinal)


def test_orth_regulariser_matches_peft():
    pm, ours, sp = peft_and_ours(5, 2, 1, 1, 1, 10, orth=0.3)
    peft_loss = pm.base_model(torch.randn(4, 12)).loss  # the model's own loss is 0: only the regulariser
    ours_loss = sp.extra_loss()
    assert peft_loss.item() > 0
    assert abs(ours_loss.item() - peft_loss.item()) < 1e-6
    # A rank-0 adapter adds no term (and does not dilute the mean).
    empty = LowRankLinear(nn.Linear(12, 12), 0, alpha=8, gate=True, init="adalora")
    sp.start({**ours, "empty": empty}, 10, 4)
    assert abs(sp.extra_loss().item() - peft_loss.item()) < 1e-6
    assert AdaLoRASparsifier(sp_cfg(orth_reg=0.0)).extra_loss() is None


# ------------------------------------------------------------------ selection
def test_keeps_the_globally_most_important_components():
    """|p ⊙ ∇p| = c_i on every entry of component i: the triplet scores rank like c."""
    c = {"a": [8.0, 7.0, 1.0, 0.5], "b": [6.0, 0.1, 0.2, 5.0]}
    ads = {n: LowRankLinear(nn.Linear(5, 6), 4, alpha=8, gate=True, init="adalora") for n in c}
    sp = AdaLoRASparsifier(sp_cfg(t_init=0, t_final=1, delta_t=1))
    sp.start(ads, 3, 4)
    for t in (1, 2):
        with torch.no_grad():
            for n, a in ads.items():
                ci = torch.tensor(c[n])
                for p in (a.lora_A, a.lora_B, a.gate):
                    p.fill_(1.0)
                a.lora_A.grad = ci[:, None].expand_as(a.lora_A).clone()
                a.lora_B.grad = ci[None, :].expand_as(a.lora_B).clone()
                a.gate.grad = ci.clone()
        sp.step(TrainContext(model=None, step=t, phase_step=t, phase_steps=3))
    kept = sp.finish()
    assert kept["a"].tolist() == [0, 1] and kept["b"].tolist() == [0, 3]  # most important first
    assert sp.effective_ranks() == {"a": 2, "b": 2}
    assert ads["a"].gate.tolist() == [1, 1, 0, 0] and ads["b"].gate.tolist() == [1, 0, 0, 1]
    scores = sp.scores()
    assert scores["a"][0] > scores["a"][1] > scores["b"][0] > scores["b"][3] > scores["a"][2] > scores["a"][3]


def test_overflowed_step_leaves_the_statistics_alone():
    """fp16: when the grads overflowed the optimizer skipped the step; inf must not enter the EMAs."""
    ads = {n: LowRankLinear(nn.Linear(5, 6), 3, alpha=8, gate=True, init="adalora") for n in "ab"}
    sp = AdaLoRASparsifier(sp_cfg(t_init=5, t_final=1))
    sp.start(ads, 10, 4)

    def step(t, bad=False):
        for a in ads.values():
            for p in (a.lora_A, a.lora_B, a.gate):
                p.grad = torch.randn(p.shape)
        if bad:
            ads["b"].lora_B.grad[0, 0] = math.inf
        sp.step(TrainContext(model=None, step=t, phase_step=t, phase_steps=10))

    step(1)
    before = {n: s.clone() for n, s in sp.scores().items()}
    step(2, bad=True)
    assert all(torch.equal(before[n], s) for n, s in sp.scores().items())
    step(3)
    assert all(torch.isfinite(s).all() and not torch.equal(before[n], s) for n, s in sp.scores().items())


# ------------------------------------------------------------------ slicing with the optimizer
def manual_phase(method, model, steps, on_step=None, lr=1e-2, seed=0, phase=0, best_state=None):
    """What train.py does around the hooks, in a few lines (one optimizer step per batch)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(12, 3, generator=g)
    ctx = TrainContext(model=model, phase=phase, phase_steps=steps, total_steps=steps, best_state=best_state)
    method.on_phase_start(ctx)
    opt = torch.optim.AdamW(method.param_groups(model, 0.01), lr=lr)
    ctx.optimizer = opt
    losses = []
    for t in range(1, steps + 1):
        x = torch.randn(16, 12, generator=g)
        loss = model(x, torch.tanh(x @ W)).loss + method.extra_loss()
        loss.backward()
        opt.step()
        ctx.step += 1
        ctx.phase_step += 1
        losses.append(loss.item())
        before = on_step(t, method, opt, "before") if on_step else None
        remaps = method.after_optimizer_step(ctx)
        apply_remaps(opt, remaps)
        if on_step:
            on_step(t, method, opt, ("after", remaps, before))
        model.zero_grad(set_to_none=True)
    method.on_phase_end(ctx)
    return losses, opt


def make_method(cls=AdaLoRA, seed=0, **over):
    torch.manual_seed(seed)
    m = cls(method_cfg(**over), sparsifier=sp_cfg(t_init=2, t_final=3, delta_t=2))
    model = Toy()
    m.prepare(model, ["q", "k", "v"])
    return m, model


def test_final_slice_carries_adam_state_and_training_continues():
    method, model = make_method()
    T, final = 10, 10 - 3 + 1  # the decision at PEFT's step index T − t_f = the loop's step T − t_f + 1
    seen = {}

    def on_step(t, m, opt, when):
        if t == final and when == "before":
            # The final decision uses the statistics of step t − 1 (PEFT stops updating them at T − t_f).
            seen["scores"] = {n: s.clone() for n, s in m.sparsifier.scores().items()}
            seen["params"] = {n: {f: getattr(a, f).detach().clone() for f in ("lora_A", "lora_B", "gate")}
                              for n, a in m.adapters.items()}
            seen["state"] = {n: {f: {k: v.clone() for k, v in opt.state[getattr(a, f)].items()}
                                 for f in ("lora_A", "lora_B", "gate")} for n, a in m.adapters.items()}
            assert all(a.rank == 4 for a in m.adapters.values())
        elif t == final:
            _, remaps, _ = when
            seen["remaps"] = remaps
            seen["opt_ids"] = {id(p) for grp in opt.param_groups for p in grp["params"]}
            seen["ranks"] = m.ranks()
            seen["after"] = {n: {f: getattr(a, f).detach().clone() for f in ("lora_A", "lora_B", "gate")}
                             for n, a in m.adapters.items()}
            seen["new_state"] = {n: {f: {k: v.clone() for k, v in opt.state[getattr(a, f)].items()}
                                     for f in ("lora_A", "lora_B", "gate")} for n, a in m.adapters.items()}
        elif t < final and when == "before":
            assert all(a.rank == 4 for a in m.adapters.values())  # masking only, the tensors stay

    losses, opt = manual_phase(method, model, T, on_step)
    assert len(seen["remaps"]) == 3 * 3
    assert sum(seen["ranks"].values()) == 2 * 3 == sum(a.rank for a in method.adapters.values())
    # The survivors are the globally best-scored components, most important first.
    all_scores = torch.cat([s for s in seen["scores"].values()])
    threshold = torch.kthvalue(all_scores, 12 - 6)[0]
    dims = {"lora_A": 0, "lora_B": 1, "gate": 0}
    for n, a in method.adapters.items():
        s = seen["scores"][n]
        expect = torch.nonzero(s > threshold).view(-1)
        expect = expect[torch.argsort(s[expect], descending=True)]
        for f, dim in dims.items():
            # Tensors and Adam moments are the surviving slices of the old ones.
            assert torch.equal(seen["after"][n][f], seen["params"][n][f].index_select(dim, expect)), (n, f)
            for k in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(seen["new_state"][n][f][k], seen["state"][n][f][k].index_select(dim, expect))
    # The optimizer holds the new tensors only, and they kept training after the slice.
    assert {id(p) for n, a in method.adapters.items() for p in (a.lora_A, a.lora_B, a.gate)} <= seen["opt_ids"]
    assert all(math.isfinite(v) for v in losses)
    for n, a in method.adapters.items():
        assert not torch.equal(a.lora_A.detach(), seen["after"][n]["lora_A"])
        assert a.rank == seen["ranks"][n]
    budgets = [h["budget"] for h in method.history]
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == 6 and budgets[0] < 12
    assert method.ranks() == seen["ranks"]


def test_effective_ranks_while_masking():
    method, model = make_method()
    ranks = []
    manual_phase(method, model, 10, lambda t, m, opt, when: ranks.append(sum(m.ranks().values()))
                 if when != "before" else None)
    assert ranks[0] == 12  # warm-up: nothing masked yet
    assert ranks[-1] == 6
    assert ranks == sorted(ranks, reverse=True)
    entries = [h for h in method.history if "budget" in h]
    assert all(sum(h["ranks"].values()) <= h["budget"] for h in entries)


# ------------------------------------------------------------------ AdaLoRA as run by the WeightLoRA authors
def test_allocate_false_keeps_svd_form_and_regulariser_without_allocation():
    method, model = make_method(allocate=False)
    reference = AdaLoRASparsifier(sp_cfg())
    reference.start(method.adapters, 10, 6)
    ranks = []
    manual_phase(method, model, 10, lambda t, m, opt, w: ranks.append(m.ranks()) if w != "before" else None)
    assert ranks == [{"q": 4, "k": 4, "v": 4}] * 10  # init_rank throughout: nothing masked or sliced
    assert all(a.rank == 4 and bool((a.gate != 0).all()) for a in method.adapters.values())
    assert method.extra_loss().item() == pytest.approx(reference.extra_loss().item()) and method.extra_loss() > 0
    assert method.history == [] and method.state()["allocate"] is False


def test_allocate_false_through_the_run(tmp_path):
    from conftest import smoke
    from roloraexp.run import run

    res = run(smoke("method=adalora", "method.allocate=false", "trainer.max_steps=4"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    assert set(res["ranks"].values()) == {12} and res["allocate"] is False  # 1.5 R, as PEFT's init_r = 12
    assert res["trainable_params"] == res["trainable_params_peak"]


# ------------------------------------------------------------------ config errors
def test_config_errors():
    ads = {"a": LowRankLinear(nn.Linear(4, 4), 4, alpha=8, gate=True, init="adalora")}
    with pytest.raises(ConfigError, match="sparsifier.t_init"):
        AdaLoRASparsifier(sp_cfg(t_init=6, t_final=4)).start(ads, 10, 2)
    with pytest.raises(ConfigError, match="sparsifier.t_init"):
        AdaLoRASparsifier(sp_cfg(t_init=0.5, t_final=0.5)).start(ads, 10, 2)
    with pytest.raises(ConfigError, match="method.init_rank"):
        AdaLoRASparsifier(sp_cfg()).start(ads, 10, 5)
    with pytest.raises(ConfigError, match="sparsifier.delta_t"):
        AdaLoRASparsifier(sp_cfg(delta_t=0)).start(ads, 10, 2)
    with pytest.raises(ConfigError, match="sparsifier.beta1"):
        AdaLoRASparsifier(sp_cfg(beta1=1.0))
    with pytest.raises(ConfigError, match="sparsifier.orth_reg"):
        AdaLoRASparsifier(sp_cfg(orth_reg=-1))
    with pytest.raises(ConfigError, match="method.init_rank"):
        AdaLoRA(method_cfg(rank=8, init_rank=4), sparsifier=sp_cfg())
    for bad in (None, OmegaConf.create({"name": "none"}), OmegaConf.create({"name": "sora", "threshold": 0.1})):
        with pytest.raises(ConfigError, match="method=adalora needs sparsifier=adalora"):
            AdaLoRA(method_cfg(), sparsifier=bad)
    with pytest.raises(ConfigError, match="needs sparsifier=adalora"):
        AdaLoRAIter(method_cfg("adalora_iter"), sparsifier=None)


def test_default_init_rank_is_one_and_a_half_r():
    assert [default_init_rank(r) for r in (1, 2, 3, 4, 8, 16)] == [2, 3, 5, 6, 12, 24]
    assert AdaLoRA(method_cfg(rank=8, init_rank=None), sparsifier=sp_cfg()).init_rank == 12


# ------------------------------------------------------------------ AdaLoRA*
@pytest.mark.parametrize("when", ["masked", "sliced"])
def test_restart_from_a_masked_or_sliced_checkpoint(when):
    """Run 2 of AdaLoRA* restarts from the best checkpoint: at init_rank (masked) or already sliced."""
    method, model = make_method(AdaLoRAIter, iterations=2)
    snaps = {}

    def on_step(t, m, opt, w):
        if w == "before":
            return
        if t == 5:
            snaps["masked"] = (trainable_state(model), m.ranks())
        if t == 9:
            snaps["sliced"] = (trainable_state(model), m.ranks())

    manual_phase(method, model, 10, on_step)
    state, effective = snaps[when]
    loaded_total = 12 if when == "masked" else 6
    assert sum(effective.values()) <= loaded_total
    starts = []
    method_start = AdaLoRASparsifier.start

    def spy(self, adapters, steps, target, aggressiveness=1.0):
        starts.append((sum(a.rank for a in adapters.values()), target))
        return method_start(self, adapters, steps, target, aggressiveness)

    AdaLoRASparsifier.start = spy
    try:
        losses, _ = manual_phase(method, model, 10, seed=1, phase=1, best_state=state)
    finally:
        AdaLoRASparsifier.start = method_start
    assert starts == [(loaded_total, 6)]  # b_0 = the loaded total, the same target
    restart = next(h for h in method.history if h.get("restarted_from_best"))
    assert sum(restart["ranks"].values()) == loaded_total  # tensor ranks right after loading
    assert sum(a.rank for a in method.adapters.values()) == 6 == sum(method.ranks().values())
    assert all(math.isfinite(v) for v in losses)
    assert all(a.scaling == 8 / 4 for a in method.adapters.values())  # alpha / init_rank, never rescaled


# ------------------------------------------------------------------ the real loop
class FakeTask:
    """A regression task shaped like roloraexp.tasks: train_dataset, collate, evaluate."""

    def __init__(self, n=48, main=None):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 12, generator=g)
        self.y = torch.tanh(self.x @ torch.randn(12, 3, generator=g))
        self.train_dataset = list(range(n))
        self.main, self.evals = main, 0

    def collate(self, idx):
        idx = torch.tensor(idx)
        return {"x": self.x[idx], "y": self.y[idx]}

    @torch.no_grad()
    def evaluate(self, model, accelerator, batch_size):
        self.evals += 1
        loss = model(self.x.to(accelerator.device), self.y.to(accelerator.device)).loss.item()
        return {"main": self.main(self.evals) if self.main else -loss, "loss": loss}


def fit(method, model, task, **trainer):
    from roloraexp.train import Trainer

    cfg = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "trainer" / "default.yaml"),
                          {"max_steps": 10, "batch_size": 8, "device": "cpu", "save_adapters": False, **trainer})
    return Trainer(model, task, method, cfg).fit()


def test_adalora_iter_through_the_loop():
    """Phase 1's best evaluation is at step 4 (still at init_rank, masked): phase 2 restarts there."""
    method, model = make_method(AdaLoRAIter, iterations=2)
    record = fit(method, model, FakeTask(main=lambda i: 1.0 if i == 2 else 0.0), eval_every=2)
    assert record.best_metrics["step"] == 4
    restart = next(h for h in method.history if h.get("restarted_from_best"))
    assert sum(restart["ranks"].values()) == 12  # the checkpoint had the initial tensors
    assert sum(a.rank for a in method.adapters.values()) == 6
    ends = [h for h in record.history if "phase_end" in h]
    assert [sum(h["ranks"].values()) for h in ends] == [6, 6]
    assert record.trainable_params_peak > record.trainable_params


def test_adalora_e2e_on_rte(tmp_path):
    from hydra import compose, initialize_config_dir

    from roloraexp.run import run

    overrides = ["model=tiny_roberta", "task=rte", f"data_dir={DATA}", "method=adalora",
                 "logger=disabled", "trainer.max_steps=20", "trainer.batch_size=8",
                 "task.max_train_samples=64", "task.max_eval_samples=32", "sparsifier.t_init=4",
                 "sparsifier.t_final=4", "sparsifier.delta_t=2"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    result = run(cfg, output_dir=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "completed", saved.get("error")
    ranks = saved["ranks"]
    assert len(ranks) == 4 and sum(ranks.values()) / len(ranks) == cfg.method.rank
    assert saved["trainable_params_peak"] > saved["trainable_params"]  # AdaLoRA starts at 1.5 R
    assert result["steps"] == 20


@pytest.mark.parametrize("method,cls", [("adalora", AdaLoRA), ("adalora_iter", AdaLoRAIter)])
def test_method_configs_choose_their_sparsifier(method, cls):
    from hydra import compose, initialize_config_dir

    from roloraexp.methods import build_method

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={method}"])
        wrong = compose("config", overrides=[f"method={method}", "sparsifier=none"])
    assert cfg.sparsifier.name == "adalora" and cfg.method.init_rank is None
    assert type(build_method(cfg)) is cls
    with pytest.raises(ConfigError, match=f"method={method} needs sparsifier=adalora"):
        build_method(wrong)
