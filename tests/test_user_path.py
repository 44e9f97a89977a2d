"""The user's path, as the README writes it: every task end to end through ``roloraexp.run`` with the
default schedules, the mission's own command (``-m`` last), unknown experiment names, and data
problems found before any model is loaded."""
import json
import os
import subprocess
import sys

import pytest

from conftest import DATA, REPO, compose_config
from roloraexp import models
from roloraexp.cli import group_choice_errors, split_args
from roloraexp.run import run

TINY = ["logger=disabled", f"data_dir={DATA}", "trainer.batch_size=8", "trainer.eval_batch_size=16",
        "trainer.save_adapters=false", "task.max_eval_samples=16"]
# Each task once, and each method family (lora, adalora, rolora, weightlora) on several, all with the
# methods' default schedules (the AdaLoRA schedule is fractions of the phase by default).
CASES = [
    ("cola", "lora", "tiny_roberta", []),
    ("sst2", "adalora", "tiny_bert", []),
    ("mrpc", "rolora", "tiny_deberta", []),
    ("stsb", "weightlora", "tiny_roberta", ["method.k=2"]),
    ("qqp", "lora", "tiny_llama", []),
    ("mnli", "adalora_iter", "tiny_roberta", ["method.iterations=2"]),
    ("qnli", "rolora", "tiny_roberta", ["task.train_from_dev=true"]),
    ("rte", "weightlora_plus", "tiny_bert", ["method.k=2"]),
    ("squad_v1", "rolora", "tiny_bert", ["task.train_from_dev=true", "task.max_seq_length=96", "task.doc_stride=32"]),
    ("squad_v2", "weightlora", "tiny_roberta", ["task.train_from_dev=true", "task.max_seq_length=96",
                                                 "task.doc_stride=32", "method.k=2"]),
    ("xsum", "adalora", "tiny_bart", ["task.num_beams=1", "task.gen_max_length=16", "task.gen_min_length=2"]),
    ("cnn_dm", "lora", "tiny_bart", ["task.num_beams=1", "task.gen_max_length=16", "task.gen_min_length=2"]),
]


@pytest.mark.parametrize("task,method,model,extra", CASES, ids=[f"{t}-{m}" for t, m, _, _ in CASES])
def test_every_task_runs_end_to_end(tmp_path, task, method, model, extra):
    cfg = compose_config(f"task={task}", f"method={method}", f"model={model}", *TINY, "task.max_train_samples=24",
                         "trainer.max_steps=4", *extra)
    res = run(cfg, tmp_path)
    assert res["status"] == "completed", res.get("error")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps"] == 4 * cfg.method.get("iterations", 1) and "main" in saved["metrics"]
    assert saved["task"] == task and saved["method"] == method and saved["ranks"]


def test_summarization_inputs_are_cut_to_the_model_positions(tmp_path, caplog):
    # task=xsum keeps max_source_length=1024; the tiny BART has 512 positions (the README's smoke model).
    cfg = compose_config("task=xsum", "model=tiny_bart", *TINY, "task.max_train_samples=4", "trainer.max_steps=1",
                         "task.num_beams=1", "task.gen_max_length=8", "task.gen_min_length=2",
                         "task.max_eval_samples=2")
    assert cfg.task.max_source_length == 1024
    res = run(cfg, tmp_path)
    assert res["status"] == "completed", res.get("error")
    assert "task.max_source_length=1024 exceeds the 512 positions the model takes" in caplog.text


def test_position_limits_follow_the_architecture():
    tok = models.load_tokenizer(compose_config("model=tiny_roberta").model)
    limit = {name: models.max_input_length(models.model_config(compose_config(f"model={name}").model, tok), tok)
             for name in ("tiny_roberta", "tiny_bart", "tiny_bert")}
    # RoBERTa reserves padding_idx + 1 positions (514 - 0 - 1); MiniLM's tokenizer stops at 512.
    assert limit == {"tiny_roberta": 512, "tiny_bart": 512, "tiny_bert": 512}


