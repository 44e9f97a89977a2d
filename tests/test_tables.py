"""The paper-table targets (make/tables.mk + roloraexp/sweeps/table_grid.py): every target expands into runs
whose configs compose and land in the report cells that asked for them, every experiment config
composes with the papers' values, a scaled-down target runs end to end, writes its table and figures
and skips its finished runs when run again; and the gradient-norm script (ROLoRA Fig. 3) writes its
JSON and figure."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import DATA, REPO, compose_config
from roloraexp.reporting import aggregate
from roloraexp.sweeps import table_grid as sweep
from roloraexp.tables import TABLES as DECLARED, query


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)   # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


TABLES = list(DECLARED)
EXPERIMENTS = sorted(str(p.relative_to(REPO / "conf" / "experiment").with_suffix(""))
                     for p in (REPO / "conf" / "experiment").rglob("*.yaml"))
COMPOSED: dict = {}   # a cell's overrides (rank, K, seed as keys) -> its composed config
# m10 adds method.allocate (issue 10); until then WeightLoRA Table 1's "AdaLoRA (as run)" row cannot compose.
HAS_ALLOCATE = "allocate" in yaml.safe_load((REPO / "conf" / "method" / "adalora.yaml").read_text())
ENV = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")


def make(*args, cwd=REPO):
    # -o: never (re)install from inside the tests.
    return subprocess.run(["make", "--no-print-directory", "-o", ".make/installed", f"PYTHON={sys.executable}",
                           f"DATA_DIR={DATA}", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=900)


def test_every_table_has_a_target_and_a_report_spec():
    # One declaration per table drives the grid, the report and the target list (more tables come).
    assert {f"{p}-table{i}" for p in ("rolora", "weightlora") for i in range(1, 7)} <= set(TABLES)
    mk = (REPO / "make" / "tables.mk").read_text()
    assert "$(TABLES):" in mk and "tables-help" in mk and "roloraexp.tables --names" in mk
    methods = {run.method for table in DECLARED.values() for run in table.grid()}
    existing = {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
    assert methods <= existing, "a grid names a method with no conf/method/*.yaml"


def test_a_misspelled_methods_filter_is_refused_not_an_empty_table(tmp_path):
    res = make("-n", "rolora-table1", "SEEDS=1", "METHODS=lorra", f"RUNS={tmp_path / 'runs'}")
    assert res.returncode != 0
    assert "rolora-table1 has no row, run or method lorra (it has: adalora, adalora_iter, lora," in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("table", TABLES)
def test_make_dry_run_prints_the_multiruns_and_their_configs_compose(tmp_path, table):
    runs = tmp_path / "runs"
    res = make("-n", table, "SEEDS=1", f"RUNS={runs}")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    launches = [line for line in lines if " -m roloraexp.run -m " in line]
    assert launches and all(f"hydra.sweep.dir={runs}/" in line for line in launches)
    assert any(line.startswith(f"{sys.executable} -m roloraexp.report {table} {runs}/") for line in lines)
    assert not runs.exists(), "make -n must not run anything"

    cells = sweep.plan(table, sweep.parse_args([table, "--seeds", "1", "--runs", str(runs)]))
    assert len(launches) == len(sweep.batches(cells))
    assert len({c.dir for c in cells}) == len(cells), "two cells share a run folder"
    # Compose each distinct (experiment, method overrides, keys) once: ranks, K and seeds are plain values.
    for c in cells:
        if "method.allocate=false" in c.overrides and not HAS_ALLOCATE:
            continue
        key = tuple(o if o.split("=")[0] not in ("method.rank", "method.k", "seed") else o.split("=")[0]
                    for o in c.overrides)
        fresh = key not in COMPOSED
        cfg = COMPOSED[key] = COMPOSED.get(key) or compose_config(*c.overrides)
        _lands_in_the_cells_that_asked_for_it(DECLARED[table], c, cfg)
        if not fresh:   # tables share cells (Tables 4 and 5 read Table 1's)
            continue
        assert (cfg.task.name, cfg.method.name, cfg.model.name, cfg.table) == (c.task, c.row.method, c.model, c.folder)
        assert cfg.seed == 1 and ("method.rank" not in c.swept or cfg.method.rank == int(c.swept["method.rank"]))
        assert "method.k" not in c.swept or cfg.method.k == int(c.swept["method.k"])
        if "sparsifier=adalora" in c.overrides or cfg.method.name == "rolora":
            assert cfg.sparsifier.name in ("adalora", "sora")
        assert isinstance(OmegaConf.to_container(cfg.trainer, resolve=True)["lr"], float)


def _lands_in_the_cells_that_asked_for_it(table, c, cfg):
    """The run a grid cell makes, as results.json would record it (`cfg` composed for a cell that
    differs at most in R, K and seed), fills exactly the report cells whose rows asked for that run:
    the sweep and the report read one declaration."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["method"].update({k.split(".")[1]: int(c.swept[k]) for k in ("method.rank", "method.k") if k in c.swept})
    data = {"status": "completed", "task": c.task, "method": cfg.method.name, "model": cfg.model.name, "seed": 1,
            "table": c.folder, "config": config, "metrics": {}, "best_metrics": {}}
    got = set(aggregate.fill(table, [query.Run(Path("results.json"), 0.0, data)]).cells)
    here = (c.folder, c.row.run_key, c.task, c.swept.get("method.rank"), c.swept.get("method.k"))
    def run_of(row, s, col):
        return (row.source or table.id, row.run_key, col.task, *(None if v is None else str(v) for v in (s.rank, s.k)))

    asked = {(row.key, col.key) for row in table.rows for col in table.cols
             if not col.derived and (s := table.setting(row, col)) is not None and run_of(row, s, col) == here}
    asked |= {(r, col.key) for r, _ in asked for col in table.cols if col.metric == "trainable_params"}
    assert asked and got == asked, (c.dir, got ^ asked)


