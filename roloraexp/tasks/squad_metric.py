"""SQuAD scoring exactly as the official v1.1 and v2.0 evaluation scripts compute it.

Re-implemented line by line from ``evaluate-v1.1.py`` and ``evaluate-v2.0.py`` (SQuAD-explorer),
so a number here is comparable with any paper's. The two scripts differ in ways that change
scores, and both are kept:

* v1.1 counts a question without a prediction as 0 in the total; v2.0 leaves it out of the total.
* v2.0 drops gold answers that normalise to "" and scores an unanswerable question against the
  single gold "" (so an empty prediction scores 1 there, and 0 on an answerable one).
* v1.1 reports ``exact_match``/``f1``; v2.0 reports ``exact``/``f1``/``total`` plus the
  ``HasAns_*``/``NoAns_*`` breakdown (and ``best_*`` fields when no-answer probabilities are given).
"""
from __future__ import annotations

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)  # ASCII only, as in the official scripts


def normalize_answer(s: str) -> str:
    """Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    """Token-overlap F1 of the normalised strings (v2.0 rule: if either is empty, 1 iff both are)."""
    gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def f1_v1(prediction: str, ground_truth: str) -> float:
    """v1.1's F1: no special case for empty strings (an empty prediction simply scores 0)."""
    pred_toks, gold_toks = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    num_same = sum((collections.Counter(pred_toks) & collections.Counter(gold_toks)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _questions(dataset: list[dict]):
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def evaluate_v1(dataset: list[dict], predictions: dict[str, str]) -> dict[str, float]:
    """``dataset`` is the json's ``data`` list. Percentages; unanswered questions count as 0."""
    f1 = exact_match = total = 0.0
    for qa in _questions(dataset):
        total += 1
        if qa["id"] not in predictions:
            continue
        golds = [a["text"] for a in qa["answers"]]
        pred = predictions[qa["id"]]
        exact_match += max(compute_exact(g, pred) for g in golds)
        f1 += max(f1_v1(pred, g) for g in golds)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def _eval_dict(exact: dict, f1: dict, qids: list[str] | None = None) -> dict:
    qids = list(exact) if not qids else qids
    total = len(qids)
    return {"exact": 100.0 * sum(exact[k] for k in qids) / total,
            "f1": 100.0 * sum(f1[k] for k in qids) / total, "total": total}


def _best_thresh(preds, scores, na_probs, qid_to_has_ans) -> tuple[float, float]:
    # Start from "answer nothing" and switch questions to their prediction in order of rising
    # no-answer probability, keeping the best running score (official find_best_thresh).
    cur = best = sum(1 for v in qid_to_has_ans.values() if not v)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        cur += scores[qid] if qid_to_has_ans[qid] else (-1 if preds[qid] else 0)
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def evaluate_v2(dataset: list[dict], predictions: dict[str, str], na_probs: dict[str, float] | None = None,
                na_prob_thresh: float = 1.0) -> dict[str, float]:
    """The official v2.0 output. With ``na_probs`` (qid -> P(no answer)) also ``best_*`` fields."""
    qid_to_has_ans = {qa["id"]: bool(qa["answers"]) for qa in _questions(dataset)}
    exact_raw, f1_raw = {}, {}
    for qa in _questions(dataset):
        if qa["id"] not in predictions:
            continue  # official v2.0: left out of the total
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        pred = predictions[qa["id"]]
        exact_raw[qa["id"]] = max(compute_exact(g, pred) for g in golds)
        f1_raw[qa["id"]] = max(compute_f1(g, pred) for g in golds)
    probs = na_probs if na_probs is not None else {k: 0.0 for k in predictions}

    def thresholded(scores):
        return {q: float(not qid_to_has_ans[q]) if probs[q] > na_prob_thresh else s for q, s in scores.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    out = _eval_dict(exact, f1)
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        # (the official script raises KeyError on a missing prediction here; we just leave it out)
        qids = [k for k, v in qid_to_has_ans.items() if v is want and k in exact]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(predictions, exact_raw, na_probs, qid_to_has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(predictions, f1_raw, na_probs, qid_to_has_ans)
    return out


def is_v2(data_json: dict) -> bool:
    """v2 if the file says so or any question carries ``is_impossible``."""
    if str(data_json.get("version", "")).startswith("2"):
        return True
    return any("is_impossible" in qa for qa in _questions(data_json["data"]))
