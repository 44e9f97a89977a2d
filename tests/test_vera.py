"""VeRA against PEFT's VeraConfig: the same seed gives the same shared projection; the same vectors
give the same logits, gradients and AdamW updates; parameter counts agree; the one pair is sliced
for layers of different shapes; the projection is saved and restored with the method's state."""
import peft
import pytest
import torch

from roloraexp.methods.base import count_trainable
from slides_helpers import TARGETS, adamw_steps, batch, prepared, randomize_, tiny_model, twin


def peft_vera(model, targets, rank, seed=0):
    config = peft.VeraConfig(r=rank, target_modules=targets, projection_prng_key=seed, d_initial=0.1, vera_dropout=0.0)
    return peft.get_peft_model(model, config)


def peft_layer(theirs, name):
    return theirs.base_model.model.get_submodule(name)


def same_start(arch, targets, rank=16, seed=3):
    """This project's VeRA and PEFT's on twin tiny models, holding the same random vectors."""
    ours = tiny_model(arch)
    theirs = peft_vera(twin(ours), targets, rank, seed)
    method = prepared("vera", ours, targets, rank=rank, projection_seed=seed)
    for i, (name, a) in enumerate(sorted(method.adapters.items())):
        randomize_([a.lambda_d, a.lambda_b], i)
        layer = peft_layer(theirs, name)
        layer.vera_lambda_d["default"].data.copy_(a.lambda_d)
        layer.vera_lambda_b["default"].data.copy_(a.lambda_b)
    return ours, theirs, method


@pytest.mark.parametrize("arch", ["roberta", "deberta"])
def test_projection_is_peft_s_for_the_same_seed(arch):
    ours, theirs, method = same_start(arch, TARGETS[arch])
    torch.testing.assert_close(method.projection.A, theirs.base_model.vera_A["default"], rtol=0, atol=0)
    torch.testing.assert_close(method.projection.B, theirs.base_model.vera_B["default"], rtol=0, atol=0)
    # one pair for the model: every adapter holds the same module
    assert len({id(a.projection) for a in method.adapters.values()}) == 1


@pytest.mark.parametrize("arch", ["roberta", "deberta"])
def test_same_vectors_give_peft_logits_gradients_and_adamw_steps(arch):
    ours, theirs, method = same_start(arch, TARGETS[arch])
    torch.testing.assert_close(ours(**batch()).logits, theirs(**batch()).logits, rtol=0, atol=1e-5)

    ours(**batch()).loss.backward()
    theirs(**batch()).loss.backward()
    for name, a in method.adapters.items():
        layer = peft_layer(theirs, name)
        torch.testing.assert_close(a.lambda_d.grad, layer.vera_lambda_d["default"].grad, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.lambda_b.grad, layer.vera_lambda_b["default"].grad, rtol=0, atol=1e-5)

    ours_params = [p for a in method.adapters.values() for p in a.adapter_parameters()]
    theirs_params = [p for layer in (peft_layer(theirs, n) for n in method.adapters)
                     for p in (layer.vera_lambda_d["default"], layer.vera_lambda_b["default"])]
    adamw_steps(ours, ours_params)
    adamw_steps(theirs, theirs_params)
    for ours_p, theirs_p in zip(ours_params, theirs_params):
        torch.testing.assert_close(ours_p, theirs_p, rtol=0, atol=1e-5)
    assert count_trainable(ours) == count_trainable(theirs) == sum(a.num_adapter_params() for a in method.adapters.values())


def test_layers_of_different_shapes_slice_one_pair_as_peft_does():
    targets = ["query", "value", "intermediate.dense", "output.dense"]  # 32→32, 32→64, 64→32
    ours, theirs, method = same_start("roberta", targets, rank=24)
    assert method.projection.A.shape == (24, 64) and method.projection.B.shape == (64, 24)
    shapes = {(a.in_features, a.out_features) for a in method.adapters.values()}
    assert shapes == {(32, 32), (32, 64), (64, 32)}
    torch.testing.assert_close(ours(**batch()).logits, theirs(**batch()).logits, rtol=0, atol=1e-5)
    for name, a in method.adapters.items():  # r + d_out per adapter
        assert a.num_adapter_params() == 24 + a.out_features
        torch.testing.assert_close(a.delta_weight(), peft_layer(theirs, name).get_delta_weight("default"), rtol=0, atol=1e-6)


def test_fresh_vera_leaves_outputs_unchanged_and_has_no_alpha():
    model = tiny_model("roberta")
    ref = model(**batch()).logits
    method = prepared("vera", model, TARGETS["roberta"], rank=8, d_initial=0.1)
    torch.testing.assert_close(model(**batch()).logits, ref, rtol=0, atol=0)  # b = 0
    a = next(iter(method.adapters.values()))
    assert torch.all(a.lambda_d == 0.1) and torch.all(a.lambda_b == 0)
    randomize_([a.lambda_d, a.lambda_b], 0)
    A, B = method.projection.slices(a.in_features, a.out_features)
    expected = torch.diag(a.lambda_b) @ B @ torch.diag(a.lambda_d) @ A  # Λ_b B Λ_d A, no scaling
    torch.testing.assert_close(a.delta_weight(), expected, rtol=0, atol=1e-6)


def test_projection_is_saved_with_the_method_state_or_regenerated_from_the_seed():
    method = prepared("vera", tiny_model("roberta"), TARGETS["roberta"], rank=8, projection_seed=5)
    state = method.state_dict()
    assert set(state["projection"]) == {"A", "B"}
    other = prepared("vera", tiny_model("roberta"), TARGETS["roberta"], rank=8, projection_seed=5)
    torch.testing.assert_close(other.projection.A, method.projection.A, rtol=0, atol=0)  # regenerated: same seed
    with torch.no_grad():
        other.projection.A.zero_()
    other.load_state_dict(state)
    torch.testing.assert_close(other.projection.A, method.projection.A, rtol=0, atol=0)  # restored from the state
    unsaved = prepared("vera", tiny_model("roberta"), TARGETS["roberta"], rank=8, save_projection=False)
    assert "projection" not in unsaved.state_dict()
