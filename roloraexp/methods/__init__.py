"""Methods are chosen by ``conf/method/*.yaml``; each names its class with ``_target_``."""
from __future__ import annotations

from hydra.utils import get_class

from ..errors import ConfigError
from .base import Method, TrainContext


def build_method(cfg) -> Method:
    try:
        cls = get_class(cfg.method._target_)
    except Exception as e:  # a typo in a user's method YAML
        raise ConfigError(f"method {cfg.method.get('name')!r}: cannot import {cfg.method._target_}: {e}") from e
    return cls(cfg.method, sparsifier=cfg.get("sparsifier"), schedule=cfg.get("schedule"), seed=cfg.seed)


__all__ = ["Method", "TrainContext", "build_method"]
