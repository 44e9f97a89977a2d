"""A run folder as the exporter reads it: ``results.json`` (the resolved config, the metrics the saved
weights scored) and ``best_trainable.pt`` / ``final_trainable.pt`` (adapters at their real ranks +
the heads); and the run's base model rebuilt from that config, the way ``roloraexp/run.py`` builds it.

The base model is the run's: the same ``models.load_model`` call on the same config. Hub and local
models load their weights; the ``tiny_*`` models are random, built from a config in code, and are
rebuilt exactly by replaying the run's seed: ``run()`` calls ``set_seed(cfg.seed)`` and nothing draws
from the global generators before ``load_model`` builds the model (the targets are checked on a
weightless meta skeleton). ``tests/test_export.py`` holds that promise against a real run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, DataError
from ..folder_guard import BEST_STATE, FINAL_STATE
from ..results import RESULTS_FILE, ResultError, RunResult, read_result

STATE_FILES = {"best": BEST_STATE, "final": FINAL_STATE}


@dataclass
class RunFolder:
    path: Path
    which: str                      # best | final
    results: RunResult
    cfg: DictConfig
    state: dict[str, torch.Tensor]  # the trainable tensors by parameter name (checkpoint.trainable_state)

    @property
    def metrics(self) -> dict:
        """What the run measured with these weights (best_metrics for best, metrics for final)."""
        return dict(self.results.best_metrics if self.which == "best" else self.results.metrics)


def read_run(run_dir, which: str = "best") -> RunFolder:
    """The run's results.json and saved weights; a folder that lacks them is one line."""
    path = Path(run_dir)
    if which not in STATE_FILES:
        raise ConfigError(f"--which must be best or final, got {which!r}")
    if not path.is_dir():
        raise DataError(f"{path} is not a folder (give a run folder: the one holding results.json)")
    results_path = path / RESULTS_FILE
    if not results_path.is_file():
        raise DataError(f"{path} holds no results.json: not a run folder")
    try:
        results = read_result(results_path)
    except ResultError as e:
        raise DataError(f"cannot read {e}") from e
    if not results.config:
        raise DataError(f"{results_path} has no resolved config (written by a run that failed before it started?)")
    state_path = path / STATE_FILES[which]
    if not state_path.is_file():
        why = (f"the run ended with status {results.status!r}" if not results.completed
               else "the run was made with trainer.save_adapters=false")
        other = [w for w, f in STATE_FILES.items() if w != which and (path / f).is_file()]
        hint = f"; --which {other[0]} exists" if other else ""
        raise DataError(f"{path} holds no {STATE_FILES[which]} ({why}){hint}")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise DataError(f"cannot read {state_path}: {str(e).splitlines()[0]}") from e
    return RunFolder(path, which, results, OmegaConf.create(results.config), state)


@dataclass
class BaseModel:
    """The run's frozen model with its task head, before any adapter, and what a user needs to load it."""
    model: torch.nn.Module
    tokenizer: object
    task: object
    adapters: dict                   # adapter name -> the method's adapter on a weightless skeleton (scalings, gates)
    auto_class: str                  # transformers.AutoModelFor... that builds it
    load_kwargs: dict = field(default_factory=dict)  # from_pretrained kwargs that give this head and config


def rebuild_base(run: RunFolder) -> BaseModel:
    """The run's base model (frozen backbone + task head at its initial weights) and its adapters'
    settings, from results.json's config alone."""
    from accelerate.utils import set_seed

    from ..models import HEADS, load_model, load_tokenizer, model_config
    from ..run import check_targets
    from ..tasks import build_task

    cfg = run.cfg
    task = build_task(cfg)
    tokenizer = load_tokenizer(cfg.model)
    config = model_config(cfg.model, tokenizer, task)
    # The method's own prepare() on a weightless skeleton: each adapter's scaling (alpha / its creation
    # rank, which resizes never change) and whether it has a gate or an ω, exactly as in the run.
    _, trial = check_targets(cfg, task, config)
    set_seed(cfg.seed)  # the tiny models: the same random backbone run() drew after the same call
    model, _ = load_model(cfg.model, task, tokenizer)
    model.eval()
    kwargs = {**dict(cfg.model.get("config_overrides") or {}), **task.model_kwargs(),
              "pad_token_id": model.config.pad_token_id}  # load_model sets it where the checkpoint has none (Llama)
    if cfg.model.get("dtype", "fp32") != "fp32":
        kwargs["dtype"] = {"bf16": "bfloat16", "fp16": "float16"}[cfg.model.dtype]
    return BaseModel(model, tokenizer, task, dict(trial.adapters), HEADS[task.head].__name__, kwargs)


def head_modules(state: dict, adapter_names, model: torch.nn.Module, arch: str) -> list[str]:
    """The modules that trained in full beside the adapters (PEFT's ``modules_to_save``): the task
    heads, and any module the checkpoint did not provide (load_model trains those too)."""
    from ..models import trainable_heads

    heads, adapters = sorted(trainable_heads(model, arch)), set(adapter_names)
    found = set()
    for key in state:
        owner = key.rpartition(".")[0]
        if owner in adapters:
            continue
        head = next((h for h in heads if key.startswith(h + ".")), None)
        module = head or owner
        inside = [a for a in adapters if module.startswith(a + ".") or a.startswith(module + ".")]
        if inside:
            raise ConfigError(f"{key} trains in full inside the adapted module {inside[0]}: PEFT cannot hold a "
                              f"module that is both adapted and saved whole")
        found.add(module)
    return sorted(found)
