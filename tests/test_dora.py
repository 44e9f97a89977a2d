"""DoRA against PEFT's LoraConfig(use_dora=True): the same factors and magnitude give the same
logits, gradients (the column norm detached) and AdamW updates, also with dropout on in training;
counts agree; merge is exact. DVoRA (no PEFT reference) against DoRA's formula with VeRA's ΔV
computed by hand, forward and backward."""
import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from roloraexp.adapters.dvora import DVoRALinear
from roloraexp.adapters.vera import SharedProjection
from roloraexp.methods.base import count_trainable
from slides_helpers import TARGETS, adamw_steps, batch, prepared, randomize_, tiny_model, twin


def peft_layer(theirs, name):
    return theirs.base_model.model.get_submodule(name)


def same_start(arch, dropout=0.0, rank=4, alpha=8):
    """This project's DoRA and PEFT's on twin tiny models, holding the same random A, B and m."""
    ours = tiny_model(arch)
    theirs = peft.get_peft_model(twin(ours), peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS[arch],
                                                             lora_dropout=dropout, use_dora=True))
    method = prepared("dora", ours, TARGETS[arch], rank=rank, alpha=alpha, dropout=dropout)
    for i, (name, a) in enumerate(sorted(method.adapters.items())):
        randomize_([a.lora_A, a.lora_B], i)
        randomize_([a.magnitude], 100 + i, positive=True)
        layer = peft_layer(theirs, name)
        layer.lora_A["default"].weight.data.copy_(a.lora_A)
        layer.lora_B["default"].weight.data.copy_(a.lora_B)
        layer.lora_magnitude_vector["default"].weight.data.copy_(a.magnitude)
    return ours, theirs, method


def theirs_params(theirs, names):
    out = []
    for n in names:
        layer = peft_layer(theirs, n)
        out += [layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.lora_magnitude_vector["default"].weight]
    return out


@pytest.mark.parametrize("arch", ["roberta", "deberta"])
def test_same_factors_give_peft_logits_gradients_and_adamw_steps(arch):
    ours, theirs, method = same_start(arch)
    torch.testing.assert_close(ours(**batch()).logits, theirs(**batch()).logits, rtol=0, atol=1e-5)
    ours(**batch()).loss.backward()
    theirs(**batch()).loss.backward()
    ours_p = [p for a in method.adapters.values() for p in a.adapter_parameters()]
    peft_p = theirs_params(theirs, method.adapters)
    for p, q in zip(ours_p, peft_p):
        assert p.shape == q.shape
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-5)
    adamw_steps(ours, ours_p)
    adamw_steps(theirs, peft_p)
    for p, q in zip(ours_p, peft_p):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5)
    assert count_trainable(ours) == count_trainable(theirs)  # LoRA + d_out per adapter
    assert all(a.num_adapter_params() == 4 * (a.in_features + a.out_features) + a.out_features
               for a in method.adapters.values())


def test_dropout_acts_exactly_as_peft_s_in_training():
    ours, theirs, method = same_start("roberta", dropout=0.3)
    ours.train(), theirs.train()
    torch.manual_seed(7)  # the same dropout masks: both models draw them in the same order
    ours_logits = ours(**batch()).logits
    torch.manual_seed(7)
    theirs_logits = theirs(**batch()).logits
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=0, atol=1e-5)
    torch.manual_seed(8)
    again = ours(**batch()).logits
    assert not torch.allclose(again, ours_logits)  # dropout really acts


def test_magnitude_starts_at_the_row_norm_and_the_norm_gets_no_gradient():
    model = tiny_model("roberta")
    ref = model(**batch()).logits
    method = prepared("dora", model, TARGETS["roberta"])
    torch.testing.assert_close(model(**batch()).logits, ref, rtol=0, atol=1e-6)  # W' = W0 at start
    a = next(iter(method.adapters.values()))
    torch.testing.assert_close(a.magnitude, a.base.weight.norm(dim=1), rtol=0, atol=1e-6)
    randomize_([a.lora_A, a.lora_B], 0)
    x = torch.randn(5, a.in_features)
    a(x).sum().backward()
    # by hand, with ‖V‖ a constant (paper §4.3): y = m/‖V‖ ⊙ (V x) + bias
    A, B, m = (t.detach().clone().requires_grad_(True) for t in (a.lora_A, a.lora_B, a.magnitude))
    V = a.base.weight + a.scaling * B @ A
    y = (m / V.norm(dim=1).detach()) * F.linear(x, V) + a.base.bias
    y.sum().backward()
    for ours, hand in ((a.lora_A, A), (a.lora_B, B), (a.magnitude, m)):
        torch.testing.assert_close(ours.grad, hand.grad, rtol=0, atol=1e-5)


