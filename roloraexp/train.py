"""The training loop: phases × epochs × optimizer steps, on accelerate (device, AMP).

It knows nothing of any method (see methods/base.py for the hooks it calls) or task (it only
calls ``model(**batch).loss`` and ``task.evaluate``). Everything it learns goes into ``record``
as it happens, so a run that dies still leaves its history behind.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .adapters import apply_remaps
from .checkpoint import save_state, trainable_state
from .errors import ConfigError
from .methods.base import TrainContext, count_trainable

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What the run has learned so far; results.json is written from it, also on failure."""

    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    best_metrics: dict = field(default_factory=dict)
    steps: int = 0
    trainable_params: int = 0
    trainable_params_peak: int = 0
    peak_memory_bytes: int | None = None


def make_accelerator(trainer_cfg) -> Accelerator:
    precision, device = trainer_cfg.precision, trainer_cfg.get("device", "auto")
    if precision not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"trainer.precision must be fp32, fp16 or bf16, got {precision!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"trainer.device must be auto, cpu or cuda, got {device!r}")
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not cuda:
        raise ConfigError("trainer.device=cuda but no CUDA device is available")
    if precision != "fp32" and not cuda:
        log.warning("trainer.precision=%s needs CUDA; training in fp32 on CPU", precision)
        precision = "fp32"
    mixed = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[precision]
    # accelerate keeps one process-wide state and refuses a second precision in the same process
    # (in-process sweeps, tests): each run starts from a clean one.
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed, cpu=not cuda)


