"""One run: compose → build → train → evaluate → results.json. Reads top to bottom.

    python -m roloraexp.run method=rolora task=rte -m seed=1,2,3,4,5
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, DataError
from .folder_guard import (FolderRefused, acquire, completed_before, release, set_aside_other_run,
                           took_over, unusable)
from .results import RESULTS_FILE, RunRecord, RunResult

log = logging.getLogger("roloraexp")
# Write errors that are the disk's or the folder's, not the code's: one line, no traceback.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> RunResult:
    """Run one configuration; always writes ``results.json`` (``status`` completed, failed or
    preempted). A run folder that holds a checkpoint of this config resumes from it
    (``trainer.resume=auto``); one that holds a completed results.json of it is left as it is. A folder
    that another live run holds is refused: nothing is written there (``status`` refused, returned only)."""
    out = Path(output_dir) if output_dir is not None else Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    result = RunResult(status="running", task=cfg.task.name, method=cfg.method.name, model=cfg.model.name,
                       seed=cfg.seed, table=cfg.get("table"))
    try:  # one run per folder, held before anything is written (a single run's: cli() took it before Hydra)
        lock = acquire(out)
    except FolderRefused as e:
        leave_run_log(out)
        result.end("refused", str(e))
        return result
    except OSError:  # an unwritable folder: check_output_dir says so below, in one line
        lock = None
    main_process = keep_other_processes_quiet()
    started, parts, preempted = time.time(), Parts(), None
    try:
        check_output_dir(out)
        prepare_config(cfg)
        done = completed_before(cfg, out)
        if done is not None:
            log.info("%s already holds a completed run of this config; nothing to do (trainer.resume=never runs it "
                     "again)", out / RESULTS_FILE)
            return done
        set_aside_other_run(cfg, out, log)
        build(cfg, out, result, parts).fit()
        result.end("completed")
        if main_process and not cfg.trainer.get("keep_checkpoint", False):
            from .checkpoint import remove_checkpoints

            remove_checkpoints(out)  # done: results.json and the adapter files are what stays
    except KeyboardInterrupt:
        result.end("failed", "interrupted")
        raise
    except Exception as e:  # a sweep goes on past a failed job; the traceback (if any) goes to the run's log
        preempted = record_failure(result, e, out)
    finally:
        if result.status != "refused" and (result.status != "running" or parts.method is not None):
            finish(result, cfg, parts, time.time() - started, out if main_process else None)
        if parts.tracker is not None:
            parts.tracker.summarize(result.to_dict())
            parts.tracker.finish(exit_code=0 if result.completed else 1)
        release(lock)
    if preempted is not None:
        preempted.hand_over()  # after results.json: submitit requeues, or the process exits 128 + signal
    return result


@dataclass
class Parts:
    """What a run has built so far: results.json records the record and method's state even after a failure."""
    record: RunRecord = field(default_factory=RunRecord)
    method: object = None
    tracker: object = None


def build(cfg: DictConfig, out: Path, result: RunResult, parts: Parts):
    """Task, method, data, tokenizer, model and adapters, in the order that finds a mistake cheapest
    (configs before data, data before the tokenizer, every prepare-time check on a weightless
    skeleton before the weights load); the Trainer that trains them, restored from a checkpoint."""
    # Heavy imports here, so `--help` and config errors answer fast.
    from accelerate.utils import set_seed

    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .data_order import phase_steps
    from .distributed import make_accelerator
    from .methods import build_method
    from .methods.base import count_trainable
    from .models import load_model, load_tokenizer, max_input_length, model_config
    from .tasks import build_task
    from .tasks.collate import resolve_buckets
    from .tracking import Tracker
    from .train import Trainer

    set_seed(cfg.seed)
    task = build_task(cfg)
    parts.method = method = build_method(cfg)  # validates the method's options before any data or model is read
    task.read()  # data problems surface before any tokenizer or model is loaded
    result.data = task.data_report  # per split: the file, rows kept and skipped_rows
    tokenizer = load_tokenizer(cfg.model)
    config = model_config(cfg.model, tokenizer, task)
    task.max_input_length = max_input_length(config, tokenizer)
    targets, dry = check_targets(cfg, task, config)  # on a weightless skeleton: every prepare-time check
    task.load(tokenizer)
    # trainer.pad_buckets: batches padded to a few fixed widths (compiled graphs are reused).
    task.pad_buckets = resolve_buckets(cfg.trainer.get("pad_buckets"), task.max_length)
    steps = phase_steps(cfg.trainer, len(task.train_dataset), int(os.environ.get("WORLD_SIZE", "1")))
    dry.check_steps(steps, steps * dry.num_phases)
    accelerator = make_accelerator(cfg.trainer)
    result.precision = {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision)
    path = resolve_checkpoint(cfg.trainer, out)
    checkpoint = load_checkpoint(path, cfg, accelerator.device) if path is not None else None
    # Before the model load: a W&B that cannot start (logger=online without a login) is one line now.
    parts.tracker = Tracker(cfg.logger, cfg, out, name=f"{cfg.task.name}-{cfg.method.name}-s{cfg.seed}",
                            resume_id=checkpoint.get("wandb_id") if checkpoint else None,
                            enabled=accelerator.is_main_process)
    building = time.perf_counter()
    model, _ = load_model(cfg.model, task, tokenizer, device=accelerator.device)
    method.prepare(model, targets)
    result.build_seconds = round(time.perf_counter() - building, 2)  # model load (or creation) and adapters
    result.adapter_shapes = {n: {"d_in": a.in_features, "d_out": a.out_features} for n, a in method.adapters.items()}
    # count_trainable(a), not a.num_adapter_params(): an "adapter" may be a plain module whose own
    # weights train (GaLore's target layers); for LowRankLinear the two agree (its base is frozen).
    result.head_params = count_trainable(model) - sum(count_trainable(a) for a in method.adapters.values())
    return Trainer(model, task, method, cfg.trainer, parts.tracker, parts.record, out, cfg.seed,
                   accelerator=accelerator, checkpoint=checkpoint, run_config=cfg)


