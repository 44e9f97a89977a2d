"""The slides' tables, part 2: every experiment file composes and resolves for every row's method (the
papers' settings reach the run), the published CSVs have the slides' shape and spot values, the four
declarations expand into the papers' grids, and a scaled-down DyLoRA table runs end to end with every
rank read from one model."""
import csv
import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import DATA, REPO, compose_config
from roloraexp.tables import TABLES

GLUE = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]
FAMILIES = {  # experiment family -> the rows' methods
    "dylora/roberta_base": (GLUE, ["dylora", "lora"]),
    "hydra/roberta_base": (GLUE, ["hydra", "lora", "galore", "full_ft", "bitfit"]),
    "adalora/deberta_v3_base": (GLUE + ["squad_v1", "squad_v2"], ["adalora", "lora", "hadapter", "padapter", "full_ft"]),
}
CLS_DROPOUT = {"cola": 0.1, "mnli": 0.15, "mrpc": 0.0, "qnli": 0.1, "qqp": 0.15, "rte": 0.2, "sst2": 0.0, "stsb": 0.2}
CASES = [(fam, t, m) for fam, (tasks, methods) in FAMILIES.items() for t in tasks for m in methods]


@pytest.mark.parametrize("family,task,method", CASES)
def test_every_experiment_resolves_for_its_rows(family, task, method):
    cfg = OmegaConf.to_container(compose_config(f"experiment=slides/{family}/{task}", f"method={method}"), resolve=True)
    assert cfg["task"]["name"] == task and cfg["method"]["name"] == method
    assert cfg["table"] == {"dylora/roberta_base": "slides-dylora-table", "hydra/roberta_base": "slides-hydra-table",
                            "adalora/deberta_v3_base": "slides-adalora-" + ("squad" if "squad" in task else "glue")}[family]
    assert cfg["trainer"]["lr"] > 0 and cfg["trainer"]["epochs"] > 0
    if method in ("full_ft", "bitfit"):   # their lr is per role (method.group_lr): the row's lr must reach every role
        assert set(cfg["method"]["group_lr"].values()) == {cfg["trainer"]["lr"]} == {cfg["trainer"]["lr_by_method"][method]}
        return
    if family.startswith("adalora") and task in CLS_DROPOUT:   # the scripts' --cls_dropout, per task
        assert cfg["model"]["config_overrides"] == {"cls_dropout": CLS_DROPOUT[task]}
    targets = cfg["method"]["target_modules"]
    if method in ("hadapter", "padapter", "hydra", "galore"):
        assert targets[0].startswith("re:")          # the method keeps its own targets
    elif family.startswith("adalora"):
        assert targets == ["query_proj", "key_proj", "value_proj", "dense"]  # all six matrices, as AdaLoRA's scripts


def read(name):
    with open(REPO / "results" / "published" / name) as f:
        return list(csv.DictReader(f))


def test_published_csvs_have_the_slides_shape_and_values():
    dy = {r["row"]: r for r in read("slides_dylora_table.csv")}
    assert len(dy) == 8 * 3 + 3 + 1
    assert dy["r1_lora"]["mnli"] == "34.60" and dy["r1_lora"]["mnli_std"] == "3.69"
    assert dy["r8_dylora"]["avg"] == "85.44" and dy["best_dylora"]["rte"] == "80.14" and dy["best_dylora"]["rte_rank"] == "4"
    hy = {r["row"]: r for r in read("slides_hydra_table.csv")}
    assert list(hy) == ["full", "bitfit", "adapterdrop_0p3m", "adapterdrop_0p9m", "lora", "hydra", "galore"]
    assert hy["hydra"]["rte"] == "87.4" and hy["hydra"]["avg"] == "87.9" and hy["galore"]["avg"] == ""
    glue = {r["row"]: r for r in read("slides_adalora_glue.csv")}
    assert len(glue) == 12 and glue["padapter_0p60m"]["cola"] == "69.48" and glue["adalora_1p27m"]["qqp_f1"] == "89.74"
    squad = {r["row"]: r for r in read("slides_adalora_squad.csv")}
    assert squad["hadapter"]["squad_v2_p065_f1"] == "88.3" and squad["full_ft"]["squad_v1_full_em"] == "86.0"


