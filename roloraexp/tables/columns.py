"""Column builders the paper tables share: GLUE columns with each task's paper metric, task × rank
columns, WeightLoRA's Acc/F1 pairs with "ALL Avg", and the "# Params" column."""
from __future__ import annotations

from .spec import AVG, PARAMS, Col

GLUE = ("mrpc", "rte", "cola", "qnli", "mnli", "qqp", "sst2", "stsb")
# The metric a GLUE column shows, as both papers' captions say: MCC for CoLA, Pearson for STS-B,
# matched accuracy for MNLI, accuracy elsewhere (MRPC/QQP too, unless F1 is asked for).
GLUE_METRIC = {"cola": "mcc", "stsb": "pearson", "mnli": "matched_accuracy"}
LABEL = {"mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "qnli": "QNLI", "mnli": "MNLI", "qqp": "QQP",
         "sst2": "SST-2", "stsb": "STS-B", "squad_v1": "SQuADv1", "squad_v2": "SQuADv2", "xsum": "XSum",
         "cnn_dm": "CNN/DM"}
PARAMS_COL = Col("params", "# Params", PARAMS, scale=1.0)


def glue_col(task: str, *, metric: str | None = None, key: str | None = None, label: str | None = None,
             rank: int | None = None) -> Col:
    return Col(key or task, label or LABEL[task], metric or GLUE_METRIC.get(task, "accuracy"), task, rank, group=task)


def glue_cols(tasks, rank: int | None = None, prefix: str = "", label_prefix: str = "") -> tuple[Col, ...]:
    return tuple(glue_col(t, key=prefix + t, label=label_prefix + LABEL[t], rank=rank) for t in tasks)


def percent_cols(tasks, ranks, metric: str) -> tuple[Col, ...]:
    """Task × rank columns of a metric that is already in percent (SQuAD EM/F1, ROUGE)."""
    return tuple(Col(f"{t}_r{r}", f"{LABEL[t]} r={r}", metric, t, r, scale=1.0, group=t) for t in tasks for r in ranks)


def acc_f1_cols(tasks, with_f1=("qqp", "mrpc"), avg: bool = True) -> tuple[Col, ...]:
    """GLUE columns with QQP and MRPC as Acc and F1, then the paper's ALL Avg (WeightLoRA's layout)."""
    cols = []
    for t in tasks:
        if t in with_f1:
            cols += [glue_col(t, key=f"{t}_acc", label=f"{LABEL[t]} Acc"),
                     glue_col(t, metric="f1", key=f"{t}_f1", label=f"{LABEL[t]} F1")]
        else:
            cols.append(glue_col(t))
    return (*cols, *([Col("avg", "ALL Avg", AVG)] if avg else []))
