"""scripts/bench.py (``make bench``) runs and compares like with like: one step of each of the six
variants on MiniLM, and this project's adapters are the size of PEFT's and cost the same FLOPs; each
row names its setting in full (the GPU check gathers rows of several runs), and the target modules
follow the model's architecture."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

ROW_KEYS = {"variant", "model", "precision", "amp_mode", "compile", "batch", "seq", "step_ms", "tokens_per_s",
            "x_floor", "mfu", "peak_mb"}


def bench(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--threads", "1", "--no-memory",
                           "--json", str(out), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.fixture(scope="module")
def bench_module():
    spec = importlib.util.spec_from_file_location("roloraexp_bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_reports_six_variants_of_equal_size(tmp_path):
    res, stdout = bench(tmp_path, "--batch", "2", "--seq", "8", "--steps", "2")
    rows = res["rows"]
    assert list(rows) == ["floor", "lora", "peft_lora", "adalora", "rolora", "peft_adalora"]
    assert "PEFT AdaLoRA" in stdout and "x floor" in stdout
    assert rows["floor"]["x_floor"] == 1.0 and rows["floor"]["trainable"] == 0
    for ours, peft in (("lora", "peft_lora"), ("adalora", "peft_adalora")):
        # Same adapters, same head: the same trainable parameters and the same matmul FLOPs.
        assert rows[ours]["trainable"] == rows[peft]["trainable"] > 0
        assert abs(rows[ours]["gflop_per_step"] - rows[peft]["gflop_per_step"]) < 1e-3 * rows[peft]["gflop_per_step"]
    # AdaLoRA starts at 1.5 R with a gate per component; ROLoRA at R with gates.
    assert rows["adalora"]["trainable"] > rows["rolora"]["trainable"] > rows["lora"]["trainable"]
    assert res["targets"] == ["query", "value"]  # MiniLM is a BERT
    for v, r in rows.items():
        assert ROW_KEYS <= set(r) and r["variant"] == v and r["model"] == "minilm" and r["precision"] == "fp32"
        assert r["amp_mode"] == "none" and r["compile"]["enabled"] is False and r["mfu"] is None
        assert r["step_ms"] > 0 and r["tokens_per_s"] == pytest.approx(2 * 8 / (r["step_ms"] / 1e3))


def test_deberta_gets_its_query_and_value_projections_compiled_under_the_amp_mode_asked(tmp_path):
    # aot_eager: dynamo's capture and AOTAutograd without Inductor's C++ build (as tests/test_compile.py).
    res, stdout = bench(tmp_path, "--model", "tiny-deberta-random", "--batch", "2", "--seq", "8", "--steps", "1",
                        "--precision", "bf16", "--amp-mode", "autocast", "--compile", "--compile-backend", "aot_eager",
                        "--variants", "lora", "peft_lora")
    assert res["targets"] == ["query_proj", "value_proj"]
    rows = res["rows"]
    assert list(rows) == ["floor", "lora", "peft_lora"] and "compiled (aot_eager, default; PEFT eager)" in stdout
    for v in ("floor", "lora"):  # ours and the floor compiled, in one graph each (no break, no recompile)
        assert rows[v]["compile"] == {"enabled": True, "backend": "aot_eager", "mode": "default", "graphs": 1,
                                      "graph_breaks": 0}
    assert rows["peft_lora"]["compile"]["enabled"] is False  # as HF's Trainer runs it
    assert {r["amp_mode"] for r in rows.values()} == {"autocast"} and rows["lora"]["trainable"] == rows["peft_lora"]["trainable"]


def test_targets_follow_the_architecture(bench_module):
    assert bench_module.bench_targets("roberta") == bench_module.bench_targets("bert") == ["query", "value"]
    assert bench_module.bench_targets("deberta") == ["query_proj", "value_proj"]  # its defaults add key_proj
    assert bench_module.bench_targets("llama") == ["q_proj", "v_proj"]
    for name, arch in (("tiny-deberta-random", "deberta"), ("tiny-roberta-random", "roberta")):
        assert bench_module.arch_of(bench_module.build_base(name)) == arch
