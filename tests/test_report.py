"""The report on hand-made results.json files, the published tables, and the figures (CPU, fast)."""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import types

import pandas as pd
import pytest

from roloraexp import heatmaps
from roloraexp.reporting import aggregate, figures, report
from roloraexp.tables import TABLES


def write_run(root, name, *, task="mrpc", method="lora", seed=1, value=0.9, final=None, metric="accuracy",
              status="completed", rank=8, mtime=None, **extra):
    """One results.json as a run writes it (GLUE metrics as fractions)."""
    data = {"status": status, "task": task, "method": method, "model": "roberta_base", "seed": seed,
            "table": "rolora-table1", "config": {"method": {"name": method, "rank": rank}, "sparsifier": {"name": "none"}},
            "trainable_params": 1000, "peak_memory_bytes": None, **extra}
    if status == "completed":
        data["best_metrics"] = {metric: value, "main": value}
        data["metrics"] = {metric: final if final is not None else value, "main": value}
    path = root / name / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def runs(tmp_path):
    """LoRA† cells of ROLoRA Table 1: MRPC complete; RTE with a failed and a missing seed;
    CoLA with a duplicate seed; plus a corrupt file and a partial one that must not be used."""
    root = tmp_path / "runs"
    for seed, v in enumerate([0.88, 0.89, 0.90, 0.91, 0.92], start=1):
        write_run(root, f"mrpc{seed}", seed=seed, value=v, final=v - 0.05)
    for seed, v in zip([1, 2, 3], [0.70, 0.75, 0.80]):
        write_run(root, f"rte{seed}", task="rte", seed=seed, value=v)
    write_run(root, "rte4", task="rte", seed=4, status="failed", error="RuntimeError: CUDA out of memory")
    for seed, v in enumerate([0.60, 0.62, 0.64, 0.66, 0.68], start=1):
        write_run(root, f"cola{seed}", task="cola", metric="mcc", seed=seed, value=v, mtime=1_000_000 + seed)
    write_run(root, "cola2_old", task="cola", metric="mcc", seed=2, value=0.10, mtime=1_000)  # older rerun: ignored
    (root / "corrupt").mkdir()
    (root / "corrupt" / "results.json").write_text('{"status": "completed", "task": "mrpc", "metr')
    partial = {"status": "completed", "task": "mrpc", "method": "lora", "model": "roberta_base", "seed": 6,
               "metrics": {"accuracy": 0.0}}  # no best_metrics: a run that died while writing
    (root / "partial").mkdir()
    (root / "partial" / "results.json").write_text(json.dumps(partial))
    (root / "notes.json").write_text("{}")  # not a results.json: never read
    return root


def cell(df, row, col):
    return df[(df["row"] == row) & (df["col"] == col)].iloc[0]


