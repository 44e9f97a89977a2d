"""The slides' tables, part 2 (lowrank_methods_slides.txt): DyLoRA's and Hydra's RoBERTa-base GLUE
tables and AdaLoRA's DeBERTa-v3-base GLUE and SQuAD tables, with each paper's hyper-parameters in
conf/experiment/slides/{dylora,hydra,adalora}/ and the published numbers in
results/published/slides_*.csv (see its README for the transcription).

* ``slides-dylora-table``: one DyLoRA model per seed (and one DyLoRA (Frozen) model), r_max = 8,
  read at every rank b from ``best_metrics_by_rank.<b>`` (the ranks of the evaluation that was best
  at r_max), beside LoRA trained at each rank. The paper's MRPC column is F1. Its "Best (rank)"
  rows are the best of the rank rows per task (read them off the table); its "Fine Tune*" row
  reuses the Hydra table's full fine-tuning runs (same model and tasks).
* ``slides-hydra-table``: Full tuning, BitFit, LoRA (r = 8 on q, v: 0.3M), Hydra (0.33M), AdapterDrop
  (not implemented: empty, with a note), and GaLore (r = 4, not in the slides: its own table is LLaMA
  pre-training on C4, which this suite does not run).
* ``slides-adalora-glue``: the paper's budgets as rows: HAdapter m = 32 / 16 / 8 (1.22M / 0.61M /
  0.31M on DeBERTa-v3-base), PAdapter m = 64 / 32 / 16 (1.18M / 0.60M / 0.30M), LoRA r = 8 / 2 on all
  six matrices (1.33M / 0.33M), AdaLoRA target rank 4 from 8 and 1 from 2 (AdaLoRA's scripts: target
  1 from 2, from 3 on CoLA and MNLI, the 0.32M row; the 1.27M row scaled by 4, from 12 on CoLA and
  MNLI: an assumption).
* ``slides-adalora-squad``: budget columns 0.08 / 0.16 / 0.32 / 0.65 % (EM and F1), each row
  realising a budget its own way: LoRA r = 1 / 2 / 4 / 8, AdaLoRA target r from 2r, HAdapter
  m = 4 / 8 / 16 / 32, PAdapter m = 8 / 16 / 32 / 64 (our reading of the parameter counts). The
  adapters have no ``method.rank``, so each size is its own row (``published`` = the paper's row).
"""
from __future__ import annotations

from .columns import LABEL, PARAMS_COL, glue_col
from .spec import AVG, Col, Row, Setting, Table

GLUE8 = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")   # the slides' column order
NOT_HERE = "not implemented in this project"
FROZEN = "config.method.frozen"
BOTTLENECK = "config.method.bottleneck"
INIT_RANK = "config.method.init_rank"
ADA = ("method=adalora", "sparsifier=adalora")
FULL_FT = Row("full_ft", "Full tuning", ranked=False)
BITFIT = Row("bitfit", "BitFit", ranked=False)


def adapter_row(key: str, label: str, method: str, size: int, **kw) -> Row:
    return Row(key, label, (f"method={method}", f"method.bottleneck={size}"), run=f"{method}_m{size}", ranked=False,
               where={BOTTLENECK: size}, **kw)


def adalora_row(key: str, label: str, target: int, init: int, init_by_task: dict[str, int], **kw) -> Row:
    """AdaLoRA at a target rank, every adapter starting at ``init`` (a task's own in ``init_by_task``)."""
    inits = {t: init_by_task.get(t, init) for t in GLUE8}
    at = {t: Setting(overrides=(f"method.init_rank={i}",), where={INIT_RANK: i}) for t, i in inits.items()}
    return Row(key, label, ADA, run=f"adalora_r{target}", rank=target, where={INIT_RANK: sorted(set(inits.values()))},
               at=at, **kw)


def dylora_rows() -> tuple[Row, ...]:
    rows = []
    for b in range(1, 9):
        rows += [Row(f"r{b}_lora", f"rank={b} LoRA", run="lora", rank=b),
                 Row(f"r{b}_dylora_frozen", f"rank={b} DyLoRA (Frozen)", ("method=dylora", "method.frozen=true"),
                     run="dylora_frozen", rank=8, reads=f"best_metrics_by_rank.{b}", where={FROZEN: True}),
                 Row(f"r{b}_dylora", f"rank={b} DyLoRA", ("method=dylora", "method.frozen=false"), run="dylora",
                     rank=8, reads=f"best_metrics_by_rank.{b}", where={FROZEN: False})]
    best = "the best of the rank rows above, per task (read it off the table)"
    rows += [Row(f"best_{m}", f"Best (rank) {label}", note=best)
             for m, label in (("lora", "LoRA"), ("dylora_frozen", "DyLoRA (Frozen)"), ("dylora", "DyLoRA"))]
    return (*rows, Row("full_ft", "Fine Tune*", ranked=False, source="slides-hydra-table",
                       experiment="slides/hydra/roberta_base/{task}"))


def glue_columns(tasks, f1=()) -> tuple[Col, ...]:
    return tuple(glue_col(t, metric="f1" if t in f1 else None) for t in tasks)