def test_declarations_expand_into_the_papers_grids():
    dy = TABLES["slides-dylora-table"]
    runs = {(r.key, r.rank) for r in dy.grid() if r.task == "rte"}
    assert runs == {*(("lora", b) for b in range(1, 9)), ("dylora", 8), ("dylora_frozen", 8), ("full_ft", None)}
    row = next(r for r in dy.rows if r.key == "r3_dylora_frozen")
    assert row.reads == "best_metrics_by_rank.3" and dy.filters(row, dy.cols[0])["config.method.frozen"] is True
    hy = TABLES["slides-hydra-table"]
    assert {r.key for r in hy.grid() if r.task == "rte"} == {"full_ft", "bitfit", "lora", "hydra", "galore"}
    assert [r.note for r in hy.rows if r.key.startswith("adapterdrop")] == ["not implemented in this project"] * 2
    glue = TABLES["slides-adalora-glue"]
    sizes = {r.key: r.overrides for r in glue.grid() if r.task == "rte"}
    assert sizes["hadapter_m32"] == ("method=hadapter", "method.bottleneck=32")
    assert sizes["adalora_r4"] == ("method=adalora", "sparsifier=adalora", "method.init_rank=8")
    # AdaLoRA's scripts start CoLA and MNLI at rank 3, the other tasks at 2 (target rank 1)
    inits = {(r.task, r.key): r.overrides[-1] for r in glue.grid() if r.key.startswith("adalora")}
    assert inits[("rte", "adalora_r1")] == "method.init_rank=2" and inits[("cola", "adalora_r1")] == "method.init_rank=3"
    assert inits[("mnli", "adalora_r1")] == "method.init_rank=3" and inits[("mnli", "adalora_r4")] == "method.init_rank=12"
    row = next(r for r in glue.rows if r.key == "adalora_0p32m")
    mnli_m = next(c for c in glue.cols if c.key == "mnli_m")
    assert glue.filters(row, mnli_m)["config.method.init_rank"] == 3
    assert glue.filters(row, glue.cols[0])["config.method.init_rank"] == [2, 3]   # # Params: either
    squad = TABLES["slides-adalora-squad"]
    grid = [(r.key, r.rank) for r in squad.grid() if r.task == "squad_v2"]
    assert [g for g in grid if g[0] == "lora"] == [("lora", r) for r in (1, 2, 4, 8)]
    assert {g[0] for g in grid} >= {"padapter_m8", "padapter_m64", "hadapter_m4", "hadapter_m32", "full_ft"}


def test_scaled_down_dylora_table_fills_every_rank_from_one_model(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    res = subprocess.run(["make", "--no-print-directory", "-o", ".make/installed", f"PYTHON={sys.executable}",
                          f"DATA_DIR={DATA}", "slides-dylora-table", "MODEL=tiny_roberta", "SEEDS=1",
                          "TASKS=rte", "METHODS=dylora", "SAMPLES=16", "STEPS=2", f"RUNS={runs}", f"OUT={out}",
                          "EXTRA=logger=disabled trainer.save_adapters=false"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    files = sorted((runs / "slides-dylora-table").rglob("results.json"))
    assert len(files) == 2 and all(json.loads(f.read_text())["status"] == "completed" for f in files)
    dylora = json.loads(next(f for f in files if "/dylora_r8/" in f.as_posix()).read_text())
    assert set(dylora["best_metrics_by_rank"]) == {str(b) for b in range(1, 9)}
    table = (out / "slides-dylora-table.md").read_text()
    assert "rank=3 DyLoRA (Frozen)" in table and "(1)" in table
    want = 100 * dylora["best_metrics_by_rank"]["3"]["accuracy"]
    assert f"{want:.2f}" in next(line for line in table.splitlines() if line.startswith("| rank=3 DyLoRA |"))
