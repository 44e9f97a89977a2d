"""The training loop's own promises: a new, reproducible data order every epoch; leftover
micro-batches close their epoch with a shorter step; warm-up in steps or as a ratio."""
import pytest
import torch

from conftest import smoke
from roloraexp.methods.lora import LoRA
from roloraexp.run import run


class OrderProbe(LoRA):
    """Records the learning rate each optimizer step used (the spy below records its examples)."""

    batches: list = []
    lrs: list = []

    def after_optimizer_step(self, ctx):
        OrderProbe.lrs.append(ctx.optimizer.param_groups[0]["lr"])
        return []


def seen_orders(tmp_path, *overrides):
    """Run a tiny training; return, per optimizer step, its examples (their first token ids)."""
    OrderProbe.batches, OrderProbe.lrs = [], []
    cfg = smoke("task.max_train_samples=24", "trainer.batch_size=4", "trainer.max_steps=0", "trainer.epochs=2",
                "trainer.eval_batch_size=32", "task.max_eval_samples=8", *overrides)
    cfg.method._target_ = f"{__name__}.OrderProbe"
    from roloraexp.data_order import TrainingOrder

    original = TrainingOrder.steps

    def spy(self, phase, epoch, skip=0):
        for group in original(self, phase, epoch, skip):
            OrderProbe.batches.append(torch.cat([b["input_ids"][:, 1:6] for b in group]).tolist())
            yield group

    TrainingOrder.steps = spy
    try:
        res = run(cfg, tmp_path)
    finally:
        TrainingOrder.steps = original
    assert res["status"] == "completed", res.get("error")
    return OrderProbe.batches, res


def test_every_epoch_is_reshuffled_and_reproducible(tmp_path):
    steps, res = seen_orders(tmp_path / "a")
    assert res["steps"] == 12 and len(steps) == 12  # 24 examples / 4 = 6 steps per epoch, 2 epochs
    epoch1 = [x for s in steps[:6] for x in s]
    epoch2 = [x for s in steps[6:] for x in s]
    assert sorted(epoch1) == sorted(epoch2)  # both epochs see every example once ...
    assert epoch1 != epoch2  # ... in another order
    again, _ = seen_orders(tmp_path / "b")
    assert again == steps  # the same seed gives the same orders
    other, _ = seen_orders(tmp_path / "c", "seed=2")
    assert [x for s in other[:6] for x in s] != epoch1  # another seed, another order


def test_leftover_micro_batches_close_their_epoch(tmp_path):
    # 24 examples, batch 4 -> 6 micro-batches per epoch; grad_accum 4 -> a step of 4, then one of 2.
    steps, res = seen_orders(tmp_path, "trainer.grad_accum=4")
    assert res["steps"] == 4
    assert [len(s) for s in steps] == [16, 8, 16, 8]  # examples per step: leftovers never join the next epoch


def test_warmup_steps_win_over_the_ratio_and_may_outlast_the_run(tmp_path):
    # 6 steps with 12 warm-up steps: get_linear_schedule_with_warmup rises by lr/12 a step, to 6/12 at the end.
    seen_orders(tmp_path, "trainer.max_steps=6", "trainer.warmup_steps=12", "trainer.warmup_ratio=0.5",
                "trainer.lr=1e-3")
    assert OrderProbe.lrs == pytest.approx([k * 1e-3 / 12 for k in range(6)])


@pytest.mark.parametrize("override,message", [
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio must be in [0, 1]"),
    ("trainer.warmup_ratio=-0.1", "trainer.warmup_ratio must be in [0, 1]"),
    ("trainer.warmup_steps=-3", "trainer.warmup_steps must be an integer >= 0"),
])
def test_bad_warmup_is_one_line(tmp_path, override, message):
    res = run(smoke(override), tmp_path)
    assert res["status"] == "failed" and message in res["error"] and "\n" not in res["error"]


def test_bf16_autocast_holds_frozen_weights_in_bf16_and_trains_fp32_masters(tmp_path):
    """trainer.precision=bf16 (CPU autocast here): the backbone's frozen weights are bf16 once, the
    adapters and the head keep fp32 masters, and the run trains and evaluates."""
    seen = {}

    class Probe(LoRA):
        def after_optimizer_step(self, ctx):
            seen["dtypes"] = {n: p.dtype for n, p in ctx.model.named_parameters()}
            seen["trains"] = {n for n, p in ctx.model.named_parameters() if p.requires_grad}
            return []

    import sys
    sys.modules[__name__].Probe = Probe
    cfg = smoke("trainer.precision=bf16", "trainer.max_steps=3")
    cfg.method._target_ = f"{__name__}.Probe"
    res = run(cfg, tmp_path)
    assert res["status"] == "completed", res.get("error")
    frozen = {n: d for n, d in seen["dtypes"].items() if n not in seen["trains"]}
    assert frozen and set(frozen.values()) == {torch.bfloat16}
    assert {seen["dtypes"][n] for n in seen["trains"]} == {torch.float32}
    assert any(".lora_A" in n for n in seen["trains"]) and any(n.startswith("classifier.") for n in seen["trains"])