def test_declarations_agree_on_shared_runs():
    """Tables that reuse another table's runs ask for them with the same overrides (else the sweep of
    one would mark the other's cells as changed and run them again)."""
    seen = {}
    for table in TABLES:
        for c in sweep.plan(table, sweep.parse_args([table, "--seeds", "1", "--runs", "/nonexistent"])):
            assert seen.setdefault(c.dir, c.overrides) == c.overrides, (table, c.dir)
    assert sum(str(d).startswith("/nonexistent/rolora-table1/") for d in seen) == 5 * 8


def test_weightlora_table1_runs_adalora_as_run_beside_adalora(capsys):
    """The second AdaLoRA row (issue 10): its own multirun and folder, AdaLoRA without reallocation."""
    assert sweep.main(["weightlora-table1", "--seeds", "1", "--runs", "/nonexistent", "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "method=adalora " in line]
    assert len(lines) == 2
    as_run = next(line for line in lines if "method.allocate=false" in line)
    assert "adalora_as_run_r${method.rank}/seed${seed}" in as_run and "table=weightlora-table1" in as_run
    assert "hydra.sweep.dir=/nonexistent/weightlora-table1" in as_run


def test_cells_group_into_grids_and_a_ragged_rest_splits():
    a = sweep.parse_args(["rolora-table3", "--tasks", "rte", "mrpc", "--methods", "lora", "rolora", "--seeds", "1", "2",
                          "--runs", "/nonexistent"])
    cells = sweep.plan("rolora-table3", a)
    assert len(cells) == 2 * 2 * 2 * 2 and len(sweep.batches(cells)) == 2   # one multirun per method
    ragged = [c for c in cells if not (c.row.key == "lora" and c.task == "rte" and c.swept["seed"] == "2")]
    combos = [combo for _, combo in sweep.batches(ragged)]
    assert len(combos) == 3 and sum(math.prod(len(v) for v in combo.values()) for combo in combos) == len(ragged)


def _group_defaults(text: str) -> dict:
    """{group: option} of a config's defaults list, through the files it includes (an experiment file's
    first entry, ``/experiment_common/<table>/<model>``, holds the settings its (table, model) shares)."""
    out = {}
    for d in yaml.safe_load(text)["defaults"]:
        if isinstance(d, str):
            out.update(_group_defaults((REPO / "conf" / f"{d.strip('/')}.yaml").read_text()))
        else:
            out.update({k.split("/")[-1]: v for k, v in d.items()})
    return out


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_composes(name):
    text = (REPO / "conf" / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    defaults = _group_defaults(text)
    for method in ("lora", "adalora", "weightlora"):
        extra = ["sparsifier=adalora"] if method == "adalora" else []
        cfg = compose_config(f"experiment={name}", f"method={method}", *extra)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert cfg.model.name == defaults["model"] and cfg.task.name == defaults["task"]
        assert resolved["method"]["name"] == method and isinstance(resolved["trainer"]["lr"], float)


@pytest.mark.parametrize("experiment,method,values", [
    ("rolora/roberta_base/mrpc", "lora", {"trainer.epochs": 30, "trainer.lr": 1e-3, "method.alpha": 8}),
    ("rolora/roberta_base/cola", "adalora", {"sparsifier.t_final": 3500, "sparsifier.orth_reg": 0.5,
                                             "method.init_rank": None, "trainer.batch_size": 32}),
    ("rolora/deberta_v3_base/qqp", "rolora", {"trainer.batch_size": 32, "sparsifier.t_init": 8000}),
    ("rolora/deberta_v3_base/squad_v2", "lora", {"trainer.epochs": 12, "task.max_seq_length": 128}),
    ("weightlora/deberta_v3_base/rte", "weightlora", {"trainer.grad_accum": 6, "method.alpha": 32}),
    ("weightlora/deberta_v3_base_n72/rte", "weightlora", {"trainer.lr": 8e-4, "trainer.epochs": 50}),
    ("weightlora/deberta_v3_base_n72/rte", "lora", {"trainer.lr": 5e-4, "trainer.batch_size": 64}),
    ("weightlora/llama3_8b/cola", "lora", {"trainer.max_steps": 1024, "trainer.grad_accum": 2}),
    ("weightlora/bart_large/xsum", "lora", {"trainer.epochs": 35, "trainer.batch_size": 8}),
    ("weightlora/bart_large/cnn_dm", "weightlora", {"trainer.epochs": 25, "trainer.batch_size": 8}),   # Table 9
    # runs shorter than one epoch: WeightLoRA+ grows after a quarter (else at the last step, untrained)
    ("weightlora/llama3_8b/mnli", "weightlora_plus", {"method.select_steps": 0.25}),
    ("weightlora/llama3_8b/sst2", "weightlora", {"method.select_steps": "epoch"}),
    ("weightlora/llama3_8b/qqp", "rlora", {"method.select_steps": 0}),
])
def test_experiments_hold_the_papers_values(experiment, method, values):
    extra = ["sparsifier=adalora"] if method == "adalora" else []
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config(f"experiment={experiment}", f"method={method}", *extra),
                                                  resolve=True))
    assert {k: OmegaConf.select(cfg, k) for k in values} == values


def test_demo_config():
    cfg = compose_config("experiment=demo")
    assert (cfg.model.name, cfg.task.name, cfg.method.name, cfg.sparsifier.name, cfg.schedule.name) == \
           ("minilm", "sst2", "rolora", "adalora", "rolora")
    assert cfg.method.iterations == 3 and cfg.trainer.max_steps * 3 <= 150 and cfg.logger.mode == "offline"


def test_scaled_down_target_runs_end_to_end_and_resumes(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    args = ["rolora-table4", "MODEL=tiny_roberta", "SEEDS=1 2", "TASKS=rte", "SAMPLES=32", "STEPS=6", f"RUNS={runs}",
            f"OUT={out}", "EXTRA=logger=disabled trainer.save_adapters=false"]
    first = make(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = sorted((runs / "rolora-table1").rglob("results.json"))   # Table 4 reads Table 1's runs
    assert len(files) == 3 * 2 and all(json.loads(f.read_text())["status"] == "completed" for f in files)
    assert {f.parent.relative_to(runs / "rolora-table1").as_posix() for f in files} == {
        f"tiny_roberta/rte/{m}_r8/seed{s}" for m in ("lora", "adalora", "rolora") for s in (1, 2)}
    table = (out / "rolora-table4.md").read_text()
    assert "ROLoRA" in table and "(2)" in table
    assert (out / "rolora-table4.csv").exists() and list(out.glob("rolora-table4_ranks_*.png"))

    mtimes = {f: f.stat().st_mtime_ns for f in files}
    again = make(*args)
    assert again.returncode == 0, again.stderr
    assert "6 completed (skipped)" in again.stdout and "-> 0 runs in 0 multirun(s)" in again.stdout
    assert " -m roloraexp.run " not in again.stdout
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes

    # A failed cell, a killed one (a checkpoint, no results.json) and a changed setting run again
    # (dry run: nothing is launched here).
    bad, killed = files[0], files[1]
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "status": "failed", "error": "boom"}))
    killed.unlink()
    (killed.parent / "checkpoint.pt").write_bytes(b"a checkpoint")
    dry = make("-n", *args)
    assert "1 to resume, 1 failed" in dry.stdout and "-> 2 runs in " in dry.stdout, dry.stdout[:600]
    dry = make("-n", *[a if a != "STEPS=6" else "STEPS=7" for a in args])
    assert "6 changed" in dry.stdout and "trainer.max_steps=7" in dry.stdout


