"""Extractive-QA windows and answer decoding, as pure functions (no model needed to test them).

Follows the Hugging Face ``run_qa.py`` recipe, the reference most QA results come from:

* ``prepare_features``: question and context are tokenized together; a context longer than
  ``max_seq_length`` is cut into overlapping windows (``doc_stride`` = tokens shared by two
  consecutive windows). Each window keeps the character offsets of its context tokens, so a
  span of tokens maps back to a span of the original text. Training labels are token indices;
  a window that does not hold the whole answer (or an unanswerable question) is labelled at the
  CLS position, which is what the model's "no answer" score is read from.
* ``postprocess_predictions``: for every example, the ``n_best`` start and end logits of each of
  its windows are paired into valid spans (inside the context, end >= start, at most
  ``max_answer_length`` tokens) and the best-scoring span over all windows wins. For SQuAD v2 the
  smallest CLS score over the windows is the null score; the answer is "" when
  ``null - best_span > null_score_diff_threshold``.
"""
from __future__ import annotations

import numpy as np


def context_first(tokenizer) -> bool:
    # run_qa.py's convention: left-padding tokenizers (XLNet) put the context first.
    return getattr(tokenizer, "padding_side", "right") == "left"


def prepare_features(tokenizer, examples: list[dict], max_seq_length: int = 384, doc_stride: int = 128,
                     train: bool = True) -> list[dict]:
    """Windows of ``examples`` (dicts with id, question, context, answers={text, answer_start}).

    Every feature has ``input_ids``, ``attention_mask`` (and ``token_type_ids`` if the tokenizer
    makes them), ``example_index``, ``cls_index`` and ``offset_mapping`` (``None`` outside the
    context). With ``train`` also ``start_positions``/``end_positions`` (first gold answer).
    """
    if doc_stride >= max_seq_length:
        raise ValueError(f"doc_stride ({doc_stride}) must be smaller than max_seq_length ({max_seq_length})")
    ctx_first = context_first(tokenizer)
    # Leading whitespace in some SQuAD questions wastes window space (run_qa.py strips it too).
    questions = [ex["question"].lstrip() for ex in examples]
    contexts = [ex["context"] for ex in examples]
    enc = tokenizer(contexts if ctx_first else questions, questions if ctx_first else contexts,
                    truncation="only_first" if ctx_first else "only_second", max_length=max_seq_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    ctx_seq = 0 if ctx_first else 1
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        input_ids = enc["input_ids"][i]
        seq_ids = enc.sequence_ids(i)
        ex_index = enc["overflow_to_sample_mapping"][i]
        cls_index = _cls_index(tokenizer, input_ids)
        feat = {k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        feat.update(example_index=ex_index, cls_index=cls_index,
                    offset_mapping=[tuple(o) if s == ctx_seq else None for o, s in zip(offsets, seq_ids)])
        if train:
            feat["start_positions"], feat["end_positions"] = _label(examples[ex_index]["answers"], offsets, seq_ids,
                                                                    ctx_seq, cls_index)
        features.append(feat)
    return features


def _cls_index(tokenizer, input_ids: list[int]) -> int:
    for tid in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        if tid is not None and tid in input_ids:
            return input_ids.index(tid)
    return 0


def _label(answers: dict, offsets, seq_ids, ctx_seq: int, cls_index: int) -> tuple[int, int]:
    if not answers["answer_start"]:  # unanswerable (v2)
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    ctx = [j for j, s in enumerate(seq_ids) if s == ctx_seq]
    first, last = ctx[0], ctx[-1]
    # The answer must lie wholly inside this window's context, else the window says "no answer".
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def postprocess_predictions(examples: list[dict], features: list[dict], start_logits, end_logits, *,
                            version_2_with_negative: bool = False, n_best: int = 20, max_answer_length: int = 30,
                            null_score_diff_threshold: float = 0.0) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """Answer text per example id from per-feature logits (sequences of 1-d arrays, any padding).

    Returns ``(predictions, null_score_diff, best_non_null)``; the last two are filled for v2 only
    (score differences are what the official script's ``na_prob`` file and threshold tuning use).
    """
    by_example: dict[int, list[int]] = {}
    for fi, feat in enumerate(features):
        by_example.setdefault(feat["example_index"], []).append(fi)
    predictions, score_diff, best_non_null = {}, {}, {}
    for ei, ex in enumerate(examples):
        null_score, spans = None, []
        for fi in by_example.get(ei, []):
            offsets = features[fi]["offset_mapping"]
            s_log = np.asarray(start_logits[fi], dtype=np.float64)[: len(offsets)]
            e_log = np.asarray(end_logits[fi], dtype=np.float64)[: len(offsets)]
            cls = features[fi].get("cls_index", 0)
            feat_null = s_log[cls] + e_log[cls]
            # The null score is the minimum over windows: any window that sees an answer counts.
            null_score = feat_null if null_score is None else min(null_score, feat_null)
            for s in np.argsort(s_log)[::-1][:n_best]:
                for e in np.argsort(e_log)[::-1][:n_best]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    spans.append((s_log[s] + e_log[e], offsets[s][0], offsets[e][1]))
        spans.sort(key=lambda t: t[0], reverse=True)
        spans = [t for t in spans[:n_best] if t[2] > t[1]]  # a span must cover some text
        text = ex["context"][spans[0][1]:spans[0][2]] if spans else ""
        if not version_2_with_negative:
            predictions[ex["id"]] = text
            continue
        best = spans[0][0] if spans else -np.inf
        diff = float(null_score - best) if null_score is not None else np.inf
        score_diff[ex["id"]] = diff
        best_non_null[ex["id"]] = text
        predictions[ex["id"]] = "" if diff > null_score_diff_threshold else text
    return predictions, score_diff, best_non_null