BUDGETS = {"p008": "0.08%", "p016": "0.16%", "p032": "0.32%", "p065": "0.65%"}
SQUAD_SIZES = {"lora": (1, 2, 4, 8), "hadapter": (4, 8, 16, 32), "padapter": (8, 16, 32, 64)}


def squad_cols() -> tuple[Col, ...]:
    cols = []
    for t in ("squad_v1", "squad_v2"):
        for b, label in (*BUDGETS.items(), ("full", "Full FT")):
            cols += [Col(f"{t}_{b}_{m}", f"{LABEL[t]} {label} {m.upper()}", metric, t, setting=b, scale=1.0, group=t)
                     for m, metric in (("em", "exact_match"), ("f1", "f1"))]
    return tuple(cols)


def squad_rows() -> tuple[Row, ...]:
    rows = [Row("full_ft", "Full FT", ranked=False, at={"full": Setting()}),
            Row("lora", "LoRA", at={b: Setting(rank=r) for b, r in zip(BUDGETS, SQUAD_SIZES["lora"])}),
            Row("adalora", "AdaLoRA", ADA, at={b: Setting(rank=r, overrides=(f"method.init_rank={2 * r}",),
                                                          where={INIT_RANK: 2 * r})
                                               for b, r in zip(BUDGETS, SQUAD_SIZES["lora"])})]
    for method, label in (("hadapter", "HAdapter"), ("padapter", "PAdapter")):
        rows += [adapter_row(f"{method}_{b}", f"{label} ({pct})", method, m, published=method, at={b: Setting()})
                 for (b, pct), m in zip(BUDGETS.items(), SQUAD_SIZES[method])]
    return tuple(rows)


TABLES = [
    Table("slides-dylora-table", "DyLoRA (slides): RoBERTa-base on GLUE, one model scored at ranks 1..8",
          "slides_dylora_table.csv", "roberta_base", "slides/dylora/roberta_base/{task}", dylora_rows(),
          (*glue_columns(GLUE8, f1=("mrpc",)), Col("avg", "Avg", AVG))),
    Table("slides-hydra-table", "Hydra (slides): RoBERTa-base on GLUE", "slides_hydra_table.csv", "roberta_base",
          "slides/hydra/roberta_base/{task}",
          (Row("full", "Full tuning", run="full_ft", ranked=False), BITFIT,
           Row("adapterdrop_0p3m", "AdapterDrop (0.3M)", note=NOT_HERE),
           Row("adapterdrop_0p9m", "AdapterDrop (0.9M)", note=NOT_HERE),
           Row("lora", "LoRA", rank=8), Row("hydra", "Hydra", ranked=False),
           Row("galore", "GaLore (r = 4; not in the slides)", rank=4, extra=True)),
          (PARAMS_COL, *glue_columns(GLUE8), Col("avg", "Avg", AVG))),
    Table("slides-adalora-glue", "AdaLoRA (slides): DeBERTa-v3-base on GLUE", "slides_adalora_glue.csv",
          "deberta_v3_base", "slides/adalora/deberta_v3_base/{task}",
          (Row("full_ft", "Full FT", ranked=False), BITFIT,
           adapter_row("hadapter_1p22m", "HAdapter (1.22M)", "hadapter", 32),
           adapter_row("padapter_1p18m", "PAdapter (1.18M)", "padapter", 64),
           Row("lora_r8", "LoRA r=8", run="lora", rank=8),
           adalora_row("adalora_1p27m", "AdaLoRA (1.27M)", 4, 8, {"cola": 12, "mnli": 12}),
           adapter_row("hadapter_0p61m", "HAdapter (0.61M)", "hadapter", 16),
           adapter_row("padapter_0p60m", "PAdapter (0.60M)", "padapter", 32),
           adapter_row("hadapter_0p31m", "HAdapter (0.31M)", "hadapter", 8),
           adapter_row("padapter_0p30m", "PAdapter (0.30M)", "padapter", 16),
           Row("lora_r2", "LoRA r=2", run="lora", rank=2),
           adalora_row("adalora_0p32m", "AdaLoRA (0.32M)", 1, 2, {"cola": 3, "mnli": 3})),
          (PARAMS_COL, glue_col("mnli", key="mnli_m", label="MNLI m"),
           glue_col("mnli", metric="mismatched_accuracy", key="mnli_mm", label="MNLI mm"),
           *glue_columns(("sst2", "cola")), glue_col("qqp", key="qqp_acc", label="QQP Acc"),
           glue_col("qqp", metric="f1", key="qqp_f1", label="QQP F1"),
           *glue_columns(("qnli", "rte", "mrpc", "stsb")), Col("avg", "All Ave.", AVG))),
    Table("slides-adalora-squad", "AdaLoRA (slides): DeBERTa-v3-base on SQuAD v1.1 / v2.0, EM / F1 by budget",
          "slides_adalora_squad.csv", "deberta_v3_base", "slides/adalora/deberta_v3_base/{task}", squad_rows(),
          squad_cols()),
]