def test_means_stds_counts_and_marks(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main(["rolora-table1", str(runs), "--out", str(out)]) == 0
    df = pd.read_csv(out / "rolora-table1.csv")

    mrpc = cell(df, "lora", "mrpc")  # best_metrics, ×100, sample std (ddof = 1)
    assert mrpc["mean"] == pytest.approx(90.0)
    assert mrpc["std"] == pytest.approx(statistics.stdev([88, 89, 90, 91, 92]))  # 1.5811
    assert (mrpc["n"], mrpc["n_failed"], bool(mrpc["mark"])) == (5, 0, False)
    assert mrpc["published"] == pytest.approx(89.90) and mrpc["published_std"] == pytest.approx(0.73)
    assert mrpc["diff"] == pytest.approx(0.10)

    rte = cell(df, "lora", "rte")  # 3 completed, 1 failed, 1 missing
    assert rte["mean"] == pytest.approx(75.0) and rte["std"] == pytest.approx(5.0)
    assert (rte["n"], rte["n_failed"], bool(rte["mark"])) == (3, 1, True)

    cola = cell(df, "lora", "cola")  # the newer of two seed-2 files wins; the old 0.10 is not used
    assert cola["mean"] == pytest.approx(64.0) and cola["n"] == 5

    qnli = cell(df, "lora", "qnli")
    assert qnli["n"] == 0 and bool(qnli["mark"]) and math.isnan(qnli["mean"])

    md = (out / "rolora-table1.md").read_text()
    assert "90.00 ± 1.58 (5)<br>*paper 89.90 ± 0.73, Δ +0.10*" in md
    assert "75.00 ± 5.00 (3/5)‡" in md and "— (0/5)‡" in md
    assert "‡ (n/5)" in md and "ddof = 1" in md
    assert "rte, seed 4: RuntimeError: CUDA out of memory" in md
    assert "## Duplicate runs" in md and "cola2_old" in md
    skipped = md.split("## Skipped files")[1]
    assert "corrupt/results.json" in skipped and "unreadable JSON" in skipped
    assert "partial/results.json" in skipped and "missing keys: best_metrics" in skipped
    assert "notes.json" not in md
    err = capsys.readouterr().err
    assert "skipped" in err and "corrupt/results.json" in err and "partial/results.json" in err
    assert "failed seed 4 of lora / rte" in err and "CUDA out of memory" in err
    assert "duplicate runs of lora / cola seed 2" in err and "cola2_old" in err
    tex = (out / "rolora-table1.tex").read_text()
    assert r"\begin{tabular}" in tex and r"90.00 $\pm$ 1.58 (5)" in tex and r"(3/5)$^\ddagger$" in tex


def test_final_flag_uses_metrics(runs, tmp_path):
    report.main(["rolora-table1", str(runs), "--out", str(tmp_path), "--final"])
    df = pd.read_csv(tmp_path / "rolora-table1.csv")
    assert cell(df, "lora", "mrpc")["mean"] == pytest.approx(85.0)
    assert "final evaluation (`metrics`, --final)" in (tmp_path / "rolora-table1.md").read_text()


def test_seeds_flag_and_strict(runs, tmp_path):
    assert report.main(["rolora-table1", str(runs), "--out", str(tmp_path), "--seeds", "3"]) == 0
    df = pd.read_csv(tmp_path / "rolora-table1.csv")
    assert not bool(cell(df, "lora", "mrpc")["mark"])
    assert bool(cell(df, "lora", "rte")["mark"])  # 3 seeds but one failed: still marked
    assert report.main(["rolora-table1", str(runs), "--out", str(tmp_path), "--strict"]) == 1


def test_metric_missing_from_a_completed_run_is_a_failed_seed(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "a", seed=1, value=0.9)
    write_run(root, "b", seed=2, value=0.8, metric="f1")  # no "accuracy" in best_metrics
    runs, skipped = aggregate.load_runs([root])
    df, failed = aggregate.summarize(TABLES["rolora-table1"], aggregate.fill(TABLES["rolora-table1"], runs), 5, False)
    c = cell(df, "lora", "mrpc")
    assert (c["n"], c["n_failed"], c["mean"]) == (1, 1, pytest.approx(90.0)) and math.isnan(c["std"])
    assert failed[0][2] == 2 and "no numeric 'accuracy' in best_metrics" in failed[0][4]


def test_filters_and_table_tags(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "r8", seed=1, value=0.9)
    write_run(root, "r4_other_table", seed=2, value=0.1, rank=4, table="rolora-table3")
    write_run(root, "r4_untagged", seed=3, value=0.1, rank=4, table=None)
    write_run(root, "deberta", seed=4, value=0.1, model="deberta_v3_base")
    runs, _ = aggregate.load_runs([root])
    filled = aggregate.fill(TABLES["rolora-table1"], runs)
    assert [r.data["seed"] for r in filled.cells[("lora", "mrpc")]] == [1]
    assert [r.data["seed"] for r in filled.unmatched] == [3]  # rank 4 fits no column of table 1
    t3 = aggregate.fill(TABLES["rolora-table3"], runs)
    assert [r.data["seed"] for r in t3.cells[("lora", "r4_mrpc")]] == [2, 3]
    assert [r.data["seed"] for r in aggregate.fill(TABLES["rolora-table1"], runs, model="deberta_v3_base")
            .cells[("lora", "mrpc")]] == [4]
    # "a|b" paths: an AdaLoRA run that names its target rank separately counts at R = 8.
    write_run(root, "ada", method="adalora", seed=5, rank=12, config={"method": {"rank": 12, "target_rank": 8}})
    runs, _ = aggregate.load_runs([root])
    assert ("adalora", "mrpc") in aggregate.fill(TABLES["rolora-table1"], runs).cells


def test_weightlora_scale_avg_params_and_figures(tmp_path):
    root = tmp_path / "runs"
    names = [f"deberta.encoder.layer.{i}.attention.self.{m}_proj" for i in range(2) for m in ("query", "key", "value")]
    tasks = {"mnli": {"matched_accuracy": 0.80}, "sst2": {"accuracy": 0.90}, "cola": {"mcc": 0.60},
             "qqp": {"accuracy": 0.90, "f1": 0.80}, "qnli": {"accuracy": 0.90}, "rte": {"accuracy": 0.70},
             "mrpc": {"accuracy": 0.80, "f1": 0.90}}
    for task, m in tasks.items():
        for seed in (1, 2):
            path = root / task / str(seed) / "results.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({
                "status": "completed", "task": task, "method": "weightlora", "model": "deberta_v3_base", "seed": seed,
                "table": "weightlora-table1", "metrics": m, "best_metrics": m, "trainable_params": 12_300,
                "config": {"method": {"rank": 8, "k": 1}}, "omega": {n: float(i == 2) for i, n in enumerate(names)},
                "ranks": {n: 8 * (i == 2) for i, n in enumerate(names)}, "active_adapters": 1,
                "peak_memory_bytes": 3 * 2**30}))
    assert report.main(["weightlora-table1", str(root), "--out", str(tmp_path / "out"), "--seeds", "2"]) == 0
    df = pd.read_csv(tmp_path / "out" / "weightlora-table1.csv")
    mnli = cell(df, "wlora_k1", "mnli")
    assert mnli["mean"] == pytest.approx(80.0) and mnli["published"] == pytest.approx(79.12)  # paper 0.7912 ×100
    avg = cell(df, "wlora_k1", "avg")  # QQP and MRPC count once each, as the mean of Acc and F1
    assert avg["mean"] == pytest.approx((80 + 90 + 60 + 85 + 90 + 70 + 85) / 7)
    assert avg["published"] == pytest.approx(78.62) and avg["n"] == 2
    assert math.isnan(cell(df, "lora", "avg")["mean"])
    md = (tmp_path / "out" / "weightlora-table1.md").read_text()
    assert "12.3K<br>*paper 12.3K (0.007%)*" in md
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["weightlora-table1_memory.png"] + [f"weightlora-table1_omega_wlora_k1_{t}.png" for t in sorted(tasks)]


