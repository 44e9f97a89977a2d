"""What a table costs before it runs (roloraexp/tables/cost.py, `make TABLE-cost`, `make tables-help`):
the optimizer steps counted for a cell are the steps its real run takes (phases included, from
SAMPLES, the local files or STEPS), runs are cells × seeds under the same filters as the sweep, and
the GPU-hours follow from the GPU check's JSON by hand arithmetic."""
import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import DATA, REPO
from roloraexp.sweeps import table_grid as sweep
from roloraexp.tables import TABLES, cli, cost

ENV = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
QUIET = ["logger=disabled", "trainer.save_adapters=false"]
# tiny_roberta's parameters outside embedding tables, by hand: 2 layers × (q, k, v, o: 4 × (32·32 + 32),
# two LayerNorms 2 × 64, intermediate 32·64 + 64, output 64·32 + 32), the embeddings' LayerNorm 64, the
# classification head (dense 32·32 + 32, out_proj 32·2 + 2).
TINY_PARAMS = 2 * (4 * (32 * 32 + 32) + 2 * 64 + 32 * 64 + 64 + 64 * 32 + 32) + 64 + 32 * 32 + 32 + 32 * 2 + 2


def make(*args):
    return subprocess.run(["make", "--no-print-directory", "-o", ".make/installed", f"PYTHON={sys.executable}", *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def options(**kw):
    a = dict(tables=[], gpu_json=None, seeds=[1], model=None, tasks=[], methods=[], samples=None, steps=None,
             data_dir=None, extra=[])
    return argparse.Namespace(**{**a, **kw})


def counted_vs_run(tmp_path, **kw):
    """Run the cells of rolora-table1 that `kw` selects through the sweep (Hydra multiruns of
    roloraexp.run) and return {(run, seed): (steps counted before, steps results.json reports)}."""
    a = options(**{"model": "tiny_roberta", "tasks": ["rte"], "data_dir": str(DATA), "extra": QUIET, **kw})
    argv = ["rolora-table1", "--runs", str(tmp_path), "--seeds", *map(str, a.seeds), "--model", a.model, "--tasks",
            *a.tasks, "--methods", *a.methods, "--data-dir", a.data_dir, "--jobs", "2"]
    argv += ["--samples", str(a.samples)] if a.samples else []
    argv += ["--steps", str(a.steps)] if a.steps else []
    assert sweep.main([*argv, "--", *a.extra]) == 0
    estimator = cost.Estimator(a)
    out = {}
    for cell in estimator.cells("rolora-table1"):
        result = json.loads((tmp_path / cell.dir.relative_to("runs") / "results.json").read_text())
        assert result["status"] == "completed", result.get("error")
        out[cell.row.run_key, cell.swept["seed"]] = (estimator.run(cell).steps, result["steps"])
    return out


def test_counted_steps_are_the_steps_a_real_run_takes(tmp_path):
    # SAMPLES: 24 rows, batch 32 -> 1 step an epoch, the experiment's 50 epochs; ROLoRA: 3 phases of it.
    steps = counted_vs_run(tmp_path / "samples", methods=["lora", "rolora"], samples=24)
    assert steps == {("lora", "1"): (50, 50), ("rolora", "1"): (150, 150)}
    # STEPS: trainer.max_steps per phase, whatever the data.
    steps = counted_vs_run(tmp_path / "steps", methods=["rolora"], samples=24, steps=3)
    assert steps == {("rolora", "1"): (9, 9)}
    # Neither: the local file's rows (the shipped 1000-row RTE slice: 32 batches), one epoch via EXTRA.
    steps = counted_vs_run(tmp_path / "file", methods=["lora"],
                           extra=[*QUIET, "trainer.epochs=1", "task.max_eval_samples=16"])
    assert steps == {("lora", "1"): (32, 32)}


def cost_cli(*args, capsys):
    assert cli.main(["--cost", *args]) == 0
    return capsys.readouterr().out


def row(out: str, name: str) -> list[str]:
    """A table's line: [runs, optimizer steps (≈ when estimated), est. GPU-hours]."""
    line = next(line for line in out.splitlines() if line.startswith(name + " "))
    return list(re.fullmatch(r"\s+(\S+)\s+((?:≈ )?\S+)\s+(\S.*)", line[len(name):]).groups())


def test_runs_are_cells_times_seeds_under_the_sweeps_filters(capsys):
    res = make("rolora-table1-cost", "SEEDS=1 2 3", "TASKS=rte mrpc", "METHODS=lora rolora", "STEPS=2")
    assert res.returncode == 0, res.stderr
    # 2 tasks × 2 methods × 3 seeds; steps: LoRA 2, ROLoRA 3 phases × 2 for each task and seed.
    assert row(res.stdout, "rolora-table1") == ["12", "48", "—"]
    assert "seeds 1 2 3, tasks=rte mrpc, methods=lora rolora, steps=2" in res.stdout
    out = cost_cli("rolora-table1", "rolora-table4", "weightlora-table5", "--seeds", "1", "2", "--steps", "1",
                   capsys=capsys)
    assert row(out, "rolora-table1")[0] == str(len(TABLES["rolora-table1"].grid()) * 2) == "80"
    # Table 4's runs are Table 1's (its folder): each table counts them, the total once.
    n4, n5 = (len(TABLES[t].grid()) * 2 for t in ("rolora-table4", "weightlora-table5"))
    assert row(out, "rolora-table4")[0] == str(n4) and row(out, "all (shared runs once)")[0] == str(80 + n5)
    out = cost_cli("rolora-table1", "weightlora-table5", "--tasks", "xsum", "--steps", "1", capsys=capsys)
    xsum = sum(run.task == "xsum" for run in TABLES["weightlora-table5"].grid())
    assert row(out, "rolora-table1")[:2] == ["0", "0"] and row(out, "weightlora-table5")[0] == str(xsum * 5)
    with pytest.raises(SystemExit, match="no table here has the task rtee"):
        cli.main(["--cost", "rolora-table1", "--tasks", "rtee"])


def test_gpu_hours_are_the_hand_computed_figure(tmp_path, capsys):
    rows = [dict(model="roberta-base-random", precision="fp32", variant="lora", tokens_per_s=1000.0),
            dict(model="roberta-base-random", precision="fp32", variant="rolora", tokens_per_s=500.0),
            dict(model="roberta-base-random", precision="bf16", variant="lora", tokens_per_s=99999.0),
            dict(model="roberta-base-random", precision="fp32", variant="floor", tokens_per_s=99999.0),
            dict(model="deberta-base-random", precision="fp32", variant="lora", tokens_per_s=1.0)]
    sized = tmp_path / "sized.json"
    sized.write_text(json.dumps({"device": "Test GPU", "date": "2026-01-02",
                                 "bench": [{**r, "params": 2 * TINY_PARAMS} for r in rows]}))
    args = ["rolora-table1", "--model", "tiny_roberta", "--tasks", "rte", "--methods", "lora", "rolora",
            "--steps", "10", "--seeds", "1", "2"]
    out = cost_cli(*args, "--gpu-json", str(sized), capsys=capsys)
    # fp32 runs (the experiment's) of batch 32 × 128 tokens, a model half the row's: LoRA 10 steps at
    # 1000 tokens/s, ROLoRA 3 × 10 steps at ROLoRA's 500 tokens/s; 2 seeds.
    seconds = 2 * (10 * 32 * 128 / 1000 * 0.5 + 30 * 32 * 128 / 500 * 0.5)
    assert row(out, "rolora-table1") == ["4", "80", f"{seconds / 3600:.3g}"] and f"{seconds / 3600:.3g}" == "0.0796"
    text = " ".join(out.split())
    assert f"ESTIMATE for Test GPU, from {sized} (GPU check of 2026-01-02)" in text and "not included" in text
    assert "Rows read (tokens/s): roberta-base-random fp32 lora 1,000; roberta-base-random fp32 rolora 500." in text
    # Without "params" the row's model is sized as scripts/bench.py builds it (roberta-base's shape).
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"device": "Test GPU", "date": "2026-01-02", "bench": rows}))
    out = cost_cli(*args, "--gpu-json", str(plain), capsys=capsys)
    seconds = 2 * (10 * 32 * 128 / 1000 + 30 * 32 * 128 / 500) * TINY_PARAMS / 85_648_130
    assert row(out, "rolora-table1")[2] == f"{seconds / 3600:.3g}"


def test_make_tables_help_prints_every_tables_cost(tmp_path):
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"device": "Test GPU", "date": "2026-01-02", "bench": [
        dict(model=m, precision=p, variant="lora", tokens_per_s=1e5)
        for m in ("roberta-base-random", "deberta-base-random") for p in ("fp32", "bf16")]}))
    res = make("tables-help", f"GPU_JSON={gpu}", "SEEDS=1")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "rolora-table1: ROLoRA Table 1" in out   # the declarations come first, as before
    for table in TABLES:
        runs, steps, hours = row(out, table)
        assert int(runs.replace(",", "")) > 0 and steps.lstrip("≈ ")[:1].isdigit() and hours[0].isdigit(), table
    assert row(out, "all (shared runs once)")[0].replace(",", "").isdigit()
    assert f"ESTIMATE for Test GPU, from {gpu}" in " ".join(out.split())
