"""ROLoRA's rank arithmetic: rescale + interpolate + round never exceeds the parameter budget."""
import random

import pytest

from roloraexp.methods.budget import gated_budget, interpolate, lora_budget, rescale, round_to_budget
from roloraexp.methods.schedules import relief


def spend(r, c):
    return sum(a * b for a, b in zip(r, c))


@pytest.mark.parametrize("seed", range(300))
def test_rescale_interpolate_round_stays_in_budget(seed):
    rng = random.Random(seed)
    K, R = rng.randint(1, 40), rng.randint(1, 16)
    shapes = [(rng.choice([32, 64, 768, 1024]), rng.choice([32, 64, 768, 3072])) for _ in range(K)]
    gated = rng.random() < 0.5
    costs = [a + b + gated for a, b in shapes]
    budget = (gated_budget if gated else lora_budget)(shapes, R)
    r = [R] * K  # line 2: R everywhere is exactly the budget
    assert spend(r, costs) == budget
    for t in range(1, 6):
        s = [rng.randint(0, 3 * R) if rng.random() < 0.8 else 0 for _ in range(K)]
        s_scaled = round_to_budget(rescale(s, costs, budget), costs, budget)
        assert spend(s_scaled, costs) <= budget
        x = interpolate(r, s_scaled, 1 / t)
        r = round_to_budget(x, costs, budget)
        assert spend(r, costs) <= budget
        assert all(abs(ri - xi) < 1 + 1e-9 for ri, xi in zip(r, x))
        # tight: no rounded-down adapter could still take its unit
        left = budget - spend(r, costs)
        assert all(costs[i] > left for i in range(K) if x[i] - r[i] > 1e-9)


def test_uniform_shapes_follow_the_paper():
    costs = [1536] * 24  # 24 matrices of 768x768, no gate
    budget = lora_budget([(768, 768)] * 24, 8)
    s = [4] * 12 + [0] * 12  # half pruned away
    assert round_to_budget(rescale(s, costs, budget), costs, budget) == [16] * 12 + [0] * 12
    assert interpolate([8] * 2, [16, 0], 0.5) == [12, 4]


def test_gates_are_part_of_the_budget_so_R_everywhere_fits_exactly():
    costs = [1537] * 24  # 768 × 768 with a gate entry per component
    budget = gated_budget([(768, 768)] * 24, 8)
    assert budget == lora_budget([(768, 768)] * 24, 8) + 24 * 8 == spend([8] * 24, costs)
    assert round_to_budget(rescale([8] * 24, costs, budget), costs, budget) == [8] * 24


def test_rolora_schedule_factors():
    cfg = {"name": "rolora"}
    assert relief(cfg, 1, 3) == 1.0
    assert relief(cfg, 2, 3) == pytest.approx(1.25)
    assert relief(cfg, 3, 3) == pytest.approx(1.25 * 1.2)
    assert relief({"name": "constant"}, 3, 3) == 1.0
