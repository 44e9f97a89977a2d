"""GLUE metrics with scikit-learn / scipy (the `evaluate` metric scripts need the hub).

Same definitions as GLUE's official scorer: MCC for CoLA, accuracy + F1 (positive class 1) for
MRPC / QQP, Pearson + Spearman for STS-B, accuracy otherwise. Values are fractions (not percent).
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


def accuracy(predictions, references) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(references)))


def _correlation(fn, predictions, references) -> float:
    # A correlation with a constant vector is undefined (scipy gives nan and warns). We report 0,
    # as sklearn does for MCC, so that "best checkpoint" comparisons never see a nan.
    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    return float(fn(x, y)[0])


def glue_metrics(task_name: str, predictions, references) -> dict[str, float]:
    """Metrics of one eval split: class ids (or scores for STS-B) against the gold labels."""
    if task_name not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task_name!r}; one of {', '.join(GLUE_TASKS)}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if task_name == "stsb":
        return {"pearson": _correlation(stats.pearsonr, predictions, references),
                "spearman": _correlation(stats.spearmanr, predictions, references)}
    preds, refs = np.asarray(predictions).astype(np.int64), np.asarray(references).astype(np.int64)
    if task_name == "cola":
        return {"mcc": float(matthews_corrcoef(refs, preds))}
    if task_name in ("mrpc", "qqp"):
        return {"accuracy": accuracy(preds, refs), "f1": float(f1_score(refs, preds, zero_division=0.0))}
    return {"accuracy": accuracy(preds, refs)}