def keep_other_processes_quiet() -> bool:
    """Whether this is process 0 (only it writes); the other processes of a data-parallel run say
    only what goes wrong. SLURM's variables become torch.distributed's first."""
    from .distributed import export_slurm_env

    export_slurm_env()
    if int(os.environ.get("RANK", "0")) == 0:
        return True
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
    return False


def prepare_config(cfg: DictConfig) -> None:
    """Every setting's type and range (roloraexp/config.py), one line each; ``data_dir`` made absolute:
    results.json (export --check, the report) is read from anywhere."""
    from .config import check as check_config

    if cfg.get("data_dir") and not Path(str(cfg.data_dir)).expanduser().is_absolute():
        cfg.data_dir = str(Path(str(cfg.data_dir)).expanduser().resolve())
    check_config(cfg)


def record_failure(result: RunResult, e: Exception, out: Path):
    """``e`` as the result's status and one-line error; returns a Preempted to hand over, else None."""
    from .preemption import Preempted
    from .train import NumericalFault

    if isinstance(e, FolderRefused):  # another config's results that cannot be set aside: nothing is written
        result.end("refused", str(e))
    elif isinstance(e, (ConfigError, DataError, NumericalFault)):
        result.end("failed", str(e))
    elif isinstance(e, Preempted):
        result.end("preempted", str(e))
        return e
    elif isinstance(e, OSError) and e.errno in DISK_ERRORS:  # the disk, not the code: one line naming the file
        result.end("failed", f"cannot write {e.filename or out}: {e.strerror} (free space or use another "
                             f"hydra.run.dir; the run resumes from its checkpoint)")
    else:
        result.end("failed", f"{type(e).__name__}: {e}".splitlines()[0])
        log.error("run failed:\n%s", traceback.format_exc())
    return None


def finish(result: RunResult, cfg: DictConfig, parts: Parts, seconds: float, out: Path | None) -> None:
    """The result completed from what the run learned, written to ``out``/results.json (process 0)."""
    from .provenance import provenance

    method = parts.method
    result.take_record(parts.record, method.state() if method is not None else {},
                       method.history if method is not None else [])
    result.wall_time_s = round(seconds, 2)
    result.config = OmegaConf.to_container(cfg, resolve=True)
    result.provenance = provenance()
    if out is not None:
        try:
            result.write(out / RESULTS_FILE)
        except OSError as e:  # the folder itself is the problem (the error says so)
            log.error("cannot write %s: %s", out / RESULTS_FILE, e)


def check_output_dir(out: Path) -> None:
    """The run folder must be writable: found now, not after an hour of training. A stale lock this
    run took over (its owner died) is said in the run's log."""
    problem = unusable(out)
    if problem:
        raise ConfigError(problem)
    stale = took_over(out)
    if stale:
        log.warning("took over a stale lock: %s", stale)


