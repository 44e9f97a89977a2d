"""One run on two processes (torchrun, gloo on CPU) equals one process with the same global batch.

Tolerance: the two processes average gradients that one process sums in another order, so the
weights agree to float32 rounding (a few 1e-7 per step), not bit for bit; evaluation is gathered
from both processes, so every metric is computed over the same examples and must agree to 1e-6.
Rank decisions (AdaLoRA's masks, ROLoRA's allocation) read the all-reduced gradients: identical."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import DATA, REPO, compose_config
from roloraexp.run import run

# 32 examples: 4 steps of 8 (one process) = 4 steps of 2 x 4 (two processes), no uneven last batch.
# No dropout, so both sides compute the same function.
COMMON = ["model=tiny_roberta", "task=rte", f"data_dir={DATA}", "logger=disabled", "task.max_train_samples=32",
          "task.max_eval_samples=20", "trainer.max_steps=8", "trainer.eval_batch_size=8",
          "+model.config_overrides.hidden_dropout_prob=0.0", "+model.config_overrides.attention_probs_dropout_prob=0.0"]
CASES = {"lora": ["method=lora", "trainer.group_by_length=true"],  # length-sorted batches, dealt to both processes
         # AdaLoRA slices its tensors at step T - t_f = 5 (a mid-phase resize: DDP is built again there).
         "adalora": ["method=adalora", "sparsifier.t_init=2", "sparsifier.t_final=3"],
         # ROLoRA resizes at its phase end.
         "rolora": ["method=rolora", "method.iterations=2", "sparsifier.t_init=0.25", "sparsifier.t_final=0.25"]}


def torchrun(out, overrides):
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "roloraexp.run",
           *overrides, f"hydra.run.dir={out}"]
    return subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, name):
    overrides = [*COMMON, *CASES[name]]
    proc = torchrun(tmp_path / "ddp", [*overrides, "trainer.batch_size=4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    one = run(compose_config(*overrides, "trainer.batch_size=8"), tmp_path / "one")
    assert ddp["status"] == one["status"] == "completed", (ddp.get("error"), one.get("error"))
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    assert ddp["steps"] == one["steps"]
    # Throughput counts every process's examples and tokens: the same data as the one process.
    for key in ("train_examples", "train_tokens"):
        assert ddp["throughput"][key] == one["throughput"][key] > 0, key
    assert ddp["ranks"] == one["ranks"]
    assert ddp["method_history"] == one["method_history"]  # ROLoRA: every iteration's allocation
    for a, b in zip(ddp["history"], one["history"]):
        if "metrics" in a:
            assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
    w_ddp = torch.load(tmp_path / "ddp" / "final_trainable.pt")
    w_one = torch.load(tmp_path / "one" / "final_trainable.pt")
    assert w_ddp.keys() == w_one.keys()
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], atol=1e-5, rtol=1e-4, msg=k)
    # Only the main process writes: one results.json, one run folder.
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["ddp", "one"]
    assert proc.stdout.count("results.json") == 1


def test_a_checkpoint_due_by_one_process_clock_is_written_by_all_together(tmp_path):
    """Process 1's clock runs 10,000 times fast, so `checkpoint_minutes` says "due" on it alone at
    every step: the processes must agree (one all-reduce at the loop's poll points) or process 1 waits in
    the checkpoint's barrier while process 0 is in the next step's gradient all-reduce."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}", WANDB_MODE="disabled",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddp_clock_skew",
           *COMMON, "method=lora", "trainer.batch_size=4", "trainer.eval_every=0", "trainer.log_every=2",
           "trainer.checkpoint_minutes=10", "trainer.keep_checkpoint=true", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed" and res["world_size"] == 2
    # written at a poll point (every log_every = 2 steps), the last one at the final step
    assert torch.load(out / "checkpoint.pt", weights_only=False)["ctx"]["step"] == 8


def test_bf16_cast_on_two_processes_matches_one(tmp_path):
    """trainer.amp_mode=cast (bf16's default) under DDP: accelerate's autocast wrapper is taken off the
    forward again, the fp32 masters DDP reduces get their gradients through the casts, and two
    processes train as one does (to bf16 rounding of the two half batches' forwards)."""
    overrides = [*COMMON, "method=adalora", "sparsifier.t_init=2", "sparsifier.t_final=3", "trainer.precision=bf16"]
    proc = torchrun(tmp_path / "ddp", [*overrides, "trainer.batch_size=4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    one = run(compose_config(*overrides, "trainer.batch_size=8"), tmp_path / "one")
    assert ddp["status"] == one["status"] == "completed", (ddp.get("error"), one.get("error"))
    assert ddp["amp_mode"] == one["amp_mode"] == "cast" and ddp["world_size"] == 2
    assert ddp["ranks"] == one["ranks"]
    assert [c["loss"] for c in ddp["train_curve"]] == pytest.approx([c["loss"] for c in one["train_curve"]], rel=2e-2)
    w_ddp = torch.load(tmp_path / "ddp" / "final_trainable.pt")
    w_one = torch.load(tmp_path / "one" / "final_trainable.pt")
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], atol=2e-3, rtol=2e-2, msg=k)
