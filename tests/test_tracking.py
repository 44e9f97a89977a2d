"""W&B logging: offline runs need no account and leave a run folder; ranks and ω are logged per
adapter at every evaluation."""
from conftest import smoke
from roloraexp.run import run
from roloraexp.tracking import Tracker


class FakeRun:
    id = "fake"

    def __init__(self):
        self.logged, self.summary = [], {}

    def log(self, metrics, step):
        self.logged.append((step, metrics))

    def finish(self, exit_code=0):
        self.finished = exit_code


def test_every_evaluation_logs_metrics_ranks_and_omega(tmp_path, monkeypatch):
    runs = []

    def fake_init(self, logger_cfg, cfg, output_dir, name, **kwargs):
        self.mode, self.run = "offline", FakeRun()
        runs.append(self.run)

    monkeypatch.setattr(Tracker, "__init__", fake_init)
    res = run(smoke("method=weightlora", "method.k=2", "method.select_steps=3", "trainer.max_steps=6",
                    "trainer.eval_every=3", "trainer.log_every=1"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    logged = runs[0].logged
    evals = [step for step, m in logged if "eval/main" in m]
    assert evals == [3, 6]
    at_end = {k: v for step, m in logged if step == 6 for k, v in m.items()}
    assert {f"ranks/{n}" for n in res["ranks"]} <= set(at_end) and "ranks/mean" in at_end
    assert {f"omega/{n}" for n in res["omega"]} <= set(at_end)
    assert sum(1 for step, m in logged if "train/loss" in m) == 6


def test_offline_mode_writes_a_local_run_without_an_account(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")
    res = run(smoke("logger=offline", "trainer.max_steps=2"), tmp_path)
    assert res["status"] == "completed", res.get("error")
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_per_adapter_stats_become_one_scalar_each():
    class Recorder(Tracker):
        def __init__(self):
            self.logged = []

        def log(self, metrics, step):
            self.logged.append((step, metrics))

    t = Recorder()
    t.log_state({"ranks": {"a": 2, "b": 4}, "adapter_stats": {"a": {"vera/mean_abs_d": 0.5}, "b": {"vera/mean_abs_d": 1.5}}}, 7)
    assert t.logged == [(7, {"ranks/a": 2, "ranks/b": 4, "ranks/mean": 3.0, "vera/mean_abs_d/a": 0.5,
                             "vera/mean_abs_d/b": 1.5})]
