"""Everything a run saves of its tensors, and reads back.

* The **trainable state** (adapters + heads, ``trainable_state``): small, so kept in memory for the
  best evaluation and written next to results.json (``best_trainable.pt``, ``final_trainable.pt``).
  Adapters load at any rank (``load_trainable_state``): LoRA* / AdaLoRA* restart from the best state
  so far at another rank configuration.
* The **run checkpoint** (``checkpoint.pt``, ``trainer.resume``), so a run that dies continues where
  it stopped. Written atomically (temp file, then rename; the one before it is kept as
  ``checkpoint.previous.pt``). It holds everything the rest of the run depends on: the trainable
  tensors at their current shapes (resizing methods change them), the optimizer state keyed by
  parameter *name* (so it follows parameters that resizes replaced), the scheduler and AMP scaler,
  every random generator, the data position, the method's own state (``Method.state_dict``), the run
  record, the W&B run id, and the identity of the config it was written under. ``payload`` builds it
  from a Trainer and ``restore`` / ``restore_optimizer`` put it back; a checkpoint is only ever loaded
  whole, into the same config: anything else is a one-line error naming the file.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .adapters import adapters_of
from .config import config_identity, differences
from .errors import ConfigError
from .folder_guard import CHECKPOINT, PREVIOUS

log = logging.getLogger(__name__)
FORMAT = 1
FACTORS = ("lora_A", "lora_B", "gate", "omega")  # what LowRankLinear.set_weights loads, at any rank


# ---------------------------------------------------------------------------- trainable state
def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of every trainable tensor plus every adapter's factors (even frozen ones)."""
    state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
    for name, a in adapters_of(model).items():
        for pname in FACTORS:
            p = getattr(a, pname)
            if p is not None:
                state[f"{name}.{pname}"] = p.detach().to("cpu", copy=True)
    return state


@torch.no_grad()
def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    adapters = adapters_of(model)
    for name, a in adapters.items():
        if f"{name}.lora_A" in state:
            a.set_weights(state[f"{name}.lora_A"], state[f"{name}.lora_B"], state.get(f"{name}.gate"))
            if a.omega is not None and f"{name}.omega" in state:
                a.omega.copy_(state[f"{name}.omega"])
    params = dict(model.named_parameters())
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        if owner in adapters and leaf in FACTORS:
            continue  # set above, at the saved rank; an adapter's other tensors (DoRA's magnitude) load below
        params[key].copy_(value.to(params[key]))


def save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = write_tmp(state, path)
    os.replace(tmp, path)


def write_tmp(obj, path: Path) -> Path:
    """``obj`` saved to ``<path>.tmp`` (renamed into place by the caller). Through a Python file, so a
    full or read-only disk raises an OSError naming the file with its errno (torch.save given a path
    raises a RuntimeError with neither); the partial file is removed."""
    tmp = Path(f"{path}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(tmp)) from e
    return tmp


# ---------------------------------------------------------------------------- the run checkpoint file
def resolve_checkpoint(trainer_cfg, output_dir: Path | None) -> Path | None:
    """Which checkpoint ``trainer.resume`` names: ``auto`` (default) the run folder's own if there is
    one, ``never`` none, anything else a path that must exist."""
    mode = str(trainer_cfg.get("resume", "auto"))
    if mode == "never" or output_dir is None and mode == "auto":
        return None
    if mode == "auto":
        path = Path(output_dir) / CHECKPOINT
        return path if path.exists() else None
    path = Path(mode).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"trainer.resume={mode}: no checkpoint at {path} (auto = the run folder's own, never = start over)")
    return path


def load_checkpoint(path: Path, cfg, device) -> dict:
    """The checkpoint at ``path``, checked against ``cfg``; a corrupt or foreign file is a ConfigError."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated, not a torch file, unpicklable: all mean "cannot resume from it"
        raise ConfigError(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          f"delete it or pass trainer.resume=never to start over") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {path} is not a roloraexp run checkpoint (format {FORMAT}); "
                          f"pass trainer.resume=never to start over")
    differ = differences(config_identity(cfg), ckpt["config"])
    if differ:
        raise ConfigError(f"checkpoint {path} was written by another config ({differ}); use another output "
                          f"folder or trainer.resume=never to start over")
    ckpt["path"] = str(path)
    return ckpt


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic write: temp file, rename the last checkpoint to checkpoint.previous.pt, rename the new one in."""
    path = Path(path)
    tmp = write_tmp({"format": FORMAT, **payload}, path)
    if path.exists():
        os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)


