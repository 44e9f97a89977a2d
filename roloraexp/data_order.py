"""Which training examples each optimizer step sees, and how many steps a run has.

The order of any epoch is a function of (seed, phase, epoch) alone, so every epoch is reshuffled (as
HF Trainer does), a run is reproducible, and a resumed run rebuilds the order of the epoch it stopped
in and skips the steps it had done. The step counts are plain functions of the config and the
dataset's size: the run checks a method's schedule against them before any model is loaded, and
the table cost estimate (``tables/cost.py``) counts with them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import distributed as dist
from .errors import ConfigError


def steps_per_epoch(cfg, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch: the batches each process gets (dealt round-robin), grouped by grad_accum."""
    batches = math.ceil(n_train / cfg.batch_size)
    return math.ceil(math.ceil(batches / world_size) / cfg.grad_accum)


def phase_steps(cfg, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps per phase: ``trainer.max_steps`` when set, else ``trainer.epochs`` epochs."""
    if cfg.max_steps and cfg.max_steps > 0:
        return int(cfg.max_steps)
    return steps_per_epoch(cfg, n_train, world_size) * int(cfg.epochs)


def warmup_steps(cfg, phase_steps: int) -> int:
    """``trainer.warmup_steps`` (absolute, as the papers give it) wins over ``warmup_ratio``. Warm-up
    longer than the phase keeps rising to the end (transformers' get_linear_schedule_with_warmup's
    semantics): the peak lr is then never reached."""
    if cfg.get("warmup_steps") is not None:
        return int(cfg.warmup_steps)
    return int(cfg.warmup_ratio * phase_steps)


def permutation(seed: int, phase: int, epoch: int, n: int) -> torch.Tensor:
    """A permutation of ``n`` examples drawn from (seed, phase, epoch) alone."""
    key = np.random.SeedSequence([seed, phase, epoch]).generate_state(2, dtype=np.uint64)
    gen = torch.Generator().manual_seed(int(key[0] ^ key[1]) & ((1 << 63) - 1))
    return torch.randperm(n, generator=gen)


def grouped_by_length(order: torch.Tensor, lengths: torch.Tensor, mega_batch: int) -> torch.Tensor:
    """``trainer.group_by_length``: the shuffled order cut into mega-batches (of 50 global batches),
    each sorted by length, longest first (transformers' LengthGroupedSampler): a batch holds examples
    of similar length, so little of it is padding (SST-2: ~3x fewer tokens computed), while which
    examples meet in a mega-batch stays random."""
    groups = [g[torch.argsort(lengths[g], descending=True, stable=True)] for g in order.split(mega_batch)]
    return torch.cat(groups)


def loader_workers(cfg, device: torch.device) -> int:
    """``trainer.num_workers``: auto collates in two worker processes on CUDA (the step does not wait
    for its batch) and in the main process on CPU (where the workers would take the step's cores)."""
    workers = cfg.get("num_workers", 0)
    return (2 if device.type == "cuda" else 0) if workers == "auto" else int(workers)


def examples_and_tokens(batch: dict) -> tuple[int, int]:
    """Examples in a batch and its input tokens, padding excluded (0 for inputs that are no token ids)."""
    mask, ids = batch.get("attention_mask"), batch.get("input_ids")
    tokens = int(mask.sum()) if mask is not None else ids.numel() if ids is not None else 0
    return len(next(iter(batch.values()))), tokens


class TrainingOrder:
    """A run's training data as optimizer steps: ``steps(phase, epoch, skip)`` yields, per step, its
    ``trainer.grad_accum`` micro-batches, on this process's share of the data."""

    def __init__(self, task, cfg, seed: int, accelerator):
        self.task, self.cfg, self.seed, self.accelerator = task, cfg, seed, accelerator
        self.lengths = None  # the training examples' lengths (trainer.group_by_length), read once

    @property
    def n_train(self) -> int:
        return len(self.task.train_dataset)

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.cfg, self.n_train, self.accelerator.num_processes)

    def phase_steps(self) -> int:
        return phase_steps(self.cfg, self.n_train, self.accelerator.num_processes)

    def order(self, phase: int, epoch: int) -> torch.Tensor:
        """The order of the training examples in one epoch (all processes' examples)."""
        order = permutation(self.seed, phase, epoch, self.n_train)
        if not self.cfg.get("group_by_length", False):
            return order
        if self.lengths is None:
            first = self.task.train_dataset[0]
            if not isinstance(first, dict) or "input_ids" not in first:
                raise ConfigError(f"trainer.group_by_length needs tokenised examples (input_ids); "
                                  f"{type(self.task).__name__}'s have none")
            self.lengths = torch.tensor([len(f["input_ids"]) for f in self.task.train_dataset])
        size = 50 * self.cfg.batch_size * self.cfg.grad_accum * self.accelerator.num_processes
        return grouped_by_length(order, self.lengths, size)

    def steps(self, phase: int, epoch: int, skip: int = 0):
        """The optimizer steps of one epoch from step ``skip`` on, each a list of ``grad_accum``
        micro-batches. An epoch whose batches do not divide by grad_accum ends with a shorter step
        over the leftover micro-batches, as HF Trainer does: leftovers never merge into the next
        epoch's first step. On several processes the batches are dealt round-robin (accelerate)."""
        cfg, acc = self.cfg, self.accelerator
        order = self.order(phase, epoch)[skip * cfg.grad_accum * cfg.batch_size * acc.num_processes:]
        # A generator of its own: a DataLoader otherwise draws its base seed from the global RNG, which
        # would make dropout after a resume differ from the uninterrupted run.
        loader = DataLoader(self.task.train_dataset, batch_size=cfg.batch_size, sampler=order.tolist(),
                            collate_fn=self.task.collate, num_workers=loader_workers(cfg, acc.device),
                            pin_memory=acc.device.type == "cuda", drop_last=False, generator=torch.Generator())
        if dist.is_distributed(acc):
            loader = acc.prepare_data_loader(loader, device_placement=False)
        group = []
        for batch in loader:
            group.append(batch)
            if len(group) == cfg.grad_accum:
                yield group
                group = []
        if group:
            yield group