def test_data_problems_surface_before_any_model_loads(tmp_path, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("a model or tokenizer was loaded before the data was checked")

    monkeypatch.setattr(models, "load_tokenizer", no_loading)
    monkeypatch.setattr(models, "load_model", no_loading)
    for task, data_dir in (("rte", tmp_path / "empty"), ("squad_v1", tmp_path), ("xsum", tmp_path)):
        (tmp_path / "empty").mkdir(exist_ok=True)
        res = run(compose_config(f"task={task}", "model=roberta_base", "logger=disabled", f"data_dir={data_dir}"),
                  tmp_path / task)
        assert res["status"] == "failed" and "\n" not in res["error"], res
        assert "loaded before" not in res["error"]


def test_flags_and_overrides_in_any_order():
    flags, overrides = split_args(["method=rolora", "task=rte", "-m", "seed=1,2", "--cfg", "job", "-cn", "config",
                                   "--info", "x=1"])
    assert flags == ["-m", "--cfg", "job", "-cn", "config", "--info"]
    assert overrides == ["method=rolora", "task=rte", "seed=1,2", "x=1"]


def test_unknown_group_choices_name_the_close_matches():
    errors = group_choice_errors(["experiment=rolora/roberta_base/rtee", "method=lora,rolora", "model=tiny_roberta",
                                  "task=rte", "sparsifier=adalora", "method.rank=4"])
    assert len(errors) == 1 and "experiment=rolora/roberta_base/rtee does not exist" in errors[0]
    assert "close matches: rolora/roberta_base/rte" in errors[0]
    assert group_choice_errors(["method=lora,nosuch"]) == [
        "method=nosuch does not exist (no conf/method/nosuch.yaml); see conf/method/ (%d files)"
        % len(list((REPO / "conf" / "method").glob("*.yaml")))]


def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "roloraexp.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_missions_command_with_m_last(tmp_path):
    """`python -m roloraexp.run method=rolora task=rte -m seed=1,2,3,4,5`, scaled down: one results.json per seed."""
    proc = cli("method=rolora", "task=rte", "model=tiny_roberta", f"data_dir={DATA}", "logger=disabled",
               "trainer.max_steps=3", "trainer.batch_size=4", "task.max_train_samples=12", "task.max_eval_samples=8",
               f"hydra.sweep.dir={tmp_path}/sweep", "-m", "seed=1,2,3,4,5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert sorted(r["seed"] for r in results) == [1, 2, 3, 4, 5]
    assert all(r["status"] == "completed" and r["method"] == "rolora" for r in results)


def test_an_unknown_experiment_stops_before_running(tmp_path):
    proc = cli("experiment=rolora/roberta_base/rtee", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "experiment=rolora/roberta_base/rtee does not exist" in proc.stderr
    assert "close matches: rolora/roberta_base/rte" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_no_hub_no_data_is_one_line_and_the_load_report_stays_in_run_log(tmp_path):
    # Without a data folder, offline: one line that says what to do.
    proc = cli("method=lora", "task=rte", "data_dir=null", "logger=disabled", f"hydra.run.dir={tmp_path}/nodata",
               cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: cannot load nyu-mll/glue/rte from the hub (offline with no local copy? pass data_dir=" in proc.stderr
    # A pretrained model: transformers' load report (newly initialised classifier) is not on screen.
    proc = cli("method=lora", "task=rte", f"data_dir={DATA}", "logger=disabled", "trainer.max_steps=1",
               "task.max_train_samples=8", "task.max_eval_samples=8", "task.max_seq_length=32",
               f"hydra.run.dir={tmp_path}/minilm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    screen = proc.stdout + proc.stderr
    assert "LOAD REPORT" not in screen and "Loading weights" not in screen
    assert "newly initialised ['classifier.bias', 'classifier.weight']" in (tmp_path / "minilm" / "run.log").read_text()


MY_METHOD = '''
from roloraexp.methods.base import Method

class MyMethod(Method):
    uses_gate = True
    def after_optimizer_step(self, ctx):
        remaps = []
        for name, a in self.adapters.items():
            if ctx.step == 2 and a.rank > 2:
                remaps += a.keep(range(2))
        return remaps
'''


def test_a_method_of_ones_own_package_runs_from_its_own_conf_folder(tmp_path):
    """README "Adding a method": the example method in the user's package, its YAML in the user's
    conf/method/, found through hydra.searchpath (the command line's name check looks there too)."""
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "mypackage" / "my_method.py").write_text(MY_METHOD)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "my_method.yaml").write_text(
        "_target_: mypackage.my_method.MyMethod\nname: my_method\nrank: 8\nalpha: 16\ndropout: 0.0\ntarget_modules: null\n")
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}", WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    args = ["method=my_method", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=tiny_roberta", "task=rte",
            f"data_dir={DATA}", "logger=disabled", "trainer.max_steps=4", "trainer.batch_size=8",
            "task.max_train_samples=32", "task.max_eval_samples=16", "trainer.save_adapters=false",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "-m", "roloraexp.run", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "completed" and res["method"] == "my_method" and set(res["ranks"].values()) == {2}
    assert res["trainable_params"] < res["trainable_params_peak"]   # the shrink at step 2 was real
    typo = subprocess.run([sys.executable, "-m", "roloraexp.run", "method=my_methd", *args[1:]], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert typo.returncode == 2 and "close matches: my_method" in typo.stderr
