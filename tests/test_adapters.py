"""The adapter module: identity at init, PEFT equivalence, merge, resize (grow / shrink) with
ΔW preserved and the optimizer state following."""
import copy

import peft
import pytest
import torch
import transformers
from torch import nn

from roloraexp.adapters import LowRankLinear, apply_remaps, find_target_modules, inject_adapters
from roloraexp.errors import ConfigError
from roloraexp.models import TINY_CONFIGS


def tiny_model(arch, vocab=1000, num_labels=2):
    torch.manual_seed(0)
    cfg = TINY_CONFIGS[arch](vocab)
    cfg.num_labels = num_labels
    return transformers.AutoModelForSequenceClassification.from_config(cfg).eval()


def inputs(vocab=1000):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (3, 12), generator=g)
    ids[:, -1] = 102  # the tiny configs' eos: BART's classification head pools at it
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def lora(rank=4, alpha=8.0, **kw):
    return lambda name, lin: LowRankLinear(lin, rank, alpha, **kw)


def randomize(adapter, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.adapter_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_fresh_adapters_leave_outputs_unchanged(arch):
    model = tiny_model(arch)
    ref = model(**inputs()).logits
    targets = {"roberta": ["query", "value"], "bert": ["query", "value"], "deberta": ["query_proj", "key_proj", "value_proj"],
               "bart": ["q_proj", "v_proj"], "llama": ["q_proj", "v_proj"]}[arch]
    names = find_target_modules(model, targets)
    adapters = inject_adapters(model, names, lora(gate=True, omega=True))
    # 2 layers; BART has encoder self-, decoder self- and decoder cross-attention
    assert len(adapters) == {"roberta": 4, "bert": 4, "deberta": 6, "bart": 12, "llama": 4}[arch]
    torch.testing.assert_close(model(**inputs()).logits, ref, rtol=0, atol=0)


@pytest.mark.parametrize("arch,targets", [("roberta", ["query", "value"]), ("deberta", ["query_proj", "key_proj", "value_proj"])])
def test_same_factors_give_peft_logits(arch, targets):
    ours = tiny_model(arch)
    theirs = peft.get_peft_model(copy.deepcopy(ours), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))
    adapters = inject_adapters(ours, find_target_modules(ours, targets), lora())
    for i, (name, a) in enumerate(sorted(adapters.items())):
        randomize(a, i)
        layer = theirs.base_model.model.get_submodule(name)
        layer.lora_A["default"].weight.data.copy_(a.lora_A)
        layer.lora_B["default"].weight.data.copy_(a.lora_B)
    torch.testing.assert_close(ours(**inputs()).logits, theirs(**inputs()).logits, rtol=0, atol=1e-5)


def test_merge_matches_unmerged_and_unmerge_restores():
    torch.manual_seed(0)
    a = LowRankLinear(nn.Linear(16, 8), 3, 6.0, gate=True, omega=True)
    randomize(a, 0)
    x = torch.randn(5, 16)
    before, w0 = a(x), a.base.weight.clone()
    a.merge()
    torch.testing.assert_close(a(x), before, atol=1e-6, rtol=0)
    a.unmerge()
    torch.testing.assert_close(a.base.weight, w0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("init", ["lora", "adalora", "gaussian_zero", "qr"])
def test_grow_keeps_delta_w(init):
    a = LowRankLinear(nn.Linear(16, 12), 3, 6.0, gate=True)
    randomize(a, 0)
    dw = a.delta_weight().detach().clone()
    a.grow(4, init=init, generator=torch.Generator().manual_seed(0))
    assert a.rank == 7 and a.lora_A.shape == (7, 16) and a.lora_B.shape == (12, 7) and a.gate.shape == (7,)
    torch.testing.assert_close(a.delta_weight(), dw, atol=1e-5, rtol=0)
    assert a.scaling == 6.0 / 3  # fixed at creation: part of why ΔW survives


def test_qr_grow_orthonormal_old_and_orthogonal_new_directions():
    a = LowRankLinear(nn.Linear(16, 12), 3, 6.0)
    randomize(a, 0)
    a.grow(4, init="qr")
    B = a.lora_B.detach()
    torch.testing.assert_close(B[:, :3].T @ B[:, :3], torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(B[:, :3].T @ B[:, 3:], torch.zeros(3, 4), atol=1e-5, rtol=0)


def test_shrink_keeps_exactly_the_chosen_components():
    a = LowRankLinear(nn.Linear(16, 12), 5, 10.0, gate=True)
    randomize(a, 0)
    keep = [4, 1]
    A, B, g = a.lora_A.detach().clone(), a.lora_B.detach().clone(), a.gate.detach().clone()
    a.keep(keep)
    expected = (B[:, keep] * g[keep]) @ A[keep] * a.scaling
    torch.testing.assert_close(a.delta_weight(), expected, atol=1e-6, rtol=0)
    assert a.rank == 2 and a.num_adapter_params() == 2 * (16 + 12 + 1)


def test_optimizer_follows_resize_and_keeps_training():
    torch.manual_seed(0)
    a = LowRankLinear(nn.Linear(16, 12), 5, 10.0, gate=True)
    randomize(a, 0)
    opt = torch.optim.AdamW([{"params": [a.lora_A, a.lora_B]}, {"params": [a.gate], "weight_decay": 0.0}], lr=1e-2)
    x, y = torch.randn(32, 16), torch.randn(32, 12)
    for _ in range(3):
        nn.functional.mse_loss(a(x), y).backward()
        opt.step()
        opt.zero_grad()
    old_A_state = opt.state[a.lora_A]["exp_avg"].clone()
    old_B_state = opt.state[a.lora_B]["exp_avg_sq"].clone()
    apply_remaps(opt, a.keep([3, 0, 2]))
    assert opt.state[a.lora_A]["exp_avg"].shape == (3, 16)
    torch.testing.assert_close(opt.state[a.lora_A]["exp_avg"], old_A_state[[3, 0, 2]])
    torch.testing.assert_close(opt.state[a.lora_B]["exp_avg_sq"], old_B_state[:, [3, 0, 2]])
    apply_remaps(opt, a.grow(2))
    st = opt.state[a.lora_B]["exp_avg_sq"]
    assert st.shape == (12, 5) and torch.all(st[:, 3:] == 0)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert any(p is a.lora_A for p in params) and any(p is a.gate for p in params) and len(params) == 3
    losses = []
    for _ in range(20):
        loss = nn.functional.mse_loss(a(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]
    assert a.lora_B[:, 3:].abs().sum() > 0  # the grown components train


def test_disconnect_removes_params_from_optimizer():
    a = LowRankLinear(nn.Linear(16, 12), 4, 8.0, omega=True)
    opt = torch.optim.AdamW([a.lora_A, a.lora_B], lr=1e-3)
    apply_remaps(opt, a.disconnect())
    assert a.num_adapter_params() == 0 and a.rank == 0
    assert sum(len(g["params"]) for g in opt.param_groups) == 0 and not opt.state
    x = torch.randn(2, 16)
    torch.testing.assert_close(a(x), a.base(x))


def test_targets_that_match_nothing_name_the_existing_modules():
    model = tiny_model("roberta")
    with pytest.raises(ConfigError, match="match no linear layer.*query"):
        find_target_modules(model, ["q_proj"])


def test_suffix_targets_skip_heads():
    model = tiny_model("roberta")
    names = find_target_modules(model, ["dense"], exclude=["classifier"])
    assert names and not any(n.startswith("classifier") for n in names)
