"""What a task gives the run: data, the model head it needs, and its evaluation.

The loop only ever calls ``model(**batch).loss`` on training batches and ``task.evaluate``;
methods never see the task. A task is chosen by ``conf/task/*.yaml`` (``_target_`` names its class).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..config import check_section
from .collate import bucket_width
from .data_files import DEFAULT_MAX_BAD_ROWS

log = logging.getLogger(__name__)


class Task:
    name: str = "task"
    head: str = "seq_cls"  # seq_cls | qa | seq2seq: which AutoModelFor... the run builds
    main_metric: str = "accuracy"

    def __init__(self, cfg, data_dir: str | None = None, seed: int = 0):
        check_section(cfg, "task")  # roloraexp/config.py: before any data is read, one line each
        self.cfg, self.data_dir, self.seed = cfg, data_dir, seed
        bad = cfg.get("max_bad_rows")
        self.max_bad_rows = DEFAULT_MAX_BAD_ROWS if bad is None else float(bad)
        # Per split, what read() found: {file, rows (kept), skipped_rows}; results.json's ``data``.
        self.data_report: dict[str, dict] = {}
        self.name = cfg.get("name", self.name)
        self.train_dataset: Dataset | None = None
        self.eval_datasets: dict[str, Dataset] = {}
        self.tokenizer = None
        self.max_input_length: int | None = None  # the model's position limit (run.py sets it)
        # Widths batches are padded to (collate.resolve_buckets): None pads to the batch's longest row.
        self.pad_buckets: list[int] | None = None
        self.max_length: int | None = None  # the longest sequence load() tokenises to (for length_buckets)
        self._capped: set[str] = set()

    def data_path(self, p) -> Path:
        """A user-given file: as given when it exists (or is absolute), else under ``data_dir``."""
        p = Path(str(p)).expanduser()
        if not p.is_absolute() and not p.exists() and self.data_dir:
            p = Path(self.data_dir) / p
        return p

    def model_kwargs(self) -> dict:
        """Extra ``from_pretrained`` / config kwargs for the head (num_labels, problem_type...)."""
        return {}

    def read(self) -> None:
        """Read and check the raw data (files or hub), before any tokenizer or model is loaded, so a
        data problem costs the user seconds, not a model download."""
        raise TypeError(f"{type(self).__name__} must define read()")

    def load(self, tokenizer) -> None:
        """Tokenize what :meth:`read` found (reading it first if needed): fill ``train_dataset`` and
        ``eval_datasets``."""
        raise TypeError(f"{type(self).__name__} must define load()")

    def cap_length(self, key: str, default: int) -> int:
        """``task.<key>`` (a token length), capped to what the model can take (``max_input_length``,
        set by the run from the model's position table): longer inputs would index past it. Says so
        once, as a warning."""
        value = int(self.cfg.get(key) or default)
        limit = self.max_input_length
        if limit is not None and value > limit:
            if key not in self._capped:
                log.warning("task.%s=%d exceeds the %d positions the model takes: inputs are truncated to %d tokens",
                            key, value, limit, limit)
                self._capped.add(key)
            return limit
        return value

    def pad_width(self, longest: int) -> int:
        """The width a batch whose longest row has ``longest`` tokens is padded to: the smallest of
        ``pad_buckets`` that holds it (a few shapes, so compiled graphs are reused), else ``longest``."""
        return bucket_width(longest, self.pad_buckets)

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must define collate()")

    def evaluate(self, model, accelerator, batch_size: int) -> dict[str, float]:
        """Metrics on every eval split; the main metric also under ``"main"``."""
        raise TypeError(f"{type(self).__name__} must define evaluate()")


def eval_loader(dataset: Dataset, collate, accelerator, batch_size: int) -> DataLoader:
    """Batches of an eval set in order. On several processes each takes every n-th batch
    (accelerate); ``gather`` puts the outputs back together in dataset order, without the
    examples accelerate repeats to even out the last batches."""
    # A generator of its own: a DataLoader otherwise draws its base seed from the global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, generator=torch.Generator())
    return accelerator.prepare_data_loader(loader, device_placement=False) if accelerator.num_processes > 1 else loader


def gather(accelerator, values: dict, pad_index: int = 0) -> dict:
    """Every process's tensors of one eval batch, concatenated in dataset order (one process: as is).
    Sequence-shaped tensors are padded to the longest process first (with ``pad_index``); scalars
    (a batch's loss) are dropped."""
    if accelerator.num_processes == 1:
        return values
    out = {}
    for k, v in values.items():
        if torch.is_tensor(v) and v.ndim > 0:
            v = accelerator.pad_across_processes(v, dim=1, pad_index=pad_index) if v.ndim > 1 else v
            out[k] = accelerator.gather_for_metrics(v)
    return out


def eval_batches(model, dataset: Dataset, collate, accelerator, batch_size: int, desc: str) -> Iterator[tuple[dict, object]]:
    """Yield (batch, model outputs) over a dataset, in order, without gradients, under AMP; on several
    processes each process scores its share and every process gets all of it (``gather``)."""
    loader = eval_loader(dataset, collate, accelerator, batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc=desc, leave=False, mininterval=2, disable=None if accelerator.is_main_process else True):
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                with accelerator.autocast():
                    out = model(**batch)
                if accelerator.num_processes > 1:
                    # Padded positions of gathered logits get a very low score: never a best span or class.
                    batch, out = gather(accelerator, batch), type(out)(**gather(accelerator, dict(out), pad_index=-10_000))
                yield batch, out
    finally:
        model.train(was_training)


def build_task(cfg) -> Task:
    from hydra.utils import get_class

    from ..errors import ConfigError

    try:
        cls = get_class(cfg.task._target_)
    except Exception as e:
        raise ConfigError(f"task {cfg.task.get('name')!r}: cannot import {cfg.task._target_}: {e}") from e
    return cls(cfg.task, data_dir=cfg.get("data_dir"), seed=cfg.seed)
