"""Checkpoints of a whole run, so a run that dies continues where it stopped (``trainer.resume``).

One file, ``checkpoint.pt`` in the run folder, written atomically (temp file, then rename; the one
before it is kept as ``checkpoint.previous.pt``). It holds everything the rest of the run depends on:
the trainable tensors at their current shapes (resizing methods change them), the optimizer state
keyed by parameter *name* (so it follows parameters that resizes replaced), the scheduler and AMP
scaler, every random generator, the data position, the method's own state (``Method.state_dict``),
the run record, the W&B run id, and the resolved config it was written under. A checkpoint is only
ever loaded whole, into the same config: anything else is a one-line error naming the file.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from .checkpoint import write_tmp
from .config import not_identity
from .errors import ConfigError

FORMAT = 1
CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.previous.pt"
# Settings that do not change what a run computes: a resumed run may change them (the schema's
# identity=False settings, roloraexp/config.py, and these whole sections).
IGNORED = (*not_identity(), "logger.", "data_dir", "hydra.", "table")


def config_identity(cfg) -> dict[str, object]:
    """The resolved config as flat ``dotted.key -> value``, without the settings in IGNORED."""
    container = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in flatten(container).items() if not any(k == i or k.startswith(i) for i in IGNORED)}


def flatten(node, prefix: str = "") -> dict[str, object]:
    """A nested dict as ``dotted.key -> leaf value``."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: dict[str, object] = {}
    for k, v in node.items():
        flat.update(flatten(v, f"{prefix}{k}."))
    return flat


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
    return ckpt


def differences(mine: dict, theirs: dict) -> str:
    """The first settings in which two config identities differ, as one phrase ("" when none)."""
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k, "<unset>") != theirs.get(k, "<unset>"))
    shown = ", ".join(f"{k}: {theirs.get(k, '<unset>')!r} there, {mine.get(k, '<unset>')!r} here" for k in differ[:3])
    return shown + (f" (+{len(differ) - 3} more)" if len(differ) > 3 else "")


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


# ---------------------------------------------------------------------------- optimizer by name
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