def leave_run_log(out: Path) -> None:
    """A refused run stops writing to the folder's run.log (Hydra opened it before the run could look)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == out.resolve():
            root.removeHandler(handler)
            handler.close()


def check_targets(cfg: DictConfig, task, config):
    """The adapted modules, and every check a method makes when it injects its adapters (ranks against
    the matrices, K against the adapters, ...), on a weightless copy of the model: a mistake costs
    seconds, not a model load. Returns the module names and that trial method (for check_steps)."""
    import torch

    from .adapters import find_target_modules
    from .methods import build_method
    from .models import HEADS, head_prefixes

    targets = cfg.method.get("target_modules") or cfg.model.get("target_modules")
    if not targets:
        raise ConfigError(f"no target modules: set method.target_modules or model.target_modules for {cfg.model.name}")
    with torch.device("meta"):
        skeleton = HEADS[task.head].from_config(config)
    names = find_target_modules(skeleton, targets, exclude=head_prefixes(skeleton, cfg.model.arch))
    trial = build_method(cfg)
    trial.prepare(skeleton, names)
    return names, trial


def print_summary(result: RunResult, out: Path) -> None:
    """The final metrics as a small table on stdout; a run that did not complete shows its status, not
    metrics, and main() prints its error once, below, as ``error: ...``."""
    rows = [("task / method / model", f"{result.task} / {result.method} / {result.model}"), ("status", result.status)]
    for k, v in (result.metrics if result.completed else {}).items():
        best = result.best_metrics.get(k)
        rows.append((k, f"{v:.4f}" + (f"   (best {best:.4f})" if isinstance(best, float) else "")))
    skipped = {k: d for k, d in (result.data or {}).items() if d.get("skipped_rows")}
    if skipped:  # damaged data the run went past (task.max_bad_rows): part of what the metrics mean
        rows.append(("skipped data rows", ", ".join(f"{k}: {d['skipped_rows']} of {d['rows'] + d['skipped_rows']}"
                                                    for k, d in skipped.items())))
    ranks = result.method_state.get("ranks") or {}
    if ranks:
        rows.append(("mean rank", f"{sum(ranks.values()) / len(ranks):.2f} over {len(ranks)} adapters"))
    rows += [("trainable params (final / peak)", f"{result.trainable_params:,} / {result.trainable_params_peak:,}"),
             ("steps / wall time", f"{result.steps} / {result.wall_time_s:.1f}s")]
    speed = result.throughput
    if speed.get("tokens_per_s"):
        rows.append(("training speed", f"{speed['tokens_per_s']:,.0f} tokens/s, {speed['examples_per_s']:,.1f} examples/s "
                                       f"({speed['train_seconds']:.1f}s in training steps)"))
    rows.append(("results", str(out / RESULTS_FILE)))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


# An absolute path: the same configs whether the run starts as `python -m roloraexp.run`, from a
# console script or from another module that imports this one.
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    out = Path(HydraConfig.get().runtime.output_dir)
    result = run(cfg, out)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        from .sweeps.summary import record

        record(HydraConfig.get(), out, result)  # for the summary at the sweep's end
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    if result.status != "refused":  # a refused run has no results of its own to show
        print_summary(result, out)
    if not result.completed:
        sys.stdout.flush()  # the summary, then its error
        print(f"error: {result.error}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on past a failed job
            raise SystemExit(1)
        return None
    return result.metrics.get("main")


def cli() -> None:
    """``python -m roloraexp.run [overrides] [-m] [overrides]``: Hydra's command line, with flags and
    overrides in any order and unknown config names caught before anything runs (roloraexp/cli.py)."""
    from .cli import NO_RUN, config_dirs, group_choice_errors, is_multirun, share_run_stamp, split_args

    flags, overrides = split_args(sys.argv[1:])
    errors = group_choice_errors(overrides, config_dirs(flags, overrides))
    if errors:
        print("\n".join(f"error: {e}" for e in errors), file=sys.stderr)
        raise SystemExit(2)
    sys.argv[1:] = flags + overrides
    share_run_stamp()
    if any(f.split("=", 1)[0] in NO_RUN for f in flags):
        main()
    elif is_multirun(flags, overrides):
        from .sweeps.summary import run_sweep

        code = run_sweep(main, flags, overrides)  # every job's status at the end; non-zero if one failed
        if code:
            raise SystemExit(code)
    else:
        run_in_held_folder(flags, overrides)


def run_in_held_folder(flags: list[str], overrides: list[str]) -> None:
    """One run, its folder held from before Hydra writes there (.hydra/, run.log) to the end: a second
    run into a held folder stops in one line and leaves the folder as it was."""
    from .cli import compose_hydra, fixed_run_stamp

    lock = None
    with fixed_run_stamp():  # the folder composed here is the one Hydra makes
        try:
            cfg = compose_hydra(flags, overrides)
            if cfg is not None and str(cfg.hydra.get("mode")) != "RunMode.MULTIRUN":  # a config may ask for a sweep
                try:
                    folder = Path(str(cfg.hydra.run.dir))
                except Exception:  # a folder only Hydra's launcher can resolve: it says why, if it cannot
                    folder = None
                try:
                    problem = unusable(folder) if folder is not None else None  # Hydra: a traceback
                    if problem:
                        raise FolderRefused(problem)
                    lock = acquire(folder) if folder is not None else None
                except FolderRefused as e:
                    print(f"error: {e}", file=sys.stderr)
                    raise SystemExit(1) from None
            main()
        finally:
            release(lock)


if __name__ == "__main__":
    cli()
