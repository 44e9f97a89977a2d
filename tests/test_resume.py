"""Nothing lost when a run dies: a run killed (SIGKILL) at an arbitrary point and run again with the
same command ends exactly as the uninterrupted run: the same results.json metrics, ranks, ω and
history, and bit for bit the same final trainable tensors (CPU). Also for SIGTERM (preemption), and
for the methods that resize their tensors mid-run. Every run is a subprocess, as a user's would be."""
import json
import os
import re
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
    _, resumed = assert_same_run(tmp_path / "ref", tmp_path / "cut")
    # The screen counts this process's steps and the run's, phases from 1 in every line.
    screen, at, total = last.stdout + last.stderr, resumed["resumed_from"][-1]["step"], resumed["steps"]
    assert re.search(rf"resuming after step {at}/\d+ \(phase \d+/\d+,", screen), screen[-2000:]
    assert f"trained {total - at} steps in" in screen and f"({total} in the run, {at} before the resume)" in screen
    assert "phase 0" not in screen
    assert len(resumed["resumed_from"]) == len(kills)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()  # completed: checkpoints removed
    return resumed


def test_lora_killed_mid_epoch(tmp_path):
    res = killed_and_resumed(tmp_path, BASE + ["method=lora"], [("step", 5, "SIGKILL")])
    assert res["resumed_from"][0]["step"] == 4  # the last checkpoint before the kill


def test_adalora_killed_while_its_budget_decays(tmp_path):
    # Budget at full until step 2, cubic decay over steps 3-4, final mask and slice at step 5.
    res = killed_and_resumed(tmp_path, BASE + ["method=adalora", "sparsifier.t_init=2", "sparsifier.t_final=3"],
                             [("step", 4, "SIGKILL")])
    assert sum(res["ranks"].values()) == 8 * len(res["ranks"])  # sliced to the target after the resume


def test_rolora_killed_in_phase_2_and_at_a_phase_boundary(tmp_path):
    # 2 iterations of 8 steps: killed after phase 1's last step (before its end: sparsify, rescale,
    # extend), then after that end was checkpointed (before phase 2 starts), then in phase 2.
    res = killed_and_resumed(tmp_path, BASE + ["method=rolora", "method.iterations=2"],
                             [("phase_end", 1, "SIGKILL"), ("phase_start", 2, "SIGKILL"), ("step", 13, "SIGKILL")])
    assert [r["step"] for r in res["resumed_from"]] == [8, 8, 12]
    assert len({r for r in res["method_history"][-1]["ranks"].values()}) > 1  # non-uniform ranks came out


def test_weightlora_killed_before_and_after_its_disconnect(tmp_path):
    res = killed_and_resumed(tmp_path, BASE + ["method=weightlora", "method.k=2", "method.select_steps=3"],
                             [("step", 3, "SIGKILL"), ("step", 6, "SIGKILL")])
    assert [r["step"] for r in res["resumed_from"]] == [2, 4]  # before the selection at step 3, then after
    assert sorted(res["ranks"].values()) == [0, 0, 8, 8] and len(res["kept"]) == 2


def test_weightlora_plus_killed_after_its_growth(tmp_path):
    res = killed_and_resumed(tmp_path, BASE + ["method=weightlora_plus", "method.k=2", "method.select_steps=3"],
                             [("step", 5, "SIGKILL")])
    assert sorted(res["ranks"].values()) == [0, 0, 16, 16]  # K = 2 of 4 adapters grew to LoRA's budget


def test_sigterm_checkpoints_at_the_step_boundary_and_exits_for_requeue(tmp_path):
    res = killed_and_resumed(tmp_path, BASE + ["method=lora"], [("step", 3, "SIGTERM")])
    assert res["resumed_from"][0]["step"] == 3  # the step the signal arrived in was finished and saved


def test_ctrl_c_checkpoints_at_the_step_boundary_and_the_same_command_resumes(tmp_path):
    res = killed_and_resumed(tmp_path, BASE + ["method=lora"], [("step", 3, "SIGINT")])
    assert res["resumed_from"][0]["step"] == 3   # exit 130, no traceback; nothing after the last eval lost


def test_a_preempted_run_says_so_and_how_to_go_on(tmp_path):
    proc = launch(tmp_path / "run", BASE + ["method=lora"], ("step", 3, "SIGUSR1"))
    assert proc.returncode == 128 + signal.SIGUSR1
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "preempted" and res["steps"] == 3
    assert "stopped by SIGUSR1 at step 3" in res["error"] and "run the same command again to resume" in res["error"]


# ------------------------------------------------------------------ every method, in one process
# Overrides that make each method's defaults fit an 8-step tiny run (their schedules, K of n, ...).
FITS = {"weightlora": ["method.k=2", "method.select_steps=3"], "weightlora_plus": ["method.k=2", "method.select_steps=3"],
        "rlora": ["method.k=2"], "adalora": ["sparsifier.t_init=2", "sparsifier.t_final=3"],
        "adalora_iter": ["method.iterations=2"], "lora_iter": ["method.iterations=2"], "rolora": ["method.iterations=2"],
        "galore": ["method.update_proj_gap=3"], "dylora": ["method.r_max=4"], "sora": ["sparsifier.prune_every=3"]}
METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_resumes_exactly(tmp_path, monkeypatch, method):
    """Every method, interrupted after step 5 (its last checkpoint: step 4) and run again, ends as the
    uninterrupted run. In one process (the SIGKILL tests above cover the process boundary)."""
    from conftest import compose_config
    from roloraexp import train
    from roloraexp.run import run

    overrides = [*BASE, f"method={method}", *FITS.get(method, [])]
    ref = run(compose_config(*overrides), tmp_path / "ref")
    assert ref["status"] == "completed", ref.get("error")

    original = train.Trainer._optimizer_step

    def crash_after_step_5(self, optimizer, scheduler, ctx):
        original(self, optimizer, scheduler, ctx)
        if ctx.step == 5:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train.Trainer, "_optimizer_step", crash_after_step_5)
    cut = run(compose_config(*overrides), tmp_path / "cut")
    assert cut["status"] == "failed" and "simulated crash" in cut["error"]
    monkeypatch.setattr(train.Trainer, "_optimizer_step", original)
    resumed = run(compose_config(*overrides), tmp_path / "cut")
    assert resumed["status"] == "completed", resumed.get("error")
    assert [r["step"] for r in resumed["resumed_from"]] == [4]
    assert_same_run(tmp_path / "ref", tmp_path / "cut")


def test_bf16_cast_and_compiled_run_killed_resumes_exactly(tmp_path):
    """The GPU defaults on the CPU: bf16 without autocast (trainer.amp_mode=auto → cast) and a compiled
    model (aot_eager), through AdaLoRA's mid-run slice: a killed run resumes bit for bit."""
    over = BASE + ["method=adalora", "sparsifier.t_init=2", "sparsifier.t_final=3", "trainer.precision=bf16",
                   "trainer.compile=true", "trainer.compile_backend=aot_eager"]
    res = killed_and_resumed(tmp_path, over, [("step", 5, "SIGKILL")])
    assert res["amp_mode"] == "cast" and res["compile"]["enabled"]
