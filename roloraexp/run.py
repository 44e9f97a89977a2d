"""One run: compose → build → train → evaluate → results.json. Reads top to bottom.

    python -m roloraexp.run method=rolora task=rte -m seed=1,2,3,4,5
"""
from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, DataError
from .results import write_json_atomic

log = logging.getLogger("roloraexp")


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run one configuration; always writes ``results.json`` (``status`` completed or failed)."""
    # Heavy imports here, so `--help` and config errors answer fast.
    from accelerate.utils import set_seed

    from .adapters import find_target_modules
    from .methods import build_method
    from .models import head_prefixes, load_model
    from .tasks import build_task
    from .tracking import Tracker
    from .methods.base import count_trainable
    from .train import RunRecord, Trainer

    out = Path(output_dir) if output_dir is not None else Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    record, tracker, method = RunRecord(), None, None
    result = {"status": "running", "task": cfg.task.name, "method": cfg.method.name, "model": cfg.model.name,
              "seed": cfg.seed, "table": cfg.get("table")}
    try:
        set_seed(cfg.seed)
        task = build_task(cfg)
        method = build_method(cfg)  # validates the method's options before any model is loaded
        model, tokenizer = load_model(cfg.model, task)
        task.load(tokenizer)
        targets = cfg.method.get("target_modules") or cfg.model.get("target_modules")
        if not targets:
            raise ConfigError(f"no target modules: set method.target_modules or model.target_modules for {cfg.model.name}")
        method.prepare(model, find_target_modules(model, targets, exclude=head_prefixes(model, cfg.model.arch)))
        adapters = method.adapters.values()
        result["adapter_shapes"] = {n: {"d_in": a.in_features, "d_out": a.out_features} for n, a in method.adapters.items()}
        result["head_params"] = count_trainable(model) - sum(a.num_adapter_params() for a in adapters)
        tracker = Tracker(cfg.logger, cfg, out, name=f"{cfg.task.name}-{cfg.method.name}-s{cfg.seed}")
        Trainer(model, task, method, cfg.trainer, tracker, record, out, cfg.seed).fit()
        result["status"] = "completed"
    except (ConfigError, DataError) as e:
        result.update(status="failed", error=str(e))
    except KeyboardInterrupt:
        result.update(status="failed", error="interrupted")
        raise
    except Exception as e:  # keep the multirun going; the traceback goes to the run's log
        result.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
        log.error("run failed:\n%s", traceback.format_exc())
    finally:
        state = method.state() if method is not None else {}
        result.update(
            metrics=record.metrics, best_metrics=record.best_metrics, **state, best_ranks=best_ranks(record),
            active_adapters=sum(1 for r in state.get("ranks", {}).values() if r > 0),
            trainable_params=record.trainable_params, trainable_params_peak=record.trainable_params_peak,
            peak_memory_bytes=record.peak_memory_bytes, steps=record.steps,
            wall_time_s=round(time.time() - started, 2),
            config=OmegaConf.to_container(cfg, resolve=True), history=record.history,
            method_history=method.history if method is not None else [],
        )
        write_json_atomic(out / "results.json", result)
        if tracker is not None:
            tracker.summary({"final/" + k: v for k, v in record.metrics.items()})
            tracker.finish(exit_code=0 if result["status"] == "completed" else 1)
    return result


def best_ranks(record) -> dict | None:
    """The adapters' ranks at the best evaluation (the one the tables report), as ``method.state()``
    gave them there: from its ``history`` entry."""
    best = record.best_metrics
    for h in record.history:
        if "metrics" in h and (h["step"], h["phase"]) == (best.get("step"), best.get("phase")):
            return h.get("ranks")
    return None


def print_summary(result: dict, out: Path) -> None:
    """The final metrics as a small table on stdout."""
    rows = [("task / method / model", f"{result['task']} / {result['method']} / {result['model']}"),
            ("status", result["status"] + (f": {result['error']}" if result.get("error") else ""))]
    for k, v in result.get("metrics", {}).items():
        best = result.get("best_metrics", {}).get(k)
        rows.append((k, f"{v:.4f}" + (f"   (best {best:.4f})" if isinstance(best, float) else "")))
    ranks = result.get("ranks") or {}
    if ranks:
        rows.append(("mean rank", f"{sum(ranks.values()) / len(ranks):.2f} over {len(ranks)} adapters"))
    rows += [("trainable params (final / peak)", f"{result['trainable_params']:,} / {result['trainable_params_peak']:,}"),
             ("steps / wall time", f"{result['steps']} / {result['wall_time_s']:.1f}s"),
             ("results", str(out / "results.json"))]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    out = Path(HydraConfig.get().runtime.output_dir)
    result = run(cfg, out)
    print_summary(result, out)
    if result["status"] != "completed":
        print(f"error: {result['error']}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on past a failed job
            raise SystemExit(1)
        return None
    return result["metrics"].get("main")


if __name__ == "__main__":
    main()
