"""trainer.compile: every method trains compiled with the results it gets eager, and a run compiles
a bounded number of graphs (again after each resize, never per step).

aot_eager: dynamo's graph capture and AOTAutograd's joint graph without Inductor's C++ build, so the
compiled path runs here exactly (results equal to the last bit); Inductor itself runs on the GPU
machine (scripts/gpu_check.py)."""
from pathlib import Path

import pytest

from conftest import REPO, smoke
from roloraexp.run import run

METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
# K must fit the tiny model's 4 adapters.
EXTRA = {"rlora": ["method.k=2"], "weightlora": ["method.k=2"], "weightlora_plus": ["method.k=2", "method.select_steps=3"]}
NO_DROPOUT = ["+model.config_overrides.hidden_dropout_prob=0.0",
              "+model.config_overrides.attention_probs_dropout_prob=0.0"]
COMPILED = ["trainer.compile=true", "trainer.compile_backend=aot_eager"]


def pair(tmp_path: Path, method: str, *over: str) -> tuple[dict, dict]:
    over = (f"method={method}", "trainer.max_steps=8", "trainer.log_every=1", *NO_DROPOUT, *EXTRA.get(method, []), *over)
    eager = run(smoke(*over), tmp_path / "eager")
    compiled = run(smoke(*over, *COMPILED), tmp_path / "compiled")
    assert eager["status"] == compiled["status"] == "completed", compiled.get("error") or eager.get("error")
    return eager, compiled


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_compiled_as_eager(tmp_path, method):
    eager, compiled = pair(tmp_path, method)
    assert [c["loss"] for c in compiled["train_curve"]] == pytest.approx([c["loss"] for c in eager["train_curve"]], abs=1e-6)
    assert compiled["metrics"] == pytest.approx(eager["metrics"], abs=1e-6)
    assert compiled.get("ranks") == eager.get("ranks")
    info = compiled["compile"]
    assert info["enabled"] and not eager["compile"]["enabled"] and eager["compile"]["graphs"] == 0
    # Each wrap (the start, every resize or phase) compiles its graph, and at most once more when a
    # shape first varies (dynamo then marks it dynamic); DyLoRA's per-step rank gets dynamo's limit.
    limit = 8 if method == "dylora" else 2 * info["wraps"]
    assert 1 <= info["graphs"] <= limit, info
    assert info["graph_breaks"] == 0, info


def test_adalora_every_step_masks_never_recompile(tmp_path):
    """AdaLoRA masks Λ at every step of its budget schedule (t_init=0, Δ_T=1): one graph before its
    final slice, one after it, however many steps mask."""
    over = ["sparsifier=adalora", "sparsifier.t_init=0", "sparsifier.t_final=2", "sparsifier.delta_t=1",
            "trainer.max_steps=10"]
    eager, compiled = pair(tmp_path, "adalora", *over)
    assert compiled["compile"]["wraps"] == 2 and compiled["compile"]["graphs"] == 2, compiled["compile"]
    assert eager["trainable_params"] < eager["trainable_params_peak"]  # it really pruned


def test_compile_auto_is_off_on_cpu_and_recorded_through_the_cli(tmp_path):
    """The user's path: the default (trainer.compile=auto) does not compile on CPU; an explicit
    compile through the command line records its graphs in results.json."""
    import json
    import subprocess
    import sys

    from conftest import DATA

    base = [sys.executable, "-m", "roloraexp.run", "model=tiny_roberta", "task=rte", f"data_dir={DATA}",
            "logger=disabled", "task.max_train_samples=16", "task.max_eval_samples=8", "trainer.max_steps=2",
            "trainer.batch_size=8"]
    for name, extra in (("auto", []), ("on", COMPILED)):
        subprocess.run([*base, *extra, f"hydra.run.dir={tmp_path / name}"], check=True, capture_output=True, cwd=REPO)
    auto = json.loads((tmp_path / "auto" / "results.json").read_text())["compile"]
    on = json.loads((tmp_path / "on" / "results.json").read_text())["compile"]
    assert auto["enabled"] is False and auto["graphs"] == 0
    assert on["enabled"] is True and on["graphs"] >= 1 and on["backend"] == "aot_eager"