def test_rolora_table4_reads_best_ranks_and_falls_back_to_ranks(tmp_path):
    """Table 4 reports the ranks at each run's best evaluation (`best_ranks`, like the metrics);
    a results.json written before `best_ranks` existed gives its final `ranks`; --final uses `ranks`."""
    root = tmp_path / "runs"
    names = [f"roberta.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]
    rolora = {"method": {"name": "rolora", "rank": 8}, "sparsifier": {"name": "adalora"}}
    for seed, final, best in ((1, [8, 8, 8, 8], [2, 4, 6, 8]), (2, [3, 3, 3, 3], [1, 1, 1, 1]), (3, [4, 4, 6, 6], None)):
        write_run(root, f"s{seed}", method="rolora", seed=seed, config=rolora, ranks=dict(zip(names, final)),
                  **({"best_ranks": dict(zip(names, best))} if best else {}))
    for flag, expected in (([], [5, 1, 5]), (["--final"], [8, 3, 5])):
        out = tmp_path / ("final" if flag else "best")
        assert report.main(["rolora-table4", str(root), "--out", str(out), "--seeds", "3", *flag]) == 0
        mrpc = cell(pd.read_csv(out / "rolora-table4.csv"), "rolora", "mrpc")
        assert (mrpc["mean"], mrpc["n"]) == (pytest.approx(statistics.mean(expected)), 3)
        assert mrpc["published"] == pytest.approx(5.5)
        assert _is_png(out / "rolora-table4_ranks_rolora_mrpc.png")
    assert "`best_ranks` (the ranks at the best evaluation" in (tmp_path / "best" / "rolora-table4.md").read_text()


def test_weightlora_table1_adalora_as_run_row(tmp_path):
    """AdaLoRA run with method.allocate=false fills "AdaLoRA (as run: no allocation)", compared with the
    paper's AdaLoRA numbers; ordinary AdaLoRA runs (allocate true, or files from before the option)
    fill the AdaLoRA row; neither fills the other."""
    root = tmp_path / "runs"
    common = dict(task="mnli", method="adalora", model="deberta_v3_base", table="weightlora-table1",
                  metric="matched_accuracy")
    for name, seed, value, allocate in (("as_run", 1, 0.80, False), ("allocating", 1, 0.85, True),
                                        ("older", 2, 0.87, None)):
        method = {"name": "adalora", "rank": 8, **({} if allocate is None else {"allocate": allocate})}
        write_run(root, name, seed=seed, value=value, config={"method": method}, **common)
    runs, _ = aggregate.load_runs([root])
    table = TABLES["weightlora-table1"]
    filled = aggregate.fill(table, runs)
    assert [r.path.parent.name for r in filled.cells[("adalora_as_run", "mnli")]] == ["as_run"]
    assert sorted(r.path.parent.name for r in filled.cells[("adalora", "mnli")]) == ["allocating", "older"]
    df, _ = aggregate.summarize(table, filled, 5, False)
    as_run, ada = cell(df, "adalora_as_run", "mnli"), cell(df, "adalora", "mnli")
    assert as_run["mean"] == pytest.approx(80.0) and ada["mean"] == pytest.approx(86.0)
    assert as_run["published"] == ada["published"] == pytest.approx(83.90)
    assert list(df[df["col"] == "mnli"]["row"][:5]) == ["full_ft", "lora", "adalora", "adalora_as_run", "increlora"]
    # Rows this project does not run: empty, not marked as missing seeds, and said why.
    increlora = cell(df, "increlora", "mnli")
    assert increlora["n"] == 0 and not increlora["mark"] and increlora["note"]


def test_a_row_reads_one_rank_of_a_run_and_extra_rows_have_no_paper_value(tmp_path):
    """A DyLoRA-style row scores one model at several ranks: rows r=1 and r=2 read
    `metrics_by_rank[r]` of the same run (trained at rank 2), beside LoRA trained at each rank;
    a row the paper does not print (`extra`) needs no CSV row and shows no paper value."""
    from roloraexp.tables.columns import glue_cols
    from roloraexp.tables.spec import Row, Table

    table = Table("demo-dylora", "Demo", "demo.csv", "roberta_base", "rolora/roberta_base/{task}",
                  (*(Row(f"r{r}_lora", f"LoRA r={r}", run="lora", rank=r) for r in (1, 2)),
                   *(Row(f"r{r}_dylora", f"DyLoRA r={r}", run="dylora", rank=2, reads=f"metrics_by_rank.{r}")
                     for r in (1, 2)),
                   Row("extra_lora", "LoRA (ours)", run="lora", rank=2, extra=True)),
                  glue_cols(["rte"]), seeds=1)
    assert [(g.key, g.rank) for g in table.grid()] == [("lora", 1), ("lora", 2), ("dylora", 2)]
    (tmp_path / "demo.csv").write_text("row,label,rte\nr1_lora,LoRA r=1,50.0\nr2_lora,LoRA r=2,60.0\n"
                                       "r1_dylora,DyLoRA r=1,70.0\nr2_dylora,DyLoRA r=2,80.0\n")
    root = tmp_path / "runs"
    write_run(root, "lora1", task="rte", rank=1, value=0.61, table="demo-dylora")
    write_run(root, "lora2", task="rte", rank=2, value=0.62, table="demo-dylora")
    write_run(root, "dylora", task="rte", method="dylora", rank=2, value=0.99, table="demo-dylora",
              metrics_by_rank={"1": {"accuracy": 0.71}, "2": {"accuracy": 0.72}})
    runs, _ = aggregate.load_runs([root])
    df, failed = aggregate.summarize(table, aggregate.fill(table, runs), 1, False, published_dir=tmp_path)
    means = {r: cell(df, r, "rte")["mean"] for r in ("r1_lora", "r2_lora", "r1_dylora", "r2_dylora", "extra_lora")}
    assert means == pytest.approx({"r1_lora": 61.0, "r2_lora": 62.0, "r1_dylora": 71.0, "r2_dylora": 72.0,
                                   "extra_lora": 62.0})
    assert cell(df, "r2_dylora", "rte")["published"] == 80.0 and math.isnan(cell(df, "extra_lora", "rte")["published"])
    assert not failed


def test_all_builds_only_tables_with_results(runs, tmp_path, capsys):
    assert report.main(["--all", str(runs), "--out", str(tmp_path)]) == 0
    built = sorted(p.stem for p in tmp_path.glob("*.md"))
    # Tables 4 (mean rank) and 5 reuse Table 1's runs; these runs have no `ranks`, which Table 4 says.
    assert built == ["rolora-table1", "rolora-table4", "rolora-table5"]
    assert "no numeric 'ranks'" in (tmp_path / "rolora-table4.md").read_text()
    (tmp_path / "empty").mkdir()
    assert report.main(["--all", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit):
        report.main(["no-such-table", str(tmp_path)])
    with pytest.raises(SystemExit):
        report.main(["rolora-table1", str(tmp_path / "missing")])


def test_wandb_upload_is_lazy_and_logs_tables(runs, tmp_path, monkeypatch):
    logged, inits = {}, []

    class FakeRun:
        def log(self, d):
            logged.update(d)

        def finish(self):
            logged["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kw: inits.append(kw) or FakeRun(),
                                 Table=lambda dataframe: ("table", len(dataframe)), Image=lambda p: ("image", p))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert report.main(["rolora-table1", str(runs), "--out", str(tmp_path), "--wandb"]) == 0
    assert inits[0]["project"] == "roloraexp" and inits[0]["job_type"] == "report"
    assert logged["rolora-table1"] == ("table", 40) and logged["finished"]


# ---------------------------------------------------------------- published tables

# Rows × columns of each paper table (WeightLoRA: QQP and MRPC as Acc and F1, "# Params", "ALL Avg").
SHAPES = {"rolora-table1": (5, 8), "rolora-table2": (5, 8), "rolora-table3": (5, 6), "rolora-table4": (2, 8),
          "rolora-table5": (4, 4), "rolora-table6": (5, 4), "weightlora-table1": (12, 11),
          "weightlora-table2": (12, 11), "weightlora-table3": (12, 12), "weightlora-table4": (3, 8),
          "weightlora-table5": (3, 8), "weightlora-table6": (6, 10)}
UNREADABLE = {("rolora-table1", "stsb")}  # see results/published/README.md


@pytest.mark.parametrize("table_id", sorted(TABLES))
def test_every_published_file_loads_in_the_declarations_order(table_id):
    table = TABLES[table_id]
    pub = aggregate.load_published(table)
    published = [k for k in dict.fromkeys(r.published or r.key for r in table.rows if not r.extra)]
    assert [r for r in pub.index if r in published] == published
    assert table_id in SHAPES or table_id.startswith("slides-")  # slides: tests/test_slides2_tables.py


def test_a_published_file_with_a_row_the_declaration_lacks_is_refused(tmp_path):
    table = TABLES["rolora-table1"]
    df = pd.read_csv(aggregate.PUBLISHED_DIR / table.published, dtype={"row": str})
    df = pd.concat([df, df.iloc[[0]].assign(row="stray")])
    df.to_csv(tmp_path / table.published, index=False)
    with pytest.raises(ValueError, match="do not match the declaration"):
        aggregate.load_published(table, tmp_path)
    df.iloc[:-2].to_csv(tmp_path / table.published, index=False)  # a published row missing
    with pytest.raises(ValueError, match="do not match the declaration"):
        aggregate.load_published(table, tmp_path)


@pytest.mark.parametrize("table_id", sorted(SHAPES))
def test_published_file_parses_and_has_the_papers_shape(table_id):
    table = TABLES[table_id]
    pub = aggregate.load_published(table)  # raises if rows/columns disagree with the spec
    assert (len(pub), len(table.cols)) == SHAPES[table_id]
    for col in table.cols:
        if col.metric == "trainable_params":
            assert pub["params"].map(lambda s: isinstance(s, str) and s != "").all()
            continue
        values = pd.to_numeric(pub[col.key], errors="raise")
        if (table_id, col.key) in UNREADABLE:
            assert values.isna().all()
        else:
            assert values.notna().all(), f"{table_id} {col.key} has empty cells"
            hi = 1.0 if table.published_scale == 100 else 100.0
            assert ((values >= 0) & (values <= hi)).all()
        if f"{col.key}_std" in pub:
            assert pd.to_numeric(pub[f"{col.key}_std"]).dropna().between(0, 5).all()


def test_published_values_spot_checks_and_repeats():
    t1 = aggregate.load_published(TABLES["rolora-table1"])
    assert (t1.loc["lora", "mrpc"], t1.loc["lora", "mrpc_std"], t1.loc["rolora", "cola_std"]) == (89.90, 0.73, 1.20)
    assert aggregate.load_published(TABLES["weightlora-table3"]).loc["r8_wlora_plus", "stsb"] == 0.9854
    # Rows the papers print twice must agree: ROLoRA Table 5 ⊂ Table 1, WeightLoRA Table 6 ⊃ Table 1's WLoRA.
    t5 = aggregate.load_published(TABLES["rolora-table5"])
    for row5, row1 in (("lora", "lora"), ("lora_iter", "lora_iter"), ("rolora_adalora", "rolora")):
        for c in ("mrpc", "rte", "cola", "sst2", "mrpc_std", "sst2_std"):
            assert t5.loc[row5, c] == t1.loc[row1, c]
    wl1, wl6 = (aggregate.load_published(TABLES[t]) for t in ("weightlora-table1", "weightlora-table6"))
    for k in (1, 5, 10):
        assert (wl6.loc[f"k{k}_wlora", wl6.columns[1:]] == wl1.loc[f"wlora_k{k}", wl6.columns[1:]]).all()


# ---------------------------------------------------------------- figures

@pytest.mark.parametrize("name, expected", [
    ("roberta.encoder.layer.3.attention.self.value", ("encoder", 3, "v")),
    ("base_model.model.model.layers.11.self_attn.q_proj", ("", 11, "q")),
    ("deberta.encoder.layer.0.attention.self.key_proj", ("encoder", 0, "k")),
    ("model.decoder.layers.2.encoder_attn.v_proj", ("decoder", 2, "xv")),
    ("roberta.encoder.layer.5.attention.output.dense", ("encoder", 5, "o")),
    ("roberta.encoder.layer.5.output.dense", ("encoder", 5, "ffn_out")),
    ("classifier.dense", ("", -1, "dense")),
])
def test_parse_adapter_name(name, expected):
    assert heatmaps.parse_adapter_name(name) == expected


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_functions_write_pngs(tmp_path):
    names = [f"roberta.encoder.layer.{i}.attention.self.{m}" for i in range(3) for m in ("query", "value")]
    runs = [{"method": "rolora", "task": "cola", "ranks": {n: i + s for i, n in enumerate(names)},
             "omega": {n: float(i % 2) for i, n in enumerate(names)}, "active_adapters": 3 + s,
             "peak_memory_bytes": (1 + s) * 2**30} for s in range(2)]
    assert _is_png(figures.rank_distribution(runs, tmp_path / "ranks.png"))
    assert _is_png(figures.rank_distribution(runs[0], tmp_path / "ranks1.png"))
    assert _is_png(figures.omega_per_adapter(runs, tmp_path / "omega.png"))
    assert _is_png(figures.memory_vs_active(runs, tmp_path / "memory.png"))
    assert _is_png(figures.grad_norm_per_layer({n: 0.1 * i for i, n in enumerate(names)}, tmp_path / "g.png"))
    with pytest.raises(ValueError):
        figures.memory_vs_active([{"peak_memory_bytes": None, "active_adapters": 3}], tmp_path / "none.png")
    (tmp_path / "results.json").write_text(json.dumps({"status": "completed", "model": "m", "seed": 1, "metrics": {},
                                                       "best_metrics": {}, **runs[0]}))
    assert figures.main(["ranks", str(tmp_path / "results.json"), str(tmp_path / "cli.png")]) == 0
    assert _is_png(tmp_path / "cli.png")


def test_provenance_is_shown_and_mixed_versions_are_flagged(tmp_path, capsys):
    root = tmp_path / "runs"
    prov = {"versions": {"torch": "2.13.0", "transformers": "5.23.0"}, "git_commit": "a" * 40, "git_dirty": False,
            "device": "NVIDIA H100"}
    for seed in (1, 2):
        write_run(root, f"same{seed}", seed=seed, value=0.9, provenance=prov)
    out = tmp_path / "out"
    assert report.main(["rolora-table1", str(root), "--out", str(out)]) == 0
    md = (out / "rolora-table1.md").read_text()
    assert "## Provenance" in md and "transformers: 5.23.0 (2 runs)" in md and "commit: aaaaaaaaaa (2 runs)" in md
    assert "Warning" not in md

    write_run(root, "newer3", seed=3, value=0.9, provenance={**prov, "versions": {"torch": "2.13.0",
                                                                                  "transformers": "5.24.0"}})
    assert report.main(["rolora-table1", str(root), "--out", str(out)]) == 0
    md = (out / "rolora-table1.md").read_text()
    assert "**Warning:** the cells mix transformers (5.23.0, 5.24.0)" in md
    assert "the cells mix transformers (5.23.0, 5.24.0)" in capsys.readouterr().err