def test_a_changed_cell_sets_its_results_and_checkpoints_aside(tmp_path):
    from roloraexp.folder_guard import CHECKPOINT, PREVIOUS
    from roloraexp.sweeps import table_grid as sweep

    for name in ("results.json", CHECKPOINT, PREVIOUS):
        (tmp_path / name).write_text(name)
    cell = sweep.Cell(folder="t", model="m", task="rte", row=None, fixed=(), swept={}, dir=tmp_path)
    os.utime(tmp_path / "results.json", (1.7e9, 1.7e9))
    stamp = datetime.fromtimestamp(1.7e9).strftime("%Y%m%d-%H%M%S")   # when that run ended
    sweep.set_aside(cell)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f"checkpoint.previous.{stamp}.pt", f"checkpoint.{stamp}.pt", f"results.{stamp}.json"])
    (tmp_path / "results.json").write_text("again")   # set aside again, same time: nothing overwritten
    os.utime(tmp_path / "results.json", (1.7e9, 1.7e9))
    sweep.set_aside(cell)
    assert (tmp_path / f"results.{stamp}-1.json").read_text() == "again"


def test_a_table_whose_cells_failed_exits_non_zero_and_names_them(tmp_path):
    runs = tmp_path / "runs"
    res = make("rolora-table1", "MODEL=tiny_roberta", "SEEDS=1 2", "TASKS=rte", "METHODS=lora", "SAMPLES=16",
               "STEPS=2", f"RUNS={runs}", f"OUT={tmp_path / 'results'}", "EXTRA=logger=disabled trainer.lr=-1")
    assert res.returncode == 2, res.stderr[-2000:]  # the sweep's status, after the report of what completed
    assert "# rolora-table1: 0/2 cells completed, 2 failed:" in res.stdout
    listed = res.stdout[res.stdout.index("cells completed, 2 failed:"):].splitlines()[2:4]
    words = [line.split() for line in listed]
    assert [w[w.index("failed") - 1] for w in words] == ["seed=1", "seed=2"]
    assert all("trainer.lr must be a number > 0, got -1" in line for line in listed)
    summary = json.loads((runs / "rolora-table1" / "sweep_summary.json").read_text())
    assert summary["exit_code"] == 2 and [j["status"] for j in summary["jobs"]] == ["failed", "failed"]
    assert summary["jobs"][0]["dir"].endswith("rolora-table1/tiny_roberta/rte/lora_r8/seed1")


def test_grad_norms_writes_json_and_figure(tmp_path):
    grad_norms = _load("grad_norms")
    rc = grad_norms.main(["model=tiny_roberta", "task=rte", f"data_dir={DATA}", "task.max_train_samples=32",
                          "trainer.batch_size=8", "--batches", "2", "--out", str(tmp_path)])
    assert rc == 0
    norms = json.loads((tmp_path / "tiny_roberta_rte.json").read_text())
    # 2 layers × (q, k, v, attention output, intermediate, output)
    assert len(norms) == 12 and all(math.isfinite(v) and v > 0 for v in norms.values())
    assert any(".layer.1.attention.self.value" in n for n in norms)
    assert (tmp_path / "tiny_roberta_rte.png").stat().st_size > 0
