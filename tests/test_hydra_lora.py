"""Hydra: the output is W0 x + b0 + A_up A_down x + B_up B_down (W0 x + b0); a fresh adapter leaves the
model unchanged; merging into W0 and b0 is exact and unmerging restores them; the default targets are
the FFN output layers only (never attention.output.dense); the parameter count is exact."""
import pytest
import torch
from torch import nn

from conftest import smoke
from roloraexp.adapters.hydra_linear import HydraLinear
from roloraexp.run import run


def randomised(base, rp=3, rs=5, seed=0):
    torch.manual_seed(seed)
    h = HydraLinear(base, rp, rs)
    with torch.no_grad():
        for p in (h.par_up, h.seq_up):
            p.normal_(std=0.3)
    return h


def test_output_is_the_papers_equation():
    torch.manual_seed(1)
    base = nn.Linear(16, 12)
    h = randomised(base)
    x = torch.randn(5, 16)
    y0 = x @ base.weight.T + base.bias
    want = y0 + x @ h.par_down.T @ h.par_up.T + y0 @ h.seq_down.T @ h.seq_up.T
    torch.testing.assert_close(h(x), want, rtol=1e-5, atol=1e-5)


def test_fresh_adapter_leaves_the_layer_unchanged():
    base = nn.Linear(16, 12)
    h = HydraLinear(base, 4, 8)
    x = torch.randn(3, 16)
    assert torch.equal(h(x), base(x))
    assert h.par_down.abs().sum() > 0 and h.seq_down.abs().sum() > 0  # only the up-projections start at zero


@pytest.mark.parametrize("bias", [True, False])
def test_merge_is_exact_and_unmerge_restores(bias):
    base = nn.Linear(16, 12, bias=bias)
    W0 = base.weight.detach().clone()
    b0 = base.bias.detach().clone() if bias else None
    h = randomised(base)
    x = torch.randn(7, 16)
    unmerged = h(x)
    h.merge()
    torch.testing.assert_close(h(x), unmerged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(base(x), unmerged, rtol=1e-5, atol=1e-5)  # a plain Linear now
    h.unmerge()
    torch.testing.assert_close(base.weight, W0, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(base.bias, b0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h(x), unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model,d,ff,layers", [("tiny_roberta", 32, 64, 2), ("tiny_deberta", 32, 64, 2),
                                               ("tiny_bert", 32, 64, 2)])
def test_targets_the_ffn_output_only_with_an_exact_count(tmp_path, model, d, ff, layers):
    res = run(smoke("method=hydra", f"model={model}", "trainer.max_steps=2", "task.max_eval_samples=8"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    names = list(res["ranks"])
    assert len(names) == layers and all(n.endswith(".output.dense") and "attention" not in n for n in names)
    per_layer = 4 * (ff + d) + 8 * (d + d)  # parallel rank 4 on ff -> d, sequential rank 8 on d -> d
    assert res["trainable_params"] == res["head_params"] + layers * per_layer


def test_separate_ranks_and_bad_ranks(tmp_path):
    res = run(smoke("method=hydra", "method.parallel_rank=0", "method.sequential_rank=2", "trainer.max_steps=1",
                    "task.max_eval_samples=8"), tmp_path)
    assert res["status"] == "completed" and set(res["ranks"].values()) == {2}
    bad = run(smoke("method=hydra", "method.parallel_rank=0", "method.sequential_rank=0"), tmp_path)
    assert bad["status"] == "failed" and "not both 0" in bad["error"]
