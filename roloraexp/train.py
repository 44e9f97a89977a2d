"""The training loop: phases × epochs × optimizer steps, on accelerate (device, AMP, DDP).

It knows nothing of any method (see methods/base.py for the hooks it calls) or task (it only
calls ``model(**batch).loss`` and ``task.evaluate``). Everything it learns goes into ``record``
as it happens, so a run that dies still leaves its history behind, and it writes a checkpoint of
the whole run (resume.py) at every evaluation, every phase end and when a stop signal arrives, so
a run that dies continues where it stopped.

The position of a run is (phase, epoch, optimizer steps done in that epoch). Every step, with its
evaluations and its checkpoint, is finished before the position moves on, so a checkpoint always
marks a clean step boundary; the data order of any epoch is a function of (seed, phase, epoch).
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import distributed as dist
from .adapters import apply_remaps
from .checkpoint import load_trainable_state, save_state, trainable_state
from .config import check_section
from .errors import ConfigError
from .lr_schedule import linear_warmup_decay
from .methods.base import TrainContext, count_trainable
from .methods.on_device import all_finite
from .precision import CastForward, forward_context, resolve_amp_mode
from .preemption import Preempted, StopSignals
from .resume import (CHECKPOINT, config_identity, load_optimizer_state, optimizer_state, rng_state, save_checkpoint,
                     set_rng_state)

log = logging.getLogger(__name__)


class NumericalFault(RuntimeError):
    """A non-finite loss or weight: the run cannot go on (a step the fp16 scaler skipped is not one)."""


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
    skipped_steps: int = 0  # fp16: optimizer steps the loss scaler skipped (overflowing gradients)
    world_size: int = 1
    resumed_from: list = field(default_factory=list)  # {"step", "checkpoint"} per resume
    train_curve: list = field(default_factory=list)  # {"step", "loss", "lr"} at every log point
    # Throughput: seconds in training steps (evaluations, checkpoints and phase ends left out) and the
    # examples and input tokens (padding excluded) they trained on, summed over processes at the end.
    train_seconds: float = 0.0
    train_examples: int = 0
    train_tokens: int = 0
    amp_mode: str = "none"  # none (fp32) | autocast | cast (roloraexp/precision.py)
    compile: dict = field(default_factory=dict)  # {"enabled", "backend", "mode", "graphs", "graph_breaks"}


def examples_and_tokens(batch: dict) -> tuple[int, int]:
    """Examples in a batch and its input tokens, padding excluded (0 for inputs that are no token ids)."""
    mask, ids = batch.get("attention_mask"), batch.get("input_ids")
    tokens = int(mask.sum()) if mask is not None else ids.numel() if ids is not None else 0
    return len(next(iter(batch.values()))), tokens


def compile_enabled(cfg, device: torch.device) -> bool:
    """``trainer.compile``: auto compiles on CUDA (a base-size step is bound by kernel launches there)
    and not on CPU (a compile costs more than the short CPU runs it would speed up)."""
    setting = cfg.get("compile", False)
    return device.type == "cuda" if setting == "auto" else bool(setting)


def loader_workers(cfg, device: torch.device) -> int:
    """``trainer.num_workers``: auto collates in two worker processes on CUDA (the step does not wait
    for its batch) and in the main process on CPU (where the workers would take the step's cores)."""
    workers = cfg.get("num_workers", 0)
    return (2 if device.type == "cuda" else 0) if workers == "auto" else int(workers)


def compiled_graphs() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process (dynamo's counters; reset() keeps them)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def hold_frozen_in(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Under AMP, keep the frozen weights in the compute dtype once, instead of letting autocast
    cast every one of them at every step (a launch-bound step then costs more than fp32). What trains
    (adapters, heads) keeps its fp32 master weights; autocast casts those small tensors down."""
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in own):
            # One dtype per module: a frozen weight beside a trained bias (BitFit) stays fp32, or CPU
            # autocast's layer_norm meets a bf16 weight and an fp32 bias and fails.
            continue
        for p in own:
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing, non-reentrant (transformers 5 renamed the method; older ones have the old name)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def steps_per_epoch(cfg, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch: the batches each process gets (dealt round-robin), grouped by grad_accum."""
    batches = math.ceil(n_train / cfg.batch_size)
    return math.ceil(math.ceil(batches / world_size) / cfg.grad_accum)


def phase_steps(cfg, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps per phase: ``trainer.max_steps`` when set, else ``trainer.epochs`` epochs."""
    if cfg.max_steps and cfg.max_steps > 0:
        return int(cfg.max_steps)
    return steps_per_epoch(cfg, n_train, world_size) * int(cfg.epochs)


class Trainer:
    def __init__(self, model, task, method, cfg_trainer, tracker, record: RunRecord, output_dir: Path | None,
                 seed: int, accelerator=None, checkpoint: dict | None = None, run_config=None):
        if accelerator is None:  # a Trainer used on its own (notebooks, tests): devices from the config
            accelerator = dist.make_accelerator(cfg_trainer)
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
        self.compile = compile_enabled(cfg_trainer, accelerator.device)
        self.graphs_at_start = compiled_graphs()
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
        self.lengths = None  # the training examples' lengths (trainer.group_by_length), read once
        self.train_model = model  # the module the training forward goes through (a DDP wrapper on several processes)
        # The step (1-based) of the first non-finite loss, kept on the device: no sync per step.
        self.bad_loss_step = torch.full((), -1, dtype=torch.long, device=accelerator.device)
        self.skipped_steps = torch.zeros((), dtype=torch.long, device=accelerator.device)  # fp16, on the device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ------------------------------------------------------------------ data
    def epoch_order(self, phase: int, epoch: int) -> torch.Tensor:
        """The order of the training examples in one epoch: a permutation drawn from (seed, phase,
        epoch) alone, so every epoch is reshuffled (as HF Trainer does) and a run is reproducible
        (a resumed run can rebuild any epoch's order)."""
        key = np.random.SeedSequence([self.seed, phase, epoch]).generate_state(2, dtype=np.uint64)
        gen = torch.Generator().manual_seed(int(key[0] ^ key[1]) & ((1 << 63) - 1))
        order = torch.randperm(len(self.task.train_dataset), generator=gen)
        return self.grouped_by_length(order) if self.cfg.get("group_by_length", False) else order

    def grouped_by_length(self, order: torch.Tensor) -> torch.Tensor:
        """``trainer.group_by_length``: the shuffled order cut into mega-batches of 50 global batches,
        each sorted by length, longest first (transformers' LengthGroupedSampler): a batch holds
        examples of similar length, so little of it is padding (SST-2: ~3x fewer tokens computed),
        while which examples meet in a mega-batch stays random."""
        if self.lengths is None:
            if not isinstance(self.task.train_dataset[0], dict) or "input_ids" not in self.task.train_dataset[0]:
                raise ConfigError(f"trainer.group_by_length needs tokenised examples (input_ids); "
                                  f"{type(self.task).__name__}'s have none")
            self.lengths = torch.tensor([len(f["input_ids"]) for f in self.task.train_dataset])
        size = 50 * self.cfg.batch_size * self.cfg.grad_accum * self.accelerator.num_processes
        groups = [g[torch.argsort(self.lengths[g], descending=True, stable=True)] for g in order.split(size)]
        return torch.cat(groups)

    def epoch_steps(self, phase: int, epoch: int, skip: int = 0):
        """The optimizer steps of one epoch from step ``skip`` on, each a list of ``grad_accum``
        micro-batches. An epoch whose batches do not divide by grad_accum ends with a shorter step
        over the leftover micro-batches, as HF Trainer does: leftovers never merge into the next
        epoch's first step. On several processes the batches are dealt round-robin (accelerate)."""
        world = self.accelerator.num_processes
        order = self.epoch_order(phase, epoch)[skip * self.cfg.grad_accum * self.cfg.batch_size * world:]
        # A generator of its own: a DataLoader otherwise draws its base seed from the global RNG, which
        # would make dropout after a resume differ from the uninterrupted run.
        loader = DataLoader(self.task.train_dataset, batch_size=self.cfg.batch_size, sampler=order.tolist(),
                            collate_fn=self.task.collate, num_workers=loader_workers(self.cfg, self.accelerator.device),
                            pin_memory=self.accelerator.device.type == "cuda", drop_last=False,
                            generator=torch.Generator())
        if dist.is_distributed(self.accelerator):
            loader = self.accelerator.prepare_data_loader(loader, device_placement=False)
        group = []
        for batch in loader:
            group.append(batch)
            if len(group) == self.cfg.grad_accum:
                yield group
                group = []
        if group:
            yield group

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.cfg, len(self.task.train_dataset), self.accelerator.num_processes)

    def phase_steps(self) -> int:
        return phase_steps(self.cfg, len(self.task.train_dataset), self.accelerator.num_processes)

    def warmup_steps(self, phase_steps: int) -> int:
        """``trainer.warmup_steps`` (absolute, as the papers give it) wins over ``warmup_ratio``.
        Warm-up longer than the phase keeps rising to the end (transformers' get_linear_schedule_with_warmup's
        semantics): the peak lr is then never reached."""
        if self.cfg.get("warmup_steps") is not None:
            return int(self.cfg.warmup_steps)
        return int(self.cfg.warmup_ratio * phase_steps)

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
            torch._dynamo.reset()
            mode = self.cfg.get("compile_mode", "default")
            self.compiles += 1
            self.train_model = torch.compile(self.train_model, backend=self.cfg.get("compile_backend", "inductor"),
                                             mode=None if mode == "default" else mode)
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
            self.best_state = trainable_state(self.model)
            if self.output_dir is not None and self.is_main and self.cfg.get("save_adapters", True):
                save_state(self.best_state, self.output_dir / "best_trainable.pt")
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
    def _param_names(self) -> dict[int, str]:
        return {id(p): n for n, p in self.model.named_parameters()}

    def save_checkpoint(self, ctx: TrainContext, optimizer, scheduler, running) -> None:
        if self.output_dir is None or self.cfg.get("checkpoint_every") == 0 and not self.stop.received:
            return
        self.check_finite()  # never save a broken state to resume from
        if self.is_main:
            started = time.time()
            names = self._param_names()
            save_checkpoint(self.output_dir / CHECKPOINT, {
                "config": config_identity(self.run_config) if self.run_config is not None else {},
                "position": self.position, "phase_started": self.phase_started,
                "ctx": {"step": ctx.step, "phase": ctx.phase, "phase_step": ctx.phase_step},
                "trainable": trainable_state(self.model),
                "trains": sorted(n for n, p in self.model.named_parameters() if p.requires_grad),
                "optimizer": optimizer_state(optimizer, names) if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None,
                "rng": rng_state(), "method": self.method.state_dict(), "record": self.record.__dict__,
                "loop": {"best_main": self.best_main, "best_state": self.best_state,
                         "last_eval_step": self.last_eval_step, "running": running.detach().cpu(),
                         "bad_loss_step": self.bad_loss_step.cpu()},
                "wandb_id": self.tracker.run_id,
            })
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

    def restore(self, ctx: TrainContext) -> None:
        """Everything but the optimizer (built per phase): tensors, method, record, loop, position."""
        ck = self.checkpoint
        load_trainable_state(self.model, ck["trainable"])
        trains = set(ck["trains"])
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in trains)
        self.method.load_state_dict(ck["method"])
        self.record.__dict__.update({k: v for k, v in ck["record"].items() if k != "world_size"})
        loop = ck["loop"]
        self.best_main, self.best_state, self.last_eval_step = loop["best_main"], loop["best_state"], loop["last_eval_step"]
        self.bad_loss_step = loop["bad_loss_step"].to(self.accelerator.device)
        self.skipped_steps.fill_(self.record.skipped_steps)
        self.position, self.phase_started = tuple(ck["position"]), ck["phase_started"]
        ctx.step, ctx.phase, ctx.phase_step = ck["ctx"]["step"], ck["ctx"]["phase"], ck["ctx"]["phase_step"]
        self.record.resumed_from.append({"step": ctx.step, "checkpoint": str(self.output_dir / CHECKPOINT)
                                         if self.output_dir is not None else None})
        log.info("resuming after step %d/%d (phase %d/%d, epoch %d, step %d of the epoch)", ctx.step, ctx.total_steps,
                 self.position[0] + 1, self.method.num_phases, self.position[1] + 1, self.position[2])
        if not self.phase_started:  # saved at a phase end: the next phase's start draws from the generators
            set_rng_state(ck["rng"])

    # -------------------------------------------------------------------- loop
    def fit(self) -> RunRecord:
        acc, cfg, method = self.accelerator, self.cfg, self.method
        phase_steps = self.phase_steps()
        total = phase_steps * method.num_phases
        ctx = TrainContext(model=self.model, phase_steps=phase_steps, total_steps=total,
                           epoch_steps=self.steps_per_epoch(), log=lambda m: self.tracker.log(m, ctx.step))
        if self.checkpoint is not None:
            self.restore(ctx)
        bar = tqdm(total=total, initial=ctx.step, desc="train", dynamic_ncols=True, mininterval=1,
                   disable=None if self.is_main else True)
        start, first_step = time.time(), ctx.step
        with StopSignals() as self.stop:
            for phase in range(self.position[0], method.num_phases):
                self._run_phase(phase, ctx, bar)
        bar.close()
        self.check_finite()
        graphs, breaks = (now - then for now, then in zip(compiled_graphs(), self.graphs_at_start))
        self.record.compile = {"enabled": self.compile, "backend": self.cfg.get("compile_backend", "inductor"),
                               "mode": self.cfg.get("compile_mode", "default"), "wraps": self.compiles,
                               "graphs": graphs, "graph_breaks": breaks}
        self.record.train_examples, self.record.train_tokens = dist.total(acc, self.record.train_examples,
                                                                          self.record.train_tokens)
        if acc.device.type == "cuda":
            self.record.peak_memory_bytes = torch.cuda.max_memory_allocated(acc.device)
        # This process's steps (after a resume, the run's total is more: both are said).
        done_here = ctx.step - first_step
        log.info("trained %d steps in %.1fs%s", done_here, time.time() - start,
                 f" ({ctx.step} in the run, {first_step} before the resume)" if first_step else "")
        if self.output_dir is not None and self.is_main and cfg.get("save_adapters", True):
            save_state(trainable_state(self.model), self.output_dir / "final_trainable.pt")
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
        scheduler = linear_warmup_decay(optimizer.optimizer, self.warmup_steps(phase_steps), phase_steps)
        running = torch.zeros((), device=acc.device)  # summed on device: no GPU sync per step
        if resumed:
            self._restore_optimizer(optimizer, scheduler, running)
        self.checkpoint = None  # consumed: later phases start fresh
        ctx.optimizer = optimizer
        bar.set_description(f"phase {phase + 1}/{method.num_phases}" if method.num_phases > 1 else "train")
        self.model.train()
        per_epoch = self.steps_per_epoch()
        _, epoch, skip = self.position
        self.clock = time.perf_counter()
        while ctx.phase_step < phase_steps:
            for i, micro_batches in enumerate(self.epoch_steps(phase, epoch, skip), start=skip):
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

    def _restore_optimizer(self, optimizer, scheduler, running) -> None:
        ck = self.checkpoint
        where = self.output_dir / CHECKPOINT if self.output_dir is not None else CHECKPOINT
        if ck["optimizer"] is not None:
            load_optimizer_state(optimizer, ck["optimizer"], self._param_names(), where)
            scheduler.load_state_dict(ck["scheduler"])
        if ck["scaler"] is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(ck["scaler"])
        running.copy_(ck["loop"]["running"])
        set_rng_state(ck["rng"])  # last: building the optimizer must not shift the generators

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