def dvora_layer(d_in=16, d_out=12, rank=8, dropout=0.0):
    torch.manual_seed(0)
    proj = SharedProjection(rank, 20, 14, seed=3)  # larger than the layer: it is sliced
    a = DVoRALinear(nn.Linear(d_in, d_out), proj, d_initial=0.1, dropout=dropout)
    randomize_([a.lambda_d, a.lambda_b], 1)
    randomize_([a.magnitude], 2, positive=True)
    return a


def hand_dvora(a, x_drop, x):
    """DoRA's formula with VeRA's ΔV = Λ_b B Λ_d A, written out (‖V‖ detached, bias not rescaled)."""
    d, b, m = (t.detach().clone().requires_grad_(True) for t in (a.lambda_d, a.lambda_b, a.magnitude))
    A, B = a.projection.A[:, :a.in_features], a.projection.B[:a.out_features, :]
    dV = torch.diag(b) @ B @ torch.diag(d) @ A
    norm = (a.base.weight + dV).norm(dim=1).detach()
    W0x = F.linear(x_drop, a.base.weight)
    y = F.linear(x, a.base.weight, a.base.bias) + (m / norm - 1) * W0x + (m / norm) * F.linear(x_drop, dV)
    return y, (d, b, m)


def test_dvora_output_and_gradients_equal_dora_s_formula_with_vera_s_delta():
    a = dvora_layer()
    x = torch.randn(5, 16)
    y = a(x)
    hand, leaves = hand_dvora(a, x, x)
    torch.testing.assert_close(y, hand, rtol=0, atol=1e-5)
    # = m · V / ‖V‖_c applied to x, plus the bias
    V = a.base.weight + a.delta_weight()
    torch.testing.assert_close(y, F.linear(x, a.magnitude[:, None] * V / V.norm(dim=1, keepdim=True), a.base.bias),
                               rtol=0, atol=1e-5)
    y.square().sum().backward()
    hand.square().sum().backward()
    for ours, h in zip((a.lambda_d, a.lambda_b, a.magnitude), leaves):
        torch.testing.assert_close(ours.grad, h.grad, rtol=0, atol=1e-5)
    assert a.num_adapter_params() == 8 + 2 * 12  # r + 2·d_out


def test_dvora_dropout_drops_the_input_of_both_magnitude_terms():
    a = dvora_layer(dropout=0.5).train()
    x = torch.randn(5, 16)
    torch.manual_seed(3)
    y = a(x)
    torch.manual_seed(3)
    x_drop = a.dropout(x)
    hand, _ = hand_dvora(a, x_drop, x)
    torch.testing.assert_close(y, hand, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer", ["dora", "dvora"])
def test_merge_matches_unmerged_and_unmerge_restores(layer):
    if layer == "dora":
        model = tiny_model("roberta")
        method = prepared("dora", model, TARGETS["roberta"])
        a = next(iter(method.adapters.values()))
        randomize_([a.lora_A, a.lora_B], 0)
        randomize_([a.magnitude], 1, positive=True)
    else:
        a = dvora_layer()
    x = torch.randn(5, a.in_features)
    before, w0 = a(x), a.base.weight.detach().clone()
    a.merge()
    assert a.merged
    torch.testing.assert_close(a(x), before, rtol=0, atol=1e-5)
    a.unmerge()
    torch.testing.assert_close(a.base.weight, w0, rtol=0, atol=1e-5)
    torch.testing.assert_close(a(x), before, rtol=0, atol=1e-6)
