"""VeRA, DoRA, DVoRA, BitFit and full fine-tuning in the harness: every tiny architecture, fp16/bf16
autocast, merging, exact trainable-parameter counts in results.json (PEFT's for VeRA and DoRA),
per-role learning rates, per-adapter stats, and the trainable state surviving a save/load."""
import peft
import pytest
import torch
from omegaconf import OmegaConf

from conftest import smoke
from roloraexp.checkpoint import load_trainable_state, trainable_state
from roloraexp.errors import ConfigError
from roloraexp.models import TINY_CONFIGS, load_tokenizer
from roloraexp.run import run
from slides_helpers import HEADS, TARGETS, batch, prepared, randomize_, tiny_model

ADAPTER_METHODS = ("vera", "dora", "dvora")
SMALL = {"vera": dict(rank=16), "dvora": dict(rank=16), "dora": dict(rank=4)}


def randomize_adapters(method):
    for i, a in enumerate(method.adapters.values()):
        randomize_([p for p in a.adapter_parameters() if p is not getattr(a, "magnitude", None)], i, scale=0.1)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_every_architecture_starts_unchanged_trains_and_merges(name, arch):
    model = tiny_model(arch)
    ref = model(**batch()).logits
    method = prepared(name, model, TARGETS[arch], **SMALL[name])
    torch.testing.assert_close(model(**batch()).logits, ref, rtol=0, atol=1e-5)  # ΔW = 0 (and m = ‖W0‖) at start
    randomize_adapters(method)
    model(**batch()).loss.backward()
    for a in method.adapters.values():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in a.adapter_parameters())
        assert a.base.weight.grad is None
    out = model(**batch()).logits
    for a in method.adapters.values():
        a.merge()
    torch.testing.assert_close(model(**batch()).logits, out, rtol=0, atol=1e-4)
    for a in method.adapters.values():
        a.unmerge()
    torch.testing.assert_close(model(**batch()).logits, out, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_autocast_keeps_adapters_in_fp32_and_outputs_close(name, dtype):
    model = tiny_model("roberta")
    method = prepared(name, model, TARGETS["roberta"], **SMALL[name])
    randomize_adapters(method)
    full = model(**batch()).logits.detach()
    with torch.autocast("cpu", dtype=dtype):
        out = model(**batch())
    out.loss.backward()
    torch.testing.assert_close(out.logits.float(), full, rtol=0, atol=0.05)
    for a in method.adapters.values():
        for p in a.adapter_parameters():
            assert p.dtype == torch.float32 and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_half_precision_backbone_with_fp32_adapters(name):
    model = tiny_model("roberta").to(torch.bfloat16)
    method = prepared(name, model, TARGETS["roberta"], **SMALL[name])
    randomize_adapters(method)
    out = model(**batch()).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    for a in method.adapters.values():
        a.merge()
    torch.testing.assert_close(model(**batch()).logits.float(), out.float(), rtol=0, atol=0.1)


def peft_count(arch, config) -> int:
    """PEFT's trainable parameters for the model run() builds (tiny config, MiniLM's vocabulary, 2 labels)."""
    model = tiny_model(arch, vocab=len(load_tokenizer(OmegaConf.create({"tiny": True}))))
    return peft.get_peft_model(model, config).get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("arch", ["roberta", "deberta"])
def test_results_count_trainable_parameters_as_peft_does(tmp_path, arch):
    targets, heads = TARGETS[arch], HEADS[arch]
    expected = {
        "vera": peft_count(arch, peft.VeraConfig(r=16, target_modules=targets, modules_to_save=heads)),
        "dora": peft_count(arch, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=True,
                                                 modules_to_save=heads)),
    }
    for name, overrides in (("vera", ["method.rank=16"]), ("dora", ["method.rank=4", "method.alpha=8"])):
        res = run(smoke(f"model=tiny_{arch}", f"method={name}", "trainer.max_steps=1", "task.max_eval_samples=8",
                        *overrides), tmp_path / name)
        assert res["status"] == "completed", res.get("error")
        assert res["trainable_params"] == res["trainable_params_peak"] == expected[name]
        n_adapters = len(targets) * 2
        assert len(res["adapter_stats"]) == n_adapters


