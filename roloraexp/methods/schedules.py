"""ROLoRA's SCHEDULE operator: how the sparsifier's aggressiveness changes over iterations.

``relief(t)`` multiplies what the sparsifier keeps at iteration t (1-based): AdaLoRA's target
average rank is ``R · sparsify_to · relief(t)``; SoRA's threshold is divided by it.
"""
from __future__ import annotations

from ..errors import ConfigError


def relief(schedule_cfg, t: int, iterations: int) -> float:
    name = schedule_cfg.get("name", "constant") if schedule_cfg is not None else "constant"
    if name == "constant":
        return 1.0
    if name == "rolora":
        # Paper §6: first to R/2, then the post-sparsification average grows by (1 + 1/(T + t))
        # after iteration t.
        f = 1.0
        for j in range(1, t):
            f *= 1 + 1 / (iterations + j)
        return f
    raise ConfigError(f"schedule={name!r} is not one of constant, rolora")
