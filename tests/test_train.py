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
    from roloraexp import train

    original = train.Trainer.epoch_steps

    def spy(self, phase, epoch, skip=0):
        for group in original(self, phase, epoch, skip):
            OrderProbe.batches.append(torch.cat([b["input_ids"][:, 1:6] for b in group]).tolist())
            yield group

    train.Trainer.epoch_steps = spy
    try:
        res = run(cfg, tmp_path)
    finally:
        train.Trainer.epoch_steps = original
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
    ("trainer.warmup_steps=-3", "trainer.warmup_steps must be >= 0"),
])
def test_bad_warmup_is_one_line(tmp_path, override, message):
    res = run(smoke(override), tmp_path)
    assert res["status"] == "failed" and message in res["error"] and "\n" not in res["error"]
