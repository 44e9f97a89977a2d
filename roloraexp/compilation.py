"""``trainer.compile``: torch.compile of the training forward, and what it compiled.

The loop compiles again after anything that replaced parameters or changed which ones train
(``Trainer._rewrap``): the graphs of the old shapes are stale. results.json's ``compile`` says how
many wrappers were made and how many graphs and graph breaks dynamo counted (``report``).
"""
from __future__ import annotations

import torch


def compile_enabled(cfg, device: torch.device) -> bool:
    """``trainer.compile``: auto compiles on CUDA (a base-size step is bound by kernel launches there)
    and not on CPU (a compile costs more than the short CPU runs it would speed up)."""
    setting = cfg.get("compile", False)
    return device.type == "cuda" if setting == "auto" else bool(setting)


def compile_module(module: torch.nn.Module, cfg) -> torch.nn.Module:
    """``module`` compiled with ``trainer.compile_backend`` / ``compile_mode``, after dropping the
    graphs compiled so far (they hold the old parameters' shapes)."""
    torch._dynamo.reset()
    mode = cfg.get("compile_mode", "default")
    return torch.compile(module, backend=cfg.get("compile_backend", "inductor"), mode=None if mode == "default" else mode)


def compiled_graphs() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process (dynamo's counters; reset() keeps them)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def report(cfg, enabled: bool, wraps: int, since: tuple[int, int]) -> dict:
    """results.json's ``compile``: the settings, the wrappers made and the graphs and breaks since ``since``."""
    graphs, breaks = (now - then for now, then in zip(compiled_graphs(), since))
    return {"enabled": enabled, "backend": cfg.get("compile_backend", "inductor"),
            "mode": cfg.get("compile_mode", "default"), "wraps": wraps, "graphs": graphs, "graph_breaks": breaks}
