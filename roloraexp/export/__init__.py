"""A run's adapters out of the suite: a PEFT adapter folder, or a plain transformers model with ΔW merged.

    python -m roloraexp.export RUN_DIR OUT_DIR [--which best|final] [--merged] [--check] [--force]

The run's model is rebuilt from its ``results.json`` config (``run_folder.py``), its saved adapters
become PEFT modules with the same product (``forms.py``: LoRA with per-module ranks and scalings
through ``rank_pattern`` / ``alpha_pattern``, gates folded into B, ω into the scaling, rank-0
adapters left out; DoRA as LoRA with ``use_dora``; VeRA with the run's shared pair), the heads that
trained in full go to ``modules_to_save``, and PEFT itself writes the folder (``save_pretrained``)
or merges it (``merge_and_unload``), so the files are PEFT's own format. The
folder references nothing of roloraexp: ``PeftModel.from_pretrained(base_model, OUT_DIR)`` loads it
with transformers and peft alone. ``export_info.json`` beside it says which transformers class and
keyword arguments rebuild the base model and what the run measured with these weights; ``--check``
loads the folder that way and scores it on the run's evaluation set. Adapters PEFT has no form for
(DVoRA) export with ``--merged`` only; they, and VeRA's, merge with their own ``merge()``.
"""
from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .forms import form_of, trains_weights_in_place
from .run_folder import BaseModel, RunFolder, head_modules, read_run, rebuild_base

# Quiet at their source, so that an export prints only what concerns it: peft imports bitsandbytes,
# whose kernels lookup logs two warnings on every import offline (its own loggers, raised to ERROR),
# and peft 0.1x asks transformers 5 a deprecated question on every model it wraps (that one message).
for _name in ("bitsandbytes", "kernels"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

INFO = "export_info.json"
BASE_DIR = "base_model"  # tiny (random) models: the base model is saved here, beside the adapter


def check_out_dir(out_dir, force: bool) -> bool:
    """OUT_DIR must be new or empty; ``force`` replaces an earlier export, and nothing else. Returns
    whether there is an earlier export to remove."""
    out = Path(out_dir)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    if not force:
        raise ConfigError(f"{out} exists and is not empty; give a new folder (or --force to replace an earlier export)")
    if not (out / INFO).is_file():
        raise ConfigError(f"{out} is not an earlier export (no {INFO}); --force only replaces exports")
    return True


@torch.no_grad()
def load_full_state(model: torch.nn.Module, state: dict, skip=()) -> None:
    """The tensors that trained in full (heads, or every weight of a fully fine-tuned run) into the model."""
    params = dict(model.named_parameters())
    for key, value in state.items():
        if key.rpartition(".")[0] in skip:
            continue
        if key not in params:
            raise DataError(f"the saved weights hold {key}, which the rebuilt model has not: they were written "
                            f"under another config than the results.json beside them")
        params[key].copy_(value.to(params[key]))


@torch.no_grad()
def merge_own_adapters(model: torch.nn.Module, cfg, names: list[str], state: dict) -> dict:
    """The run's own adapters on the rebuilt model, its saved weights in them, each merged by its own
    ``merge()`` (held exact by the adapters' tests) and replaced by its base Linear: a plain model.
    Returns the adapters (their ``rank`` goes to export_info.json)."""
    from ..methods import build_method

    method = build_method(cfg)
    method.prepare(model, names)  # VeRA's pair is drawn again from method.projection_seed, as the run drew it
    load_full_state(model, state)
    for name, adapter in method.adapters.items():
        adapter.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, adapter.base)
    return dict(method.adapters)


def export_run(run_dir, out_dir, which: str = "best", merged: bool = False, force: bool = False) -> dict:
    """Write the export; returns what ``export_info.json`` holds."""
    from ..models import quiet_transformers

    with quiet_transformers():  # no progress bars for every shard written
        return _export(run_dir, out_dir, which, merged, force)


