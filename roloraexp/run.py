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
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, DataError
from .folder_guard import FolderRefused, acquire, release, set_aside, took_over, unusable
from .results import read_results, write_json_atomic

log = logging.getLogger("roloraexp")
# Write errors that are the disk's or the folder's, not the code's: one line, no traceback.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run one configuration; always writes ``results.json`` (``status`` completed, failed or
    preempted). A run folder that holds a checkpoint of this config resumes from it
    (``trainer.resume=auto``); one that holds a completed results.json of it is left as it is. A folder
    that another live run holds is refused: nothing is written there (``status`` refused, returned only)."""
    out = Path(output_dir) if output_dir is not None else Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    result = {"status": "running", "task": cfg.task.name, "method": cfg.method.name, "model": cfg.model.name,
              "seed": cfg.seed, "table": cfg.get("table")}
    try:  # first: the imports below log (bitsandbytes) into the run.log Hydra opened in the folder
        lock = acquire(out)  # one run per folder (for a single run, cli() took it before Hydra wrote there)
    except FolderRefused as e:
        leave_run_log(out)
        return {**result, "status": "refused", "error": str(e)}
    except OSError:  # an unwritable folder: check_output_dir says so below, in one line
        lock = None
    # Heavy imports here, so `--help` and config errors answer fast.
    from accelerate.utils import set_seed

    from .distributed import export_slurm_env, make_accelerator
    from .methods import build_method
    from .methods.base import count_trainable
    from .config import check as check_config
    from .models import load_model, load_tokenizer, max_input_length, model_config
    from .preemption import Preempted
    from .provenance import provenance
    from .resume import load_checkpoint, remove_checkpoints, resolve_checkpoint
    from .tasks import build_task
    from .tasks.collate import resolve_buckets
    from .tracking import Tracker
    from .train import NumericalFault, RunRecord, Trainer, phase_steps

    export_slurm_env()
    main_process = int(os.environ.get("RANK", "0")) == 0  # only one process of a data-parallel run writes
    if not main_process:  # the other processes of a data-parallel run say only what goes wrong
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    started = time.time()
    record, tracker, method, preempted = RunRecord(), None, None, None
    try:
        check_output_dir(out)
        stale = took_over(out)
        if stale:
            log.warning("took over a stale lock: %s", stale)
        if cfg.get("data_dir") and not Path(str(cfg.data_dir)).expanduser().is_absolute():
            # Recorded as an absolute path: results.json (export --check, the report) is read from anywhere.
            cfg.data_dir = str(Path(str(cfg.data_dir)).expanduser().resolve())
        check_config(cfg)  # every setting's type and range (roloraexp/config.py): one line each
        done = completed_before(cfg, out)
        if done is not None:
            log.info("%s already holds a completed run of this config; nothing to do (trainer.resume=never runs it "
                     "again)", out / "results.json")
            return done
        set_aside_other_run(cfg, out)
        set_seed(cfg.seed)
        task = build_task(cfg)
        method = build_method(cfg)  # validates the method's options before any data or model is read
        task.read()  # data problems surface before any tokenizer or model is loaded
        result["data"] = task.data_report  # per split: the file, rows kept and skipped_rows
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
        result["precision"] = {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision)
        path = resolve_checkpoint(cfg.trainer, out)
        checkpoint = load_checkpoint(path, cfg, accelerator.device) if path is not None else None
        # Before the model load: a W&B that cannot start (logger=online without a login) is one line now.
        tracker = Tracker(cfg.logger, cfg, out, name=f"{cfg.task.name}-{cfg.method.name}-s{cfg.seed}",
                          resume_id=checkpoint.get("wandb_id") if checkpoint else None,
                          enabled=accelerator.is_main_process)
        building = time.perf_counter()
        model, _ = load_model(cfg.model, task, tokenizer, device=accelerator.device)
        method.prepare(model, targets)
        result["build_seconds"] = round(time.perf_counter() - building, 2)  # model load (or creation) and adapters
        adapters = method.adapters.values()
        result["adapter_shapes"] = {n: {"d_in": a.in_features, "d_out": a.out_features} for n, a in method.adapters.items()}
        # count_trainable(a), not a.num_adapter_params(): an "adapter" may be a plain module whose own
        # weights train (GaLore's target layers); for LowRankLinear the two agree (its base is frozen).
        result["head_params"] = count_trainable(model) - sum(count_trainable(a) for a in adapters)
        Trainer(model, task, method, cfg.trainer, tracker, record, out, cfg.seed, accelerator, checkpoint,
                run_config=cfg).fit()
        result["status"] = "completed"
        if main_process and not cfg.trainer.get("keep_checkpoint", False):
            remove_checkpoints(out)  # done: results.json and the adapter files are what stays
    except FolderRefused as e:  # another config's results that cannot be set aside: nothing is written
        result.update(status="refused", error=str(e))
    except (ConfigError, DataError, NumericalFault) as e:
        result.update(status="failed", error=str(e))
    except Preempted as e:
        result.update(status="preempted", error=str(e))
        preempted = e
    except KeyboardInterrupt:
        result.update(status="failed", error="interrupted")
        raise
    except Exception as e:  # keep the multirun going; the traceback goes to the run's log
        if isinstance(e, OSError) and e.errno in DISK_ERRORS:  # the disk, not the code: one line naming the file
            result.update(status="failed", error=f"cannot write {e.filename or out}: {e.strerror} (free space or "
                                                 f"use another hydra.run.dir; the run resumes from its checkpoint)")
        else:
            result.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
            log.error("run failed:\n%s", traceback.format_exc())
    finally:
        if result["status"] != "refused" and (result["status"] != "running" or method is not None):
            state = method.state() if method is not None else {}
            result.update(
                metrics=record.metrics, best_metrics=record.best_metrics, **state, best_ranks=best_ranks(record),
                active_adapters=sum(1 for r in state.get("ranks", {}).values() if r > 0),
                trainable_params=record.trainable_params, trainable_params_peak=record.trainable_params_peak,
                peak_memory_bytes=record.peak_memory_bytes, steps=record.steps, skipped_steps=record.skipped_steps,
                world_size=record.world_size, resumed_from=record.resumed_from, train_curve=record.train_curve,
                throughput=throughput(record), amp_mode=record.amp_mode, compile=record.compile,
                wall_time_s=round(time.time() - started, 2),
                config=OmegaConf.to_container(cfg, resolve=True), history=record.history,
                method_history=method.history if method is not None else [], provenance=provenance(),
            )
            if main_process:
                try:
                    write_json_atomic(out / "results.json", result)
                except OSError as e:  # the folder itself is the problem (the error says so)
                    log.error("cannot write %s: %s", out / "results.json", e)
        if tracker is not None:
            tracker.summarize(result)
            tracker.finish(exit_code=0 if result["status"] == "completed" else 1)
        release(lock)
    if preempted is not None:
        preempted.hand_over()  # after results.json: submitit requeues, or the process exits 128 + signal
    return result


def check_output_dir(out: Path) -> None:
    """The run folder must be writable: found now, not after an hour of training."""
    problem = unusable(out)
    if problem:
        raise ConfigError(problem)


def completed_before(cfg: DictConfig, out: Path) -> dict | None:
    """A completed results.json of this very config in the run folder (trainer.resume=auto only)."""
    from .resume import config_identity

    if str(cfg.trainer.get("resume", "auto")) != "auto":
        return None
    try:
        previous = read_results(out / "results.json")
    except (OSError, ValueError):
        return None
    if previous.get("status") != "completed" or not isinstance(previous.get("config"), dict):
        return None
    return previous if config_identity(previous["config"]) == config_identity(cfg) else None


def set_aside_other_run(cfg: DictConfig, out: Path) -> None:
    """A results.json of another config (completed, failed or preempted) is not overwritten: it, its
    run's checkpoints and adapter files are renamed with its time (folder_guard.set_aside). The same
    config's failed or preempted results are this run's to replace (it resumes from the checkpoint)."""
    from .resume import config_identity, differences

    path = out / "results.json"
    if not path.exists():
        return
    try:
        previous = read_results(path)
        theirs = config_identity(previous["config"]) if isinstance(previous.get("config"), dict) else None
    except (OSError, ValueError, AttributeError):
        previous, theirs = {}, None
    mine = config_identity(cfg)
    if theirs == mine:
        return
    try:
        moved = set_aside(out)
    except OSError as e:
        raise FolderRefused(f"{path} holds another config's run and cannot be set aside ({e.strerror}); "
                            f"use another folder") from e
    what = f"a {previous.get('status', 'unknown')} run of another config ({differences(mine, theirs)})" if theirs \
        else "an unreadable results.json"
    log.warning("%s held %s: set aside as %s", out, what, ", ".join(p.name for p in moved))


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


def throughput(record) -> dict:
    """Training speed over the steps alone (evaluations, checkpoints and phase ends left out)."""
    seconds = record.train_seconds
    return {"train_seconds": round(seconds, 3), "train_examples": record.train_examples,
            "train_tokens": record.train_tokens,
            "examples_per_s": round(record.train_examples / seconds, 2) if seconds > 0 else None,
            "tokens_per_s": round(record.train_tokens / seconds, 1) if seconds > 0 else None}


def best_ranks(record) -> dict | None:
    """The adapters' ranks at the best evaluation (the one the tables report), as ``method.state()``
    gave them there: from its ``history`` entry."""
    best = record.best_metrics
    for h in record.history:
        if "metrics" in h and (h["step"], h["phase"]) == (best.get("step"), best.get("phase")):
            return h.get("ranks")
    return None


def print_summary(result: dict, out: Path) -> None:
    """The final metrics as a small table on stdout; a run that did not complete shows its status, not
    metrics, and main() prints its error once, below, as ``error: ...``."""
    rows = [("task / method / model", f"{result['task']} / {result['method']} / {result['model']}"),
            ("status", result["status"])]
    for k, v in (result.get("metrics", {}) if result["status"] == "completed" else {}).items():
        best = result.get("best_metrics", {}).get(k)
        rows.append((k, f"{v:.4f}" + (f"   (best {best:.4f})" if isinstance(best, float) else "")))
    skipped = {k: d for k, d in (result.get("data") or {}).items() if d.get("skipped_rows")}
    if skipped:  # damaged data the run went past (task.max_bad_rows): part of what the metrics mean
        rows.append(("skipped data rows", ", ".join(f"{k}: {d['skipped_rows']} of {d['rows'] + d['skipped_rows']}"
                                                    for k, d in skipped.items())))
    ranks = result.get("ranks") or {}
    if ranks:
        rows.append(("mean rank", f"{sum(ranks.values()) / len(ranks):.2f} over {len(ranks)} adapters"))
    rows += [("trainable params (final / peak)", f"{result['trainable_params']:,} / {result['trainable_params_peak']:,}"),
             ("steps / wall time", f"{result['steps']} / {result['wall_time_s']:.1f}s")]
    speed = result.get("throughput") or {}
    if speed.get("tokens_per_s"):
        rows.append(("training speed", f"{speed['tokens_per_s']:,.0f} tokens/s, {speed['examples_per_s']:,.1f} examples/s "
                                       f"({speed['train_seconds']:.1f}s in training steps)"))
    rows.append(("results", str(out / "results.json")))
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
        from .sweep_summary import record

        record(HydraConfig.get(), out, result)  # for the summary at the sweep's end
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    if result["status"] != "refused":  # a refused run has no results of its own to show
        print_summary(result, out)
    if result["status"] != "completed":
        sys.stdout.flush()  # the summary, then its error
        print(f"error: {result['error']}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on past a failed job
            raise SystemExit(1)
        return None
    return result["metrics"].get("main")


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
        from .sweep_summary import run_sweep

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
