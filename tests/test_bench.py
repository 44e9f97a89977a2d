"""scripts/bench.py (``make bench``) runs and compares like with like: one step of each of the six
variants on MiniLM, and this project's adapters are the size of PEFT's and cost the same FLOPs."""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_bench_reports_six_variants_of_equal_size(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--batch", "2", "--seq", "8", "--steps",
                           "2", "--threads", "1", "--no-memory", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["floor", "lora", "peft_lora", "adalora", "rolora", "peft_adalora"]
    assert "PEFT AdaLoRA" in done.stdout and "x floor" in done.stdout
    assert rows["floor"]["x_floor"] == 1.0 and rows["floor"]["trainable"] == 0
    for ours, peft in (("lora", "peft_lora"), ("adalora", "peft_adalora")):
        # Same adapters, same head: the same trainable parameters and the same matmul FLOPs.
        assert rows[ours]["trainable"] == rows[peft]["trainable"] > 0
        assert abs(rows[ours]["gflop_per_step"] - rows[peft]["gflop_per_step"]) < 1e-3 * rows[peft]["gflop_per_step"]
    # AdaLoRA starts at 1.5 R with a gate per component; ROLoRA at R with gates.
    assert rows["adalora"]["trainable"] > rows["rolora"]["trainable"] > rows["lora"]["trainable"]
    assert all(r["ms_per_step"] > 0 and r["samples_per_s"] > 0 and r["mfu"] is None for r in rows.values())
