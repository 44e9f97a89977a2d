"""ROLoRA: the budget promise over whole multi-iteration runs, EXTEND, and real learning."""
import pytest
import torch
import transformers
from omegaconf import OmegaConf

from conftest import DATA, compose_config, smoke
from roloraexp.methods.base import TrainContext
from roloraexp.methods.budget import lora_budget
from roloraexp.methods.rolora import ROLoRA
from roloraexp.models import TINY_CONFIGS
from roloraexp.run import run

FAST_ADALORA = ["sparsifier.t_init=0.2", "sparsifier.t_final=0.3", "sparsifier.delta_t=1"]


def lora_trainable(result) -> int:
    """What LoRA at rank R trains on the same model: R(d_in + d_out) per adapter + the head."""
    cfg = result["config"]
    shapes = [(h["d_in"], h["d_out"]) for h in result["adapter_shapes"].values()]
    return lora_budget(shapes, cfg["method"]["rank"]) + result["head_params"]


@pytest.mark.parametrize("sparsifier,extra", [("adalora", FAST_ADALORA), ("sora", ["sparsifier.threshold=20"])])
def test_budget_never_exceeded_over_a_whole_run(tmp_path, sparsifier, extra):
    res = run(smoke("method=rolora", f"sparsifier={sparsifier}", "trainer.max_steps=10", "method.rank=4",
                    "trainer.lr=5e-3", *extra), tmp_path)
    assert res["status"] == "completed", res.get("error")
    budget = res["budget"]["params"]
    records = [h for h in res["history"] if "trainable_params" in h]
    assert records and all(h["trainable_params"] - res["head_params"] <= budget for h in records)
    assert res["trainable_params_peak"] <= lora_trainable(res)
    phases = [h for h in res["method_history"] if "sparsified" in h]
    assert [h["iteration"] for h in phases] == [1, 2, 3]
    for h in phases:
        assert h["spent"] <= h["budget"] == budget


def test_rolora_with_adalora_prunes_to_the_schedule_and_ends_below_R(tmp_path):
    res = run(smoke("method=rolora", "trainer.max_steps=10", "method.rank=4", *FAST_ADALORA), tmp_path)
    assert res["status"] == "completed", res.get("error")
    phases = [h for h in res["method_history"] if "sparsified" in h]
    K = len(res["ranks"])
    # iteration t keeps R/2 · Π(1 + 1/(T + j)) on average: 2, 2.5, 3 for R = 4, T = 3
    for h, target in zip(phases, [2.0, 2.5, 3.0]):
        assert sum(h["sparsified"].values()) == round(target * K)
    assert sum(res["ranks"].values()) / K == pytest.approx(3.0)


def tiny_rolora(rank=4):
    torch.manual_seed(0)
    cfg = TINY_CONFIGS["roberta"](500)
    cfg.num_labels = 2
    model = transformers.AutoModelForSequenceClassification.from_config(cfg).eval()
    method_cfg = OmegaConf.create({"name": "rolora", "rank": rank, "alpha": 8, "iterations": 3, "sparsify_to": 0.5})
    sp = OmegaConf.create({"name": "adalora", "t_init": 0, "t_final": 0.5, "delta_t": 1, "orth_reg": 0.1,
                           "beta1": 0.85, "beta2": 0.85})
    m = ROLoRA(method_cfg, sparsifier=sp, schedule=OmegaConf.create({"name": "rolora"}))
    names = [n for n, mod in model.named_modules() if n.endswith(("query", "value"))]
    m.prepare(model, names)
    return model, m


def test_extend_leaves_outputs_unchanged_and_keeps_the_most_important():
    model, m = tiny_rolora()
    g = torch.Generator().manual_seed(0)
    for a in m.adapters.values():  # trained-looking adapters with distinct gates
        with torch.no_grad():
            for p in (a.lora_A, a.lora_B, a.gate):
                p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randint(5, 500, (2, 10))
    before = model(input_ids=x).logits
    a = next(iter(m.adapters.values()))
    keep_first = a.gate.detach().abs().argsort(descending=True)
    # shrink to the 2 most important (importance = |g| here), then grow back by 3: outputs of the
    # shrunk model stay exactly those of its kept components
    a.keep(keep_first[:2])
    shrunk = model(input_ids=x).logits
    m._extend(a, 5)
    assert a.rank == 5
    torch.testing.assert_close(model(input_ids=x).logits, shrunk, atol=1e-6, rtol=0)
    m._extend(a, 1)  # keeps the first (most important) component
    assert a.rank == 1
    for other in list(m.adapters.values())[1:]:
        m._extend(other, other.rank + 2)
    assert not torch.allclose(before, shrunk)  # the shrink did remove something


def test_phase_end_rescales_interpolates_and_stays_in_budget():
    model, m = tiny_rolora(rank=4)
    ctx = TrainContext(model=model, phase=0, phase_steps=10)
    m.on_phase_start(ctx)
    # pretend AdaLoRA pruned all but the first adapter's components
    names = list(m.adapters)
    m.sparsifier.finish = lambda: {n: torch.arange(4 if n == names[0] else 0) for n in names}
    m.on_phase_end(ctx)
    ranks = m.ranks()
    # γ = 1 at t = 1: r = the rescaled sparsified ranks: everything goes to the one survivor
    assert ranks[names[0]] > 4 and all(ranks[n] == 0 for n in names[1:])
    assert m.spent() <= m.budget


def test_minilm_rolora_learns_with_non_uniform_ranks_in_budget(tmp_path):
    # the SST-2 slice, scored on the whole 872-sentence dev set
    cfg = compose_config("model=minilm", "task=sst2", f"data_dir={DATA}", "logger=disabled", "method=rolora",
                         "trainer.max_steps=30", "trainer.batch_size=32", "trainer.lr=3e-3", "task.max_seq_length=48",
                         "task.max_train_samples=1920", "trainer.eval_batch_size=128", "trainer.save_adapters=false",
                         *FAST_ADALORA)
    res = run(cfg, tmp_path)
    assert res["status"] == "completed", res.get("error")
    ranks = list(res["ranks"].values())
    assert len(set(ranks)) > 1, ranks
    assert res["trainable_params_peak"] <= lora_trainable(res)
    assert res["best_metrics"]["accuracy"] > 0.70, res["best_metrics"]
