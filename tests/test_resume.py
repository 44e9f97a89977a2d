"""Nothing lost when a run dies: a run killed (SIGKILL) at an arbitrary point and run again with the
same command ends exactly as the uninterrupted run: the same results.json metrics, ranks, ω and
history, and bit for bit the same final trainable tensors (CPU). Also for SIGTERM (preemption), and
for the methods that resize their tensors mid-run. Every run is a subprocess, as a user's would be."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import DATA, REPO

DRIVER = REPO / "tests" / "helpers" / "die_at.py"
# 32 examples in batches of 8: 4 steps an epoch; an evaluation (and so a checkpoint) every 2 steps.
BASE = ["model=tiny_roberta", "task=rte", f"data_dir={DATA}", "logger=disabled", "task.max_train_samples=32",
        "task.max_eval_samples=16", "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.eval_every=2",
        "trainer.max_steps=8"]
SAME = ("status", "metrics", "best_metrics", "ranks", "omega", "history", "method_history", "steps",
        "trainable_params", "trainable_params_peak", "best_ranks", "kept", "selection", "skipped_steps")


def launch(out, overrides, kill=None):
    """``kill``: (when, n, signal name) for tests/helpers/die_at.py, or None for a plain run."""
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    head = [str(DRIVER), kill[0], str(kill[1]), kill[2], "--"] if kill else ["-m", "roloraexp.run"]
    return subprocess.run([sys.executable, *head, *overrides, f"hydra.run.dir={out}"], cwd=out.parent, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_same_run(a, b):
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    for key in SAME:
        assert ra.get(key) == rb.get(key), key
    wa, wb = (torch.load(d / "final_trainable.pt") for d in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    return ra, rb


def killed_and_resumed(tmp_path, overrides, kills):
    """The uninterrupted run, and the same command killed at each of ``kills`` in turn, then finished."""
    ref = launch(tmp_path / "ref", overrides)
    assert ref.returncode == 0, ref.stderr[-3000:]
    for kill in kills:
        proc = launch(tmp_path / "cut", overrides, kill)
        expected = -signal.SIGKILL if kill[2] == "SIGKILL" else 128 + getattr(signal, kill[2])
        assert proc.returncode == expected, (kill, proc.returncode, proc.stderr[-3000:])
        assert (tmp_path / "cut" / "checkpoint.pt").exists()
    last = launch(tmp_path / "cut", overrides)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "resuming at step" in last.stdout + last.stderr
    _, resumed = assert_same_run(tmp_path / "ref", tmp_path / "cut")
    assert len(resumed["resumed_from"]) == len(kills)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()  # completed: checkpoints removed
    return resumed


def test_lora_killed_mid_epoch(tmp_path):
    res = killed_and_resumed(tmp_path, BASE + ["method=lora"], [("step", 5, "SIGKILL")])
    assert res["resumed_from"][0]["step"] == 4  # the last checkpoint before the kill


def test_sigterm_checkpoints_at_the_step_boundary_and_exits_for_requeue(tmp_path):
    res = killed_and_resumed(tmp_path, BASE + ["method=lora"], [("step", 3, "SIGTERM")])
    assert res["resumed_from"][0]["step"] == 3  # the step the signal arrived in was finished and saved


def test_a_preempted_run_says_so_and_how_to_go_on(tmp_path):
    proc = launch(tmp_path / "run", BASE + ["method=lora"], ("step", 3, "SIGUSR1"))
    assert proc.returncode == 128 + signal.SIGUSR1
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "preempted" and res["steps"] == 3
    assert "stopped by SIGUSR1 at step 3" in res["error"] and "run the same command again to resume" in res["error"]