def _export(run_dir, out_dir, which: str, merged: bool, force: bool) -> dict:
    run = read_run(run_dir, which)
    replace = check_out_dir(out_dir, force)  # before the model loads: a mistake costs seconds
    base = rebuild_base(run)
    cfg, method = run.cfg, run.cfg.method.name
    form, factors, left_out = form_of(base.adapters, method, merged), {}, {}
    for name, adapter in base.adapters.items() if form is not None else ():
        f = form.factors(name, adapter, run.state, cfg.method, base.model.get_submodule(name))
        (left_out if isinstance(f, str) else factors)[name] = f
    if form is not None and not factors and not merged:
        raise ConfigError(f"every adapter of this run is empty ({'; '.join(f'{n}: {w}' for n, w in left_out.items())}): "
                          f"there is no PEFT adapter to write")
    heads = head_modules(run.state, base.adapters, base.model, cfg.model.arch) if form is not None else []
    out = Path(out_dir)
    if replace:  # only now that the new export is ready to be written
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    tiny = bool(cfg.model.get("tiny"))
    base_ref = _base_reference(cfg, out)
    if tiny and not merged:  # a random model no one else has: it travels with the adapter
        base.model.save_pretrained(out / BASE_DIR)
        base.tokenizer.save_pretrained(out / BASE_DIR)
    if form is None and not trains_weights_in_place(base.adapters):  # merged by the adapters: DVoRA, VeRA
        factors = merge_own_adapters(base.model, cfg, list(base.adapters), run.state)
    else:  # the heads (or, trained in place, every weight)
        load_full_state(base.model, run.state, skip=base.adapters if form is not None else ())
    if form is not None and factors:
        from peft import get_peft_model

        model = get_peft_model(base.model, form.config(factors, heads, base.task.head, cfg.method))
        form.load(model, factors)
        config = model.peft_config["default"]
        if config.modules_to_save:  # PEFT appends its own classifier names for SEQ_CLS: say each once
            config.modules_to_save = list(dict.fromkeys(config.modules_to_save))
        if merged:
            model = model.merge_and_unload()
        else:
            model.peft_config["default"].base_model_name_or_path = base_ref
    else:
        model = base.model
    model.save_pretrained(out)
    base.tokenizer.save_pretrained(out)
    info = _info(run, base, out, merged, form, factors, left_out, heads, base_ref)
    (out / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def _base_reference(cfg, out: Path) -> str:
    """What ``base_model_name_or_path`` names: the hub id or local folder the run loaded (the package's
    folder for model=minilm), or the saved copy of a tiny model."""
    from ..models import resolve_path

    return str((out / BASE_DIR).resolve()) if cfg.model.get("tiny") else resolve_path(cfg.model)


def _info(run: RunFolder, base: BaseModel, out: Path, merged: bool, form, factors, left_out, heads, base_ref) -> dict:
    r = run.results
    return {
        "format": "merged" if merged else f"peft-{form.name.lower()}",
        "run_dir": str(run.path.resolve()), "which": run.which,
        "method": r.method, "task": r.task, "model": r.model, "seed": r.seed,
        "auto_class": base.auto_class,
        "base_model": str(out.resolve()) if merged else base_ref,
        "base_model_kwargs": {} if merged else base.load_kwargs,
        "adapters": {n: f.rank for n, f in sorted(factors.items())},
        "left_out": dict(sorted(left_out.items())),
        "modules_to_save": heads,
        "run_metrics": run.metrics,  # what the run measured with these weights
    }


def load_export(out_dir):
    """The exported model as a user loads it: transformers (and peft) only, guided by export_info.json."""
    import transformers

    out = Path(out_dir)
    info = json.loads((out / INFO).read_text())
    auto = getattr(transformers, info["auto_class"])
    if info["format"] == "merged":
        return auto.from_pretrained(out).eval()
    from peft import PeftModel

    base = auto.from_pretrained(info["base_model"], **info["base_model_kwargs"])
    return PeftModel.from_pretrained(base, out).eval()


def score(model, cfg, data_dir=None) -> dict:
    """The model's metrics on the run's evaluation set, computed as the run computed them."""
    from omegaconf import OmegaConf

    from ..distributed import make_accelerator
    from ..models import load_tokenizer, max_input_length
    from ..tasks import build_task

    if data_dir is not None:
        cfg = OmegaConf.merge(cfg, {"data_dir": str(data_dir)})
    task = build_task(cfg)
    task.read()
    tokenizer = load_tokenizer(cfg.model)
    task.max_input_length = max_input_length(model.config, tokenizer)
    task.load(tokenizer)
    accelerator = make_accelerator(cfg.trainer)
    model.to(accelerator.device)
    return task.evaluate(model, accelerator, cfg.trainer.eval_batch_size)


__all__ = ["export_run", "load_export", "score", "read_run", "INFO", "BASE_DIR"]
