"""SQuAD v1.1 / v2.0 extractive question answering (``task=squad_v1``, ``task=squad_v2``).

Data, in order of precedence:
  1. ``train_file`` / ``eval_file``: SQuAD-format json (absolute, or relative to ``data_dir``);
  2. ``data_dir/<local_dir>/``: the first of ``local_train`` / ``local_eval`` that exists;
  3. no ``data_dir``: the hub (``rajpurkar/squad`` or ``rajpurkar/squad_v2``).
Only the dev sets are shared offline. ``train_from_dev: true`` then splits the eval data BY ARTICLE
(title): a ``split_seed``-seeded shuffle of the titles puts ``dev_train_fraction`` of the articles
in train and the rest in eval, so training and evaluation never share a context. The split seed
is fixed (not the run seed) so every run and method is scored on the same articles.

Scores are the official scripts' (``squad_metric``), in percent. ``python -m roloraexp.tasks.squad
DATA.json PREDICTIONS.json [--na-prob-file F]`` prints what the official script prints.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .base import Task, eval_batches
from .collate import as_rows, pad_batch, pad_values
from .data_files import read_text
from .squad_metric import evaluate_v1, evaluate_v2, is_v2
from .squad_postprocess import postprocess_predictions, prepare_features

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def read_squad_json(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(the json's ``data`` list, flat examples) from a SQuAD-format file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SQuAD file not found: {path}")
    text = read_text(path)  # a binary or non-UTF-8 file: one line naming it
    try:
        data = json.loads(text)["data"]
        examples = [
            {"id": qa["id"], "title": art.get("title", ""), "context": par["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [int(a["answer_start"]) for a in qa["answers"]]}}
            for art in data for par in art["paragraphs"] for qa in par["qas"]
        ]
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid json (line {e.lineno}, column {e.colno}: {e.msg}): cut short?") from e
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is not SQuAD-format json (data/paragraphs/qas/answers): {type(e).__name__}: {e}") from e
    return data, examples


def to_squad_data(examples: list[dict]) -> list[dict]:
    """Rebuild the official ``data`` structure from flat examples (one paragraph per question is
    enough: the scorers only read ids and answers)."""
    return [{"title": ex.get("title", ""), "paragraphs": [{"context": ex["context"], "qas": [
        {"id": ex["id"], "question": ex["question"],
         "answers": [{"text": t, "answer_start": s} for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"])]}]}]}
        for ex in examples]


def split_by_article(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Disjoint (train, eval) with whole articles on each side; order within each side is kept."""
    titles = sorted({ex["title"] for ex in examples})
    if len(titles) < 2:
        raise DataError(f"train_from_dev needs at least 2 articles, the eval data has {len(titles)}")
    random.Random(seed).shuffle(titles)
    n_train = min(max(1, round(fraction * len(titles))), len(titles) - 1)
    train_titles = set(titles[:n_train])
    return ([ex for ex in examples if ex["title"] in train_titles], [ex for ex in examples if ex["title"] not in train_titles])


class _Features(torch.utils.data.Dataset):
    """The model's inputs of QA windows: token lists as 1-D int64 tensors (made once, so a batch is
    only padding), label positions as ints. Post-processing reads the windows themselves."""

    def __init__(self, features: list[dict], keys: tuple[str, ...]):
        keys = [k for k in keys if features and k in features[0]]
        self.columns = {k: as_rows([f[k] for f in features]) if k in MODEL_INPUTS else [f[k] for f in features]
                        for k in keys}
        self._len = len(features)

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


