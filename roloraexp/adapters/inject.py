"""Find the linear layers to adapt and wrap them in :class:`LowRankLinear`."""
from __future__ import annotations

import re
from typing import Callable, Iterable

from torch import nn

from ..errors import ConfigError
from .layer import LowRankLinear


def _matches(name: str, target: str) -> bool:
    # A target names a dotted suffix ("value", "attention.self.value"), never a substring:
    # "dense" must not catch "some_dense_thing". "re:PATTERN" must match the whole module name,
    # for layers no suffix singles out: "output.dense" is also the tail of "attention.output.dense".
    if target.startswith("re:"):
        return re.fullmatch(target[3:], name) is not None
    return name == target or name.endswith("." + target)


def find_target_modules(model: nn.Module, targets: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Names of the nn.Linear modules matching ``targets``, skipping those under ``exclude``
    (heads train in full, so a suffix like ``dense`` must not also catch ``classifier.dense``)."""
    targets, exclude = list(targets), tuple(exclude)
    if not targets:
        raise ConfigError("target_modules is empty: name at least one module to adapt")
    for t in targets:
        if t.startswith("re:"):
            try:
                re.compile(t[3:])
            except re.error as e:
                raise ConfigError(f"target_modules: {t!r} is not a regular expression ({e})") from e
    found, hit, in_head = [], set(), set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(_matches_prefix(name, e) for e in exclude):
            in_head.update(t for t in targets if _matches(name, t) or _matches_prefix(name, t))
            continue
        matched = [t for t in targets if _matches(name, t)]
        if matched:  # "output.dense" and "dense" may both name one layer: wrap it once
            found.append(name)
            hit.update(matched)
    missing = [t for t in targets if t not in hit]
    heads = [t for t in missing if t in in_head]
    if heads:
        raise ConfigError(f"target modules {heads} name the task head ({', '.join(exclude)}), which trains in full "
                          f"beside the adapters: adapt backbone layers instead")
    if missing:
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"target modules {missing} match no linear layer of {type(model).__name__}; "
                          f"its linear layers end in: {', '.join(linear)}")
    return found


def _matches_prefix(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".") or ("." + prefix + ".") in ("." + name + ".")


def inject_adapters(model: nn.Module, names: list[str], factory: Callable[[str, nn.Linear], LowRankLinear]) -> dict[str, LowRankLinear]:
    """Replace each named nn.Linear by ``factory(name, linear)``; return the adapters by name."""
    adapters = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        adapter = factory(name, getattr(parent, child))
        setattr(parent, child, adapter)
        adapters[name] = adapter
    return adapters


def adapters_of(model: nn.Module) -> dict[str, LowRankLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
