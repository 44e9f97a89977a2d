"""Rank allocation under a parameter budget (ROLoRA Algorithm 1, lines 2, 6 and 7).

Budgets are in parameters, so matrices of different shapes are handled correctly: a rank
component of adapter i costs ``c_i = d_in + d_out (+1 for a gate)`` parameters. The paper's
``Σ r_i ≤ K·R`` is the special case of equal costs. ``rescale`` and ``interpolate`` give real-valued
ranks; ``round_to_budget`` turns them into integer ranks with ``Σ r_i c_i ≤ budget``: rounding never
breaks the budget.
"""
from __future__ import annotations

import math
from typing import Sequence


def lora_budget(shapes: Sequence[tuple[int, int]], rank: int) -> int:
    """Parameters of plain LoRA at rank R on matrices of these (d_in, d_out) shapes."""
    return sum(rank * (d_in + d_out) for d_in, d_out in shapes)


def gated_budget(shapes: Sequence[tuple[int, int]], rank: int) -> int:
    """Line 2's budget: rank R on every matrix in the generic form ``B diag(g) A``, i.e. LoRA-R plus
    R gate entries per matrix (a component costs ``d_in + d_out + 1``): R everywhere is exactly it."""
    return sum(rank * (d_in + d_out + 1) for d_in, d_out in shapes)


def round_to_budget(x: Sequence[float], costs: Sequence[int], budget: int) -> list[int]:
    """Integer ranks close to ``x`` (floor, then +1 by largest remainder while it fits)."""
    if any(v < 0 for v in x):
        raise ValueError("ranks must be >= 0")
    r = [math.floor(v + 1e-9) for v in x]
    spent = sum(ri * c for ri, c in zip(r, costs))
    # A caller's x may sit above the budget (the 1e-9 slack of the floor, or ranks that never fit):
    # take back whole units, from the least-deserving (smallest remainder, then largest cost).
    order_down = sorted(range(len(r)), key=lambda i: (x[i] - r[i], -costs[i]))
    while spent > budget:
        i = next((i for i in order_down if r[i] > 0), None)
        if i is None:
            raise ValueError(f"budget {budget} cannot hold even rank 0")
        r[i] -= 1
        spent -= costs[i]
        order_down = order_down[1:] + order_down[:1]
    for i in sorted(range(len(r)), key=lambda i: x[i] - r[i], reverse=True):
        if x[i] - r[i] > 1e-9 and spent + costs[i] <= budget:
            r[i] += 1
            spent += costs[i]
    return r


def rescale(s: Sequence[int], costs: Sequence[int], budget: int) -> list[float]:
    """Line 6: scale the sparsified ranks up until they spend the whole budget
    (``s · R / mean(s)`` when all costs are equal). All-zero ranks cannot be scaled: uniform then."""
    spent = sum(si * c for si, c in zip(s, costs))
    if spent == 0:
        return [budget / sum(costs)] * len(s)
    return [si * budget / spent for si in s]


def interpolate(r: Sequence[int], s: Sequence[int], gamma: float) -> list[float]:
    """Line 7, a Frank-Wolfe step: ``(1 − γ) r + γ s`` stays in the budget when both ends do."""
    return [(1 - gamma) * ri + gamma * si for ri, si in zip(r, s)]
