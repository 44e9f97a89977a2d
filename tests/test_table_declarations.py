"""The table declarations (roloraexp/tables/): one declaration per table drives the sweep's grid, the
report's cells and the Makefile's targets; adding a table is one declaration + one CSV."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from roloraexp.reporting import aggregate
from roloraexp.tables import TABLES, query
from roloraexp.tables.spec import Col, Row, Setting, Table

ENV = dict(os.environ, WANDB_MODE="disabled")


def tables_cli(*args, cwd=REPO):
    res = subprocess.run([sys.executable, "-m", "roloraexp.tables", *args], cwd=cwd, env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_the_declarations_import_no_heavy_module():
    """The Makefile reads the table names at every call: no torch, pandas or Hydra behind them."""
    code = ("import sys, roloraexp.tables; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'numpy', 'hydra', 'omegaconf', "
            "'yaml', 'transformers', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_cli_names_folders_and_describe():
    assert tables_cli("--names").split() == list(TABLES)
    assert tables_cli("--folders", "rolora-table5").split() == ["rolora-table5", "rolora-table1"]
    assert tables_cli("--folders", "rolora-table4").split() == ["rolora-table1"]
    text = tables_cli("weightlora-table1")
    for part in ("results/published/weightlora_table1.csv (×100)", "model      deberta_v3_base",
                 "experiment=weightlora/deberta_v3_base/{task}", "MRPC F1 [mrpc f1]",
                 "AdaLoRA (as run: no allocation)  method=adalora sparsifier=adalora method.allocate=false; R 8",
                 "IncreLoRA                        not run: not implemented in this project",
                 "grid       49 runs per seed", "weightlora-table1/weightlora ×21"):
        assert part in text, part
    assert "runs of rolora-table1" in tables_cli("rolora-table4")


def test_declaration_mistakes_are_caught():
    cols = (Col("rte", "RTE", "accuracy", "rte"),)
    with pytest.raises(ValueError, match="row keys"):
        Table("t", "T", "t.csv", "roberta_base", "e/{task}", (Row("lora", "A"), Row("lora", "B")), cols)
    # Two rows that would write one run folder with different overrides.
    with pytest.raises(ValueError, match="same run folder"):
        Table("t", "T", "t.csv", "roberta_base", "e/{task}",
              (Row("a", "A", run="lora"), Row("b", "B", ("method=lora", "method.alpha=1"), run="lora")), cols)


def test_budget_columns_let_each_row_realise_a_setting_its_own_way():
    """Columns (task, budget) as the AdaLoRA SQuAD table lays them out: each row says which rank
    (and overrides) a budget means for it; a row without a setting for a column stays empty."""
    budgets = ("0.08%", "0.16%")
    table = Table("demo-budget", "Demo", "demo.csv", "deberta_v3_base", "rolora/deberta_v3_base/{task}",
                  (Row("lora", "LoRA", at={"0.08%": Setting(rank=1), "0.16%": Setting(rank=2)}),
                   Row("adalora", "AdaLoRA", ("method=adalora", "sparsifier=adalora"),
                       at={"0.08%": Setting(rank=1, overrides=("method.init_rank=2",)), "0.16%": Setting(rank=2)}),
                   Row("lora_small", "LoRA (0.08% only)", run="lora", at={"0.08%": Setting(rank=1)})),
                  tuple(Col(f"{t}_{b}", f"{t} {b}", "exact_match", t, setting=b, scale=1.0)
                        for t in ("squad_v1", "squad_v2") for b in budgets))
    grid = table.grid()
    assert [(g.key, g.task, g.rank) for g in grid] == [
        ("lora", "squad_v1", 1), ("lora", "squad_v1", 2), ("lora", "squad_v2", 1), ("lora", "squad_v2", 2),
        ("adalora", "squad_v1", 1), ("adalora", "squad_v1", 2), ("adalora", "squad_v2", 1), ("adalora", "squad_v2", 2)]
    assert grid[4].overrides == ("method=adalora", "sparsifier=adalora", "method.init_rank=2")
    assert table.setting(table.rows[2], table.cols[1]) is None
    run = {"status": "completed", "task": "squad_v2", "method": "adalora", "model": "deberta_v3_base", "seed": 1,
           "config": {"method": {"rank": 1}}, "metrics": {}, "best_metrics": {}}
    assert set(aggregate.fill(table, [query.Run(REPO / "r.json", 0.0, run)]).cells) == {("adalora", "squad_v2_0.08%")}
    lora = {**run, "method": "lora"}
    assert set(aggregate.fill(table, [query.Run(REPO / "r.json", 0.0, lora)]).cells) == {
        ("lora", "squad_v2_0.08%"), ("lora_small", "squad_v2_0.08%")}


NEW_TABLE = '''
"""A table added by one declaration: LoRA at ranks 1 and 2, DyLoRA (no conf/method/dylora.yaml) read per rank."""
from roloraexp.tables.columns import glue_cols
from roloraexp.tables.spec import Row, Table

TABLES = [Table("mypaper-table1", "My paper Table 1", "mypaper_table1.csv", "roberta_base",
                "rolora/roberta_base/{task}",
                (*(Row(f"r{r}_lora", f"LoRA r={r}", run="lora", rank=r) for r in (1, 2)),
                 *(Row(f"r{r}_dylora", f"DyLoRA r={r}", run="dylora", rank=2, reads=f"metrics_by_rank.{r}")
                   for r in (1, 2))),
                glue_cols(["rte", "mrpc"]))]
'''


def test_a_new_table_is_one_declaration_and_one_csv(tmp_path):
    """In a copy of the repository, one module in roloraexp/tables/ + one CSV give a make target
    (dry run: its multirun and its report), a tables-help entry and a report: nothing else to edit."""
    repo = tmp_path / "repo"
    for part in ("Makefile", "make", "conf", "roloraexp", "results/published"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        (repo / part).parent.mkdir(parents=True, exist_ok=True)
        copy(REPO / part, repo / part)
    (repo / "roloraexp" / "tables" / "mypaper.py").write_text(NEW_TABLE)
    (repo / "conf" / "method" / "dylora.yaml").unlink(missing_ok=True)  # the row's method must be missing here
    (repo / "results" / "published" / "mypaper_table1.csv").write_text(
        "row,label,rte,mrpc\nr1_lora,LoRA r=1,70.0,80.0\nr2_lora,LoRA r=2,71.0,81.0\n"
        "r1_dylora,DyLoRA r=1,72.0,82.0\nr2_dylora,DyLoRA r=2,73.0,83.0\n")
    runs = tmp_path / "runs"
    make = ["make", "--no-print-directory", "-o", ".make/installed", f"PYTHON={sys.executable}"]
    dry = subprocess.run([*make, "-n", "mypaper-table1", "SEEDS=1", f"RUNS={runs}"], cwd=repo, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    launches = [line for line in dry.stdout.splitlines() if " -m roloraexp.run -m " in line]
    assert len(launches) == 1 and "method=lora " in launches[0] and "method.rank=1,2" in launches[0]
    assert "table=mypaper-table1" in launches[0] and "experiment=rolora/roberta_base/rte,rolora/roberta_base/mrpc" \
        in launches[0]
    assert "skipping dylora: conf/method/dylora.yaml does not exist" in dry.stderr
    assert f"-m roloraexp.report mypaper-table1 {runs}/mypaper-table1 " in dry.stdout
    help_text = subprocess.run([*make, "tables-help"], cwd=repo, env=ENV, capture_output=True, text=True,
                               timeout=300).stdout
    assert "mypaper-table1: My paper Table 1" in help_text and "results/published/mypaper_table1.csv" in help_text

    run = runs / "mypaper-table1" / "dylora" / "results.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"status": "completed", "task": "rte", "method": "dylora", "model": "roberta_base",
                               "seed": 1, "table": "mypaper-table1", "config": {"method": {"rank": 2}},
                               "metrics": {"accuracy": 0.9}, "best_metrics": {"accuracy": 0.9},
                               "metrics_by_rank": {"1": {"accuracy": 0.7}, "2": {"accuracy": 0.75}}}))
    res = subprocess.run([sys.executable, "-m", "roloraexp.report", "mypaper-table1", str(runs / "mypaper-table1"),
                          "--out", str(tmp_path / "out"), "--seeds", "1"], cwd=repo, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "out" / "mypaper-table1.md").read_text()
    assert "| DyLoRA r=1 | 70.00 (1)<br>*paper 72.00, Δ −2.00* |" in md and "| DyLoRA r=2 | 75.00 (1)" in md
