"""The 8 GLUE tasks (cola sst2 mrpc stsb qqp mnli qnli rte) as sequence classification.

Data comes from the canonical GLUE tsv files under ``data_dir`` (``glue_data/TASK/{train,dev}.tsv``,
as written by ``download_glue_data.py``) or, with no ``data_dir``, from the hub (``nyu-mll/glue``).
Labels get the ids of HF's ``glue`` dataset, so both sources give the same data.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .base import Task, eval_batches
from .collate import as_rows, pad_batch, pad_values
from .data_files import DEFAULT_MAX_BAD_ROWS, BadRows, read_text
from .metrics import GLUE_TASKS, glue_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    folder: str                 # canonical GLUE folder name
    text_a: str | int           # tsv column (name, or index for CoLA, which has no header)
    text_b: str | None
    label: str | int
    labels: dict | None         # label string -> id (None: a float score, STS-B)
    hub_text: tuple             # column names in nyu-mll/glue
    main_metric: str


_BIN = {"0": 0, "1": 1}
_NLI2 = {"entailment": 0, "not_entailment": 1}
SPECS = {
    "cola": Spec("CoLA", 3, None, 1, _BIN, ("sentence",), "mcc"),
    "sst2": Spec("SST-2", "sentence", None, "label", _BIN, ("sentence",), "accuracy"),
    "mrpc": Spec("MRPC", "#1 String", "#2 String", "Quality", _BIN, ("sentence1", "sentence2"), "accuracy"),
    "stsb": Spec("STS-B", "sentence1", "sentence2", "score", None, ("sentence1", "sentence2"), "pearson"),
    "qqp": Spec("QQP", "question1", "question2", "is_duplicate", _BIN, ("question1", "question2"), "accuracy"),
    "mnli": Spec("MNLI", "sentence1", "sentence2", "gold_label", {"entailment": 0, "neutral": 1, "contradiction": 2},
                 ("premise", "hypothesis"), "matched_accuracy"),
    "qnli": Spec("QNLI", "question", "sentence", "label", _NLI2, ("question", "sentence"), "accuracy"),
    "rte": Spec("RTE", "sentence1", "sentence2", "label", _NLI2, ("sentence1", "sentence2"), "accuracy"),
}
COLA_COLUMNS = 4  # source, label, original label, sentence
assert set(SPECS) == set(GLUE_TASKS)


@dataclass
class Rows:
    """One split as plain columns, before tokenization."""
    text_a: list[str]
    text_b: list[str] | None
    labels: list

    def __len__(self):
        return len(self.labels)

    def select(self, idx) -> "Rows":
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return Rows(pick(self.text_a), pick(self.text_b), pick(self.labels))


class TokenizedDataset(Dataset):
    """Columns: token ids as one 1-D int64 tensor per example (made once, so a batch is only padding),
    labels as Python numbers; items are per-example dicts."""

    def __init__(self, columns: dict[str, list]):
        self.columns = columns
        self._len = len(columns["labels"])

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


def read_tsv(path: Path, task: str, max_bad_rows: float = DEFAULT_MAX_BAD_ROWS) -> tuple[Rows, dict]:
    """Read a canonical GLUE tsv → (rows, what results.json records of the file). Rows with the wrong
    number of fields are skipped, as GLUE's own loaders do for QQP / MNLI, up to ``max_bad_rows`` of
    the file (data_files.BadRows); missing columns and bad labels are errors."""
    spec = SPECS[task]
    text = read_text(path)  # MRPC's header starts with a BOM (dropped)
    # QUOTE_NONE: quote characters are text here.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    numbered = [(reader.line_num, r) for r in reader if r]
    if isinstance(spec.text_a, int):  # CoLA: no header, fixed columns
        width, col = COLA_COLUMNS, {}
    else:
        if not numbered:
            raise DataError(f"{path} is empty (expected a header row)")
        (_, header), numbered = numbered[0], numbered[1:]
        width, col = len(header), {name: i for i, name in enumerate(header)}
        wanted = [c for c in (spec.text_a, spec.text_b, spec.label) if c is not None]
        missing = [c for c in wanted if c not in col]
        if missing:
            raise DataError(f"{path}: missing columns {missing} for GLUE {task} (header has {header})")
    if not numbered:
        raise DataError(f"{path}: no data rows")
    bad = BadRows(path, rows=len(numbered), truncated=not text.endswith(("\n", "\r")))
    good = []
    for line, r in numbered:
        if len(r) == width:
            good.append((line, r))
        else:
            bad.skip(line)
    if not good:
        raise DataError(f"{path}: no rows with the expected {width} tab-separated fields")
    report = bad.check(max_bad_rows, f"a number of fields other than {width}")
    at = lambda c: c if isinstance(c, int) else col[c]  # noqa: E731
    a, lab = at(spec.text_a), at(spec.label)
    rows = Rows(text_a=[r[a] for _, r in good],
                text_b=None if spec.text_b is None else [r[at(spec.text_b)] for _, r in good],
                labels=[_parse_label(r[lab], spec, path, line) for line, r in good])
    return rows, report


def _parse_label(value: str, spec: Spec, path: Path, line: int):
    value = value.strip()
    try:
        return float(value) if spec.labels is None else spec.labels[value]
    except (KeyError, ValueError):
        allowed = "a number" if spec.labels is None else sorted(spec.labels)
        raise DataError(f"{path}: line {line}: label {value!r} is not {allowed}") from None


def seeded_subset(rows: Rows, n: int | None, seed: int) -> Rows:
    """A seeded random subset of ``n`` rows (in file order), or all rows when n is None / too large."""
    if n is None or n >= len(rows):
        return rows
    idx = np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])
    return rows.select(idx.tolist())


class GlueTask(Task):
    head = "seq_cls"

    def __init__(self, cfg, data_dir: str | None = None, seed: int = 0):
        super().__init__(cfg, data_dir, seed)
        if self.name not in SPECS:
            raise ConfigError(f"unknown GLUE task {self.name!r}; one of {', '.join(GLUE_TASKS)}")
        self.spec = SPECS[self.name]
        self.main_metric = self.spec.main_metric
        self.is_regression = self.name == "stsb"
        self.pads: dict[str, int] = {}  # per-key pad values (load: from the tokenizer)
        self._rows: tuple[Rows, dict[str, Rows]] | None = None  # read(): (train, eval splits), untokenized

    def model_kwargs(self) -> dict:
        if self.is_regression:
            return {"num_labels": 1, "problem_type": "regression"}
        return {"num_labels": len(set(self.spec.labels.values())),
                "problem_type": "single_label_classification"}

    # ---- data ----
    def read(self) -> None:
        train, evals = self._read_local() if self.data_dir is not None else self._read_hub()
        cfg = self.cfg
        train = seeded_subset(train, cfg.get("max_train_samples"), self.seed)
        evals = {k: seeded_subset(v, cfg.get("max_eval_samples"), self.seed) for k, v in evals.items()}
        self._rows = (train, evals)

    def load(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pads = pad_values(tokenizer)
        self.max_length = self.cap_length("max_seq_length", 128)
        if self._rows is None:
            self.read()
        train, evals = self._rows
        self.train_dataset = self._tokenize(train)
        self.eval_datasets = {k: self._tokenize(v) for k, v in evals.items()}
        log.info("GLUE %s: %d train, eval %s", self.name, len(self.train_dataset),
                 {k: len(v) for k, v in self.eval_datasets.items()})

    def _tokenize(self, rows: Rows) -> TokenizedDataset:
        # One batched call: fast tokenizers encode the whole list in Rust. No padding here.
        args = (rows.text_a,) if rows.text_b is None else (rows.text_a, rows.text_b)
        enc = self.tokenizer(*args, truncation=True, max_length=self.max_length)
        return TokenizedDataset({**{k: as_rows(v) for k, v in enc.items()}, "labels": list(rows.labels)})

    def _task_dir(self) -> Path:
        root = Path(self.data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"data_dir {str(root)!r} does not exist or is not a folder")
        # data_dir may be the folder that holds glue_data/ or glue_data/ itself.
        candidates = [root / "glue_data" / self.spec.folder, root / self.spec.folder]
        for c in candidates:
            if c.is_dir():
                return c
        raise DataError(f"GLUE {self.name}: no data folder; looked for {' and '.join(map(str, candidates))}")

    def _read_local(self) -> tuple[Rows, dict[str, Rows]]:
        d = self._task_dir()
        dev_files = {"matched": d / "dev_matched.tsv", "mismatched": d / "dev_mismatched.tsv"} \
            if self.name == "mnli" else {"dev": d / "dev.tsv"}
        first = next(iter(dev_files.values()))
        if not first.is_file():
            raise DataError(f"GLUE {self.name}: missing dev file {first}")
        if self.name == "mnli" and not dev_files["mismatched"].is_file():
            log.warning("GLUE mnli: %s is absent; evaluating on matched only", dev_files.pop("mismatched"))
        evals = {k: self._read_file(k, p) for k, p in dev_files.items()}
        if self.cfg.get("train_from_dev", False):
            return self._split_dev(evals)
        train_file = d / "train.tsv"
        if not train_file.is_file():
            raise DataError(f"GLUE {self.name}: missing train file {train_file} "
                            "(task.train_from_dev=true splits the dev set into train/eval halves for a smoke test)")
        return self._read_file("train", train_file), evals

    def _read_file(self, split: str, path: Path) -> Rows:
        rows, self.data_report[split] = read_tsv(path, self.name, self.max_bad_rows)
        return rows

    def _split_dev(self, evals: dict[str, Rows]) -> tuple[Rows, dict[str, Rows]]:
        """Smoke tests only: the first dev split becomes disjoint seeded train/eval halves."""
        key = next(iter(evals))
        dev = evals[key]
        perm = np.random.default_rng(self.seed).permutation(len(dev))
        half = len(dev) // 2
        log.warning("GLUE %s: train_from_dev: training on %d and evaluating on %d rows of %s (not a GLUE score)",
                    self.name, half, len(dev) - half, key)
        evals[key] = dev.select(np.sort(perm[half:]).tolist())
        return dev.select(np.sort(perm[:half]).tolist()), evals

    def _read_hub(self) -> tuple[Rows, dict[str, Rows]]:
        import datasets

        hub_name = self.cfg.get("hub_name", "nyu-mll/glue")
        try:
            ds = datasets.load_dataset(hub_name, self.name)
        except Exception as e:  # network, auth, cache: all mean "no data here"
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"cannot load {hub_name}/{self.name} from the hub (offline with no local copy? "
                            f"pass data_dir=... with glue_data/{self.spec.folder}/): {msg}") from e
        splits = {"matched": "validation_matched", "mismatched": "validation_mismatched"} \
            if self.name == "mnli" else {"dev": "validation"}

        def rows(split) -> Rows:
            cols = self.spec.hub_text
            return Rows(list(split[cols[0]]), list(split[cols[1]]) if len(cols) > 1 else None, list(split["label"]))

        evals = {k: rows(ds[s]) for k, s in splits.items()}
        self.data_report = {k: {"file": f"{hub_name}/{self.name}:{s}", "rows": len(evals[k]), "skipped_rows": 0}
                            for k, s in splits.items()}
        if self.cfg.get("train_from_dev", False):
            return self._split_dev(evals)
        train = rows(ds["train"])
        self.data_report["train"] = {"file": f"{hub_name}/{self.name}:train", "rows": len(train), "skipped_rows": 0}
        return train, evals

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        # As DataCollatorWithPadding pads (on the tokenizer's side), without a tokenizer call per batch.
        batch = pad_batch(features, self.pads, self.pad_width, self.tokenizer.padding_side)
        # Regression needs float targets (MSE), classification int64 (cross-entropy).
        batch["labels"] = batch["labels"].to(torch.float32 if self.is_regression else torch.long)
        return batch

    # ---- evaluation ----
    def evaluate(self, model, accelerator, batch_size: int) -> dict[str, float]:
        results = {}
        for split, ds in self.eval_datasets.items():
            preds, refs = [], []
            for batch, out in eval_batches(model, ds, self.collate, accelerator, batch_size, f"eval {self.name}/{split}"):
                logits = out.logits.float()
                preds.append(logits.squeeze(-1) if self.is_regression else logits.argmax(-1))
                refs.append(batch["labels"])
            metrics = glue_metrics(self.name, torch.cat(preds).cpu().numpy(), torch.cat(refs).cpu().numpy())
            prefix = "" if split == "dev" else f"{split}_"  # MNLI: matched_accuracy, mismatched_accuracy
            results.update({prefix + k: v for k, v in metrics.items()})
        results["main"] = results[self.main_metric]
        return results
