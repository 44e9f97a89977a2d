"""HAdapter / PAdapter: the adapted blocks compute AdapterHub's Houlsby and Pfeiffer equations (checked
against the formulas written out by hand: the `adapters` package pins transformers 4.57 and cannot be
installed beside this project's transformers 5); a zero up-projection gives the pretrained model
back; sizes and parameter counts are exact; unsupported models stop with one line."""
import pytest
import torch
import torch.nn.functional as F

from conftest import smoke
from roloraexp.methods import build_method
from roloraexp.models import load_model
from roloraexp.run import run
from roloraexp.tasks import build_task


def build(method, model, *over):
    cfg = smoke(f"method={method}", f"model={model}", *over)
    task = build_task(cfg)
    torch.manual_seed(0)
    net, tok = load_model(cfg.model, task)
    m = build_method(cfg)
    from roloraexp.adapters import find_target_modules
    from roloraexp.models import head_prefixes
    names = find_target_modules(net, cfg.method.target_modules, exclude=head_prefixes(net, cfg.model.arch))
    return net, m, names


@pytest.mark.parametrize("model", ["tiny_roberta", "tiny_bert", "tiny_deberta"])
@pytest.mark.parametrize("method", ["hadapter", "padapter"])
def test_blocks_compute_the_hand_written_formula(model, method):
    net, m, names = build(method, model, "method.bottleneck=5")
    blocks = {n.rpartition(".")[0]: net.get_submodule(n.rpartition(".")[0]) for n in names}
    m.prepare(net, names)
    assert set(m.adapters) == set(blocks)
    assert any("attention" in n for n in blocks) == (method == "hadapter")
    torch.manual_seed(1)
    for name, a in m.adapters.items():
        blk = a.block
        with torch.no_grad():
            a.up.weight.normal_(std=0.2)
            a.up.bias.normal_(std=0.2)
            a.down.bias.normal_(std=0.2)
        a.eval()
        x = torch.randn(3, 4, blk.dense.in_features)
        inp = torch.randn(3, 4, blk.dense.out_features)
        h = blk.dense(x)
        if method == "hadapter":  # Houlsby: LN(h + up(swish(down(h))) + input)
            want = blk.LayerNorm(h + a.up(F.silu(a.down(h))) + inp)
        else:                     # Pfeiffer: LN(h + up(relu(down(LN(h + input)))) + input)
            want = blk.LayerNorm(h + a.up(F.relu(a.down(blk.LayerNorm(h + inp)))) + inp)
        torch.testing.assert_close(a(x, inp), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["hadapter", "padapter"])
def test_zero_up_projection_gives_the_pretrained_model_back(method):
    net, m, names = build(method, "tiny_roberta")
    batch = {"input_ids": torch.randint(5, 500, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    net.eval()
    before = net(**batch).logits
    m.prepare(net, names)
    for a in m.adapters.values():
        assert 0 < a.up.weight.abs().max() < 0.2  # near zero at the start (N(0, 0.02))
        with torch.no_grad():
            a.up.weight.zero_()
    torch.testing.assert_close(net(**batch).logits, before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method,over,size,per_layer", [
    ("hadapter", [], 2, 2),                              # 32 // reduction_factor 16, two adapters per block
    ("hadapter", ["method.bottleneck=7"], 7, 2),
    ("padapter", ["method.bottleneck=null", "method.reduction_factor=4"], 8, 1),
])
def test_sizes_and_exact_parameter_counts(tmp_path, method, over, size, per_layer):
    res = run(smoke(f"method={method}", *over, "trainer.max_steps=2", "task.max_eval_samples=8"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    d, layers = 32, 2
    assert set(res["ranks"].values()) == {size} and len(res["ranks"]) == per_layer * layers
    assert res["trainable_params"] == res["head_params"] + per_layer * layers * (2 * d * size + size + d)


@pytest.mark.parametrize("over,message", [
    (["model=tiny_bart"], "adapts sub-layer output blocks"),
    (["method.bottleneck=null", "method.reduction_factor=null"], "needs method.bottleneck or method.reduction_factor"),
    (["method.init=xavier"], "method.init must be one of bert, houlsby"),
])
def test_errors_are_one_line(tmp_path, over, message):
    res = run(smoke("method=hadapter", *over), tmp_path)
    assert res["status"] == "failed" and message in res["error"] and "\n" not in res["error"]