def test_dvora_bitfit_and_full_counts_in_results(tmp_path):
    model = tiny_model("roberta", vocab=len(load_tokenizer(OmegaConf.create({"tiny": True}))))
    head = sum(p.numel() for p in model.classifier.parameters())
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") and not n.startswith("classifier"))
    expected = {"dvora": head + 4 * (16 + 2 * 32),  # r + 2·d_out on 4 adapters (query, value × 2 layers)
                "bitfit": head + biases,
                "full": sum(p.numel() for p in model.parameters())}
    for name in expected:
        res = run(smoke(f"method={name}", "trainer.max_steps=1", "task.max_eval_samples=8",
                        *(["method.rank=16"] if name == "dvora" else [])), tmp_path / name)
        assert res["status"] == "completed", res.get("error")
        assert res["trainable_params"] == expected[name], name
    assert "adapter_stats" not in res and res["ranks"] == {}  # full fine-tuning has no adapters


def test_bitfit_trains_biases_and_head_only_and_says_when_there_are_none(caplog):
    model = tiny_model("roberta")
    method = prepared("bitfit", model, TARGETS["roberta"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith("bias") for n in trainable)  # the head is trained by load_model, frozen here
    assert any("LayerNorm" in n for n in trainable) and any("attention.self.query" in n for n in trainable)
    roles = {g["role"] for g in method.param_groups(model, 0.01)}
    assert roles == {"bias"}
    llama = tiny_model("llama")
    prepared("bitfit", llama, TARGETS["llama"])
    assert "no bias terms" in caplog.text and not any(p.requires_grad for p in llama.parameters())


def test_group_lr_gives_head_and_adapters_their_own_rates_and_tolerates_a_model_without_head():
    model = tiny_model("roberta")
    method = prepared("vera", model, TARGETS["roberta"], rank=8)
    model.classifier.requires_grad_(True)  # as load_model leaves the head
    opt = method.build_optimizer(model, OmegaConf.create({"lr": 1.0, "weight_decay": 0.0}))
    lrs = {g["role"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"adapter": 3e-2, "head": 1e-2}  # conf/method/vera.yaml; trainer.lr (1.0) applies to neither
    model.classifier.requires_grad_(False)  # no head (a seq2seq LM): VeRA's default group_lr must still work
    assert {g["role"] for g in method.param_groups(model, 0.0)} == {"adapter"}
    typo = tiny_model("roberta")
    bad = prepared("vera", typo, TARGETS["roberta"], rank=8, group_lr={"adaptor": 1e-3})
    with pytest.raises(ConfigError, match="adaptor"):
        bad.param_groups(typo, 0.0)


@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_trainable_state_round_trip_restores_every_adapter_tensor(name):
    model = tiny_model("roberta")
    method = prepared(name, model, TARGETS["roberta"], **SMALL[name])
    randomize_adapters(method)
    for a in method.adapters.values():
        if hasattr(a, "magnitude"):
            randomize_([a.magnitude], 9, positive=True)
    saved, out = trainable_state(model), model(**batch()).logits
    fresh = tiny_model("roberta")
    prepared(name, fresh, TARGETS["roberta"], **SMALL[name])
    load_trainable_state(fresh, saved)
    torch.testing.assert_close(fresh(**batch()).logits, out, rtol=0, atol=0)


@pytest.mark.parametrize("name", [*ADAPTER_METHODS, "bitfit", "full"])
def test_runs_under_bf16_autocast_on_cpu(tmp_path, name):
    """trainer.precision=bf16 through run(): autocast on CPU, frozen weights held in bf16 by the loop,
    what trains in fp32."""
    res = run(smoke(f"method={name}", "trainer.precision=bf16", "trainer.max_steps=2", "task.max_eval_samples=8",
                    *([f"method.rank={SMALL[name]['rank']}"] if name in SMALL else [])), tmp_path)
    assert res["status"] == "completed", res.get("error")
    assert res["config"]["trainer"]["precision"] == "bf16" and res["steps"] == 2