class Trainer:
    def __init__(self, model, task, method, cfg_trainer, tracker, record: RunRecord, output_dir: Path | None, seed: int):
        self.model, self.task, self.method, self.cfg = model, task, method, cfg_trainer
        self.tracker, self.record, self.output_dir, self.seed = tracker, record, output_dir, seed
        if cfg_trainer.batch_size < 1 or cfg_trainer.grad_accum < 1:
            raise ConfigError("trainer.batch_size and trainer.grad_accum must be >= 1")
        if not 0 <= cfg_trainer.warmup_ratio <= 1:
            raise ConfigError(f"trainer.warmup_ratio must be in [0, 1], got {cfg_trainer.warmup_ratio} "
                              f"(trainer.warmup_steps takes a number of steps)")
        if cfg_trainer.get("warmup_steps") is not None and cfg_trainer.warmup_steps < 0:
            raise ConfigError(f"trainer.warmup_steps must be >= 0 (or null to use warmup_ratio), "
                              f"got {cfg_trainer.warmup_steps}")
        self.accelerator = make_accelerator(cfg_trainer)
        self.model.to(self.accelerator.device)
        self.best_main = -math.inf
        self.best_state = None
        self.last_eval_step = -1

    # ------------------------------------------------------------------ data
    def epoch_order(self, phase: int, epoch: int) -> torch.Tensor:
        """The order of the training examples in one epoch: a permutation drawn from (seed, phase,
        epoch) alone, so every epoch is reshuffled (as HF Trainer does) and a run is reproducible
        (a resumed run can rebuild any epoch's order)."""
        key = np.random.SeedSequence([self.seed, phase, epoch]).generate_state(2, dtype=np.uint64)
        gen = torch.Generator().manual_seed(int(key[0] ^ key[1]) & ((1 << 63) - 1))
        return torch.randperm(len(self.task.train_dataset), generator=gen)

    def epoch_steps(self, phase: int, epoch: int):
        """The optimizer steps of one epoch, each a list of ``grad_accum`` micro-batches. An epoch whose
        batches do not divide by grad_accum ends with a shorter step over the leftover micro-batches,
        as HF Trainer does: leftovers never merge into the next epoch's first step."""
        loader = DataLoader(self.task.train_dataset, batch_size=self.cfg.batch_size,
                            sampler=self.epoch_order(phase, epoch).tolist(), collate_fn=self.task.collate,
                            num_workers=self.cfg.get("num_workers", 0),
                            pin_memory=self.accelerator.device.type == "cuda", drop_last=False)
        group = []
        for batch in loader:
            group.append(batch)
            if len(group) == self.cfg.grad_accum:
                yield group
                group = []
        if group:
            yield group

    def steps_per_epoch(self) -> int:
        batches = math.ceil(len(self.task.train_dataset) / self.cfg.batch_size)
        return math.ceil(batches / self.cfg.grad_accum)

    def phase_steps(self) -> int:
        if self.cfg.max_steps and self.cfg.max_steps > 0:
            return int(self.cfg.max_steps)
        return self.steps_per_epoch() * int(self.cfg.epochs)

    def warmup_steps(self, phase_steps: int) -> int:
        """``trainer.warmup_steps`` (absolute, as the papers give it) wins over ``warmup_ratio``.
        Warm-up longer than the phase keeps rising to the end (get_linear_schedule_with_warmup's
        semantics): the peak lr is then never reached."""
        if self.cfg.get("warmup_steps") is not None:
            return int(self.cfg.warmup_steps)
        return int(self.cfg.warmup_ratio * phase_steps)

    # -------------------------------------------------------------- bookkeeping
    def _track_params(self) -> None:
        n = count_trainable(self.model)
        self.record.trainable_params = n
        self.record.trainable_params_peak = max(self.record.trainable_params_peak, n)

    def evaluate(self, ctx: TrainContext, epoch: float) -> dict:
        self.last_eval_step = ctx.step
        metrics = self.method.evaluate(lambda: self.task.evaluate(self.model, self.accelerator, self.cfg.eval_batch_size))
        state = self.method.state()
        entry = {"step": ctx.step, "phase": ctx.phase, "epoch": round(epoch, 3), "metrics": metrics,
                 "trainable_params": count_trainable(self.model), **state}
        self.record.history.append(entry)
        self.record.metrics = metrics
        if metrics["main"] > self.best_main:
            self.best_main = metrics["main"]
            self.record.best_metrics = dict(metrics, step=ctx.step, phase=ctx.phase)
            self.best_state = trainable_state(self.model)
            if self.output_dir is not None and self.cfg.get("save_adapters", True):
                save_state(self.best_state, self.output_dir / "best_trainable.pt")
        self.tracker.log({f"eval/{k}": v for k, v in metrics.items()}, ctx.step)
        self.tracker.log_state(state, ctx.step)
        log.info("step %d phase %d: %s", ctx.step, ctx.phase,
                 " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        return metrics

    # -------------------------------------------------------------------- loop
    def fit(self) -> RunRecord:
        acc, cfg, method = self.accelerator, self.cfg, self.method
        phase_steps = self.phase_steps()
        total = phase_steps * method.num_phases
        ctx = TrainContext(model=self.model, phase_steps=phase_steps, total_steps=total,
                           epoch_steps=self.steps_per_epoch(), log=lambda m: self.tracker.log(m, ctx.step))
        bar = tqdm(total=total, desc="train", dynamic_ncols=True, mininterval=1, disable=None)
        start = time.time()
        for phase in range(method.num_phases):
            ctx.phase, ctx.phase_step, ctx.best_state = phase, 0, self.best_state
            method.on_phase_start(ctx)
            self._track_params()
            optimizer = method.build_optimizer(self.model, cfg)
            optimizer = acc.prepare_optimizer(optimizer, device_placement=False)
            scheduler = get_linear_schedule_with_warmup(optimizer.optimizer, self.warmup_steps(phase_steps), phase_steps)
            ctx.optimizer = optimizer
            bar.set_description(f"phase {phase + 1}/{method.num_phases}" if method.num_phases > 1 else "train")
            self.model.train()
            running = torch.zeros((), device=acc.device)  # summed on device: no GPU sync per step
            epoch = 0
            while ctx.phase_step < phase_steps:
                for i, micro_batches in enumerate(self.epoch_steps(phase, epoch)):
                    method.on_step_start(ctx)
                    for batch in micro_batches:
                        batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
                        with acc.autocast():
                            loss = self.model(**batch).loss
                            extra = method.extra_loss()
                            if extra is not None:
                                loss = loss + extra
                        # The step's gradient is the mean over its micro-batches (fewer in an epoch's last step).
                        acc.backward(loss / len(micro_batches))
                        running += loss.detach().float() / len(micro_batches)
                    self._optimizer_step(optimizer, scheduler, ctx)
                    bar.update(1)
                    if ctx.step % cfg.log_every == 0:  # the mean loss since the last log
                        mean_loss = running.item() / cfg.log_every
                        bar.set_postfix(loss=f"{mean_loss:.4f}")
                        self.tracker.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0],
                                          "train/trainable_params": self.record.trainable_params}, ctx.step)
                        running.zero_()
                    if cfg.eval_every and ctx.step % cfg.eval_every == 0:
                        self.evaluate(ctx, epoch + (i + 1) / self.steps_per_epoch())
                    if ctx.phase_step >= phase_steps:
                        break
                epoch += 1
                if self.last_eval_step != ctx.step:
                    self.evaluate(ctx, epoch)
            method.on_phase_end(ctx)
            self._track_params()
            self.record.history.append({"phase_end": phase, "step": ctx.step, **method.state(),
                                        "trainable_params": count_trainable(self.model)})
        bar.close()
        if acc.device.type == "cuda":
            self.record.peak_memory_bytes = torch.cuda.max_memory_allocated(acc.device)
        log.info("trained %d steps in %.1fs", ctx.step, time.time() - start)
        if self.output_dir is not None and cfg.get("save_adapters", True):
            save_state(trainable_state(self.model), self.output_dir / "final_trainable.pt")
        return self.record

    def _optimizer_step(self, optimizer, scheduler, ctx: TrainContext) -> None:
        acc, cfg = self.accelerator, self.cfg
        # Grads the methods read (importance scores, ω) must be true grads, also under fp16.
        ctx.grad_scale = acc.scaler.get_scale() if acc.scaler is not None else 1.0  # fp16 only: syncs
        acc.unscale_gradients(optimizer=optimizer)
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            params = [p for g in optimizer.param_groups for p in g["params"]] + self.method.clip_parameters()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.method.before_optimizer_step(ctx)
        optimizer.step()
        ctx.step_skipped = bool(getattr(optimizer, "step_was_skipped", False))  # fp16 overflow
        ctx.step += 1
        ctx.phase_step += 1
        self.record.steps = ctx.step
        remaps = self.method.after_optimizer_step(ctx)
        if remaps:
            apply_remaps(optimizer, remaps)
            self._track_params()
        scheduler.step()  # after the hook: methods read the learning rate this step used
        self.model.zero_grad(set_to_none=True)
