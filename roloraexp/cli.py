"""The command line in front of Hydra's: what a user types works as typed.

* Hydra's argument parser (argparse, one ``nargs="*"`` positional for the overrides) rejects
  overrides on both sides of a flag: ``method=rolora task=rte -m seed=1,2`` stops with
  "unrecognized arguments". The flags (with their values) are moved in front of the overrides,
  which is what Hydra means by them anyway.
* A config-group choice that does not exist is one line naming the close matches. Hydra already
  refuses unknown choices of required groups, but the optional ``experiment`` group would silently
  run the defaults, so someone filling a paper table would get another experiment with no word said.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "task", "method", "sparsifier", "schedule", "trainer", "logger", "experiment")


def _flag_arity() -> dict[str, object]:
    """Hydra's own flags: option string -> 0 (no value), 1 (one value) or the choices of an
    optional value (``--info [all|config|...]``). Read from Hydra's parser, so it follows Hydra."""
    from hydra._internal.utils import get_args_parser

    arity = {}
    for action in get_args_parser()._actions:
        for opt in action.option_strings:
            arity[opt] = 0 if action.nargs == 0 else (tuple(action.choices or ()) if action.nargs == "?" else 1)
    return arity


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides), each in its original order."""
    arity = _flag_arity()
    flags, overrides, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0]
        if not tok.startswith("-") or name not in arity:
            overrides.append(tok)
        elif "=" in tok or arity[name] == 0:
            flags.append(tok)
        elif arity[name] == 1:
            flags += argv[i:i + 2]
            i += 1
        else:  # optional value: taken only when it is one of the flag's choices
            flags.append(tok)
            if i + 1 < len(argv) and argv[i + 1] in arity[name]:
                flags.append(argv[i + 1])
                i += 1
        i += 1
    return flags, overrides


def config_dirs(flags: list[str], overrides: list[str]) -> list[Path] | None:
    """Where Hydra looks for configs: this repository's conf/, plus ``--config-dir`` and the
    ``file://`` entries of ``hydra.searchpath`` (a user's own methods, "Adding a method"). None when
    a place cannot be listed here (a ``pkg://`` search path): then Hydra alone judges the names."""
    dirs = [CONF]
    for i, f in enumerate(flags):
        name, _, value = f.partition("=")
        if name in ("--config-dir", "-cd"):
            dirs.append(Path(value or flags[i + 1]).expanduser())
    for o in overrides:
        if o.lstrip("+").startswith("hydra.searchpath="):
            for entry in o.split("=", 1)[1].strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if not entry.startswith("file://"):
                    return None
                dirs.append(Path(entry[len("file://"):]).expanduser())
    return dirs


def group_choice_errors(overrides: list[str], conf: Path | list[Path] | None = CONF) -> list[str]:
    """One line per ``group=name`` (also in sweeps ``group=a,b``) whose config file exists in none of
    the config folders ``conf`` (None: not checked)."""
    if conf is None:
        return []
    confs = [conf] if isinstance(conf, Path) else conf
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except Exception:  # a malformed override: Hydra's own message says it best
        return []
    errors = []
    for o in parsed:
        group = o.key_or_group
        if group not in GROUPS or o.is_delete() or o.package:
            continue
        value = o.value()
        names = value.list if isinstance(value, ChoiceSweep) else [value] if isinstance(value, str) else []
        known = sorted({str(p.relative_to(c / group).with_suffix("")) for c in confs for p in (c / group).rglob("*.yaml")})
        for name in names:
            if name is None or name == "null" or name in known:
                continue
            close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else f"see conf/{group}/ ({len(known)} files)"
            errors.append(f"{group}={name} does not exist (no conf/{group}/{name}.yaml); {hint}")
    return errors


STAMP = "%Y-%m-%d_%H-%M-%S"   # conf/config.yaml's folder time stamp


@contextmanager
def fixed_run_stamp():
    """Within: ROLORAEXP_RUN_STAMP is set (if it was not), so that a folder composed before Hydra
    starts (or after it ends) is the folder Hydra makes."""
    import os
    from datetime import datetime

    if "ROLORAEXP_RUN_STAMP" in os.environ:
        yield
        return
    os.environ["ROLORAEXP_RUN_STAMP"] = datetime.now().strftime(STAMP)
    try:
        yield
    finally:
        os.environ.pop("ROLORAEXP_RUN_STAMP", None)


def share_run_stamp() -> None:
    """On several processes (torchrun, accelerate launch), agree on one time stamp for the run
    folder before Hydra names it: process 0's, sent to the others over the process group, which
    accelerate then reuses."""
    import os
    from datetime import datetime

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "ROLORAEXP_RUN_STAMP" in os.environ:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    stamp = [datetime.now().strftime(STAMP)]
    dist.broadcast_object_list(stamp, src=0)
    os.environ["ROLORAEXP_RUN_STAMP"] = stamp[0]


# Flags after which Hydra runs nothing (help, the config, info, completion): no folder to hold, no sweep to sum up.
NO_RUN = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")


def is_multirun(flags: list[str], overrides: list[str]) -> bool:
    return any(f in ("-m", "--multirun") for f in flags) or "hydra.mode=MULTIRUN" in overrides


def compose_hydra(flags: list[str], overrides: list[str]):
    """The config with its ``hydra`` node, composed as Hydra will compose it for these arguments (no
    sweeps in ``overrides``); None where the flags name another config folder or composing fails
    (Hydra then says why). Resolving ``hydra.run.dir`` gives the run's folder before Hydra starts,
    provided ROLORAEXP_RUN_STAMP is set (its time stamp)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    names = [f.split("=", 1)[0] for f in flags]
    if {"--config-dir", "-cd", "--config-path", "-cp"} & set(names) or GlobalHydra.instance().is_initialized():
        return None
    config_name = "config"
    for i, f in enumerate(flags):
        if f.split("=", 1)[0] in ("--config-name", "-cn"):
            config_name = f.split("=", 1)[1] if "=" in f else flags[i + 1]
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except Exception:
        return None
