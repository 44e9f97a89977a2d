"""results.json has one schema, ``roloraexp.results.RunResult``: a run writes it, every reader (the
report, the sweeps, the exporter, the figures) reads it back through ``read_result``, and files it
cannot use are one line saying why."""
import json
import os
import subprocess
import sys
from dataclasses import fields

import pytest

from conftest import DATA, REPO
from roloraexp.reporting.aggregate import load_runs
from roloraexp.results import (FIELDS, SCHEMA_VERSION, ResultError, RunRecord, RunResult, read_result,
                               write_json_atomic)
from roloraexp.sweeps.summary import result_in, row

ENV = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A real run, the user's way: ``python -m roloraexp.run`` (LoRA on a tiny RoBERTa, RTE)."""
    out = tmp_path_factory.mktemp("run")
    proc = subprocess.run([sys.executable, "-m", "roloraexp.run", "model=tiny_roberta", "task=rte", f"data_dir={DATA}",
                           "task.max_train_samples=32", "task.max_eval_samples=16", "trainer.max_steps=2",
                           "trainer.eval_every=1", f"hydra.run.dir={out}"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_run_writes_the_schema_and_every_reader_reads_it_back(run_folder):
    raw = json.loads((run_folder / "results.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    result = read_result(run_folder / "results.json")
    assert result.to_dict() == raw  # nothing lost or added on the way through the schema
    # Every key of the file is a field, or the method's state written at the top level.
    assert set(raw) - FIELDS == set(result.method_state) == {"ranks"}
    assert result.completed and result.steps == 2 and result.metrics["main"] == raw["metrics"]["main"]
    assert result.best_ranks == raw["ranks"] and result.active_adapters == len(raw["ranks"])
    runs, skipped = load_runs([run_folder])  # the report
    assert not skipped and runs[0].data == raw
    assert row(0, ["seed=1"], run_folder, result_in(run_folder))["main"] == raw["metrics"]["main"]  # the sweeps


def test_a_file_without_a_version_is_read_as_version_1(tmp_path, run_folder):
    """Results written before the version was recorded have the same keys."""
    raw = json.loads((run_folder / "results.json").read_text())
    del raw["schema_version"]
    write_json_atomic(tmp_path / "results.json", raw)
    assert read_result(tmp_path / "results.json").schema_version == 1


@pytest.mark.parametrize("change,reason", [
    ({"schema_version": SCHEMA_VERSION + 1}, f"written by a newer roloraexp (this one reads up to {SCHEMA_VERSION})"),
    ({"status": "done"}, "status 'done' is not one of"),
    ({"seed": True}, "seed True is not an integer"),
    ({"seed": "1"}, "seed '1' is not an integer"),
    ({"metrics": None}, "missing keys: metrics"),
])
def test_a_file_the_schema_cannot_read_is_one_line_naming_it(tmp_path, change, reason):
    data = {"status": "completed", "task": "rte", "method": "lora", "model": "m", "seed": 1, "metrics": {},
            "best_metrics": {}, **change}
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ResultError) as e:
        read_result(tmp_path / "results.json")
    assert reason in e.value.reason and str(tmp_path / "results.json") in str(e.value) and "\n" not in str(e.value)


def test_unreadable_json_is_a_result_error(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ResultError, match="unreadable JSON"):
        read_result(tmp_path / "results.json")


def test_a_run_stopped_early_leaves_out_what_it_never_learned():
    """Staged keys (data, precision, head_params, ...) are absent, not null, before their stage."""
    result = RunResult(status="failed", task="rte", method="lora", model="m", seed=1, error="boom")
    written = result.to_dict()
    assert "head_params" not in written and "data" not in written and written["error"] == "boom"
    assert RunResult.from_dict(written).to_dict() == written


def test_the_record_fills_the_result_and_a_method_state_key_may_not_hide_one():
    record = RunRecord(steps=3, train_seconds=2.0, train_examples=8, train_tokens=100,
                       best_metrics={"main": 0.5, "step": 2, "phase": 0},
                       history=[{"step": 2, "phase": 0, "metrics": {"main": 0.5}, "ranks": {"a": 4}}])
    result = RunResult(status="completed", task="rte", method="lora", model="m", seed=1)
    result.take_record(record, {"ranks": {"a": 2, "b": 0}}, [])
    assert (result.steps, result.best_ranks, result.active_adapters) == (3, {"a": 4}, 1)
    assert result.throughput["tokens_per_s"] == 50.0 and result.to_dict()["ranks"] == {"a": 2, "b": 0}
    # Every RunRecord field the file carries is copied (a field added to one and not the other is caught).
    assert {f.name for f in fields(RunRecord)} - FIELDS == {"train_seconds", "train_examples", "train_tokens"}
    with pytest.raises(ValueError, match="results.json keys"):
        result.take_record(record, {"ranks": {}, "steps": 1}, [])
