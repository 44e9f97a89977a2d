"""scripts/host_cost.py: ops dispatched per training step (exact counts, so property tests, not
timings) and the script end to end."""
import importlib.util
import json
import subprocess
import sys
from argparse import Namespace

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("host_cost", REPO / "scripts" / "host_cost.py")
host_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host_cost)

ARGS = Namespace(model="tiny_roberta", batch=8, seq=64)  # small: a count is of ops, not of their arithmetic
METHODS = ("lora", "adalora", "rolora")
DEPTHS = (2, 4)
# The heads hand on fp32 logits under cast (precision.CastForward._fp32_output): one cast forward,
# its gradient's cast back.
HEAD_OUTPUT_CASTS = 2
# In training, CPU's scaled_dot_product_attention takes its math path when attention dropout is on
# (its flash kernel takes none), and that path computes bf16 q, k, v in fp32 (to_copy there and
# back, forward and backward: _scaled_dot_product_attention_math, aten/src/ATen/native/transformers/
# attention.cpp), in every layer, under either bf16 mode. Off, the counts show what cast mode adds.
NO_ATTN_DROPOUT = "+model.config_overrides.attention_probs_dropout_prob=0.0"


def depth(n: int) -> str:
    return f"+model.config_overrides.num_hidden_layers={n}"


@pytest.fixture(scope="module")
def counts():
    return {n: host_cost.op_counts(ARGS, ("floor", *METHODS), extra=[NO_ATTN_DROPOUT, depth(n)]) for n in DEPTHS}


@pytest.fixture(scope="module")
def lora_counts_with_dropout():  # the attention's ops are the same under every method
    return {n: host_cost.op_counts(ARGS, ("lora",), extra=[depth(n)])["lora"] for n in DEPTHS}


def extra_ops(rows: dict, mode: str = "bf16-cast", base: str = "fp32") -> int:
    return rows[mode]["total"] - rows[base]["total"]


@pytest.mark.parametrize("method", METHODS)
def test_cast_adds_two_casts_per_cast_tensor_whatever_the_depth(counts, method):
    shallow, deep = counts[DEPTHS[0]][method], counts[DEPTHS[1]][method]
    assert [shallow["fp32"]["layers"], deep["fp32"]["layers"]] == list(DEPTHS)  # the override took
    for rows in (shallow, deep):
        cast = rows["bf16-cast"]["cast_tensors"]
        assert cast > 0  # the adapters and the head train in fp32 masters
        assert extra_ops(rows) <= 2 * cast + HEAD_OUTPUT_CASTS, rows["bf16-cast"]["by_op"]
        print(f"{method}, {rows['fp32']['layers']} layers: fp32 {rows['fp32']['total']}, bf16-autocast "
              f"{rows['bf16-autocast']['total']}, bf16-cast {rows['bf16-cast']['total']} ({cast} cast tensors)")
    more_tensors = deep["bf16-cast"]["cast_tensors"] - shallow["bf16-cast"]["cast_tensors"]
    assert extra_ops(deep) - extra_ops(shallow) <= 2 * more_tensors


def test_cast_floor_adds_only_the_heads_fp32_logits(counts):
    for n in DEPTHS:  # nothing trains, nothing to cast: the frozen weights are held in bf16
        rows = counts[n]["floor"]
        assert rows["bf16-cast"]["cast_tensors"] == 0
        assert extra_ops(rows) <= HEAD_OUTPUT_CASTS, rows["bf16-cast"]["by_op"]


def test_per_layer_ops_under_attention_dropout_are_not_the_cast_modes(lora_counts_with_dropout):
    """With attention dropout, both bf16 modes pay SDPA's fp32 math path in every layer; cast mode
    adds nothing per layer on top of autocast but its casts of the new layers' masters."""
    shallow, deep = lora_counts_with_dropout[DEPTHS[0]], lora_counts_with_dropout[DEPTHS[1]]
    more_tensors = deep["bf16-cast"]["cast_tensors"] - shallow["bf16-cast"]["cast_tensors"]
    over_autocast = [extra_ops(rows, base="bf16-autocast") for rows in (shallow, deep)]
    assert over_autocast[1] - over_autocast[0] <= 2 * more_tensors


def test_script_end_to_end_quick(tmp_path):
    out = tmp_path / "host_cost.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "host_cost.py"), "--model", "tiny_roberta", "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {"machine", "model", "batch", "seq", "counts", "times"} <= set(res)
    assert {"nproc", "torch", "date"} <= set(res["machine"])
    assert set(res["counts"]) == set(host_cost.VARIANTS)
    for rows in res["counts"].values():
        assert set(rows) == set(host_cost.MODES)
        for row in rows.values():
            assert row["total"] == sum(row["by_op"].values()) > 0 and row["to_copy"] == row["by_op"].get("_to_copy", 0)
    for mode in ("fp32", "bf16-cast"):
        t = res["times"][mode]
        assert t["real_ms"] > 0 and t["hand_ms"] > 0 and t["real_outside_ops_ms"] >= 0
        assert len(t["widths"]) == t["steps"]
        assert 0 < t["hand_ops"] < t["real_ops"]  # the hand-written loop is the least a step dispatches
    assert "Ops dispatched per training step" in done.stdout and "hand-written loop" in done.stdout
