"""What a user gets when runs fail or collide (issue 22), the user's way: `python -m roloraexp.run` as a
subprocess, overrides on both sides of `-m`.

* a multirun exits 2 when every job failed and 1 when some did, and ends with a summary table
  (also sweep_summary.csv / .json in the sweep folder);
* a run holds its folder (run.lock): a second run into it stops in one line naming the owner and
  writes nothing there; a lock whose owner died is taken over;
* a run never overwrites another config's results.json: it is set aside with its time.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import DATA, REPO, compose_config
from roloraexp import folder_guard
from roloraexp.sweeps import summary as sweep_summary
from roloraexp.results import RunResult

BASE = ["model=tiny_roberta", "task=rte", f"data_dir={DATA}", "task.max_train_samples=32", "task.max_eval_samples=16",
        "trainer.max_steps=2", "logger=disabled"]
ENV = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
NO_HUB = "cannot load nyu-mll/glue/rte from the hub"


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "roloraexp.run", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


def summary(folder):
    csv = (folder / "sweep_summary.csv").read_text()
    return json.loads((folder / "sweep_summary.json").read_text()), csv


def test_a_sweep_whose_every_job_failed_exits_2_and_says_so(tmp_path):
    proc = cli(*[o for o in BASE if not o.startswith("data_dir")], "data_dir=null", f"hydra.sweep.dir={tmp_path}/sweep",
               "-m", "seed=1,2", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "# sweep: 2 jobs: 0 completed, 2 failed" in proc.stdout
    table = proc.stdout[proc.stdout.index("# sweep:"):].splitlines()
    assert table[1].split() == ["job", "overrides", "status", "main", "error"]
    assert table[2].split()[:3] == ["0", "seed=1", "failed"] and NO_HUB in table[2]
    assert table[3].split()[:3] == ["1", "seed=2", "failed"] and NO_HUB in table[3]
    data, csv = summary(tmp_path / "sweep")
    assert data["exit_code"] == 2 and [j["status"] for j in data["jobs"]] == ["failed", "failed"]
    assert all(NO_HUB in j["error"] and j["main"] is None for j in data["jobs"])
    assert csv.splitlines()[0] == "job,overrides,status,main,error,dir" and len(csv.splitlines()) == 3


def test_a_sweep_with_one_failed_job_exits_1_and_lists_it(tmp_path):
    proc = cli(*BASE, f"hydra.sweep.dir={tmp_path}/sweep", "-m", "method.rank=0,8", "trainer.save_adapters=false",
               cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "# sweep: 2 jobs: 1 completed, 1 failed" in proc.stdout
    data, _ = summary(tmp_path / "sweep")
    failed, done = data["jobs"]
    assert (failed["job"], failed["overrides"], failed["status"]) == (0, "method.rank=0", "failed")
    assert failed["error"] == "method.rank must be a positive integer, got 0" and failed["main"] is None
    assert (done["job"], done["overrides"], done["status"]) == (1, "method.rank=8", "completed")
    assert isinstance(done["main"], float) and done["error"] is None
    assert json.loads((tmp_path / "sweep" / done["dir"] / "results.json").read_text())["status"] == "completed"


def test_a_failed_run_prints_its_error_once_and_no_metrics(tmp_path):
    proc = cli(*[o for o in BASE if not o.startswith("data_dir")], "data_dir=null", f"hydra.run.dir={tmp_path}/run",
               cwd=tmp_path)
    assert proc.returncode == 1
    assert (proc.stdout + proc.stderr).count(NO_HUB) == 1 and f"error: {NO_HUB}" in proc.stderr
    status = next(line for line in proc.stdout.splitlines() if line.startswith("status"))
    assert status.split() == ["status", "failed"] and "accuracy" not in proc.stdout


# A run that holds its folder until the test lets it train: the lock is taken in cli(), before Hydra starts.
HOLD = """
import os, sys, time
from roloraexp import train
from roloraexp.run import cli

go = sys.argv.pop(1)
step = train.Trainer._optimizer_step

def wait_then_step(self, *args):
    open(go + ".waiting", "w").close()
    while not os.path.exists(go):
        time.sleep(0.05)
    step(self, *args)

