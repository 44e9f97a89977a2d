"""The training loop: phases × epochs × optimizer steps, on accelerate (device, AMP, DDP).

It knows nothing of any method (see methods/base.py for the hooks it calls) or task (it only
calls ``model(**batch).loss`` and ``task.evaluate``); which examples each step sees is
data_order.py's. Everything it learns goes into ``record`` (results.RunRecord) as it happens, so a
run that dies still leaves its history behind, and it writes a checkpoint of the whole run
(checkpoint.py) at every evaluation, every phase end and when a stop signal arrives, so a run that
dies continues where it stopped.

The position of a run is (phase, epoch, optimizer steps done in that epoch). Every step, with its
evaluations and its checkpoint, is finished before the position moves on, so a checkpoint always
marks a clean step boundary; the data order of any epoch is a function of (seed, phase, epoch).
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import compilation
from . import distributed as dist
from .adapters import apply_remaps
from .config import check_section
from .data_order import TrainingOrder, examples_and_tokens, warmup_steps
from .folder_guard import BEST_STATE, CHECKPOINT, FINAL_STATE
from .lr_schedule import linear_warmup_decay
from .methods.base import TrainContext, count_trainable
from .methods.on_device import all_finite
from .models import enable_checkpointing
from .precision import CastForward, forward_context, hold_frozen_in, resolve_amp_mode
from .preemption import Preempted, StopSignals
from .results import RunRecord

log = logging.getLogger(__name__)


class NumericalFault(RuntimeError):
    """A non-finite loss or weight: the run cannot go on (a step the fp16 scaler skipped is not one)."""


class Silent:
    """The tracker of a Trainer used on its own: it logs nothing (run() passes tracking.Tracker)."""

    def log(self, metrics: dict, step: int) -> None:
        pass

    def log_state(self, state: dict, step: int) -> None:
        pass


class Trainer:
    def __init__(self, model, task, method, cfg_trainer, tracker=None, record: RunRecord | None = None,
                 output_dir: Path | None = None, seed: int = 0, *, accelerator=None, checkpoint: dict | None = None,
                 run_config=None):
        """A Trainer used on its own (notebooks, tests) needs only the first four: no tracker, a fresh
        record, nothing written (no output_dir), devices from the config. run() passes everything."""
        if accelerator is None:
            accelerator = dist.make_accelerator(cfg_trainer)
        record = RunRecord() if record is None else record
        tracker = Silent() if tracker is None else tracker
        self.model, self.task, self.method, self.cfg = model, task, method, cfg_trainer
        self.tracker, self.record, self.output_dir, self.seed = tracker, record, output_dir, seed
        self.accelerator, self.checkpoint, self.run_config = accelerator, checkpoint, run_config
        check_section(cfg_trainer, "trainer")
        self.model.to(self.accelerator.device)
        self.amp_mode = record.amp_mode = resolve_amp_mode(cfg_trainer.get("amp_mode", "auto"),
                                                           accelerator.mixed_precision, model,
                                                           bool(cfg_trainer.get("gradient_checkpointing", False)))
        self.cast = None
        if self.amp_mode != "none":
            dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float16
            hold_frozen_in(self.model, dtype)
            self.cast = CastForward(self.model, dtype) if self.amp_mode == "cast" else None
        self.compile = compilation.compile_enabled(cfg_trainer, accelerator.device)
        self.graphs_at_start = compilation.compiled_graphs()
        self.compiles = 0  # torch.compile wrappers made (one per rewrap): each may compile a graph or two
        if cfg_trainer.get("gradient_checkpointing", False):
            # Non-reentrant: adapters inside a checkpointed block get gradients although the block's
            # input (frozen embeddings) does not require any.
            enable_checkpointing(self.model)
        self.record.world_size = accelerator.num_processes
        self.best_main = -math.inf
        self.best_state = None
        self.last_eval_step = -1
        self.position = (0, 0, 0)  # (phase, epoch, steps done in the epoch)
        self.phase_started = False  # on_phase_start has run for self.position's phase
        self.last_checkpoint = time.time()
        self.clock = time.perf_counter()  # start of the training time not yet in record.train_seconds
        self.data = TrainingOrder(task, cfg_trainer, seed, accelerator)
        self.train_model = model  # the module the training forward goes through (a DDP wrapper on several processes)
        # The step (1-based) of the first non-finite loss, kept on the device: no sync per step.
        self.bad_loss_step = torch.full((), -1, dtype=torch.long, device=accelerator.device)
        self.skipped_steps = torch.zeros((), dtype=torch.long, device=accelerator.device)  # fp16, on the device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # -------------------------------------------------------------- bookkeeping
    def _track_params(self) -> None:
        n = count_trainable(self.model)
        self.record.trainable_params = n
        self.record.trainable_params_peak = max(self.record.trainable_params_peak, n)

    def _rewrap(self) -> None:
        """After anything that replaced parameters or changed which ones train: a new DDP wrapper,
        compiled again with ``trainer.compile`` (the graphs of the old shapes are stale), and the
        check that every process holds the same rank configuration."""
        varying = getattr(self.method, "varying_graph", False)
        unused = varying or any(p.requires_grad and p.numel() == 0 for p in self.model.parameters())
        self.train_model = dist.wrap(self.accelerator, self.model, find_unused=unused, autocast=self.amp_mode == "autocast")
        if self.cast is not None:  # the masters to cast are the parameters the model holds now
            self.cast.refresh()
        if self.compile:
            self.compiles += 1
            self.train_model = compilation.compile_module(self.train_model, self.cfg)
        dist.check_same(self.accelerator, "the rank configuration", self.method.ranks())

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
            self.best_state = ckpt.trainable_state(self.model)
            if self.output_dir is not None and self.is_main and self.cfg.get("save_adapters", True):
                ckpt.save_state(self.best_state, self.output_dir / BEST_STATE)
        self.tracker.log({f"eval/{k}": v for k, v in metrics.items()}, ctx.step)
        self.tracker.log_state(state, ctx.step)
        # Phases on screen count from 1 of N, as in the resume line (results.json's "phase" from 0).
        log.info("step %d/%d (phase %d/%d): %s", ctx.step, ctx.total_steps, ctx.phase + 1, self.method.num_phases,
                 " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        return metrics

    def check_finite(self) -> None:
        """Fail on a non-finite loss (remembered on the device at the step it happened) or weight."""
        bad = int(self.bad_loss_step.item())
        self.record.skipped_steps = int(self.skipped_steps.item())
        if bad >= 0:
            raise NumericalFault(f"non-finite training loss at step {bad} (lower trainer.lr, or check the data)")
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if bool(all_finite([p.detach() for _, p in trainable])):  # one host wait for all weights
            return
        name = next(n for n, p in trainable if not bool(torch.isfinite(p).all()))
        raise NumericalFault(f"non-finite trainable weights in {name} at step {self.record.steps} "
                             f"(lower trainer.lr or trainer.max_grad_norm)")

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self, ctx: TrainContext, optimizer, scheduler, running) -> None:
        """The whole run (checkpoint.payload) into the run folder; every process waits for it."""
        if self.output_dir is None or self.cfg.get("checkpoint_every") == 0 and not self.stop.received:
            return
        self.check_finite()  # never save a broken state to resume from
        if self.is_main:
            started = time.time()
            ckpt.save_checkpoint(self.output_dir / CHECKPOINT, ckpt.payload(self, ctx, optimizer, scheduler, running))
            log.debug("checkpoint at step %d written in %.2fs", ctx.step, time.time() - started)
        self.accelerator.wait_for_everyone()
        self.last_checkpoint = time.time()

    def _poll(self, ctx: TrainContext, evaluated: bool, end_of_epoch: bool) -> tuple[bool, bool]:
        """(a stop signal arrived, a checkpoint is due), the same on every process. On several
        processes the answer is one all-reduce and a host wait, so it is asked only where the loop
        waits anyway (log points, evaluations, epoch ends) and at step-count checkpoints: a signal
        is acted on within ``trainer.log_every`` steps, and the clock's checkpoint (which differs
        between processes) never leaves one process in a barrier the others do not enter."""
        if dist.is_distributed(self.accelerator):
            every = self.cfg.get("checkpoint_every")
            polled = (evaluated or end_of_epoch or ctx.step % self.cfg.log_every == 0
                      or bool(every) and ctx.step % every == 0)
            if not polled:
                return False, False
        return dist.any_process(self.accelerator, self.stop.received is not None, self._checkpoint_due(ctx, evaluated))

    def _checkpoint_due(self, ctx: TrainContext, evaluated: bool) -> bool:
        every = self.cfg.get("checkpoint_every")
        if every == 0:
            return False
        if every:
            return ctx.step % every == 0
        return evaluated or time.time() - self.last_checkpoint > 60 * float(self.cfg.get("checkpoint_minutes", 10))

    # -------------------------------------------------------------------- loop
    def fit(self) -> RunRecord:
        acc, cfg, method = self.accelerator, self.cfg, self.method
        phase_steps = self.data.phase_steps()
        total = phase_steps * method.num_phases
        ctx = TrainContext(model=self.model, phase_steps=phase_steps, total_steps=total,
                           epoch_steps=self.data.steps_per_epoch(), log=lambda m: self.tracker.log(m, ctx.step))
        if self.checkpoint is not None:
            ckpt.restore(self, ctx)
        bar = tqdm(total=total, initial=ctx.step, desc="train", dynamic_ncols=True, mininterval=1,
                   disable=None if self.is_main else True)
        start, first_step = time.time(), ctx.step
        with StopSignals() as self.stop:
            for phase in range(self.position[0], method.num_phases):
                self._run_phase(phase, ctx, bar)
        bar.close()
        self.check_finite()
        self.record.compile = compilation.report(self.cfg, self.compile, self.compiles, self.graphs_at_start)
        self.record.train_examples, self.record.train_tokens = dist.total(acc, self.record.train_examples,
                                                                          self.record.train_tokens)
        if acc.device.type == "cuda":
            self.record.peak_memory_bytes = torch.cuda.max_memory_allocated(acc.device)
        # This process's steps (after a resume, the run's total is more: both are said).
        done_here = ctx.step - first_step
        log.info("trained %d steps in %.1fs%s", done_here, time.time() - start,
                 f" ({ctx.step} in the run, {first_step} before the resume)" if first_step else "")
        if self.output_dir is not None and self.is_main and cfg.get("save_adapters", True):
            ckpt.save_state(ckpt.trainable_state(self.model), self.output_dir / FINAL_STATE)
        return self.record

    def _run_phase(self, phase: int, ctx: TrainContext, bar) -> None:
        acc, cfg, method = self.accelerator, self.cfg, self.method
        phase_steps, resumed = ctx.phase_steps, self.phase_started and self.checkpoint is not None
        if not resumed:
            self.position, ctx.phase, ctx.phase_step, ctx.best_state = (phase, 0, 0), phase, 0, self.best_state
            method.on_phase_start(ctx)
            self.phase_started = True
        ctx.best_state = self.best_state
        self._track_params()
        self._rewrap()
        optimizer = acc.prepare_optimizer(method.build_optimizer(self.model, cfg), device_placement=False)
        scheduler = linear_warmup_decay(optimizer.optimizer, warmup_steps(cfg, phase_steps), phase_steps)
        running = torch.zeros((), device=acc.device)  # summed on device: no GPU sync per step
        if resumed:
            ckpt.restore_optimizer(self, optimizer, scheduler, running)
        self.checkpoint = None  # consumed: later phases start fresh
        ctx.optimizer = optimizer
        bar.set_description(f"phase {phase + 1}/{method.num_phases}" if method.num_phases > 1 else "train")
        self.model.train()
        per_epoch = self.data.steps_per_epoch()
        _, epoch, skip = self.position
        self.clock = time.perf_counter()
        while ctx.phase_step < phase_steps:
            for i, micro_batches in enumerate(self.data.steps(phase, epoch, skip), start=skip):
                self._step(micro_batches, optimizer, scheduler, ctx, running)
                bar.update(1)
                end_of_epoch = i + 1 == per_epoch or ctx.phase_step >= phase_steps
                self.position = (phase, epoch + 1, 0) if end_of_epoch else (phase, epoch, i + 1)
                if ctx.step % cfg.log_every == 0:  # the mean loss since the last log
                    self.check_finite()
                    mean_loss = running.item() / cfg.log_every
                    self.record.train_curve.append({"step": ctx.step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0]})
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    self.tracker.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0],
                                      "train/trainable_params": self.record.trainable_params}, ctx.step)
                    running.zero_()
                evaluated = bool(cfg.eval_every and ctx.step % cfg.eval_every == 0) or end_of_epoch
                stop, due = self._poll(ctx, evaluated, end_of_epoch)
                if evaluated or stop or due:
                    self._tick()  # what follows is not training time
                    if evaluated:
                        self.evaluate(ctx, epoch + (i + 1) / per_epoch)
                    if stop or due:
                        self.save_checkpoint(ctx, optimizer, scheduler, running)
                    self.clock = time.perf_counter()
                if stop:
                    raise Preempted(self.stop.received or 15, ctx.step, self.stop.previous(self.stop.received or 15))
                if end_of_epoch:
                    break
            epoch, skip = epoch + 1, 0
        self._tick()
        method.on_phase_end(ctx)
        self._track_params()
        self.record.history.append({"phase_end": phase, "step": ctx.step, **method.state(),
                                    "trainable_params": count_trainable(self.model)})
        self.tracker.log_state(method.state(), ctx.step)  # the ranks each phase ended with (ROLoRA's iterations)
        dist.check_same(acc, "the rank configuration", method.ranks())
        self.position, self.phase_started = (phase + 1, 0, 0), False
        self.save_checkpoint(ctx, None, None, running)

    def _tick(self) -> None:
        """Add the time since the clock was last set to ``train_seconds``, once the device has run the
        steps queued so far (an evaluation or a checkpoint follows: their time is not training's)."""
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize(self.accelerator.device)
        now = time.perf_counter()
        self.record.train_seconds += now - self.clock
        self.clock = now

    def _step(self, micro_batches, optimizer, scheduler, ctx: TrainContext, running) -> None:
        acc, method = self.accelerator, self.method
        method.on_step_start(ctx)
        for j, batch in enumerate(micro_batches):
            examples, tokens = examples_and_tokens(batch)  # on the loader's host tensors: no device sync
            self.record.train_examples += examples
            self.record.train_tokens += tokens
            batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
            # DDP all-reduces the gradients once per optimizer step, at its last micro-batch.
            sync = j == len(micro_batches) - 1 or not dist.is_distributed(acc)
            with nullcontext() if sync else acc.no_sync(self.train_model):
                with forward_context(self.amp_mode, acc, self.cast):
                    loss = self.train_model(**batch).loss
                # Regularisers read the fp32 masters (under autocast, as before, in its own context).
                with acc.autocast() if self.amp_mode == "autocast" else nullcontext():
                    extra = method.extra_loss()
                if extra is not None:
                    loss = loss + extra
                # The step's gradient is the mean over its micro-batches (fewer in an epoch's last step).
                acc.backward(loss / len(micro_batches))
            loss = loss.detach().float()
            self.bad_loss_step = torch.where((self.bad_loss_step < 0) & ~torch.isfinite(loss),
                                             torch.full_like(self.bad_loss_step, ctx.step + 1), self.bad_loss_step)
            running += loss / len(micro_batches)
        self._optimizer_step(optimizer, scheduler, ctx)

    def _optimizer_step(self, optimizer, scheduler, ctx: TrainContext) -> None:
        acc, cfg = self.accelerator, self.cfg
        # Grads the methods read (importance scores, ω) must be true grads, also under fp16.
        scaler = acc.scaler
        # fp16: the scale as a device tensor (get_scale() would wait for the device).
        ctx.grad_scale = scaler._get_scale_async() if scaler is not None else 1.0
        acc.unscale_gradients(optimizer=optimizer)
        if scaler is not None:
            # Whether the scaler skips this step, decided as it decides (non-finite unscaled gradients),
            # on the device: the optimizer (ComponentAdamW) and the hooks act on it with torch.where.
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            ctx.step_skipped = ~all_finite(grads).to(acc.device)
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            params = [p for g in optimizer.param_groups for p in g["params"]] + self.method.clip_parameters()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.method.before_optimizer_step(ctx)
        optimizer.step()
        if scaler is not None:
            self.skipped_steps += ctx.step_skipped.long()  # read with the loss, at log points
            # A step the scaler skipped: an overflowing fp16 loss there is not a fault.
            self.bad_loss_step = torch.where(ctx.step_skipped & (self.bad_loss_step == ctx.step + 1),
                                             torch.full_like(self.bad_loss_step, -1), self.bad_loss_step)
        ctx.step += 1
        ctx.phase_step += 1
        self.record.steps = ctx.step
        remaps = self.method.after_optimizer_step(ctx)
        if remaps:
            apply_remaps(optimizer, remaps)
            self._track_params()
            self._rewrap()
        scheduler.step()  # after the hook: methods read the learning rate this step used
        self.model.zero_grad(set_to_none=True)
