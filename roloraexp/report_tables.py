"""The paper tables as data: which runs fill which cell, and where the published numbers are.

A table is rows × columns. A run (one ``results.json``) fills the cell whose filters all hold:
the table's ``where`` ∧ the row's ``where`` ∧ the column's ``where``. A filter maps a dotted path
into results.json to a value: ``{"method": "lora", "config.method.rank": 8}``; a list value
means "any of"; a path ``"a|b"`` reads the first of ``a``, ``b`` that exists (so one filter
covers methods that name a setting differently). A missing path never matches.

Runs are also matched on their ``table`` tag (set by the Makefile targets): a tagged run only
counts in its own table and in the tables that list its tag in ``accept``; an untagged run
counts wherever the filters hold.

Adding a table = one ``Table(...)`` in ``TABLES`` + one CSV in ``results/published/`` whose
value columns are the ``Col`` keys (``<key>_std`` for a published std). For example::

    Table("mypaper-table1", "My GLUE table", "mypaper_table1.csv",
          where={"model": "roberta_base"},
          rows=[Row("lora", "LoRA", {"method": "lora"})],
          cols=glue_cols(["rte", "mrpc"], where={RANK: 8}))
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Which rank a run was given. AdaLoRA-style methods start above the target: prefer their
# target rank (the R a paper's table means) when the method names one.
RANK = "config.method.target_rank|config.method.target_r|config.method.rank"
K = "config.method.k"
SPARSIFIER = "config.sparsifier.name"

GLUE = ("mrpc", "rte", "cola", "qnli", "mnli", "qqp", "sst2", "stsb")
# The metric a GLUE column shows, as both papers' captions say: MCC for CoLA, Pearson for STS-B,
# matched accuracy for MNLI, accuracy elsewhere (MRPC/QQP too, unless F1 is asked for).
GLUE_METRIC = {"cola": "mcc", "stsb": "pearson", "mnli": "matched_accuracy"}
GLUE_LABEL = {"mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "qnli": "QNLI", "mnli": "MNLI",
              "qqp": "QQP", "sst2": "SST-2", "stsb": "STS-B", "squad_v1": "SQuADv1",
              "squad_v2": "SQuADv2", "xsum": "XSum", "cnn_dm": "CNN/DM"}

# Derived "metrics" the report computes from other keys of results.json.
MEAN_RANK = "mean_rank"            # mean of `ranks` over adapters (0 = disconnected counts)
PARAMS = "trainable_params"        # shown beside the paper's "# Params" text, never compared
AVG = "avg"                        # the paper's "ALL Avg": mean over tasks of the row's cells


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    where: dict = field(default_factory=dict)
    published: str | None = None   # row key in the published CSV when it differs from `key`


@dataclass(frozen=True)
class Col:
    key: str
    label: str
    metric: str                    # key of best_metrics / metrics, or MEAN_RANK / PARAMS / AVG
    where: dict = field(default_factory=dict)
    scale: float = 100.0           # GLUE metrics are fractions in results.json; papers print %
    group: str | None = None       # AVG averages a group's columns first (QQP Acc/F1 → one task)


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    published: str                 # CSV file name in results/published/
    where: dict
    rows: list[Row]
    cols: list[Col]
    published_scale: float = 1.0   # ×100 where the paper prints fractions (WeightLoRA GLUE)
    accept: tuple[str, ...] = ()   # other `table` tags whose runs also count here
    seeds: int = 5                 # seeds per cell in the paper (the --seeds default)
    figures: tuple[str, ...] = ()  # "ranks", "omega": per-cell figures the report draws


def glue_col(task: str, *, metric: str | None = None, key: str | None = None, label: str | None = None,
             where: dict | None = None) -> Col:
    metric = metric or GLUE_METRIC.get(task, "accuracy")
    return Col(key or task, label or GLUE_LABEL[task], metric, {"task": task, **(where or {})}, 100.0, task)


def glue_cols(tasks, where: dict | None = None, prefix: str = "", label_prefix: str = "") -> list[Col]:
    return [glue_col(t, key=prefix + t, label=label_prefix + GLUE_LABEL[t], where=where) for t in tasks]


def percent_cols(tasks, ranks, metric: str, rank_key: str = RANK) -> list[Col]:
    """Task × rank columns of a metric that is already in percent (SQuAD EM/F1, ROUGE)."""
    return [Col(f"{t}_r{r}", f"{GLUE_LABEL[t]} r={r}", metric, {"task": t, rank_key: r}, 1.0, t)
            for t in tasks for r in ranks]


# WeightLoRA's GLUE columns: QQP and MRPC as Acc and F1, then the paper's ALL Avg.
WL_TASKS = ("mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc")


def wl_glue_cols(with_stsb: bool = False) -> list[Col]:
    cols = []
    for t in WL_TASKS:
        if t in ("qqp", "mrpc"):
            cols += [glue_col(t, key=f"{t}_acc", label=f"{GLUE_LABEL[t]} Acc"),
                     glue_col(t, metric="f1", key=f"{t}_f1", label=f"{GLUE_LABEL[t]} F1")]
        else:
            cols.append(glue_col(t))
    if with_stsb:
        cols.append(glue_col("stsb"))
    return cols + [Col("avg", "ALL Avg", AVG)]


PARAMS_COL = Col("params", "# Params", PARAMS, scale=1.0)

ROLORA_ROWS = [
    Row("lora", "LoRA†", {"method": "lora"}),
    Row("lora_iter", "LoRA*", {"method": "lora_iter"}),
    Row("adalora", "AdaLoRA†", {"method": "adalora"}),
    Row("adalora_iter", "AdaLoRA*", {"method": "adalora_iter"}),
    Row("rolora", "ROLoRA", {"method": "rolora", SPARSIFIER: "adalora"}),
]
ROLORA_GLUE = ("mrpc", "rte", "cola", "qnli", "mnli", "qqp", "sst2", "stsb")


def wl_rank_rows(ranks, k: int) -> list[Row]:
    rows = []
    for r in ranks:
        rows += [Row(f"r{r}_lora", f"r={r} LoRA", {"method": "lora", RANK: r}),
                 Row(f"r{r}_wlora", f"r={r} WLoRA k={k}", {"method": "weightlora", RANK: r, K: k}),
                 Row(f"r{r}_wlora_plus", f"r={r} WLoRA+", {"method": "weightlora_plus", RANK: r})]
    return rows


TABLES: dict[str, Table] = {t.id: t for t in [
    Table("rolora-table1", "ROLoRA Table 1: RoBERTa-base on GLUE, R = 8", "rolora_table1.csv",
          {"model": "roberta_base"}, ROLORA_ROWS, glue_cols(ROLORA_GLUE, {RANK: 8})),
    Table("rolora-table2", "ROLoRA Table 2: DeBERTa-v3-base on GLUE, R = 8", "rolora_table2.csv",
          {"model": "deberta_v3_base"}, ROLORA_ROWS, glue_cols(ROLORA_GLUE, {RANK: 8})),
    Table("rolora-table3", "ROLoRA Table 3: RoBERTa-base, R = 16 and R = 4", "rolora_table3.csv",
          {"model": "roberta_base"}, ROLORA_ROWS,
          glue_cols(("mrpc", "rte", "cola"), {RANK: 16}, "r16_", "R=16 ")
          + glue_cols(("mrpc", "rte", "cola"), {RANK: 4}, "r4_", "R=4 ")),
    # Table 4 is about the runs of Table 1: the mean final rank of the output adapters.
    Table("rolora-table4", "ROLoRA Table 4: mean output rank, RoBERTa-base, R = 8", "rolora_table4.csv",
          {"model": "roberta_base", RANK: 8},
          [Row("lora", "LoRA", {"method": "lora"}, published="lora_adalora"),
           Row("adalora", "AdaLoRA", {"method": "adalora"}, published="lora_adalora"),
           Row("rolora", "ROLoRA", {"method": "rolora", SPARSIFIER: "adalora"})],
          [Col(t, GLUE_LABEL[t], MEAN_RANK, {"task": t}, 1.0) for t in ROLORA_GLUE],
          accept=("rolora-table1",), figures=("ranks",)),
    Table("rolora-table5", "ROLoRA Table 5: SoRA as SPARSIFY, RoBERTa-base, R = 8", "rolora_table5.csv",
          {"model": "roberta_base"},
          [Row("lora", "LoRA†", {"method": "lora"}),
           Row("lora_iter", "LoRA*", {"method": "lora_iter"}),
           Row("rolora_adalora", "ROLoRA^A (AdaLoRA)", {"method": "rolora", SPARSIFIER: "adalora"}),
           Row("rolora_sora", "ROLoRA^B (SoRA)", {"method": "rolora", SPARSIFIER: "sora"})],
          glue_cols(("mrpc", "rte", "cola", "sst2"), {RANK: 8}), accept=("rolora-table1",)),
    Table("rolora-table6", "ROLoRA Table 6: DeBERTa-v3-base on SQuAD, Exact Match", "rolora_table6.csv",
          {"model": "deberta_v3_base"}, ROLORA_ROWS,
          [Col(f"r{r}_{t}", f"R={r} {GLUE_LABEL[t]}", "exact_match", {"task": t, RANK: r}, 1.0, t)
           for r in (8, 4) for t in ("squad_v1", "squad_v2")]),

    Table("weightlora-table1", "WeightLoRA Table 1: DeBERTa-v3-base on GLUE, self-attention (n = 36)",
          "weightlora_table1.csv", {"model": "deberta_v3_base"},
          [Row("full_ft", "Full Fine-Tuning", {"method": "full_ft"}),
           Row("lora", "LoRA r=8", {"method": "lora", RANK: 8}),
           Row("adalora", "AdaLoRA", {"method": "adalora"}),
           Row("increlora", "IncreLoRA", {"method": "increlora"}),
           Row("dynamic_lora", "Dynamic LoRA", {"method": "dynamic_lora"}),
           Row("lora_drop", "LoRA-drop", {"method": "lora_drop"}),
           Row("alora", "ALoRA", {"method": "alora"}),
           Row("melora", "MELoRA", {"method": "melora"}),
           Row("flexlora", "FlexLoRA", {"method": "flexlora"})]
          + [Row(f"wlora_k{k}", f"WLoRA r=8,k={k}", {"method": "weightlora", RANK: 8, K: k}) for k in (1, 5, 10)],
          [PARAMS_COL] + wl_glue_cols(), published_scale=100.0, figures=("omega",)),
    Table("weightlora-table2", "WeightLoRA Table 2: DeBERTa-v3-base on GLUE, all attention layers (n = 72)",
          "weightlora_table2.csv", {"model": "deberta_v3_base"}, wl_rank_rows((1, 2, 4, 8), 20),
          [PARAMS_COL] + wl_glue_cols(), published_scale=100.0, figures=("omega",)),
    Table("weightlora-table3", "WeightLoRA Table 3: Llama-3-8B on GLUE (n = 224)", "weightlora_table3.csv",
          {"model": "llama3_8b"}, wl_rank_rows((1, 2, 4, 8), 100),
          [PARAMS_COL] + wl_glue_cols(with_stsb=True), published_scale=100.0, figures=("omega",)),
    Table("weightlora-table4", "WeightLoRA Table 4: DeBERTa-v3-base on SQuAD, F1", "weightlora_table4.csv",
          {"model": "deberta_v3_base"},
          [Row("lora", "LoRA", {"method": "lora"}),
           Row("wlora", "WLoRA k=20", {"method": "weightlora", K: 20}),
           Row("wlora_plus", "WLoRA+ k=15", {"method": "weightlora_plus", K: 15})],
          percent_cols(("squad_v1", "squad_v2"), (1, 2, 4, 8), "f1"), figures=("omega",)),
    Table("weightlora-table5", "WeightLoRA Table 5: BART-large on XSum and CNN/DailyMail, ROUGE-1",
          "weightlora_table5.csv", {"model": "bart_large"},
          [Row("lora", "LoRA", {"method": "lora"}),
           Row("wlora", "WLoRA k=20", {"method": "weightlora", K: 20}),
           Row("wlora_plus", "WLoRA+ k=48", {"method": "weightlora_plus", K: 48})],
          percent_cols(("xsum", "cnn_dm"), (1, 2, 4, 8), "rouge1"), figures=("omega",)),
    # The ablation reuses Table 1's WeightLoRA runs (same setting, r = 8).
    Table("weightlora-table6", "WeightLoRA Table 6: WeightLoRA vs random adapters (RLoRA), r = 8",
          "weightlora_table6.csv", {"model": "deberta_v3_base", RANK: 8},
          [Row(f"k{k}_{key}", f"K={k} {label}", {"method": method, K: k})
           for k in (1, 5, 10)
           for key, label, method in (("wlora", "WLoRA", "weightlora"), ("rlora", "RLoRA", "rlora"))],
          wl_glue_cols(), published_scale=100.0, accept=("weightlora-table1",), figures=("omega",)),
]}