train.Trainer._optimizer_step = wait_then_step
cli()
"""


def test_a_second_run_into_a_held_folder_stops_in_one_line_and_writes_nothing_there(tmp_path):
    run, go = tmp_path / "run", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(go), *BASE, "seed=1", f"hydra.run.dir={run}"],
                             cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "go.waiting").exists():   # the first run is in its first step
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.2)
        lock = json.loads((run / "run.lock").read_text())
        assert (lock["pid"], lock["host"]) == (first.pid, socket.gethostname())
        before = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
        log_before = (run / "run.log").read_text()

        second = cli(*BASE, "seed=2", f"hydra.run.dir={run}", cwd=tmp_path)
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"error: {run} is in use by another run (pid {first.pid} on {lock['host']}, since {lock['since']}): "
            f"wait for it to end, or use another folder"]
        assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == before   # Hydra never started
        # A multirun job into the held folder: refused too (Hydra has written its .hydra/ by then), listed.
        sweep = cli(*BASE, f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=run", "-m", "seed=2,3", cwd=tmp_path)
        assert sweep.returncode == 2 and "# sweep: 2 jobs: 0 completed, 2 refused" in sweep.stdout
        assert sweep.stderr.count(f"is in use by another run (pid {first.pid} on") == 2
        assert (run / "run.log").read_text() == log_before   # not a line of theirs in the first run's log
        assert first.poll() is None, "the first run ended before the others were refused: nothing was tested"
    finally:
        go.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "completed" and res["seed"] == 1 and res["steps"] == 2
    assert not (run / "run.lock").exists()   # released at the end
    assert "seed=3" not in (run / "run.log").read_text()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                           "since": "yesterday"}))
    proc = cli(*BASE, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"took over a stale lock: {tmp_path}/run/run.lock was left by pid {dead.pid}" in proc.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
    assert not (tmp_path / "run" / "run.lock").exists()


def test_who_may_take_over_a_lock(tmp_path, monkeypatch):
    """Same host: a live pid holds it. Another host: its heartbeat (the file's time) holds it for an
    hour; the same SLURM job (requeued elsewhere) takes it at once. Process 0 of a DDP run only holds it."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "then"}))
    with pytest.raises(folder_guard.FolderRefused, match=f"in use by another run \\(pid {os.getppid()} on "):
        folder_guard.acquire(tmp_path)
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then", "slurm_job": "77"}))
    with pytest.raises(folder_guard.FolderRefused, match="after 60 minutes without a heartbeat"):
        folder_guard.acquire(tmp_path)
    monkeypatch.setenv("RANK", "1")
    assert folder_guard.acquire(tmp_path) is None   # a DDP peer of process 0: not refused
    assert folder_guard.took_over(tmp_path) is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    with folder_guard.hold(tmp_path) as held:
        assert "this SLURM job (77), now requeued" in held.took_over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    monkeypatch.delenv("SLURM_JOB_ID")
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
    os.utime(lock, (time.time() - 2 * 3600,) * 2)
    with folder_guard.hold(tmp_path) as held:
        assert "no heartbeat from elsewhere for 120 minutes" in held.took_over


def test_a_finished_run_of_another_config_is_set_aside_not_overwritten(tmp_path):
    run = tmp_path / "run"
    assert cli(*BASE, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    lora = json.loads((run / "results.json").read_text())
    proc = cli(*BASE, "method=adalora", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notice = next(line for line in proc.stdout.splitlines() if "set aside as" in line)
    assert f"{run} held a completed run of another config (" in notice
    kept = sorted(p.name for p in run.iterdir() if p.name.count(".") == 2 and p.suffix in (".json", ".pt"))
    assert [n.split(".")[0] for n in kept] == ["best_trainable", "final_trainable", "results"]
    assert len({n.split(".")[1] for n in kept}) == 1   # one time stamp: YYYYmmdd-HHMMSS
    assert json.loads((run / kept[-1]).read_text()) == lora
    assert json.loads((run / "results.json").read_text())["method"] == "adalora"
    # The same config again: nothing to do, nothing set aside.
    again = cli(*BASE, "method=adalora", f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout and "set aside" not in again.stdout
    assert len(list(run.glob("results.*.json"))) == 1


def test_a_failed_run_of_another_config_is_set_aside_too(tmp_path):
    from roloraexp.run import run

    failed = run(compose_config(*BASE, "method.rank=0"), tmp_path)
    assert failed["status"] == "failed"
    res = run(compose_config(*BASE, "trainer.save_adapters=false"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    (aside,) = tmp_path.glob("results.*.json")
    assert json.loads(aside.read_text())["error"] == "method.rank must be a positive integer, got 0"
    # The same config's failed run is its own to replace (it resumes from its checkpoint): not set aside.
    for _ in range(2):
        assert run(compose_config(*BASE, "method.rank=0"), tmp_path / "b")["status"] == "failed"
    assert not list((tmp_path / "b").glob("results.*.json"))


def test_exit_status_and_table_rules():
    assert [sweep_summary.exit_code(s) for s in (["completed"] * 2, ["completed", "failed"],
                                                ["failed", "preempted"], [])] == [0, 1, 2, 0]
    preempted = RunResult(status="preempted", task="rte", method="lora", model="m", seed=1, error="stopped by SIGTERM\nmore")
    row = sweep_summary.row(3, ["seed=1"], None, preempted)
    assert (row["status"], row["error"], row["main"]) == ("preempted", "stopped by SIGTERM", None)
    assert sweep_summary.row(4, ["seed=2"], None, None)["status"] == "missing"