def test_gradient_checkpointing_gives_adapters_the_same_gradients(tmp_path):
    """Adapters inside checkpointed blocks still get gradients, and the same ones."""
    from roloraexp.methods import build_method
    from roloraexp.models import load_model
    from roloraexp.tasks import build_task
    from roloraexp.adapters import find_target_modules
    from roloraexp.models import enable_checkpointing

    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        cfg = smoke("+model.config_overrides.hidden_dropout_prob=0.0",
                    "+model.config_overrides.attention_probs_dropout_prob=0.0")
        task = build_task(cfg)
        task.read()
        model, tok = load_model(cfg.model, task)
        task.load(tok)
        method = build_method(cfg)
        method.prepare(model, find_target_modules(model, cfg.model.target_modules))
        for a in method.adapters.values():
            torch.nn.init.normal_(a.lora_B)  # B = 0 would give A no gradient
        if checkpointing:
            enable_checkpointing(model)
        model.train()
        batch = task.collate([task.train_dataset[i] for i in range(4)])
        model(**batch).loss.backward()
        grads.append({n: a.lora_A.grad.clone() for n, a in method.adapters.items()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert grads[1][n].abs().sum() > 0
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)


def test_compile_recompiles_after_a_resize_and_matches_eager(tmp_path):
    """trainer.compile=true (aot_eager backend: no C++ build in the tests) gives the run an eager
    run gives, through AdaLoRA's mid-run slice (a resize that the compiled graph must follow)."""
    over = ["method=adalora", "sparsifier=adalora", "trainer.max_steps=8", "sparsifier.t_init=2",
            "sparsifier.t_final=3", "+model.config_overrides.hidden_dropout_prob=0.0",
            "+model.config_overrides.attention_probs_dropout_prob=0.0"]
    eager = run(smoke(*over), tmp_path / "eager")
    compiled = run(smoke(*over, "trainer.compile=true", "trainer.compile_backend=aot_eager"), tmp_path / "compiled")
    assert eager["status"] == compiled["status"] == "completed", compiled.get("error")
    assert compiled["ranks"] == eager["ranks"] and sum(eager["ranks"].values()) < 12 * 4  # really sliced
    assert compiled["metrics"] == pytest.approx(eager["metrics"], abs=1e-6)


def test_group_by_length_batches_similar_lengths_and_still_sees_every_example(tmp_path):
    """trainer.group_by_length: each mega-batch of 50 batches runs longest first, so a batch pads to
    little more than its own examples; the epoch still holds every example once, reproducibly."""
    from roloraexp.data_order import TrainingOrder

    seen = []
    original = TrainingOrder.steps

    def spy(self, phase, epoch, skip=0):
        for group in original(self, phase, epoch, skip):
            seen.extend(b["attention_mask"].sum(1).tolist() for b in group)
            yield group

    def lengths_per_batch(folder, *overrides):
        seen.clear()
        TrainingOrder.steps = spy
        try:  # SST-2: phrases of 3 to 60 tokens
            res = run(smoke("task=sst2", "task.max_train_samples=240", "trainer.batch_size=4", "trainer.max_steps=0",
                            "trainer.epochs=1", "task.max_eval_samples=8", *overrides), tmp_path / folder)
        finally:
            TrainingOrder.steps = original
        assert res["status"] == "completed", res.get("error")
        return list(seen)

    plain, grouped = lengths_per_batch("plain"), lengths_per_batch("grouped", "trainer.group_by_length=true")
    assert sorted(x for b in grouped for x in b) == sorted(x for b in plain for x in b)  # the same examples
    assert grouped == lengths_per_batch("again", "trainer.group_by_length=true")  # reproducible (resumable)
    first_mega = grouped[:50]  # 50 batches of 4 = one mega-batch, sorted longest first
    assert [max(b) for b in first_mega] == sorted((max(b) for b in first_mega), reverse=True)
    padded = lambda batches: sum(max(b) * len(b) for b in batches) / sum(sum(b) for b in batches)  # noqa: E731
    print(f"\ntokens computed per real token: {padded(plain):.2f} plain, {padded(grouped):.2f} grouped")
    assert padded(grouped) < 1.1 < 1.3 < padded(plain)


def test_group_by_length_without_token_ids_is_one_line():
    """A task of one's own whose examples are no token sequences: a clear refusal, not a KeyError."""
    import types

    from omegaconf import OmegaConf

    from conftest import REPO
    from roloraexp.errors import ConfigError
    from roloraexp.train import Trainer

    task = types.SimpleNamespace(train_dataset=[{"x": torch.zeros(3)} for _ in range(8)])
    cfg = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "trainer" / "default.yaml"),
                          {"max_steps": 2, "batch_size": 4, "device": "cpu", "group_by_length": True})
    trainer = Trainer(torch.nn.Linear(3, 1), task, LoRA(OmegaConf.create({"rank": 1})), cfg)
    with pytest.raises(ConfigError, match="trainer.group_by_length needs tokenised examples"):
        trainer.data.order(0, 0)