def remove_checkpoints(output_dir: Path) -> None:
    for name in (CHECKPOINT, PREVIOUS, CHECKPOINT + ".tmp"):
        (Path(output_dir) / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- a Trainer's state
def payload(trainer, ctx, optimizer, scheduler, running: torch.Tensor) -> dict:
    """What ``save_checkpoint`` writes of a Trainer at a clean step boundary (optimizer and scheduler
    None at a phase end: the next phase builds its own)."""
    names = param_names(trainer.model)
    scaler = trainer.accelerator.scaler
    return {
        "config": config_identity(trainer.run_config) if trainer.run_config is not None else {},
        "position": trainer.position, "phase_started": trainer.phase_started,
        "ctx": {"step": ctx.step, "phase": ctx.phase, "phase_step": ctx.phase_step},
        "trainable": trainable_state(trainer.model),
        "trains": sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad),
        "optimizer": optimizer_state(optimizer, names) if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(), "method": trainer.method.state_dict(), "record": trainer.record.__dict__,
        "loop": {"best_main": trainer.best_main, "best_state": trainer.best_state,
                 "last_eval_step": trainer.last_eval_step, "running": running.detach().cpu(),
                 "bad_loss_step": trainer.bad_loss_step.cpu()},
        "wandb_id": trainer.tracker.run_id,
    }


def restore(trainer, ctx) -> None:
    """Everything of ``trainer.checkpoint`` but the optimizer (built per phase, ``restore_optimizer``):
    tensors, which of them train, the method, the record, the loop's state and the position."""
    ck = trainer.checkpoint
    load_trainable_state(trainer.model, ck["trainable"])
    trains = set(ck["trains"])
    for n, p in trainer.model.named_parameters():
        p.requires_grad_(n in trains)
    trainer.method.load_state_dict(ck["method"])
    trainer.record.__dict__.update({k: v for k, v in ck["record"].items() if k != "world_size"})
    loop = ck["loop"]
    trainer.best_main, trainer.best_state, trainer.last_eval_step = loop["best_main"], loop["best_state"], loop["last_eval_step"]
    trainer.bad_loss_step = loop["bad_loss_step"].to(trainer.accelerator.device)
    trainer.skipped_steps.fill_(trainer.record.skipped_steps)
    trainer.position, trainer.phase_started = tuple(ck["position"]), ck["phase_started"]
    ctx.step, ctx.phase, ctx.phase_step = ck["ctx"]["step"], ck["ctx"]["phase"], ck["ctx"]["phase_step"]
    trainer.record.resumed_from.append({"step": ctx.step, "checkpoint": ck.get("path")})
    log.info("resuming after step %d/%d (phase %d/%d, epoch %d, step %d of the epoch)", ctx.step, ctx.total_steps,
             trainer.position[0] + 1, trainer.method.num_phases, trainer.position[1] + 1, trainer.position[2])
    if not trainer.phase_started:  # saved at a phase end: the next phase's start draws from the generators
        set_rng_state(ck["rng"])


def restore_optimizer(trainer, optimizer, scheduler, running: torch.Tensor) -> None:
    """The optimizer, scheduler, AMP scaler and running loss of the phase the checkpoint was saved in."""
    ck = trainer.checkpoint
    if ck["optimizer"] is not None:
        load_optimizer_state(optimizer, ck["optimizer"], param_names(trainer.model), ck.get("path", CHECKPOINT))
        scheduler.load_state_dict(ck["scheduler"])
    if ck["scaler"] is not None and trainer.accelerator.scaler is not None:
        trainer.accelerator.scaler.load_state_dict(ck["scaler"])
    running.copy_(ck["loop"]["running"])
    set_rng_state(ck["rng"])  # last: building the optimizer must not shift the generators


# ---------------------------------------------------------------------------- optimizer by name
def param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def optimizer_state(optimizer, names: dict[int, str]) -> dict:
    """The optimizer's state_dict with parameters named instead of numbered."""
    opt = getattr(optimizer, "optimizer", optimizer)
    sd = opt.state_dict()
    order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    return {"state": {order[i]: s for i, s in sd["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in sd["param_groups"]]}


def load_optimizer_state(optimizer, saved: dict, names: dict[int, str], where: Path) -> None:
    """Load a named state into a freshly built optimizer over the same parameters and groups."""
    opt = getattr(optimizer, "optimizer", optimizer)
    groups = [[names[id(p)] for p in g["params"]] for g in opt.param_groups]
    if groups != [g["params"] for g in saved["param_groups"]]:
        raise ConfigError(f"checkpoint {where}: its optimizer holds other parameters than this run builds "
                          f"(written by another version of the method?); pass trainer.resume=never to start over")
    index = {n: i for i, n in enumerate(n for g in groups for n in g)}
    opt.load_state_dict({"state": {index[n]: s for n, s in saved["state"].items()},
                         "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in saved["param_groups"]]})


# ---------------------------------------------------------------------------- random generators
def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