class SquadTask(Task):
    name = "squad_v1"
    head = "qa"
    main_metric = "f1"

    def __init__(self, cfg, data_dir=None, seed=0):
        super().__init__(cfg, data_dir, seed)
        self.v2 = bool(cfg.get("version_2_with_negative", False))
        self.eval_examples: dict[str, list[dict]] = {}
        self.eval_features: dict[str, list[dict]] = {}
        self._examples: tuple[list[dict], list[dict]] | None = None  # read(): (train, eval), untokenized

    # ------------------------------------------------------------------ data
    def _local(self, which: str) -> Path | None:
        explicit = self.cfg.get(f"{which}_file")
        if explicit:
            return self.data_path(explicit)
        if not self.data_dir:
            return None
        folder = Path(self.data_dir) / self.cfg.get("local_dir", "squad_v2.0" if self.v2 else "squad_v1.1")
        for name in self.cfg.get(f"local_{which}", []) or []:
            if (folder / name).is_file():
                return folder / name
        return None

    def _hub(self, split: str) -> list[dict]:
        path = self.cfg.get("hub_path", "rajpurkar/squad_v2" if self.v2 else "rajpurkar/squad")
        try:
            import datasets
            ds = datasets.load_dataset(path, split=split)
        except Exception as e:  # offline, unknown split, ...: one clear line for the user
            raise DataError(f"cannot load {path!r} split {split!r} from the hub (offline with no local copy? "
                            f"set data_dir or train_file/eval_file): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        return [{"id": r["id"], "title": r["title"], "context": r["context"], "question": r["question"],
                 "answers": {"text": list(r["answers"]["text"]), "answer_start": list(r["answers"]["answer_start"])}} for r in ds]

    def read_examples(self) -> tuple[list[dict], list[dict]]:
        """(train, eval) examples, after train_from_dev splitting and the max_*_samples caps."""
        cfg = self.cfg
        local = bool(self.data_dir or cfg.get("train_file") or cfg.get("eval_file"))
        eval_path = self._local("eval")
        if local and eval_path is None:
            where = Path(self.data_dir or ".") / cfg.get("local_dir", "")
            raise DataError(f"no SQuAD eval file: set task.eval_file (looked in {where} for {list(cfg.get('local_eval', []))})")
        eval_ex = read_squad_json(eval_path)[1] if local else self._hub(cfg.get("hub_eval_split", "validation"))
        self.data_report["validation"] = self._report(eval_path, eval_ex)
        if cfg.get("train_from_dev", False):
            train_ex, eval_ex = split_by_article(eval_ex, float(cfg.get("dev_train_fraction", 0.5)), int(cfg.get("split_seed", 0)))
        else:
            train_path = self._local("train")
            if local and train_path is None:
                raise DataError("no SQuAD train file found locally (only dev sets are shared): set task.train_file, "
                                "or task.train_from_dev=true to train on part of the dev articles")
            train_ex = read_squad_json(train_path)[1] if local else self._hub(cfg.get("hub_train_split", "train"))
            self.data_report["train"] = self._report(train_path, train_ex)
        if not self.v2 and any(not ex["answers"]["text"] for ex in train_ex):
            raise DataError("SQuAD v1 train data has questions without answers: use task=squad_v2")
        if cfg.get("max_train_samples"):
            train_ex = train_ex[: int(cfg.max_train_samples)]
        if cfg.get("max_eval_samples"):
            eval_ex = eval_ex[: int(cfg.max_eval_samples)]
        return train_ex, eval_ex

    def _report(self, path: Path | None, examples: list[dict]) -> dict:
        """results.json's record of a split: a SQuAD json is read whole (a damaged one stops the run)."""
        return {"file": str(path) if path else self.cfg.get("hub_path", "hub"), "rows": len(examples), "skipped_rows": 0}

    def read(self) -> None:
        self._examples = self.read_examples()

    def load(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        if self._examples is None:
            self.read()
        train_ex, eval_ex = self._examples
        self.max_length = self.cap_length("max_seq_length", 384)
        kw = dict(max_seq_length=self.max_length, doc_stride=int(self.cfg.get("doc_stride", 128)))
        if kw["doc_stride"] >= kw["max_seq_length"]:
            raise ConfigError(f"task.doc_stride={kw['doc_stride']} must be smaller than task.max_seq_length "
                              f"({kw['max_seq_length']}): the tokens two windows share")
        self.train_dataset = _Features(prepare_features(tokenizer, train_ex, train=True, **kw),
                                       MODEL_INPUTS + ("start_positions", "end_positions"))
        self.eval_examples = {"validation": eval_ex}
        self.eval_features = {"validation": prepare_features(tokenizer, eval_ex, train=False, **kw)}
        self.eval_datasets = {k: _Features(v, MODEL_INPUTS) for k, v in self.eval_features.items()}

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        # Always on the right, whatever the tokenizer's side: label positions index the unpadded
        # sequence. Only the model's keys: raw windows (prepare_features) also carry offsets.
        return pad_batch(features, pad_values(self.tokenizer, token_type_ids=0), self.pad_width, "right",
                         keys=MODEL_INPUTS + ("start_positions", "end_positions"))

    # ------------------------------------------------------------------ eval
    def predict(self, model, accelerator, batch_size: int, split: str = "validation"):
        """(predictions, null_score_diff, best_non_null) for one eval split."""
        starts, ends = [], []
        for batch, out in eval_batches(model, self.eval_datasets[split], self.collate, accelerator, batch_size, f"eval {split}"):
            starts.extend(out.start_logits.float().cpu().numpy())
            ends.extend(out.end_logits.float().cpu().numpy())
        return postprocess_predictions(
            self.eval_examples[split], self.eval_features[split], starts, ends, version_2_with_negative=self.v2,
            n_best=int(self.cfg.get("n_best", 20)), max_answer_length=int(self.cfg.get("max_answer_length", 30)),
            null_score_diff_threshold=float(self.cfg.get("null_score_diff_threshold", 0.0)))

    def score(self, examples: list[dict], preds: dict, score_diff: dict | None = None, best_non_null: dict | None = None) -> dict:
        data = to_squad_data(examples)
        if not self.v2:
            return evaluate_v1(data, preds)
        out = {k: float(v) for k, v in evaluate_v2(data, preds).items()}
        out["exact_match"] = out["exact"]  # same name as v1 so tables line up
        if score_diff:
            # What the threshold could reach if tuned on this set (official best_* with the score
            # differences as no-answer "probabilities", from the best non-null answers).
            best = evaluate_v2(data, best_non_null, na_probs=score_diff)
            out.update({k: float(best[k]) for k in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")})
        return out

    def evaluate(self, model, accelerator, batch_size: int) -> dict[str, float]:
        results = {}
        for split in self.eval_datasets:
            preds, diff, best = self.predict(model, accelerator, batch_size, split)
            metrics = self.score(self.eval_examples[split], preds, diff, best)
            prefix = "" if len(self.eval_datasets) == 1 else f"{split}/"
            results.update({prefix + k: v for k, v in metrics.items()})
            results.setdefault("main", metrics[self.main_metric])
        return results


def main(argv: list[str] | None = None) -> dict:
    """The official evaluation scripts' command line (v1.1 or v2.0 chosen from the data file)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="Official SQuAD v1.1 / v2.0 evaluation (version read from the data file).")
    ap.add_argument("data_file")
    ap.add_argument("pred_file")
    ap.add_argument("--na-prob-file", "-n", help="v2: json qid -> P(no answer); adds best_* fields")
    ap.add_argument("--na-prob-thresh", "-t", type=float, default=1.0, help="v2: predict no-answer above this")
    args = ap.parse_args(argv)
    try:
        data_json = json.loads(Path(args.data_file).read_text(encoding="utf-8"))
        preds = json.loads(Path(args.pred_file).read_text(encoding="utf-8"))
        na_probs = json.loads(Path(args.na_prob_file).read_text(encoding="utf-8")) if args.na_prob_file else None
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"error: {e}")
    if is_v2(data_json):
        out = evaluate_v2(data_json["data"], preds, na_probs, args.na_prob_thresh)
        print(json.dumps(out, indent=2))  # the v2.0 script indents, the v1.1 one does not
    else:
        out = evaluate_v1(data_json["data"], preds)
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
