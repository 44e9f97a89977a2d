"""Abstractive summarization with any seq2seq model (``task=xsum``, ``task=cnn_dm``).

Training is teacher-forced cross-entropy: labels are the summary's tokens padded with -100 (the
model builds its decoder inputs by shifting the labels right). Evaluation generates with
``model.generate`` (beam search, length limits and penalty from the config) and scores ROUGE-1/2/L/
Lsum F-measures (``rouge-score``, Porter stemming; for Lsum each sentence on its own line), in percent.

Data, in order of precedence:
  1. ``train_file`` / ``eval_file`` (absolute, or relative to ``data_dir``): ``.jsonl`` with
     ``text_column``/``summary_column`` fields, or ``.txt`` with one document per line plus
     ``*_summary_file`` with one summary per line (``<t> ... </t>`` sentence tags become lines);
  2. ``data_dir/<local_dir>/`` with ``local_train``/``local_eval`` (and ``*_summaries`` for .txt);
  3. no ``data_dir``: the hub (``hub_path``, ``hub_name``).
With no train file (the shared CNN/DM sample is 100 test articles), a ``split_seed``-seeded shuffle
of the eval examples puts ``train_fraction`` of them in train and the rest in eval (disjoint).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import torch

from ..errors import DataError
from .base import Task, eval_loader, gather
from .collate import as_rows, pad_batch, pad_values
from .data_files import DEFAULT_MAX_BAD_ROWS, BadRows, read_text

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_TAGGED = re.compile(r"<t>(.*?)</t>", re.S)


def sentences(text: str) -> list[str]:
    """Sentences of a summary: its lines if it has several, else a split after . ! ? (a simple
    stand-in for nltk's sent_tokenize; only rougeLsum depends on it)."""
    text = text.strip()
    if "\n" in text:
        return [s.strip() for s in text.split("\n") if s.strip()]
    return [s for s in _SENT_END.split(text) if s]


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F-measures in percent (rougeLsum over newline-separated sentences)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score("\n".join(sentences(ref)), "\n".join(sentences(pred)))
        for k in ROUGE_KEYS:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {k: 100.0 * v / n for k, v in totals.items()}


def untag(line: str) -> str:
    """``<t> s1 </t> <t> s2 </t>`` -> ``"s1\\ns2"`` (whitespace collapsed); untagged lines unchanged."""
    tagged = _TAGGED.findall(line)
    parts = tagged if tagged else [line]
    return "\n".join(" ".join(p.split()) for p in parts if p.strip())


def read_jsonl(path: Path, text_col: str, summary_col: str, max_bad_rows: float = DEFAULT_MAX_BAD_ROWS) -> tuple[list[dict], dict]:
    """(rows, what results.json records of the file) from a ``.jsonl``: a line that is not json with
    both columns is skipped, up to ``max_bad_rows`` of the file (data_files.BadRows)."""
    text = read_text(path)
    rows, lines = [], [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    bad = BadRows(path, rows=len(lines), truncated=bool(text) and not text.endswith(("\n", "\r")))
    for n, line in lines:
        try:
            r = json.loads(line)
            rows.append({"document": str(r[text_col]), "summary": str(r[summary_col])})
        except (json.JSONDecodeError, KeyError, TypeError):
            bad.skip(n)
    return rows, bad.check(max_bad_rows, f"not json with {text_col!r} and {summary_col!r}")


def read_text_pair(docs: Path, sums: Path | None) -> tuple[list[dict], dict]:
    if sums is None:
        raise DataError(f"{docs} is one document per line: also set the matching *_summary_file (one summary per line)")
    for p in (docs, sums):
        if not p.is_file():
            raise DataError(f"summarization file not found: {p}")
    d, s = read_text(docs).splitlines(), read_text(sums).splitlines()
    if len(d) != len(s):
        raise DataError(f"{docs} has {len(d)} lines but {sums} has {len(s)}: they must pair line by line")
    rows = [{"document": a.strip(), "summary": untag(b)} for a, b in zip(d, s)]
    return rows, {"file": str(docs), "rows": len(rows), "skipped_rows": 0}


ROLE = {"train": "train", "eval": "validation"}  # config prefix -> split name (eval_datasets, data_report)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class SummarizationTask(Task):
    name = "xsum"
    head = "seq2seq"
    main_metric = "rougeL"

    def __init__(self, cfg, data_dir=None, seed=0):
        super().__init__(cfg, data_dir, seed)
        self.eval_references: dict[str, list[str]] = {}
        self._rows: tuple[list[dict], list[dict]] | None = None  # read(): (train, eval), untokenized

    # ------------------------------------------------------------------ data
    def _local(self, which: str) -> list[dict] | None:
        """A split from local files (its record in ``data_report``), or None when none is configured."""
        cfg = self.cfg
        if cfg.get(f"{which}_file"):
            docs = self.data_path(cfg.get(f"{which}_file"))
            sums = self.data_path(cfg.get(f"{which}_summary_file")) if cfg.get(f"{which}_summary_file") else None
        elif self.data_dir and cfg.get(f"local_{which}"):
            folder = Path(self.data_dir) / cfg.get("local_dir", "")
            docs = folder / cfg.get(f"local_{which}")
            sums = folder / cfg.get(f"local_{which}_summaries") if cfg.get(f"local_{which}_summaries") else None
        else:
            return None
        if docs.suffix == ".jsonl":
            if not docs.is_file():
                raise DataError(f"summarization file not found: {docs}")
            rows, self.data_report[ROLE[which]] = read_jsonl(docs, cfg.get("text_column", "document"),
                                                       cfg.get("summary_column", "summary"), self.max_bad_rows)
        else:
            rows, self.data_report[ROLE[which]] = read_text_pair(docs, sums)
        return rows

    def _hub(self, which: str, split: str) -> list[dict]:
        path, name = self.cfg.get("hub_path"), self.cfg.get("hub_name")
        try:
            import datasets
            ds = datasets.load_dataset(path, name, split=split)
        except Exception as e:  # offline, unknown split, ...: one clear line for the user
            raise DataError(f"cannot load {path!r} split {split!r} from the hub (offline with no local copy? "
                            f"set data_dir or train_file/eval_file): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        tc, sc = self.cfg.get("text_column", "document"), self.cfg.get("summary_column", "summary")
        self.data_report[ROLE[which]] = {"file": f"{path}:{split}", "rows": len(ds), "skipped_rows": 0}
        return [{"document": r[tc], "summary": r[sc]} for r in ds]

    def read_examples(self) -> tuple[list[dict], list[dict]]:
        """(train, eval) rows {document, summary}, after splitting and the max_*_samples caps."""
        cfg = self.cfg
        local = bool(self.data_dir or cfg.get("train_file") or cfg.get("eval_file"))
        eval_rows = self._local("eval") if local else self._hub("eval", cfg.get("hub_eval_split", "validation"))
        if eval_rows is None:
            raise DataError("no local summarization eval data: set task.eval_file (or local_eval in data_dir)")
        train_rows = self._local("train") if local else self._hub("train", cfg.get("hub_train_split", "train"))
        if train_rows is None:
            frac = cfg.get("train_fraction")
            if not frac:
                raise DataError("no local summarization train data: set task.train_file, or task.train_fraction "
                                "to train on a seeded part of the eval data")
            order = list(range(len(eval_rows)))
            random.Random(int(cfg.get("split_seed", 0))).shuffle(order)
            n = min(max(1, round(float(frac) * len(order))), len(order) - 1)
            train_rows, eval_rows = [eval_rows[i] for i in order[:n]], [eval_rows[i] for i in order[n:]]
        if not train_rows or not eval_rows:
            raise DataError(f"summarization data is empty (train {len(train_rows)}, eval {len(eval_rows)} rows)")
        if cfg.get("max_train_samples"):
            train_rows = train_rows[: int(cfg.max_train_samples)]
        if cfg.get("max_eval_samples"):
            eval_rows = eval_rows[: int(cfg.max_eval_samples)]
        return train_rows, eval_rows

    def _encode(self, rows: list[dict]) -> list[dict]:
        prefix = self.cfg.get("source_prefix") or ""  # "summarize: " for T5-style models
        src_len, tgt_len = self.cap_length("max_source_length", 1024), self.cap_length("max_target_length", 128)
        self.max_length = max(src_len, tgt_len)
        src = self.tokenizer([prefix + r["document"] for r in rows], max_length=src_len, truncation=True)
        # Targets as one line: sentence breaks only matter to rougeLsum, which reads the references.
        tgt = self.tokenizer(text_target=[" ".join(r["summary"].split()) for r in rows], max_length=tgt_len,
                             truncation=True)
        # Token lists as 1-D int64 tensors, once: a batch is then only padding.
        return [{"input_ids": i, "attention_mask": a, "labels": l}
                for i, a, l in zip(as_rows(src["input_ids"]), as_rows(src["attention_mask"]), as_rows(tgt["input_ids"]))]

    def read(self) -> None:
        self._rows = self.read_examples()

    def load(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        if self._rows is None:
            self.read()
        train_rows, eval_rows = self._rows
        self.train_dataset = _Rows(self._encode(train_rows))
        self.eval_datasets = {"validation": _Rows(self._encode(eval_rows))}
        self.eval_references = {"validation": [r["summary"] for r in eval_rows]}

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        # Right padding (labels must be: the decoder reads them shifted), each key to its own longest;
        # labels padded with -100 so padding never counts in the loss.
        return pad_batch(features, pad_values(self.tokenizer), self.pad_width, "right",
                         keys=("input_ids", "attention_mask", "labels"))

    # ------------------------------------------------------------------ eval
    def generation_kwargs(self) -> dict:
        cfg = self.cfg
        kw = dict(num_beams=cfg.get("num_beams"), max_length=cfg.get("gen_max_length"), min_length=cfg.get("gen_min_length"),
                  length_penalty=cfg.get("length_penalty"), no_repeat_ngram_size=cfg.get("no_repeat_ngram_size"))
        kw = {k: v for k, v in kw.items() if v is not None}  # unset: the model's generation config decides
        if kw.get("num_beams", 1) > 1:
            kw["early_stopping"] = True
        return kw

    def generate(self, model, accelerator, dataset, batch_size: int) -> list[str]:
        """Decoded summaries for a tokenized dataset, in order (on several processes, each generates
        for its share and all get every summary)."""
        if hasattr(accelerator, "unwrap_model"):  # generate() lives on the bare model, not a DDP wrapper
            model = accelerator.unwrap_model(model)
        inputs = lambda fs: self.collate([{k: f[k] for k in ("input_ids", "attention_mask")} for f in fs])  # noqa: E731
        loader = eval_loader(dataset, inputs, accelerator, batch_size)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        was_training, out = model.training, []
        model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                    with accelerator.autocast():
                        ids = model.generate(**batch, **self.generation_kwargs())
                    ids = gather(accelerator, {"ids": ids}, pad_index=pad_id)["ids"]
                    out.extend(s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        finally:
            model.train(was_training)
        return out

    def evaluate(self, model, accelerator, batch_size: int) -> dict[str, float]:
        results = {}
        for split, ds in self.eval_datasets.items():
            preds = self.generate(model, accelerator, ds, batch_size)
            metrics = rouge_scores(preds, self.eval_references[split])
            metrics["gen_words"] = sum(len(p.split()) for p in preds) / max(len(preds), 1)
            prefix = "" if len(self.eval_datasets) == 1 else f"{split}/"
            results.update({prefix + k: v for k, v in metrics.items()})
            results.setdefault("main", metrics[self.main_metric])
        return results
